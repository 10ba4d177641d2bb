//! Import-time evaluation of the small constant subgraphs ONNX exporters write around
//! shapes (`Shape -> Gather -> Unsqueeze -> Concat -> Reshape`): since every shape is
//! static, their values are known when the model is imported, and the mapping reads them
//! as compile-time arguments.
//!
//! ```text
//!   x:[1,128,512] -> Shape -> Gather(0) -> Unsqueeze -> Concat([_, [4], [128]]) -> Reshape(x, _)
//!     ->  reshape(x, [1, 4, 128])
//! ```
//!
//! [`fold`] evaluates one node whose inputs are all known, or says it cannot
//! (`Ok(None)`: the node is then mapped to DSL ops).

use crate::map::{Attr, Tensor, TensorData};

/// Most elements a folded result may have (larger constants are not shape arithmetic).
pub const MAX_FOLDED: usize = 1 << 16;

/// The ops [`fold`] evaluates.
pub const FOLDABLE: &[&str] = &[
    "Constant",
    "Shape",
    "Size",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Slice",
    "Cast",
    "Reshape",
    "Flatten",
    "ConstantOfShape",
    "Range",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Neg",
    "Sqrt",
    "Identity",
    "Equal",
    "Less",
    "Greater",
    "Where",
    "Expand",
    "Max",
    "Min",
];

/// One input of a node being folded: its shape, and its value when known.
pub struct FoldInput<'a> {
    /// The static shape.
    pub shape: &'a [usize],
    /// The value, if known at import.
    pub value: Option<&'a Tensor>,
}

type R<T> = Result<T, String>;

