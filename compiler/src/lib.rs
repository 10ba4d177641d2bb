//! The dnnfusion compiler: everything `dnn!` does, as an ordinary library.
//!
//! The macro crate is a thin shell over [`expand`]; tests, the examples and tools call
//! the stages directly. The pipeline (see [`compile`]):
//!
//! ```text
//! tokens -> parse -> lower (+ check) -> rewrite -> prepare -> fuse (classify) -> plan -> codegen -> tokens
//!                                                  \-> (load-time graph) fuse -> plan -/
//! ```
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod check;
pub mod codegen;
pub mod diag;
pub mod element;
pub mod embed;
pub mod fuse;
pub mod ir;
pub mod lower;
pub mod ops;
pub mod parse;
pub mod plan;
pub mod prepare;
pub mod report;
pub mod rewrite;
pub mod tables;
pub mod work;

#[cfg(feature = "interp")]
pub mod interp;

use proc_macro2::TokenStream;
use quote::quote;

pub use diag::Diagnostics;
pub use embed::{ReadWeights, WeightsError, WeightsParam, WeightsReader, WeightsRequest};
pub use lower::{ModelIr, ShapeSession};

/// Highest tensor rank the DSL accepts (the runtime's strided kernels are sized for it).
pub const MAX_RANK: usize = 8;

/// Most elements one tensor may hold (2^32: 16 GiB of f32). Keeps every size the compiler
/// computes (element counts, arena offsets, parameter totals) far from overflow.
pub const MAX_ELEMENTS: usize = 1 << 32;

/// One compiled model: its lowered graph, its memory plan and its generated items.
#[derive(Debug)]
pub struct CompiledModel {
    /// The lowered, checked model.
    pub model: ModelIr,
    /// The fused blocks.
    pub fusion: fuse::FusionPlan,
    /// Where each value lives.
    pub memory: plan::MemoryPlan,
    /// The ops that run once at load time (parameter-only subgraphs), if any.
    pub load: Option<LoadStage>,
    /// How many of the run graph's parameters are loaded (the rest are computed by `load`).
    pub loaded_params: usize,
    /// The numbers of the fusion report.
    pub report: report::FusionReport,
    /// The generated Rust items.
    pub tokens: TokenStream,
}

/// The graph the generated `prepare` runs over the loaded parameters, fused and planned.
#[derive(Debug)]
pub struct LoadStage {
    /// No inputs; the loaded parameters; the derived values as outputs.
    pub graph: ir::Graph,
    /// Its fused blocks.
    pub fusion: fuse::FusionPlan,
    /// Where each of its values lives (its arena is scratch after the loaded parameters).
    pub memory: plan::MemoryPlan,
    /// How the parameter buffer is laid out around it.
    pub layout: plan::ParamLayout,
}

/// Runs the whole pipeline on the tokens of a `dnn!` invocation.
pub fn compile(tokens: TokenStream) -> Result<Vec<CompiledModel>, syn::Error> {
    compile_with(tokens, None).map(|(models, _)| models)
}

/// One `model Name = onnx("file.onnx", batch = 1);` to import.
#[derive(Clone, Copy, Debug)]
pub struct OnnxRequest<'a> {
    /// The file as written (relative to the declaring crate's `CARGO_MANIFEST_DIR`).
    pub path: &'a str,
    /// Sizes of dynamic dimensions, by name.
    pub pins: &'a [(String, usize)],
    /// The model's type name.
    pub name: &'a str,
}

/// What an importer gives for one [`OnnxRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedSource {
    /// The model as DSL text, `model Name(...) -> ... { ... }`.
    pub dsl: String,
    /// The file it read (absolute), included with `include_bytes!` so that editing it
    /// rebuilds the crate.
    pub tracked: Option<String>,
}

