//! The four reference models, declared with `dnn!` and loaded from PyTorch's safetensors,
//! against PyTorch's outputs (and the reference interpreter on the same graph).
//!
//! Tolerance (from `models/reference/README`-style guidance of the data's authors): the
//! max absolute error must stay within `1e-5 * max(1, max |expected|)`, which allows
//! fp32 implementations with a different summation order.

mod common;
use dnnfusion::{npy, Model, ModelExt};
use dnnfusion_compiler::{interp, lower_str};
use dnnfusion_models::{reference, ReferenceData};
use ndarray::{ArrayD, IxDyn};

fn tolerance(expected: &ArrayD<f32>) -> f32 {
    common::reference_tolerance(expected.as_slice().unwrap())
}

fn max_abs_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    common::max_abs_diff(a.as_slice().unwrap(), b.as_slice().unwrap())
}

/// Runs the generated model on the reference input and checks it against PyTorch (fp32)
/// and the float64 reference.
fn check_against_pytorch<M: Model + ModelExt>(model: &M, data: &ReferenceData) -> ArrayD<f32> {
    let input = npy::read_f32(data.input).unwrap();
    let expected = npy::read_f32(data.output).unwrap();
    let exact = npy::read_f32(data.output_fp64).unwrap();
    let outputs = model.infer_arrays(&[input.view()]).unwrap();
    let got = &outputs[0];
    let tol = tolerance(&expected);
    let err = max_abs_diff(got, &expected);
    let err64 = max_abs_diff(got, &exact);
    println!(
        "{}: max |dnnfusion - torch fp32| = {err:.3e}, vs fp64 = {err64:.3e}, tolerance {tol:.3e}",
        data.name
    );
    assert!(err <= tol, "{}: error {err} above {tol}", data.name);
    assert!(
        err64 <= tol,
        "{}: error vs fp64 {err64} above {tol}",
        data.name
    );
    got.clone()
}

/// The loaded parameters of `M` read from the reference weights, in declaration order
/// (what the interpreter takes; the model's own buffer is compacted once prepared).
fn loaded<M: Model>(data: &ReferenceData) -> Vec<f32> {
    let mut buffer = vec![0.0; M::PARAM_LEN];
    dnnfusion::runtime::safetensors::load_into(data.weights, M::PARAMS, &mut buffer).unwrap();
    buffer.truncate(M::LOADED_LEN);
    buffer
}

/// Evaluates the same declaration with the reference interpreter, on the same weights.
fn interpret(model_name: &str, data: &ReferenceData, params: &[f32]) -> ArrayD<f32> {
    let models = lower_str(reference::SOURCE).unwrap();
    let model = models.iter().find(|m| m.name == model_name).unwrap();
    let graph = &model.graph;
    let mut offset = 0;
    let param_arrays: Vec<ArrayD<f32>> = graph
        .params
        .iter()
        .map(|p| {
            let len: usize = p.shape.iter().product();
            let a = ArrayD::from_shape_vec(IxDyn(&p.shape), params[offset..offset + len].to_vec())
                .unwrap();
            offset += len;
            a
        })
        .collect();
    let input = npy::read_f32(data.input).unwrap();
    let mut out = interp::interpret(graph, &[input], &param_arrays).unwrap();
    out.remove(0)
}

fn check<M: Model + ModelExt>(model: M, params: &[f32], name: &str, data: &ReferenceData) {
    let got = check_against_pytorch(&model, data);
    let expected = npy::read_f32(data.output).unwrap();
    let reference = interpret(name, data, params);
    let err = max_abs_diff(&got, &reference);
    let tol = tolerance(&expected);
    println!("{}: max |dnnfusion - interpreter| = {err:.3e}", data.name);
    assert!(
        err <= tol,
        "{}: generated code differs from the interpreter by {err}",
        data.name
    );
    let interp_err = max_abs_diff(&reference, &expected);
    assert!(
        interp_err <= tol,
        "{}: the interpreter differs from PyTorch by {interp_err}",
        data.name
    );
}

#[test]
fn mlp_matches_pytorch() {
    let data = &dnnfusion_models::MLP_DATA;
    let model = reference::Mlp::from_safetensors(data.weights).unwrap();
    let params = loaded::<reference::Mlp>(data);
    check(model, &params, "Mlp", data);
}

#[test]
fn lenet_matches_pytorch() {
    let data = &dnnfusion_models::LENET_DATA;
    let model = reference::LeNet::from_safetensors(data.weights).unwrap();
    let params = loaded::<reference::LeNet>(data);
    check(model, &params, "LeNet", data);
}

