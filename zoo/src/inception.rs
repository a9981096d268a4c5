//! Inception-V3 (Szegedy et al. 2016), one of the paper's three networks (Table 2, Table 6),
//! in timm's names (`inception_v3`: `Conv2d_1a_3x3` … `Mixed_7c`, `fc`), so both
//! `timm/inception_v3.tv_in1k` (with the auxiliary classifier `AuxLogits`) and
//! `timm/inception_v3.gluon_in1k` (without) load.
//!
//! Every convolution is timm's `ConvNormAct`: convolution without bias (`.conv`), batch norm
//! with ε = 1e-3 (`.bn`), ReLU. Default input 299×299.

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;
use ops::{Activation, Conv2dParams, Pool2dParams};

use crate::layers::{BatchNorm2d, BatchNormConfig, Conv2d, ConvBn, Linear};
use crate::onnx::OnnxGraph;
use crate::Classifier;

/// Weight of the auxiliary classifier's loss in training (torchvision's reference recipe).
pub const AUX_LOSS_WEIGHT: f64 = 0.4;

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

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for u in &self.0 {
            x = u.forward_with(&x, train, None, Activation::Relu)?;
        }
        Ok(x)
    }

    /// The branch in inference on blocked (NCHW16c) activations.
    fn forward_blocked(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for u in &self.0 {
            x = u.forward_blocked(&x, None, Activation::Relu)?;
        }
        Ok(x)
    }

    fn to_onnx(&self, g: &mut OnnxGraph, x: &str) -> crate::Result<String> {
        let mut x = x.to_string();
        for u in &self.0 {
            let y = g.conv_bn(u, &x)?;
            x = g.relu(&y);
        }
        Ok(x)
    }

    fn macs(&self, h: usize, w: usize) -> (usize, usize, u64) {
        let (mut h, mut w, mut total) = (h, w, 0);
        for u in &self.0 {
            let (oh, ow, m) = u.macs(h, w);
            (h, w, total) = (oh, ow, total + m);
        }
        (h, w, total)
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
    fn forward_blocked(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Pre::None => Ok(x.clone()),
            Pre::AvgPool => ops::blocked::avg_pool2d(x, self.params()),
            Pre::MaxPool => ops::blocked::max_pool2d(x, self.params()),
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
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        let x = match self.pre {
            Pre::None => x.clone(),
            Pre::AvgPool => ops::avg_pool2d(x, self.pre.params())?,
            Pre::MaxPool => ops::max_pool2d(x, self.pre.params())?,
        };
        let y = self.trunk.forward_t(&x, train)?;
        match &self.split {
            None => Ok(vec![y]),
            Some((a, b)) => Ok(vec![
                a.forward_with(&y, train, None, Activation::Relu)?,
                b.forward_with(&y, train, None, Activation::Relu)?,
            ]),
        }
    }

    /// The path in inference on blocked activations.
    fn forward_blocked(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let y = self.trunk.forward_blocked(&self.pre.forward_blocked(x)?)?;
        match &self.split {
            None => Ok(vec![y]),
            Some((a, b)) => Ok(vec![
                a.forward_blocked(&y, None, Activation::Relu)?,
                b.forward_blocked(&y, None, Activation::Relu)?,
            ]),
        }
    }

    /// Its units, and whether each output fills whole channel blocks (so that the
    /// module's concatenation of blocked outputs is the concatenation of channels).
    fn has_blocked_form(&self) -> bool {
        let outputs: Vec<&ConvBn> = match &self.split {
            None => self.trunk.0.last().into_iter().collect(),
            Some((a, b)) => vec![a, b],
        };
        outputs
            .iter()
            .all(|u| u.conv.out_channels() % ops::blocked::BLOCK == 0)
            && self
                .trunk
                .0
                .iter()
                .chain(self.split.iter().flat_map(|(a, b)| [a, b]))
                .all(ConvBn::is_read_only)
    }

    fn to_onnx(&self, g: &mut OnnxGraph, x: &str) -> crate::Result<Vec<String>> {
        let x = match self.pre {
            Pre::None => x.to_string(),
            Pre::AvgPool => g.avg_pool(x, self.pre.params()),
            Pre::MaxPool => g.max_pool(x, self.pre.params()),
        };
        let y = self.trunk.to_onnx(g, &x)?;
        match &self.split {
            None => Ok(vec![y]),
            Some((a, b)) => {
                let ya = g.conv_bn(a, &y)?;
                let yb = g.conv_bn(b, &y)?;
                Ok(vec![g.relu(&ya), g.relu(&yb)])
            }
        }
    }

    fn macs(&self, h: usize, w: usize) -> (usize, usize, u64) {
        let (h, w) = match self.pre {
            Pre::None => (h, w),
            pre => {
                let p = pre.params();
                let f = |l| {
                    ops::pool_output_size(l, p.kernel, p.stride, p.padding, 1, false).unwrap_or(0)
                };
                (f(h), f(w))
            }
        };
        let (oh, ow, mut total) = self.trunk.macs(h, w);
        if let Some((a, b)) = &self.split {
            total += a.macs(oh, ow).2 + b.macs(oh, ow).2;
        }
        (oh, ow, total)
    }
}