/// Reads ONNX files for `onnx("...")` declarations; the macro crate passes one when its
/// `onnx` feature is on (the compiler itself has no ONNX reader).
pub type OnnxImporter<'a> = &'a dyn Fn(&OnnxRequest<'_>) -> Result<ImportedSource, String>;

/// What the compiler cannot do alone and the macro crate supplies, by feature: read ONNX
/// files (`onnx`) and weights files (`embed`).
#[derive(Clone, Copy, Default)]
pub struct Hooks<'a> {
    /// Imports `model Name = onnx("file.onnx")` declarations.
    pub onnx: Option<OnnxImporter<'a>>,
    /// Reads `#[weights = "file.safetensors"]` files.
    pub weights: Option<WeightsReader<'a>>,
}

/// Environment variable that, when set, replaces `CARGO_MANIFEST_DIR` as the directory
/// `onnx("...")` and `#[weights = "..."]` paths are relative to (compile-fail tests set
/// it: trybuild builds each case in a crate of its own).
pub const MANIFEST_DIR_OVERRIDE: &str = "DNNFUSION_MANIFEST_DIR";

/// `relative` resolved against the declaring crate's directory ([`MANIFEST_DIR_OVERRIDE`],
/// else `CARGO_MANIFEST_DIR`).
pub fn manifest_path(relative: &str) -> Result<std::path::PathBuf, String> {
    let dir = std::env::var_os(MANIFEST_DIR_OVERRIDE)
        .or_else(|| std::env::var_os("CARGO_MANIFEST_DIR"))
        .ok_or_else(|| {
            "CARGO_MANIFEST_DIR is not set: file paths in `dnn!` are relative to the crate's Cargo.toml, so the crate must be built by cargo".to_string()
        })?;
    Ok(std::path::Path::new(&dir).join(relative))
}

