//! Ops that read only parameters run once, at load time (`prepare`), and `run` reads their
//! results as parameters: the split, the parameter buffer's layout, and every way to build
//! a model (owned, mutable, read-only prepared), each against the reference interpreter
//! on the graph as declared. Tolerance: max |generated - interpreter| <= 2e-5 * max(1,
//! max |interpreter|) (`common::check`).

mod common;

use dnnfusion::{LoadError, Model, Params, Prepared};

mod case {
    dnnfusion::dnn! {
        pub model Case(x: [3, 8]) -> [3, 4] {
            let w = param([4, 8]);
            let b = param([4]);
            // w' = transpose(w * 0.5 + 1), e = exp(b): computed at load
            let y = matmul(x, transpose(w * 0.5 + 1.0, 0, 1)) + exp(b);
            // a reshape of a parameter stays in `run` (it aliases there)
            y * reshape(b, [1, 4])
        }
    }
    pub const SOURCE: &str = "pub model Case(x: [3, 8]) -> [3, 4] {
        let w = param([4, 8]);
        let b = param([4]);
        let y = matmul(x, transpose(w * 0.5 + 1.0, 0, 1)) + exp(b);
        y * reshape(b, [1, 4])
    }";
}
use case::Case;

/// The loaded parameters `w` then `b`, seeded.
fn loaded() -> Vec<f32> {
    let mut rng = common::Rng(7);
    (0..Case::LOADED_LEN)
        .map(|_| rng.uniform(-1.0, 1.0))
        .collect()
}

fn run(model: &Case<'_>, x: &[f32; 24]) -> [f32; 12] {
    let mut out = [0.0; 12];
    let mut arena = [0.0; Case::ARENA_LEN];
    model.run(x, &mut out, &mut arena);
    out
}

#[test]
fn parameter_only_ops_run_at_load_and_the_result_matches_the_interpreter() {
    let r = Case::FUSION_REPORT;
    assert_eq!(r.ops_at_load, 4, "mul, add, transpose, exp: {r:?}");
    assert_eq!(
        Case::OP_COUNT,
        4,
        "matmul, add, reshape, mul run per inference"
    );
    assert_eq!(Case::LOADED_LEN, 4 * 8 + 4);
    const { assert!(Case::PARAM_LEN >= Case::LOADED_LEN + 8 * 4 + 4) };
    assert_eq!(Case::PARAMS.len(), 2, "only loaded parameters are listed");
    common::check::<Case>(case::SOURCE);
}

#[test]
fn every_way_to_build_the_model_gives_the_same_outputs() {
    let mut rng = common::Rng(11);
    let x: [f32; 24] = core::array::from_fn(|_| rng.uniform(-2.0, 2.0));

    let mut owned = loaded();
    owned.resize(Case::PARAM_LEN, 0.0);
    let from_owned = run(&Case::from_params(Params::owned(owned)).unwrap(), &x);

    let mut buffer = loaded();
    buffer.resize(Case::PARAM_LEN, f32::NAN);
    let from_mut = run(
        &Case::from_params(Params::borrowed_mut(&mut buffer)).unwrap(),
        &x,
    );
    assert_eq!(from_owned, from_mut);

    // prepared once, then borrowed read-only (as a `static` would be), twice
    let mut prepared = loaded();
    prepared.resize(Case::PARAM_LEN, f32::NAN);
    let prepared = Prepared::new::<Case>(&mut prepared).unwrap();
    let from_prepared = run(&Case::from_params(Params::prepared(prepared)).unwrap(), &x);
    assert_eq!(from_owned, from_prepared);
    let again = run(&Case::from_params(Params::prepared(prepared)).unwrap(), &x);
    assert_eq!(from_owned, again);
    assert!(from_owned.iter().all(|v| v.is_finite()));
}

