//! One forward pass per network. Each architecture describes its layers once, as a walk
//! ([`Network::walk`]) over a [`Walker`]; what the walk does depends on the walker:
//!
//! - [`Eager`] runs it on tensors (training or inference). Each layer carries the layout
//!   choice: a convolution asks [`ops::plan::conv_layout`] whether it runs on blocked
//!   (NCHW16c) activations or NCHW ones and converts its input when they differ (a value
//!   converted once is not converted again); pooling runs in its input's layout; a
//!   concatenation stays blocked when every part fills whole blocks.
//! - [`MacCounter`] counts multiply-accumulates on shapes alone.
//! - [`crate::onnx::OnnxGraph`] writes the inference graph.
//! - [`KernelTable`] records which kernel every convolution gets ([`ops::plan`]).
//!
//! [`crate::Classifier`] is implemented once, for every [`Network`], on top of these.

use candle_core::{DType, Tensor, TensorId};
use ops::plan::{self, ConvKernel, ConvQuery, Layout, Target};
use ops::{Activation, ConvGeometry, Pool2dParams};

use crate::layers::{ConvBn, Linear};

/// What a network's walk is run on (see the module doc).
pub trait Walker {
    /// A value flowing between layers: a tensor, a shape, the name of an ONNX value.
    type Value: Clone;
    /// What can go wrong.
    type Error: From<candle_core::Error>;

    /// `act(bn(conv(x)) + residual)`.
    fn conv_bn(
        &mut self,
        unit: &ConvBn,
        x: &Self::Value,
        residual: Option<&Self::Value>,
        act: Activation,
    ) -> Result<Self::Value, Self::Error>;

    /// Max pooling.
    fn max_pool(&mut self, x: &Self::Value, p: Pool2dParams) -> Result<Self::Value, Self::Error>;

    /// Average pooling.
    fn avg_pool(&mut self, x: &Self::Value, p: Pool2dParams) -> Result<Self::Value, Self::Error>;

    /// One row and one column of zeros after the last (timm's `AvgPool2dSame` in the
    /// dilated stages of ResNet-D).
    fn pad_bottom_right(&mut self, x: &Self::Value) -> Result<Self::Value, Self::Error>;

    /// Concatenation along the channels.
    fn concat(&mut self, parts: &[Self::Value]) -> Result<Self::Value, Self::Error>;

    /// Global average pooling, then the classifier `fc` (none: the pooled features).
    fn head(&mut self, x: &Self::Value, fc: Option<&Linear>) -> Result<Self::Value, Self::Error>;

    /// Whether an auxiliary classifier (Inception-V3's `AuxLogits`) should run.
    fn wants_aux(&self) -> bool {
        false
    }

    /// The spatial size of `x`, where the walker knows it.
    fn spatial_size(&self, _x: &Self::Value) -> Option<(usize, usize)> {
        None
    }
}

/// The result of a walk's step on walker `W`.
pub type WalkResult<W, T> = std::result::Result<T, <W as Walker>::Error>;

/// What a walk returns: the stage outputs (C2…C5 for a ResNet; the last one is the head's
/// input) and the auxiliary classifier's output where it ran.
#[derive(Debug, Clone)]
pub struct Walked<V> {
    /// Stage outputs, first to last.
    pub features: Vec<V>,
    /// The auxiliary logits.
    pub aux: Option<V>,
}

/// An architecture described once by its walk.
pub trait Network: Send + Sync {
    /// Input channels.
    fn in_chans(&self) -> usize;

    /// The input's channels and size, or a clear error.
    fn check_input(&self, x: &Tensor) -> candle_core::Result<()>;

    /// The layers from the input to the last stage.
    fn walk<W: Walker>(&self, w: &mut W, x: W::Value) -> WalkResult<W, Walked<W::Value>>;

    /// The classifier after global pooling (none: the network gives pooled features).
    fn classifier(&self) -> Option<&Linear>;
}

/// An activation of the eager walker, in the layout its last layer ran in.
#[derive(Debug, Clone)]
pub enum Act {
    /// `(N, C, H, W)`.
    Nchw(Tensor),
    /// `(N, ⌈C/16⌉, H, W, 16)` with its real channel count.
    Blocked {
        /// The blocked tensor.
        t: Tensor,
        /// Channels (the last block may be padded with zeros).
        channels: usize,
    },
}

