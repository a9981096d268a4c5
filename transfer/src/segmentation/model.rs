//! FCN on a dilated zoo ResNet (GluonCV's `fcn_resnet50_ade`, Section 6.2): stages 3 and 4
//! dilated to output stride 8, the FCN head on stage 4 (3×3 convolution to a quarter of the
//! channels, batch norm, ReLU, dropout, 1×1 convolution to the classes), an auxiliary head
//! of the same shape on stage 3, both upsampled bilinearly to the input size.
//!
//! Tensor names: `backbone.*` (the classifier's names under a prefix), `head.conv.weight`,
//! `head.bn.*`, `head.cls.{weight,bias}`, and the same under `aux.`.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use ops::{Activation, Conv2dParams};
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use training::recipe::SegmentationConfig;
use zoo::layers::{BatchNorm2d, BatchNormConfig, Conv2d, ConvBn};
use zoo::models::Arch;
use zoo::{ModelSpec, ResNet};

use super::data::SegBatch;
use crate::ade20k::IGNORE;
use crate::backbone::BACKBONE;
use crate::TransferError;

/// One FCN head: `conv3×3 → BN → ReLU → dropout → conv1×1 (+ bias)`.
#[derive(Clone)]
pub(super) struct FcnHead {
    pub(super) block: ConvBn,
    pub(super) cls_weight: Tensor,
    pub(super) cls_bias: Tensor,
}

impl FcnHead {
    fn new(
        vb: VarBuilder,
        c_in: usize,
        classes: usize,
        bn: BatchNormConfig,
    ) -> Result<Self, TransferError> {
        let mid = c_in / 4;
        let conv = Conv2d::new(
            vb.pp("conv"),
            c_in,
            mid,
            3,
            Conv2dParams {
                padding: 1,
                ..Default::default()
            },
        )?;
        let norm = BatchNorm2d::new(vb.pp("bn"), mid, 1.0, bn)?;
        Ok(Self {
            block: ConvBn::new(conv, norm),
            cls_weight: vb.get_with_hints(
                (classes, mid, 1, 1),
                "cls.weight",
                candle_nn::Init::Const(0.0),
            )?,
            cls_bias: vb.get_with_hints(classes, "cls.bias", candle_nn::Init::Const(0.0))?,
        })
    }

    /// The head's logits at its input's resolution; `dropout` is the mask's generator and
    /// rate (training only).
    fn forward(
        &self,
        x: &Tensor,
        train: bool,
        dropout: Option<(&mut ChaCha8Rng, f64)>,
    ) -> candle_core::Result<Tensor> {
        let mut y = self.block.forward_with(x, train, None, Activation::Relu)?;
        if let Some((rng, p)) = dropout.filter(|(_, p)| *p > 0.0) {
            // A mask from the run's own generator, so that a resumed run draws the same.
            let keep = 1.0 / (1.0 - p);
            let mask: Vec<f32> = (0..y.elem_count())
                .map(|_| if rng.random_bool(p) { 0.0 } else { keep as f32 })
                .collect();
            let mask = Tensor::from_vec(mask, y.dims(), y.device())?.to_dtype(y.dtype())?;
            y = (y * mask)?;
        }
        ops::conv2d(&y, &self.cls_weight, Conv2dParams::default())?
            .broadcast_add(&self.cls_bias.reshape((1, (), 1, 1))?)
    }
}

/// An FCN segmenter.
pub struct Fcn {
    /// The dilated ResNet (no classifier).
    pub backbone: ResNet,
    pub(super) head: FcnHead,
    aux: Option<FcnHead>,
    cfg: SegmentationConfig,
    classes: usize,
    backbone_name: String,
}

