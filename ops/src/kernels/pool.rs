//! Max and average pooling with padding, `ceil_mode` and `count_include_pad`, and their
//! gradients for any kernel and stride; global average pooling.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::geometry::{Pool2dParams, PoolGeometry as Geometry, Span};
use crate::storage::{contiguous, dispatch_float, Elem};
use crate::strided::gather_with;
use num_traits::Zero as _;

/// The position (flat index within the plane) of the first maximum under each window, as
/// PyTorch picks it; a window entirely in padding cannot occur (padding ≤ kernel / 2).
fn argmax_plane<T: Elem>(img: &[T], g: &Geometry, mut visit: impl FnMut(usize, usize)) {
    for oy in 0..g.oh {
        let ys = g.span(oy, g.h);
        for ox in 0..g.ow {
            let xs = g.span(ox, g.w);
            let mut best = ys.start * g.w + xs.start;
            let mut best_val = T::neg_infinity();
            for y in ys.start..ys.end {
                for x in xs.start..xs.end {
                    let v = img[y * g.w + x];
                    if v > best_val || v.is_nan() {
                        best_val = v;
                        best = y * g.w + x;
                        if v.is_nan() {
                            break;
                        }
                    }
                }
            }
            visit(oy * g.ow + ox, best);
        }
    }
}

/// `max(a, b)` where a NaN wins, as in the argmax of [`argmax_plane`].
#[inline]
fn nan_max<T: Elem>(a: T, b: T) -> T {
    if b > a || b.is_nan() {
        b
    } else {
        a
    }
}

impl Geometry {
    /// The clipped windows of every output row and of every output column.
    pub(crate) fn spans(&self) -> (Vec<Span>, Vec<Span>) {
        let ys = (0..self.oh).map(|o| self.span(o, self.h)).collect();
        let xs = (0..self.ow).map(|o| self.span(o, self.w)).collect();
        (ys, xs)
    }
}

/// A pooling forward done separably: each input row reduced over every output column's
/// window into `rows: (H, OW)`, then each output row reduced over its window's rows, whole
/// rows at a time (contiguous, vectorised). `reduce` must be associative and commutative
/// (max, sum).
fn pool_plane<T: Elem>(
    img: &[T],
    g: &Geometry,
    (ys, xs): (&[Span], &[Span]),
    rows: &mut Vec<T>,
    dst: &mut [T],
    reduce: impl Fn(T, T) -> T,
) {
    rows.resize(g.h * g.ow, T::zero());
    // The columns whose window lies wholly inside the row are reduced tap by tap, each tap a
    // strided vector loop over all of them; only the clipped windows at the edges are folded
    // one by one.
    let (k, stride) = (g.p.kernel, g.p.stride);
    let lo = xs.iter().position(|s| s.end - s.start == k).unwrap_or(g.ow);
    let hi = lo + xs[lo..].iter().take_while(|s| s.end - s.start == k).count();
    for (src, row) in img.chunks_exact(g.w).zip(rows.chunks_exact_mut(g.ow)) {
        for o in (0..lo).chain(hi..g.ow) {
            // Windows are never empty: padding is at most half the kernel.
            let window = &src[xs[o].start..xs[o].end];
            row[o] = window[1..].iter().fold(window[0], |acc, &v| reduce(acc, v));
        }
        if lo < hi {
            let (full, first) = (&mut row[lo..hi], xs[lo].start);
            gather_with(full, &src[first..], stride, |d, v| *d = v);
            for tap in 1..k {
                gather_with(full, &src[first + tap..], stride, |d, v| *d = reduce(*d, v));
            }
        }
    }
    for (d, s) in dst.chunks_exact_mut(g.ow).zip(ys) {
        d.copy_from_slice(&rows[s.start * g.ow..][..g.ow]);
        for row in rows[(s.start + 1) * g.ow..s.end * g.ow].chunks_exact(g.ow) {
            for (d, &v) in d.iter_mut().zip(row) {
                *d = reduce(*d, v);
            }
        }
    }
}