#[test]
fn bert_tiny_matches_pytorch() {
    let data = &dnnfusion_models::BERT_TINY_DATA;
    let model = reference::BertTiny::from_safetensors(data.weights).unwrap();
    let params = loaded::<reference::BertTiny>(data);
    check(model, &params, "BertTiny", data);
}

#[test]
fn unet_small_matches_pytorch() {
    let data = &dnnfusion_models::UNET_SMALL_DATA;
    let model = reference::UNetSmall::from_safetensors(data.weights).unwrap();
    let params = loaded::<reference::UNetSmall>(data);
    check(model, &params, "UNetSmall", data);
}

#[test]
fn weights_of_another_model_are_refused_by_name() {
    let err = reference::LeNet::from_safetensors(dnnfusion_models::MLP_DATA.weights).unwrap_err();
    assert!(
        err.to_string().contains("conv1.bias") || err.to_string().contains("fc1"),
        "{err}"
    );
}

#[test]
fn unfused_models_match_pytorch_too() {
    use dnnfusion_models::reference::unfused;
    let data = &dnnfusion_models::LENET_DATA;
    check_against_pytorch(
        &unfused::LeNet::from_safetensors(data.weights).unwrap(),
        data,
    );
    let data = &dnnfusion_models::MLP_DATA;
    check_against_pytorch(&unfused::Mlp::from_safetensors(data.weights).unwrap(), data);
    let data = &dnnfusion_models::BERT_TINY_DATA;
    check_against_pytorch(
        &unfused::BertTiny::from_safetensors(data.weights).unwrap(),
        data,
    );
    let data = &dnnfusion_models::UNET_SMALL_DATA;
    check_against_pytorch(
        &unfused::UNetSmall::from_safetensors(data.weights).unwrap(),
        data,
    );
}

/// The zoo with the value-changing rules on too (`#![rewrite(fast_math)]`).
use dnnfusion_models::reference::fast_math;

#[test]
fn fast_math_models_match_pytorch_too() {
    let data = &dnnfusion_models::MLP_DATA;
    check_against_pytorch(
        &fast_math::Mlp::from_safetensors(data.weights).unwrap(),
        data,
    );
    let data = &dnnfusion_models::LENET_DATA;
    check_against_pytorch(
        &fast_math::LeNet::from_safetensors(data.weights).unwrap(),
        data,
    );
    let data = &dnnfusion_models::BERT_TINY_DATA;
    check_against_pytorch(
        &fast_math::BertTiny::from_safetensors(data.weights).unwrap(),
        data,
    );
}

/// By default (the fold is exact for `eps > 0`), every batch norm of unet_small folds into
/// the convolution before it, and the model still matches PyTorch.
#[test]
fn batch_norm_folded_into_convs_still_matches_pytorch() {
    let report = reference::UNetSmall::FUSION_REPORT;
    let folds = report
        .rewrites
        .iter()
        .filter(|r| **r == "folding_batch_norm_into_conv_positive_eps")
        .count();
    assert_eq!(folds, 10, "{:?}", report.rewrites);
    assert!(!report
        .block_list
        .iter()
        .any(|b| b.ops.contains("batch_norm")));
    // the folded weights are computed once, when the weights load: per conv, the scale
    // (add, rsqrt, mul and its reshape), the scaled weight, and the bias (sub, mul, add);
    // and the weights of 9 convolutions laid out in tiles or transformed for Winograd:
    // the 7 of 4096 weights or more and the two 16 -> 16 on 128x128 maps
    assert_eq!(report.ops_at_load, 10 * 7 + 9, "{report:?}");
    const { assert!(reference::UNetSmall::PARAM_LEN > reference::UNetSmall::LOADED_LEN) };
    assert_eq!(
        reference::UNetSmall::LOADED_LEN,
        fast_math::UNetSmall::LOADED_LEN
    );
    let data = &dnnfusion_models::UNET_SMALL_DATA;
    check_against_pytorch(
        &reference::UNetSmall::from_safetensors(data.weights).unwrap(),
        data,
    );
}

/// torchvision's resnet18 and mobilenet_v2 (`dnnfusion_models::torchvision`), fused and
/// with fusion off, on the torchvision checkpoints of `../shared/reference/<name>/`,
/// against PyTorch's float32 and float64 outputs. Tolerance: `1e-5 * max(1, max
/// |expected|)`, as for the other reference models (measured on 2026-12-02: 2.7e-6 on
/// resnet18, 3.2e-6 on mobilenet_v2; PyTorch's own fp32 output is 1.5e-6 from its fp64
/// one on resnet18).
mod torchvision {
    use super::*;
    use dnnfusion_models::torchvision::{self as tv, reference_dir};

