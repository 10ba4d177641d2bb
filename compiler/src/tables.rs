//! The facts of the paper, as data, in one place: the mapping types (Table 2, DESIGN.md
//! §3; each op states its own in its family file, [`crate::ops::facts`]), the fusion
//! lattice (Table 3, DESIGN.md §4), the ops with algebraic properties and the
//! rewrite-rule registry (§4.2, DESIGN.md §5).
//!
//! The planner (`fuse`), the rewriter (`rewrite`), the report and the docs read these
//! tables; nothing else encodes them again.

use crate::ir::{Graph, Node, Op};
use crate::rewrite::Patch;

/// How the elements of an op's output depend on the elements of its inputs (paper §3.1).
/// The order is the complexity order used when an op has several inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MappingType {
    /// Each output element reads one input element at the same position.
    OneToOne,
    /// Same elements, new shape (reshape, flatten, squeeze, unsqueeze).
    Reorganize,
    /// Same elements, permuted (transpose).
    Shuffle,
    /// One input element feeds several outputs (broadcast, expand, gather, resize, pad).
    OneToMany,
    /// Each output reads many inputs (conv, matmul, pooling, reductions, normalizations).
    ManyToMany,
}

impl MappingType {
    /// All five, in table order (rows and columns of [`FUSION_TABLE`]).
    pub const ALL: [MappingType; 5] = [
        MappingType::OneToOne,
        MappingType::OneToMany,
        MappingType::ManyToMany,
        MappingType::Reorganize,
        MappingType::Shuffle,
    ];

    /// Lowercase name, as used in messages and reports (`many-to-many`).
    pub fn name(self) -> &'static str {
        match self {
            MappingType::OneToOne => "one-to-one",
            MappingType::OneToMany => "one-to-many",
            MappingType::ManyToMany => "many-to-many",
            MappingType::Reorganize => "reorganize",
            MappingType::Shuffle => "shuffle",
        }
    }

    /// Index in [`MappingType::ALL`] (row/column of the fusion table).
    pub fn index(self) -> usize {
        match self {
            MappingType::OneToOne => 0,
            MappingType::OneToMany => 1,
            MappingType::ManyToMany => 2,
            MappingType::Reorganize => 3,
            MappingType::Shuffle => 4,
        }
    }
}

/// The mapping type of one node, given the shapes it sees.
///
/// Parameters (weights) do not count: a conv's or a batch norm's per-channel vectors are
/// part of the op. A binary op or `where` whose data operands all have the output's shape
/// is One-to-One; with broadcasting it is One-to-Many.
pub fn classify(graph: &Graph, node: &Node) -> MappingType {
    let out = graph.shape(node.output);
    let data_operands_match = node
        .inputs
        .iter()
        .filter(|&&v| {
            !matches!(
                graph.values.get(v).map(|v| &v.kind),
                Some(crate::ir::ValueKind::Param(_))
            )
        })
        .all(|&v| graph.shape(v) == out);
    classify_op(&node.op, data_operands_match)
}

/// The mapping type of an op, as its family file states it ([`crate::ops::facts`]);
/// `same_shape` says whether its data operands all have the output's shape (decides
/// elementwise vs broadcasting ops).
pub fn classify_op(op: &Op, same_shape: bool) -> MappingType {
    crate::ops::facts(op).mapping.of(same_shape)
}

/// Whether a pair may fuse (the colours of Table 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Colour {
    /// Legal and profitable: fuse.
    Green,
    /// Legal; fuse when the cost model says it pays.
    Yellow,
    /// Illegal or clearly unprofitable: never fuse.
    Red,
}

/// One cell of the fusion table: the colour and, unless red, the fused op's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FusionCell {
    /// May the pair fuse?
    pub colour: Colour,
    /// The mapping type of the fused pair (`None` for red cells).
    pub result: Option<MappingType>,
}

const fn cell(colour: Colour, result: MappingType) -> FusionCell {
    FusionCell {
        colour,
        result: Some(result),
    }
}

const RED: FusionCell = FusionCell {
    colour: Colour::Red,
    result: None,
};

