//! The matrix products: `linear` (`x @ w^T + b`), `matmul` (numpy's, batch axes
//! broadcast), and the load-time panel layout of a weight (`pack_panels`) with the
//! product that reads it (`MatMulPanels`, chosen by `prepare`). Everything the family
//! knows is here: the argument binding, the shape inference `check::infer` calls, the
//! cost, the reference interpreter's f64 evaluation and the kernel calls `codegen` emits
//! (with the epilogue it hands them), and the facts the stages ask ([`LINEAR`], ...).
//!
//! ```text
//!   linear(x [4, 8], 16)       weight [16, 8], bias [16]      ->  [4, 16]
//!   matmul(a [2, 1, 3, 4], b [5, 4, 6])                        ->  [2, 5, 3, 6]
//! ```

use proc_macro2::{Ident, TokenStream};
use quote::quote;

use super::{Bind, DslOp, LowerError};
use crate::check::{broadcast, err, expect_shape, fmt_shape, leading, operands, ShapeError};
use crate::element::broadcast_strides;
use crate::ir::*;
use crate::lower::Val;
use crate::ops::{NonnegWhen, OpFacts, Role};
use crate::tables::MappingType::*;

/// The products as the DSL calls them.
pub(super) const DSL_OPS: &[DslOp] = dsl_ops! {
    "linear" => "x, out_features, bias = true"; params "weight [out_features, in_features], bias [out_features]" => |b, _| linear(b),
    "matmul" => "a, b" => |b, _| matmul(b),
};

/// `linear`: Many-to-Many, an anchor with an epilogue and a store map.
pub const LINEAR: OpFacts = OpFacts::new("linear", ManyToMany, Role::PRODUCT, NonnegWhen::Unknown);
/// `matmul`: the same.
pub const MATMUL: OpFacts = OpFacts::new("matmul", ManyToMany, Role::PRODUCT, NonnegWhen::Unknown);
/// The product reading packed panels: the same.
pub const MATMUL_PANELS: OpFacts = OpFacts::new(
    "matmul_panels",
    ManyToMany,
    Role::PRODUCT,
    NonnegWhen::Unknown,
);
/// The panel layout of a weight: a Shuffle (each value moves once; the padding is zeros,
/// so it keeps the sign).
pub const PACK_PANELS: OpFacts =
    OpFacts::new("pack_panels", Shuffle, Role::PLAIN, NonnegWhen::FirstIs);

/// Binds `linear(..)`: creates its weight `[out, in]` and, with `bias`, its bias.
fn linear(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
    let x = b.tensor("x")?;
    let (out, _) = b.positive("out_features")?;
    let bias = b.boolean("bias")?;
    let Some(&in_features) = b.shape(x.0).last() else {
        return Ok(b.lw.fail(
            x.1,
            "linear: the input must be at least 1-d, found a scalar".to_string(),
        )?);
    };
    let key = b.key();
    let w = b.param(&key, "weight", vec![out, in_features])?;
    let mut inputs = vec![x.0, w];
    if bias {
        inputs.push(b.param(&key, "bias", vec![out])?);
    }
    Ok(b.node(Op::Linear, inputs, &[x.1])?)
}

/// Binds `matmul(..)` (also the `@` operator's op).
fn matmul(b: &mut Bind<'_, '_>) -> Result<Val, LowerError> {
    let x = b.tensor("a")?;
    let y = b.tensor("b")?;
    Ok(b.node(Op::MatMul, vec![x.0, y.0], &[x.1, y.1])?)
}

// ---------------------------------------------------------------------------------------
// Shape inference
// ---------------------------------------------------------------------------------------

