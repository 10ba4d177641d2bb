//! Elementwise functions of two inputs (numpy broadcasting): every fact about each one,
//! in one row.
//!
//! A row gives the DSL `name`, the `cost` in FLOPs per element (see
//! [`crate::ops::unary`]), when the output is nonnegative (`nonneg`), how tightly the
//! emitted Rust binds and what it needs of its left and right operands (`binds`), the one f64 semantics (`f64`: the reference
//! interpreter, the fused-block evaluator and constant folding), the Rust the generated
//! code runs (`emit`), and the unary functions it becomes with a constant right or left
//! operand (`x + 2.0`, `2.0 - x`). Every `match` the rows expand into is exhaustive.

use proc_macro2::TokenStream;
use quote::quote;

use crate::ir::Op;

use super::{Bind, DslOp, LowerError};
use crate::lower::{as_f64, Val};
use crate::ops::unary::UnaryOp;
use crate::ops::{Mapping, NonnegWhen, OpFacts, Role};

/// The functions of two inputs as the DSL calls them.
pub(super) const DSL_OPS: &[DslOp] = dsl_ops! {
    "add" => "a, b" => bind, "sub" => "a, b" => bind, "mul" => "a, b" => bind,
    "div" => "a, b" => bind, "maximum" => "a, b" => bind, "minimum" => "a, b" => bind,
    "pow" => "a, b" => bind,
};

/// Binds `add(a, b)` and the other functions of two inputs; a number for `b` makes the
/// unary function `a op b`.
fn bind(b: &mut Bind<'_, '_>, name: &str) -> Result<Val, LowerError> {
    let Some(op) = BinaryOp::named(name) else {
        return Err(LowerError::Unknown);
    };
    let a = b.tensor("a")?;
    let span = b.args.call_span;
    match b.args.take("b") {
        Some((Val::Tensor(t), s)) => Ok(Val::Tensor(b.lw.binary_op(op, span, a, (t, s))?)),
        Some((v @ (Val::Int(_) | Val::Float(_)), _)) => {
            let u = op.with_constant_right(as_f64(&v) as f32);
            Ok(b.node(Op::Unary(u), vec![a.0], &[a.1])?)
        }
        Some((other, s)) => Ok(b.wrong("b", "a tensor or a number", &other, s)?),
        None => Ok(b.missing("b")?),
    }
}

