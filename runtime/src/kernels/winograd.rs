//! 3x3 convolutions of unit stride as Winograd's F(2x2, 3x3): each 2 x 2 block of output
//! pixels (a tile) comes from a 4 x 4 block of input through 16 products per input
//! channel instead of 36 (2.25x fewer multiply-adds), the products being 16 independent
//! matrix products over the channels, one per point of the transformed tile:
//!
//! ```text
//!   U[p] = (G w G^T)[p]     per (c_out, c_in), once at load (`winograd_weights`)
//!   V[p] = (B^T d B)[p]     per (c_in, tile), d the tile's 4 x 4 input block
//!   M[p] = U[p] @ V[p]      c_out x c_in by c_in x tiles: the GEMM's register tiles
//!   y    = A^T M A          per (c_out, tile): its 2 x 2 outputs
//! ```
//!
//! The transforms add and subtract (and halve, for `G`), so the result differs from the
//! direct sum only by rounding: the tests hold it to the direct sum's bound
//! (`n * eps * sum |terms|`).

use super::{
    each_row, stack_floats, tile_panel, weight_tile_index, Conv2dGeom, Lhs, Start, MAX_TILE_ROWS,
    PANEL,
};

/// Points of a transformed tile (4 x 4): products per tile and input channel.
pub const WINOGRAD_POINTS: usize = 16;

/// Input channels transformed at a time (the transformed panel, 16 points by this many
/// channels by 16 tiles, is on the stack: 128 KiB on desktop CPUs, 4 KiB elsewhere,
/// beside the 16 KiB of products of a block of output channels).
const CHANNEL_BLOCK: usize = stack_floats(128, 4);

/// True when [`conv2d_winograd`] computes this convolution: a 3x3 kernel, unit stride
/// and dilation, one group.
pub fn winograd_fits(g: &Conv2dGeom) -> bool {
    (g.kh, g.kw, g.stride_h, g.stride_w) == (3, 3, 1, 1)
        && (g.dilation_h, g.dilation_w, g.groups) == (1, 1, 1)
}

/// Floats of [`winograd_weights`]' output for a convolution of `c_out` by `c_in` channels.
pub const fn winograd_weights_len(c_out: usize, c_in: usize) -> usize {
    WINOGRAD_POINTS * c_out * c_in
}