/// Evaluates `op_type` on known inputs: `Ok(Some(outputs))`, `Ok(None)` when the node
/// is not constant (an input's value is unknown, or the op is not folded), or an error
/// for inconsistent constants.
pub fn fold(
    op_type: &str,
    opset: i64,
    attrs: &[(String, Attr)],
    inputs: &[Option<FoldInput<'_>>],
) -> R<Option<Vec<Tensor>>> {
    if !FOLDABLE.contains(&op_type) {
        return Ok(None);
    }
    // Shape and Size need only the input's shape
    if op_type == "Shape" || op_type == "Size" {
        let Some(Some(x)) = inputs.first() else {
            return Ok(None);
        };
        let rank = x.shape.len() as i64;
        if op_type == "Size" {
            let n: usize = x.shape.iter().product();
            return Ok(Some(vec![ints(vec![], vec![n as i64])]));
        }
        let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
        let start = clamp(int_attr(attrs, "start").unwrap_or(0));
        let end = clamp(int_attr(attrs, "end").unwrap_or(rank));
        let dims: Vec<i64> = x
            .shape
            .get(start..end.max(start))
            .unwrap_or(&[])
            .iter()
            .map(|&d| d as i64)
            .collect();
        return Ok(Some(vec![ints(vec![dims.len()], dims)]));
    }
    let mut values = Vec::new();
    for input in inputs {
        match input {
            Some(FoldInput { value: Some(v), .. }) => values.push(Some(*v)),
            Some(_) => return Ok(None),
            None => values.push(None),
        }
    }
    let arg = |i: usize| -> R<&Tensor> {
        values
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| format!("input {i} is missing"))
    };
    let out = match op_type {
        "Constant" => constant(attrs)?,
        "Identity" => arg(0)?.clone(),
        "Cast" => {
            let to = int_attr(attrs, "to").unwrap_or(1);
            let x = arg(0)?;
            match to {
                1 | 10 | 11 | 16 => Tensor {
                    shape: x.shape.clone(),
                    data: TensorData::F32(x.floats().iter().map(|&v| v as f32).collect()),
                },
                2..=7 | 9 | 12 | 13 => ints(x.shape.clone(), x.ints()),
                _ => return Ok(None),
            }
        }
        "Gather" => gather(arg(0)?, arg(1)?, int_attr(attrs, "axis").unwrap_or(0))?,
        "Unsqueeze" | "Squeeze" => {
            let x = arg(0)?;
            let axes = if opset >= 13 {
                values.get(1).copied().flatten().map(Tensor::ints)
            } else {
                ints_attr(attrs, "axes")
            };
            let shape = if op_type == "Unsqueeze" {
                let axes = axes.ok_or("Unsqueeze needs axes")?;
                let rank = x.shape.len() + axes.len();
                let mut norm: Vec<usize> = axes.iter().map(|&a| axis(a, rank)).collect::<R<_>>()?;
                norm.sort_unstable();
                let mut shape = x.shape.clone();
                for a in norm {
                    if a > shape.len() {
                        return Err(format!("axis {a} is out of range"));
                    }
                    shape.insert(a, 1);
                }
                shape
            } else {
                let rank = x.shape.len();
                let drop: Vec<usize> = match axes {
                    Some(a) => a.iter().map(|&v| axis(v, rank)).collect::<R<_>>()?,
                    None => (0..rank).filter(|&i| x.shape.get(i) == Some(&1)).collect(),
                };
                x.shape
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !drop.contains(i))
                    .map(|(_, &d)| d)
                    .collect()
            };
            reshaped(x, shape)?
        }
        "Reshape" => {
            let x = arg(0)?;
            let target = arg(1)?.ints();
            let total: usize = x.shape.iter().product();
            let mut dims: Vec<Option<usize>> = Vec::new();
            for (i, &d) in target.iter().enumerate() {
                dims.push(match d {
                    0 => x.shape.get(i).copied(),
                    -1 => None,
                    d if d > 0 => Some(d as usize),
                    d => return Err(format!("reshape to dimension {d}")),
                });
            }
            let known: usize = dims.iter().flatten().product();
            let shape: Vec<usize> = dims
                .iter()
                .map(|d| d.unwrap_or(total.checked_div(known).unwrap_or(0)))
                .collect();
            reshaped(x, shape)?
        }
        "Flatten" => {
            let x = arg(0)?;
            let rank = x.shape.len();
            let a = int_attr(attrs, "axis").unwrap_or(1);
            let a = if a < 0 { a + rank as i64 } else { a }.clamp(0, rank as i64) as usize;
            let outer: usize = x.shape.get(..a).unwrap_or(&[]).iter().product();
            let inner: usize = x.shape.get(a..).unwrap_or(&[]).iter().product();
            reshaped(x, vec![outer, inner])?
        }
        "Concat" => {
            let parts: Vec<&Tensor> = values.iter().copied().flatten().collect();
            concat(&parts, int_attr(attrs, "axis").unwrap_or(0))?
        }
        "Slice" => slice(
            arg(0)?,
            &arg(1)?.ints(),
            &arg(2)?.ints(),
            values.get(3).copied().flatten().map(Tensor::ints),
            values.get(4).copied().flatten().map(Tensor::ints),
        )?,
        "ConstantOfShape" => {
            let shape: Vec<usize> = arg(0)?
                .ints()
                .iter()
                .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
                .collect::<R<_>>()?;
            let n = count(&shape)?;
            let fill = match attrs.iter().find(|(n, _)| n == "value") {
                Some((_, Attr::Tensor(t))) => t.clone(),
                _ => Tensor {
                    shape: vec![1],
                    data: TensorData::F32(vec![0.0]),
                },
            };
            match fill.data {
                TensorData::F32(v) => Tensor {
                    shape,
                    data: TensorData::F32(vec![v.first().copied().unwrap_or(0.0); n]),
                },
                TensorData::I64(v) => ints(shape, vec![v.first().copied().unwrap_or(0); n]),
            }
        }
        "Range" => {
            let (start, limit, delta) = (arg(0)?, arg(1)?, arg(2)?);
            let float = [start, limit, delta]
                .iter()
                .any(|t| matches!(t.data, TensorData::F32(_)));
            let (s, l, d) = (
                first(&start.floats()),
                first(&limit.floats()),
                first(&delta.floats()),
            );
            if d == 0.0 {
                return Err("Range with delta 0".to_string());
            }
            let n = ((l - s) / d).ceil().max(0.0) as usize;
            if n > MAX_FOLDED {
                return Ok(None);
            }
            let vals: Vec<f64> = (0..n).map(|i| s + i as f64 * d).collect();
            if float {
                Tensor {
                    shape: vec![n],
                    data: TensorData::F32(vals.iter().map(|&v| v as f32).collect()),
                }
            } else {
                ints(vec![n], vals.iter().map(|&v| v as i64).collect())
            }
        }
        "Neg" => unary(arg(0)?, |v| -v, |v| v.wrapping_neg()),
        "Sqrt" => unary(arg(0)?, f64::sqrt, |v| (v as f64).sqrt() as i64),
        "Add" | "Sub" | "Mul" | "Div" | "Equal" | "Less" | "Greater" | "Max" | "Min" => {
            binary(op_type, arg(0)?, arg(1)?)?
        }
        "Where" => where_(arg(0)?, arg(1)?, arg(2)?)?,
        "Expand" => {
            let x = arg(0)?;
            let shape: Vec<usize> = arg(1)?.ints().iter().map(|&d| d.max(0) as usize).collect();
            let zeros = ints(shape.clone(), vec![0; count(&shape)?]);
            binary("Add", x, &zeros)?
        }
        _ => return Ok(None),
    };
    if out_len(&out) > MAX_FOLDED {
        return Ok(None);
    }
    Ok(Some(vec![out]))
}

