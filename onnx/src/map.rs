//! ONNX -> DSL: one ONNX node becomes DSL statements (a one-op `dnn!` model with
//! [`map`], statements inside a whole imported model with [`map_in_graph`]), or a clear
//! refusal.
//!
//! Input: a parsed node ([`Node`]: op type, opset, attributes with their schema
//! defaults, input shapes and the values of the inputs known when the model is
//! generated). Output: [`Mapping::Model`], the DSL text of
//! `model Case(x0: [..], ...) -> (...) { ... }` plus where each model input and each
//! parameter comes from, or [`Mapping::Unsupported`] with the reason
//! (`Pad: mode="wrap" is not supported`).
//!
//! ```text
//!   Conv(X:[1,1,5,5], W:[1,1,3,3]) pads=[1,1,1,1]
//!     ->  model Case(x0: [1, 1, 5, 5]) -> [1, 1, 5, 5] {
//!             let conv = conv2d(x0, 1, kernel = [3, 3], stride = [1, 1], padding = [1, 1, 1, 1],
//!                               dilation = [1, 1], groups = 1, bias = false);
//!             conv
//!         }                                   conv.weight <- input 1 (W)
//! ```
//!
//! Rules, the same for every op of [`ONNX_OPS`]:
//! - every attribute the node sets, and every schema default it leaves unset, is read by
//!   the op's mapping (so it is handled) or the node is refused; a value the DSL cannot
//!   express is refused by name (`Gelu: approximate="fast" is not supported`);
//! - inputs ONNX passes as tensors but the DSL takes as compile-time attributes
//!   (Reshape's shape, Slice's starts, Pad's pads, Resize's scales, Clip's bounds, reduce
//!   axes...) are read from their values here;
//! - weights (Conv W/B, Gemm B/C, normalization scales and biases, PRelu slope) become DSL
//!   parameters, filled at run time from the input named in [`ParamSource`];
//! - everything else is a model input (f32; integer index inputs are passed as f32).
//!
//! The importer ([`import`](mod@crate::import)) applies the same mapping node by node; there the
//! weights are the file's initializers, named by `key = "..."` / `keys = [...]`.

use std::fmt::Write as _;

/// Element data of a tensor known at generation time.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// float32 values
    F32(Vec<f32>),
    /// int64 values
    I64(Vec<i64>),
}

/// A tensor known at generation time (an initializer, or a test's constant input).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Its shape; `[]` is a scalar.
    pub shape: Vec<usize>,
    /// Its elements, row-major.
    pub data: TensorData,
}

impl Tensor {
    /// The elements as integers (floats are truncated).
    pub fn ints(&self) -> Vec<i64> {
        match &self.data {
            TensorData::I64(v) => v.clone(),
            TensorData::F32(v) => v.iter().map(|&x| x as i64).collect(),
        }
    }

    /// The elements as floats.
    pub fn floats(&self) -> Vec<f64> {
        match &self.data {
            TensorData::I64(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        }
    }
}

/// An attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    /// INT
    Int(i64),
    /// FLOAT (a float32 value)
    Float(f32),
    /// STRING
    Str(String),
    /// INTS
    Ints(Vec<i64>),
    /// FLOATS
    Floats(Vec<f32>),
    /// STRINGS
    Strs(Vec<String>),
    /// TENSOR
    Tensor(Tensor),
}

/// One input slot of a node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeInput {
    /// The ONNX value name.
    pub name: String,
    /// numpy dtype name (`float32`, `int64`).
    pub dtype: String,
    /// Static shape.
    pub shape: Vec<usize>,
    /// The value, when known at generation time; inputs the DSL takes as compile-time
    /// attributes need it.
    pub value: Option<Tensor>,
}

/// An ONNX node with everything the mapping needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// `Conv`, `Resize`, ...
    pub op_type: String,
    /// The default-domain opset of the model.
    pub opset: i64,
    /// The attributes set on the node.
    pub attributes: Vec<(String, Attr)>,
    /// Schema defaults of the attributes the node leaves unset.
    pub defaults: Vec<(String, Attr)>,
    /// One entry per input slot; `None` for a skipped optional input.
    pub inputs: Vec<Option<NodeInput>>,
    /// Shape of each output slot; `None` for a skipped optional output.
    pub outputs: Vec<Option<Vec<usize>>>,
}

/// Where the values of one DSL parameter come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSource {
    /// The parameter's key in the lowered graph (`conv.weight`).
    pub key: String,
    /// The ONNX input slot holding its values (same elements, row-major).
    pub input: usize,
}

/// A one-op DSL model for an ONNX node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OneOpModel {
    /// `model Case(...) -> ... { ... }`, as written inside `dnn! { ... }`.
    pub dsl: String,
    /// The ONNX input slot of each model input, in order.
    pub inputs: Vec<usize>,
    /// Where each parameter's values come from.
    pub params: Vec<ParamSource>,
    /// The ONNX output slot of each model output, in order.
    pub outputs: Vec<usize>,
}

/// The result of [`map`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// The node as a one-op model.
    Model(OneOpModel),
    /// The node uses something the DSL cannot express.
    Unsupported {
        /// Why, naming the op and the attribute or input at fault.
        reason: String,
    },
}

/// One supported ONNX op: what it maps to and which attributes it handles (the README's
/// ONNX table is generated from this list and checked by a test).
pub struct OnnxOp {
    /// The ONNX op type.
    pub op_type: &'static str,
    /// The DSL ops it becomes.
    pub dsl: &'static str,
    /// The attributes it handles (any other attribute is refused).
    pub attributes: &'static [&'static str],
    /// What is refused or how it is expressed, for the README.
    pub notes: &'static str,
    map: fn(&mut Ctx<'_>) -> Result<Vec<String>, String>,
}

/// The README's ONNX table, one row per entry of [`ONNX_OPS`] (a test keeps the README
/// equal to this).
pub fn readme_table() -> String {
    let mut s = String::from("| ONNX op | DSL | attributes | notes |\n|---|---|---|---|\n");
    for op in ONNX_OPS {
        let dsl: Vec<String> = op.dsl.split(", ").map(|d| format!("`{d}`")).collect();
        let attrs: Vec<String> = op.attributes.iter().map(|a| format!("`{a}`")).collect();
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} |",
            op.op_type,
            dsl.join(" "),
            attrs.join(" "),
            op.notes
        );
    }
    s
}

/// Maps one node to a one-op model, or says why it cannot.
pub fn map(node: &Node) -> Mapping {
    let Some(spec) = ONNX_OPS.iter().find(|o| o.op_type == node.op_type) else {
        return Mapping::Unsupported {
            reason: format!("{}: the op is not supported", node.op_type),
        };
    };
    let mut ctx = Ctx::new(node, spec);
    let result = (spec.map)(&mut ctx).and_then(|outs| ctx.finish(outs));
    match result {
        Ok(model) => Mapping::Model(model),
        Err(msg) => Mapping::Unsupported {
            reason: format!("{}: {msg}", node.op_type),
        },
    }
}

type R<T> = Result<T, String>;

/// How a node's values are named when it is mapped inside a whole graph (see
/// [`map_in_graph`]); the importer fills it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GraphScope {
    /// The stem of every binding the node writes (`layer1_0_conv1`); unique in the model,
    /// and no other binding starts with it followed by `_`.
    pub base: String,
    /// The DSL expression of each input slot when used as a tensor: a binding, the
    /// binding of an initializer's `param`, or a float literal; `None` when it cannot be.
    pub inputs: Vec<Option<String>>,
    /// The initializer name of each input slot that is one.
    pub initializers: Vec<Option<String>>,
    /// Whether each output's shape in [`Node::outputs`] is known before mapping (from the
    /// file's `value_info`).
    pub output_shapes_known: Vec<bool>,
}

/// A node mapped inside a whole graph: statements of a model body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatements {
    /// `let ... = ...;` statements, in order.
    pub stmts: Vec<String>,
    /// The binding of each output slot (`None` for a skipped optional output).
    pub outputs: Vec<Option<String>>,
    /// The input slots used as tensors (their [`GraphScope::inputs`] names appear in
    /// the statements; an initializer among them must be declared before).
    pub data_inputs: Vec<usize>,
}

/// Maps one node of a graph to statements, naming values as `scope` says: the same
/// mapping as [`map`], with initializers as the parameters the ops own (`keys = [...]`
/// names them) and the node's inputs as earlier bindings. The error names the op and
/// the attribute or input at fault.
pub fn map_in_graph(node: &Node, scope: &GraphScope) -> Result<NodeStatements, String> {
    let Some(spec) = ONNX_OPS.iter().find(|o| o.op_type == node.op_type) else {
        return Err(format!("{}: the op is not supported", node.op_type));
    };
    let mut ctx = Ctx::new(node, spec);
    ctx.scope = Some(scope);
    let result = (spec.map)(&mut ctx).and_then(|outs| ctx.finish_in_graph(outs));
    result.map_err(|msg| format!("{}: {msg}", node.op_type))
}

/// The state of one mapping: what was read, and the DSL statements written so far.
struct Ctx<'n> {
    node: &'n Node,
    spec: &'static OnnxOp,
    attrs_read: Vec<&'static str>,
    inputs_read: Vec<bool>,
    model_inputs: Vec<usize>,
    params: Vec<ParamSource>,
    stmts: Vec<String>,
    fresh: usize,
    /// Set when mapping inside a graph.
    scope: Option<&'n GraphScope>,
    /// Graph mode: parameters declared by [`Ctx::param`] and not yet given to their op,
    /// as (DSL key, initializer name).
    owned: Vec<(String, String)>,
    /// Graph mode: the names this node bound.
    bound: Vec<String>,
}

impl<'n> Ctx<'n> {
    fn new(node: &'n Node, spec: &'static OnnxOp) -> Self {
        Ctx {
            node,
            spec,
            attrs_read: Vec::new(),
            inputs_read: vec![false; node.inputs.len()],
            model_inputs: Vec::new(),
            params: Vec::new(),
            stmts: Vec::new(),
            fresh: 0,
            scope: None,
            owned: Vec::new(),
            bound: Vec::new(),
        }
    }

    fn opset(&self) -> i64 {
        self.node.opset
    }

    // ---- attributes ---------------------------------------------------------------

    /// The attribute as set, else its schema default; marks it handled.
    fn attr(&mut self, name: &'static str) -> R<Option<Attr>> {
        if !self.spec.attributes.contains(&name) {
            return Err(format!(
                "internal error: attribute `{name}` is read but not listed in ONNX_OPS"
            ));
        }
        self.attrs_read.push(name);
        let found = self
            .node
            .attributes
            .iter()
            .chain(&self.node.defaults)
            .find(|(n, _)| n == name);
        Ok(found.map(|(_, a)| a.clone()))
    }

    fn int(&mut self, name: &'static str, default: i64) -> R<i64> {
        match self.attr(name)? {
            None => Ok(default),
            Some(Attr::Int(v)) => Ok(v),
            Some(other) => Err(format!(
                "attribute `{name}` must be an integer, found {other:?}"
            )),
        }
    }

    fn float(&mut self, name: &'static str, default: f32) -> R<f32> {
        match self.attr(name)? {
            None => Ok(default),
            Some(Attr::Float(v)) => Ok(v),
            Some(Attr::Int(v)) => Ok(v as f32),
            Some(other) => Err(format!(
                "attribute `{name}` must be a float, found {other:?}"
            )),
        }
    }

    fn string(&mut self, name: &'static str, default: &str) -> R<String> {
        match self.attr(name)? {
            None => Ok(default.to_string()),
            Some(Attr::Str(v)) => Ok(v),
            Some(other) => Err(format!(
                "attribute `{name}` must be a string, found {other:?}"
            )),
        }
    }

    fn ints(&mut self, name: &'static str) -> R<Option<Vec<i64>>> {
        match self.attr(name)? {
            None => Ok(None),
            Some(Attr::Ints(v)) => Ok(Some(v)),
            Some(Attr::Int(v)) => Ok(Some(vec![v])),
            Some(other) => Err(format!(
                "attribute `{name}` must be a list of integers, found {other:?}"
            )),
        }
    }