/// Runs a walk on tensors (see the module doc).
#[derive(Debug)]
pub struct Eager {
    train: bool,
    aux: bool,
    target: Target,
    /// The last NCHW tensor converted to the blocked layout, and its conversion: a block's
    /// input feeds both its shortcut and its first convolution.
    converted: Option<(TensorId, Tensor)>,
}

impl Eager {
    /// A walker for `x`'s device; `train` selects batch statistics in batch norm, `aux`
    /// runs the auxiliary classifier.
    pub fn new(x: &Tensor, train: bool, aux: bool) -> Self {
        Self {
            train,
            aux,
            target: Target::of(x.device()),
            converted: None,
        }
    }

    /// `x` in NCHW.
    pub fn nchw(&self, x: &Act) -> candle_core::Result<Tensor> {
        match x {
            Act::Nchw(t) => Ok(t.clone()),
            Act::Blocked { t, channels } => ops::blocked::from_blocked(t, *channels),
        }
    }

    fn blocked(&mut self, x: &Act) -> candle_core::Result<Tensor> {
        match x {
            Act::Blocked { t, .. } => Ok(t.clone()),
            Act::Nchw(t) => {
                if let Some((id, b)) = &self.converted {
                    if *id == t.id() {
                        return Ok(b.clone());
                    }
                }
                let b = ops::blocked::to_blocked(t)?;
                self.converted = Some((t.id(), b.clone()));
                Ok(b)
            }
        }
    }

    fn layout(x: &Act) -> Layout {
        match x {
            Act::Nchw(_) => Layout::Nchw,
            Act::Blocked { .. } => Layout::Blocked,
        }
    }

    fn dtype(x: &Act) -> DType {
        match x {
            Act::Nchw(t) | Act::Blocked { t, .. } => t.dtype(),
        }
    }
}

impl Walker for Eager {
    type Value = Act;
    type Error = candle_core::Error;

    fn conv_bn(
        &mut self,
        unit: &ConvBn,
        x: &Act,
        residual: Option<&Act>,
        act: Activation,
    ) -> candle_core::Result<Act> {
        let layout = plan::conv_layout(
            Self::dtype(x),
            self.target,
            self.train,
            unit.is_read_only(),
            unit.conv.in_channels(),
            Self::layout(x),
        );
        match layout {
            Layout::Blocked => {
                let xb = self.blocked(x)?;
                let r = residual.map(|r| self.blocked(r)).transpose()?;
                Ok(Act::Blocked {
                    t: unit.forward_blocked(&xb, r.as_ref(), act)?,
                    channels: unit.conv.out_channels(),
                })
            }
            Layout::Nchw => {
                let xn = self.nchw(x)?;
                let r = residual.map(|r| self.nchw(r)).transpose()?;
                Ok(Act::Nchw(unit.forward_with(
                    &xn,
                    self.train,
                    r.as_ref(),
                    act,
                )?))
            }
        }
    }

    fn max_pool(&mut self, x: &Act, p: Pool2dParams) -> candle_core::Result<Act> {
        Ok(match x {
            Act::Nchw(t) => Act::Nchw(ops::max_pool2d(t, p)?),
            Act::Blocked { t, channels } => Act::Blocked {
                t: ops::blocked::max_pool2d(t, p)?,
                channels: *channels,
            },
        })
    }

    fn avg_pool(&mut self, x: &Act, p: Pool2dParams) -> candle_core::Result<Act> {
        Ok(match x {
            Act::Nchw(t) => Act::Nchw(ops::avg_pool2d(t, p)?),
            Act::Blocked { t, channels } => Act::Blocked {
                t: ops::blocked::avg_pool2d(t, p)?,
                channels: *channels,
            },
        })
    }

