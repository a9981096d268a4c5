//! `tricks predict`'s preprocessing against timm's eval transform (PIL resize with
//! antialiasing, centre crop, normalisation) on generated images, enlarged and shrunk, with
//! both filters. Runs where timm and torch are installed (they are not in CI: too large).

mod support;

use std::process::Command;

use candle_core::{Device, Tensor};
use support::python::python_optional;
use zoo::registry::{InputConfig, Interpolation};

#[test]
fn preprocessing_matches_timms_eval_transform() {
    let Some(python) = python_optional(&["timm", "torch", "PIL", "safetensors"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (w, h) in [(271u32, 183u32), (517, 389)] {
        let path = dir.path().join(format!("img{w}.png"));
        image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x * 255 / w) as u8,
                (y * 255 / h) as u8,
                ((x * 7 + y * 13) % 256) as u8,
            ])
        })
        .save(&path)
        .unwrap();
        for interpolation in [Interpolation::Bilinear, Interpolation::Bicubic] {
            let mut cfg = InputConfig::imagenet(224);
            cfg.interpolation = interpolation;
            let ours = training::data::pretrained::preprocess(&path, &cfg).unwrap();
            let ours = Tensor::from_vec(ours, (3, 224, 224), &Device::Cpu).unwrap();
            let out = dir.path().join("timm.safetensors");
            let script = "import sys\nfrom PIL import Image\nfrom timm.data import create_transform\n\
                          from safetensors.torch import save_file\n\
                          t = create_transform(input_size=(3, 224, 224), interpolation=sys.argv[2], crop_pct=0.875,\n\
                              mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), is_training=False)\n\
                          save_file({'x': t(Image.open(sys.argv[1]).convert('RGB')).contiguous()}, sys.argv[3])";
            let status = Command::new(&python)
                .args([
                    "-c",
                    script,
                    path.to_str().unwrap(),
                    interpolation.as_str(),
                    out.to_str().unwrap(),
                ])
                .status()
                .unwrap();
            assert!(status.success());
            let theirs = candle_core::safetensors::load(&out, &Device::Cpu).unwrap()["x"].clone();
            let diff = (&ours - &theirs).unwrap().abs().unwrap();
            let max = diff.max_all().unwrap().to_scalar::<f32>().unwrap();
            let mean = diff.mean_all().unwrap().to_scalar::<f32>().unwrap();
            // In pixel levels (normalised differences times std times 255). Same sizes, crop
            // and filter; the resamplers themselves (PIL's and the image crate's) differ: by
            // about one level with the bilinear filter, and with bicubic by 0.14 on average
            // but up to 16 on this pattern, whose blue channel has hard 255-to-0 steps where
            // bicubic overshoots.
            let (max_levels, mean_levels) = (max * 0.229 * 255.0, mean * 0.229 * 255.0);
            println!(
                "{w}x{h} {}: max {max_levels:.2} levels, mean {mean_levels:.3} levels",
                interpolation.as_str()
            );
            assert!(
                mean_levels < 0.5 && max_levels < 20.0,
                "{w}x{h} {}: max {max_levels}, mean {mean_levels} levels",
                interpolation.as_str()
            );
        }
    }
}
