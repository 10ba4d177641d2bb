//! Reductions over axes (`reduce_sum(x, axes = [1], keepdims = false)` and friends):
//! every fact about each reduce function, in one arm of [`ReduceKind::facts`].
//!
//! An arm gives the function's DSL name, the runtime kernel's variant
//! (`kernels::Reduction`), its f64 semantics (each value mapped, folded from a start,
//! the fold finished with the count; `shifted` for log-sum-exp's overflow guard: the
//! f64 oracle and constant folding both use them), the sign fact the rewrite rules use,
//! whether a reduction over one element is that element, and the FLOPs its finish costs.
//! Everything else a reduce op needs (argument binding, shape inference, mapping type,
//! fusion role: [`facts`]) is the same for every function and lives with the `reduce` op.
//!
//! Adding a function is one variant with its arm here, its variant and its loop in the
//! runtime's `kernels::reduce`, and a test; [`ReduceKind::facts`] is exhaustive, and every
//! field of [`ReduceFacts`] must be given, so a function without its facts does not
//! compile.
//!
//! ```text
//!   reduce_l2(x [2, 3], axes = [1])   map v -> v * v, fold +, start 0, finish sqrt
//!   -> [2]                            y[i] = sqrt(x[i, 0]^2 + x[i, 1]^2 + x[i, 2]^2)
//! ```

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use crate::check::{err, fmt_shape, ShapeError};
use crate::element::row_major_strides;
use crate::ops::binary::{max_nan, min_nan};
use crate::ops::unary::Sign;
use crate::ops::{OpFacts, Role};
use crate::tables::MappingType::*;

/// The facts of a reduce op applying `kind`: Many-to-Many, row-wise (an epilogue and a
/// prologue), its function's sign.
pub fn facts(kind: ReduceKind) -> OpFacts {
    OpFacts::new(
        kind.name(),
        ManyToMany,
        Role::ROWS,
        kind.facts().sign.nonneg_when(),
    )
}

/// The function a reduce op applies along its axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceKind {
    /// sum
    Sum,
    /// arithmetic mean
    Mean,
    /// maximum
    Max,
    /// minimum
    Min,
    /// product
    Prod,
    /// sum of absolute values
    L1,
    /// square root of the sum of squares
    L2,
    /// sum of squares
    SumSquare,
    /// natural log of the sum
    LogSum,
    /// natural log of the sum of exponentials (computed without overflow)
    LogSumExp,
}

/// Every reduce function, in the order the op reference lists them.
pub const ALL: [ReduceKind; 10] = [
    ReduceKind::Sum,
    ReduceKind::Mean,
    ReduceKind::Max,
    ReduceKind::Min,
    ReduceKind::Prod,
    ReduceKind::L1,
    ReduceKind::L2,
    ReduceKind::SumSquare,
    ReduceKind::LogSum,
    ReduceKind::LogSumExp,
];

/// The DSL signature every reduce function shares.
pub const SIGNATURE: &str = "x, axes = all, keepdims = false";

/// What one reduce function is (see the module docs).
pub struct ReduceFacts {
    /// what the DSL calls it and what reports and errors print
    pub name: &'static str,
    /// its variant of the runtime's `kernels::Reduction`
    pub runtime: &'static str,
    /// f64: each value before folding
    pub map: fn(f64) -> f64,
    /// f64: the fold's start (the result over no elements, before `finish`)
    pub start: f64,
    /// f64: one step of the fold
    pub fold: fn(f64, f64) -> f64,
    /// f64: the folded value and the number of elements folded -> the result
    pub finish: fn(f64, usize) -> f64,
    /// log-sum-exp: the values are shifted by their maximum before `map` (exp) and the
    /// maximum added back after `finish` (ln), so that no exponential overflows
    pub shifted: bool,
    /// the sign of the result, given the input's
    pub sign: Sign,
    /// a reduction over a single element gives that element
    pub of_one_is_element: bool,
    /// FLOPs `finish` costs per output element folded (the mean's division)
    pub finish_cost: u64,
}

fn same(v: f64) -> f64 {
    v
}

fn square(v: f64) -> f64 {
    v * v
}

fn add(a: f64, b: f64) -> f64 {
    a + b
}

fn done(v: f64, _count: usize) -> f64 {
    v
}

