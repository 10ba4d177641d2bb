//! Running scans along one axis (`cumsum(x, axis, exclusive = false, reverse = false)`
//! and friends): every fact about each scan function in one arm of [`ScanKind::facts`],
//! and everything the scan ops share (binding, shape inference, cost, the f64
//! evaluation, the kernel call) beside it.
//!
//! A scan's output has its input's shape; element `k` along the axis folds elements
//! `0..=k` (`0..k` when `exclusive`, from the end when `reverse`), starting from the
//! fold's identity. An arm gives the function's DSL name, the runtime kernel's variant
//! (`kernels::Scan`), its f64 semantics (the start and one step of the fold: the
//! reference interpreter and constant folding use them), the sign fact the rewrite rules
//! use and its cost per element. Every scan is Many-to-Many (each output reads a run of
//! the axis), runs its own kernel (no epilogue: the kernel reads back its own output),
//! and an inclusive scan over an axis of length 1 is its input (a rewrite rule).
//!
//! Adding a function is one variant with its arm here, its variant and its step in the
//! runtime's `kernels::scan`, and a test; [`ScanKind::facts`] is exhaustive, and every
//! field of [`ScanFacts`] must be given, so a function without its facts does not
//! compile.
//!
//! ```text
//!   cummax(x [2, 3], 1)        start -inf, step max
//!   [[1, 3, 2],           ->   [[1, 3, 3],
//!    [0, -1, 5]]                [0, 0, 5]]
//! ```

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use crate::ir::Op;
use crate::lower::Val;
use crate::ops::binary::{max_nan, min_nan};
use crate::ops::unary::Sign;
use crate::ops::{NonnegWhen, OpFacts, Role};
use crate::tables::MappingType::*;

/// The facts of a scan op applying `kind`: Many-to-Many (each output reads a run of the
/// axis), its own kernel without an epilogue (the kernel reads back its own output), and
/// the sign it keeps.
pub fn facts(kind: ScanKind, exclusive: bool) -> OpFacts {
    let nonneg = if kind.keeps_nonneg(exclusive) {
        NonnegWhen::FirstIs
    } else {
        NonnegWhen::Unknown
    };
    OpFacts::new(kind.name(), ManyToMany, Role::PLAIN, nonneg)
}

/// The function a scan op folds along its axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScanKind {
    /// running sum (ONNX `CumSum`, `torch.cumsum`)
    Sum,
    /// running product (`torch.cumprod`)
    Prod,
    /// running maximum (the values of `torch.cummax`)
    Max,
    /// running minimum (the values of `torch.cummin`)
    Min,
    /// running `ln(sum(exp(x)))`, without overflow (`torch.logcumsumexp`)
    LogSumExp,
}

/// Every scan function, in the order the op reference lists them.
pub const ALL: [ScanKind; 5] = [
    ScanKind::Sum,
    ScanKind::Prod,
    ScanKind::Max,
    ScanKind::Min,
    ScanKind::LogSumExp,
];

/// The DSL signature every scan function shares.
pub const SIGNATURE: &str = "x, axis, exclusive = false, reverse = false";

/// What one scan function is (see the module docs).
pub struct ScanFacts {
    /// what the DSL calls it and what reports and errors print
    pub name: &'static str,
    /// its variant of the runtime's `kernels::Scan`
    pub runtime: &'static str,
    /// f64: the fold's identity (an exclusive scan's first element)
    pub start: f64,
    /// f64: the running value and the next element -> the next running value
    pub step: fn(f64, f64) -> f64,
    /// the sign of an inclusive scan, given the input's (an exclusive one also starts
    /// with `start`)
    pub sign: Sign,
    /// FLOPs per element
    pub cost: u64,
}

/// `ln(exp(a) + exp(b))` without overflow; NaN if either is.
pub fn log_add_exp(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        return f64::NAN;
    }
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if hi.is_infinite() {
        hi
    } else {
        hi + (lo - hi).exp().ln_1p()
    }
}

