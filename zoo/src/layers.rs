//! The building blocks of the zoo's CNNs: bias-free convolution, batch norm that trains, and
//! the classifier. Each is built from a [`VarBuilder`] whose path is the tensor's name.

use std::sync::OnceLock;

use candle_core::{DType, Result, Tensor, Var, D};
use candle_nn::{Init, VarBuilder};
use ops::{Activation, Conv2dParams};

/// A bias-free 2-D convolution (`torch.nn.Conv2d(..., bias=False)`), running on
/// [`ops::conv2d`].
#[derive(Debug, Clone)]
pub struct Conv2d {
    name: String,
    weight: Tensor,
    params: Conv2dParams,
}

impl Conv2d {
    /// Registers `weight: (c_out, c_in / groups, k, k)` under `vb`. Its values are set by
    /// [`crate::init::xavier_uniform`] or by loading a checkpoint.
    pub fn new(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        params: Conv2dParams,
    ) -> Result<Self> {
        Self::with_shape(vb, (c_out, c_in, kernel, kernel), params)
    }

    /// Registers a weight of shape `(c_out, c_in / groups, kh, kw)` under `vb` for a
    /// `(c_out, c_in, kh, kw)` convolution; non-square kernels are Inception's 1×7 and 7×1.
    pub fn with_shape(
        vb: VarBuilder,
        shape: (usize, usize, usize, usize),
        params: Conv2dParams,
    ) -> Result<Self> {
        let (c_out, c_in, kh, kw) = shape;
        let weight = vb.get_with_hints(
            (c_out, c_in / params.groups, kh, kw),
            "weight",
            Init::Const(0.),
        )?;
        Ok(Self {
            name: vb.prefix(),
            weight,
            params,
        })
    }

    /// The checkpoint name of the layer (`layer1.0.conv1`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.weight.dims()[1] * self.params.groups
    }

    /// The weight `(c_out, c_in / groups, k, k)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Stride, padding, dilation and groups.
    pub fn params(&self) -> Conv2dParams {
        self.params
    }

    /// The convolution of `x`, in `x`'s dtype (the weight is cast to it: mixed precision
    /// keeps f32 master weights, Section 3.2).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::conv2d(x, &self.weight.to_dtype(x.dtype())?, self.params)
    }

    /// Output size and multiply-accumulates for one `h × w` input.
    pub fn macs(&self, h: usize, w: usize) -> (usize, usize, u64) {
        let (c_out, c_in_group, kh, kw) = self.weight.dims4().unwrap_or((0, 0, 1, 1));
        let (oh, ow) = self.params.output_size(h, w, kh, kw).unwrap_or((0, 0));
        (oh, ow, (c_out * oh * ow * c_in_group * kh * kw) as u64)
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }
}

/// Names of the batch-norm buffers: state that checkpoints carry but optimisers never touch.
pub const BN_BUFFERS: [&str; 3] = ["running_mean", "running_var", "num_batches_tracked"];

/// Whether the variable `name` is a batch-norm buffer rather than a trainable parameter.
pub fn is_buffer(name: &str) -> bool {
    BN_BUFFERS
        .iter()
        .any(|b| name.rsplit('.').next() == Some(b))
}

/// Batch normalisation over `(N, C, H, W)` that trains (batch statistics, running averages
/// updated with `momentum`) and evaluates (running statistics), as `torch.nn.BatchNorm2d`.
///
/// When `frozen`, it always uses the running statistics and passes no gradient to γ and β:
/// the usual setting for detection backbones fine-tuned with small batches.
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    name: String,
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    num_batches_tracked: Tensor,
    eps: f64,
    momentum: f64,
    frozen: bool,
}

/// Settings shared by every batch norm of a network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormConfig {
    /// Added to the variance (1e-5 in PyTorch; 1e-3 in Inception-V3).
    pub eps: f64,
    /// Weight of the new batch in the running averages (PyTorch's 0.1).
    pub momentum: f64,
    /// Use running statistics even in training, and train neither γ nor β.
    pub frozen: bool,
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        Self {
            eps: 1e-5,
            momentum: 0.1,
            frozen: false,
        }
    }
}

