//! Elementwise functions of one input: every fact about each one, in one row.
//!
//! A row names the function's variant of [`UnaryOp`] with its parameters (and their DSL
//! defaults), then gives:
//!
//! - `name`: what the DSL calls it and what reports and errors print;
//! - `dsl`: `call` (a DSL function `name(x, params...)`), `call_keywords` (the
//!   parameters are keyword-only) or `operator` (made by the lowering from `x + 2.0` and
//!   friends, or by a special binding in [`crate::ops`]);
//! - `cost`: FLOPs per element (see [`UnaryOp::cost`]);
//! - `sign`, `order`, `exact`: the algebraic facts the rewrite rules use;
//! - `binds`: how tightly the emitted Rust binds, and what it needs of its operand;
//! - `f64`: the one f64 semantics, shared by the reference interpreter, the element
//!   evaluator of fused blocks and constant folding;
//! - `emit`: the Rust the generated code runs, usually a call into the runtime's `math`.
//!
//! Adding a function is one row here, its f32 function in `runtime/src/math.rs`, and a
//! test; every `match` the rows expand into is exhaustive, so a variant without a row
//! does not compile.

use proc_macro2::TokenStream;
use quote::quote;

use crate::ops::{NonnegWhen, OpFacts, Role};
use crate::tables::MappingType;

/// What a function's output sign is, given its input's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sign {
    /// `>= 0` (or NaN) for every input.
    Nonneg,
    /// `>= 0` (or NaN) whenever the input is.
    KeepsNonneg,
    /// Nothing known.
    Any,
}

/// Whether a function is monotone (NaN to NaN), so that it commutes with max and min.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Nondecreasing.
    Increasing,
    /// Nonincreasing.
    Decreasing,
    /// Neither.
    Neither,
}

/// How a DSL call reads its arguments: the lowering's binder implements it.
pub trait CallArgs {
    /// What a failed read reports.
    type Error;
    /// The parameters after `x` may only be given by keyword.
    fn keywords_only(&mut self);
    /// The number given as `keyword` (or in its position), else `default`; a parameter
    /// without a default is required.
    fn float(&mut self, keyword: &str, default: Option<f64>) -> Result<f32, Self::Error>;
}

/// `f64::INFINITY`, named so that a default reads `max = inf` in signatures.
#[allow(non_upper_case_globals)]
const inf: f64 = f64::INFINITY;

/// The default of a parameter, if the row gave one.
macro_rules! default_of {
    () => {
        None
    };
    ($default:expr) => {
        Some($default)
    };
}

/// `", name = default"` (or `", name"`) for a signature string.
macro_rules! shown_param {
    ($name:ident) => {
        concat!(", ", stringify!($name))
    };
    ($name:ident = $default:expr) => {
        concat!(", ", stringify!($name), " = ", stringify!($default))
    };
}

/// The DSL signature of a row (`None` for functions the DSL does not call by name).
macro_rules! signature_of {
    (call, $name:literal, $($param:tt)*) => {
        Some(crate::ops::OpSignature {
            name: $name,
            signature: concat!("x" $($param)*),
            params: "",
        })
    };
    (call_keywords, $name:literal, $($param:tt)*) => {
        Some(crate::ops::OpSignature {
            name: $name,
            signature: concat!("x, *" $($param)*),
            params: "",
        })
    };
    (operator, $name:literal, $($param:tt)*) => {
        None
    };
}

/// Whether the DSL calls a row's function by name, and whether its parameters are
/// keyword-only.
macro_rules! dsl_of {
    (call) => {
        (true, false)
    };
    (call_keywords) => {
        (true, true)
    };
    (operator) => {
        (false, false)
    };
}

/// A field's type in a tuple variant.
macro_rules! float {
    ($name:ident) => {
        f32
    };
}

