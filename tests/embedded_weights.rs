//! `#[weights = "file"]`: weights checked, prepared and compiled in at build time.
//!
//! Each embedded model is checked against PyTorch's output (tolerance
//! `1e-5 * max(1, max |expected|)`, as in reference_models.rs) and against the same
//! declaration loaded at run time from the same file.

mod common;
use dnnfusion::{dnn, npy, Model, ModelExt};
use ndarray::ArrayD;

dnn! {
    /// LeNet-5 (the reference declaration), its weights compiled in.
    #[weights = "../models/reference/lenet/weights.safetensors"]
    pub model LeNet(input: [1, 1, 28, 28]) -> [1, 10] {
        let conv1 = conv2d(input, 6, kernel = 5);
        let p1 = max_pool2d(relu(conv1), 2);
        let conv2 = conv2d(p1, 16, kernel = 5);
        let p2 = max_pool2d(relu(conv2), 2);
        let fc1 = linear(flatten(p2), 120);
        let fc2 = linear(relu(fc1), 84);
        let fc3 = linear(relu(fc2), 10);
        fc3
    }

    /// 3x3 conv without bias, batch norm, ReLU (PyTorch `Sequential` keys 0 and 1).
    block conv_bn_relu(x, channels) {
        #[key = "0"] let conv = conv2d(x, channels, kernel = 3, padding = 1, bias = false);
        #[key = "1"] let bn = batch_norm(conv);
        relu(bn)
    }

    /// Two conv-bn-relu stages, keys `a` and `b`.
    block double_conv(x, channels) {
        let a = conv_bn_relu(x, channels);
        let b = conv_bn_relu(a, channels);
        b
    }

    /// The reference UNet, whose batch norms fold into the convolutions: with embedded
    /// weights the folding runs at compile time.
    #[weights = "../models/reference/unet_small/weights.safetensors"]
    pub model UNetSmall(input: [1, 3, 128, 128]) -> [1, 2, 128, 128] {
        let enc1 = double_conv(input, 16);
        let enc2 = double_conv(max_pool2d(enc1, 2), 32);
        let mid = double_conv(max_pool2d(enc2, 2), 64);
        let up2 = conv_transpose2d(mid, 32, kernel = 2, stride = 2);
        let dec2 = double_conv(concat([up2, enc2], axis = 1), 32);
        let up1 = conv_transpose2d(dec2, 16, kernel = 2, stride = 2);
        let dec1 = double_conv(concat([up1, enc1], axis = 1), 16);
        conv2d(dec1, 2, kernel = 1, key = "head")
    }
}

/// A model in a `static`: nothing runs before `main`, nothing is loaded.
static LENET: LeNet<'static> = LeNet::embedded();

use common::max_abs_diff;

/// Runs `model` on the reference input of `data`; checks it against PyTorch and
/// returns the output.
fn check_against_pytorch<M: Model + ModelExt>(
    model: &M,
    data: &dnnfusion_models::ReferenceData,
) -> ArrayD<f32> {
    let input = npy::read_f32(data.input).unwrap();
    let expected = npy::read_f32(data.output).unwrap();
    let got = model.infer_arrays(&[input.view()]).unwrap().remove(0);
    common::assert_matches_reference(
        &format!("{} (embedded vs torch)", data.name),
        &got,
        &expected,
    );
    got
}

#[test]
fn lenet_with_embedded_weights_matches_pytorch_and_the_loaded_model_bit_for_bit() {
    let data = &dnnfusion_models::LENET_DATA;
    let embedded = check_against_pytorch(&LENET, data);
    assert_eq!(LENET.params().len(), LeNet::RUN_LEN);
    // the same declaration (the zoo's), loaded at run time: LeNet's load-time ops only
    // pack weights, so both buffers hold the same floats
    let loaded = dnnfusion_models::reference::LeNet::from_safetensors(data.weights).unwrap();
    assert_eq!(LENET.params(), loaded.params());
    let at_run_time = loaded
        .infer_arrays(&[npy::read_f32(data.input).unwrap().view()])
        .unwrap()
        .remove(0);
    assert_eq!(embedded, at_run_time);
}

#[test]
fn lenet_runs_from_a_static_on_a_stack_arena_without_allocating() {
    let input = npy::read_f32(dnnfusion_models::LENET_DATA.input).unwrap();
    let expected = npy::read_f32(dnnfusion_models::LENET_DATA.output).unwrap();
    let x: &[f32; 784] = input.as_slice().unwrap().try_into().unwrap();
    let mut logits = [0.0f32; 10];
    let mut arena = [0.0f32; LeNet::ARENA_LEN];
    LENET.run(x, &mut logits, &mut arena);
    let err = max_abs_diff(&logits, expected.as_slice().unwrap());
    assert!(err <= 1e-5 * 16.0, "error {err}");
}

