//! Stage 2, `lower`: [`Ast`] -> one [`Graph`] per model.
//!
//! Resolves names, evaluates integer and float expressions at compile time, unrolls `for`
//! loops, inlines block calls (each with its own parameter prefix), names parameters after
//! their binding, and asks `check` for every op's result shape, so every error points at
//! the token at fault.
//!
//! ```text
//!   let fc1 = linear(x, 512);      ->  fc1.weight:[512, 784]  fc1.bias:[512]
//!                                      fc1 = linear(x, fc1.weight, fc1.bias) : [1, 512]
//! ```
//!
//! A statement that fails binds its names to a poisoned value: later uses of it are
//! skipped silently, so one mistake gives one error.

use std::collections::HashMap;

use proc_macro2::Span;
use syn::{Attribute, Ident, Visibility};

use crate::check::{self, fmt_shape, ShapeError};
use crate::diag::Diagnostics;
use crate::ir::*;
use crate::parse::{Arg, Ast, BinOp, BlockDecl, Body, CondOp, Expr, Item, ModelDecl, Stmt};

/// A lowered model: its graph plus what codegen needs from the declaration.
#[derive(Clone, Debug)]
pub struct ModelIr {
    /// The generated type's name.
    pub name: Ident,
    /// Its visibility.
    pub vis: Visibility,
    /// `///` docs, carried over.
    pub docs: Vec<Attribute>,
    /// Options from `#[...]` attributes.
    pub options: ModelOptions,
    /// The checked graph.
    pub graph: Graph,
    /// Input names, in order.
    pub input_names: Vec<Ident>,
    /// The element type the caller passes for each input (integers become f32 on entry).
    pub input_dtypes: Vec<InputDtype>,
    /// Output names, in order.
    pub output_names: Vec<Ident>,
    /// `fuse { ... }` groups: the nodes each must put in one block, and where.
    pub fuse_groups: Vec<FuseGroup>,
}

/// What a caller passes for an input: f32 data, or integer indices (token ids).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputDtype {
    /// `x: [..]`
    F32,
    /// `ids: i64[..]`
    I64,
    /// `ids: i32[..]`
    I32,
}

/// The nodes created by the statements of one `fuse { ... }`.
#[derive(Clone, Debug)]
pub struct FuseGroup {
    /// Node indices, in order.
    pub nodes: Vec<usize>,
    /// The `fuse` keyword.
    pub span: Span,
}

/// Options given as attributes on a model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelOptions {
    /// `#[fusion(off)]`: one kernel call per op, for side-by-side measurement.
    pub fusion_off: bool,
    /// `#[rewrite(off)]`, `#[rewrite(on)]` (the default) or `#[rewrite(fast_math)]`.
    pub rewrite: RewriteMode,
    /// `#[rewrite(max_rewrites = N)]`: stop after N rewrites (to bisect a rewrite).
    pub max_rewrites: Option<usize>,
    /// `#[weights = "file.safetensors"]`: the parameters, read and prepared at compile
    /// time and compiled into the program (see [`crate::embed`]).
    pub weights: Option<syn::LitStr>,
    /// `#[scalars("key" = value, ...)]`: single values of the weights file compiled in
    /// as constants (the ONNX import writes it for the scalars it folds); the ONNX loader
    /// checks the file holds exactly these.
    pub scalars: Vec<(String, f32)>,
}

/// Which rewrite rules run on a model (README "Floating-point policy").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RewriteMode {
    /// `rewrite(off)`: the graph is compiled as declared.
    Off,
    /// `rewrite(on)`, the default: the exact rules (results change by rounding only).
    #[default]
    Exact,
    /// `rewrite(fast_math)`: the value-changing rules too.
    FastMath,
}

/// Reads `rewrite(...)`: a mode (`off`, `on`, `fast_math`) and/or `max_rewrites = N`,
/// into `options`; `Err` with a message for anything else.
fn rewrite_option(attr: &Attribute, options: &mut ModelOptions) -> Result<(), syn::Error> {
    const EXPECTED: &str = "expected `rewrite(off)`, `rewrite(on)`, `rewrite(fast_math)` or `rewrite(max_rewrites = N)`";
    let mut any = false;
    attr.parse_nested_meta(|meta| {
        any = true;
        if meta.path.is_ident("off") {
            options.rewrite = RewriteMode::Off;
            Ok(())
        } else if meta.path.is_ident("on") {
            options.rewrite = RewriteMode::Exact;
            Ok(())
        } else if meta.path.is_ident("fast_math") {
            options.rewrite = RewriteMode::FastMath;
            Ok(())
        } else if meta.path.is_ident("max_rewrites") {
            let value = meta.value()?;
            let limit = match value.parse::<syn::Lit>() {
                Ok(syn::Lit::Int(n)) => n.base10_parse::<usize>().ok(),
                _ => None,
            };
            match limit {
                Some(n) => {
                    options.max_rewrites = Some(n);
                    Ok(())
                }
                None => Err(meta.error(
                    "`max_rewrites` takes a whole number of rewrites, e.g. `rewrite(max_rewrites = 10)`",
                )),
            }
        } else {
            Err(meta.error(EXPECTED))
        }
    })?;
    if any {
        Ok(())
    } else {
        Err(syn::Error::new_spanned(attr, EXPECTED))
    }
}

/// Reads `fusion(off)` / `fusion(on)`; `Err` with a message for anything else.
fn fusion_option(attr: &Attribute) -> Result<bool, syn::Error> {
    let mut off = None;
    attr.parse_nested_meta(|meta| {
        if meta.path.is_ident("off") {
            off = Some(true);
            Ok(())
        } else if meta.path.is_ident("on") {
            off = Some(false);
            Ok(())
        } else {
            Err(meta.error("expected `fusion(off)` or `fusion(on)`"))
        }
    })?;
    off.ok_or_else(|| syn::Error::new_spanned(attr, "expected `fusion(off)` or `fusion(on)`"))
}

/// Reads `weights = "file.safetensors"` (or a `.onnx` file); `Err` for anything else.
fn weights_option(attr: &Attribute) -> Result<syn::LitStr, syn::Error> {
    const EXPECTED: &str = "expected `#[weights = \"file.safetensors\"]`: the weights file (safetensors or ONNX), relative to the crate's Cargo.toml";
    match &attr.meta {
        syn::Meta::NameValue(nv) => match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(path),
                ..
            }) => Ok(path.clone()),
            other => Err(syn::Error::new_spanned(other, EXPECTED)),
        },
        other => Err(syn::Error::new_spanned(other, EXPECTED)),
    }
}

