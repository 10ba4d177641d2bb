//! Ops that read only parameters run once, at load time (`prepare`), and `run` reads their
//! results as parameters: the split, the parameter buffer's layout, and every way to build
//! a model (owned, mutable, read-only prepared), each against the reference interpreter
//! on the graph as declared. Tolerance: max |generated - interpreter| <= 2e-5 * max(1,
//! max |interpreter|) (`common::check`).

mod common;

use dnnfusion::{LoadError, Model, Params};

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

    // prepared once, then borrowed read-only (as a `static` would be)
    let mut prepared = loaded();
    prepared.resize(Case::PARAM_LEN, f32::NAN);
    Case::prepare(&mut prepared).unwrap();
    let from_prepared = run(&Case::from_params(Params::borrowed(&prepared)).unwrap(), &x);
    assert_eq!(from_owned, from_prepared);
    assert!(from_owned.iter().all(|v| v.is_finite()));

    // what is read-only is not prepared again: an unprepared buffer gives other numbers
    let mut unprepared = loaded();
    unprepared.resize(Case::PARAM_LEN, 0.0);
    let stale = run(
        &Case::from_params(Params::borrowed(&unprepared)).unwrap(),
        &x,
    );
    assert_ne!(from_owned, stale);
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