    fn pad_bottom_right(&mut self, x: &Act) -> candle_core::Result<Act> {
        // Height and width are dimensions 2 and 3 in both layouts.
        let pad = |t: &Tensor| t.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1);
        Ok(match x {
            Act::Nchw(t) => Act::Nchw(pad(t)?),
            Act::Blocked { t, channels } => Act::Blocked {
                t: pad(t)?,
                channels: *channels,
            },
        })
    }

    fn concat(&mut self, parts: &[Act]) -> candle_core::Result<Act> {
        let whole_blocks = parts.iter().all(
            |p| matches!(p, Act::Blocked { channels, .. } if channels % ops::blocked::BLOCK == 0),
        );
        if whole_blocks {
            let (ts, channels): (Vec<Tensor>, usize) =
                parts
                    .iter()
                    .fold((Vec::new(), 0), |(mut ts, c), p| match p {
                        Act::Blocked { t, channels } => {
                            ts.push(t.clone());
                            (ts, c + channels)
                        }
                        Act::Nchw(_) => unreachable!("all parts are blocked"),
                    });
            return Ok(Act::Blocked {
                t: Tensor::cat(&ts, 1)?,
                channels,
            });
        }
        let ts = parts
            .iter()
            .map(|p| self.nchw(p))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Act::Nchw(Tensor::cat(&ts, 1)?))
    }

    fn head(&mut self, x: &Act, fc: Option<&Linear>) -> candle_core::Result<Act> {
        let pooled = match x {
            Act::Nchw(t) => ops::global_avg_pool(t)?,
            Act::Blocked { t, channels } => ops::blocked::global_avg_pool(t, *channels)?,
        };
        Ok(Act::Nchw(crate::layers::classify(fc, pooled)?))
    }

    fn wants_aux(&self) -> bool {
        self.aux
    }

    fn spatial_size(&self, x: &Act) -> Option<(usize, usize)> {
        match x {
            Act::Nchw(t) | Act::Blocked { t, .. } => {
                let d = t.dims();
                (d.len() >= 4).then(|| (d[2], d[3]))
            }
        }
    }
}

/// The shape of one image's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape3 {
    /// Channels.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
}

/// The output size of pooling `len` positions with `p`.
fn pooled(len: usize, p: Pool2dParams) -> usize {
    ops::pool_output_size(len, p.kernel, p.stride, p.padding, 1, p.ceil_mode).unwrap_or(0)
}

fn pool_shape(x: &Shape3, p: Pool2dParams) -> Shape3 {
    Shape3 {
        c: x.c,
        h: pooled(x.h, p),
        w: pooled(x.w, p),
    }
}

/// Counts the multiply-accumulates of one forward pass on a single image (convolutions,
/// batch norm as one per output value as fvcore counts it, and the classifier).
#[derive(Debug, Default)]
pub struct MacCounter {
    /// The count so far.
    pub total: u64,
}

impl Walker for MacCounter {
    type Value = Shape3;
    type Error = candle_core::Error;

    fn conv_bn(
        &mut self,
        unit: &ConvBn,
        x: &Shape3,
        _residual: Option<&Shape3>,
        _act: Activation,
    ) -> candle_core::Result<Shape3> {
        let (h, w, macs) = unit.macs(x.h, x.w);
        self.total += macs;
        Ok(Shape3 {
            c: unit.conv.out_channels(),
            h,
            w,
        })
    }

    fn max_pool(&mut self, x: &Shape3, p: Pool2dParams) -> candle_core::Result<Shape3> {
        Ok(pool_shape(x, p))
    }

    fn avg_pool(&mut self, x: &Shape3, p: Pool2dParams) -> candle_core::Result<Shape3> {
        Ok(pool_shape(x, p))
    }

    fn pad_bottom_right(&mut self, x: &Shape3) -> candle_core::Result<Shape3> {
        Ok(Shape3 {
            c: x.c,
            h: x.h + 1,
            w: x.w + 1,
        })
    }

    fn concat(&mut self, parts: &[Shape3]) -> candle_core::Result<Shape3> {
        let first = parts
            .first()
            .ok_or_else(|| candle_core::Error::msg("concatenation of nothing"))?;
        Ok(Shape3 {
            c: parts.iter().map(|p| p.c).sum(),
            ..*first
        })
    }

    fn head(&mut self, x: &Shape3, fc: Option<&Linear>) -> candle_core::Result<Shape3> {
        self.total += fc.map_or(0, Linear::macs);
        Ok(Shape3 {
            c: fc.map_or(x.c, Linear::out_features),
            h: 1,
            w: 1,
        })
    }
}

/// One row of [`KernelTable`]: a convolution and the kernel it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRow {
    /// The convolution's tensor name (`layer1.0.conv1`).
    pub layer: String,
    /// Input shape.
    pub input: Shape3,
    /// Output channels.
    pub c_out: usize,
    /// Kernel height and width, stride.
    pub window: (usize, usize, usize),
    /// The layout it runs in.
    pub layout: Layout,
    /// The kernel.
    pub kernel: ConvKernel,
}

