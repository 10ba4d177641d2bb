//! # dnnfusion
//!
//! A compile-time compiler for deep neural networks. A network declared inside
//! [`dnn!`] is shape-checked, planned and expanded into plain Rust loops while rustc
//! builds your crate; nothing of the graph is left at run time. The generated code
//! runs on `#![no_std]` targets without an allocator.
//!
//! ```
//! dnnfusion::dnn! {
//!     /// A two-layer perceptron.
//!     pub model Tiny(x: [1, 4]) -> [1, 2] {
//!         let fc1 = linear(x, 8);
//!         let fc2 = linear(relu(fc1), 2);
//!         softmax(fc2, axis = -1)
//!     }
//! }
//!
//! // parameters: flat buffer laid out as `Tiny::PARAMS` says (here all 0.1)
//! static PARAMS: [f32; Tiny::PARAM_LEN] = [0.1; Tiny::PARAM_LEN];
//! let model = Tiny::from_params(dnnfusion::Params::borrowed(&PARAMS)).unwrap();
//! let mut arena = [0.0; Tiny::ARENA_LEN];
//! let mut y = [0.0; 2];
//! model.run(&[1.0, 2.0, 3.0, 4.0], &mut y, &mut arena);
//! assert!((y[0] + y[1] - 1.0).abs() < 1e-6);
//! assert_eq!(Tiny::PARAMS[0].name, "fc1.weight");
//! ```
//!
//! A model that computes part of its parameter buffer at load time (`LOADED_LEN <
//! PARAM_LEN`: here the linear stores its weight transposed) prepares a mutable or owned
//! buffer itself. A read-only buffer must have gone through `prepare` for that model
//! ([`Prepared`]); loaded parameters borrowed read-only are refused, since the model
//! would run on whatever the rest of the buffer holds:
//!
//! ```
//! # dnnfusion::dnn! { pub model Wide(x: [4, 8]) -> [4, 16] { let fc = linear(x, 16); fc } }
//! use dnnfusion::{LoadError, Params, Prepared};
//! let mut buffer = vec![0.5; Wide::PARAM_LEN]; // loaded parameters first
//! assert!(Wide::LOADED_LEN < Wide::PARAM_LEN);
//! assert!(matches!(
//!     Wide::from_params(Params::borrowed(&buffer)),
//!     Err(LoadError::NotPrepared { .. })
//! ));
//! let prepared = Prepared::new::<Wide>(&mut buffer)?;
//! let model = Wide::from_params(Params::prepared(prepared))?;
//! let mut y = [0.0; 64];
//! model.run(&[1.0; 32], &mut y, &mut [0.0; Wide::ARENA_LEN]);
//! assert_eq!(y[0], 8.0 * 0.5 + 0.5);
//! # Ok::<(), LoadError>(())
//! ```
//!
//! The DSL is described on [`dnn!`]; the README has a tour and the op list.
//!
//! Weights load from safetensors files as PyTorch writes them: F32, F16, BF16 (exact)
//! and F64 (rounded) tensors become f32, batch-norm `num_batches_tracked` counters are
//! ignored, and a lenient load ([`LoadOptions::LENIENT`], PyTorch's `strict=False`)
//! skips the tensors the model does not use and names them
//! ([`load_safetensors_with`], or [`runtime::safetensors::load_into_with`] without an
//! allocator).
//!
//! Features: `alloc` adds `Model::from_safetensors` (owned weights) and [`infer`];
//! `std` adds ndarray interop ([`ModelExt`]) and [`npy`]; `threads` lets the kernels
//! split their work over a persistent pool (`runtime::threads::with_threads`).
#![no_std]

#[cfg(feature = "std")]
extern crate std;

// lets this crate's unit tests expand `dnn!`, whose paths start with `::dnnfusion`
#[cfg(test)]
extern crate self as dnnfusion;

