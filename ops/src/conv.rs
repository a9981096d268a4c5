//! The convolution entry points ([`conv2d`], [`conv2d_fused`], [`depthwise_conv2d`]): each
//! asks [`crate::plan::conv`] once which kernel runs and runs it, as Candle ops with
//! gradients where one is needed. Exact for any input size (Candle's own `conv2d` backward
//! assumes H and W share parity), and the input gradient is skipped when the input needs
//! none (the image fed to the stem).

use candle_core::{
    CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor,
};

use crate::epilogue::{Activation, Epilogue};
use crate::gemm::GemmElem;
use crate::geometry::{Conv2dParams, ConvGeometry};
#[cfg(target_arch = "x86_64")]
use crate::kernels::conv_padded;
use crate::kernels::{composed, conv_gemm, depthwise, winograd};
use crate::plan::{self, ConvKernel, ConvPlan, ConvQuery, Target};
use crate::storage::contiguous;

/// `a · b`, also for bf16 on the CPU, where Candle has no bf16 matmul kernel: there the
/// product is accumulated in f32 and rounded back to bf16 (activations and weights stay
/// bf16-rounded, as on hardware whose bf16 matmuls accumulate in f32).
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dtype() == DType::BF16 && a.device().is_cpu() {
        a.to_dtype(DType::F32)?
            .matmul(&b.to_dtype(DType::F32)?)?
            .to_dtype(DType::BF16)
    } else {
        a.matmul(b)
    }
}

/// The plan of `conv(x, weight)` in NCHW.
fn plan_of(g: ConvGeometry, x: &Tensor, needs_grad: bool, residual: bool) -> ConvPlan {
    plan::conv(&ConvQuery {
        geometry: g,
        dtype: x.dtype(),
        target: Target::of(x.device()),
        needs_grad,
        residual,
        layout: plan::Layout::Nchw,
    })
}

/// Convolution of `x: (N, C_in, H, W)` with `weight: (C_out, C_in / groups, kh, kw)`, without
/// bias (every convolution of the paper's networks is followed by batch norm), on the
/// kernel [`plan::conv`] picks: on the CPU Winograd F(2×2, 3×3), the padded AVX-512 kernel,
/// im2col + GEMM or the depthwise kernel, bf16 computed in f32 and rounded back; elsewhere
/// Candle's ops composed, with exact gradients there too.
pub fn conv2d(x: &Tensor, weight: &Tensor, p: Conv2dParams) -> Result<Tensor> {
    let g = ConvGeometry::of(x, weight, p)?;
    let plan = plan_of(g, x, true, false);
    run(x, weight, p, g, plan)
}

/// Runs the convolution on the kernel of `plan` (no epilogue).
fn run(
    x: &Tensor,
    weight: &Tensor,
    p: Conv2dParams,
    g: ConvGeometry,
    plan: ConvPlan,
) -> Result<Tensor> {
    if plan.compute != x.dtype() {
        let (xc, wc) = (x.to_dtype(plan.compute)?, weight.to_dtype(plan.compute)?);
        let y = run(
            &xc,
            &wc,
            p,
            g,
            ConvPlan {
                compute: plan.compute,
                ..plan
            },
        )?;
        return y.to_dtype(x.dtype());
    }
    match plan.kernel {
        ConvKernel::Composed => composed::conv2d(x, weight, p),
        ConvKernel::WinogradDilated => conv2d_sub_grids(x, weight, p, g),
        ConvKernel::Depthwise => depthwise::depthwise_conv2d(x, weight, p),
        ConvKernel::Winograd | ConvKernel::Padded | ConvKernel::Gemm => x.contiguous()?.apply_op2(
            &weight.contiguous()?,
            ConvOp {
                g,
                kernel: plan.kernel,
            },
        ),
        k => candle_core::bail!(
            "conv2d: the {k} kernel takes blocked tensors (ops::blocked::BlockedConv)"
        ),
    }
}

