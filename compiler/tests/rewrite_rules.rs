//! Every rewrite rule of `tables::RULES`, one test each, named after the rule. Each test
//! writes a small model in the DSL where the rule fires, rewrites it with that rule alone
//! (plus, for a commutative move, the rule it enables) and checks:
//!
//! 1. the rule fired, the result passes `check::check`, inputs, parameters and output
//!    shapes are unchanged;
//! 2. the cost fell: FLOPs did not rise, and if they stayed equal, loads did not rise
//!    (`Cost` is compared lexicographically: FLOPs, loads, ops);
//! 3. the reference interpreter gives the same outputs before and after, on 24 random
//!    inputs and on edge inputs (0, -0, +-1, +-1e-12, +-1e12, NaN, ... in every position),
//!    and so does the whole rewriter (every rule of the same exactness);
//! 4. a value-changing rule does not fire without `fast_math`.
//!
//! Tolerance: outputs agree when both are NaN, when they are equal (infinities included),
//! or when `|before - after| <= rtol * max(|before|, |after|, scale)`, where `scale` is the
//! largest finite magnitude at that position among all the values of both graphs that
//! broadcast to the output, or anywhere in a value that does not (the operand of a
//! reduction) (the terms a rewrite regroups: `a * b + a * c` may cancel, and
//! its rounding error is relative to the terms, not to the result). `rtol` is 1e-5 (about
//! 80 ulps) for exact rules and 1e-4 for value-changing ones, which are tested inside the
//! domain where they hold (positive inputs for `exp(log(x))`, |x| <= 10 for `exp(a) *
//! exp(b)`, nonzero divisors for `a / c + b / c`).
//!
//! The property tests at the end rewrite seeded random graphs to a fixed point.

use dnnfusion_compiler::check;
use dnnfusion_compiler::interp;
use dnnfusion_compiler::ir::Graph;
use dnnfusion_compiler::lower_str;
use dnnfusion_compiler::rewrite::{graph_cost, rewrite, RewriteOptions};
use dnnfusion_compiler::tables::{Family, RULES};
use dnnfusion_test_support::Rng;
use ndarray::{ArrayD, IxDyn};

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

/// The shared generator, seeded the way these tests always were (their streams stay the
/// same).
fn seeded(seed: u64) -> Rng {
    Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
}

/// Values every input position takes in turn.
const EDGES: &[f32] = &[
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    -2.0,
    3.0,
    1e-12,
    -1e-12,
    1e12,
    -1e12,
    f32::NAN,
    7.5,
    -0.25,
];

/// Where a rule is tested.
#[derive(Clone, Copy, PartialEq)]
enum Domain {
    /// Every input.
    Any,
    /// `|x|` of every input (for `log`, `sqrt` of value-changing rules).
    Positive,
    /// Inputs clamped to `[-10, 10]` (for `exp` of value-changing rules).
    Moderate,
    /// Zeros replaced by 1 (for value-changing rules that divide by a tensor).
    NonZero,
    /// Zeros and NaNs replaced by 1 (for rules that cancel an operand: `(a * b) / b`).
    FiniteNonZero,
}

impl Domain {
    fn map(self, v: f32) -> f32 {
        match self {
            Domain::Any => v,
            Domain::Positive => v.abs(),
            Domain::Moderate => v.clamp(-10.0, 10.0),
            Domain::NonZero if v == 0.0 => 1.0,
            Domain::NonZero => v,
            Domain::FiniteNonZero if v == 0.0 || v.is_nan() => 1.0,
            Domain::FiniteNonZero => v,
        }
    }
}

#[derive(Clone, Copy)]
struct Spec {
    domain: Domain,
    /// Other rules allowed to run (the rule a commutative move enables).
    helpers: &'static [&'static str],
}

const ANY: Spec = Spec {
    domain: Domain::Any,
    helpers: &[],
};
const POSITIVE: Spec = Spec {
    domain: Domain::Positive,
    helpers: &[],
};
const MODERATE: Spec = Spec {
    domain: Domain::Moderate,
    helpers: &[],
};
const NONZERO: Spec = Spec {
    domain: Domain::NonZero,
    helpers: &[],
};
const FINITE_NONZERO: Spec = Spec {
    domain: Domain::FiniteNonZero,
    helpers: &[],
};

/// The graph of the first model of `source`.
fn graph_of(source: &str) -> Graph {
    let mut models =
        lower_str(source).unwrap_or_else(|e| panic!("{source}\ndoes not lower: {e:?}"));
    models.remove(0).graph
}

/// Input and parameter arrays: random (`edge = None`) or edge values rotated by `edge`.
/// An input named `idx` holds whole numbers in `0..3` (gather indices).
fn arrays(
    graph: &Graph,
    rng: &mut Rng,
    edge: Option<usize>,
    domain: Domain,
) -> (Vec<ArrayD<f32>>, Vec<ArrayD<f32>>) {
    let mut k = 0;
    let mut fill = |id: usize, rng: &mut Rng| {
        let value = &graph.values[id];
        k += 1;
        let data: Vec<f32> = (0..value.len())
            .map(|i| {
                if value.name == "idx" {
                    return rng.below(3) as f32;
                }
                let v = match edge {
                    Some(rot) => EDGES[(i * 5 + k * 3 + rot) % EDGES.len()],
                    None if domain == Domain::Positive => rng.uniform(0.05, 3.0),
                    None => rng.uniform(-3.0, 3.0),
                };
                domain.map(v)
            })
            .collect();
        ArrayD::from_shape_vec(IxDyn(&value.shape), data).unwrap()
    };
    let inputs = graph.inputs.iter().map(|&id| fill(id, rng)).collect();
    let params = graph.params.iter().map(|p| fill(p.value, rng)).collect();
    (inputs, params)
}

/// Every value of the graph (inputs, parameters, node outputs).
fn all_values(graph: &Graph, inputs: &[ArrayD<f32>], params: &[ArrayD<f32>]) -> Vec<ArrayD<f32>> {
    let mut g = graph.clone();
    g.outputs = g.nodes.iter().map(|n| n.output).collect();
    let mut values = interp::interpret(&g, inputs, params).unwrap();
    values.extend(inputs.iter().cloned());
    values.extend(params.iter().cloned());
    values
}

/// Per element of an output of this shape: the largest finite magnitude of the values
/// that broadcast to it (a value that does not, such as the operand of a reduction,
/// counts everywhere with its largest finite magnitude).
fn scale(shape: &[usize], values: &[ArrayD<f32>]) -> ArrayD<f32> {
    let mut s = ArrayD::<f32>::zeros(IxDyn(shape));
    for v in values {
        if let Some(b) = v.broadcast(IxDyn(shape)) {
            s.zip_mut_with(&b, |m, &x| {
                if x.is_finite() {
                    *m = m.max(x.abs());
                }
            });
        } else {
            let top = v
                .iter()
                .filter(|x| x.is_finite())
                .fold(0.0f32, |m, x| m.max(x.abs()));
            s.mapv_inplace(|m| m.max(top));
        }
    }
    s
}

/// `a` and `b` agree to `rtol` of the larger of their magnitudes and the output's `scale`.
fn agree(a: f32, b: f32, scale: f32, rtol: f32) -> bool {
    let magnitude = a.abs().max(b.abs()).max(scale);
    dnnfusion_test_support::within(a, b, rtol * magnitude + 1e-30)
}

/// Evaluates both graphs on random and edge inputs and compares every output.
fn compare(label: &str, before: &Graph, after: &Graph, domain: Domain, rtol: f32) {
    let mut rng = seeded(0x5eed);
    let trials = (0..24).map(|_| None).chain((0..EDGES.len()).map(Some));
    for (trial, edge) in trials.enumerate() {
        let (inputs, params) = arrays(before, &mut rng, edge, domain);
        let want = interp::interpret(before, &inputs, &params)
            .unwrap_or_else(|e| panic!("{label}: before: {e}"));
        let got = interp::interpret(after, &inputs, &params)
            .unwrap_or_else(|e| panic!("{label}: after: {e}"));
        let mut values = all_values(before, &inputs, &params);
        values.extend(all_values(after, &inputs, &params));
        for (o, (w, g)) in want.iter().zip(&got).enumerate() {
            assert_eq!(w.shape(), g.shape(), "{label}: output {o} changed shape");
            let s = scale(w.shape(), &values);
            for ((&a, &b), &sc) in w.iter().zip(g.iter()).zip(s.iter()) {
                assert!(
                    agree(a, b, sc, rtol),
                    "{label}: output {o} differs on trial {trial} ({}): before {a:e}, after {b:e} (scale {sc:e})\ninputs {inputs:?}",
                    if edge.is_some() { "edge inputs" } else { "random inputs" }
                );
            }
        }
    }
}

