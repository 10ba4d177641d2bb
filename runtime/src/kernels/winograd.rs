//! 3x3 convolutions of unit stride as Winograd's F(2x2, 3x3) or F(4x4, 3x3): each `T x T`
//! block of output pixels (a tile, `T` = 2 or 4) comes from a `(T + 2) x (T + 2)` block of
//! input through `(T + 2)^2` products per input channel instead of `9 T^2` (2.25x fewer
//! multiply-adds at `T` = 2, 4x at `T` = 4), the products being independent matrix
//! products over the channels, one per point of the transformed tile:
//!
//! ```text
//!   U[p] = (G w G^T)[p]     per (c_out, c_in), once at load (`winograd_weights`)
//!   V[p] = (B^T d B)[p]     per (c_in, tile), d the tile's input block
//!   M[p] = U[p] @ V[p]      c_out x c_in by c_in x tiles: the GEMM's register tiles
//!   y    = A^T M A          per (c_out, tile): its T x T outputs
//! ```
//!
//! `F(2x2, 3x3)` interpolates at 0, 1, -1 and infinity, `F(4x4, 3x3)` at 0, 1, -1, 2, -2
//! and infinity (Lavin and Gray's matrices). The transforms add, subtract and scale, so
//! the result differs from the direct sum by rounding only: the tests hold both to the
//! direct sum's bound (`n * eps * sum |terms|`). The larger tile saves more products but
//! stores 36 / 16 times the transformed weights, so `prepare` gives it the larger maps.

use super::{
    each_row, stack_floats, tile_panel_ahead, weight_tile_index, Conv2dGeom, Lhs, Start,
    MAX_TILE_ROWS, PANEL,
};

/// Points of a transformed tile of F(`tile` x `tile`, 3x3): `(tile + 2)^2` products per
/// tile and input channel (16 for F(2x2, 3x3), 36 for F(4x4, 3x3)).
pub const fn winograd_points(tile: usize) -> usize {
    (tile + 2) * (tile + 2)
}

/// Points of the largest transformed tile (F(4x4, 3x3)).
const MAX_POINTS: usize = winograd_points(4);

/// Floats of the transformed input panel (points by channels by 16 tiles) on the stack:
/// 144 KiB on desktop CPUs (64 input channels at a time for F(4x4), 144 for F(2x2)),
/// 4.5 KiB elsewhere (2 and 4); beside it the products of a block of 16 output channels
/// (16 KiB for F(2x2), 36 KiB for F(4x4)).
const PANEL_LEN: usize = stack_floats(MAX_POINTS * 64 * PANEL, MAX_POINTS * 2 * PANEL);

/// Input channels transformed at a time for tiles of `T` outputs a side.
const fn channel_block(tile: usize) -> usize {
    PANEL_LEN / (winograd_points(tile) * PANEL)
}

/// Products of a panel ahead of which [`winograd_channels`] asks the cache for a block of
/// weights (each block, 16 output channels by up to 144 input channels of one point, is a
/// run of at most 9 KiB).
const WEIGHTS_AHEAD: usize = 2;

/// Input columns under a run of [`PANEL`] tiles of `T` outputs a side.
const fn line_len(tile: usize) -> usize {
    tile * PANEL + 2
}

/// Floats of the line buffer: the longest [`line_len`], rounded up to whole groups of four
/// (the phases read the last group whole).
const MAX_LINE: usize = 4 * (PANEL + 1);

/// True when [`conv2d_winograd`] computes this convolution: a 3x3 kernel, unit stride
/// and dilation, one group.
pub fn winograd_fits(g: &Conv2dGeom) -> bool {
    (g.kh, g.kw, g.stride_h, g.stride_w) == (3, 3, 1, 1)
        && (g.dilation_h, g.dilation_w, g.groups) == (1, 1, 1)
}

/// Floats of [`winograd_weights`]' output for a convolution of `c_out` by `c_in` channels
/// and tiles of `T` outputs a side.
pub const fn winograd_weights_len<const T: usize>(c_out: usize, c_in: usize) -> usize {
    winograd_points(T) * c_out * c_in
}

