//! `tricks predict`: the top classes of a model for each image, with their names,
//! preprocessing each image as the weights' input configuration says.

use std::path::PathBuf;

use anyhow::{bail, Result};
use candle_core::{Device, Tensor, D};
use training::data::pretrained::preprocess;

use crate::weights_ref::WeightsArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub weights: WeightsArgs,
    /// How many classes to print per image.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// Images (JPEG or PNG).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
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
