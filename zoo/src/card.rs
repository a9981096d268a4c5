//! The Hub model card of a zoo entry (`README.md` of the repository `tricks zoo push`
//! writes): YAML front matter the Hub indexes, then usage, metrics, training and input.

use crate::registry::{Entry, Task};

/// How the card presents one task: the Hub's library and pipeline, and the metrics of the
/// model-index (registry key, Hub metric type, display name).
struct TaskCard {
    library: &'static str,
    pipeline: &'static str,
    metrics: &'static [(&'static str, &'static str, &'static str)],
}

fn task_card(task: Task) -> TaskCard {
    match task {
        Task::Classification => TaskCard {
            library: "timm",
            pipeline: "image-classification",
            metrics: &[
                ("top1", "accuracy", "Top-1 accuracy"),
                ("top5", "accuracy", "Top-5 accuracy"),
            ],
        },
        Task::Detection => TaskCard {
            library: "tricks",
            pipeline: "object-detection",
            metrics: &[
                ("map07", "mAP", "VOC2007 11-point mAP"),
                ("map", "mAP", "VOC2010+ area mAP"),
            ],
        },
        Task::Segmentation => TaskCard {
            library: "tricks",
            pipeline: "image-segmentation",
            metrics: &[
                ("pixacc", "accuracy", "Pixel accuracy"),
                ("miou", "mean_iou", "Mean IoU"),
            ],
        },
    }
}

/// The Hub model card: YAML front matter (library, tags, datasets, metrics as a
/// model-index) and a description with the metrics, the recipe and its tricks.
pub fn model_card(e: &Entry, repo: &str) -> String {
    let tc = task_card(e.task);
    let mut card = format!(
        "---\nlibrary_name: {}\npipeline_tag: {}\n",
        tc.library, tc.pipeline
    );
    card.push_str(&format!("license: {}\n", e.license));
    card.push_str(&format!(
        "tags:\n- {}\n- timm\n- tricks\n- bag-of-tricks\n",
        tc.pipeline
    ));
    for t in &e.tricks {
        card.push_str(&format!("- {}\n", t.replace('_', "-")));
    }
    card.push_str(&format!("datasets:\n- {}\nmetrics:\n", e.dataset));
    let mut types: Vec<&str> = tc.metrics.iter().map(|m| m.1).collect();
    types.dedup();
    for t in types {
        card.push_str(&format!("- {t}\n"));
    }
    card.push_str(&format!(
        "model-index:\n- name: {}\n  results:\n  - task:\n      type: {}\n    dataset:\n      name: {}\n      type: {}\n    metrics:\n",
        e.name, tc.pipeline, e.dataset, e.dataset
    ));
    for (key, kind, label) in tc.metrics {
        if let Some(v) = e.metrics.get(*key) {
            card.push_str(&format!(
                "    - type: {kind}\n      name: {label}\n      value: {v:.3}\n"
            ));
        }
    }
    card.push_str("---\n\n");
    card.push_str(&format!("# {}\n\n", e.name));
    match e.task {
        Task::Classification => card.push_str(&format!(
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
        )),
        task => card.push_str(&format!(
            "A {task} model ({} classes, dataset `{}`), version {}, on a `{}` backbone, made with \
             tricks: Section 6 of *Bag of Tricks for Image Classification* (He et al., CVPR 2019) \
             in Rust. The backbone's tensors keep timm's names under `backbone.`; `config.json` \
             describes the heads and the preprocessing.\n\n## Usage\n\n\
             `tricks predict --weights hf:{repo} IMAGE --out DIR` draws the predictions and writes \
             them as JSON. `model.onnx` runs in ONNX Runtime at the input size below.\n\n",
            e.num_classes, e.dataset, e.version, e.architecture
        )),
    }
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
    if e.task.is_classification() {
        card.push_str(&format!(
            "## Input\n\n{}×{} RGB, resized ({}) so the crop keeps {:.3} of the short side, centre-cropped, \
             normalised with mean {:?} and std {:?}.\n\n## Files\n\n`model.safetensors` (timm names), \
             `config.json` (timm `pretrained_cfg`), `model.onnx` (opset 19, input `input`, output `logits`).\n",
            i.size[1], i.size[2], i.interpolation.as_str(), i.crop_pct, i.mean, i.std
        ));
    } else {
        let outputs = match e.task {
            Task::Detection => "outputs `boxes`, `scores`, `labels`",
            _ => "outputs `logits`, `labels`; any input size",
        };
        card.push_str(&format!(
            "## Input\n\nRGB normalised with mean {:?} and std {:?}, resized as `config.json` says; \
             the ONNX graph takes {}×{}.\n\n## Files\n\n`model.safetensors` (backbone in timm's names \
             under `backbone.`, then the heads), `config.json` (task, backbone, classes, head settings), \
             `model.onnx` (opset 19, input `image`; {outputs}).\n",
            i.mean, i.std, i.size[1], i.size[2]
        ));
    }
    card
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{FileEntry, FileRole, InputConfig, Origin, Version};

    fn entry(task: Task, metrics: &[(&str, f64)]) -> Entry {
        Entry {
            name: "resnet10d_tiny.voc".into(),
            version: Version(1, 0, 0),
            task,
            architecture: "resnet10d_tiny".into(),
            dataset: "voc2007".into(),
            num_classes: 20,
            recipe: Some("epochs = 20".into()),
            source: None,
            tricks: vec!["cosine".into()],
            parent: Some("resnet10d_tiny.shapes@1.0.0".into()),
            license: "apache-2.0".into(),
            created: "2026-12-02T00:00:00Z".into(),
            notes: None,
            metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            input: InputConfig::imagenet(224),
            origin: Origin {
                hub: None,
                revision: None,
            },
            files: vec![FileEntry {
                role: FileRole::Safetensors,
                path: "model.safetensors".into(),
                size: None,
                sha256: None,
            }],
        }
    }

    #[test]
    fn a_classifier_card_is_timm_and_a_detector_card_is_object_detection() {
        let c = model_card(&entry(Task::Classification, &[("top1", 71.5)]), "me/c");
        assert!(c.contains("library_name: timm\npipeline_tag: image-classification"));
        assert!(
            c.contains("name: Top-1 accuracy\n      value: 71.500"),
            "{c}"
        );
        assert!(c.contains("timm.create_model(\"hf-hub:me/c\""));
        let d = model_card(
            &entry(Task::Detection, &[("map07", 37.36), ("map", 35.87)]),
            "me/d",
        );
        assert!(d.contains("pipeline_tag: object-detection"), "{d}");
        assert!(d.contains("type: object-detection"));
        assert!(
            d.contains("name: VOC2007 11-point mAP\n      value: 37.360"),
            "{d}"
        );
        assert!(d.contains("name: VOC2010+ area mAP\n      value: 35.870"));
        assert!(d.contains("tricks predict --weights hf:me/d IMAGE --out DIR"));
        assert!(d.contains("outputs `boxes`, `scores`, `labels`"));
        assert!(d.contains("Fine-tuned from `resnet10d_tiny.shapes@1.0.0`"));
        assert!(!d.contains("timm.create_model"), "{d}");
        let s = model_card(
            &entry(Task::Segmentation, &[("pixacc", 86.31), ("miou", 1.86)]),
            "me/s",
        );
        assert!(s.contains("pipeline_tag: image-segmentation"), "{s}");
        assert!(s.contains("name: Mean IoU\n      value: 1.860"), "{s}");
        assert!(s.contains("name: Pixel accuracy\n      value: 86.310"));
        assert!(s.contains("outputs `logits`, `labels`"));
    }
}
