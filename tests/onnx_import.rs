//! ONNX import end to end: the six ONNX files of `../shared/tools/peers/onnx` (PyTorch
//! exports, opset 17) imported by `dnn!` with `model X = onnx("...")`, their weights
//! loaded with `from_onnx` from the same bytes, and their outputs compared with PyTorch's
//! (`../shared/reference/<model>/output.npy`), plus the texts `dnnfusion import` prints for
//! LeNet, bert_tiny and resnet18 (repeated layers as blocks), compiled as hand-written
//! declarations.
//!
//! Tolerance, as in `reference_models.rs`: max |got - expected| <= 1e-5 * max(1,
//! max |expected|) (fp32 with another summation order; the ONNX files also have batch
//! norm folded into the convolutions by the exporter, another rounding).

mod common;
use dnnfusion::{npy, Model, ModelExt};

mod imported {
    dnnfusion::dnn! {
        pub model Mlp = onnx("../../shared/tools/peers/onnx/mlp.onnx");
        pub model LeNet = onnx("../../shared/tools/peers/onnx/lenet.onnx");
        pub model BertTiny = onnx("../../shared/tools/peers/onnx/bert_tiny.onnx");
        pub model UNetSmall = onnx("../../shared/tools/peers/onnx/unet_small.onnx");
        pub model MobileNetV2 = onnx("../../shared/tools/peers/onnx/mobilenet_v2.onnx");
        pub model ResNet18 = onnx("../../shared/tools/peers/onnx/resnet18.onnx");
        pub model ConstantTensor = onnx("onnx/constant_tensor.onnx");
        pub model ResizeNoShape = onnx("onnx/resize_no_shape.onnx");
        pub model ScalarInitializers = onnx("onnx/scalar_initializers.onnx");
    }
}

/// What `dnnfusion import ../shared/tools/peers/onnx/<model>.onnx --name <Name>` prints
/// for three models (the CLI's tests check that it still does); bert_tiny's two encoder
/// layers and resnet18's two identical first-stage blocks are written as `block`s.
mod from_cli {
    include!("onnx/lenet_cli.rs");
    include!("onnx/bert_tiny_cli.rs");
    include!("onnx/resnet18_cli.rs");
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
    common::assert_matches_reference(
        &format!("{name} (imported ONNX vs torch fp32)"),
        &got,
        &expected,
    )
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
fn the_cli_texts_with_blocks_match_pytorch() {
    let blocked = check("bert_tiny", from_cli::BertTinyFromCli::from_onnx);
    let macro_import = check("bert_tiny", imported::BertTiny::from_onnx);
    assert_eq!(blocked, macro_import, "the same ops in the same order");
    check("resnet18", from_cli::ResNet18FromCli::from_onnx);
    let mut names: Vec<&str> = from_cli::ResNet18FromCli::PARAMS
        .iter()
        .map(|p| p.name)
        .collect();
    let mut expected: Vec<&str> = imported::ResNet18::PARAMS.iter().map(|p| p.name).collect();
    names.sort_unstable();
    expected.sort_unstable();
    assert_eq!(names, expected, "the blocks read the file's keys");
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

/// `tests/onnx/constant_tensor.onnx`: y = (x + c) * d with `c` and `d` float tensors of
/// `Constant` nodes (float_data and raw_data); they are parameters named after the
/// nodes' outputs and `from_onnx` reads them from the nodes.
#[test]
fn constant_tensors_are_parameters_read_from_their_nodes() {
    let names: Vec<&str> = imported::ConstantTensor::PARAMS
        .iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["shift", "scale"]);
    let onnx = read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/onnx/constant_tensor.onnx"
    ));
    let model = imported::ConstantTensor::from_onnx(&onnx).unwrap();
    let x = ndarray::arr2(&[[1.0f32, 2.0, 3.0, 4.0]]).into_dyn();
    let got = model.infer_arrays(&[x.view()]).unwrap().remove(0);
    let want = [
        (1.0 + 0.5) * 2.0,
        (2.0 - 1.0) * 3.0,
        -(3.0 + 2.0),
        (4.0 + 0.25) * 0.5,
    ];
    assert_eq!(got.iter().copied().collect::<Vec<f32>>(), want);
}

