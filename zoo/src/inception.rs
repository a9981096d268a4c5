//! Inception-V3 (Szegedy et al. 2016), one of the paper's three networks (Table 2, Table 6),
//! in timm's names (`inception_v3`: `Conv2d_1a_3x3` … `Mixed_7c`, `fc`), so both
//! `timm/inception_v3.tv_in1k` (with the auxiliary classifier `AuxLogits`) and
//! `timm/inception_v3.gluon_in1k` (without) load.
//!
//! Every convolution is timm's `ConvNormAct`: convolution without bias (`.conv`), batch norm
//! with ε = 1e-3 (`.bn`), ReLU. Default input 299×299.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use ops::{Activation, Conv2dParams, Pool2dParams};

use crate::layers::{BatchNorm2d, BatchNormConfig, Conv2d, ConvBn, Linear};
use crate::walk::{Network, WalkResult, Walked, Walker};

/// Weight of the auxiliary classifier's loss in training (torchvision's reference recipe).
pub const AUX_LOSS_WEIGHT: f64 = 0.4;

/// Channels of Mixed_7c's output: what global pooling gives the classifier.
pub const NUM_FEATURES: usize = 2048;

/// Everything that defines an Inception-V3.
#[derive(Debug, Clone, PartialEq)]
pub struct InceptionConfig {
    /// Input channels.
    pub in_chans: usize,
    /// Classes; 0 for pooled features.
    pub num_classes: usize,
    /// Build the auxiliary classifier on `Mixed_6e` (its loss is added in training).
    pub aux_logits: bool,
    /// Batch-norm settings (ε = 1e-3).
    pub bn: BatchNormConfig,
}

impl Default for InceptionConfig {
    fn default() -> Self {
        Self {
            in_chans: 3,
            num_classes: 1000,
            aux_logits: false,
            bn: BatchNormConfig {
                eps: 1e-3,
                ..Default::default()
            },
        }
    }
}

/// Kernel, stride and padding of one `ConvNormAct`, height and width apart.
#[derive(Debug, Clone, Copy)]
struct Geo {
    k: (usize, usize),
    stride: usize,
    pad: (usize, usize),
}

const fn geo(kh: usize, kw: usize, stride: usize, ph: usize, pw: usize) -> Geo {
    Geo {
        k: (kh, kw),
        stride,
        pad: (ph, pw),
    }
}

const K1: Geo = geo(1, 1, 1, 0, 0);
const K3: Geo = geo(3, 3, 1, 0, 0);
const K3P: Geo = geo(3, 3, 1, 1, 1);
const K3S2: Geo = geo(3, 3, 2, 0, 0);
const K1X7: Geo = geo(1, 7, 1, 0, 3);
const K7X1: Geo = geo(7, 1, 1, 3, 0);
const K1X3: Geo = geo(1, 3, 1, 0, 1);
const K3X1: Geo = geo(3, 1, 1, 1, 0);

/// A `ConvNormAct` named `name` (`name.conv`, `name.bn`), followed by ReLU.
fn unit(
    vb: &VarBuilder,
    name: &str,
    c_in: usize,
    c_out: usize,
    g: Geo,
    bn: BatchNormConfig,
) -> Result<ConvBn> {
    let vb = vb.pp(name);
    let params = Conv2dParams {
        stride: g.stride,
        padding: g.pad.0,
        padding_w: Some(g.pad.1),
        ..Default::default()
    };
    let weight_shape = (c_out, c_in, g.k.0, g.k.1);
    Ok(ConvBn::new(
        Conv2d::with_shape(vb.pp("conv"), weight_shape, params)?,
        BatchNorm2d::new(vb.pp("bn"), c_out, 1.0, bn)?,
    ))
}

/// A chain of `ConvNormAct`s: one branch of an Inception module.
#[derive(Debug, Clone)]
struct Branch(Vec<ConvBn>);

impl Branch {
    fn new(
        vb: &VarBuilder,
        c_in: usize,
        layers: &[(&str, usize, Geo)],
        bn: BatchNormConfig,
    ) -> Result<Self> {
        let mut c = c_in;
        let mut units = Vec::with_capacity(layers.len());
        for &(name, c_out, g) in layers {
            units.push(unit(vb, name, c, c_out, g, bn)?);
            c = c_out;
        }
        Ok(Self(units))
    }

    fn walk<W: Walker>(&self, w: &mut W, x: &W::Value) -> WalkResult<W, W::Value> {
        let mut x = x.clone();
        for u in &self.0 {
            x = w.conv_bn(u, &x, None, Activation::Relu)?;
        }
        Ok(x)
    }
}

