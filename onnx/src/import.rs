//! A whole ONNX graph to one `dnn!` model declaration.
//!
//! Input: the bytes of a `.onnx` file and [`ImportOptions`] (the model's name, values for
//! the dynamic dimensions). Output: [`Imported`], the DSL text of
//! `model Name(input: [..]) -> [..] { ... }`, or an error naming the node (its name and
//! op type), the attribute or input, and the reason.
//!
//! ```text
//!   graph: input -> Conv(onnx::Conv_193, onnx::Conv_194) -> Relu -> ...
//!     ->  pub model ResNet18(input: [1, 3, 224, 224]) -> [1, 1000] {
//!             let conv1_conv = conv2d(input, 64, kernel = [7, 7], ..., keys = ["onnx::Conv_193", "onnx::Conv_194"]);
//!             let relu = relu(conv1_conv);
//!             ...
//!         }
//! ```
//!
//! Nodes are taken in the file's (topological) order:
//! - a node whose inputs are all known constants (shape arithmetic: `Shape`, `Gather`,
//!   `Concat`, `Constant`, ...) is evaluated here ([`crate::fold`]);
//! - any other node goes through the per-node mapping ([`crate::map::map_in_graph`]);
//!   its statements are lowered at once by a [`ShapeSession`], which gives the shapes of
//!   its outputs (the DSL's own shape rules, so import and compilation agree);
//! - initializers are parameters named by their initializer names: owned by the op
//!   (`conv2d(..., keys = ["w", "b"])`) or declared with `param([..], key = "w")` when
//!   used as a plain tensor;
//! - a float tensor of a `Constant` node (its `value` attribute) used as data is a
//!   parameter too, named after the node's output (`from_onnx` reads it from the node);
//!   a float scalar next to a tensor operand of `Add`/`Sub`/`Mul`/`Div`/`Pow` is a number
//!   in the text instead. Float tensors computed from constants at import are refused
//!   when used as data (the DSL has no literal tensors).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use dnnfusion_compiler::ShapeSession;

use crate::fold::{fold, FoldInput};
use crate::map::{map_in_graph, Attr, GraphScope, Node, NodeInput, Tensor, TensorData};
use crate::proto::{self, attribute_type, data_type, TensorProto};

/// Lowest and highest default-domain opset the importer accepts: 28 is the newest of
/// onnx 1.23, whose node tests the mapping passes (`conformance/`); a newer opset's new
/// attribute is refused by name when set.
pub const OPSETS: std::ops::RangeInclusive<i64> = 11..=28;

/// Initializers with at most this many elements are decoded at import, so a mapping can
/// read them as compile-time arguments (Clip bounds, Resize scales).
const SMALL_INITIALIZER: usize = 1 << 12;

/// How to import.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// The model's type name (`ResNet18`).
    pub name: String,
    /// `pub` before `model` when true.
    pub public: bool,
    /// A value for each dynamic dimension, by its name in the file (`batch = 1`).
    pub pins: Vec<(String, usize)>,
}

/// An imported model.
#[derive(Clone, Debug, PartialEq)]
pub struct Imported {
    /// `model Name(...) -> ... { ... }`, as written inside `dnn! { ... }`.
    pub dsl: String,
    /// The default-domain opset of the file.
    pub opset: i64,
    /// Nodes in the file.
    pub nodes: usize,
    /// Nodes evaluated at import (shape arithmetic and constants).
    pub folded: usize,
    /// Initializers the model loads, in declaration order.
    pub params: Vec<String>,
    /// Float initializers of one value written as numbers (the `#[scalars(...)]`
    /// attribute: the loaders check the file holds these values).
    pub scalars: Vec<(String, f32)>,
}

/// What is known of a value of the graph.
#[derive(Clone, Debug)]
enum Value {
    /// A graph input or a node output: a binding of the DSL text.
    Tensor {
        binding: String,
        shape: Vec<usize>,
        dtype: i32,
    },
    /// An initializer (index into the graph's list).
    Initializer(usize),
    /// A value known at import.
    Const(Tensor),
}

/// Imports a whole `.onnx` file.
pub fn import(bytes: &[u8], options: &ImportOptions) -> Result<Imported, String> {
    import_model(&proto::decode_model(bytes)?, options)
}