/// Transforms 3x3 convolution weights (`w`, `[c_out, c_in, 3, 3]`) into the 16 matrices
/// `U[p] = (G w G^T)[p]` that [`conv2d_winograd`] reads: `out[p * c_out * c_in..]` holds
/// `U[p]`, `[c_out, c_in]` laid out as [`super::tile_conv2d_weights`] lays a weight of
/// depth `c_in` (blocks of 16 output channels interleaved, the rest row-major).
pub fn winograd_weights(w: &[f32], out: &mut [f32], c_out: usize, c_in: usize) {
    let (w, out) = (
        &w[..c_out * c_in * 9],
        &mut out[..winograd_weights_len(c_out, c_in)],
    );
    let at = |oc: usize, ic: usize| weight_tile_index((oc, ic), (c_out, c_in));
    // G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
    let g_rows = |[a, b, c]: [f32; 3]| [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
    for (k, g) in w.chunks_exact(9).enumerate() {
        let (oc, ic) = (k / c_in, k % c_in);
        // G g: four rows of three, column by column
        let cols: [[f32; 4]; 3] = core::array::from_fn(|c| g_rows([g[c], g[3 + c], g[6 + c]]));
        for r in 0..4 {
            let u = g_rows([cols[0][r], cols[1][r], cols[2][r]]);
            for (c, &value) in u.iter().enumerate() {
                out[(r * 4 + c) * c_out * c_in + at(oc, ic)] = value;
            }
        }
    }
}

/// A 3x3 convolution of unit stride ([`winograd_fits`]) on weights transformed by
/// [`winograd_weights`], as [`super::conv2d`] computes it (bias, padding, the row
/// epilogue `epi(base, row)` once each output plane is complete). Per panel of 16 tiles
/// and block of input channels, the tiles' input is transformed into a stack buffer, then
/// each block of 16 output channels runs 16 register tiles (one per point) and
/// transforms their sums back into output pixels. With threads, rows of tiles split over
/// them on large maps, output channels (blocks of 16) on small ones.
pub fn conv2d_winograd(
    x: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    g: &Conv2dGeom,
    epi: impl Fn(usize, &mut [f32]) + Sync,
) {
    debug_assert!(winograd_fits(g));
    let simd = crate::simd::avx2_fma();
    let pixels = g.oh * g.ow;
    let in_len = g.c_in * g.h * g.w;
    if pixels == 0 || g.c_out == 0 {
        return;
    }
    let tiles_x = g.ow.div_ceil(2);
    let tile_rows = g.oh.div_ceil(2);
    let whole = Part {
        tiles: (0, tile_rows * tiles_x),
        first_pixel: 0,
        plane_len: pixels,
    };
    for n in 0..g.n {
        let xn = &x[n * in_len..(n + 1) * in_len];
        let on = &mut out[n * g.c_out * pixels..(n + 1) * g.c_out * pixels];
        // with threads, on maps of many tiles: rows of tiles split over them, each part's
        // outputs (every channel) summed into a buffer of its own and copied into place
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
                    winograd_part(simd, (xn, (u, i * chunk), bias), whole, part, g);
                });
                each_row(simd, on, g.ow, n * g.c_out * pixels, &epi);
                continue;
            }
            if worth {
                let per_part = tile_rows.div_ceil(threads);
                let part = |i: usize| {
                    let (ty0, ty1) = (i * per_part, tile_rows.min((i + 1) * per_part));
                    let first_pixel = 2 * ty0 * g.ow;
                    Part {
                        tiles: (ty0 * tiles_x, ty1 * tiles_x),
                        first_pixel,
                        plane_len: pixels.min(2 * ty1 * g.ow) - first_pixel,
                    }
                };
                let sums = crate::threads::map_parts(tile_rows.div_ceil(per_part), |i| {
                    let mut sums = alloc::vec![0.0f32; g.c_out * part(i).plane_len];
                    winograd_part(simd, (xn, (u, 0), bias), part(i), &mut sums, g);
                    sums
                });
                for (i, sums) in sums.iter().enumerate() {
                    let Part {
                        first_pixel,
                        plane_len,
                        ..
                    } = part(i);
                    for (dst, src) in on
                        .chunks_exact_mut(pixels)
                        .zip(sums.chunks_exact(plane_len))
                    {
                        dst[first_pixel..first_pixel + plane_len].copy_from_slice(src);
                    }
                }
                each_row(simd, on, g.ow, n * g.c_out * pixels, &epi);
                continue;
            }
        }
        winograd_part(simd, (xn, (u, 0), bias), whole, on, g);
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
fn winograd_part(
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
                crate::simd::winograd_channels_avx512(operands, part, out, g);
            } else {
                crate::simd::winograd_channels_avx2(operands, part, out, g);
            }
        }
        return;
    }
    winograd_channels((simd, false), operands, part, out, g);
}

/// The operands of [`winograd_channels`]: the input, the transformed weights with the
/// first output channel computed, the bias from that channel on.
pub(crate) type WinogradOperands<'a> = (&'a [f32], (&'a [f32], usize), Option<&'a [f32]>);

/// [`conv2d_winograd`] for the output channels `oc0..` that `out` holds and the tiles of
/// `part` (`out`: the part's planes, `part.plane_len` pixels each).
/// Inlined into `simd::winograd_channels_avx512` and `_avx2`, where the transforms'
/// sixteen-tile loops compile to whole vectors; with `zmm` (AVX-512F, the first) the
/// transforms are `simd::winograd_inputs_avx512` and `_outputs_avx512` instead.
#[inline(always)]
pub(crate) fn winograd_channels(
    (simd, zmm): (bool, bool),
    (x, (u, oc0), bias): WinogradOperands<'_>,
    part: Part,
    out: &mut [f32],
    g: &Conv2dGeom,
) {
    // (the AVX-512 transforms exist on x86_64 only)
    #[cfg(not(target_arch = "x86_64"))]
    let _ = zmm;
    let plane_len = part.plane_len;
    let rows = out.len() / plane_len;
    let tiles_x = g.ow.div_ceil(2);
    let (t0, t1) = part.tiles;
    let per_point = g.c_out * g.c_in;
    let mut v = [0.0f32; WINOGRAD_POINTS * CHANNEL_BLOCK * PANEL];
    let mut m = [0.0f32; WINOGRAD_POINTS * MAX_TILE_ROWS * PANEL];
    for p0 in (t0..t1).step_by(PANEL) {
        let cols = PANEL.min(t1 - p0);
        let (runs, count) = tile_runs(p0, cols, tiles_x);
        let runs = &runs[..count];
        for ic0 in (0..g.c_in).step_by(CHANNEL_BLOCK) {
            let depth = CHANNEL_BLOCK.min(g.c_in - ic0);
            #[cfg(target_arch = "x86_64")]
            if zmm {
                // SAFETY: `zmm` is set only when `avx512` found AVX-512F on this CPU
                #[allow(unsafe_code)]
                unsafe {
                    crate::simd::winograd_inputs_avx512(x, g, runs, (ic0, depth), &mut v)
                };
            } else {
                transform_inputs(x, g, runs, (ic0, depth), &mut v);
            }
            #[cfg(not(target_arch = "x86_64"))]
            transform_inputs(x, g, runs, (ic0, depth), &mut v);
            for r0 in (0..rows).step_by(MAX_TILE_ROWS) {
                let present = MAX_TILE_ROWS.min(rows - r0);
                for (p, sums) in m.chunks_exact_mut(MAX_TILE_ROWS * PANEL).enumerate() {
                    let up = &u[p * per_point..(p + 1) * per_point];
                    let a = Lhs::weights(up, g.c_in, g.c_out, true);
                    let a = a.skip_rows(oc0 + r0).skip_columns(ic0);
                    let b = (&v[p * depth * PANEL..], PANEL);
                    tile_panel(
                        simd,
                        (present, depth, PANEL),
                        a,
                        b,
                        (sums, PANEL),
                        Start::Zero,
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
                        crate::simd::winograd_outputs_avx512(&m, runs, init, dst, present, g)
                    };
                    continue;
                }
                transform_outputs(&m, present, runs, start, (dst, part.first_pixel), g);
            }
        }
    }
}

