//! What users meet first when they bring PyTorch code: PyTorch's positional arguments
//! (`batch_norm(x, 3)` is the channel count, never `eps`), compile-time `if`/`else` in
//! blocks, `dropout`/`identity`, `adaptive_avg_pool2d`, integer token ids, `split` with
//! PyTorch's and ONNX's meanings spelled out, `kernel_size`.
//!
//! References are computed here from the ops' definitions in f64 (closed forms and plain
//! loops), independent of the compiler and its interpreter. Tolerance: 1e-6 relative to
//! max(1, |expected|) unless a test says otherwise.

use dnnfusion::{Model, Params, RunError};

fn close(got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        // the f64 reference rounded to f32 first (half an ulp, far below the tolerance)
        let tol = 1e-6 * w.abs().max(1.0) as f32;
        assert!(
            dnnfusion_test_support::within(g, w as f32, tol),
            "element {i}: got {g}, want {w}"
        );
    }
}

fn run1<M: Model>(model: &M, x: &[f32]) -> Vec<f32> {
    dnnfusion::infer(model, &[x]).unwrap().remove(0)
}

mod norms {
    dnnfusion::dnn! {
        pub model BatchNorm(x: [1, 3, 2, 2]) -> [1, 3, 2, 2] {
            let bn = batch_norm(x, 3);
            bn
        }
        pub model BatchNormOptions(x: [1, 3, 2, 2]) -> [1, 3, 2, 2] {
            let bn = batch_norm(x, 3, eps = 0.5, momentum = 0.01);
            bn
        }
        pub model InstanceNorm(x: [1, 3, 2, 2]) -> [1, 3, 2, 2] {
            instance_norm(x, 3)
        }
        pub model LayerNormTorch(x: [2, 4]) -> [2, 4] {
            layer_norm(x, 4, affine = false)
        }
        pub model GroupNormTorch(x: [1, 4, 1, 2]) -> [1, 4, 1, 2] {
            group_norm(x, 2, 4, affine = false)
        }
    }
}

/// weight 1, bias 0, running mean 0, running var 1: PyTorch gives x / sqrt(1 + eps).
fn unit_batch_norm_params() -> Vec<f32> {
    [1.0f32; 3]
        .into_iter()
        .chain([0.0; 3])
        .chain([0.0; 3])
        .chain([1.0; 3])
        .collect()
}

#[test]
fn batch_norm_second_argument_is_the_channel_count_not_eps() {
    use norms::*;
    assert_eq!(BatchNorm::PARAMS.len(), 4);
    let model = BatchNorm::from_params(Params::owned(unit_batch_norm_params())).unwrap();
    let y = run1(&model, &[1.0; 12]);
    // the old reading took 3 as eps: 1 / sqrt(1 + 3) = 0.5
    close(&y, &[1.0 / (1.0f64 + 1e-5).sqrt(); 12]);

    let model = BatchNormOptions::from_params(Params::owned(unit_batch_norm_params())).unwrap();
    let y = run1(&model, &[1.0; 12]);
    close(&y, &[1.0 / (1.5f64).sqrt(); 12]);
}

#[test]
fn instance_layer_and_group_norm_take_pytorch_positional_arguments() {
    use norms::*;
    // instance norm: each channel of [a, b, c, d] over its 4 values, eps 1e-5
    let x: Vec<f32> = (0..12).map(|i| (i * i % 7) as f32).collect();
    let normalize = |v: &[f64]| -> Vec<f64> {
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / v.len() as f64;
        v.iter().map(|a| (a - mean) / (var + 1e-5).sqrt()).collect()
    };
    let xd: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let want: Vec<f64> = xd.chunks(4).flat_map(normalize).collect();
    let model = InstanceNorm::from_params(Params::owned(vec![])).unwrap();
    close(&run1(&model, &x), &want);

    let x8: Vec<f32> = (0..8).map(|i| ((i * 5) % 8) as f32 - 3.0).collect();
    let x8d: Vec<f64> = x8.iter().map(|&v| f64::from(v)).collect();
    let want: Vec<f64> = x8d.chunks(4).flat_map(normalize).collect();
    let model = LayerNormTorch::from_params(Params::owned(vec![])).unwrap();
    close(&run1(&model, &x8), &want);
    // 2 groups of 2 channels x 2 pixels: the same chunks of 4
    let model = GroupNormTorch::from_params(Params::owned(vec![])).unwrap();
    close(&run1(&model, &x8), &want);
}