/// Imports a decoded model (what [`import`] does after decoding the bytes).
pub fn import_model(
    model: &proto::ModelProto,
    options: &ImportOptions,
) -> Result<Imported, String> {
    let opset = default_opset(model)?;
    let Some(graph) = model.graph.as_ref() else {
        return Err("the file has no graph".to_string());
    };
    let mut names = Names::default();
    let mut values: HashMap<String, Value> = HashMap::new();
    for (index, init) in graph.initializer.iter().enumerate() {
        let name = init.name.clone().unwrap_or_default();
        values.insert(name, Value::Initializer(index));
    }
    // graph inputs (those that are not initializers) become model inputs
    let mut header = Vec::new();
    let mut session_inputs = Vec::new();
    let mut pins_used: HashSet<&str> = HashSet::new();
    for input in &graph.input {
        let name = input.name.clone().unwrap_or_default();
        if values.contains_key(&name) {
            continue;
        }
        let tensor = input
            .r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .ok_or_else(|| format!("input `{name}` is not a tensor"))?;
        let dtype = tensor.elem_type.unwrap_or(0);
        let prefix = match dtype {
            data_type::FLOAT => "",
            data_type::INT64 => "i64",
            data_type::INT32 => "i32",
            other => {
                return Err(format!(
                    "input `{name}` has element type {}; inputs must be float32, int64 or int32",
                    data_type::name(other)
                ))
            }
        };
        let mut shape = Vec::new();
        let dims = tensor
            .shape
            .as_ref()
            .map(|s| s.dim.as_slice())
            .unwrap_or(&[]);
        if tensor.shape.is_none() {
            return Err(format!("input `{name}` has no shape in the file"));
        }
        for (axis, d) in dims.iter().enumerate() {
            match (d.dim_value, d.dim_param.as_deref()) {
                (Some(v), _) if v > 0 => shape.push(v as usize),
                (_, Some(param)) if !param.is_empty() => {
                    match options.pins.iter().find(|(p, _)| p == param) {
                        Some((p, v)) => {
                            pins_used.insert(p.as_str());
                            shape.push(*v);
                        }
                        None => {
                            return Err(format!(
                                "input `{name}`: dimension {axis} is dynamic (`{param}`); pin it to a size, as in `{param} = 1`"
                            ))
                        }
                    }
                }
                (Some(v), _) if v < 0 => {
                    return Err(format!("input `{name}`: dimension {axis} is {v}"))
                }
                _ => {
                    return Err(format!(
                        "input `{name}`: dimension {axis} has neither a size nor a name; give the file a static shape"
                    ))
                }
            }
        }
        let binding = names.single(&sanitize(&name));
        header.push(format!("{binding}: {prefix}{}", fmt_dims(&shape)));
        session_inputs.push((binding.clone(), shape.clone()));
        values.insert(
            name,
            Value::Tensor {
                binding,
                shape,
                dtype,
            },
        );
    }
    for (pin, _) in &options.pins {
        if !pins_used.contains(pin.as_str()) {
            return Err(format!(
                "`{pin}` is not a dynamic dimension of the graph's inputs"
            ));
        }
    }
    // the static shapes the file declares for intermediate values and outputs (a mapping
    // that needs an output's shape in advance reads it; every node's computed shapes are
    // checked against them)
    let declared_shapes: HashMap<String, Vec<usize>> = graph
        .value_info
        .iter()
        .chain(&graph.output)
        .filter_map(|v| Some((v.name.clone()?, static_shape(v)?)))
        .collect();
    // float tensors of `Constant` nodes (their `value` attribute): used as data they are
    // parameters named after the node's output, which `from_onnx` reads from the node
    let mut constant_tensors: HashSet<String> = HashSet::new();
    let mut session = ShapeSession::new(&session_inputs);
    let mut body: Vec<String> = Vec::new();
    // initializer name -> binding of its `param(...)` statement
    let mut declared: HashMap<String, String> = HashMap::new();
    let mut params: Vec<String> = Vec::new();
    let mut scalars: Vec<(String, f32)> = Vec::new();
    let mut folded = 0usize;
    for node in &graph.node {
        let op = node.op_type.clone().unwrap_or_default();
        let node_name = node.name.clone().unwrap_or_default();
        let at = |msg: String| {
            if node_name.is_empty() {
                format!(
                    "node `{op}` (no name, output `{}`): {msg}",
                    node.output.first().map_or("", String::as_str)
                )
            } else {
                format!("node `{node_name}` ({op}): {msg}")
            }
        };
        match node.domain.as_deref() {
            None | Some("") | Some("ai.onnx") => {}
            Some(d) => {
                return Err(at(format!(
                    "the op is in domain `{d}`; only the default ONNX domain is supported"
                )))
            }
        }
        let attributes = node
            .attribute
            .iter()
            .map(attribute)
            .collect::<Result<Vec<_>, _>>()
            .map_err(at)?;
        // the stem the node's bindings will have if it is mapped (reserved below, after
        // folding): the names peeked for its initializers must avoid it already
        let future_base = names.peek(&sanitize(if node_name.is_empty() {
            node.output.first().map_or("node", String::as_str)
        } else {
            &node_name
        }));
        // the inputs as the mapping and the folder see them
        let mut inputs: Vec<Option<NodeInput>> = Vec::new();
        let mut scope = GraphScope::default();
        let mut constants: Vec<Option<(Vec<usize>, Option<Tensor>)>> = Vec::new();
        for input_name in &node.input {
            if input_name.is_empty() {
                inputs.push(None);
                scope.inputs.push(None);
                scope.initializers.push(None);
                constants.push(None);
                continue;
            }
            let Some(value) = values.get(input_name) else {
                return Err(at(format!(
                    "input `{input_name}` is not defined before the node"
                )));
            };
            let (shape, dtype, known, expr, init) = match value {
                Value::Tensor {
                    binding,
                    shape,
                    dtype,
                } => (shape.clone(), *dtype, None, Some(binding.clone()), None),
                Value::Initializer(index) => {
                    let t = graph
                        .initializer
                        .get(*index)
                        .ok_or_else(|| at("internal error: initializer index".to_string()))?;
                    let shape = dims(t).map_err(at)?;
                    let dtype = t.data_type.unwrap_or(0);
                    let elements: usize = shape.iter().product();
                    let known = if elements <= SMALL_INITIALIZER || dtype != data_type::FLOAT {
                        Some(tensor_of(t).map_err(at)?)
                    } else {
                        None
                    };
                    let binding = match declared.get(input_name) {
                        Some(b) => b.clone(),
                        None => names.peek_avoiding(&sanitize(input_name), &future_base),
                    };
                    let expr = (dtype == data_type::FLOAT).then_some(binding);
                    (shape, dtype, known, expr, Some(input_name.clone()))
                }
                Value::Const(t) if constant_tensors.contains(input_name) => {
                    let binding = match declared.get(input_name) {
                        Some(b) => b.clone(),
                        None => names.peek_avoiding(&sanitize(input_name), &future_base),
                    };
                    (
                        t.shape.clone(),
                        data_type::FLOAT,
                        Some(t.clone()),
                        Some(binding),
                        Some(input_name.clone()),
                    )
                }
                Value::Const(t) => {
                    let dtype = match t.data {
                        TensorData::F32(_) => data_type::FLOAT,
                        TensorData::I64(_) => data_type::INT64,
                    };
                    (t.shape.clone(), dtype, Some(t.clone()), None, None)
                }
            };
            // only integer values and import-time constants take part in folding
            let fold_value = match value {
                Value::Const(t) => Some(t.clone()),
                Value::Initializer(_) if dtype != data_type::FLOAT => known.clone(),
                _ => None,
            };
            constants.push(Some((shape.clone(), fold_value)));
            inputs.push(Some(NodeInput {
                name: input_name.clone(),
                dtype: data_type::name(dtype).to_string(),
                shape,
                value: known,
            }));
            scope.inputs.push(expr);
            scope.initializers.push(init);
        }
        // constant subgraphs are evaluated now
        let fold_inputs: Vec<Option<FoldInput<'_>>> = constants
            .iter()
            .map(|c| {
                c.as_ref().map(|(shape, value)| FoldInput {
                    shape,
                    value: value.as_ref(),
                })
            })
            .collect();
        if let Some(outs) = fold(&op, opset, &attributes, &fold_inputs).map_err(at)? {
            if op == "Constant" && float_value(node) {
                constant_tensors.extend(node.output.first().cloned());
            }
            for (name, t) in node.output.iter().zip(outs) {
                values.insert(name.clone(), Value::Const(t));
            }
            folded += 1;
            continue;
        }
        // a scalar constant operand of an arithmetic op is a number in the DSL (when
        // another operand is a tensor of at least its rank, the result's shape is that
        // tensor's). So is a float initializer of one value beside a computed tensor,
        // listed in `scalars` for the loaders to check (it stays a parameter wherever
        // else it is used): a rule can then match it (GELU's `x / sqrt 2`)
        if matches!(op.as_str(), "Add" | "Sub" | "Mul" | "Div" | "Pow") {
            let tensor_rank = |slot: usize| -> Option<usize> {
                match node.input.get(slot).and_then(|n| values.get(n)) {
                    Some(Value::Tensor { shape, .. }) => Some(shape.len()),
                    Some(Value::Initializer(_)) => {
                        inputs.get(slot)?.as_ref().map(|i| i.shape.len())
                    }
                    _ => None,
                }
            };
            let ranks: Vec<usize> = (0..node.input.len()).filter_map(tensor_rank).collect();
            let computed_ranks: Vec<usize> = node
                .input
                .iter()
                .filter_map(|n| match values.get(n) {
                    Some(Value::Tensor { shape, .. }) => Some(shape.len()),
                    _ => None,
                })
                .collect();
            for slot in 0..node.input.len() {
                let input_name = node.input.get(slot);
                let (t, others, initializer) = match input_name.and_then(|n| values.get(n)) {
                    Some(Value::Const(t)) => (t, &ranks, None),
                    Some(Value::Initializer(_)) => {
                        let Some(Some(input)) = inputs.get(slot) else {
                            continue;
                        };
                        let Some(t) = input.value.as_ref().filter(|_| input.dtype == "float32")
                        else {
                            continue;
                        };
                        (t, &computed_ranks, input_name)
                    }
                    _ => continue,
                };
                let [x] = t.floats()[..] else { continue };
                if !(x.is_finite() && others.iter().any(|&r| r >= t.shape.len())) {
                    continue;
                }
                if let Some(e) = scope.inputs.get_mut(slot) {
                    *e = Some(format!("({})", literal(x as f32)));
                }
                if let Some(name) = initializer {
                    if let Some(init) = scope.initializers.get_mut(slot) {
                        *init = None;
                    }
                    if !scalars.iter().any(|(n, _)| n == name) {
                        scalars.push((name.clone(), x as f32));
                    }
                }
            }
        }
        let base = names.base(&sanitize(if node_name.is_empty() {
            node.output.first().map_or("node", String::as_str)
        } else {
            &node_name
        }));
        scope.base = base;
        scope.output_shapes_known = node
            .output
            .iter()
            .map(|o| declared_shapes.contains_key(o))
            .collect();
        let mapped_node = Node {
            op_type: op.clone(),
            opset,
            attributes,
            defaults: Vec::new(),
            inputs,
            outputs: node
                .output
                .iter()
                .map(|o| {
                    (!o.is_empty()).then(|| declared_shapes.get(o).cloned().unwrap_or_default())
                })
                .collect(),
        };
        let mapped = map_in_graph(&mapped_node, &scope).map_err(|e| {
            // the mapping names the op first; the node's name says which one
            let reason = e.strip_prefix(&format!("{op}: ")).unwrap_or(&e).to_string();
            at(reason)
        })?;
        // initializers used as plain tensors are declared once, before first use
        let mut stmts = Vec::new();
        for &slot in &mapped.data_inputs {
            let (Some(Some(init)), Some(Some(input))) =
                (scope.initializers.get(slot), mapped_node.inputs.get(slot))
            else {
                continue;
            };
            if declared.contains_key(init) {
                continue;
            }
            let binding = names.single(&sanitize(init));
            stmts.push(format!(
                "let {binding} = param({}, key = {init:?});",
                fmt_dims(&input.shape)
            ));
            declared.insert(init.clone(), binding);
            params.push(init.clone());
        }
        for (slot, init) in scope.initializers.iter().enumerate() {
            if let Some(init) = init {
                if !mapped.data_inputs.contains(&slot)
                    && !params.contains(init)
                    && owned_by(&mapped.stmts, init)
                {
                    params.push(init.clone());
                }
            }
        }
        stmts.extend(mapped.stmts.iter().cloned());
        let text = stmts.join("\n");
        session.push(&text).map_err(|errors| {
            at(format!(
                "internal error: the statements it maps to do not compile ({}); please report\n{text}",
                errors.join("; ")
            ))
        })?;
        for s in &stmts {
            names.claim_statement(s);
        }
        body.extend(stmts);
        for (name, binding) in node.output.iter().zip(&mapped.outputs) {
            let Some(binding) = binding else { continue };
            names.claim(binding);
            let shape = session.shape(binding).ok_or_else(|| {
                at(format!(
                    "internal error: output `{binding}` has no shape; please report"
                ))
            })?;
            if let Some(declared) = declared_shapes.get(name) {
                if *declared != shape {
                    return Err(at(format!(
                        "output `{name}` has shape {shape:?} here, the file declares {declared:?}"
                    )));
                }
            }
            values.insert(
                name.clone(),
                Value::Tensor {
                    binding: binding.clone(),
                    shape,
                    dtype: data_type::FLOAT,
                },
            );
        }
    }
    // outputs
    let mut outs = Vec::new();
    for output in &graph.output {
        let name = output.name.clone().unwrap_or_default();
        match values.get(&name) {
            Some(Value::Tensor { binding, shape, .. }) => {
                if session_inputs.iter().any(|(b, _)| b == binding) {
                    return Err(format!("output `{name}` is a graph input; nothing to compute"));
                }
                outs.push((sanitize(&name), binding.clone(), shape.clone()));
            }
            Some(_) => {
                return Err(format!(
                    "output `{name}` is a constant (computed at import); a model output must depend on an input"
                ))
            }
            None => return Err(format!("output `{name}` is not computed by any node")),
        }
    }
    if outs.is_empty() {
        return Err("the graph has no outputs".to_string());
    }
    let mut dsl = String::new();
    let producer = model.producer_name.clone().unwrap_or_default();
    let _ = writeln!(
        dsl,
        "/// Imported from ONNX ({} nodes, opset {opset}{}).",
        graph.node.len(),
        if producer.is_empty() {
            String::new()
        } else {
            format!(", written by {producer}")
        }
    );
    if !scalars.is_empty() {
        let listed: Vec<String> = scalars
            .iter()
            .map(|(name, v)| format!("{name:?} = {}", literal(*v)))
            .collect();
        let _ = writeln!(dsl, "#[scalars({})]", listed.join(", "));
    }
    let vis = if options.public { "pub " } else { "" };
    let _ = write!(
        dsl,
        "{vis}model {}({}) -> ",
        options.name,
        header.join(", ")
    );
    let result = if let [(_, binding, shape)] = outs.as_slice() {
        dsl.push_str(&fmt_dims(shape));
        binding.clone()
    } else {
        let decls: Vec<String> = outs
            .iter()
            .map(|(n, _, s)| format!("{n}: {}", fmt_dims(s)))
            .collect();
        let _ = write!(dsl, "({})", decls.join(", "));
        let bindings: Vec<&str> = outs.iter().map(|(_, b, _)| b.as_str()).collect();
        format!("({})", bindings.join(", "))
    };
    dsl.push_str(" {\n");
    for s in &body {
        let _ = writeln!(dsl, "    {s}");
    }
    let _ = writeln!(dsl, "    {result}\n}}");
    Ok(Imported {
        dsl,
        opset,
        nodes: graph.node.len(),
        folded,
        params,
        scalars,
    })
}

