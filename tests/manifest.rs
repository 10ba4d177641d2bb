//! Every `tests/*.rs` file is a `[[test]]` of `tests/Cargo.toml`. The package lists its
//! tests by hand (they sit in its root directory, where Cargo does not look for tests),
//! so a file missing there would never run.

#[test]
fn every_test_file_is_listed_in_the_manifest() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let manifest = std::fs::read_to_string(format!("{dir}/Cargo.toml")).unwrap();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".rs") && !manifest.contains(&format!("path = \"{name}\"")) {
            missing.push(name);
        }
    }
    missing.sort();
    assert!(
        missing.is_empty(),
        "tests/Cargo.toml has no [[test]] for {missing:?}: add one per file"
    );
}