fn first(v: &[f64]) -> f64 {
    v.first().copied().unwrap_or(0.0)
}

fn out_len(t: &Tensor) -> usize {
    match &t.data {
        TensorData::F32(v) => v.len(),
        TensorData::I64(v) => v.len(),
    }
}

fn count(shape: &[usize]) -> R<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= MAX_FOLDED)
        .ok_or_else(|| format!("constant of shape {shape:?} is too large to evaluate at import"))
}

fn ints(shape: Vec<usize>, v: Vec<i64>) -> Tensor {
    Tensor {
        shape,
        data: TensorData::I64(v),
    }
}

fn reshaped(x: &Tensor, shape: Vec<usize>) -> R<Tensor> {
    if shape.iter().product::<usize>() != x.shape.iter().product::<usize>() {
        return Err(format!("cannot reshape {:?} to {shape:?}", x.shape));
    }
    Ok(Tensor {
        shape,
        data: x.data.clone(),
    })
}

fn axis(a: i64, rank: usize) -> R<usize> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if v < 0 || v >= r.max(1) {
        return Err(format!("axis {a} is out of range for rank {rank}"));
    }
    Ok(v as usize)
}

fn int_attr(attrs: &[(String, Attr)], name: &str) -> Option<i64> {
    attrs.iter().find_map(|(n, a)| match a {
        Attr::Int(v) if n == name => Some(*v),
        _ => None,
    })
}

fn ints_attr(attrs: &[(String, Attr)], name: &str) -> Option<Vec<i64>> {
    attrs.iter().find_map(|(n, a)| match a {
        Attr::Ints(v) if n == name => Some(v.clone()),
        _ => None,
    })
}

fn constant(attrs: &[(String, Attr)]) -> R<Tensor> {
    let Some((name, value)) = attrs.first() else {
        return Err("Constant has no value attribute".to_string());
    };
    if attrs.len() > 1 {
        return Err("Constant has more than one value attribute".to_string());
    }
    Ok(match (name.as_str(), value) {
        ("value", Attr::Tensor(t)) => t.clone(),
        ("value_float", Attr::Float(v)) => Tensor {
            shape: vec![],
            data: TensorData::F32(vec![*v]),
        },
        ("value_floats", Attr::Floats(v)) => Tensor {
            shape: vec![v.len()],
            data: TensorData::F32(v.clone()),
        },
        ("value_int", Attr::Int(v)) => ints(vec![], vec![*v]),
        ("value_ints", Attr::Ints(v)) => ints(vec![v.len()], v.clone()),
        (other, _) => return Err(format!("Constant: attribute `{other}` is not supported")),
    })
}

/// Row-major strides.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        let next = s.get(i + 1).copied().unwrap_or(1) * shape.get(i + 1).copied().unwrap_or(1);
        if let Some(v) = s.get_mut(i) {
            *v = next;
        }
    }
    s
}

/// numpy broadcast of two shapes.
fn broadcast(a: &[usize], b: &[usize]) -> R<Vec<usize>> {
    let rank = a.len().max(b.len());
    (0..rank)
        .map(|i| {
            let da = if i + a.len() >= rank {
                a.get(i + a.len() - rank).copied().unwrap_or(1)
            } else {
                1
            };
            let db = if i + b.len() >= rank {
                b.get(i + b.len() - rank).copied().unwrap_or(1)
            } else {
                1
            };
            match (da, db) {
                (x, y) if x == y => Ok(x),
                (1, y) => Ok(y),
                (x, 1) => Ok(x),
                _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
            }
        })
        .collect()
}

