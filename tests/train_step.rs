//! One full-size ResNet-50-D training step on CPU: forward in training mode, cross-entropy,
//! backward through every custom op, NAG update. It must run and move the weights.

use candle_core::{DType, Device, Tensor};
use training::optim::NagConfig;
use training::step::TrainStep;
use zoo::models::{create_model, ModelSpec};

fn snapshot(model: &zoo::models::Model, name: &str) -> Vec<f32> {
    let vars = model.vars.data().lock().unwrap();
    vars[name]
        .as_tensor()
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn resnet50d_training_step_changes_the_weights() {
    let spec = ModelSpec::find("resnet50d").unwrap();
    let model = create_model(&spec, &Device::Cpu, 0).unwrap();
    let images = ops::gradcheck::uniform(&[2, 3, 224, 224], 5, &Device::Cpu).unwrap();
    let labels = Tensor::new(&[3u32, 917], &Device::Cpu).unwrap();
    let watched = [
        "conv1.0.weight",
        "layer1.0.downsample.1.weight",
        "layer4.2.bn3.bias",
        "fc.weight",
    ];
    let before: Vec<_> = watched.iter().map(|n| snapshot(&model, n)).collect();
    let running_before = snapshot(&model, "bn1.running_mean");

    let mut step = TrainStep::new(model.net.as_ref(), &model.vars, NagConfig::default());
    let loss = step.step(&images, &labels, 0.1).unwrap();
    // Xavier-initialised logits are near zero: the loss starts near ln(1000).
    assert!(
        loss.is_finite() && (loss - 1000f32.ln()).abs() < 2.0,
        "loss {loss}"
    );

    for (name, old) in watched.iter().zip(&before) {
        let new = snapshot(&model, name);
        assert!(
            new.iter().zip(old).any(|(a, b)| a != b),
            "{name} did not move"
        );
    }
    assert_ne!(snapshot(&model, "bn1.running_mean"), running_before);
}
