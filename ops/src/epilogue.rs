//! What runs on a convolution's output while it is still in cache: the activation, and
//! the inference epilogue `act(y + bias[c] + residual)` (batch norm's shift, the shortcut).

use candle_core::{Result, Tensor};

use crate::storage::Elem;

/// What runs on each image's output right after its GEMM, while it is still in cache:
/// `act(y + bias[c] + residual)`, the inference form of conv → BN → (+ shortcut) → ReLU.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Epilogue<'a, T> {
    /// One value per output channel (batch norm's shift).
    pub bias: &'a [T],
    /// A tensor of the output's shape added before the activation.
    pub residual: Option<&'a [T]>,
    pub act: Activation,
}

/// An activation fused into a convolution's epilogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// None: the output as is.
    Identity,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)` (MobileNet).
    Relu6,
}

impl Activation {
    /// The activation applied to a tensor with Candle's ops (and their gradients).
    pub fn forward(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Identity => Ok(x.clone()),
            Self::Relu => x.relu(),
            Self::Relu6 => x.relu()?.minimum(6.0),
        }
    }

    /// `act(y + residual)` with Candle's ops: the composed form of the fused epilogues.
    pub fn after_residual(self, y: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
        match residual {
            Some(r) => self.forward(&(y + r)?),
            None => self.forward(y),
        }
    }
}

/// Runs `$body` with `$f` bound to the activation `$act` as a closure of its own type, so
/// that each activation gets its own vectorised loop instead of a branch per element.
macro_rules! with_activation {
    ($act:expr, $t:ty, |$f:ident| $body:expr) => {{
        match $act {
            $crate::Activation::Identity => {
                let $f = move |v: $t| v;
                $body
            }
            $crate::Activation::Relu => {
                let $f = move |v: $t| {
                    if v < <$t as num_traits::Zero>::zero() {
                        <$t as num_traits::Zero>::zero()
                    } else {
                        v
                    }
                };
                $body
            }
            $crate::Activation::Relu6 => {
                let six = <$t as num_traits::NumCast>::from(6.0).expect("6 fits every float");
                let $f = move |v: $t| {
                    if v < <$t as num_traits::Zero>::zero() {
                        <$t as num_traits::Zero>::zero()
                    } else if v > six {
                        six
                    } else {
                        v
                    }
                };
                $body
            }
        }
    }};
}
pub(crate) use with_activation;

impl<T: Elem> Epilogue<'_, T> {
    /// Applies the epilogue to image `img`'s output `y: (C_out, L)`.
    pub(crate) fn run(&self, y: &mut [T], img: usize, l: usize) {
        with_activation!(self.act, T, |act| self.run_with(y, img, l, act))
    }

    fn run_with(&self, y: &mut [T], img: usize, l: usize, act: impl Fn(T) -> T) {
        let first = img * y.len();
        for (c, row) in y.chunks_exact_mut(l).enumerate() {
            self.run_at_with(row, c, first + c * l, &act);
        }
    }

    /// Writes `act(src + bias[c] + residual)` into `dst`: the epilogue of a run of output
    /// channel `c` starting at flat index `at` of the whole output, computed elsewhere (a
    /// panel's GEMM output, a Winograd output transform).
    pub(crate) fn run_from(
        &self,
        src: &[T],
        dst: &mut [std::mem::MaybeUninit<T>],
        c: usize,
        at: usize,
    ) {
        with_activation!(self.act, T, |act| {
            let b = self.bias[c];
            let len = dst.len();
            match self.residual {
                Some(r) => {
                    for ((d, &v), &r) in dst.iter_mut().zip(&src[..len]).zip(&r[at..][..len]) {
                        d.write(act(v + b + r));
                    }
                }
                None => {
                    for (d, &v) in dst.iter_mut().zip(&src[..len]) {
                        d.write(act(v + b));
                    }
                }
            }
        })
    }

    /// Applies the epilogue to `y`, a run of output channel `c` starting at flat index `at`
    /// of the whole output `(N, C_out, OH, OW)`.
    fn run_at_with(&self, y: &mut [T], c: usize, at: usize, act: &impl Fn(T) -> T) {
        let b = self.bias[c];
        match self.residual {
            Some(r) => {
                let len = y.len();
                for (v, &r) in y.iter_mut().zip(&r[at..][..len]) {
                    *v = act(*v + b + r);
                }
            }
            None => {
                for v in y.iter_mut() {
                    *v = act(*v + b);
                }
            }
        }
    }
}