    fn read(name: &str, file: &str) -> Vec<u8> {
        let path = reference_dir(name).join(file);
        std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; the reference data live in ../shared/reference beside the repository",
                path.display()
            )
        })
    }

    fn check_model<M: Model + ModelExt>(name: &str, model: &M) {
        let input = npy::read_f32(&read(name, "input.npy")).unwrap();
        let got = model.infer_arrays(&[input.view()]).unwrap().remove(0);
        for file in ["output.npy", "output_fp64.npy"] {
            let expected = npy::read_f32(&read(name, file)).unwrap();
            let tol = 1e-5 * expected.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let err = max_abs_diff(&got, &expected);
            println!("{name}: max |dnnfusion - torch {file}| = {err:.3e}, tolerance {tol:.3e}");
            assert!(err <= tol, "{name}: error {err} against {file} above {tol}");
        }
    }

    #[test]
    fn resnet18_matches_pytorch() {
        let weights = read("resnet18", "weights.safetensors");
        check_model(
            "resnet18",
            &tv::ResNet18::from_safetensors(&weights).unwrap(),
        );
        check_model(
            "resnet18",
            &tv::unfused::ResNet18::from_safetensors(&weights).unwrap(),
        );
    }

    /// Every batch norm of both networks (eps 1e-5) folds into the convolution before it,
    /// as PyTorch's ONNX exporter folds them: no block applies one per element.
    #[test]
    fn torchvision_batch_norms_fold_into_their_convolutions() {
        for (report, batch_norms) in [
            (tv::ResNet18::FUSION_REPORT, 20),
            (tv::MobileNetV2::FUSION_REPORT, 52),
        ] {
            let folds = report
                .rewrites
                .iter()
                .filter(|r| **r == "folding_batch_norm_into_conv_positive_eps")
                .count();
            assert_eq!(
                folds, batch_norms,
                "{}: {:?}",
                report.model, report.rewrites
            );
            assert!(
                !report
                    .block_list
                    .iter()
                    .any(|b| b.ops.contains("batch_norm")),
                "{}",
                report.model
            );
        }
    }

    #[test]
    fn mobilenet_v2_matches_pytorch() {
        let weights = read("mobilenet_v2", "weights.safetensors");
        check_model(
            "mobilenet_v2",
            &tv::MobileNetV2::from_safetensors(&weights).unwrap(),
        );
        check_model(
            "mobilenet_v2",
            &tv::unfused::MobileNetV2::from_safetensors(&weights).unwrap(),
        );
    }
}

#[test]
fn run_observed_reports_each_block_once_in_order_with_the_same_output() {
    // unet_small: its concatenations are stored in place (listed blocks that run no code,
    // observed all the same)
    let data = &dnnfusion_models::UNET_SMALL_DATA;
    let model = reference::UNetSmall::from_safetensors(data.weights).unwrap();
    let input: Vec<f32> = npy::read_f32(data.input).unwrap().iter().copied().collect();
    let output_len: usize = reference::UNetSmall::OUTPUT_SHAPES[0].iter().product();
    let mut arena = vec![0.0; reference::UNetSmall::ARENA_LEN];
    let (mut plain, mut observed_out) = (vec![0.0; output_len], vec![0.0; output_len]);
    model
        .run_slices(&[&input], &mut [&mut plain], &mut arena)
        .unwrap();
    let mut seen = Vec::new();
    model
        .run_slices_observed(&[&input], &mut [&mut observed_out], &mut arena, &mut |k| {
            seen.push(k)
        })
        .unwrap();
    let blocks = reference::UNetSmall::FUSION_REPORT.block_list.len();
    assert!(blocks > 10);
    assert_eq!(seen, (0..blocks).collect::<Vec<_>>());
    assert_eq!(
        plain.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        observed_out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    // lenet without fusion: one block per op but its flatten, which aliases its operand
    // (runs no code, not listed): still one call per listed block
    use reference::unfused::LeNet;
    let model = LeNet::from_safetensors(dnnfusion_models::LENET_DATA.weights).unwrap();
    let input = vec![0.5; 784];
    let (mut out, mut arena) = (vec![0.0; 10], vec![0.0; LeNet::ARENA_LEN]);
    let mut seen = Vec::new();
    model
        .run_slices_observed(&[&input], &mut [&mut out], &mut arena, &mut |k| {
            seen.push(k)
        })
        .unwrap();
    let blocks = LeNet::FUSION_REPORT.block_list.len();
    assert_eq!(blocks, LeNet::OP_COUNT - 1);
    assert_eq!(seen, (0..blocks).collect::<Vec<_>>());
}
