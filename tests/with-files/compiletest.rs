//! Compile-fail cases of `dnn!` that read files: `#[weights = "..."]` and `onnx("...")`.
//!
//! trybuild builds each case in a crate of its own under the target directory, whose
//! `CARGO_MANIFEST_DIR` is not this one; `DNNFUSION_MANIFEST_DIR`
//! (`dnnfusion_compiler::MANIFEST_DIR_OVERRIDE`) makes the macro resolve the cases'
//! relative paths against this package instead. This test is the only one in its binary,
//! so setting the environment races with nothing.

#[test]
fn ui() {
    std::env::set_var("DNNFUSION_MANIFEST_DIR", env!("CARGO_MANIFEST_DIR"));
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/*.rs");
}
