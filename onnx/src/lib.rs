//! ONNX import for dnnfusion: reads a `.onnx` file and writes the equivalent `dnn!`
//! declaration, which the compiler then compiles like a hand-written one.
//!
//! ```text
//! bytes -> proto (prost) -> import (shapes folded, nodes mapped one by one) -> DSL text
//!                                   \-> map: one node -> DSL statements or a refusal
//! ```
//!
//! - [`proto`]: the part of `onnx.proto` that is read, as hand-written prost messages.
//! - [`map`](mod@map): the per-node mapping (op type, opset, attributes -> DSL), also used
//!   by the conformance crate on ONNX's node tests.
//! - [`import`](mod@import): a whole graph to one `model` declaration.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod fold;
pub mod import;
pub mod map;
pub mod proto;

pub use import::{import, import_model, ImportOptions, Imported};
pub use map::*;

/// The importer `dnn!` uses for `model Name = onnx("file.onnx", batch = 1);` (the macro
/// crate's `onnx` feature): reads the file relative to the declaring crate's
/// `CARGO_MANIFEST_DIR` ([`dnnfusion_compiler::manifest_path`]), imports it, and asks the compiler to track the file.
pub fn import_for_macro(
    request: &dnnfusion_compiler::OnnxRequest<'_>,
) -> Result<dnnfusion_compiler::ImportedSource, String> {
    let path = dnnfusion_compiler::manifest_path(request.path)?;
    let bytes = std::fs::read(&path).map_err(|e| {
        format!(
            "cannot read `{}` (relative to the crate's Cargo.toml): {e}",
            request.path
        )
    })?;
    let options = ImportOptions {
        name: request.name.to_string(),
        public: false,
        pins: request.pins.to_vec(),
    };
    let imported =
        import(&bytes, &options).map_err(|e| format!("cannot import `{}`: {e}", request.path))?;
    Ok(dnnfusion_compiler::ImportedSource {
        dsl: imported.dsl,
        tracked: path.to_str().map(str::to_string),
    })
}
