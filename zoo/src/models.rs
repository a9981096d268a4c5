//! The zoo's model table: names (timm's where timm has one) to architecture configurations.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use crate::inception::{InceptionConfig, InceptionV3};
use crate::init::WeightInit;
use crate::layers::is_buffer;
use crate::mobilenet::{MobileNetConfig, MobileNetV1};
use crate::resnet::{BlockKind, ResNet, ResNetConfig, ResNetVariant, StemKind};
use crate::{Classifier, Result, ZooError};

/// ResNet depths of the paper.
const DEPTHS: [usize; 5] = [18, 34, 50, 101, 152];

/// Name suffixes of the variants, as timm spells them. The original ResNet has no timm name;
/// `_v1` follows GluonCV's `resnet50_v1`, the network the paper calls ResNet.
const VARIANTS: [(&str, ResNetVariant); 5] = [
    ("_v1", ResNetVariant::Original),
    ("", ResNetVariant::B),
    ("c", ResNetVariant::C),
    ("d", ResNetVariant::D),
    ("s", ResNetVariant::S),
];

/// Every model name the zoo knows, in table order.
pub static MODEL_NAMES: std::sync::LazyLock<Vec<String>> =
    std::sync::LazyLock::new(|| ModelSpec::all().into_iter().map(|s| s.name).collect());

/// A named architecture with its configuration and default input size.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// The name `tricks` and the registry use (timm's where timm has one).
    pub name: String,
    /// The architecture and its configuration.
    pub arch: Arch,
    /// Default input (channels, height, width).
    pub input_size: (usize, usize, usize),
}

/// The architecture families of the zoo: the paper's three networks.
#[derive(Debug, Clone, PartialEq)]
pub enum Arch {
    /// A ResNet of the paper's family.
    ResNet(ResNetConfig),
    /// MobileNet v1 at some width.
    MobileNet(MobileNetConfig),
    /// Inception-V3.
    Inception(InceptionConfig),
}

impl Arch {
    /// The family's configuration, through what every family answers.
    pub fn config(&self) -> &dyn ArchConfig {
        match self {
            Arch::ResNet(c) => c,
            Arch::MobileNet(c) => c,
            Arch::Inception(c) => c,
        }
    }

    /// The same, to change.
    pub fn config_mut(&mut self) -> &mut dyn ArchConfig {
        match self {
            Arch::ResNet(c) => c,
            Arch::MobileNet(c) => c,
            Arch::Inception(c) => c,
        }
    }
}

/// What every architecture family's configuration answers, so that [`ModelSpec`] asks
/// instead of matching on the family.
pub trait ArchConfig {
    /// Name prefix of the classifier's tensors (`fc`, `classifier`).
    fn classifier_name(&self) -> &'static str;
    /// Classes of the classifier (0: pooled features).
    fn num_classes(&self) -> usize;
    /// Sets the classes.
    fn set_num_classes(&mut self, n: usize);
    /// Channels of the pooled features.
    fn num_features(&self) -> usize;
    /// Input channels.
    fn in_chans(&self) -> usize;
    /// timm's `first_conv`.
    fn first_conv(&self) -> &'static str;
    /// Zero-γ (Section 3.1); families without residual blocks ignore it.
    fn set_zero_gamma(&mut self, _on: bool) {}
    /// Inception-V3's auxiliary classifier; the other families have none.
    fn set_aux_logits(&mut self, _on: bool) {}
    /// Builds the network, registering its tensors under `vb`.
    fn build(&self, vb: VarBuilder) -> Result<Box<dyn Classifier>>;
}

