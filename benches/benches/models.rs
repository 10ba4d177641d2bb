//! Each reference model: fused (the default: rewriting and fusion on), fused with the
//! value-changing rules too (`#![rewrite(fast_math)]`), fused without rewriting (`#![rewrite(off)]`), unfused
//! (`#![fusion(off)]`, one kernel per op) and the ndarray interpreter (op by op), in one
//! criterion group per model.
//! Throughput is in inferences (`Elements(1)`), so criterion's elem/s is inferences/s.
//!
//! Run: `cargo bench --manifest-path benches/Cargo.toml`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use dnnfusion::Model;
use dnnfusion_benches::{NdarrayBaseline, Prepared};
use dnnfusion_models::reference::{self as zoo, fast_math, unfused};
use dnnfusion_models::ReferenceData;

/// The reference models with the rewrite stage off, for the rewriting-on/off comparison.
mod no_rewrite {
    dnnfusion_models::reference_models!(dnnfusion::dnn; #![rewrite(off)]);
}


fn bench_model<F: Model, U: Model, R: Model, M: Model>(c: &mut Criterion, label: &str, name: &str, data: &ReferenceData, samples: usize) {
    let mut group = c.benchmark_group(label);
    group.throughput(Throughput::Elements(1));
    group.sample_size(samples);
    let mut fused = Prepared::<F>::new(data);
    group.bench_function("fused", |b| b.iter(|| {
        fused.run();
        black_box(&fused.output);
    }));
    let mut fast = Prepared::<M>::new(data);
    group.bench_function("fused_fast_math", |b| b.iter(|| {
        fast.run();
        black_box(&fast.output);
    }));
    let mut no_rewrite = Prepared::<R>::new(data);
    group.bench_function("fused_no_rewrite", |b| b.iter(|| {
        no_rewrite.run();
        black_box(&no_rewrite.output);
    }));
    let mut plain = Prepared::<U>::new(data);
    group.bench_function("unfused", |b| b.iter(|| {
        plain.run();
        black_box(&plain.output);
    }));
    let params: Vec<f32> = {
        let mut p = vec![0.0f32; F::PARAM_LEN];
        dnnfusion::runtime::safetensors::load_into(data.weights, F::PARAMS, &mut p).expect("weights");
        p
    };
    let baseline = NdarrayBaseline::new(name, data, &params);
    group.bench_function("ndarray", |b| b.iter(|| black_box(baseline.run())));
    group.finish();
}

fn models(c: &mut Criterion) {
    bench_model::<zoo::Mlp, unfused::Mlp, no_rewrite::Mlp, fast_math::Mlp>(c, "mlp", "Mlp", &dnnfusion_models::MLP_DATA, 100);
    bench_model::<zoo::LeNet, unfused::LeNet, no_rewrite::LeNet, fast_math::LeNet>(c, "lenet", "LeNet", &dnnfusion_models::LENET_DATA, 100);
    bench_model::<zoo::BertTiny, unfused::BertTiny, no_rewrite::BertTiny, fast_math::BertTiny>(c, "bert_tiny", "BertTiny", &dnnfusion_models::BERT_TINY_DATA, 20);
    bench_model::<zoo::UNetSmall, unfused::UNetSmall, no_rewrite::UNetSmall, fast_math::UNetSmall>(c, "unet_small", "UNetSmall", &dnnfusion_models::UNET_SMALL_DATA, 10);
}

criterion_group!(benches, models);
criterion_main!(benches);