macro_rules! binary_functions {
    ($(
        $(#[$doc:meta])*
        $variant:ident => {
            name: $name:literal,
            cost: $cost:expr,
            nonneg: $nonneg:ident,
            binds: ($level:expr, $left:expr, $right:expr),
            f64: $f64:expr,
            emit: $emit:expr,
            constant_right: $right_const:expr,
            constant_left: $left_const:expr $(,)?
        }
    )*) => {
        /// Two-input elementwise functions with numpy broadcasting.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum BinaryOp {
            $($(#[$doc])* $variant,)*
        }

        impl BinaryOp {
            /// The function the DSL calls `name`.
            pub fn named(name: &str) -> Option<BinaryOp> {
                match name {
                    $($name => Some(BinaryOp::$variant),)*
                    _ => None,
                }
            }

            /// The DSL name of the function.
            pub fn name(self) -> &'static str {
                match self {
                    $(BinaryOp::$variant => $name,)*
                }
            }

            /// The op's facts: elementwise with broadcasting, and when its output is
            /// nonnegative.
            pub fn facts(self) -> OpFacts {
                let nonneg = match self {
                    $(BinaryOp::$variant => NonnegWhen::$nonneg,)*
                };
                OpFacts {
                    name: self.name(),
                    mapping: Mapping::Broadcasting,
                    role: Role::ELEMENTWISE,
                    nonneg,
                }
            }

            /// FLOPs one output element costs.
            pub fn cost(self) -> u64 {
                match self {
                    $(BinaryOp::$variant => $cost,)*
                }
            }

            /// How tightly [`BinaryOp::emit`]'s Rust binds (1 for `+`, 2 for `*`, 9 for
            /// a call), and the binding its (left, right) operands need: floating-point
            /// `+` and `*` do not associate, so a right operand of the same level keeps
            /// its parentheses.
            pub fn binds(self) -> (u8, u8, u8) {
                match self {
                    $(BinaryOp::$variant => ($level, $left, $right),)*
                }
            }

            /// The function in f64: the one semantics of the reference interpreter, the
            /// element evaluator and constant folding.
            pub fn reference(self, x: f64, y: f64) -> f64 {
                match self {
                    $(BinaryOp::$variant => apply($f64, x, y),)*
                }
            }

            /// The generated Rust for operands `a` and `b` (already parenthesized as
            /// [`BinaryOp::binds`] asks); `m` is the runtime's `math` module path.
            pub fn emit(self, m: &TokenStream, a: &TokenStream, b: &TokenStream) -> TokenStream {
                match self {
                    $(BinaryOp::$variant => emit_with($emit, m, a, b),)*
                }
            }

            /// The unary function `x op c`.
            pub fn with_constant_right(self, c: f32) -> UnaryOp {
                match self {
                    $(BinaryOp::$variant => apply_constant($right_const, c),)*
                }
            }

            /// The unary function `c op x`, when there is one.
            pub fn with_constant_left(self, c: f32) -> Option<UnaryOp> {
                match self {
                    $(BinaryOp::$variant => apply_constant($left_const, c),)*
                }
            }
        }
    };
}

/// Calls a row's `f64` closure (the call gives the closure its argument types).
fn apply(f: impl FnOnce(f64, f64) -> f64, x: f64, y: f64) -> f64 {
    f(x, y)
}

/// Calls a row's `emit` closure.
fn emit_with(
    f: impl FnOnce(&TokenStream, &TokenStream, &TokenStream) -> TokenStream,
    m: &TokenStream,
    a: &TokenStream,
    b: &TokenStream,
) -> TokenStream {
    f(m, a, b)
}

/// Calls a row's constant-operand closure.
fn apply_constant<T>(f: impl FnOnce(f32) -> T, c: f32) -> T {
    f(c)
}

binary_functions! {
    /// `a + b`
    Add => {
        name: "add", cost: 1, nonneg: AllAre, binds: (1, 1, 2),
        f64: |x, y| x + y,
        emit: |_, a, b| quote! { #a + #b },
        constant_right: UnaryOp::AddScalar,
        constant_left: |c| Some(UnaryOp::AddScalar(c)),
    }
    /// `a - b`
    Sub => {
        name: "sub", cost: 1, nonneg: Unknown, binds: (1, 1, 2),
        f64: |x, y| x - y,
        emit: |_, a, b| quote! { #a - #b },
        constant_right: UnaryOp::SubScalar,
        constant_left: |c| Some(UnaryOp::ScalarSub(c)),
    }
    /// `a * b`
    Mul => {
        name: "mul", cost: 1, nonneg: AllAre, binds: (2, 2, 3),
        f64: |x, y| x * y,
        emit: |_, a, b| quote! { #a * #b },
        constant_right: UnaryOp::MulScalar,
        constant_left: |c| Some(UnaryOp::MulScalar(c)),
    }
    /// `a / b`
    Div => {
        name: "div", cost: 4, nonneg: Unknown, binds: (2, 2, 3),
        f64: |x, y| x / y,
        emit: |_, a, b| quote! { #a / #b },
        constant_right: UnaryOp::DivScalar,
        constant_left: |c| Some(UnaryOp::ScalarDiv(c)),
    }
    /// `max(a, b)`, NaN if either is
    Max => {
        name: "maximum", cost: 1, nonneg: AnyIs, binds: (9, 0, 0),
        f64: max_nan,
        emit: |m, a, b| quote! { #m::max(#a, #b) },
        constant_right: |c| UnaryOp::Clip { min: c, max: f32::INFINITY },
        constant_left: |c| Some(UnaryOp::Clip { min: c, max: f32::INFINITY }),
    }
    /// `min(a, b)`, NaN if either is
    Min => {
        name: "minimum", cost: 1, nonneg: AllAre, binds: (9, 0, 0),
        f64: min_nan,
        emit: |m, a, b| quote! { #m::min(#a, #b) },
        constant_right: |c| UnaryOp::Clip { min: f32::NEG_INFINITY, max: c },
        constant_left: |c| Some(UnaryOp::Clip { min: f32::NEG_INFINITY, max: c }),
    }
    /// `a ^ b`
    Pow => {
        name: "pow", cost: 8, nonneg: Unknown, binds: (9, 0, 0),
        f64: f64::powf,
        emit: |m, a, b| quote! { #m::pow(#a, #b) },
        constant_right: UnaryOp::PowScalar,
        constant_left: |_| None,
    }
}

/// Max that propagates NaN.
pub fn max_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Min that propagates NaN.
pub fn min_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}