impl ArchConfig for ResNetConfig {
    fn classifier_name(&self) -> &'static str {
        "fc"
    }
    fn num_classes(&self) -> usize {
        self.num_classes
    }
    fn set_num_classes(&mut self, n: usize) {
        self.num_classes = n;
    }
    fn num_features(&self) -> usize {
        ResNetConfig::num_features(self)
    }
    fn in_chans(&self) -> usize {
        self.in_chans
    }
    fn first_conv(&self) -> &'static str {
        match self.stem {
            StemKind::Plain => "conv1",
            StemKind::Deep => "conv1.0",
        }
    }
    fn set_zero_gamma(&mut self, on: bool) {
        self.zero_gamma = on;
    }
    fn build(&self, vb: VarBuilder) -> Result<Box<dyn Classifier>> {
        Ok(Box::new(ResNet::new(self, vb)?))
    }
}

impl ArchConfig for MobileNetConfig {
    fn classifier_name(&self) -> &'static str {
        "classifier"
    }
    fn num_classes(&self) -> usize {
        self.num_classes
    }
    fn set_num_classes(&mut self, n: usize) {
        self.num_classes = n;
    }
    fn num_features(&self) -> usize {
        MobileNetConfig::num_features(self)
    }
    fn in_chans(&self) -> usize {
        self.in_chans
    }
    fn first_conv(&self) -> &'static str {
        "conv_stem"
    }
    fn build(&self, vb: VarBuilder) -> Result<Box<dyn Classifier>> {
        Ok(Box::new(MobileNetV1::new(self, vb)?))
    }
}

impl ArchConfig for InceptionConfig {
    fn classifier_name(&self) -> &'static str {
        "fc"
    }
    fn num_classes(&self) -> usize {
        self.num_classes
    }
    fn set_num_classes(&mut self, n: usize) {
        self.num_classes = n;
    }
    fn num_features(&self) -> usize {
        crate::inception::NUM_FEATURES
    }
    fn in_chans(&self) -> usize {
        self.in_chans
    }
    fn first_conv(&self) -> &'static str {
        "Conv2d_1a_3x3.conv"
    }
    fn set_aux_logits(&mut self, on: bool) {
        self.aux_logits = on;
    }
    fn build(&self, vb: VarBuilder) -> Result<Box<dyn Classifier>> {
        Ok(Box::new(InceptionV3::new(self, vb)?))
    }
}

/// MobileNet v1 widths: timm's `mobilenetv1_100` and `_125`, and the narrower ones as timm's
/// `channel_multiplier` builds them.
const MOBILENET_WIDTHS: [(&str, f64); 5] = [
    ("025", 0.25),
    ("050", 0.5),
    ("075", 0.75),
    ("100", 1.0),
    ("125", 1.25),
];

impl ModelSpec {
    /// Every model of the zoo. For ResNet-18/34 the original and ResNet-B coincide (their
    /// basic blocks put the stride on the first 3×3 either way), so only the bottleneck
    /// depths get an `_v1` name.
    pub fn all() -> Vec<ModelSpec> {
        let mut specs = Vec::new();
        for depth in DEPTHS {
            for (suffix, variant) in VARIANTS {
                let cfg = ResNetConfig::new(depth, variant).expect("paper depths are valid");
                if variant == ResNetVariant::Original && cfg.block == BlockKind::Basic {
                    continue;
                }
                specs.push(ModelSpec {
                    name: format!("resnet{depth}{suffix}"),
                    arch: Arch::ResNet(cfg),
                    input_size: (3, 224, 224),
                });
            }
        }
        // A narrow ResNet-10-D for quick runs on small images (the demo): one basic block
        // per stage, half the standard widths.
        let mut tiny = ResNetConfig::new(18, ResNetVariant::D).expect("valid");
        tiny.layers = [1, 1, 1, 1];
        tiny.channels = [32, 64, 128, 256];
        tiny.stem_width = 16;
        specs.push(ModelSpec {
            name: "resnet10d_tiny".into(),
            arch: Arch::ResNet(tiny.clone()),
            input_size: (3, 64, 64),
        });
        // Narrower still (an eighth of the standard widths, 78 k parameters): small enough
        // that every tensor of a training run fits in a committed fixture
        // (`tests/train_parity.rs`).
        let mut nano = tiny;
        nano.channels = [8, 16, 32, 64];
        nano.stem_width = 8;
        specs.push(ModelSpec {
            name: "resnet10d_nano".into(),
            arch: Arch::ResNet(nano),
            input_size: (3, 32, 32),
        });
        for (suffix, width) in MOBILENET_WIDTHS {
            specs.push(ModelSpec {
                name: format!("mobilenetv1_{suffix}"),
                arch: Arch::MobileNet(MobileNetConfig::new(width).expect("valid widths")),
                input_size: (3, 224, 224),
            });
        }
        specs.push(ModelSpec {
            name: "inception_v3".into(),
            arch: Arch::Inception(InceptionConfig::default()),
            input_size: (3, 299, 299),
        });
        specs
    }

