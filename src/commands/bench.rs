//! `tricks bench`: images per second of inference or of a full training step.

use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Tensor};
use ops::plan::{self, ConvQuery, Layout, Target};
use ops::ConvGeometry;
use training::optim::NagConfig;
use training::step::TrainStep;
use zoo::models::{create_model, ModelSpec};
use zoo::walk::KernelTable;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Architecture, as listed by `tricks models`.
    #[arg(long, default_value = "resnet50d")]
    pub model: String,
    /// Images per batch.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Input height and width (default: the model's).
    #[arg(long)]
    pub size: Option<usize>,
    /// Time a training step (forward, backward, NAG update) instead of inference.
    #[arg(long)]
    pub train: bool,
    /// Timed iterations (at least 1), after one untimed warm-up.
    #[arg(long, default_value_t = 3, value_parser = super::positive)]
    pub iters: usize,
    /// Time the data loader instead: one epoch of this dataset's `train` split (ImageNet
    /// layout) with the full training augmentation, at `--batch` and `--size`.
    #[arg(long)]
    pub loader: Option<std::path::PathBuf>,
    /// Loader threads (with `--loader`).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Device to run on: `cpu`, or `cuda` / `cuda:N` in a build with `--features cuda`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Time one convolution instead, `C_IN,C_OUT,K,STRIDE,SIZE[,DILATION]` (e.g.
    /// `64,64,3,1,56`; padding `DILATION·(K/2)`, so a dilated 3×3 keeps its map as in a
    /// dilated ResNet's stages 3 and 4): forward, and with `--train` forward and both
    /// gradients, at `--batch`.
    #[arg(long, value_name = "C_IN,C_OUT,K,STRIDE,SIZE[,DILATION]")]
    pub conv: Option<String>,
    /// With `--conv`: time the blocked (NCHW16c) inference kernel instead, on an input
    /// already in that layout, with a bias and a ReLU in its epilogue.
    #[arg(long, requires = "conv", conflicts_with = "train")]
    pub blocked: bool,
    /// Print the kernel every convolution of `--model` gets at `--batch` and `--size`
    /// (inference on frozen weights, or with `--train` a training step), instead of timing.
    #[arg(long, conflicts_with_all = ["conv", "loader"])]
    pub kernels: bool,
    /// Time the detector's box operations instead (anchor targets, R-CNN sampling,
    /// proposal NMS in training and at test, per-class NMS), on a `--size` × 5/3·`--size`
    /// image (default 600 × 1000, GluonCV's VOC size) with 10 objects.
    #[arg(long, conflicts_with_all = ["conv", "loader", "kernels", "train"])]
    pub boxes: bool,
    /// Time a detector instead (a run directory, an exported folder, `zoo:` or `hf:`), on
    /// one image of its ONNX export's default size (or `--size` × 4/3·`--size`): inference
    /// from the normalised image to the final detections, or with `--train` one training
    /// step (losses, backward, NAG update of the variables that train).
    #[arg(long, conflicts_with_all = ["conv", "loader", "kernels", "boxes"])]
    pub detector: Option<zoo::reference::WeightsRef>,
    /// As `--detector`, on an untrained detector: the `detection` recipe's heads for the 20
    /// VOC classes on this zoo ResNet (e.g. `resnet50`), at `--size` (default 600 × 800);
    /// `--train` updates with the recipe's optimiser.
    /// What `scripts/bench_torchvision_detector.py` compares with torchvision.
    #[arg(long, value_name = "BACKBONE", conflicts_with_all = ["conv", "loader", "kernels", "boxes", "detector"])]
    pub detector_backbone: Option<String>,
    /// Time an untrained FCN instead (Section 6.2): the `segmentation` recipe's heads for
    /// ADE20K's 150 classes on this zoo ResNet dilated to the recipe's output stride, at
    /// `--batch` and `--size` (default the recipe's crop): inference to the upsampled
    /// logits, or with `--train` a training step (both heads' losses, backward, the
    /// recipe's optimiser). What `scripts/bench_torchvision_segmenter.py` compares with
    /// torchvision's `FCN`.
    #[arg(long, value_name = "BACKBONE", conflicts_with_all = ["conv", "loader", "kernels", "boxes", "detector", "detector_backbone"])]
    pub segmenter_backbone: Option<String>,
    #[command(flatten)]
    pub zoo: crate::weights_ref::ZooArgs,
}