/// Replaces every `onnx("...")` declaration by the model it imports; returns the
/// `include_bytes!` items that track the files.
fn resolve_onnx(
    ast: &mut parse::Ast,
    importer: Option<OnnxImporter<'_>>,
) -> Result<TokenStream, syn::Error> {
    let mut diags = Diagnostics::default();
    let mut tracking = TokenStream::new();
    for item in &mut ast.items {
        let parse::Item::Onnx(decl) = item else {
            continue;
        };
        let Some(importer) = importer else {
            diags.push(syn::Error::new_spanned(
                &decl.call,
                "`onnx(...)` needs the `onnx` feature: enable it on `dnnfusion` (`features = [\"onnx\"]`)",
            ));
            continue;
        };
        let pins: Vec<(String, usize)> =
            decl.pins.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        let name = decl.name.to_string();
        let request = OnnxRequest {
            path: &decl.path.value(),
            pins: &pins,
            name: &name,
        };
        let imported = match importer(&request) {
            Ok(i) => i,
            Err(message) => {
                diags.push(syn::Error::new_spanned(&decl.call, message));
                continue;
            }
        };
        if let Some(path) = &imported.tracked {
            tracking.extend(quote! { const _: &[u8] = ::core::include_bytes!(#path); });
        }
        let parsed = imported
            .dsl
            .parse::<TokenStream>()
            .map_err(|e| e.to_string())
            .map(|t| respan(t, decl.span))
            .and_then(|t| syn::parse2::<parse::Item>(t).map_err(|e| e.to_string()));
        match parsed {
            Ok(parse::Item::Model(mut model)) => {
                let mut attrs = std::mem::take(&mut decl.attrs);
                attrs.append(&mut model.attrs);
                model.attrs = attrs;
                model.vis = decl.vis.clone();
                model.name = decl.name.clone();
                *item = parse::Item::Model(model);
            }
            Ok(_) => diags.push(syn::Error::new_spanned(
                &decl.call,
                "internal error: the importer gave something other than a model; please report",
            )),
            Err(e) => diags.push(syn::Error::new_spanned(
                &decl.call,
                format!("internal error: the imported model does not parse ({e}); please report"),
            )),
        }
    }
    match diags.into_error() {
        Some(e) => Err(e),
        None => Ok(tracking),
    }
}

/// The same tokens, every one at `span` (an imported model's errors point at its
/// `onnx(...)`).
fn respan(tokens: TokenStream, span: proc_macro2::Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|tt| match tt {
            proc_macro2::TokenTree::Group(g) => {
                let mut group = proc_macro2::Group::new(g.delimiter(), respan(g.stream(), span));
                group.set_span(span);
                proc_macro2::TokenTree::Group(group)
            }
            mut other => {
                other.set_span(span);
                other
            }
        })
        .collect()
}

/// [`compile`], with an importer for `onnx("...")` declarations; also returns the items
/// that track the imported files.
pub fn compile_with(
    tokens: TokenStream,
    importer: Option<OnnxImporter<'_>>,
) -> Result<(Vec<CompiledModel>, TokenStream), syn::Error> {
    compile_hooked(
        tokens,
        Hooks {
            onnx: importer,
            weights: None,
        },
    )
}

/// [`compile`], with the macro crate's [`Hooks`]; also returns the items that track the
/// files read and the `embedded()` constructors of models with `#[weights = "..."]`.
pub fn compile_hooked(
    tokens: TokenStream,
    hooks: Hooks<'_>,
) -> Result<(Vec<CompiledModel>, TokenStream), syn::Error> {
    let mut ast = parse::parse(tokens)?;
    let mut extra = resolve_onnx(&mut ast, hooks.onnx)?;
    let mut diags = Diagnostics::default();
    let models = lower::lower(&ast, &mut diags);
    for model in &models {
        for group in &model.fuse_groups {
            if let Err(e) = fuse::check_group(&model.graph, &group.nodes) {
                let span = model.graph.nodes.get(e.node).map_or(group.span, |n| n.span);
                diags.push(syn::Error::new(span, e.message));
            }
        }
    }
    if let Some(error) = diags.into_error() {
        return Err(error);
    }
    let mut diags = Diagnostics::default();
    let mut compiled = Vec::with_capacity(models.len());
    for model in models {
        let weights = model.options.weights.clone();
        let owners = weights.as_ref().map(|_| embed::param_owners(&model.graph));
        let model = compile_model(model);
        if let (Some(file), Some(owners)) = (weights, owners) {
            match hooks.weights {
                Some(reader) => match embed::embed(&model, &file, &owners, reader) {
                    Ok(tokens) => extra.extend(tokens),
                    Err(e) => diags.push(e),
                },
                None => diags.push(syn::Error::new(
                    file.span(),
                    "`#[weights = \"...\"]` needs the `embed` feature: enable it on `dnnfusion` (`features = [\"embed\"]`)",
                )),
            }
        }
        compiled.push(model);
    }
    match diags.into_error() {
        Some(error) => Err(error),
        None => Ok((compiled, extra)),
    }
}

/// The stages after lowering, for one model: rewrite, move parameter-only ops to load
/// time, fuse, plan memory, report, generate.
pub fn compile_model(mut model: ModelIr) -> CompiledModel {
    let ops_lowered = model.graph.nodes.len();
    let flops_before = rewrite::graph_cost(&model.graph).flops;
    let rewrites = rewrite_model_guarded(&mut model);
    let flops_after = rewrite::graph_cost(&model.graph).flops;
    let planned = plan_model(&mut model);
    let report = planned
        .report(&model)
        .with_rewrites(ops_lowered, rewrites)
        .with_flops(flops_before, flops_after)
        .with_load_ops(planned.load.as_ref().map_or(0, |l| l.graph.nodes.len()));
    let tokens = codegen::codegen(
        &model,
        &planned.fusion,
        &planned.memory,
        &report,
        planned.load.as_ref(),
        planned.loaded_params,
    );
    CompiledModel {
        model,
        fusion: planned.fusion,
        memory: planned.memory,
        load: planned.load,
        loaded_params: planned.loaded_params,
        report,
        tokens,
    }
}

/// A rewritten model after weight packing, the load-time split, fusion and memory planning.
struct Planned {
    fusion: fuse::FusionPlan,
    memory: plan::MemoryPlan,
    unfused_memory: plan::MemoryPlan,
    load: Option<LoadStage>,
    loaded_params: usize,
}

impl Planned {
    fn report(&self, model: &ModelIr) -> report::FusionReport {
        report::FusionReport::new(
            &model.name.to_string(),
            &model.graph,
            &self.fusion,
            &self.memory,
            &self.unfused_memory,
            !model.options.fusion_off,
        )
    }
}

/// Packs weights, moves parameter-only ops to load time (both change `model.graph`),
/// fuses and plans memory.
fn plan_model(model: &mut ModelIr) -> Planned {
    let kept = fuse_group_nodes(model);
    let (packed, packed_map) = prepare::pack_weights(&model.graph, &kept);
    renumber_fuse_groups(model, &packed_map);
    model.graph = packed;
    let kept = fuse_group_nodes(model);
    let split = prepare::split(&model.graph, &kept);
    renumber_fuse_groups(model, &split.node_map);
    model.graph = split.run;
    let load = split.load.map(|graph| {
        let fusion = if model.options.fusion_off {
            fuse::FusionPlan::unfused(&graph)
        } else {
            fuse::fuse(&graph)
        };
        let memory = plan::plan(&graph, &fusion);
        LoadStage {
            graph,
            fusion,
            memory,
            layout: plan::ParamLayout::default(),
        }
    });
    let unfused = fuse::FusionPlan::unfused(&model.graph);
    let groups: Vec<Vec<usize>> = model.fuse_groups.iter().map(|g| g.nodes.clone()).collect();
    let fusion = if model.options.fusion_off {
        unfused.clone()
    } else {
        fuse::fuse_with_groups(&model.graph, &groups)
    };
    let mut memory = plan::plan(&model.graph, &fusion);
    let unfused_memory = plan::plan(&model.graph, &unfused);
    let mut load = load;
    if let Some(stage) = load.as_mut() {
        stage.layout = plan::layout_params(&model.graph, split.loaded_params, &mut memory);
    }
    Planned {
        fusion,
        memory,
        unfused_memory,
        load,
        loaded_params: split.loaded_params,
    }
}

/// What a rewrite must not make worse: the fused blocks run per inference and the bytes
/// of intermediates they write.
fn fused_cost(model: &ModelIr) -> (usize, usize) {
    let mut model = counted_clone(model);
    let planned = plan_model(&mut model);
    let report = planned.report(&model);
    (report.blocks, report.irs_bytes_after)
}

/// A copy of the model, counted as rewrite work (see [`work`]).
fn counted_clone(model: &ModelIr) -> ModelIr {
    work::add(
        work::Stage::Rewrite,
        model.graph.nodes.len() + model.graph.values.len(),
    );
    model.clone()
}

/// Rewrites the model (see [`rewrite_model`]), but never into a graph that fuses worse
/// than the one declared: when the fused plan of the result has more blocks or more
/// intermediate bytes, the applied rules are turned off one at a time, latest first, until
/// it no longer does (a rule can help FLOPs and still split a block: moving `1/sqrt(d)`
/// from attention scores onto `Q` costs BERT one block and one intermediate per layer).
pub fn rewrite_model_guarded(model: &mut ModelIr) -> Vec<&'static str> {
    let declared = counted_clone(model);
    let mut excluded: Vec<&'static str> = Vec::new();
    let mut applied = rewrite_model_excluding(model, &excluded);
    if applied.is_empty() || model.options.fusion_off {
        return applied;
    }
    let (blocks, bytes) = fused_cost(&declared);
    loop {
        let (now_blocks, now_bytes) = fused_cost(model);
        if now_blocks <= blocks && now_bytes <= bytes {
            return applied;
        }
        let mut distinct: Vec<&'static str> = Vec::new();
        for name in applied.iter().rev() {
            if !distinct.contains(name) {
                distinct.push(name);
            }
        }
        // the latest rule whose removal alone gives a plan as good as declared, else the
        // latest applied rule
        let mut chosen = distinct.first().copied();
        for name in &distinct {
            let mut trial = counted_clone(&declared);
            let mut trial_excluded = excluded.clone();
            trial_excluded.push(name);
            rewrite_model_excluding(&mut trial, &trial_excluded);
            let (b, y) = fused_cost(&trial);
            if b <= blocks && y <= bytes {
                chosen = Some(name);
                break;
            }
        }
        let Some(rule) = chosen else {
            *model = declared;
            return Vec::new();
        };
        excluded.push(rule);
        *model = counted_clone(&declared);
        applied = rewrite_model_excluding(model, &excluded);
        if applied.is_empty() {
            return applied;
        }
    }
}

/// Rewrites the model's graph in place (unless `#![rewrite(off)]`) and returns the names
/// of the applied rules. Nodes of `fuse { }` groups are kept and renumbered.
pub fn rewrite_model(model: &mut ModelIr) -> Vec<&'static str> {
    rewrite_model_excluding(model, &[])
}