#[test]
fn a_read_only_buffer_that_was_not_prepared_is_refused() {
    // the old mistake: loaded parameters borrowed read-only ran with zeros in the
    // load-time part of the buffer (a linear returned only its bias)
    let mut unprepared = loaded();
    unprepared.resize(Case::PARAM_LEN, 0.0);
    let err = Case::from_params(Params::borrowed(&unprepared)).unwrap_err();
    assert_eq!(
        err,
        LoadError::NotPrepared {
            model: "Case",
            loaded_len: Case::LOADED_LEN,
            param_len: Case::PARAM_LEN,
        }
    );
    let message = err.to_string();
    assert!(message.contains("Params::borrowed_mut"), "{message}");
    assert!(message.contains("Prepared::new::<Case>"), "{message}");

    // a linear with >= 4 rows and >= 16 outputs stores its weight transposed, at load
    const { assert!(packed::Packed::LOADED_LEN < packed::Packed::PARAM_LEN) };
    let weights = vec![0.5; packed::Packed::PARAM_LEN];
    assert!(matches!(
        packed::Packed::from_params(Params::borrowed(&weights)),
        Err(LoadError::NotPrepared {
            model: "Packed",
            ..
        })
    ));
    let mut weights = weights;
    let model = packed::Packed::from_params(Params::borrowed_mut(&mut weights)).unwrap();
    let mut out = [0.0; 64];
    let mut arena = [0.0; packed::Packed::ARENA_LEN];
    model.run(&[1.0; 32], &mut out, &mut arena);
    assert!(out.iter().all(|&v| v == 0.5 * 8.0 + 0.5), "{out:?}");
}

/// Once prepared, a buffer keeps only what `run` reads: the packed weight replaces the
/// loaded one, and the model's buffer is `RUN_LEN` floats. A second `prepare` of the same
/// buffer (its loaded weight is gone) is an error, not a model on the wrong numbers, until
/// a loader writes fresh weights into it.
#[test]
fn a_prepared_buffer_keeps_what_run_reads_and_cannot_be_prepared_twice() {
    use packed::Packed;
    // the weight (16 x 8) is packed into panels and dropped; the bias stays
    assert_eq!(Packed::LOADED_LEN, 16 * 8 + 16);
    assert_eq!(Packed::RUN_LEN, 16 + 16 * 8);
    const { assert!(Packed::RUN_LEN < Packed::PARAM_LEN) };
    let mut buffer = vec![0.5; Packed::PARAM_LEN];
    let model = Packed::from_params(Params::borrowed_mut(&mut buffer)).unwrap();
    assert_eq!(model.params().len(), Packed::RUN_LEN);
    let mut first = [0.0; 64];
    model.run(&[1.0; 32], &mut first, &mut [0.0; Packed::ARENA_LEN]);
    let owned = Packed::from_params(Params::owned(vec![0.5; Packed::PARAM_LEN])).unwrap();
    assert_eq!(owned.params().len(), Packed::RUN_LEN);
    let mut again = [0.0; 64];
    owned.run(&[1.0; 32], &mut again, &mut [0.0; Packed::ARENA_LEN]);
    assert_eq!(first, again);

    let error = Packed::from_params(Params::borrowed_mut(&mut buffer)).unwrap_err();
    assert_eq!(error, LoadError::AlreadyPrepared { model: "Packed" });
    assert!(
        error.to_string().contains("load the weights into it again"),
        "{error}"
    );
    assert!(matches!(
        Prepared::new::<Packed>(&mut buffer),
        Err(LoadError::AlreadyPrepared { .. })
    ));
    // fresh weights through a loader: the buffer may be prepared again
    let file = safetensors(&[
        (
            "fc.weight",
            "F32",
            &[16, 8],
            0.5f32.to_le_bytes().repeat(128),
        ),
        ("fc.bias", "F32", &[16], 0.5f32.to_le_bytes().repeat(16)),
    ]);
    let reloaded = Packed::from_safetensors_in(&file, &mut buffer).unwrap();
    let mut third = [0.0; 64];
    reloaded.run(&[1.0; 32], &mut third, &mut [0.0; Packed::ARENA_LEN]);
    assert_eq!(first, third);
}

