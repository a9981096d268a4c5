//! ResNet and the paper's tweaks of it (Section 4, Figure 2), as timm builds them, so that
//! timm's checkpoints load unchanged.
//!
//! One builder makes every variant; what distinguishes them is data in [`ResNetConfig`]:
//!
//! | variant | stem | stride of path A | path B (shortcut) | timm name |
//! |---|---|---|---|---|
//! | original | 7×7 conv | first 1×1 | 1×1 conv, stride 2 | (none: `resnet50_v1`) |
//! | ResNet-B | 7×7 conv | 3×3 | 1×1 conv, stride 2 | `resnet50` |
//! | ResNet-C | three 3×3, width 32 | 3×3 | 1×1 conv, stride 2 | `resnet50c` |
//! | ResNet-D | three 3×3, width 32 | 3×3 | 2×2 avg-pool, then 1×1 conv | `resnet50d` |
//! | ResNet-S | three 3×3, width 64 | 3×3 | 1×1 conv, stride 2 | `resnet50s` |

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use ops::{Activation, Conv2dParams, Pool2dParams};

use crate::layers::{BatchNorm2d, BatchNormConfig, Conv2d, ConvBn, Linear};
use crate::walk::{Network, WalkResult, Walked, Walker};
use crate::ZooError;

/// The residual block: two 3×3 convolutions (ResNet-18/34) or the 1×1–3×3–1×1 bottleneck
/// with 4× expansion (ResNet-50 and deeper).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3×3 convolutions.
    Basic,
    /// 1×1 reduce, 3×3, 1×1 expand ×4.
    Bottleneck,
}

impl BlockKind {
    /// Output channels of a block per "planes" of its stage.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// The input stem (Section 4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StemKind {
    /// One 7×7 convolution with stride 2 (ResNet, ResNet-B).
    Plain,
    /// Three 3×3 convolutions, the first with stride 2 (ResNet-C, -D, -S); the last doubles
    /// the width.
    Deep,
}

/// The paper's ResNet variants (Figure 2), plus timm's ResNet-S.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResNetVariant {
    /// He et al. 2016 as the paper describes it: the stride-2 of path A on the first 1×1.
    Original,
    /// ResNet-B: the stride moved to the 3×3 convolution.
    B,
    /// ResNet-C: B with the deep stem of width 32.
    C,
    /// ResNet-D: C with an average-pool before the shortcut's 1×1 convolution.
    D,
    /// ResNet-S (timm): B with the deep stem of width 64.
    S,
}

/// Everything that defines a ResNet. Construct with [`ResNetConfig::new`] and adjust fields.
#[derive(Debug, Clone, PartialEq)]
pub struct ResNetConfig {
    /// Basic (ResNet-18/34) or bottleneck (ResNet-50 and deeper) blocks.
    pub block: BlockKind,
    /// Blocks per stage.
    pub layers: [usize; 4],
    /// "Planes" per stage; stage outputs are these times the block expansion.
    pub channels: [usize; 4],
    /// Plain 7×7 or deep 3×3 stem.
    pub stem: StemKind,
    /// Width of the deep stem's first two convolutions (its output is twice this); the
    /// output width of the plain stem.
    pub stem_width: usize,
    /// ResNet-D: average-pool then 1×1 convolution on the shortcut.
    pub avg_down: bool,
    /// The original ResNet: stride on the bottleneck's first 1×1 rather than its 3×3.
    pub stride_in_1x1: bool,
    /// Channels of the input image.
    pub in_chans: usize,
    /// Classes of the classifier; 0 drops the classifier and returns pooled features.
    pub num_classes: usize,
    /// 32, or 16 / 8 by dilating stages 4 / 3–4 instead of striding (for segmentation).
    pub output_stride: usize,
    /// Zero-γ (Section 3.1): initialise γ of each block's last batch norm to 0.
    pub zero_gamma: bool,
    /// Settings of every batch norm.
    pub bn: BatchNormConfig,
}

