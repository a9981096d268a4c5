//! The segmenter as one ONNX graph (opset 19), any input size: the dilated backbone, the
//! FCN head (batch norm as `BatchNormalization`, dropout gone at inference), `Resize`
//! (bilinear, `align_corners` or `half_pixel` as the recipe upsamples) to the input's size,
//! and `ArgMax` over the classes.
//!
//! - input `image`: `(batch, 3, height, width)`, normalised with the config's mean and std;
//! - outputs `logits` `(batch, classes, height, width)` and `labels` `(batch, height,
//!   width)` (int64 class indices).

use zoo::onnx::proto::tensor_proto::DataType;
use zoo::onnx::proto::ModelProto;
use zoo::onnx::{int, ints, string, value_info, Dim, OnnxGraph};

use super::model::Fcn;
use crate::TransferError;

/// The graph's input.
pub const INPUT: &str = "image";

/// Names of the graph's outputs.
pub const OUTPUTS: [&str; 2] = ["logits", "labels"];

/// The ONNX graph of `net` (see the module doc).
pub fn export(net: &Fcn) -> Result<ModelProto, TransferError> {
    let mut g = OnnxGraph::new();
    let c3 = net
        .backbone
        .walk_stages(&mut g, INPUT.to_string(), true, 1..=3)?;
    let c4 = net.backbone.walk_stages(&mut g, c3, false, 4..=4)?;
    let head = &net.head;
    let y = g.conv_bn(&head.block, &c4)?;
    let y = g.relu(&y);
    let w = g.initializer("head.cls.weight", &head.cls_weight)?;
    let b = g.initializer("head.cls.bias", &head.cls_bias)?;
    let logits = g.node("Conv", &[&y, &w, &b], vec![ints("kernel_shape", &[1, 1])]);
    // Sizes: the logits' (N, C) and the image's (H, W).
    let image_shape = g.node("Shape", &[INPUT], vec![]);
    let logits_shape = g.node("Shape", &[&logits], vec![]);
    let (two, four, zero) = (
        g.constant_i64(&[2]),
        g.constant_i64(&[4]),
        g.constant_i64(&[0]),
    );
    let hw = g.node("Slice", &[&image_shape, &two, &four], vec![]);
    let nc = g.node("Slice", &[&logits_shape, &zero, &two], vec![]);
    let sizes = g.node("Concat", &[&nc, &hw], vec![int("axis", 0)]);
    let mode = if net.config().align_corners {
        "align_corners"
    } else {
        "half_pixel"
    };
    let up = g.node(
        "Resize",
        &[&logits, "", "", &sizes],
        vec![
            string("mode", "linear"),
            string("coordinate_transformation_mode", mode),
        ],
    );
    let labels = g.node("ArgMax", &[&up], vec![int("axis", 1), int("keepdims", 0)]);
    let (batch, h, w) = (
        Dim::Named("batch"),
        Dim::Named("height"),
        Dim::Named("width"),
    );
    let input = value_info(INPUT, DataType::Float, &[batch, Dim::Fixed(3), h, w]);
    let outputs = vec![
        (
            up,
            value_info(
                OUTPUTS[0],
                DataType::Float,
                &[batch, Dim::Fixed(net.classes()), h, w],
            ),
        ),
        (
            labels,
            value_info(OUTPUTS[1], DataType::Int64, &[batch, h, w]),
        ),
    ];
    Ok(g.finish_with(vec![input], outputs))
}
