//! ONNX's backend node tests through the whole-file importer: each test's original
//! `model.onnx` (ONNX's on-disk layout, written by `conformance/backend/setup.sh`) goes
//! through [`dnnfusion_onnx::import_model`], the `dnn!` text it gives is run two ways,
//! and the outputs are compared with the test's `test_data_set_0/output_<i>.pb` at
//! ONNX's tolerance (`|got - want| <= 1e-7 + 1e-3 |want|`, ONNX's runner defaults):
//!
//! - `interp`: the text lowered and evaluated by the reference interpreter at test time;
//! - `compiled`: the same text compiled by `dnn!` (`generated_backend.rs`, written by
//!   `cargo run -p dnnfusion-conformance --example backend_gen` from the same files).
//!
//! ```text
//!   test_conv_with_strides_padding/model.onnx   inputs x, W (graph inputs)
//!     -> W is refused as an input ("must be an initializer"): it becomes an
//!        initializer holding input_1.pb, as an exporter writes a weight
//!     -> model Case(x: [1, 1, 7, 5]) -> [1, 1, 4, 3] { conv2d(x, ..., keys = ["W"]) }
//!     -> interp / compiled, compared with output_0.pb
//! ```
//!
//! Which tests: those whose every node is an op the mapping knows
//! ([`dnnfusion_onnx::ONNX_OPS`]) or the importer evaluates
//! ([`dnnfusion_onnx::fold::FOLDABLE`]), in the default domain. A node test passes every
//! value as a graph input, where an exported model has initializers: a graph input that
//! the importer refuses by name (a weight, Resize's scales, Reshape's shape...) is made an
//! initializer holding its test data, and the import is retried; any other refusal makes
//! the case `unsupported`, with the importer's reason.

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};

pub use crate::backend_cases::*;
use crate::{Outcome, Outputs, Row};

/// A tensor's shape and elements.
type Values = (Vec<usize>, Vec<f32>);

/// ONNX's backend runner defaults for node tests.
const RTOL: f64 = 1e-3;
/// See [`RTOL`].
const ATOL: f64 = 1e-7;

/// Where the generated models of the `compiled` column live.
pub fn generated_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join("generated_backend.rs")
}

/// The values of a parameter: the initializer of that name, else the tensor of the
/// `Constant` node whose output it is (what `from_onnx` reads).
fn param_values(imported: &ImportedCase, key: &str) -> Option<Vec<f32>> {
    let graph = imported.model.graph.as_ref()?;
    let initializer = graph
        .initializer
        .iter()
        .find(|t| t.name.as_deref() == Some(key));
    let constant = || {
        graph
            .node
            .iter()
            .filter(|n| n.op_type.as_deref() == Some("Constant"))
            .filter(|n| n.output.first().map(String::as_str) == Some(key))
            .find_map(|n| {
                n.attribute
                    .iter()
                    .find(|a| a.name.as_deref() == Some("value"))?
                    .t
                    .as_ref()
            })
    };
    f32s(initializer.or_else(constant)?).ok().map(|(_, v)| v)
}

/// Runs every selected case under `dir` through both columns.
pub fn run_all(dir: &Path) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for case_dir in case_dirs(dir)? {
        let case = load(&case_dir)?;
        if selected(&case.model) {
            rows.push(run_case(&case));
        }
    }
    Ok(rows)
}

/// Runs one case through both columns.
pub fn run_case(case: &BackendCase) -> Row {
    let row = |interp, compiled| Row {
        case: case.name.clone(),
        op: main_op(&case.model),
        interp,
        compiled,
    };
    let imported = match import_case(case) {
        Ok(i) => i,
        Err(reason) => {
            return row(
                Outcome::Unsupported(reason.clone()),
                Outcome::Unsupported(reason),
            )
        }
    };
    let inputs: Result<Vec<Values>, String> = imported
        .inputs
        .iter()
        .map(|&i| {
            case.inputs
                .get(i)
                .ok_or_else(|| format!("input {i} has no data"))
                .and_then(f32s)
        })
        .collect();
    let inputs = match inputs {
        Ok(v) => v,
        Err(e) => return row(Outcome::Fail(e.clone()), Outcome::Fail(e)),
    };
    let interp = run_interp(case, &imported, &inputs);
    let compiled = run_compiled(case, &imported, &inputs);
    row(interp, compiled)
}

