//! Export to ONNX, written with the ONNX protobuf types of [`proto`] (generated from ONNX's
//! `onnx.proto3` by `scripts/gen_onnx_proto.sh` and committed, so building needs no protoc).
//!
//! The graph uses opset 19 (so that `AveragePool`'s `ceil_mode` and `count_include_pad`
//! mean what PyTorch means by them), one float input `input` of shape
//! `(batch, C, height, width)` with batch and spatial size dynamic, and one output `logits`.
//! Batch norm is kept as `BatchNormalization` (ONNX Runtime folds it into the convolution
//! when it optimises the graph), and every initializer keeps its timm name, so the ONNX file
//! and the safetensors file can be compared tensor by tensor.
//!
//! A network's one walk ([`crate::walk::Network::walk`]) writes the graph: [`OnnxGraph`] is
//! a [`Walker`] whose values are the names of ONNX values.

use std::path::Path;

use candle_core::{DType, Tensor};
use ops::{Activation, Pool2dParams};
use prost::Message;
use proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto::dimension,
    tensor_shape_proto::Dimension, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

use crate::layers::{BatchNorm2d, Conv2d, ConvBn, Linear};
use crate::walk::Walker;
use crate::{Classifier, Result, ZooError};

/// The ONNX IR's protobuf messages (`ModelProto`, `GraphProto`, …), generated code.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto;

/// The opset the exporter writes.
pub const OPSET: i64 = 19;
/// ONNX IR version matching [`OPSET`] (IR 9 came with opset 19).
pub const IR_VERSION: i64 = 9;
/// Name of the graph's input.
pub const INPUT: &str = "input";
/// Name of the graph's output.
pub const OUTPUT: &str = "logits";

/// A graph under construction: nodes in topological order and their initializers.
#[derive(Debug, Default)]
pub struct OnnxGraph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    counter: usize,
}

/// An `ints` attribute.
pub fn ints(name: &str, values: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: values.iter().map(|&v| v as i64).collect(),
        ..Default::default()
    }
}

/// An `int` attribute.
pub fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

/// A `float` attribute.
pub fn float(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f: value,
        ..Default::default()
    }
}

