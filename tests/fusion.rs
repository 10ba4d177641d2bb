//! Fusion as a user sees it: explicit `fuse { ... }` groups become one block, the report
//! counts blocks, and fused code equals the interpreter.
//!
//! Tolerance: max |generated - interpreter| <= 1e-5 * max(1, max |interpreter|).

use dnnfusion::{Model, Params};
use dnnfusion_compiler::{interp, lower_str};
use ndarray::{ArrayD, IxDyn};

macro_rules! model_with_source {
    ($module:ident { $($tokens:tt)* }) => {
        mod $module {
            dnnfusion::dnn! { $($tokens)* }
            pub const SOURCE: &str = stringify!($($tokens)*);
        }
    };
}

model_with_source! {
    grouped {
        pub model Grouped(x: [1, 3, 6, 6]) -> [1, 4, 6, 6] {
            fuse {
                let conv = conv2d(x, 4, kernel = 3, padding = 1);
                let y = relu(conv + 1.0) * 0.5;
            }
            y
        }
    }
}

model_with_source! {
    prologues {
        /// Prologues: a scaled, masked softmax (a mask of the scores' shape: a broadcast
        /// mask is one-to-many, which Table 3 keeps out of a many-to-many block); a
        /// residual add into layer_norm; a zero pad absorbed into a conv; an exp into a
        /// reduction.
        pub model Prologues(x: [2, 3, 6, 6], mask: [2, 3, 6, 6]) -> (a: [2, 3, 6, 6], b: [2, 3, 6, 6], c: [2, 4, 6, 6], d: [2, 3]) {
            let a = softmax(x * 0.125 + mask, axis = -1);
            let b = layer_norm(x + sigmoid(x), eps = 1e-5) * 2.0;
            let conv = conv2d(pad(x, [1, 1, 1, 1]), 4, kernel = 3);
            let d = reduce_sum(exp(x * 0.5), axes = [2, 3]);
            (a, b, relu(conv), d)
        }
    }
}

model_with_source! {
    layouts {
        /// Epilogues that change the layout: the kernel stores each value where the
        /// transpose (and reshape) put it.
        pub model Layouts(x: [2, 5, 8], y: [2, 8, 6]) -> (a: [2, 6, 5], b: [2, 4, 5, 3]) {
            let a = transpose(matmul(x, y) * 0.5, 1, 2);
            let q = linear(x, 12);
            let b = transpose(reshape(q, [2, 5, 4, 3]), 1, 2);
            (a, b)
        }
    }
}

model_with_source! {
    pools {
        /// Poolings the memory plan runs over their input (`a`'s max pool with a residual
        /// add, `b`'s average pool with padding) and ones it must not: overlapping rows
        /// that reach back (`c`), an input read again later (`d`).
        pub model Pools(x: [2, 3, 10, 10]) -> (a: [2, 4, 5, 5], b: [2, 4, 5, 5], c: [2, 4, 10, 10], d: [2, 4, 1, 1]) {
            let conv_a = conv2d(x, 4, kernel = 3, padding = 1);
            let conv_e = conv2d(x, 4, kernel = 3, padding = 1);
            let pooled_a = relu(max_pool2d(conv_a, 2)) + avg_pool2d(conv_e, 2);
            let a = conv2d(pooled_a, 4, kernel = 1);
            let conv_b = conv2d(x, 4, kernel = 3, padding = 1);
            let pooled_b = avg_pool2d(conv_b, 3, stride = 2, padding = 1) * 2.0;
            let b = conv2d(pooled_b, 4, kernel = 1);
            let conv_c = conv2d(x, 4, kernel = 3, padding = 1);
            let pooled_c = max_pool2d(conv_c, 3, stride = 1, padding = 1);
            let c = conv2d(pooled_c, 4, kernel = 1);
            let conv_d = conv2d(x, 4, kernel = 3, padding = 1);
            let d = global_avg_pool2d(avg_pool2d(conv_d, 2)) + global_max_pool2d(conv_d);
            (a, b, c, d)
        }
    }
}

/// Runs a model on `inputs` with parameters `0.01 * (i % 17) - 0.08` and compares every
/// output with the interpreter on the same graph.
fn compare_with_interpreter<M: Model>(source: &str, inputs: &[Vec<f32>]) {
    let graph = lower_str(source).unwrap().remove(0).graph;
    let mut params = Vec::new();
    let mut arrays = Vec::new();
    for p in &graph.params {
        let len: usize = p.shape.iter().product();
        let data: Vec<f32> = (0..len).map(|i| 0.01 * (i % 17) as f32 - 0.08).collect();
        arrays.push(ArrayD::from_shape_vec(IxDyn(&p.shape), data.clone()).unwrap());
        params.extend(data);
    }
    let arrays_in: Vec<ArrayD<f32>> = inputs
        .iter()
        .zip(&graph.inputs)
        .map(|(x, &v)| ArrayD::from_shape_vec(IxDyn(graph.shape(v)), x.clone()).unwrap())
        .collect();
    let expected = interp::interpret(&graph, &arrays_in, &arrays).unwrap();
    // the buffer: the loaded parameters, then room for what `prepare` computes from them
    params.resize(M::PARAM_LEN, f32::NAN);
    let model = M::from_static_params(Params::owned(params)).unwrap();
    let refs: Vec<&[f32]> = inputs.iter().map(|v| v.as_slice()).collect();
    let got = dnnfusion::infer(&model, &refs).unwrap();
    for (got, expected) in got.iter().zip(&expected) {
        // 1e-5 of the output's largest magnitude (at least 1)
        let mismatch = dnnfusion_test_support::first_mismatch(got, expected.iter(), 1e-5);
        assert!(
            mismatch.is_none(),
            "generated against interpreter: {mismatch:?}"
        );
    }
}