    /// Name prefix of the classifier's tensors (replaced when fine-tuning on other classes).
    pub fn classifier_name(&self) -> &'static str {
        self.arch.config().classifier_name()
    }

    /// Classes of the classifier (0: pooled features).
    pub fn num_classes(&self) -> usize {
        self.arch.config().num_classes()
    }

    /// Channels of the pooled features.
    pub fn num_features(&self) -> usize {
        self.arch.config().num_features()
    }

    /// Input channels.
    pub fn in_chans(&self) -> usize {
        self.arch.config().in_chans()
    }

    /// Size of the network's output: classes, or features without a classifier.
    pub fn output_dims(&self) -> usize {
        match self.num_classes() {
            0 => self.num_features(),
            n => n,
        }
    }

    /// timm's `first_conv`: the name of the first convolution.
    pub fn first_conv(&self) -> &'static str {
        self.arch.config().first_conv()
    }

    /// The same model with Inception-V3's auxiliary classifier on or off (no effect on the
    /// other families).
    pub fn with_aux_logits(mut self, aux: bool) -> Self {
        self.arch.config_mut().set_aux_logits(aux);
        self
    }

    /// The model shaped like the checkpoint `tensors`: the classifier's size, and whether
    /// it carries an auxiliary classifier.
    pub fn shaped_like(
        self,
        tensors: &std::collections::HashMap<String, candle_core::Tensor>,
    ) -> Self {
        let classes = tensors
            .get(&format!("{}.weight", self.classifier_name()))
            .map_or(0, |t| t.dims()[0]);
        let aux = tensors.contains_key("AuxLogits.fc.weight");
        self.with_num_classes(classes).with_aux_logits(aux)
    }

    /// The model called `name`, or an error listing the known names.
    pub fn find(name: &str) -> Result<ModelSpec> {
        Self::all()
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| ZooError::UnknownModel {
                name: name.to_string(),
                known: MODEL_NAMES.join(", "),
            })
    }

    /// The same model with a classifier for `num_classes` classes (0: pooled features).
    pub fn with_num_classes(mut self, num_classes: usize) -> Self {
        self.arch.config_mut().set_num_classes(num_classes);
        self
    }

    /// The same model with zero-γ initialisation (Section 3.1) switched on or off. Zero-γ
    /// concerns residual blocks: MobileNet v1 and Inception-V3 have none, and are unchanged.
    pub fn with_zero_gamma(mut self, zero_gamma: bool) -> Self {
        self.arch.config_mut().set_zero_gamma(zero_gamma);
        self
    }

    /// Trainable parameters and multiply-accumulates at the default input size, from the
    /// network's structure alone (no initialisation).
    pub fn params_and_macs(&self) -> Result<(usize, u64)> {
        let vars = VarMap::new();
        let net = self.build(VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu))?;
        let (_, h, w) = self.input_size;
        Ok((num_params(&vars), net.macs(h, w)))
    }

    /// Builds the network, registering its tensors under `vb`.
    pub fn build(&self, vb: VarBuilder) -> Result<Box<dyn Classifier>> {
        self.arch.config().build(vb)
    }
}

/// A model with its variables: what `tricks forward`, training and export work on.
pub struct Model {
    /// What was built.
    pub spec: ModelSpec,
    /// The network.
    pub net: Box<dyn Classifier>,
    /// Its parameters and batch-norm buffers, by checkpoint name.
    pub vars: VarMap,
}

