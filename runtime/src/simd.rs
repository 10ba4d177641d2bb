//! The SIMD kernels (x86_64 AVX2 + FMA, through `core::arch`) and the one question that
//! picks them: [`avx2_fma`]. With feature `std` it is answered at run time
//! (`is_x86_feature_detected!`, which caches its answer); without std at compile time
//! (`-C target-feature=+avx2,+fma`, or a `-C target-cpu` that has them). Every kernel here
//! has a portable counterpart in [`crate::kernels`], which other CPUs, and miri, run; the
//! two agree within rounding (a fused multiply-add rounds once).
//!
//! This is the only module with `unsafe`: the vector loads and stores, each reading or
//! writing a range that a checked slice of exactly that length proves in bounds.

#[cfg(all(target_arch = "x86_64", feature = "std"))]
extern crate std;

/// True when the AVX2 + FMA copies of the kernels may run on this CPU.
#[inline]
pub fn avx2_fma() -> bool {
    #[cfg(all(target_arch = "x86_64", feature = "std"))]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(all(target_arch = "x86_64", feature = "std")))]
    {
        cfg!(all(
            target_arch = "x86_64",
            target_feature = "avx2",
            target_feature = "fma"
        ))
    }
}

/// Output channels one register tile of [`conv2d_avx2`] computes (the tile code names
/// its four rows).
pub const CONV_OC: usize = 4;
/// Output columns one register tile computes (two vectors of eight).
const CONV_OX: usize = 16;

/// Floats of the stack buffer [`conv2d_avx2`] packs input rows into (32 KiB).
const PACK_LEN: usize = 8192;

/// True when [`conv2d_avx2`] can run `g`: unit horizontal stride, at least [`CONV_OC`]
/// output channels per group, rows at least [`CONV_OX`] wide, and one input channel's
/// rows of one output row's window fit the pack buffer.
pub fn conv2d_avx2_fits(g: &crate::kernels::Conv2dGeom) -> bool {
    let reach = (g.kw - 1) * g.dilation_w;
    g.stride_w == 1
        && g.c_out / g.groups >= CONV_OC
        && g.ow >= CONV_OX
        && g.kh * (g.ow + reach) <= PACK_LEN
}

