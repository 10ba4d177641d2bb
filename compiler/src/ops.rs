//! The DSL's built-in ops: argument binding and lowering of each call to graph nodes,
//! and the facts every stage asks of an op ([`facts`]).
//!
//! Part of the `lower` stage. Every op takes positional arguments in the order of its
//! signature in [`ops`], or keywords; attribute defaults follow PyTorch. Each op family
//! lives in a file of its own (`ops/conv.rs`, `ops/pool.rs`, ...): its DSL table
//! (signatures and binders), shape inference, cost, facts, element translation, f64
//! evaluation and kernel call.

use proc_macro2::Span;
use syn::Ident;

use crate::check;
use crate::ir::*;
use crate::lower::{as_f64, Eval, Lowerer, Reported, Val};
use crate::tables::MappingType;

/// A table of DSL ops: `"name" => "signature"; params "what it creates" => binder,`, one
/// row per op, in the op reference's order (each family file keeps its own).
macro_rules! dsl_ops {
    ($($name:literal => $sig:literal $(; params $params:literal)? => $bind:expr,)*) => {
        &[$($crate::ops::DslOp {
            signature: $crate::ops::OpSignature {
                name: $name,
                signature: $sig,
                params: concat!("" $(, $params)?),
            },
            bind: $bind,
        },)*]
    };
}

pub mod binary;
pub mod conv;
pub mod layout;
pub mod norm;
pub mod pool;
pub mod product;
pub mod reduce;
pub mod scan;
pub mod select;
pub mod unary;

/// What the stages ask of an op besides its binding, shape and evaluation: its name, its
/// mapping type (paper Table 2), its role in a fused block and what it does to signs.
/// Each family file states the facts of its ops; [`facts`] finds an op's family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpFacts {
    /// The DSL name (`conv2d`, `relu`, `add`).
    pub name: &'static str,
    /// Its mapping type, read by `classify` and the planner.
    pub mapping: Mapping,
    /// What it may be in a fused block.
    pub role: Role,
    /// When its output is nonnegative (for the rewrite rules).
    pub nonneg: NonnegWhen,
}

impl OpFacts {
    /// The facts of an op whose mapping type does not depend on its operands.
    pub const fn new(
        name: &'static str,
        mapping: MappingType,
        role: Role,
        nonneg: NonnegWhen,
    ) -> Self {
        OpFacts {
            name,
            mapping: Mapping::Always(mapping),
            role,
            nonneg,
        }
    }
}

/// An op's mapping type: fixed, or decided by its operands' shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// The same for every call.
    Always(MappingType),
    /// One-to-One when every data operand has the output's shape, else One-to-Many (numpy
    /// broadcasting).
    Broadcasting,
}

impl Mapping {
    /// The mapping type of a call; `same_shape` says whether its data operands all have the
    /// output's shape.
    pub fn of(self, same_shape: bool) -> MappingType {
        match self {
            Mapping::Always(t) => t,
            Mapping::Broadcasting if same_shape => MappingType::OneToOne,
            Mapping::Broadcasting => MappingType::OneToMany,
        }
    }
}

/// What an op may be in a fused block besides its mapping type (read by the planner).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Role {
    /// Its kernel applies an epilogue to its values before their one store (an anchor).
    pub epilogue: bool,
    /// Its kernel reads its main operand through a [`prologue`] computed on the fly:
    /// row-wise ops read each element once, so recomputing it costs nothing.
    ///
    /// [`prologue`]: crate::element
    pub prologue: bool,
    /// Its kernel can store each value at a translated position (a transpose into the
    /// consumer's layout).
    pub store_map: bool,
    /// Its element at an index reads its main operand at the same index.
    pub index_preserving: bool,
}

impl Role {
    /// An anchor whose kernel takes an epilogue and nothing else.
    pub const KERNEL: Role = Role {
        epilogue: true,
        prologue: false,
        store_map: false,
        index_preserving: false,
    };
    /// A row-wise anchor: an epilogue and a prologue.
    pub const ROWS: Role = Role {
        prologue: true,
        ..Role::KERNEL
    };
    /// A matrix product: an epilogue and a store map.
    pub const PRODUCT: Role = Role {
        store_map: true,
        ..Role::KERNEL
    };
    /// An elementwise op.
    pub const ELEMENTWISE: Role = Role {
        epilogue: false,
        index_preserving: true,
        ..Role::KERNEL
    };
    /// Neither an anchor nor index preserving: layout ops, broadcasts, the scans (their
    /// kernel reads back its own output, so it takes no epilogue).
    pub const PLAIN: Role = Role {
        epilogue: false,
        ..Role::KERNEL
    };
}

/// When an op's output is `>= 0` (or NaN) for every input, by construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonnegWhen {
    /// Always.
    Always,
    /// When its first operand is.
    FirstIs,
    /// When all its operands are.
    AllAre,
    /// When any of its operands is.
    AnyIs,
    /// When its operands after the first are (`where`'s two branches).
    BranchesAre,
    /// Not known: the op mixes signs, or its sign is not looked into.
    Unknown,
}