/// A `string` attribute.
pub fn string(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::String as i32,
        s: value.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// A dimension of a graph input's or output's shape.
#[derive(Debug, Clone, Copy)]
pub enum Dim<'a> {
    /// A fixed size.
    Fixed(usize),
    /// A named size known at run time (`batch`, `detections`).
    Named(&'a str),
}

/// The description of a graph input or output: name, element type, shape.
pub fn value_info(name: &str, elem: DataType, dims: &[Dim]) -> ValueInfoProto {
    let dim = |d: &Dim| Dimension {
        value: Some(match d {
            Dim::Fixed(n) => dimension::Value::DimValue(*n as i64),
            Dim::Named(s) => dimension::Value::DimParam(s.to_string()),
        }),
        ..Default::default()
    };
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(TensorShapeProto {
                    dim: dims.iter().map(dim).collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl OnnxGraph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a node of type `op` and returns the name of its (single) output.
    pub fn node(&mut self, op: &str, inputs: &[&str], attributes: Vec<AttributeProto>) -> String {
        self.counter += 1;
        let output = format!("{}_{}", op.to_lowercase(), self.counter);
        self.nodes.push(NodeProto {
            name: format!("{op}_{}", self.counter),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            attribute: attributes,
            ..Default::default()
        });
        output
    }

    /// Adds a node of type `op` with `outputs` outputs and returns their names.
    pub fn node_n(
        &mut self,
        op: &str,
        inputs: &[&str],
        attributes: Vec<AttributeProto>,
        outputs: usize,
    ) -> Vec<String> {
        self.counter += 1;
        let names: Vec<String> = (0..outputs)
            .map(|k| format!("{}_{}_{k}", op.to_lowercase(), self.counter))
            .collect();
        self.nodes.push(NodeProto {
            name: format!("{op}_{}", self.counter),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: names.clone(),
            attribute: attributes,
            ..Default::default()
        });
        names
    }

    /// A float constant of shape `dims` (an initializer with a fresh name).
    pub fn constant(&mut self, dims: &[usize], values: &[f32]) -> String {
        assert_eq!(
            dims.iter().product::<usize>(),
            values.len(),
            "constant shape"
        );
        self.counter += 1;
        let name = format!("const_{}", self.counter);
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// A one-dimensional int64 constant (axes, shapes, indices) with a fresh name.
    pub fn constant_i64(&mut self, values: &[i64]) -> String {
        self.counter += 1;
        let name = format!("const_i64_{}", self.counter);
        self.int64_initializer(&name, values)
    }

    /// Adds `tensor` as a float initializer called `name` and returns the name.
    pub fn initializer(&mut self, name: &str, tensor: &Tensor) -> Result<String> {
        let values: Vec<f32> = tensor.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        self.initializers.push(TensorProto {
            name: name.into(),
            dims: tensor.dims().iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        Ok(name.into())
    }

    fn scalar_initializer(&mut self, name: &str, value: f32) {
        self.initializers.push(TensorProto {
            name: name.into(),
            dims: vec![],
            data_type: DataType::Float as i32,
            raw_data: value.to_le_bytes().to_vec(),
            ..Default::default()
        });
    }

    fn int64_initializer(&mut self, name: &str, values: &[i64]) -> String {
        self.initializers.push(TensorProto {
            name: name.into(),
            dims: vec![values.len() as i64],
            data_type: DataType::Int64 as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name.into()
    }

    /// A bias-free convolution with the layer's stride, padding, dilation and groups.
    pub fn conv(&mut self, conv: &Conv2d, x: &str) -> Result<String> {
        let w = self.initializer(&format!("{}.weight", conv.name()), conv.weight())?;
        let (_, _, kh, kw) = conv.weight().dims4()?;
        let p = conv.params();
        let (ph, pw) = p.pads();
        Ok(self.node(
            "Conv",
            &[x, &w],
            vec![
                ints("kernel_shape", &[kh, kw]),
                ints("strides", &[p.stride, p.stride]),
                ints("pads", &[ph, pw, ph, pw]),
                ints("dilations", &[p.dilation, p.dilation]),
                int("group", p.groups as i64),
            ],
        ))
    }

    /// Inference-mode batch norm with the layer's running statistics.
    pub fn batch_norm(&mut self, bn: &BatchNorm2d, x: &str) -> Result<String> {
        let [gamma, beta, mean, var] = bn.tensors();
        let names = ["weight", "bias", "running_mean", "running_var"];
        let mut inputs = vec![x.to_string()];
        for (t, n) in [gamma, beta, mean, var].into_iter().zip(names) {
            inputs.push(self.initializer(&format!("{}.{n}", bn.name()), t)?);
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        Ok(self.node(
            "BatchNormalization",
            &inputs,
            vec![float("epsilon", bn.eps() as f32)],
        ))
    }

    /// `bn(conv(x))`.
    pub fn conv_bn(&mut self, unit: &ConvBn, x: &str) -> Result<String> {
        let y = self.conv(&unit.conv, x)?;
        self.batch_norm(&unit.bn, &y)
    }

    /// ReLU.
    pub fn relu(&mut self, x: &str) -> String {
        self.node("Relu", &[x], vec![])
    }

    /// ReLU6, as `Clip(x, 0, 6)`.
    pub fn relu6(&mut self, x: &str) -> String {
        self.counter += 1;
        let (lo, hi) = (
            format!("clip_min_{}", self.counter),
            format!("clip_max_{}", self.counter),
        );
        self.scalar_initializer(&lo, 0.0);
        self.scalar_initializer(&hi, 6.0);
        self.node("Clip", &[x, &lo, &hi], vec![])
    }

    /// Concatenation along channels.
    pub fn concat(&mut self, xs: &[String]) -> String {
        let inputs: Vec<&str> = xs.iter().map(String::as_str).collect();
        self.node("Concat", &inputs, vec![int("axis", 1)])
    }

    /// Elementwise sum.
    pub fn add(&mut self, a: &str, b: &str) -> String {
        self.node("Add", &[a, b], vec![])
    }

    fn pool_attributes(p: Pool2dParams) -> Vec<AttributeProto> {
        vec![
            ints("kernel_shape", &[p.kernel, p.kernel]),
            ints("strides", &[p.stride, p.stride]),
            ints("pads", &[p.padding; 4]),
            int("ceil_mode", p.ceil_mode as i64),
        ]
    }

    /// Max pooling (padding counts as −∞).
    pub fn max_pool(&mut self, x: &str, p: Pool2dParams) -> String {
        self.node("MaxPool", &[x], Self::pool_attributes(p))
    }

    /// Average pooling with PyTorch's `ceil_mode` and `count_include_pad`.
    pub fn avg_pool(&mut self, x: &str, p: Pool2dParams) -> String {
        let mut attributes = Self::pool_attributes(p);
        attributes.push(int("count_include_pad", p.count_include_pad as i64));
        self.node("AveragePool", &[x], attributes)
    }

    /// Zero padding of an NCHW tensor: `(top, left, bottom, right)`.
    pub fn pad(&mut self, x: &str, pads: [usize; 4]) -> String {
        self.counter += 1;
        let [t, l, b, r] = pads.map(|p| p as i64);
        let name = format!("pads_{}", self.counter);
        let pads = self.int64_initializer(&name, &[0, 0, t, l, 0, 0, b, r]);
        self.node("Pad", &[x, &pads], vec![])
    }

    /// Global average pooling and flattening to `(N, C)`.
    pub fn global_avg_pool(&mut self, x: &str) -> String {
        let pooled = self.node("GlobalAveragePool", &[x], vec![]);
        self.node("Flatten", &[&pooled], vec![int("axis", 1)])
    }

    /// The classifier `x · Wᵀ + b`.
    pub fn linear(&mut self, fc: &Linear, x: &str) -> Result<String> {
        let [w, b] = fc.tensors();
        let w = self.initializer(&format!("{}.weight", fc.name()), w)?;
        let b = self.initializer(&format!("{}.bias", fc.name()), b)?;
        Ok(self.node("Gemm", &[x, &w, &b], vec![int("transB", 1)]))
    }

    /// The finished model, its input `(batch, in_chans, height, width)` and output `output`
    /// renamed to [`OUTPUT`].
    pub fn finish(self, output: &str, in_chans: usize, out_dims: usize) -> ModelProto {
        let input = value_info(
            INPUT,
            DataType::Float,
            &[
                Dim::Named("batch"),
                Dim::Fixed(in_chans),
                Dim::Named("height"),
                Dim::Named("width"),
            ],
        );
        let out = value_info(
            OUTPUT,
            DataType::Float,
            &[Dim::Named("batch"), Dim::Fixed(out_dims)],
        );
        self.finish_with(vec![input], vec![(output.to_string(), out)])
    }

    /// The finished model with graph inputs `inputs` and outputs `outputs`: each value of
    /// the graph is renamed to its output's name.
    pub fn finish_with(
        mut self,
        inputs: Vec<ValueInfoProto>,
        outputs: Vec<(String, ValueInfoProto)>,
    ) -> ModelProto {
        for node in &mut self.nodes {
            for o in &mut node.output {
                if let Some((_, info)) = outputs.iter().find(|(v, _)| v == o) {
                    *o = info.name.clone();
                }
            }
            for i in &mut node.input {
                if let Some((_, info)) = outputs.iter().find(|(v, _)| v == i) {
                    *i = info.name.clone();
                }
            }
        }
        ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "tricks".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(GraphProto {
                name: "tricks".into(),
                node: self.nodes,
                initializer: self.initializers,
                input: inputs,
                output: outputs.into_iter().map(|(_, info)| info).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// The ONNX model of `net` for `in_chans`-channel images; `out_dims` is the size of its
/// output (classes, or features without a classifier).
pub fn export(net: &dyn Classifier, in_chans: usize, out_dims: usize) -> Result<ModelProto> {
    let mut graph = OnnxGraph::new();
    let output = net.to_onnx(&mut graph, INPUT)?;
    Ok(graph.finish(&output, in_chans, out_dims))
}

/// Writes `model` to `path` through a temporary file and a rename.
pub fn write(model: &ModelProto, path: &Path) -> Result<()> {
    crate::atomic::write(path, &model.encode_to_vec()).map_err(|source| ZooError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads and decodes the ONNX file at `path`, with a clear error for anything that is not
/// a well-formed ONNX model (truncated, tampered, another format).
pub fn read(path: &Path) -> Result<ModelProto> {
    let bytes = std::fs::read(path).map_err(|source| ZooError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |reason: String| ZooError::BadWeightsFile {
        path: path.to_path_buf(),
        reason,
    };
    let model =
        ModelProto::decode(bytes.as_slice()).map_err(|e| bad(format!("not an ONNX model: {e}")))?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| bad("ONNX model without a graph".into()))?;
    if graph.node.is_empty() || graph.input.is_empty() || graph.output.is_empty() {
        return Err(bad("ONNX graph without nodes, inputs or outputs".into()));
    }
    for t in &graph.initializer {
        let count: i64 = t.dims.iter().product::<i64>().max(1);
        if t.data_type == DataType::Float as i32 && t.raw_data.len() as i64 != 4 * count {
            return Err(bad(format!(
                "initializer `{}` holds {} bytes for shape {:?}",
                t.name,
                t.raw_data.len(),
                t.dims
            )));
        }
    }
    Ok(model)
}

/// The graph as a walker: a network's walk writes its inference graph (batch norm with
/// running statistics), values named by strings.
impl Walker for OnnxGraph {
    type Value = String;
    type Error = ZooError;

    fn conv_bn(
        &mut self,
        unit: &ConvBn,
        x: &String,
        residual: Option<&String>,
        act: Activation,
    ) -> Result<String> {
        let y = OnnxGraph::conv_bn(self, unit, x)?;
        let y = match residual {
            Some(r) => self.add(&y, r),
            None => y,
        };
        Ok(match act {
            Activation::Identity => y,
            Activation::Relu => self.relu(&y),
            Activation::Relu6 => self.relu6(&y),
        })
    }

    fn max_pool(&mut self, x: &String, p: Pool2dParams) -> Result<String> {
        Ok(OnnxGraph::max_pool(self, x, p))
    }

    fn avg_pool(&mut self, x: &String, p: Pool2dParams) -> Result<String> {
        Ok(OnnxGraph::avg_pool(self, x, p))
    }

    fn pad_bottom_right(&mut self, x: &String) -> Result<String> {
        Ok(self.pad(x, [0, 0, 1, 1]))
    }

    fn concat(&mut self, parts: &[String]) -> Result<String> {
        Ok(OnnxGraph::concat(self, parts))
    }

    fn head(&mut self, x: &String, fc: Option<&Linear>) -> Result<String> {
        let pooled = self.global_avg_pool(x);
        match fc {
            Some(fc) => self.linear(fc, &pooled),
            None => Ok(pooled),
        }
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    /// The committed generated types come from the committed proto: the SHA-256 in
    /// `proto.rs`'s header is the proto file's (`scripts/gen_onnx_proto.sh` writes both).
    #[test]
    fn generated_types_match_the_committed_proto() {
        let proto = include_bytes!("../../proto/onnx.proto3");
        let generated = include_str!("proto.rs");
        let digest: String = Sha256::digest(proto)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(
            generated.contains(&format!("// proto sha256: {digest}")),
            "zoo/src/onnx/proto.rs is stale: run scripts/gen_onnx_proto.sh"
        );
    }
}