/// [`crate::kernels::conv2d`] for geometries [`conv2d_avx2_fits`] accepts.
///
/// For each output row, the input rows its window reads are copied, zero padding
/// included, into a contiguous stack buffer, as many input channels at a time as fit
/// (input planes lie a power of two apart, so reading them in step would make the loads
/// collide in the cache). Output channels go in blocks of [`CONV_OC`], each row in
/// register tiles of [`CONV_OC`] channels by [`CONV_OX`] columns: per tap, two vector
/// loads feed eight fused multiply-adds, and the sums stay in registers until the tile is
/// stored (the first channel chunk starts from the bias, later ones from the stored sums).
/// When the row width is not a multiple of [`CONV_OX`], the last tile ends at the row's
/// end and overlaps the one before. The channels left over by the blocks take the
/// portable path.
///
/// # Safety
///
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(unsafe_code)]
pub unsafe fn conv2d_avx2(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    g: &crate::kernels::Conv2dGeom,
    epi: &impl Fn(usize, f32) -> f32,
) {
    use core::arch::x86_64::*;
    let (cin_g, cout_g) = (g.c_in / g.groups, g.c_out / g.groups);
    let tiled = cout_g / CONV_OC * CONV_OC;
    let plane = g.oh * g.ow;
    let in_plane = g.h * g.w;
    let taps = cin_g * g.kh * g.kw;
    let wp = g.ow + (g.kw - 1) * g.dilation_w;
    let last = g.ow - CONV_OX;
    let mut pack = [0.0f32; PACK_LEN];
    for n in 0..g.n {
        for grp in 0..g.groups {
            let first = grp * cout_g;
            let xg = &x[(n * g.c_in + grp * cin_g) * in_plane
                ..(n * g.c_in + (grp + 1) * cin_g) * in_plane];
            for oy in 0..g.oh {
                // the kernel rows whose input row oy * stride + ky * dilation - pad is inside
                let (ky0, ky1) = crate::kernels::valid_range(
                    g.kh,
                    g.h,
                    g.dilation_h,
                    g.pad_top,
                    oy * g.stride_h,
                );
                let rows = ky1 - ky0;
                let chunk = (PACK_LEN / (rows * wp).max(1)).clamp(1, cin_g.max(1));
                let mut c0 = 0;
                loop {
                    let c1 = (c0 + chunk).min(cin_g);
                    // pack[(k * rows + r) * wp + p] = x[c0 + k, iy(ky0 + r), p - pad_left],
                    // 0 outside the row
                    for k in 0..c1 - c0 {
                        for r in 0..rows {
                            let iy = oy * g.stride_h + (ky0 + r) * g.dilation_h - g.pad_top;
                            let at = (c0 + k) * in_plane + iy * g.w;
                            let src = &xg[at..at + g.w];
                            let dst = &mut pack[(k * rows + r) * wp..(k * rows + r + 1) * wp];
                            let start = g.pad_left.min(wp);
                            let len = g.w.min(wp - start);
                            dst[..start].fill(0.0);
                            dst[start..start + len].copy_from_slice(&src[..len]);
                            dst[start + len..].fill(0.0);
                        }
                    }
                    for oc0 in (first..first + tiled).step_by(CONV_OC) {
                        let row_base = |c: usize| (n * g.c_out + oc0 + c) * plane + oy * g.ow;
                        let weights: [&[f32]; CONV_OC] =
                            core::array::from_fn(|c| &w[(oc0 + c) * taps..(oc0 + c + 1) * taps]);
                        // what each tile starts from: the bias, or the sums so far (the
                        // last tile's taken now, before the tile it overlaps is stored)
                        let biases: [f32; CONV_OC] =
                            core::array::from_fn(|c| bias.map_or(0.0, |b| b[oc0 + c]));
                        let tail: [[f32; CONV_OX]; CONV_OC] = core::array::from_fn(|c| {
                            let mut t = [biases[c]; CONV_OX];
                            if c0 > 0 {
                                let at = row_base(c) + last;
                                t.copy_from_slice(&out[at..at + CONV_OX]);
                            }
                            t
                        });
                        let [w0, w1, w2, w3] = weights;
                        let starts = (0..last).step_by(CONV_OX).chain(core::iter::once(last));
                        for ox in starts {
                            let init: [[f32; CONV_OX]; CONV_OC] = core::array::from_fn(|c| {
                                if ox == last {
                                    tail[c]
                                } else if c0 > 0 {
                                    let at = row_base(c) + ox;
                                    let mut t = [0.0; CONV_OX];
                                    t.copy_from_slice(&out[at..at + CONV_OX]);
                                    t
                                } else {
                                    [biases[c]; CONV_OX]
                                }
                            });
                            // SAFETY: each `init[c]` is an array of 16 floats: both 8-float
                            // loads read inside it.
                            let load = |c: usize| unsafe {
                                (
                                    _mm256_loadu_ps(init[c].as_ptr()),
                                    _mm256_loadu_ps(init[c].as_ptr().add(8)),
                                )
                            };
                            // eight accumulators, named so that they live in registers
                            let (mut a0, mut a1, mut a2, mut a3) =
                                (load(0), load(1), load(2), load(3));
                            for k in 0..c1 - c0 {
                                for r in 0..rows {
                                    let row = &pack[(k * rows + r) * wp..(k * rows + r + 1) * wp];
                                    let tap0 = ((c0 + k) * g.kh + ky0 + r) * g.kw;
                                    let (r0, r1, r2, r3) = (
                                        &w0[tap0..tap0 + g.kw],
                                        &w1[tap0..tap0 + g.kw],
                                        &w2[tap0..tap0 + g.kw],
                                        &w3[tap0..tap0 + g.kw],
                                    );
                                    for kx in 0..g.kw {
                                        let at = ox + kx * g.dilation_w;
                                        let xs = &row[at..at + CONV_OX];
                                        // SAFETY: `xs` holds exactly 16 floats (a checked
                                        // slice of that length): both 8-float loads read
                                        // inside it.
                                        let xv = unsafe {
                                            (
                                                _mm256_loadu_ps(xs.as_ptr()),
                                                _mm256_loadu_ps(xs.as_ptr().add(8)),
                                            )
                                        };
                                        a0 = madd(r0[kx], xv, a0);
                                        a1 = madd(r1[kx], xv, a1);
                                        a2 = madd(r2[kx], xv, a2);
                                        a3 = madd(r3[kx], xv, a3);
                                    }
                                }
                            }
                            let sums = [a0, a1, a2, a3];
                            for (c, (low, high)) in sums.into_iter().enumerate() {
                                let at = row_base(c) + ox;
                                let dst = &mut out[at..at + CONV_OX];
                                // SAFETY: `dst` holds exactly 16 floats (a checked slice
                                // of that length): both 8-float stores write inside it.
                                unsafe {
                                    _mm256_storeu_ps(dst.as_mut_ptr(), low);
                                    _mm256_storeu_ps(dst.as_mut_ptr().add(8), high);
                                }
                            }
                        }
                    }
                    if c1 >= cin_g {
                        break;
                    }
                    c0 = c1;
                }
                for oc in first..first + tiled {
                    let at = (n * g.c_out + oc) * plane + oy * g.ow;
                    crate::kernels::finish(&mut out[at..at + g.ow], at, epi);
                }
            }
            if tiled < cout_g {
                crate::kernels::conv2d_direct(
                    x,
                    w,
                    bias,
                    out,
                    g,
                    epi,
                    n..n + 1,
                    first + tiled..first + cout_g,
                );
            }
        }
    }
}

/// `acc + w * x` on a pair of 8-float vectors, with one rounding per element.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn madd(
    w: f32,
    x: (core::arch::x86_64::__m256, core::arch::x86_64::__m256),
    acc: (core::arch::x86_64::__m256, core::arch::x86_64::__m256),
) -> (core::arch::x86_64::__m256, core::arch::x86_64::__m256) {
    use core::arch::x86_64::*;
    let v = _mm256_set1_ps(w);
    (
        _mm256_fmadd_ps(v, x.0, acc.0),
        _mm256_fmadd_ps(v, x.1, acc.1),
    )
}
