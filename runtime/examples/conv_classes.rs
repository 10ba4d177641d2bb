//! GFLOP/s of `kernels::conv2d` on every convolution shape class of torchvision's
//! resnet18 and mobilenet_v2 at 224x224, batch 1, one thread; depthwise convolutions
//! (memory-bound) also in GB/s of input read plus output written, the others also on
//! weights laid out by `tile_conv2d_weights` (`conv2d_tiled`, what models run); then
//! `kernels::conv_transpose2d` on unet_small's upsamplings and two wider ones, and
//! `kernels::matmul` at 512x512x512 (sgemm) and at the BERT-384 projection shapes, and
//! `kernels::matmul_panels` (linear layers: weights packed at load) at the same shapes.
//!
//! Run: `cargo run --release -p dnnfusion-runtime --features std --example conv_classes`
//! (`-- --json` for one JSON object per line; `-- --only TEXT` runs the classes whose name
//! contains TEXT; with `--features threads`, `-- --threads N` runs every kernel inside
//! `threads::with_threads(N, ..)`).

use std::time::Instant;

use dnnfusion_runtime::kernels::{
    conv2d, conv2d_tiled, conv2d_winograd, conv_transpose2d, linear, matmul, matmul_panels,
    pack_panels, store, store_rows, tile_conv2d_weights, winograd_fits, winograd_weights,
    winograd_weights_len, Conv2dGeom, MatMulGeom, WEIGHT_PANEL,
};

/// (name, c_in, size, c_out, kernel, stride, groups)
const CLASSES: &[(&str, usize, usize, usize, usize, usize, usize)] = &[
    ("resnet18 stem 7x7 s2", 3, 224, 64, 7, 2, 1),
    ("resnet18 3x3 s1 64@56", 64, 56, 64, 3, 1, 1),
    ("resnet18 3x3 s2 64->128@56", 64, 56, 128, 3, 2, 1),
    ("resnet18 3x3 s1 128@28", 128, 28, 128, 3, 1, 1),
    ("resnet18 1x1 s2 64->128@56", 64, 56, 128, 1, 2, 1),
    ("resnet18 3x3 s2 128->256@28", 128, 28, 256, 3, 2, 1),
    ("resnet18 3x3 s1 256@14", 256, 14, 256, 3, 1, 1),
    ("resnet18 1x1 s2 128->256@28", 128, 28, 256, 1, 2, 1),
    ("resnet18 3x3 s2 256->512@14", 256, 14, 512, 3, 2, 1),
    ("resnet18 3x3 s1 512@7", 512, 7, 512, 3, 1, 1),
    ("resnet18 1x1 s2 256->512@14", 256, 14, 512, 1, 2, 1),
    ("unet_small 3x3 s1 16@128", 16, 128, 16, 3, 1, 1),
    ("unet_small 3x3 s1 32@64", 32, 64, 32, 3, 1, 1),
    ("unet_small 3x3 s1 64@32", 64, 32, 64, 3, 1, 1),
    ("mobilenet_v2 stem 3x3 s2", 3, 224, 32, 3, 2, 1),
    ("mobilenet_v2 1x1 16->96@112", 16, 112, 96, 1, 1, 1),
    ("mobilenet_v2 1x1 96->24@56", 96, 56, 24, 1, 1, 1),
    ("mobilenet_v2 1x1 24->144@56", 24, 56, 144, 1, 1, 1),
    ("mobilenet_v2 1x1 32->192@28", 32, 28, 192, 1, 1, 1),
    ("mobilenet_v2 1x1 384->64@14", 384, 14, 64, 1, 1, 1),
    ("mobilenet_v2 1x1 96->576@14", 96, 14, 576, 1, 1, 1),
    ("mobilenet_v2 1x1 576->96@14", 576, 14, 96, 1, 1, 1),
    ("mobilenet_v2 1x1 960->320@7", 960, 7, 320, 1, 1, 1),
    ("mobilenet_v2 1x1 320->1280@7", 320, 7, 1280, 1, 1, 1),
    ("mobilenet_v2 dw 3x3 s1 32@112", 32, 112, 32, 3, 1, 32),
    ("mobilenet_v2 dw 3x3 s2 96@112", 96, 112, 96, 3, 2, 96),
    ("mobilenet_v2 dw 3x3 s1 144@56", 144, 56, 144, 3, 1, 144),
    ("mobilenet_v2 dw 3x3 s1 192@28", 192, 28, 192, 3, 1, 192),
    ("mobilenet_v2 dw 3x3 s2 144@56", 144, 56, 144, 3, 2, 144),
    ("mobilenet_v2 dw 3x3 s2 192@28", 192, 28, 192, 3, 2, 192),
    ("mobilenet_v2 dw 3x3 s2 576@14", 576, 14, 576, 3, 2, 576),
    ("mobilenet_v2 dw 3x3 s1 576@14", 576, 14, 576, 3, 1, 576),
    ("mobilenet_v2 dw 3x3 s1 960@7", 960, 7, 960, 3, 1, 960),
];

