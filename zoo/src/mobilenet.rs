//! MobileNet v1 (Howard et al. 2017), one of the paper's three networks (Table 2, Table 6),
//! as timm builds it (`mobilenetv1_100`, `mobilenetv1_125`; the narrower widths with timm's
//! `channel_multiplier`), so `timm/mobilenetv1_100.ra4_e3600_r224_in1k` loads unchanged.
//!
//! A 3×3/2 stem (`conv_stem`, `bn1`), then 13 depthwise-separable blocks in five stages
//! (`blocks.S.I.conv_dw` 3×3 depthwise, `bn1`, `conv_pw` 1×1, `bn2`; no residual), ReLU6
//! after every batch norm, global average pooling and `classifier`.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use ops::{Activation, Conv2dParams};

use crate::layers::{BatchNorm2d, BatchNormConfig, Conv2d, ConvBn, Linear};
use crate::walk::{Network, WalkResult, Walked, Walker};
use crate::ZooError;

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
    fn walk<W: Walker>(&self, w: &mut W, x: &W::Value) -> WalkResult<W, W::Value> {
        let x = w.conv_bn(&self.dw, x, None, Activation::Relu6)?;
        w.conv_bn(&self.pw, &x, None, Activation::Relu6)
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
}

impl Network for MobileNetV1 {
    fn in_chans(&self) -> usize {
        self.cfg.in_chans
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        crate::layers::check_input(x, self.cfg.in_chans, 32, "MobileNet")
    }

    /// The stem, then the stages; the outputs of stages 1–4 are the features.
    fn walk<W: Walker>(&self, w: &mut W, x: W::Value) -> WalkResult<W, Walked<W::Value>> {
        let mut x = w.conv_bn(&self.stem, &x, None, Activation::Relu6)?;
        let mut features = Vec::with_capacity(4);
        for (s, stage) in self.stages.iter().enumerate() {
            for block in stage {
                x = block.walk(w, &x)?;
            }
            if s > 0 {
                features.push(x.clone());
            }
        }
        Ok(Walked {
            features,
            aux: None,
        })
    }

    fn classifier(&self) -> Option<&Linear> {
        self.classifier.as_ref()
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
