//! The blocked (NCHW16c) inference path: activations stored as `(N, C/16, H, W, 16)` from
//! layer to layer, convolutions as direct AVX-512 kernels on weights packed once, batch
//! norm's shift, the shortcut and the activation applied in registers.
//!
//! This is the layout oneDNN and ONNX Runtime's MLAS (`NCHWc`) keep between the layers of a
//! CNN. Against per-layer NCHW GEMMs it saves, on every layer, packing the activations,
//! a pass of the epilogue over the output and the gathers and scatters of small maps; the
//! weights are packed once per frozen model ([`BlockedConv::new`]). It serves inference in
//! f32 on CPUs with AVX-512F ([`available`]); everything else takes the NCHW ops.
//!
//! - [`to_blocked`], [`from_blocked`]: the layout conversions (channels padded with zeros
//!   to a multiple of 16, which every op keeps at zero).
//! - [`BlockedConv`]: `act(conv(x) + bias + residual)` for any kernel size, stride,
//!   padding and dilation (one group); 3×3 stride-1 convolutions with padding 1 take
//!   Winograd's F(2×2, 3×3) (`winograd.rs`), whose 16 products run on the same kernel;
//!   depthwise convolutions (MobileNet) their own kernel (`depthwise.rs`).
//! - [`max_pool2d`], [`avg_pool2d`], [`global_avg_pool`]: pooling in the blocked layout (the
//!   stem's max-pool, ResNet-D's shortcut, the classifier's pooling).

#[cfg(target_arch = "x86_64")]
mod depthwise;
#[cfg(target_arch = "x86_64")]
mod kernel;
mod pool;
#[cfg(target_arch = "x86_64")]
mod winograd;

use candle_core::{CpuStorage, DType, Result, Storage, Tensor};
use rayon::prelude::*;

use crate::epilogue::Activation;
use crate::geometry::{Conv2dParams, ConvGeometry};
use crate::plan::{self, ConvKernel, ConvQuery, Layout, Target};
use crate::storage::par_filled;

pub use pool::{avg_pool2d, global_avg_pool, max_pool2d};

pub use crate::geometry::BLOCK;

/// Whether this machine runs the blocked kernels (x86-64 with AVX-512F).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Runs `f` on the f32 values of a contiguous CPU tensor, or fails naming `op`.
pub(crate) fn with_f32<R>(t: &Tensor, op: &str, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(data)) = &*storage else {
        candle_core::bail!(
            "{op}: expected an f32 tensor on the CPU, got {:?}",
            t.dtype()
        );
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => f(&data[start..end]),
        None => candle_core::bail!("{op}: the tensor must be contiguous"),
    }
}

/// The dimensions `(N, C/16, H, W)` of a blocked tensor, or an error naming `op`.
pub(crate) fn blocked_dims(x: &Tensor, op: &str) -> Result<(usize, usize, usize, usize)> {
    match x.dims() {
        &[n, cb, h, w, BLOCK] => Ok((n, cb, h, w)),
        dims => {
            candle_core::bail!("{op}: expected a blocked (N, C/16, H, W, 16) tensor, got {dims:?}")
        }
    }
}

/// `x: (N, C, H, W)` in f32 as the blocked `(N, ⌈C/16⌉, H, W, 16)`, the missing channels of
/// the last block zero.
pub fn to_blocked(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let x = x.to_dtype(DType::F32)?.contiguous()?;
    let (cb, hw) = (c.div_ceil(BLOCK), h * w);
    let out = with_f32(&x, "to_blocked", |x| {
        // SAFETY: each piece (one image's channel block) is written whole below.
        Ok(unsafe {
            par_filled(n * cb * hw * BLOCK, hw * BLOCK, |i, piece| {
                let (img, b) = (i / cb, i % cb);
                for lane in 0..BLOCK {
                    let ch = b * BLOCK + lane;
                    if ch < c {
                        let src = &x[(img * c + ch) * hw..][..hw];
                        for (dst, &v) in piece[lane..].iter_mut().step_by(BLOCK).zip(src) {
                            dst.write(v);
                        }
                    } else {
                        piece[lane..]
                            .iter_mut()
                            .step_by(BLOCK)
                            .for_each(|d| _ = d.write(0.0));
                    }
                }
            })
        })
    })?;
    Tensor::from_vec(out, (n, cb, h, w, BLOCK), x.device())
}