/// The "same" dilated 3×3 convolution `g` (dilation `d`, [`plan::dilated_sub_grids`]) as
/// an undilated one over the `N·d²` sub-grids `x[.., py::d, px::d]`, moved into the batch
/// and the outputs moved back, with Candle's permutations: their gradients move the
/// gradients the same way.
fn conv2d_sub_grids(
    x: &Tensor,
    weight: &Tensor,
    p: Conv2dParams,
    g: ConvGeometry,
) -> Result<Tensor> {
    let Some(d) = plan::dilated_sub_grids(&g) else {
        candle_core::bail!("conv2d: {g:?} is not a dilated convolution over sub-grids");
    };
    let (n, c, h, w) = x.dims4()?;
    let (sh, sw) = (h / d, w / d);
    let grids = x
        .reshape((n, c, sh, d, sw, d))?
        .permute((0, 3, 5, 1, 2, 4))?
        .contiguous()?
        .reshape((n * d * d, c, sh, sw))?;
    let sub = Conv2dParams {
        padding: 1,
        padding_w: None,
        dilation: 1,
        ..p
    };
    // Winograd on the sub-grids whatever their width: the plan chose this kernel for them.
    let plan = ConvPlan {
        kernel: ConvKernel::Winograd,
        compute: x.dtype(),
        fused_epilogue: false,
    };
    let y = run(
        &grids,
        weight,
        sub,
        ConvGeometry::of(&grids, weight, sub)?,
        plan,
    )?;
    let k = y.dim(1)?;
    y.reshape((n, d, d, k, sh, sw))?
        .permute((0, 3, 4, 1, 5, 2))?
        .contiguous()?
        .reshape((n, k, h, w))
}

/// Depthwise convolution of `x: (N, C, H, W)` with `weight: (C, 1, kh, kw)` (groups = C);
/// `p.groups` must equal C. The direct kernel on the CPU; elsewhere the sum of its taps
/// composed from Candle's ops.
pub fn depthwise_conv2d(x: &Tensor, weight: &Tensor, p: Conv2dParams) -> Result<Tensor> {
    if !plan::is_depthwise(&ConvGeometry::of(x, weight, p)?) {
        candle_core::bail!(
            "depthwise_conv2d: input {:?} and weight {:?} with {} groups are not a depthwise convolution",
            x.dims(),
            weight.dims(),
            p.groups
        );
    }
    conv2d(x, weight, p)
}

/// `act(conv2d(x, weight) + bias[c] + residual)`: a convolution with its inference epilogue
/// (batch norm's shift folded in as `bias`, the shortcut of a residual block, the
/// activation).
///
/// Where the plan fuses it (the CPU, nothing needing a gradient) the epilogue runs on each
/// image's output right after its GEMM, while it is in cache, instead of as two or three
/// passes over memory; otherwise (training, or frozen batch norm under fine-tuning) it is
/// Candle's ops after the convolution, with their gradients.
pub fn conv2d_fused(
    x: &Tensor,
    weight: &Tensor,
    p: Conv2dParams,
    bias: &Tensor,
    residual: Option<&Tensor>,
    act: Activation,
) -> Result<Tensor> {
    let needs_grad = x.track_op()
        || weight.track_op()
        || bias.track_op()
        || residual.is_some_and(Tensor::track_op);
    let g = ConvGeometry::of(x, weight, p)?;
    let plan = plan_of(g, x, needs_grad, residual.is_some());
    if !plan.fused_epilogue {
        let y = run(x, weight, p, g, plan)?.broadcast_add(&bias.reshape((1, (), 1, 1))?)?;
        return act.after_residual(&y, residual);
    }
    if plan.kernel == ConvKernel::Depthwise {
        return depthwise::depthwise_conv2d_fused(x, weight, p, bias, act);
    }
    let op = ConvFusedOp {
        g,
        kernel: plan.kernel,
        residual: residual.map(Tensor::contiguous).transpose()?,
        act,
    };
    x.contiguous()?.apply_op3_no_bwd(
        &weight.contiguous()?,
        &bias.to_dtype(x.dtype())?.contiguous()?,
        &op,
    )
}