/// The losses of one batch.
#[derive(Debug)]
pub struct SegLoss {
    /// `seg + aux_weight · aux`.
    pub total: Tensor,
    /// `seg`, `aux` (0 without the auxiliary head).
    pub parts: [(&'static str, f64); 2],
}

impl Fcn {
    /// A segmenter for `classes` classes on the zoo ResNet `backbone` dilated to the
    /// recipe's output stride, its variables in `vars`, all initialised (Kaiming) from
    /// `seed`; usually loaded with [`crate::backbone::load_backbone`] next.
    pub fn new(
        backbone: &str,
        classes: usize,
        cfg: &SegmentationConfig,
        vars: &VarMap,
        seed: u64,
        device: &Device,
    ) -> Result<Self, TransferError> {
        let vb = VarBuilder::from_varmap(vars, DType::F32, device);
        let fcn = Self::build(backbone, classes, cfg, vb)?;
        zoo::init::initialize(vars, seed, zoo::init::WeightInit::Kaiming)?;
        Ok(fcn)
    }

    fn build(
        backbone: &str,
        classes: usize,
        cfg: &SegmentationConfig,
        vb: VarBuilder,
    ) -> Result<Self, TransferError> {
        let spec = ModelSpec::find(backbone)?;
        let Arch::ResNet(mut rc) = spec.arch else {
            return Err(TransferError::Config(format!(
                "the segmenter's backbone must be a ResNet; {backbone} is not"
            )));
        };
        rc.num_classes = 0;
        rc.output_stride = cfg.output_stride;
        rc.bn.frozen = cfg.freeze_bn;
        let net = ResNet::new(&rc, vb.pp(BACKBONE))?;
        let bn = BatchNormConfig {
            frozen: cfg.freeze_bn,
            ..rc.bn
        };
        let head = FcnHead::new(vb.pp("head"), net.stage_channels(4), classes, bn)?;
        let aux = if cfg.aux {
            Some(FcnHead::new(
                vb.pp("aux"),
                net.stage_channels(3),
                classes,
                bn,
            )?)
        } else {
            None
        };
        Ok(Self {
            backbone: net,
            head,
            aux,
            cfg: cfg.clone(),
            classes,
            backbone_name: backbone.to_string(),
        })
    }

    /// The same segmenter over constant handles to the current values of `vars`, for
    /// inference (batch norm folded into the convolutions, no graph).
    pub fn frozen(&self, vars: &VarMap) -> Result<Self, TransferError> {
        let tensors: std::collections::HashMap<String, Tensor> = vars
            .data()
            .lock()
            .expect("varmap lock poisoned")
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
            .collect();
        let device = self.head.cls_bias.device().clone();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        Self::build(&self.backbone_name, self.classes, &self.cfg, vb)
    }

    /// The settings it was built with.
    pub fn config(&self) -> &SegmentationConfig {
        &self.cfg
    }

    /// Classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Whether variable `name` is one of the heads' (they learn at `head_lr_mult` ×).
    pub fn is_head(name: &str) -> bool {
        name.starts_with("head.") || name.starts_with("aux.")
    }

    /// The main and auxiliary logits upsampled to the input's size; dropout from `rng` in
    /// training.
    pub fn forward(
        &self,
        images: &Tensor,
        train: bool,
        mut rng: Option<&mut ChaCha8Rng>,
    ) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        let (_, _, h, w) = images.dims4()?;
        let c3 = self.backbone.forward_stages(images, train, true, 1..=3)?;
        let c4 = self.backbone.forward_stages(&c3, train, false, 4..=4)?;
        let p = self.cfg.dropout;
        let main = self
            .head
            .forward(&c4, train, rng.as_deref_mut().map(|r| (r, p)))?;
        let up = |t: &Tensor| ops::resize::resize_bilinear(t, (h, w), self.cfg.align_corners);
        let aux = match (&self.aux, train) {
            (Some(a), true) => Some(up(&a.forward(&c3, train, rng.map(|r| (r, p)))?)?),
            _ => None,
        };
        Ok((up(&main)?, aux))
    }

    /// The training losses of `batch`: per-pixel cross-entropy (ignore label excluded) of
    /// the main head, plus `aux_weight` × the auxiliary head's.
    pub fn loss(
        &self,
        batch: &SegBatch,
        seed: u64,
        device: &Device,
    ) -> candle_core::Result<SegLoss> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let images = batch.images.to_device(device)?;
        let labels = batch.labels.to_device(device)?;
        let (main, aux) = self.forward(&images, true, Some(&mut rng))?;
        let seg = ops::loss::cross_entropy_2d(&main, &labels, IGNORE)?;
        let scalar = |t: &Tensor| -> candle_core::Result<f64> { Ok(t.to_scalar::<f32>()? as f64) };
        let (total, aux_value) = match aux {
            Some(a) => {
                let l = ops::loss::cross_entropy_2d(&a, &labels, IGNORE)?;
                let v = scalar(&l)?;
                ((&seg + (l * self.cfg.aux_weight)?)?, v)
            }
            None => (seg.clone(), 0.0),
        };
        Ok(SegLoss {
            parts: [("seg", scalar(&seg)?), ("aux", aux_value)],
            total,
        })
    }