/// Table 3: `FUSION_TABLE[first][second]` for `first -> second`, rows and columns in
/// [`MappingType::ALL`] order (O2O, O2M, M2M, Reorg, Shuffle).
///
/// The paper leaves five colours unstated; these are our choice (DESIGN.md §4):
/// O2M -> O2M is yellow (a second broadcast can multiply reads), and
/// Reorg/Shuffle -> Reorg/Shuffle are green (both are pure index translations).
pub const FUSION_TABLE: [[FusionCell; 5]; 5] = {
    use Colour::*;
    use MappingType::*;
    [
        // first = One-to-One
        [
            cell(Green, OneToOne),
            cell(Green, OneToMany),
            cell(Green, ManyToMany),
            cell(Green, Reorganize),
            cell(Green, Shuffle),
        ],
        // first = One-to-Many  (O2M -> O2M yellow: our choice)
        [
            cell(Green, OneToMany),
            cell(Yellow, OneToMany),
            RED,
            cell(Yellow, OneToMany),
            cell(Yellow, OneToMany),
        ],
        // first = Many-to-Many
        [
            cell(Green, ManyToMany),
            cell(Yellow, ManyToMany),
            RED,
            cell(Yellow, ManyToMany),
            cell(Yellow, ManyToMany),
        ],
        // first = Reorganize  (-> Reorg and -> Shuffle green: our choice)
        [
            cell(Green, Reorganize),
            cell(Yellow, OneToMany),
            cell(Yellow, ManyToMany),
            cell(Green, Reorganize),
            cell(Green, Reorganize),
        ],
        // first = Shuffle  (-> Reorg and -> Shuffle green: our choice)
        [
            cell(Green, Shuffle),
            cell(Yellow, OneToMany),
            cell(Yellow, ManyToMany),
            cell(Green, Reorganize),
            cell(Green, Shuffle),
        ],
    ]
};

/// The cell for `first -> second`.
pub fn fusion_cell(first: MappingType, second: MappingType) -> FusionCell {
    FUSION_TABLE
        .get(first.index())
        .and_then(|row| row.get(second.index()))
        .copied()
        .unwrap_or(RED)
}

/// Whether an op has one of the associative, commutative or distributive properties (or
/// commutes with them: elementwise functions and pure data movement). The rewriter cuts
/// the graph into partitions at the ops that do not (paper §4.2). Which ops count is our
/// reading of the paper, which names only "One-to-One" ops and "several reduction
/// operators". One `match`, no `_` arm.
pub fn algebraic(op: &Op) -> bool {
    match op {
        Op::Unary(_)
        | Op::Binary(_)
        | Op::Where
        | Op::Reduce { .. }
        | Op::MatMul
        | Op::Linear
        | Op::Reshape(_)
        | Op::Transpose { .. }
        | Op::Slice { .. }
        | Op::Concat { .. }
        | Op::Expand
        | Op::Gather { .. }
        | Op::Resize(_)
        | Op::MaxPool2d(_)
        | Op::AvgPool2d(_)
        | Op::GlobalAvgPool
        | Op::GlobalMaxPool => true,
        Op::Prelu
        | Op::Conv2d(_)
        | Op::ConvTranspose2d(_)
        | Op::Softmax { .. }
        | Op::LogSoftmax { .. }
        | Op::LayerNorm { .. }
        | Op::BatchNorm { .. }
        | Op::GroupNorm { .. }
        | Op::InstanceNorm { .. }
        | Op::Pad { .. }
        | Op::Resample(_)
        | Op::Scan { .. }
        // load-time weight layout and its product: made after the rewrites (stage
        // `prepare`); no rule knows them
        | Op::MatMulPanels { .. }
        | Op::PackPanels
        | Op::TileConvWeights { .. }
        | Op::WinogradWeights { .. } => false,
    }
}

/// The family of a rewrite rule: the paper's three properties plus what every compiler has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// Regroups products and quotients (paper: 45 rules).
    Associative,
    /// Factors common operands out of sums (paper: 38 rules).
    Distributive,
    /// Swaps operands or moves ops past each other (paper: 66 rules).
    Commutative,
    /// Combines scalar constants.
    Folding,
    /// Removes ops that do nothing, pairs that cancel, pairs that compose into one.
    Identity,
    /// Replaces an op or a pattern by a cheaper one with the same value.
    Strength,
    /// Common-subexpression elimination.
    Cse,
}

