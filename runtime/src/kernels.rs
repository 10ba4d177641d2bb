//! Kernels: one function per op family, called by generated code with literal shapes.
//!
//! This is the portable scalar path: plain loops written so LLVM can vectorize the inner
//! ones (contiguous, constant trip counts once inlined). Preconditions on slice lengths
//! are the generated code's duty and are `debug_assert!`ed.

use crate::math;
use core::mem::MaybeUninit;

pub use crate::simd::fma_peak;
pub use winograd::{
    conv2d_winograd, winograd_fits, winograd_points, winograd_weights, winograd_weights_len,
};
#[cfg(target_arch = "x86_64")]
pub(crate) use winograd::{
    winograd_channels, Part as WinogradPart, Run as WinogradRun, WinogradOperands,
};

mod winograd;

/// `i - before` mirrored into `0..len` (numpy `reflect` padding), for fused index code.
#[inline(always)]
pub fn reflect_index(i: usize, before: usize, len: usize) -> usize {
    let j = i as isize - before as isize;
    let last = len as isize - 1;
    let r = if j < 0 {
        -j
    } else if j > last {
        2 * last - j
    } else {
        j
    };
    r.clamp(0, last.max(0)) as usize
}

/// `i - before` clamped into `0..len` (numpy `edge` padding), for fused index code.
#[inline(always)]
pub fn clamp_index(i: usize, before: usize, len: usize) -> usize {
    i.saturating_sub(before).min(len.saturating_sub(1))
}

/// Highest rank the strided kernels handle.
pub const MAX_RANK: usize = 8;

/// Where a kernel reads its main operand: a slice, or a fused prologue ([`Computed`],
/// [`ComputedRows`], [`ComputedRuns`]).
pub trait Source {
    /// Element `i` (flat, row-major).
    fn at(&self, i: usize) -> f32;

    /// Elements `base..base + row.len()` into `row`.
    #[inline(always)]
    fn fill(&self, base: usize, row: &mut [f32]) {
        for (k, slot) in row.iter_mut().enumerate() {
            *slot = self.at(base + k);
        }
    }
}

impl Source for &[f32] {
    #[inline(always)]
    fn at(&self, i: usize) -> f32 {
        self[i]
    }
}

impl<const N: usize> Source for &[f32; N] {
    #[inline(always)]
    fn at(&self, i: usize) -> f32 {
        self[i]
    }
}

/// A source read from element `.1` on: a part of a split over rows sees its first row at
/// index 0.
struct Shifted<'a, S>(&'a S, usize);

impl<S: Source> Source for Shifted<'_, S> {
    #[inline(always)]
    fn at(&self, i: usize) -> f32 {
        self.0.at(i + self.1)
    }

    #[inline(always)]
    fn fill(&self, base: usize, row: &mut [f32]) {
        self.0.fill(base + self.1, row)
    }
}

/// Elements from which a row kernel (softmax, layer normalization) splits its rows over
/// the threads (`threads::with_threads`): bert6's 12 x 128 x 128 softmax took 0.174 ms
/// on two threads against 0.142 on one while it ran on the leader alone, reading scores
/// that both threads wrote (BENCHMARKS.md, twenty-eighth session).
const ROWS_PARALLEL_MIN: usize = 16384;

/// `f(first_row, rows_out, rows)` over `out` (`rows` rows of `cols` floats): once, or with
/// threads on large enough inputs once per contiguous part of the rows, in parallel.
fn over_rows(
    out: &mut [f32],
    rows: usize,
    cols: usize,
    f: impl Fn(usize, &mut [f32], usize) + Sync,
) {
    let threads = crate::threads::current();
    if threads > 1 && rows >= 2 && cols > 0 && rows * cols >= ROWS_PARALLEL_MIN {
        let per = rows.div_ceil(threads);
        crate::threads::for_each_chunk(&mut out[..rows * cols], per * cols, |i, part| {
            f(i * per, part, part.len() / cols)
        });
        return;
    }
    f(0, out, rows);
}

/// A fused prologue: each element of the operand computed on the fly from its flat index.
/// Kernels taking a [`Source`] read every element once.
pub struct Computed<F>(pub F);

impl<F: Fn(usize) -> f32> Source for Computed<F> {
    #[inline(always)]
    fn at(&self, i: usize) -> f32 {
        (self.0)(i)
    }
}

/// A fused prologue that also computes whole rows: `at` gives element `o` as
/// [`Computed`] does, and `rows(base, row)` fills a row of `len` elements starting at a
/// multiple of `len` (its indices but the last computed once per row, so the loop over
/// the row vectorizes). [`Source::fill`] takes `rows` for such rows, `at` for any other.
pub struct ComputedRows<F, R> {
    /// element `o`
    pub at: F,
    /// a row of `len` elements from `base`, a multiple of `len`
    pub rows: R,
    /// the row length `rows` is written for
    pub len: usize,
}

impl<F: Fn(usize) -> f32, R: Fn(usize, &mut [f32])> Source for ComputedRows<F, R> {
    #[inline(always)]
    fn at(&self, i: usize) -> f32 {
        (self.at)(i)
    }

    #[inline(always)]
    fn fill(&self, base: usize, row: &mut [f32]) {
        if row.len() == self.len && base.is_multiple_of(self.len.max(1)) {
            (self.rows)(base, row);
        } else {
            for (k, slot) in row.iter_mut().enumerate() {
                *slot = (self.at)(base + k);
            }
        }
    }
}

/// A fused prologue that reads each operand where it computes (every operand of the
/// output's shape, read at the same flat position): `at` gives element `o`, `runs(base,
/// run)` any run of elements from `base` (over runs of the operands, a loop that
/// vectorizes). [`Source::fill`] takes `runs` for every run.
pub struct ComputedRuns<F, R> {
    /// element `o`
    pub at: F,
    /// elements `base..base + run.len()`
    pub runs: R,
}

impl<F: Fn(usize) -> f32, R: Fn(usize, &mut [f32])> Source for ComputedRuns<F, R> {
    #[inline(always)]
    fn at(&self, i: usize) -> f32 {
        (self.at)(i)
    }

    #[inline(always)]
    fn fill(&self, base: usize, row: &mut [f32]) {
        (self.runs)(base, row);
    }
}

/// A fused epilogue of a kernel that stores through a store map ([`matmul_to`],
/// [`matmul_panels_to`]): output `i`'s value from the kernel's `v`, and whole rows at a
/// time where it can ([`EpilogueRows`]). Every `Fn(usize, f32) -> f32` is one.
pub trait Epilogue: Sync {
    /// The value of output `i` from the kernel's `v`.
    fn at(&self, i: usize, v: f32) -> f32;

    /// The epilogue over `data`, outputs `base..` in place, rows of `width` (the
    /// kernel's output rows: `base` a multiple of `width`). By default element by element.
    #[inline(always)]
    fn rows(&self, base: usize, data: &mut [f32], width: usize) {
        let _ = width;
        for (k, v) in data.iter_mut().enumerate() {
            *v = self.at(base + k, *v);
        }
    }
}

impl<F: Fn(usize, f32) -> f32 + Sync> Epilogue for F {
    #[inline(always)]
    fn at(&self, i: usize, v: f32) -> f32 {
        self(i, v)
    }
}

/// An [`Epilogue`] with a row form: `at` per element, and `rows(base, row)` over one
/// output row of `len` elements starting at a multiple of `len` (its indices but the last
/// computed once per row, so the loop vectorizes), run from code compiled for AVX2 where
/// the CPU has it. Rows of another width take `at`.
pub struct EpilogueRows<F, R> {
    /// output `i` from the kernel's value
    pub at: F,
    /// one row of `len` outputs from `base`, in place
    pub rows: R,
    /// the row length `rows` is written for
    pub len: usize,
}

impl<F, R> Epilogue for EpilogueRows<F, R>
where
    F: Fn(usize, f32) -> f32 + Sync,
    R: Fn(usize, &mut [f32]) + Sync,
{
    #[inline(always)]
    fn at(&self, i: usize, v: f32) -> f32 {
        (self.at)(i, v)
    }

    #[inline(always)]
    fn rows(&self, base: usize, data: &mut [f32], width: usize) {
        let whole = width == self.len && width > 0;
        if whole && base.is_multiple_of(width) && data.len().is_multiple_of(width) {
            each_row_on(crate::simd::avx2_fma(), data, width, base, &self.rows);
        } else {
            for (k, v) in data.iter_mut().enumerate() {
                *v = (self.at)(base + k, *v);
            }
        }
    }
}

/// The identity epilogue, for a kernel whose result is stored as computed.
#[inline(always)]
pub fn store(_index: usize, value: f32) -> f32 {
    value
}

/// The identity row epilogue, for the kernels that take one per row ([`conv2d`],
/// [`matmul`], [`linear`]).
#[inline(always)]
pub fn store_rows(_base: usize, _row: &mut [f32]) {}

/// `row[i] = gelu(row[i] + bias[i])` (without a bias `gelu(row[i])`): the row epilogue
/// the generated code calls for a product followed by a bias and GELU (a transformer's
/// feed-forward layer). On AVX-512 a kernel of its own (a generated closure compiled for
/// AVX-512 is not inlined where the kernels call it), by a rational form that needs
/// fused multiply-adds (`math::GELU_P`), and on aarch64 the same form in NEON; elsewhere
/// [`math::gelu`] per element, inlined into the caller's loop. All within
/// `2e-7 * max(1, |x|)` of the exact value. A bias shorter than the row panics.
#[inline]
pub fn gelu_row(row: &mut [f32], bias: Option<&[f32]>) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512() {
        // SAFETY: AVX-512F was just found on this CPU; the kernel checks the slices
        #[allow(unsafe_code)]
        unsafe {
            crate::simd::gelu_row_avx512(row, bias)
        };
        return;
    }
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    if crate::simd::neon() {
        crate::simd::gelu_row_neon(row, bias);
        return;
    }
    match bias {
        Some(bias) => {
            let bias = &bias[..row.len()];
            for (v, b) in row.iter_mut().zip(bias) {
                *v = math::gelu(*v + b);
            }
        }
        None => {
            for v in row.iter_mut() {
                *v = math::gelu(*v);
            }
        }
    }
}

/// Runs a row epilogue over `data` (rows of `width` floats, the first at flat `base`):
/// `epi(base + r * width, row)`. With `simd`, from code compiled for AVX2 and FMA
/// (`simd::each_row_avx2`), so a fused epilogue (GELU, batch norm, ...) inlined there
/// vectorizes eight wide. With threads, large outputs split their rows over them (the
/// same values: each row's epilogue is computed once, by one thread).
#[inline]
pub(crate) fn each_row(
    simd: bool,
    data: &mut [f32],
    width: usize,
    base: usize,
    epi: &(impl Fn(usize, &mut [f32]) + Sync),
) {
    let threads = crate::threads::current();
    let rows = data.len() / width.max(1);
    if threads > 1 && data.len() >= PARALLEL_MIN_FLOATS && rows > 1 {
        let per_part = rows.div_ceil(threads) * width;
        crate::threads::for_each_chunk(data, per_part, |i, part| {
            each_row_on(simd, part, width, base + i * per_part, epi)
        });
        return;
    }
    each_row_on(simd, data, width, base, epi);
}

/// [`each_row`] on this thread.
#[inline]
fn each_row_on(
    simd: bool,
    data: &mut [f32],
    width: usize,
    base: usize,
    epi: &(impl Fn(usize, &mut [f32]) + Sync),
) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: callers pass `simd` true only when `avx2_fma` found AVX2 and FMA;
        // `avx512` has just found AVX-512F.
        #[allow(unsafe_code)]
        unsafe {
            if crate::simd::avx512() {
                crate::simd::each_row_avx512(data, width, base, epi)
            } else {
                crate::simd::each_row_avx2(data, width, base, epi)
            }
        };
        return;
    }
    let _ = simd;
    each_row_here(data, width, base, epi);
}

/// [`each_row`]'s loop.
#[inline(always)]
pub(crate) fn each_row_here(
    data: &mut [f32],
    width: usize,
    base: usize,
    epi: &(impl Fn(usize, &mut [f32]) + Sync),
) {
    for (r, row) in data.chunks_exact_mut(width.max(1)).enumerate() {
        epi(base + r * width, row);
    }
}

/// Applies an epilogue to a just-computed chunk of the output starting at flat `base`.
#[inline(always)]
fn finish(chunk: &mut [f32], base: usize, epi: &impl Fn(usize, f32) -> f32) {
    for (k, o) in chunk.iter_mut().enumerate() {
        *o = epi(base + k, *o);
    }
}

/// `out[i] = f(x[i])`
#[inline]
pub fn map(x: &[f32], out: &mut [f32], f: impl Fn(f32) -> f32) {
    debug_assert_eq!(x.len(), out.len());
    for (o, &v) in out.iter_mut().zip(x) {
        *o = f(v);
    }
}

/// `out[i] = f(a[i], b[i])` for same-shape operands.
#[inline]
pub fn zip(a: &[f32], b: &[f32], out: &mut [f32], f: impl Fn(f32, f32) -> f32) {
    debug_assert!(a.len() == out.len() && b.len() == out.len());
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = f(x, y);
    }
}

/// Visits every index of `dims` in row-major order, passing the flat output position and
/// the offset of each operand (sum of index times stride).
#[inline]
fn walk<const K: usize>(
    dims: &[usize],
    strides: [&[usize]; K],
    mut f: impl FnMut(usize, [usize; K]),
) {
    let rank = dims.len();
    debug_assert!(rank <= MAX_RANK && strides.iter().all(|s| s.len() == rank));
    let total: usize = dims.iter().product();
    if total == 0 {
        return;
    }
    if rank == 0 {
        f(0, [0; K]);
        return;
    }
    let last = rank - 1;
    let inner = dims[last];
    let inner_strides: [usize; K] = core::array::from_fn(|k| strides[k][last]);
    let mut idx = [0usize; MAX_RANK];
    let mut base = [0usize; K];
    let mut flat = 0;
    loop {
        for i in 0..inner {
            f(
                flat + i,
                core::array::from_fn(|k| base[k] + i * inner_strides[k]),
            );
        }
        flat += inner;
        // advance the outer axes
        let mut axis = last;
        loop {
            if axis == 0 {
                return;
            }
            axis -= 1;
            idx[axis] += 1;
            for k in 0..K {
                base[k] += strides[k][axis];
            }
            if idx[axis] < dims[axis] {
                break;
            }
            for k in 0..K {
                base[k] -= strides[k][axis] * dims[axis];
            }
            idx[axis] = 0;
        }
    }
}

/// `out = f(a, b)` with numpy broadcasting: `sa`, `sb` are the operands' strides over
/// the output dims `dims` (0 on broadcast axes).
pub fn zip_broadcast(
    a: &[f32],
    sa: &[usize],
    b: &[f32],
    sb: &[usize],
    out: &mut [f32],
    dims: &[usize],
    f: impl Fn(f32, f32) -> f32,
) {
    walk(dims, [sa, sb], |i, [ia, ib]| out[i] = f(a[ia], b[ib]));
}

/// `out = a where cond != 0 else b`, all broadcast over `dims`.
#[allow(clippy::too_many_arguments)]
pub fn select(
    cond: &[f32],
    sc: &[usize],
    a: &[f32],
    sa: &[usize],
    b: &[f32],
    sb: &[usize],
    out: &mut [f32],
    dims: &[usize],
) {
    walk(dims, [sc, sa, sb], |i, [ic, ia, ib]| {
        out[i] = if cond[ic] != 0.0 { a[ia] } else { b[ib] }
    });
}

/// Copies `x[offset + sum(idx * strides)]` for every index of `dims` (transpose, slice,
/// expand).
pub fn strided_copy(x: &[f32], offset: usize, strides: &[usize], out: &mut [f32], dims: &[usize]) {
    walk(dims, [strides], |i, [ix]| out[i] = x[offset + ix]);
}

/// `out = x` if positive else `slope[c] * x`; `channels` is 1 or the size of axis 1,
/// `inner` the product of the axes after it.
pub fn prelu(x: &[f32], slope: &[f32], out: &mut [f32], channels: usize, inner: usize) {
    for (i, (o, &v)) in out.iter_mut().zip(x).enumerate() {
        let c = (i / inner) % channels;
        *o = if v < 0.0 { slope[c] * v } else { v };
    }
}

/// Dot product with eight partial sums (lets LLVM vectorize).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, ar) = a.split_at(a.len() / 8 * 8);
    let (bc, br) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(8).zip(bc.chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ar.iter().zip(br) {
        sum += x * y;
    }
    sum
}

/// `sink(o, sum over i of x[i] * w[o * n + i])` for every `o < outputs` (`n = x.len()`):
/// the register-blocked form of [`dot`] (see `simd::register_blocked`). Four outputs at a
/// time, each sum in its own register: one load of `x[i]` feeds four multiply-adds, and no
/// partial sums are stored; each sum starts from 0 and runs in order of `i`.
fn dots_blocked(x: &[f32], w: &[f32], outputs: usize, mut sink: impl FnMut(usize, f32)) {
    let n = x.len();
    let mut o = 0;
    while o + 4 <= outputs {
        let rows = &w[o * n..(o + 4) * n];
        let (r0, rest) = rows.split_at(n);
        let (r1, rest) = rest.split_at(n);
        let (r2, r3) = rest.split_at(n);
        let sums = dot_4rows(x, [r0, r1, r2, r3]);
        for (j, v) in sums.into_iter().enumerate() {
            sink(o + j, v);
        }
        o += 4;
    }
    while o < outputs {
        sink(o, dot_1row(x, &w[o * n..(o + 1) * n]));
        o += 1;
    }
}

/// The dot products of `x` with four rows, in four registers, `x` read four floats at a
/// time (written out: at opt-level "s" LLVM would not unroll loops over the rows, and
/// sums in an array would live in memory).
#[inline(always)]
fn dot_4rows(x: &[f32], [w0, w1, w2, w3]: [&[f32]; 4]) -> [f32; 4] {
    let (xc, xt) = x.as_chunks::<4>();
    let (c0, t0) = w0.as_chunks::<4>();
    let (c1, t1) = w1.as_chunks::<4>();
    let (c2, t2) = w2.as_chunks::<4>();
    let (c3, t3) = w3.as_chunks::<4>();
    let [mut s0, mut s1, mut s2, mut s3] = [0.0f32; 4];
    for ((((xs, a), b), c), d) in xc.iter().zip(c0).zip(c1).zip(c2).zip(c3) {
        let [x0, x1, x2, x3] = *xs;
        s0 += x0 * a[0];
        s0 += x1 * a[1];
        s0 += x2 * a[2];
        s0 += x3 * a[3];
        s1 += x0 * b[0];
        s1 += x1 * b[1];
        s1 += x2 * b[2];
        s1 += x3 * b[3];
        s2 += x0 * c[0];
        s2 += x1 * c[1];
        s2 += x2 * c[2];
        s2 += x3 * c[3];
        s3 += x0 * d[0];
        s3 += x1 * d[1];
        s3 += x2 * d[2];
        s3 += x3 * d[3];
    }
    for ((((&xv, a), b), c), d) in xt.iter().zip(t0).zip(t1).zip(t2).zip(t3) {
        s0 += xv * a;
        s1 += xv * b;
        s2 += xv * c;
        s3 += xv * d;
    }
    [s0, s1, s2, s3]
}

/// The dot product of `x` and `w`, one sum in order (the outputs [`dot_4rows`] leaves).
#[inline(always)]
fn dot_1row(x: &[f32], w: &[f32]) -> f32 {
    let (xc, xt) = x.as_chunks::<4>();
    let (wc, wt) = w.as_chunks::<4>();
    let mut s = 0.0f32;
    for (xs, ws) in xc.iter().zip(wc) {
        s += xs[0] * ws[0];
        s += xs[1] * ws[1];
        s += xs[2] * ws[2];
        s += xs[3] * ws[3];
    }
    for (xv, wv) in xt.iter().zip(wt) {
        s += xv * wv;
    }
    s
}

/// `out[r, o] = bias[o] + sum_i x[r, i] * w[o, i]` (PyTorch `Linear`, weight `[out, in]`).
///
/// Every kernel of a Many-to-Many op takes an epilogue applied to each output element
/// before it is stored (fused One-to-One successors): `epi(flat_index, value)`, [`store`]
/// for none; this one, [`matmul`] and [`conv2d`] take it a row at a time, `epi(base, row)`
/// over each finished output row (the last axis), [`store_rows`] for none.
#[allow(clippy::too_many_arguments)]
pub fn linear(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    rows: usize,
    in_features: usize,
    out_features: usize,
    epi: impl Fn(usize, &mut [f32]) + Sync,
) {
    debug_assert!(
        x.len() == rows * in_features
            && w.len() == out_features * in_features
            && out.len() == rows * out_features
    );
    #[cfg(target_arch = "x86_64")]
    if crate::simd::linear_avx2_fits(rows, out_features) && crate::simd::avx2_fma() {
        let threads = crate::threads::current();
        // a matrix-vector product (a classifier) reads every weight once: its outputs, and
        // the weight rows they read, split over the threads (each output summed by one
        // thread in the same order: the same bits)
        let per = out_features.div_ceil(threads.max(1));
        let last = out_features - per * (out_features.div_ceil(per.max(1)) - 1);
        if rows == 1
            && threads > 1
            && in_features * out_features >= MATVEC_PARALLEL_MIN_MACS
            && crate::simd::linear_avx2_fits(1, last)
        {
            crate::threads::for_each_chunk(out, per, |i, part| {
                let (o0, outs) = (i * per, part.len());
                let ws = &w[o0 * in_features..(o0 + outs) * in_features];
                matvec(x, ws, (in_features, outs), |o, v| {
                    part[o] = bias.map_or(0.0, |b| b[o0 + o]) + v;
                });
            });
            each_row(true, out, out_features, 0, &epi);
            return;
        }
        if rows == 1 {
            matvec(x, w, (in_features, out_features), |o, v| {
                out[o] = bias.map_or(0.0, |b| b[o]) + v;
            });
            each_row(true, out, out_features, 0, &epi);
            return;
        }
        let sink = |r: usize, o: usize, v: f32| {
            out[r * out_features + o] = bias.map_or(0.0, |b| b[o]) + v;
        };
        // SAFETY: `linear_avx2` needs AVX2 and FMA, which `avx2_fma` has just checked,
        // and a row and an output, which `linear_avx2_fits` has.
        #[allow(unsafe_code)]
        unsafe {
            crate::simd::linear_avx2(x, w, (rows, in_features, out_features), sink)
        };
        // the epilogue in a loop of its own, over each finished row (inlined into the
        // tile loop, a long one such as GELU would crowd out the accumulators)
        each_row(true, out, out_features, 0, &epi);
        return;
    }
    for r in 0..rows {
        let xr = &x[r * in_features..(r + 1) * in_features];
        let or = &mut out[r * out_features..(r + 1) * out_features];
        if crate::simd::register_blocked() {
            dots_blocked(xr, w, out_features, |o, v| {
                or[o] = bias.map_or(0.0, |b| b[o]) + v;
            });
            epi(r * out_features, or);
            continue;
        }
        for (o, slot) in or.iter_mut().enumerate() {
            let b = bias.map_or(0.0, |b| b[o]);
            *slot = b + dot(xr, &w[o * in_features..(o + 1) * in_features]);
        }
        // the epilogue runs over the finished row, still in cache (keeping it out of the
        // dot-product loop lets that loop compile as it does without one)
        epi(r * out_features, or);
    }
}

/// A matrix-vector product `x[k] @ w[outs, k]^T` on x86_64 with AVX2 and FMA (the
/// caller checks them and [`crate::simd::linear_avx2_fits`]`(1, outs)`): the AVX-512
/// kernel where the CPU has it, else its AVX2 form (every output summed in one order,
/// whatever `outs`). Each value goes to `sink(output, value)`.
#[cfg(target_arch = "x86_64")]
fn matvec(x: &[f32], w: &[f32], (k, outs): (usize, usize), sink: impl FnMut(usize, f32)) {
    if crate::simd::avx512() {
        // SAFETY: `avx512` has just checked AVX-512F; the kernel checks the slices
        #[allow(unsafe_code)]
        unsafe {
            crate::simd::matvec_avx512(x, w, (k, outs), sink)
        };
        return;
    }
    // SAFETY: AVX2 and FMA: the caller's contract; the kernel checks the slices
    #[allow(unsafe_code)]
    unsafe {
        crate::simd::matvec_avx2(x, w, (k, outs), sink)
    };
}

/// Shapes of a batched matrix product: `batch` is the output's batch dims; the operand
/// batch strides are in floats (0 on broadcast axes).
#[derive(Clone, Copy, Debug)]
pub struct MatMulGeom<'a> {
    /// output batch dims
    pub batch: &'a [usize],
    /// left operand's stride per batch axis
    pub a_batch_strides: &'a [usize],
    /// right operand's stride per batch axis
    pub b_batch_strides: &'a [usize],
    /// rows of the left operand and the output
    pub m: usize,
    /// the contracted length
    pub k: usize,
    /// columns of the right operand and the output
    pub n: usize,
}

/// `out[.., i, j] = sum_k a[.., i, k] * b[.., k, j]` with broadcast batch axes.
pub fn matmul(
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
    g: &MatMulGeom<'_>,
    epi: impl Fn(usize, &mut [f32]) + Sync,
) {
    let (m, k, n) = (g.m, g.k, g.n);
    // with threads, batches too small to split (attention heads): whole batches each
    #[cfg(feature = "threads")]
    {
        let batches: usize = g.batch.iter().product();
        let threads = crate::threads::current();
        let (each, all) = (m * k * n, batches * m * k * n);
        let simd = crate::simd::register_tiles();
        if simd
            && threads > 1
            && batches > 1
            && each < PARALLEL_MIN_MACS
            && all >= PARALLEL_MIN_MACS
        {
            let mut starts = alloc::vec::Vec::with_capacity(batches);
            walk(g.batch, [g.a_batch_strides, g.b_batch_strides], |_, at| {
                starts.push(at)
            });
            let per_part = batches.div_ceil(threads);
            let out = &mut out[..batches * m * n];
            crate::threads::for_each_chunk(out, per_part * m * n, |i, chunk| {
                for (j, o) in chunk.chunks_exact_mut((m * n).max(1)).enumerate() {
                    let [ia, ib] = starts[i * per_part + j];
                    gemm(simd, &a[ia..ia + m * k], &b[ib..ib + k * n], o, (m, k, n));
                }
                each_row_on(simd, chunk, n, i * per_part * m * n, &epi);
            });
            return;
        }
    }
    walk(
        g.batch,
        [g.a_batch_strides, g.b_batch_strides],
        |batch, [ia, ib]| {
            let o = &mut out[batch * m * n..(batch + 1) * m * n];
            let a = &a[ia..ia + m * k];
            let b = &b[ib..ib + k * n];
            if crate::simd::register_tiles() {
                let threads = crate::threads::current();
                let rows = if threads > 1 && m * k * n >= PARALLEL_MIN_MACS {
                    m.div_ceil(threads).div_ceil(MAX_TILE_ROWS) * MAX_TILE_ROWS
                } else {
                    m
                };
                crate::threads::for_each_chunk(o, rows * n, |i, oc| {
                    let a = &a[i * rows * k..];
                    gemm(true, a, b, oc, (oc.len() / n.max(1), k, n));
                    // the epilogue in a loop of its own (see `linear`), a row at a time
                    each_row_on(true, oc, n, (batch * m + i * rows) * n, &epi);
                });
                return;
            }
            o.fill(0.0);
            for i in 0..m {
                let row = &mut o[i * n..(i + 1) * n];
                for kk in 0..k {
                    let av = a[i * k + kk];
                    for (slot, &bv) in row.iter_mut().zip(&b[kk * n..(kk + 1) * n]) {
                        *slot += av * bv;
                    }
                }
                epi((batch * m + i) * n, row);
            }
        },
    );
}

/// Columns of one panel of packed weights ([`pack_panels`]): the register tile's width.
/// The compiler lays weights out with the same width (`ir::WEIGHT_PANEL`), and the
/// generated code asserts that the two agree.
pub const WEIGHT_PANEL: usize = PANEL;

/// Packs a `linear`'s weight `w [n, k]` once, at load time, into the layout the matrix
/// product's register tiles read: `out [n / WEIGHT_PANEL rounded up, k, WEIGHT_PANEL]`,
/// panel `p`, row `kk` holding `w[p * WEIGHT_PANEL + j, kk]` for each `j`, zero past `n`.
/// [`matmul_panels`] then multiplies by `wᵀ` without packing anything per call.
pub fn pack_panels(w: &[f32], out: &mut [f32], n: usize, k: usize) {
    for (p, panel) in out.chunks_exact_mut(k.max(1) * PANEL).enumerate() {
        for (kk, row) in panel.chunks_exact_mut(PANEL).enumerate() {
            for (j, slot) in row.iter_mut().enumerate() {
                let col = p * PANEL + j;
                *slot = if col < n { w[col * k + kk] } else { 0.0 };
            }
        }
    }
}

/// `out [n] = x [k] @ b` for `b [k, n]` packed by [`pack_panels`]: a matrix-vector
/// product (a classifier, an MLP at batch 1) that reads each panel front to back, one
/// stream per panel (row-major weights are read eight rows at once: mlp at batch 1 took
/// 0.0248 ms that way, 0.0235 on panels). Each output sums its `k` products in
/// interleaved runs along `k` (four in the portable loop, two on AVX-512) added in a
/// fixed order, whichever panel it falls in: any split of the panels (threads) gives the
/// same bits. On x86_64 the AVX-512 kernel where the CPU has it, with `simd` the portable
/// loop compiled for AVX2 and FMA, else the portable loop.
fn matvec_panels(simd: bool, x: &[f32], panels: &[f32], out: &mut [f32], k: usize) {
    if k == 0 {
        out.fill(0.0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: callers pass `simd` true only when `avx2_fma` found AVX2 and FMA;
        // `avx512` checks AVX-512F. The kernels check the slices.
        #[allow(unsafe_code)]
        unsafe {
            if crate::simd::avx512() {
                crate::simd::matvec_panels_avx512(x, panels, out, k)
            } else {
                crate::simd::matvec_panels_avx2(x, panels, out, k)
            }
        };
        return;
    }
    let _ = simd;
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    if crate::simd::neon() {
        crate::simd::matvec_panels_neon(x, panels, out, k);
        return;
    }
    matvec_panels_here(x, panels, out, k);
}

/// [`matvec_panels`]' portable loop (the AVX2 build compiles the same code).
#[inline(always)]
pub(crate) fn matvec_panels_here(x: &[f32], panels: &[f32], out: &mut [f32], k: usize) {
    let x = &x[..k];
    assert!(k > 0 && panels.len() >= out.len().div_ceil(PANEL) * k * PANEL);
    let (runs, rest) = x.as_chunks::<4>();
    for (outs, panel) in out.chunks_mut(PANEL).zip(panels.chunks_exact(k * PANEL)) {
        let (rows, tail) = panel.as_chunks::<PANEL>();
        let (rows, tail_rows) = rows.split_at(4 * runs.len());
        debug_assert!(tail.is_empty() && tail_rows.len() == rest.len());
        let mut acc = [[0.0f32; PANEL]; 4];
        for (xs, four) in runs.iter().zip(rows.chunks_exact(4)) {
            for ((a, &xv), row) in acc.iter_mut().zip(xs).zip(four) {
                for (slot, &w) in a.iter_mut().zip(row) {
                    *slot += xv * w;
                }
            }
        }
        for ((a, &xv), row) in acc.iter_mut().zip(rest).zip(tail_rows) {
            for (slot, &w) in a.iter_mut().zip(row) {
                *slot += xv * w;
            }
        }
        for (j, slot) in outs.iter_mut().enumerate() {
            *slot = (acc[0][j] + acc[1][j]) + (acc[2][j] + acc[3][j]);
        }
    }
}

/// `out [rows, n] = a [rows, k] @ b` for `b [k, n]` packed by [`pack_panels`] (its
/// transpose); the row epilogue `epi(base, row)` runs over each finished output row.
/// Rows split over the threads (`threads::with_threads`, feature `threads`); a single
/// row (a matrix-vector product) splits its panels instead.
pub fn matmul_panels(
    a: &[f32],
    panels: &[f32],
    out: &mut [f32],
    (m, k, n): (usize, usize, usize),
    epi: impl Fn(usize, &mut [f32]) + Sync,
) {
    let simd = crate::simd::avx2_fma();
    let out = &mut out[..m * n];
    let threads = crate::threads::current();
    #[cfg(feature = "threads")]
    if m == 1 && threads > 1 && k * n >= MATVEC_PARALLEL_MIN_MACS {
        // whole panels to each thread, the epilogue over the finished row
        let per = n.div_ceil(threads).next_multiple_of(PANEL);
        crate::threads::for_each_chunk(out, per, |i, part| {
            let first = i * per / PANEL * k * PANEL;
            matvec_panels(simd, &a[..k], &panels[first..], part, k);
        });
        each_row_on(simd, out, n, 0, &epi);
        return;
    }
    let rows = if threads > 1 && m * k * n >= PARALLEL_MIN_MACS {
        m.div_ceil(threads).div_ceil(MAX_TILE_ROWS) * MAX_TILE_ROWS
    } else {
        m.max(1)
    };
    crate::threads::for_each_chunk(out, rows * n.max(1), |i, oc| {
        let count = oc.len() / n.max(1);
        gemm_panels(simd, &a[i * rows * k..], panels, oc, (count, k, n));
        each_row_on(simd, oc, n, i * rows * n, &epi);
    });
}

/// [`matmul_panels`] storing each result at `out[store(i)]` after `epi(i, value)` (a
/// fused transpose into the consumer's layout): rows are computed a stack buffer at a
/// time, so each output is written once. `store` is asked only at multiples of `run`
/// (which divides `n`): the `run` results from such an `i` land at `store(i)` onwards,
/// contiguous (a transpose that keeps the last axis moves whole runs of it). With `run`
/// 1, a `step` other than 0 says that `store(i + n) == store(i) + step` for every `i`
/// (the compiler's `column_step`): `store` is then asked once per column of a block.
pub fn matmul_panels_to(
    a: &[f32],
    panels: &[f32],
    out: &mut [f32],
    (m, k, n): (usize, usize, usize),
    epi: impl Epilogue,
    (store, run, step): (impl Fn(usize) -> usize + Sync, usize, usize),
) {
    let simd = crate::simd::avx2_fma();
    // with threads: the row ranges in parallel, each product into the thread's own
    // buffer, then its epilogue and its scattered stores on the same thread (stored from
    // the calling thread alone, bert6's projections to heads ran 1.5x faster on two
    // threads than on one, with every part's values read back across the cores)
    #[cfg(feature = "threads")]
    {
        let threads = crate::threads::current();
        if threads > 1 && m * k * n >= PARALLEL_MIN_MACS {
            let rows = m.div_ceil(threads).div_ceil(MAX_TILE_ROWS) * MAX_TILE_ROWS;
            let shared = SharedStores::new(out);
            crate::threads::for_each_part(m.div_ceil(rows), |i| {
                let (r0, r1) = (i * rows, m.min((i + 1) * rows));
                crate::threads::with_scratch((r1 - r0) * n, |part| {
                    gemm_panels(simd, &a[r0 * k..r1 * k], panels, part, (r1 - r0, k, n));
                    let mut into = shared;
                    store_runs(part, r0 * n, &mut into, (&epi, n), (&store, run, step));
                });
            });
            return;
        }
    }
    let mut block = [0.0f32; MM_BLOCK_LEN];
    // at least one row at a time (a row wider than the buffer goes a panel at a time),
    // whole register tiles where the buffer holds one: bert6's 384-wide projections ran
    // blocks of 21 rows, a 16-row tile and a 5-row one at half the rate
    let fit = MM_BLOCK_LEN / n.max(1);
    let whole_tiles = if fit >= MAX_TILE_ROWS {
        fit - fit % MAX_TILE_ROWS
    } else {
        fit
    };
    let rows = whole_tiles.clamp(1, m.max(1));
    if n > MM_BLOCK_LEN {
        for i in 0..m {
            for j0 in (0..n).step_by(MM_BLOCK_LEN) {
                let width = MM_BLOCK_LEN.min(n - j0);
                let part = &mut block[..width];
                let first = j0 / PANEL;
                let sub = &panels[first * k * PANEL..];
                gemm_panels(simd, &a[i * k..(i + 1) * k], sub, part, (1, k, width));
                store_runs(part, i * n + j0, out, (&epi, n), (&store, run, step));
            }
        }
        return;
    }
    for i0 in (0..m).step_by(rows) {
        let count = rows.min(m - i0);
        let part = &mut block[..count * n];
        gemm_panels(
            simd,
            &a[i0 * k..(i0 + count) * k],
            panels,
            part,
            (count, k, n),
        );
        store_runs(part, i0 * n, out, (&epi, n), (&store, run, step));
    }
}

/// Stores `values` (outputs `base..`, in rows of `width`) through `epi` at
/// `out[store(i)]`, asking `store` only at multiples of `run` (the `run` values from there
/// land contiguous); a run of 1 asks it for every value, or with a `step` (not 0) once
/// per column of whole rows, the values down the column landing `step` apart. The
/// epilogue runs first, over `values` in place (a row epilogue vectorizes there), then
/// the runs are copied.
fn store_runs(
    values: &mut [f32],
    base: usize,
    out: &mut (impl Stores + ?Sized),
    (epi, width): (&impl Epilogue, usize),
    (store, run, step): (&impl Fn(usize) -> usize, usize, usize),
) {
    epi.rows(base, values, width);
    if run <= 1 {
        let width = width.max(1);
        if values.len() > width && values.len().is_multiple_of(width) && base.is_multiple_of(width)
        {
            // whole rows, stored by columns: a map that keeps no run moves the last axis
            // (a transpose: attention's keys stored as K^T), and down a column its
            // outputs land side by side, where along a row each store touched another
            // cache line (bert_tiny's key stores took 4 times as long). Each output is
            // written once, so the order is free.
            let rows = values.len() / width;
            if step > 0 {
                // the map asked once per column (its index arithmetic per value, divisions
                // included, was 2% of bert_tiny's and bert6's time)
                for column in 0..width {
                    let first = store(base + column);
                    // (the compiler's promise, checked in debug builds: the tests')
                    debug_assert!(
                        (0..rows).all(|r| store(base + column + r * width) == first + r * step),
                        "a store map's column does not keep step {step}"
                    );
                    for r in 0..rows {
                        out.put(first + r * step, values[column + r * width]);
                    }
                }
                return;
            }
            for column in 0..width {
                for t in (column..rows * width).step_by(width) {
                    out.put(store(base + t), values[t]);
                }
            }
            return;
        }
        for (t, &v) in values.iter().enumerate() {
            out.put(store(base + t), v);
        }
        return;
    }
    let (mut o, mut done) = (base, 0);
    while done < values.len() {
        let into = o % run;
        let len = (run - into).min(values.len() - done);
        let at = store(o - into) + into;
        out.put_run(at, &values[done..done + len]);
        o += len;
        done += len;
    }
}

/// Where [`store_runs`] writes: an output of its own, or ([`SharedStores`]) one the parts
/// of a split share.
pub(crate) trait Stores {
    /// `out[at] = v`
    fn put(&mut self, at: usize, v: f32);
    /// `out[at..at + values.len()] = values`
    fn put_run(&mut self, at: usize, values: &[f32]);
}

impl Stores for [f32] {
    #[inline(always)]
    fn put(&mut self, at: usize, v: f32) {
        self[at] = v;
    }

    #[inline(always)]
    fn put_run(&mut self, at: usize, values: &[f32]) {
        self[at..at + values.len()].copy_from_slice(values);
    }
}

/// One output written by the parts of a split through a store map each (a fused
/// transpose): every float stored by a relaxed atomic store, a plain store on x86_64 and
/// aarch64. The map comes from the caller, so nothing here may assume that two parts
/// never store to the same float; with atomics that is a race on the value, never
/// undefined behaviour.
#[cfg(feature = "threads")]
#[derive(Clone, Copy)]
pub(crate) struct SharedStores<'a>(&'a [core::sync::atomic::AtomicU32]);

#[cfg(feature = "threads")]
impl<'a> SharedStores<'a> {
    pub(crate) fn new(out: &'a mut [f32]) -> SharedStores<'a> {
        use core::sync::atomic::AtomicU32;
        const {
            assert!(size_of::<AtomicU32>() == size_of::<f32>());
            assert!(align_of::<AtomicU32>() == align_of::<f32>());
        }
        // SAFETY: `AtomicU32` has the size and alignment of `f32` (asserted above) and
        // every bit pattern is valid in both; `out` stays borrowed mutably for 'a, so
        // while the atomics live nothing else reads or writes the floats
        #[allow(unsafe_code)]
        let atomics =
            unsafe { core::slice::from_raw_parts(out.as_mut_ptr().cast::<AtomicU32>(), out.len()) };
        SharedStores(atomics)
    }
}

#[cfg(feature = "threads")]
impl Stores for SharedStores<'_> {
    #[inline(always)]
    fn put(&mut self, at: usize, v: f32) {
        self.0[at].store(v.to_bits(), core::sync::atomic::Ordering::Relaxed);
    }

    #[inline(always)]
    fn put_run(&mut self, at: usize, values: &[f32]) {
        for (slot, v) in self.0[at..at + values.len()].iter().zip(values) {
            slot.store(v.to_bits(), core::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// `c [m, n] = a [m, k] @ b` for `b` packed by [`pack_panels`]: per block of
/// [`PANEL_DEPTH`] along `k` and [`GEMM_MC`] rows of `a`, every panel of `b`
/// (contiguous, zero-padded to [`PANEL`] columns) multiplied by the block's register
/// tiles (AVX2 or AVX-512 when `simd`, else portable). With `simd` the block of `a` is
/// first copied into interleaved tiles ([`pack_row_tiles`]: one cache line per step of a
/// tile, read by as many tiles as `b` has panels); without, it is read in place.
fn gemm_panels(simd: bool, a: &[f32], b: &[f32], c: &mut [f32], (m, k, n): (usize, usize, usize)) {
    if k == 0 {
        c[..m * n].fill(0.0);
        return;
    }
    if m == 1 {
        // a row against the panels: one pass over them (the register tiles would pad the
        // row to sixteen)
        matvec_panels(simd, &a[..k], b, &mut c[..n], k);
        return;
    }
    // the packed tiles' buffer no larger than the call needs, and not cleared: the
    // packing writes every float the tiles read (clearing the whole one cost bert_tiny 3%
    // of its time, the smaller one 1-2%)
    let needed = m.min(GEMM_MC).next_multiple_of(WEIGHT_TILE_ROWS) * k.min(PANEL_DEPTH);
    if needed <= A_TILES_SMALL_LEN {
        gemm_panels_in(
            simd,
            a,
            b,
            c,
            (m, k, n),
            &mut uninit_floats::<A_TILES_SMALL_LEN>(),
        );
    } else {
        gemm_panels_in(
            simd,
            a,
            b,
            c,
            (m, k, n),
            &mut uninit_floats::<A_TILES_LEN>(),
        );
    }
}

/// [`gemm_panels`] with a tile buffer of at least `min(m, GEMM_MC)` rows (rounded up to
/// whole tiles) by `min(k, PANEL_DEPTH)`.
fn gemm_panels_in(
    simd: bool,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    (m, k, n): (usize, usize, usize),
    tiles: &mut [MaybeUninit<f32>],
) {
    for k0 in (0..k).step_by(PANEL_DEPTH) {
        let kc = PANEL_DEPTH.min(k - k0);
        let start = if k0 == 0 {
            Start::Zero
        } else {
            Start::Accumulate
        };
        for i0 in (0..m).step_by(GEMM_MC) {
            let mc = GEMM_MC.min(m - i0);
            // (on AVX-512 the runs of three panels first, by the 8 x 48 tile)
            let (lhs, first_panel) = if simd {
                let rows = (&a[i0 * k + k0..], k);
                let packed = pack_row_tiles(rows, (mc, kc), WEIGHT_TILE_ROWS, tiles);
                #[cfg(target_arch = "x86_64")]
                let done = match crate::simd::avx512() {
                    true => panels_wide(packed, (b, k0, k), &mut c[i0 * n..], (mc, kc, n)),
                    false => 0,
                };
                #[cfg(not(target_arch = "x86_64"))]
                let done = 0;
                let lhs = Lhs::Tiled(Tiles {
                    w: packed,
                    depth: kc,
                    tiled: mc.next_multiple_of(WEIGHT_TILE_ROWS),
                    k0: 0,
                });
                (lhs, done)
            } else {
                (Lhs::Strided(&a[i0 * k + k0..], k, 1), 0)
            };
            for (p, j0) in (0..n).step_by(PANEL).enumerate().skip(first_panel) {
                let cols = PANEL.min(n - j0);
                // the next panel's block, or the next block's first panel
                let next = if j0 + PANEL < n {
                    ((p + 1) * k + k0) * PANEL
                } else {
                    (k0 + kc) * PANEL
                };
                let ahead = match b.get(next..next + kc * PANEL) {
                    Some(lines) if simd && k * n >= PREFETCH_MIN_FLOATS => lines,
                    _ => &[],
                };
                tile_panel_ahead(
                    simd,
                    (mc, kc, cols),
                    lhs,
                    (&b[(p * k + k0) * PANEL..], PANEL),
                    (&mut c[i0 * n + j0..], n),
                    start,
                    ahead,
                );
            }
        }
    }
}

/// The whole runs of three panels of [`gemm_panels`]' packed `b` (`[n / 16, k, 16]`, its
/// steps `k0..k0 + kc`) against `mc` rows of `a` packed in interleaved tiles, by the 8 x 48
/// tile ([`crate::simd::gemm_wide_avx512`], [`WIDE_DEPTH`] steps at a time so that the
/// three panels' blocks stay in L1), into `c` (`n` wide), from `c` unless `k0` is 0.
/// Returns the panels done. Each block of [`WIDE_DEPTH`] steps is added to `c` as the 16 x
/// 16 tile adds its block of [`PANEL_DEPTH`]: other bits, the same rounding bound.
/// `conv_classes` (alternated): the linears of bert-384 203-212 -> 232-252 GFLOP/s on
/// weights in cache, 200-207 -> 220-227 on weights from memory (the next block asked for:
/// without it 205-219); bert_tiny 0.613-0.651 -> 0.597-0.615 ms, bert6 14.36-14.52 ->
/// 14.06-14.38 ms (three rounds alternated with the build whose `gemm_packed` alone ran
/// the 8 x 48 tile).
#[cfg(target_arch = "x86_64")]
fn panels_wide(
    tiles: &[f32],
    (b, k0, k): (&[f32], usize, usize),
    c: &mut [f32],
    (mc, kc, n): (usize, usize, usize),
) -> usize {
    use crate::simd::{WIDE_PANELS, WIDE_ROWS};
    let runs = n / WIDE_COLUMNS;
    // panel `j` of run `run` from step `s0` of the block, `len` steps
    let block = |run: usize, j: usize, s0: usize, len: usize| {
        let at = ((run * WIDE_PANELS + j) * k + k0 + s0) * PANEL;
        b.get(at..at + len * PANEL).unwrap_or(&[])
    };
    let calls = mc.div_ceil(WIDE_ROWS);
    for run in 0..runs {
        for s0 in (0..kc).step_by(WIDE_DEPTH) {
            let sc = WIDE_DEPTH.min(kc - s0);
            let b3 = core::array::from_fn(|j| block(run, j, s0, sc));
            // the next block of the three panels (of this run, else of the next) asked
            // for while this one runs, a share per call: on weights from memory (a
            // transformer's linears) the products would wait on them
            let (next_run, next_s0) = match s0 + WIDE_DEPTH {
                s if s < kc => (run, s),
                _ => (run + 1, 0),
            };
            let next_len = WIDE_DEPTH.min(kc - next_s0);
            let share = (WIDE_PANELS * next_len * PANEL).div_ceil(calls).max(1);
            let mut ahead = (0..WIDE_PANELS)
                .filter(|_| next_run < runs)
                .flat_map(|j| block(next_run, j, next_s0, next_len).chunks(share));
            let a = (&tiles[s0 * WEIGHT_TILE_ROWS..], kc * WEIGHT_TILE_ROWS);
            let c = (&mut c[run * WIDE_COLUMNS..], n, mc);
            let start = (Start::of(k0 + s0, None), 0);
            wide_rows(sc, a, (b3, PANEL), c, start, &mut ahead);
        }
    }
    runs * WIDE_PANELS
}

/// Floats of the interleaved tiles [`gemm_panels`] copies a block of `a` into (only
/// with `simd`: x86_64 CPUs; none elsewhere).
const A_TILES_LEN: usize =
    stack_floats(GEMM_MC.next_multiple_of(WEIGHT_TILE_ROWS) * PANEL_DEPTH, 0);

/// Floats of [`gemm_panels`]'s smaller tile buffer, a third of the whole (unused without
/// SIMD, where the rows are read in place).
const A_TILES_SMALL_LEN: usize = stack_floats(A_TILES_LEN / 3, 1);

/// Copies `rows` rows of `kc` floats (`a`, rows `lda` apart) into `out` as interleaved
/// tiles of `tile_rows` rows (`out[(t * kc + kk) * tile_rows + i]` = row `t * tile_rows +
/// i`, column `kk`), the last tile's missing rows zero, and returns those tiles: every
/// float of them is written, so `out` may start uninitialized.
fn pack_row_tiles<'a>(
    (a, lda): (&[f32], usize),
    (rows, kc): (usize, usize),
    tile_rows: usize,
    out: &'a mut [MaybeUninit<f32>],
) -> &'a [f32] {
    let len = rows.div_ceil(tile_rows) * kc * tile_rows;
    let out = &mut out[..len];
    for (t, packed) in out.chunks_exact_mut(kc * tile_rows).enumerate() {
        #[cfg(target_arch = "x86_64")]
        if tile_rows == MAX_TILE_ROWS && rows - t * tile_rows >= tile_rows && crate::simd::avx512()
        {
            // SAFETY: AVX-512F was just found on this CPU
            #[allow(unsafe_code)]
            unsafe {
                crate::simd::pack_tile_avx512((&a[t * tile_rows * lda..], lda), kc, packed)
            };
            continue;
        }
        // the tile's rows, read front to back together; each step written whole
        let mut src: [&[f32]; MAX_TILE_ROWS] = [&[]; MAX_TILE_ROWS];
        let present = tile_rows.min(rows - t * tile_rows);
        for (i, slot) in src.iter_mut().enumerate().take(present) {
            let at = (t * tile_rows + i) * lda;
            *slot = &a[at..at + kc];
        }
        for (kk, step) in packed.chunks_exact_mut(tile_rows).enumerate() {
            for (i, slot) in step.iter_mut().enumerate() {
                slot.write(
                    src.get(i)
                        .and_then(|row| row.get(kk))
                        .copied()
                        .unwrap_or(0.0),
                );
            }
        }
    }
    // SAFETY: the loop wrote each of the `len` floats of `out`: every step of every
    // tile, by `pack_tile_avx512` (all `kc * 16` of its tile) or by the loop above (rows
    // past `rows` as zeros); `MaybeUninit<f32>` has the layout of `f32`
    #[allow(unsafe_code)]
    unsafe {
        &*(core::ptr::from_ref(out) as *const [f32])
    }
}

/// An uninitialized stack buffer of `N` floats, for packed operands whose packing writes
/// every float that is read (see [`pack_row_tiles`]).
#[inline(always)]
fn uninit_floats<const N: usize>() -> [MaybeUninit<f32>; N] {
    [const { MaybeUninit::uninit() }; N]
}

/// A stack buffer's size: `desktop` floats on x86_64 and aarch64, whose threads have
/// stacks of megabytes, `small` elsewhere (microcontrollers, a few kilobytes of stack).
const fn stack_floats(desktop: usize, small: usize) -> usize {
    if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        desktop
    } else {
        small
    }
}

/// Floats of [`matmul_to`]'s stack buffer for the rows it computes at a time (32 KiB on
/// desktop CPUs, 2 KiB where stacks are small).
const MM_BLOCK_LEN: usize = stack_floats(8192, 512);

/// [`matmul`] storing each result at `out[store(i)]` instead of `out[i]` (a fused
/// transpose into the consumer's layout). Rows are accumulated in a stack buffer, so each
/// output is written once. As in [`matmul_panels_to`], the `run` values from a multiple of
/// `run` land contiguous from `store(i)` on, and with `run` 1 a `step` other than 0 is the
/// map's constant step down a column of each batch's `m x n` result.
pub fn matmul_to(
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
    g: &MatMulGeom<'_>,
    epi: impl Epilogue,
    (store, run, step): (impl Fn(usize) -> usize + Sync, usize, usize),
) {
    const CHUNK: usize = 64;
    let (m, k, n) = (g.m, g.k, g.n);
    // with threads: the batches in parallel, each product into the thread's own buffer,
    // then its epilogue and its scattered stores on the same thread (as in
    // `matmul_panels_to`)
    #[cfg(feature = "threads")]
    {
        let batches: usize = g.batch.iter().product();
        let threads = crate::threads::current();
        let simd = crate::simd::register_tiles();
        if simd && threads > 1 && batches > 1 && batches * m * k * n >= PARALLEL_MIN_MACS {
            let mut starts = alloc::vec::Vec::with_capacity(batches);
            walk(g.batch, [g.a_batch_strides, g.b_batch_strides], |_, at| {
                starts.push(at)
            });
            let shared = SharedStores::new(out);
            crate::threads::for_each_part(batches, |batch| {
                let [ia, ib] = starts[batch];
                crate::threads::with_scratch(m * n, |part| {
                    let (a, b) = (&a[ia..ia + m * k], &b[ib..ib + k * n]);
                    gemm(simd, a, b, part, (m, k, n));
                    let mut into = shared;
                    store_runs(
                        part,
                        batch * m * n,
                        &mut into,
                        (&epi, n),
                        (&store, run, step),
                    );
                });
            });
            return;
        }
    }
    let mut block = None;
    walk(
        g.batch,
        [g.a_batch_strides, g.b_batch_strides],
        |batch, [ia, ib]| {
            let a = &a[ia..ia + m * k];
            let b = &b[ib..ib + k * n];
            if n > 0 && n <= MM_BLOCK_LEN && crate::simd::register_tiles() {
                // as many rows as fit the stack buffer at a time through the packed GEMM,
                // then the epilogue and the scattered stores in a loop of their own (the
                // buffer cleared once for all batches: per batch, the attention heads
                // of bert6 cleared 2.3 MB per inference)
                let block = block.get_or_insert([0.0f32; MM_BLOCK_LEN]);
                let rows = (MM_BLOCK_LEN / n).min(m.max(1));
                for i0 in (0..m).step_by(rows) {
                    let count = rows.min(m - i0);
                    let part = &mut block[..count * n];
                    gemm(true, &a[i0 * k..(i0 + count) * k], b, part, (count, k, n));
                    store_runs(
                        part,
                        (batch * m + i0) * n,
                        out,
                        (&epi, n),
                        (&store, run, step),
                    );
                }
                return;
            }
            let mut at = 0;
            for i in 0..m {
                let mut j0 = 0;
                while j0 < n {
                    let width = CHUNK.min(n - j0);
                    let mut acc = [0.0f32; CHUNK];
                    for kk in 0..k {
                        let av = a[i * k + kk];
                        for (slot, &bv) in acc[..width]
                            .iter_mut()
                            .zip(&b[kk * n + j0..kk * n + j0 + width])
                        {
                            *slot += av * bv;
                        }
                    }
                    for (j, &v) in acc[..width].iter().enumerate() {
                        let o = (batch * m + i) * n + j0 + j;
                        // `store` once per run, the run's next values after it
                        at = if o % run.max(1) == 0 {
                            store(o)
                        } else {
                            at + 1
                        };
                        out[at] = epi.at(o, v);
                    }
                    j0 += width;
                }
            }
        },
    );
}

/// [`linear`] storing each result at `out[store(i)]` (a fused transpose into the
/// consumer's layout).
#[allow(clippy::too_many_arguments)]
pub fn linear_to(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    rows: usize,
    in_features: usize,
    out_features: usize,
    epi: impl Epilogue,
    store: impl Fn(usize) -> usize,
) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::linear_avx2_fits(rows, out_features) && crate::simd::avx2_fma() {
        let sink = |r: usize, o: usize, v: f32| {
            let i = r * out_features + o;
            out[store(i)] = epi.at(i, bias.map_or(0.0, |b| b[o]) + v);
        };
        // SAFETY: as in `linear`.
        #[allow(unsafe_code)]
        unsafe {
            crate::simd::linear_avx2(x, w, (rows, in_features, out_features), sink)
        };
        return;
    }
    if crate::simd::register_blocked() {
        for r in 0..rows {
            let xr = &x[r * in_features..(r + 1) * in_features];
            dots_blocked(xr, w, out_features, |o, v| {
                let i = r * out_features + o;
                out[store(i)] = epi.at(i, bias.map_or(0.0, |b| b[o]) + v);
            });
        }
        return;
    }
    const CHUNK: usize = 64;
    for r in 0..rows {
        let xr = &x[r * in_features..(r + 1) * in_features];
        let mut o0 = 0;
        while o0 < out_features {
            let width = CHUNK.min(out_features - o0);
            let mut acc = [0.0f32; CHUNK];
            for (j, slot) in acc[..width].iter_mut().enumerate() {
                let o = o0 + j;
                *slot = bias.map_or(0.0, |b| b[o])
                    + dot(xr, &w[o * in_features..(o + 1) * in_features]);
            }
            for (j, &v) in acc[..width].iter().enumerate() {
                let i = r * out_features + o0 + j;
                out[store(i)] = epi.at(i, v);
            }
            o0 += width;
        }
    }
}

/// Geometry of a 2-d convolution (and of its transpose, read the other way).
#[derive(Clone, Copy, Debug)]
pub struct Conv2dGeom {
    /// batch
    pub n: usize,
    /// input channels
    pub c_in: usize,
    /// input height
    pub h: usize,
    /// input width
    pub w: usize,
    /// output channels
    pub c_out: usize,
    /// output height
    pub oh: usize,
    /// output width
    pub ow: usize,
    /// kernel height
    pub kh: usize,
    /// kernel width
    pub kw: usize,
    /// vertical stride
    pub stride_h: usize,
    /// horizontal stride
    pub stride_w: usize,
    /// top padding (transpose: padding removed per side)
    pub pad_top: usize,
    /// left padding (transpose: padding removed per side)
    pub pad_left: usize,
    /// vertical dilation
    pub dilation_h: usize,
    /// horizontal dilation
    pub dilation_w: usize,
    /// channel groups
    pub groups: usize,
}

/// The output positions `o` in `0..out_len` whose input `o * stride + tap - pad` lies in
/// `0..in_len`, as a range (also read the other ways: the kernel rows of one output row,
/// the input columns of a transposed convolution's tap).
#[inline]
pub(crate) fn valid_range(
    out_len: usize,
    in_len: usize,
    stride: usize,
    pad: usize,
    tap: usize,
) -> (usize, usize) {
    // need o * stride + tap >= pad  and  o * stride + tap < in_len + pad
    let lo = if tap >= pad {
        0
    } else {
        (pad - tap).div_ceil(stride)
    };
    let hi = if in_len + pad > tap {
        ((in_len + pad - tap - 1) / stride + 1).min(out_len)
    } else {
        0
    };
    (lo, hi.max(lo))
}

/// 2-d convolution, NCHW, weight `[c_out, c_in / groups, kh, kw]`, zero padding.
///
/// Its epilogue takes whole rows: `epi(base, row)` maps each finished output row (the `ow`
/// values of one channel and output row, starting at flat index `base`) in place before
/// the next row is computed; pass [`store_rows`] for none.
///
/// Paths: depthwise convolutions their own kernel (on AVX-512 read in place, else phase
/// planes; sums of every tap in registers); on CPUs with AVX-512F every other
/// convolution runs the implicit GEMM (`conv2d_gemm`: AVX-512 register tiles over
/// patches packed from input bands), except fewer than 16 output channels per group (or
/// 16 on rows of at most 8) at unit horizontal stride, which run direct tiles of all the
/// block's channels
/// (`simd::conv2d_few_avx512`; on one thread, else the AVX2 direct tiles); with
/// AVX2 and FMA alone, the direct AVX2 tiles (`simd::conv2d_avx2`) take the shapes they
/// win (few output channels, rows of 17-31 columns) and the GEMM the rest; CPUs with
/// scalar FPUs run register-blocked direct tiles, other CPUs the GEMM's portable tiles.
pub fn conv2d(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    g: &Conv2dGeom,
    epi: impl Fn(usize, &mut [f32]) + Sync,
) {
    let simd = crate::simd::avx2_fma();
    if g.c_in == g.groups && g.c_out == g.groups {
        // depthwise: one input channel per output channel
        let threads = crate::threads::current();
        let plane = g.oh * g.ow;
        let macs = g.c_out * plane * g.kh * g.kw;
        if threads > 1 && macs >= DEPTHWISE_PARALLEL_MIN_MACS && plane > 0 {
            depthwise_threaded(x, w, bias, out, g, simd, threads, &epi);
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if simd {
            depthwise_simd(x, w, bias, out, g, &epi);
            return;
        }
        depthwise_portable(x, w, bias, out, g, &epi);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    let threaded = {
        let work = g.c_out * g.oh * g.ow * g.c_in / g.groups * g.kh * g.kw;
        crate::threads::current() > 1 && g.groups == 1 && work >= PARALLEL_MIN_MACS
    };
    // few output channels on AVX-512: the direct tiles of all the block's channels
    #[cfg(target_arch = "x86_64")]
    if simd && crate::simd::avx512() && !threaded && crate::simd::conv2d_few_avx512_fits(g) {
        // SAFETY: `conv2d_few_avx512` needs AVX-512F and FMA: `avx512` and `avx2_fma`
        // have just checked that this CPU has both
        #[allow(unsafe_code)]
        unsafe {
            crate::simd::conv2d_few_avx512(x, w, bias, out, g, &epi)
        };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if simd && conv2d_direct_wins(g) {
        let threads = crate::threads::current();
        if threaded {
            conv2d_direct_threaded(x, w, bias, out, g, threads, &epi);
            return;
        }
        // SAFETY: `conv2d_avx2` needs AVX2 and FMA, and `avx2_fma` has just checked that
        // this CPU has both.
        #[allow(unsafe_code)]
        unsafe {
            crate::simd::conv2d_avx2(x, w, bias, out, g, &epi)
        };
        return;
    }
    if !simd && crate::simd::register_blocked() && conv2d_blocked_fits(g) {
        conv2d_blocked(x, w, bias, out, g, &epi);
        return;
    }
    // small weights (those a model's `prepare` leaves row-major) tiled per call on
    // AVX-512: a copy of at most 64 KiB, against the sixteen row pointers of the
    // row-major tile at every step
    #[cfg(target_arch = "x86_64")]
    if simd && crate::simd::avx512() && w.len() <= CALL_TILES_LEN && g.c_out / g.groups >= 16 {
        let mut tiles = [0.0f32; CALL_TILES_LEN];
        let tiles = &mut tiles[..w.len()];
        tile_conv2d_weights(w, tiles, g.c_out, g.groups);
        conv2d_gemm_with(x, tiles, true, bias, out, g, &epi, simd);
        return;
    }
    conv2d_gemm(x, w, bias, out, g, &epi, simd);
}

/// Weights up to which [`conv2d`] tiles them per call on AVX-512 (64 KiB).
#[cfg(target_arch = "x86_64")]
const CALL_TILES_LEN: usize = 16384;

/// Floats of [`conv2d_blocked`]'s row buffer (2.25 KiB on a microcontroller: the 10 rows
/// of 54 floats a keyword-spotting convolution reads fit).
const BLOCKED_ROWS_LEN: usize = stack_floats(4096, 576);

/// The register tile [`conv2d_blocked`] runs for `g`, as (output channels, output
/// columns): two by eight (`simd::conv_tile_2x8`) for dilation 1 and stride 1 or 2 along
/// the row on rows of at least 8 outputs, else four by four (`simd::conv_tile_4x4`).
fn blocked_tile(g: &Conv2dGeom) -> (usize, usize) {
    if g.dilation_w == 1 && (g.stride_w == 1 || g.stride_w == 2) && g.ow >= 8 {
        (2, 8)
    } else {
        (4, 4)
    }
}

/// The width of [`conv2d_blocked`]'s packed rows: every column an output row reads, from
/// `-pad_left` on, plus (four-by-four tiles) what a last tile reads past the row's end;
/// the last two-by-eight tile ends flush with the row instead, overlapping the one before.
fn blocked_row_width(g: &Conv2dGeom) -> usize {
    match blocked_tile(g) {
        (2, _) => (g.ow - 1) * g.stride_w + g.kw,
        _ => (g.ow + 3) * g.stride_w + (g.kw - 1) * g.dilation_w + 1,
    }
}

/// True when [`conv2d_blocked`] can run `g`: one input channel's window rows fit its
/// buffer.
fn conv2d_blocked_fits(g: &Conv2dGeom) -> bool {
    g.kh * blocked_row_width(g) <= BLOCKED_ROWS_LEN && g.ow > 0 && g.c_out > 0
}

/// [`conv2d`] as a direct convolution in register tiles, for CPUs with scalar FPUs (see
/// `simd::register_blocked`): nothing is packed but the input rows each output row reads.
///
/// Per image, group and output row: the input rows its window reads (only those inside
/// the input: the kernel rows are cut to them) are copied, horizontal zero padding
/// included, into a stack buffer, as many input channels at a time as fit. Then output
/// channels and columns go in register tiles ([`blocked_tile`]: per tap, two weights and
/// eight consecutive inputs, or four weights and four inputs, feed sixteen multiply-adds
/// into sums kept in registers); a last block of fewer channels repeats its last one, and
/// of fewer columns reads zeros; only real outputs are stored. The first channel chunk starts from the
/// bias, later ones from the stored sums. Each output row gets the epilogue once its
/// sums are complete. (An output row whose window lies wholly in the padding gets the
/// bias: one pass over zero packed rows.)
fn conv2d_blocked(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    g: &Conv2dGeom,
    epi: &(impl Fn(usize, &mut [f32]) + Sync),
) {
    let (cin_g, cout_g) = (g.c_in / g.groups, g.c_out / g.groups);
    let (plane, in_plane) = (g.oh * g.ow, g.h * g.w);
    let taps = cin_g * g.kh * g.kw;
    let wp = blocked_row_width(g);
    let mut buf = [0.0f32; BLOCKED_ROWS_LEN];
    for n in 0..g.n {
        for grp in 0..g.groups {
            let xg = &x[(n * g.c_in + grp * cin_g) * in_plane..][..cin_g * in_plane];
            let first = n * g.c_out + grp * cout_g;
            for oy in 0..g.oh {
                let top = oy * g.stride_h;
                let (ky0, ky1) = valid_range(g.kh, g.h, g.dilation_h, g.pad_top, top);
                let rows = ky1 - ky0;
                let chunk = (BLOCKED_ROWS_LEN / (rows * wp).max(1)).clamp(1, cin_g.max(1));
                let mut c0 = 0;
                while c0 < cin_g {
                    let count = chunk.min(cin_g - c0);
                    // buf[(k * rows + r) * wp + p] = x[c0 + k, iy(ky0 + r), p - pad_left]
                    for k in 0..count {
                        for r in 0..rows {
                            let iy = top + (ky0 + r) * g.dilation_h - g.pad_top;
                            let src = &xg[(c0 + k) * in_plane + iy * g.w..][..g.w];
                            let dst = &mut buf[(k * rows + r) * wp..][..wp];
                            let start = g.pad_left.min(wp);
                            let len = g.w.min(wp - start);
                            dst[..start].fill(0.0);
                            dst[start..start + len].copy_from_slice(&src[..len]);
                            dst[start + len..].fill(0.0);
                        }
                    }
                    let packed = &buf[..count * rows * wp];
                    let (tile_oc, tile_ox) = blocked_tile(g);
                    let mut oc = 0;
                    while oc < cout_g {
                        let real = tile_oc.min(cout_g - oc);
                        let channel = |c: usize| {
                            let ch = grp * cout_g + oc + c.min(real - 1);
                            &w[ch * taps..(ch + 1) * taps]
                        };
                        let shape = crate::simd::ConvTile {
                            c0,
                            count,
                            ky0,
                            rows,
                            kh: g.kh,
                            kw: g.kw,
                            wp,
                            dilation: g.dilation_w,
                            stride: g.stride_w,
                        };
                        // stores columns `cols` of a tile's row from `ox0`; the first
                        // channel chunk starts from the bias
                        let mut store =
                            |c: usize, ox0: usize, cols: core::ops::Range<usize>, row: &[f32]| {
                                let at = (first + oc + c) * plane + oy * g.ow + ox0 + cols.start;
                                let b = match (c0, bias) {
                                    (0, Some(b)) => Some(b[grp * cout_g + oc + c]),
                                    (0, None) => Some(0.0),
                                    _ => None,
                                };
                                store_sums(&mut out[at..at + cols.len()], &row[cols], b);
                            };
                        if tile_oc == 2 {
                            // the last tile overlaps the one before: only its new columns
                            // are stored
                            let mut done = 0;
                            for ox0 in crate::simd::tile_starts(g.ow, tile_ox) {
                                let weights = [channel(0), channel(1)];
                                let sums = if g.stride_w == 1 {
                                    crate::simd::conv_tile_2x8::<1, 8>(weights, packed, &shape, ox0)
                                } else {
                                    crate::simd::conv_tile_2x8::<2, 15>(
                                        weights, packed, &shape, ox0,
                                    )
                                };
                                for (c, row) in sums.iter().enumerate().take(real) {
                                    store(c, ox0, done - ox0..tile_ox, row);
                                }
                                done = ox0 + tile_ox;
                            }
                        } else {
                            for ox0 in (0..g.ow).step_by(tile_ox) {
                                let weights = [channel(0), channel(1), channel(2), channel(3)];
                                let sums = crate::simd::conv_tile_4x4(weights, packed, &shape, ox0);
                                let cols = tile_ox.min(g.ow - ox0);
                                for (c, row) in sums.iter().enumerate().take(real) {
                                    store(c, ox0, 0..cols, row);
                                }
                            }
                        }
                        oc += real;
                    }
                    c0 += count;
                }
                for oc in 0..cout_g {
                    let base = (first + oc) * plane + oy * g.ow;
                    epi(base, &mut out[base..base + g.ow]);
                }
            }
        }
    }
}

/// Stores a register tile's row of sums: `dst = bias + sums` when `bias` is given (the
/// first channel chunk), else `dst += sums`. Indexed, not zipped: at opt-level "s" a
/// `zip` stays a call per row.
#[inline(always)]
fn store_sums(dst: &mut [f32], sums: &[f32], bias: Option<f32>) {
    let sums = &sums[..dst.len()];
    match bias {
        Some(b) => {
            for i in 0..dst.len() {
                dst[i] = b + sums[i];
            }
        }
        None => {
            for i in 0..dst.len() {
                dst[i] += sums[i];
            }
        }
    }
}

/// [`depthwise_rows`] kept out of line: its stack buffer (4 KiB on a microcontroller)
/// then exists only while a depthwise convolution runs, not in every caller's frame.
#[inline(never)]
fn depthwise_portable(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    g: &Conv2dGeom,
    epi: &(impl Fn(usize, &mut [f32]) + Sync),
) {
    depthwise_rows(x, w, bias, out, g, epi, false);
}

/// The direct AVX2 convolution (one group) with its output channels split over `threads`
/// threads in blocks of whole register tiles, each running the epilogue on its own
/// channels' rows.
#[cfg(target_arch = "x86_64")]
fn conv2d_direct_threaded(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    g: &Conv2dGeom,
    threads: usize,
    epi: &(impl Fn(usize, &mut [f32]) + Sync),
) {
    let (plane, in_image, taps) = (g.oh * g.ow, g.c_in * g.h * g.w, g.c_in * g.kh * g.kw);
    let tile = crate::simd::CONV_OC;
    // at least a tile per chunk: the direct kernel needs that many channels
    let per_chunk = g.c_out.div_ceil(threads).div_ceil(tile).max(1) * tile;
    for n in 0..g.n {
        let xn = &x[n * in_image..(n + 1) * in_image];
        let on = &mut out[n * g.c_out * plane..(n + 1) * g.c_out * plane];
        crate::threads::for_each_chunk(on, per_chunk * plane, |i, oc| {
            let (c0, count) = (i * per_chunk, oc.len() / plane);
            let sub = Conv2dGeom {
                n: 1,
                c_out: count,
                ..*g
            };
            let ws = &w[c0 * taps..(c0 + count) * taps];
            let bs = bias.map(|b| &b[c0..c0 + count]);
            let first = (n * g.c_out + c0) * plane;
            let epi = |base: usize, row: &mut [f32]| epi(first + base, row);
            if crate::simd::conv2d_avx2_fits(&sub) {
                // SAFETY: the caller runs this only when `avx2_fma` found AVX2 and FMA.
                #[allow(unsafe_code)]
                unsafe {
                    crate::simd::conv2d_avx2(xn, ws, bs, oc, &sub, &epi)
                };
            } else {
                conv2d_gemm(xn, ws, bs, oc, &sub, &epi, true);
            }
        });
    }
}

/// A depthwise convolution on this CPU's vector units: on AVX-512F 3x3 kernels of stride 1
/// or 2 on rows of up to 128 outputs from staged rows (`simd::depthwise3_avx512`), small
/// maps at stride 1 flat (`simd::depthwise_flat_avx512`), other 3x3, 5x5 and 7x7 kernels
/// of horizontal stride 1 or 2 read in place (`simd::depthwise_conv2d_avx512`); the rest
/// by the AVX2 build of the phase planes.
/// Call only when [`crate::simd::avx2_fma`] holds.
#[cfg(target_arch = "x86_64")]
fn depthwise_simd(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    g: &Conv2dGeom,
    epi: &(impl Fn(usize, &mut [f32]) + Sync),
) {
    let avx512 = crate::simd::avx512();
    let staged = avx512 && crate::simd::depthwise3_avx512_fits(g);
    let flat = avx512 && crate::simd::depthwise_flat_fits(g);
    // rows of one or two vectors leave lanes of the staged rows idle: flat there at
    // stride 1 (`conv_classes`: dw 192@28 0.038 ms flat, 0.044 staged; 144@56 0.113
    // both, 0.150-0.152 against 0.163-0.164 in the model)
    if staged && (g.ow > 2 * 16 || !flat) {
        use crate::simd::depthwise3_avx512 as kernel;
        // SAFETY: `avx512` found AVX-512F (and AVX2 and FMA) on this CPU, and `g` fits
        // with the stride and row vectors each call names.
        #[allow(unsafe_code)]
        unsafe {
            match (g.stride_w, g.ow.div_ceil(16)) {
                (1, 1) => kernel::<1, 1>(x, w, bias, out, g, epi),
                (1, 2) => kernel::<1, 2>(x, w, bias, out, g, epi),
                (1, 3) => kernel::<1, 3>(x, w, bias, out, g, epi),
                (1, 4) => kernel::<1, 4>(x, w, bias, out, g, epi),
                (1, 5) => kernel::<1, 5>(x, w, bias, out, g, epi),
                (1, 6) => kernel::<1, 6>(x, w, bias, out, g, epi),
                (1, 7) => kernel::<1, 7>(x, w, bias, out, g, epi),
                (1, _) => kernel::<1, 8>(x, w, bias, out, g, epi),
                (_, 1) => kernel::<2, 1>(x, w, bias, out, g, epi),
                (_, 2) => kernel::<2, 2>(x, w, bias, out, g, epi),
                (_, 3) => kernel::<2, 3>(x, w, bias, out, g, epi),
                (_, 4) => kernel::<2, 4>(x, w, bias, out, g, epi),
                (_, 5) => kernel::<2, 5>(x, w, bias, out, g, epi),
                (_, 6) => kernel::<2, 6>(x, w, bias, out, g, epi),
                (_, 7) => kernel::<2, 7>(x, w, bias, out, g, epi),
                _ => kernel::<2, 8>(x, w, bias, out, g, epi),
            }
        };
        return;
    }
    if flat {
        use crate::simd::depthwise_flat_avx512 as kernel;
        // SAFETY: `avx512` found AVX-512F (and AVX2 and FMA) on this CPU, and `g` fits
        // with the kernel size each call names.
        #[allow(unsafe_code)]
        unsafe {
            match g.kh {
                3 => kernel::<3, 3>(x, w, bias, out, g, epi),
                5 => kernel::<5, 5>(x, w, bias, out, g, epi),
                _ => kernel::<7, 7>(x, w, bias, out, g, epi),
            }
        };
        return;
    }
    if crate::simd::avx512() && crate::simd::depthwise_avx512_fits(g) {
        use crate::simd::depthwise_conv2d_avx512 as kernel;
        // SAFETY: `avx512` found AVX-512F (and AVX2 and FMA) on this CPU, and `g` fits
        // with the kernel size and stride each call names.
        #[allow(unsafe_code)]
        unsafe {
            match (g.kh, g.stride_w) {
                (3, 1) => kernel::<3, 3, 1>(x, w, bias, out, g, epi),
                (3, _) => kernel::<3, 3, 2>(x, w, bias, out, g, epi),
                (5, 1) => kernel::<5, 5, 1>(x, w, bias, out, g, epi),
                (5, _) => kernel::<5, 5, 2>(x, w, bias, out, g, epi),
                (_, 1) => kernel::<7, 7, 1>(x, w, bias, out, g, epi),
                _ => kernel::<7, 7, 2>(x, w, bias, out, g, epi),
            }
        };
        return;
    }
    // SAFETY: the caller checked `avx2_fma` (AVX2 and FMA).
    #[allow(unsafe_code)]
    unsafe {
        crate::simd::depthwise_conv2d_avx2(x, w, bias, out, g, epi)
    };
}

/// A depthwise convolution with its channels split over `threads` threads, each running
/// the epilogue on its own channels' rows (while they are in its cache; each row's
/// epilogue still runs once, so the values are those of one thread).
#[allow(clippy::too_many_arguments)]
fn depthwise_threaded(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    g: &Conv2dGeom,
    simd: bool,
    threads: usize,
    epi: &(impl Fn(usize, &mut [f32]) + Sync),
) {
    let (plane, in_plane, taps) = (g.oh * g.ow, g.h * g.w, g.kh * g.kw);
    let per_chunk = g.c_out.div_ceil(threads);
    for n in 0..g.n {
        let on = &mut out[n * g.c_out * plane..(n + 1) * g.c_out * plane];
        crate::threads::for_each_chunk(on, per_chunk * plane, |i, oc| {
            let (c0, count) = (i * per_chunk, oc.len() / plane);
            let sub = Conv2dGeom {
                n: 1,
                c_in: count,
                c_out: count,
                groups: count,
                ..*g
            };
            let xs = &x[(n * g.c_in + c0) * in_plane..(n * g.c_in + c0 + count) * in_plane];
            let ws = &w[c0 * taps..(c0 + count) * taps];
            let bs = bias.map(|b| &b[c0..c0 + count]);
            let first = (n * g.c_out + c0) * plane;
            let epi = |base: usize, row: &mut [f32]| epi(first + base, row);
            #[cfg(target_arch = "x86_64")]
            if simd {
                depthwise_simd(xs, ws, bs, oc, &sub, &epi);
                return;
            }
            let _ = simd;
            depthwise_rows(xs, ws, bs, oc, &sub, &epi, false);
        });
    }
}

/// True when the direct register-tiled convolution (`simd::conv2d_avx2`) beats the
/// implicit GEMM on `g` (measured per shape class: BENCHMARKS.md, "Convolution paths").
/// With the AVX-512 tile and patches packed from input bands the GEMM wins from 16 output
/// channels (unet_small, whose convolutions have 16 and 32: fastest calls 20.0 -> 16.8
/// ms); below that its tiles run mostly empty and every panel is packed (LeNet's first
/// convolution, 6 channels: the model 20.5 -> 19.7 us); on AVX2 alone the direct tiles
/// keep the shapes they won before the bands.
#[cfg(target_arch = "x86_64")]
fn conv2d_direct_wins(g: &Conv2dGeom) -> bool {
    if crate::simd::avx512() && g.c_out / g.groups >= 16 {
        return false;
    }
    // the GEMM packs each patch panel once for all output channels: with few channels
    // the packing costs as much as the products
    let few_channels = g.c_out / g.groups < 48;
    // rows of 17 to 31 columns waste part of the GEMM's last panel
    let ragged_rows = !g.ow.is_multiple_of(PANEL) && g.ow < 2 * PANEL;
    crate::simd::conv2d_avx2_fits(g) && g.kh * g.kw > 1 && (few_channels || ragged_rows)
}

/// Columns of one packed panel of the implicit GEMM: the register tile's width.
const PANEL: usize = crate::simd::GEMM_NR;
/// Rows of the register tile.
const TILE_ROWS: usize = crate::simd::GEMM_MR;
/// Multiply-adds below which a kernel does not split its work over threads (the hand-off
/// costs a few microseconds).
const PARALLEL_MIN_MACS: usize = 1 << 20;
/// [`PARALLEL_MIN_MACS`] for a matrix-vector product (a classifier), which reads each
/// weight once: resnet18's 512 -> 1000 (0.5 M) took 0.11-0.16 ms on one thread.
#[cfg(any(target_arch = "x86_64", feature = "threads"))]
const MATVEC_PARALLEL_MIN_MACS: usize = 1 << 18;
/// [`PARALLEL_MIN_MACS`] for depthwise convolutions, whose multiply-adds run several
/// times slower than a GEMM's: mobilenet_v2's on 14x14 and 7x7 maps (0.25-1 M) ran on one
/// thread while the other waited.
const DEPTHWISE_PARALLEL_MIN_MACS: usize = 1 << 17;
/// Outputs below which an epilogue does not split its rows over threads.
const PARALLEL_MIN_FLOATS: usize = 1 << 15;

/// Depth of one packed panel (`PANEL * PANEL_DEPTH` floats: 24 KiB on desktop CPUs, which
/// stay in L1; 2 KiB where stacks are small). 384 rather than 256: a 384-deep product
/// (bert6's projections) in one block, not two (each tile's set-up and store, and the
/// second block's reading back, spread over more steps): bert6 2.5% and resnet18 1-3%
/// faster, the others unchanged; 512 measured no faster.
const PANEL_DEPTH: usize = stack_floats(384, 32);

/// [`conv2d`] as an implicit GEMM, for any geometry: per image and group, output
/// `[c_out / groups, oh * ow]` = weight `[c_out / groups, k]` x patches `[k, oh * ow]` with
/// `k = c_in / groups * kh * kw`. The patches are never stored whole: for each panel of
/// [`PANEL`] output pixels, [`PANEL_DEPTH`] rows at a time are packed into a stack buffer
/// (from an input band, [`gemm_banded`], or, when no band fits, gathered from the input
/// itself, [`pack_patches`]; zero padding, stride and dilation applied), and every block
/// of output channels runs a register tile over it (`simd::gemm_tile_avx512` or
/// `simd::gemm_tile_avx2` when `simd`, else their portable twin). A 1x1 convolution with
/// unit stride and no padding reads its input in place. With threads, output channels
/// split in whole tiles, or output pixels when there are too few channels. The row
/// epilogue runs once each output plane of the group is complete. Out of line, so that
/// its buffers are on the stack only while it runs.
fn conv2d_gemm(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    g: &Conv2dGeom,
    epi: &(impl Fn(usize, &mut [f32]) + Sync),
    simd: bool,
) {
    conv2d_gemm_with(x, w, false, bias, out, g, epi, simd);
}

/// [`conv2d_gemm`] on row-major weights, or (`tiled`) on weights laid out by
/// [`tile_conv2d_weights`].
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn conv2d_gemm_with(
    x: &[f32],
    w: &[f32],
    tiled: bool,
    bias: Option<&[f32]>,
    out: &mut [f32],
    g: &Conv2dGeom,
    epi: &(impl Fn(usize, &mut [f32]) + Sync),
    simd: bool,
) {
    let (cin_g, cout_g) = (g.c_in / g.groups, g.c_out / g.groups);
    let depth = cin_g * g.kh * g.kw;
    let pixels = g.oh * g.ow;
    let in_plane = g.h * g.w;
    if pixels == 0 || cout_g == 0 {
        return;
    }
    // a 1x1 convolution with unit stride and no padding multiplies by the input itself:
    // its full panels read the input planes in place (row `ic`, pitch `pixels`)
    let pointwise = g.kh == 1
        && g.kw == 1
        && g.stride_h == 1
        && g.stride_w == 1
        && g.pad_top == 0
        && g.pad_left == 0
        && g.oh == g.h
        && g.ow == g.w;
    // output channels split over the threads (`threads::with_threads`), in whole tiles,
    // each part running the epilogue on its own rows
    let threads = crate::threads::current();
    let worth_splitting = cout_g * depth * pixels >= PARALLEL_MIN_MACS;
    // (tiled weights split at their tiles' edges)
    let step = if tiled { WEIGHT_TILE_ROWS } else { TILE_ROWS };
    let chunk_rows = if threads > 1 && worth_splitting {
        cout_g.div_ceil(threads).div_ceil(step) * step
    } else {
        cout_g
    };
    let banded = BandPlan::new(g);
    // large pointwise maps of one block along k: channels outermost
    let channels_outer = pointwise && depth <= PANEL_DEPTH && pixels >= POINTWISE_MIN_PIXELS;
    for n in 0..g.n {
        for grp in 0..g.groups {
            let wg = &w[grp * cout_g * depth..(grp + 1) * cout_g * depth];
            let wg = Lhs::weights(wg, depth, cout_g, tiled);
            let xg = &x[(n * g.c_in + grp * cin_g) * in_plane
                ..(n * g.c_in + (grp + 1) * cin_g) * in_plane];
            let first = n * g.c_out + grp * cout_g;
            let og = &mut out[first * pixels..(first + cout_g) * pixels];
            let bg = bias.map(|b| &b[grp * cout_g..(grp + 1) * cout_g]);
            // too few output channels to split in whole tiles: split the pixels
            #[cfg(feature = "threads")]
            if let (Some(plan), false) = (&banded, pointwise) {
                if threads > 1 && worth_splitting && cout_g < 2 * threads * MAX_TILE_ROWS {
                    let sums = (og, first * pixels);
                    gemm_banded_split(xg, g, plan, (wg, depth), bg, sums, simd, epi);
                    continue;
                }
            }
            // as few in a large 1x1 convolution: split the rows of pixels
            #[cfg(feature = "threads")]
            if channels_outer && threads > 1 && worth_splitting && cout_g < 2 * threads * step {
                pointwise_split(simd, (wg, depth), bg, xg, g, og, first * pixels, epi);
                continue;
            }
            crate::threads::for_each_chunk(og, chunk_rows * pixels, |i, oc| {
                let m0 = i * chunk_rows;
                let rows = oc.len() / pixels;
                let a = wg.skip_rows(m0);
                let bias = bg.map(|b| &b[m0..m0 + rows]);
                // 1x1 convolutions on small maps, and deep ones on maps a little larger
                // (14x14), by channels on AVX-512
                #[cfg(target_arch = "x86_64")]
                if pointwise
                    && (pixels <= SMALL_MAP_PIXELS
                        || (pixels <= CHANNELS_MAX_PIXELS && depth >= CHANNELS_MIN_DEPTH))
                    && Isa::of(simd) == Isa::Avx512
                    && small_map_channels((a, depth), bias, xg, pixels, oc)
                {
                    each_row_on(simd, oc, g.ow, (first + m0) * pixels, epi);
                    return;
                }
                if pixels <= SMALL_MAP_PIXELS {
                    let base = (first + m0) * pixels;
                    small_map_gemm(simd, (a, depth), bias, xg, g, pointwise, oc);
                    each_row_on(simd, oc, g.ow, base, epi);
                    return;
                }
                if let (Some(plan), false) = (&banded, pointwise) {
                    gemm_banded(
                        xg,
                        g,
                        plan,
                        (a, depth),
                        bias,
                        (0, pixels),
                        (oc, pixels),
                        simd,
                    );
                    each_row_on(simd, oc, g.ow, (first + m0) * pixels, epi);
                    return;
                }
                if channels_outer {
                    let base = (first + m0) * pixels;
                    let whole = (0, pixels);
                    pointwise_rows(
                        simd,
                        (a, depth),
                        bias,
                        xg,
                        g,
                        whole,
                        (oc, pixels),
                        base,
                        epi,
                    );
                    return;
                }
                let mut panel = [0.0f32; PANEL * PANEL_DEPTH];
                for p0 in (0..pixels).step_by(PANEL) {
                    let cols = PANEL.min(pixels - p0);
                    for k0 in (0..depth).step_by(PANEL_DEPTH) {
                        let kc = PANEL_DEPTH.min(depth - k0);
                        let in_place = pointwise && cols == PANEL;
                        let (b, ldb): (&[f32], usize) = if in_place {
                            (&xg[k0 * pixels + p0..], pixels)
                        } else {
                            pack_patches(xg, g, p0, cols, k0, kc, &mut panel);
                            (&panel, PANEL)
                        };
                        let start = Start::of(k0, bias);
                        let c = &mut oc[p0..];
                        tile_panel(
                            simd,
                            (rows, kc, cols),
                            a.skip_columns(k0),
                            (b, ldb),
                            (c, pixels),
                            start,
                        );
                    }
                }
                each_row_on(simd, oc, g.ow, (first + m0) * pixels, epi);
            });
        }
    }
}

/// Output pixels of the largest map [`small_map_gemm`] runs (7x7 and 8x8; four panels).
const SMALL_MAP_PIXELS: usize = stack_floats(4 * PANEL, PANEL);

/// The implicit GEMM of [`conv2d_gemm_with`] on a map of at most [`SMALL_MAP_PIXELS`]
/// pixels, into `out` (`[rows, pixels]`, the rows of `a`): per block of [`PANEL_DEPTH`]
/// along k, all of the map's panels packed (or read in place) first, then each register
/// tile of weights against every panel, so that a block of weights is read once per
/// block of k instead of once per panel (on mobilenet_v2's 7x7 maps, whose 0.6-1.6 MB
/// weights do not stay in L2, the panel-outer order read them four times from L3), and
/// the next tile's block is asked for while a tile runs. Every convolution on such a map
/// runs here, whatever its kernel: resnet18's 3x3 512@7 layers, which went through
/// [`gemm_banded`]'s panel-outer loops, read their 9.4 MB of weights from memory there
/// at 96 GFLOP/s on a Zen 5 core (`conv_classes`, "cold"), here at 148. The same sums in
/// the same order as the panel-outer loops. (On AVX-512 a 1x1 convolution read in place
/// whose rows are all in interleaved tiles runs by channels before it gets here:
/// [`small_map_channels`].)
fn small_map_gemm(
    simd: bool,
    (a, depth): (Lhs<'_>, usize),
    bias: Option<&[f32]>,
    x: &[f32],
    g: &Conv2dGeom,
    pointwise: bool,
    out: &mut [f32],
) {
    let pixels = g.oh * g.ow;
    let rows = out.len() / pixels;
    debug_assert!(pixels <= SMALL_MAP_PIXELS);
    let mut panels = [[0.0f32; PANEL * PANEL_DEPTH]; SMALL_MAP_PIXELS / PANEL];
    for k0 in (0..depth).step_by(PANEL_DEPTH) {
        let kc = PANEL_DEPTH.min(depth - k0);
        for (j, p0) in (0..pixels).step_by(PANEL).enumerate() {
            let cols = PANEL.min(pixels - p0);
            if !(pointwise && cols == PANEL) {
                pack_patches(x, g, p0, cols, k0, kc, &mut panels[j]);
            }
        }
        let ak = a.skip_columns(k0);
        let count = pixels.div_ceil(PANEL);
        for m0 in (0..rows).step_by(MAX_TILE_ROWS) {
            let mr = MAX_TILE_ROWS.min(rows - m0);
            let am = ak.skip_rows(m0);
            let start = Start::of(k0, bias.map(|b| &b[m0..m0 + mr]));
            // the next tile's block of weights asked for while this one runs, a share
            // per panel
            let next = ak.tile_block(m0 + MAX_TILE_ROWS, kc).unwrap_or(&[]);
            let mut ahead = next.chunks(next.len().div_ceil(count).max(1));
            for (j, p0) in (0..pixels).step_by(PANEL).enumerate() {
                let cols = PANEL.min(pixels - p0);
                let (b, ldb): (&[f32], usize) = if pointwise && cols == PANEL {
                    (&x[k0 * pixels + p0..], pixels)
                } else {
                    (&panels[j], PANEL)
                };
                let c = (&mut out[m0 * pixels + p0..], pixels);
                let lines = ahead.next().unwrap_or(&[]);
                tile_panel_ahead(simd, (mr, kc, cols), am, (b, ldb), c, start, lines);
            }
        }
    }
}

/// Pixels up to which a deep 1x1 convolution runs by channels ([`small_map_channels`])
/// past [`SMALL_MAP_PIXELS`] (a 14x14 map: mobilenet_v2's projections 576 -> 96 0.117-0.127
/// -> 0.097-0.099 ms, 384 -> 96 0.075-0.079 -> 0.065-0.067, 384 -> 64 0.050-0.055 ->
/// 0.046-0.048, inside the model, three rounds alternated).
#[cfg(target_arch = "x86_64")]
const CHANNELS_MAX_PIXELS: usize = 256;

/// Input channels from which a 1x1 convolution on a map of at most
/// [`CHANNELS_MAX_PIXELS`] runs by channels: fewer do not pay for its transposed stores
/// (96 -> 576@14 192 -> 158 GFLOP/s).
#[cfg(target_arch = "x86_64")]
const CHANNELS_MIN_DEPTH: usize = 256;

/// Tiles of weights (16 output channels each) [`small_map_channels`] runs at once.
#[cfg(target_arch = "x86_64")]
const CHANNEL_TILES: usize = 4;

/// Pixels [`small_map_channels`] runs at once (a 7x7 map in seven groups).
#[cfg(target_arch = "x86_64")]
const CHANNEL_PIXELS: usize = 7;

/// The implicit GEMM of [`conv2d_gemm_with`] for a 1x1 convolution read in place on
/// AVX-512 on a map of at most [`SMALL_MAP_PIXELS`] (or [`CHANNELS_MAX_PIXELS`] with
/// [`CHANNELS_MIN_DEPTH`] input channels), every row in whole interleaved tiles: by channels, [`CHANNEL_TILES`] tiles against [`CHANNEL_PIXELS`]
/// pixels at a time over the whole depth (`simd::gemm_channels_avx512`), the same sums
/// bit for bit. A 16-column panel leaves 1 of a 7x7 map's 49 pixels to a last panel that
/// takes half a panel's time (its sums one chain), and spends 17 loads on 16
/// multiply-adds: mobilenet_v2's 1x1 960 -> 320 at 7x7 162-171 -> 201-205 GFLOP/s, 320
/// -> 1280 164-173 -> 182-188 (`conv_classes`, tiled weights, three runs alternated); the
/// model 5.11-5.14 -> 4.74-4.94 ms. False (nothing done) when some rows are not tiled.
#[cfg(target_arch = "x86_64")]
fn small_map_channels(
    (a, depth): (Lhs<'_>, usize),
    bias: Option<&[f32]>,
    x: &[f32],
    pixels: usize,
    out: &mut [f32],
) -> bool {
    let rows = out.len() / pixels;
    let tiles = rows / WEIGHT_TILE_ROWS;
    match a {
        Lhs::Tiled(t) if t.tiled >= rows && t.k0 == 0 && tiles > 0 => {}
        _ => return false,
    }
    let zeros = [0.0f32; CHANNEL_TILES * WEIGHT_TILE_ROWS];
    let mut t0 = 0;
    while t0 < tiles {
        let count = match tiles - t0 {
            1 => 1,
            2 | 3 => 2,
            _ => CHANNEL_TILES,
        };
        let m0 = t0 * WEIGHT_TILE_ROWS;
        let start = bias.map_or(&zeros[..], |b| &b[m0..]);
        let tile = |i: usize| {
            a.tile_block(m0 + i * WEIGHT_TILE_ROWS, depth)
                .unwrap_or(&[])
        };
        // the next tiles (contiguous) asked for while these run, a share per call
        let next_count = (tiles - t0 - count).min(CHANNEL_TILES);
        let next_m0 = m0 + count * WEIGHT_TILE_ROWS;
        let next = a.tile_block(next_m0, depth * next_count).unwrap_or(&[]);
        let calls = pixels.div_ceil(CHANNEL_PIXELS);
        let mut ahead = next.chunks(next.len().div_ceil(calls).max(1));
        for p0 in (0..pixels).step_by(CHANNEL_PIXELS) {
            let cols = CHANNEL_PIXELS.min(pixels - p0);
            let (b, c) = ((&x[p0..], pixels), (&mut out[m0 * pixels + p0..], pixels));
            let lines = ahead.next().unwrap_or(&[]);
            let run = (cols, depth, lines);
            match count {
                1 => channels_run([tile(0)], run, b, start, c),
                2 => channels_run([tile(0), tile(1)], run, b, start, c),
                _ => channels_run([tile(0), tile(1), tile(2), tile(3)], run, b, start, c),
            }
        }
        t0 += count;
    }
    true
}

/// One call of `simd::gemm_channels_avx512` on `cols` (1 to [`CHANNEL_PIXELS`]) pixels,
/// asking for `ahead` meanwhile.
#[cfg(target_arch = "x86_64")]
fn channels_run<const T: usize>(
    tiles: [&[f32]; T],
    (cols, depth, ahead): (usize, usize, &[f32]),
    b: (&[f32], usize),
    start: &[f32],
    c: (&mut [f32], usize),
) {
    use crate::simd::gemm_channels_avx512 as kernel;
    let steps = (depth, PANEL_DEPTH);
    // SAFETY: callers run this only where `avx512` found AVX-512F (and AVX2 and FMA) on
    // this CPU; the kernel checks the slices
    #[allow(unsafe_code)]
    unsafe {
        match cols {
            1 => kernel::<T, 1>(steps, tiles, b, start, c, ahead),
            2 => kernel::<T, 2>(steps, tiles, b, start, c, ahead),
            3 => kernel::<T, 3>(steps, tiles, b, start, c, ahead),
            4 => kernel::<T, 4>(steps, tiles, b, start, c, ahead),
            5 => kernel::<T, 5>(steps, tiles, b, start, c, ahead),
            6 => kernel::<T, 6>(steps, tiles, b, start, c, ahead),
            _ => kernel::<T, CHANNEL_PIXELS>(steps, tiles, b, start, c, ahead),
        }
    }
}

/// Pixels of the smallest map [`pointwise_rows`] runs (conv_classes, alternating: on
/// mobilenet_v2's 112x112 and 56x56 maps it takes 0.3-0.8x the time of pixels outermost,
/// on 28x28 and 14x14 maps 1.2-1.6x).
const POINTWISE_MIN_PIXELS: usize = 2048;

/// Output pixels [`pointwise_rows`] computes for a block of channels before it runs the
/// epilogue on them (whole output rows, about this many).
const POINTWISE_CHUNK: usize = 1024;

/// A 1x1 convolution of unit stride, no padding and at most [`PANEL_DEPTH`] input
/// channels (one block along k), as [`conv2d_gemm_with`] runs it: the pixels in chunks
/// of whole output rows, and per chunk each block of [`MAX_TILE_ROWS`] output channels
/// (the chunk's input read from cache by all blocks: 4% faster than blocks outermost on
/// 16 -> 96 at 112x112, `conv_classes`); each chunk's panels read the input planes in
/// place (the tail panel packed), and the epilogue runs on the chunk while it is in
/// cache. A strip of tiles along each channel block: each register tile writes one line
/// of 16 channel planes at a time, so stores and loads run along the planes in 16 +
/// `depth` streams, where a panel's tiles over all `rows` planes wrote lines whose
/// addresses share a few cache sets when the plane is a multiple of 1 KiB (mobilenet_v2's
/// 1x1 16->96 on 112x112: 2.1-14 ms before).
///
/// Only output pixels `lo..hi` (whole output rows) are computed, into `out` (`[rows,
/// ldc]`, pixel `lo` in column 0), the epilogue told their places in the whole output
/// (from `base`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn pointwise_rows(
    simd: bool,
    (a, depth): (Lhs<'_>, usize),
    bias: Option<&[f32]>,
    x: &[f32],
    g: &Conv2dGeom,
    (lo, hi): (usize, usize),
    (out, ldc): (&mut [f32], usize),
    base: usize,
    epi: &(impl Fn(usize, &mut [f32]) + Sync),
) {
    let pixels = g.oh * g.ow;
    let rows = out.len() / ldc;
    // chunks of whole output rows that are whole panels too, where the map allows
    let unit = g.ow / gcd(g.ow, PANEL) * PANEL;
    let chunk = if unit >= hi - lo {
        hi - lo
    } else {
        unit * (POINTWISE_CHUNK / unit).max(1)
    };
    let mut panel = [0.0f32; PANEL * PANEL_DEPTH];
    for c0 in (lo..hi).step_by(chunk) {
        let c1 = (c0 + chunk).min(hi);
        for m0 in (0..rows).step_by(MAX_TILE_ROWS) {
            let mr = MAX_TILE_ROWS.min(rows - m0);
            let am = a.skip_rows(m0);
            let start = Start::of(0, bias.map(|b| &b[m0..m0 + mr]));
            // the whole panels read the input planes in place, the tail panel packed
            let whole = (c1 - c0) / PANEL * PANEL;
            let c = &mut out[m0 * ldc + c0 - lo..];
            tile_strip(
                simd,
                (mr, depth, whole),
                am,
                (&x[c0..], pixels),
                (c, ldc),
                start,
            );
            if whole < c1 - c0 {
                let (p0, cols) = (c0 + whole, c1 - c0 - whole);
                pack_patches(x, g, p0, cols, 0, depth, &mut panel);
                let c = &mut out[m0 * ldc + p0 - lo..];
                tile_panel(
                    simd,
                    (mr, depth, cols),
                    am,
                    (&panel, PANEL),
                    (c, ldc),
                    start,
                );
            }
            for r in m0..m0 + mr {
                let row = &mut out[r * ldc + c0 - lo..r * ldc + c1 - lo];
                each_row_on(simd, row, g.ow, base + r * pixels + c0, epi);
            }
        }
    }
}

/// [`pointwise_rows`] for all output channels of a group (too few to split in whole
/// tiles) with the output rows split over the threads: each thread computes its pixels
/// of every channel, epilogue included, band by band ([`split_by_pixel_bands`]) into a
/// buffer of its own and copies each band into `out` (`[channels, oh * ow]`, whose
/// first float is at `base` in the whole output).
#[cfg(feature = "threads")]
#[allow(clippy::too_many_arguments)]
fn pointwise_split(
    simd: bool,
    (a, depth): (Lhs<'_>, usize),
    bias: Option<&[f32]>,
    x: &[f32],
    g: &Conv2dGeom,
    out: &mut [f32],
    base: usize,
    epi: &(impl Fn(usize, &mut [f32]) + Sync),
) {
    split_by_pixel_bands(g, out, |(lo, hi), sums| {
        let sums = (sums, hi - lo);
        pointwise_rows(simd, (a, depth), bias, x, g, (lo, hi), sums, base, epi);
    });
}

/// A split by pixels: the output rows of `g` over the threads in whole rows, each
/// thread's part in bands of whole rows ([`split_band`]). `fill((lo, hi), sums)` writes
/// pixels `lo..hi` of every channel of `out` (`[channels, oh * ow]`) into `sums`
/// (`[channels, hi - lo]`, a buffer of the thread's own: [`crate::threads::with_scratch`]),
/// which is then copied into `out`.
#[cfg(feature = "threads")]
fn split_by_pixel_bands(
    g: &Conv2dGeom,
    out: &mut [f32],
    fill: impl Fn((usize, usize), &mut [f32]) + Sync,
) {
    let pixels = g.oh * g.ow;
    let channels = out.len() / pixels;
    let threads = crate::threads::current().clamp(1, g.oh);
    // whole output rows, so that each part runs the row epilogue on its own pixels
    let per_part = g.oh.div_ceil(threads) * g.ow;
    let band = split_band(g, channels);
    let out = SplitOutput::new(out);
    crate::threads::for_each_part(pixels.div_ceil(per_part), |i| {
        let (first, last) = (i * per_part, pixels.min((i + 1) * per_part));
        for lo in (first..last).step_by(band) {
            let hi = last.min(lo + band);
            crate::threads::with_scratch(channels * (hi - lo), |sums| {
                fill((lo, hi), sums);
                for (c, sums) in sums.chunks_exact(hi - lo).enumerate() {
                    // SAFETY: part `i` alone writes pixels `first..last` of each channel
                    #[allow(unsafe_code)]
                    let dst = unsafe { out.range(c * pixels + lo, hi - lo) };
                    dst.copy_from_slice(sums);
                }
            });
        }
    });
}

/// Floats of the buffer one band of a split by pixels fills before its copy into the
/// output (128 KiB: the copy then reads it from L2; a thread's whole part, 800 KB for a
/// 224x224 stem, came back from L3). mobilenet_v2 on two threads, fast mode: the stem
/// 0.266 -> 0.250 and 0.373 -> 0.306 ms in two alternated runs, the 1x1 32 -> 16 at
/// 112x112 0.097 -> 0.094 and 0.140 -> 0.114 (BENCHMARKS.md, twenty-ninth session).
#[cfg(feature = "threads")]
const SPLIT_BAND_FLOATS: usize = 32768;

/// Pixels of one band of a split by pixels over `channels` output channels: whole output
/// rows, as many as [`SPLIT_BAND_FLOATS`] hold (at least one).
#[cfg(feature = "threads")]
fn split_band(g: &Conv2dGeom, channels: usize) -> usize {
    let rows = SPLIT_BAND_FLOATS / (channels * g.ow).max(1);
    rows.max(1) * g.ow
}

/// Greatest common divisor.
const fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Where the sums of a register tile start.
#[derive(Clone, Copy)]
enum Start<'a> {
    /// from zero
    Zero,
    /// from one value per row (a bias)
    Bias(&'a [f32]),
    /// from what `c` holds (a later block along `k`)
    Accumulate,
}

impl<'a> Start<'a> {
    /// The start of a block of sums whose depth begins at `k0`: the bias (or zero) for the
    /// first block along `k`, what `c` holds for later ones.
    fn of(k0: usize, bias: Option<&'a [f32]>) -> Start<'a> {
        match (k0, bias) {
            (0, Some(b)) => Start::Bias(b),
            (0, None) => Start::Zero,
            _ => Start::Accumulate,
        }
    }

    /// What a register tile of rows `m0..m0 + rows` starts from: its values, or `None`
    /// for what `c` holds.
    #[inline(always)]
    fn rows(self, m0: usize, rows: usize) -> Option<&'a [f32]> {
        match self {
            Start::Zero => Some(&ZEROS[..rows]),
            Start::Bias(v) => Some(&v[m0..m0 + rows]),
            Start::Accumulate => None,
        }
    }
}

/// Rows of one tile of convolution weights laid out by [`tile_conv2d_weights`].
pub const WEIGHT_TILE_ROWS: usize = MAX_TILE_ROWS;

/// The left operand of [`tile_panel`], from its first row and depth on.
#[derive(Clone, Copy)]
enum Lhs<'a> {
    /// row `i`, column `k` at `a[i * row_step + k * k_step]` (a row-major matrix read in
    /// place, or a transposed one)
    Strided(&'a [f32], usize, usize),
    /// weights in interleaved tiles
    Tiled(Tiles<'a>),
}

/// Convolution weights laid out by [`tile_conv2d_weights`] (rows of `depth` floats), read
/// from column `k0` on: the first `tiled` rows in interleaved tiles of
/// [`WEIGHT_TILE_ROWS`] rows, the rest row-major after them.
#[derive(Clone, Copy)]
struct Tiles<'a> {
    w: &'a [f32],
    depth: usize,
    tiled: usize,
    k0: usize,
}

impl<'a> Lhs<'a> {
    /// Row-major weights with rows `depth` floats long (`tiled` when laid out by
    /// [`tile_conv2d_weights`]).
    fn weights(w: &'a [f32], depth: usize, rows: usize, tiled: bool) -> Lhs<'a> {
        if !tiled {
            return Lhs::Strided(w, depth, 1);
        }
        let tiled = rows / WEIGHT_TILE_ROWS * WEIGHT_TILE_ROWS;
        Lhs::Tiled(Tiles {
            w,
            depth,
            tiled,
            k0: 0,
        })
    }

    /// The operand from row `m0` on (inside the tiles, `m0` must start one).
    fn skip_rows(self, m0: usize) -> Lhs<'a> {
        match self {
            Lhs::Strided(a, row, k) => Lhs::Strided(&a[m0 * row..], row, k),
            Lhs::Tiled(t) => {
                debug_assert!(m0 >= t.tiled || m0.is_multiple_of(WEIGHT_TILE_ROWS));
                Lhs::Tiled(Tiles {
                    w: &t.w[m0 * t.depth..],
                    tiled: t.tiled.saturating_sub(m0),
                    ..t
                })
            }
        }
    }

    /// The `kc` steps of the whole interleaved tile at rows `m0..m0 + 16` (from this
    /// operand's first column), if there is one.
    fn tile_block(self, m0: usize, kc: usize) -> Option<&'a [f32]> {
        match self {
            Lhs::Tiled(t) if m0 + WEIGHT_TILE_ROWS <= t.tiled => {
                let ((w, _, _), _) = self.rows_at(m0, WEIGHT_TILE_ROWS);
                w.get(..kc * WEIGHT_TILE_ROWS)
            }
            _ => None,
        }
    }

    /// The operand from column `k` on.
    fn skip_columns(self, k: usize) -> Lhs<'a> {
        match self {
            Lhs::Strided(a, row, step) => Lhs::Strided(&a[k * step..], row, step),
            Lhs::Tiled(t) => Lhs::Tiled(Tiles { k0: t.k0 + k, ..t }),
        }
    }

    /// Rows `m0..` as `(slice, row step, column step)`, and how many of them (at most
    /// `want`) that form reaches: to the end of an interleaved tile.
    // (inlined: called out of line, its result came back through the stack and the
    // reload stalled on store forwarding, 8% of mobilenet_v2's time in `tile_panel`)
    #[inline(always)]
    fn rows_at(self, m0: usize, want: usize) -> ((&'a [f32], usize, usize), usize) {
        match self {
            Lhs::Strided(a, row, k) => ((&a[m0 * row..], row, k), want),
            Lhs::Tiled(Tiles {
                w,
                depth,
                tiled,
                k0,
            }) if m0 < tiled => {
                let (tile, within) = (m0 / WEIGHT_TILE_ROWS, m0 % WEIGHT_TILE_ROWS);
                let at = tile * WEIGHT_TILE_ROWS * depth + k0 * WEIGHT_TILE_ROWS + within;
                let reach = want.min(WEIGHT_TILE_ROWS - within);
                ((&w[at..], 1, WEIGHT_TILE_ROWS), reach)
            }
            Lhs::Tiled(Tiles { w, depth, k0, .. }) => ((&w[m0 * depth + k0..], depth, 1), want),
        }
    }
}

/// Lays out the weights of a convolution (`w`, `[c_out, c_in / groups, kh, kw]`, `groups`
/// dividing `c_out`) as [`conv2d_tiled`] reads them, in `out` (as long as `w`): per
/// group, each block of
/// [`WEIGHT_TILE_ROWS`] output channels interleaved (`tile[k * 16 + i]` is channel `i`
/// at patch row `k`), so that a register tile's broadcasts at one step along the patch
/// read one cache line; the group's last `c_out / groups % 16` channels stay row-major
/// after its tiles. Done once, at load time (the generated `prepare`).
pub fn tile_conv2d_weights(w: &[f32], out: &mut [f32], c_out: usize, groups: usize) {
    assert!(
        out.len() == w.len() && groups > 0 && c_out.is_multiple_of(groups),
        "tile_conv2d_weights: {} floats into {}, {c_out} channels in {groups} groups",
        w.len(),
        out.len()
    );
    let cout_g = c_out / groups;
    let depth = w.len() / c_out.max(1);
    let group_len = cout_g * depth;
    for (src, dst) in w
        .chunks_exact(group_len.max(1))
        .zip(out.chunks_exact_mut(group_len.max(1)))
    {
        // whole tiles on AVX-512 by 16 x 16 transposes (LeNet tiles its small weights per
        // call: an index with two divisions per float was 12% of its time)
        #[cfg(target_arch = "x86_64")]
        if crate::simd::avx512() && depth > 0 {
            let whole = cout_g / WEIGHT_TILE_ROWS * WEIGHT_TILE_ROWS * depth;
            let tile = WEIGHT_TILE_ROWS * depth;
            for (rows, out) in src[..whole]
                .chunks_exact(tile)
                .zip(dst[..whole].chunks_exact_mut(tile))
            {
                // SAFETY: `avx512` has just checked AVX-512F; the kernel checks the slices
                // and writes only floats into `out` (seen as possibly uninitialized)
                #[allow(unsafe_code)]
                unsafe {
                    let out = &mut *(core::ptr::from_mut(out) as *mut [MaybeUninit<f32>]);
                    crate::simd::pack_tile_avx512((rows, depth), depth, out)
                };
            }
            dst[whole..].copy_from_slice(&src[whole..]);
            continue;
        }
        // else a row at a time: the tile's columns step by the tile's rows
        for (row, weights) in src.chunks_exact(depth.max(1)).enumerate() {
            let at = weight_tile_index((row, 0), (cout_g, depth));
            let step = if row < cout_g / WEIGHT_TILE_ROWS * WEIGHT_TILE_ROWS {
                WEIGHT_TILE_ROWS
            } else {
                1
            };
            for (&value, slot) in weights.iter().zip(dst[at..].iter_mut().step_by(step)) {
                *slot = value;
            }
        }
    }
}

/// Where [`tile_conv2d_weights`] puts row `row`, column `k` of a `[rows, depth]` weight:
/// inside the whole tiles of [`WEIGHT_TILE_ROWS`] rows, step `k` of the row's tile holds
/// its rows side by side; the rows past the last whole tile stay row-major after them.
/// (The one statement of the layout; `winograd_weights` lays each point's matrix out
/// through it too.)
pub(crate) fn weight_tile_index((row, k): (usize, usize), (rows, depth): (usize, usize)) -> usize {
    if row < rows / WEIGHT_TILE_ROWS * WEIGHT_TILE_ROWS {
        let (tile, within) = (row / WEIGHT_TILE_ROWS, row % WEIGHT_TILE_ROWS);
        (tile * depth + k) * WEIGHT_TILE_ROWS + within
    } else {
        row * depth + k
    }
}

/// [`conv2d`] on weights laid out by [`tile_conv2d_weights`] (depthwise convolutions
/// excepted: they must use [`conv2d`]): always the implicit GEMM, whose AVX-512 tiles then
/// read each step's sixteen weights from one cache line (the row-major weights need
/// sixteen row pointers, more than the general registers). The same sums in the same
/// order as [`conv2d`]'s GEMM.
pub fn conv2d_tiled(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    g: &Conv2dGeom,
    epi: impl Fn(usize, &mut [f32]) + Sync,
) {
    assert!(
        !(g.c_in == g.groups && g.c_out == g.groups),
        "conv2d_tiled: a depthwise convolution's weights are not tiled"
    );
    let simd = crate::simd::avx2_fma();
    conv2d_gemm_with(x, w, true, bias, out, g, &epi, simd);
}

/// One panel of a matrix product: `c[i, j] = start_i + sum over k < kc of a[i, k] *
/// b[k, j]` for `i < m`, `j < cols` (at most [`PANEL`]); `a` is given as an [`Lhs`]
/// (a transposed matrix or tiled weights are read in place), `b` and `c` as `(slice,
/// row pitch)`; register tiles of [`TILE_ROWS`] rows. A panel narrower than [`PANEL`]
/// goes through a full-width buffer (its `b` must still hold [`PANEL`] readable columns:
/// a packed panel).
fn tile_panel(
    simd: bool,
    (m, kc, cols): (usize, usize, usize),
    a: Lhs<'_>,
    (b, ldb): (&[f32], usize),
    (c, ldc): (&mut [f32], usize),
    start: Start<'_>,
) {
    tile_panel_ahead(simd, (m, kc, cols), a, (b, ldb), (c, ldc), start, &[]);
}

/// [`tile_panel`] over the `cols / PANEL` whole panels of `b` side by side (read in place:
/// panel `j` at `b[PANEL * j..]`), into `c[.., PANEL * j..]`; on AVX-512 one call per row
/// of register tiles ([`crate::simd::gemm_strip_avx512`]), runs of three panels against
/// an interleaved tile by the 8 x 48 tile (`crate::simd::gemm_wide_avx512`, twice). The
/// same sums as [`tile_panel`] on each panel. With the 8 x 48 tile mobilenet_v2's 1x1
/// convolutions on 112x112 and 56x56 maps (`pointwise_rows`) ran 16 -> 96 144-149 ->
/// 197-199 GFLOP/s, 96 -> 24 169 -> 190-196, 24 -> 144 164-165 -> 210-219
/// (`conv_classes`, tiled weights, two runs alternated); the model 4.28-4.37 -> 4.10-4.24
/// ms (three rounds alternated).
fn tile_strip(
    simd: bool,
    (m, kc, cols): (usize, usize, usize),
    a: Lhs<'_>,
    (b, ldb): (&[f32], usize),
    (c, ldc): (&mut [f32], usize),
    start: Start<'_>,
) {
    debug_assert!(cols.is_multiple_of(PANEL));
    #[cfg(target_arch = "x86_64")]
    if Isa::of(simd) == Isa::Avx512 {
        let isa = Isa::Avx512;
        let mut m0 = 0;
        while m0 < m {
            let (at, rows) = a.rows_at(m0, isa.tile_rows().min(m - m0));
            // an interleaved tile: runs of 48 columns by the 8 x 48 tile, twice
            let interleaved =
                at.1 == 1 && at.2 == WEIGHT_TILE_ROWS && rows > crate::simd::WIDE_ROWS;
            let wide = if interleaved {
                cols / WIDE_COLUMNS * WIDE_COLUMNS
            } else {
                0
            };
            for j0 in (0..wide).step_by(WIDE_COLUMNS) {
                let b3 = core::array::from_fn(|j| &b[j0 + j * PANEL..]);
                let c = (&mut c[m0 * ldc + j0..], ldc, rows);
                let a = (at.0, 0);
                wide_rows(kc, a, (b3, ldb), c, (start, m0), &mut core::iter::empty());
            }
            let init = start.rows(m0, rows);
            let (b, c, cols) = (&b[wide..], &mut c[wide..], cols - wide);
            if cols == 0 {
                m0 += rows;
                continue;
            }
            let tiles = (&mut c[m0 * ldc..], ldc, cols);
            // SAFETY: `Isa::Avx512` is chosen only when `avx512` found AVX-512F (and AVX2
            // and FMA) on this CPU; the kernel checks the slices.
            #[allow(unsafe_code)]
            unsafe {
                crate::simd::gemm_strip_avx512(kc, at, rows, (b, ldb), tiles, init)
            };
            m0 += rows;
        }
        return;
    }
    for p0 in (0..cols).step_by(PANEL) {
        let (b, c) = (&b[p0..], &mut c[p0..]);
        tile_panel(simd, (m, kc, PANEL), a, (b, ldb), (c, ldc), start);
    }
}

/// Floats of a packed `b` from which [`gemm_panels`] asks the cache for each next panel
/// ahead ([`tile_panel_ahead`]): half of a desktop core's L2. A smaller `b` stays in
/// cache between calls, and there the prefetches cost bert_tiny 1%.
const PREFETCH_MIN_FLOATS: usize = 128 * 1024;

/// [`tile_panel`] asking the cache for `ahead` (the next panel of a packed `b`) while it
/// runs, a share of its cache lines during each register tile (spread over the AVX-512
/// tile's steps, before the others), into L2 (into L1 they evicted the panel and tiles
/// in use): weights packed at load are read once per product, from memory when the
/// model's weights outgrow the caches (bert6's 42 MB, resnet18's 47 MB), where a tile
/// that waited for each line ran 8-10% slower; 4% slower with the prefetches
/// (`conv_classes`, "cold weights").
fn tile_panel_ahead(
    simd: bool,
    (m, kc, cols): (usize, usize, usize),
    a: Lhs<'_>,
    (b, ldb): (&[f32], usize),
    (c, ldc): (&mut [f32], usize),
    start: Start<'_>,
    ahead: &[f32],
) {
    let isa = Isa::of(simd);
    let tile_rows = isa.tile_rows();
    let share = ahead.len().div_ceil(m.div_ceil(tile_rows).max(1));
    let mut ahead = ahead.chunks(share.max(1));
    let mut m0 = 0;
    while m0 < m {
        let lines = ahead.next().unwrap_or(&[]);
        let (at, rows) = a.rows_at(m0, tile_rows.min(m - m0));
        let init = start.rows(m0, rows);
        if cols == PANEL {
            let tile = &mut c[m0 * ldc..];
            gemm_tile(isa, kc, at, rows, (b, ldb), (tile, ldc), init, lines);
        } else {
            crate::simd::prefetch(lines);
            edge_tile(
                isa,
                kc,
                at,
                rows,
                (b, ldb),
                (&mut c[m0 * ldc..], ldc),
                cols,
                init,
            );
        }
        m0 += rows;
    }
}

/// Zeros for the tiles whose sums start from zero (a constant: no stack array to clear
/// per call).
const ZEROS: [f32; MAX_TILE_ROWS] = [0.0; MAX_TILE_ROWS];

/// Floats of [`edge_tile`]'s buffer: the largest tile this CPU may run.
const EDGE_LEN: usize = stack_floats(MAX_TILE_ROWS * PANEL, TILE_ROWS * PANEL);

/// A register tile of [`tile_panel`] whose panel is `cols < PANEL` wide: on AVX-512 with
/// masked loads and stores of `c`, else through a full-width buffer (a function of its
/// own, so that only edge panels clear it).
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn edge_tile(
    isa: Isa,
    kc: usize,
    at: (&[f32], usize, usize),
    rows: usize,
    (b, ldb): (&[f32], usize),
    (c, ldc): (&mut [f32], usize),
    cols: usize,
    init: Option<&[f32]>,
) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: `Isa::Avx512` is chosen only when `avx512` found AVX-512F (and AVX2
        // and FMA) on this CPU; the kernel checks the slices.
        #[allow(unsafe_code)]
        unsafe {
            crate::simd::gemm_edge_tile_avx512(kc, at, rows, b, ldb, (c, ldc, cols), init)
        };
        return;
    }
    let mut edge = [0.0f32; EDGE_LEN];
    for i in 0..rows {
        let src = &c[i * ldc..i * ldc + cols];
        edge[i * PANEL..i * PANEL + cols].copy_from_slice(src);
    }
    gemm_tile(isa, kc, at, rows, (b, ldb), (&mut edge, PANEL), init, &[]);
    for i in 0..rows {
        let dst = &mut c[i * ldc..i * ldc + cols];
        dst.copy_from_slice(&edge[i * PANEL..i * PANEL + cols]);
    }
}

/// Panels of `b` up to which [`gemm`] reads `a` in place rather than packing it.
#[cfg(target_arch = "x86_64")]
const PACK_MIN_PANELS: usize = 4;

/// Rows of `a` packed at a time by [`gemm`] (a multiple of every tile's rows: 6 and 16).
const GEMM_MC: usize = stack_floats(192, TILE_ROWS);

/// `c = a @ b` for row-major `a [m, k]`, `b [k, n]`, `c [m, n]`, blocked and packed as
/// BLIS does ([`gemm_packed`]: every register tile reads both operands front to back);
/// later blocks along `k` accumulate in `c`. Without `simd`, or when `b` has at most
/// [`PACK_MIN_PANELS`] panels (each packed row of `a` would serve too few of them: the
/// products of attention heads), the tiles of [`tile_panel`] on `a` and `b` in place.
fn gemm(simd: bool, a: &[f32], b: &[f32], c: &mut [f32], (m, k, n): (usize, usize, usize)) {
    if k == 0 {
        c[..m * n].fill(0.0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if simd && n > PACK_MIN_PANELS * PANEL {
        gemm_packed(a, b, c, (m, k, n));
        return;
    }
    gemm_in_place(simd, a, b, c, (m, k, n));
}

/// [`gemm`] packed: per block along `k` and [`GEMM_MC`] rows of `a`, the rows are packed
/// once into interleaved 16-row tiles ([`pack_row_tiles`], a strided gather, the costly
/// copy), then the panels of `b` are copied into a contiguous buffer ([`pack_panel`], row
/// runs, cheap) and multiplied by every tile. On AVX-512, runs of three panels go through
/// the 8 x 48 register tile ([`crate::simd::gemm_wide_avx512`], twice per tile of rows) in
/// blocks of [`WIDE_DEPTH`] along `k` (each block's sums added to `c`, as the 16 x 16 tile
/// adds its blocks of [`PANEL_DEPTH`]); the other panels through [`tile_panel`] (16 x 16
/// on AVX-512, 6 x 16 on AVX2). With the 8 x 48 tile sgemm 512^3 ran 195-197 -> 214-224
/// GFLOP/s (84-88% of a Zen 5 core's 256), bert-384's products 128x384x384 166-197 ->
/// 210-216, 128x384x1536 161-193 -> 212-218 (`conv_classes`, alternated); blocks of 192
/// and 256 along `k` ran the same.
#[cfg(target_arch = "x86_64")]
fn gemm_packed(a: &[f32], b: &[f32], c: &mut [f32], (m, k, n): (usize, usize, usize)) {
    use crate::simd::WIDE_PANELS;
    let (depth, wide_end) = match crate::simd::avx512() {
        true => (WIDE_DEPTH, n / WIDE_COLUMNS * WIDE_COLUMNS),
        false => (PANEL_DEPTH, 0),
    };
    let mut bpack = [0.0f32; GEMM_PANELS_LEN];
    let mut apack = uninit_floats::<A_TILES_LEN>();
    for k0 in (0..k).step_by(depth) {
        let kc = depth.min(k - k0);
        let start = Start::of(k0, None);
        for i0 in (0..m).step_by(GEMM_MC) {
            let mc = GEMM_MC.min(m - i0);
            let tiles = pack_row_tiles(
                (&a[i0 * k + k0..], k),
                (mc, kc),
                WEIGHT_TILE_ROWS,
                &mut apack,
            );
            for j0 in (0..wide_end).step_by(WIDE_COLUMNS) {
                let panels = &mut bpack[..WIDE_PANELS * kc * PANEL];
                for (j, panel) in panels.chunks_exact_mut(kc * PANEL).enumerate() {
                    pack_panel((b, n), (k0, kc), j0 + j * PANEL, panel);
                }
                let mut b3 = panels.chunks_exact(kc * PANEL);
                let b3 = core::array::from_fn(|_| b3.next().unwrap_or(&[]));
                let a = (tiles, kc * WEIGHT_TILE_ROWS);
                let c = (&mut c[i0 * n + j0..], n, mc);
                wide_rows(kc, a, (b3, PANEL), c, (start, 0), &mut core::iter::empty());
            }
            let lhs = Lhs::Tiled(Tiles {
                w: tiles,
                depth: kc,
                tiled: mc.next_multiple_of(WEIGHT_TILE_ROWS),
                k0: 0,
            });
            for j0 in (wide_end..n).step_by(PANEL) {
                let cols = PANEL.min(n - j0);
                let panel = &mut bpack[..kc * PANEL];
                pack_panel((b, n), (k0, kc), j0, panel);
                let c = (&mut c[i0 * n + j0..], n);
                tile_panel(true, (mc, kc, cols), lhs, (panel, PANEL), c, start);
            }
        }
    }
}

/// Rows `0..rows` of interleaved 16-row tiles (tile `t` at `tiles[t * stride..]`) against
/// three panels of `b` (pitch `ldb`) by the 8 x 48 register tile, half a tile per call
/// (`crate::simd::gemm_wide_avx512`), into `c` (`ldc` apart); row `r` starts from
/// `start.rows(m0 + r, ..)`, and each call asks the cache for the next slice of `ahead`.
/// The caller has found AVX-512F on this CPU.
#[cfg(target_arch = "x86_64")]
fn wide_rows<'a>(
    kc: usize,
    (tiles, stride): (&[f32], usize),
    b: ([&[f32]; crate::simd::WIDE_PANELS], usize),
    (c, ldc, rows): (&mut [f32], usize, usize),
    (start, m0): (Start<'_>, usize),
    ahead: &mut impl Iterator<Item = &'a [f32]>,
) {
    use crate::simd::WIDE_ROWS;
    for r0 in (0..rows).step_by(WIDE_ROWS) {
        let (t, half) = (r0 / WEIGHT_TILE_ROWS, r0 % WEIGHT_TILE_ROWS);
        let h = WIDE_ROWS.min(rows - r0);
        let c = (&mut c[r0 * ldc..], ldc, h);
        let init = start.rows(m0 + r0, h);
        let lines = ahead.next().unwrap_or(&[]);
        // SAFETY: the caller found AVX-512F on this CPU; the kernel checks its slices
        #[allow(unsafe_code)]
        unsafe {
            crate::simd::gemm_wide_avx512(kc, &tiles[t * stride + half..], b, c, init, lines)
        };
    }
}

/// Columns of the 8 x 48 register tile.
#[cfg(target_arch = "x86_64")]
const WIDE_COLUMNS: usize = crate::simd::WIDE_PANELS * PANEL;

/// Depth of a block along `k` for the 8 x 48 register tile ([`gemm_packed`],
/// [`panels_wide`]): its three panels (24 KiB) stay in L1 while every row tile runs
/// against them.
#[cfg(target_arch = "x86_64")]
const WIDE_DEPTH: usize = 128;

/// Floats of [`gemm_packed`]'s buffer of packed panels: one of [`PANEL_DEPTH`] steps, or
/// three of [`WIDE_DEPTH`].
#[cfg(target_arch = "x86_64")]
const GEMM_PANELS_LEN: usize = {
    let (one, three) = (
        PANEL_DEPTH * PANEL,
        crate::simd::WIDE_PANELS * WIDE_DEPTH * PANEL,
    );
    if one > three {
        one
    } else {
        three
    }
};

/// Copies rows `k0..k0 + kc` of the [`PANEL`] columns of `b` (row-major, `n` wide) from
/// column `j0` into `out` (`kc` rows of [`PANEL`]), zero past column `n`.
#[cfg(target_arch = "x86_64")]
fn pack_panel((b, n): (&[f32], usize), (k0, kc): (usize, usize), j0: usize, out: &mut [f32]) {
    let cols = PANEL.min(n - j0);
    let rows = out.chunks_exact_mut(PANEL).take(kc).enumerate();
    if cols < PANEL {
        for (r, row) in rows {
            let at = (k0 + r) * n + j0;
            row[..cols].copy_from_slice(&b[at..at + cols]);
            row[cols..].fill(0.0);
        }
        return;
    }
    // whole rows: fixed-size copies (vector moves; a length known only at run time
    // became a call to memcpy per 64 bytes, 12% of sgemm's time)
    for (r, row) in rows {
        let at = (k0 + r) * n + j0;
        let src = <&[f32; PANEL]>::try_from(&b[at..at + PANEL]);
        if let (Ok(dst), Ok(src)) = (<&mut [f32; PANEL]>::try_from(row), src) {
            *dst = *src;
        }
    }
}

/// [`gemm`] with `b`'s panels read in place (the last narrower one packed with zero
/// columns) and register tiles by [`tile_panel`].
fn gemm_in_place(
    simd: bool,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    (m, k, n): (usize, usize, usize),
) {
    // the edge panel's buffer, cleared only where there is an edge (24 KiB cleared per
    // call cost the attention products of bert6, 32 columns wide, 0.3%)
    let mut edge = None;
    for j0 in (0..n).step_by(PANEL) {
        let cols = PANEL.min(n - j0);
        for k0 in (0..k).step_by(PANEL_DEPTH) {
            let kc = PANEL_DEPTH.min(k - k0);
            let (bp, ldb): (&[f32], usize) = if cols == PANEL {
                (&b[k0 * n + j0..], n)
            } else {
                let panel = edge.get_or_insert([0.0f32; PANEL * PANEL_DEPTH]);
                for r in 0..kc {
                    let row = &mut panel[r * PANEL..(r + 1) * PANEL];
                    let src = &b[(k0 + r) * n + j0..(k0 + r) * n + j0 + cols];
                    row[..cols].copy_from_slice(src);
                    row[cols..].fill(0.0);
                }
                (&panel[..], PANEL)
            };
            let start = if k0 == 0 {
                Start::Zero
            } else {
                Start::Accumulate
            };
            tile_panel(
                simd,
                (m, kc, cols),
                Lhs::Strided(&a[k0..], k, 1),
                (bp, ldb),
                (&mut c[j0..], n),
                start,
            );
        }
    }
}

/// Floats of [`conv2d_gemm`]'s input band (96 KiB on desktop CPUs, 4 KiB where stacks
/// are small).
const BAND_LEN: usize = stack_floats(24576, 1024);

/// Floats of the band buffer for convolutions whose bands are small (LeNet's): clearing
/// [`BAND_LEN`] floats would cost more than their products.
const SMALL_BAND_LEN: usize = stack_floats(4096, 1024);

/// Kernel sides (height or width) up to which a convolution can run banded.
const BAND_MAX_SIDE: usize = 16;

/// Taps (`kh * kw`) up to which a convolution can run banded.
const BAND_MAX_TAPS: usize = 64;

/// Output pixels of one band at most when the patch has several blocks along `k`: its
/// sums, for a whole chunk of output channels, are revisited once per block, so they
/// should stay in L2.
const BAND_MAX_PIXELS: usize = 16 * PANEL;

/// How [`gemm_banded`] lays out a band of the input: per input channel, one zero-padded
/// plane per stride phase `(py, px)` the kernel's taps use, `rows` by `cols`, holding the
/// padded input pixels `((oy0 + r) * stride_h + py, c * stride_w + px)`. Output pixel
/// `(oy, ox)` and tap `(ky, kx)` then read element `(oy - oy0 + qy, ox + qx)` of phase
/// `((ky * dilation_h) % stride_h, (kx * dilation_w) % stride_w)`, where `qy = ky *
/// dilation_h / stride_h` (likewise `qx`): every patch row of a run of output pixels
/// along one output row is a contiguous run of the band, whatever the stride, dilation or
/// padding.
struct BandPlan {
    /// output pixels of one band (a multiple of [`PANEL`])
    pixels: usize,
    /// rows of a phase plane: the output rows a band touches plus the taps' reach
    rows: usize,
    /// columns of a phase plane: the output width plus the taps' reach
    cols: usize,
    /// the phases along y the taps use (`(ky * dilation_h) % stride_h`), in first use
    phases_y: [usize; BAND_MAX_SIDE],
    /// how many of `phases_y` there are
    count_y: usize,
    /// the phases along x the taps use
    phases_x: [usize; BAND_MAX_SIDE],
    /// how many of `phases_x` there are
    count_x: usize,
    /// per tap `ky * kw + kx`: its offset within one input channel's planes
    tap_offset: [usize; BAND_MAX_TAPS],
    /// floats of one input channel's planes
    channel_len: usize,
    /// the band is the input where it lies, unpadded (stride 1, no padding, every row a
    /// band reads inside the input, each as wide as the input): nothing is copied, and
    /// one channel's planes are `h * w` floats apart
    in_place: bool,
    /// floats of the largest band (the most channels one block of patch rows reads)
    len: usize,
}

impl BandPlan {
    /// The plan for `g`, or `None` when its kernel is larger than the tables here or not
    /// even one panel's band fits [`BAND_LEN`] (then the patches are gathered from the
    /// input itself, [`pack_patches`]).
    fn new(g: &Conv2dGeom) -> Option<BandPlan> {
        let taps = g.kh * g.kw;
        if g.kh > BAND_MAX_SIDE || g.kw > BAND_MAX_SIDE || taps > BAND_MAX_TAPS || taps == 0 {
            return None;
        }
        let cin_g = g.c_in / g.groups;
        let (phases_y, count_y, qy_of) = Self::phases(g.kh, g.dilation_h, g.stride_h);
        let (phases_x, count_x, qx_of) = Self::phases(g.kw, g.dilation_w, g.stride_w);
        let reach_y = (g.kh - 1) * g.dilation_h / g.stride_h;
        let cols = g.ow + (g.kw - 1) * g.dilation_w / g.stride_w;
        // input channels one block of `PANEL_DEPTH` patch rows reads
        let channels = cin_g.min((PANEL_DEPTH - 1) / taps + 2);
        let per_row = channels * count_y * count_x * cols;
        let span = (BAND_LEN / per_row.max(1)).checked_sub(reach_y)?;
        let whole = g.oh * g.ow;
        let pixels = if span >= g.oh {
            whole.div_ceil(PANEL) * PANEL
        } else {
            // a band of `p <= (span - 1) * ow + 1` pixels touches at most `span` rows
            ((span.checked_sub(1)? * g.ow + 1) / PANEL) * PANEL
        }
        // (one block along `k`: the sums are never revisited, the band may be larger)
        .min(if cin_g * taps > PANEL_DEPTH {
            BAND_MAX_PIXELS
        } else {
            usize::MAX
        });
        if pixels == 0 {
            return None;
        }
        // a band starting anywhere in a row touches at most this many output rows
        let rows = ((pixels + g.ow - 2) / g.ow + 1).min(g.oh) + reach_y;
        let mut tap_offset = [0; BAND_MAX_TAPS];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let (iy, qy) = qy_of[ky];
                let (ix, qx) = qx_of[kx];
                let phase = iy * count_x + ix;
                tap_offset[ky * g.kw + kx] = (phase * rows + qy) * cols + qx;
            }
        }
        Some(BandPlan {
            pixels,
            rows,
            cols,
            phases_y,
            count_y,
            phases_x,
            count_x,
            tap_offset,
            channel_len: count_y * count_x * rows * cols,
            in_place: g.stride_h == 1
                && g.stride_w == 1
                && g.pad_top == 0
                && g.pad_left == 0
                && cols == g.w
                && g.oh + reach_y <= g.h,
            len: channels * count_y * count_x * rows * cols,
        })
    }

    /// Floats from one input channel's planes to the next's in the band.
    fn channel_stride(&self, g: &Conv2dGeom) -> usize {
        if self.in_place {
            g.h * g.w
        } else {
            self.channel_len
        }
    }

    /// The stride phases `(t * dilation) % stride` that taps `t < side` use, in order of
    /// first use, how many there are, and per tap its phase's index and `t * dilation /
    /// stride`.
    #[allow(clippy::type_complexity)]
    fn phases(
        side: usize,
        dilation: usize,
        stride: usize,
    ) -> (
        [usize; BAND_MAX_SIDE],
        usize,
        [(usize, usize); BAND_MAX_SIDE],
    ) {
        let mut phases = [0; BAND_MAX_SIDE];
        let mut count = 0;
        let mut of_tap = [(0, 0); BAND_MAX_SIDE];
        for (t, slot) in of_tap.iter_mut().enumerate().take(side) {
            let phase = t * dilation % stride;
            let index = match phases[..count].iter().position(|&p| p == phase) {
                Some(i) => i,
                None => {
                    phases[count] = phase;
                    count += 1;
                    count - 1
                }
            };
            *slot = (index, t * dilation / stride);
        }
        (phases, count, of_tap)
    }
}

/// [`gemm_banded`] for all output channels of a group with the output rows split over
/// the threads: each thread sums its pixels of every channel, band by band
/// ([`split_by_pixel_bands`]), into a buffer of its own, runs the epilogue on them and
/// copies them into `out` (`[channels, oh * ow]`, whose first float is at `base` in the
/// whole output).
/// Each pixel's sums are those of one thread (the same multiply-adds in the same order
/// whichever panel holds the pixel), so the same bits.
///
/// Against whole bands per thread, each buffer allocated and cleared per call and the
/// epilogue run over the whole output after the split: mobilenet_v2's stem on two
/// threads (BENCHMARKS.md, twenty-seventh session).
#[cfg(feature = "threads")]
#[allow(clippy::too_many_arguments)]
fn gemm_banded_split(
    xg: &[f32],
    g: &Conv2dGeom,
    plan: &BandPlan,
    (a, depth): (Lhs<'_>, usize),
    bias: Option<&[f32]>,
    (out, base): (&mut [f32], usize),
    simd: bool,
    epi: &(impl Fn(usize, &mut [f32]) + Sync),
) {
    let pixels = g.oh * g.ow;
    split_by_pixel_bands(g, out, |(lo, hi), sums| {
        gemm_banded(
            xg,
            g,
            plan,
            (a, depth),
            bias,
            (lo, hi),
            (&mut *sums, hi - lo),
            simd,
        );
        for (c, sums) in sums.chunks_exact_mut(hi - lo).enumerate() {
            each_row_on(simd, sums, g.ow, base + c * pixels + lo, epi);
        }
    });
}

/// An output the parts of a split write at disjoint places that are not whole chunks
/// (pixels `lo..hi` of every channel), which `chunks_mut` cannot hand out.
#[cfg(feature = "threads")]
pub(crate) struct SplitOutput<'a> {
    start: *mut f32,
    len: usize,
    _out: core::marker::PhantomData<&'a mut [f32]>,
}

#[cfg(feature = "threads")]
impl<'a> SplitOutput<'a> {
    pub(crate) fn new(out: &'a mut [f32]) -> SplitOutput<'a> {
        SplitOutput {
            start: out.as_mut_ptr(),
            len: out.len(),
            _out: core::marker::PhantomData,
        }
    }

    /// `len` floats from `from`.
    ///
    /// # Safety
    ///
    /// No two ranges in use at the same time (on any thread) overlap.
    #[allow(unsafe_code, clippy::mut_from_ref)]
    pub(crate) unsafe fn range(&self, from: usize, len: usize) -> &mut [f32] {
        assert!(
            from <= self.len && len <= self.len - from,
            "range outside the output"
        );
        // SAFETY: in bounds (checked above) of a buffer borrowed mutably for 'a; the
        // caller keeps the ranges in use disjoint
        unsafe { core::slice::from_raw_parts_mut(self.start.add(from), len) }
    }
}

// SAFETY: a `SplitOutput` is a `&mut [f32]` (which is `Send` and `Sync`) whose ranges are
// handed out only through the unsafe `range`, under its disjointness contract.
#[cfg(feature = "threads")]
#[allow(unsafe_code)]
unsafe impl Sync for SplitOutput<'_> {}

/// Output pixels `lo..hi` of a chunk of output channels of [`conv2d_gemm`] (weights `a`
/// with row pitch `depth`), summed into `out` (`[rows, ldc]`, pixel `lo` in column 0),
/// band by band: per band of `plan.pixels` output
/// pixels and block of [`PANEL_DEPTH`] patch rows, the input channels the block reads are
/// copied once into a [`BandPlan`] band (zero padding and stride phases applied), then
/// each panel of [`PANEL`] pixels is packed from it (one contiguous run per patch row and
/// output row) and multiplied by every register tile. The patches' gather, once per
/// patch row and panel from the input, becomes a copy of the input (about
/// `1 + reach / rows` times) plus contiguous panel copies.
#[allow(clippy::too_many_arguments)]
fn gemm_banded(
    xg: &[f32],
    g: &Conv2dGeom,
    plan: &BandPlan,
    (a, depth): (Lhs<'_>, usize),
    bias: Option<&[f32]>,
    (lo, hi): (usize, usize),
    (out, ldc): (&mut [f32], usize),
    simd: bool,
) {
    // a band buffer no larger than needed (none when the band is the input): it is
    // cleared on every call
    let (mut small, mut large);
    let band: &mut [f32] = if plan.in_place {
        &mut []
    } else if plan.len <= SMALL_BAND_LEN {
        small = [0.0f32; SMALL_BAND_LEN];
        &mut small
    } else {
        large = [0.0f32; BAND_LEN];
        &mut large
    };
    let operands = ((a, depth), bias);
    banded_products(band, xg, g, plan, operands, (lo, hi), (out, ldc), simd);
}

/// [`gemm_banded`]'s loops, on a band buffer of at least `plan.len` floats (none when
/// `plan.in_place`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn banded_products(
    band: &mut [f32],
    xg: &[f32],
    g: &Conv2dGeom,
    plan: &BandPlan,
    ((a, depth), bias): ((Lhs<'_>, usize), Option<&[f32]>),
    (lo, hi): (usize, usize),
    (out, ldc): (&mut [f32], usize),
    simd: bool,
) {
    let rows = out.len() / ldc;
    let taps = g.kh * g.kw;
    let mut panel = [0.0f32; PANEL * PANEL_DEPTH];
    // every row in whole interleaved tiles on AVX-512, any rows on NEON: a panel inside
    // one output row is read straight from the band (`indirect_panel`), not packed
    let isa = Isa::of(simd);
    let indirect = match (a, isa) {
        (Lhs::Tiled(t), Isa::Avx512) => t.tiled >= rows,
        (_, isa) => isa == Isa::Neon,
    };
    let mut offsets = [0u32; PANEL_DEPTH];
    let channel_len = plan.channel_stride(g);
    for b0 in (lo..hi).step_by(plan.pixels) {
        let b1 = hi.min(b0 + plan.pixels);
        let oy0 = b0 / g.ow;
        for k0 in (0..depth).step_by(PANEL_DEPTH) {
            let kc = PANEL_DEPTH.min(depth - k0);
            let channels = (k0 / taps, (k0 + kc - 1) / taps + 1);
            let band: &[f32] = if plan.in_place {
                &xg[channels.0 * g.h * g.w + oy0 * g.w..]
            } else {
                fill_band(xg, g, plan, oy0, channels, band);
                band
            };
            let start = Start::of(k0, bias);
            // where patch row `k0 + k` of a pixel is in the band, from the pixel's place
            // (once per block, for every panel read from the band)
            let first = k0 / taps;
            for (k, slot) in offsets
                .iter_mut()
                .enumerate()
                .take(if indirect { kc } else { 0 })
            {
                let (ic, tap) = ((k0 + k) / taps - first, (k0 + k) % taps);
                *slot = (ic * channel_len + plan.tap_offset[tap]) as u32;
            }
            let row_offsets = crate::simd::RowOffsets::new(&offsets[..kc]);
            for p0 in (b0..b1).step_by(PANEL) {
                let cols = PANEL.min(b1 - p0);
                let (oy, ox) = (p0 / g.ow, p0 % g.ow);
                if indirect && cols == PANEL && ox + PANEL <= g.ow {
                    let pixel = (oy - oy0) * plan.cols + ox;
                    let b = (band, (&row_offsets, pixel));
                    let c = (&mut out[p0 - lo..], ldc);
                    indirect_panel(isa, a.skip_columns(k0), rows, b, c, start);
                    continue;
                }
                let at = (p0, cols, oy0, channel_len);
                pack_band(band, g, plan, at, (k0, kc), &mut panel);
                tile_panel(
                    simd,
                    (rows, kc, cols),
                    a.skip_columns(k0),
                    (&panel, PANEL),
                    (&mut out[p0 - lo..], ldc),
                    start,
                );
            }
        }
    }
}

/// The register tiles of one panel of [`banded_products`] whose `b` is read from the band
/// (`b[offsets[k] + pixel..][..16]` is its row `k`) covering all `rows`: on AVX-512
/// interleaved tiles of `a`, on NEON six rows of any layout at a time.
fn indirect_panel(
    isa: Isa,
    a: Lhs<'_>,
    rows: usize,
    (band, (offsets, pixel)): (&[f32], (&crate::simd::RowOffsets<'_>, usize)),
    (c, ldc): (&mut [f32], usize),
    start: Start<'_>,
) {
    let mut m0 = 0;
    while m0 < rows {
        let want = if isa == Isa::Avx512 {
            WEIGHT_TILE_ROWS
        } else {
            isa.tile_rows()
        };
        let (tile, count) = a.rows_at(m0, want.min(rows - m0));
        let (init, c) = (start.rows(m0, count), &mut c[m0 * ldc..]);
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Avx512 {
            // SAFETY: `Isa::Avx512` is chosen only when `avx512` found AVX-512F on this
            // CPU; callers pass interleaved tiles of `a` there (`tile.0` read as
            // `a[k * 16 + i]`)
            #[allow(unsafe_code)]
            unsafe {
                crate::simd::gemm_tile_avx512_indirect(
                    tile.0,
                    count,
                    band,
                    (offsets, pixel),
                    c,
                    ldc,
                    init,
                )
            };
        }
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        if isa == Isa::Neon {
            crate::simd::gemm_tile_neon_indirect(tile, count, band, (offsets, pixel), c, ldc, init);
        }
        // (other CPUs never take indirect panels: `banded_products` packs theirs)
        let _ = (tile, band, offsets, pixel, init, c);
        m0 += count;
    }
}

/// Copies input channels `first..end` (of the group `xg`) into `band`, laid out as `plan`
/// says for the band whose first output row is `oy0`.
fn fill_band(
    xg: &[f32],
    g: &Conv2dGeom,
    plan: &BandPlan,
    oy0: usize,
    (first, end): (usize, usize),
    band: &mut [f32],
) {
    let in_plane = g.h * g.w;
    let (sh, sw) = (g.stride_h, g.stride_w);
    debug_assert!((end - first) * plan.channel_len <= band.len());
    for (ic, planes) in (first..end).zip(band.chunks_exact_mut(plan.channel_len)) {
        let input = &xg[ic * in_plane..(ic + 1) * in_plane];
        let mut phase_planes = planes.chunks_exact_mut(plan.rows * plan.cols);
        for &py in &plan.phases_y[..plan.count_y] {
            for &px in &plan.phases_x[..plan.count_x] {
                let Some(phase) = phase_planes.next() else {
                    return;
                };
                // the columns `c` whose input column `c * sw + px - pad_left` exists
                let (lo, hi) = valid_range(plan.cols, g.w, sw, g.pad_left, px);
                for (r, dst) in phase.chunks_exact_mut(plan.cols).enumerate() {
                    let iy = ((oy0 + r) * sh + py).checked_sub(g.pad_top);
                    let Some(row) = iy.and_then(|iy| input.get(iy * g.w..(iy + 1) * g.w)) else {
                        dst.fill(0.0);
                        continue;
                    };
                    dst[..lo].fill(0.0);
                    dst[hi..].fill(0.0);
                    if lo >= hi {
                        continue;
                    }
                    gather_strided(&mut dst[lo..hi], &row[lo * sw + px - g.pad_left..], sw);
                }
            }
        }
    }
}

/// The runs along output rows of the panel of output pixels `p0..p0 + cols` (at most
/// [`PANEL`]) on a map `ow` wide: `(first column in the panel, length, at(oy, ox) of the
/// run's first pixel)` each, and how many there are.
fn panel_runs<T: Copy + Default>(
    ow: usize,
    p0: usize,
    cols: usize,
    at: impl Fn(usize, usize) -> T,
) -> ([(usize, usize, T); PANEL], usize) {
    let mut runs = [(0, 0, T::default()); PANEL];
    let (mut count, mut j) = (0, 0);
    while j < cols {
        let (oy, ox) = ((p0 + j) / ow, (p0 + j) % ow);
        let len = (ow - ox).min(cols - j);
        runs[count] = (j, len, at(oy, ox));
        count += 1;
        j += len;
    }
    (runs, count)
}

/// Packs patch rows `k0..k0 + kc` of output pixels `p0..p0 + cols` (at most [`PANEL`];
/// the band's first output row is `oy0`) from `band` into `panel`, [`PANEL`] floats a
/// row, zero beyond `cols`: per patch row, one contiguous copy per output row the panel
/// touches.
fn pack_band(
    band: &[f32],
    g: &Conv2dGeom,
    plan: &BandPlan,
    (p0, cols, oy0, channel_len): (usize, usize, usize, usize),
    (k0, kc): (usize, usize),
    panel: &mut [f32; PANEL * PANEL_DEPTH],
) {
    let taps = g.kh * g.kw;
    // runs of the panel along output rows: (first column, length, offset in the band)
    let (runs, count) = panel_runs(g.ow, p0, cols, |oy, ox| (oy - oy0) * plan.cols + ox);
    // `ic` counts the band's channels, the first being the one patch row `k0` reads
    let (mut ic, mut tap) = (0, k0 % taps);
    for row in panel.chunks_exact_mut(PANEL).take(kc) {
        let at = ic * channel_len + plan.tap_offset[tap];
        match (count, <&mut [f32; PANEL]>::try_from(&mut *row)) {
            // the whole panel in one output row: a fixed-size copy (vector moves)
            (1, Ok(dst)) if cols == PANEL => {
                let from = at + runs[0].2;
                if let Ok(src) = <&[f32; PANEL]>::try_from(&band[from..from + PANEL]) {
                    *dst = *src;
                }
            }
            _ => {
                for &(j, len, offset) in &runs[..count] {
                    let from = at + offset;
                    copy_short(&mut row[j..j + len], &band[from..from + len]);
                }
                row[cols..].fill(0.0);
            }
        }
        tap += 1;
        if tap == taps {
            tap = 0;
            ic += 1;
        }
    }
}

/// `dst.copy_from_slice(src)` for the short runs of a panel row (at most [`PANEL`]
/// floats): moves of four floats and a scalar tail, where `copy_from_slice` of a length
/// the compiler cannot see calls `memcpy` (its call and dispatch cost more than the copy).
#[inline(always)]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    let mut quads = dst.chunks_exact_mut(4);
    let mut from = src.chunks_exact(4);
    for (d, s) in (&mut quads).zip(&mut from) {
        if let (Ok(d), Ok(s)) = (<&mut [f32; 4]>::try_from(d), <&[f32; 4]>::try_from(s)) {
            *d = *s;
        }
    }
    for (d, s) in quads.into_remainder().iter_mut().zip(from.remainder()) {
        *d = *s;
    }
}

/// `dst[i] = src[i * stride]` for every `i < dst.len()` (`src` must hold them): a copy for
/// stride 1, pairs for stride 2 (loops the compiler vectorizes on x86_64; `ld2` on
/// aarch64, where it does not), a strided walk else.
#[inline(always)]
fn gather_strided(dst: &mut [f32], src: &[f32], stride: usize) {
    let n = dst.len();
    assert!(
        n == 0 || src.len() > (n - 1) * stride,
        "gather past the source"
    );
    match stride {
        1 => dst.copy_from_slice(&src[..n]),
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        2 if crate::simd::neon() => crate::simd::gather_even_neon(dst, src),
        2 => {
            let pairs = (src.len() / 2).min(n);
            for (d, pair) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = pair[0];
            }
            if pairs < n {
                dst[pairs] = src[2 * pairs];
            }
        }
        _ => {
            for (d, &v) in dst.iter_mut().zip(src.iter().step_by(stride)) {
                *d = v;
            }
        }
    }
}

/// Gathers rows `k0..k0 + kc` of the patch matrix (row `(ic, ky, kx)`, column = output
/// pixel) for pixels `p0..p0 + cols` into `panel`, [`PANEL`] floats a row, zero beyond
/// `cols` and in the padding. The panel's pixels are cut into runs along output rows
/// (one run when the panel lies in one row, several on narrow maps); a run whose taps lie
/// inside the input is a contiguous copy (unit stride) or a strided one.
#[allow(clippy::too_many_arguments)]
fn pack_patches(
    xg: &[f32],
    g: &Conv2dGeom,
    p0: usize,
    cols: usize,
    k0: usize,
    kc: usize,
    panel: &mut [f32; PANEL * PANEL_DEPTH],
) {
    let in_plane = g.h * g.w;
    let taps = g.kh * g.kw;
    // runs of the panel along output rows: (first column, length, (top input row, left
    // input column of the run's first window; both may be negative: padding))
    let (runs, run_count) = panel_runs(g.ow, p0, cols, |oy, ox| {
        (
            (oy * g.stride_h) as isize - g.pad_top as isize,
            (ox * g.stride_w) as isize - g.pad_left as isize,
        )
    });
    let runs = &runs[..run_count];
    let sw = g.stride_w;
    let (h, w) = (g.h as isize, g.w as isize);
    for r in 0..kc {
        let k = k0 + r;
        let (ic, tap) = (k / taps, k % taps);
        let (dy, dx) = (
            ((tap / g.kw) * g.dilation_h) as isize,
            ((tap % g.kw) * g.dilation_w) as isize,
        );
        let plane = &xg[ic * in_plane..(ic + 1) * in_plane];
        let dst = &mut panel[r * PANEL..(r + 1) * PANEL];
        dst[cols..].fill(0.0);
        for &(j0, len, (top, left)) in runs {
            let out = &mut dst[j0..j0 + len];
            let (iy, ix) = (top + dy, left + dx);
            if iy < 0 || iy >= h {
                out.fill(0.0);
                continue;
            }
            let row = &plane[(iy * w) as usize..((iy + 1) * w) as usize];
            let last = ix + ((len - 1) * sw) as isize;
            if ix >= 0 && last < w {
                let run = &row[ix as usize..=last as usize];
                if sw == 1 {
                    match (
                        <&mut [f32; PANEL]>::try_from(&mut *out),
                        <&[f32; PANEL]>::try_from(run),
                    ) {
                        // a whole panel in one row: a fixed-size copy (vector moves, not a
                        // call to memmove)
                        (Ok(d), Ok(src)) => *d = *src,
                        _ => out.copy_from_slice(run),
                    }
                } else {
                    for (o, &v) in out.iter_mut().zip(run.iter().step_by(sw)) {
                        *o = v;
                    }
                }
                continue;
            }
            for (t, o) in out.iter_mut().enumerate() {
                let c = ix + (t * sw) as isize;
                *o = if c >= 0 && c < w {
                    row[c as usize]
                } else {
                    0.0
                };
            }
        }
    }
}

/// The register tile [`tile_panel`] runs: chosen once per panel from what the CPU has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    /// portable code (other CPUs, miri, tests)
    Portable,
    /// 6 x 16 tiles in ymm registers (`simd::gemm_tile_avx2`)
    Avx2,
    /// 16 x 16 tiles in zmm registers (`simd::gemm_tile_avx512`)
    Avx512,
    /// 6 x 16 tiles in NEON registers (`simd::gemm_tile_neon`, aarch64)
    Neon,
}

/// Rows of the largest register tile.
const MAX_TILE_ROWS: usize = crate::simd::GEMM_MR_AVX512;

impl Isa {
    /// NEON's tile on aarch64, else the best when `simd` (the CPU has AVX2 and FMA), else
    /// the portable one.
    fn of(simd: bool) -> Isa {
        match (simd, crate::simd::avx512()) {
            _ if crate::simd::neon() => Isa::Neon,
            (false, _) => Isa::Portable,
            (true, false) => Isa::Avx2,
            (true, true) => Isa::Avx512,
        }
    }

    /// Rows of its register tile.
    fn tile_rows(self) -> usize {
        match self {
            Isa::Portable | Isa::Avx2 | Isa::Neon => TILE_ROWS,
            Isa::Avx512 => crate::simd::GEMM_MR_AVX512,
        }
    }
}

/// One register tile of the implicit GEMM (see `simd::gemm_tile_avx2` for the contract),
/// at most `isa.tile_rows()` rows: the AVX-512, AVX2 or NEON kernel, or the same sums in
/// portable code.
#[allow(clippy::too_many_arguments)]
#[inline]
fn gemm_tile(
    isa: Isa,
    kc: usize,
    (a, a_row, a_k): (&[f32], usize, usize),
    rows: usize,
    (b, ldb): (&[f32], usize),
    (c, ldc): (&mut [f32], usize),
    init: Option<&[f32]>,
    ahead: &[f32],
) {
    // (the AVX-512 tile spreads the prefetches over its steps; the others ask first)
    if isa != Isa::Avx512 {
        crate::simd::prefetch(ahead);
    }
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx512 => {
            // SAFETY: `Isa::Avx512` is chosen only when `avx512` found AVX-512F (and AVX2
            // and FMA) on this CPU.
            #[allow(unsafe_code)]
            unsafe {
                crate::simd::gemm_tile_avx512(
                    kc,
                    (a, a_row, a_k),
                    rows,
                    b,
                    ldb,
                    c,
                    ldc,
                    init,
                    ahead,
                )
            };
            return;
        }
        Isa::Avx2 => {
            // SAFETY: `Isa::Avx2` is chosen only when `avx2_fma` found AVX2 and FMA.
            #[allow(unsafe_code)]
            unsafe {
                crate::simd::gemm_tile_avx2(kc, (a, a_row, a_k), rows, b, ldb, c, ldc, init)
            };
            return;
        }
        Isa::Portable | Isa::Neon => {}
    }
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    if isa == Isa::Neon {
        crate::simd::gemm_tile_neon(kc, (a, a_row, a_k), rows, b, ldb, c, ldc, init);
        return;
    }
    let _ = isa;
    if a_k == 1 && crate::simd::register_blocked() {
        // rows of `a` contiguous (every portable caller): tiles of 3 rows by 4 columns
        let mut i = 0;
        while i < rows {
            let (a, c, init) = (&a[i * a_row..], &mut c[i * ldc..], init.map(|v| &v[i..]));
            let step = match rows - i {
                1 => micro_rows::<1>(
                    kc,
                    (a, a_row),
                    (b, ldb),
                    (c, ldc),
                    init,
                    crate::simd::tile_1x4,
                ),
                2 => micro_rows::<2>(
                    kc,
                    (a, a_row),
                    (b, ldb),
                    (c, ldc),
                    init,
                    crate::simd::tile_2x4,
                ),
                _ => micro_rows::<3>(
                    kc,
                    (a, a_row),
                    (b, ldb),
                    (c, ldc),
                    init,
                    crate::simd::tile_3x4,
                ),
            };
            i += step;
        }
        return;
    }
    for i in 0..rows {
        let mut sums = [0.0f32; PANEL];
        for k in 0..kc {
            let av = a[i * a_row + k * a_k];
            for (s, &bv) in sums.iter_mut().zip(&b[k * ldb..k * ldb + PANEL]) {
                *s += av * bv;
            }
        }
        let dst = &mut c[i * ldc..i * ldc + PANEL];
        for (d, s) in dst.iter_mut().zip(sums) {
            let start = match init {
                Some(v) => v[i],
                None => *d,
            };
            *d = start + s;
        }
    }
}

/// Columns of a register-blocked portable tile (`simd::tile_3x4`).
const MICRO_COLS: usize = 4;

/// A register tile of `R` rows by [`MICRO_COLS`] columns: `sums[r][j] = sum over k of
/// a[r][k] * b[k * ldb + j]` for `k < a[r].len()` (all alike).
type MicroTile<const R: usize> = fn([&[f32]; R], (&[f32], usize)) -> [[f32; MICRO_COLS]; R];

/// `R` rows of [`gemm_tile`]'s contract by `tile`, [`MICRO_COLS`] columns at a time;
/// `a`'s rows are contiguous, `a_row` apart. Returns `R`.
#[inline(always)]
fn micro_rows<const R: usize>(
    kc: usize,
    (a, a_row): (&[f32], usize),
    (b, ldb): (&[f32], usize),
    (c, ldc): (&mut [f32], usize),
    init: Option<&[f32]>,
    tile: MicroTile<R>,
) -> usize {
    let rows: [&[f32]; R] = core::array::from_fn(|r| &a[r * a_row..r * a_row + kc]);
    for j0 in (0..PANEL).step_by(MICRO_COLS) {
        let sums = tile(rows, (&b[j0..], ldb));
        for (r, row) in sums.iter().enumerate() {
            let dst = &mut c[r * ldc + j0..r * ldc + j0 + MICRO_COLS];
            for (d, &s) in dst.iter_mut().zip(row) {
                let start = match init {
                    Some(v) => v[r],
                    None => *d,
                };
                *d = start + s;
            }
        }
    }
    R
}

/// Floats of the stack buffers the convolutions use: large on desktop CPUs, small where
/// a stack may be a few kilobytes (microcontrollers).
const CONV_STACK: usize = stack_floats(20480, 1024);

/// Depthwise 2-d convolution (`groups == c_in == c_out`): maps whose phase planes fit
/// [`CONV_STACK`] through them ([`depthwise_planes`]), larger ones through a ring of input
/// rows ([`depthwise_ring`], 0.85-0.95x the time of the tap-by-tap rows it replaced on
/// mobilenet_v2's 112x112 map); both sum every tap of a run of outputs in registers. Public
/// within the crate so the AVX2 build (`simd::depthwise_conv2d_avx2`) compiles the same
/// code with wider vectors.
#[inline(always)]
pub(crate) fn depthwise_rows(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    g: &Conv2dGeom,
    epi: &(impl Fn(usize, &mut [f32]) + Sync),
    fused: bool,
) {
    depthwise_planes(x, w, bias, out, g, epi, fused);
}

/// [`depthwise_rows`] for small maps: each channel's input copied once, zero padding
/// included, into `stride x stride` phase planes (plane `(qy, qx)` holds the padded pixels
/// `(r * stride + qy, c * stride + qx)`), so that for every tap the whole output plane,
/// laid out with the phase planes' row pitch, is one contiguous multiply-add run
/// (`out[i] += w * phase[offset + i]`), summed in registers ([`depthwise_taps`]); the
/// extra columns of that layout are dropped when the rows are stored.
#[inline(always)]
fn depthwise_planes(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    g: &Conv2dGeom,
    epi: &(impl Fn(usize, &mut [f32]) + Sync),
    fused: bool,
) {
    let plane = g.oh * g.ow;
    let in_plane = g.h * g.w;
    let taps = g.kh * g.kw;
    let s = g.stride_h.max(1);
    if plane == 0 {
        return;
    }
    // the padded extent the output reads, in phase planes of `rows x pitch`
    let extent_h = (g.oh - 1) * g.stride_h + (g.kh - 1) * g.dilation_h + 1;
    let extent_w = (g.ow - 1) * g.stride_w + (g.kw - 1) * g.dilation_w + 1;
    let (rows, pitch) = (extent_h.div_ceil(s), extent_w.div_ceil(s));
    let phase = rows * pitch;
    // on NEON the rows of kernels of up to DEPTHWISE_TAPS taps are summed straight into
    // `out`, without the wide plane
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    let rows_to_out = crate::simd::neon() && taps <= DEPTHWISE_TAPS;
    #[cfg(not(all(target_arch = "aarch64", target_feature = "neon")))]
    let rows_to_out = false;
    let wide_len = if rows_to_out { 0 } else { g.oh * pitch };
    // phase planes, one pitch of slack (the dropped columns read past the last plane),
    // then the wide output plane
    let needed = s * s * phase + pitch + wide_len;
    if g.stride_h != g.stride_w || needed > CONV_STACK {
        depthwise_ring(x, w, bias, out, g, epi, fused);
        return;
    }
    // where each tap reads in the phase planes (kernels of up to DEPTHWISE_TAPS taps)
    let mut tap_at = [0usize; DEPTHWISE_TAPS];
    for (slot, at) in tap_at.iter_mut().zip(tap_offsets(g, s, phase, pitch)) {
        *slot = at;
    }
    // zeros once: every channel writes its pixels to the same places of the phase
    // planes, so the padding around them stays zero
    let mut buffer = [0.0f32; CONV_STACK];
    let (phases, wide) = buffer.split_at_mut(s * s * phase + pitch);
    let wide = &mut wide[..wide_len];
    for n in 0..g.n {
        for c in 0..g.c_out {
            let xp = &x[(n * g.c_in + c) * in_plane..(n * g.c_in + c + 1) * in_plane];
            for qy in 0..s {
                // the phase rows `r` whose input row `r * s + qy - pad_top` exists
                let (r0, r1) = valid_range(rows, g.h, s, g.pad_top, qy);
                for qx in 0..s {
                    let (c0, c1) = valid_range(pitch, g.w, s, g.pad_left, qx);
                    if c0 >= c1 {
                        continue;
                    }
                    let dst = &mut phases[(qy * s + qx) * phase..(qy * s + qx + 1) * phase];
                    for r in r0..r1 {
                        let iy = r * s + qy - g.pad_top;
                        let from = iy * g.w + c0 * s + qx - g.pad_left;
                        gather_strided(&mut dst[r * pitch + c0..r * pitch + c1], &xp[from..], s);
                    }
                }
            }
            let start = bias.map_or(0.0, |b| b[c]);
            let weights = &w[c * taps..(c + 1) * taps];
            let base = (n * g.c_out + c) * plane;
            #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
            if rows_to_out {
                if let Some(tap_at) = tap_at.get(..taps) {
                    // the rows summed straight into `out`: no wide plane to copy out (rows
                    // of 7 to 56 cost as much to copy as to sum on NEON)
                    let op = &mut out[base..base + plane];
                    crate::simd::depthwise_rows_neon(
                        phases, weights, tap_at, start, op, g.ow, pitch,
                    );
                    for (oy, row) in op.chunks_exact_mut(g.ow).enumerate() {
                        epi(base + oy * g.ow, row);
                    }
                    continue;
                }
            }
            match tap_at.get(..taps) {
                Some(tap_at) => depthwise_taps(phases, weights, tap_at, start, wide, fused),
                None => {
                    wide.fill(start);
                    for (&wv, at) in weights.iter().zip(tap_offsets(g, s, phase, pitch)) {
                        let src = &phases[at..at + wide.len()];
                        for (o, &v) in wide.iter_mut().zip(src) {
                            *o += wv * v;
                        }
                    }
                }
            }
            for oy in 0..g.oh {
                let row = &mut out[base + oy * g.ow..base + (oy + 1) * g.ow];
                row.copy_from_slice(&wide[oy * pitch..oy * pitch + g.ow]);
                epi(base + oy * g.ow, row);
            }
        }
    }
}

/// [`depthwise_rows`] for large maps: per channel, the input rows an output row reads
/// are copied once, zero padding included, into a ring of `(kh - 1) * dilation_h + 1`
/// rows kept in `stride_w` column phases (phase `q` of a row holds its padded columns
/// `c * stride_w + q`), so that each tap `(ky, kx)` reads a contiguous run for the whole
/// output row and the ring stays in L1. Each output row is summed in registers over every
/// tap ([`depthwise_taps`]), stored once and handed to the epilogue while it is hot. Rows
/// too wide for the ring's buffer go tap by tap ([`depthwise_by_rows`]).
#[inline(always)]
fn depthwise_ring(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    g: &Conv2dGeom,
    epi: &(impl Fn(usize, &mut [f32]) + Sync),
    fused: bool,
) {
    let plane = g.oh * g.ow;
    let in_plane = g.h * g.w;
    let taps = g.kh * g.kw;
    let (sh, sw) = (g.stride_h.max(1), g.stride_w.max(1));
    if plane == 0 {
        return;
    }
    // the padded columns the output reads, in `sw` phases of `pitch` columns
    let extent_w = (g.ow - 1) * sw + (g.kw - 1) * g.dilation_w + 1;
    let pitch = extent_w.div_ceil(sw);
    let row_len = sw * pitch;
    // the ring holds every input row one output row reads
    let span = (g.kh - 1) * g.dilation_h + 1;
    if span * row_len + DEPTHWISE_RUN > CONV_STACK {
        depthwise_by_rows(x, w, bias, out, g, epi);
        return;
    }
    // zeros once: the rows' padding columns stay zero (`fill_phase`)
    let mut ring = [0.0f32; CONV_STACK];
    // (slack after the rows: the last run of a row reads past its end)
    let ring = &mut ring[..span * row_len + DEPTHWISE_RUN];
    for n in 0..g.n {
        for c in 0..g.c_out {
            let xp = &x[(n * g.c_in + c) * in_plane..(n * g.c_in + c + 1) * in_plane];
            let start = bias.map_or(0.0, |b| b[c]);
            let weights = &w[c * taps..(c + 1) * taps];
            let base = (n * g.c_out + c) * plane;
            // which padded input row each ring slot holds (none yet for this channel)
            let mut held = [usize::MAX; DEPTHWISE_SPAN];
            for oy in 0..g.oh {
                let mut tap_at = [0usize; DEPTHWISE_TAPS];
                for ky in 0..g.kh {
                    let r = oy * sh + ky * g.dilation_h;
                    let slot = r % span;
                    if let Some(tag) = held.get_mut(slot) {
                        if *tag != r {
                            *tag = r;
                            let dst = &mut ring[slot * row_len..(slot + 1) * row_len];
                            fill_phase_row(dst, xp, g, r, pitch);
                        }
                    } else {
                        // a ring longer than `DEPTHWISE_SPAN` rows: refill every time
                        let dst = &mut ring[slot * row_len..(slot + 1) * row_len];
                        fill_phase_row(dst, xp, g, r, pitch);
                    }
                    for kx in 0..g.kw {
                        let dx = kx * g.dilation_w;
                        if let Some(at) = tap_at.get_mut(ky * g.kw + kx) {
                            *at = slot * row_len + (dx % sw) * pitch + dx / sw;
                        }
                    }
                }
                let row = &mut out[base + oy * g.ow..base + (oy + 1) * g.ow];
                match tap_at.get(..taps) {
                    Some(tap_at) => depthwise_taps(ring, weights, tap_at, start, row, fused),
                    None => {
                        // more taps than `DEPTHWISE_TAPS`: one pass per tap
                        row.fill(start);
                        for (t, &wv) in weights.iter().enumerate() {
                            let (ky, kx) = (t / g.kw, t % g.kw);
                            let slot = (oy * sh + ky * g.dilation_h) % span;
                            let dx = kx * g.dilation_w;
                            let at = slot * row_len + (dx % sw) * pitch + dx / sw;
                            for (o, &v) in row.iter_mut().zip(&ring[at..]) {
                                *o += wv * v;
                            }
                        }
                    }
                }
                epi(base + oy * g.ow, row);
            }
        }
    }
}

/// Rows of the longest ring [`depthwise_rows`] remembers the contents of (a 7x7 kernel
/// with dilation 2 spans 13 rows); longer rings are refilled for every output row.
const DEPTHWISE_SPAN: usize = 16;

/// Fills `dst` (`stride_w` phases of `pitch` columns) with padded input row `r` of the
/// channel plane `xp` ([`fill_phase`] per phase).
#[inline(always)]
fn fill_phase_row(dst: &mut [f32], xp: &[f32], g: &Conv2dGeom, r: usize, pitch: usize) {
    for (qx, drow) in dst.chunks_exact_mut(pitch).enumerate() {
        fill_phase(drow, xp, g, r, qx);
    }
}

/// Fills `drow` with phase `qx` of padded input row `r` of the channel plane `xp`: its
/// padded columns `c * stride_w + qx` for `c < drow.len()`, zeros where the row falls in
/// the padding. Columns in the padding are not written: every row writes zeros or nothing
/// there, so they stay as the caller zeroed them.
#[inline(always)]
fn fill_phase(drow: &mut [f32], xp: &[f32], g: &Conv2dGeom, r: usize, qx: usize) {
    let sw = g.stride_w.max(1);
    let iy = r.wrapping_sub(g.pad_top);
    if iy >= g.h {
        drow.fill(0.0);
        return;
    }
    let xrow = &xp[iy * g.w..(iy + 1) * g.w];
    // the columns whose input `col * sw + qx - pad_left` is inside
    let (c0, c1) = valid_range(drow.len(), g.w, sw, g.pad_left, qx);
    if c0 < c1 {
        gather_strided(&mut drow[c0..c1], &xrow[c0 * sw + qx - g.pad_left..], sw);
    }
}

/// Taps of the largest depthwise kernel whose sums [`depthwise_taps`] keeps in registers.
const DEPTHWISE_TAPS: usize = 64;

/// Output values [`depthwise_taps`] sums at a time: four vectors of eight, four chains
/// of additions in flight (one chain per tap would wait on each addition's latency).
const DEPTHWISE_RUN: usize = 32;

/// Per tap `(ky, kx)` in order, where it reads in [`depthwise_planes`]' phase planes.
fn tap_offsets(
    g: &Conv2dGeom,
    s: usize,
    phase: usize,
    pitch: usize,
) -> impl Iterator<Item = usize> + '_ {
    (0..g.kh * g.kw).map(move |t| {
        let (dy, dx) = ((t / g.kw) * g.dilation_h, (t % g.kw) * g.dilation_w);
        ((dy % s) * s + dx % s) * phase + (dy / s) * pitch + dx / s
    })
}

/// `wide[i] = start + sum over taps t of weights[t] * phases[tap_at[t] + i]`, summed in
/// tap order (the same bits as one pass per tap), [`DEPTHWISE_RUN`] outputs at a time with
/// the sums in registers: each output is stored once instead of once per tap.
/// With `fused` (only in the AVX2 and FMA build), 3x3 kernels take fused multiply-adds
/// (`simd::depthwise_taps9_avx2`); on aarch64 every kernel does
/// (`simd::depthwise_rows_neon`).
#[inline(always)]
fn depthwise_taps(
    phases: &[f32],
    weights: &[f32],
    tap_at: &[usize],
    start: f32,
    wide: &mut [f32],
    fused: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if fused {
        if let (Ok(w9), Ok(at9)) = (
            <&[f32; 9]>::try_from(weights),
            <&[usize; 9]>::try_from(tap_at),
        ) {
            // SAFETY: `fused` is true only under `simd::depthwise_conv2d_avx2`, which runs
            // on CPUs with AVX2 and FMA
            #[allow(unsafe_code)]
            unsafe {
                crate::simd::depthwise_taps9_avx2(phases, w9, at9, start, wide)
            };
            return;
        }
    }
    let _ = fused;
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    if crate::simd::neon() {
        let run = wide.len();
        crate::simd::depthwise_rows_neon(phases, weights, tap_at, start, wide, run, 0);
        return;
    }
    let mut runs = wide.chunks_exact_mut(DEPTHWISE_RUN);
    let mut i = 0;
    for run in &mut runs {
        let mut sums = [start; DEPTHWISE_RUN];
        for (&wv, &at) in weights.iter().zip(tap_at) {
            let src = &phases[at + i..at + i + DEPTHWISE_RUN];
            for (s, &v) in sums.iter_mut().zip(src) {
                *s += wv * v;
            }
        }
        run.copy_from_slice(&sums);
        i += DEPTHWISE_RUN;
    }
    let rest = runs.into_remainder();
    if rest.is_empty() {
        return;
    }
    // one more whole run when every tap may read that far (slack after the phases)
    if tap_at
        .iter()
        .all(|&at| at + i + DEPTHWISE_RUN <= phases.len())
    {
        let mut sums = [start; DEPTHWISE_RUN];
        for (&wv, &at) in weights.iter().zip(tap_at) {
            let src = &phases[at + i..at + i + DEPTHWISE_RUN];
            for (s, &v) in sums.iter_mut().zip(src) {
                *s += wv * v;
            }
        }
        rest.copy_from_slice(&sums[..rest.len()]);
        return;
    }
    rest.fill(start);
    for (&wv, &at) in weights.iter().zip(tap_at) {
        for (o, &v) in rest.iter_mut().zip(&phases[at + i..]) {
            *o += wv * v;
        }
    }
}

/// [`depthwise_rows`] for channels too wide for its buffer: per output row, each tap
/// adds `weight * input` along the row.
#[inline(always)]
fn depthwise_by_rows(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    g: &Conv2dGeom,
    epi: &(impl Fn(usize, &mut [f32]) + Sync),
) {
    let plane = g.oh * g.ow;
    let in_plane = g.h * g.w;
    let taps = g.kh * g.kw;
    for n in 0..g.n {
        for c in 0..g.c_out {
            let xp = &x[(n * g.c_in + c) * in_plane..(n * g.c_in + c + 1) * in_plane];
            let base = (n * g.c_out + c) * plane;
            for oy in 0..g.oh {
                let row = &mut out[base + oy * g.ow..base + (oy + 1) * g.ow];
                row.fill(bias.map_or(0.0, |b| b[c]));
                let (ky0, ky1) = valid_range(g.kh, g.h, g.dilation_h, g.pad_top, oy * g.stride_h);
                for ky in ky0..ky1 {
                    let iy = oy * g.stride_h + ky * g.dilation_h - g.pad_top;
                    let xrow = &xp[iy * g.w..(iy + 1) * g.w];
                    for kx in 0..g.kw {
                        let wv = w[c * taps + ky * g.kw + kx];
                        let (x0, x1) =
                            valid_range(g.ow, g.w, g.stride_w, g.pad_left, kx * g.dilation_w);
                        if g.stride_w == 1 {
                            let ix0 = x0 + kx * g.dilation_w - g.pad_left;
                            for (o, &v) in row[x0..x1].iter_mut().zip(&xrow[ix0..]) {
                                *o += wv * v;
                            }
                        } else {
                            let first = x0 * g.stride_w + kx * g.dilation_w - g.pad_left;
                            let taps = xrow[first..].iter().step_by(g.stride_w);
                            for (o, &v) in row[x0..x1].iter_mut().zip(taps) {
                                *o += wv * v;
                            }
                        }
                    }
                }
                epi(base + oy * g.ow, row);
            }
        }
    }
}

/// Transposed 2-d convolution, NCHW, weight `[c_in, c_out / groups, kh, kw]`; `g.h`/`g.w`
/// are the input's, `g.oh`/`g.ow` the output's, `pad_*` the padding removed per side.
///
/// A matrix product and a scatter (`col2im`), per image and group: the products
/// `cols [c_out / groups * kh * kw, h * w] = wᵀ [.., c_in / groups] x x [c_in / groups, h * w]`
/// are computed a panel of [`WEIGHT_PANEL`] input pixels at a time into a stack buffer, by the
/// register tiles of the implicit GEMM (the weight read transposed in place), and every
/// value is then added to the output pixel its tap reaches,
/// `(iy * stride + ky * dilation - pad, ix * stride + kx * dilation - pad)`. With threads
/// (`threads::with_threads`, feature `threads`), bands of input rows split over them when
/// their output rows never meet (`transpose_by_row_bands`), output channels otherwise.
pub fn conv_transpose2d(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    g: &Conv2dGeom,
    epi: impl Fn(usize, f32) -> f32 + Sync,
) {
    conv_transpose2d_with(crate::simd::avx2_fma(), x, w, bias, out, g, &epi);
}

/// Rows of the products of one panel [`conv_transpose2d`] keeps on the stack.
const TRANSPOSE_ROWS: usize = CONV_STACK / PANEL;

/// [`conv_transpose2d`] on the AVX2 register tiles when `simd`, else the portable ones.
fn conv_transpose2d_with(
    simd: bool,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    g: &Conv2dGeom,
    epi: &(impl Fn(usize, f32) -> f32 + Sync),
) {
    let (cin_g, cout_g) = (g.c_in / g.groups, g.c_out / g.groups);
    let taps = g.kh * g.kw;
    // rows of the product: (output channel of the group, tap)
    let m = cout_g * taps;
    let (plane, in_plane) = (g.oh * g.ow, g.h * g.w);
    if plane == 0 || cout_g == 0 {
        return;
    }
    let threads = crate::threads::current();
    let worth_splitting = m * cin_g * in_plane >= PARALLEL_MIN_MACS;
    #[cfg(feature = "threads")]
    if threads > 1 && worth_splitting && g.h > 1 && transpose_rows_apart(g) {
        transpose_by_row_bands(simd, (x, w, bias), out, g, epi, threads.min(g.h));
        return;
    }
    let chunk_channels = if threads > 1 && worth_splitting {
        cout_g.div_ceil(threads)
    } else {
        cout_g
    };
    for n in 0..g.n {
        for grp in 0..g.groups {
            let wg = &w[grp * cin_g * m..(grp + 1) * cin_g * m];
            let xg = &x[(n * g.c_in + grp * cin_g) * in_plane
                ..(n * g.c_in + (grp + 1) * cin_g) * in_plane];
            let first = n * g.c_out + grp * cout_g;
            let og = &mut out[first * plane..(first + cout_g) * plane];
            let bg = bias.map(|b| &b[grp * cout_g..(grp + 1) * cout_g]);
            crate::threads::for_each_chunk(og, chunk_channels * plane, |i, oc| {
                let (c0, c1) = (i * chunk_channels, i * chunk_channels + oc.len() / plane);
                let band = TransposeBand {
                    pixels: (0, in_plane),
                    out_rows: (0, g.oh),
                };
                let (rows, bias) = ((c0 * taps, c1 * taps), bg.map(|b| &b[c0..c1]));
                transpose_products(simd, (wg, m), xg, cin_g, rows, bias, band, g, oc);
            });
        }
        let sample = g.c_out * plane;
        finish(&mut out[n * sample..(n + 1) * sample], n * sample, epi);
    }
}

/// True when the output rows of different input rows of a transposed convolution never
/// meet (`(kh - 1) * dilation_h < stride_h`: a 2x2 kernel of stride 2, as U-Nets
/// upsample), so bands of input rows write bands of output rows of their own.
#[cfg(feature = "threads")]
fn transpose_rows_apart(g: &Conv2dGeom) -> bool {
    (g.kh - 1) * g.dilation_h < g.stride_h
}

/// [`conv_transpose2d`] with bands of input rows split over `parts` threads, each writing
/// the band of output rows its input rows reach (every channel; the rows between bands'
/// reaches, which no tap reaches, go to the band above) and running the epilogue on them.
/// The same rows of every plane stay with the same thread, as in the convolutions before
/// and after (`conv2d_winograd` splits rows of tiles): when the two cores share no cache,
/// a core reading what the other wrote waits on it.
#[cfg(feature = "threads")]
fn transpose_by_row_bands(
    simd: bool,
    (x, w, bias): (&[f32], &[f32], Option<&[f32]>),
    out: &mut [f32],
    g: &Conv2dGeom,
    epi: &(impl Fn(usize, f32) -> f32 + Sync),
    parts: usize,
) {
    let (cin_g, cout_g) = (g.c_in / g.groups, g.c_out / g.groups);
    let m = cout_g * g.kh * g.kw;
    let (plane, in_plane) = (g.oh * g.ow, g.h * g.w);
    let per_part = g.h.div_ceil(parts);
    // the first output row of input row `iy`'s band (clipped to the map)
    let reach = |iy: usize| (iy * g.stride_h).saturating_sub(g.pad_top).min(g.oh);
    let out = SplitOutput::new(out);
    crate::threads::for_each_part(g.h.div_ceil(per_part), |i| {
        let (y0, y1) = (i * per_part, g.h.min((i + 1) * per_part));
        let from = if i == 0 { 0 } else { reach(y0) };
        let to = if y1 == g.h { g.oh } else { reach(y1) };
        let band = TransposeBand {
            pixels: (y0 * g.w, y1 * g.w),
            out_rows: (from, to),
        };
        let len = (to - from) * g.ow;
        // the band's rows of every output plane, summed in a buffer of the thread's own
        // (the rows of one band are not contiguous in `out`), then stored
        crate::threads::with_scratch(g.c_out * len, |sums| {
            for n in 0..g.n {
                for grp in 0..g.groups {
                    let wg = &w[grp * cin_g * m..(grp + 1) * cin_g * m];
                    let xg = &x[(n * g.c_in + grp * cin_g) * in_plane
                        ..(n * g.c_in + (grp + 1) * cin_g) * in_plane];
                    let og = &mut sums[grp * cout_g * len..(grp + 1) * cout_g * len];
                    let bg = bias.map(|b| &b[grp * cout_g..(grp + 1) * cout_g]);
                    transpose_products(simd, (wg, m), xg, cin_g, (0, m), bg, band, g, og);
                }
                for (c, rows) in sums.chunks_exact(len).enumerate() {
                    let at = (n * g.c_out + c) * plane + from * g.ow;
                    // SAFETY: part `i` alone writes output rows `from..to` of each plane
                    #[allow(unsafe_code)]
                    let dst = unsafe { out.range(at, len) };
                    dst.copy_from_slice(rows);
                    finish(dst, at, epi);
                }
            }
        });
    });
}

/// The input pixels `pixels.0..pixels.1` (of each input plane) a call of
/// [`transpose_products`] reads, and the output rows `out_rows.0..out_rows.1` its output
/// planes hold: products reaching other rows are cropped.
#[derive(Clone, Copy)]
struct TransposeBand {
    pixels: (usize, usize),
    out_rows: (usize, usize),
}

/// Rows `r0..r1` of the transposed convolution's products (row `oc * taps + tap`) for
/// every panel of the `band`'s input pixels, each added to its output pixel in `out`
/// (the band's output rows of the planes of output channels `r0 / taps..`, one after
/// another), which starts from `bias` (of those channels) or zeros. `wg` is the group's
/// weight with `m` rows a column. On AVX-512 a 2x2 kernel of stride 2 whose taps reach
/// each output pixel once writes its sums straight to their pixels instead
/// ([`transpose2x2_band`]).
#[allow(clippy::too_many_arguments)]
fn transpose_products(
    simd: bool,
    (wg, m): (&[f32], usize),
    xg: &[f32],
    depth: usize,
    (r0, r1): (usize, usize),
    bias: Option<&[f32]>,
    band: TransposeBand,
    g: &Conv2dGeom,
    out: &mut [f32],
) {
    let taps = g.kh * g.kw;
    let in_plane = g.h * g.w;
    let (p_first, p_end) = band.pixels;
    let (row_first, row_end) = band.out_rows;
    let plane = (row_end - row_first) * g.ow;
    #[cfg(target_arch = "x86_64")]
    if Isa::of(simd) == Isa::Avx512 && transpose_one_tap_each(g) {
        transpose2x2_band(
            (wg, m),
            xg,
            depth,
            (r0 / taps, r1 / taps),
            bias,
            band,
            g,
            out,
        );
        return;
    }
    for (c, o) in out.chunks_exact_mut(plane).enumerate() {
        o.fill(bias.map_or(0.0, |b| b[c]));
    }
    let mut products = [0.0f32; TRANSPOSE_ROWS * PANEL];
    let mut panel = [0.0f32; PANEL * PANEL_DEPTH];
    // where each pixel of the panel lands for tap (0, 0) (may be negative: cropped)
    let mut top = [0isize; PANEL];
    let mut left = [0isize; PANEL];
    for p0 in (p_first..p_end).step_by(PANEL) {
        let cols = PANEL.min(p_end - p0);
        for j in 0..cols {
            let (iy, ix) = ((p0 + j) / g.w, (p0 + j) % g.w);
            top[j] = (iy * g.stride_h) as isize - g.pad_top as isize;
            left[j] = (ix * g.stride_w) as isize - g.pad_left as isize;
        }
        let one_row = cols == PANEL && top[0] == top[PANEL - 1];
        let ow = g.ow as isize;
        for b0 in (r0..r1).step_by(TRANSPOSE_ROWS) {
            let rows = TRANSPOSE_ROWS.min(r1 - b0);
            for k0 in (0..depth).step_by(PANEL_DEPTH) {
                let kc = PANEL_DEPTH.min(depth - k0);
                let (b, ldb): (&[f32], usize) = if cols == PANEL {
                    (&xg[k0 * in_plane + p0..], in_plane)
                } else {
                    for (r, row) in panel.chunks_exact_mut(PANEL).take(kc).enumerate() {
                        let at = (k0 + r) * in_plane + p0;
                        row[..cols].copy_from_slice(&xg[at..at + cols]);
                        row[cols..].fill(0.0);
                    }
                    (&panel, PANEL)
                };
                let start = if k0 == 0 {
                    Start::Zero
                } else {
                    Start::Accumulate
                };
                tile_panel(
                    simd,
                    (rows, kc, PANEL),
                    Lhs::Strided(&wg[k0 * m + b0..], 1, m),
                    (b, ldb),
                    (&mut products, PANEL),
                    start,
                );
            }
            // col2im: each product to the output pixel its tap reaches
            let mut paired = false; // the row was added with the one before it
            for (r, values) in products.chunks_exact(PANEL).take(rows).enumerate() {
                if core::mem::take(&mut paired) {
                    continue;
                }
                let (oc, tap) = ((b0 + r) / taps - r0 / taps, (b0 + r) % taps);
                let dy = ((tap / g.kw) * g.dilation_h) as isize;
                let dx = ((tap % g.kw) * g.dilation_w) as isize;
                let o = &mut out[oc * plane..(oc + 1) * plane];
                let (oy, first, last) = (top[0] + dy, left[0] + dx, left[PANEL - 1] + dx);
                let held = row_first as isize..row_end as isize;
                let inside = one_row && held.contains(&oy) && first >= 0;
                if inside
                    && g.stride_w == 2
                    && g.kw == 2
                    && g.dilation_w == 1
                    && tap % 2 == 0
                    && r + 1 < rows
                    && last + 1 < ow
                {
                    // a window as wide as the stride: this tap and the next (the row
                    // after this one) fill the run of 2 * PANEL outputs between them,
                    // interleaved
                    let at = (oy as usize - row_first) * g.ow + first as usize;
                    let next = &products[(r + 1) * PANEL..(r + 2) * PANEL];
                    let run = &mut o[at..at + 2 * PANEL];
                    for ((pair, &a), &b) in run.chunks_exact_mut(2).zip(values).zip(next) {
                        pair[0] += a;
                        pair[1] += b;
                    }
                    paired = true;
                    continue;
                }
                if inside && last < ow {
                    // the whole panel lands on one output row, `stride` apart
                    let at = (oy as usize - row_first) * g.ow + first as usize;
                    let run = &mut o[at..at + (PANEL - 1) * g.stride_w + 1];
                    for (slot, &v) in run.iter_mut().step_by(g.stride_w).zip(values) {
                        *slot += v;
                    }
                    continue;
                }
                for j in 0..cols {
                    let (oy, ox) = (top[j] + dy, left[j] + dx);
                    if held.contains(&oy) && ox >= 0 && (ox as usize) < g.ow {
                        o[(oy as usize - row_first) * g.ow + ox as usize] += values[j];
                    }
                }
            }
        }
    }
}

/// True when a transposed convolution reaches each output pixel by exactly one tap of
/// a 2x2 kernel: stride 2, no padding or dilation, the output twice the input (U-Nets'
/// upsampling).
#[cfg(target_arch = "x86_64")]
fn transpose_one_tap_each(g: &Conv2dGeom) -> bool {
    (
        g.kh,
        g.kw,
        g.stride_h,
        g.stride_w,
        g.dilation_h,
        g.dilation_w,
    ) == (2, 2, 2, 2, 1, 1)
        && (g.pad_top, g.pad_left) == (0, 0)
        && (g.oh, g.ow) == (2 * g.h, 2 * g.w)
}

/// [`transpose_products`] for [`transpose_one_tap_each`] on AVX-512: output channels
/// `c0..c1` of the `band`'s input rows, 32 pixels of a row and three channels at a time,
/// each sum written to its pixel (`simd::transpose2x2_avx512`, from the bias).
/// unet_small's upsamplings (`conv_classes`, two runs): 64 -> 32 on 32x32 140 -> 240-250
/// GFLOP/s, 32 -> 16 on 64x64 98 -> 215-218 (inside the model 0.127-0.129 -> 0.074 ms and
/// 0.184-0.187 -> 0.085-0.089, two rounds alternated), where the products' path stored
/// them, filled the output with the bias and added each one.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn transpose2x2_band(
    (wg, m): (&[f32], usize),
    xg: &[f32],
    depth: usize,
    (c0, c1): (usize, usize),
    bias: Option<&[f32]>,
    band: TransposeBand,
    g: &Conv2dGeom,
    out: &mut [f32],
) {
    use crate::simd::transpose2x2_avx512;
    let in_plane = g.h * g.w;
    let (row_first, row_end) = band.out_rows;
    let plane = (row_end - row_first) * g.ow;
    // the band's input rows; their outputs, rows `2 * iy` and `2 * iy + 1`, are the band's
    debug_assert!(band.pixels.0.is_multiple_of(g.w) && band.pixels.1.is_multiple_of(g.w));
    let (y0, y1) = (band.pixels.0 / g.w, band.pixels.1 / g.w);
    debug_assert!(2 * y0 >= row_first && 2 * y1 <= row_end);
    for iy in y0..y1 {
        for ix0 in (0..g.w).step_by(2 * PANEL) {
            let cols = (2 * PANEL).min(g.w - ix0);
            let x = (&xg[iy * g.w + ix0..], in_plane);
            let mut c = c0;
            while c < c1 {
                // three channels at a time, two where three would leave one
                let r = match c1 - c {
                    1 => 1,
                    2 | 4 => 2,
                    _ => 3,
                };
                let w = (&wg[4 * c..], m);
                let at = (c - c0) * plane + (2 * iy - row_first) * g.ow + 2 * ix0;
                let o = (&mut out[at..], g.ow, plane);
                let b = |i: usize| bias.filter(|_| i < r).map_or(0.0, |b| b[c - c0 + i]);
                // SAFETY: `simd` is true only where the CPU has AVX-512F (`Isa::of`); the
                // kernel checks its slices
                #[allow(unsafe_code)]
                unsafe {
                    let bias = core::array::from_fn(b);
                    match (r, cols > PANEL) {
                        (1, false) => transpose2x2_avx512::<1, 1>(w, x, depth, [bias[0]], cols, o),
                        (1, true) => transpose2x2_avx512::<1, 2>(w, x, depth, [bias[0]], cols, o),
                        (2, false) => {
                            transpose2x2_avx512::<2, 1>(w, x, depth, [bias[0], bias[1]], cols, o)
                        }
                        (2, true) => {
                            transpose2x2_avx512::<2, 2>(w, x, depth, [bias[0], bias[1]], cols, o)
                        }
                        (_, false) => transpose2x2_avx512::<3, 1>(w, x, depth, bias, cols, o),
                        (_, true) => transpose2x2_avx512::<3, 2>(w, x, depth, bias, cols, o),
                    }
                }
                c += r;
            }
        }
    }
}

/// Geometry of 2-d pooling over `planes` independent `h x w` planes.
#[derive(Clone, Copy, Debug)]
pub struct Pool2dGeom {
    /// batch times channels
    pub planes: usize,
    /// input height
    pub h: usize,
    /// input width
    pub w: usize,
    /// output height
    pub oh: usize,
    /// output width
    pub ow: usize,
    /// window height
    pub kh: usize,
    /// window width
    pub kw: usize,
    /// vertical stride
    pub stride_h: usize,
    /// horizontal stride
    pub stride_w: usize,
    /// top padding
    pub pad_top: usize,
    /// left padding
    pub pad_left: usize,
    /// bottom padding
    pub pad_bottom: usize,
    /// right padding
    pub pad_right: usize,
    /// vertical dilation
    pub dilation_h: usize,
    /// horizontal dilation
    pub dilation_w: usize,
}

/// Max pooling; padding never wins.
///
/// In place when `x` is empty: `out` then holds the input (`planes * h * w` floats) and
/// receives the output at its start (see `pool2d_in_place` for when that is possible).
/// On AVX-512, windows of horizontal stride 2 have their own kernel
/// (`simd::max_pool_s2_avx512`, 16 outputs per vector); other windows split rows into
/// stride phases. With threads, large poolings out of place split bands of output rows
/// over them (`pool_by_row_bands`).
pub fn max_pool2d(
    x: &[f32],
    out: &mut [f32],
    g: &Pool2dGeom,
    epi: impl Fn(usize, f32) -> f32 + Sync,
) {
    #[cfg(feature = "threads")]
    if !x.is_empty() && pool_worth_splitting(g) {
        pool_by_row_bands(x, out, g, |x, out, band, base| {
            max_pool2d_on(x, out, band, &|k, v| epi(base + k, v))
        });
        return;
    }
    max_pool2d_on(x, out, g, &epi);
}

/// Input floats from which a pooling splits over threads.
#[cfg(feature = "threads")]
const POOL_PARALLEL_MIN_INPUT: usize = 1 << 15;

/// True when [`pool_by_row_bands`] runs a pooling on the threads.
#[cfg(feature = "threads")]
fn pool_worth_splitting(g: &Pool2dGeom) -> bool {
    crate::threads::current() > 1 && g.oh > 1 && g.planes * g.h * g.w >= POOL_PARALLEL_MIN_INPUT
}

/// A pooling with bands of output rows split over the threads, each band of every plane
/// computed by `pool(input, output, geometry, base)` (`base`: the index of the band's
/// first output, for the epilogue) on the plane's input rows from
/// the first the band's windows read, as a pooling of its own (one plane, the band's
/// rows, its top padding what is left of the map's above those rows). The same rows of
/// every plane stay with the same thread, as in the convolutions before and after
/// (`conv2d_winograd` splits rows of tiles): when the two cores share no cache, a core
/// reading what the other wrote waits on it.
#[cfg(feature = "threads")]
fn pool_by_row_bands(
    x: &[f32],
    out: &mut [f32],
    g: &Pool2dGeom,
    pool: impl Fn(&[f32], &mut [f32], &Pool2dGeom, usize) + Sync,
) {
    let (in_plane, plane) = (g.h * g.w, g.oh * g.ow);
    let parts = crate::threads::current().min(g.oh);
    let per_part = g.oh.div_ceil(parts);
    let out = SplitOutput::new(&mut out[..g.planes * plane]);
    crate::threads::for_each_part(g.oh.div_ceil(per_part), |i| {
        let (r0, r1) = (i * per_part, g.oh.min((i + 1) * per_part));
        let top = r0 * g.stride_h;
        let first_row = top.saturating_sub(g.pad_top).min(g.h);
        let band = Pool2dGeom {
            planes: 1,
            h: g.h - first_row,
            oh: r1 - r0,
            pad_top: g.pad_top.saturating_sub(top),
            ..*g
        };
        for p in 0..g.planes {
            let from = p * plane + r0 * g.ow;
            let input = &x[p * in_plane + first_row * g.w..(p + 1) * in_plane];
            // SAFETY: part `i` alone writes output rows `r0..r1` of each plane
            #[allow(unsafe_code)]
            let rows = unsafe { out.range(from, band.oh * g.ow) };
            pool(input, rows, &band, from);
        }
    });
}

/// [`max_pool2d`] on the calling thread.
fn max_pool2d_on(x: &[f32], out: &mut [f32], g: &Pool2dGeom, epi: &impl Fn(usize, f32) -> f32) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512() && crate::simd::max_pool_s2_fits(g) {
        let x = (!x.is_empty()).then_some(x);
        // SAFETY: `max_pool_s2_avx512` needs AVX-512F, which `avx512` has just checked,
        // and a geometry that `max_pool_s2_fits`.
        #[allow(unsafe_code)]
        unsafe {
            crate::simd::max_pool_s2_avx512(x, out, g, epi)
        };
        return;
    }
    if x.is_empty() {
        max_pool2d_in_place(out, g, epi);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx2_fma() {
        // SAFETY: `max_pool2d_avx2` needs AVX2 and FMA, and `avx2_fma` has just checked
        // that this CPU has both.
        #[allow(unsafe_code)]
        unsafe {
            crate::simd::max_pool2d_avx2(x, out, g, epi)
        };
        return;
    }
    max_pool2d_portable(x, out, g, epi);
}

/// [`max_pool2d_rows`] kept out of line: its phase rows (1 KiB on a microcontroller) then
/// exist only while a pooling runs, not in every caller's frame (under the convolutions'
/// buffers when the caller goes on to run one).
#[inline(never)]
fn max_pool2d_portable(
    x: &[f32],
    out: &mut [f32],
    g: &Pool2dGeom,
    epi: &impl Fn(usize, f32) -> f32,
) {
    max_pool2d_rows(x, out, g, epi);
}

/// [`max_pool2d`] in place (see [`pool2d_in_place`]), out of line as
/// [`max_pool2d_portable`].
#[inline(never)]
fn max_pool2d_in_place(buf: &mut [f32], g: &Pool2dGeom, epi: &impl Fn(usize, f32) -> f32) {
    let mut phases = [0.0f32; POOL_ROW];
    pool2d_in_place(buf, g, epi, |xp, oy, row| {
        max_pool2d_row(xp, g, oy, row, &mut phases)
    });
}

/// Input columns [`max_pool2d_rows`] splits into phase rows on the stack.
const POOL_ROW: usize = stack_floats(4096, 256);

/// Widest output row a pooling computes in place (`pool2d_in_place` keeps one on the
/// stack); the compiler plans a pooling in place only up to this width.
pub const IN_PLACE_POOL_ROW: usize = 256;

/// Runs a 2-d pooling whose output overwrites its input, in `buf`: the input's
/// `planes * h * w` floats on entry, the output's `planes * oh * ow` at its start on
/// return. Output rows are computed in order, each by `row_of(input plane, oy, row)` into
/// a stack row (at most [`IN_PLACE_POOL_ROW`] wide), then stored. That is correct when
/// no stored row reaches input a later row reads: with `first(oy) = min(h, max(0, oy *
/// stride_h - pad_top))` the first input row output row `oy` can read, output row `oy`
/// of plane 0 must end at or before `first(oy + 1) * w`, and `oh * ow <= h * w` (then
/// every later plane has more room than plane 0). The memory plan checks exactly this
/// before it gives a pooling its input's place (`plan::pools_in_place`).
///
/// Its callers are kept out of line, so that its stack row lives only while a pooling
/// runs, not beside the convolutions' buffers in an inlining caller's frame.
#[inline(always)]
fn pool2d_in_place(
    buf: &mut [f32],
    g: &Pool2dGeom,
    epi: &impl Fn(usize, f32) -> f32,
    mut row_of: impl FnMut(&[f32], usize, &mut [f32]),
) {
    debug_assert!(
        g.ow <= IN_PLACE_POOL_ROW,
        "an output row too wide to pool in place"
    );
    debug_assert!(buf.len() >= g.planes * g.h * g.w);
    let mut row = [0.0f32; IN_PLACE_POOL_ROW];
    let row = &mut row[..g.ow];
    let in_plane = g.h * g.w;
    for p in 0..g.planes {
        for oy in 0..g.oh {
            row_of(&buf[p * in_plane..(p + 1) * in_plane], oy, row);
            let base = (p * g.oh + oy) * g.ow;
            finish(row, base, epi);
            buf[base..base + g.ow].copy_from_slice(row);
        }
    }
}

/// [`max_pool2d`], a whole output row at a time: each input row the window reaches is
/// split once into `stride` phase rows (phase `q` holds columns `q, q + stride, ...`), so
/// that every window tap is one contiguous run of compare-and-selects over the output
/// row, which vectorizes whatever the stride. Rows wider than [`POOL_ROW`] read the input
/// with a stride. Public within the crate so the AVX2 build (`simd::max_pool2d_avx2`)
/// compiles the same code with wider vectors.
#[inline(always)]
pub(crate) fn max_pool2d_rows(
    x: &[f32],
    out: &mut [f32],
    g: &Pool2dGeom,
    epi: &impl Fn(usize, f32) -> f32,
) {
    let mut phases = [0.0f32; POOL_ROW];
    for p in 0..g.planes {
        let xp = &x[p * g.h * g.w..(p + 1) * g.h * g.w];
        for oy in 0..g.oh {
            let base = (p * g.oh + oy) * g.ow;
            let row = &mut out[base..base + g.ow];
            max_pool2d_row(xp, g, oy, row, &mut phases);
            finish(row, base, epi);
        }
    }
}

/// Output row `oy` of max pooling one input plane `xp` (see [`max_pool2d_rows`]), with
/// `phases` as the phase rows' buffer.
#[inline(always)]
fn max_pool2d_row(
    xp: &[f32],
    g: &Pool2dGeom,
    oy: usize,
    row: &mut [f32],
    phases: &mut [f32; POOL_ROW],
) {
    let top = oy * g.stride_h;
    let inside = g.pad_top == 0
        && g.pad_left == 0
        && g.dilation_h == 1
        && g.dilation_w == 1
        && top + g.kh <= g.h
        && (g.ow.max(1) - 1) * g.stride_w + g.kw <= g.w;
    if inside && crate::simd::register_blocked() {
        // a scalar FPU: each window read where it lies (no phase rows to split, no pass
        // per tap over the output row); taps in the same order as below
        for (ox, o) in row.iter_mut().enumerate() {
            let mut best = f32::NEG_INFINITY;
            for ky in 0..g.kh {
                let at = (top + ky) * g.w + ox * g.stride_w;
                for &v in &xp[at..at + g.kw] {
                    best = if v > best || v.is_nan() { v } else { best };
                }
            }
            *o = best;
        }
        return;
    }
    let s = g.stride_w.max(1);
    let phase_len = g.w.div_ceil(s);
    let split = s * phase_len <= POOL_ROW;
    row.fill(f32::NEG_INFINITY);
    let (ky0, ky1) = valid_range(g.kh, g.h, g.dilation_h, g.pad_top, oy * g.stride_h);
    for ky in ky0..ky1 {
        let iy = oy * g.stride_h + ky * g.dilation_h - g.pad_top;
        let xrow = &xp[iy * g.w..(iy + 1) * g.w];
        if split {
            // phase `q`: columns `q, q + s, ...` (no division per column)
            for (q, phase) in phases.chunks_exact_mut(phase_len).take(s).enumerate() {
                let len = g.w.saturating_sub(q).div_ceil(s);
                gather_strided(&mut phase[..len], &xrow[q.min(g.w)..], s);
            }
        }
        for kx in 0..g.kw {
            let (x0, x1) = valid_range(g.ow, g.w, g.stride_w, g.pad_left, kx * g.dilation_w);
            if x0 >= x1 {
                continue;
            }
            // input column of output column `ox`: `ox * s + first - x0 * s`
            let first = x0 * s + kx * g.dilation_w - g.pad_left;
            let best = &mut row[x0..x1];
            if split {
                let at = (first % s) * phase_len + first / s;
                let taps = &phases[at..at + best.len()];
                for (b, &v) in best.iter_mut().zip(taps) {
                    *b = if v > *b || v.is_nan() { v } else { *b };
                }
            } else {
                let taps = xrow[first..].iter().step_by(s);
                for (b, &v) in best.iter_mut().zip(taps) {
                    *b = if v > *b || v.is_nan() { v } else { *b };
                }
            }
        }
    }
}

/// Average pooling. With `count_include_pad` the divisor is the window clipped to the
/// padded input (PyTorch); otherwise the number of real input elements in the window.
///
/// In place when `x` is empty, as [`max_pool2d`].
pub fn avg_pool2d(
    x: &[f32],
    out: &mut [f32],
    g: &Pool2dGeom,
    count_include_pad: bool,
    epi: impl Fn(usize, f32) -> f32,
) {
    if x.is_empty() {
        avg_pool2d_in_place(out, g, count_include_pad, &epi);
        return;
    }
    let in_plane = g.h * g.w;
    for p in 0..g.planes {
        let xp = &x[p * in_plane..(p + 1) * in_plane];
        for oy in 0..g.oh {
            let base = (p * g.oh + oy) * g.ow;
            let row = &mut out[base..base + g.ow];
            avg_pool2d_row(xp, g, oy, count_include_pad, row);
            finish(row, base, &epi);
        }
    }
}

/// [`avg_pool2d`] in place (see [`pool2d_in_place`]), out of line as
/// [`max_pool2d_portable`].
#[inline(never)]
fn avg_pool2d_in_place(
    buf: &mut [f32],
    g: &Pool2dGeom,
    count_include_pad: bool,
    epi: &impl Fn(usize, f32) -> f32,
) {
    pool2d_in_place(buf, g, epi, |xp, oy, row| {
        avg_pool2d_row(xp, g, oy, count_include_pad, row)
    });
}

/// Output row `oy` of average pooling one input plane `xp` (see [`avg_pool2d`]).
fn avg_pool2d_row(xp: &[f32], g: &Pool2dGeom, oy: usize, count_include_pad: bool, row: &mut [f32]) {
    let y_start = (oy * g.stride_h) as isize - g.pad_top as isize;
    let y_end_padded =
        (y_start + ((g.kh - 1) * g.dilation_h + 1) as isize).min((g.h + g.pad_bottom) as isize);
    for (ox, o) in row.iter_mut().enumerate() {
        let x_start = (ox * g.stride_w) as isize - g.pad_left as isize;
        let x_end_padded =
            (x_start + ((g.kw - 1) * g.dilation_w + 1) as isize).min((g.w + g.pad_right) as isize);
        let mut sum = 0.0f32;
        let mut count = 0usize;
        let mut padded_count = 0usize;
        for ky in 0..g.kh {
            let iy = y_start + (ky * g.dilation_h) as isize;
            if iy >= y_end_padded {
                continue;
            }
            for kx in 0..g.kw {
                let ix = x_start + (kx * g.dilation_w) as isize;
                if ix >= x_end_padded {
                    continue;
                }
                padded_count += 1;
                if iy < 0 || iy >= g.h as isize || ix < 0 || ix >= g.w as isize {
                    continue;
                }
                sum += xp[iy as usize * g.w + ix as usize];
                count += 1;
            }
        }
        let divisor = if count_include_pad {
            padded_count
        } else {
            count
        };
        *o = sum / divisor.max(1) as f32;
    }
}

/// Mean of each of `planes` planes of `plane` floats.
pub fn global_avg_pool(
    x: impl Source,
    out: &mut [f32],
    planes: usize,
    plane: usize,
    epi: impl Fn(usize, f32) -> f32,
) {
    // the planes' elements into a buffer, a run of whole planes at a time (a loop the
    // compiler vectorizes, a fused prologue inlined), then each plane summed in lanes:
    // element by element into one chain of adds, mobilenet_v2's ReLU6 and pool of 1280
    // 7x7 planes took 0.052 ms (BENCHMARKS.md, twenty-seventh session)
    let mut buffer = [0.0f32; POOL_CHUNK];
    if (1..=POOL_CHUNK).contains(&plane) {
        let group = POOL_CHUNK / plane;
        for p0 in (0..planes).step_by(group) {
            let filled = &mut buffer[..group.min(planes - p0) * plane];
            x.fill(p0 * plane, filled);
            for (j, values) in filled.chunks_exact(plane).enumerate() {
                out[p0 + j] = epi(p0 + j, sum_in_lanes(values) / plane as f32);
            }
        }
        return;
    }
    for (p, slot) in out[..planes].iter_mut().enumerate() {
        let mut sum = 0.0;
        for c0 in (0..plane).step_by(POOL_CHUNK) {
            let chunk = &mut buffer[..POOL_CHUNK.min(plane - c0)];
            x.fill(p * plane + c0, chunk);
            sum += sum_in_lanes(chunk);
        }
        *slot = epi(p, sum / plane as f32);
    }
}

/// Floats [`global_avg_pool`] buffers at a time (2 KiB of stack on desktop CPUs).
const POOL_CHUNK: usize = stack_floats(512, 64);

/// The sum of `v` in eight interleaved partial sums (lanes the compiler vectorizes),
/// added pairwise at the end.
#[inline(always)]
fn sum_in_lanes(v: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut chunks = v.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += x;
        }
    }
    for (lane, &x) in lanes.iter_mut().zip(chunks.remainder()) {
        *lane += x;
    }
    let [a, b, c, d, e, f, g, h] = lanes;
    ((a + b) + (c + d)) + ((e + f) + (g + h))
}

/// Max of each of `planes` planes of `plane` floats.
pub fn global_max_pool(
    x: impl Source,
    out: &mut [f32],
    planes: usize,
    plane: usize,
    epi: impl Fn(usize, f32) -> f32,
) {
    for (p, slot) in out[..planes].iter_mut().enumerate() {
        *slot = epi(
            p,
            (p * plane..(p + 1) * plane).fold(f32::NEG_INFINITY, |m, i| math::max(m, x.at(i))),
        );
    }
}

/// What [`reduce`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    /// sum
    Sum,
    /// mean
    Mean,
    /// maximum
    Max,
    /// minimum
    Min,
    /// product
    Prod,
    /// sum of absolute values
    L1,
    /// square root of the sum of squares
    L2,
    /// sum of squares
    SumSquare,
    /// natural log of the sum
    LogSum,
    /// natural log of the sum of exponentials, one pass with a running maximum
    LogSumExp,
}

/// Reduces over the `red_*` axes for every index of the kept axes (strides are the
/// input's).
#[allow(clippy::too_many_arguments)]
pub fn reduce(
    x: impl Source,
    out: &mut [f32],
    kept_dims: &[usize],
    kept_strides: &[usize],
    red_dims: &[usize],
    red_strides: &[usize],
    kind: Reduction,
    epi: impl Fn(usize, f32) -> f32,
) {
    let count: usize = red_dims.iter().product();
    walk(kept_dims, [kept_strides], |i, [base]| {
        let value = if kind == Reduction::LogSumExp {
            log_sum_exp(&x, base, red_dims, red_strides)
        } else {
            let mut acc = match kind {
                Reduction::Prod => 1.0,
                Reduction::Max => f32::NEG_INFINITY,
                Reduction::Min => f32::INFINITY,
                _ => 0.0,
            };
            walk(red_dims, [red_strides], |_, [r]| {
                let v = x.at(base + r);
                acc = match kind {
                    Reduction::Sum | Reduction::Mean | Reduction::LogSum => acc + v,
                    Reduction::L1 => acc + math::abs(v),
                    Reduction::L2 | Reduction::SumSquare => acc + v * v,
                    Reduction::Prod => acc * v,
                    Reduction::Max => math::max(acc, v),
                    Reduction::Min => math::min(acc, v),
                    Reduction::LogSumExp => acc,
                };
            });
            match kind {
                Reduction::Mean => acc / count as f32,
                Reduction::L2 => math::sqrt(acc),
                Reduction::LogSum => math::ln(acc),
                _ => acc,
            }
        };
        out[i] = epi(i, value);
    });
}

/// `ln(sum(exp(x)))` over one reduced set, in one pass: the sum is kept relative to the
/// running maximum, so large inputs do not overflow; an empty set gives minus infinity.
fn log_sum_exp(x: &impl Source, base: usize, red_dims: &[usize], red_strides: &[usize]) -> f32 {
    let (mut m, mut s) = (f32::NEG_INFINITY, 0.0f32);
    walk(red_dims, [red_strides], |_, [r]| {
        let v = x.at(base + r);
        if v.is_nan() || m.is_nan() {
            m = f32::NAN;
        } else if v > m {
            s = s * math::exp(m - v) + 1.0;
            m = v;
        } else if v == m {
            s += 1.0;
        } else {
            s += math::exp(v - m);
        }
    });
    if m.is_infinite() {
        m
    } else {
        m + math::ln(s)
    }
}

/// Softmax along an axis of length `len`, for `outer * inner` rows with stride `inner`.
/// Reads each element of `x` once (into `out`), then works in place. Along the last axis
/// (`inner == 1`), with threads, the rows split over them.
pub fn softmax(
    x: impl Source + Sync,
    out: &mut [f32],
    outer: usize,
    len: usize,
    inner: usize,
    epi: impl Fn(usize, f32) -> f32 + Sync,
) {
    if inner == 1 {
        // along the last axis: contiguous rows (with threads, split over them)
        over_rows(out, outer, len, |first, out, rows| {
            let x = Shifted(&x, first * len);
            let epi = |i: usize, v: f32| epi(i + first * len, v);
            #[cfg(target_arch = "x86_64")]
            if crate::simd::avx2_fma() {
                // SAFETY: `avx2_fma` has just found AVX2 and FMA on this CPU.
                #[allow(unsafe_code)]
                unsafe {
                    crate::simd::softmax_rows_avx2(&x, out, rows, len, &epi)
                };
                return;
            }
            softmax_rows(&x, out, rows, len, &epi);
        });
        return;
    }
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * len + k) * inner + i;
            let mut m = f32::NEG_INFINITY;
            for k in 0..len {
                let v = x.at(at(k));
                out[at(k)] = v;
                m = math::max(m, v);
            }
            let mut sum = 0.0;
            for k in 0..len {
                let e = math::exp(out[at(k)] - m);
                out[at(k)] = e;
                sum += e;
            }
            let inv = 1.0 / sum;
            for k in 0..len {
                out[at(k)] = epi(at(k), out[at(k)] * inv);
            }
        }
    }
}

/// [`softmax`] along contiguous rows of `len`: the maximum and the sum in eight partial
/// lanes (so the loops vectorize; the sum's order differs from a left-to-right one by
/// rounding only), `exp` in a loop of its own.
#[inline(always)]
pub(crate) fn softmax_rows(
    x: &impl Source,
    out: &mut [f32],
    outer: usize,
    len: usize,
    epi: &impl Fn(usize, f32) -> f32,
) {
    for o in 0..outer {
        let base = o * len;
        let row = &mut out[base..base + len];
        x.fill(base, row);
        // the maximum only shifts the exponents, and a NaN makes every output NaN
        // through `exp` whichever maximum it gives: on aarch64 `f32::max` (`fmaxnm`, which
        // vectorizes there; `math::max`'s NaN test compiled to a compare and a select per
        // float: a fifth of bert_tiny's softmax instructions)
        #[cfg(target_arch = "aarch64")]
        let m = lanes(row, f32::NEG_INFINITY, f32::max);
        #[cfg(not(target_arch = "aarch64"))]
        let m = lanes(row, f32::NEG_INFINITY, math::max);
        let inv = 1.0 / exp_shifted(row, m);
        for (k, v) in row.iter_mut().enumerate() {
            *v = epi(base + k, *v * inv);
        }
    }
}

/// `row[i] = e^(row[i] - shift)` for `row[i] <= shift` (softmax after its maximum),
/// returning their sum: on AVX-512 a kernel of its own, 16 lanes wide; elsewhere
/// [`math::exp`] per element, inlined into the caller's loop (eight wide in
/// `simd::softmax_rows_avx2`).
#[inline(always)]
fn exp_shifted(row: &mut [f32], shift: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512() {
        // SAFETY: AVX-512F was just found on this CPU
        #[allow(unsafe_code)]
        return unsafe { crate::simd::exp_shifted_avx512(row, shift) };
    }
    for v in row.iter_mut() {
        *v = math::exp(*v - shift);
    }
    lanes(row, 0.0, |a, b| a + b)
}

/// Folds `values` with `f` in interleaved lanes, then the lanes together (`start` is
/// the identity of `f`: 0 for a sum, -inf for a maximum).
#[inline(always)]
fn lanes(values: &[f32], start: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    lanes_by(values, start, &f, &f)
}

/// Folds `values` into interleaved lanes with `step(lane, value)`, then the lanes together
/// with `merge` (`start` the identity of both): 32 lanes while whole blocks of 32 last
/// (four vectors of eight, four chains of additions in flight: with one, each addition
/// waited on the one before, and layer norm's two passes were 2.6% of bert_tiny), then
/// eight, then one at a time.
#[inline(always)]
fn lanes_by(
    values: &[f32],
    start: f32,
    step: impl Fn(f32, f32) -> f32,
    merge: impl Fn(f32, f32) -> f32,
) -> f32 {
    let mut wide = [start; 32];
    let mut blocks = values.chunks_exact(32);
    for block in &mut blocks {
        for (a, &v) in wide.iter_mut().zip(block) {
            *a = step(*a, v);
        }
    }
    let mut acc = [start; 8];
    for part in wide.chunks_exact(8) {
        for (a, &w) in acc.iter_mut().zip(part) {
            *a = merge(*a, w);
        }
    }
    let mut chunks = blocks.remainder().chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = step(*a, v);
        }
    }
    let mut total = start;
    for &v in chunks.remainder() {
        total = step(total, v);
    }
    acc.iter().fold(total, |t, &a| merge(t, a))
}

/// `log(softmax(x))` along an axis, computed as `x - max - log(sum(exp(x - max)))`.
pub fn log_softmax(
    x: impl Source,
    out: &mut [f32],
    outer: usize,
    len: usize,
    inner: usize,
    epi: impl Fn(usize, f32) -> f32,
) {
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * len + k) * inner + i;
            let mut m = f32::NEG_INFINITY;
            for k in 0..len {
                let v = x.at(at(k));
                out[at(k)] = v;
                m = math::max(m, v);
            }
            let mut sum = 0.0;
            for k in 0..len {
                sum += math::exp(out[at(k)] - m);
            }
            let shift = m + math::ln(sum);
            for k in 0..len {
                out[at(k)] = epi(at(k), out[at(k)] - shift);
            }
        }
    }
}

/// Mean and biased variance of a slice (two passes, each summed in interleaved lanes
/// by [`lanes_by`]: one chain of additions in order waited on each addition).
#[inline(always)]
fn moments(v: &[f32]) -> (f32, f32) {
    let n = v.len().max(1) as f32;
    let add = |a: f32, b: f32| a + b;
    let mean = lanes(v, 0.0, add) / n;
    let square = |a: f32, x: f32| a + (x - mean) * (x - mean);
    (mean, lanes_by(v, 0.0, square, add) / n)
}

/// Layer normalization of `rows` rows of `cols` floats, with optional affine. Reads each
/// element of `x` once (into `out`), then normalizes in place. With threads, the rows
/// split over them.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm(
    x: impl Source + Sync,
    w: Option<&[f32]>,
    b: Option<&[f32]>,
    out: &mut [f32],
    rows: usize,
    cols: usize,
    eps: f32,
    epi: impl Fn(usize, f32) -> f32 + Sync,
) {
    // (with threads, the rows split over them)
    over_rows(out, rows, cols, |first, out, rows| {
        let x = Shifted(&x, first * cols);
        let epi = |i: usize, v: f32| epi(i + first * cols, v);
        #[cfg(target_arch = "x86_64")]
        if crate::simd::avx2_fma() {
            let shape = (rows, cols);
            // SAFETY: `avx2_fma` has just found AVX2 and FMA on this CPU, `avx512`
            // AVX-512F.
            #[allow(unsafe_code)]
            unsafe {
                if crate::simd::avx512() {
                    crate::simd::layer_norm_rows_avx512(&x, (w, b), out, shape, eps, &epi)
                } else {
                    crate::simd::layer_norm_rows_avx2(&x, (w, b), out, shape, eps, &epi)
                }
            };
            return;
        }
        layer_norm_rows(&x, (w, b), out, (rows, cols), eps, &epi);
    });
}

/// [`layer_norm`]'s loop; public within the crate so the AVX2 build
/// (`simd::layer_norm_rows_avx2`) compiles the same code with wider vectors.
#[inline(always)]
pub(crate) fn layer_norm_rows(
    x: &impl Source,
    (w, b): (Option<&[f32]>, Option<&[f32]>),
    out: &mut [f32],
    (rows, cols): (usize, usize),
    eps: f32,
    epi: &impl Fn(usize, f32) -> f32,
) {
    for r in 0..rows {
        let or = &mut out[r * cols..(r + 1) * cols];
        x.fill(r * cols, or);
        let (mean, var) = moments(or);
        let inv = 1.0 / math::sqrt(var + eps);
        let base = r * cols;
        // one loop per affine form, so that each vectorizes (no test per element)
        match (w, b) {
            (Some(w), Some(b)) => {
                let wb = w[..cols].iter().zip(&b[..cols]);
                for (c, (o, (&wv, &bv))) in or.iter_mut().zip(wb).enumerate() {
                    *o = epi(base + c, (*o - mean) * inv * wv + bv);
                }
            }
            (Some(w), None) => {
                for (c, (o, &wv)) in or.iter_mut().zip(&w[..cols]).enumerate() {
                    *o = epi(base + c, (*o - mean) * inv * wv);
                }
            }
            (None, Some(b)) => {
                for (c, (o, &bv)) in or.iter_mut().zip(&b[..cols]).enumerate() {
                    *o = epi(base + c, (*o - mean) * inv + bv);
                }
            }
            (None, None) => {
                for (c, o) in or.iter_mut().enumerate() {
                    *o = epi(base + c, (*o - mean) * inv);
                }
            }
        }
    }
}

/// Inference batch normalization over `[n, c, inner]`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    mean: &[f32],
    var: &[f32],
    out: &mut [f32],
    n: usize,
    c: usize,
    inner: usize,
    eps: f32,
) {
    for ch in 0..c {
        let scale = w[ch] / math::sqrt(var[ch] + eps);
        let shift = b[ch] - mean[ch] * scale;
        for s in 0..n {
            let at = (s * c + ch) * inner;
            for (o, &v) in out[at..at + inner].iter_mut().zip(&x[at..at + inner]) {
                *o = v * scale + shift;
            }
        }
    }
}

/// Group normalization over `[n, c, inner]` with `groups` channel groups (instance norm
/// is `groups == c`), optional per-channel affine.
#[allow(clippy::too_many_arguments)]
pub fn group_norm(
    x: &[f32],
    w: Option<&[f32]>,
    b: Option<&[f32]>,
    out: &mut [f32],
    n: usize,
    c: usize,
    inner: usize,
    groups: usize,
    eps: f32,
    epi: impl Fn(usize, f32) -> f32,
) {
    let per_group = c / groups * inner;
    for s in 0..n {
        for g in 0..groups {
            let at = (s * groups + g) * per_group;
            let (mean, var) = moments(&x[at..at + per_group]);
            let inv = 1.0 / math::sqrt(var + eps);
            for (k, (o, &v)) in out[at..at + per_group]
                .iter_mut()
                .zip(&x[at..at + per_group])
                .enumerate()
            {
                let ch = g * (c / groups) + k / inner;
                let mut y = (v - mean) * inv;
                if let Some(w) = w {
                    y *= w[ch];
                }
                if let Some(b) = b {
                    y += b[ch];
                }
                *o = epi(at + k, y);
            }
        }
    }
}

/// Joins `parts` along an axis: for each of `outer` rows, part `i` contributes `chunks[i]`
/// contiguous floats.
pub fn concat(parts: &[&[f32]], chunks: &[usize], out: &mut [f32], outer: usize) {
    let row: usize = chunks.iter().sum();
    for o in 0..outer {
        let mut at = o * row;
        for (part, &chunk) in parts.iter().zip(chunks) {
            out[at..at + chunk].copy_from_slice(&part[o * chunk..(o + 1) * chunk]);
            at += chunk;
        }
    }
}

/// How [`pad`] fills the border.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PadMode {
    /// a constant
    Constant(f32),
    /// mirror without repeating the edge
    Reflect,
    /// repeat the edge
    Edge,
}

/// Pads `x` (shape `in_dims`) with `before[axis]` elements before each axis into `out`.
pub fn pad(
    x: &[f32],
    in_dims: &[usize],
    before: &[usize],
    out: &mut [f32],
    out_dims: &[usize],
    mode: PadMode,
) {
    let rank = in_dims.len();
    let mut in_strides = [0usize; MAX_RANK];
    let mut acc = 1;
    for a in (0..rank).rev() {
        in_strides[a] = acc;
        acc *= in_dims[a];
    }
    let mut idx = [0usize; MAX_RANK];
    for slot in out.iter_mut() {
        let mut offset = 0;
        let mut inside = true;
        for a in 0..rank {
            let d = in_dims[a] as isize;
            let mut j = idx[a] as isize - before[a] as isize;
            if j < 0 || j >= d {
                match mode {
                    PadMode::Constant(_) => inside = false,
                    PadMode::Reflect => {
                        j = if j < 0 { -j } else { 2 * (d - 1) - j };
                    }
                    PadMode::Edge => j = j.clamp(0, d - 1),
                }
            }
            offset += j.max(0) as usize * in_strides[a];
        }
        *slot = match (inside, mode) {
            (false, PadMode::Constant(v)) => v,
            _ => x[offset],
        };
        // next output index
        for a in (0..rank).rev() {
            idx[a] += 1;
            if idx[a] < out_dims[a] {
                break;
            }
            idx[a] = 0;
        }
    }
}

/// Gathers rows along an axis: `x` is `[outer, len, inner]`, `indices` hold whole numbers
/// (negative ones count from the end). An index that is not a whole number in range
/// yields a row of NaN instead of a panic.
pub fn gather(x: &[f32], indices: &[f32], out: &mut [f32], outer: usize, len: usize, inner: usize) {
    let count = indices.len();
    for o in 0..outer {
        for (j, &raw) in indices.iter().enumerate() {
            let dst = &mut out[(o * count + j) * inner..(o * count + j + 1) * inner];
            let index = if raw < 0.0 { raw + len as f32 } else { raw };
            if math::floor(index) != index || !(0.0..len as f32).contains(&index) {
                dst.fill(f32::NAN);
                continue;
            }
            let i = index as usize;
            dst.copy_from_slice(&x[(o * len + i) * inner..(o * len + i + 1) * inner]);
        }
    }
}

/// Nearest-neighbour resize of `planes` planes (PyTorch `nearest`: `floor(o * in / out)`).
#[allow(clippy::too_many_arguments)]
pub fn resize_nearest(
    x: &[f32],
    out: &mut [f32],
    planes: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
) {
    for p in 0..planes {
        for oy in 0..oh {
            let iy = ((oy * h) / oh).min(h - 1);
            for ox in 0..ow {
                let ix = ((ox * w) / ow).min(w - 1);
                out[(p * oh + oy) * ow + ox] = x[(p * h + iy) * w + ix];
            }
        }
    }
}

/// Source coordinate and weights of bilinear sampling along one axis (PyTorch rules).
#[inline]
fn bilinear_tap(
    o: usize,
    in_len: usize,
    out_len: usize,
    align_corners: bool,
) -> (usize, usize, f32) {
    let src = if align_corners {
        if out_len > 1 {
            o as f32 * (in_len - 1) as f32 / (out_len - 1) as f32
        } else {
            0.0
        }
    } else {
        ((o as f32 + 0.5) * in_len as f32 / out_len as f32 - 0.5).max(0.0)
    };
    let i0 = (src as usize).min(in_len - 1);
    let i1 = (i0 + 1).min(in_len - 1);
    (i0, i1, src - i0 as f32)
}

/// Bilinear resize of `planes` planes on the last two axes.
#[allow(clippy::too_many_arguments)]
pub fn resize_bilinear(
    x: &[f32],
    out: &mut [f32],
    planes: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    align_corners: bool,
) {
    for p in 0..planes {
        let xp = &x[p * h * w..(p + 1) * h * w];
        for oy in 0..oh {
            let (y0, y1, ly) = bilinear_tap(oy, h, oh, align_corners);
            for ox in 0..ow {
                let (x0, x1, lx) = bilinear_tap(ox, w, ow, align_corners);
                let top = xp[y0 * w + x0] * (1.0 - lx) + xp[y0 * w + x1] * lx;
                let bottom = xp[y1 * w + x0] * (1.0 - lx) + xp[y1 * w + x1] * lx;
                out[(p * oh + oy) * ow + ox] = top * (1.0 - ly) + bottom * ly;
            }
        }
    }
}

/// The taps of one axis of [`resample`]: output index `o` reads input indices
/// `index[start[o]..start[o + 1]]` with `weight[..]` (same range), or is the extrapolation
/// value when `outside[o]` (an empty `outside` means never).
#[derive(Clone, Copy, Debug)]
pub struct ResampleAxis<'a> {
    /// first tap of each output index, plus one past the last
    pub start: &'a [usize],
    /// input index of each tap
    pub index: &'a [usize],
    /// weight of each tap
    pub weight: &'a [f32],
    /// outputs outside the region of interest
    pub outside: &'a [bool],
}

/// Separable resampling (ONNX `Resize`): every output element is the sum, over one tap
/// per axis, of the product of the tap weights times the input element at the tap
/// indices; an output outside the region of interest on any axis is `extrapolation`.
pub fn resample(
    x: &[f32],
    in_dims: &[usize],
    out: &mut [f32],
    out_dims: &[usize],
    axes: &[ResampleAxis<'_>],
    extrapolation: f32,
) {
    let rank = out_dims.len();
    debug_assert!(rank <= MAX_RANK && in_dims.len() == rank && axes.len() == rank);
    let mut in_strides = [0usize; MAX_RANK];
    let mut acc = 1;
    for a in (0..rank).rev() {
        in_strides[a] = acc;
        acc *= in_dims[a];
    }
    let mut idx = [0usize; MAX_RANK];
    for slot in out.iter_mut() {
        let outside = (0..rank).any(|a| axes[a].outside.get(idx[a]).copied().unwrap_or(false));
        *slot = if outside {
            extrapolation
        } else {
            // odometer over one tap per axis (an axis without taps contributes nothing)
            if (0..rank).any(|a| axes[a].start[idx[a]] == axes[a].start[idx[a] + 1]) {
                *slot = 0.0;
                for a in (0..rank).rev() {
                    idx[a] += 1;
                    if idx[a] < out_dims[a] {
                        break;
                    }
                    idx[a] = 0;
                }
                continue;
            }
            let mut tap = [0usize; MAX_RANK];
            for a in 0..rank {
                tap[a] = axes[a].start[idx[a]];
            }
            let mut sum = 0.0f32;
            'taps: loop {
                let mut w = 1.0f32;
                let mut offset = 0;
                for a in 0..rank {
                    w *= axes[a].weight[tap[a]];
                    offset += axes[a].index[tap[a]] * in_strides[a];
                }
                sum += w * x[offset];
                let mut a = rank;
                loop {
                    if a == 0 {
                        break 'taps;
                    }
                    a -= 1;
                    tap[a] += 1;
                    if tap[a] < axes[a].start[idx[a] + 1] {
                        break;
                    }
                    tap[a] = axes[a].start[idx[a]];
                }
            }
            sum
        };
        // next output index
        for a in (0..rank).rev() {
            idx[a] += 1;
            if idx[a] < out_dims[a] {
                break;
            }
            idx[a] = 0;
        }
    }
}

/// The function [`scan`] folds along its axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// running sum (`cumsum`)
    Sum,
    /// running product (`cumprod`)
    Prod,
    /// running maximum, NaN from the first NaN on (`cummax`)
    Max,
    /// running minimum, NaN from the first NaN on (`cummin`)
    Min,
    /// running `ln(sum(exp(x)))`, without overflow (`logcumsumexp`)
    LogSumExp,
}

/// A running fold along the middle axis of `[outer, len, inner]`: element `k` folds
/// elements `0..=k` (`0..k` when `exclusive`; counted from the end when `reverse`).
/// Works a whole row of `inner` at a time, each from the row before it.
#[allow(clippy::too_many_arguments)]
pub fn scan(
    x: &[f32],
    out: &mut [f32],
    outer: usize,
    len: usize,
    inner: usize,
    exclusive: bool,
    reverse: bool,
    kind: Scan,
) {
    let rows = (outer, len, inner, exclusive, reverse);
    match kind {
        Scan::Sum => scan_rows(x, out, rows, 0.0, |a, b| a + b),
        Scan::Prod => scan_rows(x, out, rows, 1.0, |a, b| a * b),
        Scan::Max => scan_rows(x, out, rows, f32::NEG_INFINITY, math::max),
        Scan::Min => scan_rows(x, out, rows, f32::INFINITY, math::min),
        Scan::LogSumExp => scan_rows(x, out, rows, f32::NEG_INFINITY, log_add_exp),
    }
}

/// `ln(exp(a) + exp(b))` without overflow; NaN if either is.
fn log_add_exp(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        return f32::NAN;
    }
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if hi.is_infinite() {
        hi
    } else {
        hi + math::ln(1.0 + math::exp(lo - hi))
    }
}

/// [`scan`] with its fold: `rows` is `(outer, len, inner, exclusive, reverse)`.
fn scan_rows(
    x: &[f32],
    out: &mut [f32],
    rows: (usize, usize, usize, bool, bool),
    start: f32,
    step: impl Fn(f32, f32) -> f32,
) {
    let (outer, len, inner, exclusive, reverse) = rows;
    for o in 0..outer {
        // the row before along the axis, once there is one
        let mut before: Option<usize> = None;
        for k in 0..len {
            let at = (o * len + if reverse { len - 1 - k } else { k }) * inner;
            for i in 0..inner {
                let running = match before {
                    Some(b) if exclusive => step(out[b + i], x[b + i]),
                    Some(b) => step(out[b + i], x[at + i]),
                    None if exclusive => start,
                    None => step(start, x[at + i]),
                };
                out[at + i] = running;
            }
            before = Some(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ONNX's `CumSum` examples, a running maximum along the outer axis of a matrix and
    /// one along its rows with a NaN, and log-sum-exp where the definition overflows
    /// (values worked by hand).
    #[test]
    fn scans_fold_along_the_axis() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let mut out = [0.0f32; 5];
        let mut cumsum = |exclusive, reverse| {
            scan(&x, &mut out, 1, 5, 1, exclusive, reverse, Scan::Sum);
            out
        };
        assert_eq!(cumsum(false, false), [1.0, 3.0, 6.0, 10.0, 15.0]);
        assert_eq!(cumsum(true, false), [0.0, 1.0, 3.0, 6.0, 10.0]);
        assert_eq!(cumsum(false, true), [15.0, 14.0, 12.0, 9.0, 5.0]);
        assert_eq!(cumsum(true, true), [14.0, 12.0, 9.0, 5.0, 0.0]);
        // [[1, 3, 2], [0, 9, f32::NAN]] along axis 0 (`inner` 3), exclusive
        let m = [1.0, 3.0, 2.0, 0.0, 9.0, f32::NAN];
        let mut out = [0.0f32; 6];
        scan(&m, &mut out, 1, 2, 3, true, false, Scan::Max);
        let inf = f32::INFINITY;
        assert_eq!(out, [-inf, -inf, -inf, 1.0, 3.0, 2.0]);
        // along the rows (`outer` 2), inclusive: NaN from the NaN on
        scan(&m, &mut out, 2, 3, 1, false, false, Scan::Min);
        assert_eq!(out[..5], [1.0, 1.0, 1.0, 0.0, 0.0]);
        assert!(out[5].is_nan());
        let big = [100.0f32, 100.0];
        let mut out = [0.0f32; 2];
        scan(&big, &mut out, 1, 2, 1, false, false, Scan::LogSumExp);
        assert_eq!(out[0], 100.0);
        assert!((out[1] - (100.0 + core::f32::consts::LN_2)).abs() < 1e-5);
    }

    #[test]
    fn walk_visits_broadcast_offsets() {
        // [2, 3] output, left operand [2, 1] (stride 1 on axis 0, 0 on axis 1)
        let mut seen = [(0usize, 0usize); 6];
        walk(&[2, 3], [&[1, 0]], |i, [a]| seen[i] = (i, a));
        assert_eq!(seen, [(0, 0), (1, 0), (2, 0), (3, 1), (4, 1), (5, 1)]);
    }

    extern crate std;
    use std::vec::Vec;

    /// True under miri for a case of more than `work` multiply-adds: miri interprets, and
    /// the small cases already take every path.
    fn too_slow_for_miri(work: usize) -> bool {
        cfg!(miri) && work > 20_000
    }

    /// Seeded values in [-1, 1) (the tests' shared generator).
    fn data(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = dnnfusion_test_support::Rng::new(seed);
        (0..len).map(|_| rng.uniform(-1.0, 1.0)).collect()
    }

    /// `softmax` along contiguous rows against its definition in f64 on every path: rows
    /// of 1 to 40 (whole vectors and masked tails) spread over [-30, 30], rows with
    /// an entry at minus infinity (masked attention: exactly 0 there) and a row of equal
    /// values; within `4 * len * eps` relative to each value plus `1e-12`.
    /// A row of minus infinities gives NaN, as `exp(-inf - -inf)` does.
    #[test]
    fn softmax_rows_match_the_definition() {
        for path in ["best", "avx2", "portable"] {
            let run = |f: &mut dyn FnMut()| match path {
                "avx2" => crate::simd::avx2_only(f),
                "portable" => crate::simd::portable(f),
                _ => f(),
            };
            for len in 1..=40 {
                let mut x: Vec<f32> = data(3 * len, 990 + len as u64)
                    .iter()
                    .map(|v| 30.0 * v)
                    .collect();
                if len > 1 {
                    // (alone in its row it would make the row NaN: tested below)
                    x[len] = f32::NEG_INFINITY;
                }
                x[2 * len..].fill(0.25);
                let mut out = std::vec![f32::NAN; 3 * len];
                run(&mut || softmax(&x[..], &mut out, 3, len, 1, |_, v| v));
                if len > 1 {
                    assert_eq!(out[len], 0.0, "{path}, {len}: e^-inf");
                }
                for (r, row) in x.chunks(len).enumerate() {
                    let m = row
                        .iter()
                        .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
                    let sum: f64 = row.iter().map(|&v| (f64::from(v) - m).exp()).sum();
                    for (i, &v) in row.iter().enumerate() {
                        let want = (f64::from(v) - m).exp() / sum;
                        let got = f64::from(out[r * len + i]);
                        let bound = 4.0 * len as f64 * f64::from(f32::EPSILON) * want + 1e-12;
                        assert!(
                            (got - want).abs() <= bound,
                            "{path}, row {r} of {len}: element {i}: {got}, not {want}"
                        );
                    }
                }
            }
            let masked = [f32::NEG_INFINITY; 5];
            let mut out = [0.0f32; 5];
            run(&mut || softmax(&masked[..], &mut out, 1, 5, 1, |_, v| v));
            assert!(out.iter().all(|v| v.is_nan()), "{path}: {out:?}");
        }
    }

    /// `gelu_row` against GELU's definition in f64 (libm's `erf`) on every path, rows of
    /// 0 to 40 floats (whole vectors and masked tails) with and without a bias, values
    /// spread over [-12, 12] (both ends of erf's range) and the special ones: within
    /// `2e-7 * max(1, |x|)` (`math::gelu`'s bound). A lane computed from its neighbour's
    /// input or left unwritten shows.
    #[test]
    fn gelu_row_matches_its_definition() {
        let gelu = |x: f32| {
            let x = f64::from(x);
            0.5 * x * (1.0 + libm::erf(x / core::f64::consts::SQRT_2))
        };
        for path in ["best", "portable"] {
            let run = |f: &mut dyn FnMut()| match path {
                "portable" => crate::simd::portable(f),
                _ => f(),
            };
            for len in 0..=40 {
                let x: Vec<f32> = data(len, 900 + len as u64)
                    .iter()
                    .map(|v| 12.0 * v)
                    .collect();
                let bias = data(len, 950 + len as u64);
                for with_bias in [false, true] {
                    let mut row = x.clone();
                    run(&mut || gelu_row(&mut row, with_bias.then_some(&bias[..])));
                    for (i, &got) in row.iter().enumerate() {
                        let input = x[i] + if with_bias { bias[i] } else { 0.0 };
                        let want = gelu(input);
                        let bound = 2e-7 * f64::from(input.abs()).max(1.0);
                        assert!(
                            (f64::from(got) - want).abs() <= bound,
                            "{path}, {len} floats, bias {with_bias}: element {i}: gelu({input}) = {got}, not {want}"
                        );
                    }
                }
            }
            let mut special = [f32::NAN, f32::INFINITY, 0.0, -0.0, 1e-30, 40.0, -40.0];
            run(&mut || gelu_row(&mut special, None));
            assert!(special[0].is_nan(), "{path}");
            assert_eq!(
                special[1..],
                [f32::INFINITY, 0.0, 0.0, 5e-31, 40.0, -0.0],
                "{path}"
            );
        }
    }

    /// [`gelu_row`] on a dense grid of [-10, 10] (2^18 points, every vector kernel lane
    /// and the tails of erf) within `math::gelu`'s bound, `2e-7 * max(1, |x|)` of the f64
    /// definition: a change of the vector exponential's evaluation order that costs
    /// accuracy shows here first.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "2^18 points: the lane-by-lane test above runs under miri"
    )]
    fn gelu_row_on_a_dense_grid() {
        let x: Vec<f32> = (0..1 << 18)
            .map(|i| -10.0 + i as f32 * (20.0 / (1 << 18) as f32))
            .collect();
        // the grid in the row, then as the bias of a row of zeros three shorter (the
        // kernels' last partial vector)
        for (path, biased) in [("best", false), ("best", true), ("portable", false)] {
            let (mut row, bias) = match biased {
                false => (x.clone(), None),
                true => (std::vec![0.0; x.len() - 3], Some(&x[..])),
            };
            match path {
                "portable" => crate::simd::portable(|| gelu_row(&mut row, bias)),
                _ => gelu_row(&mut row, bias),
            }
            let mut worst = 0.0f64;
            for (&input, &got) in x.iter().zip(&row) {
                let v = f64::from(input);
                let want = 0.5 * v * (1.0 + libm::erf(v / core::f64::consts::SQRT_2));
                let bound = 2e-7 * v.abs().max(1.0);
                worst = worst.max((f64::from(got) - want).abs() / bound);
                assert!(
                    (f64::from(got) - want).abs() <= bound,
                    "{path}: gelu({input}) = {got}, not {want}"
                );
            }
            std::println!("{path} (bias: {biased}): worst error {worst:.3} of the bound");
        }
    }

    /// The convolution by its definition, in f64: per output, its value and the sum of
    /// the magnitudes of its terms (what f32 rounding error scales with).
    fn conv2d_reference(x: &[f32], w: &[f32], bias: &[f32], g: &Conv2dGeom) -> Vec<(f32, f32)> {
        let (cin_g, cout_g) = (g.c_in / g.groups, g.c_out / g.groups);
        let mut out = Vec::new();
        for n in 0..g.n {
            for oc in 0..g.c_out {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let mut acc = f64::from(bias[oc]);
                        let mut size = acc.abs();
                        for icg in 0..cin_g {
                            let ic = oc / cout_g * cin_g + icg;
                            for ky in 0..g.kh {
                                for kx in 0..g.kw {
                                    let iy = (oy * g.stride_h + ky * g.dilation_h) as isize
                                        - g.pad_top as isize;
                                    let ix = (ox * g.stride_w + kx * g.dilation_w) as isize
                                        - g.pad_left as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let xv = x[((n * g.c_in + ic) * g.h + iy as usize) * g.w
                                        + ix as usize];
                                    let wv = w[((oc * cin_g + icg) * g.kh + ky) * g.kw + kx];
                                    acc += f64::from(xv) * f64::from(wv);
                                    size += (f64::from(xv) * f64::from(wv)).abs();
                                }
                            }
                        }
                        out.push((acc as f32, size as f32));
                    }
                }
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn geom(
        n: usize,
        (c_in, h, w): (usize, usize, usize),
        c_out: usize,
        k: usize,
        stride: [usize; 2],
        pad: usize,
        dilation: usize,
        groups: usize,
    ) -> Conv2dGeom {
        let out_len = |len: usize, s: usize| (len + 2 * pad - dilation * (k - 1) - 1) / s + 1;
        Conv2dGeom {
            n,
            c_in,
            h,
            w,
            c_out,
            oh: out_len(h, stride[0]),
            ow: out_len(w, stride[1]),
            kh: k,
            kw: k,
            stride_h: stride[0],
            stride_w: stride[1],
            pad_top: pad,
            pad_left: pad,
            dilation_h: dilation,
            dilation_w: dilation,
            groups,
        }
    }

    /// The Winograd F(2x2, 3x3) and F(4x4, 3x3) convolutions on every path (the best this
    /// CPU has, AVX2 only, portable) against the definition, on geometries with odd output sides (tiles
    /// cut by the edge), padding 0 and 1, a partial panel of tiles, output channels in
    /// whole blocks of 16 and a row-major tail, more input channels than one transformed
    /// block, a batch, several runs of tiles per panel (7-tile rows) and whole runs of 16
    /// (the AVX-512 transforms' permutes and masks); with two threads too (output
    /// channels or rows of tiles split over them). Tolerance: the conv's bound (it holds
    /// with the sum-of-terms part cut to 0.3x: the transforms' extra sums stay inside it).
    #[test]
    fn conv2d_winograd_matches_the_definition() {
        let cases = [
            geom(1, (3, 5, 7), 2, 3, [1, 1], 1, 1, 1),
            geom(2, (4, 6, 6), 16, 3, [1, 1], 1, 1, 1),
            geom(1, (5, 9, 11), 35, 3, [1, 1], 0, 1, 1),
            geom(1, (130, 6, 5), 17, 3, [1, 1], 1, 1, 1),
            geom(1, (16, 14, 14), 48, 3, [1, 1], 1, 1, 1),
            // whole runs of 16 tiles (and 2) along 20-tile rows
            geom(1, (3, 40, 39), 16, 3, [1, 1], 1, 1, 1),
            // F(4x4): whole runs of 16 tiles along 18-tile rows, cut by the right edge
            geom(1, (2, 9, 70), 3, 3, [1, 1], 1, 1, 1),
            // F(4x4): more input channels than one block (64), the later blocks adding to
            // the stored pixels along runs of whole tiles
            geom(1, (70, 8, 20), 16, 3, [1, 1], 1, 1, 1),
            // enough work for threads: few tiles (output channels split), then many (rows
            // of tiles split), the last row of tiles cut by the edge
            geom(1, (32, 15, 13), 40, 3, [1, 1], 1, 1, 1),
            geom(1, (16, 33, 31), 20, 3, [1, 1], 1, 1, 1),
        ];
        for (case, g) in cases.iter().enumerate() {
            let terms = g.c_in * 9;
            if too_slow_for_miri(g.n * g.c_out * g.oh * g.ow * terms) {
                continue;
            }
            assert!(winograd_fits(g));
            let x = data(g.n * g.c_in * g.h * g.w, 900 + case as u64);
            let w = data(g.c_out * g.c_in * 9, 950 + case as u64);
            let bias = data(g.c_out, 990 + case as u64);
            let epi = |i: usize, v: f32| v * 2.0 + i as f32 * 1e-3;
            let want: Vec<(f32, f32)> = conv2d_reference(&x, &w, &bias, g)
                .iter()
                .enumerate()
                .map(|(i, &(v, size))| (epi(i, v), 2.0 * size))
                .collect();
            let mut u2 = std::vec![f32::NAN; winograd_weights_len::<2>(g.c_out, g.c_in)];
            winograd_weights::<2>(&w, &mut u2, g.c_out, g.c_in);
            let mut u4 = std::vec![f32::NAN; winograd_weights_len::<4>(g.c_out, g.c_in)];
            winograd_weights::<4>(&w, &mut u4, g.c_out, g.c_in);
            // (the forced paths hold on the calling thread only: threads with "best")
            let paths = [("best", 1), ("best", 2), ("avx2", 1), ("portable", 1)];
            for ((path, threads), tile) in paths.into_iter().flat_map(|p| [(p, 2), (p, 4)]) {
                {
                    let mut out = std::vec![f32::NAN; want.len()];
                    let mut run = || {
                        let mut conv = || match tile {
                            2 => conv2d_winograd::<2>(
                                &x,
                                &u2,
                                Some(&bias),
                                &mut out,
                                g,
                                rows_of(epi),
                            ),
                            _ => conv2d_winograd::<4>(
                                &x,
                                &u4,
                                Some(&bias),
                                &mut out,
                                g,
                                rows_of(epi),
                            ),
                        };
                        #[cfg(feature = "threads")]
                        crate::threads::with_threads(threads, &mut conv);
                        #[cfg(not(feature = "threads"))]
                        conv();
                    };
                    match path {
                        "avx2" => crate::simd::avx2_only(run),
                        "portable" => crate::simd::portable(run),
                        _ => run(),
                    }
                    let label =
                        std::format!("case {case} (F({tile}x{tile}), {path}, {threads} threads)");
                    assert_close(&label, &out, &want, terms);
                }
            }
        }
    }

    /// The few-channel AVX-512 tiles take only geometries with an input channel per group
    /// and an output (their row arithmetic assumes both), and take LeNet's shapes.
    #[test]
    fn few_channel_tiles_refuse_empty_geometries() {
        let lenet = geom(1, (1, 28, 28), 6, 5, [1, 1], 0, 1, 1);
        assert!(crate::simd::conv2d_few_avx512_fits(&lenet));
        assert!(crate::simd::conv2d_few_avx512_fits(&geom(
            1,
            (6, 12, 12),
            16,
            5,
            [1, 1],
            0,
            1,
            1
        )));
        for empty in [
            Conv2dGeom { c_in: 0, ..lenet },
            Conv2dGeom { oh: 0, ..lenet },
            Conv2dGeom { ow: 0, ..lenet },
        ] {
            assert!(!crate::simd::conv2d_few_avx512_fits(&empty), "{empty:?}");
        }
    }

    /// Every conv2d path (the dispatched one, the AVX2 tiles when the CPU has them, the
    /// portable loop) against
    /// the definition, on geometries that exercise full tiles, channel and column tails,
    /// padding on both sides, dilation, groups, strides and chunks of input channels. The
    /// epilogue depends on the index, so a value stored at the wrong place shows.
    /// Tolerance: 1e-5 * max(1, |y|) + n * f32::EPSILON * sum of |terms|, with n the
    /// terms per output (the textbook bound for a sum of n terms in f32, in any order).
    #[test]
    fn conv2d_paths_match_the_definition() {
        let cases = [
            geom(1, (3, 7, 13), 9, 3, [1, 1], 1, 1, 1),
            geom(2, (4, 6, 20), 8, 3, [1, 1], 1, 2, 2),
            geom(1, (2, 9, 11), 5, 5, [2, 1], 2, 1, 1),
            geom(1, (2, 9, 11), 4, 3, [2, 2], 1, 1, 1),
            geom(1, (1, 4, 3), 4, 5, [1, 1], 2, 1, 1),
            geom(1, (8, 5, 17), 8, 1, [1, 1], 0, 1, 8),
            geom(1, (3, 16, 16), 16, 3, [1, 1], 1, 1, 1),
            geom(2, (5, 9, 40), 6, 3, [2, 1], 1, 1, 1),
            geom(1, (2, 6, 30), 4, 5, [1, 1], 0, 1, 1),
            // 200 input channels: several channel chunks per row (3 rows of 1030 floats)
            geom(1, (200, 4, 1028), 5, 3, [1, 1], 1, 1, 1),
            // LeNet's second convolution: rows 8 wide, 16 channels; and 6 channels (a
            // block and an overlapping one), 11 columns
            geom(1, (6, 12, 12), 16, 5, [1, 1], 0, 1, 1),
            geom(2, (3, 11, 11), 6, 3, [1, 1], 1, 1, 1),
            // LeNet's first convolution (one block of 6 channels, rows of 24: a whole
            // vector and one of 8 lanes); 15 channels in two blocks of 8 on rows of 40
            geom(1, (1, 28, 28), 6, 5, [1, 1], 0, 1, 1),
            geom(1, (4, 6, 42), 15, 3, [1, 1], 0, 1, 1),
            // rows of at most 8, two to a vector: 200 input channels in two chunks, an odd
            // number of rows, padding (rows of zeros in the window)
            geom(1, (200, 7, 6), 5, 3, [1, 1], 1, 1, 1),
            // two rows of 17 to 24 columns in three vectors: 200 input channels in four
            // chunks, an odd number of rows, padding; stride 2 down, read in place
            geom(1, (200, 5, 22), 5, 3, [1, 1], 1, 1, 1),
            geom(1, (3, 9, 20), 6, 3, [2, 1], 0, 1, 1),
            // unpadded at stride 1, the band read in place: two bands (the second from the
            // middle of a row), and with dilation 2
            geom(1, (32, 20, 20), 12, 3, [1, 1], 0, 1, 1),
            geom(1, (32, 22, 21), 7, 3, [1, 1], 0, 2, 1),
            // the shape classes of resnet18 and mobilenet_v2, scaled down: the 7x7 stride-2
            // stem, 3x3 stride 2, 1x1 stride 2 downsample, 1x1 pointwise, maps down to 1x1,
            // depthwise 3x3 stride 1 and 2, a wide depthwise row (past the stack buffer),
            // groups 2, dilation 2, kernel 7 stride 1, channel counts not a multiple of 6
            geom(1, (3, 23, 23), 8, 7, [2, 2], 3, 1, 1),
            geom(1, (16, 14, 14), 32, 3, [2, 2], 1, 1, 1),
            geom(1, (16, 14, 14), 32, 1, [2, 2], 0, 1, 1),
            geom(1, (24, 7, 7), 13, 1, [1, 1], 0, 1, 1),
            geom(1, (32, 7, 7), 32, 3, [1, 1], 1, 1, 1),
            geom(1, (32, 2, 2), 20, 3, [1, 1], 1, 1, 1),
            geom(1, (7, 1, 1), 9, 1, [1, 1], 0, 1, 1),
            geom(1, (12, 9, 9), 12, 3, [1, 1], 1, 1, 12),
            geom(2, (10, 15, 17), 10, 3, [2, 2], 1, 1, 10),
            geom(1, (2, 3, 4200), 2, 3, [1, 2], 1, 1, 2),
            geom(1, (6, 10, 10), 8, 3, [1, 1], 1, 1, 2),
            geom(1, (4, 12, 12), 5, 3, [1, 1], 2, 2, 1),
            geom(1, (3, 12, 12), 4, 7, [1, 1], 3, 1, 1),
            geom(1, (6, 8, 8), 6, 5, [3, 3], 2, 1, 6),
            // rows too wide for a band (the patches gathered from the input), a stride-2
            // 7x7 stem, a 1x1 stride-2 downsample, dilation 2 with stride 2, a 1x1 map
            geom(1, (8, 4, 1500), 8, 3, [1, 1], 1, 1, 1),
            geom(1, (3, 30, 30), 16, 7, [2, 2], 3, 1, 1),
            geom(1, (16, 13, 13), 24, 1, [2, 2], 0, 1, 1),
            geom(1, (8, 17, 19), 20, 3, [2, 2], 2, 2, 1),
            geom(1, (40, 1, 1), 20, 3, [1, 1], 1, 1, 1),
            // a depthwise kernel of more taps than its register-summed form takes
            geom(1, (4, 12, 12), 4, 9, [1, 1], 4, 1, 4),
            // depthwise planes past `simd::DEPTHWISE_PLANE_EPILOGUE` (the epilogue by rows),
            // and a 40x40 one, flat (`simd::DEPTHWISE_FLAT_MAX`)
            geom(1, (2, 66, 66), 2, 3, [1, 1], 1, 1, 2),
            geom(1, (3, 40, 40), 3, 3, [1, 1], 1, 1, 3),
            geom(1, (2, 130, 130), 2, 3, [2, 2], 1, 1, 2),
            // maps of at most 64 pixels by blocks of k (`small_map_gemm`): two blocks of
            // 400 input channels (384 + 16), three tiles of rows (40 channels: the third
            // of 8), the panels in place and the tail packed; a stride-2 1x1 (every panel
            // packed)
            geom(1, (400, 7, 7), 40, 1, [1, 1], 0, 1, 1),
            geom(1, (260, 13, 13), 24, 1, [2, 2], 0, 1, 1),
            // 1x1 on small maps with every row tiled, by channels on AVX-512
            // (`small_map_channels`): five tiles (four, then one) over two blocks of k
            // on seven groups of 7 pixels; three tiles (two, one) on 64 pixels (a group
            // of 1 last); two tiles on 30 pixels (a group of 2 last)
            geom(1, (400, 7, 7), 80, 1, [1, 1], 0, 1, 1),
            geom(1, (20, 8, 8), 48, 1, [1, 1], 0, 1, 1),
            geom(1, (9, 5, 6), 32, 1, [1, 1], 0, 1, 1),
            // a deep 1x1 on a map past 64 pixels by channels too: 117 pixels (16 groups
            // of 7 and one of 5), 400 input channels, three tiles
            geom(1, (400, 9, 13), 48, 1, [1, 1], 0, 1, 1),
            // 1x1 convolutions on maps large enough to run channels outermost: chunks of
            // 16 rows of 50 (panels whole) and a partial channel block; a map of one
            // 2100-pixel row (one chunk, its tail panel packed); groups 2
            geom(1, (20, 48, 50), 40, 1, [1, 1], 0, 1, 1),
            geom(1, (5, 1, 2100), 18, 1, [1, 1], 0, 1, 1),
            geom(1, (8, 40, 60), 36, 1, [1, 1], 0, 1, 2),
            // depthwise maps past the phase planes' buffer: through the ring of rows
            // (stride 1; stride 2 with dilation 2), and rows too wide for the ring
            geom(1, (3, 150, 150), 3, 3, [1, 1], 1, 1, 3),
            geom(1, (2, 160, 150), 2, 5, [2, 2], 4, 2, 2),
            geom(1, (2, 3, 8000), 2, 3, [1, 1], 1, 1, 2),
            // depthwise stride 2 read in place on AVX-512 (masked loads, even lanes kept):
            // rows of 2 parts and a half, padding 0 and 2, stride 1 down and 2 across, a
            // 7x7 kernel, a 1x1 map, rows wider than that kernel's 64 parts (AVX2 then)
            geom(1, (5, 37, 41), 5, 3, [2, 2], 1, 1, 5),
            geom(1, (3, 9, 70), 3, 5, [1, 2], 2, 1, 3),
            geom(2, (4, 8, 8), 4, 3, [2, 2], 0, 1, 4),
            geom(1, (4, 15, 33), 4, 7, [2, 2], 3, 1, 4),
            geom(1, (6, 1, 1), 6, 3, [2, 2], 1, 1, 6),
            geom(1, (2, 4, 2100), 2, 3, [2, 2], 1, 1, 2),
            // depthwise stride 1 read in place on AVX-512 (3x3 and 5x5): 7 parts with a run
            // of whole ones, no padding (whole parts, then a masked one), stride 2 down and
            // 1 across with 3 parts, padding 4 on a 5x5 kernel (rows of zeros, four rows
            // at once), a row of exactly 4 parts
            geom(1, (3, 11, 100), 3, 3, [1, 1], 1, 1, 3),
            geom(2, (4, 13, 35), 4, 3, [1, 1], 0, 1, 4),
            geom(1, (3, 10, 40), 3, 5, [2, 1], 2, 1, 3),
            geom(1, (5, 6, 12), 5, 5, [1, 1], 4, 1, 5),
            geom(1, (2, 3, 64), 2, 3, [1, 1], 1, 1, 2),
            // stride 2 across with runs of whole parts (7 and 5 parts), a last output
            // whose last tap reads the row's last column in the upper 16 of its 32 lanes,
            // 7x7 stride 1
            geom(1, (3, 9, 200), 3, 3, [2, 2], 1, 1, 3),
            geom(1, (2, 5, 53), 2, 3, [2, 2], 0, 1, 2),
            geom(1, (2, 11, 150), 2, 5, [1, 2], 2, 1, 2),
            geom(1, (2, 10, 40), 2, 7, [1, 1], 3, 1, 2),
            // 3x3 depthwise from staged rows on AVX-512: rows of 8 vectors at stride 1, and
            // at stride 2 with padding 2 (126 outputs, a row of zeros twice at each end)
            geom(1, (3, 6, 128), 3, 3, [1, 1], 1, 1, 3),
            geom(1, (2, 9, 250), 2, 3, [2, 2], 2, 1, 2),
            // depthwise small maps flattened on AVX-512 (stride 1, the output the input's
            // size): 7x7 (4 vectors, the last one partly), 14x14 (13), 16x16 (16), 32x32
            // (64, the most), 33x32 (by rows), a 1x1 map, 5x5 and 7x7 kernels with two
            // images, a 2x3 map
            geom(1, (20, 7, 7), 20, 3, [1, 1], 1, 1, 20),
            geom(1, (6, 14, 14), 6, 3, [1, 1], 1, 1, 6),
            geom(1, (3, 16, 16), 3, 3, [1, 1], 1, 1, 3),
            geom(1, (2, 32, 32), 2, 3, [1, 1], 1, 1, 2),
            geom(1, (2, 33, 32), 2, 3, [1, 1], 1, 1, 2),
            geom(1, (4, 1, 1), 4, 3, [1, 1], 1, 1, 4),
            geom(2, (3, 9, 5), 3, 5, [1, 1], 2, 1, 3),
            geom(2, (2, 6, 11), 2, 7, [1, 1], 3, 1, 2),
            geom(1, (5, 2, 3), 5, 3, [1, 1], 1, 1, 5),
            // stride 2 on small maps: 14x14 to 7x7 (as mobilenet_v2's 576@14), an odd
            // map with two images, 5x5 and 7x7 kernels, padding 2 on a 3x3 kernel (taps
            // two rows up), 32x32 and 33x33 out, an unpadded odd map
            geom(1, (6, 14, 14), 6, 3, [2, 2], 1, 1, 6),
            geom(2, (5, 13, 13), 5, 3, [2, 2], 1, 1, 5),
            geom(1, (4, 14, 14), 4, 5, [2, 2], 2, 1, 4),
            geom(1, (3, 28, 27), 3, 7, [2, 2], 3, 1, 3),
            geom(1, (3, 10, 10), 3, 3, [2, 2], 2, 1, 3),
            geom(1, (2, 64, 64), 2, 3, [2, 2], 1, 1, 2),
            geom(1, (2, 66, 66), 2, 3, [2, 2], 1, 1, 2),
            geom(1, (3, 15, 15), 3, 3, [2, 2], 0, 1, 3),
            // depthwise 1x1 kernels (a scale per channel) on rows of 2 and 1: phase planes
            // a pitch of 2 and 1 wide, whose last row leaves no room to read a vector of
            // four in place on NEON
            geom(1, (3, 3, 2), 3, 1, [1, 1], 0, 1, 3),
            geom(2, (4, 5, 1), 4, 1, [1, 1], 0, 1, 4),
            // depthwise phase planes with dilation 2 and with stride 3 (taps spread over
            // rows and phases, rows summed straight into the output on NEON)
            geom(1, (3, 11, 13), 3, 3, [1, 1], 2, 2, 3),
            geom(1, (2, 10, 11), 2, 3, [3, 3], 1, 1, 2),
            // a map whose phase plane (102 x 102) and wide output plane together pass the
            // stack buffer: through the ring, but on NEON, which has no wide plane, through
            // the phase plane
            geom(1, (2, 100, 100), 2, 3, [1, 1], 1, 1, 2),
            // tiled weights: two tiles and 8 row-major channels; per group one tile and 4
            geom(1, (12, 9, 11), 40, 3, [1, 1], 1, 1, 1),
            geom(1, (8, 10, 10), 40, 3, [2, 2], 1, 1, 2),
            // panels read straight from the band (rows of 32 and 16, two blocks along k,
            // stride 2), next to panels that cross output rows
            geom(1, (40, 6, 32), 32, 3, [1, 1], 1, 1, 1),
            geom(1, (6, 21, 33), 16, 3, [2, 2], 1, 1, 1),
            geom(1, (5, 9, 24), 48, 3, [1, 1], 1, 1, 1),
        ];
        for (case, g) in cases.iter().enumerate() {
            // miri interprets: only the small cases there
            if too_slow_for_miri(g.n * g.c_out * g.oh * g.ow * g.c_in / g.groups * g.kh * g.kw) {
                continue;
            }
            let x = data(g.n * g.c_in * g.h * g.w, 1 + case as u64);
            let w = data(g.c_out * g.c_in / g.groups * g.kh * g.kw, 100 + case as u64);
            let b = data(g.c_out, 200 + case as u64);
            let want: Vec<(f32, f32)> = conv2d_reference(&x, &w, &b, g)
                .iter()
                .enumerate()
                .map(|(i, &(v, size))| (v * 2.0 + i as f32 * 1e-3, size * 2.0))
                .collect();
            let epi = |base: usize, row: &mut [f32]| {
                for (k, v) in row.iter_mut().enumerate() {
                    *v = *v * 2.0 + (base + k) as f32 * 1e-3;
                }
            };
            let len = g.n * g.c_out * g.oh * g.ow;
            let mut paths: Vec<(&str, Vec<f32>)> = Vec::new();
            let mut out = std::vec![f32::NAN; len];
            conv2d(&x, &w, Some(&b), &mut out, g, epi);
            paths.push(("conv2d", out));
            let mut out = std::vec![f32::NAN; len];
            crate::simd::portable(|| conv2d(&x, &w, Some(&b), &mut out, g, epi));
            paths.push(("conv2d portable", out));
            let mut out = std::vec![f32::NAN; len];
            crate::simd::portable(|| {
                crate::simd::blocked(|| conv2d(&x, &w, Some(&b), &mut out, g, epi))
            });
            paths.push(("conv2d portable register-blocked", out));
            #[cfg(target_arch = "x86_64")]
            if crate::simd::avx512() && crate::simd::conv2d_few_avx512_fits(g) {
                let mut out = std::vec![f32::NAN; len];
                // SAFETY: the CPU has AVX-512F and FMA (`avx512` checked both)
                #[allow(unsafe_code)]
                unsafe {
                    crate::simd::conv2d_few_avx512(&x, &w, Some(&b), &mut out, g, &epi)
                };
                paths.push(("avx512 few channels", out));
            }
            #[cfg(target_arch = "x86_64")]
            if crate::simd::avx2_fma() && crate::simd::conv2d_avx2_fits(g) {
                let mut out = std::vec![f32::NAN; len];
                // SAFETY: the CPU has AVX2 and FMA (checked just above).
                #[allow(unsafe_code)]
                unsafe {
                    crate::simd::conv2d_avx2(&x, &w, Some(&b), &mut out, g, &epi)
                };
                paths.push(("avx2", out));
            }
            // the implicit GEMM on every geometry (dispatch may pick another path)
            if g.c_in != g.groups || g.c_out != g.groups {
                let mut out = std::vec![f32::NAN; len];
                conv2d_gemm(&x, &w, Some(&b), &mut out, g, &epi, false);
                // the register-blocked tiles sum in the plain loop's order: equal bits
                let mut blocked = std::vec![f32::NAN; len];
                crate::simd::blocked(|| {
                    conv2d_gemm(&x, &w, Some(&b), &mut blocked, g, &epi, false)
                });
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&blocked),
                    bits(&out),
                    "case {case}: blocked vs plain tile"
                );
                paths.push(("gemm portable", out));
                if crate::simd::avx2_fma() {
                    let mut out = std::vec![f32::NAN; len];
                    conv2d_gemm(&x, &w, Some(&b), &mut out, g, &epi, true);
                    paths.push(("gemm simd", out));
                    let mut out = std::vec![f32::NAN; len];
                    crate::simd::avx2_only(|| {
                        conv2d_gemm(&x, &w, Some(&b), &mut out, g, &epi, true)
                    });
                    paths.push(("gemm avx2", out));
                }
                // tiled weights: the same sums in the same order on every path
                let mut tiled = std::vec![f32::NAN; w.len()];
                tile_conv2d_weights(&w, &mut tiled, g.c_out, g.groups);
                let gemm = |weights: &[f32], is_tiled: bool, simd: bool| {
                    let mut out = std::vec![f32::NAN; len];
                    conv2d_gemm_with(&x, weights, is_tiled, Some(&b), &mut out, g, &epi, simd);
                    bits(&out)
                };
                let simd_paths: &[bool] = if crate::simd::avx2_fma() {
                    &[false, true]
                } else {
                    &[false]
                };
                for &simd in simd_paths {
                    let plain = gemm(&w, false, simd);
                    assert_eq!(
                        gemm(&tiled, true, simd),
                        plain,
                        "case {case}: tiled, simd {simd}"
                    );
                    let avx2 = crate::simd::avx2_only(|| gemm(&tiled, true, simd));
                    assert_eq!(avx2, crate::simd::avx2_only(|| gemm(&w, false, simd)));
                }
                let mut out = std::vec![f32::NAN; len];
                conv2d_tiled(&x, &tiled, Some(&b), &mut out, g, epi);
                paths.push(("conv2d_tiled", out));
            }
            let terms = (g.c_in / g.groups * g.kh * g.kw) as f32;
            for (path, got) in &paths {
                for (i, (a, (e, size))) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (a - e).abs() <= 1e-5 * e.abs().max(1.0) + terms * f32::EPSILON * size,
                        "case {case} {path}: element {i}: {a} vs {e}"
                    );
                }
            }
        }
    }

    /// With threads (feature `threads`), convolutions (GEMM, depthwise) and matrix
    /// products give exactly the one-thread results: each output is summed by one thread
    /// in the same order.
    #[cfg(feature = "threads")]
    #[test]
    fn threaded_kernels_equal_one_thread() {
        let cases = [
            geom(1, (32, 20, 20), 70, 3, [1, 1], 1, 1, 1),
            // the direct AVX2 tiles (fewer than 48 channels), 2 images, 30 channels: the
            // last chunk is not a whole tile block
            geom(2, (16, 40, 40), 30, 3, [1, 1], 1, 1, 1),
            // 16 output channels, 2 groups: pixels split over the threads on AVX-512
            geom(1, (16, 64, 64), 16, 3, [1, 1], 1, 1, 1),
            geom(1, (16, 33, 35), 32, 3, [2, 2], 1, 1, 2),
            // a stem (3 input channels, stride 2): 57 output rows split in whole rows
            // (29 and 28 on two threads, 19 each on three), each part's epilogue on its
            // own rows, each part of two threads in two bands (22 rows, then the rest)
            geom(1, (3, 113, 89), 32, 3, [2, 2], 1, 1, 1),
            geom(2, (64, 30, 30), 96, 1, [2, 2], 0, 1, 1),
            geom(1, (64, 80, 80), 64, 3, [1, 1], 1, 1, 64),
            // a 1x1 convolution with channels outermost (a large map), a depthwise one
            // through the ring of rows
            geom(1, (24, 56, 56), 144, 1, [1, 1], 0, 1, 1),
            geom(1, (8, 150, 150), 8, 3, [1, 1], 1, 1, 8),
            // 1x1 convolutions with channels outermost and too few channels for two
            // threads: rows of pixels split (a map of whole panels, each part of two
            // threads in two bands of 24 and 4 rows; and a ragged one)
            geom(1, (144, 56, 56), 24, 1, [1, 1], 0, 1, 1),
            geom(2, (40, 50, 45), 16, 1, [1, 1], 0, 1, 1),
        ];
        for (case, g) in cases.iter().enumerate() {
            let x = data(g.n * g.c_in * g.h * g.w, 1 + case as u64);
            let w = data(g.c_out * g.c_in / g.groups * g.kh * g.kw, 100 + case as u64);
            let b = data(g.c_out, 200 + case as u64);
            let epi = |base: usize, row: &mut [f32]| {
                for (k, v) in row.iter_mut().enumerate() {
                    *v = *v * 2.0 + (base + k) as f32 * 1e-3;
                }
            };
            let len = g.n * g.c_out * g.oh * g.ow;
            // one thread, then 2 and 3: the same bits
            let one_and_many = |what: &str, run: &(dyn Fn(&mut [f32]) + Sync)| {
                let mut one = std::vec![f32::NAN; len];
                run(&mut one);
                for threads in [2, 3] {
                    let mut many = std::vec![f32::NAN; len];
                    crate::threads::with_threads(threads, || run(&mut many));
                    assert_eq!(one, many, "{what} case {case}, {threads} threads");
                }
            };
            one_and_many("conv", &|out| conv2d(&x, &w, Some(&b), out, g, epi));
            if g.c_in == g.groups && g.c_out == g.groups {
                continue;
            }
            // tiled weights: the threads split at tile edges, the sums stay the same
            let mut tiled = std::vec![f32::NAN; w.len()];
            tile_conv2d_weights(&w, &mut tiled, g.c_out, g.groups);
            one_and_many("tiled conv", &|out| {
                conv2d_tiled(&x, &tiled, Some(&b), out, g, epi)
            });
        }
        let (m, k, n) = (200, 300, 130);
        let a = data(m * k, 5);
        let b = data(k * n, 6);
        let geom = MatMulGeom {
            batch: &[],
            a_batch_strides: &[],
            b_batch_strides: &[],
            m,
            k,
            n,
        };
        let mut one = std::vec![f32::NAN; m * n];
        matmul(&a, &b, &mut one, &geom, store_rows);
        let mut two = std::vec![f32::NAN; m * n];
        crate::threads::with_threads(2, || matmul(&a, &b, &mut two, &geom, store_rows));
        assert_eq!(one, two);
        // a matrix-vector `linear` (a classifier): outputs split over the threads, parts of
        // 501 and 500 (2 threads), 334, 334, 333 (3), 143 (7); 33 outputs in parts of 17
        // and 16, of 11, and on one thread (7 threads: a last part of 3, below a tile)
        for (k, n) in [(1100, 1001), (40000, 33)] {
            let x = data(k, 7);
            let w = data(n * k, 8);
            let bias = data(n, 11);
            let epi = |i: usize, row: &mut [f32]| {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = *v * 2.0 + (i + j) as f32 * 1e-3;
                }
            };
            let mut one = std::vec![f32::NAN; n];
            linear(&x, &w, Some(&bias), &mut one, 1, k, n, epi);
            for threads in [2, 3, 7] {
                let mut many = std::vec![f32::NAN; n];
                crate::threads::with_threads(threads, || {
                    linear(&x, &w, Some(&bias), &mut many, 1, k, n, epi)
                });
                assert_eq!(one, many, "linear {k} -> {n}, {threads} threads");
            }
            // the same product on packed weights (`matvec_panels`): whole panels per thread
            // (33 outputs: parts of 32 and 1 on 2 threads)
            let mut panels = std::vec![0.0; n.div_ceil(WEIGHT_PANEL) * k * WEIGHT_PANEL];
            pack_panels(&w, &mut panels, n, k);
            let mut one = std::vec![f32::NAN; n];
            matmul_panels(&x, &panels, &mut one, (1, k, n), epi);
            for threads in [2, 3, 7] {
                let mut many = std::vec![f32::NAN; n];
                crate::threads::with_threads(threads, || {
                    matmul_panels(&x, &panels, &mut many, (1, k, n), epi)
                });
                assert_eq!(one, many, "matmul_panels 1 x {k} -> {n}, {threads} threads");
            }
        }
        let mut panels = std::vec![0.0; n.div_ceil(WEIGHT_PANEL) * k * WEIGHT_PANEL];
        pack_panels(&b, &mut panels, n, k);
        let mut one = std::vec![f32::NAN; m * n];
        matmul_panels(&a, &panels, &mut one, (m, k, n), store_rows);
        let mut two = std::vec![f32::NAN; m * n];
        crate::threads::with_threads(2, || {
            matmul_panels(&a, &panels, &mut two, (m, k, n), store_rows)
        });
        assert_eq!(one, two);
        // stored transposed (`matmul_panels_to`): row ranges in parallel
        let (mt, kt, nt) = (128, 96, 100);
        let at = data(mt * kt, 9);
        let bt = data(kt * nt, 10);
        let mut panels_t = std::vec![0.0; nt.div_ceil(WEIGHT_PANEL) * kt * WEIGHT_PANEL];
        pack_panels(&bt, &mut panels_t, nt, kt);
        let transposed = |o: usize| (o % nt) * mt + o / nt;
        let epi = |i: usize, v: f32| v + i as f32 * 1e-3;
        let mut one = std::vec![f32::NAN; mt * nt];
        matmul_panels_to(
            &at,
            &panels_t,
            &mut one,
            (mt, kt, nt),
            epi,
            (transposed, 1, 0),
        );
        for threads in [2, 3] {
            let mut many = std::vec![f32::NAN; mt * nt];
            crate::threads::with_threads(threads, || {
                matmul_panels_to(
                    &at,
                    &panels_t,
                    &mut many,
                    (mt, kt, nt),
                    epi,
                    (transposed, 1, 1),
                )
            });
            assert_eq!(one, many, "matmul_panels_to, {threads} threads");
        }
        // stored by heads (a projection's runs of 48 moved whole), each part's stores on
        // its own thread: the same floats as the product stored in place, moved
        let (heads, width) = (2, 48);
        let nh = heads * width;
        let by_heads = |o: usize| {
            let (row, col) = (o / nh, o % nh);
            (col / width) * mt * width + row * width + col % width
        };
        let mut panels_h = std::vec![0.0; nh.div_ceil(WEIGHT_PANEL) * kt * WEIGHT_PANEL];
        pack_panels(&bt[..nh * kt], &mut panels_h, nh, kt);
        let mut in_place = std::vec![f32::NAN; mt * nh];
        matmul_panels(
            &at,
            &panels_h,
            &mut in_place,
            (mt, kt, nh),
            |_: usize, _: &mut [f32]| {},
        );
        let mut want = std::vec![f32::NAN; mt * nh];
        for (o, &v) in in_place.iter().enumerate() {
            want[by_heads(o)] = v;
        }
        for threads in [1, 2, 3] {
            let mut many = std::vec![f32::NAN; mt * nh];
            crate::threads::with_threads(threads, || {
                matmul_panels_to(
                    &at,
                    &panels_h,
                    &mut many,
                    (mt, kt, nh),
                    |_: usize, v: f32| v,
                    (by_heads, width, 0),
                )
            });
            assert_eq!(want, many, "matmul_panels_to by heads, {threads} threads");
        }
        // attention heads: 12 batches too small to split each, whole batches per thread
        // (`matmul`), and stored transposed (`matmul_to`)
        let (heads, mh, kh, nh) = (12, 64, 32, 64);
        let ah = data(heads * mh * kh, 11);
        let bh = data(heads * kh * nh, 12);
        let geom_h = MatMulGeom {
            batch: &[heads],
            a_batch_strides: &[mh * kh],
            b_batch_strides: &[kh * nh],
            m: mh,
            k: kh,
            n: nh,
        };
        let rows = |base: usize, row: &mut [f32]| {
            for (j, v) in row.iter_mut().enumerate() {
                *v += (base + j) as f32 * 1e-3;
            }
        };
        let swap = |o: usize| {
            let (h, ij) = (o / (mh * nh), o % (mh * nh));
            h * mh * nh + (ij % nh) * mh + ij / nh
        };
        let mut one = std::vec![f32::NAN; heads * mh * nh];
        matmul(&ah, &bh, &mut one, &geom_h, rows);
        let mut one_t = std::vec![f32::NAN; heads * mh * nh];
        matmul_to(&ah, &bh, &mut one_t, &geom_h, epi, (swap, 1, 0));
        for threads in [2, 3] {
            let mut many = std::vec![f32::NAN; heads * mh * nh];
            crate::threads::with_threads(threads, || matmul(&ah, &bh, &mut many, &geom_h, rows));
            assert_eq!(one, many, "batched matmul, {threads} threads");
            let mut many = std::vec![f32::NAN; heads * mh * nh];
            crate::threads::with_threads(threads, || {
                matmul_to(&ah, &bh, &mut many, &geom_h, epi, (swap, 1, 0))
            });
            assert_eq!(one_t, many, "batched matmul_to, {threads} threads");
        }
        // row kernels: 301 softmax rows of 64 (parts of 151 and 150 on two threads, 101,
        // 101 and 99 on three) and 203 layer-norm rows of 96, each part reading and
        // writing from its own first row (the epilogue sees whole-output indices)
        let (rows_s, len_s, rows_l, cols_l) = (301, 64, 203, 96);
        let xs = data(rows_s * len_s, 13);
        let xl = data(rows_l * cols_l, 14);
        let (gamma, beta) = (data(cols_l, 15), data(cols_l, 16));
        let shift = |i: usize, v: f32| v * 2.0 + i as f32 * 1e-4;
        let row_kernels = |soft: &mut [f32], norm: &mut [f32]| {
            softmax(&xs[..], soft, rows_s, len_s, 1, shift);
            layer_norm(
                &xl[..],
                Some(&gamma),
                Some(&beta),
                norm,
                rows_l,
                cols_l,
                1e-5,
                shift,
            );
        };
        let mut soft_one = std::vec![f32::NAN; xs.len()];
        let mut norm_one = std::vec![f32::NAN; xl.len()];
        row_kernels(&mut soft_one, &mut norm_one);
        for threads in [2, 3] {
            let mut soft = std::vec![f32::NAN; xs.len()];
            let mut norm = std::vec![f32::NAN; xl.len()];
            crate::threads::with_threads(threads, || row_kernels(&mut soft, &mut norm));
            assert_eq!(soft_one, soft, "softmax, {threads} threads");
            assert_eq!(norm_one, norm, "layer_norm, {threads} threads");
        }
        // transposed convolutions: 2x upsampling, 64 -> 33 channels on 24x24; two images
        // in two groups, padding cropping the first and last rows; windows that leave
        // rows between the input rows' reaches (stride 3, dilation 2) and a row of
        // output past them: bands of input rows split (`transpose_by_row_bands`); a
        // 3x3 window of stride 2, whose rows overlap: output channels split
        let transposes = [
            transpose_geom(1, (64, 24, 24), 33, 2, 2, 0, 1, 0, 1),
            transpose_geom(2, (32, 33, 35), 32, 2, 2, 1, 1, 0, 2),
            transpose_geom(1, (16, 40, 41), 24, 2, 3, 1, 2, 1, 1),
            transpose_geom(1, (32, 20, 20), 16, 3, 2, 1, 1, 0, 1),
        ];
        for (case, g) in transposes.iter().enumerate() {
            let x = data(g.n * g.c_in * g.h * g.w, 7 + case as u64);
            let wt = data(g.c_in * g.c_out / g.groups * g.kh * g.kw, 8 + case as u64);
            let b = data(g.c_out, 9 + case as u64);
            let epi = |i: usize, v: f32| v * 2.0 + i as f32 * 1e-3;
            let len = g.n * g.c_out * g.oh * g.ow;
            let mut one = std::vec![f32::NAN; len];
            conv_transpose2d(&x, &wt, Some(&b), &mut one, g, epi);
            for threads in [2, 3] {
                let mut many = std::vec![f32::NAN; len];
                crate::threads::with_threads(threads, || {
                    conv_transpose2d(&x, &wt, Some(&b), &mut many, g, epi)
                });
                assert_eq!(one, many, "transpose case {case}, {threads} threads");
            }
        }
        // max poolings split in bands of output rows (`pool_by_row_bands`): unet_small's
        // 2x2 stride 2, resnet18's 3x3 stride 2 with padding on odd maps (the AVX-512
        // kernel), stride 3 (the phase rows); a stride-1 window whose bands' first rows
        // lie in the padding on three threads
        let pools = [
            square_pool(16, 64, 64, 2, 2, 0),
            square_pool(16, 57, 45, 3, 2, 1),
            square_pool(4, 100, 90, 3, 3, 1),
            square_pool(200, 3, 60, 5, 1, 2),
        ];
        for (case, g) in pools.iter().enumerate() {
            let x = data(g.planes * g.h * g.w, 20 + case as u64);
            let epi = |i: usize, v: f32| if i.is_multiple_of(3) { v * 2.0 } else { -v };
            let len = g.planes * g.oh * g.ow;
            let mut one = std::vec![f32::NAN; len];
            max_pool2d(&x, &mut one, g, epi);
            for threads in [2, 3] {
                let mut many = std::vec![f32::NAN; len];
                crate::threads::with_threads(threads, || max_pool2d(&x, &mut many, g, epi));
                assert_eq!(one, many, "pool case {case}, {threads} threads");
            }
        }
    }

    /// The geometry of a square transposed convolution: `n` images of `c_in x h x w` to
    /// `c_out` channels, a `k x k` kernel of stride `s`, padding `pad`, dilation `d`,
    /// `extra` more output rows and columns (`output_padding`), in `groups` groups.
    #[allow(clippy::too_many_arguments)]
    fn transpose_geom(
        n: usize,
        (c_in, h, w): (usize, usize, usize),
        c_out: usize,
        k: usize,
        s: usize,
        pad: usize,
        d: usize,
        extra: usize,
        groups: usize,
    ) -> Conv2dGeom {
        let out_len = |len: usize| (len - 1) * s + d * (k - 1) + 1 + extra - 2 * pad;
        Conv2dGeom {
            n,
            c_in,
            h,
            w,
            c_out,
            oh: out_len(h),
            ow: out_len(w),
            kh: k,
            kw: k,
            stride_h: s,
            stride_w: s,
            pad_top: pad,
            pad_left: pad,
            dilation_h: d,
            dilation_w: d,
            groups,
        }
    }

    /// The transposed convolution by its definition, in f64: every input pixel adds
    /// `x * w` to the output pixel `i * stride + k * dilation - pad`; per output, its value
    /// and the sum of the magnitudes of its terms.
    fn conv_transpose2d_reference(
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        g: &Conv2dGeom,
    ) -> Vec<(f32, f32)> {
        let (cin_g, cout_g) = (g.c_in / g.groups, g.c_out / g.groups);
        let plane = g.oh * g.ow;
        let mut out: Vec<(f64, f64)> = (0..g.n * g.c_out * plane)
            .map(|i| {
                let b = f64::from(bias[i / plane % g.c_out]);
                (b, b.abs())
            })
            .collect();
        for n in 0..g.n {
            for ic in 0..g.c_in {
                for ocg in 0..cout_g {
                    let oc = ic / cin_g * cout_g + ocg;
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            let wv = f64::from(w[((ic * cout_g + ocg) * g.kh + ky) * g.kw + kx]);
                            for iy in 0..g.h {
                                for ix in 0..g.w {
                                    let oy = (iy * g.stride_h + ky * g.dilation_h) as isize
                                        - g.pad_top as isize;
                                    let ox = (ix * g.stride_w + kx * g.dilation_w) as isize
                                        - g.pad_left as isize;
                                    if oy < 0
                                        || ox < 0
                                        || oy >= g.oh as isize
                                        || ox >= g.ow as isize
                                    {
                                        continue;
                                    }
                                    let xv =
                                        f64::from(x[((n * g.c_in + ic) * g.h + iy) * g.w + ix]);
                                    let slot = &mut out[(n * g.c_out + oc) * plane
                                        + oy as usize * g.ow
                                        + ox as usize];
                                    slot.0 += wv * xv;
                                    slot.1 += (wv * xv).abs();
                                }
                            }
                        }
                    }
                }
            }
        }
        out.iter()
            .map(|&(v, size)| (v as f32, size as f32))
            .collect()
    }

    /// conv_transpose2d (dispatched, portable, AVX2) against the definition: stride 2
    /// kernel 2 (UNet upsampling; on AVX-512 `transpose2x2_band`), kernel 3 with padding and an extra output row, dilation,
    /// groups, a batch of two, a kernel larger than its stride (overlapping taps), more
    /// input channels than one panel's depth, more products than the stack buffer's rows,
    /// a 1x1 input and maps whose pixels are not a multiple of the panel. Tolerance
    /// `1e-5 * max(1, |y|) + n * eps * sum |terms|` with `n` the input channels times taps;
    /// the epilogue depends on the index.
    #[test]
    fn conv_transpose2d_matches_the_definition() {
        let transpose = transpose_geom;
        let cases = [
            transpose(1, (4, 5, 7), 3, 2, 2, 0, 1, 0, 1),
            transpose(2, (2, 4, 6), 4, 3, 2, 1, 1, 1, 2),
            transpose(1, (3, 3, 5), 2, 3, 1, 1, 2, 0, 1),
            transpose(1, (2, 6, 3), 2, 4, 3, 2, 1, 0, 1),
            transpose(1, (16, 8, 8), 8, 2, 2, 0, 1, 0, 1),
            transpose(1, (300, 3, 7), 5, 3, 2, 1, 1, 1, 1),
            transpose(1, (6, 5, 5), 150, 3, 1, 1, 1, 0, 1),
            transpose(1, (8, 1, 1), 6, 4, 2, 0, 1, 0, 2),
            transpose(2, (12, 9, 10), 12, 3, 2, 1, 1, 1, 12),
            // windows as wide as the stride on rows a panel wide (the taps' pairs
            // interleaved), with padding cropping the first panel's, and groups
            transpose(1, (3, 2, 16), 5, 2, 2, 0, 1, 0, 1),
            transpose(1, (4, 3, 32), 6, 2, 2, 1, 1, 1, 2),
            // each output pixel reached by one tap (on AVX-512 written straight from the
            // registers): rows of two 32-pixel runs and 16 channels (three at a time, then
            // two and two); a 20-pixel row (the second vector masked) and 7 channels in
            // two images; a 9-pixel row in two groups; one channel; an output padding
            // (two taps short of exact: the products' path)
            transpose(1, (32, 4, 64), 16, 2, 2, 0, 1, 0, 1),
            transpose(2, (5, 3, 20), 7, 2, 2, 0, 1, 0, 1),
            transpose(1, (6, 2, 9), 4, 2, 2, 0, 1, 0, 2),
            transpose(1, (3, 2, 5), 1, 2, 2, 0, 1, 0, 1),
            transpose(1, (4, 3, 16), 3, 2, 2, 0, 1, 1, 1),
        ];
        for (case, g) in cases.iter().enumerate() {
            if too_slow_for_miri(g.n * g.c_in * g.h * g.w * g.c_out / g.groups * g.kh * g.kw) {
                continue;
            }
            let x = data(g.n * g.c_in * g.h * g.w, 300 + case as u64);
            let w = data(g.c_in * g.c_out / g.groups * g.kh * g.kw, 400 + case as u64);
            let b = data(g.c_out, 500 + case as u64);
            let epi = |i: usize, v: f32| v * 2.0 + i as f32 * 1e-3;
            let want: Vec<(f32, f32)> = conv_transpose2d_reference(&x, &w, &b, g)
                .iter()
                .enumerate()
                .map(|(i, &(v, size))| (epi(i, v), size * 2.0))
                .collect();
            let len = g.n * g.c_out * g.oh * g.ow;
            let mut dispatched = std::vec![f32::NAN; len];
            conv_transpose2d(&x, &w, Some(&b), &mut dispatched, g, epi);
            let mut portable = std::vec![f32::NAN; len];
            conv_transpose2d_with(false, &x, &w, Some(&b), &mut portable, g, &epi);
            let mut paths = std::vec![("dispatched", dispatched), ("portable", portable)];
            if crate::simd::avx2_fma() {
                let mut simd = std::vec![f32::NAN; len];
                conv_transpose2d_with(true, &x, &w, Some(&b), &mut simd, g, &epi);
                paths.push(("simd", simd));
                let mut avx2 = std::vec![f32::NAN; len];
                crate::simd::avx2_only(|| {
                    conv_transpose2d_with(true, &x, &w, Some(&b), &mut avx2, g, &epi)
                });
                paths.push(("avx2", avx2));
            }
            let terms = (g.c_in / g.groups * g.kh * g.kw) as f32;
            for (path, got) in &paths {
                for (i, (a, (e, size))) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (a - e).abs() <= 1e-5 * e.abs().max(1.0) + terms * f32::EPSILON * size,
                        "case {case} {path}: element {i}: {a} vs {e}"
                    );
                }
            }
        }
    }

    /// `a[m, k] @ b[k, n]` by its definition, in f64, with the sum of |terms| per output.
    fn matmul_reference(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<(f32, f32)> {
        let mut out = Vec::new();
        for i in 0..m {
            for j in 0..n {
                let terms = (0..k).map(|t| f64::from(a[i * k + t]) * f64::from(b[t * n + j]));
                let (sum, size) = terms.fold((0.0, 0.0), |(s, z), v: f64| (s + v, z + v.abs()));
                out.push((sum as f32, size as f32));
            }
        }
        out
    }

    /// An element epilogue as a row one.
    fn rows_of(epi: impl Fn(usize, f32) -> f32 + Sync) -> impl Fn(usize, &mut [f32]) + Sync {
        move |base, row| {
            for (k, v) in row.iter_mut().enumerate() {
                *v = epi(base + k, *v);
            }
        }
    }

    fn assert_close(label: &str, got: &[f32], want: &[(f32, f32)], terms: usize) {
        assert_eq!(got.len(), want.len(), "{label}");
        for (i, (a, &(e, size))) in got.iter().zip(want).enumerate() {
            let bound = 1e-5 * e.abs().max(1.0) + terms as f32 * f32::EPSILON * size;
            assert!(
                dnnfusion_test_support::within(*a, e, bound),
                "{label}: element {i}: {a} vs {e}"
            );
        }
    }

    /// matmul, matmul_to, linear and linear_to, on the SIMD path (when the CPU has it) and
    /// the portable one, against the definition, on shapes that exercise one tile, several,
    /// overlapping edge tiles, sizes below a tile, fewer rows than a tile (matrix-vector
    /// products), a `k` that is not a multiple of eight, and a batch. The epilogue depends on the index and `*_to` store transposed, so a
    /// value computed or stored at the wrong place shows. Tolerance as for conv2d.
    #[test]
    fn matrix_products_match_the_definition() {
        let shapes = [
            (1, 5, 3),
            (4, 8, 16),
            (7, 13, 21),
            (9, 1, 40),
            (3, 64, 4),
            (5, 17, 5),
            (1, 20, 7),
            (2, 9, 4),
            // matrix-vector products on AVX-512: whole steps of 16 along k and overlapping
            // last outputs, one step of 8 outputs with a masked tail, many outputs
            (1, 784, 10),
            (1, 35, 8),
            (1, 16, 130),
            // fewer outputs than the AVX2 tile's four (regression heads)
            (5, 17, 2),
            (7, 33, 1),
            // several blocks along k (384 deep), rows not a multiple of six, edge panels
            (13, 400, 50),
            (6, 513, 33),
            (12, 40, 64),
            // a partial interleaved tile (100 = 6 x 16 + 4)
            (100, 30, 20),
            // packed `b` (more than four panels), whole tiles of `a` packed by transposes
            // of 16 x 16 (428 = 384 + 2 x 16 + 12 deep), two blocks of rows (200 > 192)
            (40, 428, 70),
            (200, 21, 67),
            // packed `b` past `PREFETCH_MIN_FLOATS`: each next panel asked for during
            // the tiles (three blocks along k, a partial last tile)
            (40, 800, 240),
            // on AVX-512 the 8 x 48 tile (`gemm_packed`): two runs of 48 columns, 21
            // rows (the last half tile of 5), two blocks along k (128 + 22); above, 70
            // and 67 columns leave edge panels to the 16 x 16 tile, 240 none
            (21, 150, 96),
            // rows wider than the `*_to` kernels' stack buffer
            (2, 3, MM_BLOCK_LEN + 40),
        ];
        for (case, &(m, k, n)) in shapes.iter().enumerate() {
            if too_slow_for_miri(2 * m * k * n) {
                continue;
            }
            let a = data(2 * m * k, 600 + case as u64);
            let b = data(2 * k * n, 700 + case as u64);
            let bias = data(n, 800 + case as u64);
            let epi = |i: usize, v: f32| v * 2.0 + i as f32 * 1e-3;
            // two batches of a @ b
            let mut want = Vec::new();
            for batch in 0..2 {
                want.extend(matmul_reference(
                    &a[batch * m * k..][..m * k],
                    &b[batch * k * n..][..k * n],
                    m,
                    k,
                    n,
                ));
            }
            let want: Vec<(f32, f32)> = want
                .iter()
                .enumerate()
                .map(|(i, &(v, z))| (epi(i, v), 2.0 * z))
                .collect();
            // linear: x = a (first batch) [m, k], w[n, k] = b^T
            let w: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
            let lin_want: Vec<(f32, f32)> = matmul_reference(&a[..m * k], &b[..k * n], m, k, n)
                .iter()
                .enumerate()
                .map(|(i, &(v, z))| (epi(i, v + bias[i % n]), 2.0 * (z + bias[i % n].abs())))
                .collect();
            // the `*_to` kernels store row-major [i, j] at [j, i] (per batch for matmul)
            let transposed = |o: usize| {
                let (batch, ij) = (o / (m * n), o % (m * n));
                batch * m * n + (ij % n) * m + ij / n
            };
            let geom = MatMulGeom {
                batch: &[2],
                a_batch_strides: &[m * k],
                b_batch_strides: &[k * n],
                m,
                k,
                n,
            };
            // every path: the best this CPU has, AVX2 only, portable (lane-parallel and
            // register-blocked)
            for path in ["best", "avx2", "portable", "blocked"] {
                let run = |f: &mut dyn FnMut()| match path {
                    "avx2" => crate::simd::avx2_only(f),
                    "portable" => crate::simd::portable(f),
                    "blocked" => crate::simd::portable(|| crate::simd::blocked(f)),
                    _ => f(),
                };
                let label = |what: &str| std::format!("case {case} {what} ({path})");
                let mut out = std::vec![f32::NAN; 2 * m * n];
                run(&mut || matmul(&a, &b, &mut out, &geom, rows_of(epi)));
                assert_close(&label("matmul"), &out, &want, k);
                // asked for every value, and once per column (`transposed` keeps step 1
                // down a column)
                for step in [0, 1] {
                    let mut out_t = std::vec![f32::NAN; 2 * m * n];
                    let store = (transposed, 1, step);
                    run(&mut || matmul_to(&a, &b, &mut out_t, &geom, epi, store));
                    let back: Vec<f32> = (0..2 * m * n).map(|o| out_t[transposed(o)]).collect();
                    assert_close(
                        &label(&std::format!("matmul_to, step {step}")),
                        &back,
                        &want,
                        k,
                    );
                }
                // whole rows stored in reverse order, one `store` call per row
                let reversed = |o: usize| {
                    assert!(o.is_multiple_of(n), "store asked inside a run");
                    (2 * m - 1 - o / n) * n
                };
                let mut out_r = std::vec![f32::NAN; 2 * m * n];
                run(&mut || matmul_to(&a, &b, &mut out_r, &geom, epi, (reversed, n, 0)));
                let back: Vec<f32> = (0..2 * m * n)
                    .map(|o| out_r[(2 * m - 1 - o / n) * n + o % n])
                    .collect();
                assert_close(&label("matmul_to runs"), &back, &want, k);
                let mut lin = std::vec![f32::NAN; m * n];
                run(&mut || {
                    linear(
                        &a[..m * k],
                        &w,
                        Some(&bias),
                        &mut lin,
                        m,
                        k,
                        n,
                        rows_of(epi),
                    )
                });
                assert_close(&label("linear"), &lin, &lin_want, k + 1);
                let store = |o: usize| (o % n) * m + o / n;
                let mut lin_t = std::vec![f32::NAN; m * n];
                run(&mut || {
                    linear_to(
                        &a[..m * k],
                        &w,
                        Some(&bias),
                        &mut lin_t,
                        m,
                        k,
                        n,
                        epi,
                        store,
                    )
                });
                let back: Vec<f32> = (0..m * n).map(|o| lin_t[store(o)]).collect();
                assert_close(&label("linear_to"), &back, &lin_want, k + 1);
                // the weight packed at load time: both batches of `a` as rows against
                // the first batch's `b` (a linear's packed weight is not batched)
                let mut panels = std::vec![f32::NAN; n.div_ceil(WEIGHT_PANEL) * k * WEIGHT_PANEL];
                pack_panels(&w, &mut panels, n, k);
                let mut rows_want = Vec::new();
                for batch in 0..2 {
                    rows_want.extend(matmul_reference(
                        &a[batch * m * k..][..m * k],
                        &b[..k * n],
                        m,
                        k,
                        n,
                    ));
                }
                let rows_want: Vec<(f32, f32)> = rows_want
                    .iter()
                    .enumerate()
                    .map(|(i, &(v, z))| (epi(i, v), 2.0 * z))
                    .collect();
                let mut out = std::vec![f32::NAN; 2 * m * n];
                run(&mut || matmul_panels(&a, &panels, &mut out, (2 * m, k, n), rows_of(epi)));
                assert_close(&label("matmul_panels"), &out, &rows_want, k);
                // one row: the matrix-vector product over the panels (`matvec_panels`)
                let mut row = std::vec![f32::NAN; n];
                run(&mut || matmul_panels(&a[..k], &panels, &mut row, (1, k, n), rows_of(epi)));
                assert_close(&label("matmul_panels, one row"), &row, &rows_want[..n], k);
                let store = |o: usize| (o % n) * 2 * m + o / n;
                for step in [0, 1] {
                    let mut out_t = std::vec![f32::NAN; 2 * m * n];
                    let shape = (2 * m, k, n);
                    run(&mut || {
                        matmul_panels_to(&a, &panels, &mut out_t, shape, epi, (store, 1, step))
                    });
                    let back: Vec<f32> = (0..2 * m * n).map(|o| out_t[store(o)]).collect();
                    let what = std::format!("matmul_panels_to, step {step}");
                    assert_close(&label(&what), &back, &rows_want, k);
                }
                // whole rows stored in reverse order: runs of `n`, one `store` call each
                // (a store that is asked inside a run returns a wrong place)
                let reversed = |o: usize| {
                    assert!(o.is_multiple_of(n), "store asked inside a run");
                    (2 * m - 1 - o / n) * n
                };
                let mut out_r = std::vec![f32::NAN; 2 * m * n];
                run(&mut || {
                    matmul_panels_to(
                        &a,
                        &panels,
                        &mut out_r,
                        (2 * m, k, n),
                        epi,
                        (reversed, n, 0),
                    )
                });
                let back: Vec<f32> = (0..2 * m * n)
                    .map(|o| out_r[(2 * m - 1 - o / n) * n + o % n])
                    .collect();
                assert_close(&label("matmul_panels_to runs"), &back, &rows_want, k);
            }
        }
    }

    /// The geometry of pooling `planes` `h x w` planes with a `k x k` window, stride `s`
    /// and padding `pad` on every side.
    fn square_pool(
        planes: usize,
        h: usize,
        w: usize,
        k: usize,
        s: usize,
        pad: usize,
    ) -> Pool2dGeom {
        let out_len = |len: usize| (len + 2 * pad - k) / s + 1;
        Pool2dGeom {
            planes,
            h,
            w,
            oh: out_len(h),
            ow: out_len(w),
            kh: k,
            kw: k,
            stride_h: s,
            stride_w: s,
            pad_top: pad,
            pad_left: pad,
            pad_bottom: pad,
            pad_right: pad,
            dilation_h: 1,
            dilation_w: 1,
        }
    }

    /// max_pool2d on windows inside the input (the row-at-a-time path) and with padding
    /// (the general one) against the definition, a NaN included (it wins its windows).
    #[test]
    fn max_pool2d_matches_the_definition() {
        // resnet18's 3x3 stride 2 with padding, stride 3, and rows wider than the phase
        // buffer (read with a stride)
        let cases = [
            (2, 2, 0, 6, 9),
            (3, 2, 0, 7, 7),
            (3, 1, 1, 5, 6),
            (3, 2, 1, 9, 11),
            (3, 3, 1, 10, 10),
            (2, 2, 0, 2, POOL_ROW + 6),
            // stride 2 on AVX-512: rows of 35 outputs (two whole vectors and 3 lanes),
            // padding wider than a window's reach past the edge
            (2, 2, 0, 5, 71),
            (2, 2, 1, 5, 9),
            (3, 2, 1, 6, 70),
            (4, 2, 2, 7, 33),
            // a row that fits the buffer but whose stride phases would not
            (3, 3, 0, 3, POOL_ROW),
        ];
        for (case, (k, s, pad, h, w)) in cases.into_iter().enumerate() {
            let g = square_pool(3, h, w, k, s, pad);
            let mut x = data(3 * h * w, 900 + case as u64);
            x[h * w + 4] = f32::NAN;
            // one more, last in its 2x2 window (the vector kernel's NaN rule)
            x[2 * h * w + w + 3] = f32::NAN;
            // a window whose maximum is a zero of either sign: the first one counts
            x[..w + 2].fill(-1.0);
            (x[0], x[1], x[w], x[w + 1]) = (-0.0, 0.0, 0.0, -0.0);
            let mut out = std::vec![0.0; 3 * g.oh * g.ow];
            // exact, and index-dependent: a value stored at the wrong place shows
            let epi = |i: usize, v: f32| if i.is_multiple_of(2) { v * 2.0 } else { -v };
            max_pool2d(&x, &mut out, &g, epi);
            let mut portable = std::vec![0.0; 3 * g.oh * g.ow];
            crate::simd::portable(|| max_pool2d(&x, &mut portable, &g, epi));
            let mut blocked = std::vec![0.0; 3 * g.oh * g.ow];
            crate::simd::blocked(|| {
                crate::simd::portable(|| max_pool2d(&x, &mut blocked, &g, epi))
            });
            for (i, ((a, b), c)) in out.iter().zip(&portable).zip(&blocked).enumerate() {
                let same = |a: f32, b: f32| a.to_bits() == b.to_bits() || a.is_nan() && b.is_nan();
                assert!(
                    same(*a, *b) && same(*a, *c),
                    "case {case}: {i}: {a} vs {b} vs {c}"
                );
            }
            for p in 0..3 {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let mut want = f32::NEG_INFINITY;
                        for ky in 0..k {
                            for kx in 0..k {
                                let (iy, ix) = (oy * s + ky, ox * s + kx);
                                if iy < pad || ix < pad || iy - pad >= h || ix - pad >= w {
                                    continue;
                                }
                                let v = x[(p * h + iy - pad) * w + ix - pad];
                                if v.is_nan() || v > want {
                                    want = if want.is_nan() { want } else { v };
                                }
                            }
                        }
                        let i = (p * g.oh + oy) * g.ow + ox;
                        let got = out[i];
                        let want = epi(i, want);
                        assert!(
                            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                            "case {case}: plane {p} ({oy}, {ox}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    /// Pooling in place (an empty `x`, the input in `out`) gives what pooling into another
    /// buffer gives, for max and average pooling, on geometries the memory plan lets run
    /// in place: LeNet's 2x2 stride 2, overlapping 2x2 stride 1 windows, resnet18's 3x3
    /// stride 2 with padding, two batches.
    #[test]
    fn pooling_in_place_matches_pooling_out_of_place() {
        // (n * c, h, w, k, s, pad)
        let cases = [
            (6, 24, 24, 2, 2, 0),
            (3, 9, 70, 2, 2, 0),
            (3, 7, 9, 2, 1, 0),
            (4, 11, 10, 3, 2, 1),
            (2, 5, 5, 5, 5, 0),
        ];
        for (case, (planes, h, w, k, s, pad)) in cases.into_iter().enumerate() {
            let g = square_pool(planes, h, w, k, s, pad);
            let x = data(planes * h * w, 1700 + case as u64);
            let n_out = planes * g.oh * g.ow;
            let epi = |i: usize, v: f32| {
                if i.is_multiple_of(3) {
                    v * 2.0
                } else {
                    v - 1.0
                }
            };
            for average in [false, true] {
                let mut want = std::vec![0.0; n_out];
                let mut buf = x.clone();
                if average {
                    avg_pool2d(&x, &mut want, &g, true, epi);
                    avg_pool2d(&[], &mut buf, &g, true, epi);
                } else {
                    max_pool2d(&x, &mut want, &g, epi);
                    max_pool2d(&[], &mut buf, &g, epi);
                }
                assert_eq!(buf[..n_out], want[..], "case {case}, average {average}");
                if !average {
                    let mut buf = x.clone();
                    crate::simd::blocked(|| max_pool2d(&[], &mut buf, &g, epi));
                    assert_eq!(buf[..n_out], want[..], "case {case}, register-blocked");
                }
            }
        }
    }

    /// The weight tiles hold each weight where `weight_tile_index` (the layout's one
    /// statement) says: whole tiles, the row-major rest, per group; on every path.
    /// A row prologue fills the rows it is written for and no other: softmax and layer
    /// norm over a `ComputedRows` give what they give over the stored operand, and when
    /// the kernel's rows are not the prologue's (other length), `at` fills them.
    #[test]
    fn row_prologues_fill_only_their_rows() {
        let x = data(6 * 8, 21);
        let scaled: Vec<f32> = x.iter().map(|v| v * 0.5).collect();
        let at = |o: usize| x[o] * 0.5;
        // a row closure for rows of 8 (what the generated code emits for a last axis of 8)
        let rows_of_8 = |base: usize, row: &mut [f32]| {
            for (k, slot) in row[..8].iter_mut().enumerate() {
                *slot = x[base + k] * 0.5;
            }
        };
        let mut want = std::vec![0.0; 48];
        let mut got = std::vec![0.0; 48];
        // rows of 8: the row closure runs
        softmax(&scaled[..], &mut want, 6, 8, 1, store);
        let src = ComputedRows {
            at,
            rows: rows_of_8,
            len: 8,
        };
        softmax(src, &mut got, 6, 8, 1, store);
        assert_eq!(got, want);
        layer_norm(&scaled[..], None, None, &mut want, 6, 8, 1e-5, store);
        let src = ComputedRows {
            at,
            rows: rows_of_8,
            len: 8,
        };
        layer_norm(src, None, None, &mut got, 6, 8, 1e-5, store);
        assert_eq!(got, want);
        // rows of 12 and of 4: not the closure's; one that would write NaN is never run
        let poisoned = |_: usize, row: &mut [f32]| row.fill(f32::NAN);
        for len in [12, 4] {
            softmax(&scaled[..], &mut want, 48 / len, len, 1, store);
            let src = ComputedRows {
                at,
                rows: poisoned,
                len: 8,
            };
            softmax(src, &mut got, 48 / len, len, 1, store);
            assert_eq!(got, want, "softmax over rows of {len}");
        }
        // and with rows of 8 it is run (the check above is not vacuous)
        let src = ComputedRows {
            at,
            rows: poisoned,
            len: 8,
        };
        softmax(src, &mut got, 6, 8, 1, store);
        assert!(got.iter().all(|v| v.is_nan()));
    }

    /// Global average pooling over a fused prologue, each mean within n * eps * sum |x|
    /// of the f64 mean: 7x7 planes (ten to a buffer, the last run of them short), a
    /// plane longer than the buffer, planes of 1.
    #[test]
    fn global_average_pool_matches_the_mean() {
        for (planes, plane) in [(23, 49), (3, 1600), (5, 1)] {
            let x = data(planes * plane, 31 + plane as u64);
            let at = |o: usize| math::max(x[o], 0.0);
            let mut got = std::vec![f32::NAN; planes];
            global_avg_pool(Computed(at), &mut got, planes, plane, |p, v| v + p as f32);
            for (p, &v) in got.iter().enumerate() {
                let values = (p * plane..(p + 1) * plane).map(|o| f64::from(at(o)));
                let want = values.clone().sum::<f64>() / plane as f64 + p as f64;
                let size: f64 = values.map(f64::abs).sum::<f64>() / plane as f64;
                let bound = plane as f64 * f64::from(f32::EPSILON) * size + 1e-6;
                assert!(
                    (f64::from(v) - want).abs() <= bound,
                    "plane {p}: {v} vs {want}"
                );
            }
        }
    }

    #[test]
    fn tiled_weights_follow_the_tile_index() {
        // (c_out, groups, depth): two tiles and 3 rows, two groups of 20, rows only
        for (c_out, groups, depth) in [(35, 1, 7), (40, 2, 3), (5, 1, 25), (16, 1, 150)] {
            let w = data(c_out * depth, 2100 + c_out as u64);
            let mut tiled = std::vec![0.0; w.len()];
            tile_conv2d_weights(&w, &mut tiled, c_out, groups);
            // the portable path lays them out alike
            let mut portable = std::vec![0.0; w.len()];
            crate::simd::portable(|| tile_conv2d_weights(&w, &mut portable, c_out, groups));
            assert_eq!(tiled, portable);
            let cout_g = c_out / groups;
            for (at, &value) in w.iter().enumerate() {
                let (row, k) = (at / depth, at % depth);
                let (group, row) = (row / cout_g, row % cout_g);
                let i = group * cout_g * depth + weight_tile_index((row, k), (cout_g, depth));
                assert_eq!(tiled[i], value, "{c_out} channels: row {row} column {k}");
            }
        }
    }

    #[test]
    fn conv_valid_ranges_cover_exactly_the_inside() {
        // in 5, stride 2, pad 1, tap 0: o*2 - 1 in [0, 5) -> o in 1..3
        assert_eq!(valid_range(3, 5, 2, 1, 0), (1, 3));
        assert_eq!(valid_range(3, 5, 2, 1, 2), (0, 2));
    }
}