impl BatchNorm2d {
    /// Registers γ (`weight`, initialised to `gamma_init`), β (`bias`), the running
    /// statistics and `num_batches_tracked` for `channels` channels under `vb`.
    pub fn new(
        vb: VarBuilder,
        channels: usize,
        gamma_init: f64,
        cfg: BatchNormConfig,
    ) -> Result<Self> {
        Ok(Self {
            name: vb.prefix(),
            weight: vb.get_with_hints(channels, "weight", Init::Const(gamma_init))?,
            bias: vb.get_with_hints(channels, "bias", Init::Const(0.))?,
            running_mean: vb.get_with_hints(channels, "running_mean", Init::Const(0.))?,
            running_var: vb.get_with_hints(channels, "running_var", Init::Const(1.))?,
            num_batches_tracked: vb.get_with_hints_dtype(
                (),
                "num_batches_tracked",
                Init::Const(0.),
                DType::I64,
            )?,
            eps: cfg.eps,
            momentum: cfg.momentum,
            frozen: cfg.frozen,
        })
    }

    /// The checkpoint name of the layer (`layer1.0.bn1`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// γ, β, running mean and running variance, in that order.
    pub fn tensors(&self) -> [&Tensor; 4] {
        [
            &self.weight,
            &self.bias,
            &self.running_mean,
            &self.running_var,
        ]
    }

    /// The ε added to the variance.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// Whether `forward_t(_, train)` normalises with the batch's statistics (training and not
    /// frozen) rather than the running ones.
    pub fn uses_batch_stats(&self, train: bool) -> bool {
        train && !self.frozen
    }

    /// The per-channel `(scale, shift)` of inference: `y = x · scale + shift` with
    /// `scale = γ / √(running_var + ε)` and `shift = β − running_mean · scale`, computed in
    /// f32 (f64 for f64) and returned in `dtype`. Frozen, γ and β get no gradient.
    pub fn inference_affine(&self, dtype: DType) -> Result<(Tensor, Tensor)> {
        let stat = if dtype == DType::F64 {
            DType::F64
        } else {
            DType::F32
        };
        let (weight, bias) = if self.frozen {
            (self.weight.detach(), self.bias.detach())
        } else {
            (self.weight.clone(), self.bias.clone())
        };
        let inv_std = (self.running_var.to_dtype(stat)? + self.eps)?
            .sqrt()?
            .recip()?;
        let scale = weight.to_dtype(stat)?.mul(&inv_std)?;
        let shift = bias
            .to_dtype(stat)?
            .sub(&self.running_mean.to_dtype(stat)?.mul(&scale)?)?;
        Ok((scale.to_dtype(dtype)?, shift.to_dtype(dtype)?))
    }

    fn per_channel(t: &Tensor) -> Result<Tensor> {
        t.reshape((1, (), 1, 1))
    }

    /// Whether any of γ, β or the running statistics is a variable (may change in place).
    fn has_variables(&self) -> bool {
        [
            &self.weight,
            &self.bias,
            &self.running_mean,
            &self.running_var,
        ]
        .iter()
        .any(|t| t.is_variable())
    }