    /// A 0/1 attribute.
    fn flag(&mut self, name: &'static str, default: bool) -> R<bool> {
        match self.int(name, i64::from(default))? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(format!("{name}={v} is not supported (0 or 1)")),
        }
    }

    // ---- inputs -------------------------------------------------------------------

    /// The input in `slot`, when the node gives it; marks it handled.
    fn input(&mut self, slot: usize) -> Option<&'n NodeInput> {
        if let Some(r) = self.inputs_read.get_mut(slot) {
            *r = true;
        }
        self.node.inputs.get(slot).and_then(Option::as_ref)
    }

    fn has_input(&self, slot: usize) -> bool {
        self.node.inputs.get(slot).is_some_and(Option::is_some)
    }

    fn shape(&self, slot: usize) -> R<Vec<usize>> {
        match self.node.inputs.get(slot).and_then(Option::as_ref) {
            Some(i) => Ok(i.shape.clone()),
            None => Err(format!("input {slot} is missing")),
        }
    }

    /// The input as a model input (data); returns its DSL name.
    fn data(&mut self, slot: usize) -> R<String> {
        let Some(input) = self.input(slot) else {
            return Err(format!("input {slot} is missing"));
        };
        if input.dtype != "float32" && input.dtype != "int64" {
            return Err(format!(
                "input `{}` has dtype {}; only float32 data is supported",
                input.name, input.dtype
            ));
        }
        if !self.model_inputs.contains(&slot) {
            self.model_inputs.push(slot);
        }
        match self.scope {
            None => Ok(format!("x{slot}")),
            Some(scope) => scope.inputs.get(slot).cloned().flatten().ok_or_else(|| {
                format!(
                    "input `{}` is a constant the DSL cannot hold as a tensor",
                    input.name
                )
            }),
        }
    }

    /// Inside a graph: the input's value is known and no tensor expression names it (a
    /// constant folded at import).
    fn constant_without_tensor(&self, slot: usize) -> bool {
        let Some(scope) = self.scope else {
            return false;
        };
        scope.inputs.get(slot).is_some_and(Option::is_none)
            && self
                .node
                .inputs
                .get(slot)
                .and_then(Option::as_ref)
                .is_some_and(|i| i.value.is_some())
    }

    /// The float32 input as a model input; integer data is refused.
    fn float_data(&mut self, slot: usize) -> R<String> {
        let name = self.data(slot)?;
        match self.node.inputs.get(slot).and_then(Option::as_ref) {
            Some(i) if i.dtype != "float32" => Err(format!(
                "input `{}` has dtype {}; only float32 data is supported",
                i.name, i.dtype
            )),
            _ => Ok(name),
        }
    }

    /// The value of a constant input, `None` when the slot is absent.
    fn constant(&mut self, slot: usize) -> R<Option<&'n Tensor>> {
        match self.input(slot) {
            None => Ok(None),
            Some(i) => match &i.value {
                Some(t) => Ok(Some(t)),
                None => Err(format!(
                    "input `{}` must be a constant (its value known when the model is generated)",
                    i.name
                )),
            },
        }
    }

    fn const_ints(&mut self, slot: usize) -> R<Option<Vec<i64>>> {
        Ok(self.constant(slot)?.map(Tensor::ints))
    }

    fn const_floats(&mut self, slot: usize) -> R<Option<Vec<f64>>> {
        Ok(self.constant(slot)?.map(Tensor::floats))
    }

    /// A constant scalar float input (or a 1-element tensor).
    fn const_scalar(&mut self, slot: usize) -> R<Option<f32>> {
        match self.const_floats(slot)? {
            None => Ok(None),
            Some(v) => match v.as_slice() {
                [x] => Ok(Some(*x as f32)),
                _ => Err(format!(
                    "input {slot} must be a scalar, found {} values",
                    v.len()
                )),
            },
        }
    }

    /// Declares the input as the values of the DSL parameter `key`; returns its shape.
    fn param(&mut self, slot: usize, key: &str) -> R<Vec<usize>> {
        let Some(input) = self.input(slot) else {
            return Err(format!("input {slot} is missing"));
        };
        if input.dtype != "float32" {
            return Err(format!(
                "input `{}` has dtype {}; weights must be float32",
                input.name, input.dtype
            ));
        }
        self.params.push(ParamSource {
            key: key.to_string(),
            input: slot,
        });
        if let Some(scope) = self.scope {
            let Some(init) = scope.initializers.get(slot).cloned().flatten() else {
                return Err(format!(
                    "input `{}` must be an initializer (a weight stored in the file): the op it maps to owns its weights",
                    input.name
                ));
            };
            self.owned.push((key.to_string(), init));
        }
        Ok(input.shape.clone())
    }

    /// The input as a learned tensor, for ops that take their weight as an operand
    /// (`matmul(a, b)`): a `let stem = param([..]);` of its own in a one-op model, the
    /// tensor the input names inside a graph. Returns its DSL name.
    fn param_tensor(&mut self, slot: usize, stem: &str) -> R<String> {
        if self.scope.is_some() {
            let input = self.input(slot);
            if let Some(i) = input {
                if i.dtype != "float32" {
                    return Err(format!(
                        "input `{}` has dtype {}; weights must be float32",
                        i.name, i.dtype
                    ));
                }
            }
            return self.data(slot);
        }
        let shape = self.param(slot, stem)?;
        Ok(self.bind_named(stem, format!("param({})", fmt_dims(&shape))))
    }

    // ---- outputs ------------------------------------------------------------------

    fn wants_output(&self, slot: usize) -> bool {
        self.node.outputs.get(slot).is_some_and(Option::is_some)
    }

    /// The shape of an output when it is known before mapping: always for a one-op
    /// model (the test gives it), inside a graph when the file's `value_info` or graph
    /// outputs give it.
    fn known_out_shape(&self, slot: usize) -> Option<Vec<usize>> {
        if let Some(scope) = self.scope {
            if !scope
                .output_shapes_known
                .get(slot)
                .copied()
                .unwrap_or(false)
            {
                return None;
            }
        }
        self.node.outputs.get(slot).cloned().flatten()
    }

    fn out_shape(&self, slot: usize) -> R<Vec<usize>> {
        if let Some(scope) = self.scope {
            if !scope
                .output_shapes_known
                .get(slot)
                .copied()
                .unwrap_or(false)
            {
                return Err(format!(
                    "the shape of output {slot} is needed and the file does not give it (value_info)"
                ));
            }
        }
        match self.node.outputs.get(slot).and_then(Option::as_ref) {
            Some(s) => Ok(s.clone()),
            None => Err(format!("output {slot} is missing")),
        }
    }

    // ---- DSL text -----------------------------------------------------------------

    /// `let tN = expr;`, returning `tN`.
    fn bind(&mut self, expr: String) -> String {
        let name = match self.scope {
            None => format!("t{}", self.fresh),
            Some(scope) => format!("{}_t{}", scope.base, self.fresh),
        };
        self.fresh += 1;
        self.stmts.push(format!("let {name} = {expr};"));
        self.bound.push(name.clone());
        name
    }

    /// `let name = expr;` (the binding names the parameters the op owns). Inside a graph
    /// the binding is the node's own name and the parameters declared for `name.*` are
    /// named after their initializers (`key = "conv1"`, or `keys = [...]`).
    fn bind_named(&mut self, name: &str, expr: String) -> String {
        let Some(scope) = self.scope else {
            self.stmts.push(format!("let {name} = {expr};"));
            return name.to_string();
        };
        let binding = if self.bound.contains(&scope.base) {
            format!("{}_{name}", scope.base)
        } else {
            scope.base.clone()
        };
        let prefix = format!("{name}.");
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.owned)
            .into_iter()
            .partition(|(key, _)| key.starts_with(&prefix));
        self.owned = rest;
        let expr = if mine.is_empty() {
            expr
        } else {
            with_keys(&expr, name, &mine)
        };
        self.stmts.push(format!("let {binding} = {expr};"));
        self.bound.push(binding.clone());
        binding
    }

    /// Names for `n` bindings of one statement (`let (s0, s1) = split(...)`).
    fn tuple_names(&mut self, n: usize) -> Vec<String> {
        let names: Vec<String> = match self.scope {
            None => (0..n).map(|i| format!("s{i}")).collect(),
            Some(scope) => (0..n).map(|i| format!("{}_s{i}", scope.base)).collect(),
        };
        self.bound.extend(names.iter().cloned());
        names
    }

    /// Every attribute and input the node gives was read by the mapping.
    fn check_all_read(&self) -> R<()> {
        for (name, _) in self.node.attributes.iter().chain(&self.node.defaults) {
            if !self.attrs_read.iter().any(|r| r == name) {
                let value = self
                    .node
                    .attributes
                    .iter()
                    .chain(&self.node.defaults)
                    .find(|(n, _)| n == name)
                    .map(|(_, a)| a);
                return Err(format!(
                    "attribute `{name}`{} is not supported",
                    value.map(fmt_attr).unwrap_or_default()
                ));
            }
        }
        for (slot, input) in self.node.inputs.iter().enumerate() {
            if input.is_some() && !self.inputs_read.get(slot).copied().unwrap_or(false) {
                let name = input.as_ref().map_or("", |i| i.name.as_str());
                return Err(format!("input {slot} (`{name}`) is not supported"));
            }
        }
        Ok(())
    }

    /// Graph mode: binds each requested output (an expression that is not yet a binding
    /// of this node gets one).
    fn finish_in_graph(&mut self, outs: Vec<String>) -> R<NodeStatements> {
        self.check_all_read()?;
        if let Some((key, _)) = self.owned.first() {
            return Err(format!(
                "internal error: parameter `{key}` was declared but no op took it"
            ));
        }
        let base = self.scope.map(|s| s.base.clone()).unwrap_or_default();
        let mut outs = outs.into_iter();
        let mut outputs = Vec::new();
        for slot in 0..self.node.outputs.len() {
            if !self.wants_output(slot) {
                outputs.push(None);
                continue;
            }
            let Some(expr) = outs.next() else {
                return Err("internal error: fewer outputs mapped than requested".to_string());
            };
            if self.bound.contains(&expr) {
                outputs.push(Some(expr));
                continue;
            }
            let name = if self.bound.contains(&base) {
                format!("{base}_out{slot}")
            } else {
                base.clone()
            };
            self.stmts.push(format!("let {name} = {expr};"));
            self.bound.push(name.clone());
            outputs.push(Some(name));
        }
        if outs.next().is_some() {
            return Err("internal error: more outputs mapped than requested".to_string());
        }
        let mut data_inputs = self.model_inputs.clone();
        data_inputs.sort_unstable();
        Ok(NodeStatements {
            stmts: std::mem::take(&mut self.stmts),
            outputs,
            data_inputs,
        })
    }

    fn finish(&mut self, outs: Vec<String>) -> R<OneOpModel> {
        self.check_all_read()?;
        let out_slots: Vec<usize> = (0..self.node.outputs.len())
            .filter(|&i| self.wants_output(i))
            .collect();
        if out_slots.len() != outs.len() {
            return Err(format!(
                "internal error: {} outputs mapped for {} requested",
                outs.len(),
                out_slots.len()
            ));
        }
        let mut dsl = String::from("model Case(");
        let mut inputs: Vec<usize> = self.model_inputs.clone();
        inputs.sort_unstable();
        for (k, &slot) in inputs.iter().enumerate() {
            let shape = self.shape(slot)?;
            let sep = if k == 0 { "" } else { ", " };
            let _ = write!(dsl, "{sep}x{slot}: {}", fmt_dims(&shape));
        }
        dsl.push_str(") -> ");
        if let [slot] = out_slots.as_slice() {
            dsl.push_str(&fmt_dims(&self.out_shape(*slot)?));
        } else {
            let decls: Vec<String> = out_slots
                .iter()
                .map(|&s| Ok(format!("y{s}: {}", fmt_dims(&self.out_shape(s)?))))
                .collect::<R<_>>()?;
            let _ = write!(dsl, "({})", decls.join(", "));
        }
        dsl.push_str(" {\n");
        for s in &self.stmts {
            let _ = writeln!(dsl, "    {s}");
        }
        let result = if let [one] = outs.as_slice() {
            one.clone()
        } else {
            format!("({})", outs.join(", "))
        };
        let _ = writeln!(dsl, "    {result}");
        dsl.push('}');
        Ok(OneOpModel {
            dsl,
            inputs,
            params: self.params.clone(),
            outputs: out_slots,
        })
    }
}

/// `op(args)` with the names of the parameters it creates appended: `key = "conv1"` when
/// the initializers are `conv1.weight`, `conv1.bias` as the op would name them, else
/// `keys = ["onnx::Conv_193", ...]` in the order the op creates them.
fn with_keys(expr: &str, stem: &str, params: &[(String, String)]) -> String {
    let suffixes: Vec<&str> = params
        .iter()
        .map(|(key, _)| key.get(stem.len() + 1..).unwrap_or(""))
        .collect();
    let common = params.first().and_then(|(_, init)| {
        let suffix = suffixes.first()?;
        init.strip_suffix(suffix)?.strip_suffix('.')
    });
    let arg = match common {
        Some(p)
            if !p.is_empty()
                && params
                    .iter()
                    .zip(&suffixes)
                    .all(|((_, init), suffix)| *init == format!("{p}.{suffix}")) =>
        {
            format!("key = {p:?}")
        }
        _ => {
            let names: Vec<String> = params.iter().map(|(_, init)| format!("{init:?}")).collect();
            format!("keys = [{}]", names.join(", "))
        }
    };
    match expr.strip_suffix(')') {
        Some(head) => format!("{head}, {arg})"),
        None => expr.to_string(),
    }
}

