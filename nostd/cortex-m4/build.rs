//! Hands the linker script to the linker, for the programs of this crate only.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link.x");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-search={dir}");
        // `-bins`: the final programs, not build scripts or proc macros (host code).
        println!("cargo:rustc-link-arg-bins=-Tlink.x");
    }
}
