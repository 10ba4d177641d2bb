//! Latency of one zoo model, batch 1, f32, as `../shared/tools/peers/bench.py` measures
//! its peers: warm-up for at least 1 s and 10 calls, then at least 30 timed calls and
//! 3 s, each call timed on its own; prints the median, min and max.
//!
//! ```sh
//! cargo run --release -p dnnfusion-models --example bench -- --model resnet18 --json
//! cargo run --release -p dnnfusion-models --example bench -- --model bert_tiny --unfused
//! cargo run --release -p dnnfusion-models --example bench -- --model bert_tiny --onnx
//! ```
//!
//! Models: mlp, lenet, bert_tiny, unet_small (weights embedded), resnet18, mobilenet_v2
//! (weights read from `../shared/reference/<name>/`), bert6 (weights read from
//! `dnnfusion_models::bert6::reference_dir()`, made by `bash models/bert6/setup.sh`).
//! `--onnx` runs the model imported from its ONNX file instead (`model X = onnx("...")`,
//! weights by `from_onnx` from the same file: `../shared/tools/peers/onnx/<name>.onnx`, the
//! files ONNX Runtime runs; not bert6), the path a user who brings a model takes.
//! `--threads N` runs the model inside `dnnfusion::runtime::threads::with_threads(N, ..)`.
//! `--blocks` also times each block of the fusion report in every timed call (through
//! `Model::run_slices_observed`) and prints each block's median, slowest first.
//! `--calls N` makes exactly N calls and no warm-up, for counting instructions under an
//! emulator (`benches/tools/aarch64/count.sh`), where a call's time means nothing.

use std::time::Instant;

use dnnfusion::{npy, runtime::FusionReport, Model};
use dnnfusion_models::{bert6, reference, torchvision, ReferenceData};

struct Options {
    model: String,
    threads: usize,
    json: bool,
    unfused: bool,
    onnx: bool,
    plan: Plan,
}

/// What the calls do besides running the model: time each block (`--blocks`), make a
/// fixed number of calls (`--calls`).
#[derive(Clone, Copy)]
struct Plan {
    blocks: bool,
    calls: Option<usize>,
}