fn fmt_attr(a: &Attr) -> String {
    match a {
        Attr::Int(v) => format!("={v}"),
        Attr::Float(v) => format!("={v}"),
        Attr::Str(s) => format!("=\"{s}\""),
        Attr::Ints(v) => format!("={v:?}"),
        Attr::Floats(v) => format!("={v:?}"),
        Attr::Strs(v) => format!("={v:?}"),
        Attr::Tensor(_) => String::new(),
    }
}

/// `[1, 3, 224, 224]`
fn fmt_dims(dims: &[usize]) -> String {
    let parts: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

fn fmt_ints(v: &[i64]) -> String {
    let parts: Vec<String> = v.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// A DSL float literal that reads back as exactly this f32 (the DSL reads floats as
/// f64 and rounds to f32).
fn flt(v: f32) -> String {
    let short = format!("{v:?}");
    if short.parse::<f64>().is_ok_and(|p| p as f32 == v) {
        short
    } else {
        format!("{:?}", f64::from(v))
    }
}

/// A DSL float literal for an f64.
fn flt64(v: f64) -> String {
    format!("{v:?}")
}

/// `axis` (possibly negative) resolved against `rank`.
fn norm_axis(axis: i64, rank: usize) -> R<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}

fn dim(shape: &[usize], axis: usize) -> usize {
    shape.get(axis).copied().unwrap_or(1)
}

// ---- per-op mappings ------------------------------------------------------------------

fn unary(c: &mut Ctx<'_>, dsl: &str) -> R<Vec<String>> {
    let x = c.float_data(0)?;
    Ok(vec![format!("{dsl}({x})")])
}

fn binary(c: &mut Ctx<'_>, sym: &str) -> R<Vec<String>> {
    let a = c.float_data(0)?;
    let b = c.float_data(1)?;
    Ok(vec![format!("{a} {sym} {b}")])
}

fn pow(c: &mut Ctx<'_>) -> R<Vec<String>> {
    let a = c.float_data(0)?;
    let b = c.float_data(1)?;
    Ok(vec![format!("pow({a}, {b})")])
}

/// A function of one float attribute `alpha` (default `default`), passed to the DSL
/// function `dsl` as its parameter `keyword`.
fn unary_alpha(c: &mut Ctx<'_>, dsl: &str, keyword: &str, default: f32) -> R<Vec<String>> {
    let alpha = c.float("alpha", default)?;
    let x = c.float_data(0)?;
    Ok(vec![format!("{dsl}({x}, {keyword} = {})", flt(alpha))])
}

/// ONNX's f32 defaults for Selu.
const SELU_ALPHA: f32 = 1.673_263_2;
const SELU_GAMMA: f32 = 1.050_701;

fn selu(c: &mut Ctx<'_>) -> R<Vec<String>> {
    let alpha = c.float("alpha", SELU_ALPHA)?;
    let gamma = c.float("gamma", SELU_GAMMA)?;
    let x = c.float_data(0)?;
    if alpha == SELU_ALPHA && gamma == SELU_GAMMA {
        Ok(vec![format!("selu({x})")])
    } else {
        // gamma * (x > 0 ? x : alpha * (e^x - 1)) is gamma * elu(x, alpha), exactly
        Ok(vec![format!(
            "elu({x}, alpha = {}) * {}",
            flt(alpha),
            flt(gamma)
        )])
    }
}

fn hard_sigmoid(c: &mut Ctx<'_>) -> R<Vec<String>> {
    let alpha = c.float("alpha", 0.2)?;
    let beta = c.float("beta", 0.5)?;
    let x = c.float_data(0)?;
    Ok(vec![format!(
        "hard_sigmoid({x}, alpha = {}, beta = {})",
        flt(alpha),
        flt(beta)
    )])
}

fn gelu(c: &mut Ctx<'_>) -> R<Vec<String>> {
    let approx = c.string("approximate", "none")?;
    if approx != "none" && approx != "tanh" {
        return Err(format!("approximate=\"{approx}\" is not supported"));
    }
    let x = c.float_data(0)?;
    Ok(vec![format!("gelu({x}, approximate = \"{approx}\")")])
}

fn clip(c: &mut Ctx<'_>) -> R<Vec<String>> {
    let x = c.float_data(0)?;
    let (min, max) = if c.opset() < 11 {
        let min = c.float("min", f32::NEG_INFINITY)?;
        let max = c.float("max", f32::INFINITY)?;
        (
            Some(min).filter(|m| m.is_finite()),
            Some(max).filter(|m| m.is_finite()),
        )
    } else {
        (c.const_scalar(1)?, c.const_scalar(2)?)
    };
    let mut args = vec![x];
    for (name, v) in [("min", min), ("max", max)] {
        match v {
            Some(v) if v.is_nan() => return Err(format!("{name} is NaN")),
            Some(v) if v.is_finite() => args.push(format!("{name} = {}", flt(v))),
            // an infinite bound is no bound, the default
            Some(v) if (name == "min") == (v < 0.0) => {}
            Some(_) => {
                return Err(format!(
                    "{name} is an infinity that clips everything; not supported"
                ))
            }
            None => {}
        }
    }
    Ok(vec![format!("clip({})", args.join(", "))])
}

fn prelu(c: &mut Ctx<'_>) -> R<Vec<String>> {
    let x = c.float_data(0)?;
    let xs = c.shape(0)?;
    let slope = c.shape(1)?;
    let n: usize = slope.iter().product();
    // right-aligned to x (unidirectional broadcast), is the slope one value per channel?
    let offset = xs.len().saturating_sub(slope.len());
    let per_channel = xs.len() >= 2
        && slope.len() <= xs.len()
        && slope
            .iter()
            .enumerate()
            .all(|(j, &d)| d == 1 || offset + j == 1)
        && (n == 1 || n == dim(&xs, 1));
    if per_channel {
        c.param(1, "prelu.weight")?;
        Ok(vec![c.bind_named(
            "prelu",
            format!("prelu({x}, num_parameters = {n})"),
        )])
    } else {
        // any other broadcast: relu(x) - slope * relu(-x) is exact
        let slope = c.param_tensor(1, "slope")?;
        Ok(vec![format!("relu({x}) - {slope} * relu(neg({x}))")])
    }
}

fn batch_norm(c: &mut Ctx<'_>) -> R<Vec<String>> {
    let eps = c.float("epsilon", 1e-5)?;
    // momentum only updates running statistics in training mode
    c.float("momentum", 0.9)?;
    if c.flag("training_mode", false)? {
        return Err("training_mode=1 is not supported (inference only)".to_string());
    }
    if c.opset() < 9 {
        c.flag("spatial", true)?;
    }
    if c.node.outputs.len() > 1 {
        return Err("the running mean/var outputs (training mode) are not supported".to_string());
    }
    let x = c.float_data(0)?;
    for (slot, key) in [
        (1, "bn.weight"),
        (2, "bn.bias"),
        (3, "bn.running_mean"),
        (4, "bn.running_var"),
    ] {
        c.param(slot, key)?;
    }
    Ok(vec![c.bind_named(
        "bn",
        format!("batch_norm({x}, eps = {})", flt(eps)),
    )])
}

fn instance_norm(c: &mut Ctx<'_>) -> R<Vec<String>> {
    let eps = c.float("epsilon", 1e-5)?;
    let x = c.float_data(0)?;
    c.param(1, "norm.weight")?;
    c.param(2, "norm.bias")?;
    Ok(vec![c.bind_named(
        "norm",
        format!("instance_norm({x}, eps = {}, affine = true)", flt(eps)),
    )])
}

fn group_norm(c: &mut Ctx<'_>) -> R<Vec<String>> {
    let eps = c.float("epsilon", 1e-5)?;
    let groups = c.int("num_groups", 0)?;
    if c.int("stash_type", 1)? != 1 {
        return Err("stash_type other than 1 (float32) is not supported".to_string());
    }
    if c.opset() < 21 {
        return Err("opset < 21 (scale and bias per group) is not supported".to_string());
    }
    let x = c.float_data(0)?;
    c.param(1, "norm.weight")?;
    c.param(2, "norm.bias")?;
    Ok(vec![c.bind_named(
        "norm",
        format!("group_norm({x}, {groups}, eps = {})", flt(eps)),
    )])
}

fn layer_norm(c: &mut Ctx<'_>) -> R<Vec<String>> {
    let axis = c.int("axis", -1)?;
    let eps = c.float("epsilon", 1e-5)?;
    if c.int("stash_type", 1)? != 1 {
        return Err("stash_type other than 1 (float32) is not supported".to_string());
    }
    let x = c.float_data(0)?;
    let xs = c.shape(0)?;
    let axis = norm_axis(axis, xs.len())?;
    let dims = xs.len() - axis;
    let norm_shape = xs.get(axis..).unwrap_or(&[]).to_vec();
    let scale = c.shape(1)?;
    let has_bias = c.has_input(2);
    let exact = scale == norm_shape && (!has_bias || c.shape(2)? == norm_shape);
    let mut outs = Vec::new();
    let y = if exact && has_bias {
        c.param(1, "ln.weight")?;
        c.param(2, "ln.bias")?;
        c.bind_named(
            "ln",
            format!("layer_norm({x}, dims = {dims}, eps = {})", flt(eps)),
        )
    } else {
        // Scale and B broadcast to the normalized shape
        let scale = c.param_tensor(1, "scale")?;
        let mut y = format!(
            "layer_norm({x}, dims = {dims}, eps = {}, affine = false) * {scale}",
            flt(eps)
        );
        if has_bias {
            let bias = c.param_tensor(2, "bias")?;
            let _ = write!(y, " + {bias}");
        }
        c.bind(y)
    };
    outs.push(y);
    if c.wants_output(1) || c.wants_output(2) {
        let axes: Vec<i64> = (axis as i64..xs.len() as i64).collect();
        let mean = c.bind(format!(
            "reduce_mean({x}, axes = {}, keepdims = true)",
            fmt_ints(&axes)
        ));
        if c.wants_output(1) {
            outs.push(mean.clone());
        }
        if c.wants_output(2) {
            let var = c.bind(format!(
                "reduce_mean(square({x} - {mean}), axes = {}, keepdims = true)",
                fmt_ints(&axes)
            ));
            outs.push(c.bind(format!("rsqrt({var} + {})", flt(eps))));
        }
    }
    Ok(outs)
}

fn softmax(c: &mut Ctx<'_>, dsl: &str) -> R<Vec<String>> {
    let x = c.float_data(0)?;
    let xs = c.shape(0)?;
    if c.opset() >= 13 {
        let axis = c.int("axis", -1)?;
        let axis = norm_axis(axis, xs.len())?;
        Ok(vec![format!("{dsl}({x}, axis = {axis})")])
    } else {
        // before opset 13 the input is flattened to 2-d at `axis`
        let axis = c.int("axis", 1)?;
        let axis = if axis == xs.len() as i64 {
            xs.len()
        } else {
            norm_axis(axis, xs.len())?
        };
        let outer: usize = xs.get(..axis).unwrap_or(&[]).iter().product();
        let inner: usize = xs.get(axis..).unwrap_or(&[]).iter().product();
        let flat = c.bind(format!("reshape({x}, [{outer}, {inner}])"));
        let y = c.bind(format!("{dsl}({flat}, axis = -1)"));
        Ok(vec![format!("reshape({y}, {})", fmt_dims(&xs))])
    }
}

/// Per-axis (begin, end) padding for Conv / pooling.
struct Window {
    kernel: Vec<usize>,
    strides: Vec<usize>,
    dilations: Vec<usize>,
    pads: Vec<(usize, usize)>,
}

/// Reads kernel_shape (or `kernel` from W), strides, dilations, pads and auto_pad.
fn window(
    c: &mut Ctx<'_>,
    spatial: &[usize],
    kernel_from_w: Option<Vec<usize>>,
    is_pool: bool,
) -> R<Window> {
    let k = spatial.len();
    let kernel: Vec<usize> = match (c.ints("kernel_shape")?, kernel_from_w) {
        (Some(ks), Some(w)) => {
            let ks: Vec<usize> = ks.iter().map(|&v| v.max(0) as usize).collect();
            if ks != w {
                return Err(format!("kernel_shape {ks:?} differs from W's {w:?}"));
            }
            ks
        }
        (Some(ks), None) => ks.iter().map(|&v| v.max(0) as usize).collect(),
        (None, Some(w)) => w,
        (None, None) => return Err("kernel_shape is required".to_string()),
    };
    let strides = positive_list(c.ints("strides")?, k, "strides")?;
    let dilations = if is_pool && c.opset() < 10 {
        vec![1; k]
    } else {
        positive_list(c.ints("dilations")?, k, "dilations")?
    };
    if kernel.len() != k || kernel.contains(&0) {
        return Err(format!(
            "kernel_shape {kernel:?} does not match the {k} spatial axes"
        ));
    }
    let auto_pad = c.string("auto_pad", "NOTSET")?;
    let pads_attr = c.ints("pads")?;
    let pads: Vec<(usize, usize)> = match auto_pad.as_str() {
        "NOTSET" => match pads_attr {
            None => vec![(0, 0); k],
            Some(p) if p.len() == 2 * k && p.iter().all(|&v| v >= 0) => (0..k)
                .map(|i| {
                    (
                        p.get(i).copied().unwrap_or(0) as usize,
                        p.get(i + k).copied().unwrap_or(0) as usize,
                    )
                })
                .collect(),
            Some(p) => {
                return Err(format!(
                    "pads {p:?} must be {} non-negative integers",
                    2 * k
                ))
            }
        },
        "VALID" => vec![(0, 0); k],
        "SAME_UPPER" | "SAME_LOWER" => (0..k)
            .map(|i| {
                let (len, s, d, kk) = (
                    dim(spatial, i),
                    dim(&strides, i),
                    dim(&dilations, i),
                    dim(&kernel, i),
                );
                let out = len.div_ceil(s);
                let total = ((out.saturating_sub(1)) * s + (kk - 1) * d + 1).saturating_sub(len);
                let small = total / 2;
                if auto_pad == "SAME_UPPER" {
                    (small, total - small)
                } else {
                    (total - small, small)
                }
            })
            .collect(),
        other => return Err(format!("auto_pad=\"{other}\" is not supported")),
    };
    Ok(Window {
        kernel,
        strides,
        dilations,
        pads,
    })
}

fn positive_list(v: Option<Vec<i64>>, k: usize, name: &str) -> R<Vec<usize>> {
    match v {
        None => Ok(vec![1; k]),
        Some(v) if v.len() == k && v.iter().all(|&s| s >= 1) => {
            Ok(v.iter().map(|&s| s as usize).collect())
        }
        Some(v) => Err(format!("{name} {v:?} must be {k} positive integers")),
    }
}

fn conv(c: &mut Ctx<'_>) -> R<Vec<String>> {
    let x = c.float_data(0)?;
    let xs = c.shape(0)?;
    let ws = c.shape(1)?;
    if xs.len() < 3 || ws.len() != xs.len() {
        return Err(format!(
            "input {xs:?} and weight {ws:?} must be [N, C, ...] and [M, C/group, ...]"
        ));
    }
    let spatial = xs.get(2..).unwrap_or(&[]).to_vec();
    if spatial.len() > 2 {
        return Err(format!(
            "{}-d convolution is not supported (1-d and 2-d are)",
            spatial.len()
        ));
    }
    let group = c.int("group", 1)?;
    let w = window(
        c,
        &spatial,
        Some(ws.get(2..).unwrap_or(&[]).to_vec()),
        false,
    )?;
    let m = dim(&ws, 0);
    c.param(1, "conv.weight")?;
    let bias = c.has_input(2);
    if bias {
        c.param(2, "conv.bias")?;
    }
    // 1-d runs as 2-d over a height of 1
    let one_d = spatial.len() == 1;
    let lift = |v: &[usize], fill: usize| {
        if one_d {
            vec![fill, dim(v, 0)]
        } else {
            v.to_vec()
        }
    };
    let kernel = lift(&w.kernel, 1);
    let stride = lift(&w.strides, 1);
    let dilation = lift(&w.dilations, 1);
    let pads = if one_d {
        vec![(0, 0), w.pads.first().copied().unwrap_or((0, 0))]
    } else {
        w.pads.clone()
    };
    let padding = [
        pads.first().map_or(0, |p| p.0),
        pads.get(1).map_or(0, |p| p.0),
        pads.first().map_or(0, |p| p.1),
        pads.get(1).map_or(0, |p| p.1),
    ];
    let input = if one_d {
        c.bind(format!("unsqueeze({x}, 2)"))
    } else {
        x
    };
    let y = c.bind_named(
        "conv",
        format!(
            "conv2d({input}, {m}, kernel = {}, stride = {}, padding = {}, dilation = {}, groups = {group}, bias = {bias})",
            fmt_dims(&kernel),
            fmt_dims(&stride),
            fmt_dims(&padding),
            fmt_dims(&dilation)
        ),
    );
    Ok(vec![if one_d {
        format!("squeeze({y}, axes = 2)")
    } else {
        y
    }])
}

fn conv_transpose(c: &mut Ctx<'_>) -> R<Vec<String>> {
    let x = c.float_data(0)?;
    let xs = c.shape(0)?;
    let ws = c.shape(1)?;
    if xs.len() < 3 || ws.len() != xs.len() {
        return Err(format!(
            "input {xs:?} and weight {ws:?} must be [N, C, ...] and [C, M/group, ...]"
        ));
    }
    let spatial = xs.get(2..).unwrap_or(&[]).to_vec();
    let k = spatial.len();
    if k > 3 {
        return Err(format!(
            "{k}-d transposed convolution is not supported (1-d to 3-d are)"
        ));
    }
    let group = c.int("group", 1)?.max(1) as usize;
    let wk = ws.get(2..).unwrap_or(&[]).to_vec();
    let kernel: Vec<usize> = match c.ints("kernel_shape")? {
        Some(ks) => {
            let ks: Vec<usize> = ks.iter().map(|&v| v.max(0) as usize).collect();
            if ks != wk {
                return Err(format!("kernel_shape {ks:?} differs from W's {wk:?}"));
            }
            ks
        }
        None => wk,
    };
    let strides = positive_list(c.ints("strides")?, k, "strides")?;
    let dilations = positive_list(c.ints("dilations")?, k, "dilations")?;
    let output_padding: Vec<usize> = match c.ints("output_padding")? {
        None => vec![0; k],
        Some(v) if v.len() == k && v.iter().all(|&p| p >= 0) => {
            v.iter().map(|&p| p as usize).collect()
        }
        Some(v) => {
            return Err(format!(
                "output_padding {v:?} must be {k} non-negative integers"
            ))
        }
    };
    let auto_pad = c.string("auto_pad", "NOTSET")?;
    let pads_attr = c.ints("pads")?;
    let output_shape = c.ints("output_shape")?;
    // the full output before padding is removed
    let full: Vec<usize> = (0..k)
        .map(|i| {
            dim(&strides, i) * (dim(&spatial, i).saturating_sub(1))
                + dim(&output_padding, i)
                + (dim(&kernel, i) - 1) * dim(&dilations, i)
                + 1
        })
        .collect();
    let target: Option<Vec<usize>> = match (&output_shape, auto_pad.as_str()) {
        (Some(os), _) => {
            let os: Vec<usize> = os
                .iter()
                .rev()
                .take(k)
                .rev()
                .map(|&v| v.max(0) as usize)
                .collect();
            Some(os)
        }
        (None, "SAME_UPPER" | "SAME_LOWER") => Some(
            (0..k)
                .map(|i| dim(&spatial, i) * dim(&strides, i))
                .collect(),
        ),
        _ => None,
    };
    let mut output_padding = output_padding;
    let pads: Vec<(usize, usize)> = match target {
        Some(t) => {
            let mut pads = Vec::new();
            for i in 0..k {
                let total = dim(&full, i) as i64 - dim(&t, i) as i64;
                let small = total.div_euclid(2);
                // SAME_UPPER puts the extra at the end, anything else at the beginning
                let (b, e) = if auto_pad == "SAME_UPPER" {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
                // a negative end pad lengthens the output: more output padding
                if b < 0 {
                    return Err(format!(
                        "output_shape {t:?} needs negative padding at the start"
                    ));
                }
                if e < 0 {
                    if let Some(p) = output_padding.get_mut(i) {
                        *p += (-e) as usize;
                    }
                }
                pads.push((b as usize, e.max(0) as usize));
            }
            pads
        }
        None => match (auto_pad.as_str(), pads_attr) {
            ("NOTSET", None) | ("VALID", _) => vec![(0, 0); k],
            ("NOTSET", Some(p)) if p.len() == 2 * k && p.iter().all(|&v| v >= 0) => (0..k)
                .map(|i| {
                    (
                        p.get(i).copied().unwrap_or(0) as usize,
                        p.get(i + k).copied().unwrap_or(0) as usize,
                    )
                })
                .collect(),
            ("NOTSET", Some(p)) => {
                return Err(format!(
                    "pads {p:?} must be {} non-negative integers",
                    2 * k
                ))
            }
            (other, _) => return Err(format!("auto_pad=\"{other}\" is not supported")),
        },
    };
    // the full output before padding is removed, with the final output padding
    let full: Vec<usize> = (0..k)
        .map(|i| {
            dim(&strides, i) * (dim(&spatial, i).saturating_sub(1))
                + dim(&output_padding, i)
                + (dim(&kernel, i) - 1) * dim(&dilations, i)
                + 1
        })
        .collect();
    let m = dim(&ws, 1) * group;
    if k == 3 {
        return conv_transpose3d(
            c,
            &x,
            &xs,
            m,
            group,
            &kernel,
            &strides,
            &dilations,
            &pads,
            &output_padding,
            &full,
        );
    }
    c.param(1, "deconv.weight")?;
    let bias = c.has_input(2);
    if bias {
        c.param(2, "deconv.bias")?;
    }
    let one_d = k == 1;
    let lift = |v: &[usize], fill: usize| {
        if one_d {
            vec![fill, dim(v, 0)]
        } else {
            v.to_vec()
        }
    };
    let input = if one_d {
        c.bind(format!("unsqueeze({x}, 2)"))
    } else {
        x
    };
    let plane = |c: &mut Ctx<'_>,
                 input: &str,
                 out_channels: usize,
                 bias: bool,
                 first_axis: usize|
     -> String {
        // the DSL pads symmetrically: pad by the smaller side, slice the rest off
        let hw = if one_d { 0 } else { k - 2 };
        let sym: Vec<usize> = pads.iter().skip(hw).map(|&(b, e)| b.min(e)).collect();
        let pick = |v: &[usize]| v.get(hw..).unwrap_or(&[]).to_vec();
        let mut y = c.bind_named(
            "deconv",
            format!(
                "conv_transpose2d({input}, {out_channels}, kernel = {}, stride = {}, padding = {}, output_padding = {}, dilation = {}, groups = {group}, bias = {bias})",
                fmt_dims(&lift(&pick(&kernel), 1)),
                fmt_dims(&lift(&pick(&strides), 1)),
                fmt_dims(&lift(&sym, 0)),
                fmt_dims(&lift(&pick(&output_padding), 0)),
                fmt_dims(&lift(&pick(&dilations), 1))
            ),
        );
        for (i, (&(b, e), &p)) in pads.iter().skip(hw).zip(&sym).enumerate() {
            if b != e {
                let axis = if one_d { 3 } else { first_axis + i };
                let len = dim(&full, hw + i) - b - e;
                let start = b - p;
                y = c.bind(format!("slice({y}, {axis}, {start}, {})", start + len));
            }
        }
        y
    };
    let y = plane(c, &input, m, bias, 2);
    Ok(vec![if one_d {
        format!("squeeze({y}, axes = 2)")
    } else {
        y
    }])
}

/// 3-d ConvTranspose from the 2-d one: the depth taps of W become output channels
/// (W `[C, M/g, KD, KH, KW]` read as `[C, M/g * KD, KH, KW]`, the same memory), each
/// depth slice of the input is a batch item, and the depth tap `kd` of input slice `id`
/// lands at output depth `id * stride + kd * dilation`: zeros interleaved for the
/// stride, a shift by `kd * dilation`, a sum over `kd`, the depth padding cropped.
#[allow(clippy::too_many_arguments)]
fn conv_transpose3d(
    c: &mut Ctx<'_>,
    x: &str,
    xs: &[usize],
    m: usize,
    group: usize,
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
    pads: &[(usize, usize)],
    output_padding: &[usize],
    full: &[usize],
) -> R<Vec<String>> {
    let (n, ch, d) = (dim(xs, 0), dim(xs, 1), dim(xs, 2));
    let (kd, sd, dd) = (dim(kernel, 0), dim(strides, 0), dim(dilations, 0));
    let fd = dim(full, 0);
    let (bd, ed) = pads.first().copied().unwrap_or((0, 0));
    c.param(1, "deconv.weight")?;
    let slices = c.bind(format!(
        "reshape(permute({x}, [0, 2, 1, 3, 4]), [{}, {ch}, {}, {}])",
        n * d,
        dim(xs, 3),
        dim(xs, 4)
    ));
    let sym: Vec<usize> = pads.iter().skip(1).map(|&(b, e)| b.min(e)).collect();
    let mut y = c.bind_named(
        "deconv",
        format!(
            "conv_transpose2d({slices}, {}, kernel = {}, stride = {}, padding = {}, output_padding = {}, dilation = {}, groups = {group}, bias = false)",
            m * kd,
            fmt_dims(kernel.get(1..).unwrap_or(&[])),
            fmt_dims(strides.get(1..).unwrap_or(&[])),
            fmt_dims(&sym),
            fmt_dims(output_padding.get(1..).unwrap_or(&[])),
            fmt_dims(dilations.get(1..).unwrap_or(&[]))
        ),
    );
    let mut hw = Vec::new();
    for (i, (&(b, e), &p)) in pads.iter().skip(1).zip(&sym).enumerate() {
        let len = dim(full, 1 + i) - b - e;
        if b != e {
            let start = b - p;
            y = c.bind(format!("slice({y}, {}, {start}, {})", 2 + i, start + len));
        }
        hw.push(len);
    }
    let (oh, ow) = (dim(&hw, 0), dim(&hw, 1));
    let taps = c.bind(format!("reshape({y}, [{n}, {d}, {m}, {kd}, {oh}, {ow}])"));
    let mut terms = Vec::new();
    for t in 0..kd {
        let one = c.bind(format!("slice({taps}, 3, {t}, {})", t + 1));
        // [N, D, 1, M, OH, OW] -> zeros after each slice for the stride -> [N, D * sd, M, OH, OW]
        let spread = if sd > 1 {
            let moved = c.bind(format!("permute({one}, [0, 1, 3, 2, 4, 5])"));
            let padded = c.bind(format!("pad({moved}, [0, 0, 0, 0, 0, 0, 0, {}])", sd - 1));
            c.bind(format!(
                "reshape({padded}, [{n}, {}, {m}, {oh}, {ow}])",
                d * sd
            ))
        } else {
            c.bind(format!("reshape({one}, [{n}, {d}, {m}, {oh}, {ow}])"))
        };
        let shift = t * dd;
        let len = d * sd + shift;
        let placed = if len <= fd {
            c.bind(format!(
                "pad({spread}, [0, 0, 0, 0, 0, 0, {shift}, {}])",
                fd - len
            ))
        } else {
            // what lies past the full depth is the stride's zeros
            let shifted = c.bind(format!("pad({spread}, [0, 0, 0, 0, 0, 0, {shift}, 0])"));
            c.bind(format!("slice({shifted}, 1, 0, {fd})"))
        };
        terms.push(placed);
    }
    let sum = c.bind(terms.join(" + "));
    let cropped = if bd > 0 || ed > 0 {
        c.bind(format!("slice({sum}, 1, {bd}, {})", fd - ed))
    } else {
        sum
    };
    let mut out = c.bind(format!("permute({cropped}, [0, 2, 1, 3, 4])"));
    if c.has_input(2) {
        // the bias [M] broadcast over [N, M, D, H, W]
        let bias = if c.scope.is_some() {
            let bias = c.param_tensor(2, "bias")?;
            c.bind(format!("reshape({bias}, [{m}, 1, 1, 1])"))
        } else {
            c.param(2, "bias")?;
            c.bind_named("bias", format!("param([{m}, 1, 1, 1])"))
        };
        out = c.bind(format!("{out} + {bias}"));
    }
    Ok(vec![out])
}

fn pool(c: &mut Ctx<'_>, max: bool) -> R<Vec<String>> {
    let x = c.float_data(0)?;
    let xs = c.shape(0)?;
    if xs.len() < 3 {
        return Err(format!("input {xs:?} must be [N, C, ...]"));
    }
    let spatial = xs.get(2..).unwrap_or(&[]).to_vec();
    let k = spatial.len();
    if k > 3 {
        return Err(format!("{k}-d pooling is not supported (1-d to 3-d are)"));
    }
    let ceil = c.flag("ceil_mode", false)?;
    let count_include_pad = if max {
        false
    } else {
        c.flag("count_include_pad", false)?
    };
    if max {
        // storage_order only concerns the Indices output, refused below
        c.int("storage_order", 0)?;
        if c.wants_output(1) {
            return Err("the Indices output is not supported".to_string());
        }
    }
    let w = window(c, &spatial, None, true)?;
    let op = if max { "max_pool2d" } else { "avg_pool2d" };
    let call = |input: &str, axes: &[usize]| -> String {
        let pick = |v: &[usize], fill: usize| -> Vec<usize> {
            axes.iter()
                .map(|&a| if a == usize::MAX { fill } else { dim(v, a) })
                .collect()
        };
        let kernel = pick(&w.kernel, 1);
        let stride = pick(&w.strides, 1);
        let dilation = pick(&w.dilations, 1);
        let pb: Vec<usize> = axes
            .iter()
            .map(|&a| {
                if a == usize::MAX {
                    0
                } else {
                    w.pads.get(a).map_or(0, |p| p.0)
                }
            })
            .collect();
        let pe: Vec<usize> = axes
            .iter()
            .map(|&a| {
                if a == usize::MAX {
                    0
                } else {
                    w.pads.get(a).map_or(0, |p| p.1)
                }
            })
            .collect();
        let padding = [dim(&pb, 0), dim(&pb, 1), dim(&pe, 0), dim(&pe, 1)];
        let mut s = format!(
            "{op}({input}, kernel = {}, stride = {}, padding = {}, dilation = {}, ceil_mode = {ceil}",
            fmt_dims(&kernel),
            fmt_dims(&stride),
            fmt_dims(&padding),
            fmt_dims(&dilation)
        );
        if !max {
            let _ = write!(s, ", count_include_pad = {count_include_pad}");
        }
        s.push(')');
        s
    };
    let (n, ch) = (dim(&xs, 0), dim(&xs, 1));
    match k {
        1 => {
            let lifted = c.bind(format!("unsqueeze({x}, 2)"));
            let y = c.bind(call(&lifted, &[usize::MAX, 0]));
            Ok(vec![format!("squeeze({y}, axes = 2)")])
        }
        2 => Ok(vec![call(&x, &[0, 1])]),
        _ => {
            // 3-d pooling is separable: pool (h, w) on [N, C*D, H, W], then d on
            // [N, C, D, OH*OW]. Max of maxes is the max; for the average, the divisor of
            // a box (real or padded-range taps) is the product of its per-axis counts.
            let out = match c.known_out_shape(0) {
                Some(out) => out,
                None => {
                    let mut out = vec![n, ch];
                    for a in 0..k {
                        out.push(pool_out_len(
                            dim(&spatial, a),
                            w.pads.get(a).copied().unwrap_or((0, 0)),
                            dim(&w.kernel, a),
                            dim(&w.dilations, a),
                            dim(&w.strides, a),
                            ceil,
                        )?);
                    }
                    out
                }
            };
            let (d, h, wd) = (dim(&spatial, 0), dim(&spatial, 1), dim(&spatial, 2));
            let (od, oh, ow) = (dim(&out, 2), dim(&out, 3), dim(&out, 4));
            let planes = c.bind(format!("reshape({x}, [{n}, {}, {h}, {wd}])", ch * d));
            let hw = c.bind(call(&planes, &[1, 2]));
            let depth = c.bind(format!("reshape({hw}, [{n}, {ch}, {d}, {}])", oh * ow));
            let y = c.bind(call(&depth, &[0, usize::MAX]));
            Ok(vec![format!("reshape({y}, [{n}, {ch}, {od}, {oh}, {ow}])")])
        }
    }
}

/// Output length of a pooling sweep: the compiler's one shape inference
/// (`ops::pool::pool_out`, PyTorch's rule: with ceil rounding, a last window that would start
/// inside the end padding is dropped).
fn pool_out_len(
    size: usize,
    (pad_begin, pad_end): (usize, usize),
    kernel: usize,
    dilation: usize,
    stride: usize,
    ceil: bool,
) -> R<usize> {
    dnnfusion_compiler::ops::pool::pool_out(
        "pooling", "an axis", size, pad_begin, pad_end, kernel, stride, dilation, ceil,
    )
    .map_err(|e| e.message)
}

fn global_pool(c: &mut Ctx<'_>, dsl: &str) -> R<Vec<String>> {
    let x = c.float_data(0)?;
    Ok(vec![format!("{dsl}({x})")])
}

fn gemm(c: &mut Ctx<'_>) -> R<Vec<String>> {
    let alpha = c.float("alpha", 1.0)?;
    let beta = c.float("beta", 1.0)?;
    let trans_a = c.flag("transA", false)?;
    let trans_b = c.flag("transB", false)?;
    if c.opset() < 7 {
        c.int("broadcast", 0)?;
    }
    let a = c.float_data(0)?;
    // inside a graph, PyTorch's `nn.Linear` export (B [N, K] transposed, C [N]) is the
    // DSL's `linear`, whose weight the compiler lays out for its kernel at load time
    let (bs, cs) = (
        c.shape(1)?,
        if c.has_input(2) {
            Some(c.shape(2)?)
        } else {
            None
        },
    );
    let plain = !trans_a && trans_b && alpha == 1.0 && beta == 1.0;
    if c.scope.is_some()
        && plain
        && bs.len() == 2
        && cs.as_ref().is_none_or(|s| *s == [dim(&bs, 0)])
    {
        c.param(1, "fc.weight")?;
        if cs.is_some() {
            c.param(2, "fc.bias")?;
        }
        let n = dim(&bs, 0);
        return Ok(vec![c.bind_named(
            "fc",
            format!("linear({a}, {n}, bias = {})", cs.is_some()),
        )]);
    }
    let b = c.param_tensor(1, "b")?;
    let a = if trans_a {
        c.bind(format!("transpose({a}, 0, 1)"))
    } else {
        a
    };
    let b = if trans_b {
        c.bind(format!("transpose({b}, 0, 1)"))
    } else {
        b
    };
    let mut y = c.bind(format!("matmul({a}, {b})"));
    if alpha != 1.0 {
        y = c.bind(format!("{y} * {}", flt(alpha)));
    }
    if c.has_input(2) {
        let cname = c.param_tensor(2, "c")?;
        let term = if beta == 1.0 {
            cname
        } else {
            format!("{cname} * {}", flt(beta))
        };
        y = c.bind(format!("{y} + {term}"));
    }
    Ok(vec![y])
}

fn matmul(c: &mut Ctx<'_>) -> R<Vec<String>> {
    let a = c.float_data(0)?;
    let b = c.float_data(1)?;
    let (sa, sb) = (c.shape(0)?, c.shape(1)?);
    let a2 = if sa.len() == 1 {
        c.bind(format!("unsqueeze({a}, 0)"))
    } else {
        a
    };
    let b2 = if sb.len() == 1 {
        c.bind(format!("unsqueeze({b}, 1)"))
    } else {
        b
    };
    let y = c.bind(format!("matmul({a2}, {b2})"));
    if sa.len() == 1 || sb.len() == 1 {
        // numpy drops the axes it added to 1-d operands
        Ok(vec![format!(
            "reshape({y}, {})",
            fmt_dims(&matmul_shape(&sa, &sb)?)
        )])
    } else {
        Ok(vec![y])
    }
}

/// numpy's `matmul` result shape: 1-d operands promoted to matrices, the compiler's
/// shape rule ([`dnnfusion_compiler::ops::product::matmul_shape`]), then the promoted axes dropped.
fn matmul_shape(sa: &[usize], sb: &[usize]) -> R<Vec<usize>> {
    let a = if sa.len() == 1 {
        [&[1], sa].concat()
    } else {
        sa.to_vec()
    };
    let b = if sb.len() == 1 {
        [sb, &[1]].concat()
    } else {
        sb.to_vec()
    };
    // [batch.., m, n]
    let mut out = dnnfusion_compiler::ops::product::matmul_shape(&a, &b).map_err(|e| e.message)?;
    let n = out.pop();
    if sa.len() == 1 {
        out.pop();
    }
    if sb.len() != 1 {
        out.extend(n);
    }
    Ok(out)
}

/// `keepdims` and the reduced axes of a reduce op (an input from opset 13 for ReduceSum
/// and 18 for the others, an attribute before).
fn reduce(c: &mut Ctx<'_>, dsl: &str, axes_input_from: i64) -> R<Vec<String>> {
    let keepdims = c.flag("keepdims", true)?;
    let x = c.float_data(0)?;
    let xs = c.shape(0)?;
    let (axes, noop) = if c.opset() >= axes_input_from {
        let noop = c.flag("noop_with_empty_axes", false)?;
        (c.const_ints(1)?, noop)
    } else {
        (c.ints("axes")?, false)
    };
    let axes = axes.unwrap_or_default();
    if axes.is_empty() && noop {
        return Ok(vec![format!("reshape({x}, {})", fmt_dims(&xs))]);
    }
    let mut args = format!("{dsl}({x}");
    if !axes.is_empty() {
        let norm: Vec<i64> = axes
            .iter()
            .map(|&a| norm_axis(a, xs.len()).map(|a| a as i64))
            .collect::<R<_>>()?;
        let _ = write!(args, ", axes = {}", fmt_ints(&norm));
    }
    let _ = write!(args, ", keepdims = {keepdims})");
    Ok(vec![args])
}

fn concat(c: &mut Ctx<'_>) -> R<Vec<String>> {
    let axis = c.int("axis", 0)?;
    let mut xs = Vec::new();
    for slot in 0..c.node.inputs.len() {
        xs.push(c.float_data(slot)?);
    }
    let rank = c.shape(0)?.len();
    let axis = norm_axis(axis, rank)?;
    Ok(vec![format!("concat([{}], axis = {axis})", xs.join(", "))])
}

fn slice(c: &mut Ctx<'_>) -> R<Vec<String>> {
    let x = c.float_data(0)?;
    let xs = c.shape(0)?;
    let (starts, ends, axes, steps) = if c.opset() >= 10 {
        (
            c.const_ints(1)?,
            c.const_ints(2)?,
            c.const_ints(3)?,
            c.const_ints(4)?,
        )
    } else {
        (c.ints("starts")?, c.ints("ends")?, c.ints("axes")?, None)
    };
    let (Some(starts), Some(ends)) = (starts, ends) else {
        return Err("starts and ends are required".to_string());
    };
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err("starts, ends, axes and steps must have the same length".to_string());
    }
    let mut y = x;
    for (((&s, &e), &a), &st) in starts.iter().zip(&ends).zip(&axes).zip(&steps) {
        let axis = norm_axis(a, xs.len())?;
        let len = dim(&xs, axis) as i64;
        if st == 0 {
            return Err("a step of 0 is not supported".to_string());
        }
        let resolve = |v: i64| if v < 0 { v.saturating_add(len) } else { v };
        let (s, e) = (resolve(s), resolve(e));
        if st > 0 {
            let (s, e) = (s.clamp(0, len), e.clamp(0, len));
            if s == 0 && e == len && st == 1 {
                continue;
            }
            y = c.bind(format!(
                "slice({y}, {axis}, {s}, {}, step = {st})",
                e.max(s)
            ));
        } else {
            // clamped as ONNX does for negative steps; `end = -1` is "through index 0"
            let (s, e) = (s.clamp(0, len - 1), e.clamp(-1, len - 1));
            let end = if e < 0 {
                String::new()
            } else {
                format!(", end = {e}")
            };
            y = c.bind(format!("slice({y}, {axis}, {s}{end}, step = {st})"));
        }
    }
    Ok(vec![if c.fresh == 0 {
        format!("reshape({y}, {})", fmt_dims(&xs))
    } else {
        y
    }])
}

fn split(c: &mut Ctx<'_>) -> R<Vec<String>> {
    let axis = c.int("axis", 0)?;
    let x = c.float_data(0)?;
    let xs = c.shape(0)?;
    let axis = norm_axis(axis, xs.len())?;
    let len = dim(&xs, axis);
    let n_out = c.node.outputs.len();
    let given = if c.opset() >= 13 {
        c.const_ints(1)?
    } else {
        c.ints("split")?
    };
    let num_outputs = if c.opset() >= 18 {
        c.attr("num_outputs")?
            .and_then(|a| if let Attr::Int(v) = a { Some(v) } else { None })
    } else {
        None
    };
    let sizes: Vec<usize> = match (given, num_outputs) {
        (Some(s), None) => s.iter().map(|&v| v.max(0) as usize).collect(),
        (None, Some(n)) => {
            let n = n.max(1) as usize;
            let chunk = len.div_ceil(n);
            if chunk * (n - 1) > len {
                return Err(format!("num_outputs={n} leaves an empty chunk of {len}"));
            }
            let mut v = vec![chunk; n - 1];
            v.push(len - chunk * (n - 1));
            v
        }
        (None, None) => {
            if n_out == 0 || !len.is_multiple_of(n_out) {
                return Err(format!("{len} does not split into {n_out} equal parts"));
            }
            vec![len / n_out; n_out]
        }
        (Some(_), Some(_)) => return Err("both split and num_outputs are given".to_string()),
    };
    if sizes.len() != n_out || sizes.iter().sum::<usize>() != len {
        return Err(format!(
            "split sizes {sizes:?} do not cover axis {axis} ({len}) with {n_out} outputs"
        ));
    }
    if n_out == 1 {
        return Ok(vec![format!("reshape({x}, {})", fmt_dims(&xs))]);
    }
    let names = c.tuple_names(n_out);
    let list: Vec<String> = sizes.iter().map(|s| s.to_string()).collect();
    c.stmts.push(format!(
        "let ({}) = split({x}, [{}], axis = {axis});",
        names.join(", "),
        list.join(", ")
    ));
    Ok(names)
}

fn expand(c: &mut Ctx<'_>) -> R<Vec<String>> {
    let x = c.float_data(0)?;
    let xs = c.shape(0)?;
    let Some(shape) = c.const_ints(1)? else {
        return Err("shape is required".to_string());
    };
    // bidirectional: the result is broadcast(input, shape)
    let rank = xs.len().max(shape.len());
    let mut out = Vec::new();
    for i in 0..rank {
        let a = if i + xs.len() >= rank {
            dim(&xs, i + xs.len() - rank)
        } else {
            1
        };
        let b = if i + shape.len() >= rank {
            shape.get(i + shape.len() - rank).copied().unwrap_or(1)
        } else {
            1
        };
        let b =
            usize::try_from(b).map_err(|_| format!("shape {shape:?} has a negative dimension"))?;
        out.push(match (a, b) {
            (a, b) if a == b => a,
            (1, b) => b,
            (a, 1) => a,
            _ => return Err(format!("{xs:?} does not broadcast with {shape:?}")),
        });
    }
    Ok(vec![format!("expand({x}, {})", fmt_dims(&out))])
}

fn gather(c: &mut Ctx<'_>) -> R<Vec<String>> {
    let axis = c.int("axis", 0)?;
    let x = c.float_data(0)?;
    let rank = c.shape(0)?.len();
    let axis = norm_axis(axis, rank)?;
    // inside a graph, constant indices (positions from a Range, say) have no tensor to
    // name: an evenly spaced run of them is a slice, reshaped to the indices' shape
    if c.constant_without_tensor(1) {
        let xs = c.shape(0)?;
        let len = dim(&xs, axis) as i64;
        let Some(idx) = c.const_ints(1)? else {
            return Err("indices are missing".to_string());
        };
        let idx_shape = c.shape(1)?;
        let norm: Vec<i64> = idx
            .iter()
            .map(|&i| if i < 0 { i + len } else { i })
            .collect();
        if norm.iter().any(|&i| i < 0 || i >= len) {
            return Err(format!("indices {idx:?} are out of range for length {len}"));
        }
        let step = match norm.as_slice() {
            [a, b, ..] => b - a,
            _ => 1,
        };
        if step < 1
            || norm
                .windows(2)
                .any(|w| w.get(1).zip(w.first()).is_none_or(|(b, a)| b - a != step))
        {
            return Err(format!(
                "constant indices {idx:?} are not evenly increasing; only such runs are supported (as a slice)"
            ));
        }
        let start = norm.first().copied().unwrap_or(0);
        let end = start + step * norm.len() as i64;
        let sliced = c.bind(format!("slice({x}, {axis}, {start}, {end}, {step})"));
        let mut out: Vec<usize> = xs.get(..axis).unwrap_or(&[]).to_vec();
        out.extend(&idx_shape);
        out.extend(xs.get(axis + 1..).unwrap_or(&[]));
        return Ok(vec![format!("reshape({sliced}, {})", fmt_dims(&out))]);
    }
    // indices travel as f32: exact for magnitudes below 2^24
    let idx = c.data(1)?;
    Ok(vec![format!("gather({x}, {idx}, axis = {axis})")])
}

fn pad(c: &mut Ctx<'_>) -> R<Vec<String>> {
    let mode = c.string("mode", "constant")?;
    let x = c.float_data(0)?;
    let xs = c.shape(0)?;
    let rank = xs.len();
    let (pads, value, axes) = if c.opset() >= 11 {
        let pads = c.const_ints(1)?;
        let value = c.const_scalar(2)?;
        let axes = c.const_ints(3)?;
        (pads, value.unwrap_or(0.0), axes)
    } else {
        (c.ints("pads")?, c.float("value", 0.0)?, None)
    };
    let Some(pads) = pads else {
        return Err("pads is required".to_string());
    };
    let axes: Vec<usize> = match axes {
        None => (0..rank).collect(),
        Some(a) => a.iter().map(|&v| norm_axis(v, rank)).collect::<R<_>>()?,
    };
    if pads.len() != 2 * axes.len() {
        return Err(format!("pads {pads:?} must hold {} values", 2 * axes.len()));
    }
    let mut per_axis = vec![(0i64, 0i64); rank];
    for (i, &a) in axes.iter().enumerate() {
        if let Some(slot) = per_axis.get_mut(a) {
            *slot = (
                pads.get(i).copied().unwrap_or(0),
                pads.get(i + axes.len()).copied().unwrap_or(0),
            );
        }
    }
    let mode_arg = match mode.as_str() {
        "constant" => format!("value = {}", flt(value)),
        "reflect" => "mode = \"reflect\"".to_string(),
        "edge" => "mode = \"replicate\"".to_string(),
        other => return Err(format!("mode=\"{other}\" is not supported")),
    };
    // positive pads pad; negative pads crop, after
    let first = per_axis.iter().position(|&(b, e)| b > 0 || e > 0);
    let mut y = x;
    if let Some(first) = first {
        let mut list = Vec::new();
        for a in (first..rank).rev() {
            let (b, e) = per_axis.get(a).copied().unwrap_or((0, 0));
            list.push(b.max(0));
            list.push(e.max(0));
        }
        y = c.bind(format!("pad({y}, {}, {mode_arg})", fmt_ints(&list)));
    }
    for (a, &(b, e)) in per_axis.iter().enumerate() {
        if b < 0 || e < 0 {
            let padded = dim(&xs, a) as i64 + b.max(0) + e.max(0);
            let (start, end) = (-b.min(0), padded + e.min(0));
            y = c.bind(format!("slice({y}, {a}, {start}, {end})"));
        }
    }
    Ok(vec![if c.fresh == 0 {
        format!("reshape({y}, {})", fmt_dims(&xs))
    } else {
        y
    }])
}

fn reshape(c: &mut Ctx<'_>) -> R<Vec<String>> {
    let allowzero = if c.opset() >= 14 {
        c.flag("allowzero", false)?
    } else {
        false
    };
    let x = c.float_data(0)?;
    let xs = c.shape(0)?;
    let Some(target) = c.const_ints(1)? else {
        return Err("shape is required".to_string());
    };
    let total: usize = xs.iter().product();
    let mut out: Vec<Option<usize>> = Vec::new();
    for (i, &d) in target.iter().enumerate() {
        out.push(match d {
            0 if !allowzero => Some(dim(&xs, i)),
            -1 => None,
            d if d >= 0 => Some(d as usize),
            d => return Err(format!("shape {target:?} has dimension {d}")),
        });
    }
    let known: usize = out.iter().flatten().product();
    let dims: Vec<usize> = match out.iter().filter(|d| d.is_none()).count() {
        0 => out.iter().flatten().copied().collect(),
        1 if known > 0 && total.is_multiple_of(known) => {
            out.iter().map(|d| d.unwrap_or(total / known)).collect()
        }
        _ => return Err(format!("cannot reshape {xs:?} to {target:?}")),
    };
    Ok(vec![format!("reshape({x}, {})", fmt_dims(&dims))])
}

fn flatten(c: &mut Ctx<'_>) -> R<Vec<String>> {
    let axis = c.int("axis", 1)?;
    let x = c.float_data(0)?;
    let xs = c.shape(0)?;
    let r = xs.len() as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if !(0..=r).contains(&a) {
        return Err(format!("axis {axis} is out of range for rank {r}"));
    }
    let outer: usize = xs.get(..a as usize).unwrap_or(&[]).iter().product();
    let inner: usize = xs.get(a as usize..).unwrap_or(&[]).iter().product();
    Ok(vec![format!("reshape({x}, [{outer}, {inner}])")])
}

fn squeeze(c: &mut Ctx<'_>) -> R<Vec<String>> {
    let x = c.float_data(0)?;
    let xs = c.shape(0)?;
    let axes = if c.opset() >= 13 {
        c.const_ints(1)?
    } else {
        c.ints("axes")?
    };
    match axes {
        None => Ok(vec![format!("squeeze({x})")]),
        Some(a) => {
            let norm: Vec<i64> = a
                .iter()
                .map(|&v| norm_axis(v, xs.len()).map(|v| v as i64))
                .collect::<R<_>>()?;
            Ok(vec![format!("squeeze({x}, axes = {})", fmt_ints(&norm))])
        }
    }
}

fn unsqueeze(c: &mut Ctx<'_>) -> R<Vec<String>> {
    let x = c.float_data(0)?;
    let xs = c.shape(0)?;
    let axes = if c.opset() >= 13 {
        c.const_ints(1)?
    } else {
        c.ints("axes")?
    };
    let Some(axes) = axes else {
        return Err("axes is required".to_string());
    };
    let out_rank = xs.len() + axes.len();
    let mut norm: Vec<usize> = axes
        .iter()
        .map(|&a| norm_axis(a, out_rank))
        .collect::<R<_>>()?;
    norm.sort_unstable();
    norm.dedup();
    if norm.len() != axes.len() {
        return Err(format!("axes {axes:?} repeat an axis"));
    }
    // inserting in increasing order puts each axis where the output wants it
    let mut y = x;
    for a in norm {
        y = c.bind(format!("unsqueeze({y}, {a})"));
    }
    Ok(vec![y])
}

fn transpose(c: &mut Ctx<'_>) -> R<Vec<String>> {
    let perm = c.ints("perm")?;
    let x = c.float_data(0)?;
    let rank = c.shape(0)?.len();
    let perm = perm.unwrap_or_else(|| (0..rank as i64).rev().collect());
    Ok(vec![format!("permute({x}, {})", fmt_ints(&perm))])
}

fn depth_space(c: &mut Ctx<'_>, dsl: &str) -> R<Vec<String>> {
    let blocksize = c.int("blocksize", 0)?;
    // SpaceToDepth has `mode` from opset 28 only
    let mode = if dsl == "depth_to_space" || c.opset() >= 28 {
        c.string("mode", "DCR")?
    } else {
        "DCR".to_string()
    };
    if mode != "DCR" && mode != "CRD" {
        return Err(format!("mode=\"{mode}\" is not supported"));
    }
    let x = c.float_data(0)?;
    Ok(vec![format!("{dsl}({x}, {blocksize}, mode = \"{mode}\")")])
}

fn identity(c: &mut Ctx<'_>) -> R<Vec<String>> {
    let x = c.float_data(0)?;
    let xs = c.shape(0)?;
    Ok(vec![format!("reshape({x}, {})", fmt_dims(&xs))])
}

fn tile(c: &mut Ctx<'_>) -> R<Vec<String>> {
    let x = c.float_data(0)?;
    let Some(repeats) = c.const_ints(1)? else {
        return Err("repeats is required".to_string());
    };
    if repeats.iter().any(|&r| r < 0) {
        return Err(format!("repeats {repeats:?} must be non-negative"));
    }
    Ok(vec![format!("tile({x}, {})", fmt_ints(&repeats))])
}

fn cumsum(c: &mut Ctx<'_>) -> R<Vec<String>> {
    let exclusive = c.flag("exclusive", false)?;
    let reverse = c.flag("reverse", false)?;
    let x = c.float_data(0)?;
    let Some(axis) = c.const_ints(1)? else {
        return Err("axis is required".to_string());
    };
    let [axis] = axis.as_slice() else {
        return Err("axis must be a scalar".to_string());
    };
    Ok(vec![format!(
        "cumsum({x}, {axis}, exclusive = {exclusive}, reverse = {reverse})"
    )])
}

fn where_op(c: &mut Ctx<'_>) -> R<Vec<String>> {
    let cond = c.data(0)?;
    let a = c.float_data(1)?;
    let b = c.float_data(2)?;
    Ok(vec![format!("where({cond}, {a}, {b})")])
}

fn cast(c: &mut Ctx<'_>) -> R<Vec<String>> {
    let to = c.int("to", 0)?;
    if c.opset() >= 19 {
        c.int("saturate", 1)?;
    }
    if c.opset() >= 24 {
        c.int("round_mode", 0)?;
    }
    let x = c.float_data(0)?;
    if to != 1 {
        return Err(format!(
            "to={to} is not supported (only float32 -> float32)"
        ));
    }
    let xs = c.shape(0)?;
    Ok(vec![format!("reshape({x}, {})", fmt_dims(&xs))])
}

/// Resize (opset 11+) and Upsample: full-rank output sizes and scales, then the DSL's
/// N-d `resize`.
fn resize(c: &mut Ctx<'_>, upsample: bool) -> R<Vec<String>> {
    let x = c.float_data(0)?;
    let xs = c.shape(0)?;
    let rank = xs.len();
    let mode = c.string("mode", "nearest")?;
    let (
        coord,
        nearest_mode,
        cubic_a,
        exclude_outside,
        antialias,
        extrapolation,
        policy,
        axes,
        roi,
        scales,
        sizes,
    );
    if upsample {
        // the reference evaluates Upsample's nearest mode as floor(x / scale)
        coord = "asymmetric".to_string();
        nearest_mode = "floor".to_string();
        (cubic_a, exclude_outside, antialias, extrapolation) = (-0.75, false, false, 0.0);
        policy = "stretch".to_string();
        axes = None;
        roi = None;
        scales = if c.opset() >= 9 {
            c.const_floats(1)?
        } else {
            c.attr("scales")?.and_then(|a| {
                if let Attr::Floats(v) = a {
                    Some(v.iter().map(|&s| f64::from(s)).collect())
                } else {
                    None
                }
            })
        };
        sizes = None;
    } else {
        if c.opset() < 11 {
            return Err("opset < 11 is not supported".to_string());
        }
        coord = c.string("coordinate_transformation_mode", "half_pixel")?;
        nearest_mode = c.string("nearest_mode", "round_prefer_floor")?;
        cubic_a = c.float("cubic_coeff_a", -0.75)?;
        exclude_outside = c.flag("exclude_outside", false)?;
        extrapolation = c.float("extrapolation_value", 0.0)?;
        antialias = if c.opset() >= 18 {
            c.flag("antialias", false)?
        } else {
            false
        };
        policy = if c.opset() >= 18 {
            c.string("keep_aspect_ratio_policy", "stretch")?
        } else {
            "stretch".to_string()
        };
        axes = if c.opset() >= 18 {
            c.ints("axes")?
        } else {
            None
        };
        roi = c.const_floats(1)?.filter(|r| !r.is_empty());
        scales = c.const_floats(2)?.filter(|s| !s.is_empty());
        sizes = c.const_ints(3)?.filter(|s| !s.is_empty());
    }
    let axes: Vec<usize> = match axes {
        None => (0..rank).collect(),
        Some(a) => a.iter().map(|&v| norm_axis(v, rank)).collect::<R<_>>()?,
    };
    let mut full_scales: Vec<f64> = vec![1.0; rank];
    let mut full_sizes: Vec<usize> = xs.clone();
    let mut full_roi: Vec<f64> = [vec![0.0; rank], vec![1.0; rank]].concat();
    if let Some(r) = &roi {
        if r.len() != 2 * axes.len() {
            return Err(format!("roi {r:?} must hold {} values", 2 * axes.len()));
        }
        for (i, &a) in axes.iter().enumerate() {
            if let (Some(s), Some(e)) = (full_roi.get_mut(a), r.get(i)) {
                *s = *e;
            }
            if let (Some(s), Some(e)) = (full_roi.get_mut(a + rank), r.get(i + axes.len())) {
                *s = *e;
            }
        }
    }
    match (scales, sizes) {
        (Some(s), None) => {
            if s.len() != axes.len() {
                return Err(format!("scales {s:?} must hold {} values", axes.len()));
            }
            for (i, &a) in axes.iter().enumerate() {
                let scale = s.get(i).copied().unwrap_or(1.0);
                if scale <= 0.0 || !scale.is_finite() {
                    return Err(format!("scale {scale} is not positive"));
                }
                if let Some(slot) = full_scales.get_mut(a) {
                    *slot = scale;
                }
                if let Some(slot) = full_sizes.get_mut(a) {
                    // tf_crop_and_resize scales the roi's extent
                    let extent = if coord == "tf_crop_and_resize" {
                        full_roi.get(a + rank).copied().unwrap_or(1.0)
                            - full_roi.get(a).copied().unwrap_or(0.0)
                    } else {
                        1.0
                    };
                    *slot = (dim(&xs, a) as f64 * scale * extent).floor().max(0.0) as usize;
                }
            }
        }
        (None, Some(sz)) => {
            if sz.len() != axes.len() {
                return Err(format!("sizes {sz:?} must hold {} values", axes.len()));
            }
            let ratios: Vec<f64> = axes
                .iter()
                .zip(&sz)
                .map(|(&a, &s)| s as f64 / dim(&xs, a) as f64)
                .collect();
            let common = match policy.as_str() {
                "stretch" => None,
                "not_larger" => ratios.iter().copied().reduce(f64::min),
                "not_smaller" => ratios.iter().copied().reduce(f64::max),
                other => {
                    return Err(format!(
                        "keep_aspect_ratio_policy=\"{other}\" is not supported"
                    ))
                }
            };
            for (i, &a) in axes.iter().enumerate() {
                let (scale, size) = match common {
                    None => (
                        ratios.get(i).copied().unwrap_or(1.0),
                        sz.get(i).copied().unwrap_or(0).max(0) as usize,
                    ),
                    // round half up, as the reference does
                    Some(s) => (s, (s * dim(&xs, a) as f64 + 0.5).floor() as usize),
                };
                if let Some(slot) = full_scales.get_mut(a) {
                    *slot = scale;
                }
                if let Some(slot) = full_sizes.get_mut(a) {
                    *slot = size;
                }
            }
        }
        (Some(_), Some(_)) => return Err("both scales and sizes are given".to_string()),
        (None, None) => return Err("one of scales or sizes is required".to_string()),
    }
    // inside a graph the file may not say the output's shape: the one computed from
    // scales or sizes is then the shape
    if let Some(out) = c.known_out_shape(0) {
        if full_sizes != out {
            return Err(format!(
                "computed output {full_sizes:?} from the scales or sizes, the file declares {out:?}"
            ));
        }
    }
    let interp = match mode.as_str() {
        "nearest" => {
            if !["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
                .contains(&nearest_mode.as_str())
            {
                return Err(format!("nearest_mode=\"{nearest_mode}\" is not supported"));
            }
            if antialias {
                return Err("antialias=1 with mode=nearest is not supported".to_string());
            }
            format!("mode = \"nearest\", nearest_mode = \"{nearest_mode}\"")
        }
        "linear" => "mode = \"linear\"".to_string(),
        "cubic" => format!("mode = \"cubic\", cubic_coeff_a = {}", flt(cubic_a)),
        other => return Err(format!("mode=\"{other}\" is not supported")),
    };
    if dnnfusion_compiler::ir::CoordMode::named(&coord).is_none() {
        return Err(format!(
            "coordinate_transformation_mode=\"{coord}\" is not supported"
        ));
    }
    let scales_text: Vec<String> = full_scales.iter().map(|&s| flt64(s)).collect();
    let mut call = format!(
        "resize({x}, sizes = {}, scales = [{}], {interp}, coordinate_transformation_mode = \"{coord}\"",
        fmt_dims(&full_sizes),
        scales_text.join(", ")
    );
    if exclude_outside {
        call.push_str(", exclude_outside = true");
    }
    if antialias {
        call.push_str(", antialias = true");
    }
    if coord == "tf_crop_and_resize" {
        let roi_text: Vec<String> = full_roi.iter().map(|&v| flt64(v)).collect();
        let _ = write!(
            call,
            ", roi = [{}], extrapolation_value = {}",
            roi_text.join(", "),
            flt(extrapolation)
        );
    }
    call.push(')');
    Ok(vec![call])
}

macro_rules! onnx_ops {
    ($($op:literal => $dsl:literal, [$($attr:literal),*], $notes:literal, $map:expr;)*) => {
        /// Every ONNX op the mapping handles, with its DSL ops and attributes.
        pub const ONNX_OPS: &[OnnxOp] = &[$(OnnxOp { op_type: $op, dsl: $dsl, attributes: &[$($attr),*], notes: $notes, map: $map },)*];
    };
}

onnx_ops! {
    "Abs" => "abs", [], "", |c| unary(c, "abs");
    "Neg" => "neg", [], "", |c| unary(c, "neg");
    "Exp" => "exp", [], "", |c| unary(c, "exp");
    "Log" => "log", [], "", |c| unary(c, "log");
    "Sqrt" => "sqrt", [], "", |c| unary(c, "sqrt");
    "Reciprocal" => "reciprocal", [], "", |c| unary(c, "reciprocal");
    "Relu" => "relu", [], "", |c| unary(c, "relu");
    "Sigmoid" => "sigmoid", [], "", |c| unary(c, "sigmoid");
    "Tanh" => "tanh", [], "", |c| unary(c, "tanh");
    "Erf" => "erf", [], "", |c| unary(c, "erf");
    "Sin" => "sin", [], "", |c| unary(c, "sin");
    "Cos" => "cos", [], "", |c| unary(c, "cos");
    "Floor" => "floor", [], "", |c| unary(c, "floor");
    "Ceil" => "ceil", [], "", |c| unary(c, "ceil");
    "Round" => "round", [], "", |c| unary(c, "round");
    "HardSwish" => "hard_swish", [], "", |c| unary(c, "hard_swish");
    "Mish" => "mish", [], "", |c| unary(c, "mish");
    "Softplus" => "softplus", [], "", |c| unary(c, "softplus");
    "Softsign" => "softsign", [], "", |c| unary(c, "softsign");
    "LeakyRelu" => "leaky_relu", ["alpha"], "", |c| unary_alpha(c, "leaky_relu", "negative_slope", 0.01);
    "Elu" => "elu", ["alpha"], "", |c| unary_alpha(c, "elu", "alpha", 1.0);
    "Celu" => "celu", ["alpha"], "", |c| unary_alpha(c, "celu", "alpha", 1.0);
    "ThresholdedRelu" => "thresholded_relu", ["alpha"], "", |c| unary_alpha(c, "thresholded_relu", "alpha", 1.0);
    "Selu" => "selu, elu", ["alpha", "gamma"], "non-default constants: `elu(x, alpha) * gamma`", selu;
    "HardSigmoid" => "hard_sigmoid", ["alpha", "beta"], "", hard_sigmoid;
    "Gelu" => "gelu", ["approximate"], "", gelu;
    "Clip" => "clip", ["min", "max"], "`min`/`max` inputs must be constants", clip;
    "Add" => "add", [], "numpy broadcasting", |c| binary(c, "+");
    "Sub" => "sub", [], "numpy broadcasting", |c| binary(c, "-");
    "Mul" => "mul", [], "numpy broadcasting", |c| binary(c, "*");
    "Div" => "div", [], "numpy broadcasting", |c| binary(c, "/");
    "Pow" => "pow", [], "float exponents", pow;
    "PRelu" => "prelu, relu", [], "per-channel slope: `prelu`; any other broadcast: `relu(x) - slope * relu(-x)`", prelu;
    "Where" => "where", [], "the condition is passed as f32 (0 or 1)", where_op;
    "Cast" => "reshape", ["to", "saturate", "round_mode"], "float32 -> float32 only", cast;
    "BatchNormalization" => "batch_norm", ["epsilon", "momentum", "training_mode", "spatial"], "inference only (training_mode=0)", batch_norm;
    "InstanceNormalization" => "instance_norm", ["epsilon"], "", instance_norm;
    "GroupNormalization" => "group_norm", ["epsilon", "num_groups", "stash_type"], "opset 21 (per-channel scale); stash_type=1", group_norm;
    "LayerNormalization" => "layer_norm, reduce_mean, rsqrt", ["axis", "epsilon", "stash_type"], "Mean and InvStdDev outputs as reductions; stash_type=1", layer_norm;
    "Softmax" => "softmax", ["axis"], "opset < 13: flattened to 2-d as the spec says", |c| softmax(c, "softmax");
    "LogSoftmax" => "log_softmax", ["axis"], "opset < 13: flattened to 2-d as the spec says", |c| softmax(c, "log_softmax");
    "Conv" => "conv2d", ["auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"], "1-d and 2-d; 3-d refused", conv;
    "ConvTranspose" => "conv_transpose2d, slice", ["auto_pad", "dilations", "group", "kernel_shape", "output_padding", "output_shape", "pads", "strides"], "1-d to 3-d (3-d: W's depth taps as output channels of the 2-d op, shifted and summed along depth); asymmetric pads as a slice; `output_shape` past the full output as output padding", conv_transpose;
    "MaxPool" => "max_pool2d", ["auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "storage_order", "strides"], "1-d to 3-d (3-d as two separable 2-d pools); no Indices output", |c| pool(c, true);
    "AveragePool" => "avg_pool2d", ["auto_pad", "ceil_mode", "count_include_pad", "dilations", "kernel_shape", "pads", "strides"], "1-d to 3-d (3-d as two separable 2-d pools)", |c| pool(c, false);
    "GlobalAveragePool" => "global_avg_pool2d", [], "", |c| global_pool(c, "global_avg_pool2d");
    "GlobalMaxPool" => "global_max_pool2d", [], "", |c| global_pool(c, "global_max_pool2d");
    "Gemm" => "matmul, transpose", ["alpha", "beta", "transA", "transB", "broadcast"], "B and C are parameters", gemm;
    "MatMul" => "matmul", [], "1-d operands promoted as numpy does", matmul;
    "ReduceSum" => "reduce_sum", ["keepdims", "noop_with_empty_axes", "axes"], "`axes` input must be a constant", |c| reduce(c, "reduce_sum", 13);
    "ReduceMean" => "reduce_mean", ["keepdims", "noop_with_empty_axes", "axes"], "`axes` input must be a constant", |c| reduce(c, "reduce_mean", 18);
    "ReduceMax" => "reduce_max", ["keepdims", "noop_with_empty_axes", "axes"], "`axes` input must be a constant", |c| reduce(c, "reduce_max", 18);
    "ReduceMin" => "reduce_min", ["keepdims", "noop_with_empty_axes", "axes"], "`axes` input must be a constant", |c| reduce(c, "reduce_min", 18);
    "ReduceProd" => "reduce_prod", ["keepdims", "noop_with_empty_axes", "axes"], "`axes` input must be a constant", |c| reduce(c, "reduce_prod", 18);
    "ReduceL1" => "reduce_l1", ["keepdims", "noop_with_empty_axes", "axes"], "`axes` input must be a constant", |c| reduce(c, "reduce_l1", 18);
    "ReduceL2" => "reduce_l2", ["keepdims", "noop_with_empty_axes", "axes"], "`axes` input must be a constant", |c| reduce(c, "reduce_l2", 18);
    "ReduceSumSquare" => "reduce_sum_square", ["keepdims", "noop_with_empty_axes", "axes"], "`axes` input must be a constant", |c| reduce(c, "reduce_sum_square", 18);
    "ReduceLogSum" => "reduce_log_sum", ["keepdims", "noop_with_empty_axes", "axes"], "`axes` input must be a constant", |c| reduce(c, "reduce_log_sum", 18);
    "ReduceLogSumExp" => "reduce_log_sum_exp", ["keepdims", "noop_with_empty_axes", "axes"], "`axes` input must be a constant", |c| reduce(c, "reduce_log_sum_exp", 18);
    "CumSum" => "cumsum", ["exclusive", "reverse"], "`axis` input must be a constant", cumsum;
    "Concat" => "concat", ["axis"], "", concat;
    "Split" => "split", ["axis", "num_outputs", "split"], "`split` input must be a constant", split;
    "Slice" => "slice", ["starts", "ends", "axes"], "`starts`/`ends`/`axes`/`steps` inputs must be constants; negative steps", slice;
    "Pad" => "pad, slice", ["mode", "pads", "value"], "constant, reflect, edge (not wrap); negative pads crop; inputs must be constants", pad;
    "Expand" => "expand", [], "`shape` input must be a constant", expand;
    "Gather" => "gather", ["axis"], "indices passed as f32", gather;
    "Tile" => "tile", [], "`repeats` input must be a constant", tile;
    "Reshape" => "reshape", ["allowzero"], "`shape` input must be a constant", reshape;
    "Flatten" => "reshape", ["axis"], "", flatten;
    "Squeeze" => "squeeze", ["axes"], "`axes` input must be a constant", squeeze;
    "Unsqueeze" => "unsqueeze", ["axes"], "`axes` input must be a constant", unsqueeze;
    "Transpose" => "permute", ["perm"], "", transpose;
    "DepthToSpace" => "depth_to_space", ["blocksize", "mode"], "", |c| depth_space(c, "depth_to_space");
    "SpaceToDepth" => "space_to_depth", ["blocksize", "mode"], "", |c| depth_space(c, "space_to_depth");
    "Identity" => "reshape", [], "", identity;
    "Resize" => "resize", ["mode", "coordinate_transformation_mode", "nearest_mode", "cubic_coeff_a", "exclude_outside", "extrapolation_value", "antialias", "keep_aspect_ratio_policy", "axes"], "opset 11+; `roi`/`scales`/`sizes` inputs must be constants", |c| resize(c, false);
    "Upsample" => "resize", ["mode", "scales"], "nearest or linear, asymmetric coordinates", |c| resize(c, true);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(
        op: &str,
        attrs: Vec<(&str, Attr)>,
        inputs: Vec<(&str, Vec<usize>)>,
        out: Vec<usize>,
    ) -> Node {
        Node {
            op_type: op.to_string(),
            opset: 22,
            attributes: attrs.into_iter().map(|(n, a)| (n.to_string(), a)).collect(),
            defaults: Vec::new(),
            inputs: inputs
                .into_iter()
                .map(|(n, s)| {
                    Some(NodeInput {
                        name: n.to_string(),
                        dtype: "float32".to_string(),
                        shape: s,
                        value: None,
                    })
                })
                .collect(),
            outputs: vec![Some(out)],
        }
    }

    #[test]
    fn conv_maps_to_conv2d_with_its_weight_as_a_parameter() {
        let n = node(
            "Conv",
            vec![("pads", Attr::Ints(vec![1, 1, 1, 1]))],
            vec![("x", vec![1, 1, 5, 5]), ("W", vec![1, 1, 3, 3])],
            vec![1, 1, 5, 5],
        );
        let Mapping::Model(m) = map(&n) else {
            panic!("{:?}", map(&n))
        };
        assert!(m.dsl.contains("conv2d(x0, 1, kernel = [3, 3]"), "{}", m.dsl);
        assert_eq!(
            m.params,
            vec![ParamSource {
                key: "conv.weight".to_string(),
                input: 1
            }]
        );
        assert_eq!(m.inputs, vec![0]);
    }

    #[test]
    fn an_unknown_attribute_is_refused_by_name() {
        let n = node(
            "Relu",
            vec![("flavour", Attr::Int(1))],
            vec![("x", vec![3])],
            vec![3],
        );
        assert_eq!(
            map(&n),
            Mapping::Unsupported {
                reason: "Relu: attribute `flavour`=1 is not supported".to_string()
            }
        );
    }

    #[test]
    fn an_unsupported_value_is_refused_with_the_attribute() {
        let n = node(
            "Gelu",
            vec![("approximate", Attr::Str("fast".to_string()))],
            vec![("x", vec![3])],
            vec![3],
        );
        assert_eq!(
            map(&n),
            Mapping::Unsupported {
                reason: "Gelu: approximate=\"fast\" is not supported".to_string()
            }
        );
    }

    #[test]
    fn an_unknown_op_is_refused() {
        let n = node("Einsum", vec![], vec![("x", vec![3])], vec![3]);
        assert!(
            matches!(map(&n), Mapping::Unsupported { reason } if reason == "Einsum: the op is not supported")
        );
    }

    #[test]
    fn an_unread_default_is_refused_too() {
        let mut n = node("Relu", vec![], vec![("x", vec![3])], vec![3]);
        n.defaults
            .push(("flavour".to_string(), Attr::Str("plain".to_string())));
        assert_eq!(
            map(&n),
            Mapping::Unsupported {
                reason: "Relu: attribute `flavour`=\"plain\" is not supported".to_string()
            }
        );
    }

    #[test]
    fn a_constant_input_must_have_its_value() {
        let n = node(
            "Reshape",
            vec![],
            vec![("data", vec![2, 3]), ("shape", vec![1])],
            vec![6],
        );
        assert_eq!(map(&n), Mapping::Unsupported { reason: "Reshape: input `shape` must be a constant (its value known when the model is generated)".to_string() });
    }

    #[test]
    fn constant_inputs_become_compile_time_arguments() {
        let mut n = node(
            "Slice",
            vec![],
            vec![
                ("x", vec![20, 10]),
                ("starts", vec![1]),
                ("ends", vec![1]),
                ("axes", vec![1]),
                ("steps", vec![1]),
            ],
            vec![20, 4],
        );
        for (slot, v) in [(1, 8), (2, 0), (3, -1), (4, -2)] {
            if let Some(Some(i)) = n.inputs.get_mut(slot) {
                i.dtype = "int64".to_string();
                i.value = Some(Tensor {
                    shape: vec![1],
                    data: TensorData::I64(vec![v]),
                });
            }
        }
        let Mapping::Model(m) = map(&n) else {
            panic!("{:?}", map(&n))
        };
        assert!(
            m.dsl.contains("slice(x0, 1, 8, end = 0, step = -2)"),
            "{}",
            m.dsl
        );
        assert_eq!(m.inputs, vec![0]);
    }

    #[test]
    fn pad_wrap_is_refused_by_value() {
        let mut n = node(
            "Pad",
            vec![("mode", Attr::Str("wrap".to_string()))],
            vec![("x", vec![2]), ("pads", vec![2])],
            vec![4],
        );
        if let Some(Some(i)) = n.inputs.get_mut(1) {
            i.value = Some(Tensor {
                shape: vec![2],
                data: TensorData::I64(vec![1, 1]),
            });
        }
        assert_eq!(
            map(&n),
            Mapping::Unsupported {
                reason: "Pad: mode=\"wrap\" is not supported".to_string()
            }
        );
    }

    #[test]
    fn every_listed_op_appears_in_the_readme_table() {
        let table = readme_table();
        for op in ONNX_OPS {
            assert!(
                table.contains(&format!("| `{}` |", op.op_type)),
                "{}",
                op.op_type
            );
        }
    }

    #[test]
    fn floats_read_back_exactly() {
        for v in [0.1f32, 1.673_263_2, -0.75, 1e-7, 3.0] {
            let text = flt(v);
            assert_eq!(text.parse::<f64>().map(|p| p as f32), Ok(v), "{text}");
        }
    }
}
