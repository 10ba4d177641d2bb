//! The elementwise ops with an operand of a kind of its own: `where(cond, a, b)` (a
//! condition, all three broadcast) and `prelu(x)` (a learned slope, one or one per
//! channel). Everything they know is here: the argument binding, the shape inference
//! `check::infer` calls, the cost, the reference interpreter's evaluation and the kernel
//! calls `codegen` emits when they run on their own (inside a fused block, `element`
//! translates them), and their facts ([`WHERE`], [`PRELU`]).
//!
//! ```text
//!   where([1, 0], [1, 2], [3, 4])  ->  [1, 4]
//!   prelu([-2, 3], slope 0.25)     ->  [-0.5, 3]
//! ```

use proc_macro2::{Ident, TokenStream};
use quote::quote;

use super::{Bind, DslOp, LowerError};
use crate::check::{broadcast, err, fmt_shape, operands, ShapeError};
use crate::element::{broadcast_strides, Ix};
use crate::ir::*;
use crate::lower::Val;
use crate::ops::{NonnegWhen, OpFacts, Role};
use crate::tables::MappingType::*;

/// `where` and `prelu` as the DSL calls them.
pub(super) const DSL_OPS: &[DslOp] = dsl_ops! {
    "where" => "cond, a, b" => |b, _| where_(b),
    "prelu" => "x, num_parameters = 1"; params "weight [num_parameters]" => |b, _| prelu(b),
};

/// `where`: elementwise (its operands broadcast); nonnegative when both branches are.
pub const WHERE: OpFacts = OpFacts {
    mapping: crate::ops::Mapping::Broadcasting,
    ..OpFacts::new(
        "where",
        OneToOne,
        Role::ELEMENTWISE,
        NonnegWhen::BranchesAre,
    )
};
/// `prelu`: One-to-One (its slope is a parameter); a negative slope mixes signs.
pub const PRELU: OpFacts = OpFacts::new("prelu", OneToOne, Role::ELEMENTWISE, NonnegWhen::Unknown);

/// Binds `where(..)`.
fn where_(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
    let c = b.tensor("cond")?;
    let x = b.tensor("a")?;
    let y = b.tensor("b")?;
    Ok(b.node(Op::Where, vec![c.0, x.0, y.0], &[c.1, x.1, y.1])?)
}

/// Binds `prelu(..)`: creates its slope of `num_parameters` values.
fn prelu(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
    let x = b.tensor("x")?;
    let (n, ns) = b.positive("num_parameters")?;
    let shape = b.shape(x.0);
    if n != 1 && shape.get(1) != Some(&n) {
        return Ok(b.lw.fail(
            ns,
            format!(
                "prelu: num_parameters ({n}) must be 1 or the channel count (axis 1 of {})",
                fmt_shape(&shape)
            ),
        )?);
    }
    let key = b.key();
    let w = b.param(&key, "weight", vec![n])?;
    Ok(b.node(Op::Prelu, vec![x.0, w], &[x.1])?)
}

// ---------------------------------------------------------------------------------------
// Element translation (prelu inside a fused block)
// ---------------------------------------------------------------------------------------

/// The index into prelu's slopes (of shape `slopes`) for output index `idx`: the channel
/// (axis 1) when there is one slope per channel, else the one slope.
pub fn prelu_slope_index(idx: &[Ix], slopes: &[usize]) -> Option<Ix> {
    if slopes.iter().product::<usize>() > 1 {
        idx.get(1).cloned()
    } else {
        Some(Ix::Const(0))
    }
}

// ---------------------------------------------------------------------------------------
// Shape inference
// ---------------------------------------------------------------------------------------

/// Shape of `where`: the three operands broadcast together (a fault of the second
/// broadcast is the third operand's).
pub fn where_shape(name: &str, inputs: &[&[usize]]) -> Result<Vec<usize>, ShapeError> {
    let [c, a, b] = operands(name, inputs)?;
    broadcast(name, &broadcast(name, c, a)?, b).map_err(|e| ShapeError {
        operand: e.operand.map(|_| 2),
        ..e
    })
}

