//! Data for image classification (Section 2.1): the ImageNet folder layout, the paper's
//! augmentation, a deterministic parallel loader, and a procedural dataset to train on
//! without downloading anything.

pub mod augment;
pub mod decode;
pub mod folder;
pub mod image;
pub mod loader;
pub mod pretrained;
pub mod synth;

pub use self::image::Image;
pub use folder::{ImageFolder, Sample};
pub use loader::{
    mix, Batch, Batching, EpochBatches, Images, Loader, LoaderConfig, SkipReport, Source,
};
