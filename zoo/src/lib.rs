//! The architectures of the paper in timm's tensor names, and their weights.
//!
//! - [`resnet`]: ResNet-18…152 in the paper's variants (Section 4, Figure 2): the original
//!   ResNet, ResNet-B, -C, -D and timm's -S, as one builder configured by [`ResNetConfig`].
//! - [`mobilenet`]: MobileNet v1 at widths 0.25–1.25 (timm's `mobilenetv1_*`), and
//!   [`inception`]: Inception-V3 with its optional auxiliary classifier: the paper's other
//!   two networks (Table 2).
//! - [`models`]: the table from model names (`resnet50d`, …) to configurations, with
//!   parameter counts and multiply-accumulates.
//! - [`weights`]: loading timm/safetensors checkpoints strictly and saving ours atomically.
//! - [`walk`]: each network's one forward pass, run on tensors, shapes (MACs), the ONNX graph
//!   or the kernel planner.
//! - [`init`]: the paper's initialisation (Section 2.1).
//! - [`registry`]: the versioned registry of published checkpoints (`weights.toml`), and
//!   [`local`]: the user's own zoo directory.
//! - [`reference`]: weights references (`zoo:`, `hf:`, paths), parsed and resolved.
//! - [`publish`]: publishing into the local zoo, pushing to the Hub (with the model card
//!   of [`card`]), pinning Hub entries.
//! - [`onnx`]: export to ONNX.
//! - [`atomic`]: the one way files are written (temporary sibling, fsync, rename).
//!
//! Models know nothing about training: they expose `forward_t(x, train)` and their
//! parameters live in a [`candle_nn::VarMap`] whose names are the checkpoint's names.

#![warn(missing_docs)]

pub mod atomic;
pub mod card;
mod error;
pub mod export;
pub mod hub;
pub mod inception;
pub mod init;
pub mod labels;
pub mod layers;
pub mod local;
pub mod mobilenet;
pub mod models;
pub mod onnx;
pub mod publish;
pub mod reference;
pub mod registry;
pub mod resnet;
pub mod walk;
pub mod weights;

pub use error::{Result, ZooError};
pub use models::{create_model, ModelSpec, MODEL_NAMES};
pub use resnet::{ResNet, ResNetConfig, ResNetVariant};

use candle_core::Tensor;
use walk::{Act, Eager, KernelTable, MacCounter, Network, Shape3, Walker};

/// An image classifier of the zoo: what the CLI, the trainer and the transfer heads use.
pub trait Classifier: Send + Sync {
    /// Logits `(N, num_classes)` for images `(N, 3, H, W)`, N ≥ 1 (an empty batch is an
    /// error, the same for every network), or pooled features
    /// `(N, num_features)` when the model was built with `num_classes = 0`. `train` selects
    /// batch statistics (and updates the running ones) in batch norm.
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor>;

    /// The outputs of the four stages (C2…C5 in detection terms), for the transfer heads.
    fn forward_features(&self, x: &Tensor, train: bool) -> candle_core::Result<Vec<Tensor>>;

    /// Logits and, for a network built with an auxiliary classifier (Inception-V3's
    /// `AuxLogits`), its logits too: what training adds to the loss.
    fn forward_with_aux(
        &self,
        x: &Tensor,
        train: bool,
    ) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        Ok((self.forward_t(x, train)?, None))
    }

    /// Global pooling and the classifier, on the last stage's output.
    fn forward_head(&self, last: &Tensor) -> candle_core::Result<Tensor>;

    /// Multiply-accumulates of one forward pass on a single `h × w` image (convolutions and
    /// the classifier, as timm and the paper count them).
    fn macs(&self, h: usize, w: usize) -> u64;

    /// Writes the inference graph (batch norm with running statistics) into `graph`,
    /// reading the image from the value `input`; returns the name of the output value.
    fn to_onnx(&self, graph: &mut onnx::OnnxGraph, input: &str) -> Result<String>;

    /// Height and width of the last stage's output for an `h × w` input (timm's
    /// `pool_size`), from the same walk as the forward pass.
    fn feature_size(&self, h: usize, w: usize) -> (usize, usize);

    /// Records in `table` the kernel every convolution gets on an `h × w` input
    /// ([`ops::plan`]).
    fn kernel_table(&self, table: &mut KernelTable, h: usize, w: usize) -> candle_core::Result<()>;
}

/// Every network is a classifier through its one walk.
impl<N: Network> Classifier for N {
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.check_input(x)?;
        let mut e = Eager::new(x, train, false);
        let walked = self.walk(&mut e, Act::Nchw(x.clone()))?;
        let last = walked.features.last().expect("a network has stages");
        let logits = e.head(last, self.classifier())?;
        e.nchw(&logits)
    }

    fn forward_features(&self, x: &Tensor, train: bool) -> candle_core::Result<Vec<Tensor>> {
        self.check_input(x)?;
        let mut e = Eager::new(x, train, false);
        let walked = self.walk(&mut e, Act::Nchw(x.clone()))?;
        walked.features.iter().map(|f| e.nchw(f)).collect()
    }

    fn forward_with_aux(
        &self,
        x: &Tensor,
        train: bool,
    ) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        self.check_input(x)?;
        let mut e = Eager::new(x, train, true);
        let walked = self.walk(&mut e, Act::Nchw(x.clone()))?;
        let last = walked.features.last().expect("a network has stages");
        let logits = e.head(last, self.classifier())?;
        let aux = walked.aux.map(|a| e.nchw(&a)).transpose()?;
        Ok((e.nchw(&logits)?, aux))
    }

    fn forward_head(&self, last: &Tensor) -> candle_core::Result<Tensor> {
        layers::classify(self.classifier(), ops::global_avg_pool(last)?)
    }

    fn macs(&self, h: usize, w: usize) -> u64 {
        let mut counter = MacCounter::default();
        let input = Shape3 {
            c: self.in_chans(),
            h,
            w,
        };
        let counted = self.walk(&mut counter, input).and_then(|walked| {
            let last = walked
                .features
                .last()
                .copied()
                .expect("a network has stages");
            counter.head(&last, self.classifier())
        });
        match counted {
            Ok(_) => counter.total,
            Err(_) => 0,
        }
    }

    fn to_onnx(&self, graph: &mut onnx::OnnxGraph, input: &str) -> Result<String> {
        let walked = self.walk(graph, input.to_string())?;
        let last = walked.features.last().expect("a network has stages");
        Walker::head(graph, last, self.classifier())
    }

    fn feature_size(&self, h: usize, w: usize) -> (usize, usize) {
        let input = Shape3 {
            c: self.in_chans(),
            h,
            w,
        };
        match self.walk(&mut MacCounter::default(), input) {
            Ok(walked) => walked.features.last().map_or((0, 0), |s| (s.h, s.w)),
            Err(_) => (0, 0),
        }
    }

    fn kernel_table(&self, table: &mut KernelTable, h: usize, w: usize) -> candle_core::Result<()> {
        let input = Shape3 {
            c: self.in_chans(),
            h,
            w,
        };
        self.walk(table, (input, ops::plan::Layout::Nchw)).map(drop)
    }
}
