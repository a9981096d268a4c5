//! Output-size arithmetic shared by the convolution and pooling ops.

/// Output length of a sliding window over `input` positions, with PyTorch's rule.
///
/// `padding` is added on both sides. With `ceil_mode` the last window may start in the
/// padding on the right, but never entirely inside it (the `(out - 1) * stride >= input +
/// padding` correction of `torch.nn.functional.max_pool2d`).
pub fn pool_output_size(
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    ceil_mode: bool,
) -> Option<usize> {
    let span = dilation * (kernel - 1) + 1;
    let padded = input + 2 * padding;
    if padded < span || stride == 0 {
        return None;
    }
    let room = padded - span;
    let mut out = if ceil_mode {
        room.div_ceil(stride) + 1
    } else {
        room / stride + 1
    };
    if ceil_mode && (out - 1) * stride >= input + padding {
        out -= 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::pool_output_size;

    #[test]
    fn matches_pytorch_formula() {
        // ResNet stem max-pool 3x3/2 pad 1 on 112 and on an odd 97.
        assert_eq!(pool_output_size(112, 3, 2, 1, 1, false), Some(56));
        assert_eq!(pool_output_size(97, 3, 2, 1, 1, false), Some(49));
        // ResNet-D shortcut 2x2/2 ceil_mode on odd sizes keeps the last, half-empty window.
        assert_eq!(pool_output_size(7, 2, 2, 0, 1, true), Some(4));
        assert_eq!(pool_output_size(7, 2, 2, 0, 1, false), Some(3));
        assert_eq!(pool_output_size(8, 2, 2, 0, 1, true), Some(4));
        // The correction: a window that would start inside the right padding is dropped.
        assert_eq!(pool_output_size(5, 2, 2, 1, 1, true), Some(3));
        // Dilated 3x3 conv, padding 2, keeps the size.
        assert_eq!(pool_output_size(28, 3, 1, 2, 2, false), Some(28));
        assert_eq!(pool_output_size(1, 3, 1, 0, 1, false), None);
    }
}