/// The facts of `op`, from its family file. One `match`, no `_` arm: a new op does not
/// compile until its family states them.
pub fn facts(op: &Op) -> OpFacts {
    match op {
        Op::Unary(u) => unary::facts(*u),
        Op::Binary(b) => b.facts(),
        Op::Where => select::WHERE,
        Op::Prelu => select::PRELU,
        Op::Linear => product::LINEAR,
        Op::MatMul => product::MATMUL,
        Op::MatMulPanels { .. } => product::MATMUL_PANELS,
        Op::PackPanels => product::PACK_PANELS,
        Op::Conv2d(_) => conv::CONV2D,
        Op::ConvTranspose2d(_) => conv::CONV_TRANSPOSE2D,
        Op::TileConvWeights { .. } => conv::TILE_CONV_WEIGHTS,
        Op::WinogradWeights { .. } => conv::WINOGRAD_WEIGHTS,
        Op::MaxPool2d(_) => pool::MAX_POOL2D,
        Op::AvgPool2d(_) => pool::AVG_POOL2D,
        Op::GlobalAvgPool => pool::GLOBAL_AVG_POOL2D,
        Op::GlobalMaxPool => pool::GLOBAL_MAX_POOL2D,
        Op::Reduce { kind, .. } => reduce::facts(*kind),
        Op::Softmax { .. } => norm::SOFTMAX,
        Op::LogSoftmax { .. } => norm::LOG_SOFTMAX,
        Op::LayerNorm { .. } => norm::LAYER_NORM,
        Op::BatchNorm { .. } => norm::BATCH_NORM,
        Op::GroupNorm { .. } => norm::GROUP_NORM,
        Op::InstanceNorm { .. } => norm::INSTANCE_NORM,
        Op::Reshape(kind) => layout::reshape_facts(*kind),
        Op::Transpose { .. } => layout::TRANSPOSE,
        Op::Concat { .. } => layout::CONCAT,
        Op::Slice { .. } => layout::SLICE,
        Op::Pad { .. } => layout::PAD,
        Op::Gather { .. } => layout::GATHER,
        Op::Expand => layout::EXPAND,
        Op::Resize(mode) => layout::resize_facts(mode),
        Op::Resample(_) => layout::RESAMPLE,
        Op::Scan {
            kind, exclusive, ..
        } => scan::facts(*kind, *exclusive),
    }
}

/// One built-in op of the DSL: its name, signature and the parameters it creates, for
/// errors and for the op reference ([`reference_markdown`]).
#[derive(Clone, Copy, Debug)]
pub struct OpSignature {
    /// The name users call.
    pub name: &'static str,
    /// The arguments in order, `name = default` for optional ones; those after `*` are
    /// keyword-only.
    pub signature: &'static str,
    /// The learned tensors a call creates, named `<binding>.<suffix>`, with their shapes
    /// (empty when it creates none).
    pub params: &'static str,
}

/// A DSL op a family file defines: its signature and the function that binds a call.
struct DslOp {
    signature: OpSignature,
    bind: Binder,
}

/// Binds one call of the op named by the second argument.
type Binder = fn(&mut Bind<'_, '_>, &str) -> Result<Val, LowerError>;

/// `gelu`, a unary function with a string argument.
const GELU: &[DslOp] = dsl_ops! {
    "gelu" => "x, approximate = \"none\"" => gelu,
};

/// The ops that are not computations: a named parameter and PyTorch's inference no-ops.
const NOT_COMPUTATIONS: &[DslOp] = dsl_ops! {
    "param" => "shape"; params "the binding's name itself, of `shape`" => param,
    "dropout" => "x, p = 0.5, *, training = false, inplace = false" => pass_through,
    "identity" => "x" => pass_through,
};

/// The family tables of the ops other than the unary, reduce and scan functions, in the op
/// reference's order.
const TABLES: [&[DslOp]; 9] = [
    GELU,
    binary::DSL_OPS,
    select::DSL_OPS,
    product::DSL_OPS,
    conv::DSL_OPS,
    pool::DSL_OPS,
    norm::DSL_OPS,
    layout::DSL_OPS,
    NOT_COMPUTATIONS,
];

/// The op reference: one row per op of [`ops`] with its signature, the parameters it
/// creates and the other spellings its keywords accept (the README and the rustdoc of
/// `dnn!` include it; a test keeps them current).
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "| op | arguments (after `*`: keyword only) | parameters it creates |\n|---|---|---|\n",
    );
    for op in ops() {
        let names = argument_names(op.name);
        let aliases: Vec<String> = KEYWORD_ALIASES
            .iter()
            .filter(|(_, canonical)| names.contains(canonical))
            .map(|(alias, canonical)| format!("`{alias}` for `{canonical}`"))
            .collect();
        let mut args = format!("`{}`", op.signature.replace('|', "\\|"));
        if !aliases.is_empty() {
            args.push_str(&format!(" (also {})", aliases.join(", ")));
        }
        let params = if op.params.is_empty() {
            String::new()
        } else {
            // brackets escaped: rustdoc would read `[out_features]` as a link
            op.params
                .replace('|', "\\|")
                .replace('[', "\\[")
                .replace(']', "\\]")
        };
        out.push_str(&format!("| `{}` | {args} | {params} |\n", op.name));
    }
    out
}

/// Every built-in op with its signature: the unary functions called by name (their rows
/// in [`unary`]), then the rest, the reduce functions ([`reduce`]) among them (the
/// README's op list and op reference are checked against this).
pub fn ops() -> impl Iterator<Item = OpSignature> {
    let table = |ops: &'static [DslOp]| ops.iter().map(|op| op.signature);
    let [gelu, binary, select, product, conv, pool, norm, layout, last] = TABLES;
    let unary = unary::SIGNATURES.iter().flatten().copied();
    unary
        .chain(table(gelu))
        .chain(table(binary))
        .chain(table(select))
        .chain(table(product))
        .chain(table(conv))
        .chain(table(pool))
        .chain(reduce::signatures())
        .chain(table(norm))
        .chain(table(layout))
        .chain(scan::signatures())
        .chain(table(last))
}