impl ResNetConfig {
    /// The ImageNet configuration of ResNet-`depth` (18, 34, 50, 101, 152) in `variant`.
    pub fn new(depth: usize, variant: ResNetVariant) -> crate::Result<Self> {
        let (block, layers) = match depth {
            18 => (BlockKind::Basic, [2, 2, 2, 2]),
            34 => (BlockKind::Basic, [3, 4, 6, 3]),
            50 => (BlockKind::Bottleneck, [3, 4, 6, 3]),
            101 => (BlockKind::Bottleneck, [3, 4, 23, 3]),
            152 => (BlockKind::Bottleneck, [3, 8, 36, 3]),
            _ => return Err(ZooError::Config(format!("no ResNet of depth {depth}"))),
        };
        let (stem, stem_width) = match variant {
            ResNetVariant::Original | ResNetVariant::B => (StemKind::Plain, 64),
            ResNetVariant::C | ResNetVariant::D => (StemKind::Deep, 32),
            ResNetVariant::S => (StemKind::Deep, 64),
        };
        Ok(Self {
            block,
            layers,
            channels: [64, 128, 256, 512],
            stem,
            stem_width,
            avg_down: variant == ResNetVariant::D,
            stride_in_1x1: variant == ResNetVariant::Original,
            in_chans: 3,
            num_classes: 1000,
            output_stride: 32,
            zero_gamma: false,
            bn: BatchNormConfig::default(),
        })
    }

    /// Width of the pooled features (input of the classifier).
    pub fn num_features(&self) -> usize {
        self.channels[3] * self.block.expansion()
    }

    fn stem_out(&self) -> usize {
        match self.stem {
            StemKind::Plain => self.stem_width,
            StemKind::Deep => 2 * self.stem_width,
        }
    }

    fn validate(&self) -> crate::Result<()> {
        if ![8, 16, 32].contains(&self.output_stride) {
            return Err(ZooError::Config(format!(
                "output stride must be 8, 16 or 32, not {}",
                self.output_stride
            )));
        }
        if self.layers.contains(&0) || self.channels.contains(&0) || self.stem_width == 0 {
            return Err(ZooError::Config(
                "every stage needs at least one block and one channel".into(),
            ));
        }
        Ok(())
    }
}

/// A convolution's geometry: channels in and out, kernel size, stride, padding, dilation.
#[derive(Debug, Clone, Copy)]
struct ConvShape {
    c_in: usize,
    c_out: usize,
    kernel: usize,
    params: Conv2dParams,
}