#[test]
fn a_buffer_prepared_for_another_model_is_refused() {
    let mut buffer = vec![0.25; figure_2a::Case::PARAM_LEN];
    let prepared = Prepared::new::<figure_2a::Case>(&mut buffer).unwrap();
    // same name `Case`, another model: the length check comes first
    assert!(matches!(
        Case::from_params(Params::prepared(prepared)),
        Err(LoadError::BufferLength { .. })
    ));
    let mut buffer = vec![0.25; Case::PARAM_LEN];
    let prepared = Prepared::new::<twin::Case>(&mut buffer).unwrap();
    let err = Case::from_params(Params::prepared(prepared)).unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::PreparedForOtherModel { model, prepared_for }
                if model.ends_with("case::Case") && prepared_for.ends_with("twin::Case")
        ),
        "{err:?}"
    );
}

#[test]
fn a_model_without_load_time_ops_takes_a_read_only_buffer() {
    assert_eq!(twin::Plain::LOADED_LEN, twin::Plain::PARAM_LEN);
    let weights = vec![1.0; twin::Plain::PARAM_LEN];
    let model = twin::Plain::from_params(Params::borrowed(&weights)).unwrap();
    let mut out = [0.0; 2];
    let mut arena = [0.0; twin::Plain::ARENA_LEN];
    model.run(&[1.0; 4], &mut out, &mut arena);
    assert_eq!(out, [5.0, 5.0]);
}

mod packed {
    dnnfusion::dnn! {
        pub model Packed(x: [4, 8]) -> [4, 16] {
            let fc = linear(x, 16);
            fc
        }
    }
}

mod twin {
    dnnfusion::dnn! {
        /// Same name and layout as `case::Case`, another model.
        pub model Case(x: [3, 8]) -> [3, 4] {
            let w = param([4, 8]);
            let b = param([4]);
            let y = matmul(x, transpose(w * 0.5 + 1.0, 0, 1)) + exp(b);
            y * reshape(b, [1, 4])
        }

        pub model Plain(x: [1, 4]) -> [1, 2] {
            let fc = linear(x, 2);
            fc
        }
    }
}

#[test]
fn buffers_of_the_wrong_length_are_refused() {
    let expected = Case::PARAM_LEN;
    let mut short = loaded();
    assert_eq!(
        Case::prepare(&mut short),
        Err(LoadError::BufferLength {
            expected,
            found: Case::LOADED_LEN
        })
    );
    assert_eq!(
        Case::from_params(Params::owned(loaded())).unwrap_err(),
        LoadError::BufferLength {
            expected,
            found: Case::LOADED_LEN
        }
    );
    let mut long = vec![0.0; expected + 1];
    assert!(<Case as Model>::prepare(&mut long).is_err());
}

mod figure_2a {
    dnnfusion::dnn! {
        /// The paper's Figure 2a: `(A ⊛ B)⁻¹ ⊙ ((A ⊛ B) ⊙ C)⁻¹ -> (A ⊛ B)⁻² ⊙ C⁻¹`, with `C`
        /// a weight: after the rewrite, `C⁻¹` is computed once, at load time.
        pub model Case(x: [1, 2, 6, 6]) -> [1, 4, 6, 6] {
            let conv = conv2d(x, 4, kernel = 3, padding = 1);
            let c = param([1, 4, 6, 6]);
            reciprocal(conv) * reciprocal(conv * c)
        }
    }
    pub const SOURCE: &str = "pub model Case(x: [1, 2, 6, 6]) -> [1, 4, 6, 6] {
        let conv = conv2d(x, 4, kernel = 3, padding = 1);
        let c = param([1, 4, 6, 6]);
        reciprocal(conv) * reciprocal(conv * c)
    }";
}

#[test]
fn the_papers_figure_2a_computes_the_weight_reciprocal_at_load() {
    let r = figure_2a::Case::FUSION_REPORT;
    assert_eq!(r.rewrites, ["associative_recip_square"], "{r:?}");
    assert_eq!(r.ops_at_load, 1, "reciprocal(c): {r:?}");
    // per inference: the conv with reciprocal, square and the product in its epilogue
    assert_eq!(r.blocks, 1, "{r:?}");
    common::check::<figure_2a::Case>(figure_2a::SOURCE);
}