/// Runs `$body` with `$t` bound to the GEMM element type of `$storage`.
macro_rules! dispatch_gemm {
    ($op:expr, $storage:expr, |$t:ident| $body:expr) => {{
        use candle_core::backend::BackendStorage as _;
        use candle_core::WithDType;
        match $storage {
            CpuStorage::F32(_) => {
                type $t = f32;
                $body.map(<$t as WithDType>::to_cpu_storage_owned)
            }
            CpuStorage::F64(_) => {
                type $t = f64;
                $body.map(<$t as WithDType>::to_cpu_storage_owned)
            }
            CpuStorage::F16(_) => {
                type $t = half::f16;
                $body.map(<$t as WithDType>::to_cpu_storage_owned)
            }
            other => candle_core::bail!("{}: unsupported dtype {:?}", $op, other.dtype()),
        }
    }};
}

/// The forward of a GEMM-family `kernel` in element type `T` (the padded kernel is f32's
/// alone: [`forward_padded`]).
fn forward_on<T: GemmElem>(
    kernel: ConvKernel,
    x: &[T],
    w: &[T],
    g: &ConvGeometry,
    epilogue: Option<Epilogue<'_, T>>,
) -> Result<Vec<T>> {
    match kernel {
        ConvKernel::Winograd => Ok(winograd::forward(x, w, g, epilogue.as_ref())),
        ConvKernel::Gemm => Ok(conv_gemm::forward(x, w, g, epilogue)),
        k => candle_core::bail!("conv2d: {k} is not an NCHW kernel for this dtype"),
    }
}

/// The padded AVX-512 kernel on f32 storage.
fn forward_padded(
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
    g: &ConvGeometry,
    epilogue: Option<Epilogue<'_, f32>>,
) -> Result<CpuStorage> {
    let name = "conv2d (padded)";
    let (x, w) = (
        contiguous::<f32>(s1, l1, name)?,
        contiguous::<f32>(s2, l2, name)?,
    );
    #[cfg(target_arch = "x86_64")]
    {
        Ok(CpuStorage::F32(conv_padded::forward(
            x,
            w,
            g,
            epilogue.as_ref(),
        )))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, w, g, epilogue);
        candle_core::bail!("{name}: the padded kernel exists on x86-64 only")
    }
}

/// The convolution as a Candle op on `(x, weight)` on its planned kernel; its backward
/// builds only the gradients that are needed.
#[derive(Debug, Clone, Copy)]
struct ConvOp {
    g: ConvGeometry,
    kernel: ConvKernel,
}

/// Input gradient from the output gradient (arg 1) and the weight (arg 2), on the kernel
/// [`plan::conv_gradients`] gives for the forward's.
#[derive(Debug, Clone, Copy)]
struct ConvGradInput(ConvGeometry, ConvKernel);

/// Weight gradient from the output gradient (arg 1) and the input (arg 2), likewise.
#[derive(Debug, Clone, Copy)]
struct ConvGradWeight(ConvGeometry, ConvKernel);