fn shape(
    c_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> ConvShape {
    ConvShape {
        c_in,
        c_out,
        kernel,
        params: Conv2dParams {
            stride,
            padding,
            dilation,
            ..Default::default()
        },
    }
}

/// A convolution named `names.0` followed by a batch norm named `names.1`, γ set to `gamma`.
fn conv_bn(
    vb: &VarBuilder,
    names: (&str, &str),
    s: ConvShape,
    gamma: f64,
    bn: BatchNormConfig,
) -> Result<ConvBn> {
    Ok(ConvBn::new(
        Conv2d::new(vb.pp(names.0), s.c_in, s.c_out, s.kernel, s.params)?,
        BatchNorm2d::new(vb.pp(names.1), s.c_out, gamma, bn)?,
    ))
}

/// The stem: plain 7×7 or deep 3×3×3, then batch norm, ReLU and the 3×3/2 max-pool.
#[derive(Debug, Clone)]
struct Stem {
    /// The deep stem's first two convolutions with their batch norms (`conv1.0`/`conv1.1`,
    /// `conv1.3`/`conv1.4`); empty for the plain stem.
    deep: Vec<ConvBn>,
    /// The last convolution (`conv1` or `conv1.6`) with `bn1`.
    last: ConvBn,
}

impl Stem {
    fn new(vb: &VarBuilder, cfg: &ResNetConfig) -> Result<Self> {
        let out = cfg.stem_out();
        match cfg.stem {
            StemKind::Plain => Ok(Self {
                deep: vec![],
                last: conv_bn(
                    vb,
                    ("conv1", "bn1"),
                    shape(cfg.in_chans, out, 7, 2, 3, 1),
                    1.0,
                    cfg.bn,
                )?,
            }),
            StemKind::Deep => {
                let w = cfg.stem_width;
                let deep = vec![
                    conv_bn(
                        vb,
                        ("conv1.0", "conv1.1"),
                        shape(cfg.in_chans, w, 3, 2, 1, 1),
                        1.0,
                        cfg.bn,
                    )?,
                    conv_bn(
                        vb,
                        ("conv1.3", "conv1.4"),
                        shape(w, w, 3, 1, 1, 1),
                        1.0,
                        cfg.bn,
                    )?,
                ];
                let last = conv_bn(
                    vb,
                    ("conv1.6", "bn1"),
                    shape(w, out, 3, 1, 1, 1),
                    1.0,
                    cfg.bn,
                )?;
                Ok(Self { deep, last })
            }
        }
    }

    fn max_pool() -> Pool2dParams {
        Pool2dParams::new(3, 2).padding(1)
    }

    fn walk<W: Walker>(&self, w: &mut W, x: W::Value) -> WalkResult<W, W::Value> {
        let mut x = x;
        for unit in self.deep.iter().chain([&self.last]) {
            x = w.conv_bn(unit, &x, None, Activation::Relu)?;
        }
        w.max_pool(&x, Self::max_pool())
    }
}

/// The pooling in front of ResNet-D's shortcut convolution.
#[derive(Debug, Clone, Copy)]
enum ShortcutPool {
    /// 2×2 average with the block's stride, `ceil_mode`, padding not counted.
    Strided(Pool2dParams),
    /// timm's `AvgPool2dSame(2, stride=1)` in dilated stages: zero-pad right and bottom by
    /// one, then a 2×2 average that counts the padding.
    Same,
}

impl ShortcutPool {
    fn walk<W: Walker>(&self, w: &mut W, x: &W::Value) -> WalkResult<W, W::Value> {
        match self {
            ShortcutPool::Strided(p) => w.avg_pool(x, *p),
            ShortcutPool::Same => {
                let padded = w.pad_bottom_right(x)?;
                w.avg_pool(&padded, Pool2dParams::new(2, 1))
            }
        }
    }
}

/// Path B of a block that changes shape: optional pooling, then 1×1 convolution and batch
/// norm (`downsample` in timm).
#[derive(Debug, Clone)]
struct Shortcut {
    pool: Option<ShortcutPool>,
    unit: ConvBn,
}

impl Shortcut {
    fn walk<W: Walker>(&self, w: &mut W, x: &W::Value) -> WalkResult<W, W::Value> {
        let pooled = match &self.pool {
            Some(pool) => pool.walk(w, x)?,
            None => x.clone(),
        };
        w.conv_bn(&self.unit, &pooled, None, Activation::Identity)
    }
}

/// A residual block: path A's convolutions (ReLU between them), path B, sum, ReLU.
#[derive(Debug, Clone)]
struct Block {
    path_a: Vec<ConvBn>,
    shortcut: Option<Shortcut>,
}

/// Where a block sits: what its convolutions need to know beyond the widths.
struct BlockPlacement {
    stride: usize,
    /// Dilation of the block's first spatial convolution (the previous stage's).
    first_dilation: usize,
    /// Dilation of the stage.
    dilation: usize,
}

impl Block {
    fn new(
        vb: &VarBuilder,
        cfg: &ResNetConfig,
        c_in: usize,
        planes: usize,
        at: &BlockPlacement,
        shortcut: Option<Shortcut>,
    ) -> Result<Self> {
        let gamma_last = if cfg.zero_gamma { 0.0 } else { 1.0 };
        let (s, fd, d) = (at.stride, at.first_dilation, at.dilation);
        let path_a = match cfg.block {
            BlockKind::Basic => vec![
                conv_bn(
                    vb,
                    ("conv1", "bn1"),
                    shape(c_in, planes, 3, s, fd, fd),
                    1.0,
                    cfg.bn,
                )?,
                conv_bn(
                    vb,
                    ("conv2", "bn2"),
                    shape(planes, planes, 3, 1, d, d),
                    gamma_last,
                    cfg.bn,
                )?,
            ],
            BlockKind::Bottleneck => {
                let (s1, s3) = if cfg.stride_in_1x1 { (s, 1) } else { (1, s) };
                let out = planes * cfg.block.expansion();
                vec![
                    conv_bn(
                        vb,
                        ("conv1", "bn1"),
                        shape(c_in, planes, 1, s1, 0, 1),
                        1.0,
                        cfg.bn,
                    )?,
                    conv_bn(
                        vb,
                        ("conv2", "bn2"),
                        shape(planes, planes, 3, s3, fd, fd),
                        1.0,
                        cfg.bn,
                    )?,
                    conv_bn(
                        vb,
                        ("conv3", "bn3"),
                        shape(planes, out, 1, 1, 0, 1),
                        gamma_last,
                        cfg.bn,
                    )?,
                ]
            }
        };
        Ok(Self { path_a, shortcut })
    }

    /// Path B (or the identity), path A, their sum, ReLU.
    fn walk<W: Walker>(&self, w: &mut W, x: &W::Value) -> WalkResult<W, W::Value> {
        let identity = match &self.shortcut {
            Some(s) => s.walk(w, x)?,
            None => x.clone(),
        };
        let (last, inner) = self.path_a.split_last().expect("path A has units");
        let mut y = x.clone();
        for unit in inner {
            y = w.conv_bn(unit, &y, None, Activation::Relu)?;
        }
        w.conv_bn(last, &y, Some(&identity), Activation::Relu)
    }
}

/// A ResNet of any depth and variant, with timm's module tree (`conv1`, `bn1`,
/// `layer1.0.conv1`, …, `fc`).
#[derive(Debug, Clone)]
pub struct ResNet {
    cfg: ResNetConfig,
    stem: Stem,
    stages: Vec<Vec<Block>>,
    fc: Option<Linear>,
}

impl ResNet {
    /// Builds the network, registering its tensors under `vb` with timm's names.
    pub fn new(cfg: &ResNetConfig, vb: VarBuilder) -> crate::Result<Self> {
        cfg.validate()?;
        let stem = Stem::new(&vb, cfg)?;
        let mut c_in = cfg.stem_out();
        let (mut net_stride, mut dilation, mut prev_dilation) = (4, 1, 1);
        let mut stages = Vec::with_capacity(4);
        for (index, (&planes, &blocks)) in cfg.channels.iter().zip(&cfg.layers).enumerate() {
            let vb_stage = vb.pp(format!("layer{}", index + 1));
            let mut stride = if index == 0 { 1 } else { 2 };
            // Past the output stride, dilate instead of striding (timm's `make_blocks`).
            if net_stride >= cfg.output_stride {
                dilation *= stride;
                stride = 1;
            } else {
                net_stride *= stride;
            }
            let c_out = planes * cfg.block.expansion();
            let mut stage = Vec::with_capacity(blocks);
            for b in 0..blocks {
                let vb_block = vb_stage.pp(b);
                let at = BlockPlacement {
                    stride: if b == 0 { stride } else { 1 },
                    first_dilation: prev_dilation,
                    dilation,
                };
                let shortcut = if b == 0 && (stride != 1 || c_in != c_out) {
                    Some(Self::shortcut(
                        &vb_block.pp("downsample"),
                        cfg,
                        c_in,
                        c_out,
                        stride,
                        dilation,
                    )?)
                } else {
                    None
                };
                stage.push(Block::new(&vb_block, cfg, c_in, planes, &at, shortcut)?);
                prev_dilation = dilation;
                c_in = c_out;
            }
            stages.push(stage);
        }
        let fc = match cfg.num_classes {
            0 => None,
            n => Some(Linear::new(vb.pp("fc"), cfg.num_features(), n)?),
        };
        Ok(Self {
            cfg: cfg.clone(),
            stem,
            stages,
            fc,
        })
    }

    fn shortcut(
        vb: &VarBuilder,
        cfg: &ResNetConfig,
        c_in: usize,
        c_out: usize,
        stride: usize,
        dilation: usize,
    ) -> Result<Shortcut> {
        if cfg.avg_down {
            let pool = match (stride, dilation) {
                (1, 1) => None,
                (1, _) => Some(ShortcutPool::Same),
                (s, _) => Some(ShortcutPool::Strided(
                    Pool2dParams::new(2, s)
                        .ceil_mode(true)
                        .count_include_pad(false),
                )),
            };
            let unit = conv_bn(vb, ("1", "2"), shape(c_in, c_out, 1, 1, 0, 1), 1.0, cfg.bn)?;
            Ok(Shortcut { pool, unit })
        } else {
            let unit = conv_bn(
                vb,
                ("0", "1"),
                shape(c_in, c_out, 1, stride, 0, 1),
                1.0,
                cfg.bn,
            )?;
            Ok(Shortcut { pool: None, unit })
        }
    }

    /// The configuration this network was built from.
    pub fn config(&self) -> &ResNetConfig {
        &self.cfg
    }

    /// Output channels of stage `stage` (1-based).
    pub fn stage_channels(&self, stage: usize) -> usize {
        self.cfg.channels[stage - 1] * self.cfg.block.expansion()
    }

    /// Runs part of the network on `x` (NCHW): the stem when `stem`, then stages
    /// `stages` (1-based, inclusive range, possibly empty). What a detector's C4 layout
    /// needs: stem + stages 1–3 on the image, stage 4 on each region's crop.
    pub fn forward_stages(
        &self,
        x: &Tensor,
        train: bool,
        stem: bool,
        stages: std::ops::RangeInclusive<usize>,
    ) -> Result<Tensor> {
        let mut e = crate::walk::Eager::new(x, train, false);
        let act = self.walk_stages(&mut e, crate::walk::Act::Nchw(x.clone()), stem, stages)?;
        e.nchw(&act)
    }

    /// The walk of part of the network (as [`Self::forward_stages`] runs it) on any
    /// walker: the ONNX graph of a detector writes its two halves with it.
    pub fn walk_stages<W: Walker>(
        &self,
        w: &mut W,
        x: W::Value,
        stem: bool,
        stages: std::ops::RangeInclusive<usize>,
    ) -> WalkResult<W, W::Value> {
        let mut x = x;
        if stem {
            x = self.stem.walk(w, x)?;
        }
        for stage in stages {
            let blocks = self.stages.get(stage.wrapping_sub(1)).ok_or_else(|| {
                candle_core::Error::Msg(format!("a ResNet has stages 1 to 4, not {stage}"))
            })?;
            for block in blocks {
                x = block.walk(w, &x)?;
            }
        }
        Ok(x)
    }
}

impl Network for ResNet {
    fn in_chans(&self) -> usize {
        self.cfg.in_chans
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        crate::layers::check_input(x, self.cfg.in_chans, 32, "a ResNet")
    }

    fn walk<W: Walker>(&self, w: &mut W, x: W::Value) -> WalkResult<W, Walked<W::Value>> {
        let mut x = self.stem.walk(w, x)?;
        let mut features = Vec::with_capacity(4);
        for stage in &self.stages {
            for block in stage {
                x = block.walk(w, &x)?;
            }
            features.push(x.clone());
        }
        Ok(Walked {
            features,
            aux: None,
        })
    }

    fn classifier(&self) -> Option<&Linear> {
        self.fc.as_ref()
    }
}

#[cfg(test)]
mod tests;