impl Family {
    /// All families, in registry order.
    pub const ALL: [Family; 7] = [
        Family::Identity,
        Family::Cse,
        Family::Folding,
        Family::Strength,
        Family::Associative,
        Family::Distributive,
        Family::Commutative,
    ];

    /// Lowercase name (`associative`).
    pub fn name(self) -> &'static str {
        match self {
            Family::Associative => "associative",
            Family::Distributive => "distributive",
            Family::Commutative => "commutative",
            Family::Folding => "folding",
            Family::Identity => "identity",
            Family::Strength => "strength",
            Family::Cse => "cse",
        }
    }
}

/// One rewrite rule. `apply` matches a pattern rooted at a node and proposes a
/// [`Patch`]; the engine prices it (FLOPs, loads, ops before and after) and decides.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    /// `<family>_<effect>`; also the name of its test in `compiler/tests/rewrite_rules.rs`.
    pub name: &'static str,
    /// Its family.
    pub family: Family,
    /// Results differ by ordinary rounding only (README "Floating-point policy"); a
    /// value-changing rule runs only with `#![rewrite(fast_math)]`.
    pub exact: bool,
    /// What it rewrites, `before -> after`.
    pub doc: &'static str,
    /// The matcher and builder.
    pub apply: fn(&Graph, usize) -> Option<Patch>,
}

macro_rules! rules {
    ($($name:ident: $family:ident, $exact:literal, $doc:literal;)*) => {
        /// Every rewrite rule, in priority order (on equal gains the earlier rule wins).
        pub static RULES: &[Rule] = &[
            $(Rule { name: stringify!($name), family: Family::$family, exact: $exact, doc: $doc, apply: crate::rewrite::rules::$name },)*
        ];
    };
}

