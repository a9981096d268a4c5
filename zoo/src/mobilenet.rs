//! MobileNet v1 (Howard et al. 2017), one of the paper's three networks (Table 2, Table 6),
//! as timm builds it (`mobilenetv1_100`, `mobilenetv1_125`; the narrower widths with timm's
//! `channel_multiplier`), so `timm/mobilenetv1_100.ra4_e3600_r224_in1k` loads unchanged.
//!
//! A 3×3/2 stem (`conv_stem`, `bn1`), then 13 depthwise-separable blocks in five stages
//! (`blocks.S.I.conv_dw` 3×3 depthwise, `bn1`, `conv_pw` 1×1, `bn2`; no residual), ReLU6
//! after every batch norm, global average pooling and `classifier`.

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;
use ops::{Activation, Conv2dParams};

use crate::layers::{BatchNorm2d, BatchNormConfig, Conv2d, ConvBn, Linear};
use crate::onnx::OnnxGraph;
use crate::{Classifier, ZooError};

/// (blocks, output channels at width 1.0, stride of the first block) per stage.
const STAGES: [(usize, usize, usize); 5] = [
    (1, 64, 1),
    (2, 128, 2),
    (2, 256, 2),
    (6, 512, 2),
    (2, 1024, 2),
];

/// Everything that defines a MobileNet v1.
#[derive(Debug, Clone, PartialEq)]
pub struct MobileNetConfig {
    /// Width multiplier α (0.25 … 1.25): every layer's channels scaled and rounded to a
    /// multiple of 8, as timm's `round_channels`.
    pub width: f64,
    /// Input channels.
    pub in_chans: usize,
    /// Classes; 0 for pooled features.
    pub num_classes: usize,
    /// Batch-norm settings (timm: ε = 1e-5, momentum 0.1).
    pub bn: BatchNormConfig,
}

impl MobileNetConfig {
    /// MobileNet v1 at width `width`, 1000 classes.
    pub fn new(width: f64) -> crate::Result<Self> {
        if !(width > 0.0 && width <= 4.0) {
            return Err(ZooError::Config(format!(
                "width multiplier {width} must be in (0, 4]"
            )));
        }
        Ok(Self {
            width,
            in_chans: 3,
            num_classes: 1000,
            bn: BatchNormConfig::default(),
        })
    }

    /// `channels · width` rounded to a multiple of 8, never below 8 nor 10 % under the exact
    /// value (timm's `make_divisible` with `round_limit = 0.9`).
    pub fn round(&self, channels: usize) -> usize {
        let v = channels as f64 * self.width;
        let mut rounded = (((v + 4.0) as usize) / 8 * 8).max(8);
        if (rounded as f64) < 0.9 * v {
            rounded += 8;
        }
        rounded
    }

    /// Channels of the pooled features.
    pub fn num_features(&self) -> usize {
        self.round(STAGES[4].1)
    }
}

/// A depthwise-separable block: 3×3 depthwise conv, BN, ReLU6, 1×1 conv, BN, ReLU6.
#[derive(Debug, Clone)]
struct Block {
    dw: ConvBn,
    pw: ConvBn,
}

impl Block {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.dw.forward_with(x, train, None, Activation::Relu6)?;
        self.pw.forward_with(&x, train, None, Activation::Relu6)
    }

    /// The block in inference on blocked (NCHW16c) activations.
    fn forward_blocked(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.dw.forward_blocked(x, None, Activation::Relu6)?;
        self.pw.forward_blocked(&x, None, Activation::Relu6)
    }
}

/// MobileNet v1 with timm's module tree.
#[derive(Debug, Clone)]
pub struct MobileNetV1 {
    cfg: MobileNetConfig,
    stem: ConvBn,
    stages: Vec<Vec<Block>>,
    classifier: Option<Linear>,
}

fn conv_bn(
    vb: &VarBuilder,
    names: (&str, &str),
    c_in: usize,
    c_out: usize,
    k: usize,
    p: Conv2dParams,
    bn: BatchNormConfig,
) -> Result<ConvBn> {
    Ok(ConvBn::new(
        Conv2d::new(vb.pp(names.0), c_in, c_out, k, p)?,
        BatchNorm2d::new(vb.pp(names.1), c_out, 1.0, bn)?,
    ))
}