pub fn run(args: Args) -> Result<()> {
    if let Some(data) = &args.loader {
        return bench_loader(data, &args);
    }
    if let Some(conv) = &args.conv {
        return bench_conv(conv, &args);
    }
    if args.boxes {
        return bench_boxes(&args);
    }
    if args.detector.is_some() || args.detector_backbone.is_some() {
        return bench_detector(&args);
    }
    if let Some(backbone) = &args.segmenter_backbone {
        return bench_segmenter(backbone, &args);
    }
    let spec = ModelSpec::find(&args.model)?;
    let size = args.size.unwrap_or(spec.input_size.1);
    let device = crate::device::parse(&args.device)?;
    if args.kernels {
        let model = create_model(&spec, &device, 0)?;
        let mut table = KernelTable::new(args.batch, Target::of(&device), args.train);
        model.net.kernel_table(&mut table, size, size)?;
        println!(
            "{} at {size}x{size}, batch {}, {}:",
            spec.name,
            args.batch,
            if args.train {
                "training"
            } else {
                "inference (frozen)"
            }
        );
        print!("{}", table.to_text());
        return Ok(());
    }
    let model = create_model(&spec, &device, 0)?;
    let images = ops::gradcheck::uniform(&[args.batch, 3, size, size], 1, &device)?;
    let labels = Tensor::from_vec(
        (0..args.batch as u32).map(|i| i % 1000).collect::<Vec<_>>(),
        args.batch,
        &device,
    )?;
    let frozen = model.frozen()?;
    let mut trainer = TrainStep::new(model.net.as_ref(), &model.vars, NagConfig::default());
    let mut run_once = || -> Result<()> {
        if args.train {
            trainer.step(&images, &labels, 0.1)?;
        } else {
            frozen.forward_t(&images, false)?.to_dtype(DType::F32)?;
        }
        Ok(())
    };
    run_once()?;
    device.synchronize()?;
    let start = Instant::now();
    for _ in 0..args.iters {
        run_once()?;
    }
    device.synchronize()?;
    let seconds_per_iter = start.elapsed().as_secs_f64() / args.iters.max(1) as f64;
    let img_per_s = args.batch as f64 / seconds_per_iter;
    // A training step costs about three forward passes (forward, input and weight gradients).
    let flops_per_img =
        2.0 * model.net.macs(size, size) as f64 * if args.train { 3.0 } else { 1.0 };
    println!(
        "{} {} batch {} at {size}x{size}: {:.3} s/iter, {img_per_s:.2} img/s, {:.1} GFLOP/s ({} threads)",
        spec.name,
        if args.train { "training step" } else { "inference" },
        args.batch,
        seconds_per_iter,
        flops_per_img * img_per_s / 1e9,
        rayon_threads(),
    );
    Ok(())
}

/// Images per second the loader delivers with the training augmentation (decode, random
/// resized crop, flip, colour jitter, PCA lighting, normalisation).
fn bench_loader(data: &std::path::Path, args: &Args) -> Result<()> {
    use training::data::augment::AugmentConfig;
    use training::data::{ImageFolder, Loader, LoaderConfig};
    let classes = ImageFolder::class_names(data)?;
    let train = ImageFolder::open(data, "train", &classes)?;
    let size = args.size.unwrap_or(224);
    let loader = Loader::new(
        train.samples,
        LoaderConfig {
            batch_size: args.batch,
            train: true,
            augment: AugmentConfig {
                size,
                ..Default::default()
            },
            seed: 0,
            workers: args.workers,
            prefetch: 2,
            strict: false,
        },
    )?;
    let start = Instant::now();
    let mut images = 0;
    for batch in loader.epoch(0, 0) {
        images += batch?.labels.len();
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "loader {} at {size}x{size}, batch {}, {} workers: {images} images in {seconds:.2} s, {:.1} img/s",
        data.display(),
        args.batch,
        args.workers,
        images as f64 / seconds
    );
    Ok(())
}