/// True when the node's `value` attribute is a float32 or float64 tensor (what
/// `from_onnx` can load as a parameter).
fn float_value(node: &proto::NodeProto) -> bool {
    node.attribute.iter().any(|a| {
        a.name.as_deref() == Some("value")
            && a.t.as_ref().is_some_and(|t| {
                matches!(
                    t.data_type,
                    Some(data_type::FLOAT) | Some(data_type::DOUBLE)
                )
            })
    })
}

/// The shape a value's type declares, when every dimension is a number (a dynamic
/// dimension, pinned or not, makes it unknown here: the computed shape is used).
fn static_shape(v: &proto::ValueInfoProto) -> Option<Vec<usize>> {
    let tensor = v.r#type.as_ref()?.tensor_type.as_ref()?;
    tensor
        .shape
        .as_ref()?
        .dim
        .iter()
        .map(|d| match (d.dim_value, d.dim_param.as_deref()) {
            (Some(v), None | Some("")) if v >= 0 => usize::try_from(v).ok(),
            _ => None,
        })
        .collect()
}

/// True when `init` appears as a key of one of the statements (an op owns it).
fn owned_by(stmts: &[String], init: &str) -> bool {
    let quoted = format!("{init:?}");
    stmts.iter().any(|s| s.contains(&quoted)) || {
        // `key = "conv1"` names `conv1.weight`, `conv1.bias`
        init.rsplit_once('.')
            .is_some_and(|(p, _)| stmts.iter().any(|s| s.contains(&format!("key = {p:?}"))))
    }
}