macro_rules! unary_functions {
    ($(
        $(#[$doc:meta])*
        $variant:ident
        $(( $($targ:ident $(= $tdef:expr)?),* ))?
        $({ $($(#[$fdoc:meta])* $sfield:ident $(= $sdef:expr)?),* })?
        => {
            name: $name:literal,
            dsl: $dsl:ident,
            cost: $cost:expr,
            sign: $sign:expr,
            order: $order:expr,
            exact: $exact:expr,
            binds: ($level:expr, $operand:expr),
            f64: $f64:expr,
            emit: $emit:expr $(,)?
        }
    )*) => {
        /// One-input elementwise functions. Scalar operands are folded in as fields.
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub enum UnaryOp {
            $(
                $(#[$doc])*
                $variant
                $(( $(float!($targ)),* ))?
                $({ $($(#[$fdoc])* $sfield: f32),* })?,
            )*
        }

        /// The DSL signatures of the functions called by name, in table order.
        pub const SIGNATURES: &[Option<crate::ops::OpSignature>] = &[$(
            signature_of!(
                $dsl, $name,
                $($(, shown_param!($targ $(= $tdef)?))*)?
                $($(, shown_param!($sfield $(= $sdef)?))*)?
            ),
        )*];

        #[allow(unused_variables)]
        impl UnaryOp {
            /// The DSL name of the function.
            pub fn name(self) -> &'static str {
                match self {
                    $(UnaryOp::$variant $(( $($targ),* ))? $({ $($sfield),* })? => $name,)*
                }
            }

            /// The function the DSL call `name(x, ...)` makes, reading its parameters
            /// from `args`; `None` when `name` is no such function.
            pub fn from_call<A: CallArgs>(
                name: &str,
                args: &mut A,
            ) -> Option<Result<UnaryOp, A::Error>> {
                $(
                    let (called, keywords_only) = dsl_of!($dsl);
                    if called && name == $name {
                        if keywords_only {
                            args.keywords_only();
                        }
                        let read = |args: &mut A| -> Result<UnaryOp, A::Error> {
                            $($(let $targ = args.float(stringify!($targ), default_of!($($tdef)?))?;)*)?
                            $($(let $sfield = args.float(stringify!($sfield), default_of!($($sdef)?))?;)*)?
                            Ok(UnaryOp::$variant $(( $($targ),* ))? $({ $($sfield),* })?)
                        };
                        return Some(read(args));
                    }
                )*
                None
            }

            /// FLOPs one output element costs. Our weights, not the paper's (it counts
            /// every op as one FLOP per element, which cannot tell `x / c` from
            /// `x * (1 / c)` or `pow(x, 2)` from `x * x`): 1 for add, multiply, compare
            /// and friends, 4 for division and square roots, 8 for transcendental
            /// functions, sums for composites.
            pub fn cost(self) -> u64 {
                match self {
                    $(UnaryOp::$variant $(( $($targ),* ))? $({ $($sfield),* })? => $cost,)*
                }
            }

            /// The output's sign given the input's.
            pub fn sign(self) -> Sign {
                match self {
                    $(UnaryOp::$variant $(( $($targ),* ))? $({ $($sfield),* })? => $sign,)*
                }
            }

            /// Whether the function is monotone.
            pub fn order(self) -> Order {
                match self {
                    $(UnaryOp::$variant $(( $($targ),* ))? $({ $($sfield),* })? => $order,)*
                }
            }

            /// Whether the generated f32 code gives exactly [`UnaryOp::reference`]
            /// rounded to f32 (so a rewrite may compute it ahead, as for a pad value).
            pub fn exact(self) -> bool {
                match self {
                    $(UnaryOp::$variant $(( $($targ),* ))? $({ $($sfield),* })? => $exact,)*
                }
            }

            /// How tightly [`UnaryOp::emit`]'s Rust binds (1 for `+`, 2 for `*`, 3 for
            /// a negation, 9 for a call, 0 for a block), and the binding its operand
            /// needs (0: none, it is a call argument).
            pub fn binds(self) -> (u8, u8) {
                match self {
                    $(UnaryOp::$variant $(( $($targ),* ))? $({ $($sfield),* })? => ($level, $operand),)*
                }
            }

            /// The function in f64: the one semantics of the reference interpreter, the
            /// element evaluator and constant folding.
            pub fn reference(self, x: f64) -> f64 {
                match self {
                    $(UnaryOp::$variant $(( $($targ),* ))? $({ $($sfield),* })? => apply($f64, x),)*
                }
            }

            /// The generated Rust for operand `v` (already parenthesized as
            /// [`UnaryOp::binds`] asks); `m` is the runtime's `math` module path.
            pub fn emit(self, m: &TokenStream, v: &TokenStream) -> TokenStream {
                match self {
                    $(UnaryOp::$variant $(( $($targ),* ))? $({ $($sfield),* })? => emit_with($emit, m, v),)*
                }
            }
        }
    };
}

/// Calls a row's `f64` closure (the call gives the closure its argument type).
fn apply(f: impl FnOnce(f64) -> f64, x: f64) -> f64 {
    f(x)
}

/// Calls a row's `emit` closure.
fn emit_with(
    f: impl FnOnce(&TokenStream, &TokenStream) -> TokenStream,
    m: &TokenStream,
    v: &TokenStream,
) -> TokenStream {
    f(m, v)
}

/// `Increasing` when `cond`, else `Neither`.
fn increasing_if(cond: bool) -> Order {
    if cond {
        Order::Increasing
    } else {
        Order::Neither
    }
}

impl Sign {
    /// The op-level sign fact of a function with this sign.
    pub fn nonneg_when(self) -> NonnegWhen {
        match self {
            Sign::Nonneg => NonnegWhen::Always,
            Sign::KeepsNonneg => NonnegWhen::FirstIs,
            Sign::Any => NonnegWhen::Unknown,
        }
    }
}

/// The facts of the elementwise op applying `u`: One-to-One, elementwise, its sign.
pub fn facts(u: UnaryOp) -> OpFacts {
    OpFacts::new(
        u.name(),
        MappingType::OneToOne,
        Role::ELEMENTWISE,
        u.sign().nonneg_when(),
    )
}

/// `KeepsNonneg` when `cond`, else `Any`.
fn keeps_nonneg_if(cond: bool) -> Sign {
    if cond {
        Sign::KeepsNonneg
    } else {
        Sign::Any
    }
}

/// A parameter as an f64 operand.
fn wide(p: f32) -> f64 {
    f64::from(p)
}

unary_functions! {
    /// `-x`
    Neg => {
        name: "neg", dsl: call, cost: 1,
        sign: Sign::Any, order: Order::Decreasing, exact: true, binds: (3, 3),
        f64: |x| -x,
        emit: |_, v| quote! { -#v },
    }
    /// `|x|`
    Abs => {
        name: "abs", dsl: call, cost: 1,
        sign: Sign::Nonneg, order: Order::Neither, exact: true, binds: (9, 0),
        f64: |x| x.abs(),
        emit: |m, v| quote! { #m::abs(#v) },
    }
    /// `e^x`
    Exp => {
        name: "exp", dsl: call, cost: 8,
        sign: Sign::Nonneg, order: Order::Increasing, exact: false, binds: (9, 0),
        f64: |x| x.exp(),
        emit: |m, v| quote! { #m::exp(#v) },
    }
    /// natural logarithm
    Log => {
        name: "log", dsl: call, cost: 8,
        sign: Sign::Any, order: Order::Neither, exact: false, binds: (9, 0),
        f64: |x| x.ln(),
        emit: |m, v| quote! { #m::ln(#v) },
    }
    /// square root
    Sqrt => {
        name: "sqrt", dsl: call, cost: 4,
        sign: Sign::Nonneg, order: Order::Neither, exact: false, binds: (9, 0),
        f64: |x| x.sqrt(),
        emit: |m, v| quote! { #m::sqrt(#v) },
    }
    /// `1 / sqrt(x)`
    Rsqrt => {
        name: "rsqrt", dsl: call, cost: 4,
        // 1 / -0 is -inf: a zero's sign matters here
        sign: Sign::Any, order: Order::Neither, exact: false, binds: (2, 0),
        f64: |x| 1.0 / x.sqrt(),
        emit: |m, v| quote! { 1.0f32 / #m::sqrt(#v) },
    }
    /// `1 / x`
    Recip => {
        name: "reciprocal", dsl: call, cost: 4,
        sign: Sign::Any, order: Order::Neither, exact: false, binds: (2, 3),
        f64: |x| 1.0 / x,
        emit: |_, v| quote! { 1.0f32 / #v },
    }
    /// `x * x`
    Square => {
        name: "square", dsl: call, cost: 1,
        sign: Sign::Nonneg, order: Order::Neither, exact: true, binds: (0, 0),
        f64: |x| x * x,
        emit: |_, v| square_of(v),
    }
    /// `max(x, 0)`
    Relu => {
        name: "relu", dsl: call, cost: 1,
        sign: Sign::Nonneg, order: Order::Increasing, exact: true, binds: (9, 0),
        f64: |x| clip(x, 0.0, inf),
        emit: |m, v| quote! { #m::relu(#v) },
    }
    /// `min(max(x, 0), 6)`
    Relu6 => {
        name: "relu6", dsl: call, cost: 1,
        sign: Sign::Nonneg, order: Order::Increasing, exact: false, binds: (9, 0),
        f64: |x| clip(x, 0.0, 6.0),
        emit: |m, v| quote! { #m::clip(#v, 0.0, 6.0) },
    }
    /// `x` if positive else `negative_slope * x`
    LeakyRelu(negative_slope = 0.01) => {
        name: "leaky_relu", dsl: call, cost: 1,
        sign: keeps_nonneg_if(negative_slope >= 0.0),
        order: increasing_if(negative_slope >= 0.0),
        exact: false, binds: (9, 0),
        f64: |x| if x > 0.0 { x } else { wide(negative_slope) * x },
        emit: |m, v| {
            let a = f32_lit(negative_slope);
            quote! { #m::leaky_relu(#v, #a) }
        },
    }
    /// `x` if positive else `alpha * (e^x - 1)`
    Elu(alpha = 1.0) => {
        name: "elu", dsl: call, cost: 8,
        sign: keeps_nonneg_if(alpha >= 0.0), order: increasing_if(alpha >= 0.0),
        exact: false, binds: (9, 0),
        f64: |x| if x > 0.0 { x } else { wide(alpha) * x.exp_m1() },
        emit: |m, v| {
            let a = f32_lit(alpha);
            quote! { #m::elu(#v, #a) }
        },
    }
    /// scaled ELU with the fixed constants of Klambauer et al.
    Selu => {
        name: "selu", dsl: call, cost: 8,
        sign: Sign::Any, order: Order::Increasing, exact: false, binds: (9, 0),
        f64: |x| SELU_SCALE * if x > 0.0 { x } else { SELU_ALPHA * x.exp_m1() },
        emit: |m, v| quote! { #m::selu(#v) },
    }
    /// `1 / (1 + e^-x)`
    Sigmoid => {
        name: "sigmoid", dsl: call, cost: 8,
        sign: Sign::Nonneg, order: Order::Increasing, exact: false, binds: (9, 0),
        f64: sigmoid,
        emit: |m, v| quote! { #m::sigmoid(#v) },
    }
    /// hyperbolic tangent
    Tanh => {
        name: "tanh", dsl: call, cost: 8,
        sign: Sign::KeepsNonneg, order: Order::Increasing, exact: false, binds: (9, 0),
        f64: |x| x.tanh(),
        emit: |m, v| quote! { #m::tanh(#v) },
    }
    /// `x * Phi(x)` with the exact erf (the DSL's `gelu(x, approximate = "none")`)
    Gelu => {
        name: "gelu", dsl: operator, cost: 10,
        sign: Sign::Any, order: Order::Neither, exact: false, binds: (9, 0),
        // 0.5 x (1 + erf(x / sqrt 2)), written with erfc so large negative x keep digits
        f64: |x| 0.5 * x * erfc(-x / std::f64::consts::SQRT_2),
        emit: |m, v| quote! { #m::gelu(#v) },
    }
    /// GELU with the tanh approximation
    GeluTanh => {
        name: "gelu_tanh", dsl: call, cost: 10,
        sign: Sign::Any, order: Order::Neither, exact: false, binds: (9, 0),
        f64: |x| {
            let k = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())
        },
        emit: |m, v| quote! { #m::gelu_tanh(#v) },
    }
    /// `x * sigmoid(x)`
    Silu => {
        name: "silu", dsl: call, cost: 9,
        sign: Sign::Any, order: Order::Neither, exact: false, binds: (9, 0),
        f64: |x| x * sigmoid(x),
        emit: |m, v| quote! { #m::silu(#v) },
    }
    /// `x / (1 + |x|)`
    Softsign => {
        name: "softsign", dsl: call, cost: 6,
        sign: Sign::KeepsNonneg, order: Order::Increasing, exact: false, binds: (9, 0),
        f64: |x| x / (1.0 + x.abs()),
        emit: |m, v| quote! { #m::softsign(#v) },
    }
    /// `x` if positive else `alpha * (e^(x / alpha) - 1)` (CELU, Barron 2017)
    Celu(alpha = 1.0) => {
        name: "celu", dsl: call, cost: 13,
        sign: Sign::KeepsNonneg, order: increasing_if(alpha > 0.0), exact: false, binds: (9, 0),
        f64: |x| if x > 0.0 { x } else { wide(alpha) * (x / wide(alpha)).exp_m1() },
        emit: |m, v| {
            let a = f32_lit(alpha);
            quote! { #m::celu(#v, #a) }
        },
    }
    /// `x` above `alpha`, else 0 (ONNX's ThresholdedRelu)
    ThresholdedRelu(alpha = 1.0) => {
        name: "thresholded_relu", dsl: call, cost: 1,
        sign: if alpha >= 0.0 { Sign::Nonneg } else { Sign::KeepsNonneg },
        order: increasing_if(alpha >= 0.0), exact: true, binds: (9, 0),
        // NaN stays NaN: the comparison fails for it
        f64: |x| if x <= wide(alpha) { 0.0 } else { x },
        emit: |m, v| {
            let a = f32_lit(alpha);
            quote! { #m::thresholded_relu(#v, #a) }
        },
    }
    /// `clamp(alpha * x + beta, 0, 1)`
    HardSigmoid {
        /// slope
        alpha = 1.0 / 6.0,
        /// offset
        beta = 0.5
    } => {
        name: "hard_sigmoid", dsl: call_keywords, cost: 1,
        sign: Sign::Nonneg, order: increasing_if(alpha >= 0.0), exact: false, binds: (9, 3),
        f64: |x| clip(wide(alpha) * x + wide(beta), 0.0, 1.0),
        emit: |m, v| {
            let (a, b) = (f32_lit(alpha), f32_lit(beta));
            quote! { #m::clip(#a * #v + #b, 0.0, 1.0) }
        },
    }
    /// `x * relu6(x + 3) / 6`
    HardSwish => {
        name: "hard_swish", dsl: call, cost: 4,
        sign: Sign::Any, order: Order::Neither, exact: false, binds: (9, 0),
        f64: |x| x * clip(x + 3.0, 0.0, 6.0) / 6.0,
        emit: |m, v| quote! { #m::hard_swish(#v) },
    }
    /// `x * tanh(softplus(x))`
    Mish => {
        name: "mish", dsl: call, cost: 17,
        sign: Sign::Any, order: Order::Neither, exact: false, binds: (9, 0),
        f64: |x| x * softplus(x).tanh(),
        emit: |m, v| quote! { #m::mish(#v) },
    }
    /// `ln(1 + e^x)`
    Softplus => {
        name: "softplus", dsl: call, cost: 8,
        sign: Sign::Nonneg, order: Order::Increasing, exact: false, binds: (9, 0),
        f64: softplus,
        emit: |m, v| quote! { #m::softplus(#v) },
    }
    /// error function
    Erf => {
        name: "erf", dsl: call, cost: 8,
        sign: Sign::KeepsNonneg, order: Order::Increasing, exact: false, binds: (9, 0),
        f64: erf,
        emit: |m, v| quote! { #m::erf(#v) },
    }
    /// sine
    Sin => {
        name: "sin", dsl: call, cost: 8,
        sign: Sign::Any, order: Order::Neither, exact: false, binds: (9, 0),
        f64: |x| x.sin(),
        emit: |m, v| quote! { #m::sin(#v) },
    }
    /// cosine
    Cos => {
        name: "cos", dsl: call, cost: 8,
        sign: Sign::Any, order: Order::Neither, exact: false, binds: (9, 0),
        f64: |x| x.cos(),
        emit: |m, v| quote! { #m::cos(#v) },
    }
    /// round down
    Floor => {
        name: "floor", dsl: call, cost: 1,
        sign: Sign::KeepsNonneg, order: Order::Increasing, exact: false, binds: (9, 0),
        f64: |x| x.floor(),
        emit: |m, v| quote! { #m::floor(#v) },
    }
    /// round up
    Ceil => {
        name: "ceil", dsl: call, cost: 1,
        sign: Sign::KeepsNonneg, order: Order::Increasing, exact: false, binds: (9, 0),
        f64: |x| x.ceil(),
        emit: |m, v| quote! { #m::ceil(#v) },
    }
    /// round half to even
    Round => {
        name: "round", dsl: call, cost: 1,
        sign: Sign::KeepsNonneg, order: Order::Increasing, exact: false, binds: (9, 0),
        f64: |x| x.round_ties_even(),
        emit: |m, v| quote! { #m::round_half_even(#v) },
    }
    /// `clamp(x, min, max)`
    Clip {
        /// lower bound
        min = -inf,
        /// upper bound
        max = inf
    } => {
        name: "clip", dsl: call, cost: 1,
        // our choice: a negative lower bound says nothing, whatever the input
        sign: if min >= 0.0 { Sign::Nonneg } else { Sign::Any },
        order: Order::Increasing, exact: false, binds: (9, 0),
        f64: |x| clip(x, wide(min), wide(max)),
        emit: |m, v| {
            let (a, b) = (f32_lit(min), f32_lit(max));
            quote! { #m::clip(#v, #a, #b) }
        },
    }
    /// `x ^ c`
    PowScalar(c) => {
        name: "pow", dsl: operator, cost: 8,
        sign: if c.fract() == 0.0 && (c as i64) % 2 == 0 { Sign::Nonneg } else { Sign::KeepsNonneg },
        order: Order::Neither, exact: false, binds: (9, 0),
        f64: |x| x.powf(wide(c)),
        emit: |m, v| {
            let c = f32_lit(c);
            quote! { #m::pow(#v, #c) }
        },
    }
    /// `x + c`
    AddScalar(c) => {
        name: "add", dsl: operator, cost: 1,
        sign: keeps_nonneg_if(c >= 0.0), order: Order::Increasing, exact: true, binds: (1, 1),
        f64: |x| x + wide(c),
        emit: |_, v| {
            let c = f32_lit(c);
            quote! { #v + #c }
        },
    }
    /// `x - c`
    SubScalar(c) => {
        name: "sub", dsl: operator, cost: 1,
        sign: Sign::Any, order: Order::Increasing, exact: true, binds: (1, 1),
        f64: |x| x - wide(c),
        emit: |_, v| {
            let c = f32_lit(c);
            quote! { #v - #c }
        },
    }
    /// `c - x`
    ScalarSub(c) => {
        name: "sub", dsl: operator, cost: 1,
        sign: Sign::Any, order: Order::Decreasing, exact: true, binds: (1, 2),
        f64: |x| wide(c) - x,
        emit: |_, v| {
            let c = f32_lit(c);
            quote! { #c - #v }
        },
    }
    /// `x * c`
    MulScalar(c) => {
        name: "mul", dsl: operator, cost: 1,
        sign: keeps_nonneg_if(c >= 0.0), order: monotone_by_sign(c), exact: true, binds: (2, 2),
        f64: |x| x * wide(c),
        emit: |_, v| {
            let c = f32_lit(c);
            quote! { #v * #c }
        },
    }
    /// `x / c`
    DivScalar(c) => {
        name: "div", dsl: operator, cost: 4,
        sign: keeps_nonneg_if(c >= 0.0), order: monotone_by_sign(c), exact: true, binds: (2, 2),
        f64: |x| x / wide(c),
        emit: |_, v| {
            let c = f32_lit(c);
            quote! { #v / #c }
        },
    }
    /// `c / x`
    ScalarDiv(c) => {
        name: "div", dsl: operator, cost: 4,
        sign: Sign::Any, order: Order::Neither, exact: false, binds: (2, 3),
        f64: |x| wide(c) / x,
        emit: |_, v| {
            let c = f32_lit(c);
            quote! { #c / #v }
        },
    }
}

/// `Increasing` for a positive factor, `Decreasing` for a negative one.
fn monotone_by_sign(c: f32) -> Order {
    if c > 0.0 {
        Order::Increasing
    } else if c < 0.0 {
        Order::Decreasing
    } else {
        Order::Neither
    }
}

/// `v * v`, with `v` named once when it is more than a name (it is read twice).
fn square_of(v: &TokenStream) -> TokenStream {
    let mut tokens = v.clone().into_iter();
    match (tokens.next(), tokens.next()) {
        (Some(proc_macro2::TokenTree::Ident(_)), None) => quote! { #v * #v },
        _ => quote! { { let v: f32 = #v; v * v } },
    }
}

/// An f32 literal token (`f32::NAN` and the infinities by name).
pub fn f32_lit(x: f32) -> TokenStream {
    if x.is_nan() {
        quote! { f32::NAN }
    } else if x == f32::INFINITY {
        quote! { f32::INFINITY }
    } else if x == f32::NEG_INFINITY {
        quote! { f32::NEG_INFINITY }
    } else {
        let lit = proc_macro2::Literal::f32_suffixed(x);
        quote! { #lit }
    }
}

// ---------------------------------------------------------------------------------------
// f64 helpers of the reference semantics
// ---------------------------------------------------------------------------------------

/// SELU scale (Klambauer et al.).
const SELU_SCALE: f64 = 1.050_700_987_355_480_5;
/// SELU alpha (Klambauer et al.).
const SELU_ALPHA: f64 = 1.673_263_242_354_377_3;

/// `min(max(x, lo), hi)`, NaN stays NaN (`max` wins when `lo > hi`, as numpy's clip).
pub fn clip(x: f64, lo: f64, hi: f64) -> f64 {
    if x.is_nan() {
        x
    } else {
        x.max(lo).min(hi)
    }
}

/// `1 / (1 + e^-x)`.
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `ln(1 + e^x)` without overflow: `max(x, 0) + ln(1 + e^-|x|)`.
pub fn softplus(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// The error function.
pub fn erf(x: f64) -> f64 {
    cody_erf(x, false)
}

/// The complementary error function `1 - erf(x)`.
pub fn erfc(x: f64) -> f64 {
    cody_erf(x, true)
}

// W. J. Cody, "Rational Chebyshev approximations for the error function", Math. Comp. 23
// (1969), as in his SPECFUN routine CALERF (relative error below 1e-15 or so).
// The digits are the published ones, more than an f64 holds.
#[allow(clippy::excessive_precision)]
const CODY_A: [f64; 5] = [
    3.16112374387056560e00,
    1.13864154151050156e02,
    3.77485237685302021e02,
    3.20937758913846947e03,
    1.85777706184603153e-1,
];
#[allow(clippy::excessive_precision)]
const CODY_B: [f64; 4] = [
    2.36012909523441209e01,
    2.44024637934444173e02,
    1.28261652607737228e03,
    2.84423683343917062e03,
];
#[allow(clippy::excessive_precision)]
const CODY_C: [f64; 9] = [
    5.64188496988670089e-1,
    8.88314979438837594e00,
    6.61191906371416295e01,
    2.98635138197400131e02,
    8.81952221241769090e02,
    1.71204761263407058e03,
    2.05107837782607147e03,
    1.23033935479799725e03,
    2.15311535474403846e-8,
];
#[allow(clippy::excessive_precision)]
const CODY_D: [f64; 8] = [
    1.57449261107098347e01,
    1.17693950891312499e02,
    5.37181101862009858e02,
    1.62138957456669019e03,
    3.29079923573345963e03,
    4.36261909014324716e03,
    3.43936767414372164e03,
    1.23033935480374942e03,
];
#[allow(clippy::excessive_precision)]
const CODY_P: [f64; 6] = [
    3.05326634961232344e-1,
    3.60344899949804439e-1,
    1.25781726111229246e-1,
    1.60837851487422766e-2,
    6.58749161529837803e-4,
    1.63153871373020978e-2,
];
#[allow(clippy::excessive_precision)]
const CODY_Q: [f64; 5] = [
    2.56852019228982242e00,
    1.87295284992346047e00,
    5.27905102951428412e-1,
    6.05183413124413191e-2,
    2.33520497626869185e-3,
];

/// Cody's CALERF: `erf(x)`, or `erfc(x)` when `complement`.
fn cody_erf(x: f64, complement: bool) -> f64 {
    if x.is_nan() {
        return x;
    }
    let y = x.abs();
    if y <= 0.46875 {
        // erf(x) = x * R(x^2) near zero.
        let z = if y > 1.11e-16 { y * y } else { 0.0 };
        let [.., a3, a4] = CODY_A;
        let [.., b3] = CODY_B;
        let mut num = a4 * z;
        let mut den = z;
        for (a, b) in CODY_A.iter().zip(&CODY_B).take(3) {
            num = (num + a) * z;
            den = (den + b) * z;
        }
        let erf = x * (num + a3) / (den + b3);
        return if complement { 1.0 - erf } else { erf };
    }
    // erfc(|x|) = exp(-x^2) * R(|x|).
    let erfc_y = if y <= 4.0 {
        let [.., c7, c8] = CODY_C;
        let [.., d7] = CODY_D;
        let mut num = c8 * y;
        let mut den = y;
        for (c, d) in CODY_C.iter().zip(&CODY_D).take(7) {
            num = (num + c) * y;
            den = (den + d) * y;
        }
        exp_minus_square(y) * ((num + c7) / (den + d7))
    } else if y < 26.543 {
        let z = 1.0 / (y * y);
        let [.., p4, p5] = CODY_P;
        let [.., q4] = CODY_Q;
        let mut num = p5 * z;
        let mut den = z;
        for (p, q) in CODY_P.iter().zip(&CODY_Q).take(4) {
            num = (num + p) * z;
            den = (den + q) * z;
        }
        let r = z * (num + p4) / (den + q4);
        let frac_1_sqrt_pi = 0.5 * std::f64::consts::FRAC_2_SQRT_PI;
        exp_minus_square(y) * ((frac_1_sqrt_pi - r) / y)
    } else {
        0.0
    };
    match (complement, x < 0.0) {
        (true, false) => erfc_y,
        (true, true) => 2.0 - erfc_y,
        (false, false) => (0.5 - erfc_y) + 0.5,
        (false, true) => -((0.5 - erfc_y) + 0.5),
    }
}

/// `exp(-y^2)` split as in CALERF to keep the rounding error of `y^2` out of the exponent.
fn exp_minus_square(y: f64) -> f64 {
    let head = (y * 16.0).trunc() / 16.0;
    let delta = (y - head) * (y + head);
    (-head * head).exp() * (-delta).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_and_erfc_match_reference_values() {
        // Python's math.erf / math.erfc.
        let table: [(f64, f64, f64); 17] = [
            (-6.0, -1.0, 2.0),
            (-3.2, -0.9999939742388483, 1.9999939742388482),
            (-1.5, -0.9661051464753108, 1.9661051464753108),
            (-0.5, -0.5204998778130465, 1.5204998778130465),
            (-0.1, -0.1124629160182849, 1.1124629160182848),
            (0.0, 0.0, 1.0),
            (1e-20, 1.1283791670955125e-20, 1.0),
            (0.2, 0.22270258921047847, 0.7772974107895215),
            (0.46875, 0.49261347321793797, 0.507386526782062),
            (0.5, 0.5204998778130465, 0.4795001221869535),
            (1.0, 0.8427007929497149, 0.15729920705028513),
            (2.0, 0.9953222650189527, 0.004677734981047265),
            (3.9, 0.9999999652077514, 3.479224859723177e-08),
            (4.1, 0.9999999932999724, 6.700027654084918e-09),
            (5.0, 0.9999999999984626, 1.5374597944280351e-12),
            (10.0, 1.0, 2.088487583762545e-45),
            (27.0, 1.0, 5.23705e-319),
        ];
        for (x, want_erf, want_erfc) in table {
            let e = erf(x);
            assert!(
                (e - want_erf).abs() <= 1e-15 * want_erf.abs().max(1e-300),
                "erf({x}) = {e}, want {want_erf}"
            );
            let c = erfc(x);
            assert!(
                (c - want_erfc).abs() <= 1e-13 * want_erfc.abs() + 1e-300,
                "erfc({x}) = {c}, want {want_erfc}"
            );
        }
    }

    #[test]
    fn erf_matches_its_taylor_series() {
        // erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1)), fine in f64 for |x| <= 2.
        for i in -200..=200 {
            let x = f64::from(i) / 100.0;
            let mut term = x; // (-1)^n x^(2n+1) / n!
            let mut sum = 0.0;
            for n in 0..60 {
                sum += term / f64::from(2 * n + 1);
                term *= -x * x / f64::from(n + 1);
            }
            let series = sum * std::f64::consts::FRAC_2_SQRT_PI;
            assert!(
                (erf(x) - series).abs() < 1e-14,
                "erf({x}) = {}, series {series}",
                erf(x)
            );
        }
    }
}