    /// Class probabilities of `x (1, 3, h, w)` at its size: in one pass when it fits in the
    /// crop, else in crop-sized windows with a stride of 2/3 crop (the last one flush with
    /// the border), averaged where they overlap.
    fn window_probs(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let softmax = |t: &Tensor| -> candle_core::Result<Tensor> {
            candle_nn::ops::softmax(&self.forward(t, false, None)?.0, 1)
        };
        let (_, _, h, w) = x.dims4()?;
        let c = self.cfg.crop_size;
        if h <= c && w <= c {
            return softmax(x);
        }
        let starts = |len: usize| -> Vec<usize> {
            if len <= c {
                return vec![0];
            }
            let stride = (c * 2 / 3).max(1);
            let mut v: Vec<usize> = (0..len - c).step_by(stride).collect();
            v.push(len - c);
            v
        };
        let (th, tw) = (h.min(c), w.min(c));
        let mut acc = Tensor::zeros((1, self.classes, h, w), DType::F32, x.device())?;
        let mut count = vec![0f32; h * w];
        for &y0 in &starts(h) {
            for &x0 in &starts(w) {
                let tile = x.narrow(2, y0, th)?.narrow(3, x0, tw)?;
                let p = softmax(&tile.contiguous()?)?;
                // Placed back by padding with zeros around it.
                let placed =
                    p.pad_with_zeros(2, y0, h - y0 - th)?
                        .pad_with_zeros(3, x0, w - x0 - tw)?;
                acc = (acc + placed)?;
                for y in y0..y0 + th {
                    for v in &mut count[y * w + x0..y * w + x0 + tw] {
                        *v += 1.0;
                    }
                }
            }
        }
        let count = Tensor::from_vec(count, (1, 1, h, w), x.device())?;
        acc.broadcast_div(&count)
    }

    /// `x` mirrored left to right.
    fn flip(x: &Tensor) -> candle_core::Result<Tensor> {
        let w = x.dim(3)?;
        let idx: Vec<u32> = (0..w as u32).rev().collect();
        x.index_select(&Tensor::new(idx.as_slice(), x.device())?, 3)
    }

    /// The class of every pixel of one normalised image `x (1, 3, H, W)` from its scores at
    /// the recipe's validation scales (and flipped, with `val_flip`), each resized back to
    /// `H × W` and summed (GluonCV's multi-scale evaluation). Without scales: [`Self::predict`].
    pub fn predict_multiscale(&self, x: &Tensor) -> candle_core::Result<Vec<u32>> {
        if self.cfg.val_scales.is_empty() {
            return Ok(self.predict(x)?.remove(0));
        }
        let (_, _, h, w) = x.dims4()?;
        let align = self.cfg.align_corners;
        let mut acc = Tensor::zeros((1, self.classes, h, w), DType::F32, x.device())?;
        for &s in &self.cfg.val_scales {
            let long = (self.cfg.base_size as f64 * s).round().max(1.0);
            let r = long / h.max(w) as f64;
            let size = (
                ((h as f64 * r).round() as usize).max(1),
                ((w as f64 * r).round() as usize).max(1),
            );
            let scaled = ops::resize::resize_bilinear(x, size, align)?;
            let mut p = self.window_probs(&scaled)?;
            if self.cfg.val_flip {
                p = (p + Self::flip(&self.window_probs(&Self::flip(&scaled)?)?)?)?;
            }
            acc = (acc + ops::resize::resize_bilinear(&p, (h, w), align)?)?;
        }
        acc.argmax(1)?.flatten_all()?.to_vec1::<u32>()
    }