mod blocks {
    dnnfusion::dnn! {
        /// A ResNet basic block: a projection shortcut only when the shape changes.
        block basic(x: [N, C, H, W], planes, stride = 1) {
            let body = conv2d(x, planes, kernel_size = 1, stride = stride, bias = false);
            let mut shortcut = x;
            if stride != 1 || C != planes {
                #[key = "downsample"]
                shortcut = conv2d(x, planes, 1, stride = stride, bias = false);
            }
            relu(body + shortcut)
        }

        block scale(x: [N, C], mode = "double") {
            let mut y = x;
            if mode == "double" {
                y = y * 2.0;
            } else if mode == "negate" && !(C > 100) {
                let minus = -y;      // scoped to the branch
                y = minus;
            } else {
                y = dropout(identity(y), 0.1);
            }
            y
        }

        pub model Same(x: [1, 2, 2, 2]) -> [1, 2, 2, 2] {
            basic(x, 2)
        }
        pub model Projected(x: [1, 2, 2, 2]) -> [1, 3, 1, 1] {
            basic(x, 3, stride = 2)
        }
        pub model Scales(x: [1, 2]) -> (a: [1, 2], b: [1, 2], c: [1, 2]) {
            (scale(x), scale(x, mode = "negate"), scale(x, mode = "keep"))
        }
    }
}

#[test]
fn if_else_picks_the_block_variant_at_compile_time() {
    use blocks::*;
    let names = |m: &[dnnfusion::ParamSpec]| m.iter().map(|p| p.name).collect::<Vec<_>>();
    assert_eq!(names(Same::PARAMS), ["body.weight"]);
    assert_eq!(
        names(Projected::PARAMS),
        ["body.weight", "downsample.weight"]
    );

    // identity shortcut: relu(w * x + x) with a 1x1 conv of weight w = identity * 2
    let w: Vec<f32> = vec![2.0, 0.0, 0.0, 2.0];
    let model = Same::from_params(Params::owned(w)).unwrap();
    let x: Vec<f32> = (0..8).map(|i| i as f32 - 4.0).collect();
    let want: Vec<f64> = x.iter().map(|&v| (3.0 * f64::from(v)).max(0.0)).collect();
    close(&run1(&model, &x), &want);

    let model = Scales::from_params(Params::owned(vec![])).unwrap();
    let out = dnnfusion::infer(&model, &[&[1.5, -2.0]]).unwrap();
    close(&out[0], &[3.0, -4.0]);
    close(&out[1], &[-1.5, 2.0]);
    close(&out[2], &[1.5, -2.0]);
}

mod pools {
    dnnfusion::dnn! {
        pub model Uneven(x: [1, 2, 5, 7]) -> [1, 2, 3, 4] {
            adaptive_avg_pool2d(x, [3, 4])
        }
        pub model Even(x: [1, 2, 6, 4]) -> [1, 2, 3, 2] {
            adaptive_avg_pool2d(x, [3, 2])
        }
        pub model Global(x: [1, 2, 5, 7]) -> [1, 2, 1, 1] {
            adaptive_avg_pool2d(x, 1)
        }
        pub model Larger(x: [1, 1, 2, 3]) -> [1, 1, 3, 4] {
            adaptive_avg_pool2d(x, [3, 4])
        }
    }
}

/// PyTorch's definition: cell i of n over an axis of length len averages
/// floor(i * len / n) .. ceil((i + 1) * len / n).
fn adaptive_reference(
    x: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
) -> Vec<f64> {
    let mut out = Vec::new();
    for p in 0..planes {
        for i in 0..oh {
            for j in 0..ow {
                let (h0, h1) = (i * h / oh, ((i + 1) * h).div_ceil(oh));
                let (w0, w1) = (j * w / ow, ((j + 1) * w).div_ceil(ow));
                let mut sum = 0.0;
                for y in h0..h1 {
                    for x_ in w0..w1 {
                        sum += f64::from(x[(p * h + y) * w + x_]);
                    }
                }
                out.push(sum / ((h1 - h0) * (w1 - w0)) as f64);
            }
        }
    }
    out
}