/// Reads `scalars("key" = value, ...)`: keys (strings) and the finite f32 values the
/// model was compiled with.
fn scalars_option(attr: &Attribute) -> Result<Vec<(String, f32)>, syn::Error> {
    const EXPECTED: &str = "expected `#[scalars(\"key\" = 1.5, ...)]`: each a tensor key of the weights file and the one value the model is compiled with";
    let entry = |input: syn::parse::ParseStream<'_>| -> syn::Result<(String, f32)> {
        let key: syn::LitStr = input.parse()?;
        input.parse::<syn::Token![=]>()?;
        let negative = input.parse::<Option<syn::Token![-]>>()?.is_some();
        let lit: syn::Lit = input.parse()?;
        let magnitude = match &lit {
            syn::Lit::Float(f) => f.base10_parse::<f32>(),
            syn::Lit::Int(i) => i.base10_parse::<f32>(),
            other => Err(syn::Error::new_spanned(other, EXPECTED)),
        }?;
        if !magnitude.is_finite() {
            return Err(syn::Error::new_spanned(
                &lit,
                "a scalar must be a finite f32 value",
            ));
        }
        Ok((key.value(), if negative { -magnitude } else { magnitude }))
    };
    let parsed = attr
        .parse_args_with(|input: syn::parse::ParseStream<'_>| {
            syn::punctuated::Punctuated::<(String, f32), syn::Token![,]>::parse_terminated_with(
                input, entry,
            )
        })
        .map_err(|e| syn::Error::new(e.span(), format!("{e}; {EXPECTED}")))?;
    Ok(parsed.into_iter().collect())
}

/// Largest number of iterations a `for` loop may unroll to.
pub const MAX_LOOP_ITERATIONS: i64 = 4096;
/// Deepest nesting of block calls (catches recursion).
pub const MAX_CALL_DEPTH: usize = 32;

/// Lowers every model of the input; errors go to `diags`.
pub fn lower(ast: &Ast, diags: &mut Diagnostics) -> Vec<ModelIr> {
    let mut defaults = ModelOptions::default();
    for attr in &ast.inner_attrs {
        if attr.path().is_ident("fusion") {
            match fusion_option(attr) {
                Ok(off) => defaults.fusion_off = off,
                Err(e) => diags.push(e),
            }
        } else if attr.path().is_ident("rewrite") {
            if let Err(e) = rewrite_option(attr, &mut defaults) {
                diags.push(e);
            }
        } else {
            diags.push(syn::Error::new_spanned(
                attr.path(),
                "unknown option; the `#![...]` options are `#![fusion(off)]` and `#![rewrite(off)]` / `#![rewrite(fast_math)]`",
            ));
        }
    }
    let mut blocks: HashMap<String, &BlockDecl> = HashMap::new();
    for item in &ast.items {
        if let Item::Block(block) = item {
            let name = block.name.to_string();
            if blocks.contains_key(&name) || crate::ops::is_op(&name) {
                diags.push(syn::Error::new(
                    block.name.span(),
                    format!("block `{name}` is already defined (as a block or a built-in op); pick another name"),
                ));
                continue;
            }
            blocks.insert(name, block);
        }
    }
    let mut seen_models: HashMap<String, Span> = HashMap::new();
    let mut models = Vec::new();
    for item in &ast.items {
        if let Item::Onnx(decl) = item {
            diags.push(syn::Error::new_spanned(
                &decl.call,
                "`onnx(...)` is not imported here: only the `dnn!` macro (with the `onnx` feature) and `compile_with` import ONNX files",
            ));
        }
        if let Item::Model(model) = item {
            let name = model.name.to_string();
            if seen_models
                .insert(name.clone(), model.name.span())
                .is_some()
            {
                diags.push(syn::Error::new(
                    model.name.span(),
                    format!("model `{name}` is declared twice; give each model its own name"),
                ));
                continue;
            }
            if let Some(ir) = lower_model(model, &blocks, &defaults, diags) {
                models.push(ir);
            }
        }
    }
    models
}

/// Lowers a model body a few statements at a time and answers the shape of each binding:
/// the shape inference of the ONNX importer, which so follows the DSL's own shape rules.
///
/// ```text
///   ShapeSession::new(&[("x", [1, 8])])  .push("let y = linear(x, 4);")  .shape("y") == [1, 4]
/// ```
#[derive(Default)]
pub struct ShapeSession {
    graph: Graph,
    keys: HashMap<String, Span>,
    names: HashMap<String, usize>,
    env: Env,
}

impl ShapeSession {
    /// A session whose body sees these inputs.
    pub fn new(inputs: &[(String, Vec<usize>)]) -> Self {
        let mut session = ShapeSession {
            env: Env {
                frames: vec![HashMap::new()],
            },
            ..ShapeSession::default()
        };
        for (position, (name, shape)) in inputs.iter().enumerate() {
            let id =
                session
                    .graph
                    .add_value(name.clone(), shape.clone(), ValueKind::Input(position));
            session.graph.inputs.push(id);
            session.names.insert(name.clone(), 1);
            session.env.bind(name.clone(), Val::Tensor(id));
        }
        session
    }

    /// Lowers `stmts` (statements as written in a model body) after the earlier ones;
    /// on error, the messages (the session keeps what lowered before the error).
    pub fn push(&mut self, stmts: &str) -> Result<(), Vec<String>> {
        let text = format!("model Session() -> [1] {{ {stmts} 0 }}");
        let tokens: proc_macro2::TokenStream = text
            .parse()
            .map_err(|e: proc_macro2::LexError| vec![e.to_string()])?;
        let ast = crate::parse::parse(tokens).map_err(|e| vec![e.to_string()])?;
        let Some(Item::Model(model)) = ast.items.first() else {
            return Err(vec!["statements did not parse as a model body".to_string()]);
        };
        let blocks = HashMap::new();
        let mut diags = Diagnostics::default();
        let mut lw = Lowerer {
            graph: std::mem::take(&mut self.graph),
            blocks: &blocks,
            diags: &mut diags,
            prefix: Vec::new(),
            stmt_key: None,
            keys: std::mem::take(&mut self.keys),
            names: std::mem::take(&mut self.names),
            call_stack: Vec::new(),
            fuse_groups: Vec::new(),
        };
        lw.lower_stmts(&model.body.stmts, &mut self.env);
        self.graph = lw.graph;
        self.keys = lw.keys;
        self.names = lw.names;
        if diags.is_empty() {
            Ok(())
        } else {
            Err(diags.messages())
        }
    }