/// What precedes a branch's convolutions.
#[derive(Debug, Clone, Copy)]
enum Pre {
    None,
    /// 3×3 average pool, stride 1, padding 1 counted (PyTorch's default).
    AvgPool,
    /// 3×3 max pool, stride 2.
    MaxPool,
}

impl Pre {
    /// The pooling on blocked activations (none: `x` itself).
    fn walk<W: Walker>(self, w: &mut W, x: &W::Value) -> WalkResult<W, W::Value> {
        match self {
            Pre::None => Ok(x.clone()),
            Pre::AvgPool => w.avg_pool(x, self.params()),
            Pre::MaxPool => w.max_pool(x, self.params()),
        }
    }

    fn params(self) -> Pool2dParams {
        match self {
            Pre::AvgPool => Pool2dParams::new(3, 1).padding(1),
            _ => Pool2dParams::new(3, 2),
        }
    }
}

/// A part of a module's output: a branch, possibly split into two parallel 1×3 / 3×1 heads
/// (InceptionE) whose outputs are concatenated.
#[derive(Debug, Clone)]
struct Path {
    pre: Pre,
    trunk: Branch,
    split: Option<(ConvBn, ConvBn)>,
}

impl Path {
    /// The path's outputs (two for a split path).
    fn walk<W: Walker>(&self, w: &mut W, x: &W::Value) -> WalkResult<W, Vec<W::Value>> {
        let pooled = self.pre.walk(w, x)?;
        let y = self.trunk.walk(w, &pooled)?;
        match &self.split {
            None => Ok(vec![y]),
            Some((a, b)) => Ok(vec![
                w.conv_bn(a, &y, None, Activation::Relu)?,
                w.conv_bn(b, &y, None, Activation::Relu)?,
            ]),
        }
    }
}

/// One Inception module: parallel paths concatenated along channels.
#[derive(Debug, Clone)]
struct Module(Vec<Path>);

impl Module {
    fn walk<W: Walker>(&self, w: &mut W, x: &W::Value) -> WalkResult<W, W::Value> {
        let mut outs = Vec::new();
        for p in &self.0 {
            outs.extend(p.walk(w, x)?);
        }
        w.concat(&outs)
    }
}

fn path(
    vb: &VarBuilder,
    c_in: usize,
    pre: Pre,
    layers: &[(&str, usize, Geo)],
    bn: BatchNormConfig,
) -> Result<Path> {
    Ok(Path {
        pre,
        trunk: Branch::new(vb, c_in, layers, bn)?,
        split: None,
    })
}

/// InceptionA (`Mixed_5b`–`5d`): 1×1; 1×1→5×5; 1×1→3×3→3×3; avg-pool→1×1.
fn inception_a(
    vb: &VarBuilder,
    c: usize,
    pool_features: usize,
    bn: BatchNormConfig,
) -> Result<Module> {
    Ok(Module(vec![
        path(vb, c, Pre::None, &[("branch1x1", 64, K1)], bn)?,
        path(
            vb,
            c,
            Pre::None,
            &[
                ("branch5x5_1", 48, K1),
                ("branch5x5_2", 64, geo(5, 5, 1, 2, 2)),
            ],
            bn,
        )?,
        path(
            vb,
            c,
            Pre::None,
            &[
                ("branch3x3dbl_1", 64, K1),
                ("branch3x3dbl_2", 96, K3P),
                ("branch3x3dbl_3", 96, K3P),
            ],
            bn,
        )?,
        path(
            vb,
            c,
            Pre::AvgPool,
            &[("branch_pool", pool_features, K1)],
            bn,
        )?,
    ]))
}

/// InceptionB (`Mixed_6a`): 3×3/2; 1×1→3×3→3×3/2; max-pool/2.
fn inception_b(vb: &VarBuilder, c: usize, bn: BatchNormConfig) -> Result<Module> {
    Ok(Module(vec![
        path(vb, c, Pre::None, &[("branch3x3", 384, K3S2)], bn)?,
        path(
            vb,
            c,
            Pre::None,
            &[
                ("branch3x3dbl_1", 64, K1),
                ("branch3x3dbl_2", 96, K3P),
                ("branch3x3dbl_3", 96, K3S2),
            ],
            bn,
        )?,
        path(vb, c, Pre::MaxPool, &[], bn)?,
    ]))
}

