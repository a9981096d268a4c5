//! The demo's transfer stages (Section 6): each backbone published to the demo's local zoo,
//! then fine-tuned as Faster R-CNN on a generated VOCdevkit (Table 8) and as FCN on a
//! generated ADE20K (Table 9), with the runs of `tricks transfer detect` and `segment`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use candle_core::Device;
use training::recipe::{DetectionRecipe, SegmentationRecipe};
use training::run_dir::RunDir;
use training::trainer::Trainer;
use transfer::detection::{Detection, DetectionSpec};
use transfer::segmentation::{Segmentation, SegmentationSpec};
use zoo::reference::{WeightsRef, ZooContext};

use crate::progress::RunProgress;

/// The sizes of the transfer stages.
pub struct TransferScale {
    /// Generated VOC images in `trainval` and in `test`, their longer side, epochs.
    pub det_images: (usize, usize),
    pub det_size: usize,
    pub det_epochs: usize,
    /// Generated ADE20K images in `training` and `validation`, their longer side, the
    /// training crop, epochs.
    pub seg_images: (usize, usize),
    pub seg_size: usize,
    pub seg_crop: usize,
    pub seg_epochs: usize,
}

/// A detector's test numbers (fractions).
pub struct DetResult {
    pub map07: f64,
    pub map: f64,
    pub seconds: f64,
}

/// A segmenter's validation numbers (fractions).
pub struct SegResult {
    pub pixel_accuracy: f64,
    pub miou_present: f64,
    pub miou_all: f64,
    pub seconds: f64,
}

/// Publishes the classification run `run` as `NAME@1.0.0` in the demo's zoo (safetensors,
/// ONNX, registry entry), unless a previous demo already did; returns the entry's id.
pub fn publish_backbone(ctx: &ZooContext, run: &Path, name: &str) -> Result<String> {
    let reference: zoo::registry::EntryRef = format!("{name}@1.0.0").parse()?;
    if let Ok((_, e)) = ctx.find_entry(&reference) {
        return Ok(e.id());
    }
    let loaded = training::weights::load(&WeightsRef::Path(run.to_path_buf()), None, ctx)?;
    let entry = zoo::publish::publish(
        ctx,
        &loaded,
        zoo::publish::PublishRequest {
            name: name.into(),
            version: "1.0.0".parse().map_err(anyhow::Error::msg)?,
            dataset: Some("shapes (generated)".into()),
            license: None,
            parent: None,
            source: format!("tricks demo run {}", run.display()),
        },
    )?;
    Ok(entry.id())
}

/// Generates the VOCdevkit and the ADE20K folders under `dir` (unless there already).
pub fn generate_data(dir: &Path, s: &TransferScale) -> Result<(PathBuf, PathBuf)> {
    let voc = dir.join("VOCdevkit");
    if !voc.is_dir() {
        let n = transfer::synth_voc::generate(
            &voc,
            &transfer::synth_voc::SynthVocConfig {
                classes: 6,
                trainval: s.det_images.0,
                test: s.det_images.1,
                size: s.det_size,
                ..Default::default()
            },
        )?;
        println!("generated {n} detection images in {}", voc.display());
    }
    let ade = dir.join("ADEChallengeData2016");
    if !ade.is_dir() {
        let n = transfer::synth_ade::generate(
            &ade,
            &transfer::synth_ade::SynthAdeConfig {
                training: s.seg_images.0,
                validation: s.seg_images.1,
                size: s.seg_size,
                ..Default::default()
            },
        )?;
        println!("generated {n} segmentation images in {}", ade.display());
    }
    Ok((voc, ade))
}