fn options(fast_math: bool, only: &[&str]) -> RewriteOptions {
    RewriteOptions {
        fast_math,
        only: Some(only.iter().map(|s| s.to_string()).collect()),
        ..RewriteOptions::default()
    }
}

/// The test of one rule (see the module doc).
fn check_rule(rule: &str, source: &str, spec: Spec) {
    let def = RULES
        .iter()
        .find(|r| r.name == rule)
        .unwrap_or_else(|| panic!("no rule {rule}"));
    let source = format!("pub model M{source}");
    let before = graph_of(&source);
    let mut only = vec![rule];
    only.extend(spec.helpers);
    let r = rewrite(&before, &options(!def.exact, &only));
    assert!(
        r.applied.contains(&rule),
        "{rule} did not fire (applied {:?}) on\n{source}",
        r.applied
    );
    assert!(r.errors.is_empty(), "{rule}: {:?}", r.errors);
    check::check(&r.graph).unwrap_or_else(|e| panic!("{rule}: the rewritten graph is broken: {e}"));
    let after = &r.graph;
    assert_eq!(before.inputs.len(), after.inputs.len());
    let params = |g: &Graph| {
        g.params
            .iter()
            .map(|p| (p.key.clone(), p.shape.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        params(&before),
        params(after),
        "{rule}: the parameters changed"
    );
    let shapes = |g: &Graph| {
        g.outputs
            .iter()
            .map(|&o| g.shape(o).to_vec())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        shapes(&before),
        shapes(after),
        "{rule}: output shapes changed"
    );
    let (cb, ca) = (graph_cost(&before), graph_cost(after));
    assert!(
        ca.flops <= cb.flops && (ca.flops < cb.flops || ca.loads <= cb.loads) && ca < cb,
        "{rule}: cost rose: {cb:?} -> {ca:?}"
    );
    if !def.exact {
        let plain = rewrite(&before, &options(false, &[rule]));
        assert!(
            !plain.applied.contains(&rule),
            "{rule} is value-changing but fired without fast_math"
        );
    }
    let rtol = if def.exact { 1e-5 } else { 1e-4 };
    compare(rule, &before, after, spec.domain, rtol);
    // the whole rewriter on the same graph
    let full = rewrite(
        &before,
        &RewriteOptions {
            fast_math: !def.exact,
            ..RewriteOptions::default()
        },
    );
    assert!(full.errors.is_empty(), "{rule}: {:?}", full.errors);
    check::check(&full.graph).unwrap();
    compare(
        &format!("{rule} (all rules: {:?})", full.applied),
        &before,
        &full.graph,
        spec.domain,
        rtol,
    );
}

fn check(rule: &str, source: &str) {
    check_rule(rule, source, ANY)
}

// ---------------------------------------------------------------------------------------
// The registry
// ---------------------------------------------------------------------------------------

#[test]
fn every_rule_has_a_test() {
    let source = include_str!("rewrite_rules.rs");
    for rule in RULES {
        assert!(
            source.contains(&format!("fn {}()", rule.name)),
            "rule {} has no test named after it",
            rule.name
        );
    }
}

#[test]
fn the_registry_has_sixty_rules_with_unique_names_across_the_families() {
    assert!(RULES.len() >= 60, "{} rules", RULES.len());
    let algebraic = RULES
        .iter()
        .filter(|r| {
            matches!(
                r.family,
                Family::Associative | Family::Distributive | Family::Commutative
            )
        })
        .count();
    assert!(
        algebraic >= 60,
        "{algebraic} associative, distributive and commutative rules"
    );
    let mut names: Vec<&str> = RULES.iter().map(|r| r.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), RULES.len(), "duplicate rule names");
    for rule in RULES {
        assert!(
            rule.name.starts_with(&format!("{}_", rule.family.name())),
            "{} is not named <family>_<effect>",
            rule.name
        );
        assert!(!rule.doc.is_empty());
    }
    for family in Family::ALL {
        assert!(
            RULES.iter().any(|r| r.family == family),
            "no {} rule",
            family.name()
        );
    }
}

// ---------------------------------------------------------------------------------------
// Identity
// ---------------------------------------------------------------------------------------

#[test]
fn identity_mul_one() {
    check("identity_mul_one", "(x: [2, 3]) -> [2, 3] { exp(x) * 1.0 }");
}

#[test]
fn identity_div_one() {
    check("identity_div_one", "(x: [2, 3]) -> [2, 3] { exp(x) / 1.0 }");
}

#[test]
fn identity_add_zero() {
    check(
        "identity_add_zero",
        "(x: [2, 3]) -> [2, 3] { exp(x) + 0.0 }",
    );
}

#[test]
fn identity_sub_zero() {
    check("identity_sub_zero", "(x: [2, 3]) -> [2, 3] { x - 0.0 }");
}

#[test]
fn identity_pow_one() {
    check("identity_pow_one", "(x: [2, 3]) -> [2, 3] { pow(x, 1) }");
}

#[test]
fn identity_leaky_relu_one() {
    check(
        "identity_leaky_relu_one",
        "(x: [2, 3]) -> [2, 3] { leaky_relu(x, negative_slope = 1.0) }",
    );
}

#[test]
fn identity_clip_unbounded() {
    check(
        "identity_clip_unbounded",
        "(x: [2, 3]) -> [2, 3] { clip(x) }",
    );
}

#[test]
fn identity_neg_neg() {
    check("identity_neg_neg", "(x: [2, 3]) -> [2, 3] { exp(-(-x)) }");
}

#[test]
fn identity_abs_abs() {
    check("identity_abs_abs", "(x: [2, 3]) -> [2, 3] { abs(abs(x)) }");
}

#[test]
fn identity_relu_relu() {
    check(
        "identity_relu_relu",
        "(x: [2, 3]) -> [2, 3] { relu(relu(x)) }",
    );
}

#[test]
fn identity_recip_recip() {
    check(
        "identity_recip_recip",
        "(x: [2, 3]) -> [2, 3] { reciprocal(reciprocal(x)) }",
    );
}

#[test]
fn identity_abs_of_neg() {
    check("identity_abs_of_neg", "(x: [2, 3]) -> [2, 3] { abs(-x) }");
}

#[test]
fn identity_abs_of_nonneg() {
    check(
        "identity_abs_of_nonneg",
        "(x: [2, 3]) -> [2, 3] { abs(exp(x)) + abs(relu6(x)) }",
    );
}

#[test]
fn identity_relu_of_nonneg() {
    check(
        "identity_relu_of_nonneg",
        "(x: [2, 3]) -> [2, 3] { relu(sigmoid(x)) * relu(square(x) + 1.0) }",
    );
}

#[test]
fn identity_square_of_neg() {
    check(
        "identity_square_of_neg",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { square(-x) + square(abs(y)) }",
    );
}

#[test]
fn identity_rounding_of_integral() {
    check(
        "identity_rounding_of_integral",
        "(x: [2, 3]) -> [2, 3] { floor(ceil(x * 2.5)) + round(floor(x)) }",
    );
}

#[test]
fn identity_max_self() {
    check(
        "identity_max_self",
        "(x: [2, 3]) -> [2, 3] { let r = exp(x); maximum(r, r) }",
    );
}

#[test]
fn identity_min_self() {
    check(
        "identity_min_self",
        "(x: [2, 3]) -> [2, 3] { let r = exp(x); minimum(r, r) }",
    );
}

#[test]
fn identity_where_same() {
    check(
        "identity_where_same",
        "(c: [2, 3], x: [2, 3]) -> [2, 3] { let a = exp(x); where(c, a, a) }",
    );
}

#[test]
fn identity_reshape_noop() {
    check(
        "identity_reshape_noop",
        "(x: [2, 3]) -> [2, 3] { exp(reshape(x, [2, 3])) }",
    );
}

#[test]
fn identity_reshape_pair_cancel() {
    check(
        "identity_reshape_pair_cancel",
        "(x: [2, 3]) -> [2, 3] { exp(squeeze(unsqueeze(x, 0))) }",
    );
}

#[test]
fn identity_reshape_reshape() {
    check(
        "identity_reshape_reshape",
        "(x: [2, 3]) -> [3, 2] { reshape(flatten(exp(x), start = 0), [3, 2]) }",
    );
}

#[test]
fn identity_transpose_noop() {
    check(
        "identity_transpose_noop",
        "(x: [2, 3]) -> [2, 3] { exp(permute(x, [0, 1])) }",
    );
}

#[test]
fn identity_transpose_pair_cancel() {
    check(
        "identity_transpose_pair_cancel",
        "(x: [2, 3]) -> [2, 3] { exp(transpose(transpose(x, 0, 1), 0, 1)) }",
    );
}

#[test]
fn identity_transpose_transpose() {
    check(
        "identity_transpose_transpose",
        "(x: [2, 3, 4]) -> [4, 2, 3] { permute(permute(exp(x), [1, 2, 0]), [1, 2, 0]) }",
    );
}

#[test]
fn identity_transpose_to_reshape() {
    check(
        "identity_transpose_to_reshape",
        "(x: [2, 1, 3]) -> [1, 2, 3] { transpose(exp(x), 0, 1) }",
    );
}

#[test]
fn identity_slice_full() {
    check(
        "identity_slice_full",
        "(x: [2, 3]) -> [2, 3] { exp(slice(x, 1, 0, 3)) }",
    );
}

#[test]
fn identity_slice_slice() {
    check(
        "identity_slice_slice",
        "(x: [2, 8]) -> [2, 3] { slice(slice(exp(x), 1, 1, 8, step = 2), 1, 1, 4) }",
    );
}

#[test]
fn identity_slice_of_concat() {
    check(
        "identity_slice_of_concat",
        "(x: [2, 3], y: [2, 3]) -> [2, 2] { slice(concat([exp(x), exp(y)], axis = 1), 1, 3, 5) }",
    );
}

#[test]
fn identity_concat_adjacent_slices() {
    check("identity_concat_adjacent_slices", "(x: [2, 6]) -> [2, 5] { let e = exp(x); concat([slice(e, 1, 0, 2), slice(e, 1, 2, 5)], axis = 1) }");
}

#[test]
fn identity_concat_single() {
    check(
        "identity_concat_single",
        "(x: [2, 3]) -> [2, 3] { concat([exp(x)], axis = 0) }",
    );
}

#[test]
fn identity_concat_of_concat() {
    check("identity_concat_of_concat", "(x: [2, 3], y: [2, 3], z: [2, 3]) -> [2, 9] { concat([concat([exp(x), y], axis = 1), z], axis = 1) }");
}

#[test]
fn identity_expand_noop() {
    check(
        "identity_expand_noop",
        "(x: [2, 3]) -> [2, 3] { exp(expand(x, [2, 3])) }",
    );
}

#[test]
fn identity_pad_zero() {
    check(
        "identity_pad_zero",
        "(x: [2, 3]) -> [2, 3] { exp(pad(x, [0, 0])) }",
    );
}

#[test]
fn identity_reduce_unit_axes() {
    check(
        "identity_reduce_unit_axes",
        "(x: [2, 1, 3]) -> [2, 3] { reduce_mean(exp(x), axes = [1]) + reduce_max(x, axes = [1]) }",
    );
}

#[test]
fn identity_pool_unit_window() {
    check(
        "identity_pool_unit_window",
        "(x: [1, 2, 3, 3]) -> [1, 2, 3, 3] { max_pool2d(exp(x), 1) + avg_pool2d(x, 1) }",
    );
}

#[test]
fn identity_global_pool_unit() {
    check(
        "identity_global_pool_unit",
        "(x: [1, 2, 1, 1]) -> [1, 2, 1, 1] { global_avg_pool2d(exp(x)) }",
    );
}

#[test]
fn identity_resize_same() {
    check(
        "identity_resize_same",
        "(x: [1, 2, 3, 3]) -> [1, 2, 3, 3] { resize(exp(x), size = [3, 3]) }",
    );
}

#[test]
fn identity_scan_unit_axis() {
    check(
        "identity_scan_unit_axis",
        "(x: [2, 1, 3]) -> [2, 1, 3] { cumsum(exp(x), 1) }",
    );
}

// ---------------------------------------------------------------------------------------
// CSE
// ---------------------------------------------------------------------------------------

#[test]
fn cse_identical() {
    check("cse_identical", "(x: [2, 3]) -> [2, 3] { exp(x) * exp(x) }");
}

#[test]
fn cse_commuted() {
    check(
        "cse_commuted",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { (x * y) - (y * x) + maximum(x, y) * maximum(y, x) }",
    );
}

// ---------------------------------------------------------------------------------------
// Folding
// ---------------------------------------------------------------------------------------

#[test]
fn folding_batch_norm_into_conv_positive_eps() {
    check("folding_batch_norm_into_conv_positive_eps", "(x: [1, 3, 6, 6]) -> [1, 4, 6, 6] { let c = conv2d(x, 4, kernel = 3, padding = 1); let bn = batch_norm(c); bn }");
    check("folding_batch_norm_into_conv_positive_eps", "(x: [2, 2, 5, 5]) -> [2, 4, 3, 3] { let c = conv2d(x, 4, kernel = 3, bias = false); let bn = batch_norm(c, eps = 1e-3); bn }");
    // (not `eps = 1e-12`: the edge inputs hold a variance of -1e-12, which no batch norm
    // has, and `var + eps = 0` makes the scale infinite: the unfolded output inf, the
    // folded one NaN)
    check("folding_batch_norm_into_conv_positive_eps", "(x: [1, 4, 5, 5]) -> [1, 4, 5, 5] { let c = conv2d(x, 4, kernel = 3, padding = 1, groups = 4); let bn = batch_norm(c, eps = 1e-10); bn }");
}

/// With `eps = 0` the fold holds where no variance is zero (a zero one makes the scale
/// infinite): tested on nonzero inputs.
#[test]
fn folding_batch_norm_into_conv() {
    check_rule("folding_batch_norm_into_conv", "(x: [1, 3, 6, 6]) -> [1, 4, 6, 6] { let c = conv2d(x, 4, kernel = 3, padding = 1); let bn = batch_norm(c, eps = 0.0); bn }", NONZERO);
}

#[test]
fn folding_batch_norm_into_linear_positive_eps() {
    check(
        "folding_batch_norm_into_linear_positive_eps",
        "(x: [64, 5]) -> [64, 4] { let l = linear(x, 4); let bn = batch_norm(l); bn }",
    );
    check("folding_batch_norm_into_linear_positive_eps", "(x: [48, 6]) -> [48, 3] { let l = linear(x, 3, bias = false); let bn = batch_norm(l, eps = 1e-3); bn }");
}

#[test]
fn folding_batch_norm_into_linear() {
    check_rule(
        "folding_batch_norm_into_linear",
        "(x: [48, 6]) -> [48, 3] { let l = linear(x, 3); let bn = batch_norm(l, eps = 0.0); bn }",
        NONZERO,
    );
}

#[test]
fn folding_mul_mul() {
    check(
        "folding_mul_mul",
        "(x: [2, 3]) -> [2, 3] { (x * 3.0) * 5.0 }",
    );
}

#[test]
fn folding_div_div() {
    check(
        "folding_div_div",
        "(x: [2, 3]) -> [2, 3] { (x / 3.0) / 5.0 }",
    );
}

#[test]
fn folding_mul_div() {
    check(
        "folding_mul_div",
        "(x: [2, 3]) -> [2, 3] { (x * 3.0) / 5.0 }",
    );
}

#[test]
fn folding_div_mul() {
    check(
        "folding_div_mul",
        "(x: [2, 3]) -> [2, 3] { (x / 3.0) * 5.0 }",
    );
}

#[test]
fn folding_neg_of_scale() {
    check(
        "folding_neg_of_scale",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { -(x * 3.0) + -(y / 5.0) }",
    );
}

#[test]
fn folding_scale_of_neg() {
    check(
        "folding_scale_of_neg",
        "(x: [2, 3], y: [2, 3], z: [2, 3]) -> [2, 3] { (-x) * 3.0 + (-y) / 5.0 + 2.0 / (-z) }",
    );
}

#[test]
fn folding_neg_of_shift() {
    check(
        "folding_neg_of_shift",
        "(x: [2, 3], y: [2, 3], z: [2, 3]) -> [2, 3] { -(x + 3.0) * -(y - 2.0) * -(4.0 - z) }",
    );
}

#[test]
fn folding_shift_of_neg() {
    check("folding_shift_of_neg", "(x: [2, 3], y: [2, 3], z: [2, 3]) -> [2, 3] { ((-x) + 3.0) * ((-y) - 2.0) * (4.0 - (-z)) }");
}

#[test]
fn folding_shift_shift() {
    check(
        "folding_shift_shift",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { (x + 3.0) - 5.0 + (2.0 - (y - 1.5)) }",
    );
}

#[test]
fn folding_affine_chain() {
    check(
        "folding_affine_chain",
        "(x: [2, 3]) -> [2, 3] { ((x * 2.0 + 1.0) * 3.0) - 4.0 }",
    );
}

#[test]
fn folding_clamp_clamp() {
    check(
        "folding_clamp_clamp",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { clip(relu(x), -1.0, 2.0) + relu6(clip(y, 1.0, 9.0)) }",
    );
}

#[test]
fn folding_leaky_relu_chain() {
    check("folding_leaky_relu_chain", "(x: [2, 3]) -> [2, 3] { leaky_relu(leaky_relu(x, negative_slope = 0.1), negative_slope = 0.2) }");
}

#[test]
fn folding_pow_pow_integer() {
    check(
        "folding_pow_pow_integer",
        "(x: [2, 3]) -> [2, 3] { pow(pow(x, 2), 3) + pow(pow(x, -1), 3) }",
    );
}

#[test]
fn folding_scalar_div_scale() {
    check(
        "folding_scalar_div_scale",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { 2.0 / (x * 4.0) + (3.0 / y) / 5.0 }",
    );
}

// ---------------------------------------------------------------------------------------
// Strength reduction
// ---------------------------------------------------------------------------------------

#[test]
fn strength_div_pow2() {
    check("strength_div_pow2", "(x: [2, 3]) -> [2, 3] { x / 4.0 }");
}

#[test]
fn strength_div_to_mul() {
    check("strength_div_to_mul", "(x: [2, 3]) -> [2, 3] { x / 3.0 }");
}

#[test]
fn strength_pow_two() {
    check("strength_pow_two", "(x: [2, 3]) -> [2, 3] { pow(x, 2) }");
}

#[test]
fn strength_pow_three() {
    check("strength_pow_three", "(x: [2, 3]) -> [2, 3] { pow(x, 3) }");
}

#[test]
fn strength_pow_half() {
    check("strength_pow_half", "(x: [2, 3]) -> [2, 3] { pow(x, 0.5) }");
}

#[test]
fn strength_pow_neg_one() {
    check(
        "strength_pow_neg_one",
        "(x: [2, 3]) -> [2, 3] { pow(x, -1) }",
    );
}

#[test]
fn strength_pow_neg_two() {
    check(
        "strength_pow_neg_two",
        "(x: [2, 3]) -> [2, 3] { pow(x, -2) }",
    );
}

#[test]
fn strength_pow_neg_half() {
    check_rule(
        "strength_pow_neg_half",
        "(x: [2, 3]) -> [2, 3] { pow(x, -0.5) }",
        POSITIVE,
    );
}

#[test]
fn strength_mul_self_to_square() {
    check(
        "strength_mul_self_to_square",
        "(x: [2, 3]) -> [2, 3] { x * x }",
    );
}

#[test]
fn strength_add_self_to_double() {
    check(
        "strength_add_self_to_double",
        "(x: [2, 3]) -> [2, 3] { x + x }",
    );
}

#[test]
fn strength_sqrt_times_sqrt_nonneg() {
    check(
        "strength_sqrt_times_sqrt_nonneg",
        "(x: [2, 3]) -> [2, 3] { let r = relu(x); sqrt(r) * sqrt(r) }",
    );
}

#[test]
fn strength_sqrt_times_sqrt() {
    check_rule(
        "strength_sqrt_times_sqrt",
        "(x: [2, 3]) -> [2, 3] { sqrt(x) * sqrt(x) }",
        POSITIVE,
    );
}

#[test]
fn strength_square_of_sqrt_nonneg() {
    check(
        "strength_square_of_sqrt_nonneg",
        "(x: [2, 3]) -> [2, 3] { square(sqrt(abs(x))) }",
    );
}

#[test]
fn strength_square_of_sqrt() {
    check_rule(
        "strength_square_of_sqrt",
        "(x: [2, 3]) -> [2, 3] { square(sqrt(x)) }",
        POSITIVE,
    );
}

#[test]
fn strength_sqrt_of_square() {
    check(
        "strength_sqrt_of_square",
        "(x: [2, 3]) -> [2, 3] { sqrt(square(x)) }",
    );
}

#[test]
fn strength_exp_times_exp() {
    check_rule(
        "strength_exp_times_exp",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { exp(x) * exp(y) }",
        MODERATE,
    );
}

#[test]
fn strength_exp_over_exp() {
    check_rule(
        "strength_exp_over_exp",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { exp(x) / exp(y) }",
        MODERATE,
    );
}

#[test]
fn strength_log_plus_log() {
    check_rule(
        "strength_log_plus_log",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { log(x) + log(y) }",
        POSITIVE,
    );
}

#[test]
fn strength_log_minus_log() {
    check_rule(
        "strength_log_minus_log",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { log(x) - log(y) }",
        POSITIVE,
    );
}

#[test]
fn strength_log_of_exp() {
    check_rule(
        "strength_log_of_exp",
        "(x: [2, 3]) -> [2, 3] { log(exp(x)) }",
        MODERATE,
    );
}

#[test]
fn strength_exp_of_log() {
    check_rule(
        "strength_exp_of_log",
        "(x: [2, 3]) -> [2, 3] { exp(log(x)) }",
        POSITIVE,
    );
}

#[test]
fn strength_recip_of_sqrt() {
    check(
        "strength_recip_of_sqrt",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { 1.0 / sqrt(x) + reciprocal(sqrt(y)) }",
    );
}

#[test]
fn strength_div_by_sqrt() {
    check(
        "strength_div_by_sqrt",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { y / sqrt(x) }",
    );
}

#[test]
fn strength_mul_by_recip() {
    check(
        "strength_mul_by_recip",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { y * reciprocal(x) }",
    );
}

#[test]
fn strength_div_by_recip() {
    check(
        "strength_div_by_recip",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { y / reciprocal(x) }",
    );
}

#[test]
fn strength_reciprocal_scalar_div() {
    check(
        "strength_reciprocal_scalar_div",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { 3.0 / reciprocal(x) + reciprocal(2.0 / y) }",
    );
}

#[test]
fn strength_sigmoid_pattern() {
    check(
        "strength_sigmoid_pattern",
        "(x: [2, 3]) -> [2, 3] { 1.0 / (1.0 + exp(-x)) }",
    );
}

#[test]
fn strength_silu_pattern() {
    check(
        "strength_silu_pattern",
        "(x: [2, 3]) -> [2, 3] { x * sigmoid(x) }",
    );
}

#[test]
fn strength_gelu_pattern() {
    // as PyTorch exports it (Div, Erf, Add, Mul, Mul)
    check(
        "strength_gelu_pattern",
        "(x: [2, 3]) -> [2, 3] { x * (erf(x / 1.4142135) + 1.0) * 0.5 }",
    );
    // grouped the other way, the constant as its reciprocal
    check(
        "strength_gelu_pattern",
        "(x: [2, 3]) -> [2, 3] { (0.5 * x) * (1.0 + erf(x * 0.70710677)) }",
    );
    // the tanh form as GPT-2 writes it, the cube as a power, a product or with a square
    for cube in ["pow(x, 3.0)", "x * x * x", "x * square(x)"] {
        check(
            "strength_gelu_pattern",
            &format!(
                "(x: [2, 3]) -> [2, 3] {{ 0.5 * x * (1.0 + tanh(0.7978846 * (x + 0.044715 * {cube}))) }}"
            ),
        );
    }
}

#[test]
fn strength_gelu_pattern_fires_among_all_rules() {
    // the exporters' forms, between two products (the scale could also move past them)
    for (form, op) in [
        ("h * (erf(h / 1.4142135) + 1.0) * 0.5", "gelu"),
        (
            "0.5 * h * (1.0 + tanh(0.7978846 * (h + 0.044715 * pow(h, 3.0))))",
            "gelu_tanh",
        ),
    ] {
        let source = format!(
            "pub model M(x: [4, 8], w: [8, 8]) -> [4, 8] {{ let h = matmul(x, w); let y = {form}; matmul(y, w) }}"
        );
        let r = rewrite(&graph_of(&source), &RewriteOptions::default());
        assert!(
            r.applied.contains(&"strength_gelu_pattern"),
            "{form}: {:?}",
            r.applied
        );
        let ops: Vec<&str> = r.graph.nodes.iter().map(|n| n.op.name()).collect();
        assert_eq!(ops, ["matmul", op, "matmul"], "{form}");
    }
}

#[test]
fn strength_gelu_pattern_needs_the_whole_formula() {
    let only = options(false, &["strength_gelu_pattern"]);
    for source in [
        // another scale inside erf, outside, or another value in the product
        "(x: [2, 3]) -> [2, 3] { x * (erf(x / 1.5) + 1.0) * 0.5 }",
        "(x: [2, 3]) -> [2, 3] { x * (erf(x / 1.4142135) + 1.0) * 0.25 }",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { y * (erf(x / 1.4142135) + 1.0) * 0.5 }",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { x * y * (erf(x / 1.4142135) + 1.0) * 0.5 }",
        "(x: [2, 3]) -> [2, 3] { x * (erf(x / 1.4142135) + 2.0) * 0.5 }",
        "(x: [2, 3]) -> [2, 3] { 0.5 * x * (1.0 + tanh(0.7978846 * (x + 0.05 * pow(x, 3.0)))) }",
        "(x: [2, 3]) -> [2, 3] { 0.5 * x * (1.0 + tanh(0.7978846 * (x + 0.044715 * x * x))) }",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { 0.5 * x * (1.0 + tanh(0.7978846 * (y + 0.044715 * x * x * x))) }",
    ] {
        let graph = graph_of(&format!("pub model M{source}"));
        let r = rewrite(&graph, &only);
        assert!(
            !r.applied.contains(&"strength_gelu_pattern"),
            "fired on {source}"
        );
    }
}

#[test]
fn strength_softplus_pattern() {
    check_rule(
        "strength_softplus_pattern",
        "(x: [2, 3]) -> [2, 3] { log(1.0 + exp(x)) }",
        MODERATE,
    );
}

#[test]
fn strength_neg_times_neg() {
    check(
        "strength_neg_times_neg",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { (-x) * (-y) }",
    );
}

#[test]
fn strength_add_of_neg() {
    check(
        "strength_add_of_neg",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { x + (-y) }",
    );
}

#[test]
fn strength_sub_of_neg() {
    check(
        "strength_sub_of_neg",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { x - (-y) }",
    );
}

// ---------------------------------------------------------------------------------------
// Associative
// ---------------------------------------------------------------------------------------

#[test]
fn associative_abs_product() {
    check(
        "associative_abs_product",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { abs(x) * abs(y) }",
    );
}

#[test]
fn associative_recip_product() {
    check(
        "associative_recip_product",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { reciprocal(x) * reciprocal(y) }",
    );
}

#[test]
fn associative_square_product() {
    check(
        "associative_square_product",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { square(x) * square(y) }",
    );
}

#[test]
fn associative_recip_square() {
    check(
        "associative_recip_square",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { reciprocal(x) * reciprocal(x * y) }",
    );
}

#[test]
fn associative_sqrt_product_nonneg() {
    check(
        "associative_sqrt_product_nonneg",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { sqrt(exp(x)) * sqrt(relu(y)) }",
    );
}

#[test]
fn associative_sqrt_product() {
    check_rule(
        "associative_sqrt_product",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { sqrt(x) * sqrt(y) }",
        POSITIVE,
    );
}

#[test]
fn associative_rsqrt_product_nonneg() {
    check(
        "associative_rsqrt_product_nonneg",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { rsqrt(exp(x)) * rsqrt(square(y) + 1.0) }",
    );
}

#[test]
fn associative_sqrt_pair_nonneg() {
    check(
        "associative_sqrt_pair_nonneg",
        "(x: [2, 3], y: [2, 3], z: [2, 3]) -> [2, 3] { let s = sqrt(exp(z)); (x * s) * (s * y) }",
    );
}

#[test]
fn associative_sqrt_pair() {
    check_rule(
        "associative_sqrt_pair",
        "(x: [2, 3], y: [2, 3], z: [2, 3]) -> [2, 3] { let s = sqrt(z); (x * s) * (s * y) }",
        POSITIVE,
    );
}

#[test]
fn associative_shared_factor() {
    // the paper's (A * ReduceSum(B)) * (ReduceSum(B) * C): the square runs on [2, 1]
    check(
        "associative_shared_factor",
        "(x: [2, 3], b: [2, 3], y: [2, 3]) -> [2, 3] { let r = reduce_sum(b, axes = [1], keepdims = true); (x * r) * (r * y) }",
    );
}

#[test]
fn associative_div_div() {
    check(
        "associative_div_div",
        "(x: [2, 3], y: [2, 3], z: [2, 3]) -> [2, 3] { (x / y) / z }",
    );
}

#[test]
fn associative_div_of_div() {
    check(
        "associative_div_of_div",
        "(x: [2, 3], y: [2, 3], z: [2, 3]) -> [2, 3] { x / (y / z) }",
    );
}

#[test]
fn associative_recip_of_div() {
    check(
        "associative_recip_of_div",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { reciprocal(x / y) }",
    );
}

#[test]
fn associative_recip_div() {
    check(
        "associative_recip_div",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { reciprocal(x) / y }",
    );
}

#[test]
fn associative_scaled_product() {
    check(
        "associative_scaled_product",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { (x * 2.0) * (y * 3.0) }",
    );
}

#[test]
fn associative_max_absorb() {
    check(
        "associative_max_absorb",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { maximum(maximum(x, y), y) }",
    );
}

#[test]
fn associative_min_absorb() {
    check(
        "associative_min_absorb",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { minimum(x, minimum(x, y)) }",
    );
}

#[test]
fn associative_add_sub_cancel() {
    check_rule(
        "associative_add_sub_cancel",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { (x + y) - y + ((y + x) - y) * 2.0 }",
        FINITE_NONZERO,
    );
}

#[test]
fn associative_sub_add_cancel() {
    check_rule(
        "associative_sub_add_cancel",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { (x - y) + y }",
        FINITE_NONZERO,
    );
}

#[test]
fn associative_mul_div_cancel() {
    check_rule(
        "associative_mul_div_cancel",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { (y * x) / y }",
        FINITE_NONZERO,
    );
}

#[test]
fn associative_div_mul_cancel() {
    check_rule(
        "associative_div_mul_cancel",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { y * (x / y) }",
        FINITE_NONZERO,
    );
}

#[test]
fn associative_abs_quotient() {
    check(
        "associative_abs_quotient",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { abs(x) / abs(y) }",
    );
}

#[test]
fn associative_square_quotient() {
    check(
        "associative_square_quotient",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { square(x) / square(y) }",
    );
}

#[test]
fn associative_sqrt_quotient_nonneg() {
    check(
        "associative_sqrt_quotient_nonneg",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { sqrt(exp(x)) / sqrt(square(y)) }",
    );
}

#[test]
fn associative_sqrt_quotient() {
    check_rule(
        "associative_sqrt_quotient",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { sqrt(x) / sqrt(y) }",
        POSITIVE,
    );
}

#[test]
fn associative_scaled_quotient() {
    check(
        "associative_scaled_quotient",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { (x * 3.0) / (y * 0.5) }",
    );
}

#[test]
fn associative_shift_into_bias() {
    check(
        "associative_shift_into_bias",
        "(x: [1, 2, 5, 5], v: [3, 4]) -> (a: [1, 3, 3, 3], b: [3, 2]) { let conv = conv2d(x, 3, kernel = 3); let fc = linear(v, 2); (conv + 0.5, fc - 2.0) }",
    );
}

#[test]
fn associative_reduce_extreme_chain() {
    check(
        "associative_reduce_extreme_chain",
        "(x: [2, 3, 4]) -> (a: [2, 1, 1], b: [2]) { let m = reduce_max(x, axes = [1], keepdims = true); let n = reduce_min(x, axes = [2], keepdims = true); (reduce_max(m, axes = [2], keepdims = true), reduce_min(n, axes = [1, 2])) }",
    );
}

// ---------------------------------------------------------------------------------------
// Distributive
// ---------------------------------------------------------------------------------------

#[test]
fn distributive_factor_mul_add() {
    check(
        "distributive_factor_mul_add",
        "(x: [2, 3], y: [2, 3], z: [2, 3]) -> [2, 3] { x * y + z * x }",
    );
}

#[test]
fn distributive_factor_mul_sub() {
    check(
        "distributive_factor_mul_sub",
        "(x: [2, 3], y: [2, 3], z: [2, 3]) -> [2, 3] { y * x - x * z }",
    );
}

#[test]
fn distributive_factor_div_add() {
    check_rule(
        "distributive_factor_div_add",
        "(x: [2, 3], y: [2, 3], z: [2, 3]) -> [2, 3] { x / z + y / z }",
        NONZERO,
    );
}

#[test]
fn distributive_factor_div_sub() {
    check_rule(
        "distributive_factor_div_sub",
        "(x: [2, 3], y: [2, 3], z: [2, 3]) -> [2, 3] { x / z - y / z }",
        NONZERO,
    );
}

#[test]
fn distributive_add_self_product() {
    check(
        "distributive_add_self_product",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { x + x * y }",
    );
}

#[test]
fn distributive_sub_self_product() {
    check(
        "distributive_sub_self_product",
        "(x: [2, 3], y: [2, 3], z: [2, 3]) -> [2, 3] { (x - x * y) * (z * y - z) }",
    );
}

#[test]
fn distributive_square_minus_product() {
    check(
        "distributive_square_minus_product",
        "(x: [2, 3], y: [2, 3], z: [2, 3]) -> [2, 3] { let s = x + y; square(s) - s * z }",
    );
}

#[test]
fn distributive_scalar_factor() {
    check(
        "distributive_scalar_factor",
        "(x: [2, 3], y: [2, 3]) -> [2, 3] { (x * 3.0 + x * 5.0) * (y - y * 0.25) }",
    );
}

#[test]
fn distributive_common_scale() {
    check(
        "distributive_common_scale",
        "(x: [2, 3], y: [2, 3], z: [2, 3]) -> [2, 3] { x * 3.0 + y * 3.0 - z / 3.0 }",
    );
}

#[test]
fn distributive_neg_sum() {
    check(
        "distributive_neg_sum",
        "(x: [2, 3], y: [2, 3], z: [2, 3]) -> [2, 3] { ((-x) + (-y)) * ((-y) - (-z)) }",
    );
}

#[test]
fn distributive_matmul_left() {
    check(
        "distributive_matmul_left",
        "(a: [2, 3], b: [3, 4], c: [3, 4]) -> [2, 4] { matmul(a, b) + matmul(a, c) }",
    );
}

#[test]
fn distributive_matmul_right() {
    check(
        "distributive_matmul_right",
        "(a: [2, 3], b: [2, 3], c: [3, 4]) -> [2, 4] { matmul(a, c) - matmul(b, c) }",
    );
}

#[test]
fn distributive_linear_shared_input() {
    check(
        "distributive_linear_shared_input",
        "(x: [2, 3]) -> [2, 4] { let p = linear(x, 4); let q = linear(x, 4); p + q }",
    );
}

#[test]
fn distributive_neg_of_difference() {
    check(
        "distributive_neg_of_difference",
        "(x: [2, 3], y: [1, 3]) -> [2, 3] { -(x - y) }",
    );
}

#[test]
fn distributive_where_common_operand() {
    check(
        "distributive_where_common_operand",
        "(c: [2, 3], x: [2, 3], y: [2, 3], z: [2, 3]) -> (a: [2, 3], b: [2, 3]) { (where(c, x * z, y * z), where(c, z - x, z - y)) }",
    );
}

#[test]
fn distributive_extreme_of_shifted() {
    check(
        "distributive_extreme_of_shifted",
        "(x: [2, 3], y: [2, 3], z: [2, 3]) -> (a: [2, 3], b: [2, 3]) { (maximum(x + z, z + y), minimum(x - z, y - z)) }",
    );
}

#[test]
fn distributive_extreme_of_scaled() {
    check(
        "distributive_extreme_of_scaled",
        "(x: [2, 3], y: [2, 3]) -> (a: [2, 3], b: [2, 3]) { (maximum(x * 2.0, y * 2.0), minimum(x / -3.0, y / -3.0)) }",
    );
}

#[test]
fn distributive_reduce_of_sum() {
    check(
        "distributive_reduce_of_sum",
        "(x: [2, 3], y: [2, 3]) -> (a: [2], b: [3]) { (reduce_sum(x, axes = [1]) + reduce_sum(y, axes = [1]), reduce_mean(x, axes = [0]) - reduce_mean(y, axes = [0])) }",
    );
}

#[test]
fn distributive_conv_shared_input() {
    check(
        "distributive_conv_shared_input",
        "(x: [1, 2, 5, 5]) -> [1, 3, 3, 3] { let p = conv2d(x, 3, kernel = 3); let q = conv2d(x, 3, kernel = 3, bias = false); p + q }",
    );
}

#[test]
fn distributive_scale_into_weights() {
    check(
        "distributive_scale_into_weights",
        "(x: [1, 2, 5, 5], v: [3, 4], t: [1, 2, 2, 2]) -> (a: [1, 3, 3, 3], b: [3, 2], c: [1, 2, 4, 4]) { let conv = conv2d(x, 3, kernel = 3); let fc = linear(v, 2, bias = false); let up = conv_transpose2d(t, 2, kernel = 2, stride = 2); (conv * 0.5, -fc, up / 4.0) }",
    );
}

// ---------------------------------------------------------------------------------------
// Commutative
// ---------------------------------------------------------------------------------------

#[test]
fn commutative_unary_past_where() {
    check(
        "commutative_unary_past_where",
        "(c: [2, 3], x: [2, 3], y: [2, 3]) -> [2, 3] { where(c, exp(x), exp(y)) }",
    );
}

#[test]
fn commutative_unary_past_pad() {
    check(
        "commutative_unary_past_pad",
        "(x: [1, 2, 3, 3]) -> (a: [1, 2, 5, 5], b: [1, 2, 5, 5]) { (pad(x, [1, 1, 1, 1], value = 2.0) * 3.0, exp(pad(x, [1, 1, 1, 1], mode = \"reflect\"))) }",
    );
}

#[test]
fn commutative_scale_past_resize() {
    check(
        "commutative_scale_past_resize",
        "(x: [1, 1, 2, 2]) -> [1, 1, 4, 4] { resize(x, size = [4, 4], mode = \"bilinear\") * 0.5 }",
    );
}

#[test]
fn commutative_scale_into_conv_transpose() {
    check(
        "commutative_scale_into_conv_transpose",
        "(x: [1, 2, 3, 3]) -> [1, 2, 6, 6] { let up = conv_transpose2d(x, 2, kernel = 2, stride = 2, bias = false); -up }",
    );
}

#[test]
fn commutative_swap_product() {
    // the paper's Abs(A) * B * Abs(C) -> Abs(A * C) * B: swap, then associate
    let spec = Spec {
        helpers: &["associative_abs_product"],
        ..ANY
    };
    check_rule(
        "commutative_swap_product",
        "(x: [2, 3], y: [2, 3], z: [2, 3]) -> [2, 3] { abs(x) * y * abs(z) }",
        spec,
    );
}

#[test]
fn commutative_transpose_past_unary() {
    let spec = Spec {
        helpers: &["identity_transpose_pair_cancel"],
        ..ANY
    };
    check_rule(
        "commutative_transpose_past_unary",
        "(x: [2, 3]) -> [2, 3] { transpose(relu(transpose(x, 0, 1)), 0, 1) }",
        spec,
    );
}

#[test]
fn commutative_reshape_past_unary() {
    let spec = Spec {
        helpers: &["identity_reshape_pair_cancel"],
        ..ANY
    };
    check_rule(
        "commutative_reshape_past_unary",
        "(x: [2, 3]) -> [2, 3] { reshape(exp(flatten(x, start = 0)), [2, 3]) }",
        spec,
    );
}

#[test]
fn commutative_slice_past_unary() {
    check(
        "commutative_slice_past_unary",
        "(x: [2, 8]) -> [2, 2] { slice(exp(x), 1, 0, 2) }",
    );
}

#[test]
fn commutative_slice_past_binary() {
    check(
        "commutative_slice_past_binary",
        "(x: [2, 8], y: [2, 8]) -> [2, 2] { slice(x * y, 1, 0, 2) }",
    );
}

#[test]
fn commutative_unary_past_expand() {
    check(
        "commutative_unary_past_expand",
        "(x: [1, 3]) -> [4, 3] { exp(expand(x, [4, 3])) }",
    );
}

#[test]
fn commutative_unary_past_resize() {
    check(
        "commutative_unary_past_resize",
        "(x: [1, 1, 2, 2]) -> [1, 1, 4, 4] { exp(resize(x, size = [4, 4])) }",
    );
}

#[test]
fn commutative_unary_before_gather() {
    check(
        "commutative_unary_before_gather",
        "(x: [3, 2], idx: [2, 4]) -> [2, 4, 2] { exp(gather(x, idx)) }",
    );
}

#[test]
fn commutative_concat_of_unary() {
    check(
        "commutative_concat_of_unary",
        "(x: [2, 3], y: [2, 3]) -> [4, 3] { concat([exp(x), exp(y)], axis = 0) }",
    );
}

#[test]
fn commutative_reduce_sum_of_scale() {
    check(
        "commutative_reduce_sum_of_scale",
        "(x: [2, 3]) -> [2] { reduce_sum(x * 3.0, axes = [1]) + reduce_mean(-x, axes = [1]) }",
    );
}

#[test]
fn commutative_reduce_extreme_of_increasing() {
    check(
        "commutative_reduce_extreme_of_increasing",
        "(x: [2, 3]) -> [2] { reduce_max(relu(x), axes = [1]) + reduce_min(exp(x), axes = [1]) }",
    );
}

#[test]
fn commutative_reduce_extreme_of_decreasing() {
    check(
        "commutative_reduce_extreme_of_decreasing",
        "(x: [2, 3]) -> [2] { reduce_max(-x, axes = [1]) + reduce_min(2.0 - x, axes = [1]) }",
    );
}

#[test]
fn commutative_max_pool_of_increasing() {
    check(
        "commutative_max_pool_of_increasing",
        "(x: [1, 2, 4, 4]) -> [1, 2, 2, 2] { max_pool2d(relu(x), 2) }",
    );
}

#[test]
fn commutative_global_max_pool_of_increasing() {
    check(
        "commutative_global_max_pool_of_increasing",
        "(x: [1, 2, 4, 4]) -> [1, 2, 1, 1] { global_max_pool2d(sigmoid(x)) }",
    );
}

#[test]
fn commutative_avg_pool_of_scale() {
    check(
        "commutative_avg_pool_of_scale",
        "(x: [1, 2, 4, 4]) -> [1, 2, 2, 2] { avg_pool2d(x * 3.0, 2) }",
    );
}

#[test]
fn commutative_matmul_of_scale() {
    check(
        "commutative_matmul_of_scale",
        "(a: [4, 8], b: [8, 2]) -> [4, 2] { matmul(a * 3.0, b) }",
    );
}

#[test]
fn commutative_scale_into_matmul() {
    check(
        "commutative_scale_into_matmul",
        "(a: [2, 3], b: [3, 8]) -> [2, 8] { matmul(a, b) / 3.0 }",
    );
}

#[test]
fn commutative_reduce_prod_of_exp() {
    check_rule(
        "commutative_reduce_prod_of_exp",
        "(x: [2, 3]) -> [2] { reduce_prod(exp(x), axes = [1]) }",
        MODERATE,
    );
}

// ---------------------------------------------------------------------------------------
// Options, report and fuse groups, through the whole pipeline
// ---------------------------------------------------------------------------------------

fn compile_one(source: &str) -> dnnfusion_compiler::CompiledModel {
    let tokens: proc_macro2::TokenStream = source.parse().unwrap();
    dnnfusion_compiler::compile(tokens)
        .unwrap_or_else(|e| panic!("{e}"))
        .remove(0)
}

#[test]
fn value_changing_rules_run_only_with_fast_math() {
    let body = "pub model M(x: [2, 3], y: [2, 3]) -> [2, 3] { exp(x) * exp(y) }";
    let plain = compile_one(body);
    assert!(
        !plain.report.rewrites.contains(&"strength_exp_times_exp"),
        "{:?}",
        plain.report.rewrites
    );
    assert_eq!(plain.report.ops_after_rewrite, 3);
    for opt_in in [
        format!("#![rewrite(fast_math)] {body}"),
        body.replace("pub model", "#[rewrite(fast_math)] pub model"),
    ] {
        let fast = compile_one(&opt_in);
        assert_eq!(
            fast.report.rewrites,
            vec!["strength_exp_times_exp"],
            "{opt_in}"
        );
        assert_eq!((fast.report.ops, fast.report.ops_after_rewrite), (3, 2));
    }
}

#[test]
fn rewrite_off_compiles_the_graph_as_declared() {
    let body = "pub model M(x: [2, 3]) -> [2, 3] { relu(relu(x * 1.0)) }";
    let on = compile_one(body);
    assert_eq!(
        on.report.rewrites,
        vec!["identity_mul_one", "identity_relu_relu"]
    );
    assert_eq!((on.report.ops, on.report.ops_after_rewrite), (3, 1));
    for off in [
        format!("#![rewrite(off)] {body}"),
        body.replace("pub model", "#[rewrite(off)] pub model"),
    ] {
        let off = compile_one(&off);
        assert!(off.report.rewrites.is_empty());
        assert_eq!((off.report.ops, off.report.ops_after_rewrite), (3, 3));
    }
    // the model attribute overrides the invocation's default
    let both = compile_one(&format!(
        "#![rewrite(off)] {}",
        body.replace("pub model", "#[rewrite(on)] pub model")
    ));
    assert_eq!(both.report.ops_after_rewrite, 1);
}

#[test]
fn max_rewrites_stops_the_rewriter() {
    let body = "pub model M(x: [2, 3]) -> [2, 3] { relu(relu(x * 1.0)) }";
    let all = compile_one(body);
    assert_eq!(all.report.rewrites.len(), 2);
    for (limit, applied) in [(0, 0), (1, 1), (2, 2), (5, 2)] {
        for source in [
            format!("#![rewrite(max_rewrites = {limit})] {body}"),
            body.replace(
                "pub model",
                &format!("#[rewrite(on, max_rewrites = {limit})] pub model"),
            ),
        ] {
            let m = compile_one(&source);
            assert_eq!(m.report.rewrites.len(), applied, "{source}");
            assert_eq!(m.report.ops_after_rewrite, 3 - applied, "{source}");
        }
    }
    // with a mode in the same attribute, and the limit kept from the invocation's default
    let fast = compile_one(&format!(
        "#![rewrite(max_rewrites = 1)] {}",
        body.replace("pub model", "#[rewrite(fast_math)] pub model")
    ));
    assert_eq!(fast.report.rewrites.len(), 1);
}

#[test]
fn unknown_rewrite_options_are_errors() {
    for bad in [
        "#![rewrite(fast)]",
        "#![rewrite]",
        "#![rewrite(off, bogus)]",
        "#[rewrite(fastmath)]",
        "#[rewrite(max_rewrites = -1)]",
        "#[rewrite(max_rewrites = 1.5)]",
        "#[rewrite(max_rewrites)]",
    ] {
        let tokens: proc_macro2::TokenStream =
            format!("{bad} pub model M(x: [2]) -> [2] {{ relu(x) }}")
                .parse()
                .unwrap();
        let err = dnnfusion_compiler::compile(tokens)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("rewrite(fast_math)")
                || err.contains("#![rewrite(...)]")
                || err.contains("rewrite(max_rewrites = 10)")
                || err.contains("expected `=`"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn fuse_groups_keep_their_nodes() {
    let source = "pub model M(x: [1, 3, 6, 6]) -> [1, 4, 6, 6] {
        fuse {
            let conv = conv2d(x, 4, kernel = 3, padding = 1);
            let y = relu(relu(conv * 1.0));
        }
        -(-y)
    }";
    let m = compile_one(source);
    // inside the group nothing is rewritten; outside, -(-y) goes
    assert_eq!(m.report.rewrites, vec!["identity_neg_neg"]);
    let group = &m.model.fuse_groups[0].nodes;
    let ops: Vec<&str> = group
        .iter()
        .map(|&n| m.model.graph.nodes[n].op.name())
        .collect();
    assert_eq!(ops, vec!["conv2d", "mul", "relu", "relu"]);
    assert_eq!(m.fusion.blocks.len(), 1);
}

// ---------------------------------------------------------------------------------------
// Property: random graphs rewrite to a fixed point and keep their results
// ---------------------------------------------------------------------------------------

/// A random model over `[2, 3]` inputs mixing scalar ops, elementwise functions, binary
/// ops (with broadcasting), reductions, transposes, reshapes, slices, concats and
/// matmuls, built so that rule patterns (`-(-v)`, `v * a * b`, `a * b + a * c`, ...) are
/// frequent. Magnitudes are tracked and kept below 1e4 (a `tanh` bounds a value that
/// would grow past it), so the comparison is not about overflow.
fn random_model(seed: u64) -> String {
    let mut rng = seeded(seed);
    // (name, shape, bound on |value|)
    let mut pool: Vec<(String, [usize; 2], f32)> =
        (0..3).map(|i| (format!("x{i}"), [2, 3], 2.0)).collect();
    let mut body = String::new();
    let constants = [0.5f32, 2.0, 3.0, -1.5, 1.0, 0.0, 0.25];
    let statements = 6 + rng.below(12);
    for s in 0..statements {
        // prefer recent values, so chains form
        let pick = |rng: &mut Rng, pool: &[(String, [usize; 2], f32)]| {
            let n = pool.len();
            let i = if rng.below(3) > 0 {
                n - 1 - rng.below(n.min(3))
            } else {
                rng.below(n)
            };
            pool[i].clone()
        };
        let (a, sa, ba) = pick(&mut rng, &pool);
        let c = constants[rng.below(constants.len())];
        let same: Vec<(String, [usize; 2], f32)> = pool
            .iter()
            .filter(|p| p.1 == sa || p.1 == [sa[0], 1])
            .cloned()
            .collect();
        let (b, _, bb) = same[rng.below(same.len())].clone();
        let exact: Vec<(String, [usize; 2], f32)> =
            pool.iter().filter(|p| p.1 == sa).cloned().collect();
        let (e, _, be) = exact[rng.below(exact.len())].clone();
        let (expr, shape, bound): (String, [usize; 2], f32) = match rng.below(26) {
            0 => (format!("-{a}"), sa, ba),
            1 => (format!("{a} * {c:?}"), sa, ba * c.abs()),
            2 => (
                format!("{a} / {:?}", if c == 0.0 { 4.0 } else { c }),
                sa,
                ba * 4.0,
            ),
            3 => (format!("{a} + {c:?}"), sa, ba + c.abs()),
            4 => (format!("{c:?} - {a}"), sa, ba + c.abs()),
            5 => (format!("abs({a})"), sa, ba),
            6 => (format!("relu({a})"), sa, ba),
            7 => (format!("sqrt(abs({a}))"), sa, ba.sqrt()),
            8 => (format!("square({a})"), sa, ba * ba),
            9 => (format!("exp({a} * 0.1)"), sa, (0.1 * ba).exp()),
            10 => (format!("sigmoid({a})"), sa, 1.0),
            11 => (format!("{a} + {b}"), sa, ba + bb),
            12 => (format!("{a} - {b}"), sa, ba + bb),
            13 => (format!("{a} * {b}"), sa, ba * bb),
            14 => (format!("maximum({a}, {b})"), sa, ba.max(bb)),
            15 => (format!("{a} * {a}"), sa, ba * ba),
            16 => (format!("{a} / (abs({b}) + 1.0)"), sa, ba),
            17 => (format!("reciprocal(abs({a}) + 1.0)"), sa, 1.0),
            18 if sa == [2, 3] => (
                format!("reduce_sum({a}, axes = [1], keepdims = true)"),
                [2, 1],
                ba * 3.0,
            ),
            19 if sa == [2, 3] => (format!("transpose(transpose({a}, 0, 1), 0, 1)"), sa, ba),
            20 if sa == [2, 3] => (format!("reshape(reshape({a}, [3, 2]), [2, 3])"), sa, ba),
            21 if sa == [2, 3] => {
                let start = [0, 1, 3][rng.below(3)];
                (
                    format!(
                        "slice(concat([{a}, {e}], axis = 1), 1, {start}, {})",
                        start + 3
                    ),
                    sa,
                    ba.max(be),
                )
            }
            22 if sa == [2, 3] => (
                format!("concat([slice({a}, 1, 0, 1), slice({a}, 1, 1, 3)], axis = 1)"),
                sa,
                ba,
            ),
            23 if sa == [2, 3] => (
                format!("matmul({a}, transpose({e}, 0, 1))"),
                [2, 2],
                3.0 * ba * be,
            ),
            24 => (
                format!("reduce_max(relu({a}), axes = [1], keepdims = true)"),
                [sa[0], 1],
                ba,
            ),
            25 => (
                format!("{a} * 2.0 * 0.5 + {a} * {c:?}"),
                sa,
                ba * (1.0 + c.abs()),
            ),
            _ => (format!("tanh({a})"), sa, 1.0),
        };
        let (expr, bound) = if bound > 1e4 {
            (format!("tanh({a})"), 1.0)
        } else {
            (expr, bound)
        };
        let shape = if expr.starts_with("tanh(") { sa } else { shape };
        let name = format!("v{s}");
        body.push_str(&format!("        let {name} = {expr};\n"));
        pool.push((name, shape, bound));
    }
    // two outputs: the last value and another one
    let (last, ls, _) = pool.last().cloned().unwrap();
    let (other, os, _) = pool[3 + rng.below(pool.len() - 3)].clone();
    let fmt = |s: [usize; 2]| format!("[{}, {}]", s[0], s[1]);
    format!(
        "pub model R(x0: [2, 3], x1: [2, 3], x2: [2, 3]) -> (a: {}, b: {}) {{\n{body}        ({last}, {other})\n    }}",
        fmt(ls),
        fmt(os)
    )
}

fn random_graphs(fast_math: bool, rtol: f32) {
    let mut fired: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for seed in 0..300 {
        let source = random_model(seed);
        let before = graph_of(&source);
        let options = RewriteOptions {
            fast_math,
            ..RewriteOptions::default()
        };
        let r = rewrite(&before, &options);
        let label = format!("seed {seed}: {:?}\n{source}", r.applied);
        assert!(r.errors.is_empty(), "{label}: {:?}", r.errors);
        assert!(
            r.applied.len() < options.max_rewrites,
            "{label}: did not terminate"
        );
        check::check(&r.graph).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert!(
            graph_cost(&r.graph) <= graph_cost(&before),
            "{label}: the cost rose"
        );
        // a fixed point: nothing applies any more
        let again = rewrite(&r.graph, &options);
        assert!(
            again.applied.is_empty(),
            "{label}: not a fixed point, then {:?}",
            again.applied
        );
        let mut rng = seeded(seed);
        for _ in 0..4 {
            let (inputs, params) = arrays(&before, &mut rng, None, Domain::Any);
            let want = interp::interpret(&before, &inputs, &params).unwrap();
            let got = interp::interpret(&r.graph, &inputs, &params).unwrap();
            let mut values = all_values(&before, &inputs, &params);
            values.extend(all_values(&r.graph, &inputs, &params));
            for (w, g) in want.iter().zip(&got) {
                let s = scale(w.shape(), &values);
                for ((&a, &b), &sc) in w.iter().zip(g.iter()).zip(s.iter()) {
                    assert!(
                        agree(a, b, sc, rtol),
                        "{label}: before {a:e}, after {b:e} (scale {sc:e})"
                    );
                }
            }
        }
        for name in r.applied {
            *fired.entry(name).or_default() += 1;
        }
    }
    println!("rules fired on 300 random graphs (fast_math = {fast_math}): {fired:?}");
    assert!(
        fired.len() >= 25,
        "only {} distinct rules fired",
        fired.len()
    );
}

#[test]
fn random_graphs_rewrite_to_a_fixed_point_and_keep_their_results() {
    random_graphs(false, 1e-5);
}

#[test]
fn random_graphs_with_fast_math_keep_their_results() {
    random_graphs(true, 1e-4);
}

#[test]
fn the_readme_counts_the_rules() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let flat = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    let count = |f: Family| RULES.iter().filter(|r| r.family == f).count();
    let want = format!(
        "({} of them: {} identity, {} CSE, {} folding, {} strength reduction, {} associative, {} distributive, {} commutative)",
        RULES.len(),
        count(Family::Identity),
        count(Family::Cse),
        count(Family::Folding),
        count(Family::Strength),
        count(Family::Associative),
        count(Family::Distributive),
        count(Family::Commutative)
    );
    assert!(
        flat.contains(&want),
        "README \"Graph rewriting\" should say {want}"
    );
}