#[test]
fn an_explicit_group_is_one_block_and_computes_the_same() {
    use grouped::Grouped;
    let blocks: Vec<&str> = Grouped::FUSION_REPORT
        .block_list
        .iter()
        .map(|b| b.ops)
        .collect();
    assert_eq!(blocks, vec!["conv2d+add+relu+mul"]);
    assert_eq!(Grouped::FUSION_REPORT.block_list[0].mapping, "many-to-many");
    let x: Vec<f32> = (0..108)
        .map(|i| ((i * 7) % 13) as f32 / 6.0 - 1.0)
        .collect();
    compare_with_interpreter::<Grouped>(grouped::SOURCE, &[x]);
}

#[test]
fn prologues_fuse_into_row_kernels_and_pads_into_convs() {
    use prologues::Prologues;
    let blocks: Vec<&str> = Prologues::FUSION_REPORT
        .block_list
        .iter()
        .map(|b| b.ops)
        .collect();
    assert!(blocks.contains(&"mul+add+softmax"), "{blocks:?}");
    assert!(blocks.contains(&"sigmoid+add+layer_norm+mul"), "{blocks:?}");
    assert!(blocks.contains(&"pad+conv2d+relu"), "{blocks:?}");
    assert!(blocks.contains(&"mul+exp+reduce_sum"), "{blocks:?}");
    let x: Vec<f32> = (0..216)
        .map(|i| ((i * 7) % 13) as f32 / 3.0 - 2.0)
        .collect();
    let mask: Vec<f32> = (0..216)
        .map(|i| if i % 5 == 0 { -1e4 } else { 0.0 })
        .collect();
    compare_with_interpreter::<Prologues>(prologues::SOURCE, &[x, mask]);
}

#[test]
fn fusion_reports_count_fewer_blocks_and_bytes_than_ops() {
    for (fused, unfused) in dnnfusion_models::fusion_reports() {
        assert!(fused.fusion && !unfused.fusion);
        assert_eq!(fused.ops, unfused.ops);
        assert!(
            fused.blocks < unfused.blocks,
            "{}: {} blocks fused vs {} unfused",
            fused.model,
            fused.blocks,
            unfused.blocks
        );
        assert!(
            fused.irs_bytes_after < fused.irs_bytes_before,
            "{}",
            fused.model
        );
        assert_eq!(unfused.irs_bytes_after, unfused.irs_bytes_before);
        assert!(fused.fusion_rate() > 1.0);
    }
}

#[test]
fn layers_with_the_same_shapes_share_generated_code() {
    // bert_tiny's two encoder layers give the same block sequence
    let report = dnnfusion_models::reference::BertTiny::FUSION_REPORT;
    let half = report.block_list.len() / 2;
    let first: Vec<&str> = report.block_list[..half].iter().map(|b| b.ops).collect();
    let second: Vec<&str> = report.block_list[half..].iter().map(|b| b.ops).collect();
    assert_eq!(first, second);
    // the second layer reuses the first layer's functions (and identical blocks within a
    // layer, like the query and key head splits, share one too)
    let first_layer_fused = first.iter().filter(|ops| ops.contains('+')).count();
    let functions = dnnfusion_models::reference::BertTiny::FUSED_FUNCTIONS;
    assert!(
        functions < first_layer_fused,
        "{functions} functions for {first_layer_fused} fused blocks per layer"
    );
}

#[test]
fn transposes_after_matmul_and_linear_become_store_maps() {
    use layouts::Layouts;
    let blocks: Vec<&str> = Layouts::FUSION_REPORT
        .block_list
        .iter()
        .map(|b| b.ops)
        .collect();
    assert!(blocks.contains(&"matmul+mul+transpose"), "{blocks:?}");
    assert!(blocks.contains(&"linear+reshape+transpose"), "{blocks:?}");
    let x: Vec<f32> = (0..80).map(|i| ((i * 5) % 11) as f32 / 4.0 - 1.0).collect();
    let y: Vec<f32> = (0..96).map(|i| ((i * 3) % 7) as f32 / 3.0 - 1.0).collect();
    compare_with_interpreter::<Layouts>(layouts::SOURCE, &[x, y]);
}

#[test]
fn poolings_planned_in_place_compute_the_same() {
    let model = lower_str(pools::SOURCE).unwrap().remove(0);
    let compiled = dnnfusion_compiler::compile_model(model);
    let graph = &compiled.model.graph;
    let overwritten: Vec<&str> = compiled
        .memory
        .in_place
        .iter()
        .filter_map(|&(_, operand)| graph.values.get(operand).map(|v| v.name.as_str()))
        .collect();
    for name in ["conv_a", "conv_b"] {
        assert!(overwritten.contains(&name), "{overwritten:?}");
    }
    for name in ["conv_c", "conv_d"] {
        assert!(!overwritten.contains(&name), "{overwritten:?}");
    }
    let x: Vec<f32> = (0..600)
        .map(|i| ((i * 7) % 13) as f32 / 3.0 - 2.0)
        .collect();
    compare_with_interpreter::<pools::Pools>(pools::SOURCE, &[x]);
}

#[test]
fn the_planner_and_the_kernels_agree_on_the_widest_in_place_pooling_row() {
    assert_eq!(
        dnnfusion_compiler::plan::IN_PLACE_POOL_ROW,
        dnnfusion::runtime::kernels::IN_PLACE_POOL_ROW
    );
}
