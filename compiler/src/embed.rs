//! Weights compiled into the program: `#[weights = "lenet.safetensors"]` on a model.
//!
//! Input: a compiled model and its weights file; output: a `const fn embedded()` that
//! builds the model on a `static` parameter buffer (flash on a microcontroller), with
//! nothing left to load, parse, prepare or copy at run time.
//!
//! ```text
//!   file --reader--> loaded parameters --load-time graph (interp)--> derived parameters
//!        (checked like the run-time loader)       \                 /
//!                                                  run layout (RUN_LEN floats)
//!                                                  --> one aligned byte string
//! ```
//!
//! The reader is a hook ([`WeightsReader`]) that the macro crate supplies with its
//! `embed` feature: it runs the runtime's own loaders on the file, so a file is accepted
//! at compile time exactly when it would be at run time. A refusal becomes a compile
//! error on the op that owns the tensor (or on the file name when no op does). The
//! load-time ops (folded batch norms, packed weights) run in the reference interpreter,
//! in f64 where it computes in f64, so an embedded buffer is at least as accurate as
//! one prepared at run time.

use crate::CompiledModel;
use proc_macro2::{Span, TokenStream};
use std::collections::HashMap;

/// One parameter the file must hold: its key, its shape, and where it goes while
/// loading (floats from the start of the loaded parameters, declaration order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightsParam {
    /// The key (`conv1.weight`).
    pub key: String,
    /// The shape.
    pub shape: Vec<usize>,
    /// Offset in floats.
    pub offset: usize,
}

/// What the reader is asked for: the file as written and the loaded parameters.
#[derive(Clone, Copy, Debug)]
pub struct WeightsRequest<'a> {
    /// The file, relative to the declaring crate's `CARGO_MANIFEST_DIR`.
    pub path: &'a str,
    /// Every loaded parameter, in declaration order.
    pub params: &'a [WeightsParam],
    /// Floats of all loaded parameters.
    pub loaded_len: usize,
    /// Single values the model was compiled with (`#[scalars(...)]`), by key: an ONNX
    /// file must hold exactly these.
    pub scalars: &'a [(String, f32)],
}

/// What the reader gives back.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadWeights {
    /// `loaded_len` floats, laid out as the request's offsets say.
    pub floats: Vec<f32>,
    /// The file it read (absolute), included with `include_bytes!` so that editing it
    /// rebuilds the crate.
    pub tracked: Option<String>,
}

/// Why the reader refused the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightsError {
    /// The tensor at fault, when one is (the error then points at the op that owns it).
    pub tensor: Option<String>,
    /// What is wrong, in plain words.
    pub message: String,
}