impl Model {
    /// Number of trainable parameters (batch-norm buffers excluded).
    pub fn num_params(&self) -> usize {
        num_params(&self.vars)
    }

    /// The network over constant handles to the current weights (no copy), for inference.
    /// Nothing in it records gradients, so Candle keeps no graph of the forward pass (each
    /// activation is freed as soon as the next layer has read it) and the convolutions run
    /// with batch norm, shortcut and activation fused into their epilogues.
    pub fn frozen(&self) -> Result<Box<dyn Classifier>> {
        let tensors: HashMap<String, Tensor> = {
            let vars = self.vars.data().lock().expect("varmap lock poisoned");
            vars.iter()
                .map(|(name, var)| (name.clone(), var.as_tensor().detach()))
                .collect()
        };
        let device = tensors
            .values()
            .next()
            .map_or(Device::Cpu, |t| t.device().clone());
        self.spec
            .build(VarBuilder::from_tensors(tensors, DType::F32, &device))
    }
}

/// Model `name` with the weights of the safetensors file at `path`, for inference: the
/// classifier's size is read from the file (none in the file: pooled features).
pub fn load_pretrained(name: &str, path: &std::path::Path) -> Result<Model> {
    load_pretrained_on(name, path, &Device::Cpu)
}

/// [`load_pretrained`], with the model's variables on `device`.
pub fn load_pretrained_on(name: &str, path: &std::path::Path, device: &Device) -> Result<Model> {
    let tensors = crate::weights::read_tensors(path, &Device::Cpu)?;
    let spec = ModelSpec::find(name)?.shaped_like(&tensors);
    let model = create_model(&spec, device, 0)?;
    crate::weights::load_tensors(&model.vars, tensors, path, &spec.name)?;
    Ok(model)
}

/// Number of trainable parameters in `vars` (batch-norm buffers excluded).
fn num_params(vars: &VarMap) -> usize {
    let vars = vars.data().lock().expect("varmap lock poisoned");
    vars.iter()
        .filter(|(name, _)| !is_buffer(name))
        .map(|(_, v)| v.elem_count())
        .sum()
}

/// Builds model `spec` with freshly initialised f32 variables on `device` (Xavier uniform from
/// `seed`, Section 2.1).
pub fn create_model(spec: &ModelSpec, device: &Device, seed: u64) -> Result<Model> {
    create_model_with(spec, device, seed, WeightInit::Xavier)
}

/// Builds model `spec` with its convolutions initialised by `init`.
pub fn create_model_with(
    spec: &ModelSpec,
    device: &Device,
    seed: u64,
    init: WeightInit,
) -> Result<Model> {
    create_model_in(spec, device, seed, init, DType::F32)
}

/// [`create_model_with`] with its variables in `dtype` (f32, or f64 for runs checked
/// against a reference in f64); the initial values are the same draws either way.
pub fn create_model_in(
    spec: &ModelSpec,
    device: &Device,
    seed: u64,
    init: WeightInit,
    dtype: DType,
) -> Result<Model> {
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, dtype, device);
    let net = spec.build(vb)?;
    crate::init::initialize(&vars, seed, init)?;
    Ok(Model {
        spec: spec.clone(),
        net,
        vars,
    })
}

