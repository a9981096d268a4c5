//! `tricks predict`: what a model sees in each image. A classifier prints its top classes
//! with their names, preprocessing each image as the weights' input configuration says; a
//! detector writes, per image, the image with its boxes drawn (`NAME.png`) and its
//! detections (`NAME.json`) under `--out`; a segmenter the label image (`NAME.png`, ADE20K's
//! encoding) and a colour overlay with a legend (`NAME_overlay.png`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor, D};
use serde::Serialize;
use training::data::pretrained::preprocess;
use training::data::Image;
use transfer::detection::SavedDetector;
use transfer::segmentation::SavedSegmenter;
use zoo::registry::Task;

use crate::draw::{draw_boxes, draw_overlay, Labelled};
use crate::weights_ref::WeightsArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub weights: WeightsArgs,
    /// How many classes to print per image (classifier).
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// Where a detector writes `NAME.png` (the boxes drawn) and `NAME.json` (every
    /// detection), a segmenter `NAME.png` (labels) and `NAME_overlay.png`, per image.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Boxes scoring at least this are drawn and printed (detector; the JSON has all).
    #[arg(long, default_value_t = 0.5)]
    pub draw_threshold: f64,
    /// Images (JPEG or PNG).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let ctx = args.weights.zoo.context();
    match transfer::saved::task_of(&args.weights.weights, &ctx)? {
        Task::Classification => classify(&args),
        Task::Detection => detect(&args),
        Task::Segmentation => segment(&args),
    }
}

fn segment(args: &Args) -> Result<()> {
    use transfer::ade20k::IGNORE;
    let Some(out) = &args.out else {
        bail!("a segmenter writes label images: give --out DIR for the PNG files");
    };
    let seg = SavedSegmenter::load(&args.weights.weights, &args.weights.zoo.context())?;
    let net = seg.inference()?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let names = &seg.config.label_names;
    for (path, stem) in args.images.iter().zip(output_stems(&args.images, out)?) {
        let img = Image::open(path).map_err(anyhow::Error::msg)?;
        let labels = seg.predict(&net, &img)?;
        let label_png = out.join(format!("{stem}.png"));
        transfer::ade20k::write_mask(&label_png, &labels, img.width, img.height)?;
        let overlay = out.join(format!("{stem}_overlay.png"));
        draw_overlay(&img, &labels, IGNORE, names, &overlay).map_err(anyhow::Error::msg)?;
        let mut counts = std::collections::BTreeMap::new();
        for &l in &labels {
            *counts.entry(l).or_insert(0usize) += 1;
        }
        let mut top: Vec<(u32, usize)> = counts.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let summary: Vec<String> = top
            .iter()
            .take(5)
            .map(|(l, n)| {
                format!(
                    "{} {:.0}%",
                    names[*l as usize],
                    100.0 * *n as f64 / labels.len() as f64
                )
            })
            .collect();
        println!(
            "{}: {} → {} (labels, ADE20K encoding), {}",
            path.display(),
            summary.join(", "),
            label_png.display(),
            overlay.display()
        );
    }
    Ok(())
}

fn classify(args: &Args) -> Result<()> {
    let loaded = args.weights.load()?;
    let classes = loaded.model.spec.num_classes();
    if classes == 0 {
        bail!(
            "{} has no classifier: nothing to predict",
            args.weights.weights
        );
    }
    let names: Vec<String> = match &loaded.meta.labels {
        Some(labels) if labels.len() == classes => labels.clone(),
        _ if classes == 1000 => zoo::labels::imagenet()
            .into_iter()
            .map(String::from)
            .collect(),
        _ => (0..classes).map(|i| format!("class {i}")).collect(),
    };
    let input = &loaded.meta.input;
    let [c, h, w] = input.size;
    let net = loaded.model.frozen()?;
    for path in &args.images {
        let pixels = preprocess(path, input).map_err(anyhow::Error::msg)?;
        let x = Tensor::from_vec(pixels, (1, c, h, w), &Device::Cpu)?;
        let logits = net.forward_t(&x, false)?;
        let values: Vec<f32> = logits.flatten_all()?.to_vec1()?;
        if values.iter().any(|v| !v.is_finite()) {
            bail!(
                "{}: the model's logits are not finite (NaN or infinite): no ranking to show",
                path.display()
            );
        }
        let probs: Vec<f32> = candle_nn::ops::softmax(&logits, D::Minus1)?
            .flatten_all()?
            .to_vec1()?;
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        println!("{}", path.display());
        for &i in order.iter().take(args.top) {
            println!("  {:>6.2}%  {:>4}  {}", 100.0 * probs[i], i, names[i]);
        }
    }
    Ok(())
}