/// True when `name` is a built-in op.
pub fn is_op(name: &str) -> bool {
    ops().any(|op| op.name == name)
}

/// The arguments of one call, consumed by name as an op binds them.
pub(crate) struct CallArgs {
    op: String,
    func_span: Span,
    call_span: Span,
    positional: std::collections::VecDeque<(Val, Span)>,
    named: Vec<(Ident, Val, Span, bool)>,
    /// `key = "..."` given to the call.
    key: Option<(String, Span)>,
    /// `keys = ["...", ...]` given to the call: the exact name of each parameter the op
    /// creates, in order (ONNX initializer names), and how many were taken.
    keys: Option<(Vec<String>, Span, usize)>,
    /// Arguments taken so far, by the name they were bound to, for errors about them.
    taken: Vec<(String, Span)>,
    /// Set once the op has bound its positional arguments: the rest are keyword-only
    /// (`eps`, `momentum`, ...), so a stray number cannot silently land in them.
    keywords_only: bool,
}

/// Other names users write for a keyword (PyTorch's spelling first): `(alias, name)`.
const KEYWORD_ALIASES: &[(&str, &str)] = &[
    ("kernel_size", "kernel"),
    ("dim", "axis"),
    ("dim", "axes"),
    ("keepdim", "keepdims"),
    ("dim0", "axis0"),
    ("dim1", "axis1"),
    ("start_dim", "start"),
    ("end_dim", "end"),
    ("scale_factor", "scale"),
    ("elementwise_affine", "affine"),
    ("groups", "num_groups"),
];

impl CallArgs {
    pub(crate) fn new(
        op: &str,
        func_span: Span,
        call_span: Span,
        args: Vec<(Option<Ident>, Val, Span)>,
    ) -> Self {
        let mut positional = std::collections::VecDeque::new();
        let mut named = Vec::new();
        let mut key = None;
        let mut keys = None;
        for (name, val, span) in args {
            match name {
                Some(n) if n == "key" => {
                    if let Val::Str(s) = &val {
                        key = Some((s.clone(), span));
                    } else {
                        named.push((n, val, span, false));
                    }
                }
                Some(n) if n == "keys" => match string_list(&val) {
                    Some(list) => keys = Some((list, span, 0)),
                    None => named.push((n, val, span, false)),
                },
                Some(n) => named.push((n, val, span, false)),
                None => positional.push_back((val, span)),
            }
        }
        CallArgs {
            op: op.to_string(),
            func_span,
            call_span,
            positional,
            named,
            key,
            keys,
            taken: Vec::new(),
            keywords_only: false,
        }
    }

    /// The next argument called `name`: by keyword if given, else the next positional one.
    fn take(&mut self, name: &str) -> Option<(Val, Span)> {
        let is_name = |n: &Ident| {
            n == name
                || KEYWORD_ALIASES
                    .iter()
                    .any(|(alias, canonical)| *canonical == name && n == alias)
        };
        let found = match self
            .named
            .iter_mut()
            .find(|(n, _, _, used)| is_name(n) && !*used)
        {
            Some(slot) => {
                slot.3 = true;
                Some((slot.1.clone(), slot.2))
            }
            None if self.keywords_only => None,
            None => self.positional.pop_front(),
        };
        if let Some((_, span)) = &found {
            self.taken.push((name.to_string(), *span));
        }
        found
    }

    /// Where the argument bound to `name` was written, if it was given.
    fn span_of(&self, name: &str) -> Option<Span> {
        self.taken.iter().find(|(n, _)| n == name).map(|(_, s)| *s)
    }

    fn signature(&self) -> String {
        let sig = ops()
            .find(|o| o.name == self.op)
            .map_or("", |o| o.signature);
        format!("{}({sig})", self.op)
    }
}

/// Binds one call's arguments, reporting mistakes through the lowerer.
struct Bind<'l, 'a> {
    lw: &'l mut Lowerer<'a>,
    args: CallArgs,
}

impl Bind<'_, '_> {
    fn missing<T>(&mut self, name: &str) -> Eval<T> {
        // a misspelled keyword is the likely cause: point at it rather than at the op
        if let Some((span, msg)) = self.unknown_keyword() {
            return self.lw.fail(span, msg);
        }
        let sig = self.args.signature();
        let span = self.args.func_span;
        self.lw.fail(
            span,
            format!("`{}` needs argument `{name}`: {sig}", self.args.op),
        )
    }

    /// The first keyword given that the op does not have, with the closest one it has.
    fn unknown_keyword(&self) -> Option<(Span, String)> {
        let op = &self.args.op;
        let known = argument_names(op);
        let (name, _, _, _) = self.args.named.iter().find(|(n, _, _, used)| {
            let n = n.to_string();
            !used
                && !known.contains(&n.as_str())
                && !KEYWORD_ALIASES
                    .iter()
                    .any(|(alias, canonical)| *alias == n && known.contains(canonical))
        })?;
        let written = name.to_string();
        let aliases = KEYWORD_ALIASES
            .iter()
            .filter(|(_, canonical)| known.contains(canonical))
            .map(|(alias, _)| *alias);
        let candidates = known.iter().copied().chain(aliases);
        let hint = closest_of(&written, candidates)
            .map(|c| format!(" (did you mean `{c}`?)"))
            .unwrap_or_default();
        let sig = self.args.signature();
        Some((
            name.span(),
            format!("`{op}` has no argument `{written}`{hint}: {sig}"),
        ))
    }