/// Shape of `linear`: input `[.., in]`, weight `[out, in]` and an optional `[out]` bias
/// give `[.., out]`.
pub fn linear_shape(name: &str, inputs: &[&[usize]]) -> Result<Vec<usize>, ShapeError> {
    let x = leading(name, inputs, 2, 3)?;
    let w = inputs.get(1).copied().unwrap_or(&[]);
    let (Some(&k), [n, k2]) = (x.last(), w) else {
        return err(
            Some(1),
            format!(
                "linear: input {} and weight {} (the weight is [out, in])",
                fmt_shape(x),
                fmt_shape(w)
            ),
        );
    };
    if k != *k2 {
        return err(
            Some(1),
            format!(
                "linear: weight {} does not take {k} input features",
                fmt_shape(w)
            ),
        );
    }
    expect_shape(name, "the bias", inputs, 2, &[*n])?;
    let mut out = x.to_vec();
    if let Some(last) = out.last_mut() {
        *last = *n;
    }
    Ok(out)
}

/// Output shape of `matmul` (batched, batch axes broadcast).
pub fn matmul_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, ShapeError> {
    if a.len() < 2 {
        return err(
            Some(0),
            format!(
                "matmul: operands must be at least 2-d, found {}",
                fmt_shape(a)
            ),
        );
    }
    if b.len() < 2 {
        return err(
            Some(1),
            format!(
                "matmul: operands must be at least 2-d, found {}",
                fmt_shape(b)
            ),
        );
    }
    let (ab, am) = a.split_at(a.len() - 2);
    let (bb, bm) = b.split_at(b.len() - 2);
    let (m, k) = (
        am.first().copied().unwrap_or(0),
        am.get(1).copied().unwrap_or(0),
    );
    let (k2, n) = (
        bm.first().copied().unwrap_or(0),
        bm.get(1).copied().unwrap_or(0),
    );
    if k != k2 {
        return err(
            Some(1),
            format!(
                "matmul: inner dimensions differ: {} @ {} needs the last axis of the left ({k}) to equal the second-to-last of the right ({k2})",
                fmt_shape(a),
                fmt_shape(b)
            ),
        );
    }
    let mut out = broadcast("matmul (batch axes)", ab, bb)?;
    out.extend([m, n]);
    Ok(out)
}

/// Shape of a matrix product on packed panels (`n` columns): `[.., n]`.
pub fn panels_matmul_shape(
    name: &str,
    inputs: &[&[usize]],
    n: usize,
) -> Result<Vec<usize>, ShapeError> {
    let [a, p] = operands(name, inputs)?;
    let k = a.last().copied().unwrap_or(0);
    let panels = [n.div_ceil(WEIGHT_PANEL), k, WEIGHT_PANEL];
    if a.len() < 2 || p != panels {
        return err(
            Some(1),
            format!(
                "matmul (packed): operands {} and {} (panels {} expected)",
                fmt_shape(a),
                fmt_shape(p),
                fmt_shape(&panels)
            ),
        );
    }
    let mut out = a.to_vec();
    if let Some(last) = out.last_mut() {
        *last = n;
    }
    Ok(out)
}

