//! The `dnn!` procedural macro. A thin shell: all the work is in `dnnfusion-compiler`;
//! the grammar is documented on the re-export in the `dnnfusion` crate. With the `onnx`
//! feature it also hands `model Name = onnx("file.onnx")` declarations to
//! `dnnfusion-onnx`.

use proc_macro::TokenStream;

/// Compiles a network declaration into Rust items. See the `dnnfusion` crate docs.
#[proc_macro]
pub fn dnn(input: TokenStream) -> TokenStream {
    #[cfg(feature = "onnx")]
    let importer: Option<dnnfusion_compiler::OnnxImporter<'_>> = Some(&import_onnx);
    #[cfg(not(feature = "onnx"))]
    let importer: Option<dnnfusion_compiler::OnnxImporter<'_>> = None;
    dnnfusion_compiler::expand_with(input.into(), importer).into()
}

/// Reads the file (relative to the declaring crate's `CARGO_MANIFEST_DIR`) and imports it.
#[cfg(feature = "onnx")]
fn import_onnx(
    request: &dnnfusion_compiler::OnnxRequest<'_>,
) -> Result<dnnfusion_compiler::ImportedSource, String> {
    let dir = std::env::var("CARGO_MANIFEST_DIR").map_err(|_| {
        "CARGO_MANIFEST_DIR is not set: `onnx(...)` paths are relative to the crate's Cargo.toml, so the crate must be built by cargo".to_string()
    })?;
    let path = std::path::Path::new(&dir).join(request.path);
    let bytes = std::fs::read(&path).map_err(|e| {
        format!(
            "cannot read `{}` (relative to the crate's Cargo.toml): {e}",
            request.path
        )
    })?;
    let options = dnnfusion_onnx::ImportOptions {
        name: request.name.to_string(),
        public: false,
        pins: request.pins.to_vec(),
    };
    let imported = dnnfusion_onnx::import(&bytes, &options)
        .map_err(|e| format!("cannot import `{}`: {e}", request.path))?;
    Ok(dnnfusion_compiler::ImportedSource {
        dsl: imported.dsl,
        tracked: path.to_str().map(str::to_string),
    })
}
