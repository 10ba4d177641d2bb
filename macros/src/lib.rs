//! The `dnn!` procedural macro. A thin shell: all the work is in `dnnfusion-compiler`;
//! the grammar is documented on the re-export in the `dnnfusion` crate.

use proc_macro::TokenStream;

/// Compiles a network declaration into Rust items. See the `dnnfusion` crate docs.
#[proc_macro]
pub fn dnn(input: TokenStream) -> TokenStream {
    dnnfusion_compiler::expand(input.into()).into()
}