#[cfg(test)]
pub(crate) mod tests_support {
    /// Sum of absolute differences of two tensors.
    pub fn diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f64 {
        use candle_core::DType;
        (a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frozen network (fused epilogues) computes what the variable one (composed ops,
    /// which record gradients) computes, with batch-norm statistics far from (0, 1).
    #[test]
    fn frozen_network_matches_the_trainable_one() {
        for (name, size) in [
            ("resnet10d_tiny", 37),
            ("resnet18", 64),
            ("mobilenetv1_025", 48),
            ("inception_v3", 107),
        ] {
            let spec = ModelSpec::find(name).unwrap();
            let model = create_model(&spec, &Device::Cpu, 3).unwrap();
            for (i, (var_name, var)) in model.vars.data().lock().unwrap().iter().enumerate() {
                let seed = 1000 + i as u64;
                let noise = ops::gradcheck::uniform(var.dims(), seed, &Device::Cpu).unwrap();
                if var_name.ends_with("running_var") {
                    var.set(&(noise.abs().unwrap() + 0.5).unwrap()).unwrap();
                } else if var_name.ends_with("running_mean") || var_name.ends_with(".bias") {
                    var.set(&(noise * 0.3).unwrap()).unwrap();
                }
            }
            let x = ops::gradcheck::uniform(&[2, 3, size, size], 7, &Device::Cpu).unwrap();
            let expected = model.net.forward_t(&x, false).unwrap();
            let frozen = model.frozen().unwrap().forward_t(&x, false).unwrap();
            let scale = tests_support::diff(&expected, &expected.zeros_like().unwrap());
            let err = tests_support::diff(&frozen, &expected);
            assert!(err <= 1e-5 * scale, "{name}: {err} vs {scale}");
        }
    }

    fn stats(name: &str) -> (f64, f64) {
        let spec = ModelSpec::find(name).unwrap();
        let model = create_model(&spec, &Device::Cpu, 0).unwrap();
        let (_, h, w) = spec.input_size;
        (
            model.num_params() as f64 / 1e6,
            model.net.macs(h, w) as f64 / 1e9,
        )
    }

    #[test]
    fn resnet50_matches_published_size_and_cost() {
        // timm: resnet50 25.56 M params, 4.11 GMACs; resnet50d 25.58 M, 4.35 GMACs. We count
        // convolutions, batch norm (one per element) and the classifier; the paper's Table 5
        // rounds the same totals to 4.1 and 4.3 GFLOPs.
        let (p, g) = stats("resnet50");
        assert!((p - 25.557).abs() < 0.001, "{p}");
        assert!((g - 4.10).abs() < 0.005, "{g}");
        let (p, g) = stats("resnet50d");
        assert!((p - 25.577).abs() < 0.001, "{p}");
        assert!((g - 4.35).abs() < 0.01, "{g}");
        let (p, g) = stats("resnet18");
        assert!((p - 11.690).abs() < 0.001, "{p}");
        assert!((g - 1.82).abs() < 0.01, "{g}");
    }

    #[test]
    fn unknown_model_lists_known_ones() {
        let err = ModelSpec::find("resnet51").unwrap_err().to_string();
        assert!(
            err.contains("resnet51") && err.contains("resnet50d"),
            "{err}"
        );
    }

    #[test]
    fn table_has_every_depth_and_variant() {
        assert!(MODEL_NAMES.contains(&"resnet152s".to_string()));
        assert!(MODEL_NAMES.contains(&"resnet101_v1".to_string()));
        assert!(!MODEL_NAMES.contains(&"resnet18_v1".to_string()));
        assert!(MODEL_NAMES.contains(&"mobilenetv1_025".to_string()));
        assert!(MODEL_NAMES.contains(&"inception_v3".to_string()));
        // 23 ResNets, resnet10d_tiny and _nano, 5 MobileNet widths, Inception-V3.
        assert_eq!(MODEL_NAMES.len(), 5 * 5 - 2 + 2 + 5 + 1);
    }
}

#[cfg(test)]
mod pool_size_tests {
    use super::*;

    #[test]
    fn feature_size_is_timms_pool_size() {
        for (name, size, expected) in [
            ("resnet50d", 224, 7),
            ("resnet50d", 193, 7),
            ("mobilenetv1_100", 224, 7),
            ("inception_v3", 299, 8),
            ("inception_v3", 311, 8),
            ("inception_v3", 331, 9),
        ] {
            let model = create_model(&ModelSpec::find(name).unwrap(), &Device::Cpu, 0).unwrap();
            assert_eq!(
                model.net.feature_size(size, size),
                (expected, expected),
                "{name} at {size}"
            );
        }
    }
}