impl MobileNetV1 {
    /// Builds the network, registering its tensors under `vb` with timm's names.
    pub fn new(cfg: &MobileNetConfig, vb: VarBuilder) -> crate::Result<Self> {
        let stem_out = cfg.round(32);
        let three = |stride, groups| Conv2dParams {
            stride,
            padding: 1,
            groups,
            ..Default::default()
        };
        let stem = conv_bn(
            &vb,
            ("conv_stem", "bn1"),
            cfg.in_chans,
            stem_out,
            3,
            three(2, 1),
            cfg.bn,
        )?;
        let mut c_in = stem_out;
        let mut stages = Vec::with_capacity(STAGES.len());
        for (s, &(blocks, channels, stride)) in STAGES.iter().enumerate() {
            let c_out = cfg.round(channels);
            let mut stage = Vec::with_capacity(blocks);
            for b in 0..blocks {
                let vb = vb.pp(format!("blocks.{s}.{b}"));
                let stride = if b == 0 { stride } else { 1 };
                stage.push(Block {
                    dw: conv_bn(
                        &vb,
                        ("conv_dw", "bn1"),
                        c_in,
                        c_in,
                        3,
                        three(stride, c_in),
                        cfg.bn,
                    )?,
                    pw: conv_bn(
                        &vb,
                        ("conv_pw", "bn2"),
                        c_in,
                        c_out,
                        1,
                        Conv2dParams::default(),
                        cfg.bn,
                    )?,
                });
                c_in = c_out;
            }
            stages.push(stage);
        }
        let classifier = match cfg.num_classes {
            0 => None,
            n => Some(Linear::new(vb.pp("classifier"), c_in, n)?),
        };
        Ok(Self {
            cfg: cfg.clone(),
            stem,
            stages,
            classifier,
        })
    }

    /// The configuration this network was built from.
    pub fn config(&self) -> &MobileNetConfig {
        &self.cfg
    }

    /// Whether inference on `x` takes the blocked path ([`ops::blocked`]): f32 on a CPU
    /// with AVX-512F and read-only weights (`Model::frozen`).
    fn takes_blocked_path(&self, x: &Tensor) -> bool {
        x.device().is_cpu()
            && x.dtype() == DType::F32
            && ops::blocked::available()
            && self.stem.is_read_only()
            && self
                .stages
                .iter()
                .flatten()
                .all(|b| b.dw.is_read_only() && b.pw.is_read_only())
    }

    /// Inference on blocked activations: the stem in NCHW (3 input channels), converted
    /// once, the blocks blocked up to the classifier's pooling.
    fn forward_blocked(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        let stem = self.stem.forward_with(x, false, None, Activation::Relu6)?;
        let mut x = ops::blocked::to_blocked(&stem)?;
        let blocks = self.stages.iter().flatten();
        let channels = blocks
            .clone()
            .last()
            .expect("13 blocks")
            .pw
            .conv
            .out_channels();
        for block in blocks {
            x = block.forward_blocked(&x)?;
        }
        self.classify(ops::blocked::global_avg_pool(&x, channels)?)
    }

    /// The input's channels and size, or a clear error.
    fn check_input(&self, x: &Tensor) -> Result<()> {
        crate::layers::check_input(x, self.cfg.in_chans, 32, "MobileNet")
    }

    /// The classifier on pooled features `(N, C)` (none: the features).
    fn classify(&self, pooled: Tensor) -> Result<Tensor> {
        crate::layers::classify(self.classifier.as_ref(), pooled)
    }
}

impl Classifier for MobileNetV1 {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train && self.takes_blocked_path(x) {
            return self.forward_blocked(x);
        }
        let features = self.forward_features(x, train)?;
        self.forward_head(features.last().expect("four stages"))
    }

    /// The outputs of stages 2–5 (strides 4, 8, 16, 32).
    fn forward_features(&self, x: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        self.check_input(x)?;
        let mut x = self.stem.forward_with(x, train, None, Activation::Relu6)?;
        let mut features = Vec::with_capacity(4);
        for (s, stage) in self.stages.iter().enumerate() {
            for block in stage {
                x = block.forward_t(&x, train)?;
            }
            if s > 0 {
                features.push(x.clone());
            }
        }
        Ok(features)
    }

    fn forward_head(&self, last: &Tensor) -> Result<Tensor> {
        self.classify(ops::global_avg_pool(last)?)
    }

    fn macs(&self, h: usize, w: usize) -> u64 {
        let (mut h, mut w, mut total) = self.stem.macs(h, w);
        for block in self.stages.iter().flatten() {
            for unit in [&block.dw, &block.pw] {
                let (oh, ow, macs) = unit.macs(h, w);
                (h, w, total) = (oh, ow, total + macs);
            }
        }
        total + self.classifier.as_ref().map_or(0, Linear::macs)
    }

    fn to_onnx(&self, g: &mut OnnxGraph, input: &str) -> crate::Result<String> {
        let mut x = g.conv_bn(&self.stem, input)?;
        x = g.relu6(&x);
        for block in self.stages.iter().flatten() {
            for unit in [&block.dw, &block.pw] {
                let y = g.conv_bn(unit, &x)?;
                x = g.relu6(&y);
            }
        }
        let pooled = g.global_avg_pool(&x);
        match &self.classifier {
            Some(fc) => g.linear(fc, &pooled),
            None => Ok(pooled),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_round_as_timm() {
        // timm's channel counts for stem and stage outputs at each width.
        for (width, stem, last) in [
            (0.25, 8, 256),
            (0.5, 16, 512),
            (0.75, 24, 768),
            (1.0, 32, 1024),
            (1.25, 40, 1280),
        ] {
            let cfg = MobileNetConfig::new(width).unwrap();
            assert_eq!(
                (cfg.round(32), cfg.num_features()),
                (stem, last),
                "width {width}"
            );
        }
    }
}