    /// The shape of the tensor bound to `name`, if one is.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        match self.env.get(name)? {
            Val::Tensor(id) => Some(self.graph.shape(*id).to_vec()),
            _ => None,
        }
    }
}

/// A compile-time value.
#[derive(Clone, Debug)]
pub(crate) enum Val {
    Tensor(ValueId),
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
    List(Vec<(Val, Span)>),
    Tuple(Vec<ValueId>),
    /// The binding failed earlier; uses are skipped without a new error.
    Poison,
}

impl Val {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Val::Tensor(_) => "a tensor",
            Val::Int(_) => "an integer",
            Val::Float(_) => "a float",
            Val::Str(_) => "a string",
            Val::Bool(_) => "a boolean",
            Val::List(_) => "a list",
            Val::Tuple(_) => "a tuple of tensors",
            Val::Poison => "an earlier error",
        }
    }
}

/// An error already reported (or a poisoned operand): stop evaluating this statement.
#[derive(Debug)]
pub(crate) struct Reported;

pub(crate) type Eval<T> = Result<T, Reported>;

/// Names visible in a body: a stack of frames (one per loop body).
#[derive(Default)]
struct Env {
    frames: Vec<HashMap<String, Val>>,
}

impl Env {
    fn get(&self, name: &str) -> Option<&Val> {
        self.frames.iter().rev().find_map(|f| f.get(name))
    }
    /// Every name in scope (for a typo's hint).
    fn names(&self) -> impl Iterator<Item = &str> {
        self.frames
            .iter()
            .flat_map(|f| f.keys().map(String::as_str))
    }
    fn bind(&mut self, name: String, val: Val) {
        if let Some(frame) = self.frames.last_mut() {
            frame.insert(name, val);
        }
    }
    fn assign(&mut self, name: &str, val: Val) -> bool {
        for frame in self.frames.iter_mut().rev() {
            if let Some(slot) = frame.get_mut(name) {
                *slot = val;
                return true;
            }
        }
        false
    }
}

/// The state of lowering one model.
pub(crate) struct Lowerer<'a> {
    pub(crate) graph: Graph,
    blocks: &'a HashMap<String, &'a BlockDecl>,
    pub(crate) diags: &'a mut Diagnostics,
    /// Key prefix of the block call being lowered (`layers.0`).
    prefix: Vec<String>,
    /// Key of the statement being lowered (its `#[key]` or binding name).
    stmt_key: Option<String>,
    /// Used parameter keys and where.
    keys: HashMap<String, Span>,
    /// Value names already used, for unique naming.
    names: HashMap<String, usize>,
    /// Block call stack, for recursion errors.
    call_stack: Vec<String>,
    /// `fuse { ... }` groups seen so far.
    fuse_groups: Vec<FuseGroup>,
}

fn lower_model(
    model: &ModelDecl,
    blocks: &HashMap<String, &BlockDecl>,
    defaults: &ModelOptions,
    diags: &mut Diagnostics,
) -> Option<ModelIr> {
    let mut docs = Vec::new();
    let mut options = defaults.clone();
    for attr in &model.attrs {
        if attr.path().is_ident("doc") {
            docs.push(attr.clone());
        } else if attr.path().is_ident("fusion") {
            match fusion_option(attr) {
                Ok(off) => options.fusion_off = off,
                Err(e) => diags.push(e),
            }
        } else if attr.path().is_ident("rewrite") {
            if let Err(e) = rewrite_option(attr, &mut options) {
                diags.push(e);
            }
        } else if attr.path().is_ident("scalars") {
            match scalars_option(attr) {
                Ok(mut scalars) => options.scalars.append(&mut scalars),
                Err(e) => diags.push(e),
            }
        } else if attr.path().is_ident("weights") {
            match weights_option(attr) {
                Ok(path) if options.weights.is_some() => diags.push(syn::Error::new_spanned(
                    path,
                    "a model takes one `#[weights = \"...\"]` file",
                )),
                Ok(path) => options.weights = Some(path),
                Err(e) => diags.push(e),
            }
        } else {
            diags.push(syn::Error::new_spanned(
                attr.path(),
                "unknown model attribute; a model takes `///` docs, `#[fusion(off)]`, `#[rewrite(off | on | fast_math, max_rewrites = N)]`, `#[weights = \"file.safetensors\"]` and `#[scalars(\"key\" = value, ...)]`",
            ));
        }
    }
    let errors_before = diags.len();
    let mut lw = Lowerer {
        graph: Graph::default(),
        blocks,
        diags,
        prefix: Vec::new(),
        stmt_key: None,
        keys: HashMap::new(),
        names: HashMap::new(),
        call_stack: Vec::new(),
        fuse_groups: Vec::new(),
    };
    let mut env = Env {
        frames: vec![HashMap::new()],
    };
    let mut input_names = Vec::new();
    let mut input_dtypes = Vec::new();
    for (position, decl) in model.inputs.iter().enumerate() {
        let dtype = match decl.dtype.as_ref().map(|d| (d.to_string(), d.span())) {
            None => InputDtype::F32,
            Some((d, _)) if d == "f32" => InputDtype::F32,
            Some((d, _)) if d == "i64" => InputDtype::I64,
            Some((d, _)) if d == "i32" => InputDtype::I32,
            Some((d, span)) => {
                lw.error(
                    span,
                    format!("unknown input type `{d}`: inputs are f32 (`x: [1, 3]`), or integer indices `i64` / `i32` (`ids: i64[1, 128]`)"),
                );
                InputDtype::F32
            }
        };
        let name = decl.name.to_string();
        if env.get(&name).is_some() {
            lw.error(
                decl.name.span(),
                format!("input `{name}` is declared twice; give each input its own name"),
            );
            continue;
        }
        let shape = lw.eval_shape(&decl.shape, &env, decl.shape_span, "input");
        let Some(shape) = shape else {
            env.bind(name, Val::Poison);
            continue;
        };
        let unique = lw.unique_name(&name);
        let id = lw
            .graph
            .add_value(unique, shape, ValueKind::Input(position));
        lw.graph.inputs.push(id);
        input_names.push(decl.name.clone());
        input_dtypes.push(dtype);
        env.bind(name, Val::Tensor(id));
    }
    let mut declared_outputs = Vec::new();
    for out in &model.outputs {
        declared_outputs.push(lw.eval_shape(&out.shape, &env, out.shape_span, "output"));
    }
    let result = lw.lower_body(&model.body, &mut env);
    let result_span = match &result {
        Ok((_, span)) => *span,
        Err(Reported) => model.body.close_span,
    };
    let result_tensors: Vec<(ValueId, Span)> = match result {
        Ok((Val::Tensor(id), span)) => vec![(id, span)],
        Ok((Val::Tuple(ids), span)) => ids.into_iter().map(|id| (id, span)).collect(),
        Ok((other, span)) => {
            lw.error(
                span,
                format!("a model's result must be a tensor, found {}", other.kind()),
            );
            Vec::new()
        }
        Err(Reported) => Vec::new(),
    };
    if lw.diags.len() > errors_before {
        return None;
    }
    if result_tensors.len() != model.outputs.len() {
        let span = if result_tensors.is_empty() {
            model.body.close_span
        } else {
            result_span
        };
        lw.error(
            span,
            format!(
                "model `{}` declares {} output(s) but its body gives {}; return a tuple `(a, b)` with one tensor per declared output",
                model.name,
                model.outputs.len(),
                result_tensors.len()
            ),
        );
        return None;
    }
    let mut output_names = Vec::new();
    for (i, ((id, span), (decl, declared))) in result_tensors
        .iter()
        .zip(model.outputs.iter().zip(&declared_outputs))
        .enumerate()
    {
        let found = lw.graph.shape(*id).to_vec();
        if let Some(declared) = declared {
            if *declared != found {
                lw.error(
                    *span,
                    format!(
                        "output {i} of `{}` is declared {} but the body computes {}; fix the declaration after `->` or the body",
                        model.name,
                        fmt_shape(declared),
                        fmt_shape(&found)
                    ),
                );
            }
        }
        let name = match &decl.name {
            Some(n) => n.clone(),
            None if model.outputs.len() == 1 => Ident::new("output", model.name.span()),
            None => Ident::new(&format!("output{i}"), model.name.span()),
        };
        output_names.push(name);
        lw.graph.outputs.push(*id);
    }
    if lw.diags.len() > errors_before {
        return None;
    }
    if let Err(message) = check::check(&lw.graph) {
        lw.error(
            Span::call_site(),
            format!("internal error in `lower`: {message}; please report"),
        );
        return None;
    }
    Some(ModelIr {
        name: model.name.clone(),
        vis: model.vis.clone(),
        docs,
        options,
        graph: lw.graph,
        input_names,
        input_dtypes,
        output_names,
        fuse_groups: lw.fuse_groups,
    })
}