/// Shape of `prelu`: its input's, with one slope or one per channel (axis 1).
pub fn prelu_shape(name: &str, inputs: &[&[usize]]) -> Result<Vec<usize>, ShapeError> {
    let [x, slope] = operands(name, inputs)?;
    let n: usize = slope.iter().product();
    if n != 1 && x.get(1) != Some(&n) {
        return err(
            Some(1),
            format!(
                "prelu: {} slopes for input {} (one, or one per channel)",
                n,
                fmt_shape(x)
            ),
        );
    }
    Ok(x.to_vec())
}

// ---------------------------------------------------------------------------------------
// Cost
// ---------------------------------------------------------------------------------------

/// Operations per output element of `where` (a select) and `prelu` (a compare and a
/// multiply, counted as one as the unary functions count theirs).
pub const COST: u64 = 1;

// ---------------------------------------------------------------------------------------
// The reference interpreter's evaluation
// ---------------------------------------------------------------------------------------

/// `where` and `prelu` on the interpreter's arrays.
#[cfg(feature = "interp")]
pub mod evaluate {
    use ndarray::{ArrayD, Zip};

    use crate::interp::{
        at, broadcast_shape, broadcast_to, dim, dims_from, fail, from_vec, product, row_major,
        Result,
    };

    /// `a` where `cond != 0`, else `b`; all three broadcast.
    pub fn where_(cond: &ArrayD<f32>, a: &ArrayD<f32>, b: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        let shape = broadcast_shape(&broadcast_shape(cond.shape(), a.shape())?, b.shape())?;
        let cv = broadcast_to(cond, &shape)?;
        let av = broadcast_to(a, &shape)?;
        let bv = broadcast_to(b, &shape)?;
        Ok(Zip::from(&cv)
            .and(&av)
            .and(&bv)
            .map_collect(|&c, &x, &y| if c != 0.0 { x } else { y }))
    }

    /// `x` if positive else `slope[c] * x`, `c` the index along axis 1 (or one slope for all).
    pub fn prelu(x: &ArrayD<f32>, slope: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        let slopes = row_major(slope);
        let (channels, inner) = if slopes.len() == 1 {
            (1, 1)
        } else {
            let c = dim(x.shape(), 1)?;
            if slopes.len() != c {
                return fail(format!(
                    "slope has {} elements, the input has {c} channels (shape {:?})",
                    slopes.len(),
                    x.shape()
                ));
            }
            (c, product(dims_from(x.shape(), 2)))
        };
        let data = x
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let s = at(&slopes, (i / inner) % channels)?;
                Ok(if v > 0.0 { v } else { s * v })
            })
            .collect::<Result<Vec<f32>>>()?;
        from_vec(x.shape(), data)
    }
}

// ---------------------------------------------------------------------------------------
// Code generation (`k` is the path of the runtime's `kernels` module)
// ---------------------------------------------------------------------------------------

/// The kernel call of `where` on operands of `shapes` (condition, a, b) into `out_shape`.
pub fn where_call(
    k: &TokenStream,
    [cond, a, b, out]: [Option<&Ident>; 4],
    shapes: &[&[usize]],
    out_shape: &[usize],
) -> TokenStream {
    let strides = |i: usize| broadcast_strides(shapes.get(i).copied().unwrap_or(&[]), out_shape);
    let (sc, sa, sb) = (strides(0), strides(1), strides(2));
    quote! { #k::select(#cond, &[#(#sc),*], #a, &[#(#sa),*], #b, &[#(#sb),*], #out, &[#(#out_shape),*]); }
}

/// The kernel call of `prelu` of `x` (of `shape`) with its slopes (of `slope_shape`).
pub fn prelu_call(
    k: &TokenStream,
    [x, slope, out]: [Option<&Ident>; 3],
    shape: &[usize],
    slope_shape: &[usize],
) -> TokenStream {
    let channels: usize = slope_shape.iter().product();
    let inner: usize = shape.get(2..).unwrap_or(&[]).iter().product();
    quote! { #k::prelu(#x, #slope, #out, #channels, #inner); }
}