/// A blocked `(N, C/16, H, W, 16)` tensor as `(N, c, H, W)`, dropping the padding channels.
pub fn from_blocked(x: &Tensor, c: usize) -> Result<Tensor> {
    let (n, cb, h, w) = blocked_dims(x, "from_blocked")?;
    if c > cb * BLOCK || c + BLOCK <= cb * BLOCK {
        candle_core::bail!("from_blocked: {c} channels do not fill {cb} blocks of {BLOCK}");
    }
    let hw = h * w;
    let x = x.contiguous()?;
    let out = with_f32(&x, "from_blocked", |x| {
        // SAFETY: each piece (one channel of one image) is written whole below.
        Ok(unsafe {
            par_filled(n * c * hw, hw, |i, plane| {
                let (img, ch) = (i / c, i % c);
                let src = &x[(img * cb + ch / BLOCK) * hw * BLOCK + ch % BLOCK..];
                for (dst, &v) in plane.iter_mut().zip(src.iter().step_by(BLOCK)) {
                    dst.write(v);
                }
            })
        })
    })?;
    Tensor::from_vec(out, (n, c, h, w), x.device())
}

/// A convolution with its bias, packed once for the blocked kernels: the inference form
/// `act(conv(x) + bias + residual)` of conv → batch norm (folded) → (+ shortcut) → act.
#[derive(Debug, Clone)]
pub struct BlockedConv {
    c_in: usize,
    c_out: usize,
    kh: usize,
    kw: usize,
    params: Conv2dParams,
    /// `(C_out/16, C_in/16, KH, KW, 16 in, 16 out)`, padding channels zero; for a
    /// depthwise convolution `(C/16, KH, KW, 16)`.
    weight: Vec<f32>,
    /// One group per channel (`groups = C_in = C_out`).
    depthwise: bool,
    /// One per output channel, padded with zeros to whole blocks.
    bias: Vec<f32>,
    /// The filters transformed for Winograd's F(2×2, 3×3), kept where
    /// [`plan::blocked_winograd_filters`] says so and used where [`plan::conv`] picks
    /// [`ConvKernel::BlockedWinograd`] for the map at hand.
    winograd: Option<Vec<f32>>,
}

/// Output blocks a tile covers at most.
const MAX_J: usize = 4;
/// Input-channel blocks × taps in one chunk: the weight slab a group of tiles streams is
/// `16·MAX_J · 16 · CHUNK_TAPS` floats (32 KiB), kept in L1 across the unit's tiles.
const CHUNK_TAPS: usize = 8;
/// Output positions per unit of work (one thread's share at a time).
const UNIT: usize = 192;

impl BlockedConv {
    /// Packs `weight: (C_out, C_in / groups, KH, KW)` and `bias: (C_out)`. Of grouped
    /// convolutions only depthwise ones (`groups = C_in = C_out`, at most 9 taps) are
    /// supported.
    pub fn new(weight: &Tensor, bias: &Tensor, params: Conv2dParams) -> Result<Self> {
        let (c_out, c_in_per_group, kh, kw) = weight.dims4()?;
        let depthwise = params.groups > 1;
        if depthwise && (params.groups != c_out || c_in_per_group != 1 || kh * kw > 9) {
            candle_core::bail!(
                "BlockedConv: of grouped convolutions only depthwise ones (groups = channels, \
                 at most 9 taps) are supported, got {} groups for {c_out}x{c_in_per_group}x{kh}x{kw}",
                params.groups
            );
        }
        let c_in = c_in_per_group * params.groups;
        if bias.dims() != [c_out] {
            candle_core::bail!("BlockedConv: bias {:?} for {c_out} channels", bias.dims());
        }
        let weight = weight.to_dtype(DType::F32)?.contiguous()?;
        let (cib, cob, taps) = (c_in.div_ceil(BLOCK), c_out.div_ceil(BLOCK), kh * kw);
        let packed = with_f32(&weight, "BlockedConv", |w| {
            if depthwise {
                let mut packed = vec![0.0f32; cob * taps * BLOCK];
                for (c, taps_of_c) in w.chunks_exact(taps).enumerate() {
                    for (t, &v) in taps_of_c.iter().enumerate() {
                        packed[(c / BLOCK * taps + t) * BLOCK + c % BLOCK] = v;
                    }
                }
                return Ok(packed);
            }
            let mut packed = vec![0.0f32; cob * cib * taps * BLOCK * BLOCK];
            for (o, row) in w.chunks_exact(c_in * taps).enumerate() {
                for (i, taps_of_i) in row.chunks_exact(taps).enumerate() {
                    for (t, &v) in taps_of_i.iter().enumerate() {
                        let block = (o / BLOCK * cib + i / BLOCK) * taps + t;
                        packed[(block * BLOCK + i % BLOCK) * BLOCK + o % BLOCK] = v;
                    }
                }
            }
            Ok(packed)
        })?;
        // The filters' rule does not depend on the map: any size the kernel fits will do.
        let probe = ConvGeometry::new(1, (c_in, c_out), (kh, kw), params, (kh.max(3), kw.max(3)));
        let winograd = if probe.is_some_and(|g| plan::blocked_winograd_filters(&g)) {
            #[cfg(target_arch = "x86_64")]
            {
                Some(with_f32(&weight, "BlockedConv", |w| {
                    Ok(winograd::pack_filters(w, c_out, c_in))
                })?)
            }
            #[cfg(not(target_arch = "x86_64"))]
            None
        } else {
            None
        };
        let mut bias = bias.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        bias.resize(cob * BLOCK, 0.0);
        Ok(Self {
            winograd,
            depthwise,
            c_in,
            c_out,
            kh,
            kw,
            params,
            weight: packed,
            bias,
        })
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.c_out
    }