/// `G g` for one column `g` of three taps: the `T + 2` rows (the rest zero). F(2x2):
/// `G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]`; F(4x4): `G = [1/4 0 0; -1/6 -1/6
/// -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]`, in f64 (its sixths and
/// twenty-fourths are inexact in f32).
fn weight_rows<const T: usize>([a, b, c]: [f64; 3]) -> [f64; 6] {
    if T == 2 {
        [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c, 0.0, 0.0]
    } else {
        [
            a / 4.0,
            -(a + b + c) / 6.0,
            -(a - b + c) / 6.0,
            a / 24.0 + b / 12.0 + c / 6.0,
            a / 24.0 - b / 12.0 + c / 6.0,
            c,
        ]
    }
}

/// Transforms 3x3 convolution weights (`w`, `[c_out, c_in, 3, 3]`) into the `(T + 2)^2`
/// matrices `U[p] = (G w G^T)[p]` that [`conv2d_winograd`] reads for tiles of `T` (2 or
/// 4) outputs a side, each value computed in f64 and rounded once: `out[p * c_out *
/// c_in..]` holds `U[p]`, `[c_out, c_in]` laid out as [`super::tile_conv2d_weights`] lays
/// a weight of depth `c_in` (blocks of 16 output channels interleaved, the rest
/// row-major).
pub fn winograd_weights<const T: usize>(w: &[f32], out: &mut [f32], c_out: usize, c_in: usize) {
    const { assert!(T == 2 || T == 4) };
    let side = T + 2;
    let (w, out) = (
        &w[..c_out * c_in * 9],
        &mut out[..winograd_weights_len::<T>(c_out, c_in)],
    );
    let at = |oc: usize, ic: usize| weight_tile_index((oc, ic), (c_out, c_in));
    for (k, g) in w.chunks_exact(9).enumerate() {
        let (oc, ic) = (k / c_in, k % c_in);
        let g: [f64; 9] = core::array::from_fn(|i| f64::from(g[i]));
        // G g: `side` rows of three, column by column
        let cols: [[f64; 6]; 3] =
            core::array::from_fn(|c| weight_rows::<T>([g[c], g[3 + c], g[6 + c]]));
        for r in 0..side {
            let u = weight_rows::<T>([cols[0][r], cols[1][r], cols[2][r]]);
            for (c, &value) in u.iter().enumerate().take(side) {
                out[(r * side + c) * c_out * c_in + at(oc, ic)] = value as f32;
            }
        }
    }
}