    fn wrong<T>(&mut self, name: &str, expected: &str, found: &Val, span: Span) -> Eval<T> {
        let msg = format!(
            "`{}` argument `{name}` must be {expected}, found {}",
            self.args.op,
            found.kind()
        );
        self.lw.fail(span, msg)
    }

    fn tensor(&mut self, name: &str) -> Eval<(ValueId, Span)> {
        match self.args.take(name) {
            Some((Val::Tensor(id), s)) => Ok((id, s)),
            Some((Val::Poison, _)) => Err(Reported),
            Some((other, s)) => self.wrong(name, "a tensor", &other, s),
            None => self.missing(name),
        }
    }

    fn tensors(&mut self, name: &str) -> Eval<Vec<(ValueId, Span)>> {
        match self.args.take(name) {
            Some((Val::List(items), _)) => {
                let mut out = Vec::new();
                for (v, s) in items {
                    match v {
                        Val::Tensor(id) => out.push((id, s)),
                        other => return self.wrong(name, "a list of tensors", &other, s),
                    }
                }
                Ok(out)
            }
            Some((Val::Tuple(ids), s)) => Ok(ids.into_iter().map(|id| (id, s)).collect()),
            Some((other, s)) => self.wrong(name, "a list of tensors `[a, b]`", &other, s),
            None => self.missing(name),
        }
    }

    /// The default the op's signature writes for `name`, read as a `T` (a quoted string
    /// without its quotes); `missing` when the signature gives none. The signature
    /// ([`ops`]) is the one place a default is written.
    fn default<T: std::str::FromStr>(&mut self, name: &str, what: &str) -> Eval<T> {
        let op = self.args.op.clone();
        match signature_default(&op, name) {
            None => self.missing(name),
            Some(text) => match text.trim_matches('"').parse::<T>() {
                Ok(value) => Ok(value),
                Err(_) => {
                    let span = self.args.func_span;
                    self.lw.fail(
                        span,
                        format!("internal error: the signature of `{op}` gives `{name}` the default `{text}`, not {what}"),
                    )
                }
            },
        }
    }

    fn int(&mut self, name: &str) -> Eval<(i64, Span)> {
        match self.args.take(name) {
            Some((Val::Int(n), s)) => Ok((n, s)),
            Some((other, s)) => self.wrong(name, "an integer", &other, s),
            None => Ok((self.default(name, "an integer")?, self.args.func_span)),
        }
    }

    fn positive(&mut self, name: &str) -> Eval<(usize, Span)> {
        let (n, s) = self.int(name)?;
        if n < 1 {
            let op = self.args.op.clone();
            return self.lw.fail(
                s,
                format!("`{op}` argument `{name}` must be at least 1, found {n}"),
            );
        }
        Ok((n as usize, s))
    }

    fn float(&mut self, name: &str) -> Eval<f64> {
        match self.args.take(name) {
            Some((v @ (Val::Int(_) | Val::Float(_)), _)) => Ok(as_f64(&v)),
            Some((other, s)) => self.wrong(name, "a number", &other, s),
            None => self.default(name, "a number"),
        }
    }

    fn boolean(&mut self, name: &str) -> Eval<bool> {
        match self.args.take(name) {
            Some((Val::Bool(b), _)) => Ok(b),
            Some((other, s)) => self.wrong(name, "`true` or `false`", &other, s),
            None => self.default(name, "`true` or `false`"),
        }
    }

    fn string(&mut self, name: &str, allowed: &[&str]) -> Eval<(String, Span)> {
        let (value, span) = match self.args.take(name) {
            Some((Val::Str(s), span)) => (s, span),
            Some((other, s)) => return self.wrong(name, "a string", &other, s),
            None => (self.default(name, "a string")?, self.args.func_span),
        };
        if !allowed.contains(&value.as_str()) {
            let op = self.args.op.clone();
            let list: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
            return self.lw.fail(
                span,
                format!(
                    "`{op}` argument `{name}` must be one of {}, found \"{value}\"",
                    list.join(", ")
                ),
            );
        }
        Ok((value, span))
    }

    /// An integer or a list of integers; `None` when absent.
    fn ints(&mut self, name: &str) -> Eval<Option<(Vec<i64>, Span)>> {
        match self.args.take(name) {
            Some((Val::Int(n), s)) => Ok(Some((vec![n], s))),
            Some((Val::List(items), s)) => {
                let mut out = Vec::new();
                for (v, is) in items {
                    match v {
                        Val::Int(n) => out.push(n),
                        other => return self.wrong(name, "a list of integers", &other, is),
                    }
                }
                Ok(Some((out, s)))
            }
            Some((other, s)) => self.wrong(name, "an integer or a list of integers", &other, s),
            None => Ok(None),
        }
    }

    /// A number or a list of numbers; `None` when absent.
    fn floats(&mut self, name: &str) -> Eval<Option<(Vec<f64>, Span)>> {
        match self.args.take(name) {
            Some((v @ (Val::Int(_) | Val::Float(_)), s)) => Ok(Some((vec![as_f64(&v)], s))),
            Some((Val::List(items), s)) => {
                let mut out = Vec::new();
                for (v, is) in items {
                    match v {
                        Val::Int(_) | Val::Float(_) => out.push(as_f64(&v)),
                        other => return self.wrong(name, "a list of numbers", &other, is),
                    }
                }
                Ok(Some((out, s)))
            }
            Some((other, s)) => self.wrong(name, "a number or a list of numbers", &other, s),
            None => Ok(None),
        }
    }

    /// A per-axis pair (`3` or `[3, 5]`) of non-negative integers, at least `min`.
    fn pair(&mut self, name: &str, min: i64) -> Eval<[usize; 2]> {
        match self.ints(name)? {
            None => {
                let d: usize = self.default(name, "an integer")?;
                Ok([d, d])
            }
            given => self.pair_of(name, given, min),
        }
    }