/// Shape of `pack_panels`: `[n, k]` as `[n / 16 rounded up, k, 16]`.
pub fn pack_panels_shape(name: &str, inputs: &[&[usize]]) -> Result<Vec<usize>, ShapeError> {
    match operands::<1>(name, inputs)?[0] {
        [n, k] => Ok(vec![n.div_ceil(WEIGHT_PANEL), *k, WEIGHT_PANEL]),
        w => err(
            Some(0),
            format!("pack_panels: a 2-d weight expected, found {}", fmt_shape(w)),
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Cost
// ---------------------------------------------------------------------------------------

/// Operations of a product with `outputs` elements and inner length `k`: a multiply-add
/// per term, plus an add per output for a bias.
pub fn cost(outputs: u64, k: u64, bias: bool) -> u64 {
    outputs
        .saturating_mul(2)
        .saturating_mul(k)
        .saturating_add(if bias { outputs } else { 0 })
}

// ---------------------------------------------------------------------------------------
// The reference interpreter's f64 evaluation
// ---------------------------------------------------------------------------------------

/// The products on the interpreter's arrays, summed in f64.
#[cfg(feature = "interp")]
pub mod evaluate {
    use ndarray::ArrayD;

    use crate::interp::{
        at, broadcast_shape, broadcast_to, channel_vector, fail, from_vec, product, row_major, run,
        InterpError, Result,
    };
    use crate::ir::WEIGHT_PANEL;

    /// `y[..., o] = sum_i x[..., i] * w[o, i] + b[o]`.
    pub fn linear(
        x: &ArrayD<f32>,
        w: &ArrayD<f32>,
        bias: Option<&ArrayD<f32>>,
    ) -> Result<ArrayD<f32>> {
        let xs = x.shape();
        let Some((&in_features, lead)) = xs.split_last() else {
            return fail("the input of linear must have rank >= 1");
        };
        let [out_features, w_in] = <[usize; 2]>::try_from(w.shape()).map_err(|_| {
            InterpError::new(format!("weight must have rank 2, has {:?}", w.shape()))
        })?;
        if w_in != in_features {
            return fail(format!(
                "weight {:?} does not match input {xs:?}",
                w.shape()
            ));
        }
        let b = match bias {
            Some(b) => channel_vector(b, out_features, "bias")?,
            None => vec![0.0; out_features],
        };
        let xd = row_major(x);
        let wd = row_major(w);
        let rows = product(lead);
        let mut out = Vec::with_capacity(rows * out_features);
        for r in 0..rows {
            let xrow = run(&xd, r * in_features, in_features)?;
            for (o, &bo) in b.iter().enumerate() {
                let wrow = run(&wd, o * in_features, in_features)?;
                let dot: f64 = xrow
                    .iter()
                    .zip(wrow)
                    .map(|(&p, &q)| f64::from(p) * f64::from(q))
                    .sum();
                out.push((dot + f64::from(bo)) as f32);
            }
        }
        let mut shape = lead.to_vec();
        shape.push(out_features);
        from_vec(&shape, out)
    }

    /// numpy `matmul` for operands of rank >= 2: batch axes broadcast.
    pub fn matmul(a: &ArrayD<f32>, b: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        let (Some((a_batch, &[m, k])), Some((b_batch, &[k2, n]))) =
            (split_matrix(a.shape()), split_matrix(b.shape()))
        else {
            return fail(format!(
                "matmul needs operands of rank >= 2, got {:?} and {:?}",
                a.shape(),
                b.shape()
            ));
        };
        if k != k2 {
            return fail(format!(
                "inner dimensions differ: {:?} @ {:?}",
                a.shape(),
                b.shape()
            ));
        }
        let batch = broadcast_shape(a_batch, b_batch)?;
        let a_full: Vec<f32> = broadcast_to(a, &[batch.as_slice(), &[m, k]].concat())?
            .iter()
            .copied()
            .collect();
        let b_full: Vec<f32> = broadcast_to(b, &[batch.as_slice(), &[k, n]].concat())?
            .iter()
            .copied()
            .collect();
        let batches = product(&batch);
        let mut out = Vec::with_capacity(batches * m * n);
        for t in 0..batches {
            for i in 0..m {
                // out[t, i, :] = sum_p a[t, i, p] * b[t, p, :]
                let arow = run(&a_full, (t * m + i) * k, k)?;
                let mut acc = vec![0.0f64; n];
                for (p, &av) in arow.iter().enumerate() {
                    let brow = run(&b_full, (t * k + p) * n, n)?;
                    for (sum, &bv) in acc.iter_mut().zip(brow) {
                        *sum += f64::from(av) * f64::from(bv);
                    }
                }
                out.extend(acc.iter().map(|&v| v as f32));
            }
        }
        from_vec(&[batch.as_slice(), &[m, n]].concat(), out)
    }

    /// `w [n, k]` as `[n / 16 rounded up, k, 16]` panels: `p[j / 16, kk, j % 16] = w[j, kk]`,
    /// zero past `n` (what `Op::PackPanels` stores at load time).
    pub fn pack_panels(w: &ArrayD<f32>) -> Result<ArrayD<f32>> {
        let &[n, k] = w.shape() else {
            return fail(format!(
                "pack_panels needs a 2-d weight, got {:?}",
                w.shape()
            ));
        };
        let panels = n.div_ceil(WEIGHT_PANEL);
        let w: Vec<f32> = w.iter().copied().collect();
        let mut out = vec![0.0f32; panels * k * WEIGHT_PANEL];
        for (j, row) in w.chunks_exact(k.max(1)).enumerate().take(n) {
            for (kk, &v) in row.iter().enumerate() {
                if let Some(slot) =
                    out.get_mut(((j / WEIGHT_PANEL) * k + kk) * WEIGHT_PANEL + j % WEIGHT_PANEL)
                {
                    *slot = v;
                }
            }
        }
        from_vec(&[panels, k, WEIGHT_PANEL], out)
    }

    /// The `[k, n]` matrix that `[n / 16 rounded up, k, 16]` panels hold.
    pub fn unpack_panels(p: &ArrayD<f32>, n: usize) -> Result<ArrayD<f32>> {
        let &[panels, k, width] = p.shape() else {
            return fail(format!(
                "matmul_panels needs 3-d panels, got {:?}",
                p.shape()
            ));
        };
        if width != WEIGHT_PANEL || panels != n.div_ceil(WEIGHT_PANEL) {
            return fail(format!(
                "matmul_panels: panels {:?} do not hold {n} columns",
                p.shape()
            ));
        }
        let p: Vec<f32> = p.iter().copied().collect();
        let mut out = Vec::with_capacity(k * n);
        for kk in 0..k {
            for j in 0..n {
                out.push(at(
                    &p,
                    ((j / WEIGHT_PANEL) * k + kk) * WEIGHT_PANEL + j % WEIGHT_PANEL,
                )?);
            }
        }
        from_vec(&[k, n], out)
    }

    /// `(batch dims, [rows, cols])` of a shape of rank >= 2.
    fn split_matrix(shape: &[usize]) -> Option<(&[usize], &[usize; 2])> {
        let split = shape.len().checked_sub(2)?;
        let (batch, matrix) = shape.split_at_checked(split)?;
        Some((batch, <&[usize; 2]>::try_from(matrix).ok()?))
    }
}

// ---------------------------------------------------------------------------------------
// Code generation (`k` is the path of the runtime's `kernels` module)
// ---------------------------------------------------------------------------------------

/// How a product's kernel finishes its results.
pub enum Finish {
    /// the row epilogue, applied to each finished output row in place
    Rows(TokenStream),
    /// the epilogue applied per result, then stored through `store`, which keeps `run`
    /// values contiguous (and, with `run` 1, values down a column `step` apart, or 0)
    Stored {
        /// the epilogue (per element, or with its row form)
        epilogue: TokenStream,
        /// the store map
        store: TokenStream,
        /// the contiguous run of the store map
        run: usize,
        /// the store map's step down a column (`element::column_step`), 0 for none
        step: usize,
    },
}

/// The operands of a product's kernel call: the left operand, the right one (a weight,
/// panels or a tensor), the bias of a `linear` (an `Option` expression) and the output.
pub struct ProductCall<'a> {
    /// the left operand
    pub a: &'a Ident,
    /// the right operand
    pub b: Option<&'a Ident>,
    /// `Some(bias)` or `None`, as an expression (`linear` only)
    pub bias: &'a TokenStream,
    /// the output
    pub out: &'a Ident,
}

/// The kernel call of `linear` from `shape` to `out_shape`.
pub fn linear_call(
    k: &TokenStream,
    call: &ProductCall<'_>,
    [shape, out_shape]: [&[usize]; 2],
    finish: &Finish,
) -> TokenStream {
    let ProductCall { a, b, bias, out } = call;
    let in_f = shape.last().copied().unwrap_or(1);
    let out_f = out_shape.last().copied().unwrap_or(1);
    let rows = shape.iter().product::<usize>() / in_f.max(1);
    match finish {
        Finish::Rows(rows_epi) => {
            quote! { #k::linear(#a, #b, #bias, #out, #rows, #in_f, #out_f, #rows_epi); }
        }
        Finish::Stored {
            epilogue, store, ..
        } => {
            quote! { #k::linear_to(#a, #b, #bias, #out, #rows, #in_f, #out_f, #epilogue, #store); }
        }
    }
}

/// The kernel call of `matmul` on operands of `shapes` into `out_shape` (batch axes
/// broadcast by strides).
pub fn matmul_call(
    k: &TokenStream,
    call: &ProductCall<'_>,
    [s0, s1, out_shape]: [&[usize]; 3],
    finish: &Finish,
) -> TokenStream {
    let ProductCall { a, b, out, .. } = call;
    let dim = |s: &[usize], axis: usize| s.get(axis).copied().unwrap_or(1);
    let r = out_shape.len();
    let batch = out_shape.get(..r.saturating_sub(2)).unwrap_or(&[]);
    let m = dim(out_shape, r.saturating_sub(2));
    let n = dim(out_shape, r.saturating_sub(1));
    let kk = dim(s0, s0.len().saturating_sub(1));
    let a_batch = broadcast_strides(s0.get(..s0.len().saturating_sub(2)).unwrap_or(&[]), batch);
    let b_batch = broadcast_strides(s1.get(..s1.len().saturating_sub(2)).unwrap_or(&[]), batch);
    let a_batch: Vec<usize> = a_batch.iter().map(|s| s * m * kk).collect();
    let b_batch: Vec<usize> = b_batch.iter().map(|s| s * kk * n).collect();
    let geom = quote! {
        &#k::MatMulGeom {
            batch: &[#(#batch),*], a_batch_strides: &[#(#a_batch),*], b_batch_strides: &[#(#b_batch),*],
            m: #m, k: #kk, n: #n,
        }
    };
    match finish {
        Finish::Rows(rows_epi) => quote! { #k::matmul(#a, #b, #out, #geom, #rows_epi); },
        Finish::Stored {
            epilogue,
            store,
            run,
            step,
        } => quote! { #k::matmul_to(#a, #b, #out, #geom, #epilogue, (#store, #run, #step)); },
    }
}

/// The kernel call of a product of `a` (of `shape`) by `n` columns of packed panels.
pub fn panels_matmul_call(
    k: &TokenStream,
    n: usize,
    call: &ProductCall<'_>,
    shape: &[usize],
    finish: &Finish,
) -> TokenStream {
    let ProductCall { a, b, out, .. } = call;
    let kk = shape.last().copied().unwrap_or(1);
    let m = shape.iter().product::<usize>() / kk.max(1);
    match finish {
        Finish::Rows(rows_epi) => {
            quote! { #k::matmul_panels(#a, #b, #out, (#m, #kk, #n), #rows_epi); }
        }
        Finish::Stored {
            epilogue,
            store,
            run,
            step,
        } => {
            quote! { #k::matmul_panels_to(#a, #b, #out, (#m, #kk, #n), #epilogue, (#store, #run, #step)); }
        }
    }
}

/// The load-time call that packs a weight `[n, k]` (of `shape`) into panels.
pub fn pack_panels_call(
    k: &TokenStream,
    [input, out]: [&Ident; 2],
    shape: &[usize],
) -> TokenStream {
    let n = shape.first().copied().unwrap_or(1);
    let kk = shape.get(1).copied().unwrap_or(1);
    quote! {
        const _: () = ::core::assert!(#k::WEIGHT_PANEL == #WEIGHT_PANEL);
        #k::pack_panels(#input, #out, #n, #kk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_broadcasts_batches() {
        assert_eq!(
            matmul_shape(&[2, 1, 3, 4], &[5, 4, 6]),
            Ok(vec![2, 5, 3, 6])
        );
        assert!(matmul_shape(&[3, 4], &[5, 6]).is_err());
    }
}