    /// Normalises `x`; in training (and not frozen), with the batch's statistics, updating
    /// the running ones when they are variables.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_with(x, train, None, Activation::Identity)
    }

    /// `act(bn(x) + residual)`; with the batch's statistics as one fused op
    /// ([`ops::batch_norm_train_act`]).
    pub fn forward_with(
        &self,
        x: &Tensor,
        train: bool,
        residual: Option<&Tensor>,
        act: Activation,
    ) -> Result<Tensor> {
        let dtype = x.dtype();
        // Statistics in f32 (f64 for f64 inputs) whatever the compute dtype (Section 3.2).
        let stat = if dtype == DType::F64 {
            DType::F64
        } else {
            DType::F32
        };
        if !self.uses_batch_stats(train) {
            let (scale, shift) = self.inference_affine(dtype)?;
            let y = x
                .broadcast_mul(&Self::per_channel(&scale)?)?
                .broadcast_add(&Self::per_channel(&shift)?)?;
            return act.after_residual(&y, residual);
        }
        let (n, _, h, w) = x.dims4()?;
        let residual = residual.map(|r| r.to_dtype(stat)).transpose()?;
        let (y, mean, var) = ops::batch_norm_train_act(
            &x.to_dtype(stat)?,
            &self.weight.to_dtype(stat)?,
            &self.bias.to_dtype(stat)?,
            self.eps,
            residual.as_ref(),
            act,
        )?;
        self.update_running_stats(&mean, &var, n * h * w)?;
        y.to_dtype(dtype)
    }

    fn update_running_stats(&self, mean: &Tensor, var: &Tensor, count: usize) -> Result<()> {
        if !self.running_mean.is_variable() {
            return Ok(()); // Weights loaded read-only: nothing to update.
        }
        let m = self.momentum;
        let mean = mean.detach().flatten_all()?;
        // PyTorch keeps the unbiased variance in the running average.
        let unbiased = (var.detach().flatten_all()? * (count as f64 / (count - 1) as f64))?;
        let update = |running: &Tensor, batch: &Tensor| -> Result<()> {
            let new = ((running.to_dtype(batch.dtype())? * (1. - m))? + (batch * m)?)?
                .to_dtype(running.dtype())?;
            Var::from_tensor(running)?.set(&new)
        };
        update(&self.running_mean, &mean)?;
        update(&self.running_var, &unbiased)?;
        let tracked =
            (self.num_batches_tracked.to_dtype(DType::F64)? + 1.)?.to_dtype(DType::I64)?;
        Var::from_tensor(&self.num_batches_tracked)?.set(&tracked)
    }
}

/// A convolution followed by batch norm: the unit every ResNet layer is made of.
#[derive(Debug, Clone)]
pub struct ConvBn {
    /// The convolution.
    pub conv: Conv2d,
    /// The batch norm on its output.
    pub bn: BatchNorm2d,
    /// Batch norm folded into the convolution `(dtype, weight, shift)`, kept after the
    /// first inference forward when the weights are read-only tensors (a network built by
    /// `Model::frozen`), which cannot change under it.
    folded: OnceLock<(DType, Tensor, Tensor)>,
    /// The folded convolution packed for the blocked inference path, kept after its first
    /// use (read-only weights only).
    blocked: OnceLock<ops::blocked::BlockedConv>,
}

impl ConvBn {
    /// `bn(conv(x))` from its two layers.
    pub fn new(conv: Conv2d, bn: BatchNorm2d) -> Self {
        Self {
            conv,
            bn,
            folded: OnceLock::new(),
            blocked: OnceLock::new(),
        }
    }

    /// Whether every tensor of the unit is read-only (a network built by `Model::frozen`):
    /// what inference may pack once and keep.
    pub fn is_read_only(&self) -> bool {
        !self.conv.weight().is_variable() && !self.bn.has_variables()
    }

    /// `act(bn(conv(x)) + residual)` on blocked (NCHW16c) activations, batch norm folded
    /// with its running statistics: inference with read-only weights
    /// ([`Self::is_read_only`]), the weights packed on the first call
    /// ([`ops::blocked::BlockedConv`]).
    pub fn forward_blocked(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        act: Activation,
    ) -> Result<Tensor> {
        if !self.is_read_only() {
            candle_core::bail!("ConvBn::forward_blocked: the unit has variables");
        }
        let conv = match self.blocked.get() {
            Some(conv) => conv,
            None => {
                let (weight, shift) = self.fold(DType::F32)?;
                let conv = ops::blocked::BlockedConv::new(&weight, &shift, self.conv.params())?;
                self.blocked.get_or_init(|| conv)
            }
        };
        conv.forward(x, residual, act)
    }

