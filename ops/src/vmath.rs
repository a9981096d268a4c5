//! Element-wise math written so that the compiler vectorises it, shared by the kernels:
//! an `exp` for f32 without branches or libm calls, and a way to run a loop compiled for
//! AVX-512 where the CPU has it (the crate is built for baseline x86-64, whose vectors are
//! 4 floats wide).

use num_traits::Float;

use crate::storage::Elem;

/// `exp(x)` in f32, within 2 ulp of the exact value on `[-87.3, 88.3]` and saturating
/// outside it (`exp(-87.3) ≈ 1.2e-38`, the smallest normal f32's order; NaN stays NaN).
///
/// `x = n·ln 2 + r` with `n` the nearest integer to `x / ln 2` and `|r| ≤ ln 2 / 2`; then
/// `exp(x) = 2ⁿ · exp(r)`, `exp(r)` by its degree-7 minimax polynomial (Cephes' `expf`
/// coefficients), `2ⁿ` by writing `n` into the exponent bits. Branch-free and inlined, so a
/// loop over a slice of it becomes vector code (libm's `exp` is one call per value).
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    // Adding 1.5·2²³ rounds to the nearest integer (ties to even), which lands in the low
    // mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    // ln 2 split in two, so that `n · LN2_HI` is exact for |n| ≤ 128.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.3);
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_2e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e = p * (r * r) + r + 1.0;
    // The integer n sits in t's low mantissa bits, offset by ROUND's bit pattern.
    let n = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    e * f32::from_bits(((n + 127) << 23) as u32)
}

/// `f()`, compiled for AVX-512F where this CPU has it (detected at run time), else as is.
/// `f` and what it inlines (loops over [`exp_f32`], say) get 16-float vectors there.
#[inline(always)]
pub(crate) fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        #[target_feature(enable = "avx512f")]
        unsafe fn run<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the CPU has AVX-512F.
        return unsafe { run(f) };
    }
    f()
}

/// The arithmetic an element type is computed in by vectorised loops: f32 for f32, f16 and
/// bf16 (exact conversions, finer than their precision); f64 for f64.
pub(crate) trait Lanes: Elem {
    /// f32 for f32, f16 and bf16; f64 for f64.
    type Lane: Float + Send + Sync;
    /// The element in lane arithmetic.
    fn load(self) -> Self::Lane;
    /// A lane value rounded to the element type.
    fn store(v: Self::Lane) -> Self;
    /// `exp` in lane arithmetic: [`exp_f32`] for f32 lanes, the standard library's for f64.
    fn lane_exp(v: Self::Lane) -> Self::Lane;
}

macro_rules! f32_lanes {
    ($($t:ty),*) => {$(
        impl Lanes for $t {
            type Lane = f32;
            #[inline(always)]
            fn load(self) -> f32 {
                num_traits::AsPrimitive::<f32>::as_(self)
            }
            #[inline(always)]
            fn store(v: f32) -> Self {
                num_traits::AsPrimitive::<$t>::as_(v)
            }
            #[inline(always)]
            fn lane_exp(v: f32) -> f32 {
                exp_f32(v)
            }
        }
    )*};
}
f32_lanes!(f32, half::f16, half::bf16);

impl Lanes for f64 {
    type Lane = f64;
    #[inline(always)]
    fn load(self) -> f64 {
        self
    }
    #[inline(always)]
    fn store(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn lane_exp(v: f64) -> f64 {
        v.exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between `a` and the f32 nearest to `b`.
    fn ulps(a: f32, b: f64) -> u32 {
        (a.to_bits() as i64 - (b as f32).to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_over_its_range() {
        let mut worst = (0, 0.0f32);
        for i in 0..=2_000_000 {
            let x = -87.3 + (88.3 + 87.3) * i as f32 / 2e6;
            let d = ulps(exp_f32(x), (x as f64).exp());
            if d > worst.0 {
                worst = (d, x);
            }
        }
        assert!(worst.0 <= 2, "{} ulp at {}", worst.0, worst.1);
        // Exact points.
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(ulps(exp_f32(1.0), std::f64::consts::E), 0);
    }

    #[test]
    fn exp_saturates_and_keeps_nan() {
        assert_eq!(exp_f32(-1000.0), exp_f32(-87.3));
        assert!(exp_f32(-1000.0) > 0.0 && exp_f32(-1000.0) < 1.3e-38);
        assert_eq!(exp_f32(f32::NEG_INFINITY), exp_f32(-87.3));
        assert_eq!(exp_f32(1000.0), exp_f32(88.3));
        assert!(exp_f32(88.3).is_finite());
        assert!(exp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn vectorised_and_scalar_agree() {
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32 - 700.0) * 0.11).collect();
        let scalar: Vec<f32> = xs.iter().map(|&x| exp_f32(x)).collect();
        let vector = with_avx512(|| xs.iter().map(|&x| exp_f32(x)).collect::<Vec<_>>());
        assert_eq!(scalar, vector);
    }
}