/// A safetensors file of `(name, dtype, shape, bytes)` entries, in order.
fn safetensors(entries: &[(&str, &str, &[usize], Vec<u8>)]) -> Vec<u8> {
    let mut header = String::from("{");
    let mut data = Vec::new();
    for (i, (name, dtype, shape, bytes)) in entries.iter().enumerate() {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        if i > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            "\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            dims.join(","),
            data.len(),
            data.len() + bytes.len()
        ));
        data.extend_from_slice(bytes);
    }
    header.push('}');
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(&data);
    file
}

mod checkpoint {
    dnnfusion::dnn! {
        pub model Net(x: [1, 2, 4, 4]) -> [1, 2, 4, 4] {
            let bn = batch_norm(x);
            let conv = conv2d(bn, 2, kernel = 1);
            conv
        }
    }
}

#[test]
fn a_pytorch_checkpoint_loads_leniently_with_half_precision_weights() {
    use checkpoint::Net;
    use dnnfusion::LoadOptions;
    let names: Vec<&str> = Net::PARAMS.iter().map(|p| p.name).collect();
    assert!(names.contains(&"bn.running_var"), "{names:?}");
    // every weight 1.0 as f16 (0x3c00), as PyTorch's `model.half()` saves it
    let mut entries: Vec<(&str, &str, &[usize], Vec<u8>)> = Net::PARAMS
        .iter()
        .map(|p| (p.name, "F16", p.shape, [0x00, 0x3c].repeat(p.len())))
        .collect();
    entries.push((
        "bn.num_batches_tracked",
        "I64",
        &[],
        7i64.to_le_bytes().to_vec(),
    ));
    let strict = safetensors(&entries);
    let (model, report) =
        dnnfusion::load_safetensors_with::<Net>(&strict, LoadOptions::STRICT).unwrap();
    assert!(report.skipped.is_empty());
    // every loaded value is the file's 1.0 (read again into a buffer of its own: the
    // model's buffer is the layout `run` reads)
    assert_eq!(model.params().len(), Net::RUN_LEN);
    let mut loaded = vec![0.0; Net::PARAM_LEN];
    dnnfusion::runtime::safetensors::load_into_with(
        &strict,
        Net::PARAMS,
        &[],
        &mut loaded,
        LoadOptions::STRICT,
        |_| {},
    )
    .unwrap();
    assert!(loaded[..Net::LOADED_LEN].iter().all(|&v| v == 1.0));

    entries.push(("optimizer.step", "I64", &[], 3i64.to_le_bytes().to_vec()));
    entries.push(("head.mask", "BOOL", &[2], vec![1, 0]));
    let extra = safetensors(&entries);
    assert!(matches!(
        Net::from_safetensors(&extra),
        Err(LoadError::UnexpectedTensor { tensor }) if tensor.as_str() == "optimizer.step"
    ));
    let (model, report) =
        dnnfusion::load_safetensors_with::<Net>(&extra, LoadOptions::LENIENT).unwrap();
    assert_eq!(report.skipped, ["optimizer.step", "head.mask"]);
    let mut out = [0.0; 32];
    let mut arena = [0.0; Net::ARENA_LEN];
    model.run(&[2.0; 32], &mut out, &mut arena);
    // batch norm: (2 - 1) / sqrt(1 + eps) + 1 = 2 per channel; conv: 2 + 2 + 1
    assert!(out.iter().all(|v| (v - 5.0).abs() < 1e-4), "{out:?}");
    let (lenient, _) =
        dnnfusion::load_safetensors_with::<Net>(&strict, LoadOptions::LENIENT).unwrap();
    let mut again = [0.0; 32];
    lenient.run(&[2.0; 32], &mut again, &mut arena);
    assert_eq!(out, again);

    // a weight the model needs is still required, lenient or not
    entries.retain(|e| e.0 != "conv.weight");
    assert_eq!(
        dnnfusion::load_safetensors_with::<Net>(&safetensors(&entries), LoadOptions::LENIENT)
            .unwrap_err(),
        LoadError::MissingTensor {
            tensor: "conv.weight"
        }
    );
}