/// One Inception module: parallel paths concatenated along channels.
#[derive(Debug, Clone)]
struct Module(Vec<Path>);

impl Module {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut outs = Vec::new();
        for p in &self.0 {
            outs.extend(p.forward_t(x, train)?);
        }
        Tensor::cat(&outs, 1)
    }

    /// The module in inference on blocked activations: the paths' outputs concatenated
    /// block-wise (each fills whole blocks, [`Path::has_blocked_form`]).
    fn forward_blocked(&self, x: &Tensor) -> Result<Tensor> {
        let mut outs = Vec::new();
        for p in &self.0 {
            outs.extend(p.forward_blocked(x)?);
        }
        Tensor::cat(&outs, 1)
    }

    fn to_onnx(&self, g: &mut OnnxGraph, x: &str) -> crate::Result<String> {
        let mut outs = Vec::new();
        for p in &self.0 {
            outs.extend(p.to_onnx(g, x)?);
        }
        Ok(g.concat(&outs))
    }

    fn macs(&self, h: usize, w: usize) -> (usize, usize, u64) {
        let mut total = 0;
        let mut size = (h, w);
        for p in &self.0 {
            let (oh, ow, m) = p.macs(h, w);
            size = (oh, ow);
            total += m;
        }
        (size.0, size.1, total)
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

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = ops::avg_pool2d(x, Self::pool())?;
        let x = self.convs.forward_t(&x, train)?;
        self.fc.forward(&ops::global_avg_pool(&x)?)
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
            n => Some(Linear::new(vb.pp("fc"), 2048, n)?),
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

    fn check_input(&self, x: &Tensor) -> Result<()> {
        crate::layers::check_input(x, self.cfg.in_chans, 75, "Inception-V3")
    }

    /// Whether inference on `x` takes the blocked path ([`ops::blocked`]): f32 on a CPU
    /// with AVX-512F, read-only weights (`Model::frozen`).
    fn takes_blocked_path(&self, x: &Tensor) -> bool {
        x.device().is_cpu()
            && x.dtype() == DType::F32
            && ops::blocked::available()
            && self.stem.iter().all(|(_, u)| u.is_read_only())
            && self
                .pre_aux
                .iter()
                .chain(&self.post_aux)
                .flat_map(|m| &m.0)
                .all(Path::has_blocked_form)
    }

    /// Inference on blocked activations: the first convolution in NCHW (3 input
    /// channels), converted once, everything after it blocked up to the classifier's
    /// pooling.
    fn forward_blocked(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        let ((_, first), rest) = self.stem.split_first().expect("five stem units");
        let y = first.forward_with(x, false, None, Activation::Relu)?;
        let mut x = ops::blocked::to_blocked(&y)?;
        for (pre, u) in rest {
            if pre.is_some() {
                x = ops::blocked::max_pool2d(&x, Pre::MaxPool.params())?;
            }
            x = u.forward_blocked(&x, None, Activation::Relu)?;
        }
        x = ops::blocked::max_pool2d(&x, Pre::MaxPool.params())?;
        for m in self.pre_aux.iter().chain(&self.post_aux) {
            x = m.forward_blocked(&x)?;
        }
        let channels = x.dim(1)? * ops::blocked::BLOCK;
        self.classify(ops::blocked::global_avg_pool(&x, channels)?)
    }

    /// The classifier on pooled features `(N, C)` (none: the features).
    fn classify(&self, pooled: Tensor) -> Result<Tensor> {
        crate::layers::classify(self.fc.as_ref(), pooled)
    }

    fn stem_forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for (pre, u) in &self.stem {
            if pre.is_some() {
                x = ops::max_pool2d(&x, Pre::MaxPool.params())?;
            }
            x = u.forward_with(&x, train, None, Activation::Relu)?;
        }
        ops::max_pool2d(&x, Pre::MaxPool.params())
    }

    /// Stage outputs (after `Conv2d_4a`'s pool, `Mixed_5d`, `Mixed_6e`, `Mixed_7c`) and, when
    /// built with it, the auxiliary logits.
    fn run(
        &self,
        x: &Tensor,
        train: bool,
        want_aux: bool,
    ) -> Result<(Vec<Tensor>, Option<Tensor>)> {
        self.check_input(x)?;
        let mut x = self.stem_forward(x, train)?;
        let mut features = vec![x.clone()];
        for (i, m) in self.pre_aux.iter().enumerate() {
            x = m.forward_t(&x, train)?;
            if i == 2 {
                features.push(x.clone());
            }
        }
        features.push(x.clone());
        let aux = match (&self.aux, want_aux) {
            (Some(aux), true) => {
                let (_, _, h, w) = x.dims4()?;
                if h < 17 || w < 17 {
                    candle_core::bail!(
                        "Inception-V3's auxiliary classifier needs Mixed_6e outputs of at least 17x17 (inputs of at least 299x299), got {h}x{w}"
                    );
                }
                Some(aux.forward_t(&x, train)?)
            }
            _ => None,
        };
        for m in &self.post_aux {
            x = m.forward_t(&x, train)?;
        }
        features.push(x);
        Ok((features, aux))
    }
}