impl ReduceKind {
    /// Every fact about this function.
    pub fn facts(self) -> ReduceFacts {
        match self {
            ReduceKind::Sum => ReduceFacts {
                name: "reduce_sum",
                runtime: "Sum",
                map: same,
                start: 0.0,
                fold: add,
                finish: done,
                shifted: false,
                sign: Sign::KeepsNonneg,
                of_one_is_element: true,
                finish_cost: 0,
            },
            ReduceKind::Mean => ReduceFacts {
                name: "reduce_mean",
                runtime: "Mean",
                map: same,
                start: 0.0,
                fold: add,
                finish: |v, count| v / count as f64,
                shifted: false,
                sign: Sign::KeepsNonneg,
                of_one_is_element: true,
                finish_cost: 1,
            },
            ReduceKind::Max => ReduceFacts {
                name: "reduce_max",
                runtime: "Max",
                map: same,
                start: f64::NEG_INFINITY,
                fold: max_nan,
                finish: done,
                shifted: false,
                sign: Sign::KeepsNonneg,
                of_one_is_element: true,
                finish_cost: 0,
            },
            ReduceKind::Min => ReduceFacts {
                name: "reduce_min",
                runtime: "Min",
                map: same,
                start: f64::INFINITY,
                fold: min_nan,
                finish: done,
                shifted: false,
                sign: Sign::KeepsNonneg,
                of_one_is_element: true,
                finish_cost: 0,
            },
            ReduceKind::Prod => ReduceFacts {
                name: "reduce_prod",
                runtime: "Prod",
                map: same,
                start: 1.0,
                fold: |a, b| a * b,
                finish: done,
                shifted: false,
                sign: Sign::KeepsNonneg,
                of_one_is_element: true,
                finish_cost: 0,
            },
            ReduceKind::L1 => ReduceFacts {
                name: "reduce_l1",
                runtime: "L1",
                map: f64::abs,
                start: 0.0,
                fold: add,
                finish: done,
                shifted: false,
                sign: Sign::Nonneg,
                // |x| is not x
                of_one_is_element: false,
                finish_cost: 0,
            },
            ReduceKind::L2 => ReduceFacts {
                name: "reduce_l2",
                runtime: "L2",
                map: square,
                start: 0.0,
                fold: add,
                finish: |v, _| v.sqrt(),
                shifted: false,
                sign: Sign::Nonneg,
                of_one_is_element: false,
                finish_cost: 0,
            },
            ReduceKind::SumSquare => ReduceFacts {
                name: "reduce_sum_square",
                runtime: "SumSquare",
                map: square,
                start: 0.0,
                fold: add,
                finish: done,
                shifted: false,
                sign: Sign::Nonneg,
                of_one_is_element: false,
                finish_cost: 0,
            },
            ReduceKind::LogSum => ReduceFacts {
                name: "reduce_log_sum",
                runtime: "LogSum",
                map: same,
                start: 0.0,
                fold: add,
                finish: |v, _| v.ln(),
                shifted: false,
                sign: Sign::Any,
                of_one_is_element: false,
                finish_cost: 0,
            },
            ReduceKind::LogSumExp => ReduceFacts {
                name: "reduce_log_sum_exp",
                runtime: "LogSumExp",
                map: f64::exp,
                start: 0.0,
                fold: add,
                finish: |v, _| v.ln(),
                shifted: true,
                sign: Sign::Any,
                of_one_is_element: false,
                finish_cost: 0,
            },
        }
    }

    /// What the DSL calls this function.
    pub fn name(self) -> &'static str {
        self.facts().name
    }

    /// The function the DSL calls `name`.
    pub fn named(name: &str) -> Option<ReduceKind> {
        ALL.into_iter().find(|k| k.name() == name)
    }
}

/// The DSL signatures of the reduce functions, for the op list and reference.
pub fn signatures() -> impl Iterator<Item = crate::ops::OpSignature> {
    ALL.into_iter().map(|k| crate::ops::OpSignature {
        name: k.name(),
        signature: SIGNATURE,
        params: "",
    })
}

// ---------------------------------------------------------------------------------------
// Shape inference, evaluation and code generation shared by every reduce function
// ---------------------------------------------------------------------------------------