#[test]
fn unet_small_with_batch_norms_folded_at_compile_time_matches_pytorch_and_run_time_folding() {
    let data = &dnnfusion_models::UNET_SMALL_DATA;
    let model = UNetSmall::embedded();
    const {
        assert!(
            UNetSmall::LOADED_LEN < UNetSmall::PARAM_LEN,
            "the test needs load-time ops"
        )
    };
    let embedded = check_against_pytorch(&model, data);
    let loaded = dnnfusion_models::reference::UNetSmall::from_safetensors(data.weights).unwrap();
    assert_eq!(model.params().len(), loaded.params().len());
    // folded in f64 by the interpreter vs in f32 by `prepare`: rounding apart
    let params_err = max_abs_diff(model.params(), loaded.params());
    let scale = loaded.params().iter().fold(1.0f32, |m, v| m.max(v.abs()));
    assert!(
        params_err <= 1e-6 * scale,
        "folded weights differ by {params_err}"
    );
    let at_run_time = check_against_pytorch(&loaded, data);
    let err = max_abs_diff(
        embedded.as_slice().unwrap(),
        at_run_time.as_slice().unwrap(),
    );
    println!("unet_small: max |embedded - folded at run time| = {err:.3e}");
}

#[test]
fn a_file_written_in_declaration_order_is_read_in_place_and_others_are_refused_by_name() {
    let data = &dnnfusion_models::LENET_DATA;
    type Zoo<'p> = dnnfusion_models::reference::LeNet<'p>;
    assert_eq!(
        Zoo::LOADED_LEN,
        Zoo::PARAM_LEN,
        "LeNet has nothing to prepare"
    );
    let mut buffer = vec![0.0; Zoo::PARAM_LEN];
    dnnfusion::runtime::safetensors::load_into(data.weights, Zoo::PARAMS, &mut buffer).unwrap();
    let file = dnnfusion::runtime::safetensors::write_in_order(Zoo::PARAMS, &buffer).unwrap();
    // the data starts 8 + (a multiple of 8) bytes into the file: place the file at a
    // 4-byte aligned address, then one byte further
    let mut room = vec![0u8; file.len() + 4];
    let aligned = (4 - room.as_ptr() as usize % 4) % 4;
    room[aligned..aligned + file.len()].copy_from_slice(&file);
    let bytes = &room[aligned..aligned + file.len()];
    let model = Zoo::from_safetensors_in_place(bytes).unwrap();
    let data_start = file.len() - buffer.len() * 4;
    assert_eq!(
        model.params().as_ptr().cast::<u8>(),
        bytes[data_start..].as_ptr()
    );
    assert_eq!(model.params(), &buffer[..]);
    check_against_pytorch(&model, data);
    // PyTorch's file stores the tensors sorted by name (conv1.bias first), not in
    // declaration order
    let err = Zoo::from_safetensors_in_place(data.weights).unwrap_err();
    assert!(err.to_string().contains("cannot be read in place"), "{err}");
    assert!(err.to_string().contains("tensor `conv1.bias`"), "{err}");
    room.copy_within(aligned..aligned + file.len(), aligned + 1);
    let err =
        Zoo::from_safetensors_in_place(&room[aligned + 1..aligned + 1 + file.len()]).unwrap_err();
    assert!(err.to_string().contains("aligned"), "{err}");
}

dnn! {
    /// GELU written with one-value initializers, imported: the scalars are compiled into
    /// the code (`#[scalars(...)]`), and the compile-time load of the same file checks
    /// them as `from_onnx` does at run time (the model has no other parameter).
    #[weights = "onnx/scalar_initializers.onnx"]
    pub model ScalarInitializers = onnx("onnx/scalar_initializers.onnx");
}

/// The embedded imported model equals the one loaded at run time from the same file, bit
/// for bit (tests/onnx_import.rs checks that one against Python's erf).
#[test]
fn imported_scalars_embedded() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/onnx");
    let bytes = std::fs::read(format!("{dir}/scalar_initializers.onnx")).unwrap();
    let input = std::fs::read(format!("{dir}/scalar_initializers_input.npy")).unwrap();
    let x = npy::read_f32(&input).unwrap();
    let embedded = ScalarInitializers::embedded();
    let loaded = ScalarInitializers::from_onnx(&bytes).unwrap();
    let a = embedded.infer_arrays(&[x.view()]).unwrap().remove(0);
    let b = loaded.infer_arrays(&[x.view()]).unwrap().remove(0);
    assert_eq!(a, b);
    assert_eq!(ScalarInitializers::SCALARS.len(), 4);
}