/// Input columns under a run of [`PANEL`] tiles.
const LINE: usize = 2 * PANEL + 2;

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

/// The panel's tiles `p0..p0 + cols` as runs along rows of tiles (`tiles_x` per row), and
/// how many runs.
fn tile_runs(p0: usize, cols: usize, tiles_x: usize) -> ([Run; PANEL], usize) {
    let mut runs = [Run::default(); PANEL];
    let (mut t, mut count) = (0, 0);
    while t < cols {
        let tile = p0 + t;
        let len = (tiles_x - tile % tiles_x).min(cols - t);
        runs[count] = Run {
            first: t,
            len,
            corner: (tile / tiles_x * 2, tile % tiles_x * 2),
        };
        (t, count) = (t + len, count + 1);
    }
    (runs, count)
}

/// The transformed input `V = B^T d B` of the panel's tiles (`runs`; tiles past them
/// zero) for input channels `ic0..ic0 + depth`: `v[(p * depth + ic) * 16 + t]` is point
/// `p` of tile `t`, channel `ic0 + ic`. Each run's four input rows are copied into a
/// zero-padded line, whose even and odd columns are the tiles' columns.
#[inline(always)]
fn transform_inputs(
    x: &[f32],
    g: &Conv2dGeom,
    runs: &[Run],
    (ic0, depth): (usize, usize),
    v: &mut [f32],
) {
    let plane = g.h * g.w;
    for ic in 0..depth {
        let input = &x[(ic0 + ic) * plane..(ic0 + ic + 1) * plane];
        // d[r * 4 + c][t]: the tile's input at row r, column c (zero outside the image);
        // each run writes sixteen lanes from its first (fixed-size copies), the next run
        // overwriting those past its own, lanes past the last run unused
        let mut d = [[0.0f32; 2 * PANEL]; WINOGRAD_POINTS];
        for run in runs {
            let (oy, ox) = run.corner;
            let width = 2 * run.len + 2;
            // the line's columns j whose input column ox + j - pad_left exists
            let lo = g.pad_left.saturating_sub(ox).min(width);
            let hi = (g.w + g.pad_left).saturating_sub(ox).clamp(lo, width);
            for r in 0..4 {
                let mut line = [0.0f32; LINE];
                if let Some(iy) = (oy + r).checked_sub(g.pad_top).filter(|&iy| iy < g.h) {
                    // the LINE floats from the line's first column, when the plane holds
                    // them (past the row's end too), those outside the row then cleared:
                    // a fixed-size copy (vector moves; a length known only at run time
                    // is a call to memcpy, 6% of the convolution)
                    let start = (iy * g.w + ox).checked_sub(g.pad_left);
                    let window = start.and_then(|at| input.get(at..at + LINE));
                    match window.map(<&[f32; LINE]>::try_from) {
                        Some(Ok(window)) => {
                            line = *window;
                            for (j, slot) in line.iter_mut().enumerate() {
                                if j < lo || j >= hi {
                                    *slot = 0.0;
                                }
                            }
                        }
                        _ => {
                            let from = iy * g.w + ox + lo - g.pad_left;
                            line[lo..hi].copy_from_slice(&input[from..from + hi - lo]);
                        }
                    }
                }
                // the line's even and odd columns: tile t's columns are even[t],
                // odd[t], even[t + 1], odd[t + 1]
                let (mut even, mut odd) = ([0.0f32; PANEL + 1], [0.0f32; PANEL + 1]);
                for ((e, o), pair) in even.iter_mut().zip(&mut odd).zip(line.chunks_exact(2)) {
                    (*e, *o) = (pair[0], pair[1]);
                }
                let columns = [&even[..PANEL], &odd[..PANEL], &even[1..], &odd[1..]];
                for (c, column) in columns.into_iter().enumerate() {
                    let dst = &mut d[r * 4 + c][run.first..run.first + PANEL];
                    dst.copy_from_slice(column);
                }
            }
        }
        // B^T d B, B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], along rows then columns
        let mut rows = [[0.0f32; PANEL]; WINOGRAD_POINTS];
        for c in 0..4 {
            for t in 0..PANEL {
                let [d0, d1, d2, d3] = [d[c][t], d[4 + c][t], d[8 + c][t], d[12 + c][t]];
                rows[c][t] = d0 - d2;
                rows[4 + c][t] = d1 + d2;
                rows[8 + c][t] = d2 - d1;
                rows[12 + c][t] = d1 - d3;
            }
        }
        for r in 0..4 {
            let [s0, s1, s2, s3] = [
                rows[4 * r],
                rows[4 * r + 1],
                rows[4 * r + 2],
                rows[4 * r + 3],
            ];
            let point = |c: usize| (r * 4 + c) * depth + ic;
            for t in 0..PANEL {
                v[point(0) * PANEL + t] = s0[t] - s2[t];
                v[point(1) * PANEL + t] = s1[t] + s2[t];
                v[point(2) * PANEL + t] = s2[t] - s1[t];
                v[point(3) * PANEL + t] = s1[t] - s3[t];
            }
        }
    }
}