impl Classifier for InceptionV3 {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train && self.takes_blocked_path(x) {
            return self.forward_blocked(x);
        }
        let (features, _) = self.run(x, train, false)?;
        self.forward_head(features.last().expect("four stages"))
    }

    fn forward_with_aux(&self, x: &Tensor, train: bool) -> Result<(Tensor, Option<Tensor>)> {
        let (features, aux) = self.run(x, train, true)?;
        Ok((
            self.forward_head(features.last().expect("four stages"))?,
            aux,
        ))
    }

    fn forward_features(&self, x: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        Ok(self.run(x, train, false)?.0)
    }

    fn forward_head(&self, last: &Tensor) -> Result<Tensor> {
        self.classify(ops::global_avg_pool(last)?)
    }

    fn macs(&self, h: usize, w: usize) -> u64 {
        let p = Pre::MaxPool.params();
        let pool =
            |l| ops::pool_output_size(l, p.kernel, p.stride, p.padding, 1, false).unwrap_or(0);
        let (mut h, mut w, mut total) = (h, w, 0);
        for (pre, u) in &self.stem {
            if pre.is_some() {
                (h, w) = (pool(h), pool(w));
            }
            let (oh, ow, m) = u.macs(h, w);
            (h, w, total) = (oh, ow, total + m);
        }
        (h, w) = (pool(h), pool(w));
        for m in self.pre_aux.iter().chain(&self.post_aux) {
            let (oh, ow, macs) = m.macs(h, w);
            (h, w, total) = (oh, ow, total + macs);
        }
        total + self.fc.as_ref().map_or(0, Linear::macs)
    }

    fn to_onnx(&self, g: &mut OnnxGraph, input: &str) -> crate::Result<String> {
        let mut x = input.to_string();
        for (pre, u) in &self.stem {
            if pre.is_some() {
                x = g.max_pool(&x, Pre::MaxPool.params());
            }
            let y = g.conv_bn(u, &x)?;
            x = g.relu(&y);
        }
        x = g.max_pool(&x, Pre::MaxPool.params());
        for m in self.pre_aux.iter().chain(&self.post_aux) {
            x = m.to_onnx(g, &x)?;
        }
        let pooled = g.global_avg_pool(&x);
        match &self.fc {
            Some(fc) => g.linear(fc, &pooled),
            None => Ok(pooled),
        }
    }
}
