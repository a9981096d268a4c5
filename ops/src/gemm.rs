//! What the GEMM-based kernels share: the element types the `gemm` crate multiplies, a
//! strided GEMM call, and the filter flip of a transposed convolution.

use gemm::Parallelism;

use crate::geometry::ConvGeometry;
use crate::storage::Elem;

/// The filters `w: (C_out, C_in, kh, kw)` flipped in both spatial axes and transposed to
/// `(C_in, C_out, kh, kw)`: the weight of [`ConvGeometry::transposed`].
pub(crate) fn flip_transpose<T: Copy>(w: &[T], g: &ConvGeometry) -> Vec<T> {
    let taps = g.win.kh * g.win.kw;
    let mut flipped = w.to_vec();
    for k in 0..g.c_out {
        for c in 0..g.c_in {
            let from = &w[(k * g.c_in + c) * taps..][..taps];
            let to = &mut flipped[(c * g.c_out + k) * taps..][..taps];
            for (t, v) in to.iter_mut().enumerate() {
                *v = from[taps - 1 - t];
            }
        }
    }
    flipped
}

/// An element type the `gemm` crate multiplies: f32, f64 and f16.
pub(crate) trait GemmElem: Elem {}

impl GemmElem for f32 {}
impl GemmElem for f64 {}
impl GemmElem for half::f16 {}

/// `dst (m×n) = [dst +] lhs (m×k) · rhs (k×n)`, each operand given by its pointer and its
/// (row, column) strides in elements.
///
/// # Safety
/// Every pointer must address a matrix of the given shape and strides inside one live
/// allocation, and `dst` must not overlap the operands.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_strided<T: GemmElem>(
    (m, n, k): (usize, usize, usize),
    dst: *mut T,
    dst_rs: usize,
    accumulate: bool,
    lhs: (*const T, usize, usize),
    rhs: (*const T, usize, usize),
    parallelism: Parallelism,
) {
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs.0,
            lhs.2 as isize,
            lhs.1 as isize,
            rhs.0,
            rhs.2 as isize,
            rhs.1 as isize,
            if accumulate { T::one() } else { T::zero() },
            T::one(),
            false,
            false,
            false,
            parallelism,
        )
    }
}