/// The default-domain opset of the file, checked against [`OPSETS`].
fn default_opset(model: &proto::ModelProto) -> Result<i64, String> {
    let version = model
        .opset_import
        .iter()
        .find(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
        .and_then(|o| o.version)
        .ok_or("the file imports no default-domain opset (opset_import)")?;
    if !OPSETS.contains(&version) {
        return Err(format!(
            "opset {version} is not supported (opsets {} to {} are); convert the model with onnx.version_converter",
            OPSETS.start(),
            OPSETS.end()
        ));
    }
    Ok(version)
}

/// One attribute as the mapping reads it.
fn attribute(a: &proto::AttributeProto) -> Result<(String, Attr), String> {
    let name = a.name.clone().unwrap_or_default();
    if a.ref_attr_name.is_some() {
        return Err(format!(
            "attribute `{name}` refers to a function's attribute; not supported"
        ));
    }
    let string = |b: &[u8]| {
        String::from_utf8(b.to_vec()).map_err(|_| format!("attribute `{name}` is not UTF-8"))
    };
    // the type field is required since IR 2; an old file without it is read by content
    let kind = match a.r#type {
        Some(t) if t != 0 => t,
        _ if a.t.is_some() => attribute_type::TENSOR,
        _ if a.s.is_some() => attribute_type::STRING,
        _ if a.i.is_some() => attribute_type::INT,
        _ if a.f.is_some() => attribute_type::FLOAT,
        _ if !a.ints.is_empty() => attribute_type::INTS,
        _ if !a.floats.is_empty() => attribute_type::FLOATS,
        _ if !a.strings.is_empty() => attribute_type::STRINGS,
        _ => 0,
    };
    let value = match kind {
        attribute_type::FLOAT => Attr::Float(a.f.unwrap_or(0.0)),
        attribute_type::INT => Attr::Int(a.i.unwrap_or(0)),
        attribute_type::STRING => Attr::Str(string(a.s.as_deref().unwrap_or(&[]))?),
        attribute_type::TENSOR => match &a.t {
            Some(t) => Attr::Tensor(tensor_of(t).map_err(|e| format!("attribute `{name}`: {e}"))?),
            None => return Err(format!("attribute `{name}` has no tensor")),
        },
        attribute_type::FLOATS => Attr::Floats(a.floats.clone()),
        attribute_type::INTS => Attr::Ints(a.ints.clone()),
        attribute_type::STRINGS => Attr::Strs(
            a.strings
                .iter()
                .map(|s| string(s))
                .collect::<Result<_, _>>()?,
        ),
        attribute_type::GRAPH => {
            return Err(format!(
                "attribute `{name}` is a subgraph (control flow); not supported"
            ))
        }
        other => {
            return Err(format!(
                "attribute `{name}` has type {other}, which is not supported"
            ))
        }
    };
    Ok((name, value))
}

