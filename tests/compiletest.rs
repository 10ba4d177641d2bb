use std::path::Path;

#[test]
fn ui() {
    // The cases test the `dnnfusion` crate: trybuild reads the manifest in
    // CARGO_MANIFEST_DIR for the crate and its dependencies, expands the pattern from the
    // current directory and prints paths relative to it, so point both at the repository
    // root (this package is tests/Cargo.toml). The .stderr files then name
    // `tests/ui/<case>.rs`, and the cases build against `dnnfusion` alone. This test is
    // the only one in its binary, so changing the process's environment races with nothing.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent");
    std::env::set_var("CARGO_MANIFEST_DIR", root);
    std::env::set_current_dir(root).expect("the repository root is a directory");
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