    /// [`Bind::pair`] whose default the signature states in words (`stride = kernel`).
    fn pair_or(&mut self, name: &str, default: [usize; 2], min: i64) -> Eval<[usize; 2]> {
        match self.ints(name)? {
            None => Ok(default),
            given => self.pair_of(name, given, min),
        }
    }

    fn pair_of(
        &mut self,
        name: &str,
        given: Option<(Vec<i64>, Span)>,
        min: i64,
    ) -> Eval<[usize; 2]> {
        let op = self.args.op.clone();
        match given {
            None => self.missing(name),
            Some((v, s)) => {
                if v.iter().any(|&n| n < min) {
                    return self.lw.fail(
                        s,
                        format!("`{op}` argument `{name}` must be at least {min}"),
                    );
                }
                match v.as_slice() {
                    [a] => Ok([*a as usize, *a as usize]),
                    [a, b] => Ok([*a as usize, *b as usize]),
                    _ => self.lw.fail(s, format!("`{op}` argument `{name}` takes one integer or two (height, width), found {}", v.len())),
                }
            }
        }
    }

    /// From here on, arguments bind by keyword only (the `*` in a signature).
    fn keywords_only(&mut self) {
        self.args.keywords_only = true;
    }

    /// The parameter key given as `key = "..."`.
    fn key(&mut self) -> Option<String> {
        self.args.key.as_ref().map(|(k, _)| k.clone())
    }

    /// Reports arguments that no binding consumed.
    fn finish(&mut self) -> Eval<()> {
        let op = self.args.op.clone();
        if let Some((_, s)) = self.args.positional.pop_front() {
            let sig = self.args.signature();
            let why = if self.args.keywords_only {
                "; the options after `*` are keyword-only (`eps = 1e-3`), so a number cannot silently land in the wrong one"
            } else {
                ""
            };
            return self.lw.fail(
                s,
                format!("too many positional arguments to `{op}`{why}: {sig}"),
            );
        }
        if let Some((span, msg)) = self.unknown_keyword() {
            return self.lw.fail(span, msg);
        }
        if let Some((names, span, taken)) = &self.args.keys {
            if *taken != names.len() {
                let (span, given) = (*span, names.len());
                return self.lw.fail(
                    span,
                    format!("`keys` names {given} parameter(s) but `{op}` creates {taken}; give one name per parameter, in order"),
                );
            }
        }
        if let Some((name, _, _, _)) = self.args.named.iter().find(|(_, _, _, used)| !*used) {
            let span = name.span();
            let sig = self.args.signature();
            return self.lw.fail(
                span,
                format!("`{op}` argument `{name}` is given twice (or under two names): {sig}"),
            );
        }
        Ok(())
    }

    fn shape(&self, id: ValueId) -> Vec<usize> {
        self.lw.graph.shape(id).to_vec()
    }

    /// Reports a shape rule's error at the operand or attribute at fault (or the call).
    fn shape_fail<T>(&mut self, e: check::ShapeError, operands: &[Span]) -> Eval<T> {
        let fallback = e
            .attr
            .and_then(|a| self.args.span_of(a))
            .unwrap_or(self.args.call_span);
        self.lw.shape_fail(e, operands, fallback)
    }

    fn axis(&mut self, axis: i64, rank: usize, span: Span) -> Eval<usize> {
        let op = self.args.op.clone();
        match check::normalize_axis(&op, axis, rank) {
            Ok(a) => Ok(a),
            Err(e) => self.lw.fail(span, e.message),
        }
    }

    /// A node whose result shape [`check::infer`] gives from its operands; a shape error
    /// is reported at the operand at fault (`operand_spans`, in the order of `inputs`),
    /// the attribute at fault, or the call.
    fn node(&mut self, op: Op, inputs: Vec<ValueId>, operand_spans: &[Span]) -> Eval<Val> {
        self.node_shaped(op, inputs, &[], operand_spans)
    }

    /// A reshape, expand or resize: `given` is the result shape it names, which
    /// [`check::infer`] validates against its operand.
    fn node_shaped(
        &mut self,
        op: Op,
        inputs: Vec<ValueId>,
        given: &[usize],
        operand_spans: &[Span],
    ) -> Eval<Val> {
        Ok(Val::Tensor(self.inner_node(
            op,
            inputs,
            given,
            operand_spans,
        )?))
    }

    /// One of the nodes a call lowers to, before its last ([`Bind::node_shaped`]).
    fn inner_node(
        &mut self,
        op: Op,
        inputs: Vec<ValueId>,
        given: &[usize],
        operand_spans: &[Span],
    ) -> Eval<ValueId> {
        let span = self.args.call_span;
        match self.lw.push_node(op, inputs, given, span) {
            Ok(id) => Ok(id),
            Err(e) => self.shape_fail(e, operand_spans),
        }
    }

    fn param(&mut self, key: &Option<String>, suffix: &str, shape: Vec<usize>) -> Eval<ValueId> {
        // `keys = [...]`: the next exact name
        if let Some((names, span, taken)) = &mut self.args.keys {
            let span = *span;
            let Some(name) = names.get(*taken).cloned() else {
                let given = names.len();
                let op = self.args.op.clone();
                return self.lw.fail(
                    span,
                    format!("`keys` names {given} parameter(s) but `{op}` creates more (`{suffix}` has no name); give one name per parameter, in order"),
                );
            };
            *taken += 1;
            return self.lw.param_exact(name, shape, span);
        }
        // a clash is the fault of `key = "..."` when the call gave one
        let span = self
            .args
            .key
            .as_ref()
            .map_or(self.args.call_span, |(_, s)| *s);
        let op = self.args.op.clone();
        self.lw.param(key.clone(), suffix, shape, span, &op)
    }
}

