//! Anchors and the box coder of Faster R-CNN.

/// Largest log-scale a decoded width or height may take: log(1000/16), as torchvision
/// clamps it, so that an untrained head never overflows `exp`.
pub const MAX_LOG_SCALE: f32 = 4.135_166_6; // (1000f32 / 16.0).ln()

/// The anchors of one feature-map position of stride `stride`, centred on the origin:
/// for each ratio r (h/w) and scale s, a box of area (stride·s)² with h/w = r. Order:
/// ratio-major, then scale (GluonCV's).
pub fn base_anchors(stride: f32, scales: &[f64], ratios: &[f64]) -> Vec<[f32; 4]> {
    let mut out = Vec::with_capacity(scales.len() * ratios.len());
    for &r in ratios {
        for &s in scales {
            let side = stride as f64 * s;
            let (w, h) = (side / r.sqrt(), side * r.sqrt());
            out.push([
                (-w / 2.0) as f32,
                (-h / 2.0) as f32,
                (w / 2.0) as f32,
                (h / 2.0) as f32,
            ]);
        }
    }
    out
}

/// Every anchor of an `h × w` feature map, position-major (`(y · w + x) · A + a`), each
/// centred on its cell's centre `((x + ½)·stride, (y + ½)·stride)` in input pixels.
pub fn grid_anchors(base: &[[f32; 4]], stride: f32, (h, w): (usize, usize)) -> Vec<[f32; 4]> {
    let mut out = Vec::with_capacity(h * w * base.len());
    for y in 0..h {
        for x in 0..w {
            let (cx, cy) = ((x as f32 + 0.5) * stride, (y as f32 + 0.5) * stride);
            out.extend(
                base.iter()
                    .map(|b| [b[0] + cx, b[1] + cy, b[2] + cx, b[3] + cy]),
            );
        }
    }
    out
}

/// `(dx, dy, dw, dh)` of `target` relative to `anchor`, divided by `stds`.
pub fn encode(anchor: &[f32; 4], target: &[f32; 4], stds: [f32; 4]) -> [f32; 4] {
    let (aw, ah) = (anchor[2] - anchor[0], anchor[3] - anchor[1]);
    let (ax, ay) = (anchor[0] + 0.5 * aw, anchor[1] + 0.5 * ah);
    let (tw, th) = (target[2] - target[0], target[3] - target[1]);
    let (tx, ty) = (target[0] + 0.5 * tw, target[1] + 0.5 * th);
    [
        (tx - ax) / aw / stds[0],
        (ty - ay) / ah / stds[1],
        (tw / aw).ln() / stds[2],
        (th / ah).ln() / stds[3],
    ]
}

/// The box that `deltas` (times `stds`) make of `anchor`, the scales clamped at
/// [`MAX_LOG_SCALE`].
pub fn decode(anchor: &[f32; 4], deltas: &[f32], stds: [f32; 4]) -> [f32; 4] {
    let (aw, ah) = (anchor[2] - anchor[0], anchor[3] - anchor[1]);
    let (ax, ay) = (anchor[0] + 0.5 * aw, anchor[1] + 0.5 * ah);
    let (dx, dy) = (deltas[0] * stds[0], deltas[1] * stds[1]);
    let dw = (deltas[2] * stds[2]).min(MAX_LOG_SCALE);
    let dh = (deltas[3] * stds[3]).min(MAX_LOG_SCALE);
    let (cx, cy) = (ax + dx * aw, ay + dy * ah);
    let (w, h) = (aw * dw.exp(), ah * dh.exp());
    [cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h]
}

/// `b` clipped to a `width × height` image.
pub fn clip(b: [f32; 4], (height, width): (usize, usize)) -> [f32; 4] {
    let (w, h) = (width as f32, height as f32);
    [
        b[0].clamp(0.0, w),
        b[1].clamp(0.0, h),
        b[2].clamp(0.0, w),
        b[3].clamp(0.0, h),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_have_the_asked_area_and_ratio() {
        let a = base_anchors(16.0, &[2.0, 8.0], &[0.5, 1.0, 2.0]);
        assert_eq!(a.len(), 6);
        for (k, b) in a.iter().enumerate() {
            let (w, h) = (b[2] - b[0], b[3] - b[1]);
            let s = [2.0, 8.0][k % 2] * 16.0;
            assert!((w * h - s * s).abs() < 1e-2 * s * s, "{b:?}");
            assert!((h / w - [0.5, 1.0, 2.0][k / 2]).abs() < 1e-5);
        }
        let g = grid_anchors(&a, 16.0, (2, 3));
        assert_eq!(g.len(), 36);
        // Position (y = 1, x = 2), anchor 3: centred at (40, 24).
        let b = g[(3 + 2) * 6 + 3];
        assert!(
            ((b[0] + b[2]) / 2.0 - 40.0).abs() < 1e-4 && ((b[1] + b[3]) / 2.0 - 24.0).abs() < 1e-4
        );
    }

    #[test]
    fn decode_inverts_encode_and_clamps_the_scale() {
        let (a, t) = ([10.0, 20.0, 50.0, 40.0], [12.0, 18.0, 70.0, 33.0]);
        let stds = [0.1, 0.1, 0.2, 0.2];
        let d = encode(&a, &t, stds);
        let back = decode(&a, &d, stds);
        for i in 0..4 {
            assert!((back[i] - t[i]).abs() < 1e-4, "{back:?}");
        }
        // By hand: centres 30/30 and 41/25.5, sizes 40×20 and 58×15.
        assert!((d[0] - (11.0 / 40.0) / 0.1).abs() < 1e-5);
        assert!((d[3] - (15.0f32 / 20.0).ln() / 0.2).abs() < 1e-5);
        let huge = decode(&a, &[0.0, 0.0, 100.0, 100.0], [1.0; 4]);
        assert!(huge.iter().all(|v| v.is_finite()));
        assert!(((huge[2] - huge[0]) / 40.0 - 1000.0 / 16.0).abs() < 0.01);
    }
}
