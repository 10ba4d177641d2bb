//! Latency of one zoo model, batch 1, f32, as `../shared/tools/peers/bench.py` measures
//! its peers: warm-up for at least 1 s and 10 calls, then at least 30 timed calls and
//! 3 s, each call timed on its own; prints the median, min and max.
//!
//! ```sh
//! cargo run --release -p dnnfusion-models --example bench -- --model resnet18 --json
//! cargo run --release -p dnnfusion-models --example bench -- --model bert_tiny --unfused
//! ```
//!
//! Models: mlp, lenet, bert_tiny, unet_small (weights embedded), resnet18, mobilenet_v2
//! (weights read from `../shared/reference/<name>/`), bert6 (weights read from
//! `dnnfusion_models::bert6::reference_dir()`, made by `bash models/bert6/setup.sh`).
//! `--threads N` runs the model inside `dnnfusion::runtime::threads::with_threads(N, ..)`.

use std::time::Instant;

use dnnfusion::{npy, Model};
use dnnfusion_models::{bert6, reference, torchvision, ReferenceData};

struct Options {
    model: String,
    threads: usize,
    json: bool,
    unfused: bool,
}

fn parse() -> Result<Options, String> {
    let mut options = Options {
        model: String::new(),
        threads: 1,
        json: false,
        unfused: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--model" => options.model = args.next().ok_or("--model needs a name")?,
            "--threads" => {
                let n = args.next().ok_or("--threads needs a number")?;
                options.threads = n
                    .parse()
                    .map_err(|_| format!("--threads takes a number, found `{n}`"))?;
            }
            "--json" => options.json = true,
            "--unfused" => options.unfused = true,
            other => {
                return Err(format!(
                    "unknown option `{other}`; options: --model NAME --threads N --json --unfused"
                ))
            }
        }
    }
    if options.model.is_empty() {
        return Err("--model NAME is required \
             (mlp, lenet, bert_tiny, unet_small, resnet18, mobilenet_v2, bert6)"
            .into());
    }
    if options.threads == 0 {
        return Err("--threads takes 1 or more".into());
    }
    Ok(options)
}

/// Weights and input of a model: embedded for the four small ones, read from
/// `../shared/reference/<name>/` for the torchvision ones and from
/// [`bert6::reference_dir`] for bert6.
fn data(name: &str) -> Result<(Vec<u8>, Vec<f32>), String> {
    let embedded: Option<&ReferenceData> = match name {
        "mlp" => Some(&dnnfusion_models::MLP_DATA),
        "lenet" => Some(&dnnfusion_models::LENET_DATA),
        "bert_tiny" => Some(&dnnfusion_models::BERT_TINY_DATA),
        "unet_small" => Some(&dnnfusion_models::UNET_SMALL_DATA),
        _ => None,
    };
    let (weights, input) = match embedded {
        Some(d) => (d.weights.to_vec(), d.input.to_vec()),
        None => {
            let dir = match name {
                "bert6" => bert6::reference_dir(),
                _ => torchvision::reference_dir(name),
            };
            let read = |file: &str| {
                std::fs::read(dir.join(file))
                    .map_err(|e| format!("{}: {e}", dir.join(file).display()))
            };
            (read("weights.safetensors")?, read("input.npy")?)
        }
    };
    let input = npy::read_f32(&input)?.iter().copied().collect();
    Ok((weights, input))
}

fn measure<M: Model + Sync>(model: &M, input: &[f32], threads: usize) -> Vec<f64> {
    dnnfusion::runtime::threads::with_threads(threads, || measure_here(model, input))
}

