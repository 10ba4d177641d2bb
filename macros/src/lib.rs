//! The `dnn!` procedural macro. A thin shell: all the work is in `dnnfusion-compiler`;
//! the grammar is documented on the re-export in the `dnnfusion` crate. With the `onnx`
//! feature it also hands `model Name = onnx("file.onnx")` declarations to
//! `dnnfusion-onnx`.

use proc_macro::TokenStream;

/// Compiles a network declaration into Rust items. See the `dnnfusion` crate docs.
#[proc_macro]
pub fn dnn(input: TokenStream) -> TokenStream {
    #[cfg(feature = "onnx")]
    let importer: Option<dnnfusion_compiler::OnnxImporter<'_>> =
        Some(&dnnfusion_onnx::import_for_macro);
    #[cfg(not(feature = "onnx"))]
    let importer: Option<dnnfusion_compiler::OnnxImporter<'_>> = None;
    dnnfusion_compiler::expand_with(input.into(), importer).into()
}