/// Reads a weights file for `#[weights = "..."]` (the macro crate's `embed` feature).
pub type WeightsReader<'a> = &'a dyn Fn(&WeightsRequest<'_>) -> Result<ReadWeights, WeightsError>;

/// Where the user wrote the op that reads each parameter (by key), taken from the
/// lowered graph, before rewriting renames or drops anything.
pub fn param_owners(graph: &crate::ir::Graph) -> HashMap<String, Span> {
    let mut owners = HashMap::new();
    for param in &graph.params {
        if let Some(node) = graph.nodes.iter().find(|n| n.inputs.contains(&param.value)) {
            owners.entry(param.key.clone()).or_insert(node.span);
        }
    }
    owners
}

/// The `embedded()` constructor of `compiled`, whose declaration names `file`; errors
/// point at the op owning the tensor at fault (`owners`) or at `file`.
pub fn embed(
    compiled: &CompiledModel,
    file: &syn::LitStr,
    owners: &HashMap<String, Span>,
    reader: WeightsReader<'_>,
) -> Result<TokenStream, syn::Error> {
    let graph = &compiled.model.graph;
    let mut params = Vec::new();
    let mut offset = 0usize;
    for p in graph.params.iter().take(compiled.loaded_params) {
        params.push(WeightsParam {
            key: p.key.clone(),
            shape: p.shape.clone(),
            offset,
        });
        offset += p.shape.iter().product::<usize>();
    }
    let path = file.value();
    let request = WeightsRequest {
        path: &path,
        params: &params,
        loaded_len: offset,
        scalars: &compiled.model.options.scalars,
    };
    let read = reader(&request).map_err(|e| {
        let span = e
            .tensor
            .as_ref()
            .and_then(|t| owners.get(t))
            .copied()
            .unwrap_or_else(|| file.span());
        syn::Error::new(span, format!("weights file `{path}`: {}", e.message))
    })?;
    if read.floats.len() != offset {
        return Err(internal(
            file,
            &format!(
                "the reader gave {} floats for {offset} loaded ones",
                read.floats.len()
            ),
        ));
    }
    let run = run_buffer(compiled, &params, read.floats).map_err(|m| internal(file, &m))?;
    let name = &compiled.model.name;
    Ok(crate::codegen::embedded_weights(
        name,
        &path,
        &run,
        read.tracked.as_deref(),
    ))
}

fn internal(file: &syn::LitStr, message: &str) -> syn::Error {
    syn::Error::new(
        file.span(),
        format!("internal error in `embed`: {message}; please report"),
    )
}

/// The buffer `run` reads: the loaded parameters it reads, then the values the
/// load-time graph derives from them, as `plan::layout_params` placed them.
fn run_buffer(
    compiled: &CompiledModel,
    params: &[WeightsParam],
    loaded: Vec<f32>,
) -> Result<Vec<f32>, String> {
    let Some(stage) = &compiled.load else {
        return Ok(loaded);
    };
    let derived = derive(&stage.graph, params, &loaded)?;
    let layout = &stage.layout;
    let mut run = Vec::with_capacity(layout.run_len());
    for &(from, to, len) in &layout.moves {
        let part = loaded
            .get(from..from + len)
            .ok_or("a move reads past the loaded parameters")?;
        if to != run.len() {
            return Err("the moves do not fill the run layout in order".into());
        }
        run.extend_from_slice(part);
    }
    if derived.len() != layout.derived.len() {
        return Err("the load-time graph's outputs are not the derived parameters".into());
    }
    for (values, &(offset, len)) in derived.iter().zip(&layout.derived) {
        if offset < run.len() || values.len() != len {
            return Err("a derived parameter does not fit its place in the run layout".into());
        }
        // (the padding before each, up to its cache line, is never read)
        run.resize(offset, 0.0);
        run.extend_from_slice(values);
    }
    if run.len() != layout.run_len() {
        return Err(format!(
            "the run buffer has {} floats, the layout {}",
            run.len(),
            layout.run_len()
        ));
    }
    Ok(run)
}

/// The load-time graph's outputs on the loaded parameters, one by one.
#[cfg(feature = "interp")]
fn derive(
    load: &crate::ir::Graph,
    params: &[WeightsParam],
    loaded: &[f32],
) -> Result<Vec<Vec<f32>>, String> {
    let mut arrays = Vec::with_capacity(params.len());
    for p in params {
        let len: usize = p.shape.iter().product();
        let data = loaded
            .get(p.offset..p.offset + len)
            .ok_or("a parameter lies past the loaded floats")?;
        let array = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&p.shape), data.to_vec())
            .map_err(|e| e.to_string())?;
        arrays.push(array);
    }
    let outputs = crate::interp::interpret(load, &[], &arrays).map_err(|e| e.message)?;
    Ok(outputs
        .iter()
        .map(|a| a.iter().copied().collect())
        .collect())
}

/// Without the interpreter the load-time ops cannot run at compile time.
#[cfg(not(feature = "interp"))]
fn derive(
    _load: &crate::ir::Graph,
    _params: &[WeightsParam],
    _loaded: &[f32],
) -> Result<Vec<Vec<f32>>, String> {
    Err("the model has load-time ops and dnnfusion-compiler was built without `interp`".into())
}