/// The flat index into `shape` (right-aligned to `out`, broadcast) of output index `flat`.
fn source_index(flat: usize, out: &[usize], shape: &[usize]) -> usize {
    let os = strides(out);
    let ss = strides(shape);
    let offset = out.len() - shape.len();
    let mut idx = 0;
    for (i, (&stride, &len)) in os.iter().zip(out).enumerate() {
        let coord = flat.checked_div(stride).unwrap_or(0) % len.max(1);
        if i >= offset {
            let j = i - offset;
            if shape.get(j).copied().unwrap_or(1) != 1 {
                idx += coord * ss.get(j).copied().unwrap_or(0);
            }
        }
    }
    idx
}

fn binary(op: &str, a: &Tensor, b: &Tensor) -> R<Tensor> {
    let shape = broadcast(&a.shape, &b.shape)?;
    let n = count(&shape)?;
    let float = matches!(a.data, TensorData::F32(_)) || matches!(b.data, TensorData::F32(_));
    if float {
        let (av, bv) = (a.floats(), b.floats());
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let x = av
                .get(source_index(i, &shape, &a.shape))
                .copied()
                .unwrap_or(0.0);
            let y = bv
                .get(source_index(i, &shape, &b.shape))
                .copied()
                .unwrap_or(0.0);
            out.push(match op {
                "Add" => x + y,
                "Sub" => x - y,
                "Mul" => x * y,
                "Div" => x / y,
                "Max" => x.max(y),
                "Min" => x.min(y),
                "Equal" => f64::from(u8::from(x == y)),
                "Less" => f64::from(u8::from(x < y)),
                _ => f64::from(u8::from(x > y)),
            });
        }
        let compare = matches!(op, "Equal" | "Less" | "Greater");
        Ok(if compare {
            ints(shape, out.iter().map(|&v| v as i64).collect())
        } else {
            Tensor {
                shape,
                data: TensorData::F32(out.iter().map(|&v| v as f32).collect()),
            }
        })
    } else {
        let (av, bv) = (a.ints(), b.ints());
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let x = av
                .get(source_index(i, &shape, &a.shape))
                .copied()
                .unwrap_or(0);
            let y = bv
                .get(source_index(i, &shape, &b.shape))
                .copied()
                .unwrap_or(0);
            out.push(match op {
                "Add" => x.wrapping_add(y),
                "Sub" => x.wrapping_sub(y),
                "Mul" => x.wrapping_mul(y),
                "Div" => {
                    if y == 0 {
                        return Err("integer division by zero".to_string());
                    }
                    x.wrapping_div(y)
                }
                "Max" => x.max(y),
                "Min" => x.min(y),
                "Equal" => i64::from(x == y),
                "Less" => i64::from(x < y),
                _ => i64::from(x > y),
            });
        }
        Ok(ints(shape, out))
    }
}

fn where_(c: &Tensor, a: &Tensor, b: &Tensor) -> R<Tensor> {
    let shape = broadcast(&broadcast(&c.shape, &a.shape)?, &b.shape)?;
    let n = count(&shape)?;
    let cv = c.ints();
    let pick = |i: usize| {
        cv.get(source_index(i, &shape, &c.shape))
            .copied()
            .unwrap_or(0)
            != 0
    };
    if matches!(a.data, TensorData::F32(_)) || matches!(b.data, TensorData::F32(_)) {
        let (av, bv) = (a.floats(), b.floats());
        let out: Vec<f32> = (0..n)
            .map(|i| {
                let v = if pick(i) {
                    av.get(source_index(i, &shape, &a.shape))
                } else {
                    bv.get(source_index(i, &shape, &b.shape))
                };
                v.copied().unwrap_or(0.0) as f32
            })
            .collect();
        Ok(Tensor {
            shape,
            data: TensorData::F32(out),
        })
    } else {
        let (av, bv) = (a.ints(), b.ints());
        let out: Vec<i64> = (0..n)
            .map(|i| {
                let v = if pick(i) {
                    av.get(source_index(i, &shape, &a.shape))
                } else {
                    bv.get(source_index(i, &shape, &b.shape))
                };
                v.copied().unwrap_or(0)
            })
            .collect();
        Ok(ints(shape, out))
    }
}