impl Lowerer<'_> {
    pub(crate) fn error(&mut self, span: Span, message: impl Into<String>) {
        self.diags.push(syn::Error::new(span, message.into()));
    }

    /// Reports `message` at `span` and returns the error marker.
    pub(crate) fn fail<T>(&mut self, span: Span, message: impl Into<String>) -> Eval<T> {
        self.error(span, message);
        Err(Reported)
    }

    fn unique_name(&mut self, base: &str) -> String {
        let count = self.names.entry(base.to_string()).or_insert(0);
        *count += 1;
        if *count == 1 {
            base.to_string()
        } else {
            format!("{base}_{}", *count - 1)
        }
    }

    fn eval_shape(
        &mut self,
        dims: &[Expr],
        env: &Env,
        span: Span,
        what: &str,
    ) -> Option<Vec<usize>> {
        let mut shape = Vec::new();
        let mut ok = true;
        for d in dims {
            match self.eval(
                d,
                &mut Env {
                    frames: env.frames.clone(),
                },
            ) {
                // 0 is allowed: an empty tensor (ONNX has them)
                Ok((Val::Int(n), _)) if n >= 0 => shape.push(n as usize),
                Ok((Val::Int(n), s)) => {
                    self.error(
                        s,
                        format!("{what} dimensions must be non-negative, found {n}"),
                    );
                    ok = false;
                }
                Ok((other, s)) => {
                    self.error(
                        s,
                        format!("{what} dimensions must be integers, found {}", other.kind()),
                    );
                    ok = false;
                }
                Err(Reported) => ok = false,
            }
        }
        if ok && shape.len() > crate::MAX_RANK {
            self.error(
                span,
                format!(
                    "{what} rank {} is above the supported maximum of {}",
                    shape.len(),
                    crate::MAX_RANK
                ),
            );
            ok = false;
        } else if ok && check::elements(&shape).is_none() {
            self.error(
                span,
                format!(
                    "{what} shape {} has more than {} elements, the supported maximum",
                    fmt_shape(&shape),
                    crate::MAX_ELEMENTS
                ),
            );
            ok = false;
        }
        ok.then_some(shape)
    }

    fn lower_body(&mut self, body: &Body, env: &mut Env) -> Eval<(Val, Span)> {
        self.lower_stmts(&body.stmts, env);
        match &body.result {
            Some(expr) => {
                self.stmt_key = None;
                self.eval(expr, env)
            }
            None => self.fail(
                body.close_span,
                "missing result: end the body with the expression it computes (no `;` after it)",
            ),
        }
    }

    fn key_for(&mut self, key: &Option<syn::LitStr>, default: &Ident, env: &Env) -> Option<String> {
        match key {
            Some(lit) => self.format_key(lit, env).ok(),
            None => Some(default.to_string()),
        }
    }

    /// Substitutes `{i}` with integers in scope.
    fn format_key(&mut self, lit: &syn::LitStr, env: &Env) -> Eval<String> {
        let text = lit.value();
        let mut out = String::new();
        let mut rest = text.as_str();
        while let Some(open) = rest.find('{') {
            out.push_str(rest.get(..open).unwrap_or(""));
            let after = rest.get(open + 1..).unwrap_or("");
            let Some(close) = after.find('}') else {
                return self.fail(lit.span(), "unclosed `{` in key");
            };
            let name = after.get(..close).unwrap_or("").trim();
            match env.get(name) {
                Some(Val::Int(n)) => out.push_str(&n.to_string()),
                Some(other) => {
                    let kind = other.kind();
                    return self.fail(
                        lit.span(),
                        format!("`{{{name}}}` in a key must be an integer, found {kind}"),
                    );
                }
                None => {
                    return self.fail(
                        lit.span(),
                        format!("`{{{name}}}` in the key is not a name in scope"),
                    )
                }
            }
            rest = after.get(close + 1..).unwrap_or("");
        }
        out.push_str(rest);
        Ok(out)
    }

    fn lower_stmts(&mut self, stmts: &[Stmt], env: &mut Env) {
        for stmt in stmts {
            match stmt {
                Stmt::Let {
                    key,
                    names,
                    tuple,
                    value,
                } => {
                    let Some(first) = names.first() else { continue };
                    self.stmt_key = self.key_for(key, first, env);
                    // a bad `#[key]` was reported: skip the statement (no follow-on errors)
                    let result = if self.stmt_key.is_some() {
                        self.eval(value, env)
                    } else {
                        Err(Reported)
                    };
                    self.bind_result(names, *tuple, result, env);
                }
                Stmt::Assign { key, name, value } => {
                    if env.get(&name.to_string()).is_none() {
                        self.error(name.span(), format!("cannot assign to `{name}`: it is not bound yet; use `let {name} = ...`"));
                        continue;
                    }
                    self.stmt_key = self.key_for(key, name, env);
                    let val = match self.stmt_key.is_some().then(|| self.eval(value, env)) {
                        Some(Ok((v, _))) => v,
                        Some(Err(Reported)) | None => Val::Poison,
                    };
                    env.assign(&name.to_string(), val);
                }
                Stmt::If {
                    branches,
                    otherwise,
                    ..
                } => {
                    let mut taken = None;
                    for (cond, body) in branches {
                        match self.eval(cond, env) {
                            Ok((Val::Bool(true), _)) => {
                                taken = Some(body);
                                break;
                            }
                            Ok((Val::Bool(false), _)) => {}
                            Ok((other, s)) => {
                                let msg = format!(
                                    "an `if` condition must be a boolean decided at compile time (`stride != 1 || c != planes`), found {}",
                                    other.kind()
                                );
                                self.error(s, msg);
                                taken = None;
                                break;
                            }
                            // reported; lower neither branch (no follow-on errors)
                            Err(Reported) => {
                                taken = None;
                                break;
                            }
                        }
                        taken = otherwise.as_ref();
                    }
                    if let Some(body) = taken {
                        env.frames.push(HashMap::new());
                        self.lower_stmts(body, env);
                        env.frames.pop();
                    }
                }
                Stmt::Fuse { body, span } => {
                    let first = self.graph.nodes.len();
                    self.lower_stmts(body, env);
                    let nodes: Vec<usize> = (first..self.graph.nodes.len()).collect();
                    if nodes.is_empty() {
                        self.error(*span, "this `fuse` group has no op; put the `let` statements of the ops to fuse inside it");
                    } else {
                        self.fuse_groups.push(FuseGroup { nodes, span: *span });
                    }
                }
                Stmt::For {
                    var,
                    start,
                    end,
                    body,
                    ..
                } => {
                    let range = (self.eval(start, env), self.eval(end, env));
                    let (start, end, end_span) = match range {
                        (Ok((Val::Int(a), _)), Ok((Val::Int(b), eb))) => (a, b, eb),
                        (Ok((a, sa)), Ok((b, sb))) => {
                            let kinds = format!("{} and {}", a.kind(), b.kind());
                            // point at the bound that is not an integer
                            let at = if matches!(a, Val::Int(_)) { sb } else { sa };
                            self.error(
                                at,
                                format!("a `for` range needs integer bounds, found {kinds}"),
                            );
                            continue;
                        }
                        _ => continue,
                    };
                    let count = i128::from(end) - i128::from(start);
                    if count > i128::from(MAX_LOOP_ITERATIONS) {
                        self.error(end_span, format!("this loop unrolls {count} times; the limit is {MAX_LOOP_ITERATIONS}"));
                        continue;
                    }
                    for i in start..end {
                        env.frames.push(HashMap::new());
                        env.bind(var.to_string(), Val::Int(i));
                        self.lower_stmts(body, env);
                        env.frames.pop();
                    }
                }
            }
        }
        self.stmt_key = None;
    }

    fn bind_result(
        &mut self,
        names: &[Ident],
        tuple: bool,
        result: Eval<(Val, Span)>,
        env: &mut Env,
    ) {
        match (result, tuple) {
            (Ok((val, _)), false) => {
                if let (Some(name), Val::Tensor(id)) = (names.first(), &val) {
                    self.rename(*id, &name.to_string());
                }
                if let Some(name) = names.first() {
                    env.bind(name.to_string(), val);
                }
            }
            (Ok((Val::Tuple(ids), span)), true) => {
                if ids.len() != names.len() {
                    self.error(
                        span,
                        format!(
                            "the right side gives {} tensors but the pattern has {} names",
                            ids.len(),
                            names.len()
                        ),
                    );
                    for name in names {
                        env.bind(name.to_string(), Val::Poison);
                    }
                    return;
                }
                for (name, id) in names.iter().zip(ids) {
                    self.rename(id, &name.to_string());
                    env.bind(name.to_string(), Val::Tensor(id));
                }
            }
            (Ok((other, span)), true) => {
                self.error(
                    span,
                    format!(
                        "a tuple pattern needs several tensors (from `split` or a block), found {}",
                        other.kind()
                    ),
                );
                for name in names {
                    env.bind(name.to_string(), Val::Poison);
                }
            }
            (Err(Reported), _) => {
                for name in names {
                    env.bind(name.to_string(), Val::Poison);
                }
            }
        }
    }

    /// Names a node output after the binding that holds it (first binding wins).
    fn rename(&mut self, id: ValueId, name: &str) {
        let is_fresh_node = self
            .graph
            .values
            .get(id)
            .is_some_and(|v| matches!(v.kind, ValueKind::Node(_)) && v.name.starts_with('%'));
        if is_fresh_node {
            let base = match self.prefix.is_empty() {
                true => name.to_string(),
                false => format!("{}_{name}", self.prefix.join("_").replace('.', "_")),
            };
            let unique = self.unique_name(&base);
            if let Some(v) = self.graph.values.get_mut(id) {
                v.name = unique;
            }
        }
    }

    fn eval(&mut self, expr: &Expr, env: &mut Env) -> Eval<(Val, Span)> {
        let span = expr.span();
        let val = match expr {
            Expr::Name(ident) => match env.get(&ident.to_string()) {
                Some(Val::Poison) => return Err(Reported),
                Some(v) => v.clone(),
                None => {
                    let name = ident.to_string();
                    let hint = if crate::ops::is_op(&name) || self.blocks.contains_key(&name) {
                        format!("; `{name}` is an op: call it, as in `{name}(x)`")
                    } else if let Some(near) = (name.chars().count() > 1)
                        .then(|| crate::ops::closest_of(&name, env.names()))
                        .flatten()
                    {
                        format!(" (did you mean `{near}`?)")
                    } else {
                        String::new()
                    };
                    return self.fail(
                        ident.span(),
                        format!("cannot find `{name}` in this scope{hint}"),
                    );
                }
            },
            Expr::Int(lit) => match lit.base10_parse::<i64>() {
                Ok(n) => Val::Int(n),
                Err(e) => return self.fail(lit.span(), e.to_string()),
            },
            Expr::Float(lit) => match lit.base10_parse::<f64>() {
                Ok(x) => Val::Float(x),
                Err(e) => return self.fail(lit.span(), e.to_string()),
            },
            Expr::Str(lit) => Val::Str(lit.value()),
            Expr::Bool(b, _) => Val::Bool(*b),
            Expr::List(items, _) => {
                let mut vals = Vec::new();
                for item in items {
                    vals.push(self.eval(item, env)?);
                }
                Val::List(vals)
            }
            Expr::Tuple(items, _) => {
                let mut ids = Vec::new();
                for item in items {
                    match self.eval(item, env)? {
                        (Val::Tensor(id), _) => ids.push(id),
                        (other, s) => {
                            return self
                                .fail(s, format!("a tuple holds tensors, found {}", other.kind()))
                        }
                    }
                }
                Val::Tuple(ids)
            }
            Expr::Not(inner, _) => match self.eval(inner, env)? {
                (Val::Bool(b), _) => Val::Bool(!b),
                (other, s) => {
                    return self.fail(s, format!("`!` takes a boolean, found {}", other.kind()));
                }
            },
            Expr::Cond {
                op,
                op_span,
                lhs,
                rhs,
            } => {
                let l = self.eval(lhs, env)?;
                let r = self.eval(rhs, env)?;
                Val::Bool(self.condition(*op, *op_span, l, r)?)
            }
            Expr::Neg(inner, minus) => {
                let (v, s) = self.eval(inner, env)?;
                match v {
                    Val::Int(n) => match n.checked_neg() {
                        Some(v) => Val::Int(v),
                        None => {
                            return self.fail(
                                *minus,
                                "integer overflow: the result does not fit in 64 bits",
                            )
                        }
                    },
                    Val::Float(x) => Val::Float(-x),
                    Val::Tensor(id) => {
                        Val::Tensor(self.node(Op::Unary(UnaryOp::Neg), vec![id], &[s], *minus)?)
                    }
                    other => return self.fail(s, format!("cannot negate {}", other.kind())),
                }
            }
            Expr::Binary {
                op,
                op_span,
                lhs,
                rhs,
            } => {
                let l = self.eval(lhs, env)?;
                let r = self.eval(rhs, env)?;
                self.binary(*op, *op_span, l, r)?
            }
            Expr::Call { func, args, .. } => return self.call(func, args, env, span),
        };
        Ok((val, span))
    }

    /// A comparison or logic operator, evaluated at compile time.
    fn condition(
        &mut self,
        op: CondOp,
        op_span: Span,
        (l, _): (Val, Span),
        (r, _): (Val, Span),
    ) -> Eval<bool> {
        use std::cmp::Ordering;
        let sym = op.symbol();
        let order = match (&l, &r) {
            (Val::Int(a), Val::Int(b)) => Some(a.cmp(b)),
            (a @ (Val::Int(_) | Val::Float(_)), b @ (Val::Int(_) | Val::Float(_))) => {
                as_f64(a).partial_cmp(&as_f64(b))
            }
            (Val::Str(a), Val::Str(b)) if matches!(op, CondOp::Eq | CondOp::Ne) => Some(a.cmp(b)),
            (Val::Bool(a), Val::Bool(b)) => match op {
                CondOp::And => return Ok(*a && *b),
                CondOp::Or => return Ok(*a || *b),
                CondOp::Eq | CondOp::Ne => Some(a.cmp(b)),
                _ => None,
            },
            _ => None,
        };
        let comparable = matches!(
            (&l, &r),
            (Val::Int(_) | Val::Float(_), Val::Int(_) | Val::Float(_))
                | (Val::Str(_), Val::Str(_))
                | (Val::Bool(_), Val::Bool(_))
        ) && !matches!(op, CondOp::And | CondOp::Or);
        if !comparable {
            let (lk, rk) = (l.kind(), r.kind());
            let what = if matches!(op, CondOp::And | CondOp::Or) {
                "booleans"
            } else {
                "numbers, strings (`==`, `!=`) or booleans (`==`, `!=`), known at compile time"
            };
            return self.fail(
                op_span,
                format!("cannot apply `{sym}` to {lk} and {rk}; it takes {what}"),
            );
        }
        Ok(match (op, order) {
            // a NaN compares unequal to everything
            (CondOp::Ne, None) => true,
            (_, None) => false,
            (CondOp::Eq, Some(o)) => o == Ordering::Equal,
            (CondOp::Ne, Some(o)) => o != Ordering::Equal,
            (CondOp::Lt, Some(o)) => o == Ordering::Less,
            (CondOp::Le, Some(o)) => o != Ordering::Greater,
            (CondOp::Gt, Some(o)) => o == Ordering::Greater,
            (CondOp::Ge, Some(o)) => o != Ordering::Less,
            (CondOp::And | CondOp::Or, Some(_)) => false,
        })
    }

    fn binary(
        &mut self,
        op: BinOp,
        op_span: Span,
        (l, ls): (Val, Span),
        (r, rs): (Val, Span),
    ) -> Eval<Val> {
        let sym = match op {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
        };
        match (l, r) {
            (Val::Int(a), Val::Int(b)) => {
                let v = match op {
                    BinOp::Add => a.checked_add(b),
                    BinOp::Sub => a.checked_sub(b),
                    BinOp::Mul => a.checked_mul(b),
                    BinOp::Div | BinOp::Rem if b == 0 => {
                        return self.fail(
                            rs,
                            format!("integer `{sym}` by zero; the right side must not be 0"),
                        )
                    }
                    BinOp::Div if a.checked_rem(b).is_some_and(|r| r != 0) => {
                        return Ok(Val::Float(a as f64 / b as f64))
                    }
                    BinOp::Div => a.checked_div(b),
                    BinOp::Rem => a.checked_rem(b),
                };
                match v {
                    Some(v) => Ok(Val::Int(v)),
                    None => self.fail(
                        op_span,
                        "integer overflow: the result does not fit in 64 bits",
                    ),
                }
            }
            (Val::Int(_) | Val::Float(_), Val::Int(_) | Val::Float(_)) if op == BinOp::Rem => {
                self.fail(op_span, "`%` takes integers only")
            }
            (a @ (Val::Int(_) | Val::Float(_)), b @ (Val::Int(_) | Val::Float(_))) => {
                let (a, b) = (as_f64(&a), as_f64(&b));
                Ok(Val::Float(match op {
                    BinOp::Add => a + b,
                    BinOp::Sub => a - b,
                    BinOp::Mul => a * b,
                    BinOp::Div => a / b,
                    BinOp::Rem => a % b,
                }))
            }
            (Val::Tensor(t), s @ (Val::Int(_) | Val::Float(_))) => {
                let c = as_f64(&s) as f32;
                let Some(bop) = tensor_op(op) else {
                    return self.fail(op_span, "`%` takes integers only");
                };
                let unary = bop.with_constant_right(c);
                Ok(Val::Tensor(self.node(
                    Op::Unary(unary),
                    vec![t],
                    &[],
                    op_span,
                )?))
            }
            (s @ (Val::Int(_) | Val::Float(_)), Val::Tensor(t)) => {
                let c = as_f64(&s) as f32;
                let Some(unary) = tensor_op(op).and_then(|bop| bop.with_constant_left(c)) else {
                    return self.fail(op_span, "`%` takes integers only");
                };
                Ok(Val::Tensor(self.node(
                    Op::Unary(unary),
                    vec![t],
                    &[],
                    op_span,
                )?))
            }
            (Val::Tensor(a), Val::Tensor(b)) => {
                let Some(bop) = tensor_op(op) else {
                    return self.fail(op_span, "`%` takes integers only");
                };
                self.binary_op(bop, op_span, (a, ls), (b, rs))
                    .map(Val::Tensor)
            }
            (a, b) => {
                let (ak, bk) = (a.kind(), b.kind());
                self.fail(op_span, format!("cannot apply `{sym}` to {ak} and {bk}; arithmetic takes tensors and numbers"))
            }
        }
    }

    pub(crate) fn binary_op(
        &mut self,
        op: BinaryOp,
        span: Span,
        (a, as_): (ValueId, Span),
        (b, bs): (ValueId, Span),
    ) -> Eval<ValueId> {
        self.node(Op::Binary(op), vec![a, b], &[as_, bs], span)
    }

    /// Appends a node and returns its output value. Its result shape is [`check::infer`]'s,
    /// the one shape inference of every op; `given` is the shape a reshape, expand or
    /// resize names (the ops whose result shape is an attribute), empty for the others.
    /// A result above the supported rank or size is refused.
    pub(crate) fn push_node(
        &mut self,
        op: Op,
        inputs: Vec<ValueId>,
        given: &[usize],
        span: Span,
    ) -> Result<ValueId, ShapeError> {
        let shapes: Vec<&[usize]> = inputs.iter().map(|&v| self.graph.shape(v)).collect();
        let shape = check::infer(&op, &shapes, given)?;
        check::within_limits(op.name(), &shape)?;
        let index = self.graph.nodes.len();
        let name = format!("%{index}");
        let output = self.graph.add_value(name, shape, ValueKind::Node(index));
        self.graph.nodes.push(Node {
            op,
            inputs,
            output,
            span,
        });
        Ok(output)
    }

    /// [`Lowerer::push_node`] for an op whose result shape follows from its operands,
    /// reporting a shape error at the operand at fault (`operand_spans`) or at `span`.
    pub(crate) fn node(
        &mut self,
        op: Op,
        inputs: Vec<ValueId>,
        operand_spans: &[Span],
        span: Span,
    ) -> Eval<ValueId> {
        match self.push_node(op, inputs, &[], span) {
            Ok(id) => Ok(id),
            Err(e) => self.shape_fail(e, operand_spans, span),
        }
    }

    /// Reports a shape rule's error at the operand at fault (or the call).
    pub(crate) fn shape_fail<T>(
        &mut self,
        e: ShapeError,
        operand_spans: &[Span],
        call: Span,
    ) -> Eval<T> {
        let span = e
            .operand
            .and_then(|i| operand_spans.get(i).copied())
            .unwrap_or(call);
        self.fail(span, e.message)
    }

    /// The key of the statement being lowered.
    pub(crate) fn stmt_key_value(&self) -> Option<String> {
        self.stmt_key.clone()
    }

    /// Declares a learned tensor `<prefix>.<stmt key>.<suffix>` (or `<key>.<suffix>` when the
    /// op was given `key = ...`).
    pub(crate) fn param(
        &mut self,
        key_override: Option<String>,
        suffix: &str,
        shape: Vec<usize>,
        span: Span,
        op: &str,
    ) -> Eval<ValueId> {
        let base = match key_override.or_else(|| self.stmt_key.clone()) {
            Some(k) => k,
            None => {
                return self.fail(
                    span,
                    format!("`{op}` has parameters but no name: bind it with `let name = {op}(...)` or give `key = \"...\"`"),
                )
            }
        };
        let key = if base.is_empty() {
            suffix.to_string()
        } else {
            format!("{base}.{suffix}")
        };
        self.param_exact(key, shape, span)
    }

    /// Declares a learned tensor named `<prefix>.<key>`.
    pub(crate) fn param_exact(
        &mut self,
        key: String,
        shape: Vec<usize>,
        span: Span,
    ) -> Eval<ValueId> {
        let mut parts = self.prefix.clone();
        parts.push(key);
        let key = parts.join(".");
        if check::elements(&shape).is_none() {
            return self.fail(
                span,
                format!("parameter `{key}` of shape {} has more than {} elements, the supported maximum", fmt_shape(&shape), crate::MAX_ELEMENTS),
            );
        }
        if self.keys.contains_key(&key) {
            return self.fail(
                span,
                format!("parameter `{key}` is already used by another op; give this op its own binding name or `#[key = \"...\"]`"),
            );
        }
        self.keys.insert(key.clone(), span);
        let index = self.graph.params.len();
        let value_name = key.replace('.', "_");
        let id = self
            .graph
            .add_value(value_name, shape.clone(), ValueKind::Param(index));
        self.graph.params.push(Param {
            key,
            shape,
            value: id,
        });
        Ok(id)
    }

    fn call(&mut self, func: &Ident, args: &[Arg], env: &mut Env, span: Span) -> Eval<(Val, Span)> {
        let mut evaluated = Vec::new();
        let mut failed = false;
        for arg in args {
            match self.eval(&arg.value, env) {
                Ok((v, s)) => evaluated.push((arg.name.clone(), v, s)),
                Err(Reported) => failed = true,
            }
        }
        if failed {
            return Err(Reported);
        }
        let name = func.to_string();
        if let Some(block) = self.blocks.get(&name).copied() {
            return self
                .call_block(block, func, evaluated, span)
                .map(|v| (v, span));
        }
        let call = crate::ops::CallArgs::new(&name, func.span(), span, evaluated);
        crate::ops::lower_op(self, call).map(|v| (v, span))
    }

    fn call_block(
        &mut self,
        block: &BlockDecl,
        func: &Ident,
        args: Vec<(Option<Ident>, Val, Span)>,
        _span: Span,
    ) -> Eval<Val> {
        let name = block.name.to_string();
        if self.call_stack.len() >= MAX_CALL_DEPTH || self.call_stack.contains(&name) {
            return self.fail(func.span(), format!("block `{name}` calls itself (directly or through other blocks); blocks cannot recurse"));
        }
        let mut frame: HashMap<String, Val> = HashMap::new();
        let mut given: Vec<Option<(Val, Span)>> = vec![None; block.params.len()];
        let mut positional = 0usize;
        for (kw, val, s) in args {
            let slot = match &kw {
                Some(k) => match block.params.iter().position(|p| p.name == *k) {
                    Some(i) => i,
                    None => {
                        let names: Vec<String> =
                            block.params.iter().map(|p| p.name.to_string()).collect();
                        return self.fail(
                            k.span(),
                            format!(
                                "block `{name}` has no parameter `{k}`; its parameters are: {}",
                                names.join(", ")
                            ),
                        );
                    }
                },
                None => {
                    let i = positional;
                    positional += 1;
                    if i >= block.params.len() {
                        return self.fail(
                            s,
                            format!(
                                "block `{name}` takes {} argument(s), this is one too many",
                                block.params.len()
                            ),
                        );
                    }
                    i
                }
            };
            match given.get_mut(slot) {
                Some(g @ None) => *g = Some((val, s)),
                _ => {
                    let pname = block
                        .params
                        .get(slot)
                        .map(|p| p.name.to_string())
                        .unwrap_or_default();
                    return self.fail(s, format!("parameter `{pname}` of block `{name}` is given twice; give it either by position or by keyword"));
                }
            }
        }
        // defaults are evaluated in the block's scope, after the earlier parameters
        for (param, given) in block.params.iter().zip(given) {
            let pname = param.name.to_string();
            let (val, vspan) = match (given, &param.default) {
                (Some(v), _) => v,
                (None, Some(default)) => {
                    let mut scope = Env {
                        frames: vec![frame.clone()],
                    };
                    self.eval(default, &mut scope)?
                }
                (None, None) => {
                    return self.fail(
                        func.span(),
                        format!("block `{name}` needs argument `{pname}`"),
                    )
                }
            };
            if let Some(pattern) = &param.shape {
                let Val::Tensor(id) = val else {
                    return self.fail(
                        vspan,
                        format!(
                            "parameter `{pname}` of block `{name}` is a tensor, found {}",
                            val.kind()
                        ),
                    );
                };
                let shape = self.graph.shape(id).to_vec();
                if pattern.len() != shape.len() {
                    return self.fail(
                        vspan,
                        format!(
                            "block `{name}` expects `{pname}` of rank {}, found shape {}",
                            pattern.len(),
                            fmt_shape(&shape)
                        ),
                    );
                }
                for (axis, (dim_expr, &dim)) in pattern.iter().zip(&shape).enumerate() {
                    if let Expr::Name(dim_name) = dim_expr {
                        let key = dim_name.to_string();
                        match frame.get(&key) {
                            Some(Val::Int(bound)) if *bound as usize != dim => {
                                return self.fail(
                                    vspan,
                                    format!("block `{name}`: `{key}` is {bound} from an earlier parameter but `{pname}` has {dim} at axis {axis} (shape {})", fmt_shape(&shape)),
                                )
                            }
                            Some(_) => {}
                            None => {
                                frame.insert(key, Val::Int(dim as i64));
                            }
                        }
                    } else {
                        let mut scope = Env {
                            frames: vec![frame.clone()],
                        };
                        match self.eval(dim_expr, &mut scope)? {
                            (Val::Int(n), _) if n as usize == dim => {}
                            (v, _) => {
                                let kind = match v {
                                    Val::Int(n) => n.to_string(),
                                    other => other.kind().to_string(),
                                };
                                return self.fail(vspan, format!("block `{name}` expects `{pname}` to have {kind} at axis {axis}, found shape {}", fmt_shape(&shape)));
                            }
                        }
                    }
                }
            }
            frame.insert(pname, val);
        }
        // `#[key = ""]` on the call adds no prefix: the block's keys are its own (an
        // imported block passes the file's keys in as strings)
        let key = self.stmt_key.take().filter(|k| !k.is_empty());
        let pushed = key.is_some();
        if let Some(k) = key {
            self.prefix.push(k);
        }
        self.call_stack.push(name);
        let mut env = Env {
            frames: vec![frame],
        };
        let result = self.lower_body(&block.body, &mut env);
        self.call_stack.pop();
        if pushed {
            self.prefix.pop();
        }
        result.map(|(v, _)| v)
    }
}

