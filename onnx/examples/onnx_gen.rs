//! Writes `conformance/src/generated.rs`: one `dnn!` model per ONNX node test that the
//! ONNX mapping (`dnnfusion_onnx`) supports.
//!
//! `cargo run -p dnnfusion-onnx --example onnx_gen`
//!
//! The generator lives outside the conformance crate (it includes that crate's case
//! reader and generator with `#[path]`), so it runs even when the committed file is
//! stale or does not compile.

#[path = "../../conformance/src/cases.rs"]
#[allow(dead_code)]
mod cases;
#[path = "../../conformance/src/gen.rs"]
mod gen;

use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("conformance");
    let text = match gen::generate(&root.join("onnx-node")) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1)
        }
    };
    let path = root.join("src").join("generated.rs");
    if let Err(e) = std::fs::write(&path, text) {
        eprintln!("error: cannot write {}: {e}", path.display());
        std::process::exit(1)
    }
    eprintln!("wrote {}", path.display());
}