fn unary(x: &Tensor, f: impl Fn(f64) -> f64, g: impl Fn(i64) -> i64) -> Tensor {
    match &x.data {
        TensorData::F32(v) => Tensor {
            shape: x.shape.clone(),
            data: TensorData::F32(v.iter().map(|&e| f(f64::from(e)) as f32).collect()),
        },
        TensorData::I64(v) => ints(x.shape.clone(), v.iter().map(|&e| g(e)).collect()),
    }
}

/// Picks `index` along `axis` of every element in `x`: the general gather on flat data.
fn gather(x: &Tensor, indices: &Tensor, ax: i64) -> R<Tensor> {
    let rank = x.shape.len();
    let a = axis(ax, rank)?;
    let len = x.shape.get(a).copied().unwrap_or(1);
    let outer: usize = x.shape.get(..a).unwrap_or(&[]).iter().product();
    let inner: usize = x.shape.get(a + 1..).unwrap_or(&[]).iter().product();
    let idx: Vec<usize> = indices
        .ints()
        .iter()
        .map(|&i| {
            let v = if i < 0 { i + len as i64 } else { i };
            usize::try_from(v)
                .ok()
                .filter(|&v| v < len)
                .ok_or_else(|| format!("index {i} is out of range for length {len}"))
        })
        .collect::<R<_>>()?;
    let mut shape: Vec<usize> = x.shape.get(..a).unwrap_or(&[]).to_vec();
    shape.extend(&indices.shape);
    shape.extend(x.shape.get(a + 1..).unwrap_or(&[]));
    let positions: Vec<usize> = (0..outer)
        .flat_map(|o| {
            let idx = &idx;
            idx.iter()
                .flat_map(move |&i| (0..inner).map(move |k| (o * len + i) * inner + k))
        })
        .collect();
    Ok(pick(x, shape, &positions))
}

fn pick(x: &Tensor, shape: Vec<usize>, positions: &[usize]) -> Tensor {
    match &x.data {
        TensorData::F32(v) => Tensor {
            shape,
            data: TensorData::F32(
                positions
                    .iter()
                    .map(|&p| v.get(p).copied().unwrap_or(0.0))
                    .collect(),
            ),
        },
        TensorData::I64(v) => ints(
            shape,
            positions
                .iter()
                .map(|&p| v.get(p).copied().unwrap_or(0))
                .collect(),
        ),
    }
}

fn concat(parts: &[&Tensor], ax: i64) -> R<Tensor> {
    let Some(first) = parts.first() else {
        return Err("Concat of nothing".to_string());
    };
    let rank = first.shape.len();
    let a = axis(ax, rank)?;
    let outer: usize = first.shape.get(..a).unwrap_or(&[]).iter().product();
    let mut shape = first.shape.clone();
    let mut total = 0;
    for p in parts {
        if p.shape.len() != rank {
            return Err("Concat of tensors of different ranks".to_string());
        }
        total += p.shape.get(a).copied().unwrap_or(0);
    }
    if let Some(d) = shape.get_mut(a) {
        *d = total;
    }
    let float = parts.iter().any(|p| matches!(p.data, TensorData::F32(_)));
    let mut fl = Vec::new();
    let mut it = Vec::new();
    for o in 0..outer {
        for p in parts {
            let chunk: usize = p.shape.get(a..).unwrap_or(&[]).iter().product();
            let range = o * chunk..(o + 1) * chunk;
            if float {
                fl.extend(
                    p.floats()
                        .get(range)
                        .unwrap_or(&[])
                        .iter()
                        .map(|&v| v as f32),
                );
            } else {
                it.extend(p.ints().get(range).unwrap_or(&[]));
            }
        }
    }
    Ok(if float {
        Tensor {
            shape,
            data: TensorData::F32(fl),
        }
    } else {
        ints(shape, it)
    })
}