pub(crate) fn as_f64(v: &Val) -> f64 {
    match v {
        Val::Int(n) => *n as f64,
        Val::Float(x) => *x,
        _ => f64::NAN,
    }
}

/// The tensor function of an arithmetic operator (`%` has none: integers only).
fn tensor_op(op: BinOp) -> Option<BinaryOp> {
    match op {
        BinOp::Add => Some(BinaryOp::Add),
        BinOp::Sub => Some(BinaryOp::Sub),
        BinOp::Mul => Some(BinaryOp::Mul),
        BinOp::Div => Some(BinaryOp::Div),
        BinOp::Rem => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_empty_key_on_a_block_call_adds_no_prefix_and_strings_pass_keys_in() {
        let source = r#"
            block layer(x, k) { layer_norm(x, key = k) }
            model M(x: [2, 4]) -> [2, 4] {
                #[key = ""] let a = layer(x, "first.ln");
                #[key = "second"] let b = layer(a, "ln");
                let c = layer(b, "ln");
                c
            }"#;
        let models = crate::lower_str(source).unwrap();
        let keys: Vec<&str> = models[0]
            .graph
            .params
            .iter()
            .map(|p| p.key.as_str())
            .collect();
        assert_eq!(
            keys,
            [
                "first.ln.weight",
                "first.ln.bias",
                "second.ln.weight",
                "second.ln.bias",
                "c.ln.weight",
                "c.ln.bias"
            ]
        );
    }
}