impl ScanKind {
    /// Every fact about this function.
    pub fn facts(self) -> ScanFacts {
        match self {
            ScanKind::Sum => ScanFacts {
                name: "cumsum",
                runtime: "Sum",
                start: 0.0,
                step: |a, b| a + b,
                sign: Sign::KeepsNonneg,
                cost: 1,
            },
            ScanKind::Prod => ScanFacts {
                name: "cumprod",
                runtime: "Prod",
                start: 1.0,
                step: |a, b| a * b,
                sign: Sign::KeepsNonneg,
                cost: 1,
            },
            ScanKind::Max => ScanFacts {
                name: "cummax",
                runtime: "Max",
                start: f64::NEG_INFINITY,
                step: max_nan,
                sign: Sign::KeepsNonneg,
                cost: 1,
            },
            ScanKind::Min => ScanFacts {
                name: "cummin",
                runtime: "Min",
                start: f64::INFINITY,
                step: min_nan,
                sign: Sign::KeepsNonneg,
                cost: 1,
            },
            ScanKind::LogSumExp => ScanFacts {
                name: "logcumsumexp",
                runtime: "LogSumExp",
                start: f64::NEG_INFINITY,
                step: log_add_exp,
                sign: Sign::Any,
                // an exponential and a logarithm (as the unary rows cost them) and an add
                cost: 17,
            },
        }
    }

    /// What the DSL calls this function.
    pub fn name(self) -> &'static str {
        self.facts().name
    }

    /// The function the DSL calls `name`.
    pub fn named(name: &str) -> Option<ScanKind> {
        ALL.into_iter().find(|k| k.name() == name)
    }

    /// True when the scan of a nonnegative input is nonnegative (with `exclusive`, its
    /// first element is the start).
    pub fn keeps_nonneg(self, exclusive: bool) -> bool {
        let facts = self.facts();
        facts.sign != Sign::Any && (!exclusive || facts.start >= 0.0)
    }
}

/// The DSL signatures of the scan functions, for the op list and reference.
pub fn signatures() -> impl Iterator<Item = crate::ops::OpSignature> {
    ALL.into_iter().map(|k| crate::ops::OpSignature {
        name: k.name(),
        signature: SIGNATURE,
        params: "",
    })
}

/// Binds `cumsum(x, axis, exclusive = false, reverse = false)` and its siblings.
pub(super) fn bind(b: &mut super::Bind<'_, '_>, kind: ScanKind) -> Result<Val, super::LowerError> {
    let x = b.tensor("x")?;
    let shape = b.shape(x.0);
    let (axis, s) = b.int("axis")?;
    let axis = b.axis(axis, shape.len(), s)?;
    let exclusive = b.boolean("exclusive")?;
    let reverse = b.boolean("reverse")?;
    let op = Op::Scan {
        kind,
        axis,
        exclusive,
        reverse,
    };
    Ok(b.node(op, vec![x.0], &[x.1])?)
}

/// `[outer, len, inner]`: the elements before the axis, along it and after it.
fn extents(shape: &[usize], axis: usize) -> [usize; 3] {
    let product = |dims: Option<&[usize]>| dims.unwrap_or(&[]).iter().product::<usize>();
    [
        product(shape.get(..axis)),
        shape.get(axis).copied().unwrap_or(1),
        product(shape.get(axis + 1..)),
    ]
}

/// The f64 scan of `x` (row-major, of `shape`) along `axis`: the one semantics the
/// reference interpreter and constant folding use. `None` when `x` is shorter than
/// `shape` says.
pub fn evaluate(
    kind: ScanKind,
    x: &[f64],
    shape: &[usize],
    axis: usize,
    exclusive: bool,
    reverse: bool,
) -> Option<Vec<f64>> {
    let facts = kind.facts();
    let [outer, len, inner] = extents(shape, axis);
    let mut out = vec![0.0; x.len()];
    for o in 0..outer {
        for i in 0..inner {
            let mut running = facts.start;
            for step in 0..len {
                let k = if reverse { len - 1 - step } else { step };
                let at = (o * len + k) * inner + i;
                let v = *x.get(at)?;
                if exclusive {
                    *out.get_mut(at)? = running;
                    running = (facts.step)(running, v);
                } else {
                    running = (facts.step)(running, v);
                    *out.get_mut(at)? = running;
                }
            }
        }
    }
    Some(out)
}