/// The `detection` recipe at demo scale: session 11's settings for small images (RPN
/// width 128, 2000 → 300 proposals in training, 1000 → 100 at test, 64 regions).
fn detection_recipe(s: &TransferScale) -> Result<DetectionRecipe> {
    let mut r = DetectionRecipe::load("detection")?;
    r.optim.epochs = s.det_epochs;
    r.optim.lr = Some(0.01);
    r.optim.lr_step_epochs = vec![(s.det_epochs * 4).div_ceil(5)];
    let d = &mut r.detection;
    d.min_size = s.det_size;
    d.max_size = s.det_size * 5 / 3;
    d.rpn_channels = 128;
    (d.rpn_pre_nms_train, d.rpn_post_nms_train) = (2000, 300);
    (d.rpn_pre_nms_test, d.rpn_post_nms_test) = (1000, 100);
    d.rcnn_batch = 64;
    Ok(r)
}

/// The `segmentation` recipe at demo scale (batch 8, η = 0.01, crops of `seg_crop`).
fn segmentation_recipe(s: &TransferScale) -> Result<SegmentationRecipe> {
    let mut r = SegmentationRecipe::load("segmentation")?;
    r.optim.epochs = s.seg_epochs;
    r.optim.batch_size = 8;
    r.optim.lr = Some(0.01);
    r.segmentation.base_size = s.seg_size;
    r.segmentation.crop_size = s.seg_crop;
    Ok(r)
}

/// What both fine-tunings start from: the backbone's architecture, its weights and entry.
pub struct Backbone<'a> {
    pub label: &'a str,
    pub model: &'a str,
    pub weights: PathBuf,
    pub entry: String,
}

/// Fine-tunes Faster R-CNN from `b` in `dir` (resumed if there) and scores its test
/// detections.
pub fn detect(dir: &Path, b: &Backbone, voc: &Path, s: &TransferScale) -> Result<DetResult> {
    let device = Device::Cpu;
    let mut trainer = if RunDir::is_run(dir) {
        Detection::resume(dir, &device)?
    } else {
        Detection::create(
            dir,
            DetectionSpec {
                task: "detection".into(),
                backbone: b.model.into(),
                init: Some(b.weights.clone()),
                parent: Some(b.entry.clone()),
                data: voc.to_path_buf(),
                train: "voc2007:trainval".into(),
                test: "voc2007:test".into(),
                strict: true,
                recipe: detection_recipe(s)?,
            },
            &device,
        )?
    };
    let t = Instant::now();
    train(&mut trainer, &format!("detect {}", b.label))?;
    let m = trainer
        .task()
        .score(&dir.join(transfer::detection::task::DETECTIONS))?;
    Ok(DetResult {
        map07: m.map07,
        map: m.map,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// Fine-tunes FCN from `b` in `dir` (resumed if there) and scores its validation
/// predictions.
pub fn segment(dir: &Path, b: &Backbone, ade: &Path, s: &TransferScale) -> Result<SegResult> {
    let device = Device::Cpu;
    let mut trainer = if RunDir::is_run(dir) {
        Segmentation::resume(dir, &device)?
    } else {
        Segmentation::create(
            dir,
            SegmentationSpec {
                task: "segmentation".into(),
                backbone: b.model.into(),
                init: Some(b.weights.clone()),
                parent: Some(b.entry.clone()),
                data: ade.to_path_buf(),
                strict: true,
                recipe: segmentation_recipe(s)?,
            },
            &device,
        )?
    };
    let t = Instant::now();
    train(&mut trainer, &format!("segment {}", b.label))?;
    let m = trainer
        .task()
        .score(&dir.join(transfer::segmentation::task::PREDICTIONS))?;
    Ok(SegResult {
        pixel_accuracy: m.pixel_accuracy,
        miou_present: m.miou_present,
        miou_all: m.miou_all,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// Trains the remaining epochs with a progress bar.
fn train<T: training::trainer::Task>(trainer: &mut Trainer<T>, label: &str) -> Result<()> {
    if trainer.epochs_done() < trainer.total_epochs() {
        RunProgress::new(label).drive(|progress, epoch| trainer.run(progress, epoch))?;
    }
    Ok(())
}
