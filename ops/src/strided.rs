//! Element-wise loops between a contiguous run and a strided one: the inner loops of
//! im2col/col2im and of pooling's horizontal pass.
//!
//! Stride 1 and 2 (every downsampling layer of the paper's networks) get their own loops
//! over contiguous pairs, which compile to vector loads and shuffles; `step_by` and indexed
//! loops with a run-time stride stay scalar.

/// `combine(&mut dst[t], src[t·stride])` for every `t` of `dst`.
#[inline(always)]
pub(crate) fn gather_with<T: Copy>(
    dst: &mut [T],
    src: &[T],
    stride: usize,
    combine: impl Fn(&mut T, T),
) {
    let Some(last) = dst.len().checked_sub(1) else {
        return;
    };
    match stride {
        1 => {
            let src = &src[..dst.len()];
            for (d, &s) in dst.iter_mut().zip(src) {
                combine(d, s);
            }
        }
        2 => {
            // `src` may end right after its last element read, so the last pair is short.
            for (d, pair) in dst[..last].iter_mut().zip(src.chunks_exact(2)) {
                combine(d, pair[0]);
            }
            combine(&mut dst[last], src[2 * last]);
        }
        _ => {
            for (t, d) in dst.iter_mut().enumerate() {
                combine(d, src[t * stride]);
            }
        }
    }
}

/// `combine(&mut dst[t·stride], src[t])` for every `t` of `src`: the adjoint walk of
/// [`gather_with`].
#[inline(always)]
pub(crate) fn scatter_with<T: Copy>(
    dst: &mut [T],
    src: &[T],
    stride: usize,
    combine: impl Fn(&mut T, T),
) {
    let Some(last) = src.len().checked_sub(1) else {
        return;
    };
    match stride {
        1 => {
            for (d, &s) in dst[..src.len()].iter_mut().zip(src) {
                combine(d, s);
            }
        }
        2 => {
            for (pair, &s) in dst.chunks_exact_mut(2).zip(&src[..last]) {
                combine(&mut pair[0], s);
            }
            combine(&mut dst[2 * last], src[last]);
        }
        _ => {
            for (t, &s) in src.iter().enumerate() {
                combine(&mut dst[t * stride], s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_and_scatter_follow_the_definition() {
        for stride in 1..=3 {
            for len in 0..6 {
                // `src` ends right after the last element read.
                let span = if len == 0 { 0 } else { (len - 1) * stride + 1 };
                let src: Vec<i64> = (0..span as i64).map(|v| v * 10 + 1).collect();
                let mut dst = vec![7i64; len];
                gather_with(&mut dst, &src, stride, |d, s| *d += s);
                let want: Vec<i64> = (0..len).map(|t| 7 + src[t * stride]).collect();
                assert_eq!(dst, want, "gather stride {stride} len {len}");

                let vals: Vec<i64> = (0..len as i64).map(|v| v + 1).collect();
                let mut out = vec![0i64; span];
                scatter_with(&mut out, &vals, stride, |d, s| *d += s);
                let mut want = vec![0i64; span];
                for (t, &v) in vals.iter().enumerate() {
                    want[t * stride] += v;
                }
                assert_eq!(out, want, "scatter stride {stride} len {len}");
            }
        }
    }
}
