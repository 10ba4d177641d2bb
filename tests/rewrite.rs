//! Rewriting end to end: models full of rewritable patterns (every family), compiled by
//! `dnn!` with the exact rules (the default), with `#![rewrite(fast_math)]` (fused and
//! unfused) and with `#![rewrite(off)]`, each against the reference interpreter on the
//! graph as declared (`lower_str`, never rewritten). Tolerance as `tests/ops.rs` chains:
//! max |generated - interpreter| <= 1e-4 * max(1, max |interpreter|).

mod common;

macro_rules! rewrite_cases {
    ($($name:ident { $($dsl:tt)* })*) => {
        $(
            pub mod $name {
                pub mod exact {
                    dnnfusion::dnn! { $($dsl)* }
                    #[test]
                    fn generated_code_matches_the_declared_graph() {
                        crate::common::check_with::<Case>(stringify!($($dsl)*), 1e-4);
                        let r = Case::FUSION_REPORT;
                        assert!(!r.rewrites.is_empty() && r.ops_after_rewrite <= r.ops, "{:?}", r.rewrites);
                    }
                }
                pub mod fast_math {
                    dnnfusion::dnn! { #![rewrite(fast_math)] $($dsl)* }
                    #[test]
                    fn generated_code_matches_the_declared_graph() {
                        crate::common::check_with::<Case>(stringify!($($dsl)*), 1e-4);
                    }
                }
                mod fast_math_unfused {
                    dnnfusion::dnn! { #![rewrite(fast_math)] #![fusion(off)] $($dsl)* }
                    #[test]
                    fn generated_code_matches_the_declared_graph() {
                        crate::common::check_with::<Case>(stringify!($($dsl)*), 1e-4);
                    }
                }
                mod off {
                    dnnfusion::dnn! { #![rewrite(off)] $($dsl)* }
                    #[test]
                    fn nothing_is_rewritten() {
                        crate::common::check_with::<Case>(stringify!($($dsl)*), 1e-4);
                        let r = Case::FUSION_REPORT;
                        assert!(r.rewrites.is_empty());
                        assert_eq!(r.ops, r.ops_after_rewrite);
                    }
                }
            }
        )*
    };
}

rewrite_cases! {
    identities {
        pub model Case(x: [2, 3, 4], y: [2, 3, 4]) -> (a: [2, 4, 3], b: [2, 3, 4]) {
            let t = transpose(transpose(transpose(x, 1, 2), 1, 2), 1, 2);
            let r = relu(relu(-(-t))) * 1.0 + 0.0;
            let s = reshape(squeeze(unsqueeze(y, 0)), [2, 3, 4]);
            let c = concat([slice(s, 2, 0, 2), slice(s, 2, 2, 4)], axis = 2);
            (r, abs(abs(c)) / 1.0 + slice(concat([x, y], axis = 1), 1, 3, 6))
        }
    }
    algebra {
        pub model Case(x: [4, 8], y: [4, 8], z: [4, 8]) -> (a: [4, 8], b: [4, 8], c: [4, 1]) {
            let p = x * y + x * z;
            let q = abs(x) * y * abs(z);
            let r = reciprocal(x * x + 1.0) * reciprocal(square(y) + 1.0);
            let s = pow(p, 2) + (q * 3.0) * 5.0 + q / 4.0 + q / 3.0;
            let m = reduce_max(relu(s + r), axes = [1], keepdims = true);
            (s - m, x * sigmoid(x) + 1.0 / (1.0 + exp(-y)), reduce_sum(r * 2.0, axes = [1], keepdims = true))
        }
    }
    network {
        pub model Case(x: [1, 2, 8, 8], q: [1, 2, 16, 8], k: [1, 2, 16, 8]) -> (a: [1, 4, 4, 4], b: [1, 2, 16, 16], c: [1, 2, 16, 4]) {
            let conv = conv2d(x, 4, kernel = 3, padding = 1);
            let pooled = max_pool2d(relu(conv), 2);
            let scores = matmul(q, transpose(k, -1, -2)) * 0.125;
            let p1 = linear(q, 4);
            let p2 = linear(q, 4, bias = false);
            (pooled, softmax(scores), p1 + p2)
        }
    }
    value_changing {
        pub model Case(pos0: [2, 6], pos1: [2, 6], x: [2, 6]) -> (a: [2, 6], b: [2, 6], c: [2]) {
            let l = log(pos0) + log(pos1);
            let e = exp(x) * exp(x * 0.5);
            let f = ((x * 2.0 + 1.0) * 3.0) - 4.0;
            let g = sqrt(pos0) * sqrt(pos0) - x / 3.0;
            (l + f * g, e, reduce_prod(exp(x * 0.1), axes = [1]))
        }
    }
}

#[test]
fn value_changing_rules_fire_only_with_the_opt_in() {
    let exact = value_changing::exact::Case::FUSION_REPORT.rewrites;
    let fast = value_changing::fast_math::Case::FUSION_REPORT.rewrites;
    for rule in [
        "strength_log_plus_log",
        "strength_exp_times_exp",
        "folding_affine_chain",
        "commutative_reduce_prod_of_exp",
    ] {
        assert!(
            !exact.contains(&rule),
            "{rule} fired without fast_math: {exact:?}"
        );
        assert!(
            fast.contains(&rule),
            "{rule} did not fire with fast_math: {fast:?}"
        );
    }
}

/// A BERT-base-style encoder at hidden 384, 12 heads, FFN 1536, 128 tokens, post-LN: the
/// shape where moving `1/sqrt(d)` from the scores onto `Q` split the `Q` projection into
/// two blocks.
const BERT_384: &str = "
    block layer(x: [B, S, D], heads = 12, ffn = 1536) {
        let query = linear(x, D);
        let key = linear(x, D);
        let value = linear(x, D);
        let q = transpose(reshape(query, [B, S, heads, D / heads]), 1, 2);
        let k = transpose(reshape(key, [B, S, heads, D / heads]), 1, 2);
        let v = transpose(reshape(value, [B, S, heads, D / heads]), 1, 2);
        let probs = softmax(matmul(q, transpose(k, -1, -2)) / sqrt(D / heads));
        let ctx = reshape(transpose(matmul(probs, v), 1, 2), [B, S, D]);
        let ln1 = layer_norm(x + linear(ctx, D, key = \"attn_out\"), eps = 1e-12);
        let ffn_out = linear(gelu(linear(ln1, ffn, key = \"ffn_in\")), D);
        layer_norm(ln1 + ffn_out, eps = 1e-12, key = \"ln2\")
    }
    pub model Bert384(input: [1, 128, 384]) -> [1, 128, 384] {
        let mut h = input;
        for i in 0..2 {
            #[key = \"layers.{i}\"]
            h = layer(h);
        }
        h
    }";

/// The fused plan of every model, rewritten, against the same model with
/// `#![rewrite(off)]`: never more blocks per inference, never more intermediate bytes.
#[test]
fn rewriting_never_fuses_worse_on_the_zoo_and_bert() {
    use dnnfusion_compiler::{compile_model, lower::RewriteMode, lower_str};
    for source in [dnnfusion_models::reference::SOURCE, BERT_384] {
        let models = lower_str(source).unwrap();
        for model in models {
            let mut declared = model.clone();
            declared.options.rewrite = RewriteMode::Off;
            let rewritten = compile_model(model).report;
            let declared = compile_model(declared).report;
            assert!(
                rewritten.blocks <= declared.blocks
                    && rewritten.irs_bytes_after <= declared.irs_bytes_after,
                "{}: {} blocks / {} bytes rewritten against {} / {} as declared; rules {:?}",
                rewritten.model,
                rewritten.blocks,
                rewritten.irs_bytes_after,
                declared.blocks,
                declared.irs_bytes_after,
                rewritten.rewrites
            );
        }
    }
}