/// Transposed convolutions: (name, c_in, size, c_out, kernel, stride, padding)
const TRANSPOSED: &[(&str, usize, usize, usize, usize, usize, usize)] = &[
    ("unet_small up 2x2 s2 64->32@32", 64, 32, 32, 2, 2, 0),
    ("unet_small up 2x2 s2 32->16@64", 32, 64, 16, 2, 2, 0),
    ("unet up 2x2 s2 256->128@28", 256, 28, 128, 2, 2, 0),
    ("dcgan up 4x4 s2 p1 128->64@16", 128, 16, 64, 4, 2, 1),
];

/// Copies of a weight [`main`] cycles through to measure a product on weights that are
/// not in cache (64 MB and more for the linears: past the last-level cache; past L2 for
/// every convolution weight of [`COLD_MIN_BYTES`] and more, past L3 from about 1.2 MB).
const COLD_COPIES: usize = 28;

/// Bytes of the smallest convolution weight also timed out of cache.
const COLD_MIN_BYTES: usize = 256 * 1024;

/// GFLOP/s of `run` on `weights` out of cache (a different copy at each call, as a model
/// meets the weights of its later layers, where they outgrow L2), for weights of at least
/// [`COLD_MIN_BYTES`].
fn cold_gflops(flops: f64, weights: &[f32], mut run: impl FnMut(&[f32])) -> Option<f64> {
    if weights.len() * 4 < COLD_MIN_BYTES {
        return None;
    }
    let copies: Vec<Vec<f32>> = (0..COLD_COPIES).map(|_| weights.to_vec()).collect();
    let mut next = 0;
    let median = median_time(|| {
        next = (next + 1) % COLD_COPIES;
        run(&copies[next])
    });
    Some(flops / median / 1e9)
}