impl CustomOp2 for ConvOp {
    fn name(&self) -> &'static str {
        "conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.g;
        let out = if self.kernel == ConvKernel::Padded {
            forward_padded(s1, l1, s2, l2, &g, None)?
        } else {
            dispatch_gemm!("conv2d", s1, |T| forward_on::<T>(
                self.kernel,
                contiguous::<T>(s1, l1, "conv2d")?,
                contiguous::<T>(s2, l2, "conv2d")?,
                &g,
                None
            ))?
        };
        Ok((out, Shape::from((g.n, g.c_out, g.win.oh, g.win.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let gx = if x.track_op() {
            Some(grad.apply_op2_no_bwd(weight, &ConvGradInput(self.g, self.kernel))?)
        } else {
            None
        };
        let gw = if weight.track_op() {
            Some(grad.apply_op2_no_bwd(x, &ConvGradWeight(self.g, self.kernel))?)
        } else {
            None
        };
        Ok((gx, gw))
    }
}

/// Inference convolution with its epilogue fused, on `(x, weight, bias)`; the residual
/// rides in the op. It records no gradient: [`conv2d_fused`] only uses it when nothing
/// needs one.
#[derive(Debug, Clone)]
struct ConvFusedOp {
    g: ConvGeometry,
    kernel: ConvKernel,
    residual: Option<Tensor>,
    act: Activation,
}

impl CustomOp3 for ConvFusedOp {
    fn name(&self) -> &'static str {
        "conv2d_fused"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.g;
        let name = "conv2d_fused";
        let shape = Shape::from((g.n, g.c_out, g.win.oh, g.win.ow));
        let residual = match &self.residual {
            Some(r) if r.dims() != shape.dims() => {
                candle_core::bail!("{name}: residual {:?}, output {shape:?}", r.dims())
            }
            Some(r) => Some(r.storage_and_layout()),
            None => None,
        };
        macro_rules! epilogue {
            ($t:ty) => {{
                let residual = match &residual {
                    Some((storage, layout)) => match &**storage {
                        Storage::Cpu(cpu) => Some(contiguous::<$t>(cpu, layout, name)?),
                        _ => candle_core::bail!("{name}: residual is not on the CPU"),
                    },
                    None => None,
                };
                Epilogue {
                    bias: contiguous::<$t>(s3, l3, name)?,
                    residual,
                    act: self.act,
                }
            }};
        }
        let out = if self.kernel == ConvKernel::Padded {
            forward_padded(s1, l1, s2, l2, &g, Some(epilogue!(f32)))?
        } else {
            dispatch_gemm!(name, s1, |T| forward_on::<T>(
                self.kernel,
                contiguous::<T>(s1, l1, name)?,
                contiguous::<T>(s2, l2, name)?,
                &g,
                Some(epilogue!(T))
            ))?
        };
        Ok((out, shape))
    }
}

impl CustomOp2 for ConvGradInput {
    fn name(&self) -> &'static str {
        "conv2d_grad_input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let name = "conv2d_grad_input";
        let out = dispatch_gemm!(name, s1, |T| {
            let (grad, w) = (
                contiguous::<T>(s1, l1, name)?,
                contiguous::<T>(s2, l2, name)?,
            );
            Ok::<_, candle_core::Error>(match plan::conv_gradients(self.1) {
                ConvKernel::Winograd => winograd::grad_input(grad, w, &g),
                _ => conv_gemm::grad_input(grad, w, &g),
            })
        })?;
        Ok((out, Shape::from((g.n, g.c_in, g.win.h, g.win.w))))
    }
}

impl CustomOp2 for ConvGradWeight {
    fn name(&self) -> &'static str {
        "conv2d_grad_weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let name = "conv2d_grad_weight";
        let out = dispatch_gemm!(name, s1, |T| {
            let (grad, x) = (
                contiguous::<T>(s1, l1, name)?,
                contiguous::<T>(s2, l2, name)?,
            );
            Ok::<_, candle_core::Error>(match plan::conv_gradients(self.1) {
                ConvKernel::Winograd => winograd::grad_weight(grad, x, &g),
                _ => conv_gemm::grad_weight(grad, x, &g),
            })
        })?;
        let w = &g.win;
        Ok((out, Shape::from((g.c_out, g.c_in / g.groups, w.kh, w.kw))))
    }
}