#[test]
fn adaptive_avg_pool2d_matches_pytorchs_definition() {
    use pools::*;
    let x: Vec<f32> = (0..70)
        .map(|i| ((i * 37) % 11) as f32 * 0.5 - 2.0)
        .collect();
    let m = Uneven::from_params(Params::owned(vec![])).unwrap();
    close(&run1(&m, &x), &adaptive_reference(&x, 2, 5, 7, 3, 4));
    let m = Global::from_params(Params::owned(vec![])).unwrap();
    close(&run1(&m, &x), &adaptive_reference(&x, 2, 5, 7, 1, 1));
    let m = Even::from_params(Params::owned(vec![])).unwrap();
    let x48 = &x[..48];
    close(&run1(&m, x48), &adaptive_reference(x48, 2, 6, 4, 3, 2));
    let m = Larger::from_params(Params::owned(vec![])).unwrap();
    close(
        &run1(&m, &x[..6]),
        &adaptive_reference(&x[..6], 1, 2, 3, 3, 4),
    );
}

mod ids {
    dnnfusion::dnn! {
        pub model Embed(ids: i64[1, 4]) -> [1, 4, 2] {
            let emb = embedding(ids, 5, 2);
            emb
        }
        pub model Embed32(ids: i32[3]) -> [3, 2] {
            let table = param([5, 2]);
            gather(table, ids)
        }
    }
}

#[test]
fn token_ids_are_integers_in_the_signature() {
    use ids::*;
    let table: Vec<f32> = (0..10).map(|i| i as f32 * 10.0).collect();
    let model = Embed::from_params(Params::owned(table.clone())).unwrap();
    let mut out = [0.0f32; 8];
    let mut arena = [0.0f32; Embed::ARENA_LEN];
    model.run(&[4i64, 0, 2, -1], &mut out, &mut arena);
    // row -1 is the last row, as in ONNX Gather
    assert_eq!(out, [80.0, 90.0, 0.0, 10.0, 40.0, 50.0, 80.0, 90.0]);
    // out of range: NaN, never a wrong row
    model.run(&[5i64, 1 << 40, 1, 1], &mut out, &mut arena);
    assert!(out[..4].iter().all(|v| v.is_nan()));
    assert_eq!(&out[4..], &[20.0, 30.0, 20.0, 30.0]);

    let model = Embed32::from_params(Params::owned(table)).unwrap();
    let mut out = [0.0f32; 6];
    let mut arena = [0.0f32; Embed32::ARENA_LEN];
    model.run(&[1i32, 3, 3], &mut out, &mut arena);
    assert_eq!(out, [20.0, 30.0, 60.0, 70.0, 60.0, 70.0]);
    // the dynamically checked path takes whole numbers as f32 and refuses the rest
    let got = dnnfusion::infer(&model, &[&[1.0, 3.0, 3.0]]).unwrap();
    assert_eq!(got[0], out);
    let err = dnnfusion::infer(&model, &[&[1.0, 2.5, 3.0]]).unwrap_err();
    assert_eq!(
        err,
        RunError::InputNotIndex {
            index: 0,
            element: 1
        }
    );
}

mod splits {
    dnnfusion::dnn! {
        pub model Splits(x: [5]) -> (a: [2], b: [2], c: [1], d: [3], e: [2]) {
            let (a, b, c) = split(x, split_size = 2);
            let (d, e) = split(x, [3, 2]);
            (a, b, c, d, e)
        }
        pub model Chunks(x: [6]) -> (a: [2], b: [2], c: [2]) {
            split(x, chunks = 3)
        }
    }
}

#[test]
fn split_takes_sizes_or_says_which_integer_meaning() {
    use splits::*;
    let model = Splits::from_params(Params::owned(vec![])).unwrap();
    let out = dnnfusion::infer(&model, &[&[1.0, 2.0, 3.0, 4.0, 5.0]]).unwrap();
    assert_eq!(
        out,
        vec![
            vec![1.0, 2.0],
            vec![3.0, 4.0],
            vec![5.0],
            vec![1.0, 2.0, 3.0],
            vec![4.0, 5.0]
        ]
    );
    let model = Chunks::from_params(Params::owned(vec![])).unwrap();
    let out = dnnfusion::infer(&model, &[&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]).unwrap();
    assert_eq!(out, vec![vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 6.0]]);
}