/// A 3x3 convolution of unit stride ([`winograd_fits`]) on weights transformed by
/// [`winograd_weights`] for tiles of `T` (2 or 4) outputs a side, as [`super::conv2d`]
/// computes it (bias, padding, the row epilogue `epi(base, row)` once each output plane
/// is complete). Per panel of 16 tiles and block of input channels, the tiles' input is
/// transformed into a stack buffer, then each block of 16 output channels runs one
/// register tile per point and transforms their sums back into output pixels. With
/// threads, rows of tiles split over them on large maps, output channels (blocks of 16)
/// on small ones.
pub fn conv2d_winograd<const T: usize>(
    x: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    g: &Conv2dGeom,
    epi: impl Fn(usize, &mut [f32]) + Sync,
) {
    const { assert!(T == 2 || T == 4) };
    debug_assert!(winograd_fits(g));
    let simd = crate::simd::avx2_fma();
    let pixels = g.oh * g.ow;
    let in_len = g.c_in * g.h * g.w;
    if pixels == 0 || g.c_out == 0 {
        return;
    }
    let tiles_x = g.ow.div_ceil(T);
    let tile_rows = g.oh.div_ceil(T);
    let whole = Part {
        tiles: (0, tile_rows * tiles_x),
        first_pixel: 0,
        plane_len: pixels,
    };
    for n in 0..g.n {
        let xn = &x[n * in_len..(n + 1) * in_len];
        let on = &mut out[n * g.c_out * pixels..(n + 1) * g.c_out * pixels];
        // with threads, on maps of many tiles: rows of tiles split over them, each part's
        // outputs (every channel) summed into a buffer of its own, its epilogue run and
        // copied into place
        // (output channels split would transform the whole input on every thread);
        // on small maps output channels split (rows split would leave panels part empty)
        #[cfg(feature = "threads")]
        {
            let threads = crate::threads::current().min(tile_rows);
            let worth = threads > 1 && g.c_out * g.c_in * 9 * pixels >= super::PARALLEL_MIN_MACS;
            if worth && tile_rows * tiles_x < threads * SPLIT_MIN_TILES {
                let chunk = g.c_out.div_ceil(threads).div_ceil(MAX_TILE_ROWS) * MAX_TILE_ROWS;
                crate::threads::for_each_chunk(on, chunk * pixels, |i, part| {
                    let bias = bias.map(|b| &b[i * chunk..]);
                    winograd_part::<T>(simd, (xn, (u, i * chunk), bias), whole, part, g);
                    let first = (n * g.c_out + i * chunk) * pixels;
                    super::each_row_on(simd, part, g.ow, first, &epi);
                });
                continue;
            }
            if worth {
                let per_part = tile_rows.div_ceil(threads);
                let part = |i: usize| {
                    let (ty0, ty1) = (i * per_part, tile_rows.min((i + 1) * per_part));
                    let first_pixel = T * ty0 * g.ow;
                    Part {
                        tiles: (ty0 * tiles_x, ty1 * tiles_x),
                        first_pixel,
                        plane_len: pixels.min(T * ty1 * g.ow) - first_pixel,
                    }
                };
                let on = super::SplitOutput::new(on);
                crate::threads::for_each_part(tile_rows.div_ceil(per_part), |i| {
                    let part = part(i);
                    let mut sums = alloc::vec![0.0f32; g.c_out * part.plane_len];
                    winograd_part::<T>(simd, (xn, (u, 0), bias), part, &mut sums, g);
                    for (c, sums) in sums.chunks_exact_mut(part.plane_len).enumerate() {
                        // whole output rows: the epilogue runs here, on this thread's sums
                        let first = (n * g.c_out + c) * pixels + part.first_pixel;
                        super::each_row_on(simd, sums, g.ow, first, &epi);
                        // SAFETY: part `i` alone writes its rows of each output plane
                        #[allow(unsafe_code)]
                        let dst = unsafe { on.range(c * pixels + part.first_pixel, sums.len()) };
                        dst.copy_from_slice(sums);
                    }
                });
                continue;
            }
        }
        winograd_part::<T>(simd, (xn, (u, 0), bias), whole, on, g);
        each_row(simd, on, g.ow, n * g.c_out * pixels, &epi);
    }
}

/// Tiles per thread from which [`conv2d_winograd`] splits rows of tiles over threads
/// rather than output channels (resnet18 at 2 threads, alternating: rows split on every
/// map 1.09x slower, their 14x14 and 7x7 maps leaving panels part empty; unet_small, all
/// maps of 256+ tiles, 0.91x).
#[cfg(feature = "threads")]
const SPLIT_MIN_TILES: usize = 4 * PANEL;

/// The tiles a call of [`winograd_channels`] computes (whole rows of tiles), and where
/// its output planes sit: `plane_len` pixels from output pixel `first_pixel` on.
#[derive(Clone, Copy)]
pub(crate) struct Part {
    tiles: (usize, usize),
    first_pixel: usize,
    plane_len: usize,
}

/// [`winograd_channels`] on the best code for this CPU.
fn winograd_part<const T: usize>(
    simd: bool,
    operands: WinogradOperands<'_>,
    part: Part,
    out: &mut [f32],
    g: &Conv2dGeom,
) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is true only when `avx2_fma` found AVX2 and FMA, and the AVX-512
        // form runs only when `avx512` found AVX-512F
        #[allow(unsafe_code)]
        unsafe {
            if crate::simd::avx512() {
                crate::simd::winograd_channels_avx512::<T>(operands, part, out, g);
            } else {
                crate::simd::winograd_channels_avx2::<T>(operands, part, out, g);
            }
        }
        return;
    }
    winograd_channels::<T>((simd, false), operands, part, out, g);
}

/// The operands of [`winograd_channels`]: the input, the transformed weights with the
/// first output channel computed, the bias from that channel on.
pub(crate) type WinogradOperands<'a> = (&'a [f32], (&'a [f32], usize), Option<&'a [f32]>);