/// The convolution on a kernel chosen by the caller, not the planner: what the tests use to
/// check one kernel against another.
#[cfg(test)]
pub(crate) fn conv2d_on(
    x: &Tensor,
    weight: &Tensor,
    p: Conv2dParams,
    kernel: ConvKernel,
) -> Result<Tensor> {
    let g = ConvGeometry::of(x, weight, p)?;
    let plan = ConvPlan {
        kernel,
        compute: x.dtype(),
        fused_epilogue: false,
    };
    run(x, weight, p, g, plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{assert_close, check_gradients};
    use candle_core::Device;

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        crate::gradcheck::uniform(shape, seed, &Device::Cpu).unwrap()
    }

    #[test]
    fn forward_matches_candle_conv2d() -> Result<()> {
        for (h, w, k, p) in [
            (
                9usize,
                7usize,
                3usize,
                Conv2dParams {
                    stride: 2,
                    padding: 1,
                    ..Default::default()
                },
            ),
            (8, 8, 1, Conv2dParams::default()),
            (
                11,
                6,
                7,
                Conv2dParams {
                    stride: 2,
                    padding: 3,
                    ..Default::default()
                },
            ),
            (
                10,
                9,
                3,
                Conv2dParams {
                    padding: 2,
                    dilation: 2,
                    ..Default::default()
                },
            ),
            (
                7,
                5,
                1,
                Conv2dParams {
                    stride: 2,
                    ..Default::default()
                },
            ),
        ] {
            let x = rand(&[2, 4, h, w], 1);
            let wt = rand(&[6, 4, k, k], 2);
            let ours = conv2d(&x, &wt, p)?;
            let theirs = x.conv2d(&wt, p.padding, p.stride, p.dilation, 1)?;
            assert_close(&ours, &theirs, 1e-5);
        }
        Ok(())
    }

    #[test]
    fn grouped_forward_matches_candle() -> Result<()> {
        let x = rand(&[2, 6, 9, 8], 3);
        let wt = rand(&[6, 2, 3, 3], 4);
        let p = Conv2dParams {
            stride: 2,
            padding: 1,
            groups: 3,
            ..Default::default()
        };
        let ours = conv2d(&x, &wt, p)?;
        let theirs = x.conv2d(&wt, 1, 2, 1, 3)?;
        assert_close(&ours, &theirs, 1e-5);
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        // Odd, mixed-parity sizes: the case Candle's own backward gets wrong.
        for (h, w, k, p) in [
            (
                7usize,
                6usize,
                3usize,
                Conv2dParams {
                    stride: 2,
                    padding: 1,
                    ..Default::default()
                },
            ),
            (
                5,
                8,
                1,
                Conv2dParams {
                    stride: 2,
                    ..Default::default()
                },
            ),
            (
                6,
                5,
                3,
                Conv2dParams {
                    padding: 2,
                    dilation: 2,
                    ..Default::default()
                },
            ),
            (5, 4, 1, Conv2dParams::default()),
            (
                6,
                7,
                3,
                Conv2dParams {
                    stride: 1,
                    padding: 1,
                    groups: 2,
                    ..Default::default()
                },
            ),
        ] {
            let x = rand(&[2, 4, h, w], 5).to_dtype(DType::F64)?;
            let wt = rand(&[4, 4 / p.groups, k, k], 6).to_dtype(DType::F64)?;
            check_gradients(&[x, wt], |v| conv2d(&v[0], &v[1], p), 1e-6, 1e-5)?;
        }
        Ok(())
    }

    /// The dilated convolutions of ResNet's stages 3 and 4 over sub-grids: the same values
    /// as Candle's convolution, exact gradients, and planned only where the sub-grids tile
    /// the map.
    #[test]
    fn dilated_sub_grids_match_the_dilated_convolution() -> Result<()> {
        for (shape, d) in [([2usize, 3, 8, 12], 2usize), ([1, 2, 8, 8], 4)] {
            let p = Conv2dParams {
                padding: d,
                dilation: d,
                ..Default::default()
            };
            let x = rand(&shape, 30);
            let wt = rand(&[5, shape[1], 3, 3], 31);
            let ours = conv2d_on(&x, &wt, p, ConvKernel::WinogradDilated)?;
            let theirs = x.conv2d(&wt, d, 1, d, 1)?;
            assert_close(&ours, &theirs, 1e-5);
            let (x, wt) = (x.to_dtype(DType::F64)?, wt.to_dtype(DType::F64)?);
            check_gradients(
                &[x, wt],
                |v| conv2d_on(&v[0], &v[1], p, ConvKernel::WinogradDilated),
                1e-6,
                1e-5,
            )?;
        }
        let kernel = |h: usize, w: usize, d: usize| {
            let x = Tensor::zeros((2, 512, h, w), DType::F32, &Device::Cpu)?;
            let wt = Tensor::zeros((512, 512, 3, 3), DType::F32, &Device::Cpu)?;
            let p = Conv2dParams {
                padding: d,
                dilation: d,
                ..Default::default()
            };
            Ok::<_, candle_core::Error>(
                plan_of(ConvGeometry::of(&x, &wt, p)?, &x, true, false).kernel,
            )
        };
        assert_eq!(kernel(32, 32, 4)?, ConvKernel::WinogradDilated);
        assert_eq!(kernel(32, 32, 2)?, ConvKernel::WinogradDilated);
        // A side the dilation does not divide, sub-grids too narrow: the full map's kernels.
        assert_ne!(kernel(33, 32, 4)?, ConvKernel::WinogradDilated);
        assert_ne!(kernel(16, 16, 4)?, ConvKernel::WinogradDilated);
        Ok(())
    }

    #[test]
    fn asymmetric_padding_matches_explicit_padding() -> Result<()> {
        // Inception-V3's 1×7 (padding (0, 3)) and 7×1 (padding (3, 0)) convolutions.
        for (kh, kw, p) in [
            (
                1,
                7,
                Conv2dParams {
                    padding: 0,
                    padding_w: Some(3),
                    ..Default::default()
                },
            ),
            (
                7,
                1,
                Conv2dParams {
                    padding: 3,
                    padding_w: Some(0),
                    ..Default::default()
                },
            ),
        ] {
            let x = rand(&[2, 3, 9, 11], 20);
            let wt = rand(&[4, 3, kh, kw], 21);
            let ours = conv2d(&x, &wt, p)?;
            let (ph, pw) = p.pads();
            let padded = x.pad_with_zeros(2, ph, ph)?.pad_with_zeros(3, pw, pw)?;
            let reference = conv2d(&padded, &wt, Conv2dParams::default())?;
            assert_close(&ours, &reference, 1e-6);
            let (x, wt) = (x.to_dtype(DType::F64)?, wt.to_dtype(DType::F64)?);
            check_gradients(&[x, wt], |v| conv2d(&v[0], &v[1], p), 1e-6, 1e-5)?;
        }
        Ok(())
    }

    #[test]
    fn runs_in_half_precisions() -> Result<()> {
        let x = rand(&[2, 4, 9, 7], 12);
        let wt = rand(&[6, 4, 3, 3], 13);
        let p = Conv2dParams {
            stride: 2,
            padding: 1,
            ..Default::default()
        };
        let reference = conv2d(&x, &wt, p)?;
        for dtype in [DType::F16, DType::BF16] {
            let y = conv2d(&x.to_dtype(dtype)?, &wt.to_dtype(dtype)?, p)?;
            assert_eq!(y.dtype(), dtype);
            assert_close(&y.to_dtype(DType::F32)?, &reference, 3e-2);
        }
        Ok(())
    }

    #[test]
    fn rejects_mismatched_channels_and_tiny_inputs() {
        let x = rand(&[1, 3, 8, 8], 7);
        let err = conv2d(&x, &rand(&[4, 2, 3, 3], 8), Conv2dParams::default()).unwrap_err();
        assert!(err.to_string().contains("3 channels"), "{err}");
        let small = rand(&[1, 3, 2, 2], 9);
        let err = conv2d(&small, &rand(&[4, 3, 3, 3], 8), Conv2dParams::default()).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
    }
}
