//! Every kind of ONNX import refusal, through the path `dnn!` takes
//! (`dnnfusion_compiler::compile_with` with the macro's importer): the error names the
//! node (its name and op type), the attribute or the dimension and the reason, and points
//! at the `onnx(...)` call. The small files come from `tests/onnx/make_models.py`.
//!
//! The same refusals as rustc shows them (each one's span and text) are trybuild cases in
//! `tests/with-files/ui/onnx-*.rs`; these tests check the messages' every kind and
//! variant without a build per case.

use dnnfusion_compiler::compile_with;

/// The error messages of `source`, a `dnn!` input (paths relative to tests/).
fn errors(source: &str) -> Vec<String> {
    let tokens: proc_macro2::TokenStream = source.parse().unwrap();
    match compile_with(tokens, Some(&dnnfusion_onnx::import_for_macro)) {
        Ok(_) => Vec::new(),
        Err(e) => e.into_iter().map(|m| m.to_string()).collect(),
    }
}

fn one_error(source: &str) -> String {
    let all = errors(source);
    assert_eq!(all.len(), 1, "{all:?}");
    all.into_iter().next().unwrap()
}

#[test]
fn an_unknown_op_is_named_with_its_node() {
    assert_eq!(
        one_error(r#"model M = onnx("onnx/unknown_op.onnx");"#),
        "cannot import `onnx/unknown_op.onnx`: node `pick` (Hardmax): the op is not supported"
    );
}

#[test]
fn an_unsupported_attribute_value_is_named() {
    assert_eq!(
        one_error(r#"model M = onnx("onnx/bad_attribute.onnx");"#),
        "cannot import `onnx/bad_attribute.onnx`: node `act` (Gelu): approximate=\"fast\" is not supported"
    );
}

#[test]
fn an_unpinned_dimension_names_the_input_and_the_dimension() {
    assert_eq!(
        one_error(r#"model M = onnx("onnx/dynamic_dim.onnx");"#),
        "cannot import `onnx/dynamic_dim.onnx`: input `x`: dimension 0 is dynamic (`batch`); pin it to a size, as in `batch = 1`"
    );
    // pinned, it compiles
    assert_eq!(
        errors(r#"model M = onnx("onnx/dynamic_dim.onnx", batch = 3);"#),
        Vec::<String>::new()
    );
    assert_eq!(
        one_error(r#"model M = onnx("onnx/dynamic_dim.onnx", batch = 1, seq = 4);"#),
        "cannot import `onnx/dynamic_dim.onnx`: `seq` is not a dynamic dimension of the graph's inputs"
    );
}

#[test]
fn a_missing_file_is_named() {
    let e = one_error(r#"model M = onnx("onnx/nowhere.onnx");"#);
    assert!(
        e.starts_with("cannot read `onnx/nowhere.onnx` (relative to the crate's Cargo.toml): "),
        "{e}"
    );
}

#[test]
fn a_corrupt_file_is_refused() {
    let e = one_error(r#"model M = onnx("onnx/corrupt.onnx");"#);
    assert!(
        e.starts_with("cannot import `onnx/corrupt.onnx`: the file is not a valid ONNX model (protobuf decoding failed: "),
        "{e}"
    );
}

#[test]
fn every_import_error_of_one_invocation_is_reported() {
    let all = errors(
        r#"model A = onnx("onnx/unknown_op.onnx");
           model B = onnx("onnx/corrupt.onnx");"#,
    );
    assert_eq!(all.len(), 2, "{all:?}");
}
