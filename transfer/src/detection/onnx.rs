//! The whole detector as one ONNX graph at a fixed input size (opset 19, where `RoiAlign`
//! has both coordinate conventions and `NonMaxSuppression` is standard): the same steps, in
//! the same order, as [`FasterRcnn::detect`] on one image of that size.
//!
//! - input `image`: `(1, 3, H, W)`, normalised with the ImageNet mean and std;
//! - outputs `boxes` `(K, 4)` (x1, y1, x2, y2 in input pixels), `scores` `(K)`, `labels`
//!   `(K)` (int64, 0-based object classes), best first, K ≤ `detections_per_image`.
//!
//! The anchors of the fixed size are a constant. Proposals too small for the RPN's filter
//! get the score −1 instead of being removed (a graph has no filter of data-dependent
//! length before `TopK`), and `NonMaxSuppression`'s score threshold below 0 drops them, so
//! the proposals are those of `detect`. Per-class NMS runs as one `NonMaxSuppression` with
//! the classes as its batch (each class has its own boxes).

use zoo::onnx::proto::tensor_proto::DataType;
use zoo::onnx::proto::ModelProto;
use zoo::onnx::{float, int, ints, string, value_info, Dim, OnnxGraph};
use zoo::walk::{MacCounter, Shape3};

use super::coder::{grid_anchors, MAX_LOG_SCALE};
use super::model::{FasterRcnn, FEATURE_STRIDE};
use crate::TransferError;

/// The graph's input.
pub const INPUT: &str = "image";

/// Names of the graph's outputs.
pub const OUTPUTS: [&str; 3] = ["boxes", "scores", "labels"];

/// Column `k` of a 2-D tensor, as a vector.
fn column(g: &mut OnnxGraph, x: &str, k: i64) -> String {
    let idx = g.constant_i64(&[k]);
    let c = g.node("Gather", &[x, &idx], vec![int("axis", 1)]);
    let flat = g.constant_i64(&[-1]);
    g.node("Reshape", &[&c, &flat], vec![])
}

/// Splits the last axis of `x` (size 4) into its four coordinates.
fn split4(g: &mut OnnxGraph, x: &str, axis: i64) -> [String; 4] {
    let sizes = g.constant_i64(&[1, 1, 1, 1]);
    let parts = g.node_n("Split", &[x, &sizes], vec![int("axis", axis)], 4);
    [
        parts[0].clone(),
        parts[1].clone(),
        parts[2].clone(),
        parts[3].clone(),
    ]
}

/// A scalar float constant.
fn scalar(g: &mut OnnxGraph, v: f32) -> String {
    g.constant(&[], &[v])
}

/// [`super::coder::decode`] on graph values: reference boxes as centre and size
/// (`ax, ay, aw, ah`), deltas `d` (times `stds`), scales clamped at [`MAX_LOG_SCALE`];
/// the corners concatenated on axis `axis`.
fn decode(
    g: &mut OnnxGraph,
    [ax, ay, aw, ah]: [&str; 4],
    d: [String; 4],
    stds: [f32; 4],
    axis: i64,
) -> String {
    let mut scaled = Vec::with_capacity(4);
    for (v, s) in d.iter().zip(stds) {
        let s = scalar(g, s);
        scaled.push(g.node("Mul", &[v, &s], vec![]));
    }
    let max = scalar(g, MAX_LOG_SCALE);
    let dw = g.node("Min", &[&scaled[2], &max], vec![]);
    let dh = g.node("Min", &[&scaled[3], &max], vec![]);
    let mx = g.node("Mul", &[&scaled[0], aw], vec![]);
    let cx = g.node("Add", &[ax, &mx], vec![]);
    let my = g.node("Mul", &[&scaled[1], ah], vec![]);
    let cy = g.node("Add", &[ay, &my], vec![]);
    let ew = g.node("Exp", &[&dw], vec![]);
    let w = g.node("Mul", &[aw, &ew], vec![]);
    let eh = g.node("Exp", &[&dh], vec![]);
    let h = g.node("Mul", &[ah, &eh], vec![]);
    let half = scalar(g, 0.5);
    let hw = g.node("Mul", &[&half, &w], vec![]);
    let hh = g.node("Mul", &[&half, &h], vec![]);
    let x1 = g.node("Sub", &[&cx, &hw], vec![]);
    let y1 = g.node("Sub", &[&cy, &hh], vec![]);
    let x2 = g.node("Add", &[&cx, &hw], vec![]);
    let y2 = g.node("Add", &[&cy, &hh], vec![]);
    g.node("Concat", &[&x1, &y1, &x2, &y2], vec![int("axis", axis)])
}