/// Median seconds of `f` over at least 5 calls and 0.3 s, after one warm-up call.
fn median_time(mut f: impl FnMut()) -> f64 {
    f();
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 5 || start.elapsed().as_secs_f64() < 0.3 {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = args
        .iter()
        .position(|a| a == "--threads")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    #[cfg(feature = "threads")]
    dnnfusion_runtime::threads::with_threads(threads, || run(&args));
    #[cfg(not(feature = "threads"))]
    {
        if threads != 1 {
            eprintln!("conv_classes: --threads needs `--features threads`");
            std::process::exit(2);
        }
        run(&args);
    }
}

fn run(args: &[String]) {
    let json = args.iter().any(|a| a == "--json");
    // `--only TEXT`: the classes whose name contains TEXT (to profile one)
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map_or("", String::as_str);
    for &(name, c_in, size, c_out, k, stride, groups) in CLASSES {
        if !name.contains(only) {
            continue;
        }
        let pad = k / 2;
        let o = (size + 2 * pad - k) / stride + 1;
        let g = square(c_in, (size, o), c_out, (k, stride, pad), groups);
        let x = input(c_in * size * size);
        let w: Vec<f32> = (0..c_out * c_in / groups * k * k)
            .map(|i| (i % 7) as f32 * 0.01)
            .collect();
        let b = vec![0.5f32; c_out];
        let mut out = vec![0.0f32; c_out * o * o];
        let flops = 2.0 * (c_out * o * o * c_in / groups * k * k) as f64;
        let bytes = 4.0 * (c_in * size * size + c_out * o * o) as f64;
        let median = median_time(|| conv2d(&x, &w, Some(&b), &mut out, &g, store_rows));
        let gflops = flops / median / 1e9;
        let gbs = bytes / median / 1e9;
        let depthwise = groups == c_in && groups == c_out;
        // the weights as a model's `prepare` lays them out (all but depthwise)
        let tiled = (!depthwise).then(|| {
            let mut tiled = vec![0.0f32; w.len()];
            tile_conv2d_weights(&w, &mut tiled, c_out, groups);
            let median =
                median_time(|| conv2d_tiled(&x, &tiled, Some(&b), &mut out, &g, store_rows));
            flops / median / 1e9
        });
        // and on weights out of cache (a different copy at each call), as a model meets
        // the weights of its later layers, where they outgrow L2
        let cold = (!depthwise).then(|| {
            let mut tiled = vec![0.0f32; w.len()];
            tile_conv2d_weights(&w, &mut tiled, c_out, groups);
            cold_gflops(flops, &tiled, |w| {
                conv2d_tiled(&x, w, Some(&b), &mut out, &g, store_rows)
            })
        });
        let cold = cold.flatten();
        // 3x3 stride 1: Winograd F(2x2, 3x3) and F(4x4, 3x3) on transformed weights, in
        // GFLOP/s of the direct convolution's count (what the same work takes, not what it
        // multiplies)
        let winograd = winograd_fits(&g).then(|| {
            let mut u = vec![0.0f32; winograd_weights_len::<2>(c_out, c_in)];
            winograd_weights::<2>(&w, &mut u, c_out, c_in);
            let median =
                median_time(|| conv2d_winograd::<2>(&x, &u, Some(&b), &mut out, &g, store_rows));
            // both on weights out of cache too, as resnet18's 14x14 layers meet them
            let cold = cold_gflops(flops, &u, |u| {
                conv2d_winograd::<2>(&x, u, Some(&b), &mut out, &g, store_rows)
            });
            let mut u4 = vec![0.0f32; winograd_weights_len::<4>(c_out, c_in)];
            winograd_weights::<4>(&w, &mut u4, c_out, c_in);
            let median4 =
                median_time(|| conv2d_winograd::<4>(&x, &u4, Some(&b), &mut out, &g, store_rows));
            let cold4 = cold_gflops(flops, &u4, |u| {
                conv2d_winograd::<4>(&x, u, Some(&b), &mut out, &g, store_rows)
            });
            ((flops / median / 1e9, cold), (flops / median4 / 1e9, cold4))
        });
        if json {
            let tiled = tiled.map_or("null".to_string(), |t| format!("{t:.2}"));
            let cold = cold.map_or("null".to_string(), |t| format!("{t:.2}"));
            let null = || "null".to_string();
            let figure = |f: Option<f64>| f.map_or(null(), |f| format!("{f:.2}"));
            let [winograd, winograd_cold, winograd4, winograd4_cold] = winograd
                .map_or([None; 4], |((t, c), (t4, c4))| [Some(t), c, Some(t4), c4])
                .map(figure);
            println!(
                "{{\"class\":\"{name}\",\"ms\":{:.4},\"gflops\":{gflops:.2},\"tiled_gflops\":{tiled},\"tiled_cold_gflops\":{cold},\"winograd_gflops\":{winograd},\"winograd_cold_gflops\":{winograd_cold},\"winograd4_gflops\":{winograd4},\"winograd4_cold_gflops\":{winograd4_cold},\"gbs\":{gbs:.2},\"depthwise\":{depthwise}}}",
                median * 1e3,
            );
        } else {
            let mut extra = match tiled {
                Some(t) => format!("  tiled weights {t:6.1} GFLOP/s"),
                None => format!("  {gbs:6.1} GB/s"),
            };
            if let Some(c) = cold {
                extra += &format!("  cold {c:6.1} GFLOP/s");
            }
            if let Some(((t, cold), (t4, cold4))) = winograd {
                let shown = |c: Option<f64>| c.map_or(String::new(), |c| format!(" cold {c:6.1}"));
                extra += &format!(
                    "  F(2x2) {t:6.1}{} F(4x4) {t4:6.1}{} GFLOP/s (direct count)",
                    shown(cold),
                    shown(cold4)
                );
            }
            println!(
                "{name:32} {:9.3} ms {gflops:7.1} GFLOP/s{extra}",
                median * 1e3
            );
        }
    }
    for &(name, c_in, size, c_out, k, stride, pad) in TRANSPOSED {
        if !name.contains(only) {
            continue;
        }
        let o = (size - 1) * stride + k - 2 * pad;
        let g = square(c_in, (size, o), c_out, (k, stride, pad), 1);
        let x = input(c_in * size * size);
        let w: Vec<f32> = (0..c_in * c_out * k * k)
            .map(|i| (i % 7) as f32 * 0.01)
            .collect();
        let b = vec![0.5f32; c_out];
        let mut out = vec![0.0f32; c_out * o * o];
        let flops = 2.0 * (c_in * size * size * c_out * k * k) as f64;
        let median = median_time(|| conv_transpose2d(&x, &w, Some(&b), &mut out, &g, store));
        report(json, name, median, flops / median / 1e9);
    }
    // one core's multiply-add peak in this run, for the products' percent of it
    let peak_name = "fma peak (register-only loop)";
    if peak_name.contains(only) {
        let mut flops = 0;
        let median = median_time(|| flops = dnnfusion_runtime::kernels::fma_peak(1 << 20));
        report(json, peak_name, median, flops as f64 / median / 1e9);
    }
    for (name, m, k, n) in [
        ("sgemm 512x512x512", 512, 512, 512),
        ("bert-384 projection 128x384x384", 128, 384, 384),
        ("bert-384 ffn in 128x384x1536", 128, 384, 1536),
        ("bert-384 ffn out 128x1536x384", 128, 1536, 384),
        ("bert_tiny attention scores 128x64x128", 128, 64, 128),
        ("bert_tiny attention values 128x128x64", 128, 128, 64),
        ("bert6 attention scores 128x32x128", 128, 32, 128),
        ("bert6 attention values 128x128x32", 128, 128, 32),
    ] {
        if !name.contains(only) {
            continue;
        }
        let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.01).collect();
        let mut c = vec![0.0f32; m * n];
        let g = MatMulGeom {
            batch: &[],
            a_batch_strides: &[],
            b_batch_strides: &[],
            m,
            k,
            n,
        };
        let median = median_time(|| matmul(&a, &b, &mut c, &g, store_rows));
        report(json, name, median, 2.0 * (m * k * n) as f64 / median / 1e9);
    }
    // linear layers as models run them: weights `[n, k]` packed into panels at load
    for (name, m, k, n) in [
        ("bert_tiny linear 128x128 @ 128x128", 128, 128, 128usize),
        ("bert_tiny linear 128x128 @ 128x512", 128, 128, 512),
        ("bert_tiny linear 128x512 @ 512x128", 128, 512, 128),
        ("linear 128x384 @ 384x384", 128, 384, 384),
        ("linear 128x384 @ 384x1536", 128, 384, 1536),
        ("linear 128x1536 @ 1536x384", 128, 1536, 384),
    ] {
        if !name.contains(only) {
            continue;
        }
        let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.1).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i % 7) as f32 * 0.01).collect();
        let mut panels = vec![0.0f32; n.div_ceil(WEIGHT_PANEL) * WEIGHT_PANEL * k];
        pack_panels(&w, &mut panels, n, k);
        let mut c = vec![0.0f32; m * n];
        let median = median_time(|| matmul_panels(&a, &panels, &mut c, (m, k, n), store_rows));
        report(json, name, median, 2.0 * (m * k * n) as f64 / median / 1e9);
        // the same product on weights out of cache, as a model with more weights than the
        // last-level cache meets them: a different copy of the panels at each call
        let copies: Vec<Vec<f32>> = (0..COLD_COPIES).map(|_| panels.clone()).collect();
        let mut next = 0;
        let median = median_time(|| {
            next = (next + 1) % COLD_COPIES;
            matmul_panels(&a, &copies[next], &mut c, (m, k, n), store_rows)
        });
        let cold = format!("{name} (cold weights)");
        report(json, &cold, median, 2.0 * (m * k * n) as f64 / median / 1e9);
    }
    // classifiers: one row of activations by weights `[n, k]` as stored (matrix-vector,
    // bound by reading the weights once)
    for (name, k, n) in [
        (
            "mobilenet_v2 classifier 1x1280 @ 1280x1000",
            1280,
            1000usize,
        ),
        ("resnet18 classifier 1x512 @ 512x1000", 512, 1000),
    ] {
        if !name.contains(only) {
            continue;
        }
        let a: Vec<f32> = (0..k).map(|i| (i % 13) as f32 * 0.1).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i % 7) as f32 * 0.01).collect();
        let bias = vec![0.5f32; n];
        let mut c = vec![0.0f32; n];
        let median = median_time(|| linear(&a, &w, Some(&bias), &mut c, 1, k, n, store_rows));
        report(json, name, median, 2.0 * (k * n) as f64 / median / 1e9);
    }
}

/// A square convolution geometry, batch 1: `(input, output)` sizes, `(kernel, stride,
/// padding)`.
fn square(
    c_in: usize,
    (size, o): (usize, usize),
    c_out: usize,
    (k, stride, pad): (usize, usize, usize),
    groups: usize,
) -> Conv2dGeom {
    Conv2dGeom {
        n: 1,
        c_in,
        h: size,
        w: size,
        c_out,
        oh: o,
        ow: o,
        kh: k,
        kw: k,
        stride_h: stride,
        stride_w: stride,
        pad_top: pad,
        pad_left: pad,
        dilation_h: 1,
        dilation_w: 1,
        groups,
    }
}

/// Input values (a repeating ramp).
fn input(len: usize) -> Vec<f32> {
    (0..len).map(|i| (i % 13) as f32 * 0.1).collect()
}

/// Prints one kernel's time and rate (a JSON object with `--json`).
fn report(json: bool, name: &str, median: f64, gflops: f64) {
    if json {
        println!(
            "{{\"class\":\"{name}\",\"ms\":{:.4},\"gflops\":{gflops:.2}}}",
            median * 1e3
        );
    } else {
        println!("{name:32} {:9.3} ms {gflops:7.1} GFLOP/s", median * 1e3);
    }
}