/// InceptionC (`Mixed_6b`–`6e`): factorised 7×7 convolutions of width `c7`.
fn inception_c(vb: &VarBuilder, c: usize, c7: usize, bn: BatchNormConfig) -> Result<Module> {
    Ok(Module(vec![
        path(vb, c, Pre::None, &[("branch1x1", 192, K1)], bn)?,
        path(
            vb,
            c,
            Pre::None,
            &[
                ("branch7x7_1", c7, K1),
                ("branch7x7_2", c7, K1X7),
                ("branch7x7_3", 192, K7X1),
            ],
            bn,
        )?,
        path(
            vb,
            c,
            Pre::None,
            &[
                ("branch7x7dbl_1", c7, K1),
                ("branch7x7dbl_2", c7, K7X1),
                ("branch7x7dbl_3", c7, K1X7),
                ("branch7x7dbl_4", c7, K7X1),
                ("branch7x7dbl_5", 192, K1X7),
            ],
            bn,
        )?,
        path(vb, c, Pre::AvgPool, &[("branch_pool", 192, K1)], bn)?,
    ]))
}

/// InceptionD (`Mixed_7a`): 1×1→3×3/2; 1×1→1×7→7×1→3×3/2; max-pool/2.
fn inception_d(vb: &VarBuilder, c: usize, bn: BatchNormConfig) -> Result<Module> {
    Ok(Module(vec![
        path(
            vb,
            c,
            Pre::None,
            &[("branch3x3_1", 192, K1), ("branch3x3_2", 320, K3S2)],
            bn,
        )?,
        path(
            vb,
            c,
            Pre::None,
            &[
                ("branch7x7x3_1", 192, K1),
                ("branch7x7x3_2", 192, K1X7),
                ("branch7x7x3_3", 192, K7X1),
                ("branch7x7x3_4", 192, K3S2),
            ],
            bn,
        )?,
        path(vb, c, Pre::MaxPool, &[], bn)?,
    ]))
}

/// InceptionE (`Mixed_7b`, `7c`): 1×1; 1×1→(1×3 ‖ 3×1); 1×1→3×3→(1×3 ‖ 3×1); avg-pool→1×1.
fn inception_e(vb: &VarBuilder, c: usize, bn: BatchNormConfig) -> Result<Module> {
    let split = |trunk_out: usize, a: &str, b: &str| -> Result<(ConvBn, ConvBn)> {
        Ok((
            unit(vb, a, trunk_out, 384, K1X3, bn)?,
            unit(vb, b, trunk_out, 384, K3X1, bn)?,
        ))
    };
    let mut p3 = path(vb, c, Pre::None, &[("branch3x3_1", 384, K1)], bn)?;
    p3.split = Some(split(384, "branch3x3_2a", "branch3x3_2b")?);
    let mut p3dbl = path(
        vb,
        c,
        Pre::None,
        &[("branch3x3dbl_1", 448, K1), ("branch3x3dbl_2", 384, K3P)],
        bn,
    )?;
    p3dbl.split = Some(split(384, "branch3x3dbl_3a", "branch3x3dbl_3b")?);
    Ok(Module(vec![
        path(vb, c, Pre::None, &[("branch1x1", 320, K1)], bn)?,
        p3,
        p3dbl,
        path(vb, c, Pre::AvgPool, &[("branch_pool", 192, K1)], bn)?,
    ]))
}

/// The auxiliary classifier on `Mixed_6e`: 5×5/3 average pool, 1×1 (128), 5×5 (768), global
/// pool, fc.
#[derive(Debug, Clone)]
struct Aux {
    convs: Branch,
    fc: Linear,
}

impl Aux {
    fn pool() -> Pool2dParams {
        Pool2dParams::new(5, 3)
    }

    fn walk<W: Walker>(&self, w: &mut W, x: &W::Value) -> WalkResult<W, W::Value> {
        let x = w.avg_pool(x, Self::pool())?;
        let x = self.convs.walk(w, &x)?;
        w.head(&x, Some(&self.fc))
    }
}

/// Inception-V3 with timm's module tree.
#[derive(Debug, Clone)]
pub struct InceptionV3 {
    cfg: InceptionConfig,
    stem: Vec<(Option<Pre>, ConvBn)>,
    /// `Mixed_5b` … `Mixed_6e`.
    pre_aux: Vec<Module>,
    /// `Mixed_7a` … `Mixed_7c`.
    post_aux: Vec<Module>,
    aux: Option<Aux>,
    fc: Option<Linear>,
}