/// [`super::coder::clip`] to a `width × height` image.
fn clip(g: &mut OnnxGraph, boxes: &str, (h, w): (usize, usize)) -> String {
    let (w, h) = (w as f32, h as f32);
    let hi = g.constant(&[4], &[w, h, w, h]);
    let lo = scalar(g, 0.0);
    let m = g.node("Min", &[boxes, &hi], vec![]);
    g.node("Max", &[&m, &lo], vec![])
}

/// Centre and size of corner boxes split into `[x1, y1, x2, y2]`, as the coder computes
/// them (`x1 + ½·w`).
fn centre_size(g: &mut OnnxGraph, c: &[String; 4]) -> [String; 4] {
    let w = g.node("Sub", &[&c[2], &c[0]], vec![]);
    let h = g.node("Sub", &[&c[3], &c[1]], vec![]);
    let half = scalar(g, 0.5);
    let hw = g.node("Mul", &[&half, &w], vec![]);
    let hh = g.node("Mul", &[&half, &h], vec![]);
    let x = g.node("Add", &[&c[0], &hw], vec![]);
    let y = g.node("Add", &[&c[1], &hh], vec![]);
    [x, y, w, h]
}

/// `NonMaxSuppression` with its limits as constants.
fn nms(
    g: &mut OnnxGraph,
    boxes: &str,
    scores: &str,
    limit: usize,
    iou: f32,
    min_score: f32,
) -> String {
    let limit = g.constant_i64(&[limit as i64]);
    let iou = g.constant(&[1], &[iou]);
    let min_score = g.constant(&[1], &[min_score]);
    g.node(
        "NonMaxSuppression",
        &[boxes, scores, &limit, &iou, &min_score],
        vec![int("center_point_box", 0)],
    )
}

/// A convolution with bias from the detector's own tensors.
fn conv(
    g: &mut OnnxGraph,
    x: &str,
    (name, w, b): (&str, &candle_core::Tensor, &candle_core::Tensor),
    kernel: usize,
) -> Result<String, TransferError> {
    let w = g.initializer(&format!("{name}.weight"), w)?;
    let b = g.initializer(&format!("{name}.bias"), b)?;
    let p = kernel / 2;
    Ok(g.node(
        "Conv",
        &[x, &w, &b],
        vec![
            ints("kernel_shape", &[kernel, kernel]),
            ints("pads", &[p, p, p, p]),
        ],
    ))
}