rules! {
    identity_mul_one: Identity, true, "x * 1 -> x";
    identity_div_one: Identity, true, "x / 1 -> x";
    identity_add_zero: Identity, true, "x + 0 -> x (a -0 input gives -0 instead of +0)";
    identity_sub_zero: Identity, true, "x - 0 -> x";
    identity_pow_one: Identity, true, "pow(x, 1) -> x";
    identity_leaky_relu_one: Identity, true, "leaky_relu(x, 1) -> x";
    identity_clip_unbounded: Identity, true, "clip(x, -inf, inf) -> x";
    identity_neg_neg: Identity, true, "-(-x) -> x";
    identity_abs_abs: Identity, true, "abs(abs(x)) -> abs(x)";
    identity_relu_relu: Identity, true, "relu(relu(x)) -> relu(x)";
    identity_recip_recip: Identity, true, "1 / (1 / x) -> x (differs only for subnormal x, where 1 / x overflows)";
    identity_abs_of_neg: Identity, true, "abs(-x) -> abs(x)";
    identity_abs_of_nonneg: Identity, true, "abs(y) -> y for y >= 0 by construction (relu, exp, square, ...)";
    identity_relu_of_nonneg: Identity, true, "relu(y) -> y for y >= 0 by construction";
    identity_square_of_neg: Identity, true, "square(-x) -> square(x), square(abs(x)) -> square(x)";
    identity_rounding_of_integral: Identity, true, "floor/ceil/round(y) -> y for y already floor/ceil/round";
    identity_max_self: Identity, true, "maximum(x, x) -> x";
    identity_min_self: Identity, true, "minimum(x, x) -> x";
    identity_where_same: Identity, true, "where(c, a, a) -> a";
    identity_reshape_noop: Identity, true, "reshape(x) to its own shape -> x";
    identity_reshape_pair_cancel: Identity, true, "reshape(reshape(x)) back to x's shape -> x (squeeze(unsqueeze(x)), ...)";
    identity_reshape_reshape: Identity, true, "reshape(reshape(x)) -> reshape(x)";
    identity_transpose_noop: Identity, true, "transpose(x) by the identity permutation -> x";
    identity_transpose_pair_cancel: Identity, true, "transpose(transpose(x)) that restores x -> x";
    identity_transpose_transpose: Identity, true, "transpose(transpose(x)) -> transpose(x) with the composed permutation";
    identity_transpose_to_reshape: Identity, true, "transpose(x) moving only length-1 axes -> reshape(x)";
    identity_slice_full: Identity, true, "slice(x) taking all of x -> x";
    identity_slice_slice: Identity, true, "slice(slice(x)) -> slice(x)";
    identity_slice_of_concat: Identity, true, "slice(concat(a, b)) inside one operand -> slice(that operand)";
    identity_concat_adjacent_slices: Identity, true, "concat(slice(x, a..b), slice(x, b..c)) -> slice(x, a..c)";
    identity_concat_single: Identity, true, "concat(x) -> x";
    identity_concat_of_concat: Identity, true, "concat(a, concat(b, c)) -> concat(a, b, c)";
    identity_expand_noop: Identity, true, "expand(x) to its own shape -> x";
    identity_pad_zero: Identity, true, "pad(x) by zero -> x";
    identity_reduce_unit_axes: Identity, true, "reduce_*(x) over length-1 axes -> x (reshaped)";
    identity_pool_unit_window: Identity, true, "max_pool2d / avg_pool2d with a 1x1 window, stride 1 -> x";
    identity_global_pool_unit: Identity, true, "global pooling of a 1x1 image -> x";
    identity_resize_same: Identity, true, "resize(x) (nearest) to its own size -> x";
    identity_scan_unit_axis: Identity, true, "cumsum(x) (any inclusive scan) along a length-1 axis -> x";
    cse_identical: Cse, true, "a node equal to an earlier one (op, operands, shape) -> the earlier one";
    cse_commuted: Cse, true, "b + a after a + b (also *, maximum, minimum) -> the earlier one";
    folding_mul_mul: Folding, true, "(x * a) * b -> x * (a * b)";
    folding_div_div: Folding, true, "(x / a) / b -> x / (a * b)";
    folding_mul_div: Folding, true, "(x * a) / b -> x * (a / b)";
    folding_div_mul: Folding, true, "(x / a) * b -> x * (b / a)";
    folding_neg_of_scale: Folding, true, "-(x * c) -> x * -c, -(x / c) -> x / -c";
    folding_scale_of_neg: Folding, true, "(-x) * c -> x * -c, (-x) / c -> x / -c, c / (-x) -> -c / x";
    folding_neg_of_shift: Folding, true, "-(x + c) -> (-c) - x, -(x - c) -> c - x, -(c - x) -> x - c";
    folding_shift_of_neg: Folding, true, "(-x) + c -> c - x, (-x) - c -> (-c) - x, c - (-x) -> x + c";
    folding_shift_shift: Folding, false, "(x + a) + b -> x + (a + b) (reassociates a sum: cancellation)";
    folding_affine_chain: Folding, false, "(x * a + b) * c + d (3+ scalar ops) -> x * m + k (reassociates sums)";
    folding_clamp_clamp: Folding, true, "clip(clip(x, a, b), c, d) -> clip(x, max(a, c), min(b, d)) (relu, relu6 are clips)";
    folding_batch_norm_into_conv_positive_eps: Folding, true, "batch_norm(conv2d(x, w, b)) -> conv2d(x, w * s, (b - mean) * s + beta), s = gamma / sqrt(var + eps), eps > 0 (s finite and at most |gamma| / sqrt(eps): the scale regroups into the conv's sum as (x * a) * b -> x * (a * b) does)";
    folding_batch_norm_into_conv: Folding, false, "the same fold for eps <= 0 (a zero variance makes s infinite: the folded weights turn an infinite output into NaN)";
    folding_batch_norm_into_linear_positive_eps: Folding, true, "batch_norm(linear(x, w, b)) on [N, C] -> linear(x, w * s, (b - mean) * s + beta), eps > 0 (exact like the conv form)";
    folding_batch_norm_into_linear: Folding, false, "the same fold for eps <= 0 (value-changing like the conv form)";
    folding_leaky_relu_chain: Folding, true, "leaky_relu(leaky_relu(x, a), b) -> leaky_relu(x, a * b) for a, b > 0";
    folding_pow_pow_integer: Folding, true, "pow(pow(x, a), b) -> pow(x, a * b) for whole a, b";
    folding_scalar_div_scale: Folding, true, "c / (x * a) -> (c / a) / x, (c / x) * a -> (c * a) / x, ...";
    strength_div_pow2: Strength, true, "x / 2^k -> x * 2^-k (bit for bit)";
    strength_div_to_mul: Strength, true, "x / c -> x * (1 / c) (one more rounding, below 1.5 ulp)";
    strength_pow_two: Strength, true, "pow(x, 2) -> square(x)";
    strength_pow_three: Strength, true, "pow(x, 3) -> x * square(x)";
    strength_pow_half: Strength, true, "pow(x, 0.5) -> sqrt(x) (differs at x = -inf)";
    strength_pow_neg_one: Strength, true, "pow(x, -1) -> reciprocal(x)";
    strength_pow_neg_two: Strength, true, "pow(x, -2) -> reciprocal(square(x))";
    strength_pow_neg_half: Strength, false, "pow(x, -0.5) -> rsqrt(x) (-0 gives -inf instead of +inf)";
    strength_mul_self_to_square: Strength, true, "x * x -> square(x) (one load)";
    strength_add_self_to_double: Strength, true, "x + x -> x * 2";
    strength_sqrt_times_sqrt_nonneg: Strength, true, "sqrt(x) * sqrt(x) -> x for x >= 0 by construction";
    strength_sqrt_times_sqrt: Strength, false, "sqrt(x) * sqrt(x) -> x (NaN becomes x for x < 0)";
    strength_square_of_sqrt_nonneg: Strength, true, "square(sqrt(x)) -> x for x >= 0 by construction";
    strength_square_of_sqrt: Strength, false, "square(sqrt(x)) -> x (NaN becomes x for x < 0)";
    strength_sqrt_of_square: Strength, true, "sqrt(square(x)) -> abs(x)";
    strength_exp_times_exp: Strength, false, "exp(a) * exp(b) -> exp(a + b) (overflow moves; the rounding of a + b is amplified)";
    strength_exp_over_exp: Strength, false, "exp(a) / exp(b) -> exp(a - b)";
    strength_log_plus_log: Strength, false, "log(a) + log(b) -> log(a * b) (a * b can overflow; two negatives give a number)";
    strength_log_minus_log: Strength, false, "log(a) - log(b) -> log(a / b)";
    strength_log_of_exp: Strength, false, "log(exp(x)) -> x (inf becomes x for x > 88)";
    strength_exp_of_log: Strength, false, "exp(log(x)) -> x (NaN becomes x for x < 0)";
    strength_recip_of_sqrt: Strength, true, "1 / sqrt(x) -> rsqrt(x)";
    strength_div_by_sqrt: Strength, true, "a / sqrt(b) -> a * rsqrt(b)";
    strength_mul_by_recip: Strength, true, "a * reciprocal(b) -> a / b";
    strength_div_by_recip: Strength, true, "a / reciprocal(b) -> a * b";
    strength_reciprocal_scalar_div: Strength, true, "c / reciprocal(x) -> x * c, reciprocal(c / x) -> x / c";
    strength_sigmoid_pattern: Strength, true, "1 / (1 + exp(-x)) -> sigmoid(x)";
    strength_silu_pattern: Strength, true, "x * sigmoid(x) -> silu(x)";
    strength_gelu_pattern: Strength, true, "x * (1 + erf(x / sqrt 2)) * 0.5 -> gelu(x), x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3))) * 0.5 -> gelu_tanh(x), grouped in any way (an ONNX export's GELU)";
    strength_softplus_pattern: Strength, false, "log(1 + exp(x)) -> softplus(x) (inf becomes x for x > 88)";
    strength_neg_times_neg: Strength, true, "(-a) * (-b) -> a * b";
    strength_add_of_neg: Strength, true, "a + (-b) -> a - b";
    strength_sub_of_neg: Strength, true, "a - (-b) -> a + b";
    associative_abs_product: Associative, true, "abs(a) * abs(b) -> abs(a * b)";
    associative_recip_product: Associative, true, "reciprocal(a) * reciprocal(b) -> reciprocal(a * b)";
    associative_square_product: Associative, true, "square(a) * square(b) -> square(a * b)";
    associative_recip_square: Associative, true, "Recip(A) * Recip(A * B) -> Square(Recip(A)) * Recip(B) (paper, Table 4)";
    associative_sqrt_product_nonneg: Associative, true, "sqrt(a) * sqrt(b) -> sqrt(a * b) for a, b >= 0 by construction";
    associative_sqrt_product: Associative, false, "sqrt(a) * sqrt(b) -> sqrt(a * b) (two negatives give a number)";
    associative_rsqrt_product_nonneg: Associative, true, "rsqrt(a) * rsqrt(b) -> rsqrt(a * b) for a, b >= 0 by construction";
    associative_sqrt_pair_nonneg: Associative, true, "(A * sqrt(B)) * (sqrt(B) * C) -> (A * B) * C for B >= 0 by construction (paper, Table 4)";
    associative_sqrt_pair: Associative, false, "(A * sqrt(B)) * (sqrt(B) * C) -> (A * B) * C (paper; B < 0 gives a number)";
    associative_shared_factor: Associative, true, "(A * R) * (R * C) -> (A * C) * square(R) (paper, Table 4, with R = ReduceSum(B))";
    associative_div_div: Associative, true, "(A / B) / C -> A / (B * C)";
    associative_div_of_div: Associative, true, "A / (B / C) -> (A * C) / B";
    associative_recip_of_div: Associative, true, "reciprocal(A / B) -> B / A";
    associative_recip_div: Associative, true, "reciprocal(A) / B -> reciprocal(A * B)";
    associative_scaled_product: Associative, true, "(A * a) * (B * b) -> (A * B) * (a * b)";
    associative_max_absorb: Associative, true, "maximum(maximum(A, B), B) -> maximum(A, B)";
    associative_min_absorb: Associative, true, "minimum(minimum(A, B), B) -> minimum(A, B)";
    associative_add_sub_cancel: Associative, false, "(A + B) - B -> A (B = inf gives NaN before; cancellation)";
    associative_sub_add_cancel: Associative, false, "(A - B) + B -> A (B = inf gives NaN before; cancellation)";
    associative_mul_div_cancel: Associative, false, "(A * B) / B -> A (B = 0 or inf gives NaN before)";
    associative_div_mul_cancel: Associative, false, "(A / B) * B -> A (B = 0 or inf gives NaN before)";
    associative_abs_quotient: Associative, true, "abs(a) / abs(b) -> abs(a / b)";
    associative_square_quotient: Associative, true, "square(a) / square(b) -> square(a / b)";
    associative_sqrt_quotient_nonneg: Associative, true, "sqrt(a) / sqrt(b) -> sqrt(a / b) for a, b >= 0 by construction";
    associative_sqrt_quotient: Associative, false, "sqrt(a) / sqrt(b) -> sqrt(a / b) (two negatives give a number)";
    associative_scaled_quotient: Associative, true, "(A * a) / (B * b) -> (A / B) * (a / b)";
    associative_shift_into_bias: Associative, false, "conv2d(x, W, b) + c -> conv2d(x, W, b + c) (also conv_transpose2d, linear, - c; regroups a sum)";
    associative_reduce_extreme_chain: Associative, true, "reduce_max(reduce_max(x, A, keepdims), B) -> reduce_max(x, A + B) (also min)";
    distributive_factor_mul_add: Distributive, true, "A * B + A * C -> A * (B + C) (paper, Fig. 2b)";
    distributive_factor_mul_sub: Distributive, true, "A * B - A * C -> A * (B - C)";
    distributive_factor_div_add: Distributive, false, "A / C + B / C -> (A + B) / C (C = 0 turns inf - inf = NaN into inf)";
    distributive_factor_div_sub: Distributive, false, "A / C - B / C -> (A - B) / C (C = 0 turns inf - inf = NaN into inf)";
    distributive_add_self_product: Distributive, true, "A + A * B -> A * (B + 1) (paper, Table 4)";
    distributive_sub_self_product: Distributive, true, "A - A * B -> A * (1 - B), A * B - A -> A * (B - 1)";
    distributive_square_minus_product: Distributive, true, "Square(S) - S * C -> S * (S - C) (paper, Table 4, S = A + B; also +)";
    distributive_scalar_factor: Distributive, true, "x * a + x * b -> x * (a + b) (also x * a + x, x - x * b, ...)";
    distributive_common_scale: Distributive, true, "A * c + B * c -> (A + B) * c (also -, / c)";
    distributive_neg_sum: Distributive, true, "(-A) + (-B) -> -(A + B), (-A) - (-B) -> B - A";
    distributive_matmul_left: Distributive, false, "A @ B + A @ C -> A @ (B + C) (regroups long sums)";
    distributive_matmul_right: Distributive, false, "A @ C + B @ C -> (A + B) @ C (regroups long sums)";
    distributive_linear_shared_input: Distributive, false, "linear(x, W1, b1) + linear(x, W2, b2) -> linear(x, W1 + W2, b1 + b2) (regroups long sums)";
    distributive_neg_of_difference: Distributive, true, "-(A - B) -> B - A";
    distributive_where_common_operand: Distributive, true, "where(c, A op X, B op X) -> where(c, A, B) op X (op: + - * /)";
    distributive_extreme_of_shifted: Distributive, true, "maximum(A + C, B + C) -> maximum(A, B) + C (also minimum, - C)";
    distributive_extreme_of_scaled: Distributive, true, "maximum(A * c, B * c) -> maximum(A, B) * c for c > 0, minimum for c < 0 (also / c)";
    distributive_reduce_of_sum: Distributive, false, "reduce_sum(A) + reduce_sum(B) -> reduce_sum(A + B) (also mean, -; regroups sums)";
    distributive_conv_shared_input: Distributive, false, "conv2d(x, W1, b1) + conv2d(x, W2, b2) -> conv2d(x, W1 + W2, b1 + b2) (regroups sums)";
    distributive_scale_into_weights: Distributive, false, "conv2d(x, W, b) * c -> conv2d(x, W * c, b * c) (also conv_transpose2d, linear, / c, -; the scale moves inside the sum)";
    commutative_swap_product: Commutative, true, "(X * B) * C -> (X * C) * B, only when it enables another rule (paper: Abs(A) * B * Abs(C))";
    commutative_transpose_past_unary: Commutative, true, "u(transpose(x)) -> transpose(u(x)), only when it enables another rule";
    commutative_reshape_past_unary: Commutative, true, "u(reshape(x)) -> reshape(u(x)), only when it enables another rule";
    commutative_slice_past_unary: Commutative, true, "slice(u(x)) -> u(slice(x))";
    commutative_slice_past_binary: Commutative, true, "slice(a op b) -> slice(a) op slice(b)";
    commutative_unary_past_expand: Commutative, true, "u(expand(x)) -> expand(u(x))";
    commutative_unary_past_resize: Commutative, true, "u(resize(x)) (nearest) -> resize(u(x))";
    commutative_unary_before_gather: Commutative, true, "u(gather(x, i)) -> gather(u(x), i) when x is the smaller";
    commutative_concat_of_unary: Commutative, true, "concat(u(a), u(b)) -> u(concat(a, b))";
    commutative_reduce_sum_of_scale: Commutative, true, "reduce_sum(x * c) -> reduce_sum(x) * c (also mean, / c, -x)";
    commutative_reduce_extreme_of_increasing: Commutative, true, "reduce_max(f(x)) -> f(reduce_max(x)) for nondecreasing f (also min)";
    commutative_reduce_extreme_of_decreasing: Commutative, true, "reduce_max(f(x)) -> f(reduce_min(x)) for nonincreasing f (also min)";
    commutative_max_pool_of_increasing: Commutative, true, "max_pool2d(f(x)) -> f(max_pool2d(x)) for nondecreasing f (relu)";
    commutative_global_max_pool_of_increasing: Commutative, true, "global_max_pool2d(f(x)) -> f(global_max_pool2d(x)) for nondecreasing f";
    commutative_avg_pool_of_scale: Commutative, true, "avg_pool2d(x * c) -> avg_pool2d(x) * c (also global, / c, -x)";
    commutative_matmul_of_scale: Commutative, true, "(A * c) @ B -> (A @ B) * c (also A @ (B * c), / c, -)";
    commutative_scale_into_matmul: Commutative, true, "(A @ B) * c -> (A * c) @ B (also / c, -) when A is smaller than the product";
    commutative_reduce_prod_of_exp: Commutative, false, "ReduceProd(Exp(A)) -> Exp(ReduceSum(A)) (paper, Table 4; overflow moves)";
    commutative_unary_past_where: Commutative, true, "where(c, u(a), u(b)) -> u(where(c, a, b))";
    commutative_unary_past_pad: Commutative, true, "u(pad(x, v)) -> pad(u(x), u(v)) (edge and reflect borders: any u)";
    commutative_scale_past_resize: Commutative, true, "resize(x) * c -> resize(x * c) (bilinear; also / c, -x)";
    commutative_scale_into_conv_transpose: Commutative, true, "conv_transpose2d(x, W) * c -> conv_transpose2d(x * c, W) without bias (also / c, -x)";
}