    /// The convolution weight scaled by batch norm's `γ/√(var + ε)` and the shift
    /// `β − mean·γ/√(var + ε)`, in `dtype`: batch norm with running statistics folded into
    /// the convolution.
    fn fold(&self, dtype: DType) -> Result<(Tensor, Tensor)> {
        let (scale, shift) = self.bn.inference_affine(dtype)?;
        let weight = self
            .conv
            .weight()
            .to_dtype(dtype)?
            .broadcast_mul(&scale.reshape(((), 1, 1, 1))?)?;
        Ok((weight, shift))
    }

    /// [`Self::fold`], computed once for read-only weights, on every call for variables.
    fn folded(&self, dtype: DType) -> Result<(Tensor, Tensor)> {
        if !self.is_read_only() {
            return self.fold(dtype);
        }
        if let Some((d, weight, shift)) = self.folded.get() {
            if *d == dtype {
                return Ok((weight.clone(), shift.clone()));
            }
        }
        let (weight, shift) = self.fold(dtype)?;
        // Another dtype may already sit there; then this one is simply not kept.
        let _ = self.folded.set((dtype, weight.clone(), shift.clone()));
        Ok((weight, shift))
    }

    /// `bn(conv(x))`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_with(x, train, None, Activation::Identity)
    }

    /// `act(bn(conv(x)) + residual)`. With running statistics (inference, or frozen batch
    /// norm) the batch norm is folded into the convolution: its scale multiplies the weight
    /// (C_out·C_in·k·k values instead of every activation) and its shift, the residual and
    /// the activation run in the convolution's epilogue ([`ops::conv2d_fused`]).
    pub fn forward_with(
        &self,
        x: &Tensor,
        train: bool,
        residual: Option<&Tensor>,
        act: Activation,
    ) -> Result<Tensor> {
        if self.bn.uses_batch_stats(train) {
            return self
                .bn
                .forward_with(&self.conv.forward(x)?, train, residual, act);
        }
        let (weight, shift) = self.folded(x.dtype())?;
        ops::conv2d_fused(x, &weight, self.conv.params(), &shift, residual, act)
    }

    /// Output size and multiply-accumulates for one `h × w` input, counting batch norm as
    /// one per output element (fvcore's rule, which timm's published GMACs follow).
    pub fn macs(&self, h: usize, w: usize) -> (usize, usize, u64) {
        let (oh, ow, conv) = self.conv.macs(h, w);
        (oh, ow, conv + (self.conv.out_channels() * oh * ow) as u64)
    }
}

/// The classifier: a fully-connected layer on pooled features (`fc` in timm).
#[derive(Debug, Clone)]
pub struct Linear {
    name: String,
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    /// Registers `weight: (out, in)` (Xavier-initialised later) and a zero `bias`.
    pub fn new(vb: VarBuilder, inputs: usize, outputs: usize) -> Result<Self> {
        Ok(Self {
            name: vb.prefix(),
            weight: vb.get_with_hints((outputs, inputs), "weight", Init::Const(0.))?,
            bias: vb.get_with_hints(outputs, "bias", Init::Const(0.))?,
        })
    }

    /// `x · Wᵀ + b` for `x: (N, in)`, in `x`'s dtype.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (w, b) = (
            self.weight.to_dtype(x.dtype())?,
            self.bias.to_dtype(x.dtype())?,
        );
        ops::matmul(x, &w.t()?)?.broadcast_add(&b)
    }

    /// The checkpoint name of the layer (`fc`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The weight `(out, in)` and bias `(out)`.
    pub fn tensors(&self) -> [&Tensor; 2] {
        [&self.weight, &self.bias]
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Multiply-accumulates per sample.
    pub fn macs(&self) -> u64 {
        self.weight.elem_count() as u64
    }
}

/// `x: (N, in_chans, H, W)` with N ≥ 1 and H and W at least `min_size`, or a clear error
/// naming `model` (as in "too small for a ResNet"). An empty batch is an error for every
/// network alike.
pub(crate) fn check_input(x: &Tensor, in_chans: usize, min_size: usize, model: &str) -> Result<()> {
    let (n, c, h, w) = x.dims4()?;
    if n == 0 {
        candle_core::bail!("the input holds no images (a batch of 0): {model} needs at least one");
    }
    if c != in_chans {
        candle_core::bail!("expected {in_chans} input channels, got {c}");
    }
    if h < min_size || w < min_size {
        candle_core::bail!(
            "input of {h}x{w} is too small for {model}: at least {min_size}x{min_size}"
        );
    }
    Ok(())
}

