//! Reading ONNX's backend node tests (`model.onnx` + `test_data_set_0/*.pb`, ONNX's
//! on-disk layout, written by `conformance/backend/setup.sh`) and importing them with
//! [`dnnfusion_onnx::import_model`]; see [`crate::backend`] for the runner.
//!
//! Self-contained (std and `dnnfusion_onnx` only): the generator example in the
//! dnnfusion-onnx crate includes this file with `#[path]`, so it builds even when the
//! generated models do not.

use std::path::{Path, PathBuf};

use dnnfusion_onnx::proto::{self, ModelProto, TensorProto};
use dnnfusion_onnx::{self as onnx, Tensor, TensorData};

/// Where `conformance/backend/setup.sh` writes the node tests:
/// `$DNNFUSION_NODE_TESTS_DIR`, else `conformance/backend/data`.
pub fn data_dir() -> PathBuf {
    match std::env::var_os("DNNFUSION_NODE_TESTS_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("backend/data"),
    }
}

/// One node test as ONNX writes it.
#[derive(Clone, Debug)]
pub struct BackendCase {
    /// `test_conv_with_strides_padding`
    pub name: String,
    /// The decoded `model.onnx`.
    pub model: ModelProto,
    /// `input_<i>.pb`, one per graph input.
    pub inputs: Vec<TensorProto>,
    /// `output_<i>.pb`, one per graph output.
    pub outputs: Vec<TensorProto>,
}

/// The test folders under `dir` (those with a `model.onnx`), sorted by name.
pub fn case_dirs(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// Reads one test folder.
pub fn load(dir: &Path) -> Result<BackendCase, String> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{}: not a test folder", dir.display()))?
        .to_string();
    let read = |path: PathBuf| std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()));
    let model = proto::decode_model(&read(dir.join("model.onnx"))?)?;
    let graph = model.graph.as_ref().ok_or("model.onnx has no graph")?;
    let data = dir.join("test_data_set_0");
    let tensors = |prefix: &str, n: usize| -> Result<Vec<TensorProto>, String> {
        (0..n)
            .map(|i| proto::decode_tensor(&read(data.join(format!("{prefix}_{i}.pb")))?))
            .collect()
    };
    let inputs = tensors("input", graph.input.len())?;
    let outputs = tensors("output", graph.output.len())?;
    Ok(BackendCase {
        name,
        model,
        inputs,
        outputs,
    })
}

/// The first op of the model's graph (the op the test is about), for the report.
pub fn main_op(model: &ModelProto) -> String {
    model
        .graph
        .as_ref()
        .and_then(|g| g.node.first())
        .and_then(|n| n.op_type.clone())
        .unwrap_or_default()
}

/// True when every node is in the default domain and its op is mapped or folded.
pub fn selected(model: &ModelProto) -> bool {
    let Some(graph) = model.graph.as_ref() else {
        return false;
    };
    !graph.node.is_empty()
        && graph.node.iter().all(|n| {
            let op = n.op_type.as_deref().unwrap_or("");
            matches!(n.domain.as_deref(), None | Some("") | Some("ai.onnx"))
                && (onnx::ONNX_OPS.iter().any(|o| o.op_type == op)
                    || onnx::fold::FOLDABLE.contains(&op))
        })
}

/// A case after import: the `dnn!` text and where its inputs and parameters come from.
#[derive(Clone, Debug)]
pub struct ImportedCase {
    /// `model Case(...) -> ... { ... }`
    pub dsl: String,
    /// The graph inputs left as model inputs, in order (indices into the test's inputs).
    pub inputs: Vec<usize>,
    /// The model as imported (graph inputs made initializers included).
    pub model: ModelProto,
}

/// Imports a case's model, making a graph input an initializer holding its test data
/// whenever the importer refuses it by name as an input; `Err` is the last refusal.
pub fn import_case(case: &BackendCase) -> Result<ImportedCase, String> {
    let mut model = case.model.clone();
    let options = onnx::ImportOptions {
        name: "Case".to_string(),
        public: false,
        pins: Vec::new(),
    };
    loop {
        let error = match onnx::import_model(&model, &options) {
            Ok(imported) => {
                let graph = model.graph.as_ref().ok_or("no graph")?;
                let original = case.model.graph.as_ref().ok_or("no graph")?;
                let inputs = graph
                    .input
                    .iter()
                    .filter_map(|v| original.input.iter().position(|o| o.name == v.name))
                    .collect();
                return Ok(ImportedCase {
                    dsl: imported.dsl,
                    inputs,
                    model,
                });
            }
            Err(e) => e,
        };
        let graph = model.graph.as_mut().ok_or("no graph")?;
        // the first graph input the message names, in backticks
        let named = graph.input.iter().position(|v| {
            v.name
                .as_deref()
                .is_some_and(|n| error.contains(&format!("input `{n}`")))
        });
        let Some(at) = named else {
            return Err(error);
        };
        let value = graph.input.remove(at);
        let name = value.name.clone().unwrap_or_default();
        let original = case.model.graph.as_ref().ok_or("no graph")?;
        let slot = original
            .input
            .iter()
            .position(|o| o.name.as_deref() == Some(name.as_str()))
            .ok_or("internal error: input slot")?;
        let mut tensor = case
            .inputs
            .get(slot)
            .cloned()
            .ok_or_else(|| format!("input `{name}` has no test data"))?;
        tensor.name = Some(name);
        graph.initializer.push(tensor);
    }
}

/// A tensor's elements as f32 (integers converted; the DSL passes indices as f32).
pub fn f32s(t: &TensorProto) -> Result<(Vec<usize>, Vec<f32>), String> {
    let Tensor { shape, data } = onnx::import::tensor_of(t)?;
    let values = match data {
        TensorData::F32(v) => v,
        TensorData::I64(v) => v.iter().map(|&x| x as f32).collect(),
    };
    Ok((shape, values))
}