/// What loading `scalar_initializers.onnx`'s model from a file whose `alpha` is 1.5 gives.
const ALPHA_RETRAINED: dnnfusion::LoadError = dnnfusion::LoadError::ScalarDiffers {
    tensor: "alpha",
    compiled: 1.25,
    found: 1.5,
};

/// `tests/onnx/scalar_initializers.onnx`: GELU written with one-value float initializers
/// (`x / sqrt2`, `+ one`, `* half`), as `onnx.helper` files write it, then `* alpha`. The
/// importer folds each into the code (`#[scalars(...)]`), so the GELU rule matches, and
/// `from_onnx` checks that the file it loads holds those values: another value or a file
/// without them is an error naming the tensor, never the compiled value used silently.
#[test]
fn one_value_initializers_are_compiled_in_and_checked_at_load() {
    use imported::ScalarInitializers as M;
    assert_eq!(
        M::SCALARS,
        [
            ("sqrt2", std::f32::consts::SQRT_2),
            ("one", 1.0),
            ("half", 0.5),
            ("alpha", 1.25)
        ]
    );
    assert!(M::PARAMS.is_empty());
    let ops: Vec<&str> = M::FUSION_REPORT.block_list.iter().map(|b| b.ops).collect();
    assert_eq!(ops, ["gelu+mul"]);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/onnx");
    let onnx = read(&format!("{dir}/scalar_initializers.onnx"));
    let model = M::from_onnx(&onnx).unwrap();
    let x = npy::read_f32(&read(&format!("{dir}/scalar_initializers_input.npy"))).unwrap();
    // computed by make_models.py in f64 with Python's math.erf; the GELU kernel is within
    // 2e-7 * max(1, |x|) of the exact value (runtime::math::gelu), times alpha 1.25, plus
    // the rounding of the product
    let want = npy::read_f32(&read(&format!("{dir}/scalar_initializers_output.npy"))).unwrap();
    let got = model.infer_arrays(&[x.view()]).unwrap().remove(0);
    for ((g, w), x) in got.iter().zip(&want).zip(&x) {
        assert!(
            (g - w).abs() <= 4e-7 * x.abs().max(1.0),
            "x {x}: got {g}, want {w}"
        );
    }
    // alpha 1.25 (0x3fa00000) is stored once in the file: another value is refused
    let at = onnx
        .windows(4)
        .position(|w| w == 1.25f32.to_le_bytes())
        .unwrap();
    assert_eq!(
        onnx.windows(4)
            .filter(|w| *w == 1.25f32.to_le_bytes())
            .count(),
        1
    );
    let mut retrained = onnx.clone();
    retrained[at..at + 4].copy_from_slice(&1.5f32.to_le_bytes());
    let err = M::from_onnx(&retrained).err().unwrap();
    assert_eq!(err, ALPHA_RETRAINED);
    assert!(err.to_string().contains("import this file again"), "{err}");
    // a file without them
    let other = read(&format!("{dir}/constant_tensor.onnx"));
    let err = M::from_onnx(&other).err().unwrap();
    assert_eq!(err, dnnfusion::LoadError::MissingTensor { tensor: "sqrt2" });
    let mut buffer = vec![0.0f32; 0];
    assert!(M::from_onnx_in(&retrained, &mut buffer).is_err());
}