/// The strings of a list value (`["a", "b"]`), or `None` when it is anything else.
fn string_list(val: &Val) -> Option<Vec<String>> {
    let Val::List(items) = val else { return None };
    items
        .iter()
        .map(|(v, _)| match v {
            Val::Str(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

/// Lowers one built-in op call.
pub(crate) fn lower_op(lw: &mut Lowerer<'_>, args: CallArgs) -> Eval<Val> {
    let name = args.op.clone();
    let func_span = args.func_span;
    let mut b = Bind { lw, args };
    let result = lower_named(&mut b, &name);
    if result.is_ok() {
        b.finish()?;
    }
    match result {
        Err(Unknown) => {
            let hint = closest(&name)
                .map(|c| format!("; did you mean `{c}`?"))
                .unwrap_or_default();
            b.lw.fail(func_span, format!("unknown op `{name}`{hint} (the README lists the supported ops; blocks must be declared in the same dnn!)"))
        }
        Ok(v) => Ok(v),
        Err(Failed) => Err(Reported),
    }
}

enum LowerError {
    Unknown,
    Failed,
}
use LowerError::{Failed, Unknown};

impl From<Reported> for LowerError {
    fn from(_: Reported) -> Self {
        Failed
    }
}

/// The op a user most likely meant by the unknown `name`: this DSL's name for a PyTorch or
/// ONNX spelling ([`OTHER_OP_NAMES`]), else the nearest op name if `name` is a typo.
fn closest(name: &str) -> Option<&'static str> {
    OTHER_OP_NAMES
        .iter()
        .find(|(other, _)| *other == name)
        .map(|(_, ours)| *ours)
        .or_else(|| closest_of(name, ops().map(|o| o.name)))
}

/// Op names users bring from PyTorch (`torch`, `torch.nn.functional`, module names in
/// snake case) or ONNX (operator names in snake case) that are too far from this DSL's
/// name to be found as a typo: `(theirs, ours)`. The ops' own names stay the DSL's (a
/// name per op); these only feed the unknown-op hint.
const OTHER_OP_NAMES: &[(&str, &str)] = &[
    ("global_average_pool", "global_avg_pool2d"),
    ("global_max_pool", "global_max_pool2d"),
    ("average_pool", "avg_pool2d"),
    ("avg_pool", "avg_pool2d"),
    ("max_pool", "max_pool2d"),
    ("batch_normalization", "batch_norm"),
    ("batch_norm2d", "batch_norm"),
    ("layer_normalization", "layer_norm"),
    ("group_normalization", "group_norm"),
    ("instance_normalization", "instance_norm"),
    ("gemm", "linear"),
    ("dense", "linear"),
    ("fully_connected", "linear"),
    ("mm", "matmul"),
    ("bmm", "matmul"),
    ("cat", "concat"),
    ("concatenate", "concat"),
    ("view", "reshape"),
    ("clamp", "clip"),
    ("hardtanh", "clip"),
    ("swish", "silu"),
    ("interpolate", "resize"),
    ("upsample", "resize"),
    ("pixel_shuffle", "depth_to_space"),
    ("pixel_unshuffle", "space_to_depth"),
    ("mean", "reduce_mean"),
    ("sum", "reduce_sum"),
];

/// The candidate nearest to `name` by edit distance (with transpositions), if it is near
/// enough to be a typo: at most 2 edits, and fewer than half the letters.
pub(crate) fn closest_of<'c>(
    name: &str,
    candidates: impl Iterator<Item = &'c str>,
) -> Option<&'c str> {
    let limit = (name.chars().count() / 2).clamp(1, 2);
    candidates
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| c)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and swaps of
/// two neighbouring letters each count 1 (`rleu` is 1 from `relu`, 2 from `elu`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    let at = |i: usize, j: usize| i * width + j;
    for i in 0..=a.len() {
        if let Some(x) = d.get_mut(at(i, 0)) {
            *x = i;
        }
    }
    for j in 0..=b.len() {
        if let Some(x) = d.get_mut(at(0, j)) {
            *x = j;
        }
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let get = |i: usize, j: usize| d.get(at(i, j)).copied().unwrap_or(usize::MAX / 2);
            let (ca, cb) = (a.get(i - 1), b.get(j - 1));
            let mut best = (get(i - 1, j) + 1)
                .min(get(i, j - 1) + 1)
                .min(get(i - 1, j - 1) + usize::from(ca != cb));
            if i > 1 && j > 1 && ca == b.get(j - 2) && a.get(i - 2) == cb {
                best = best.min(get(i - 2, j - 2) + 1);
            }
            if let Some(x) = d.get_mut(at(i, j)) {
                *x = best;
            }
        }
    }
    d.last().copied().unwrap_or(0)
}

/// The argument names in an op's signature (`conv2d`: `x`, `out_channels`, `kernel`, ...).
pub fn argument_names(op: &str) -> Vec<&'static str> {
    signature_parts(op).filter_map(leading_name).collect()
}

/// The default an op's signature writes for argument `name` (`conv2d`, `stride`: `1`;
/// `max_pool2d`, `stride`: `kernel`), `None` when the argument is required.
fn signature_default(op: &str, name: &str) -> Option<&'static str> {
    signature_parts(op)
        .find(|part| leading_name(part) == Some(name))?
        .split_once('=')
        .map(|(_, default)| default.trim())
}

