//! Bilinear resizing of NCHW tensors with its gradient (Candle has none): FCN's upsampling
//! of its logits to the input size (Section 6.2), PyTorch's `F.interpolate(x, size,
//! mode="bilinear", align_corners=…)` without antialiasing.

use candle_core::{Result, Tensor};

use crate::kernels::resize::ResizeBilinear;

/// `x (N, C, H, W)` resized to `(N, C, size.0, size.1)` by bilinear interpolation. With
/// `align_corners` the corner pixels' centres map onto each other (GluonCV's and the old
/// PyTorch default for FCN); without it, pixel areas do (PyTorch's default, ONNX's
/// `half_pixel`). Upsampling and downsampling alike (no antialiasing filter).
pub fn resize_bilinear(x: &Tensor, size: (usize, usize), align_corners: bool) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if size.0 == 0 || size.1 == 0 || h == 0 || w == 0 {
        candle_core::bail!(
            "resize_bilinear: sizes must be positive, got {h}x{w} to {}x{}",
            size.0,
            size.1
        );
    }
    if size == (h, w) && !align_corners {
        return Ok(x.clone());
    }
    x.contiguous()?.apply_op1(ResizeBilinear {
        out: size,
        align_corners,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradients, uniform};
    use candle_core::{DType, Device};

    fn values(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn two_by_two_by_hand() {
        let x = Tensor::new(&[[[[0.0f64, 1.0], [2.0, 3.0]]]], &Device::Cpu).unwrap();
        // Corners aligned: 3×3 puts the midpoints between the four pixels.
        let y = resize_bilinear(&x, (3, 3), true).unwrap();
        assert_eq!(
            values(&y),
            vec![0.0, 0.5, 1.0, 1.0, 1.5, 2.0, 2.0, 2.5, 3.0]
        );
        // Half-pixel: 4×4 samples at −0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped above).
        let y = resize_bilinear(&x, (4, 4), false).unwrap();
        let row0 = [0.0, 0.25, 0.75, 1.0];
        assert_eq!(&values(&y)[..4], &row0);
        let row1: Vec<f64> = row0.iter().map(|v| v + 2.0 * 0.25).collect();
        assert_eq!(&values(&y)[4..8], row1.as_slice());
        // Downsampling 2×2 to 1×1: the centre (half-pixel) or the first pixel (corners).
        assert_eq!(
            values(&resize_bilinear(&x, (1, 1), false).unwrap()),
            vec![1.5]
        );
        assert_eq!(
            values(&resize_bilinear(&x, (1, 1), true).unwrap()),
            vec![0.0]
        );
        assert!(resize_bilinear(&x, (0, 3), false).is_err());
    }

    #[test]
    fn gradients_match_finite_differences() {
        let x = uniform(&[2, 3, 5, 4], 3, &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        for align in [false, true] {
            for size in [(9, 7), (3, 2), (5, 11)] {
                check_gradients(
                    std::slice::from_ref(&x),
                    |t| resize_bilinear(&t[0], size, align),
                    1e-6,
                    1e-7,
                )
                .unwrap_or_else(|e| panic!("align {align} {size:?}: {e}"));
            }
        }
    }

    #[test]
    fn the_backward_is_the_forwards_transpose() {
        // <resize(x), g> = <x, resize'(g)> for any x and g.
        let f64 = |t: Tensor| t.to_dtype(DType::F64).unwrap();
        let x = f64(uniform(&[1, 2, 6, 5], 4, &Device::Cpu).unwrap());
        let g = f64(uniform(&[1, 2, 13, 8], 5, &Device::Cpu).unwrap());
        let var = candle_core::Var::from_tensor(&x).unwrap();
        let y = resize_bilinear(var.as_tensor(), (13, 8), false).unwrap();
        let lhs = (&y * &g).unwrap().sum_all().unwrap();
        let grads = lhs.backward().unwrap();
        let dx = grads.get(var.as_tensor()).unwrap();
        let rhs = (&x * dx).unwrap().sum_all().unwrap();
        let (l, r): (f64, f64) = (lhs.to_scalar().unwrap(), rhs.to_scalar().unwrap());
        assert!((l - r).abs() < 1e-12, "{l} vs {r}");
    }
}