/// [`rewrite_model`] without the rules named in `excluded`.
fn rewrite_model_excluding(model: &mut ModelIr, excluded: &[&'static str]) -> Vec<&'static str> {
    if model.options.rewrite == lower::RewriteMode::Off {
        return Vec::new();
    }
    let mut options = rewrite::RewriteOptions {
        fast_math: model.options.rewrite == lower::RewriteMode::FastMath,
        frozen: fuse_group_nodes(model),
        excluded: excluded.to_vec(),
        ..rewrite::RewriteOptions::default()
    };
    if let Some(limit) = model.options.max_rewrites {
        options.max_rewrites = limit;
    }
    let rewritten = rewrite::rewrite(&model.graph, &options);
    renumber_fuse_groups(model, &rewritten.node_map);
    model.graph = rewritten.graph;
    rewritten.applied
}

/// Every node of the model's `fuse { }` groups (the stages after lowering leave them as
/// written).
fn fuse_group_nodes(model: &ModelIr) -> Vec<usize> {
    model
        .fuse_groups
        .iter()
        .flat_map(|g| g.nodes.iter().copied())
        .collect()
}

/// Renumbers the nodes of the model's `fuse { }` groups after a stage rebuilt the graph
/// (`node_map[old]` is the new index, `None` for a node that left it).
fn renumber_fuse_groups(model: &mut ModelIr, node_map: &[Option<usize>]) {
    for group in &mut model.fuse_groups {
        group.nodes = group
            .nodes
            .iter()
            .filter_map(|&n| node_map.get(n).copied().flatten())
            .collect();
    }
}

/// Lowers DSL source text to models (for tests and tools that start from text).
pub fn lower_str(source: &str) -> Result<Vec<ModelIr>, Vec<String>> {
    let tokens: TokenStream = source
        .parse()
        .map_err(|e: proc_macro2::LexError| vec![e.to_string()])?;
    let ast = parse::parse(tokens)
        .map_err(|e| e.into_iter().map(|m| m.to_string()).collect::<Vec<_>>())?;
    let mut diags = Diagnostics::default();
    let models = lower::lower(&ast, &mut diags);
    if !diags.is_empty() {
        return Err(diags.messages());
    }
    Ok(models)
}

/// The `dnn!` macro: generated items, or `compile_error!`s plus stub types so that code
/// using the model reports nothing else.
pub fn expand(tokens: TokenStream) -> TokenStream {
    expand_with(tokens, None)
}

/// [`expand`], with an importer for `onnx("...")` declarations (the macro crate's
/// `onnx` feature).
pub fn expand_with(tokens: TokenStream, importer: Option<OnnxImporter<'_>>) -> TokenStream {
    expand_hooked(
        tokens,
        Hooks {
            onnx: importer,
            weights: None,
        },
    )
}

/// [`expand`], with the macro crate's [`Hooks`].
pub fn expand_hooked(tokens: TokenStream, hooks: Hooks<'_>) -> TokenStream {
    let stubs = stub_types(&tokens);
    match compile_hooked(tokens, hooks) {
        Ok((models, tracking)) => {
            let mut out = tracking;
            out.extend(models.into_iter().map(|m| m.tokens));
            out
        }
        Err(error) => {
            let errors = error.to_compile_error();
            quote! { #errors #stubs }
        }
    }
}

/// Stub `struct Name<'p>` items for every model header that parses, so a failed model
/// leaves only our diagnostics.
fn stub_types(tokens: &TokenStream) -> TokenStream {
    let mut out = TokenStream::new();
    // one stub per name: a model declared twice is our error, not rustc's E0428
    let mut seen: Vec<String> = Vec::new();
    let mut iter = tokens.clone().into_iter().peekable();
    let mut vis = TokenStream::new();
    while let Some(tt) = iter.next() {
        match &tt {
            proc_macro2::TokenTree::Ident(i) if i == "pub" => {
                vis = quote!(pub);
                if let Some(proc_macro2::TokenTree::Group(g)) = iter.peek() {
                    if g.delimiter() == proc_macro2::Delimiter::Parenthesis {
                        vis = quote!(pub #g);
                        iter.next();
                    }
                }
                continue;
            }
            proc_macro2::TokenTree::Ident(i) if i == "model" => {
                if let Some(proc_macro2::TokenTree::Ident(name)) = iter.peek() {
                    let text = name.to_string();
                    // skip keywords and `_` (`model fn`): a stub would only add a rustc error
                    if seen.contains(&text) || syn::parse2::<syn::Ident>(quote!(#name)).is_err() {
                        vis = TokenStream::new();
                        continue;
                    }
                    seen.push(text);
                    out.extend(quote! {
                        #[allow(dead_code)]
                        #vis struct #name<'p>(::core::marker::PhantomData<&'p ()>);

                        #[allow(dead_code)]
                        impl<'p> #name<'p> {
                            pub const INPUT_SHAPES: &'static [&'static [usize]] = &[];
                            pub const OUTPUT_SHAPES: &'static [&'static [usize]] = &[];
                            pub const ARENA_LEN: usize = 0;
                            pub const PARAM_LEN: usize = 0;
                            pub const LOADED_LEN: usize = 0;
                            pub const RUN_LEN: usize = 0;
                            pub const PARAMS: &'static [::dnnfusion::runtime::ParamSpec] = &[];
                            pub const OP_COUNT: usize = 0;
                            pub const fn embedded() -> Self {
                                Self(::core::marker::PhantomData)
                            }
                        }

                        impl<'p> ::dnnfusion::runtime::Model for #name<'p> {
                            const NAME: &'static str = "";
                            const INPUT_SHAPES: &'static [&'static [usize]] = &[];
                            const OUTPUT_SHAPES: &'static [&'static [usize]] = &[];
                            const ARENA_LEN: usize = 0;
                            const PARAM_LEN: usize = 0;
                            const LOADED_LEN: usize = 0;
                            const RUN_LEN: usize = 0;
                            const PARAMS: &'static [::dnnfusion::runtime::ParamSpec] = &[];
                            const OP_COUNT: usize = 0;
                            const FUSION_REPORT: ::dnnfusion::runtime::FusionReport = ::dnnfusion::runtime::FusionReport {
                                model: "",
                                ops: 0,
                                ops_after_rewrite: 0,
                                ops_at_load: 0,
                                rewrites: &[],
                                flops_before: 0,
                                flops_after: 0,
                                blocks: 0,
                                fusion: false,
                                irs_bytes_before: 0,
                                irs_bytes_after: 0,
                                arena_bytes: 0,
                                block_list: &[],
                            };
                            fn from_static_params(_: ::dnnfusion::runtime::Params<'static>) -> ::core::result::Result<Self, ::dnnfusion::runtime::LoadError> {
                                ::core::result::Result::Err(::dnnfusion::runtime::LoadError::Malformed { reason: "the model did not compile" })
                            }
                            fn prepare(_: &mut [f32]) -> ::core::result::Result<(), ::dnnfusion::runtime::LoadError> {
                                ::core::result::Result::Err(::dnnfusion::runtime::LoadError::Malformed { reason: "the model did not compile" })
                            }
                            fn run_slices_observed(&self, _: &[&[f32]], _: &mut [&mut [f32]], _: &mut [f32], _: &mut dyn ::core::ops::FnMut(usize)) -> ::core::result::Result<(), ::dnnfusion::runtime::RunError> {
                                ::core::result::Result::Ok(())
                            }
                        }
                    });
                }
            }
            _ => {}
        }
        vis = TokenStream::new();
    }
    out
}