/// The shape of a tensor.
fn dims(t: &TensorProto) -> Result<Vec<usize>, String> {
    t.dims
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| {
                format!(
                    "tensor `{}` has dimension {d}",
                    t.name.as_deref().unwrap_or("")
                )
            })
        })
        .collect()
}

/// Decodes a tensor's elements (float types as f32, integer types as i64).
pub fn tensor_of(t: &TensorProto) -> Result<Tensor, String> {
    let name = t.name.as_deref().unwrap_or("");
    if t.data_location == Some(1) || !t.external_data.is_empty() {
        return Err(format!(
            "tensor `{name}` keeps its data in an external file, which is not supported; save the model with its weights inside the .onnx file"
        ));
    }
    let shape = dims(t)?;
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("tensor `{name}` is too large"))?;
    let code = t.data_type.unwrap_or(0);
    let raw = t.raw_data.as_deref();
    let size = match code {
        data_type::FLOAT | data_type::INT32 => 4,
        data_type::INT64 | data_type::DOUBLE => 8,
        data_type::INT8 | data_type::UINT8 | data_type::BOOL => 1,
        _ => {
            return Err(format!(
                "tensor `{name}` has element type {}; float32, float64 and integer tensors are supported",
                data_type::name(code)
            ))
        }
    };
    if let Some(raw) = raw {
        if Some(raw.len()) != n.checked_mul(size) {
            return Err(format!(
                "tensor `{name}` of shape {shape:?} has {} bytes of data, expected {}",
                raw.len(),
                n.saturating_mul(size)
            ));
        }
    }
    let field_len = match code {
        data_type::FLOAT => t.float_data.len(),
        data_type::DOUBLE => t.double_data.len(),
        data_type::INT64 => t.int64_data.len(),
        _ => t.int32_data.len(),
    };
    if raw.is_none() && field_len != n {
        return Err(format!(
            "tensor `{name}` of shape {shape:?} has {field_len} elements, expected {n}"
        ));
    }
    let data = match (code, raw) {
        (data_type::FLOAT, Some(r)) => TensorData::F32(
            r.chunks_exact(4)
                .map(|c| f32::from_le_bytes(word4(c)))
                .collect(),
        ),
        (data_type::FLOAT, None) => TensorData::F32(t.float_data.clone()),
        (data_type::DOUBLE, Some(r)) => TensorData::F32(
            r.chunks_exact(8)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    f64::from_le_bytes(b) as f32
                })
                .collect(),
        ),
        (data_type::DOUBLE, None) => {
            TensorData::F32(t.double_data.iter().map(|&v| v as f32).collect())
        }
        (data_type::INT64, Some(r)) => TensorData::I64(
            r.chunks_exact(8)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    i64::from_le_bytes(b)
                })
                .collect(),
        ),
        (data_type::INT64, None) => TensorData::I64(t.int64_data.clone()),
        (data_type::INT32, Some(r)) => TensorData::I64(
            r.chunks_exact(4)
                .map(|c| i64::from(i32::from_le_bytes(word4(c))))
                .collect(),
        ),
        (data_type::INT8, Some(r)) => {
            TensorData::I64(r.iter().map(|&b| i64::from(b as i8)).collect())
        }
        (_, Some(r)) => TensorData::I64(r.iter().map(|&b| i64::from(b)).collect()),
        (_, None) => TensorData::I64(t.int32_data.iter().map(|&v| i64::from(v)).collect()),
    };
    Ok(Tensor { shape, data })
}

