//! Typed access to Candle's CPU storage for the float types the ops support.

use candle_core::{CpuStorage, Layout, Result, WithDType};
use num_traits::{Float, NumAssign};

/// A float element the CPU kernels are written for (f32, f64, f16, bf16).
pub(crate) trait Elem: WithDType + Float + NumAssign + Send + Sync {}
impl<T: WithDType + Float + NumAssign + Send + Sync> Elem for T {}

/// The contiguous slice of `layout` in `storage`, or an error naming `op` if the layout has
/// gaps (the public wrappers make their inputs contiguous first).
pub(crate) fn contiguous<'a, T: WithDType>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> Result<&'a [T]> {
    let data = storage.as_slice::<T>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// A vector of `len` values written piece by piece in parallel, without zero-filling it
/// first: `fill(i, piece)` gets piece `i` of `piece` elements (the last one possibly shorter)
/// and writes each of them.
///
/// # Safety
/// `fill` must write every element of every piece it is given.
pub(crate) unsafe fn par_filled<T: Send>(
    len: usize,
    piece: usize,
    fill: impl Fn(usize, &mut [std::mem::MaybeUninit<T>]) + Sync + Send,
) -> Vec<T> {
    use rayon::prelude::*;
    let mut v = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(piece.max(1))
        .enumerate()
        .for_each(|(i, piece)| fill(i, piece));
    // SAFETY: every element was written by `fill` (the caller's promise).
    unsafe { v.set_len(len) };
    v
}

/// An output buffer shared by the threads of a kernel, each writing only its own elements.
#[derive(Debug)]
pub(crate) struct SharedMut<T>(pub *mut T);

impl<T> Clone for SharedMut<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// The address of element `i` (used whole, so that closures capture the wrapper).
    pub(crate) fn at(self, i: usize) -> *mut T {
        self.0.wrapping_add(i)
    }
}
// SAFETY: the kernels that share one write disjoint elements, and nothing reads the buffer
// until all of them are done.
unsafe impl<T: Send> Send for SharedMut<T> {}
unsafe impl<T: Send> Sync for SharedMut<T> {}

/// Runs a generic kernel `$f::<T>(args…)` for the element type of `$storage` and wraps the
/// returned `Vec<T>` back into a `CpuStorage`.
macro_rules! dispatch_float {
    ($op:expr, $storage:expr, |$t:ident| $body:expr) => {{
        use candle_core::backend::BackendStorage as _;
        use candle_core::{CpuStorage, WithDType};
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
            CpuStorage::BF16(_) => {
                type $t = half::bf16;
                $body.map(<$t as WithDType>::to_cpu_storage_owned)
            }
            other => candle_core::bail!("{}: unsupported dtype {:?}", $op, other.dtype()),
        }
    }};
}
pub(crate) use dispatch_float;