/// [`conv2d_winograd`] for the output channels `oc0..` that `out` holds and the tiles of
/// `part` (`out`: the part's planes, `part.plane_len` pixels each).
/// Inlined into `simd::winograd_channels_avx512` and `_avx2`, where the transforms'
/// sixteen-tile loops compile to whole vectors; with `zmm` (AVX-512F, the first) the
/// transforms of F(2x2) are `simd::winograd_inputs_avx512` and `_outputs_avx512` instead.
#[inline(always)]
pub(crate) fn winograd_channels<const T: usize>(
    flags: (bool, bool),
    operands: WinogradOperands<'_>,
    part: Part,
    out: &mut [f32],
    g: &Conv2dGeom,
) {
    // the products of a block of 16 output channels (a whole tile of the tiled weights)
    // for every point: 16 KiB for F(2x2), 36 KiB for F(4x4), only the one of this tile
    // size on the stack
    if T == 2 {
        let mut m = [0.0f32; winograd_points(2) * MAX_TILE_ROWS * PANEL];
        winograd_channels_in::<T>(flags, operands, part, (out, &mut m), g);
    } else {
        let mut m = [0.0f32; MAX_POINTS * MAX_TILE_ROWS * PANEL];
        winograd_channels_in::<T>(flags, operands, part, (out, &mut m), g);
    }
}

/// [`winograd_channels`] with its products in `m` (`(T + 2)^2` points by 16 output
/// channels by 16 tiles).
#[inline(always)]
fn winograd_channels_in<const T: usize>(
    (simd, zmm): (bool, bool),
    (x, (u, oc0), bias): WinogradOperands<'_>,
    part: Part,
    (out, m): (&mut [f32], &mut [f32]),
    g: &Conv2dGeom,
) {
    let points = winograd_points(T);
    let block_rows = MAX_TILE_ROWS;
    assert!(m.len() >= points * block_rows * PANEL);
    // (the AVX-512 transforms exist on x86_64 only: F(2x2)'s whole, F(4x4)'s column
    // gathers and pixel stores, `wide`)
    let (zmm, wide) = (zmm && T == 2, zmm);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (zmm, wide);
    let block = channel_block(T);
    let plane_len = part.plane_len;
    let rows = out.len() / plane_len;
    let tiles_x = g.ow.div_ceil(T);
    let (t0, t1) = part.tiles;
    let per_point = g.c_out * g.c_in;
    let mut v = [0.0f32; PANEL_LEN];
    for p0 in (t0..t1).step_by(PANEL) {
        let cols = PANEL.min(t1 - p0);
        let (runs, count) = tile_runs::<T>(p0, cols, tiles_x);
        let runs = &runs[..count];
        for ic0 in (0..g.c_in).step_by(block) {
            let depth = block.min(g.c_in - ic0);
            #[cfg(target_arch = "x86_64")]
            if zmm {
                // SAFETY: `zmm` is set only when `avx512` found AVX-512F on this CPU
                #[allow(unsafe_code)]
                unsafe {
                    crate::simd::winograd_inputs_avx512(x, g, runs, (ic0, depth), &mut v)
                };
            } else {
                transform_inputs::<T>(wide, x, g, runs, (ic0, depth), &mut v);
            }
            #[cfg(not(target_arch = "x86_64"))]
            transform_inputs::<T>(wide, x, g, runs, (ic0, depth), &mut v);
            // the block of weights of point `p` and output channels `r0..` (from `ic0`)
            let weights = |r0: usize, p: usize| {
                let up = &u[p * per_point..(p + 1) * per_point];
                let a = Lhs::weights(up, g.c_in, g.c_out, true);
                a.skip_rows(oc0 + r0).skip_columns(ic0)
            };
            for r0 in (0..rows).step_by(block_rows) {
                let present = block_rows.min(rows - r0);
                let products = m.chunks_exact_mut(block_rows * PANEL).take(points);
                for (p, sums) in products.enumerate() {
                    let a = weights(r0, p);
                    let b = (&v[p * depth * PANEL..], PANEL);
                    // the block WEIGHTS_AHEAD products on asked for while this one runs:
                    // on maps of few tiles each block is read from memory once per panel
                    let (r_next, p_next) = match p + WEIGHTS_AHEAD {
                        next if next < points => (r0, next),
                        next => (r0 + block_rows, next - points),
                    };
                    let ahead = if r_next + block_rows <= rows {
                        weights(r_next, p_next).tile_block(0, depth)
                    } else {
                        None
                    };
                    // (a tail panel of fewer tiles: only its columns, on AVX-512 by
                    // columns; resnet18's 14x14 maps end in a panel of one tile)
                    tile_panel_ahead(
                        simd,
                        (present, depth, cols),
                        a,
                        b,
                        (sums, PANEL),
                        Start::Zero,
                        ahead.unwrap_or(&[]),
                    );
                }
                let start = match (ic0, bias) {
                    (0, Some(b)) => Start::Bias(&b[r0..r0 + present]),
                    (0, None) => Start::Zero,
                    _ => Start::Accumulate,
                };
                let dst = &mut out[r0 * plane_len..(r0 + present) * plane_len];
                #[cfg(target_arch = "x86_64")]
                if zmm {
                    let init = start.rows(0, present);
                    // SAFETY: as above
                    #[allow(unsafe_code)]
                    unsafe {
                        let dst = (dst, part.first_pixel);
                        crate::simd::winograd_outputs_avx512(m, runs, init, dst, present, g)
                    };
                    continue;
                }
                let dst = (dst, part.first_pixel);
                transform_outputs::<T>(wide, (m, block_rows), (present, runs), start, dst, g);
            }
        }
    }
}