/// The first four bytes of a chunk (`chunks_exact(4)` gives exactly four).
fn word4(c: &[u8]) -> [u8; 4] {
    let mut b = [0u8; 4];
    if let Some(src) = c.get(..4) {
        b.copy_from_slice(src);
    }
    b
}

/// `[1, 3, 224, 224]`
fn fmt_dims(dims: &[usize]) -> String {
    let parts: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// A DSL float literal that reads back as exactly this f32.
fn literal(v: f32) -> String {
    let short = format!("{v:?}");
    if short.parse::<f64>().is_ok_and(|p| p as f32 == v) {
        short
    } else {
        format!("{:?}", f64::from(v))
    }
}

/// Words a binding may not be: Rust keywords, the DSL's literals and op names.
pub(crate) fn reserved(name: &str) -> bool {
    const WORDS: &[&str] = &[
        "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn",
        "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref",
        "return", "self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use",
        "where", "while", "async", "await", "dyn", "abstract", "become", "box", "do", "final",
        "macro", "override", "priv", "typeof", "unsized", "virtual", "yield", "try", "gen",
        "model", "block", "fuse", "key", "keys", "inf", "nan", "arena", "params",
    ];
    WORDS.contains(&name) || dnnfusion_compiler::ops::is_op(name)
}

/// A readable Rust identifier for an ONNX name: PyTorch's scope paths lose the
/// repeated module prefix (`/layer1/layer1.0/conv1/Conv` -> `layer1_0_conv1_conv`),
/// `_output_0` is dropped, everything else that is not a letter or digit becomes `_`.
pub fn sanitize(raw: &str) -> String {
    let raw = raw.strip_suffix("_output_0").unwrap_or(raw);
    let parts: Vec<&str> = raw.split('/').filter(|p| !p.is_empty()).collect();
    let kept: Vec<&str> = parts
        .iter()
        .enumerate()
        .filter(|(i, p)| {
            !parts
                .get(i + 1)
                .is_some_and(|next| next.starts_with(&format!("{p}.")))
        })
        .map(|(_, p)| *p)
        .collect();
    let mut out = String::new();
    for ch in kept.join("_").chars() {
        if ch.is_ascii_alphanumeric() {
            out.push(ch.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let out = out.trim_matches('_').to_string();
    let out = if out.is_empty() {
        "v".to_string()
    } else if out.starts_with(|c: char| c.is_ascii_digit()) {
        format!("v{out}")
    } else {
        out
    };
    if reserved(&out) {
        format!("{out}_")
    } else {
        out
    }
}

/// The bindings used so far, for unique names.
#[derive(Default)]
struct Names {
    used: HashSet<String>,
}

impl Names {
    /// A name no binding has and no binding extends with `_` (the node's derived names
    /// `base_t0`, `base_s1` stay unique).
    fn peek(&self, want: &str) -> String {
        let free = |c: &str| {
            !self.used.contains(c) && !self.used.iter().any(|u| u.starts_with(&format!("{c}_")))
        };
        if free(want) {
            return want.to_string();
        }
        (2..)
            .map(|i| format!("{want}_{i}"))
            .find(|c| free(c))
            .unwrap_or_else(|| want.to_string())
    }

    /// What [`Names::peek`] gives once `stem` is reserved too (what [`Names::single`]
    /// gives after the node's stem is reserved).
    fn peek_avoiding(&self, want: &str, stem: &str) -> String {
        let free = |c: &str| {
            c != stem
                && !stem.starts_with(&format!("{c}_"))
                && !self.used.contains(c)
                && !self.used.iter().any(|u| u.starts_with(&format!("{c}_")))
        };
        if free(want) {
            return want.to_string();
        }
        (2..)
            .map(|i| format!("{want}_{i}"))
            .find(|c| free(c))
            .unwrap_or_else(|| want.to_string())
    }

    /// Reserves a name for one binding.
    fn single(&mut self, want: &str) -> String {
        let name = self.peek(want);
        self.used.insert(name.clone());
        name
    }

    /// Reserves the stem of a node's bindings.
    fn base(&mut self, want: &str) -> String {
        self.single(want)
    }

    fn claim(&mut self, name: &str) {
        self.used.insert(name.to_string());
    }

    /// Records the names a `let` statement binds.
    fn claim_statement(&mut self, stmt: &str) {
        let Some(rest) = stmt.strip_prefix("let ") else {
            return;
        };
        let Some((lhs, _)) = rest.split_once(" = ") else {
            return;
        };
        for name in lhs.trim_matches(|c| c == '(' || c == ')').split(',') {
            self.claim(name.trim());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_readable_identifiers() {
        assert_eq!(
            sanitize("/layer1/layer1.0/conv1/Conv"),
            "layer1_0_conv1_conv"
        );
        assert_eq!(
            sanitize("/features/features.0/features.0.0/Conv"),
            "features_0_0_conv"
        );
        assert_eq!(sanitize("onnx::Conv_193"), "onnx_conv_193");
        assert_eq!(sanitize("/Relu"), "relu_");
        assert_eq!(sanitize("/fc1/Gemm_output_0"), "fc1_gemm");
        assert_eq!(sanitize("0"), "v0");
        assert_eq!(sanitize("input"), "input");
    }

    use prost::Message as _;

    fn value(name: &str, dims: Option<&[i64]>) -> proto::ValueInfoProto {
        proto::ValueInfoProto {
            name: Some(name.to_string()),
            r#type: Some(proto::TypeProto {
                tensor_type: Some(proto::TypeProtoTensor {
                    elem_type: Some(data_type::FLOAT),
                    shape: dims.map(|d| proto::TensorShapeProto {
                        dim: d
                            .iter()
                            .map(|&v| proto::Dimension {
                                dim_value: Some(v),
                                dim_param: None,
                            })
                            .collect(),
                    }),
                }),
            }),
        }
    }

    fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> proto::NodeProto {
        proto::NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name: Some(format!("{}_node", op.to_lowercase())),
            op_type: Some(op.to_string()),
            ..Default::default()
        }
    }

    fn floats(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
        TensorProto {
            name: Some(name.to_string()),
            dims: dims.to_vec(),
            data_type: Some(data_type::FLOAT),
            float_data: v.to_vec(),
            ..Default::default()
        }
    }

    fn model_bytes(
        nodes: Vec<proto::NodeProto>,
        inputs: Vec<proto::ValueInfoProto>,
        outputs: Vec<proto::ValueInfoProto>,
        initializer: Vec<TensorProto>,
        value_info: Vec<proto::ValueInfoProto>,
    ) -> Vec<u8> {
        proto::ModelProto {
            ir_version: Some(8),
            opset_import: vec![proto::OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(17),
            }],
            producer_name: None,
            graph: Some(proto::GraphProto {
                node: nodes,
                name: Some("g".to_string()),
                initializer,
                input: inputs,
                output: outputs,
                value_info,
            }),
        }
        .encode_to_vec()
    }

    fn options() -> ImportOptions {
        ImportOptions {
            name: "M".to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn resize_without_value_info_takes_its_shape_from_the_scales() {
        let bytes = model_bytes(
            vec![node("Resize", &["x", "", "scales"], &["y"])],
            vec![value("x", Some(&[1, 2, 3, 3]))],
            vec![value("y", None)],
            vec![floats("scales", &[4], &[1.0, 1.0, 2.0, 2.0])],
            vec![],
        );
        let m = import(&bytes, &options()).unwrap();
        assert!(m.dsl.contains("-> [1, 2, 6, 6]"), "{}", m.dsl);
        assert!(m.dsl.contains("resize("), "{}", m.dsl);
    }

    #[test]
    fn a_3d_pool_without_value_info_computes_its_output() {
        let mut pool = node("MaxPool", &["x"], &["y"]);
        pool.attribute = vec![proto::AttributeProto {
            name: Some("kernel_shape".to_string()),
            r#type: Some(attribute_type::INTS),
            ints: vec![2, 2, 2],
            ..Default::default()
        }];
        let bytes = model_bytes(
            vec![pool],
            vec![value("x", Some(&[1, 2, 4, 5, 6]))],
            vec![value("y", None)],
            vec![],
            vec![],
        );
        let m = import(&bytes, &options()).unwrap();
        assert!(m.dsl.contains("-> [1, 2, 3, 4, 5]"), "{}", m.dsl);
    }

    #[test]
    fn a_declared_shape_that_differs_is_refused_by_name() {
        let bytes = model_bytes(
            vec![node("Relu", &["x"], &["h"]), node("Relu", &["h"], &["y"])],
            vec![value("x", Some(&[1, 4]))],
            vec![value("y", None)],
            vec![],
            vec![value("h", Some(&[1, 5]))],
        );
        let err = import(&bytes, &options()).unwrap_err();
        assert!(err.contains("relu_node") && err.contains("[1, 5]"), "{err}");
    }

    /// A float initializer of one value beside a computed tensor is a number, listed in
    /// `#[scalars]`; used as a tensor elsewhere (a `MatMul`), it is also a parameter; two
    /// initializers alone are left as they are (no computed tensor to give the shape), and
    /// so is an integer one.
    #[test]
    fn one_value_initializers_beside_a_tensor_are_numbers_the_loader_checks() {
        let bytes = model_bytes(
            vec![
                node("Mul", &["x", "s"], &["a"]),
                node("MatMul", &["a", "s"], &["b"]),
                node("Add", &["t", "s"], &["c"]),
                node("Add", &["b", "c"], &["y"]),
            ],
            vec![value("x", Some(&[1, 1]))],
            vec![value("y", Some(&[1, 1]))],
            vec![
                floats("s", &[1, 1], &[-0.375]),
                floats("t", &[1, 1], &[2.0]),
            ],
            vec![],
        );
        let m = import(&bytes, &options()).unwrap();
        assert_eq!(m.scalars, [("s".to_string(), -0.375)]);
        assert!(
            m.dsl.contains("#[scalars(\"s\" = -0.375)]\nmodel M"),
            "{}",
            m.dsl
        );
        assert!(m.dsl.contains("* (-0.375)"), "{}", m.dsl);
        assert_eq!(m.params, ["s", "t"], "{}", m.dsl);
    }

    #[test]
    fn an_initializer_named_like_its_node_keeps_one_name() {
        // `wte` feeds the node `wte.gather` (stem `wte_gather`): the name the mapping
        // uses and the `param` declared for it agree
        let mut n = Names::default();
        let peeked = n.peek_avoiding("wte", "wte_gather");
        assert_eq!(n.base("wte_gather"), "wte_gather");
        assert_eq!(n.single("wte"), peeked);
    }

    #[test]
    fn names_stay_unique_with_their_derived_names() {
        let mut n = Names::default();
        assert_eq!(n.base("conv"), "conv");
        n.claim("conv_t0");
        assert_eq!(n.base("conv"), "conv_2");
        assert_eq!(n.base("conv_t0"), "conv_t0_2");
    }
}