fn parse() -> Result<Options, String> {
    let mut options = Options {
        model: String::new(),
        threads: 1,
        json: false,
        unfused: false,
        onnx: false,
        plan: Plan {
            blocks: false,
            calls: None,
        },
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
            "--onnx" => options.onnx = true,
            "--blocks" => options.plan.blocks = true,
            "--calls" => {
                let n = args.next().ok_or("--calls needs a number")?;
                match n.parse() {
                    Ok(calls) if calls > 0 => options.plan.calls = Some(calls),
                    _ => return Err(format!("--calls takes a number of 1 or more, found `{n}`")),
                }
            }
            other => {
                return Err(format!(
                    "unknown option `{other}`; options: --model NAME --threads N --json --unfused --onnx --blocks --calls N"
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
    if options.onnx && options.unfused {
        return Err(
            "--onnx runs the imported model fused; --unfused is for the declared ones".into(),
        );
    }
    Ok(options)
}

/// The six reference models imported from the ONNX files ONNX Runtime runs (`--onnx`).
mod imported {
    dnnfusion::dnn! {
        pub model Mlp = onnx("../../shared/tools/peers/onnx/mlp.onnx");
        pub model LeNet = onnx("../../shared/tools/peers/onnx/lenet.onnx");
        pub model BertTiny = onnx("../../shared/tools/peers/onnx/bert_tiny.onnx");
        pub model UNetSmall = onnx("../../shared/tools/peers/onnx/unet_small.onnx");
        pub model MobileNetV2 = onnx("../../shared/tools/peers/onnx/mobilenet_v2.onnx");
        pub model ResNet18 = onnx("../../shared/tools/peers/onnx/resnet18.onnx");
    }
}

/// Where `imported`'s files are.
const PEERS_ONNX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/tools/peers/onnx");

/// Weights and input of a model: embedded for the four small ones, read from
/// `../shared/reference/<name>/` for the torchvision ones and from
/// [`bert6::reference_dir`] for bert6; with `onnx`, the weights are the ONNX file.
fn data(name: &str, onnx: bool) -> Result<(Vec<u8>, Vec<f32>), String> {
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
    if onnx {
        let path = format!("{PEERS_ONNX}/{name}.onnx");
        let file = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
        return Ok((file, input));
    }
    Ok((weights, input))
}

/// The timed calls: each call's time, and with `--blocks` each block's times (ms), by the
/// block's index in the fusion report.
struct Measured {
    times: Vec<f64>,
    blocks: Vec<Vec<f64>>,
}

fn measure<M: Model + Sync>(model: &M, input: &[f32], threads: usize, plan: Plan) -> Measured {
    dnnfusion::runtime::threads::with_threads(threads, || measure_here(model, input, plan))
}

fn measure_here<M: Model>(model: &M, input: &[f32], plan: Plan) -> Measured {
    let by_block = plan.blocks;
    let mut outputs: Vec<Vec<f32>> = M::OUTPUT_SHAPES
        .iter()
        .map(|s| vec![0.0; s.iter().product()])
        .collect();
    // (on a cache line, as `infer` allocates it)
    let mut arena = dnnfusion::runtime::AlignedFloats::zeroed(M::ARENA_LEN);
    let mut blocks: Vec<Vec<f64>> = Vec::new();
    let mut call = |timed: bool| {
        let mut views: Vec<&mut [f32]> = outputs.iter_mut().map(|o| o.as_mut_slice()).collect();
        let ran = if by_block && timed {
            // each block's time: from the end of the one before (or the call's start)
            let mut last = Instant::now();
            model.run_slices_observed(&[input], &mut views, &mut arena, &mut |k| {
                let now = Instant::now();
                if blocks.len() <= k {
                    blocks.resize(k + 1, Vec::new());
                }
                blocks[k].push((now - last).as_secs_f64() * 1e3);
                last = now;
            })
        } else {
            model.run_slices(&[input], &mut views, &mut arena)
        };
        ran.expect("shapes checked by the model's consts");
    };
    let mut times = Vec::new();
    if let Some(calls) = plan.calls {
        for _ in 0..calls {
            let t = Instant::now();
            call(true);
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        return Measured { times, blocks };
    }
    let start = Instant::now();
    let mut warmup = 0;
    while warmup < 10 || start.elapsed().as_secs_f64() < 1.0 {
        call(false);
        warmup += 1;
    }
    let start = Instant::now();
    while times.len() < 30 || start.elapsed().as_secs_f64() < 3.0 {
        let t = Instant::now();
        call(true);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Measured { times, blocks }
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

fn run<M: Model + Sync>(
    (weights, input): (&[u8], &[f32]),
    threads: usize,
    plan: Plan,
) -> Result<(Measured, FusionReport), String> {
    let model = dnnfusion::runtime::load_safetensors::<M>(weights);
    time_loaded(model, input, threads, plan)
}

/// [`run`] for a model loaded otherwise (`from_onnx`).
fn time_loaded<M: Model + Sync>(
    model: Result<M, dnnfusion::LoadError>,
    input: &[f32],
    threads: usize,
    plan: Plan,
) -> Result<(Measured, FusionReport), String> {
    let model = model.map_err(|e| e.to_string())?;
    Ok((measure(&model, input, threads, plan), M::FUSION_REPORT))
}

fn median_of(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
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
    let plan = options.plan;
    let result = data(&options.model, options.onnx).and_then(|(weights, input)| {
        let data = (weights.as_slice(), input.as_slice());
        if options.onnx {
            let (file, input) = data;
            return match options.model.as_str() {
                "mlp" => time_loaded(imported::Mlp::from_onnx(file), input, threads, plan),
                "lenet" => time_loaded(imported::LeNet::from_onnx(file), input, threads, plan),
                "bert_tiny" => {
                    time_loaded(imported::BertTiny::from_onnx(file), input, threads, plan)
                }
                "unet_small" => {
                    time_loaded(imported::UNetSmall::from_onnx(file), input, threads, plan)
                }
                "mobilenet_v2" => {
                    time_loaded(imported::MobileNetV2::from_onnx(file), input, threads, plan)
                }
                "resnet18" => {
                    time_loaded(imported::ResNet18::from_onnx(file), input, threads, plan)
                }
                other => Err(format!("no imported model `{other}`")),
            };
        }
        use reference::{unfused as ru, BertTiny, LeNet, Mlp, UNetSmall};
        use torchvision::{unfused as tu, MobileNetV2, ResNet18};
        match (options.model.as_str(), options.unfused) {
            ("mlp", false) => run::<Mlp>(data, threads, plan),
            ("mlp", true) => run::<ru::Mlp>(data, threads, plan),
            ("lenet", false) => run::<LeNet>(data, threads, plan),
            ("lenet", true) => run::<ru::LeNet>(data, threads, plan),
            ("bert_tiny", false) => run::<BertTiny>(data, threads, plan),
            ("bert_tiny", true) => run::<ru::BertTiny>(data, threads, plan),
            ("unet_small", false) => run::<UNetSmall>(data, threads, plan),
            ("unet_small", true) => run::<ru::UNetSmall>(data, threads, plan),
            ("resnet18", false) => run::<ResNet18>(data, threads, plan),
            ("resnet18", true) => run::<tu::ResNet18>(data, threads, plan),
            ("mobilenet_v2", false) => run::<MobileNetV2>(data, threads, plan),
            ("mobilenet_v2", true) => run::<tu::MobileNetV2>(data, threads, plan),
            ("bert6", false) => run::<bert6::Bert6>(data, threads, plan),
            ("bert6", true) => run::<bert6::unfused::Bert6>(data, threads, plan),
            (other, _) => Err(format!("unknown model `{other}`")),
        }
    });
    let (Measured { mut times, blocks }, report) = match result {
        Ok(found) => found,
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
    // each block's median time, its ops and mapping type (`--blocks`)
    let block_medians: Vec<(usize, f64, &str, &str)> = blocks
        .into_iter()
        .enumerate()
        .map(|(k, mut t)| {
            let block = report.block_list.get(k);
            let (ops, mapping) = block.map_or(("?", "?"), |b| (b.ops, b.mapping));
            (k, median_of(&mut t), ops, mapping)
        })
        .collect();
    if options.json {
        let trips = trips.map_or(String::new(), |(before, after)| {
            format!(",\"round_trip_ns\":[{before:.0},{after:.0}]")
        });
        let blocks = if options.plan.blocks {
            let items: Vec<String> = block_medians
                .iter()
                .map(|(k, ms, ops, mapping)| {
                    format!("{{\"block\":{k},\"ops\":\"{ops}\",\"mapping\":\"{mapping}\",\"median_ms\":{ms:.4}}}")
                })
                .collect();
            format!(",\"blocks\":[{}]", items.join(","))
        } else {
            String::new()
        };
        println!(
            "{{\"model\":\"{}\",\"runtime\":\"dnnfusion\",\"fused\":{},\"onnx\":{},\"threads\":{},\"median_ms\":{median:.4},\"min_ms\":{min:.4},\"max_ms\":{max:.4},\"runs\":{}{trips}{blocks}}}",
            options.model,
            !options.unfused,
            options.onnx,
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
            match (options.unfused, options.onnx) {
                (true, _) => "fusion off",
                (false, true) => "fused, imported from ONNX",
                (false, false) => "fused",
            },
            options.threads,
            times.len()
        );
        if options.plan.blocks {
            // slowest first, with each block's share of the blocks' medians together
            let total: f64 = block_medians.iter().map(|b| b.1).sum();
            let mut sorted = block_medians;
            sorted.sort_by(|a, b| b.1.total_cmp(&a.1));
            println!("block  median ms  share  mapping       ops");
            for (k, ms, ops, mapping) in sorted {
                let share = 100.0 * ms / total.max(f64::MIN_POSITIVE);
                println!("{k:5}  {ms:9.4}  {share:4.1}%  {mapping:12}  {ops}");
            }
        }
    }
}