struct MaxPool(Geometry);

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "max_pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, _, _) = l.shape().dims4()?;
        let g = self.0;
        let out = dispatch_float!("max_pool2d", s, |T| {
            let x = contiguous::<T>(s, l, "max_pool2d")?;
            let (ys, xs) = g.spans();
            let mut out = vec![T::zero(); n * c * g.out_plane()];
            out.par_chunks_mut(g.out_plane())
                .zip(x.par_chunks(g.in_plane()))
                .for_each_init(Vec::new, |rows, (dst, img)| {
                    pool_plane(img, &g, (&ys, &xs), rows, dst, nan_max)
                });
            Ok::<_, candle_core::Error>(out)
        })?;
        Ok((out, Shape::from((n, c, g.oh, g.ow))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = arg.apply_op2_no_bwd(&grad_res.contiguous()?, &MaxPoolGrad(self.0))?;
        Ok(Some(grad))
    }
}

/// Routes each output gradient to the input position that won its window.
struct MaxPoolGrad(Geometry);

impl CustomOp2 for MaxPoolGrad {
    fn name(&self) -> &'static str {
        "max_pool2d_backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, _, _) = l1.shape().dims4()?;
        let g = self.0;
        let out = dispatch_float!("max_pool2d_backward", s1, |T| {
            let x = contiguous::<T>(s1, l1, "max_pool2d_backward")?;
            let dy = contiguous::<T>(s2, l2, "max_pool2d_backward")?;
            let mut dx = vec![T::zero(); x.len()];
            dx.par_chunks_mut(g.in_plane())
                .zip(x.par_chunks(g.in_plane()))
                .zip(dy.par_chunks(g.out_plane()))
                .for_each(|((dst, img), grad)| argmax_plane(img, &g, |o, i| dst[i] += grad[o]));
            Ok::<_, candle_core::Error>(dx)
        })?;
        Ok((out, Shape::from((n, c, g.h, g.w))))
    }
}

struct AvgPool(Geometry);

impl CustomOp1 for AvgPool {
    fn name(&self) -> &'static str {
        "avg_pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, _, _) = l.shape().dims4()?;
        let g = self.0;
        let out = dispatch_float!("avg_pool2d", s, |T| {
            let x = contiguous::<T>(s, l, "avg_pool2d")?;
            let (ys, xs) = g.spans();
            let divisors: Vec<T> = ys
                .iter()
                .flat_map(|&y| xs.iter().map(move |&x| T::from_f64(g.divisor(y, x) as f64)))
                .collect();
            let mut out = vec![T::zero(); n * c * g.out_plane()];
            out.par_chunks_mut(g.out_plane())
                .zip(x.par_chunks(g.in_plane()))
                .for_each_init(Vec::new, |rows, (dst, img)| {
                    pool_plane(img, &g, (&ys, &xs), rows, dst, |a, b| a + b);
                    for (d, &div) in dst.iter_mut().zip(&divisors) {
                        *d /= div;
                    }
                });
            Ok::<_, candle_core::Error>(out)
        })?;
        Ok((out, Shape::from((n, c, g.oh, g.ow))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            grad_res
                .contiguous()?
                .apply_op1_no_bwd(&AvgPoolGrad(self.0))?,
        ))
    }
}

/// Spreads each output gradient evenly over the pixels its window averaged.
struct AvgPoolGrad(Geometry);

impl CustomOp1 for AvgPoolGrad {
    fn name(&self) -> &'static str {
        "avg_pool2d_backward"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, _, _) = l.shape().dims4()?;
        let g = self.0;
        let out = dispatch_float!("avg_pool2d_backward", s, |T| {
            let dy = contiguous::<T>(s, l, "avg_pool2d_backward")?;
            let mut dx = vec![T::zero(); n * c * g.in_plane()];
            dx.par_chunks_mut(g.in_plane())
                .zip(dy.par_chunks(g.out_plane()))
                .for_each(|(dst, grad)| {
                    for oy in 0..g.oh {
                        let ys = g.span(oy, g.h);
                        for ox in 0..g.ow {
                            let xs = g.span(ox, g.w);
                            let div = T::from_f64(g.divisor(ys, xs) as f64);
                            let share = grad[oy * g.ow + ox] / div;
                            for y in ys.start..ys.end {
                                for x in xs.start..xs.end {
                                    dst[y * g.w + x] += share;
                                }
                            }
                        }
                    }
                });
            Ok::<_, candle_core::Error>(dx)
        })?;
        Ok((out, Shape::from((n, c, g.h, g.w))))
    }
}

