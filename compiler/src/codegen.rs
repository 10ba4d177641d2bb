//! Stage 8, `codegen`: a lowered model plus its [`MemoryPlan`] -> Rust items.
//!
//! The model becomes a struct holding its parameters and a `run` that calls one runtime
//! kernel per op, with every shape, stride and offset a literal, in graph order. `run`
//! never allocates; arena slices are named after the bindings they hold.
//!
//! ```text
//!   let fc1 = linear(x, 512);   ->   let (_, fc1) = rt::arena::regions(arena, [], (0, 512));
//!                                    rt::kernels::linear(&x[..], &p[0..401408],
//!                                        Some(&p[401408..401920]), fc1, 1, 784, 512);
//! ```
//!
//! A fused block becomes one function taking arrays of their exact lengths, its indices
//! folded over the loop ranges (the `index` module), so its loops carry no bounds checks; call
//! sites bind their operands under the function's parameter names:
//!
//! ```text
//!   let s = relu(x + y);   ->   fn blk00_add_relu(e0: &[f32; 24], e1: &[f32; 4], out: &mut [f32; 24]) {
//!   x: [1, 2, 3, 4]                 for i1 in 0..2 { for i2 in 0..3 { for i3 in 0..4 {
//!   y: [4]                              out[i1 * 12 + i2 * 4 + i3] = relu(e0[i1 * 12 + i2 * 4 + i3] + e1[i3]);
//!                                   } } }
//!                               }
//! ```
//!
//! Codegen reports no user errors: everything it sees was checked.

mod index;

use std::collections::HashMap;

use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote};

use crate::element::{self, broadcast_strides, row_major_strides, ElementProgram, Ex, Ix};
use crate::fuse::{self, Block, FusionPlan};
use crate::ir::*;
use crate::lower::ModelIr;
use crate::ops::unary::f32_lit;
use crate::ops::{conv, layout, norm, pool, product, reduce, select};
use crate::plan::{MemoryPlan, Slot};
use crate::work::{self, Stage};

