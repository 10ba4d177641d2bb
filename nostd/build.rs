//! Links the binary without the C runtime's startup files: `_start` is ours.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        // `-bins`: only the final binary, not build scripts or proc macros.
        println!("cargo:rustc-link-arg-bins=-nostartfiles");
        // rustc links with -nodefaultlibs; the kernels' copies and fills lower to
        // memcpy/memset/bcmp, which come from libc (only these; libc is never started).
        println!("cargo:rustc-link-arg-bins=-lc");
    }
}