/// Shape of a reduction of `x` over `axes` (sorted, distinct): the axes dropped, or kept
/// with length 1 (`keepdims`).
pub fn shape(
    name: &str,
    x: &[usize],
    axes: &[usize],
    keepdims: bool,
) -> Result<Vec<usize>, ShapeError> {
    let sorted = axes.windows(2).all(|p| matches!(p, [a, b] if a < b));
    if !sorted || axes.iter().any(|&a| a >= x.len()) {
        return err(
            Some(0),
            format!(
                "{name}: axes {axes:?} must be sorted, distinct and below the rank of {}",
                fmt_shape(x)
            ),
        );
    }
    Ok(x.iter()
        .enumerate()
        .filter_map(|(axis, &d)| match (axes.contains(&axis), keepdims) {
            (false, _) => Some(d),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect())
}

/// The reductions on the interpreter's arrays, in f64 (the facts' map, fold and finish).
#[cfg(feature = "interp")]
mod oracle {
    use ndarray::{ArrayD, Axis};

    use super::ReduceKind;
    use crate::interp::{fail, InterpError, Result};

    /// Reduces `axes` (sorted, distinct) in f64, one axis at a time.
    pub fn evaluate(
        kind: ReduceKind,
        axes: &[usize],
        keepdims: bool,
        x: &ArrayD<f32>,
    ) -> Result<ArrayD<f32>> {
        let rank = x.ndim();
        let sorted = axes.windows(2).all(|p| matches!(p, [a, b] if a < b));
        if !sorted || axes.iter().any(|&a| a >= rank) {
            return fail(format!(
                "axes {axes:?} must be sorted, distinct and below rank {rank}"
            ));
        }
        let facts = kind.facts();
        if facts.shifted {
            // max + ln(sum(exp(x - max))): no overflow; an empty set gives -inf
            let m = evaluate(ReduceKind::Max, axes, true, x)?.mapv(f64::from);
            let shift = m.mapv(|v| if v.is_finite() { v } else { 0.0 });
            let e = (&x.mapv(f64::from) - &shift).mapv(facts.map);
            let count: usize = axes.iter().map(|&a| x.len_of(Axis(a))).product();
            let sums = reduce_f64(&e, axes, facts.start, facts.fold);
            let mut out = sums.mapv(|v| (facts.finish)(v, count));
            let shift = shift
                .into_shape_with_order(out.shape().to_vec())
                .map_err(|e| InterpError::new(e.to_string()))?;
            out = out + shift;
            return finish_reduce(out, axes, keepdims);
        }
        let mut acc: ArrayD<f64> = x.mapv(|v| (facts.map)(f64::from(v)));
        let mut count = 1usize;
        // From the last axis down, so the remaining axis numbers stay valid.
        for &axis in axes.iter().rev() {
            count *= acc.len_of(Axis(axis));
            acc = acc.fold_axis(Axis(axis), facts.start, |&s, &v| (facts.fold)(s, v));
        }
        acc.mapv_inplace(|v| (facts.finish)(v, count));
        finish_reduce(acc, axes, keepdims)
    }

    /// Sums (or folds) `x` over `axes` (sorted), dropping them.
    fn reduce_f64(
        x: &ArrayD<f64>,
        axes: &[usize],
        init: f64,
        f: impl Fn(f64, f64) -> f64 + Copy,
    ) -> ArrayD<f64> {
        let mut acc = x.clone();
        for &axis in axes.iter().rev() {
            acc = acc.fold_axis(Axis(axis), init, |s, &v| f(*s, v));
        }
        acc
    }

    /// Re-inserts the reduced axes (with `keepdims`) and rounds to f32.
    fn finish_reduce(mut acc: ArrayD<f64>, axes: &[usize], keepdims: bool) -> Result<ArrayD<f32>> {
        if keepdims {
            for &axis in axes {
                acc = acc.insert_axis(Axis(axis));
            }
        }
        Ok(acc.mapv(|v| v as f32))
    }
}
#[cfg(feature = "interp")]
pub use oracle::evaluate;

/// The kernel call that reduces `input` (of `shape`) over `axes` into `out`, with the
/// epilogue `epilogue`; `k` is the path of the runtime's `kernels` module.
pub fn kernel_call(
    k: &TokenStream,
    kind: ReduceKind,
    axes: &[usize],
    [input, out]: [&Ident; 2],
    s0: &[usize],
    epi: &TokenStream,
) -> TokenStream {
    let strides = row_major_strides(s0);
    let (mut kept_dims, mut kept_strides, mut red_dims, mut red_strides) =
        (vec![], vec![], vec![], vec![]);
    for (i, (&d, &s)) in s0.iter().zip(&strides).enumerate() {
        if axes.contains(&i) {
            red_dims.push(d);
            red_strides.push(s);
        } else {
            kept_dims.push(d);
            kept_strides.push(s);
        }
    }
    let kind = format_ident!("{}", kind.facts().runtime);
    quote! {
        #k::reduce(#input, #out, &[#(#kept_dims),*], &[#(#kept_strides),*], &[#(#red_dims),*], &[#(#red_strides),*], #k::Reduction::#kind, #epi);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every function has its own name and runtime variant, and `named` finds it.
    #[test]
    fn names_are_distinct_and_found() {
        for (i, a) in ALL.into_iter().enumerate() {
            assert_eq!(ReduceKind::named(a.name()), Some(a));
            for b in ALL.into_iter().skip(i + 1) {
                assert_ne!(a.name(), b.name());
                assert_ne!(a.facts().runtime, b.facts().runtime);
            }
        }
        assert_eq!(ReduceKind::named("reduce_median"), None);
    }

    /// The facts agree with the f64 semantics they sit beside: a function said to give
    /// the element over one element does, and a nonnegative one is nonnegative on a
    /// negative input.
    #[test]
    fn facts_agree_with_the_semantics() {
        for k in ALL {
            let f = k.facts();
            let one = |v: f64| {
                let shift = if f.shifted { v } else { 0.0 };
                (f.finish)((f.fold)(f.start, (f.map)(v - shift)), 1) + shift
            };
            for v in [-2.5, 0.0, 3.0] {
                if f.of_one_is_element {
                    assert_eq!(one(v), v, "{}", f.name);
                }
                if f.sign == Sign::Nonneg {
                    assert!(one(v) >= 0.0, "{}", f.name);
                }
            }
            // log-sum-exp over one element is the element too (not claimed: rounding)
            if f.shifted {
                assert!((one(-2.5) + 2.5).abs() < 1e-12);
            }
        }
    }
}