/// A panel's tiles along one row of tiles: the first tile's place in the panel, how many,
/// and the first tile's top-left output pixel.
#[derive(Clone, Copy, Default)]
pub(crate) struct Run {
    /// the first tile's lane in the panel
    pub(crate) first: usize,
    /// tiles in the run (at most [`PANEL`] - `first`)
    pub(crate) len: usize,
    /// the first tile's top-left output pixel (row, column)
    pub(crate) corner: (usize, usize),
}

/// The panel's tiles `p0..p0 + cols` (of `T` outputs a side) as runs along rows of tiles
/// (`tiles_x` per row), and how many runs.
fn tile_runs<const T: usize>(p0: usize, cols: usize, tiles_x: usize) -> ([Run; PANEL], usize) {
    let mut runs = [Run::default(); PANEL];
    let (mut t, mut count) = (0, 0);
    while t < cols {
        let tile = p0 + t;
        let len = (tiles_x - tile % tiles_x).min(cols - t);
        runs[count] = Run {
            first: t,
            len,
            corner: (tile / tiles_x * T, tile % tiles_x * T),
        };
        (t, count) = (t + len, count + 1);
    }
    (runs, count)
}

/// `B^T` applied to the `T + 2` values `d` of one line of a tile's input (the rest of the
/// six zero). F(2x2): `B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]`; F(4x4): `B^T =
/// [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0
/// 1]`, as sums of shared differences.
#[inline(always)]
fn input_line<const T: usize>([d0, d1, d2, d3, d4, d5]: [f32; 6]) -> [f32; 6] {
    if T == 2 {
        return [d0 - d2, d1 + d2, d2 - d1, d1 - d3, 0.0, 0.0];
    }
    let (high, low) = (d4 - d2, d3 - d1);
    [
        high + 4.0 * (d0 - d2),
        (d3 + d4) - 4.0 * (d1 + d2),
        (d4 - d3) + 4.0 * (d1 - d2),
        high + 2.0 * low,
        high - 2.0 * low,
        (d5 - d3) + 4.0 * (d1 - d3),
    ]
}