/// The classifier `fc` on pooled features `(N, C)`; without one, the features.
pub(crate) fn classify(fc: Option<&Linear>, pooled: Tensor) -> Result<Tensor> {
    match fc {
        Some(fc) => fc.forward(&pooled),
        None => Ok(pooled),
    }
}

/// ReLU.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    x.relu()
}

/// Flattens pooled `(N, C, 1, 1)` features or leaves `(N, C)` as is.
pub fn flatten(x: &Tensor) -> Result<Tensor> {
    x.flatten_from(D::Minus(x.rank().saturating_sub(1).max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarMap;
    use ops::gradcheck::{check_gradients, uniform};

    #[test]
    fn batch_norm_is_folded_once_only_over_read_only_weights() -> Result<()> {
        let build = |vb: VarBuilder| -> Result<ConvBn> {
            let p = Conv2dParams {
                padding: 1,
                ..Default::default()
            };
            Ok(ConvBn::new(
                Conv2d::new(vb.pp("conv"), 3, 4, 3, p)?,
                BatchNorm2d::new(vb.pp("bn"), 4, 1.0, BatchNormConfig::default())?,
            ))
        };
        let vars = VarMap::new();
        let trainable = build(VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu))?;
        for (name, var) in vars.data().lock().unwrap().iter() {
            if !name.ends_with("num_batches_tracked") {
                var.set(&(uniform(var.dims(), name.len() as u64, &Device::Cpu)? + 1.5)?)?;
            }
        }
        let x = uniform(&[2, 3, 6, 5], 3, &Device::Cpu)?;
        let expected = trainable.forward_t(&x, false)?;
        assert!(
            trainable.folded.get().is_none(),
            "variables may change: never cached"
        );
        let tensors = vars
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(name, var)| (name.clone(), var.as_tensor().detach()))
            .collect();
        let frozen = build(VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu))?;
        for _ in 0..2 {
            let y = frozen.forward_t(&x, false)?;
            let diff = (y - &expected)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "{diff}");
            assert!(frozen.folded.get().is_some());
        }
        Ok(())
    }

    fn bn(vm: &VarMap, dtype: DType) -> BatchNorm2d {
        let vb = VarBuilder::from_varmap(vm, dtype, &Device::Cpu);
        BatchNorm2d::new(vb.pp("bn"), 3, 1.0, BatchNormConfig::default()).unwrap()
    }

    #[test]
    fn training_normalises_and_updates_running_stats() -> Result<()> {
        let vm = VarMap::new();
        let layer = bn(&vm, DType::F32);
        // Channel 0 holds 1, 2, 3, 4 (mean 2.5, biased var 1.25, unbiased 5/3).
        let x = Tensor::new(&[1f32, 2., 3., 4.], &Device::Cpu)?
            .reshape((1, 1, 2, 2))?
            .repeat((1, 3, 1, 1))?;
        let y = layer.forward_t(&x, true)?;
        let expect: Vec<f32> = [1f32, 2., 3., 4.]
            .iter()
            .map(|v| (v - 2.5) / (1.25f32 + 1e-5).sqrt())
            .collect();
        let got = y.narrow(1, 0, 1)?.flatten_all()?.to_vec1::<f32>()?;
        for (g, e) in got.iter().zip(&expect) {
            assert!((g - e).abs() < 1e-6);
        }
        let rm = layer.running_mean.to_vec1::<f32>()?;
        let rv = layer.running_var.to_vec1::<f32>()?;
        assert!((rm[0] - 0.25).abs() < 1e-6, "{rm:?}");
        assert!((rv[0] - (0.9 + 0.1 * 5. / 3.)).abs() < 1e-6, "{rv:?}");
        assert_eq!(layer.num_batches_tracked.to_scalar::<i64>()?, 1);
        // Evaluation uses the running statistics.
        let e = layer
            .forward_t(&x, false)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert!((e[0] - (1. - rm[0]) / (rv[0] + 1e-5).sqrt()).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn training_gradients_match_finite_differences() -> Result<()> {
        let x = uniform(&[2, 3, 3, 2], 3, &Device::Cpu)?.to_dtype(DType::F64)?;
        let gamma = uniform(&[3], 4, &Device::Cpu)?.to_dtype(DType::F64)?;
        let beta = uniform(&[3], 5, &Device::Cpu)?.to_dtype(DType::F64)?;
        check_gradients(
            &[x, gamma, beta],
            |v| {
                let layer = BatchNorm2d {
                    name: "bn".into(),
                    weight: v[1].clone(),
                    bias: v[2].clone(),
                    running_mean: Tensor::zeros(3, DType::F64, &Device::Cpu)?,
                    running_var: Tensor::ones(3, DType::F64, &Device::Cpu)?,
                    num_batches_tracked: Tensor::new(0i64, &Device::Cpu)?,
                    eps: 1e-5,
                    momentum: 0.1,
                    frozen: false,
                };
                layer.forward_t(&v[0], true)
            },
            1e-6,
            1e-6,
        )
    }

    #[test]
    fn frozen_uses_running_stats_in_training() -> Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let cfg = BatchNormConfig {
            frozen: true,
            ..Default::default()
        };
        let layer = BatchNorm2d::new(vb.pp("bn"), 3, 1.0, cfg)?;
        let x = uniform(&[2, 3, 4, 4], 1, &Device::Cpu)?;
        let y = layer.forward_t(&x, true)?;
        let expect = (x.clone() / (1f64 + 1e-5).sqrt())?;
        assert!(ops::gradcheck::max_abs_diff(&y, &expect)? < 1e-6);
        assert_eq!(layer.running_mean.to_vec1::<f32>()?, vec![0.; 3]);
        Ok(())
    }

    #[test]
    fn buffers_are_recognised_by_name() {
        assert!(is_buffer("layer1.0.bn1.running_var"));
        assert!(is_buffer("bn1.num_batches_tracked"));
        assert!(!is_buffer("layer1.0.bn1.weight"));
    }

    #[test]
    fn folded_conv_bn_equals_conv_then_bn() -> Result<()> {
        // Inference and frozen batch norm fold into the convolution: same output, and the
        // same gradient for the convolution's weight.
        for frozen in [false, true] {
            let vars = VarMap::new();
            let vb = VarBuilder::from_varmap(&vars, DType::F64, &Device::Cpu);
            let cfg = BatchNormConfig {
                frozen,
                ..Default::default()
            };
            let params = Conv2dParams {
                stride: 2,
                padding: 1,
                ..Default::default()
            };
            let unit = ConvBn::new(
                Conv2d::new(vb.pp("conv"), 3, 4, 3, params)?,
                BatchNorm2d::new(vb.pp("bn"), 4, 1.0, cfg)?,
            );
            for (name, var) in vars.data().lock().unwrap().iter() {
                if !name.ends_with("num_batches_tracked") {
                    let seed = name.len() as u64;
                    let values =
                        (uniform(var.dims(), seed, &Device::Cpu)?.to_dtype(DType::F64)? + 1.5)?;
                    var.set(&values)?;
                }
            }
            let x = uniform(&[2, 3, 9, 7], 9, &Device::Cpu)?.to_dtype(DType::F64)?;
            let train = frozen; // frozen: a training step that keeps the running statistics
            let folded = unit.forward_t(&x, train)?;
            let plain = unit.bn.forward_t(&unit.conv.forward(&x)?, train)?;
            ops::gradcheck::assert_close(&folded, &plain, 1e-12);
            let w = unit.conv.weight();
            let g_folded = folded.sqr()?.sum_all()?.backward()?;
            let g_plain = plain.sqr()?.sum_all()?.backward()?;
            ops::gradcheck::assert_close(g_folded.get(w).unwrap(), g_plain.get(w).unwrap(), 1e-12);
        }
        Ok(())
    }
}
