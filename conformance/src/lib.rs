//! ONNX conformance: every ONNX node test (`onnx-node/`, a copy of ONNX 1.23.2's backend
//! node tests as `case.json` + `.npy`) mapped to a one-op model by
//! `dnnfusion_onnx::map`, then run two ways and compared with ONNX's expected
//! outputs at ONNX's tolerance:
//!
//! - `interp`: the model lowered from text and evaluated by the reference interpreter;
//! - `compiled`: the same model compiled by `dnn!` (the `generated` module, written by
//!   `cargo run -p dnnfusion-onnx --example onnx_gen`) and run.
//!
//! Each column is `pass`, `fail` or `unsupported` (the mapping refused the node, with its
//! reason). `cargo run --release -p dnnfusion-conformance --example onnx_conformance`
//! prints the table.

use std::path::{Path, PathBuf};

use dnnfusion::{Model, Params};
use dnnfusion_onnx::{self as onnx, Mapping, OneOpModel, Tensor, TensorData};
use ndarray::{ArrayD, IxDyn};

pub mod backend;
pub mod backend_cases;
pub mod cases;
pub mod gen;
pub mod gen_backend;
// generated code: clippy lints about it belong to codegen, not to this crate
#[allow(missing_docs, non_snake_case, clippy::all)]
#[rustfmt::skip]
pub mod generated;
#[allow(missing_docs, non_snake_case, clippy::all)]
#[rustfmt::skip]
pub mod generated_backend;

pub use cases::Case;

/// Where the committed copy of the ONNX node tests lives.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx-node")
}

/// Where the generated models live.
pub fn generated_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join("generated.rs")
}

/// The outcome of one column for one case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every output within tolerance.
    Pass,
    /// Ran (or should have) and disagrees; the reason says where.
    Fail(String),
    /// The mapping refused the node.
    Unsupported(String),
}

impl Outcome {
    /// `pass`, `fail` or `unsupported`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail(_) => "fail",
            Outcome::Unsupported(_) => "unsupported",
        }
    }

    /// The reason, unless it passed.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Pass => None,
            Outcome::Fail(r) | Outcome::Unsupported(r) => Some(r),
        }
    }
}

/// One row of the conformance table.
#[derive(Clone, Debug)]
pub struct Row {
    /// `test_abs`
    pub case: String,
    /// `Abs`
    pub op: String,
    /// Through the reference interpreter.
    pub interp: Outcome,
    /// Through the code `dnn!` generated.
    pub compiled: Outcome,
}

