//! Reading arbitrary bytes never panics: every prefix of the first 4 KB of a real model,
//! and the whole file with bytes overwritten, give a model or an error.

const LENET: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/tools/peers/onnx/lenet.onnx"
);

fn options() -> dnnfusion_onnx::ImportOptions {
    dnnfusion_onnx::ImportOptions {
        name: "M".to_string(),
        public: false,
        pins: Vec::new(),
    }
}

#[test]
fn prefixes_and_garbage_are_errors_not_panics() {
    let bytes = std::fs::read(LENET).unwrap();
    assert!(dnnfusion_onnx::import(&bytes, &options()).is_ok());
    for cut in 0..4096.min(bytes.len()) {
        assert!(
            dnnfusion_onnx::import(&bytes[..cut], &options()).is_err(),
            "prefix of {cut} bytes imported"
        );
    }
    for i in (0..bytes.len()).step_by(61) {
        for v in [0x00u8, 0xff, 0x80, 0x0a] {
            let mut b = bytes.clone();
            b[i] = v;
            let _ = dnnfusion_onnx::import(&b, &options());
        }
    }
    let mut rng = dnnfusion_test_support::Rng::new(11);
    for len in [1usize, 7, 64, 300, 4096] {
        let noise: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        let _ = dnnfusion_onnx::import(&noise, &options());
    }
}