fn slice(
    x: &Tensor,
    starts: &[i64],
    ends: &[i64],
    axes: Option<Vec<i64>>,
    steps: Option<Vec<i64>>,
) -> R<Tensor> {
    let rank = x.shape.len();
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    // per axis: the indices kept
    let mut keep: Vec<Vec<usize>> = x.shape.iter().map(|&d| (0..d).collect()).collect();
    for (((&s, &e), &a), &st) in starts.iter().zip(ends).zip(&axes).zip(&steps) {
        let a = axis(a, rank)?;
        let len = x.shape.get(a).copied().unwrap_or(1) as i64;
        if st == 0 {
            return Err("Slice with step 0".to_string());
        }
        let res = |v: i64| if v < 0 { v.saturating_add(len) } else { v };
        let mut idx = Vec::new();
        if st > 0 {
            let (mut i, e) = (res(s).clamp(0, len), res(e).clamp(0, len));
            while i < e {
                idx.push(i as usize);
                i += st;
            }
        } else {
            let (mut i, e) = (res(s).clamp(0, len - 1), res(e).clamp(-1, len - 1));
            while i > e {
                idx.push(i as usize);
                i += st;
            }
        }
        if let Some(k) = keep.get_mut(a) {
            *k = idx;
        }
    }
    let shape: Vec<usize> = keep.iter().map(Vec::len).collect();
    let n = count(&shape)?;
    let xs = strides(&x.shape);
    let os = strides(&shape);
    let positions: Vec<usize> = (0..n)
        .map(|flat| {
            keep.iter()
                .zip(&os)
                .zip(&xs)
                .map(|((k, &o), &s)| {
                    let c = flat.checked_div(o).unwrap_or(0) % k.len().max(1);
                    k.get(c).copied().unwrap_or(0) * s
                })
                .sum()
        })
        .collect();
    Ok(pick(x, shape, &positions))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: Vec<usize>, v: Vec<i64>) -> Tensor {
        ints(shape, v)
    }

    fn run(op: &str, attrs: Vec<(&str, Attr)>, inputs: &[&Tensor]) -> Tensor {
        let attrs: Vec<(String, Attr)> =
            attrs.into_iter().map(|(n, a)| (n.to_string(), a)).collect();
        let fi: Vec<Option<FoldInput<'_>>> = inputs
            .iter()
            .map(|t| {
                Some(FoldInput {
                    shape: &t.shape,
                    value: Some(t),
                })
            })
            .collect();
        fold(op, 17, &attrs, &fi).unwrap().unwrap().remove(0)
    }

    #[test]
    fn a_shape_subgraph_folds_to_its_value() {
        let x = Tensor {
            shape: vec![1, 128, 512],
            data: TensorData::F32(vec![]),
        };
        let shape = fold(
            "Shape",
            17,
            &[],
            &[Some(FoldInput {
                shape: &x.shape,
                value: None,
            })],
        )
        .unwrap()
        .unwrap()
        .remove(0);
        assert_eq!(shape.ints(), vec![1, 128, 512]);
        let batch = run(
            "Gather",
            vec![("axis", Attr::Int(0))],
            &[&shape, &t(vec![], vec![0])],
        );
        assert_eq!((batch.shape.clone(), batch.ints()), (vec![], vec![1]));
        let b1 = run("Unsqueeze", vec![], &[&batch, &t(vec![1], vec![0])]);
        let target = run(
            "Concat",
            vec![("axis", Attr::Int(0))],
            &[&b1, &t(vec![1], vec![4]), &t(vec![1], vec![-1])],
        );
        assert_eq!(target.ints(), vec![1, 4, -1]);
        let sliced = run(
            "Slice",
            vec![],
            &[&shape, &t(vec![1], vec![1]), &t(vec![1], vec![i64::MAX])],
        );
        assert_eq!(sliced.ints(), vec![128, 512]);
        let r = run(
            "Range",
            vec![],
            &[
                &t(vec![], vec![0]),
                &t(vec![], vec![5]),
                &t(vec![], vec![2]),
            ],
        );
        assert_eq!(r.ints(), vec![0, 2, 4]);
        let filled = run("ConstantOfShape", vec![], &[&t(vec![2], vec![2, 3])]);
        assert_eq!(filled.floats(), vec![0.0; 6]);
    }

    #[test]
    fn an_unknown_input_is_not_folded() {
        let fi = [Some(FoldInput {
            shape: &[3],
            value: None,
        })];
        assert_eq!(fold("Neg", 17, &[], &fi).unwrap(), None);
        assert_eq!(fold("Relu", 17, &[], &fi).unwrap(), None);
    }
}