/// Median milliseconds of `iters` calls of `f` after one warm-up call.
fn median_ms(iters: usize, mut f: impl FnMut()) -> f64 {
    try_median_ms(iters, || {
        f();
        Ok(())
    })
    .expect("an infallible call")
}

/// [`median_ms`] of a call that can fail: the first failure is the error.
fn try_median_ms(iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(iters.max(1));
    for _ in 0..iters.max(1) {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Milliseconds per call of each box operation of a detector's training step and
/// inference, at the recipe's counts (Section 6.1's Faster R-CNN with GluonCV's settings).
fn bench_boxes(args: &Args) -> Result<()> {
    use ops::boxes::{batched_nms, nms};
    use rand::{Rng, SeedableRng};
    use transfer::detection::coder::{base_anchors, grid_anchors};
    use transfer::detection::targets::{rcnn_sample, rpn_targets};
    let cfg = training::recipe::DetectionConfig::default();
    let h = args.size.unwrap_or(cfg.min_size);
    let w = h * 5 / 3;
    let stride = transfer::detection::model::FEATURE_STRIDE;
    let feat = (h.div_ceil(16), w.div_ceil(16));
    let anchors = grid_anchors(
        &base_anchors(stride, &cfg.anchor_scales, &cfg.anchor_ratios),
        stride,
        feat,
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let random_box = |rng: &mut rand_chacha::ChaCha8Rng| {
        let (bw, bh) = (
            rng.random_range(20.0..w as f32 / 2.0),
            rng.random_range(20.0..h as f32 / 2.0),
        );
        let (x, y) = (
            rng.random_range(0.0..w as f32 - bw),
            rng.random_range(0.0..h as f32 - bh),
        );
        [x, y, x + bw, y + bh]
    };
    let gt: Vec<[f32; 4]> = (0..10).map(|_| random_box(&mut rng)).collect();
    let gt_classes: Vec<usize> = (0..10).map(|i| i % 20).collect();
    // Proposals as an RPN makes them: anchors moved a little, with random scores.
    let jitter = |rng: &mut rand_chacha::ChaCha8Rng, a: &[f32; 4]| {
        let d: f32 = rng.random_range(-8.0..8.0);
        [a[0] + d, a[1] - d, a[2] + d, a[3] + d]
    };
    let pre_train: Vec<[f32; 4]> = anchors
        .iter()
        .take(cfg.rpn_pre_nms_train)
        .map(|a| jitter(&mut rng, a))
        .collect();
    let pre_test: Vec<[f32; 4]> = pre_train[..cfg.rpn_pre_nms_test.min(pre_train.len())].to_vec();
    let scores: Vec<f32> = (0..pre_train.len()).map(|_| rng.random()).collect();
    let proposals: Vec<[f32; 4]> = nms(
        &pre_train,
        &scores,
        cfg.rpn_nms as f32,
        cfg.rpn_post_nms_train,
    )
    .into_iter()
    .map(|k| pre_train[k])
    .collect();
    let classes = 20;
    let per_class: Vec<[f32; 4]> = (0..cfg.rpn_post_nms_test * classes)
        .map(|k| pre_test[k % pre_test.len()])
        .collect();
    let per_class_scores: Vec<f32> = (0..per_class.len()).map(|_| rng.random()).collect();
    let per_class_ids: Vec<usize> = (0..per_class.len()).map(|k| k % classes).collect();
    let iters = args.iters.max(5);
    let rows = [
        (
            format!(
                "RPN targets: IoU of {} anchors with 10 boxes, sampling",
                anchors.len()
            ),
            median_ms(iters, || {
                let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(1);
                std::hint::black_box(rpn_targets(&mut r, &anchors, &gt, (h, w), &cfg));
            }),
        ),
        (
            format!(
                "R-CNN sampling: IoU of {} proposals with 10 boxes",
                proposals.len()
            ),
            median_ms(iters, || {
                let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(2);
                std::hint::black_box(rcnn_sample(&mut r, &proposals, &gt, &gt_classes, &cfg));
            }),
        ),
        (
            format!(
                "proposal NMS, training: {} -> {} at IoU {}",
                pre_train.len(),
                cfg.rpn_post_nms_train,
                cfg.rpn_nms
            ),
            median_ms(iters, || {
                std::hint::black_box(nms(
                    &pre_train,
                    &scores,
                    cfg.rpn_nms as f32,
                    cfg.rpn_post_nms_train,
                ));
            }),
        ),
        (
            format!(
                "proposal NMS, test: {} -> {} at IoU {}",
                pre_test.len(),
                cfg.rpn_post_nms_test,
                cfg.rpn_nms
            ),
            median_ms(iters, || {
                std::hint::black_box(nms(
                    &pre_test,
                    &scores[..pre_test.len()],
                    cfg.rpn_nms as f32,
                    cfg.rpn_post_nms_test,
                ));
            }),
        ),
        (
            format!(
                "per-class NMS, test: {} boxes of {classes} classes at IoU {}",
                per_class.len(),
                cfg.nms_threshold
            ),
            median_ms(iters, || {
                std::hint::black_box(batched_nms(
                    &per_class,
                    &per_class_scores,
                    &per_class_ids,
                    cfg.nms_threshold as f32,
                    cfg.detections_per_image,
                ));
            }),
        ),
    ];
    println!("detector box operations on a {h}x{w} image (median of {iters}, one thread):");
    for (what, ms) in rows {
        println!("  {ms:>9.3} ms  {what}");
    }
    Ok(())
}

/// Seconds per image of a detector's inference or training step at a fixed size.
fn bench_detector(args: &Args) -> Result<()> {
    use rand::SeedableRng;
    use transfer::detection::data::{DetectionBatch, Sample};
    use transfer::detection::FasterRcnn;
    let device = candle_core::Device::Cpu;
    let recipe = training::recipe::DetectionRecipe::load("detection")?;
    let (name, model, vars, default_size) = match (&args.detector, &args.detector_backbone) {
        (Some(reference), _) => {
            let det = transfer::detection::SavedDetector::load(reference, &args.zoo.context())?;
            let size = det.default_onnx_size();
            let name = format!("{reference} ({})", det.config.backbone);
            (name, det.model, det.vars, size)
        }
        (None, Some(backbone)) => {
            let cfg = &recipe.detection;
            let vars = candle_nn::VarMap::new();
            let classes = transfer::voc::VOC_CLASSES.len();
            let model = FasterRcnn::new(backbone, classes, cfg, &vars, 0, &device)?;
            let size = [cfg.min_size, (cfg.min_size * 4).div_ceil(3)];
            (format!("untrained on {backbone}"), model, vars, size)
        }
        (None, None) => unreachable!("run() calls this with one of them"),
    };
    let [h, w] = match args.size {
        Some(s) => [s, (s * 4).div_ceil(3)],
        None => default_size,
    };
    // Three objects of different sizes and classes, so that both heads have positives.
    let (hf, wf) = (h as f32, w as f32);
    let batch = DetectionBatch {
        images: ops::gradcheck::uniform(&[1, 3, h, w], 1, &device)?.to_dtype(DType::F32)?,
        samples: vec![Sample {
            index: 0,
            pixels: vec![],
            size: (h, w),
            scale: 1.0,
            boxes: vec![
                [0.1 * wf, 0.1 * hf, 0.5 * wf, 0.6 * hf],
                [0.4 * wf, 0.3 * hf, 0.9 * wf, 0.9 * hf],
                [0.6 * wf, 0.05 * hf, 0.75 * wf, 0.3 * hf],
            ],
            classes: vec![0, 6, 14],
        }],
    };
    let ms = if args.train {
        let mut nag = training::optim::Nag::from_vars(model.trainable(&vars), recipe.optim.nag());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        try_median_ms(args.iters, || {
            let loss = model.loss(&batch, &mut rng, &device)?;
            nag.step(&loss.total.backward()?, 1e-3)?;
            Ok(())
        })?
    } else {
        let net = model.frozen(&vars)?;
        try_median_ms(args.iters, || {
            std::hint::black_box(net.detect(&batch, &[(h, w)], &device)?);
            Ok(())
        })?
    };
    println!(
        "detector {name} {} at {h}x{w}: {:.4} s/img, {:.2} img/s ({} threads)",
        if args.train {
            "training step"
        } else {
            "inference"
        },
        ms / 1e3,
        1e3 / ms,
        rayon_threads()
    );
    Ok(())
}

/// Seconds per batch of an FCN's inference or training step.
fn bench_segmenter(backbone: &str, args: &Args) -> Result<()> {
    use transfer::segmentation::data::SegBatch;
    let device = candle_core::Device::Cpu;
    let recipe = training::recipe::SegmentationRecipe::load("segmentation")?;
    let cfg = &recipe.segmentation;
    let vars = candle_nn::VarMap::new();
    let classes = transfer::ade20k::ADE_CLASSES.len();
    let model = transfer::segmentation::Fcn::new(backbone, classes, cfg, &vars, 0, &device)?;
    let size = args.size.unwrap_or(cfg.crop_size);
    let n = args.batch;
    // Every class present, one pixel in 16 ignored.
    let labels: Vec<u32> = (0..n * size * size)
        .map(|i| {
            if i % 16 == 0 {
                transfer::ade20k::IGNORE
            } else {
                (i / 7 % classes) as u32
            }
        })
        .collect();
    let batch = SegBatch {
        images: ops::gradcheck::uniform(&[n, 3, size, size], 1, &device)?.to_dtype(DType::F32)?,
        labels: Tensor::from_vec(labels, (n, size, size), &device)?,
        samples: (0..n).map(|i| (i, (size, size))).collect(),
    };
    let ms = if args.train {
        let mut nag = training::optim::Nag::new(&vars, recipe.optim.nag());
        try_median_ms(args.iters, || {
            let loss = model.loss(&batch, 0, &device)?;
            nag.step(&loss.total.backward()?, 1e-3)?;
            Ok(())
        })?
    } else {
        let net = model.frozen(&vars)?;
        try_median_ms(args.iters, || {
            std::hint::black_box(net.forward(&batch.images, false, None)?);
            Ok(())
        })?
    };
    println!(
        "segmenter FCN on {backbone} (output stride {}) {} batch {n} at {size}x{size}: {:.4} s/iter, {:.2} img/s ({} threads)",
        cfg.output_stride,
        if args.train { "training step" } else { "inference" },
        ms / 1e3,
        n as f64 * 1e3 / ms,
        rayon_threads()
    );
    Ok(())
}

/// Milliseconds per call of one convolution: forward, or forward and both gradients.
fn bench_conv(shape: &str, args: &Args) -> Result<()> {
    let dims: Vec<usize> = shape
        .split(',')
        .map(|v| v.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("--conv {shape}: {e}"))?;
    let (c_in, c_out, k, stride, size, dilation) = match dims[..] {
        [c_in, c_out, k, stride, size] => (c_in, c_out, k, stride, size, 1),
        [c_in, c_out, k, stride, size, dilation] => (c_in, c_out, k, stride, size, dilation),
        _ => anyhow::bail!("--conv takes C_IN,C_OUT,K,STRIDE,SIZE[,DILATION], got {shape}"),
    };
    if dims.contains(&0) {
        anyhow::bail!("--conv {shape}: every value must be positive");
    }
    let p = ops::Conv2dParams {
        stride,
        padding: dilation * (k / 2),
        dilation,
        ..Default::default()
    };
    let Some((oh, ow)) = p.output_size(size, size, k, k) else {
        anyhow::bail!("--conv {shape}: a {k}x{k} kernel does not fit a {size}x{size} input");
    };
    let device = crate::device::parse(&args.device)?;
    let x = ops::gradcheck::uniform(&[args.batch, c_in, size, size], 1, &device)?;
    let x = candle_core::Var::from_tensor(&x)?;
    let w = ops::gradcheck::uniform(&[c_out, c_in, k, k], 2, &device)?;
    let w = candle_core::Var::from_tensor(&w)?;
    let blocked = if args.blocked {
        let bias = Tensor::zeros(c_out, DType::F32, &device)?;
        let conv = ops::blocked::BlockedConv::new(w.as_tensor(), &bias, p)?;
        Some((conv, ops::blocked::to_blocked(x.as_tensor())?))
    } else {
        None
    };
    let geometry = ConvGeometry::of(x.as_tensor(), w.as_tensor(), p)?;
    let kernel = match &blocked {
        Some((conv, _)) => conv.kernel(args.batch, size, size),
        None => {
            plan::conv(&ConvQuery {
                geometry,
                dtype: x.dtype(),
                target: Target::of(&device),
                needs_grad: args.train,
                residual: false,
                layout: Layout::Nchw,
            })
            .kernel
        }
    };
    let grad_kernel = args.train.then(|| plan::conv_gradients(kernel));
    let run_once = || -> Result<()> {
        if let Some((conv, xb)) = &blocked {
            conv.forward(xb, None, ops::Activation::Relu)?;
            return Ok(());
        }
        let y = ops::conv2d(x.as_tensor(), w.as_tensor(), p)?;
        if args.train {
            // Seeded with a contiguous gradient of ones, as a network's gradients are:
            // `sum_all` would hand the convolution a broadcast one, and its single-threaded
            // copy to contiguous memory took a third of the time measured.
            y.backward()?;
        }
        Ok(())
    };
    run_once()?;
    device.synchronize()?;
    // The mean, and the fastest call: on a shared machine the best is the steadiest figure.
    let (mut total, mut best) = (0.0, f64::INFINITY);
    for _ in 0..args.iters.max(1) {
        let start = Instant::now();
        run_once()?;
        device.synchronize()?;
        let t = start.elapsed().as_secs_f64();
        (total, best) = (total + t, best.min(t));
    }
    let seconds = total / args.iters.max(1) as f64;
    let macs = (args.batch * c_out * oh * ow * c_in * k * k) as f64;
    let passes = if args.train { 3.0 } else { 1.0 };
    match grad_kernel {
        Some(g) => println!("kernel: {kernel} (both gradients: {g})"),
        None => println!("kernel: {kernel}"),
    }
    println!(
        "conv {c_in}->{c_out} {k}x{k}/{stride}{} at {size}x{size}, batch {}{}: {:.1} ms, {:.1} GFLOP/s (best {:.1} ms, {:.1} GFLOP/s)",
        if dilation > 1 {
            format!(" dilation {dilation}")
        } else {
            String::new()
        },
        args.batch,
        if args.train {
            ", forward + both gradients"
        } else if args.blocked {
            ", blocked"
        } else {
            ""
        },
        seconds * 1e3,
        2.0 * macs * passes / seconds / 1e9,
        best * 1e3,
        2.0 * macs * passes / best / 1e9
    );
    Ok(())
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
