//! ONNX's backend node tests through the whole-file importer (`dnnfusion_conformance::
//! backend`): every test whose ops the project supports, imported from its original
//! `model.onnx`, through the interpreter and through `dnn!`-generated code. No case may
//! fail, the passing count may not drop below the floor, and the committed generated
//! models must be what the generator writes.
//!
//! The node tests come from PyPI's `onnx` (`bash conformance/backend/setup.sh`). Without
//! them these tests say so and pass, unless `CI=true`, where they fail.

use dnnfusion_conformance::backend::{data_dir, generated_path, run_all};
use dnnfusion_conformance::{gen_backend, report, Outcome};

/// Cases passing in both columns (onnx 1.23.2's node tests): a floor, so a regression in
/// the importer or the mapping fails here.
const FLOOR: usize = 523;

/// False (after saying why) when the node tests are not there and CI is not set.
fn have_data() -> bool {
    if data_dir().join("test_abs").join("model.onnx").is_file() {
        return true;
    }
    let message = format!(
        "ONNX node tests not found in {}: write them with `bash conformance/backend/setup.sh` (needs PyPI)",
        data_dir().display()
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
    eprintln!("skipped: {message}");
    false
}

#[test]
fn no_backend_case_fails_and_the_floor_holds() {
    if !have_data() {
        return;
    }
    let rows = run_all(&data_dir()).unwrap();
    println!("{}", report(&rows));
    let failing: Vec<String> = rows
        .iter()
        .filter(|r| matches!(r.interp, Outcome::Fail(_)) || matches!(r.compiled, Outcome::Fail(_)))
        .map(|r| r.to_json())
        .collect();
    assert!(
        failing.is_empty(),
        "{} failing cases:\n{}",
        failing.len(),
        failing.join("\n")
    );
    let passing = |compiled: bool| {
        rows.iter()
            .filter(|r| {
                matches!(
                    if compiled { &r.compiled } else { &r.interp },
                    Outcome::Pass
                )
            })
            .count()
    };
    println!(
        "{} selected cases: {} pass through the interpreter, {} through generated code",
        rows.len(),
        passing(false),
        passing(true)
    );
    assert!(
        passing(false) >= FLOOR,
        "interpreter: {} < {FLOOR}",
        passing(false)
    );
    assert!(
        passing(true) >= FLOOR,
        "generated code: {} < {FLOOR}",
        passing(true)
    );
}

#[test]
fn generated_backend_models_are_current() {
    if !have_data() {
        return;
    }
    let want = gen_backend::generate(&data_dir()).unwrap();
    let have = std::fs::read_to_string(generated_path()).unwrap();
    assert!(
        want == have,
        "conformance/src/generated_backend.rs is stale; regenerate it with\n  cargo run -p dnnfusion-onnx --example backend_gen"
    );
}