/// One detection in the JSON file.
#[derive(Serialize)]
struct JsonDetection<'a> {
    class: &'a str,
    class_index: usize,
    score: f32,
    /// `[x1, y1, x2, y2]` in the image's pixels, continuous, 0-based.
    #[serde(rename = "box")]
    bbox: [f32; 4],
}

/// The JSON file of one image.
#[derive(Serialize)]
struct JsonImage<'a> {
    image: String,
    width: usize,
    height: usize,
    detections: Vec<JsonDetection<'a>>,
}

fn detect(args: &Args) -> Result<()> {
    let Some(out) = &args.out else {
        bail!("a detector draws its boxes: give --out DIR for the PNG and JSON files");
    };
    if !(0.0..=1.0).contains(&args.draw_threshold) {
        bail!("--draw-threshold {} must be in [0, 1]", args.draw_threshold);
    }
    let det = SavedDetector::load(&args.weights.weights, &args.weights.zoo.context())?;
    let net = det.inference()?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let names = &det.config.label_names;
    for (path, stem) in args.images.iter().zip(output_stems(&args.images, out)?) {
        let img = Image::open(path).map_err(anyhow::Error::msg)?;
        let d = det.predict(&net, &img)?;
        let detections: Vec<JsonDetection> = (0..d.boxes.len())
            .map(|k| JsonDetection {
                class: &names[d.classes[k]],
                class_index: d.classes[k],
                score: d.scores[k],
                bbox: d.boxes[k],
            })
            .collect();
        let shown: Vec<Labelled> = detections
            .iter()
            .filter(|j| j.score as f64 >= args.draw_threshold)
            .map(|j| Labelled {
                bbox: j.bbox,
                caption: format!("{} {:.2}", j.class, j.score),
                class: j.class_index,
            })
            .collect();
        let png = out.join(format!("{stem}.png"));
        draw_boxes(&img, &shown, &png).map_err(anyhow::Error::msg)?;
        let json = out.join(format!("{stem}.json"));
        let doc = JsonImage {
            image: path.display().to_string(),
            width: img.width,
            height: img.height,
            detections,
        };
        let text = serde_json::to_string_pretty(&doc)?;
        zoo::atomic::write(&json, text.as_bytes())
            .with_context(|| format!("writing {}", json.display()))?;
        println!(
            "{}: {} detections, {} at score ≥ {} → {}",
            path.display(),
            doc.detections.len(),
            shown.len(),
            args.draw_threshold,
            png.display()
        );
        for l in &shown {
            let [x1, y1, x2, y2] = l.bbox;
            println!("  {:<24} [{x1:.0}, {y1:.0}, {x2:.0}, {y2:.0}]", l.caption);
        }
    }
    Ok(())
}

/// Each image's file stem, the name of its outputs under `out`; two images of the same
/// stem are refused before anything is written.
fn output_stems(images: &[PathBuf], out: &Path) -> Result<Vec<String>> {
    let mut seen = std::collections::HashSet::new();
    images
        .iter()
        .map(|path| {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .with_context(|| format!("{}: not a file name", path.display()))?;
            if !seen.insert(stem.clone()) {
                bail!(
                    "{}: two images named {stem} would write the same files under {}",
                    path.display(),
                    out.display()
                );
            }
            Ok(stem)
        })
        .collect()
}