    /// The predicted class of every pixel of `images (N, 3, H, W)`: `(N, H, W)` labels.
    pub fn predict(&self, images: &Tensor) -> candle_core::Result<Vec<Vec<u32>>> {
        let (main, _) = self.forward(images, false, None)?;
        let labels = main.argmax(1)?;
        let n = labels.dim(0)?;
        (0..n)
            .map(|i| labels.get(i)?.flatten_all()?.to_vec1::<u32>())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dilated_fcn_gives_full_size_logits_a_finite_loss_and_gradients_to_both_heads() {
        let vars = VarMap::new();
        let cfg = SegmentationConfig::default();
        let fcn = Fcn::new("resnet10d_tiny", 150, &cfg, &vars, 0, &Device::Cpu).unwrap();
        let images = ops::gradcheck::uniform(&[2, 3, 48, 40], 1, &Device::Cpu).unwrap();
        let labels: Vec<u32> = (0..2 * 48 * 40)
            .map(|i| if i % 7 == 0 { IGNORE } else { (i % 5) as u32 })
            .collect();
        let batch = SegBatch {
            images: images.clone(),
            labels: Tensor::from_vec(labels, (2, 48, 40), &Device::Cpu).unwrap(),
            samples: vec![(0, (48, 40)), (1, (48, 40))],
        };
        let l = fcn.loss(&batch, 3, &Device::Cpu).unwrap();
        let (seg, aux) = (l.parts[0].1, l.parts[1].1);
        // Untrained over 150 classes: about ln 150 = 5.0 each.
        assert!(
            seg.is_finite() && aux.is_finite() && seg > 2.0,
            "{seg} {aux}"
        );
        let grads = l.total.backward().unwrap();
        let data = vars.data().lock().unwrap();
        for name in [
            "head.cls.weight",
            "aux.cls.weight",
            "backbone.layer4.0.conv1.weight",
        ] {
            let g = grads.get(data[name].as_tensor()).expect(name);
            let norm = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(norm > 0.0, "{name}");
        }
        drop(data);
        let predicted = fcn.frozen(&vars).unwrap().predict(&images).unwrap();
        assert_eq!(predicted.len(), 2);
        assert_eq!(predicted[0].len(), 48 * 40);
        assert!(predicted[0].iter().all(|&c| c < 150));
        assert!(Fcn::is_head("aux.bn.weight") && !Fcn::is_head("backbone.conv1.0.weight"));
    }

    #[test]
    fn multi_scale_prediction_at_scale_one_in_one_window_is_the_plain_prediction() {
        let vars = VarMap::new();
        let mut cfg = SegmentationConfig {
            base_size: 40,
            crop_size: 64,
            ..Default::default()
        };
        let fcn = Fcn::new("resnet10d_tiny", 150, &cfg, &vars, 0, &Device::Cpu).unwrap();
        let x = ops::gradcheck::uniform(&[1, 3, 30, 40], 2, &Device::Cpu).unwrap();
        let plain = fcn.predict(&x).unwrap().remove(0);
        cfg.val_scales = vec![1.0];
        let net = Fcn::new("resnet10d_tiny", 150, &cfg, &vars, 0, &Device::Cpu).unwrap();
        let vb_copy = net.frozen(&vars).unwrap();
        // Same weights (Fcn::new initialises with the same seed), long side 40 = base size.
        assert_eq!(vb_copy.predict_multiscale(&x).unwrap(), plain);
        // Windows: a crop smaller than the image still labels every pixel with a class.
        cfg.crop_size = 32;
        cfg.val_scales = vec![1.0, 1.5];
        cfg.val_flip = true;
        let tiled = Fcn::new("resnet10d_tiny", 150, &cfg, &vars, 0, &Device::Cpu).unwrap();
        let labels = tiled.predict_multiscale(&x).unwrap();
        assert_eq!(labels.len(), 30 * 40);
        assert!(labels.iter().all(|&l| l < 150));
    }
}