/// Compiles network declarations into Rust items.
///
/// # Grammar
///
/// ```text
/// dnn! { item* }
/// item   := attrs vis? "model" Name "(" (input ":" ("i64" | "i32")? "[" dims "]"),* ")" "->" outputs "{" body "}"
///         | attrs "block" name "(" (param (":" "[" pattern "]")? ("=" default)?),* ")" "{" body "}"
/// outputs := "[" dims "]" | "(" (name ":")? "[" dims "]",* ")"
/// body   := stmt* result
/// stmt   := ("#[key = \"prefix\"]")? "let" "mut"? name "=" expr ";"
///         | ("#[key = \"prefix\"]")? "let" "(" name,* ")" "=" expr ";"
///         | ("#[key = \"prefix\"]")? name "=" expr ";"            // rebinds (loops)
///         | "for" i "in" start ".." end "{" stmt* "}"            // unrolled
///         | "fuse" "{" stmt* "}"                                 // these ops form one block
///         | "if" cond "{" stmt* "}" ("else" "if" cond "{" stmt* "}")* ("else" "{" stmt* "}")?
/// expr   := expr ("+" | "-" | "*" | "/" | "%") expr | "-" expr | "(" expr ")"
///         | op "(" args ")" | block "(" args ")" | name | number | "string" | "[" expr,* "]"
/// cond   := expr ("==" | "!=" | "<" | "<=" | ">" | ">=") expr | cond ("&&" | "||") cond | "!" cond
/// args   := positional first, then `keyword = value`, as in Python
/// ```
///
/// - Tensors are f32. Integers and floats are evaluated at compile time (`D / heads`,
///   `1.0 / sqrt(64)`); `tensor op number` is an elementwise op, `tensor op tensor`
///   broadcasts like numpy. An integer division that is not exact gives a float.
/// - Parameters are named after the `let` binding: `let conv1 = conv2d(x, 6, kernel = 5)`
///   owns `conv1.weight` and `conv1.bias`. `#[key = "features.0"]` on the statement, or
///   `key = "..."` in the call, uses another name. A block call pushes its binding (or
///   key) as a prefix for everything inside, so `#[key = "layers.{i}"] h = layer(h);` in
///   a loop names `layers.0.query.weight`, ... like a PyTorch `state_dict`.
/// - A block's tensor parameters may carry a shape pattern (`x: [B, S, D]`): names bind
///   to the caller's dimensions and can be used as integers in the body.
/// - Options go first, as inner attributes for every model (`#![fusion(off)]`,
///   `#![rewrite(off)]`, `#![rewrite(fast_math)]`) or as outer attributes on one model
///   (`#[fusion(off)]`, ...). Rewriting by mathematical properties is on by default with
///   the exact rules only; `fast_math` adds the rules that may change results beyond
///   rounding (README, "Floating-point policy"); `rewrite(max_rewrites = N)` stops after
///   N rewrites (to find the one that changes a result).
/// - `#[weights = "file.safetensors"]` on a model (feature `embed`; path relative to the
///   crate's Cargo.toml) reads, checks and prepares the weights at compile time and
///   compiles them in as static data: the model gets `const fn embedded()`, with nothing
///   to load at run time. A mismatched file is a compile error on the op owning the
///   tensor.
/// - `#[scalars("key" = 1.5, ...)]` on a model (the ONNX import writes it): one-value
///   tensors of the weights file that the model uses as the numbers written in its body.
///   The ONNX loaders (`from_onnx`, `from_onnx_in`, `#[weights = "file.onnx"]`) check that
///   the file holds exactly these values (`LoadError::ScalarDiffers` otherwise).
/// - `fuse { ... }` makes the ops of its statements one fused block (their bindings stay
///   visible after it); a group the fusion table forbids is a compile error naming both
///   ops and their mapping types.
/// - Attribute defaults follow PyTorch (`stride = 1`, `padding = 0`, `eps = 1e-5`,
///   `max_pool2d` stride = kernel, `flatten` from axis 1).
/// - `if`/`else` is decided at compile time on integers, floats, strings and booleans
///   (block parameters, dims of a shape pattern, loop variables): only the taken branch
///   is compiled, and its `let` bindings end with it; assign to a name bound before the
///   `if` to pass a tensor out (`if stride != 1 || C != planes { shortcut = ...; }`).
/// - Inputs are f32 unless declared `ids: i64[1, 128]` (or `i32`): integer indices for
///   `embedding` and `gather`, which `run` takes as `&[i64; N]`.
///
/// Each model becomes `struct Name<'p>` with consts `INPUT_SHAPES`, `OUTPUT_SHAPES`,
/// `ARENA_LEN`, `PARAM_LEN`, `LOADED_LEN`, `PARAMS`, `OP_COUNT`, `FUSION_REPORT`,
/// `FUSED_FUNCTIONS`, constructors `from_params`, `from_safetensors_in` (no allocation)
/// and, with `alloc`, `from_safetensors`; `prepare(buffer)`, which computes the ops that
/// read only parameters once, into the parameter buffer after the loaded parameters (see
/// [`Params`]); and
/// `run(&self, inputs.., outputs.., arena)` taking fixed-size arrays, which neither
/// allocates nor panics. It also implements [`Model`].
///
/// Every mistake is a compile error at the token at fault, for example:
///
/// ```compile_fail
/// dnnfusion::dnn! {
///     pub model Bad(x: [1, 3]) -> [1, 3] {
///         x + reshape(x, [3, 2])   // cannot reshape [1, 3] (3 elements) into [3, 2]
///     }
/// }
/// ```
#[doc = ""]
#[doc = include_str!("op_reference.md")]
pub use dnnfusion_macros::dnn;

pub use dnnfusion_runtime as runtime;
pub use dnnfusion_runtime::{LoadError, Model, ParamSpec, Params, Prepared, RunError};

pub use dnnfusion_runtime::LoadOptions;

#[cfg(feature = "alloc")]
pub use dnnfusion_runtime::{infer, load_safetensors_with, LoadReport};

/// The ndarray crate (feature `std`) that [`ModelExt`] and [`npy`] take and return, so
/// you can name its types without depending on the same version yourself.
#[cfg(feature = "std")]
pub use ndarray;

#[cfg(feature = "std")]
pub mod npy;

#[cfg(feature = "std")]
mod interop;
#[cfg(feature = "std")]
pub use interop::ModelExt;
