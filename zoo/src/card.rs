//! The Hub model card of a zoo entry (`README.md` of the repository `tricks zoo push`
//! writes): YAML front matter the Hub indexes, then usage, metrics, training and input.

use crate::registry::Entry;

/// The Hub model card: YAML front matter (library, tags, datasets, metrics as a
/// model-index) and a description with the metrics, the recipe and its tricks.
pub fn model_card(e: &Entry, repo: &str) -> String {
    let mut card = String::from("---\nlibrary_name: timm\n");
    card.push_str(&format!("license: {}\n", e.license));
    card.push_str("tags:\n- image-classification\n- timm\n- tricks\n- bag-of-tricks\n");
    for t in &e.tricks {
        card.push_str(&format!("- {}\n", t.replace('_', "-")));
    }
    card.push_str(&format!(
        "datasets:\n- {}\nmetrics:\n- accuracy\n",
        e.dataset
    ));
    card.push_str(&format!(
        "model-index:\n- name: {}\n  results:\n  - task:\n      type: image-classification\n    dataset:\n      name: {}\n      type: {}\n    metrics:\n",
        e.name, e.dataset, e.dataset
    ));
    for (key, label) in [("top1", "Top-1 accuracy"), ("top5", "Top-5 accuracy")] {
        if let Some(v) = e.metrics.get(key) {
            card.push_str(&format!(
                "    - type: accuracy\n      name: {label}\n      value: {v:.3}\n"
            ));
        }
    }
    card.push_str("---\n\n");
    card.push_str(&format!("# {}\n\n", e.name));
    card.push_str(&format!(
        "A `{}` image classifier ({} classes, dataset `{}`), version {}, made with tricks: the \
         *Bag of Tricks for Image Classification* (He et al., CVPR 2019) in Rust. Tensor names \
         are timm's.\n\n## Usage\n\n```python\nimport timm\nmodel = timm.create_model(\"hf-hub:{repo}\", pretrained=True)\n```\n\n\
         With a timm that cannot reach the Hub itself, load the downloaded files:\n\n```python\n\
         import json, timm\nfrom huggingface_hub import hf_hub_download\n\
         cfg = json.load(open(hf_hub_download(\"{repo}\", \"config.json\")))\n\
         model = timm.create_model(cfg[\"architecture\"], pretrained=True, num_classes=cfg[\"num_classes\"],\n\
             pretrained_cfg_overlay=dict(cfg[\"pretrained_cfg\"], file=hf_hub_download(\"{repo}\", \"model.safetensors\")))\n```\n\n\
         In Rust: `tricks predict --weights hf:{repo} IMAGE`.\n\n",
        e.architecture, e.num_classes, e.dataset, e.version
    ));
    card.push_str("## Metrics\n\n| metric | value |\n|---|---|\n");
    for (k, v) in &e.metrics {
        card.push_str(&format!("| {k} | {v:.3} |\n"));
    }
    card.push_str("\n## Training\n\n");
    if e.tricks.is_empty() {
        card.push_str("Tricks of the paper used: none (the baseline).\n\n");
    } else {
        card.push_str(&format!(
            "Tricks of the paper used: {}.\n\n",
            e.tricks.join(", ")
        ));
    }
    if let Some(parent) = &e.parent {
        card.push_str(&format!("Fine-tuned from `{parent}`.\n\n"));
    }
    if let Some(recipe) = &e.recipe {
        card.push_str(&format!(
            "Recipe:\n\n```toml\n{}\n```\n\n",
            recipe.trim_end()
        ));
    }
    let i = &e.input;
    card.push_str(&format!(
        "## Input\n\n{}×{} RGB, resized ({}) so the crop keeps {:.3} of the short side, centre-cropped, \
         normalised with mean {:?} and std {:?}.\n\n## Files\n\n`model.safetensors` (timm names), \
         `config.json` (timm `pretrained_cfg`), `model.onnx` (opset 19, input `input`, output `logits`).\n",
        i.size[1], i.size[2], i.interpolation.as_str(), i.crop_pct, i.mean, i.std
    ));
    card
}