/// Records the kernel [`ops::plan`] gives every convolution of a walk, for a batch of `n`
/// images on `target`, in inference with read-only weights (`needs_grad = false`) or in
/// training (`needs_grad = true`, always NCHW).
#[derive(Debug)]
pub struct KernelTable {
    /// Images per batch.
    pub n: usize,
    /// Where it would run.
    pub target: Target,
    /// Training (gradients) or inference.
    pub needs_grad: bool,
    /// The rows, in walk order.
    pub rows: Vec<KernelRow>,
}

impl KernelTable {
    /// An empty table.
    pub fn new(n: usize, target: Target, needs_grad: bool) -> Self {
        Self {
            n,
            target,
            needs_grad,
            rows: Vec::new(),
        }
    }

    /// The table as aligned text, one convolution a line.
    pub fn to_text(&self) -> String {
        self.rows
            .iter()
            .map(|r| {
                format!(
                    "{:<32} {:>12} -> {:>4}  {}x{}/{}  {:<7} {}\n",
                    r.layer,
                    format!("{}x{}x{}", r.input.c, r.input.h, r.input.w),
                    r.c_out,
                    r.window.0,
                    r.window.1,
                    r.window.2,
                    match r.layout {
                        Layout::Nchw => "nchw",
                        Layout::Blocked => "blocked",
                    },
                    r.kernel
                )
            })
            .collect()
    }
}

impl Walker for KernelTable {
    /// The shape, and the layout the value is in.
    type Value = (Shape3, Layout);
    type Error = candle_core::Error;

    fn conv_bn(
        &mut self,
        unit: &ConvBn,
        (x, layout): &(Shape3, Layout),
        _residual: Option<&(Shape3, Layout)>,
        _act: Activation,
    ) -> candle_core::Result<(Shape3, Layout)> {
        let p = unit.conv.params();
        let (_, _, kh, kw) = unit.conv.weight().dims4()?;
        let channels = (x.c, unit.conv.out_channels());
        let geometry =
            ConvGeometry::new(self.n, channels, (kh, kw), p, (x.h, x.w)).ok_or_else(|| {
                candle_core::Error::msg(format!(
                    "{}: a {kh}x{kw} kernel does not fit a {}x{} input",
                    unit.conv.name(),
                    x.h,
                    x.w
                ))
            })?;
        let (oh, ow) = (geometry.win.oh, geometry.win.ow);
        let dtype = DType::F32;
        let layout = plan::conv_layout(dtype, self.target, self.needs_grad, true, x.c, *layout);
        let kernel = plan::conv(&ConvQuery {
            geometry,
            dtype,
            target: self.target,
            needs_grad: self.needs_grad,
            residual: false,
            layout,
        })
        .kernel;
        self.rows.push(KernelRow {
            layer: unit.conv.name().to_string(),
            input: *x,
            c_out: geometry.c_out,
            window: (kh, kw, p.stride),
            layout,
            kernel,
        });
        Ok((
            Shape3 {
                c: geometry.c_out,
                h: oh,
                w: ow,
            },
            layout,
        ))
    }

    fn max_pool(
        &mut self,
        (x, l): &(Shape3, Layout),
        p: Pool2dParams,
    ) -> candle_core::Result<(Shape3, Layout)> {
        Ok((pool_shape(x, p), *l))
    }

    fn avg_pool(
        &mut self,
        (x, l): &(Shape3, Layout),
        p: Pool2dParams,
    ) -> candle_core::Result<(Shape3, Layout)> {
        Ok((pool_shape(x, p), *l))
    }

    fn pad_bottom_right(
        &mut self,
        (x, l): &(Shape3, Layout),
    ) -> candle_core::Result<(Shape3, Layout)> {
        Ok((
            Shape3 {
                c: x.c,
                h: x.h + 1,
                w: x.w + 1,
            },
            *l,
        ))
    }

    fn concat(&mut self, parts: &[(Shape3, Layout)]) -> candle_core::Result<(Shape3, Layout)> {
        let shapes: Vec<Shape3> = parts.iter().map(|p| p.0).collect();
        let shape = MacCounter::default().concat(&shapes)?;
        let blocked = parts
            .iter()
            .all(|(s, l)| *l == Layout::Blocked && s.c % ops::blocked::BLOCK == 0);
        Ok((
            shape,
            if blocked {
                Layout::Blocked
            } else {
                Layout::Nchw
            },
        ))
    }

    fn head(
        &mut self,
        (x, _): &(Shape3, Layout),
        fc: Option<&Linear>,
    ) -> candle_core::Result<(Shape3, Layout)> {
        Ok((MacCounter::default().head(x, fc)?, Layout::Nchw))
    }
}
