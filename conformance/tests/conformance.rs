//! The ONNX conformance run as a test: no case may fail (unsupported ones are printed),
//! every one of the 381 cases passes in both columns (a floor: a mapper that refused
//! every node would fail it), and the committed generated models must be what the
//! generator writes.

use dnnfusion_conformance::{data_dir, gen, generated_path, report, run_all, Outcome};

#[test]
fn no_onnx_case_fails() {
    let rows = run_all().unwrap();
    let text = report(&rows);
    println!("{text}");
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
    const FLOOR: usize = 381;
    assert_eq!(
        rows.len(),
        FLOOR,
        "the node-test data changed: update FLOOR"
    );
    assert_eq!(
        passing(false),
        FLOOR,
        "cases passing through the interpreter"
    );
    assert_eq!(passing(true), FLOOR, "cases passing through generated code");
}

#[test]
fn generated_models_are_current() {
    let want = gen::generate(&data_dir()).unwrap();
    let have = std::fs::read_to_string(generated_path()).unwrap();
    assert!(
        want == have,
        "conformance/src/generated.rs is stale; regenerate it with\n  cargo run -p dnnfusion-onnx --example onnx_gen"
    );
}