/// The ONNX graph of `model` for `(height, width)` inputs (see the module doc).
pub fn export(
    model: &FasterRcnn,
    [height, width]: [usize; 2],
) -> Result<ModelProto, TransferError> {
    let cfg = &model.cfg;
    let size = (height, width);
    if height < 32 || width < 32 {
        return Err(TransferError::Config(format!(
            "ONNX input {height}x{width}: both sides must be at least 32"
        )));
    }
    let shape = model.backbone.walk_stages(
        &mut MacCounter::default(),
        Shape3 {
            c: 3,
            h: height,
            w: width,
        },
        true,
        1..=3,
    )?;
    let mut g = OnnxGraph::new();
    let feat = model
        .backbone
        .walk_stages(&mut g, INPUT.to_string(), true, 1..=3)?;

    // RPN.
    let [cw, cb, lw, lb, bw, bb] = &model.rpn;
    let r = conv(&mut g, &feat, ("rpn.conv", cw, cb), 3)?;
    let r = g.relu(&r);
    let perm = ints("perm", &[0, 2, 3, 1]);
    let logits = conv(&mut g, &r, ("rpn.cls", lw, lb), 1)?;
    let logits = g.node("Transpose", &[&logits], vec![perm.clone()]);
    let flat = g.constant_i64(&[-1]);
    let logits = g.node("Reshape", &[&logits, &flat], vec![]);
    let objectness = g.node("Sigmoid", &[&logits], vec![]);
    let deltas = conv(&mut g, &r, ("rpn.box", bw, bb), 1)?;
    let deltas = g.node("Transpose", &[&deltas], vec![perm]);
    let rows4 = g.constant_i64(&[-1, 4]);
    let deltas = g.node("Reshape", &[&deltas, &rows4], vec![]);
    let anchors = grid_anchors(&model.anchors, FEATURE_STRIDE, (shape.h, shape.w));
    let n = anchors.len();
    let mut geometry: [Vec<f32>; 4] = Default::default();
    for a in &anchors {
        let (aw, ah) = (a[2] - a[0], a[3] - a[1]);
        geometry[0].push(a[0] + 0.5 * aw);
        geometry[1].push(a[1] + 0.5 * ah);
        geometry[2].push(aw);
        geometry[3].push(ah);
    }
    let geometry = geometry.map(|v| g.constant(&[n, 1], &v));
    let d = split4(&mut g, &deltas, 1);
    let refs = [
        geometry[0].as_str(),
        geometry[1].as_str(),
        geometry[2].as_str(),
        geometry[3].as_str(),
    ];
    let boxes = decode(&mut g, refs, d, [1.0; 4], 1);
    let boxes = clip(&mut g, &boxes, size);
    let c = split4(&mut g, &boxes, 1);
    let bw_ = g.node("Sub", &[&c[2], &c[0]], vec![]);
    let bh_ = g.node("Sub", &[&c[3], &c[1]], vec![]);
    let min = scalar(&mut g, cfg.rpn_min_size as f32);
    let wide = g.node("GreaterOrEqual", &[&bw_, &min], vec![]);
    let tall = g.node("GreaterOrEqual", &[&bh_, &min], vec![]);
    let big = g.node("And", &[&wide, &tall], vec![]);
    let big = g.node("Reshape", &[&big, &flat], vec![]);
    let dropped = scalar(&mut g, -1.0);
    let objectness = g.node("Where", &[&big, &objectness, &dropped], vec![]);
    let k = g.constant_i64(&[cfg.rpn_pre_nms_test.min(n) as i64]);
    let top = g.node_n(
        "TopK",
        &[&objectness, &k],
        vec![int("axis", 0), int("largest", 1), int("sorted", 1)],
        2,
    );
    let top_boxes = g.node("Gather", &[&boxes, &top[1]], vec![int("axis", 0)]);
    let zero = g.constant_i64(&[0]);
    let nms_boxes = g.node("Unsqueeze", &[&top_boxes, &zero], vec![]);
    let score_shape = g.constant_i64(&[1, 1, -1]);
    let nms_scores = g.node("Reshape", &[&top[0], &score_shape], vec![]);
    let selected = nms(
        &mut g,
        &nms_boxes,
        &nms_scores,
        cfg.rpn_post_nms_test,
        cfg.rpn_nms as f32,
        -0.5,
    );
    let picked = column(&mut g, &selected, 2);
    let proposals = g.node("Gather", &[&top_boxes, &picked], vec![int("axis", 0)]);
    let batch_index = column(&mut g, &selected, 0);

    // R-CNN on the proposals.
    let mode = if cfg.roi_aligned {
        "half_pixel"
    } else {
        "output_half_pixel"
    };
    let crops = g.node(
        "RoiAlign",
        &[&feat, &proposals, &batch_index],
        vec![
            string("coordinate_transformation_mode", mode),
            string("mode", "avg"),
            int("output_height", cfg.roi_size as i64),
            int("output_width", cfg.roi_size as i64),
            int("sampling_ratio", cfg.roi_sampling_ratio as i64),
            float("spatial_scale", 1.0 / FEATURE_STRIDE),
        ],
    );
    let out4 = model.backbone.walk_stages(&mut g, crops, false, 4..=4)?;
    let pooled = g.global_avg_pool(&out4);
    let [clw, clb, bxw, bxb] = &model.rcnn;
    let gemm = |g: &mut OnnxGraph, name: &str, w, b| -> Result<String, TransferError> {
        let w = g.initializer(&format!("{name}.weight"), w)?;
        let b = g.initializer(&format!("{name}.bias"), b)?;
        Ok(g.node("Gemm", &[&pooled, &w, &b], vec![int("transB", 1)]))
    };
    let class_logits = gemm(&mut g, "rcnn.cls", clw, clb)?;
    let probs = g.node("Softmax", &[&class_logits], vec![int("axis", -1)]);
    let box_deltas = gemm(&mut g, "rcnn.box", bxw, bxb)?;
    let classes = model.classes;
    let per_class = g.constant_i64(&[0, classes as i64, 4]);
    let box_deltas = g.node("Reshape", &[&box_deltas, &per_class], vec![]);
    let one_row = g.constant_i64(&[-1, 1, 4]);
    let props = g.node("Reshape", &[&proposals, &one_row], vec![]);
    let corners = split4(&mut g, &props, 2);
    let p = centre_size(&mut g, &corners);
    let d = split4(&mut g, &box_deltas, 2);
    let stds = cfg.box_stds.map(|s| s as f32);
    let refs = [p[0].as_str(), p[1].as_str(), p[2].as_str(), p[3].as_str()];
    let det_boxes = decode(&mut g, refs, d, stds, 2);
    let det_boxes = clip(&mut g, &det_boxes, size);
    let (start, end, axis) = (
        g.constant_i64(&[1]),
        g.constant_i64(&[classes as i64 + 1]),
        g.constant_i64(&[1]),
    );
    let fg = g.node("Slice", &[&probs, &start, &end, &axis], vec![]);

    // Per-class NMS: the classes as NonMaxSuppression's batch.
    let boxes_cm = g.node("Transpose", &[&det_boxes], vec![ints("perm", &[1, 0, 2])]);
    let scores_cm = g.node("Transpose", &[&fg], vec![ints("perm", &[1, 0])]);
    let one = g.constant_i64(&[1]);
    let nms_scores = g.node("Unsqueeze", &[&scores_cm, &one], vec![]);
    let limit = cfg.detections_per_image;
    let selected = nms(
        &mut g,
        &boxes_cm,
        &nms_scores,
        limit,
        cfg.nms_threshold as f32,
        cfg.score_threshold as f32,
    );
    let class_col = column(&mut g, &selected, 0);
    let box_col = column(&mut g, &selected, 2);
    let col_shape = g.constant_i64(&[-1, 1]);
    let a = g.node("Reshape", &[&class_col, &col_shape], vec![]);
    let b = g.node("Reshape", &[&box_col, &col_shape], vec![]);
    let pairs = g.node("Concat", &[&a, &b], vec![int("axis", 1)]);
    let all_scores = g.node("GatherND", &[&scores_cm, &pairs], vec![]);
    let all_boxes = g.node("GatherND", &[&boxes_cm, &pairs], vec![]);
    let count = g.node("Shape", &[&all_scores], vec![]);
    let cap = g.constant_i64(&[limit as i64]);
    let k = g.node("Min", &[&count, &cap], vec![]);
    let best = g.node_n(
        "TopK",
        &[&all_scores, &k],
        vec![int("axis", 0), int("largest", 1), int("sorted", 1)],
        2,
    );
    let out_boxes = g.node("Gather", &[&all_boxes, &best[1]], vec![int("axis", 0)]);
    let out_labels = g.node("Gather", &[&class_col, &best[1]], vec![int("axis", 0)]);

    let input = value_info(
        INPUT,
        DataType::Float,
        &[
            Dim::Fixed(1),
            Dim::Fixed(3),
            Dim::Fixed(height),
            Dim::Fixed(width),
        ],
    );
    let det = Dim::Named("detections");
    let outputs = vec![
        (
            out_boxes,
            value_info(OUTPUTS[0], DataType::Float, &[det, Dim::Fixed(4)]),
        ),
        (
            best[0].clone(),
            value_info(OUTPUTS[1], DataType::Float, &[det]),
        ),
        (out_labels, value_info(OUTPUTS[2], DataType::Int64, &[det])),
    ];
    Ok(g.finish_with(vec![input], outputs))
}