/// `A^T` applied to the `T + 2` sums `m` of one line of a tile's products: its `T`
/// outputs (the rest of the four zero). F(2x2): `A^T = [1 1 1 0; 0 1 -1 -1]`; F(4x4):
/// `A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]`.
#[inline(always)]
fn output_line<const T: usize>([m0, m1, m2, m3, m4, m5]: [f32; 6]) -> [f32; 4] {
    if T == 2 {
        return [m0 + m1 + m2, m1 - m2 - m3, 0.0, 0.0];
    }
    let (sum12, diff12, sum34, diff34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
    [
        m0 + sum12 + sum34,
        diff12 + 2.0 * diff34,
        sum12 + 4.0 * sum34,
        diff12 + 8.0 * diff34 + m5,
    ]
}

/// The transformed input `V = B^T d B` of the panel's tiles (`runs`; tiles past them
/// zero) for input channels `ic0..ic0 + depth`: `v[(p * depth + ic) * 16 + t]` is point
/// `p` of tile `t`, channel `ic0 + ic`. Each run's `T + 2` input rows are copied into a
/// zero-padded line, whose columns of each phase modulo `T` are the tiles' columns.
#[inline(always)]
fn transform_inputs<const T: usize>(
    wide: bool,
    x: &[f32],
    g: &Conv2dGeom,
    runs: &[Run],
    (ic0, depth): (usize, usize),
    v: &mut [f32],
) {
    // (F(4x4)'s AVX-512 column gathers exist on x86_64 only)
    #[cfg(not(target_arch = "x86_64"))]
    let _ = wide;
    let (plane, side) = (g.h * g.w, T + 2);
    // d[r * side + c][t]: the tile's input at row r, column c (zero outside the image);
    // each run writes sixteen lanes from its first (fixed-size copies), the next run
    // overwriting those past its own, lanes past the last run unused. Every channel
    // writes the same lanes: cleared once (per channel, the clearing was 10% of
    // unet_small's time)
    let mut d = [[0.0f32; 2 * PANEL]; MAX_POINTS];
    // (the transform's buffers too: each channel overwrites what it reads)
    let zeros = [0.0f32; PANEL];
    let mut rows = [[0.0f32; PANEL]; MAX_POINTS];
    let mut lines = [[0.0f32; PANEL]; 6];
    for ic in 0..depth {
        let input = &x[(ic0 + ic) * plane..(ic0 + ic + 1) * plane];
        for run in runs {
            let (oy, ox) = run.corner;
            let width = T * run.len + 2;
            // the line's columns j whose input column ox + j - pad_left exists
            let lo = g.pad_left.saturating_sub(ox).min(width);
            let hi = (g.w + g.pad_left).saturating_sub(ox).clamp(lo, width);
            for r in 0..side {
                let iy = (oy + r).checked_sub(g.pad_top).filter(|&iy| iy < g.h);
                #[cfg(target_arch = "x86_64")]
                if wide && T == 4 {
                    // the line's columns straight from the plane (rows outside it: zeros)
                    let at = iy.map(|iy| (iy * g.w + ox) as isize - g.pad_left as isize);
                    let (at, columns) = match at {
                        Some(at) => (at, (lo, hi)),
                        None => (0, (0, 0)),
                    };
                    // SAFETY: `wide` is set only when `avx512` found AVX-512F on this CPU;
                    // the columns `lo..hi` from `at` lie inside row `iy` of the plane
                    #[allow(unsafe_code)]
                    unsafe {
                        let line = (input, at, columns);
                        crate::simd::winograd4_columns_avx512(line, &mut d, (r, run.first))
                    };
                    continue;
                }
                let mut line = [0.0f32; MAX_LINE];
                if let Some(iy) = iy {
                    let start = (iy * g.w + ox).checked_sub(g.pad_left);
                    if !copy_line::<T>(input, start, &mut line) {
                        let from = iy * g.w + ox + lo - g.pad_left;
                        line[lo..hi].copy_from_slice(&input[from..from + hi - lo]);
                    }
                    // the columns outside the row (the padding); those past `width` feed
                    // only the lanes of later runs, which overwrite them (a test of every
                    // column against `lo..hi` was 6-8% of resnet18's and unet_small's
                    // instructions on aarch64)
                    line[..lo].fill(0.0);
                    line[hi..width].fill(0.0);
                }
                // the line's columns by phase: tile t's column c is phases[c % T][t + c / T]
                let mut phases = [[0.0f32; PANEL + 1]; 4];
                split_phases::<T>(&line, &mut phases);
                for c in 0..side {
                    let column = &phases[c % T][c / T..c / T + PANEL];
                    let dst = &mut d[r * side + c][run.first..run.first + PANEL];
                    dst.copy_from_slice(column);
                }
            }
        }
        // B^T d B: along rows (each column's values), then along columns
        for c in 0..side {
            let column = line_of(side, &zeros, |r| {
                d.get(r * side + c).and_then(|l| l.first_chunk())
            });
            input_lines::<T>(column, &mut lines);
            for (r, line) in lines.iter().enumerate().take(side) {
                rows[r * side + c] = *line;
            }
        }
        for r in 0..side {
            let row = line_of(side, &zeros, |c| rows.get(r * side + c));
            input_lines::<T>(row, &mut lines);
            for (c, line) in lines.iter().enumerate().take(side) {
                let at = ((r * side + c) * depth + ic) * PANEL;
                v[at..at + PANEL].copy_from_slice(line);
            }
        }
    }
}

/// `phases[q][j] = line[T j + q]` for `q < T`: a zero-padded input line's columns by phase
/// modulo `T` (by `ld4` on NEON for F(4x4), where the compiler leaves the loop scalar).
#[inline(always)]
fn split_phases<const T: usize>(line: &[f32; MAX_LINE], phases: &mut [[f32; PANEL + 1]; 4]) {
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    if T == 4 && crate::simd::neon() {
        crate::simd::winograd4_phases_neon(line, phases);
        return;
    }
    for j in 0..PANEL + 1 {
        for (q, phase) in phases.iter_mut().enumerate().take(T) {
            phase[j] = line[T * j + q];
        }
    }
}

/// One line of a transform pass over sixteen tiles: element `j < side` is `read(j)`, the
/// rest of the six (and any `read` finds no lanes for) `zeros`.
#[inline(always)]
fn line_of<'a>(
    side: usize,
    zeros: &'a [f32; PANEL],
    read: impl Fn(usize) -> Option<&'a [f32; PANEL]>,
) -> [&'a [f32; PANEL]; 6] {
    core::array::from_fn(|j| if j < side { read(j) } else { None }.unwrap_or(zeros))
}