/// The kernel call that scans `input` (of `shape`) into `out`; `k` is the path of the
/// runtime's `kernels` module.
#[allow(clippy::too_many_arguments)]
pub fn kernel_call(
    k: &TokenStream,
    kind: ScanKind,
    input: &Ident,
    out: &Ident,
    shape: &[usize],
    axis: usize,
    exclusive: bool,
    reverse: bool,
) -> TokenStream {
    let [outer, len, inner] = extents(shape, axis);
    let variant = format_ident!("{}", kind.facts().runtime);
    quote! { #k::scan(#input, #out, #outer, #len, #inner, #exclusive, #reverse, #k::Scan::#variant); }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Every function has its own name and runtime variant, and `named` finds it.
    #[test]
    fn names_are_distinct_and_found() {
        for (i, a) in ALL.into_iter().enumerate() {
            assert_eq!(ScanKind::named(a.name()), Some(a));
            for b in ALL.into_iter().skip(i + 1) {
                assert_ne!(a.name(), b.name());
                assert_ne!(a.facts().runtime, b.facts().runtime);
            }
        }
        assert_eq!(ScanKind::named("cumsum_all"), None);
    }

    /// ONNX's `CumSum` examples (its operator documentation), and each function on a
    /// small matrix along either axis, worked by hand.
    #[test]
    fn scans_by_hand() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let sum =
            |exclusive, reverse| evaluate(ScanKind::Sum, &x, &[5], 0, exclusive, reverse).unwrap();
        assert_eq!(sum(false, false), [1.0, 3.0, 6.0, 10.0, 15.0]);
        assert_eq!(sum(true, false), [0.0, 1.0, 3.0, 6.0, 10.0]);
        assert_eq!(sum(false, true), [15.0, 14.0, 12.0, 9.0, 5.0]);
        assert_eq!(sum(true, true), [14.0, 12.0, 9.0, 5.0, 0.0]);

        let m = [1.0, 3.0, 2.0, 0.0, -1.0, 5.0];
        let scan =
            |kind, axis, exclusive| evaluate(kind, &m, &[2, 3], axis, exclusive, false).unwrap();
        assert_eq!(
            scan(ScanKind::Max, 1, false),
            [1.0, 3.0, 3.0, 0.0, 0.0, 5.0]
        );
        assert_eq!(
            scan(ScanKind::Min, 1, false),
            [1.0, 1.0, 1.0, 0.0, -1.0, -1.0]
        );
        assert_eq!(
            scan(ScanKind::Prod, 1, false),
            [1.0, 3.0, 6.0, 0.0, 0.0, 0.0]
        );
        assert_eq!(
            scan(ScanKind::Prod, 0, false),
            [1.0, 3.0, 2.0, 0.0, -3.0, 10.0]
        );
        let inf = f64::INFINITY;
        assert_eq!(
            scan(ScanKind::Max, 0, true),
            [-inf, -inf, -inf, 1.0, 3.0, 2.0]
        );
        assert_eq!(
            scan(ScanKind::Sum, 0, false),
            [1.0, 3.0, 2.0, 1.0, 2.0, 7.0]
        );
        // ln(e^1 + e^3) = 3 + ln(1 + e^-2)
        let lse = scan(ScanKind::LogSumExp, 1, false);
        assert_eq!(lse[0], 1.0);
        assert!((lse[1] - (3.0 + (-2.0f64).exp().ln_1p())).abs() < 1e-15);
        let by_definition = (1f64.exp() + 3f64.exp() + 2f64.exp()).ln();
        assert!((lse[2] - by_definition).abs() < 1e-14);
    }

    /// `log_add_exp` does not overflow where the definition would, and keeps infinities
    /// and NaN.
    #[test]
    fn log_add_exp_is_stable() {
        assert!((log_add_exp(1000.0, 1000.0) - (1000.0 + 2f64.ln())).abs() < 1e-12);
        assert_eq!(log_add_exp(f64::NEG_INFINITY, -3.0), -3.0);
        assert_eq!(
            log_add_exp(f64::NEG_INFINITY, f64::NEG_INFINITY),
            f64::NEG_INFINITY
        );
        assert_eq!(log_add_exp(f64::INFINITY, 2.0), f64::INFINITY);
        assert!(log_add_exp(f64::NAN, 2.0).is_nan());
    }

    /// The sign facts agree with the semantics: a function said to keep nonnegative
    /// values does, inclusive and exclusive as `keeps_nonneg` says; an inclusive scan of
    /// one element is that element (the unit-axis rewrite rule relies on it).
    #[test]
    fn facts_agree_with_the_semantics() {
        let x = [0.0, 2.5, 0.5, 3.0];
        for k in ALL {
            for exclusive in [false, true] {
                let y = evaluate(k, &x, &[4], 0, exclusive, false).unwrap();
                let nonneg = y.iter().all(|v| *v >= 0.0);
                if k.keeps_nonneg(exclusive) {
                    assert!(nonneg, "{} {exclusive}", k.name());
                }
            }
            for v in [-2.5, 0.0, 3.0] {
                assert_eq!(evaluate(k, &[v], &[1], 0, false, false).unwrap(), [v]);
            }
        }
        assert!(!ScanKind::Max.keeps_nonneg(true));
        assert!(ScanKind::Sum.keeps_nonneg(true));
    }
}