#[cfg(test)]
mod tests {
    use super::*;
    use Colour::*;
    use MappingType::*;

    fn assert_cell(
        first: MappingType,
        second: MappingType,
        colour: Colour,
        result: Option<MappingType>,
    ) {
        assert_eq!(
            fusion_cell(first, second),
            FusionCell { colour, result },
            "{} -> {}",
            first.name(),
            second.name()
        );
    }

    // One test per cell of Table 3 (DESIGN.md §4).
    #[test]
    fn o2o_o2o() {
        assert_cell(OneToOne, OneToOne, Green, Some(OneToOne));
    }
    #[test]
    fn o2o_o2m() {
        assert_cell(OneToOne, OneToMany, Green, Some(OneToMany));
    }
    #[test]
    fn o2o_m2m() {
        assert_cell(OneToOne, ManyToMany, Green, Some(ManyToMany));
    }
    #[test]
    fn o2o_reorg() {
        assert_cell(OneToOne, Reorganize, Green, Some(Reorganize));
    }
    #[test]
    fn o2o_shuffle() {
        assert_cell(OneToOne, Shuffle, Green, Some(Shuffle));
    }
    #[test]
    fn o2m_o2o() {
        assert_cell(OneToMany, OneToOne, Green, Some(OneToMany));
    }
    #[test]
    fn o2m_o2m() {
        assert_cell(OneToMany, OneToMany, Yellow, Some(OneToMany));
    }
    #[test]
    fn o2m_m2m() {
        assert_cell(OneToMany, ManyToMany, Red, None);
    }
    #[test]
    fn o2m_reorg() {
        assert_cell(OneToMany, Reorganize, Yellow, Some(OneToMany));
    }
    #[test]
    fn o2m_shuffle() {
        assert_cell(OneToMany, Shuffle, Yellow, Some(OneToMany));
    }
    #[test]
    fn m2m_o2o() {
        assert_cell(ManyToMany, OneToOne, Green, Some(ManyToMany));
    }
    #[test]
    fn m2m_o2m() {
        assert_cell(ManyToMany, OneToMany, Yellow, Some(ManyToMany));
    }
    #[test]
    fn m2m_m2m() {
        assert_cell(ManyToMany, ManyToMany, Red, None);
    }
    #[test]
    fn m2m_reorg() {
        assert_cell(ManyToMany, Reorganize, Yellow, Some(ManyToMany));
    }
    #[test]
    fn m2m_shuffle() {
        assert_cell(ManyToMany, Shuffle, Yellow, Some(ManyToMany));
    }
    #[test]
    fn reorg_o2o() {
        assert_cell(Reorganize, OneToOne, Green, Some(Reorganize));
    }
    #[test]
    fn reorg_o2m() {
        assert_cell(Reorganize, OneToMany, Yellow, Some(OneToMany));
    }
    #[test]
    fn reorg_m2m() {
        assert_cell(Reorganize, ManyToMany, Yellow, Some(ManyToMany));
    }
    #[test]
    fn reorg_reorg() {
        assert_cell(Reorganize, Reorganize, Green, Some(Reorganize));
    }
    #[test]
    fn reorg_shuffle() {
        assert_cell(Reorganize, Shuffle, Green, Some(Reorganize));
    }
    #[test]
    fn shuffle_o2o() {
        assert_cell(Shuffle, OneToOne, Green, Some(Shuffle));
    }
    #[test]
    fn shuffle_o2m() {
        assert_cell(Shuffle, OneToMany, Yellow, Some(OneToMany));
    }
    #[test]
    fn shuffle_m2m() {
        assert_cell(Shuffle, ManyToMany, Yellow, Some(ManyToMany));
    }
    #[test]
    fn shuffle_reorg() {
        assert_cell(Shuffle, Reorganize, Green, Some(Reorganize));
    }
    #[test]
    fn shuffle_shuffle() {
        assert_cell(Shuffle, Shuffle, Green, Some(Shuffle));
    }

    #[test]
    fn exactly_two_red_cells_as_the_paper_counts() {
        let red = FUSION_TABLE
            .iter()
            .flatten()
            .filter(|c| c.colour == Red)
            .count();
        assert_eq!(red, 2);
    }
}
