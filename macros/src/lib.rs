//! The `dnn!` procedural macro. A thin shell: all the work is in `dnnfusion-compiler`;
//! the grammar is documented on the re-export in the `dnnfusion` crate. With the `onnx`
//! feature it also hands `model Name = onnx("file.onnx")` declarations to
//! `dnnfusion-onnx`; with `embed`, it reads `#[weights = "file"]` files with the
//! runtime's own loaders (so the compile-time check is the run-time one).

use proc_macro::TokenStream;

/// Compiles a network declaration into Rust items. See the `dnnfusion` crate docs.
#[proc_macro]
pub fn dnn(input: TokenStream) -> TokenStream {
    let hooks = dnnfusion_compiler::Hooks {
        #[cfg(feature = "onnx")]
        onnx: Some(&dnnfusion_onnx::import_for_macro),
        #[cfg(not(feature = "onnx"))]
        onnx: None,
        #[cfg(feature = "embed")]
        weights: Some(&weights::read),
        #[cfg(not(feature = "embed"))]
        weights: None,
    };
    dnnfusion_compiler::expand_hooked(input.into(), hooks).into()
}

#[cfg(feature = "embed")]
mod weights {
    use dnnfusion_compiler::{ReadWeights, WeightsError, WeightsRequest};
    use dnnfusion_runtime::{onnx_weights, safetensors, ParamSpec};

    /// Reads the file of a `#[weights = "..."]` declaration: a `.onnx` file's
    /// initializers, or else a safetensors file, checked against the model's parameters
    /// exactly as `from_safetensors` / `from_onnx` check them at run time.
    pub fn read(request: &WeightsRequest<'_>) -> Result<ReadWeights, WeightsError> {
        let plain = |message: String| WeightsError {
            tensor: None,
            message,
        };
        let path = dnnfusion_compiler::manifest_path(request.path).map_err(plain)?;
        let bytes = std::fs::read(&path).map_err(|e| {
            plain(format!(
                "cannot read it (paths are relative to the crate's Cargo.toml): {e}"
            ))
        })?;
        // The loaders take the model's 'static `PARAMS`; these few names and shapes live
        // as long as the compiler process.
        let specs: Vec<ParamSpec> = request
            .params
            .iter()
            .map(|p| ParamSpec {
                name: Box::leak(p.key.clone().into_boxed_str()),
                shape: Box::leak(p.shape.clone().into_boxed_slice()),
                offset: p.offset,
            })
            .collect();
        let mut floats = vec![0.0f32; request.loaded_len];
        let onnx = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
        let scalars: Vec<(&'static str, f32)> = request
            .scalars
            .iter()
            .map(|(key, value)| (&*Box::leak(key.clone().into_boxed_str()), *value))
            .collect();
        let loaded = if onnx {
            onnx_weights::check_scalars(&bytes, &scalars)
                .and_then(|()| onnx_weights::load_into(&bytes, &specs, &mut floats))
        } else {
            safetensors::load_into_with(
                &bytes,
                &specs,
                &scalars,
                &mut floats,
                dnnfusion_runtime::LoadOptions::STRICT,
                |_| {},
            )
            .map(|_| ())
        };
        loaded.map_err(|e| {
            let hint = match e {
                dnnfusion_runtime::LoadError::MissingTensor { tensor }
                    if scalars.iter().any(|(key, _)| *key == tensor) =>
                {
                    "; the model was compiled with it as one value (`#[scalars(...)]`, written by the ONNX import): the file must hold it"
                }
                dnnfusion_runtime::LoadError::MissingTensor { .. } => {
                    "; the file must hold every parameter of the model, keyed by the `let` name or `key = \"...\"` of the op that owns it"
                }
                dnnfusion_runtime::LoadError::UnexpectedTensor { .. } => {
                    "; no op of the model owns it: check its key, or remove it from the file"
                }
                _ => "",
            };
            WeightsError {
                tensor: e.tensor().map(str::to_string),
                message: format!("{e}{hint}"),
            }
        })?;
        Ok(ReadWeights {
            floats,
            tracked: path.to_str().map(str::to_string),
        })
    }
}