/// The arguments of an op's signature as written (`stride = 1`), split at the commas,
/// semicolons and bars outside brackets.
fn signature_parts(op: &str) -> impl Iterator<Item = &'static str> {
    let sig = ops().find(|o| o.name == op).map_or("", |o| o.signature);
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0usize;
    for (i, c) in sig.char_indices() {
        match c {
            '[' | '(' => depth += 1,
            ']' | ')' => depth = depth.saturating_sub(1),
            ',' | ';' | '|' if depth == 0 => {
                parts.extend(sig.get(start..i));
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.extend(sig.get(start..));
    parts.into_iter()
}

fn leading_name(part: &str) -> Option<&str> {
    let part = part.trim();
    let end = part
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(part.len());
    let name = part.get(..end)?;
    (!name.is_empty() && name != "or").then_some(name)
}

/// Binds a call of the op `name`: the unary, reduce and scan functions by their rows,
/// every other op by its family table's binder.
fn lower_named(b: &mut Bind<'_, '_>, name: &str) -> Result<Val, LowerError> {
    if let Some(val) = unary_call(b, name) {
        return val;
    }
    if let Some(kind) = ReduceKind::named(name) {
        return reduce_call(b, name, kind);
    }
    if let Some(kind) = ScanKind::named(name) {
        return scan::bind(b, kind);
    }
    let op = TABLES
        .iter()
        .flat_map(|t| t.iter())
        .find(|op| op.signature.name == name);
    match op {
        Some(op) => (op.bind)(b, name),
        None => Err(Unknown),
    }
}

/// Binds `gelu(x, approximate)`.
fn gelu(b: &mut Bind<'_, '_>, _: &str) -> Result<Val, LowerError> {
    let x = b.tensor("x")?;
    let (approx, _) = b.string("approximate", &["none", "tanh"])?;
    let op = if approx == "tanh" {
        UnaryOp::GeluTanh
    } else {
        UnaryOp::Gelu
    };
    Ok(b.node(Op::Unary(op), vec![x.0], &[x.1])?)
}

/// Binds `dropout(..)` and `identity(x)`: no-ops at inference (PyTorch's `eval()` mode),
/// accepted so pasted code compiles.
fn pass_through(b: &mut Bind<'_, '_>, name: &str) -> Result<Val, LowerError> {
    let x = b.tensor("x")?;
    if name == "dropout" {
        let p = b.float("p")?;
        if !(0.0..=1.0).contains(&p) {
            let span = b.args.span_of("p").unwrap_or(b.args.call_span);
            return Ok(b
                .lw
                .fail(span, format!("dropout: p must be in [0, 1], found {p}"))?);
        }
        b.keywords_only();
        if b.boolean("training")? {
            let span = b.args.span_of("training").unwrap_or(b.args.call_span);
            return Ok(b.lw.fail(span, "dropout: training = true is not supported: the compiled model runs inference, where dropout passes its input through".to_string())?);
        }
        b.boolean("inplace")?;
    }
    Ok(Val::Tensor(x.0))
}

/// Binds `param(shape)`: a learned tensor named after its binding.
fn param(b: &mut Bind<'_, '_>, _: &str) -> Result<Val, LowerError> {
    let Some((list, s)) = b.ints("shape")? else {
        return Ok(b.missing("shape")?);
    };
    if list.iter().any(|&d| d < 1) || list.len() > crate::MAX_RANK {
        return Ok(b.lw.fail(
            s,
            format!(
                "param: shape {list:?} must have 0 to {} positive dimensions",
                crate::MAX_RANK
            ),
        )?);
    }
    let key = b.key();
    let shape: Vec<usize> = list.iter().map(|&d| d as usize).collect();
    let span = b.args.call_span;
    let base = match key {
        Some(k) => k,
        None => match b.lw_stmt_key() {
            Some(k) => k,
            None => {
                return Ok(b.lw.fail(
                    span,
                    "`param` needs a name: bind it with `let name = param(...)`".to_string(),
                )?)
            }
        },
    };
    // a bare `param` owns the key itself, not `<key>.weight`
    Ok(Val::Tensor(b.lw.param_exact(base, shape, span)?))
}

impl Bind<'_, '_> {
    fn lw_stmt_key(&self) -> Option<String> {
        self.lw.stmt_key_value()
    }
}

/// A `reduce_*` call (see [`reduce`]): the function `kind` over `axes` (all by default),
/// kept as length-1 axes with `keepdims`.
fn reduce_call(b: &mut Bind<'_, '_>, name: &str, kind: ReduceKind) -> Result<Val, LowerError> {
    let x = b.tensor("x")?;
    let shape = b.shape(x.0);
    let axes_arg = b.ints("axes")?;
    let keepdims = b.boolean("keepdims")?;
    let axes = match axes_arg {
        None => (0..shape.len()).collect(),
        Some((list, s)) => {
            let mut axes = Vec::new();
            for a in list {
                let a = b.axis(a, shape.len(), s)?;
                if axes.contains(&a) {
                    return Ok(b.lw.fail(s, format!("{name}: axis {a} is listed twice"))?);
                }
                axes.push(a);
            }
            axes.sort_unstable();
            axes
        }
    };
    let op = Op::Reduce {
        kind,
        axes,
        keepdims,
    };
    Ok(b.node(op, vec![x.0], &[x.1])?)
}

/// A DSL call of a unary function by name (its row in [`unary`] says which parameters it
/// reads), or `None` when `name` is none.
fn unary_call(b: &mut Bind<'_, '_>, name: &str) -> Option<Result<Val, LowerError>> {
    // the parameters come after `x`: set it aside so that positions stay right
    let x = b.args.positional.pop_front();
    let op = UnaryOp::from_call(name, b);
    b.args.keywords_only = false;
    if let Some(x) = x {
        b.args.positional.push_front(x);
    }
    Some(op?.map_err(LowerError::from).and_then(|op| unary(b, op)))
}

impl unary::CallArgs for Bind<'_, '_> {
    type Error = Reported;

    fn keywords_only(&mut self) {
        Bind::keywords_only(self);
    }

    fn float(&mut self, keyword: &str, default: Option<f64>) -> Result<f32, Reported> {
        // the row's macro writes this default and the signature's text from one place
        match (self.args.take(keyword), default) {
            (Some((v @ (Val::Int(_) | Val::Float(_)), _)), _) => Ok(as_f64(&v) as f32),
            (Some((other, s)), _) => self.wrong(keyword, "a number", &other, s),
            (None, Some(d)) => Ok(d as f32),
            (None, None) => self.missing(keyword),
        }
    }
}

fn unary(b: &mut Bind<'_, '_>, op: UnaryOp) -> Result<Val, LowerError> {
    match b.args.take("x") {
        Some((Val::Tensor(id), s)) => Ok(b.node(Op::Unary(op), vec![id], &[s])?),
        // a number folds here, by the function's one f64 semantics
        Some((v @ (Val::Int(_) | Val::Float(_)), _)) => Ok(Val::Float(op.reference(as_f64(&v)))),
        Some((Val::Poison, _)) => Err(Failed),
        Some((other, s)) => Ok(b.wrong("x", "a tensor", &other, s)?),
        None => Ok(b.missing("x")?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every PyTorch or ONNX spelling the unknown-op hint knows leads to an op of this
    /// DSL, and none shadows one (a name in both would never reach the hint).
    #[test]
    fn other_op_names_lead_to_ops() {
        let names: Vec<&str> = ops().map(|o| o.name).collect();
        for (theirs, ours) in OTHER_OP_NAMES {
            assert!(
                names.contains(ours),
                "`{theirs}` leads to `{ours}`, not an op"
            );
            assert!(!names.contains(theirs), "`{theirs}` is an op of its own");
        }
        assert_eq!(closest("global_average_pool"), Some("global_avg_pool2d"));
        assert_eq!(closest("sofmax"), Some("softmax"), "typos still found");
        assert_eq!(closest("no_such_thing"), None);
    }

    #[test]
    fn defaults_are_read_from_the_signatures() {
        assert_eq!(signature_default("conv2d", "stride"), Some("1"));
        assert_eq!(signature_default("max_pool2d", "stride"), Some("kernel"));
        assert_eq!(signature_default("avg_pool2d", "dilation"), Some("1"));
        assert_eq!(signature_default("layer_norm", "eps"), Some("1e-5"));
        assert_eq!(
            signature_default("resize", "nearest_mode"),
            Some("\"round_prefer_floor\"")
        );
        assert_eq!(signature_default("cumsum", "reverse"), Some("false"));
        assert_eq!(signature_default("slice", "axis"), None);
        assert_eq!(signature_default("no_such_op", "axis"), None);
        assert_eq!(
            argument_names("pad"),
            ["x", "pads", "mode", "value"],
            "names come from the same split"
        );
    }

    /// Each DSL name belongs to one op (a family row shadowed by a unary, reduce or scan
    /// function of the same name would never bind), and every op of the reference binds:
    /// a call without arguments reaches its binder and fails on a missing argument, not
    /// as an unknown op.
    #[test]
    fn every_op_has_one_name_and_binds() {
        let names: Vec<&str> = ops().map(|op| op.name).collect();
        for (i, name) in names.iter().enumerate() {
            assert!(!names[i + 1..].contains(name), "`{name}` is listed twice");
        }
        for name in names {
            let source = format!("pub model M(x: [2, 3]) -> [2, 3] {{ {name}() }}");
            let errors = crate::lower_str(&source)
                .err()
                .unwrap_or_default()
                .join("\n");
            assert!(!errors.contains("unknown op"), "`{name}`: {errors}");
        }
    }

    /// Every default a signature writes reads as a value (an integer, a number, `true` or
    /// `false`, a quoted string) or is one of the defaults stated in words, which the
    /// bindings compute: a typo in a signature fails here, not in a user's build. (The
    /// unary functions' signatures are written from their rows' Rust defaults, which
    /// their binding reads directly.)
    #[test]
    fn every_default_reads_as_a_value_or_is_stated_in_words() {
        let words = [
            "kernel",
            "channels",
            "the last axis",
            "all length-1 axes",
            "to the end",
            "all",
            "n",
            "s",
            "[h, w]",
            "[a, b, ...]",
            "[per axis] and/or scales = [per axis]",
            "[starts, ends]",
        ];
        let unary = |name: &str| unary::SIGNATURES.iter().flatten().any(|u| u.name == name);
        for op in ops().filter(|op| !unary(op.name)) {
            for part in signature_parts(op.name) {
                let Some((name, text)) = part.split_once('=') else {
                    continue;
                };
                let text = text.trim();
                let value = text.parse::<f64>().is_ok()
                    || text.parse::<bool>().is_ok()
                    || (text.len() >= 2 && text.starts_with('"') && text.ends_with('"'));
                assert!(
                    value || words.contains(&text),
                    "`{}` argument `{}`: default `{text}`",
                    op.name,
                    name.trim()
                );
            }
        }
    }
}