fn run_interp(case: &BackendCase, imported: &ImportedCase, inputs: &[Values]) -> Outcome {
    let graph = match dnnfusion_compiler::lower_str(&imported.dsl) {
        Ok(mut models) if !models.is_empty() => models.swap_remove(0).graph,
        Ok(_) => return Outcome::Fail("no model lowered".to_string()),
        Err(e) => {
            return Outcome::Fail(format!(
                "the DSL rejects the imported model: {}\n{}",
                e.join("; "),
                imported.dsl
            ))
        }
    };
    let mut input_arrays = Vec::new();
    for (shape, values) in inputs {
        match ArrayD::from_shape_vec(IxDyn(shape), values.clone()) {
            Ok(a) => input_arrays.push(a),
            Err(e) => return Outcome::Fail(format!("input: {e}")),
        }
    }
    let mut param_arrays = Vec::new();
    for p in &graph.params {
        let Some(values) = param_values(imported, &p.key) else {
            return Outcome::Fail(format!("no values for parameter `{}`", p.key));
        };
        match ArrayD::from_shape_vec(IxDyn(&p.shape), values) {
            Ok(a) => param_arrays.push(a),
            Err(e) => return Outcome::Fail(format!("parameter `{}`: {e}", p.key)),
        }
    }
    match dnnfusion_compiler::interp::interpret(&graph, &input_arrays, &param_arrays) {
        Ok(outs) => {
            let got: Outputs = outs
                .iter()
                .map(|a| (a.shape().to_vec(), a.iter().copied().collect()))
                .collect();
            compare(case, &got)
        }
        Err(e) => Outcome::Fail(format!("interpreter: {e}")),
    }
}

fn run_compiled(case: &BackendCase, imported: &ImportedCase, inputs: &[Values]) -> Outcome {
    let values: Vec<Vec<f32>> = inputs.iter().map(|(_, v)| v.clone()).collect();
    let params = |key: &str| param_values(imported, key);
    match crate::generated_backend::run(&case.name, &values, &params) {
        None => Outcome::Fail(
            "no compiled model: generated_backend.rs is stale or the compiler rejects the text"
                .to_string(),
        ),
        Some(Err(e)) => Outcome::Fail(e),
        Some(Ok(outs)) => compare(case, &outs),
    }
}

/// ONNX's rule, elementwise, for every graph output; NaN where NaN is expected,
/// infinities exactly.
fn compare(case: &BackendCase, got: &Outputs) -> Outcome {
    if got.len() != case.outputs.len() {
        return Outcome::Fail(format!(
            "{} outputs, expected {}",
            got.len(),
            case.outputs.len()
        ));
    }
    for (slot, ((shape, values), want)) in got.iter().zip(&case.outputs).enumerate() {
        let (want_shape, want) = match f32s(want) {
            Ok(w) => w,
            Err(e) => return Outcome::Fail(format!("output {slot}: {e}")),
        };
        if *shape != want_shape {
            return Outcome::Fail(format!(
                "output {slot}: shape {shape:?}, expected {want_shape:?}"
            ));
        }
        for (i, (&g, &w)) in values.iter().zip(&want).enumerate() {
            let ok = if w.is_nan() {
                g.is_nan()
            } else if w.is_infinite() {
                g == w
            } else {
                (f64::from(g) - f64::from(w)).abs() <= ATOL + RTOL * f64::from(w).abs()
            };
            if !ok {
                return Outcome::Fail(format!(
                    "output {slot}[{i}]: got {g}, expected {w} (rtol {RTOL}, atol {ATOL})"
                ));
            }
        }
    }
    Outcome::Pass
}