/// Max pooling of `x: (N, C, H, W)` on the CPU; padding is −∞, so it never wins a window.
pub(crate) fn max_pool2d(x: &Tensor, p: Pool2dParams) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    x.contiguous()?.apply_op1(MaxPool(p.geometry(h, w)?))
}

/// Average pooling of `x: (N, C, H, W)` on the CPU (`torch.nn.functional.avg_pool2d`).
pub(crate) fn avg_pool2d(x: &Tensor, p: Pool2dParams) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    x.contiguous()?.apply_op1(AvgPool(p.geometry(h, w)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::pool_output_size;
    use crate::global_avg_pool;
    use crate::gradcheck::{check_gradients, uniform};
    use candle_core::{DType, Device};

    fn input(h: usize, w: usize) -> Tensor {
        uniform(&[2, 3, h, w], 11, &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F64))
            .unwrap()
    }

    #[test]
    fn max_pool_picks_window_maximum() -> Result<()> {
        let x = Tensor::arange(0f32, 16., &Device::Cpu)?.reshape((1, 1, 4, 4))?;
        let y = max_pool2d(&x, Pool2dParams::new(3, 2).padding(1))?;
        assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [5., 7., 13., 15.]);
        Ok(())
    }

    #[test]
    fn avg_pool_ceil_mode_excluding_padding() -> Result<()> {
        // 3x3 input, 2x2/2 ceil mode: the right and bottom windows are partial.
        let x = Tensor::arange(1f32, 10., &Device::Cpu)?.reshape((1, 1, 3, 3))?;
        let p = Pool2dParams::new(2, 2)
            .ceil_mode(true)
            .count_include_pad(false);
        let y = avg_pool2d(&x, p)?;
        // [[1,2],[4,5]] -> 3; [[3],[6]] -> 4.5; [[7,8]] -> 7.5; [[9]] -> 9.
        assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [3., 4.5, 7.5, 9.]);
        // With count_include_pad the partial windows still divide by the clipped window
        // length only (PyTorch counts explicit padding, not the ceil overhang).
        let y = avg_pool2d(&x, p.count_include_pad(true))?;
        assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [3., 4.5, 7.5, 9.]);
        Ok(())
    }

    #[test]
    fn avg_pool_counts_explicit_padding() -> Result<()> {
        let x = Tensor::ones((1, 1, 2, 2), DType::F32, &Device::Cpu)?;
        let p = Pool2dParams::new(3, 1).padding(1);
        let y = avg_pool2d(&x, p)?;
        assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [4. / 9.; 4]);
        let y = avg_pool2d(&x, p.count_include_pad(false))?;
        assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [1.; 4]);
        Ok(())
    }

    /// Max and average pooling of one plane, one window at a time, after PyTorch's
    /// definition: windows start at `o·stride − padding`, are clipped to the input, and the
    /// average divides by the window clipped to the padded input when padding counts.
    fn pool_reference(x: &[f64], (h, w): (usize, usize), p: Pool2dParams) -> [Vec<f64>; 2] {
        let (oh, ow) = (
            pool_output_size(h, p.kernel, p.stride, p.padding, 1, p.ceil_mode).unwrap(),
            pool_output_size(w, p.kernel, p.stride, p.padding, 1, p.ceil_mode).unwrap(),
        );
        let (mut max, mut avg) = (Vec::new(), Vec::new());
        for oy in 0..oh {
            for ox in 0..ow {
                let y0 = (oy * p.stride) as isize - p.padding as isize;
                let x0 = (ox * p.stride) as isize - p.padding as isize;
                let (mut m, mut sum, mut count) = (f64::NEG_INFINITY, 0.0, 0);
                for y in y0..y0 + p.kernel as isize {
                    for xx in x0..x0 + p.kernel as isize {
                        if (0..h as isize).contains(&y) && (0..w as isize).contains(&xx) {
                            let v = x[y as usize * w + xx as usize];
                            m = m.max(v);
                            sum += v;
                            count += 1;
                        }
                    }
                }
                let padded = |start: isize, len: usize| {
                    let end = (start + p.kernel as isize).min((len + p.padding) as isize);
                    (end - start) as usize
                };
                let divisor = if p.count_include_pad {
                    padded(y0, h) * padded(x0, w)
                } else {
                    count
                };
                max.push(m);
                avg.push(sum / divisor as f64);
            }
        }
        [max, avg]
    }

    #[test]
    fn forward_matches_the_window_definition() -> Result<()> {
        for (h, w) in [(7, 9), (8, 8), (5, 12), (13, 6)] {
            let x = uniform(&[1, 1, h, w], 5, &Device::Cpu)?.to_dtype(DType::F64)?;
            let xs = x.flatten_all()?.to_vec1::<f64>()?;
            for kernel in 1..=4 {
                for stride in 1..=3 {
                    for padding in 0..=kernel / 2 {
                        for ceil_mode in [false, true] {
                            for count_include_pad in [false, true] {
                                let p = Pool2dParams {
                                    kernel,
                                    stride,
                                    padding,
                                    ceil_mode,
                                    count_include_pad,
                                };
                                let [max, avg] = pool_reference(&xs, (h, w), p);
                                let got = max_pool2d(&x, p)?.flatten_all()?.to_vec1::<f64>()?;
                                assert_eq!(got, max, "max {h}x{w} {p:?}");
                                let got = avg_pool2d(&x, p)?.flatten_all()?.to_vec1::<f64>()?;
                                for (g, r) in got.iter().zip(&avg) {
                                    assert!((g - r).abs() < 1e-12, "avg {h}x{w} {p:?}");
                                }
                                assert_eq!(got.len(), avg.len());
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn max_pool_gradients() -> Result<()> {
        for (h, w, p) in [
            (9, 8, Pool2dParams::new(3, 2).padding(1)),
            (7, 7, Pool2dParams::new(3, 2).ceil_mode(true)),
            (6, 5, Pool2dParams::new(2, 2)),
            (5, 6, Pool2dParams::new(3, 1).padding(1)),
        ] {
            check_gradients(&[input(h, w)], |v| max_pool2d(&v[0], p), 1e-6, 1e-6)?;
        }
        Ok(())
    }

    #[test]
    fn avg_pool_gradients() -> Result<()> {
        for (h, w, p) in [
            (
                7,
                6,
                Pool2dParams::new(2, 2)
                    .ceil_mode(true)
                    .count_include_pad(false),
            ),
            (9, 8, Pool2dParams::new(3, 2).padding(1)),
            (
                5,
                7,
                Pool2dParams::new(3, 2)
                    .padding(1)
                    .ceil_mode(true)
                    .count_include_pad(false),
            ),
            (6, 6, Pool2dParams::new(2, 1)),
        ] {
            check_gradients(&[input(h, w)], |v| avg_pool2d(&v[0], p), 1e-6, 1e-6)?;
        }
        Ok(())
    }

    #[test]
    fn global_avg_pool_gradients() -> Result<()> {
        check_gradients(&[input(5, 3)], |v| global_avg_pool(&v[0]), 1e-6, 1e-6)
    }

    #[test]
    fn max_pool_propagates_nan_and_matches_the_argmax() -> Result<()> {
        let mut values: Vec<f32> = (0..49).map(|v| ((v * 17 % 23) as f32) - 11.0).collect();
        values[24] = f32::NAN; // centre of a 7×7 plane
        let x = Tensor::from_vec(values, (1, 1, 7, 7), &Device::Cpu)?;
        let p = Pool2dParams::new(3, 2).padding(1).ceil_mode(true);
        let y = max_pool2d(&x, p)?.flatten_all()?.to_vec1::<f32>()?;
        // Windows around (3, 3) see the NaN; the others match the argmax walk.
        let g = p.geometry(7, 7)?;
        let img = x.flatten_all()?.to_vec1::<f32>()?;
        let mut expected = vec![0.0; y.len()];
        argmax_plane(&img, &g, |o, i| expected[o] = img[i]);
        for (o, (&got, &want)) in y.iter().zip(&expected).enumerate() {
            assert!(
                got == want || (got.is_nan() && want.is_nan()),
                "[{o}] {got} vs {want}"
            );
        }
        assert!(y.iter().any(|v| v.is_nan()));
        Ok(())
    }

    #[test]
    fn rejects_window_larger_than_input() {
        let x = Tensor::zeros((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let err = max_pool2d(&x, Pool2dParams::new(3, 2)).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
    }
}