/// [`input_line`] on sixteen tiles at once (a loop that vectorizes).
#[inline(always)]
fn input_lines<const T: usize>(d: [&[f32; PANEL]; 6], out: &mut [[f32; PANEL]; 6]) {
    for t in 0..PANEL {
        let values = input_line::<T>([d[0][t], d[1][t], d[2][t], d[3][t], d[4][t], d[5][t]]);
        for (o, value) in out.iter_mut().zip(values) {
            o[t] = value;
        }
    }
}

/// [`output_line`] on sixteen tiles at once (a loop that vectorizes).
#[inline(always)]
fn output_lines<const T: usize>(m: [&[f32; PANEL]; 6], out: &mut [[f32; PANEL]; 4]) {
    for t in 0..PANEL {
        let values = output_line::<T>([m[0][t], m[1][t], m[2][t], m[3][t], m[4][t], m[5][t]]);
        for (o, value) in out.iter_mut().zip(values) {
            o[t] = value;
        }
    }
}

/// Copies the [`line_len`] floats from `start` of `input` into `line` when the plane holds
/// them all (past the row's end too; the caller clears the columns outside the row): a
/// fixed-size copy, vector moves where a length known only at run time is a call to
/// memcpy (6% of the convolution). False when they do not all lie in the plane.
#[inline(always)]
fn copy_line<const T: usize>(
    input: &[f32],
    start: Option<usize>,
    line: &mut [f32; MAX_LINE],
) -> bool {
    fn fixed<const N: usize>(input: &[f32], at: usize, line: &mut [f32; MAX_LINE]) -> bool {
        let window = input.get(at..at + N).map(<&[f32; N]>::try_from);
        match (window, line.first_chunk_mut::<N>()) {
            (Some(Ok(window)), Some(dst)) => {
                *dst = *window;
                true
            }
            _ => false,
        }
    }
    let Some(at) = start else { return false };
    if T == 2 {
        fixed::<{ line_len(2) }>(input, at, line)
    } else {
        fixed::<{ line_len(4) }>(input, at, line)
    }
}