/// Turns the products `m` (`m[(p * 16 + i) * 16 + t]`: point `p`, output channel `i`,
/// tile `t`) of `count` output channels into their 2 x 2 output pixels `A^T M A`, added
/// to `start` (bias, zero, or what `out` holds) in `out` (`count` planes of a part's
/// pixels, output pixel `first_pixel` first).
#[inline(always)]
fn transform_outputs(
    m: &[f32],
    count: usize,
    runs: &[Run],
    start: Start<'_>,
    (out, first_pixel): (&mut [f32], usize),
    g: &Conv2dGeom,
) {
    let plane_len = out.len() / count.max(1);
    let at = |p: usize, i: usize| &m[(p * MAX_TILE_ROWS + i) * PANEL..][..PANEL];
    for (i, plane) in out.chunks_exact_mut(plane_len).enumerate().take(count) {
        // A^T = [1 1 1 0; 0 1 -1 -1], along rows then columns
        let mut rows = [[0.0f32; PANEL]; 8];
        for c in 0..4 {
            let [m0, m1, m2, m3] = [at(c, i), at(4 + c, i), at(8 + c, i), at(12 + c, i)];
            for t in 0..PANEL {
                rows[c][t] = m0[t] + m1[t] + m2[t];
                rows[4 + c][t] = m1[t] - m2[t] - m3[t];
            }
        }
        let mut y = [[0.0f32; PANEL]; 4];
        for r in 0..2 {
            let [s0, s1, s2, s3] = [
                rows[4 * r],
                rows[4 * r + 1],
                rows[4 * r + 2],
                rows[4 * r + 3],
            ];
            for t in 0..PANEL {
                y[2 * r][t] = s0[t] + s1[t] + s2[t];
                y[2 * r + 1][t] = s1[t] - s2[t] - s3[t];
            }
        }
        let first = match start {
            Start::Bias(b) => Some(b[i]),
            Start::Zero => Some(0.0),
            Start::Accumulate => None,
        };
        for run in runs {
            let (oy, ox) = run.corner;
            for (k, y) in y.iter().enumerate() {
                let (py, px) = (oy + k / 2, ox + k % 2);
                if py >= g.oh {
                    continue;
                }
                let row = &mut plane[py * g.ow - first_pixel..(py + 1) * g.ow - first_pixel];
                let tiles = y[run.first..run.first + run.len].iter();
                for (slot, &value) in row.iter_mut().skip(px).step_by(2).zip(tiles) {
                    *slot = first.unwrap_or(*slot) + value;
                }
            }
        }
    }
}
