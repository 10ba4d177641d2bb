//! Writes `conformance/src/generated_backend.rs`: one `dnn!` model per ONNX backend node
//! test whose original `model.onnx` the importer takes (after
//! `bash conformance/backend/setup.sh` wrote the tests).
//!
//! `cargo run -p dnnfusion-onnx --example backend_gen`
//!
//! The generator lives outside the conformance crate (it includes that crate's test
//! reader and generator with `#[path]`), so it runs even when the committed file is
//! stale or does not compile.

#[path = "../../conformance/src/backend_cases.rs"]
#[allow(dead_code)]
mod backend_cases;
#[path = "../../conformance/src/gen_backend.rs"]
mod gen_backend;

use std::path::{Path, PathBuf};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("conformance");
    let dir = match std::env::var_os("DNNFUSION_NODE_TESTS_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => root.join("backend").join("data"),
    };
    let text = match gen_backend::generate(&dir) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e} (write the node tests with `bash conformance/backend/setup.sh`)");
            std::process::exit(1)
        }
    };
    let path = root.join("src").join("generated_backend.rs");
    if let Err(e) = std::fs::write(&path, text) {
        eprintln!("error: cannot write {}: {e}", path.display());
        std::process::exit(1)
    }
    eprintln!("wrote {}", path.display());
}
