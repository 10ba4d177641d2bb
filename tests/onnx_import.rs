//! ONNX import end to end: the six ONNX files of `../shared/tools/peers/onnx` (PyTorch
//! exports, opset 17) imported by `dnn!` with `model X = onnx("...")`, their weights
//! loaded with `from_onnx` from the same bytes, and their outputs compared with PyTorch's
//! (`../shared/reference/<model>/output.npy`), plus the text `dnnfusion import` prints for
//! LeNet pasted below and compiled as a hand-written declaration.
//!
//! Tolerance, as in `reference_models.rs`: max |got - expected| <= 1e-5 * max(1,
//! max |expected|) (fp32 with another summation order; the ONNX files also have batch
//! norm folded into the convolutions by the exporter, another rounding).

use dnnfusion::{npy, Model, ModelExt};

mod imported {
    dnnfusion::dnn! {
        pub model Mlp = onnx("../../shared/tools/peers/onnx/mlp.onnx");
        pub model LeNet = onnx("../../shared/tools/peers/onnx/lenet.onnx");
        pub model BertTiny = onnx("../../shared/tools/peers/onnx/bert_tiny.onnx");
        pub model UNetSmall = onnx("../../shared/tools/peers/onnx/unet_small.onnx");
        pub model MobileNetV2 = onnx("../../shared/tools/peers/onnx/mobilenet_v2.onnx");
        pub model ResNet18 = onnx("../../shared/tools/peers/onnx/resnet18.onnx");
    }
}

/// What `dnnfusion import ../shared/tools/peers/onnx/lenet.onnx --name LenetFromCli`
/// prints (the CLI's tests check that it still does).
mod from_cli {
    include!("onnx/lenet_cli.rs");
}

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared");

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Loads the weights from the .onnx file, runs the reference input, returns the max
/// abs error against PyTorch's output after checking it against the tolerance.
fn check<M: Model + ModelExt>(
    name: &str,
    load: fn(&[u8]) -> Result<M, dnnfusion::LoadError>,
) -> f32 {
    let onnx = read(&format!("{SHARED}/tools/peers/onnx/{name}.onnx"));
    let model = load(&onnx).unwrap_or_else(|e| panic!("{name}: {e}"));
    let input = npy::read_f32(&read(&format!("{SHARED}/reference/{name}/input.npy"))).unwrap();
    let expected = npy::read_f32(&read(&format!("{SHARED}/reference/{name}/output.npy"))).unwrap();
    let got = model.infer_arrays(&[input.view()]).unwrap().remove(0);
    assert_eq!(got.shape(), expected.shape(), "{name}");
    let err = got
        .iter()
        .zip(expected.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let tol = 1e-5 * expected.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    println!("{name}: max |imported ONNX - torch fp32| = {err:.3e} (tolerance {tol:.3e})");
    assert!(err <= tol, "{name}: error {err:.3e} above {tol:.3e}");
    err
}

#[test]
fn mlp_matches_pytorch() {
    check("mlp", imported::Mlp::from_onnx);
}

#[test]
fn lenet_matches_pytorch() {
    check("lenet", imported::LeNet::from_onnx);
}

#[test]
fn bert_tiny_matches_pytorch() {
    check("bert_tiny", imported::BertTiny::from_onnx);
}

#[test]
fn unet_small_matches_pytorch() {
    check("unet_small", imported::UNetSmall::from_onnx);
}

#[test]
fn mobilenet_v2_matches_pytorch() {
    check("mobilenet_v2", imported::MobileNetV2::from_onnx);
}

#[test]
fn resnet18_matches_pytorch() {
    check("resnet18", imported::ResNet18::from_onnx);
}

#[test]
fn the_cli_text_compiles_to_the_same_model() {
    let err = check("lenet", from_cli::LenetFromCli::from_onnx);
    let again = check("lenet", imported::LeNet::from_onnx);
    assert_eq!(err, again, "the CLI's text and the macro's import differ");
    assert_eq!(
        from_cli::LenetFromCli::PARAMS,
        imported::LeNet::PARAMS,
        "same parameters, same layout"
    );
}

#[test]
fn parameters_are_the_initializers() {
    let names: Vec<&str> = imported::ResNet18::PARAMS.iter().map(|p| p.name).collect();
    assert!(names.contains(&"onnx::Conv_193"), "{names:?}");
    assert!(names.contains(&"fc.weight"), "{names:?}");
}

#[test]
fn weights_of_another_model_are_refused_by_name() {
    let onnx = read(&format!("{SHARED}/tools/peers/onnx/lenet.onnx"));
    let err = imported::Mlp::from_onnx(&onnx).unwrap_err().to_string();
    assert!(err.contains("fc1.weight"), "{err}");
}

#[test]
fn corrupt_weights_are_an_error_never_a_panic() {
    let onnx = read(&format!("{SHARED}/tools/peers/onnx/lenet.onnx"));
    // every prefix of the first 4 KB, then a flipped byte every 97 bytes
    for cut in 0..4096.min(onnx.len()) {
        assert!(
            imported::LeNet::from_onnx(&onnx[..cut]).is_err(),
            "prefix {cut}"
        );
    }
    for i in (0..onnx.len()).step_by(97) {
        let mut bytes = onnx.clone();
        bytes[i] ^= 0x5a;
        let _ = imported::LeNet::from_onnx(&bytes);
    }
}