/// The same model's scalars in a safetensors file (the ONNX initializers saved with their
/// names, as a converter writes them): strict and lenient loads check each one a file
/// holds against the compiled value, so a retrained value is an error in both, never
/// skipped and run with the old one; a file without them loads (the model has them).
#[test]
fn folded_scalars_in_a_safetensors_file_are_checked_too() {
    use dnnfusion::runtime::LoadOptions;
    use imported::ScalarInitializers as M;
    // every scalar as a rank-0 F32 tensor, alpha's value given
    let file = |alpha: f32| {
        let values = [std::f32::consts::SQRT_2, 1.0, 0.5, alpha];
        let entries: Vec<String> = ["sqrt2", "one", "half", "alpha"]
            .iter()
            .enumerate()
            .map(|(i, name)| {
                format!(
                    r#""{name}":{{"dtype":"F32","shape":[],"data_offsets":[{},{}]}}"#,
                    4 * i,
                    4 * i + 4
                )
            })
            .collect();
        let header = format!("{{{}}}", entries.join(","));
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        values.iter().for_each(|v| bytes.extend(v.to_le_bytes()));
        bytes
    };
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/onnx");
    let x = npy::read_f32(&read(&format!("{dir}/scalar_initializers_input.npy"))).unwrap();
    let from_onnx = M::from_onnx(&read(&format!("{dir}/scalar_initializers.onnx"))).unwrap();
    let want = from_onnx.infer_arrays(&[x.view()]).unwrap().remove(0);
    let same = file(1.25);
    for options in [LoadOptions::STRICT, LoadOptions::LENIENT] {
        let (model, report) = dnnfusion::load_safetensors_with::<M>(&same, options).unwrap();
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);
        assert_eq!(model.infer_arrays(&[x.view()]).unwrap().remove(0), want);
        let err = dnnfusion::load_safetensors_with::<M>(&file(1.5), options)
            .err()
            .unwrap();
        assert_eq!(err, ALPHA_RETRAINED);
    }
    assert!(M::from_safetensors(&same).is_ok());
    assert!(M::from_safetensors_in(&file(1.5), &mut []).is_err());
    assert!(M::from_safetensors_in(&same, &mut []).is_ok());
    // no tensor at all: the model's own values
    let empty = [&2u64.to_le_bytes()[..], b"{}"].concat();
    assert!(M::from_safetensors(&empty).is_ok());
}

/// `tests/onnx/resize_no_shape.onnx`: nearest Resize x2 whose output has no shape in
/// the file; the importer takes it from the scales.
#[test]
fn resize_takes_its_output_shape_from_the_scales() {
    let onnx = read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/onnx/resize_no_shape.onnx"
    ));
    let model = imported::ResizeNoShape::from_onnx(&onnx).unwrap();
    let x = ndarray::Array::from_shape_vec(vec![1, 1, 2, 2], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
    let got = model.infer_arrays(&[x.view()]).unwrap().remove(0);
    assert_eq!(got.shape(), [1, 1, 4, 4]);
    let rows: Vec<f32> = got.iter().copied().collect();
    assert_eq!(
        rows,
        [1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.]
    );
}

/// An imported model runs the kernels its `dnn!` declaration runs: the same blocks, each
/// with the same ops (block order may differ). Before the compiler packed a `MatMul` by an
/// initializer and knew the exported GELU, the imported bert_tiny ran its products on
/// weights repacked per call and its GELU as five ops with a scalar erf: 1.4x the
/// declaration's time (`bench` against an imported copy, 2026-12-07).
#[test]
fn imported_models_fuse_like_their_declarations() {
    use dnnfusion::runtime::FusionReport;
    use dnnfusion_models::{reference, torchvision};
    // (`flatten` is the DSL's name of an ONNX `Reshape` to two axes, and mobilenet_v2's
    // `clip`s, between 0 and 6, are `relu6`: the same ops)
    fn blocks(report: &FusionReport) -> Vec<String> {
        let mut ops: Vec<String> = report
            .block_list
            .iter()
            .map(|b| b.ops.replace("flatten", "reshape").replace("clip", "relu6"))
            .collect();
        ops.sort_unstable();
        ops
    }
    let mut mismatched = Vec::new();
    for (imported, declared) in [
        (imported::Mlp::FUSION_REPORT, reference::Mlp::FUSION_REPORT),
        (
            imported::LeNet::FUSION_REPORT,
            reference::LeNet::FUSION_REPORT,
        ),
        (
            imported::BertTiny::FUSION_REPORT,
            reference::BertTiny::FUSION_REPORT,
        ),
        (
            imported::UNetSmall::FUSION_REPORT,
            reference::UNetSmall::FUSION_REPORT,
        ),
        (
            imported::MobileNetV2::FUSION_REPORT,
            torchvision::MobileNetV2::FUSION_REPORT,
        ),
        (
            imported::ResNet18::FUSION_REPORT,
            torchvision::ResNet18::FUSION_REPORT,
        ),
    ] {
        let (got, want) = (blocks(&imported), blocks(&declared));
        if got != want {
            mismatched.push(format!(
                "{}:\n  imported {got:?}\n  declared {want:?}",
                declared.model
            ));
        }
    }
    assert!(mismatched.is_empty(), "{}", mismatched.join("\n"));
}
