//! Transfer learning on zoo backbones (Section 6 of the paper): Faster R-CNN on Pascal VOC
//! and FCN on ADE20K.
//!
//! The backbones already expose what the heads need — stage outputs C2…C5 through
//! [`zoo::Classifier::forward_features`], dilated stages for output stride 16 or 8
//! ([`zoo::ResNetConfig::output_stride`]) and frozen batch norm
//! ([`zoo::layers::BatchNormConfig::frozen`]); the heads, datasets and their metrics are
//! built in this crate by the detection and segmentation work.
