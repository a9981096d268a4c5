//! Tests of the ResNet family: zero-γ, pooled features, input sizes, output stride.

use super::*;
use crate::walk::{Act, Eager};
use crate::Classifier;
use candle_core::{DType, Device};
use candle_nn::VarMap;

fn narrow(depth: usize, variant: ResNetVariant) -> ResNetConfig {
    let mut cfg = ResNetConfig::new(depth, variant).unwrap();
    cfg.layers = [1, 2, 1, 1];
    cfg.channels = [4, 8, 8, 16];
    cfg.stem_width = 8;
    cfg.num_classes = 5;
    cfg
}

fn build(cfg: &ResNetConfig) -> (ResNet, VarMap) {
    let vars = VarMap::new();
    let net = ResNet::new(
        cfg,
        VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu),
    )
    .unwrap();
    crate::init::xavier_uniform(&vars, 0).unwrap();
    (net, vars)
}

fn gamma(vars: &VarMap, name: &str) -> Vec<f32> {
    vars.data().lock().unwrap()[name]
        .as_tensor()
        .to_vec1()
        .unwrap()
}

#[test]
fn zero_gamma_zeroes_the_last_bn_of_every_block_only() {
    for (depth, last) in [(50, "bn3"), (18, "bn2")] {
        let mut cfg = narrow(depth, ResNetVariant::D);
        cfg.zero_gamma = true;
        let (_, vars) = build(&cfg);
        let names: Vec<String> = vars.data().lock().unwrap().keys().cloned().collect();
        let mut zeroed = 0;
        for name in names
            .iter()
            .filter(|n| n.ends_with(".weight") && n.contains("bn"))
        {
            let is_last = name.starts_with("layer") && name.ends_with(&format!("{last}.weight"));
            let expected = if is_last { 0.0 } else { 1.0 };
            assert!(gamma(&vars, name).iter().all(|&g| g == expected), "{name}");
            zeroed += usize::from(is_last);
        }
        assert_eq!(zeroed, 5, "one per block");
        // Downsample batch norms keep γ = 1 (only path A's last one is zeroed).
        assert!(gamma(&vars, "layer2.0.downsample.2.weight")
            .iter()
            .all(|&g| g == 1.0));
    }
}

#[test]
fn zero_gamma_blocks_start_as_identity_on_the_residual() -> Result<()> {
    // With γ = 0 at the end of path A, a block without a shortcut conv outputs relu(x).
    let mut cfg = narrow(50, ResNetVariant::B);
    cfg.zero_gamma = true;
    let (net, _) = build(&cfg);
    let block = &net.stages[1][1];
    assert!(block.shortcut.is_none());
    let x = ops::gradcheck::uniform(&[2, 32, 6, 5], 1, &Device::Cpu)?;
    let mut eager = Eager::new(&x, true, false);
    let out = block.walk(&mut eager, &Act::Nchw(x.clone()))?;
    let y = eager.nchw(&out)?;
    assert_eq!(ops::gradcheck::max_abs_diff(&y, &x.relu()?)?, 0.0);
    Ok(())
}

#[test]
fn num_classes_zero_returns_pooled_features() -> Result<()> {
    let mut cfg = narrow(50, ResNetVariant::D);
    cfg.num_classes = 0;
    let (net, vars) = build(&cfg);
    assert!(!vars.data().lock().unwrap().contains_key("fc.weight"));
    let x = ops::gradcheck::uniform(&[3, 3, 40, 36], 2, &Device::Cpu)?;
    assert_eq!(net.forward_t(&x, false)?.dims(), [3, 64]);
    Ok(())
}

#[test]
fn trains_on_the_smallest_and_odd_inputs_and_refuses_smaller() -> Result<()> {
    for variant in [ResNetVariant::Original, ResNetVariant::D] {
        let (net, vars) = build(&narrow(50, variant));
        for (h, w) in [(32, 32), (33, 47)] {
            let x = ops::gradcheck::uniform(&[2, 3, h, w], 3, &Device::Cpu)?;
            let loss = net.forward_t(&x, true)?.sqr()?.mean_all()?;
            let grads = loss.backward()?;
            let conv = vars.data().lock().unwrap()["layer1.0.conv1.weight"].clone();
            assert!(grads.get(conv.as_tensor()).is_some());
        }
        let tiny = ops::gradcheck::uniform(&[1, 3, 31, 64], 3, &Device::Cpu)?;
        let err = net.forward_t(&tiny, false).unwrap_err().to_string();
        assert!(err.contains("at least 32x32"), "{err}");
    }
    Ok(())
}

#[test]
fn output_stride_keeps_resolution_and_feature_shapes() -> Result<()> {
    for (os, sizes) in [(32, [16, 8, 4, 2]), (16, [16, 8, 4, 4]), (8, [16, 8, 8, 8])] {
        let mut cfg = narrow(50, ResNetVariant::D);
        cfg.output_stride = os;
        let (net, _) = build(&cfg);
        let x = ops::gradcheck::uniform(&[1, 3, 64, 64], 4, &Device::Cpu)?;
        let feats = net.forward_features(&x, false)?;
        let got: Vec<usize> = feats.iter().map(|f| f.dims()[2]).collect();
        assert_eq!(got, sizes, "output stride {os}");
    }
    let mut cfg = narrow(50, ResNetVariant::D);
    cfg.output_stride = 4;
    assert!(ResNet::new(&cfg, VarBuilder::zeros(DType::F32, &Device::Cpu)).is_err());
    Ok(())
}