impl Row {
    /// The row as one JSON object.
    pub fn to_json(&self) -> String {
        let mut s = format!(
            "{{\"case\":{},\"op\":{},\"interp\":\"{}\",\"compiled\":\"{}\"",
            json_str(&self.case),
            json_str(&self.op),
            self.interp.label(),
            self.compiled.label()
        );
        if let Some(r) = self.interp.reason() {
            s.push_str(&format!(",\"interp_reason\":{}", json_str(r)));
        }
        if let Some(r) = self.compiled.reason() {
            s.push_str(&format!(",\"compiled_reason\":{}", json_str(r)));
        }
        if let Some(r) = self.interp.reason().or(self.compiled.reason()) {
            s.push_str(&format!(",\"reason\":{}", json_str(r)));
        }
        s.push('}');
        s
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Runs every case under [`data_dir`].
pub fn run_all() -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for dir in cases::case_dirs(&data_dir())? {
        let case = cases::load(&dir)?;
        rows.push(run_case(&case));
    }
    Ok(rows)
}

/// Runs one case through both columns.
pub fn run_case(case: &Case) -> Row {
    let row = |interp, compiled| Row {
        case: case.name.clone(),
        op: case.node.op_type.clone(),
        interp,
        compiled,
    };
    let model = match onnx::map(&case.node) {
        Mapping::Model(m) => m,
        Mapping::Unsupported { reason } => {
            return row(
                Outcome::Unsupported(reason.clone()),
                Outcome::Unsupported(reason),
            )
        }
    };
    let interp = run_interp(case, &model);
    let compiled = run_compiled(case, &model);
    row(interp, compiled)
}

/// f32 elements of a tensor (integer data converted).
fn f32s(t: &Tensor) -> Vec<f32> {
    match &t.data {
        TensorData::F32(v) => v.clone(),
        TensorData::I64(v) => v.iter().map(|&x| x as f32).collect(),
    }
}

/// The values of parameter `key`, from the input the mapping names.
fn param_values(case: &Case, model: &OneOpModel, key: &str) -> Option<Vec<f32>> {
    let source = model.params.iter().find(|p| p.key == key)?;
    case.inputs.get(source.input)?.as_ref().map(f32s)
}

/// The model inputs, in order.
fn model_inputs(case: &Case, model: &OneOpModel) -> Result<Vec<Tensor>, String> {
    model
        .inputs
        .iter()
        .map(|&slot| {
            case.inputs
                .get(slot)
                .and_then(Option::as_ref)
                .cloned()
                .ok_or_else(|| format!("input {slot} has no data"))
        })
        .collect()
}

fn run_interp(case: &Case, model: &OneOpModel) -> Outcome {
    let graph = match dnnfusion_compiler::lower_str(&model.dsl) {
        Ok(mut models) if !models.is_empty() => models.swap_remove(0).graph,
        Ok(_) => return Outcome::Fail("no model lowered".to_string()),
        Err(e) => {
            return Outcome::Fail(format!(
                "the DSL rejects the mapped model: {}\n{}",
                e.join("; "),
                model.dsl
            ))
        }
    };
    let inputs = match model_inputs(case, model) {
        Ok(v) => v,
        Err(e) => return Outcome::Fail(e),
    };
    let mut input_arrays = Vec::new();
    for t in &inputs {
        match ArrayD::from_shape_vec(IxDyn(&t.shape), f32s(t)) {
            Ok(a) => input_arrays.push(a),
            Err(e) => return Outcome::Fail(format!("input: {e}")),
        }
    }
    let mut param_arrays = Vec::new();
    for p in &graph.params {
        let Some(values) = param_values(case, model, &p.key) else {
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
            compare(case, model, &got)
        }
        Err(e) => Outcome::Fail(format!("interpreter: {e}")),
    }
}

fn run_compiled(case: &Case, model: &OneOpModel) -> Outcome {
    let inputs = match model_inputs(case, model) {
        Ok(v) => v.iter().map(f32s).collect::<Vec<_>>(),
        Err(e) => return Outcome::Fail(e),
    };
    let params = |key: &str| param_values(case, model, key);
    match generated::run(&case.name, &inputs, &params) {
        None => Outcome::Fail("no compiled model: the generator skipped it (the compiler rejects it) or generated.rs is stale".to_string()),
        Some(Err(e)) => Outcome::Fail(e),
        Some(Ok(outs)) => compare(case, model, &outs),
    }
}

/// The shape and elements of each output.
pub type Outputs = Vec<(Vec<usize>, Vec<f32>)>;

/// Runs a generated model: inputs in order, parameters looked up by key (called by the
/// generated dispatch). Returns each output with the shape the model declares.
pub fn run_model<M: Model>(
    inputs: &[Vec<f32>],
    params: &dyn Fn(&str) -> Option<Vec<f32>>,
) -> Result<Outputs, String> {
    let mut flat = vec![0.0f32; M::PARAM_LEN];
    for spec in M::PARAMS {
        let values =
            params(spec.name).ok_or_else(|| format!("no values for parameter `{}`", spec.name))?;
        let slot = flat
            .get_mut(spec.offset..spec.offset + spec.len())
            .ok_or("parameter layout")?;
        if values.len() != slot.len() {
            return Err(format!(
                "parameter `{}` has {} values, the model wants {}",
                spec.name,
                values.len(),
                slot.len()
            ));
        }
        slot.copy_from_slice(&values);
    }
    let model = M::from_static_params(Params::owned(flat))
        .map_err(|e| format!("loading parameters: {e:?}"))?;
    let mut outputs: Vec<Vec<f32>> = M::OUTPUT_SHAPES
        .iter()
        .map(|s| vec![f32::NAN; s.iter().product()])
        .collect();
    let mut arena = vec![f32::NAN; M::ARENA_LEN];
    let input_refs: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
    let mut output_refs: Vec<&mut [f32]> = outputs.iter_mut().map(Vec::as_mut_slice).collect();
    model
        .run_slices(&input_refs, &mut output_refs, &mut arena)
        .map_err(|e| format!("run: {e:?}"))?;
    Ok(M::OUTPUT_SHAPES
        .iter()
        .map(|s| s.to_vec())
        .zip(outputs)
        .collect())
}

/// ONNX's rule, elementwise: `|got - want| <= atol + rtol * |want|`, NaN where NaN is
/// expected, infinities exactly.
fn compare(case: &Case, model: &OneOpModel, got: &Outputs) -> Outcome {
    if got.len() != model.outputs.len() {
        return Outcome::Fail(format!(
            "{} outputs, expected {}",
            got.len(),
            model.outputs.len()
        ));
    }
    for ((shape, values), &slot) in got.iter().zip(&model.outputs) {
        let Some(want) = case.outputs.get(slot).and_then(Option::as_ref) else {
            return Outcome::Fail(format!("output {slot} has no expected data"));
        };
        if *shape != want.shape {
            return Outcome::Fail(format!(
                "output {slot}: shape {shape:?}, expected {:?}",
                want.shape
            ));
        }
        let want = f32s(want);
        for (i, (&g, &w)) in values.iter().zip(&want).enumerate() {
            let ok = if w.is_nan() {
                g.is_nan()
            } else if w.is_infinite() {
                g == w
            } else {
                (f64::from(g) - f64::from(w)).abs() <= case.atol + case.rtol * f64::from(w).abs()
            };
            if !ok {
                return Outcome::Fail(format!(
                    "output {slot}[{i}]: got {g}, expected {w} (rtol {}, atol {})",
                    case.rtol, case.atol
                ));
            }
        }
    }
    Outcome::Pass
}

/// Per-op totals of a run.
#[derive(Clone, Debug, Default)]
pub struct OpSummary {
    /// ONNX op type.
    pub op: String,
    /// Cases of this op.
    pub cases: usize,
    /// Cases passing through the interpreter.
    pub interp_pass: usize,
    /// Cases passing through generated code.
    pub compiled_pass: usize,
    /// Failing cases (either column).
    pub fail: usize,
}

impl OpSummary {
    /// Every case passes in both columns.
    pub fn fully_passing(&self) -> bool {
        self.interp_pass == self.cases && self.compiled_pass == self.cases
    }
}

/// Groups rows by op, in op order.
pub fn summarize(rows: &[Row]) -> Vec<OpSummary> {
    let mut ops: Vec<OpSummary> = Vec::new();
    for r in rows {
        let i = match ops.iter().position(|o| o.op == r.op) {
            Some(i) => i,
            None => {
                ops.push(OpSummary {
                    op: r.op.clone(),
                    ..OpSummary::default()
                });
                ops.len() - 1
            }
        };
        if let Some(o) = ops.get_mut(i) {
            o.cases += 1;
            o.interp_pass += usize::from(r.interp == Outcome::Pass);
            o.compiled_pass += usize::from(r.compiled == Outcome::Pass);
            o.fail += usize::from(
                matches!(r.interp, Outcome::Fail(_)) || matches!(r.compiled, Outcome::Fail(_)),
            );
        }
    }
    ops.sort_by(|a, b| a.op.cmp(&b.op));
    ops
}

/// The readable report: one line per op, the unsupported and failing cases, totals.
pub fn report(rows: &[Row]) -> String {
    let ops = summarize(rows);
    let mut s = String::new();
    s.push_str(&format!(
        "{:<24} {:>5} {:>7} {:>9}  status\n",
        "op", "cases", "interp", "compiled"
    ));
    for o in &ops {
        let status = if o.fully_passing() {
            "pass"
        } else if o.fail > 0 {
            "FAIL"
        } else {
            "partial"
        };
        s.push_str(&format!(
            "{:<24} {:>5} {:>7} {:>9}  {status}\n",
            o.op, o.cases, o.interp_pass, o.compiled_pass
        ));
    }
    let unsupported: Vec<&Row> = rows
        .iter()
        .filter(|r| matches!(r.interp, Outcome::Unsupported(_)))
        .collect();
    if !unsupported.is_empty() {
        s.push_str("\nunsupported:\n");
        for r in &unsupported {
            s.push_str(&format!(
                "  {:<56} {}\n",
                r.case,
                r.interp.reason().unwrap_or("")
            ));
        }
    }
    let failing: Vec<&Row> = rows
        .iter()
        .filter(|r| matches!(r.interp, Outcome::Fail(_)) || matches!(r.compiled, Outcome::Fail(_)))
        .collect();
    if !failing.is_empty() {
        s.push_str("\nfailing:\n");
        for r in &failing {
            let reason = if matches!(r.interp, Outcome::Fail(_)) {
                r.interp.reason()
            } else {
                r.compiled.reason()
            };
            s.push_str(&format!(
                "  {:<56} interp {}, compiled {}: {}\n",
                r.case,
                r.interp.label(),
                r.compiled.label(),
                reason.unwrap_or("").lines().next().unwrap_or("")
            ));
        }
    }
    let full = ops.iter().filter(|o| o.fully_passing()).count();
    let count = |f: &dyn Fn(&Row) -> bool| rows.iter().filter(|r| f(r)).count();
    s.push_str(&format!(
        "\n{full} of {} ops pass every case in both columns\ncases: {} | interp: {} pass, {} fail, {} unsupported | compiled: {} pass, {} fail, {} unsupported\n",
        ops.len(),
        rows.len(),
        count(&|r| r.interp == Outcome::Pass),
        count(&|r| matches!(r.interp, Outcome::Fail(_))),
        count(&|r| matches!(r.interp, Outcome::Unsupported(_))),
        count(&|r| r.compiled == Outcome::Pass),
        count(&|r| matches!(r.compiled, Outcome::Fail(_))),
        count(&|r| matches!(r.compiled, Outcome::Unsupported(_))),
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(interp: Outcome, compiled: Outcome) -> Row {
        Row {
            case: "test_x".to_string(),
            op: "X".to_string(),
            interp,
            compiled,
        }
    }

    #[test]
    fn json_lines_carry_the_reasons() {
        let r = row(
            Outcome::Unsupported("X: mode=\"cubic\" is not supported".to_string()),
            Outcome::Unsupported("same".to_string()),
        );
        assert_eq!(
            r.to_json(),
            r#"{"case":"test_x","op":"X","interp":"unsupported","compiled":"unsupported","interp_reason":"X: mode=\"cubic\" is not supported","compiled_reason":"same","reason":"X: mode=\"cubic\" is not supported"}"#
        );
        assert_eq!(
            row(Outcome::Pass, Outcome::Pass).to_json(),
            r#"{"case":"test_x","op":"X","interp":"pass","compiled":"pass"}"#
        );
    }

    #[test]
    fn the_report_lists_unsupported_and_failing_cases() {
        let rows = vec![
            row(
                Outcome::Pass,
                Outcome::Fail("output 0[1]: got 2, expected 1".to_string()),
            ),
            row(
                Outcome::Unsupported("why".to_string()),
                Outcome::Unsupported("why".to_string()),
            ),
        ];
        let text = report(&rows);
        assert!(text.contains("unsupported:\n  test_x"), "{text}");
        assert!(text.contains("failing:\n  test_x"), "{text}");
        assert!(
            text.contains("0 of 1 ops pass every case in both columns"),
            "{text}"
        );
    }
}