impl InceptionV3 {
    /// Builds the network, registering its tensors under `vb` with timm's names.
    pub fn new(cfg: &InceptionConfig, vb: VarBuilder) -> crate::Result<Self> {
        let bn = cfg.bn;
        let stem = vec![
            (
                None,
                unit(&vb, "Conv2d_1a_3x3", cfg.in_chans, 32, K3S2, bn)?,
            ),
            (None, unit(&vb, "Conv2d_2a_3x3", 32, 32, K3, bn)?),
            (None, unit(&vb, "Conv2d_2b_3x3", 32, 64, K3P, bn)?),
            (
                Some(Pre::MaxPool),
                unit(&vb, "Conv2d_3b_1x1", 64, 80, K1, bn)?,
            ),
            (None, unit(&vb, "Conv2d_4a_3x3", 80, 192, K3, bn)?),
        ];
        let pre_aux = vec![
            inception_a(&vb.pp("Mixed_5b"), 192, 32, bn)?,
            inception_a(&vb.pp("Mixed_5c"), 256, 64, bn)?,
            inception_a(&vb.pp("Mixed_5d"), 288, 64, bn)?,
            inception_b(&vb.pp("Mixed_6a"), 288, bn)?,
            inception_c(&vb.pp("Mixed_6b"), 768, 128, bn)?,
            inception_c(&vb.pp("Mixed_6c"), 768, 160, bn)?,
            inception_c(&vb.pp("Mixed_6d"), 768, 160, bn)?,
            inception_c(&vb.pp("Mixed_6e"), 768, 192, bn)?,
        ];
        let post_aux = vec![
            inception_d(&vb.pp("Mixed_7a"), 768, bn)?,
            inception_e(&vb.pp("Mixed_7b"), 1280, bn)?,
            inception_e(&vb.pp("Mixed_7c"), 2048, bn)?,
        ];
        let aux = match (cfg.aux_logits, cfg.num_classes) {
            (true, n) if n > 0 => {
                let vb = vb.pp("AuxLogits");
                Some(Aux {
                    convs: Branch::new(
                        &vb,
                        768,
                        &[("conv0", 128, K1), ("conv1", 768, geo(5, 5, 1, 0, 0))],
                        bn,
                    )?,
                    fc: Linear::new(vb.pp("fc"), 768, n)?,
                })
            }
            _ => None,
        };
        let fc = match cfg.num_classes {
            0 => None,
            n => Some(Linear::new(vb.pp("fc"), NUM_FEATURES, n)?),
        };
        Ok(Self {
            cfg: cfg.clone(),
            stem,
            pre_aux,
            post_aux,
            aux,
            fc,
        })
    }

    /// The configuration this network was built from.
    pub fn config(&self) -> &InceptionConfig {
        &self.cfg
    }
}

impl Network for InceptionV3 {
    fn in_chans(&self) -> usize {
        self.cfg.in_chans
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        crate::layers::check_input(x, self.cfg.in_chans, 75, "Inception-V3")
    }

    /// The stem, Mixed_5b … Mixed_6e, the auxiliary classifier (where the walker wants
    /// it), Mixed_7a … Mixed_7c. Features: the stem's output, Mixed_5d, Mixed_6e, Mixed_7c.
    fn walk<W: Walker>(&self, w: &mut W, x: W::Value) -> WalkResult<W, Walked<W::Value>> {
        let mut x = x;
        for (pre, u) in &self.stem {
            if pre.is_some() {
                x = w.max_pool(&x, Pre::MaxPool.params())?;
            }
            x = w.conv_bn(u, &x, None, Activation::Relu)?;
        }
        x = w.max_pool(&x, Pre::MaxPool.params())?;
        let mut features = vec![x.clone()];
        for (i, m) in self.pre_aux.iter().enumerate() {
            x = m.walk(w, &x)?;
            if i == 2 {
                features.push(x.clone());
            }
        }
        features.push(x.clone());
        let aux = match &self.aux {
            Some(aux) if w.wants_aux() => {
                if let Some((h, wd)) = w.spatial_size(&x) {
                    if h < 17 || wd < 17 {
                        return Err(candle_core::Error::msg(format!(
                            "Inception-V3's auxiliary classifier needs Mixed_6e outputs of at least 17x17 (inputs of at least 299x299), got {h}x{wd}"
                        ))
                        .into());
                    }
                }
                Some(aux.walk(w, &x)?)
            }
            _ => None,
        };
        for m in &self.post_aux {
            x = m.walk(w, &x)?;
        }
        features.push(x);
        Ok(Walked { features, aux })
    }

    fn classifier(&self) -> Option<&Linear> {
        self.fc.as_ref()
    }
}