/// Generates the items of one model.
pub fn codegen(
    model: &ModelIr,
    fusion: &FusionPlan,
    plan: &MemoryPlan,
    report: &crate::report::FusionReport,
    load: Option<&crate::LoadStage>,
    loaded_params: usize,
) -> TokenStream {
    let name = &model.name;
    let vis = &model.vis;
    let docs = &model.docs;
    let graph = &model.graph;
    let arena_len = plan.arena_len;
    let param_len = plan.param_len;
    let op_count = graph.nodes.len();
    let name_str = name.to_string();
    // the scalars compiled in (`#[scalars(...)]`, ONNX imports): listed for the loaders
    // (a safetensors file may hold them, checked as it is read), and checked by
    // `from_onnx_in` before it reads the parameters
    let (scalars_const, check_scalars) = if model.options.scalars.is_empty() {
        (quote! {}, quote! {})
    } else {
        let scalars = model
            .options
            .scalars
            .iter()
            .map(|(key, value)| quote! { (#key, #value) });
        (
            // (values read from a file: one may be close to a named constant)
            quote! {
                #[allow(clippy::approx_constant)]
                const SCALARS: &'static [(&'static str, f32)] = &[#(#scalars),*];
            },
            quote! { ::dnnfusion::runtime::onnx_weights::check_scalars(bytes, <Self as ::dnnfusion::runtime::Model>::SCALARS)?; },
        )
    };

    let input_shapes = graph.inputs.iter().map(|&v| shape_tokens(graph.shape(v)));
    let output_shapes = graph.outputs.iter().map(|&v| shape_tokens(graph.shape(v)));
    // where the loaded parameters go while loading: one after another, in declaration
    // order (`run` may read them elsewhere once `prepare` has compacted the buffer)
    let param_specs = graph.params.iter().take(loaded_params).scan(0usize, |offset, p| {
        let at = *offset;
        *offset += p.shape.iter().product::<usize>();
        let key = &p.key;
        let shape = shape_tokens(&p.shape);
        Some(quote! { ::dnnfusion::runtime::ParamSpec { name: #key, shape: #shape, offset: #at } })
    });

    let input_args: Vec<TokenStream> = graph
        .inputs
        .iter()
        .zip(&model.input_names)
        .zip(input_types(model))
        .map(|((&v, ident), ty)| {
            let len = graph.values.get(v).map_or(0, |v| v.len());
            quote! { #ident: &[#ty; #len] }
        })
        .collect();
    // integer indices become f32 on entry (exact up to 2^24; beyond, NaN, which `gather`
    // turns into NaN rows rather than a wrong row)
    // an input the graph does not read (rewriting can drop its last use) stays in the
    // signature, explicitly ignored
    let read = |position: usize| {
        let is_it = |v: &ValueId| {
            graph.values.get(*v).map(|v| &v.kind) == Some(&ValueKind::Input(position))
        };
        graph.nodes.iter().any(|n| n.inputs.iter().any(is_it))
            || plan.output_copies.iter().any(|(_, v)| is_it(v))
    };
    let input_bindings: Vec<TokenStream> = model
        .input_names
        .iter()
        .zip(&model.input_dtypes)
        .enumerate()
        .filter_map(|(position, (ident, dtype))| {
            if !read(position) {
                Some(quote! { let _ = #ident; })
            } else if *dtype != crate::lower::InputDtype::F32 {
                Some(quote! { let #ident = &::dnnfusion::runtime::indices_to_f32(#ident); })
            } else {
                None
            }
        })
        .collect();
    let slice_inputs: Vec<TokenStream> = model
        .input_dtypes
        .iter()
        .map(|d| match d {
            crate::lower::InputDtype::F32 => quote! { input },
            _ => quote! { input_indices },
        })
        .collect();
    let output_args: Vec<TokenStream> = graph
        .outputs
        .iter()
        .zip(&model.output_names)
        .map(|(&v, ident)| {
            let len = graph.values.get(v).map_or(0, |v| v.len());
            quote! { #ident: &mut [f32; #len] }
        })
        .collect();
    let input_idents = &model.input_names;
    let output_idents = &model.output_names;
    let input_positions: Vec<usize> = (0..input_idents.len()).collect();
    let output_positions: Vec<usize> = (0..output_idents.len()).collect();

    let mut block_fns: Vec<SharedFn> = Vec::new();
    let body = match steps(model, fusion, plan, ("blk", true), &mut block_fns) {
        Ok(body) => body,
        Err(error) => return error,
    };
    let (prepare_body, loaded_len, param_len) = match load {
        Some(stage) => match prepare_steps(model, plan, stage, loaded_params, &mut block_fns) {
            Ok(found) => found,
            Err(error) => return error,
        },
        None => (quote! { let _ = buffer; }, param_len, param_len),
    };
    let run_len = load.map_or(param_len, |stage| stage.layout.run_len());
    let fn_items = block_fns.iter().map(|(f, _, sites)| {
        let mut doc = format!(
            "{}\n\nCalled {}: the ops, what each parameter reads, where the result goes.",
            f.summary,
            plural(sites.len(), "time")
        );
        for site in sites {
            doc.push_str(&format!("\n- {site}"));
        }
        let body = &f.body;
        quote! { #[doc = #doc] #body }
    });
    let report_tokens = report.tokens();
    let fused_functions = block_fns.len();
    let uses_arena = arena_len > 0;
    let arena_binding = if uses_arena {
        quote! { let arena: &mut [f32] = &mut arena[..]; }
    } else {
        quote! { let _ = arena; }
    };
    let uses_params = plan.param_len > 0;
    let params_binding = if uses_params {
        quote! { let p: &[f32] = self.params.as_slice(); }
    } else {
        quote! {}
    };

    let mut run_doc = format!(
        "Runs the model: reads the inputs, writes the outputs, uses `arena` as scratch \
         ({arena_len} floats). No allocation. The ops, in order:\n"
    );
    for node in &graph.nodes {
        run_doc.push_str(&format!("\n- `{}`", describe(model, node)));
    }
    let mut struct_doc = format!(
        "Generated by `dnn!`: {op_count} ops, {loaded_params} parameters ({loaded_len} floats), {arena_len} floats of arena."
    );
    let mut prepare_doc = String::from(
        "Computes the load-time part of the parameter buffer from the loaded parameters at \
         its start; `from_params` calls it. This model has no load-time ops: it only checks \
         the length.",
    );
    if let Some(stage) = load {
        let ops = stage.graph.nodes.len();
        struct_doc.push_str(&format!(
            " {ops} ops read only parameters and run once, at load time (`prepare`)."
        ));
        prepare_doc = format!(
            "Computes the load-time part of the parameter buffer from the loaded parameters \
             (where `PARAMS` places them): the results of the {ops} ops that read only \
             parameters, which `run` reads as parameters, written at the buffer's start. \
             `run` reads only the first `RUN_LEN` floats afterwards (an owned buffer is cut to \
             that length). `from_params` calls it on a mutable or owned buffer; \
             `Prepared::new` calls it to make a buffer you then borrow read-only \
             (`Params::prepared`). \
             Errors when `buffer` does not hold exactly `PARAM_LEN` floats. The ops, in order:\n"
        );
        let load_model = load_model(model, stage);
        for node in &stage.graph.nodes {
            prepare_doc.push_str(&format!("\n- `{}`", describe(&load_model, node)));
        }
    }
    let doc_gap = if docs.is_empty() {
        quote! {}
    } else {
        quote! { #[doc = ""] }
    };
    quote! {
        #(#docs)*
        #doc_gap
        #[doc = #struct_doc]
        #vis struct #name<'p> {
            params: ::dnnfusion::runtime::Params<'p>,
        }

        impl<'p> #name<'p> {
            /// The model's name.
            pub const NAME: &'static str = #name_str;
            /// Shapes of the inputs, in order.
            pub const INPUT_SHAPES: &'static [&'static [usize]] = &[#(#input_shapes),*];
            /// Shapes of the outputs, in order.
            pub const OUTPUT_SHAPES: &'static [&'static [usize]] = &[#(#output_shapes),*];
            /// Floats of scratch memory `run` needs.
            pub const ARENA_LEN: usize = #arena_len;
            /// Floats of the parameter buffer while it loads: what [`Self::prepare`]
            /// computes, the loaded parameters, scratch (see [`::dnnfusion::runtime::Params`]).
            pub const PARAM_LEN: usize = #param_len;
            /// Floats of the loaded parameters.
            pub const LOADED_LEN: usize = #loaded_len;
            /// Floats `run` reads, at the start of the parameter buffer, once prepared.
            pub const RUN_LEN: usize = #run_len;
            /// Every loaded parameter: its key, shape and offset in the flat buffer.
            pub const PARAMS: &'static [::dnnfusion::runtime::ParamSpec] = &[#(#param_specs),*];
            /// Ops `run` executes (after rewriting, without the ones `prepare` runs at load).
            pub const OP_COUNT: usize = #op_count;
            /// What the compiler did: ops, fused blocks, intermediate bytes before/after.
            pub const FUSION_REPORT: ::dnnfusion::runtime::FusionReport = #report_tokens;
            /// Distinct functions generated for fused blocks (identical blocks share one).
            pub const FUSED_FUNCTIONS: usize = #fused_functions;

            /// Wraps a flat parameter buffer of [`Self::PARAM_LEN`] floats laid out as
            /// [`Self::PARAMS`] says; runs [`Self::prepare`] on a mutable or owned buffer.
            /// A read-only buffer must come prepared for this model
            /// ([`::dnnfusion::runtime::Params::prepared`]) unless the model has nothing to
            /// prepare (`LOADED_LEN == PARAM_LEN`); otherwise the error is `NotPrepared`.
            pub fn from_params(mut params: ::dnnfusion::runtime::Params<'p>) -> ::core::result::Result<Self, ::dnnfusion::runtime::LoadError> {
                params.check_len(Self::PARAM_LEN)?;
                if let ::core::option::Option::Some(buffer) = params.as_mut_slice() {
                    Self::prepare(buffer)?;
                    params.keep_first(Self::RUN_LEN);
                } else {
                    params.check_prepared::<Self>()?;
                }
                ::core::result::Result::Ok(Self { params })
            }

            /// Reads a safetensors file into `buffer` of [`Self::PARAM_LEN`] floats (no
            /// allocation), prepares it and borrows it.
            pub fn from_safetensors_in(bytes: &[u8], buffer: &'p mut [f32]) -> ::core::result::Result<Self, ::dnnfusion::runtime::LoadError> {
                ::dnnfusion::runtime::safetensors::load_into_with(bytes, Self::PARAMS, <Self as ::dnnfusion::runtime::Model>::SCALARS, buffer, ::dnnfusion::runtime::LoadOptions::STRICT, |_| {})?;
                Self::from_params(::dnnfusion::runtime::Params::borrowed_mut(buffer))
            }

            /// Reads the initializers of an ONNX file (the model's parameters, by name) into
            /// `buffer` of [`Self::PARAM_LEN`] floats (no allocation), prepares it and borrows it.
            pub fn from_onnx_in(bytes: &[u8], buffer: &'p mut [f32]) -> ::core::result::Result<Self, ::dnnfusion::runtime::LoadError> {
                #check_scalars
                ::dnnfusion::runtime::onnx_weights::load_into(bytes, Self::PARAMS, buffer)?;
                Self::from_params(::dnnfusion::runtime::Params::borrowed_mut(buffer))
            }

            /// Reads the parameters in place from a safetensors file kept in memory (a
            /// `static`, flash): no copy, no buffer. Only for a model with nothing to
            /// prepare, and a file whose F32 tensors lie in declaration order at an aligned
            /// address (see `runtime::safetensors::in_place`); otherwise an error says why.
            pub fn from_safetensors_in_place(bytes: &'p [u8]) -> ::core::result::Result<Self, ::dnnfusion::runtime::LoadError> {
                let floats = ::dnnfusion::runtime::safetensors::in_place(bytes, Self::PARAMS)?;
                Self::from_params(::dnnfusion::runtime::Params::borrowed(floats))
            }

            #[doc = #prepare_doc]
            pub fn prepare(buffer: &mut [f32]) -> ::core::result::Result<(), ::dnnfusion::runtime::LoadError> {
                if buffer.len() != Self::PARAM_LEN {
                    return ::core::result::Result::Err(::dnnfusion::runtime::LoadError::BufferLength { expected: Self::PARAM_LEN, found: buffer.len() });
                }
                #prepare_body
                ::core::result::Result::Ok(())
            }

            /// The flat parameter buffer.
            pub fn params(&self) -> &[f32] {
                self.params.as_slice()
            }

            #[doc = #run_doc]
            #[allow(clippy::too_many_arguments)]
            pub fn run(&self, #(#input_args,)* #(#output_args,)* arena: &mut [f32; #arena_len]) {
                self.run_observed(#(#input_idents,)* #(#output_idents,)* arena, &mut |_| {});
            }

            /// [`Self::run`], calling `observe(block)` as each block of
            /// `FUSION_REPORT.block_list` finishes (its index there), in order: a clock read
            /// there times each block of the model (`bench --blocks`).
            #[allow(clippy::too_many_arguments)]
            pub fn run_observed(&self, #(#input_args,)* #(#output_args,)* arena: &mut [f32; #arena_len], observe: &mut dyn ::core::ops::FnMut(usize)) {
                #(#input_bindings)*
                #params_binding
                #arena_binding
                #(#body)*
            }
        }

        impl<'p> #name<'p> {
            #(#fn_items)*
        }

        impl ::core::fmt::Debug for #name<'_> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(#name_str).field("params", &self.params).finish()
            }
        }

        impl<'p> ::dnnfusion::runtime::Model for #name<'p> {
            const NAME: &'static str = #name_str;
            const INPUT_SHAPES: &'static [&'static [usize]] = Self::INPUT_SHAPES;
            const OUTPUT_SHAPES: &'static [&'static [usize]] = Self::OUTPUT_SHAPES;
            const ARENA_LEN: usize = #arena_len;
            const PARAM_LEN: usize = #param_len;
            const LOADED_LEN: usize = #loaded_len;
            const RUN_LEN: usize = #run_len;
            const PARAMS: &'static [::dnnfusion::runtime::ParamSpec] = Self::PARAMS;
            #scalars_const
            const OP_COUNT: usize = #op_count;
            const FUSION_REPORT: ::dnnfusion::runtime::FusionReport = Self::FUSION_REPORT;

            fn from_static_params(params: ::dnnfusion::runtime::Params<'static>) -> ::core::result::Result<Self, ::dnnfusion::runtime::LoadError> {
                Self::from_params(params)
            }

            fn prepare(buffer: &mut [f32]) -> ::core::result::Result<(), ::dnnfusion::runtime::LoadError> {
                Self::prepare(buffer)
            }

            fn run_slices_observed(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]], arena: &mut [f32], observe: &mut dyn ::core::ops::FnMut(usize)) -> ::core::result::Result<(), ::dnnfusion::runtime::RunError> {
                ::dnnfusion::runtime::RunError::check_counts(inputs.len(), outputs.len(), Self::INPUT_SHAPES.len(), Self::OUTPUT_SHAPES.len())?;
                #(
                    let #input_idents = &::dnnfusion::runtime::RunError::#slice_inputs(inputs, #input_positions)?;
                )*
                let [#(#output_idents),*] = outputs else {
                    return ::core::result::Result::Err(::dnnfusion::runtime::RunError::OutputCount { expected: Self::OUTPUT_SHAPES.len(), found: 0 });
                };
                #(
                    let #output_idents = ::dnnfusion::runtime::RunError::output(#output_idents, #output_positions)?;
                )*
                let arena = ::dnnfusion::runtime::RunError::arena(arena)?;
                self.run_observed(#(#input_idents,)* #(#output_idents,)* arena, observe);
                ::core::result::Result::Ok(())
            }
        }

        ::dnnfusion::runtime::__with_alloc! {
            impl #name<'static> {
                /// Loads and validates a safetensors file (PyTorch `state_dict` names).
                pub fn from_safetensors(bytes: &[u8]) -> ::core::result::Result<Self, ::dnnfusion::runtime::LoadError> {
                    ::dnnfusion::runtime::load_safetensors(bytes)
                }

                /// Loads and validates the initializers of an ONNX file (a model imported
                /// with `onnx("...")` names its parameters after them).
                pub fn from_onnx(bytes: &[u8]) -> ::core::result::Result<Self, ::dnnfusion::runtime::LoadError> {
                    ::dnnfusion::runtime::load_onnx(bytes)
                }
            }
        }
    }
}

/// A generated block function, the key that identifies its body, and its call sites.
type SharedFn = (BlockFn, String, Vec<String>);

/// The statements that execute `fusion`'s blocks in order (one kernel call or one fused
/// function call each), then copy the outputs that are not written in place. Block
/// functions go to `block_fns`, named `{prefix}NN_ops` and shared by identical blocks.
/// When `observed`, each block the fusion report lists is followed by `observe(k)`, `k`
/// its index in the report's `block_list` (`report::FusionReport::new` skips the same
/// aliases).
fn steps(
    model: &ModelIr,
    fusion: &FusionPlan,
    plan: &MemoryPlan,
    (prefix, observed): (&str, bool),
    block_fns: &mut Vec<SharedFn>,
) -> Result<Vec<TokenStream>, TokenStream> {
    let graph = &model.graph;
    let names = value_idents(model);
    work::add(Stage::Codegen, graph.nodes.len() + graph.values.len());
    let mut body = Vec::new();
    let mut context = BlockContext {
        facts: fuse::Facts::new(graph),
        runs: HashMap::new(),
    };
    // the blocks the fusion report lists so far (all but the aliases)
    let mut reported = 0usize;
    // the shared functions by key, so that finding one does not scan them all
    let mut shared: HashMap<String, usize> = block_fns
        .iter()
        .enumerate()
        .map(|(k, (_, key, _))| (key.clone(), k))
        .collect();
    for (index, block) in fusion.blocks.iter().enumerate() {
        let sink = block.sink();
        let Some(sink_node) = graph.nodes.get(sink) else {
            continue;
        };
        if let (Some(Slot::Alias(_)), [_]) =
            (plan.slots.get(sink_node.output), block.nodes.as_slice())
        {
            // a reshape whose result shares its operand's memory: nothing to run
            continue;
        }
        let observe = observed.then(|| {
            let k = reported;
            quote! { observe(#k); }
        });
        reported += 1;
        if plan.concatenated_in_place(sink_node.output) {
            // a concatenation whose operands were stored in its range: nothing to run
            body.extend(observe);
            continue;
        }
        if let [only] = block.nodes.as_slice() {
            if let Some(node) = graph.nodes.get(*only) {
                body.push(node_call(model, plan, &names, node));
            }
            body.extend(observe);
            continue;
        }
        // a pooling planned in place reads and writes one range of the arena: its operand
        // and result are slices of the input's length, not arrays of their own
        let in_place = plan.overwrites(sink_node.output);
        let Some(f) = block_fn(model, block, (prefix, index), in_place, &mut context) else {
            let msg = format!(
                "internal error in `codegen`: block {index} of `{}` cannot be generated; please report",
                model.name
            );
            return Err(quote! { ::core::compile_error!(#msg); });
        };
        // identical blocks (same ops, same shapes) share one function: compare bodies
        // without the function's name; this call site's operands come in the same order
        let key = f.body.to_string().replacen(&f.name.to_string(), "", 1);
        work::add(Stage::Codegen, block.nodes.len() + key.len());
        let (own, params) = (f.operands.clone(), f.params.clone());
        let site = describe_site(model, plan, block, (&own, &params));
        let found = shared.get(&key).and_then(|&k| block_fns.get_mut(k));
        let call_name = match found {
            Some((function, _, sites)) => {
                sites.push(site);
                function.name.clone()
            }
            None => {
                let n = f.name.clone();
                shared.insert(key.clone(), block_fns.len());
                block_fns.push((f, key, vec![site]));
                n
            }
        };
        let (bind, idents, out_name) =
            bind_step(model, plan, &names, (&own, &params), sink_node.output);
        // the function takes arrays of the exact lengths: `fixed` states them once here
        let args = idents.iter().zip(&own).map(|(ident, &v)| {
            if in_place == Some(v) {
                quote! { #ident }
            } else {
                quote! { ::dnnfusion::runtime::arena::fixed(#ident) }
            }
        });
        let out_arg = match in_place {
            Some(_) => quote! { #out_name },
            None => quote! { ::dnnfusion::runtime::arena::fixed_mut(#out_name) },
        };
        body.push(quote! {
            {
                #bind
                Self::#call_name(#(#args,)* #out_arg);
            }
        });
        body.extend(observe);
    }
    for &(position, value) in &plan.output_copies {
        let dst = model
            .output_names
            .get(position)
            .cloned()
            .unwrap_or_else(|| format_ident!("output"));
        let src = read_expr(model, plan, &names, value);
        body.push(quote! { #dst.copy_from_slice(#src); });
    }
    Ok(body)
}

/// The load-time graph seen as a model: no inputs, one output per derived parameter
/// (`derived0`, ...), so that [`steps`] can generate it.
fn load_model(model: &ModelIr, stage: &crate::LoadStage) -> ModelIr {
    ModelIr {
        name: model.name.clone(),
        vis: model.vis.clone(),
        docs: Vec::new(),
        options: model.options.clone(),
        graph: stage.graph.clone(),
        input_names: Vec::new(),
        input_dtypes: Vec::new(),
        output_names: (0..stage.graph.outputs.len())
            .map(|k| format_ident!("derived{}", k))
            .collect(),
        fuse_groups: Vec::new(),
    }
}

/// The body of `prepare`: split the buffer into the loaded parameters (`p`), the derived
/// tensors (one `&mut` each, in the order `layout_params` gave them) and scratch
/// (`arena`), run the load-time graph, then compact the buffer to `run`'s layout. Also
/// returns the loaded length and the whole buffer's length.
fn prepare_steps(
    model: &ModelIr,
    run_plan: &MemoryPlan,
    stage: &crate::LoadStage,
    loaded_params: usize,
    block_fns: &mut Vec<SharedFn>,
) -> Result<(TokenStream, usize, usize), TokenStream> {
    let graph = &model.graph;
    let layout = &stage.layout;
    let (loaded_len, derived_len, live_len, derived_start) = (
        layout.loaded_len,
        layout.derived_len,
        layout.live_len,
        layout.derived_start,
    );
    // (a derived block that moves past the loaded parameters, to its cache line, ends
    // before the buffer's last float: the mark `compact` leaves)
    let param_len =
        (loaded_len + derived_len + stage.memory.arena_len).max(if derived_start > loaded_len {
            layout.run_len() + 1
        } else {
            0
        });
    let mut ranges = Vec::new();
    for param in graph.params.iter().skip(loaded_params) {
        let Some(Slot::Param { offset, len }) = run_plan.slots.get(param.value) else {
            let msg = format!(
                "internal error in `codegen`: a derived parameter of `{}` has no place; please report",
                model.name
            );
            return Err(quote! { ::core::compile_error!(#msg); });
        };
        let start = offset - derived_start;
        ranges.push(quote! { (#start, #len) });
    }
    let load_model = load_model(model, stage);
    let outputs = &load_model.output_names;
    let body = steps(
        &load_model,
        &stage.fusion,
        &stage.memory,
        ("load", false),
        block_fns,
    )?;
    // the padding between derived parameters (each on a cache line) made zeros, as in an
    // embedded buffer
    let lens: usize = layout.derived.iter().map(|&(_, len)| len).sum();
    let clear = if lens < derived_len {
        quote! { derived.fill(0.0); }
    } else {
        quote! {}
    };
    let arena_binding = if stage.memory.arena_len > 0 {
        quote! {}
    } else {
        quote! { let _ = arena; }
    };
    let moves = layout
        .moves
        .iter()
        .filter(|(from, to, _)| from != to)
        .map(|(from, to, len)| quote! { (#from, #to, #len) });
    let compacts = layout.run_len() < param_len;
    let (check, compact) = if compacts {
        (
            quote! { ::dnnfusion::runtime::prepare::check_unprepared(buffer, Self::NAME)?; },
            quote! {
                ::dnnfusion::runtime::prepare::compact(
                    buffer,
                    &[#(#moves),*],
                    (#loaded_len, #derived_len, #live_len, #derived_start),
                );
            },
        )
    } else {
        (quote! {}, quote! {})
    };
    Ok((
        quote! {
            #check
            {
                let (p, derived) = buffer.split_at_mut(#loaded_len);
                let p: &[f32] = p;
                let (derived, arena) = derived.split_at_mut(#derived_len);
                #clear
                let [#(#outputs),*] = ::dnnfusion::runtime::arena::disjoint(derived, [#(#ranges),*]);
                #arena_binding
                #(#body)*
            }
            #compact
        },
        loaded_len,
        param_len,
    ))
}

/// The element type of each input in `run`'s signature.
fn input_types(model: &ModelIr) -> Vec<TokenStream> {
    model
        .input_dtypes
        .iter()
        .map(|d| match d {
            crate::lower::InputDtype::F32 => quote! { f32 },
            crate::lower::InputDtype::I64 => quote! { i64 },
            crate::lower::InputDtype::I32 => quote! { i32 },
        })
        .collect()
}

fn shape_tokens(shape: &[usize]) -> TokenStream {
    quote! { &[#(#shape),*] }
}

/// A Rust identifier per value: the binding name, sanitized and made unique.
fn value_idents(model: &ModelIr) -> Vec<Ident> {
    let mut used = std::collections::HashSet::new();
    for n in model.input_names.iter().chain(&model.output_names) {
        used.insert(n.to_string());
    }
    for reserved in ["p", "arena", "self"] {
        used.insert(reserved.to_string());
    }
    model
        .graph
        .values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let mut base: String = v
                .name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            if base.starts_with('_')
                || base.is_empty()
                || base.starts_with(|c: char| c.is_ascii_digit())
            {
                base = format!("t{}", base.trim_start_matches('_'));
            }
            if let ValueKind::Input(pos) = v.kind {
                if let Some(n) = model.input_names.get(pos) {
                    return n.clone();
                }
            }
            let mut name = base.clone();
            if used.contains(&name) || syn::parse_str::<syn::Ident>(&name).is_err() {
                name = format!("{base}_v{i}");
            }
            used.insert(name.clone());
            Ident::new(&name, Span::call_site())
        })
        .collect()
}

/// An expression of type `&[f32]` reading a value.
fn read_expr(model: &ModelIr, plan: &MemoryPlan, names: &[Ident], value: ValueId) -> TokenStream {
    match plan.storage(value) {
        Some(Slot::Input(pos)) => {
            let ident = model
                .input_names
                .get(*pos)
                .cloned()
                .unwrap_or_else(|| format_ident!("input"));
            quote! { &#ident[..] }
        }
        Some(Slot::Param { offset, len }) => {
            let end = offset + len;
            quote! { &p[#offset..#end] }
        }
        Some(Slot::Output(pos)) => {
            let ident = model
                .output_names
                .get(*pos)
                .cloned()
                .unwrap_or_else(|| format_ident!("output"));
            quote! { &#ident[..] }
        }
        Some(Slot::Arena { offset, len }) => {
            let end = offset + len;
            let _ = names;
            quote! { &arena[#offset..#end] }
        }
        Some(Slot::Fused | Slot::Alias(_)) | None => quote! { &[] },
    }
}

/// Binds the operands of one step (reading the arena through `regions`, the rest
/// directly) under `operand_names` (the callee's parameter names) and its output as
/// `out_name`. A pooling planned in place gets its input as an empty slice and, as its
/// output, the input's whole range, which the kernels read as "in place".
fn bind_step(
    model: &ModelIr,
    plan: &MemoryPlan,
    names: &[Ident],
    (operands, operand_names): (&[ValueId], &[Ident]),
    output: ValueId,
) -> (TokenStream, Vec<Ident>, Ident) {
    let out_name = names
        .get(output)
        .cloned()
        .unwrap_or_else(|| format_ident!("out"));
    let mut arena_reads = Vec::new();
    let mut operand_idents = Vec::new();
    let mut direct = Vec::new();
    let overwritten = plan.overwrites(output);
    for (&v, ident) in operands.iter().zip(operand_names) {
        let ident = ident.clone();
        match plan.storage(v) {
            _ if overwritten == Some(v) => direct.push(quote! { let #ident: &[f32] = &[]; }),
            Some(Slot::Arena { offset, len }) => arena_reads.push((ident.clone(), *offset, *len)),
            _ => {
                let expr = read_expr(model, plan, names, v);
                direct.push(quote! { let #ident: &[f32] = #expr; });
            }
        }
        operand_idents.push(ident);
    }
    let read_idents: Vec<&Ident> = arena_reads.iter().map(|(i, _, _)| i).collect();
    let read_ranges: Vec<TokenStream> = arena_reads
        .iter()
        .map(|(_, o, l)| quote! { (#o, #l) })
        .collect();
    let bind = match plan.slots.get(output) {
        Some(Slot::Output(pos)) => {
            let ident = model
                .output_names
                .get(*pos)
                .cloned()
                .unwrap_or_else(|| format_ident!("output"));
            if arena_reads.is_empty() {
                quote! { let #out_name: &mut [f32] = &mut #ident[..]; }
            } else {
                quote! {
                    let [#(#read_idents),*] = ::dnnfusion::runtime::arena::reads(arena, [#(#read_ranges),*]);
                    let #out_name: &mut [f32] = &mut #ident[..];
                }
            }
        }
        Some(Slot::Arena { offset, len }) => {
            let (offset, len) = match overwritten.and_then(|v| plan.storage(v)) {
                Some(Slot::Arena { offset, len }) => (offset, len),
                _ => (offset, len),
            };
            quote! {
                let ([#(#read_idents),*], #out_name) = ::dnnfusion::runtime::arena::regions(arena, [#(#read_ranges),*], (#offset, #len));
            }
        }
        _ => quote! { let #out_name: &mut [f32] = &mut []; },
    };
    (quote! { #(#direct)* #bind }, operand_idents, out_name)
}

/// One node on its own: bind its operands and output, then call its kernel.
fn node_call(model: &ModelIr, plan: &MemoryPlan, names: &[Ident], node: &Node) -> TokenStream {
    let graph = &model.graph;
    let ins: Vec<Ident> = (0..node.inputs.len())
        .map(|k| format_ident!("in{}", k))
        .collect();
    let (bind, operand_idents, out_name) =
        bind_step(model, plan, names, (&node.inputs, &ins), node.output);
    let shapes: Vec<&[usize]> = node.inputs.iter().map(|&v| graph.shape(v)).collect();
    let out_shape = graph.shape(node.output);
    let store = Epilogue {
        apply: quote! { ::dnnfusion::runtime::kernels::store },
        store: None,
        rows: Some(quote! { ::dnnfusion::runtime::kernels::store_rows }),
        identity: true,
    };
    let call = kernel_call(
        &node.op,
        &operand_idents,
        &shapes,
        &out_name,
        out_shape,
        &store,
    );
    quote! {
        {
            #bind
            #call
        }
    }
}

/// The generated function of a fused block: its parameters are the anchor's operands,
/// then the values the element program loads, then `out`, each an array of its exact
/// length.
struct BlockFn {
    /// `blk03_conv2d_batch_norm_relu`
    name: Ident,
    /// Values passed, in parameter order.
    operands: Vec<ValueId>,
    /// The parameter receiving each operand (`in0`, `p0`, `e0`, ...); call sites bind
    /// their operands under the same names.
    params: Vec<Ident>,
    /// What the function does, for its doc.
    summary: String,
    /// The function item (without its doc).
    body: TokenStream,
}

/// What [`block_fn`] reuses from one block to the next of the same graph.
struct BlockContext<'g> {
    /// The graph's consumers and mapping types, computed once.
    facts: fuse::Facts<'g>,
    /// [`element::contiguous_run`] and [`element::column_step`] of each store map, shape
    /// and row length met so far: they walk every element, and the layers of a deep model
    /// repeat the same few maps.
    runs: HashMap<(Ix, Vec<usize>, usize), (usize, usize)>,
}

/// Builds the function of a multi-node block; `None` when the block is not expressible
/// (the planner only makes expressible blocks, so this is an internal error).
fn block_fn(
    model: &ModelIr,
    block: &Block,
    (prefix, index): (&str, usize),
    in_place: Option<ValueId>,
    context: &mut BlockContext<'_>,
) -> Option<BlockFn> {
    let graph = &model.graph;
    // the block as the planner decided it (the plan executor runs the same description)
    let fuse::BlockForm {
        mut program,
        store_chain: chain,
        store_map,
        anchor: anchor_form,
    } = fuse::block_form(&context.facts, block).ok()?;
    let first_table = program.operands.len();
    let mut tables = hoist(&mut program);
    simplify_program(&mut program, &mut tables);
    // (parameter name, value) in parameter order
    let mut params: Vec<(Ident, ValueId)> = Vec::new();
    let mut stmts = Vec::new();
    let names: Vec<&str> = block
        .nodes
        .iter()
        .filter_map(|&n| graph.nodes.get(n).map(|n| n.op.name()))
        .collect();
    let name = format_ident!("{}{:02}_{}", prefix, index, names.join("_"));
    let out = format_ident!("out");
    let loads = program
        .operands
        .iter()
        .enumerate()
        .map(|(k, &v)| (format_ident!("e{}", k), v));
    let epilogue_ops = block.nodes.len() - 1 - chain.len();
    let summary;
    if let Some(anchor) = block.anchor {
        let node = graph.nodes.get(anchor)?;
        let ins: Vec<Ident> = (0..node.inputs.len())
            .map(|k| format_ident!("in{}", k))
            .collect();
        // how the kernel reads its operands: as stored, through a pad folded into a
        // conv's padding, or with operand 0 computed by the prologue
        let prologue = fuse::prologue_in(&context.facts, block);
        let form = anchor_form?;
        let shapes: Vec<&[usize]> = form.operands.iter().map(|&v| graph.shape(v)).collect();
        let op = form.op.clone();
        match form.prologue.as_slice() {
            [] => {
                params.extend(ins.iter().cloned().zip(form.operands.iter().copied()));
            }
            feeds => {
                let sub = Block {
                    nodes: feeds.to_vec(),
                    anchor: None,
                    mapping: block.mapping,
                };
                let mut pro = element::build(graph, &sub)?;
                let pro_first = pro.operands.len();
                let mut pro_tables = hoist(&mut pro);
                simplify_program(&mut pro, &mut pro_tables);
                stmts.push(table_stmts(&pro_tables, pro_first, "p"));
                let in0 = ins.first()?;
                let source = prologue_source(&pro, kernel_rows(&op, &pro.shape).prologue);
                params.extend(
                    ins.iter()
                        .cloned()
                        .zip(form.operands.iter().copied())
                        .skip(1),
                );
                params.extend(
                    pro.operands
                        .iter()
                        .enumerate()
                        .map(|(k, &v)| (format_ident!("p{}", k), v)),
                );
                stmts.push(quote! { let #in0 = #source; });
            }
        }
        params.extend(loads);
        stmts.push(table_stmts(&tables, first_table, "e"));
        let epilogue = epilogue_closure(&program);
        let store = if chain.is_empty() {
            None
        } else {
            let map = store_map.clone()?;
            // the kernel's rows: the anchor's output rows (the program's shape may split
            // them, as a reshape into heads does)
            let width = graph.shape(node.output).last().copied().unwrap_or(1);
            let (run, step) = *context
                .runs
                .entry((map.clone(), program.shape.clone(), width))
                .or_insert_with(|| {
                    let run = element::contiguous_run(&map, &program.shape);
                    // (the step matters only to maps without runs)
                    let step = if run == 1 {
                        element::column_step(&map, &program.shape, width)
                    } else {
                        0
                    };
                    (run, step)
                });
            let map = index::simplify(&map, &program.shape);
            let mut used = vec![false; program.shape.len()];
            index::mark_vars(&map, &mut used);
            let vars = index_vars(&program.shape, &used, "o");
            let target = index::tokens(&map);
            let o = binding("o", used.contains(&true));
            Some((quote! { |#o: usize| -> usize { #vars #target } }, run, step))
        };
        let rows = kernel_rows(&op, graph.shape(node.output))
            .epilogue
            .and_then(|len| row_closure(&program, len, "e"));
        let mut parts = Vec::new();
        if !prologue.is_empty() {
            parts.push(format!(
                "a fused prologue of {}",
                plural(prologue.len(), "op")
            ));
        }
        if epilogue_ops > prologue.len() {
            let kind = if rows.is_some() {
                "row epilogue"
            } else {
                "epilogue"
            };
            let ops = plural(epilogue_ops - prologue.len(), "op");
            parts.push(format!("a fused {kind} of {ops}"));
        }
        if !chain.is_empty() {
            parts.push(format!(
                "a store map for {}",
                plural(chain.len(), "layout op")
            ));
        }
        summary = format!(
            "One call of the `{}` kernel (the anchor, {}){}{}.",
            node.op.name(),
            crate::tables::classify(graph, node).name(),
            if parts.is_empty() { "" } else { " with " },
            parts.join(", ")
        );
        stmts.push(kernel_call(
            &op,
            &ins,
            &shapes,
            &out,
            graph.shape(node.output),
            &Epilogue {
                apply: epilogue,
                store,
                rows,
                identity: is_identity(&program),
            },
        ));
    } else {
        params.extend(loads);
        stmts.push(table_stmts(&tables, first_table, "e"));
        stmts.push(element_loops(&program));
        summary = format!(
            "One loop nest over {} (no anchor): each element of the result computed once, \
             layout ops as index arithmetic.",
            crate::check::fmt_shape(&program.shape)
        );
    }
    let len = |v: ValueId| graph.values.get(v).map_or(0, |v| v.len());
    let out_len = graph
        .nodes
        .get(block.sink())
        .map_or(0, |sink| len(sink.output));
    let param_tokens = params.iter().map(|(ident, v)| {
        let n = proc_macro2::Literal::usize_unsuffixed(len(*v));
        if in_place == Some(*v) {
            quote! { #ident: &[f32] }
        } else {
            quote! { #ident: &[f32; #n] }
        }
    });
    let out_len = proc_macro2::Literal::usize_unsuffixed(out_len);
    let out_type = match in_place {
        Some(_) => quote! { &mut [f32] },
        None => quote! { &mut [f32; #out_len] },
    };
    // `out` is a parameter too
    let allow = if params.len() + 1 > 7 {
        quote! { #[allow(clippy::too_many_arguments)] }
    } else {
        quote! {}
    };
    let body = quote! {
        #allow
        fn #name(#(#param_tokens,)* #out: #out_type) {
            #(#stmts)*
        }
    };
    let (params, operands) = params.into_iter().unzip();
    Some(BlockFn {
        name,
        operands,
        params,
        summary: format!(
            "{summary} Mapping type of the block: {}.",
            block.mapping.name()
        ),
        body,
    })
}

/// `ex` as Rust, loading operand `k` from `<prefix>k`.
fn ex_tokens(ex: &Ex, prefix: &str) -> TokenStream {
    let ex_tokens = |e: &Ex| ex_tokens(e, prefix);
    match ex {
        Ex::Load(k, ix) => {
            let e = format_ident!("{}{}", prefix, k);
            let i = index::tokens(ix);
            quote! { #e[#i] }
        }
        Ex::Anchor => quote! { acc },
        Ex::Const(c) => f32_lit(*c),
        Ex::Unary(op, a) => unary_expr(*op, &operand(a, prefix, op.binds().1)),
        Ex::Binary(op, a, b) => {
            let (_, left, right) = op.binds();
            binary_expr(*op, &operand(a, prefix, left), &operand(b, prefix, right))
        }
        Ex::Select(c, a, b) => {
            let (c, a, b) = (operand(c, prefix, 1), ex_tokens(a), ex_tokens(b));
            quote! { if #c != 0.0 { #a } else { #b } }
        }
        Ex::Prelu(x, s) => {
            let (x, s) = (ex_tokens(x), operand(s, prefix, 2));
            quote! { { let v: f32 = #x; if v < 0.0 { #s * v } else { v } } }
        }
        Ex::InRange {
            index,
            lo,
            hi,
            then,
            otherwise,
        } => {
            let i = index::tokens(index);
            let (t, o) = (ex_tokens(then), ex_tokens(otherwise));
            let from_zero = *lo == 0;
            let (lo, hi) = (
                proc_macro2::Literal::usize_unsuffixed(*lo),
                proc_macro2::Literal::usize_unsuffixed(*hi),
            );
            if from_zero {
                quote! { if #i < #hi { #t } else { #o } }
            } else {
                let i = index::operand_tokens(index);
                quote! { if (#lo..#hi).contains(&#i) { #t } else { #o } }
            }
        }
        Ex::Let(k) => {
            let t = format_ident!("t{}", k);
            quote! { #t }
        }
    }
}

/// How tightly `ex` binds as Rust: 1 for `+` and `-`, 2 for `*` and `/`, 3 for a
/// negation, 9 for a name, literal, element read or call; 0 for a block or an `if`
/// (always parenthesized as an operand).
fn level(ex: &Ex) -> u8 {
    match ex {
        Ex::Load(..) | Ex::Anchor | Ex::Const(_) | Ex::Let(_) => 9,
        Ex::Binary(op, ..) => op.binds().0,
        Ex::Unary(op, _) => op.binds().0,
        Ex::Select(..) | Ex::Prelu(..) | Ex::InRange { .. } => 0,
    }
}

/// `ex` where an operand must bind at least as tightly as `at_least` (see [`level`]),
/// parenthesized when it does not.
fn operand(ex: &Ex, prefix: &str, at_least: u8) -> TokenStream {
    let tokens = ex_tokens(ex, prefix);
    if level(ex) < at_least {
        quote! { (#tokens) }
    } else {
        tokens
    }
}

/// Per-axis tables hoisted out of the element loop: a subexpression that reads only
/// operands indexed by one output axis (a batch norm's `w / sqrt(var + eps)` per channel)
/// is computed once per index of that axis, into a local array, instead of once per
/// element. The program is rewritten to load the table like an operand: table `t` becomes
/// operand `operands.len() + t`, so it prints as `<prefix><k>` like the others.
struct Hoisted {
    /// (axis, length, expression over `Var(axis)`) per table.
    tables: Vec<(usize, usize, Ex)>,
}

/// Largest axis a table is made for (keeps the stack arrays small).
const MAX_TABLE_LEN: usize = 4096;

fn hoist(program: &mut ElementProgram) -> Hoisted {
    let first = program.operands.len();
    let mut hoisted = Hoisted { tables: Vec::new() };
    let shape = program.shape.clone();
    for e in program
        .lets
        .iter_mut()
        .chain(std::iter::once(&mut program.value))
    {
        hoist_ex(e, &shape, first, &mut hoisted);
    }
    hoisted
}

/// The single axis all loads of `e` are indexed by, when `e` reads only such loads and
/// constants (no anchor, no shared values, no other index arithmetic).
fn single_axis(e: &Ex) -> Option<Option<usize>> {
    match e {
        Ex::Load(_, Ix::Var(j)) => Some(Some(*j)),
        Ex::Const(_) => Some(None),
        Ex::Unary(_, a) => single_axis(a),
        Ex::Binary(_, a, b) => match (single_axis(a)?, single_axis(b)?) {
            (Some(x), Some(y)) if x != y => None,
            (x, y) => Some(x.or(y)),
        },
        _ => None,
    }
}

fn hoist_ex(e: &mut Ex, shape: &[usize], first: usize, hoisted: &mut Hoisted) {
    if matches!(e, Ex::Unary(..) | Ex::Binary(..)) {
        if let Some(Some(axis)) = single_axis(e) {
            let len = shape.get(axis).copied().unwrap_or(0);
            if len > 0 && len <= MAX_TABLE_LEN {
                let k = first + hoisted.tables.len();
                let table = std::mem::replace(e, Ex::Load(k, Ix::Var(axis)));
                hoisted.tables.push((axis, len, table));
                return;
            }
        }
    }
    match e {
        Ex::Unary(_, a) => hoist_ex(a, shape, first, hoisted),
        Ex::Binary(_, a, b) | Ex::Prelu(a, b) => {
            hoist_ex(a, shape, first, hoisted);
            hoist_ex(b, shape, first, hoisted);
        }
        Ex::Select(c, a, b) => {
            hoist_ex(c, shape, first, hoisted);
            hoist_ex(a, shape, first, hoisted);
            hoist_ex(b, shape, first, hoisted);
        }
        // an index inside a range test is only valid inside it: a table over the whole
        // axis could read out of bounds
        Ex::InRange { .. } | Ex::Load(..) | Ex::Anchor | Ex::Const(_) | Ex::Let(_) => {}
    }
}

/// `let <prefix><k>: [f32; len] = from_fn(|i<axis>| ...);` for each table.
fn table_stmts(hoisted: &Hoisted, first: usize, prefix: &str) -> TokenStream {
    let stmts = hoisted.tables.iter().enumerate().map(|(t, (axis, len, e))| {
        let name = format_ident!("{}{}", prefix, first + t);
        let mut used = vec![false; axis + 1];
        index::mark_ex(e, &mut used);
        let var = if used.get(*axis) == Some(&true) {
            format_ident!("i{}", axis)
        } else {
            format_ident!("_")
        };
        let body = ex_tokens(e, prefix);
        quote! { let #name: [f32; #len] = ::core::array::from_fn(|#var: usize| -> f32 { #body }); }
    });
    quote! { #(#stmts)* }
}

/// Simplifies every index of `program` over its own shape (see [`index`]), and of the
/// tables hoisted from it.
fn simplify_program(program: &mut ElementProgram, hoisted: &mut Hoisted) {
    let shape = program.shape.clone();
    for e in program
        .lets
        .iter_mut()
        .chain(std::iter::once(&mut program.value))
    {
        index::simplify_ex(e, &shape);
    }
    for (_, _, e) in &mut hoisted.tables {
        index::simplify_ex(e, &shape);
    }
}

/// Which output axes `program` reads (by index variable), and whether it reads the
/// anchor's value.
fn reads(program: &ElementProgram) -> (Vec<bool>, bool) {
    let mut used = vec![false; program.shape.len()];
    let mut anchor = false;
    for e in program.lets.iter().chain(std::iter::once(&program.value)) {
        anchor |= index::mark_ex(e, &mut used);
    }
    (used, anchor)
}

/// Whether the program is the anchor's value unchanged.
fn is_identity(program: &ElementProgram) -> bool {
    program.lets.is_empty() && program.value == Ex::Anchor
}

/// `{ let t0 = ...; let t1 = ...; value }` (the value alone without shared values),
/// loading operand `k` from `<prefix>k`.
fn element_value(program: &ElementProgram, prefix: &str) -> TokenStream {
    let lets = program.lets.iter().enumerate().map(|(k, e)| {
        let t = format_ident!("t{}", k);
        let e = ex_tokens(e, prefix);
        quote! { let #t: f32 = #e; }
    });
    let value = ex_tokens(&program.value, prefix);
    if program.lets.is_empty() {
        value
    } else {
        quote! { { #(#lets)* #value } }
    }
}

/// `name` when used, else `_`.
fn binding(name: &str, used: bool) -> Ident {
    if used {
        format_ident!("{}", name)
    } else {
        format_ident!("_")
    }
}

/// The epilogue closure of an anchor block: recovers the output index from the flat
/// position, then evaluates the element program with the anchor's value as `acc`
/// (the runtime's `store` when the block stores the anchor's value unchanged).
fn epilogue_closure(program: &ElementProgram) -> TokenStream {
    if is_identity(program) {
        return quote! { ::dnnfusion::runtime::kernels::store };
    }
    let flat = flat_form(program);
    let program = flat.as_ref().unwrap_or(program);
    let (used, reads_acc) = reads(program);
    let value = element_value(program, "e");
    let vars = index_vars(&program.shape, &used, "o");
    let (o, acc) = (
        binding("o", used.contains(&true)),
        binding("acc", reads_acc),
    );
    quote! { |#o: usize, #acc: f32| -> f32 { #vars #value } }
}

/// `program` over one axis, its elements in row-major order, when it reads every
/// operand at the flat position of the element it computes and tests no index: a
/// closure of single elements then reads `p0[o]` where it took `o` apart into each
/// axis' index and put the offset back together (the ReLU6 before mobilenet_v2's
/// global pool read its 1280 x 7 x 7 input so, element by element).
fn flat_form(program: &ElementProgram) -> Option<ElementProgram> {
    let shape = &program.shape;
    if shape.iter().filter(|&&d| d > 1).count() < 2 {
        return None;
    }
    let flat = row_major_strides(shape)
        .iter()
        .enumerate()
        .fold(Ix::Const(0), |sum, (k, &s)| {
            Ix::Add(Box::new(sum), Box::new(Ix::Mul(Box::new(Ix::Var(k)), s)))
        });
    let flat = index::simplify(&flat, shape);
    // (an axis of extent 1 first: the flat index is then `o % len`, which the compiler
    // sees stay inside an operand of `len` floats, as every index is kept by its extent)
    let mut flattened = program.clone();
    flattened.shape = vec![1, shape.iter().product()];
    for e in flattened
        .lets
        .iter_mut()
        .chain(std::iter::once(&mut flattened.value))
    {
        if !reads_flat(e, &flat, shape) {
            return None;
        }
    }
    Some(flattened)
}

/// Rewrites every load of `ex` at index `flat` (over `shape`) to a load at `Var(1)`;
/// false when `ex` reads an operand elsewhere or tests an index.
fn reads_flat(ex: &mut Ex, flat: &Ix, shape: &[usize]) -> bool {
    each_load(ex, &mut |ix| {
        let at_flat = index::simplify(ix, shape) == *flat;
        if at_flat {
            *ix = Ix::Var(1);
        }
        at_flat
    })
}

/// Calls `rewrite` on the index of each load of `ex`, in order, while it returns true;
/// false when one returns false or `ex` tests an index (`InRange`).
fn each_load(ex: &mut Ex, rewrite: &mut impl FnMut(&mut Ix) -> bool) -> bool {
    match ex {
        Ex::Load(_, ix) => rewrite(ix),
        Ex::Anchor | Ex::Const(_) | Ex::Let(_) => true,
        Ex::Unary(_, a) => each_load(a, rewrite),
        Ex::Binary(_, a, b) | Ex::Prelu(a, b) => each_load(a, rewrite) && each_load(b, rewrite),
        Ex::Select(c, a, b) => {
            each_load(c, rewrite) && each_load(a, rewrite) && each_load(b, rewrite)
        }
        Ex::InRange { .. } => false,
    }
}

/// The program over one axis of `row_len` in place of the trailing axes a row spans,
/// when every index it reads puts those axes back together (a transformer's heads:
/// `bias[i2 * 64 + i3]` over `[.., 2, 64]` is `bias[j]` over `[.., 128]`), so that the
/// row epilogue is one loop over the row rather than one per last axis (bert6's bias
/// over twelve heads of 32 ran unrolled per head, compiled for the baseline CPU).
/// `None` when the row does not span whole trailing axes or an index still takes the
/// merged one apart.
fn merged_row_form(program: &ElementProgram, row_len: usize) -> Option<ElementProgram> {
    let shape = &program.shape;
    let (mut first, mut spanned) = (shape.len(), 1usize);
    while spanned < row_len && first > 0 {
        first -= 1;
        spanned = spanned.saturating_mul(*shape.get(first)?);
    }
    if spanned != row_len || first + 1 >= shape.len() {
        return None;
    }
    let (outer, spanned_axes) = (shape.get(..first)?, shape.get(first..)?);
    let merged_shape: Vec<usize> = outer.iter().copied().chain([row_len]).collect();
    // axis k >= first is (j / stride) % extent of the merged index j
    let strides = row_major_strides(spanned_axes);
    let parts: Vec<(usize, usize)> = strides
        .into_iter()
        .zip(spanned_axes.iter().copied())
        .collect();
    let mut merged = program.clone();
    merged.shape = merged_shape;
    for e in merged
        .lets
        .iter_mut()
        .chain(std::iter::once(&mut merged.value))
    {
        if !merge_loads(e, first, &parts, &merged.shape) {
            return None;
        }
    }
    Some(merged)
}

/// [`merged_row_form`] on one expression: every load's index with axes `first..` read
/// from the merged axis, simplified; false when one still divides it (or the expression
/// tests an index).
fn merge_loads(ex: &mut Ex, first: usize, parts: &[(usize, usize)], shape: &[usize]) -> bool {
    each_load(ex, &mut |ix| {
        let merged = index::simplify(&from_merged(ix, first, parts), shape);
        let affine = !divides(&merged, first);
        *ix = merged;
        affine
    })
}

/// `ix` with axis `first + i` replaced by `(Var(first) / parts[i].0) % parts[i].1`.
fn from_merged(ix: &Ix, first: usize, parts: &[(usize, usize)]) -> Ix {
    let go = |a: &Ix| Box::new(from_merged(a, first, parts));
    match ix {
        Ix::Var(k) => match k.checked_sub(first).and_then(|i| parts.get(i)) {
            Some(&(stride, extent)) => {
                Ix::Rem(Box::new(Ix::Div(Box::new(Ix::Var(first)), stride)), extent)
            }
            None => Ix::Var(*k),
        },
        Ix::Const(c) => Ix::Const(*c),
        Ix::Add(a, b) => Ix::Add(go(a), go(b)),
        Ix::Mul(a, c) => Ix::Mul(go(a), *c),
        Ix::Div(a, c) => Ix::Div(go(a), *c),
        Ix::Rem(a, c) => Ix::Rem(go(a), *c),
        Ix::Sub(a, c) => Ix::Sub(go(a), *c),
        Ix::Reflect { index, before, len } => Ix::Reflect {
            index: go(index),
            before: *before,
            len: *len,
        },
        Ix::Clamp { index, before, len } => Ix::Clamp {
            index: go(index),
            before: *before,
            len: *len,
        },
    }
}

/// Whether `ix` reads `Var(v)` under a division, a remainder or a padding's map.
fn divides(ix: &Ix, v: usize) -> bool {
    let reads = |a: &Ix| {
        let mut used = vec![false; v + 1];
        index::mark_vars(a, &mut used);
        used.get(v).copied().unwrap_or(false)
    };
    match ix {
        Ix::Var(_) | Ix::Const(_) => false,
        Ix::Add(a, b) => divides(a, v) || divides(b, v),
        Ix::Mul(a, _) | Ix::Sub(a, _) => divides(a, v),
        Ix::Div(a, _) | Ix::Rem(a, _) => reads(a),
        Ix::Reflect { index, .. } | Ix::Clamp { index, .. } => reads(index),
    }
}

/// Rows shorter than this get row epilogues over their constant length
/// ([`row_closure`]).
const SHORT_ROW: usize = 16;

/// The epilogue over one finished row of `row_len` outputs, or with `prefix` "p" the
/// prologue filling one (the kernel's rows start at multiples of `row_len`), its
/// operands read from `<prefix>k`: the indices of every axis but the last are computed
/// once, from the row's first position, so per-channel values are read once per row and
/// the loop over the row vectorizes. The row is cut to `row_len` before the loop, so that the
/// compiler sees the last index stay below it (no bounds checks inside), when the epilogue
/// reads that index or the row is shorter than [`SHORT_ROW`]. `None` when a row
/// could cross the last axis of the epilogue's index space (a reshape in the epilogue
/// whose last axis neither divides `row_len` nor is divided by it): then the per-element
/// closure is used. A row that spans whole last axes (a reshape splitting the kernel's
/// row, as a transformer's heads do) loops over them, its indices computed once per axis.
fn row_closure(program: &ElementProgram, row_len: usize, prefix: &str) -> Option<TokenStream> {
    let (&last_len, _) = program.shape.split_last()?;
    let spans = last_len > 0 && row_len > last_len && row_len.is_multiple_of(last_len);
    if row_len == 0 || (last_len % row_len != 0 && !spans) {
        return None;
    }
    if spans {
        if let Some(merged) = merged_row_form(program, row_len) {
            return row_closure(&merged, row_len, prefix);
        }
    }
    if is_identity(program) {
        return Some(quote! { ::dnnfusion::runtime::kernels::store_rows });
    }
    if let Some(call) = gelu_row_call(program, last_len, row_len, prefix) {
        return Some(call);
    }
    let (mut used, reads_acc) = reads(program);
    let last_axis = program.shape.len() - 1;
    let reads_last = used.get(last_axis) == Some(&true);
    if let Some(u) = used.get_mut(last_axis) {
        *u = false;
    }
    let value = element_value(program, prefix);
    let last = format_ident!("i{}", last_axis);
    let read_acc = if reads_acc {
        quote! { let acc: f32 = *slot; }
    } else {
        quote! {}
    };
    if spans {
        // one last axis at a time (`chunks_exact_mut`: the compiler sees each part's length)
        let vars = index_vars(&program.shape, &used, "at");
        let at = binding("at", used.contains(&true));
        let lanes = if reads_last {
            quote! { for (#last, slot) in part.iter_mut().enumerate() }
        } else {
            quote! { for slot in part.iter_mut() }
        };
        let (row_len, last_len) = (
            proc_macro2::Literal::usize_unsuffixed(row_len),
            proc_macro2::Literal::usize_unsuffixed(last_len),
        );
        let base = binding("base", used.contains(&true));
        let first = if used.contains(&true) {
            quote! { let #at = base + c * #last_len; }
        } else {
            quote! {}
        };
        let c = binding("c", used.contains(&true));
        return Some(quote! {
            |#base: usize, row: &mut [f32]| {
                for (#c, part) in row[..#row_len].chunks_exact_mut(#last_len).enumerate() {
                    #first
                    #vars
                    #lanes {
                        #read_acc
                        *slot = #value;
                    }
                }
            }
        });
    }
    // rows start at multiples of `row_len`: a row is a whole last axis, or a part of one
    // starting at `base % last_len`
    let whole_axis = last_len == row_len;
    let short_row = row_len < SHORT_ROW;
    let (row_len, last_len) = (
        proc_macro2::Literal::usize_unsuffixed(row_len),
        proc_macro2::Literal::usize_unsuffixed(last_len),
    );
    // a short row loops over its constant length, so that it unrolls into vectors where a
    // loop of unknown length ran its remainder one float at a time; a long one over
    // `row.len()`: unrolled at its constant length, the closure grew past what the
    // kernels inline and ran compiled for the baseline CPU
    let (first, row_loop) = match (reads_last, whole_axis) {
        (false, _) if short_row => (quote! {}, quote! { for slot in row[..#row_len].iter_mut() }),
        (false, _) => (quote! {}, quote! { for slot in row.iter_mut() }),
        (true, true) => (
            quote! {},
            quote! { for (#last, slot) in row[..#row_len].iter_mut().enumerate() },
        ),
        (true, false) => (
            quote! { let first = base % #last_len; },
            quote! { for (k, slot) in row[..#row_len].iter_mut().enumerate() },
        ),
    };
    let offset = if reads_last && !whole_axis {
        quote! { let #last = first + k; }
    } else {
        quote! {}
    };
    let vars = index_vars(&program.shape, &used, "base");
    let base = binding("base", used.contains(&true) || (reads_last && !whole_axis));
    Some(quote! {
        |#base: usize, row: &mut [f32]| {
            #vars
            #first
            #row_loop {
                #offset
                #read_acc
                *slot = #value;
            }
        }
    })
}

/// The row epilogue `gelu(acc)` or `gelu(acc + b[i])` over whole rows of the last axis
/// (`b` an operand along it: a bias), as one call of the runtime's `gelu_row`: a
/// transformer's feed-forward layer. Its AVX-512 kernel is out of a generated closure's
/// reach (the closure, inlined into code compiled for AVX2, ran eight lanes wide with
/// spills: 13% of bert_tiny's time). `None` for any other epilogue.
fn gelu_row_call(
    program: &ElementProgram,
    last_len: usize,
    row_len: usize,
    prefix: &str,
) -> Option<TokenStream> {
    let Ex::Unary(UnaryOp::Gelu, inner) = &program.value else {
        return None;
    };
    if !program.lets.is_empty() || row_len != last_len {
        return None;
    }
    let along_row = Ix::Var(program.shape.len() - 1);
    let len = proc_macro2::Literal::usize_unsuffixed(row_len);
    let bias = match inner.as_ref() {
        Ex::Anchor => quote! { None },
        Ex::Binary(BinaryOp::Add, a, b) => match (a.as_ref(), b.as_ref()) {
            (Ex::Anchor, Ex::Load(k, ix)) | (Ex::Load(k, ix), Ex::Anchor) if *ix == along_row => {
                let operand = format_ident!("{}{}", prefix, k);
                quote! { Some(&#operand[..#len]) }
            }
            _ => return None,
        },
        _ => return None,
    };
    Some(quote! {
        |_: usize, row: &mut [f32]| {
            ::dnnfusion::runtime::kernels::gelu_row(&mut row[..#len], #bias);
        }
    })
}

/// The prologue of an anchor block: element `o` of the anchor's main operand, and with
/// `row_len` (a kernel that reads the operand in rows of that length, see
/// [`kernel_rows`]) whole rows too, when [`row_closure`] can write them.
fn prologue_source(program: &ElementProgram, row_len: Option<usize>) -> TokenStream {
    // (rows of a vector or more keep their constant length, which unrolls: softmax over
    // bert_tiny's rows of 128 took 0.022 ms from runs, 0.018 from rows)
    if let Some(flat) = flat_form(program).filter(|_| row_len.is_none_or(|len| len < SHORT_ROW)) {
        return flat_prologue(&flat);
    }
    let (used, _) = reads(program);
    let value = element_value(program, "p");
    let vars = index_vars(&program.shape, &used, "o");
    let o = binding("o", used.contains(&true));
    let at = quote! { |#o: usize| -> f32 { #vars #value } };
    // (an identity program has no row form to fill a row with; a prologue is never one)
    let row_len = row_len.filter(|_| !is_identity(program));
    match row_len.and_then(|len| Some((len, row_closure(program, len, "p")?))) {
        Some((len, rows)) => {
            let len = proc_macro2::Literal::usize_unsuffixed(len);
            quote! {
                ::dnnfusion::runtime::kernels::ComputedRows { at: #at, rows: #rows, len: #len }
            }
        }
        None => quote! { ::dnnfusion::runtime::kernels::Computed(#at) },
    }
}

/// The prologue of a program in [`flat_form`]: element `o`, and any run of elements
/// from `base` over runs of its operands (`p0[base..][..len]`), a loop the compiler
/// vectorizes whatever the run's length (a global pool fills runs of whole 7x7 planes
/// so, where rows of 7 went one closure call each).
fn flat_prologue(flat: &ElementProgram) -> TokenStream {
    let value = element_value(flat, "p");
    let vars = index_vars(&flat.shape, &[false, true], "o");
    let mut operands = std::collections::BTreeSet::new();
    for e in flat.lets.iter().chain(std::iter::once(&flat.value)) {
        loaded_operands(e, &mut operands);
    }
    let runs = operands.iter().map(|k| {
        let p = format_ident!("p{}", k);
        quote! { let #p = &#p[base..][..row.len()]; }
    });
    quote! {
        ::dnnfusion::runtime::kernels::ComputedRuns {
            at: |o: usize| -> f32 { #vars #value },
            runs: |base: usize, row: &mut [f32]| {
                #(#runs)*
                for (i1, slot) in row.iter_mut().enumerate() {
                    *slot = #value;
                }
            },
        }
    }
}

/// The operands `ex` loads.
fn loaded_operands(ex: &Ex, out: &mut std::collections::BTreeSet<usize>) {
    match ex {
        Ex::Load(k, _) => {
            out.insert(*k);
        }
        Ex::Anchor | Ex::Const(_) | Ex::Let(_) => {}
        Ex::Unary(_, a) => loaded_operands(a, out),
        Ex::Binary(_, a, b) | Ex::Prelu(a, b) => {
            loaded_operands(a, out);
            loaded_operands(b, out);
        }
        Ex::Select(c, a, b) => {
            loaded_operands(c, out);
            loaded_operands(a, out);
            loaded_operands(b, out);
        }
        Ex::InRange {
            then, otherwise, ..
        } => {
            loaded_operands(then, out);
            loaded_operands(otherwise, out);
        }
    }
}

/// The rows a kernel works in, where it works in rows: see [`kernel_rows`].
struct KernelRows {
    /// the length of the rows it reads its main operand in (a prologue fills them whole)
    prologue: Option<usize>,
    /// the length of the finished rows it hands its epilogue (row epilogues)
    epilogue: Option<usize>,
}

/// The rows the kernel of `op` works in, for its main operand or its output of `shape`:
/// a softmax along an axis with nothing after it and a layer norm read rows of the
/// normalized length; conv2d, matmul and linear hand their epilogue whole output rows (the
/// last axis of their result). Every op is listed: a new kernel states its rows.
fn kernel_rows(op: &Op, shape: &[usize]) -> KernelRows {
    let (prologue, epilogue) = match op {
        Op::Softmax { axis } => {
            let last = shape.iter().skip(axis + 1).all(|&d| d == 1);
            (shape.get(*axis).copied().filter(|_| last), None)
        }
        Op::LayerNorm { dims, .. } => {
            let first = shape.len().checked_sub(*dims);
            (first.map(|k| shape.iter().skip(k).product()), None)
        }
        Op::Conv2d(_) | Op::MatMul | Op::MatMulPanels { .. } | Op::Linear => {
            (None, shape.last().copied())
        }
        Op::Unary(_)
        | Op::Binary(_)
        | Op::Where
        | Op::Prelu
        | Op::PackPanels
        | Op::TileConvWeights { .. }
        | Op::WinogradWeights { .. }
        | Op::ConvTranspose2d(_)
        | Op::MaxPool2d(_)
        | Op::AvgPool2d(_)
        | Op::GlobalAvgPool
        | Op::GlobalMaxPool
        | Op::Reduce { .. }
        | Op::LogSoftmax { .. }
        | Op::BatchNorm { .. }
        | Op::GroupNorm { .. }
        | Op::InstanceNorm { .. }
        | Op::Reshape(_)
        | Op::Transpose { .. }
        | Op::Concat { .. }
        | Op::Slice { .. }
        | Op::Pad { .. }
        | Op::Gather { .. }
        | Op::Expand
        | Op::Resize(_)
        | Op::Resample(_)
        | Op::Scan { .. } => (None, None),
    };
    KernelRows { prologue, epilogue }
}

/// `let i1 = o / s1 % d1; ...`: the index of flat position `flat` on each axis `used`
/// marks (an axis of extent 1 is never read: its index is the constant 0).
fn index_vars(shape: &[usize], used: &[bool], flat: &str) -> TokenStream {
    let flat = format_ident!("{}", flat);
    let strides = row_major_strides(shape);
    let vars = shape
        .iter()
        .zip(&strides)
        .enumerate()
        .filter_map(|(k, (&d, &s))| {
            if used.get(k) != Some(&true) {
                return None;
            }
            let v = format_ident!("i{}", k);
            let (s, d) = (
                proc_macro2::Literal::usize_unsuffixed(s),
                proc_macro2::Literal::usize_unsuffixed(d),
            );
            // `% d` keeps every index visibly below its extent (no bounds checks on reads)
            Some(match (k == 0, strides.get(k) == Some(&1)) {
                (true, true) => quote! { let #v = #flat; },
                (true, false) => quote! { let #v = #flat / #s; },
                (false, true) => quote! { let #v = #flat % #d; },
                (false, false) => quote! { let #v = #flat / #s % #d; },
            })
        });
    quote! { #(#vars)* }
}

/// One loop per output axis of extent above 1 (literal bounds), the element program in
/// the innermost, storing at the output position the indices make.
fn element_loops(program: &ElementProgram) -> TokenStream {
    let value = element_value(program, "e");
    let strides = row_major_strides(&program.shape);
    let flat = strides
        .iter()
        .enumerate()
        .fold(Ix::Const(0), |sum, (k, &s)| {
            Ix::Add(Box::new(sum), Box::new(Ix::Mul(Box::new(Ix::Var(k)), s)))
        });
    let at = index::tokens(&index::simplify(&flat, &program.shape));
    let mut inner = quote! { out[#at] = #value; };
    for (k, &d) in program.shape.iter().enumerate().rev() {
        if d != 1 {
            let v = format_ident!("i{}", k);
            let d = proc_macro2::Literal::usize_unsuffixed(d);
            inner = quote! { for #v in 0..#d { #inner } };
        }
    }
    inner
}

/// One call site of a block function for its doc: the ops (with their mapping types,
/// the anchor marked), where each parameter reads from and where the result goes.
fn describe_site(
    model: &ModelIr,
    plan: &MemoryPlan,
    block: &Block,
    (operands, params): (&[ValueId], &[Ident]),
) -> String {
    let graph = &model.graph;
    let ops: Vec<String> = block
        .nodes
        .iter()
        .filter_map(|&n| Some((n, graph.nodes.get(n)?)))
        .map(|(n, node)| {
            let anchor = if block.anchor == Some(n) {
                ", anchor"
            } else {
                ""
            };
            let mapping = crate::tables::classify(graph, node).name();
            format!("`{}` ({mapping}{anchor})", describe(model, node))
        })
        .collect();
    let reads: Vec<String> = params
        .iter()
        .zip(operands)
        .map(|(param, &v)| format!("`{param}` = {}", describe_slot(model, plan, v)))
        .collect();
    let sink = graph.nodes.get(block.sink()).map(|n| n.output);
    let writes = sink.map_or_else(String::new, |v| describe_slot(model, plan, v));
    format!(
        "{}; reads {}; writes {writes}",
        ops.join(", "),
        reads.join(", ")
    )
}

/// `1 op`, `2 ops`.
fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `` `conv1` (arena[0..3456]) ``: a value and where it lives.
fn describe_slot(model: &ModelIr, plan: &MemoryPlan, value: ValueId) -> String {
    let name = model
        .graph
        .values
        .get(value)
        .map_or("?", |v| v.name.as_str());
    let place = match plan.storage(value) {
        Some(Slot::Input(k)) => format!("input {k}"),
        Some(Slot::Output(k)) => format!("output {k}"),
        Some(Slot::Param { offset, len }) => format!("params[{offset}..{}]", offset + len),
        Some(Slot::Arena { offset, len }) => format!("arena[{offset}..{}]", offset + len),
        Some(Slot::Fused | Slot::Alias(_)) | None => "not stored".to_string(),
    };
    format!("`{name}` ({place})")
}

/// A one-line description of a node, kept as a doc string in the generated code.
fn describe(model: &ModelIr, node: &Node) -> String {
    let g = &model.graph;
    let name = |v: ValueId| g.values.get(v).map_or("?".to_string(), |v| v.name.clone());
    let args: Vec<String> = node.inputs.iter().map(|&v| name(v)).collect();
    format!(
        "{} = {}({}) : {}",
        name(node.output),
        node.op.name(),
        args.join(", "),
        crate::check::fmt_shape(g.shape(node.output))
    )
}

/// A unary op applied to the operand `v` (parenthesized as [`UnaryOp::binds`] asks).
fn unary_expr(op: UnaryOp, v: &TokenStream) -> TokenStream {
    op.emit(&quote! { ::dnnfusion::runtime::math }, v)
}

/// A binary op on the operands `a` and `b` (parenthesized as [`binary_operand_levels`]
/// asks).
/// A binary op applied to operands `a` and `b` (parenthesized as [`BinaryOp::binds`]
/// asks).
fn binary_expr(op: BinaryOp, a: &TokenStream, b: &TokenStream) -> TokenStream {
    op.emit(&quote! { ::dnnfusion::runtime::math }, a, b)
}

fn dim(shape: &[usize], i: usize) -> usize {
    shape.get(i).copied().unwrap_or(1)
}

/// The kernel call of one op; operands are bound to `ins`, the output to `out`.
/// What a kernel does with each result: `apply` maps it before the store, `store` (when
/// set) translates the store index (only `matmul` and `linear` take one), and `rows`
/// (when set) is the same map over a finished output row, for the kernels that take a
/// row epilogue (`conv2d`, and `matmul` and `linear` without a store map); without it,
/// `apply` is called per element of the row.
struct Epilogue {
    apply: TokenStream,
    /// the store map, how many values it keeps contiguous from each multiple of that, and
    /// its step down a column (`element::column_step`, 0 for none)
    store: Option<(TokenStream, usize, usize)>,
    rows: Option<TokenStream>,
    /// the epilogue leaves the kernel's values as they are
    identity: bool,
}

/// The row form of an epilogue (for the kernels that hand theirs whole output rows):
/// the generated one, or `apply` called per element.
fn row_epilogue(epilogue: &Epilogue) -> TokenStream {
    let apply = &epilogue.apply;
    epilogue.rows.clone().unwrap_or_else(|| {
        quote! {
            |base: usize, row: &mut [f32]| {
                let apply = #apply;
                for (k, slot) in row.iter_mut().enumerate() {
                    *slot = apply(base + k, *slot);
                }
            }
        }
    })
}

/// The epilogue of a kernel that stores through a store map, for output rows of
/// `row_len`: with its row form when there is one (`kernels::EpilogueRows`), else the
/// per-element closure.
fn store_epilogue(epilogue: &Epilogue, row_len: usize) -> TokenStream {
    let apply = &epilogue.apply;
    match &epilogue.rows {
        Some(rows) if !epilogue.identity => {
            let len = proc_macro2::Literal::usize_unsuffixed(row_len);
            quote! {
                ::dnnfusion::runtime::kernels::EpilogueRows { at: #apply, rows: #rows, len: #len }
            }
        }
        _ => apply.clone(),
    }
}

fn kernel_call(
    op: &Op,
    ins: &[Ident],
    shapes: &[&[usize]],
    out: &Ident,
    out_shape: &[usize],
    epilogue: &Epilogue,
) -> TokenStream {
    let epi = &epilogue.apply;
    let k = quote! { ::dnnfusion::runtime::kernels };
    let in0 = ins.first().cloned().unwrap_or_else(|| format_ident!("in0"));
    let s0: &[usize] = shapes.first().copied().unwrap_or(&[]);
    let opt = |i: usize| match ins.get(i) {
        Some(id) => quote! { ::core::option::Option::Some(#id) },
        None => quote! { ::core::option::Option::None },
    };
    let io = [&in0, out];
    let affine = [&opt(1), &opt(2)];
    let bias = opt(2);
    let conv_call = conv::ConvCall {
        input: &in0,
        weight: ins.get(1),
        bias: &bias,
        out,
    };
    let product_call = product::ProductCall {
        a: &in0,
        b: ins.get(1),
        bias: &bias,
        out,
    };
    // a product's finish: its row epilogue, or its epilogue and store map (`linear`'s
    // stored form takes the per-element epilogue)
    let finish = |per_element: bool| match &epilogue.store {
        None => product::Finish::Rows(row_epilogue(epilogue)),
        Some((store, run, step)) => product::Finish::Stored {
            epilogue: if per_element {
                epi.clone()
            } else {
                store_epilogue(epilogue, out_shape.last().copied().unwrap_or(1))
            },
            store: store.clone(),
            run: *run,
            step: *step,
        },
    };
    match op {
        Op::Unary(u) => {
            let body = unary_expr(*u, &quote! { v });
            quote! { #k::map(#in0, #out, |v| #body); }
        }
        Op::Binary(b) => {
            let body = binary_expr(*b, &quote! { a }, &quote! { b });
            let in1 = ins.get(1).cloned().unwrap_or_else(|| format_ident!("in1"));
            let s1: &[usize] = shapes.get(1).copied().unwrap_or(&[]);
            if s0 == out_shape && s1 == out_shape {
                quote! { #k::zip(#in0, #in1, #out, |a, b| #body); }
            } else {
                let sa = broadcast_strides(s0, out_shape);
                let sb = broadcast_strides(s1, out_shape);
                quote! { #k::zip_broadcast(#in0, &[#(#sa),*], #in1, &[#(#sb),*], #out, &[#(#out_shape),*], |a, b| #body); }
            }
        }
        Op::Where => {
            let operands = [Some(&in0), ins.get(1), ins.get(2), Some(out)];
            select::where_call(&k, operands, shapes, out_shape)
        }
        Op::Prelu => {
            let slope_shape = shapes.get(1).copied().unwrap_or(&[1]);
            select::prelu_call(&k, [Some(&in0), ins.get(1), Some(out)], s0, slope_shape)
        }
        Op::Linear => product::linear_call(&k, &product_call, [s0, out_shape], &finish(true)),
        Op::MatMul => {
            let s1: &[usize] = shapes.get(1).copied().unwrap_or(&[]);
            product::matmul_call(&k, &product_call, [s0, s1, out_shape], &finish(false))
        }
        Op::MatMulPanels { n } => {
            product::panels_matmul_call(&k, *n, &product_call, s0, &finish(false))
        }
        Op::PackPanels => product::pack_panels_call(&k, io, s0),
        Op::TileConvWeights { groups } => conv::tiled_weights_call(&k, *groups, io, s0),
        Op::WinogradWeights { tile } => conv::winograd_weights_call(&k, *tile, io, s0),
        Op::Conv2d(c) => {
            let rows = row_epilogue(epilogue);
            conv::conv2d_call(&k, c, &conv_call, [s0, out_shape], &rows)
        }
        Op::ConvTranspose2d(c) => {
            conv::conv_transpose2d_call(&k, c, &conv_call, [s0, out_shape], epi)
        }
        Op::MaxPool2d(p) => pool::kernel_call(&k, true, Some(p), &in0, out, s0, out_shape, epi),
        Op::AvgPool2d(p) => pool::kernel_call(&k, false, Some(p), &in0, out, s0, out_shape, epi),
        Op::GlobalMaxPool => pool::kernel_call(&k, true, None, &in0, out, s0, out_shape, epi),
        Op::GlobalAvgPool => pool::kernel_call(&k, false, None, &in0, out, s0, out_shape, epi),
        Op::Reduce { kind, axes, .. } => reduce::kernel_call(&k, *kind, axes, io, s0, epi),
        Op::Softmax { axis } => norm::softmax_call(&k, false, *axis, io, s0, epi),
        Op::LogSoftmax { axis } => norm::softmax_call(&k, true, *axis, io, s0, epi),
        Op::LayerNorm { dims, eps } => {
            norm::layer_norm_call(&k, (*dims, *eps), io, affine, s0, epi)
        }
        Op::BatchNorm { eps } => {
            let vectors = [ins.get(1), ins.get(2), ins.get(3), ins.get(4)];
            norm::batch_norm_call(&k, *eps, io, vectors, s0)
        }
        Op::GroupNorm { groups, eps } => {
            norm::group_norm_call(&k, (*groups, *eps), io, affine, s0, epi)
        }
        // one channel per group
        Op::InstanceNorm { eps } => {
            norm::group_norm_call(&k, (dim(s0, 1), *eps), io, affine, s0, epi)
        }
        Op::Reshape(_) => layout::reshape_call(io),
        Op::Transpose { perm } => layout::transpose_call(&k, perm, io, [s0, out_shape]),
        Op::Slice { starts, steps, .. } => {
            layout::slice_call(&k, [starts, steps], io, [s0, out_shape])
        }
        Op::Expand => layout::expand_call(&k, io, [s0, out_shape]),
        Op::Concat { axis } => layout::concat_call(&k, *axis, (ins, out), shapes, out_shape),
        Op::Pad { pads, mode } => layout::pad_call(&k, pads, *mode, io, [s0, out_shape]),
        Op::Gather { axis } => layout::gather_call(&k, *axis, (&in0, ins.get(1), out), s0),
        Op::Resize(mode) => layout::resize_call(&k, *mode, io, [s0, out_shape]),
        Op::Resample(spec) => layout::resample_call(&k, spec, io, [s0, out_shape]),
        Op::Scan {
            kind,
            axis,
            exclusive,
            reverse,
        } => crate::ops::scan::kernel_call(&k, *kind, &in0, out, s0, *axis, *exclusive, *reverse),
    }
}

/// `Name::embedded()`: the model on its parameter buffer `run` (prepared at compile time
/// from `path`), compiled in as one aligned byte string; plus the item that makes
/// editing the file (`tracked`) rebuild the crate.
pub fn embedded_weights(
    name: &Ident,
    path: &str,
    run: &[f32],
    tracked: Option<&str>,
) -> TokenStream {
    let bytes: Vec<u8> = run.iter().flat_map(|v| v.to_le_bytes()).collect();
    let len = bytes.len();
    let floats = run.len();
    let literal = proc_macro2::Literal::byte_string(&bytes);
    let doc = format!(
        "The model on the weights of `{path}`, checked, prepared and compiled in at build \
         time: {floats} floats ({len} bytes) of `static` data (flash on a microcontroller), \
         read in place. Nothing is loaded, parsed or copied at run time; `run` needs only an \
         arena of [`Self::ARENA_LEN`] floats. Usable in a `static` or `const`."
    );
    let tracking = tracked.map(|file| quote! { const _: &[u8] = ::core::include_bytes!(#file); });
    quote! {
        #tracking

        impl #name<'static> {
            #[doc = #doc]
            pub const fn embedded() -> Self {
                static WEIGHTS: ::dnnfusion::runtime::EmbeddedWeights<#len> =
                    ::dnnfusion::runtime::EmbeddedWeights(*#literal);
                Self {
                    params: ::dnnfusion::runtime::Params::borrowed(WEIGHTS.floats()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 24-element block of issue 13: broadcast add, ReLU, square, subtract.
    const ELEMENTWISE: &str = "pub model Ew(x: [1, 2, 3, 4], y: [4]) -> [1, 2, 3, 4] {
        let s = relu(x + y);
        s * s - 2.0
    }";

    /// A conv with batch norm and ReLU (a row epilogue), a pooled, flattened head (a
    /// store through a reshape) and one BERT layer (store maps, prologues, tables).
    fn references() -> Vec<String> {
        let conv = "pub model Conv(x: [1, 3, 16, 16]) -> [1, 10] {
            let conv = conv2d(x, 8, kernel = 3, padding = 1, bias = false);
            let bn = batch_norm(conv);
            let p = max_pool2d(relu(bn), 2);
            let head = linear(flatten(relu(p)), 10);
            head
        }";
        let bert = include_str!("../examples/bert_stack.dnn").replace("LAYERS", "1");
        vec![ELEMENTWISE.to_string(), conv.to_string(), bert]
    }

    fn compiled(source: &str) -> Vec<crate::CompiledModel> {
        let models = crate::lower_str(source).unwrap_or_else(|e| panic!("{e:?}"));
        models.into_iter().map(crate::compile_model).collect()
    }

    /// The generated code without whitespace, for matching.
    fn squeezed(tokens: &TokenStream) -> String {
        tokens.to_string().split_whitespace().collect()
    }

    /// A row that spans whole heads (a projection stored as `[batch, heads, seq, dim]`)
    /// is one loop when its epilogue reads the row as one axis (a bias over the row), and
    /// one loop per head when it reads the head alone (a scale per head).
    #[test]
    fn row_epilogues_over_whole_heads_merge_them_where_the_index_allows() {
        let merged = "pub model Merged(x: [1, 8, 32]) -> [1, 2, 8, 16] {
            let proj = linear(x, 32);
            transpose(reshape(proj, [1, 8, 2, 16]), 1, 2)
        }";
        let code = squeezed(&compiled(merged)[0].tokens);
        assert!(
            code.contains("for(i2,slot)inrow[..32].iter_mut().enumerate(){")
                && !code.contains("chunks_exact_mut"),
            "{code}"
        );
        let per_head = "pub model PerHead(x: [1, 8, 32]) -> [1, 2, 8, 16] {
            let scale = param([2, 1], key = \"scale\");
            let proj = linear(x, 32, bias = false);
            transpose(reshape(proj, [1, 8, 2, 16]) * scale, 1, 2)
        }";
        let code = squeezed(&compiled(per_head)[0].tokens);
        assert!(code.contains("row[..32].chunks_exact_mut(16)"), "{code}");
    }

    #[test]
    fn a_loop_nest_reads_exact_length_arrays_at_folded_indices() {
        let code = squeezed(&compiled(ELEMENTWISE)[0].tokens);
        for expected in [
            // fixed-size arrays, so the compiler sees every index below the length
            "fnblk00_add_relu_square_sub(e0:&[f32;24],e1:&[f32;4],out:&mut[f32;24]){",
            // no loop over the batch axis of extent 1, no `* 1`, `+ 0` or `%`
            "fori1in0..2{fori2in0..3{fori3in0..4{out[i1*12+i2*4+i3]=",
            "::dnnfusion::runtime::math::relu(e0[i1*12+i2*4+i3]+e1[i3])",
            // the call site binds its operands under the callee's parameter names
            "Self::blk00_add_relu_square_sub(::dnnfusion::runtime::arena::fixed(e0),::dnnfusion::runtime::arena::fixed(e1),::dnnfusion::runtime::arena::fixed_mut(",
        ] {
            assert!(code.contains(expected), "`{expected}` missing from\n{code}");
        }
    }

    /// A prologue that reads its operand where it computes (ReLU6 and ReLU of a residual
    /// sum before a global pool) fills runs from runs of its operands and reads element
    /// `o` at `o % len`; one that broadcasts (a per-channel scale) keeps the index per
    /// axis.
    #[test]
    fn prologues_at_the_flat_position_read_runs() {
        let source =
            "pub model Heads(x: [1, 8, 5, 5], y: [1, 8, 5, 5], s: [1, 8, 1, 1]) -> [1, 24] {
            let a = global_avg_pool2d(clip(x, 0.0, 6.0));
            let b = global_avg_pool2d(relu(x + y));
            let c = global_avg_pool2d(x * s);
            concat([flatten(a), flatten(b), flatten(c)], axis = 1)
        }";
        let code = squeezed(&compiled(source)[0].tokens);
        let runs = code
            .matches("::dnnfusion::runtime::kernels::ComputedRuns{")
            .count();
        assert_eq!(runs, 2, "two flat prologues in\n{code}");
        for expected in [
            "at:|o:usize|->f32{leti1=o%200;",
            "runs:|base:usize,row:&mut[f32]|{letp0=&p0[base..][..row.len()];letp1=&p1[base..][..row.len()];foru(i1,slot)inrow.iter_mut().enumerate(){",
        ] {
            let expected = expected.replace("foru", "for");
            assert!(code.contains(&expected), "`{expected}` missing from\n{code}");
        }
    }

    #[test]
    fn block_functions_bind_nothing_they_do_not_use() {
        for source in references() {
            for model in compiled(&source) {
                let code = squeezed(&model.tokens);
                let name = &model.model.name;
                for fragment in [
                    "unused_variables)]fn",
                    "unused_variables,",
                    "identity_op",
                    "erasing_op",
                    "leti0=0",
                    "*1]",
                    "+0]",
                    "letmuto",
                ] {
                    assert!(!code.contains(fragment), "{name}: `{fragment}` in\n{code}");
                }
                let functions = code.split("fnblk").skip(1);
                for function in functions {
                    let signature = function.split_once('{').map_or("", |(s, _)| s);
                    let params = signature
                        .split_once('(')
                        .and_then(|(_, p)| p.strip_suffix(')'))
                        .unwrap_or("");
                    for param in params.split(',') {
                        let (_, ty) = param.split_once(':').unwrap_or(("", param));
                        let exact = (ty.starts_with("&[f32;") || ty.starts_with("&mut[f32;"))
                            && ty.ends_with(']');
                        // a pooling planned in place reads and writes one range: slices
                        let in_place =
                            signature.contains("pool2d") && (ty == "&[f32]" || ty == "&mut[f32]");
                        assert!(
                            exact || in_place,
                            "{name}: parameter `{param}` is not an array of exact length"
                        );
                    }
                }
            }
        }
    }

    /// The largest index of every read of `ex` outside a range test, with the operand it
    /// reads (a read inside a test is only valid where the test holds, which these ranges
    /// do not know).
    fn reads_of(ex: &Ex, shape: &[usize], out: &mut Vec<(usize, usize)>) {
        match ex {
            Ex::Load(k, ix) => out.push((*k, index::max(ix, shape))),
            Ex::Unary(_, a) => reads_of(a, shape, out),
            Ex::Binary(_, a, b) | Ex::Prelu(a, b) => {
                reads_of(a, shape, out);
                reads_of(b, shape, out);
            }
            Ex::Select(c, a, b) => {
                reads_of(c, shape, out);
                reads_of(a, shape, out);
                reads_of(b, shape, out);
            }
            Ex::InRange { .. } | Ex::Anchor | Ex::Const(_) | Ex::Let(_) => {}
        }
    }

    #[test]
    fn every_read_of_a_fused_block_is_provably_in_bounds() {
        // what lets the compiler drop the bounds checks: with arrays of exact length, an
        // index whose range stays below the length needs no check
        let mut checked = 0;
        for source in references() {
            for model in compiled(&source) {
                let graph = &model.model.graph;
                let facts = fuse::Facts::new(graph);
                for block in model.fusion.blocks.iter().filter(|b| b.nodes.len() > 1) {
                    let epilogue = fuse::block_form(&facts, block).unwrap().program;
                    let prologue = fuse::prologue_in(&facts, block);
                    let prologue = (!prologue.is_empty()).then_some(Block {
                        nodes: prologue,
                        anchor: None,
                        mapping: block.mapping,
                    });
                    let prologue = prologue.and_then(|b| element::build(graph, &b));
                    for mut program in std::iter::once(epilogue).chain(prologue) {
                        let first_table = program.operands.len();
                        let mut tables = hoist(&mut program);
                        simplify_program(&mut program, &mut tables);
                        let mut reads = Vec::new();
                        for e in program.lets.iter().chain(std::iter::once(&program.value)) {
                            reads_of(e, &program.shape, &mut reads);
                        }
                        for (k, top) in reads {
                            let len = match program.operands.get(k) {
                                Some(&v) => graph.values[v].len(),
                                None => tables.tables[k - first_table].1,
                            };
                            assert!(
                                top < len,
                                "{}: a read of operand {k} reaches {top}, its length is {len}",
                                model.model.name
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked >= 12, "only {checked} reads checked");
    }
}