/// [`transform_outputs`]' row of F(4x4) pixels (see `simd::winograd4_row_avx512` for the
/// contract): the AVX-512 kernel with `wide`, else NEON's (callers ask for one of them).
#[inline(always)]
fn winograd4_row(
    wide: bool,
    y: &[[f32; PANEL]; 16],
    (r, first): (usize, usize),
    dst: &mut [f32],
    start: Option<f32>,
) {
    #[cfg(target_arch = "x86_64")]
    if wide {
        // SAFETY: `wide` is set only when `avx512` found AVX-512F on this CPU
        #[allow(unsafe_code)]
        unsafe {
            crate::simd::winograd4_row_avx512(y, (r, first), dst, start)
        };
        return;
    }
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    {
        let _ = wide;
        crate::simd::winograd4_row_neon(y, (r, first), dst, start);
    }
    #[cfg(not(all(target_arch = "aarch64", target_feature = "neon")))]
    {
        // (reached only without `wide`: a caller that asked when neither kernel exists)
        debug_assert!(wide, "winograd4_row: no vector kernel on this CPU");
        let _ = (y, r, first, dst, start);
    }
}

/// Turns the products `m` (`m[(p * block_rows + i) * 16 + t]`: point `p`, output channel
/// `i` of the block of 16, tile `t`) of `count` output channels into their `T x T` output pixels `A^T M A`, added
/// to `start` (bias, zero, or what `out` holds) in `out` (`count` planes of a part's
/// pixels, output pixel `first_pixel` first).
#[inline(always)]
fn transform_outputs<const T: usize>(
    wide: bool,
    (m, block_rows): (&[f32], usize),
    (count, runs): (usize, &[Run]),
    start: Start<'_>,
    (out, first_pixel): (&mut [f32], usize),
    g: &Conv2dGeom,
) {
    let side = T + 2;
    let plane_len = out.len() / count.max(1);
    let at = |p: usize, i: usize| &m[(p * block_rows + i) * PANEL..][..PANEL];
    // (cleared once: each output channel overwrites what it reads)
    let zeros = [0.0f32; PANEL];
    let mut rows = [[0.0f32; PANEL]; 4 * 6];
    let mut lines = [[0.0f32; PANEL]; 4];
    let mut y = [[0.0f32; PANEL]; 16];
    for (i, plane) in out.chunks_exact_mut(plane_len).enumerate().take(count) {
        // A^T M A: along rows (each column's sums), then along columns
        for c in 0..side {
            let column = line_of(side, &zeros, |r| at(r * side + c, i).first_chunk());
            output_lines::<T>(column, &mut lines);
            for (r, line) in lines.iter().enumerate().take(T) {
                rows[r * side + c] = *line;
            }
        }
        for r in 0..T {
            let row = line_of(side, &zeros, |c| rows.get(r * side + c));
            output_lines::<T>(row, &mut lines);
            for (c, line) in lines.iter().enumerate().take(T) {
                y[r * T + c] = *line;
            }
        }
        let first = match start {
            Start::Bias(b) => Some(b[i]),
            Start::Zero => Some(0.0),
            Start::Accumulate => None,
        };
        // F(4x4)'s pixels a row of a run at a time, by a vector kernel where there is one
        // (AVX-512's permutes with `wide`, NEON's interleaving stores on aarch64)
        if T == 4 && (wide || crate::simd::neon()) {
            for run in runs {
                let (oy, ox) = run.corner;
                let columns = (4 * run.len).min(g.ow.saturating_sub(ox));
                for r in (0..4).filter(|r| oy + r < g.oh && columns > 0) {
                    let at = (oy + r) * g.ow + ox - first_pixel;
                    let dst = &mut plane[at..at + columns];
                    winograd4_row(wide, &y, (r, run.first), dst, first);
                }
            }
            continue;
        }
        for run in runs {
            let (oy, ox) = run.corner;
            for (k, y) in y.iter().enumerate().take(T * T) {
                let (py, px) = (oy + k / T, ox + k % T);
                if py >= g.oh {
                    continue;
                }
                let row = &mut plane[py * g.ow - first_pixel..(py + 1) * g.ow - first_pixel];
                let tiles = y[run.first..run.first + run.len].iter();
                for (slot, &value) in row.iter_mut().skip(px).step_by(T).zip(tiles) {
                    *slot = first.unwrap_or(*slot) + value;
                }
            }
        }
    }
}