fn measure_here<M: Model>(model: &M, input: &[f32]) -> Vec<f64> {
    let mut outputs: Vec<Vec<f32>> = M::OUTPUT_SHAPES
        .iter()
        .map(|s| vec![0.0; s.iter().product()])
        .collect();
    // (on a cache line, as `infer` allocates it)
    let mut arena = dnnfusion::runtime::AlignedFloats::zeroed(M::ARENA_LEN);
    let mut call = || {
        let mut views: Vec<&mut [f32]> = outputs.iter_mut().map(|o| o.as_mut_slice()).collect();
        model
            .run_slices(&[input], &mut views, &mut arena)
            .expect("shapes checked by the model's consts");
    };
    let start = Instant::now();
    let mut warmup = 0;
    while warmup < 10 || start.elapsed().as_secs_f64() < 1.0 {
        call();
        warmup += 1;
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 30 || start.elapsed().as_secs_f64() < 3.0 {
        let t = Instant::now();
        call();
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times
}

/// Nanoseconds for one round trip of a cache line between two threads (median of five
/// rounds of 20,000): on this project's 2-core virtual machine it is about 70 ns while
/// its two cores share a cache and 130-400 ns while they do not, and the threaded
/// figures follow (BENCHMARKS.md, "Two cores that move").
fn round_trip_ns() -> f64 {
    use std::sync::atomic::{
        AtomicUsize,
        Ordering::{Acquire, Release},
    };
    const TRIPS: usize = 20_000;
    let mut rounds: Vec<f64> = (0..5)
        .map(|_| {
            let flag = AtomicUsize::new(0);
            std::thread::scope(|s| {
                s.spawn(|| {
                    for i in 0..TRIPS {
                        while flag.load(Acquire) != 2 * i + 1 {
                            std::hint::spin_loop();
                        }
                        flag.store(2 * i + 2, Release);
                    }
                });
                let start = Instant::now();
                for i in 0..TRIPS {
                    flag.store(2 * i + 1, Release);
                    while flag.load(Acquire) != 2 * i + 2 {
                        std::hint::spin_loop();
                    }
                }
                start.elapsed().as_secs_f64() * 1e9 / TRIPS as f64
            })
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[2]
}

fn run<M: Model + Sync>(weights: &[u8], input: &[f32], threads: usize) -> Result<Vec<f64>, String> {
    let model = dnnfusion::runtime::load_safetensors::<M>(weights).map_err(|e| e.to_string())?;
    Ok(measure(&model, input, threads))
}

fn main() {
    let options = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    // the kernels split their work over `--threads` threads (a persistent pool)
    let threads = options.threads;
    let trip_before = (threads > 1).then(round_trip_ns);
    let result = data(&options.model).and_then(|(weights, input)| {
        use reference::{unfused as ru, BertTiny, LeNet, Mlp, UNetSmall};
        use torchvision::{unfused as tu, MobileNetV2, ResNet18};
        match (options.model.as_str(), options.unfused) {
            ("mlp", false) => run::<Mlp>(&weights, &input, threads),
            ("mlp", true) => run::<ru::Mlp>(&weights, &input, threads),
            ("lenet", false) => run::<LeNet>(&weights, &input, threads),
            ("lenet", true) => run::<ru::LeNet>(&weights, &input, threads),
            ("bert_tiny", false) => run::<BertTiny>(&weights, &input, threads),
            ("bert_tiny", true) => run::<ru::BertTiny>(&weights, &input, threads),
            ("unet_small", false) => run::<UNetSmall>(&weights, &input, threads),
            ("unet_small", true) => run::<ru::UNetSmall>(&weights, &input, threads),
            ("resnet18", false) => run::<ResNet18>(&weights, &input, threads),
            ("resnet18", true) => run::<tu::ResNet18>(&weights, &input, threads),
            ("mobilenet_v2", false) => run::<MobileNetV2>(&weights, &input, threads),
            ("mobilenet_v2", true) => run::<tu::MobileNetV2>(&weights, &input, threads),
            ("bert6", false) => run::<bert6::Bert6>(&weights, &input, threads),
            ("bert6", true) => run::<bert6::unfused::Bert6>(&weights, &input, threads),
            (other, _) => Err(format!("unknown model `{other}`")),
        }
    });
    let mut times = match result {
        Ok(t) => t,
        Err(e) => {
            eprintln!("bench: {}: {e}", options.model);
            std::process::exit(1);
        }
    };
    // with threads, the cores' round trip before and after (see `round_trip_ns`)
    let trips = trip_before.map(|before| (before, round_trip_ns()));
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let (min, max) = (times[0], times[times.len() - 1]);
    if options.json {
        let trips = trips.map_or(String::new(), |(before, after)| {
            format!(",\"round_trip_ns\":[{before:.0},{after:.0}]")
        });
        println!(
            "{{\"model\":\"{}\",\"runtime\":\"dnnfusion\",\"fused\":{},\"threads\":{},\"median_ms\":{median:.4},\"min_ms\":{min:.4},\"max_ms\":{max:.4},\"runs\":{}{trips}}}",
            options.model,
            !options.unfused,
            options.threads,
            times.len()
        );
    } else {
        let trips = trips.map_or(String::new(), |(before, after)| {
            format!("; cores' round trip {before:.0} ns before, {after:.0} after")
        });
        println!(
            "{} ({}), {} thread: median {median:.3} ms, min {min:.3}, max {max:.3}, {} runs{trips}",
            options.model,
            if options.unfused {
                "fusion off"
            } else {
                "fused"
            },
            options.threads,
            times.len()
        );
    }
}