    /// The kernel [`plan::conv`] picks for this convolution on a blocked `n × h × w` input.
    pub fn kernel(&self, n: usize, h: usize, w: usize) -> ConvKernel {
        let fits = ConvGeometry::new(
            n,
            (self.c_in, self.c_out),
            (self.kh, self.kw),
            self.params,
            (h, w),
        );
        let Some(geometry) = fits else {
            return ConvKernel::BlockedDirect; // `forward` reports the misfit.
        };
        plan::conv(&ConvQuery {
            geometry,
            dtype: DType::F32,
            target: Target {
                cpu: true,
                avx512f: true,
            },
            needs_grad: false,
            residual: false,
            layout: Layout::Blocked,
        })
        .kernel
    }

    /// `act(conv(x) + bias + residual)` for a blocked `x`; `residual` is blocked like the
    /// output.
    pub fn forward(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        act: Activation,
    ) -> Result<Tensor> {
        let (n, cib, h, w) = blocked_dims(x, "BlockedConv")?;
        if cib != self.c_in.div_ceil(BLOCK) {
            candle_core::bail!(
                "BlockedConv: input of {} channel blocks for {} channels",
                cib,
                self.c_in
            );
        }
        let Some((oh, ow)) = self.params.output_size(h, w, self.kh, self.kw) else {
            candle_core::bail!(
                "BlockedConv: a {}x{} kernel does not fit a {h}x{w} input",
                self.kh,
                self.kw
            );
        };
        let cob = self.c_out.div_ceil(BLOCK);
        if let Some(r) = residual {
            if r.dims() != [n, cob, oh, ow, BLOCK] {
                candle_core::bail!(
                    "BlockedConv: residual {:?} for an output of {:?}",
                    r.dims(),
                    [n, cob, oh, ow, BLOCK]
                );
            }
        }
        if !available() {
            candle_core::bail!("BlockedConv: this CPU lacks AVX-512F");
        }
        let x = x.contiguous()?;
        let residual = residual.map(Tensor::contiguous).transpose()?;
        let out = with_f32(&x, "BlockedConv", |xs| match &residual {
            Some(r) => with_f32(r, "BlockedConv", |rs| {
                Ok(self.run(xs, Some(rs), (n, h, w), (oh, ow), act))
            }),
            None => Ok(self.run(xs, None, (n, h, w), (oh, ow), act)),
        })?;
        Tensor::from_vec(out, (n, cob, oh, ow, BLOCK), x.device())
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn run(
        &self,
        _: &[f32],
        _: Option<&[f32]>,
        _: (usize, usize, usize),
        _: (usize, usize),
        _: Activation,
    ) -> Vec<f32> {
        unreachable!("available() is false off x86-64")
    }

    /// The convolution on raw blocked values (see [`Self::forward`]).
    #[cfg(target_arch = "x86_64")]
    fn run(
        &self,
        x: &[f32],
        residual: Option<&[f32]>,
        (n, h, w): (usize, usize, usize),
        (oh, ow): (usize, usize),
        act: Activation,
    ) -> Vec<f32> {
        use crate::storage::SharedMut;
        let (cib, cob, taps) = (
            self.c_in.div_ceil(BLOCK),
            self.c_out.div_ceil(BLOCK),
            self.kh * self.kw,
        );
        let (pad_h, pad_w) = self.params.pads();
        if self.depthwise {
            let dw = depthwise::Depthwise {
                h,
                w,
                oh,
                ow,
                kh: self.kh,
                kw: self.kw,
                stride: self.params.stride,
                dilation: self.params.dilation,
                pad_h,
                pad_w,
                weight: &self.weight,
                bias: &self.bias,
                act,
            };
            let (in_plane, out_plane) = (h * w * BLOCK, oh * ow * BLOCK);
            // SAFETY: `Depthwise::plane` writes each output plane whole; AVX-512F is
            // present (checked by `forward`) and a kernel has at most 9 taps (`new`).
            return unsafe {
                par_filled(n * cob * out_plane, out_plane, |i, out| {
                    let r = residual.map(|r| &r[i * out_plane..][..out_plane]);
                    dw.plane(i % cob, &x[i * in_plane..][..in_plane], r, out);
                })
            };
        }
        let pointwise = taps == 1 && self.params.stride == 1 && pad_h == 0 && pad_w == 0;
        // A 1×1 stride-1 convolution maps position p to position p: each image is one row.
        let (gh, gw, goh, gow) = if pointwise {
            (1, h * w, 1, oh * ow)
        } else {
            (h, w, oh, ow)
        };
        let chunk = (CHUNK_TAPS / taps).clamp(1, cib);
        let geometry = |blocks| kernel::Geometry {
            h: gh,
            w: gw,
            x_block: h * w * BLOCK,
            blocks,
            kh: self.kh,
            kw: self.kw,
            stride: self.params.stride,
            dilation: self.params.dilation,
            pad_h,
            pad_w,
            w_block: cib * taps * BLOCK * BLOCK,
            out_block: oh * ow * BLOCK,
            act,
        };
        // Work: segments of output rows, grouped into units of about UNIT positions.
        let seg_len = gow.div_ceil(gow.div_ceil(UNIT));
        let segs_per_row = gow.div_ceil(seg_len);
        let total = n * goh * segs_per_row;
        let threads = rayon::current_num_threads().max(1);
        let per_unit = (UNIT / seg_len).clamp(1, (total / (4 * threads)).max(1));
        let units = total.div_ceil(per_unit);
        let len = n * cob * oh * ow * BLOCK;
        let mut out: Vec<f32> = Vec::with_capacity(len);
        let dst = SharedMut(out.as_mut_ptr());
        if let (Some(u), ConvKernel::BlockedWinograd) = (&self.winograd, self.kernel(n, h, w)) {
            {
                let plan = winograd::Plan {
                    c_in: self.c_in,
                    c_out: self.c_out,
                    u,
                    bias: &self.bias,
                    act,
                };
                // SAFETY: AVX-512F is present (checked by `forward`); `out` has room for
                // the whole output, which `run` writes.
                unsafe {
                    plan.run(x, residual, (n, h, w), dst);
                    out.set_len(len);
                }
                return out;
            }
        }
        (0..units).into_par_iter().for_each(|u| {
            let segs = u * per_unit..((u + 1) * per_unit).min(total);
            for c0 in (0..cib).step_by(chunk) {
                let blocks = chunk.min(cib - c0);
                let g = geometry(blocks);
                for j0 in (0..cob).step_by(MAX_J) {
                    let jn = MAX_J.min(cob - j0);
                    let max_r = kernel::max_positions(jn);
                    for s in segs.clone() {
                        let (row, si) = (s / segs_per_row, s % segs_per_row);
                        let (img, oy) = (row / goh, row % goh);
                        let start = si * seg_len;
                        let end = (start + seg_len).min(gow);
                        let tiles = (end - start).div_ceil(max_r);
                        for t in 0..tiles {
                            // Tiles as even as possible: the first ones one longer.
                            let (base, extra) = ((end - start) / tiles, (end - start) % tiles);
                            let ox = start + t * base + t.min(extra);
                            let r = base + usize::from(t < extra);
                            let left = (ox * g.stride) < pad_w;
                            let right =
                                (ox + r - 1) * g.stride + (g.kw - 1) * g.dilation >= g.w + pad_w;
                            let at = ((img * cob + j0) * goh + oy) * gow * BLOCK + ox * BLOCK;
                            let tile = kernel::Tile {
                                x: x[(img * cib + c0) * h * w * BLOCK..].as_ptr(),
                                weight: self.weight[(j0 * cib + c0) * taps * BLOCK * BLOCK..]
                                    .as_ptr(),
                                out: dst.at(at),
                                residual: residual
                                    .map_or(std::ptr::null(), |r| r.as_ptr().wrapping_add(at)),
                                bias: self.bias[j0 * BLOCK..].as_ptr(),
                                oy,
                                ox,
                                first: c0 == 0,
                                last: c0 + blocks == cib,
                            };
                            let k = kernel::select(r, jn, left || right);
                            // SAFETY: AVX-512F is present (checked by `forward`); the tile
                            // lies inside the tensors laid out above and its output
                            // positions belong to this unit alone.
                            unsafe { k(&g, &tile) };
                        }
                    }
                }
            }
        });
        // SAFETY: the units cover every output row segment and every output block, and the
        // first chunk writes each value.
        unsafe { out.set_len(len) };
        out
    }
}

#[cfg(test)]
mod tests;
