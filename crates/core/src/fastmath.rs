//! The one hot loop of every detection-family loss: BCE against a zero target and the sigmoid, over
//! all B × A × nc class logits. Written so the compiler vectorises it (no branches, no libm calls),
//! and compiled again with AVX2+FMA and with AVX-512, picked at run time, so the portable binary stays fast.
//! Every build does the same per-element operations in the same order (no FMA contraction: Rust does not fuse
//! `a * b + c`), so the three give bit-identical elements; only the register width differs.
//!
//! Accuracy: exp and log1p below are within a few ulp in f32 over the whole range the loop feeds
//! them (the argument of exp is ≤ 0; log1p's argument is in (0, 1]); log1p keeps full *relative*
//! precision for tiny arguments, which matters when most logits are very negative.

use crate::softmax_run::{SoftmaxRun, RUN_CELLS};

/// e^t for t ≤ 0 (clamped below at −87, where e^t underflows f32's normal range anyway).
#[inline(always)]
pub(crate) fn exp_neg(t: f32) -> f32 {
    // `t.max(-87.0)` written as a comparison: the same value for every t, NaN included (−87), but one
    // vector max instead of a max plus the NaN fix-up `f32::max` needs.
    let t = if t > -87.0 { t } else { -87.0 };
    // t = n·ln2 + r, |r| ≤ ln2/2, with ln2 split in two for an exact reduction. n is rounded to the
    // nearest integer by adding and subtracting 1.5·2^23 (plain SSE2 arithmetic, no libm `roundf`).
    const MAGIC: f32 = 12_582_912.0;
    let shifted = t * std::f32::consts::LOG2_E + MAGIC;
    let n = shifted - MAGIC;
    let r = t - n * 0.693_359_4 - n * (-2.121_944_4e-4);
    // Minimax-style polynomial for e^r on [−ln2/2, ln2/2] (Cephes expf coefficients).
    let p = 1.987_569_1e-4f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    // Scale by 2^n through the exponent bits (n ≥ −126 here). n as an integer is read off the bits of
    // `shifted` (n + 1.5·2^23, whose ulp is 1, so the low mantissa bits hold n exactly) rather than with
    // `n as i32`: Rust's saturating float→int cast does not vectorise (a scalar convert and NaN/range
    // selects per lane), and it made the whole fused BCE pass about 3× slower. Same integer, same result.
    let n_int = shifted.to_bits().wrapping_sub(MAGIC.to_bits());
    let scale = f32::from_bits(n_int.wrapping_add(127) << 23);
    er * scale
}

/// ln(1 + e) for e in [0, 1], as e·P(e) with P a degree-9 polynomial fitted to ln(1 + e)/e on
/// [0, 1] (Chebyshev fit, coefficients rounded to f32): relative error ≤ 2e-7 in f32 arithmetic,
/// including for tiny e, and no division (the loop's other division, 1/(1 + e), is the only one).
#[inline(always)]
fn log1p_unit(e: f32) -> f32 {
    let p = -0.003_214_036_3f32;
    let p = p * e + 0.019_649_167;
    let p = p * e - 0.056_435_03;
    let p = p * e + 0.105_332_285;
    let p = p * e - 0.152_514_52;
    let p = p * e + 0.196_514_92;
    let p = p * e - 0.249_478_09;
    let p = p * e + 0.333_291;
    let p = p * e - 0.499_998_5;
    let p = p * e + 1.0;
    e * p
}

/// One element: (BCE(x, 0), σ(x)).
/// BCE(x, 0) = max(x, 0) + ln(1 + e^{−|x|}); σ(x) = 1/(1 + e^{−|x|}) or e^{−|x|}/(1 + e^{−|x|}).
#[inline(always)]
pub(crate) fn bce_sigmoid(x: f32) -> (f32, f32) {
    let e = exp_neg(-x.abs());
    let inv = 1.0 / (1.0 + e);
    // max(x, 0) as a comparison (one vector max; `f32::max` adds a NaN fix-up). Both give 0 for NaN; they may
    // differ only in the sign of a zero (x = ±0), which the addition of log1p(e) > 0 erases.
    let pos = if x > 0.0 { x } else { 0.0 };
    (pos + log1p_unit(e), if x >= 0.0 { inv } else { e * inv })
}

/// Σ BCE(x, 0) over `x`, and, when `grad` is given, `grad[i] = σ(x[i])·scale`. The sum is NaN or infinite when
/// `x` holds a non-finite value (the check of the inputs rides along; see [`bce_zero_loop`]).
/// Eight independent lanes (one AVX2 register) in f32 per 1024-element block, blocks summed in f64.
/// (The portable build as one total: what the tests compare the SIMD builds with.)
#[cfg(test)]
#[inline(always)]
fn bce_zero_body<const GROUP: usize>(x: &[f32], grad: Option<&mut [f32]>, scale: f32) -> f64 {
    let mut total = 0.0f64;
    bce_zero_blocks_body::<GROUP>(x, grad, scale, &mut |block| total += block);
    total
}

/// As [`bce_zero_body`], handing the sum of every 1024-element block (and of the tail) to `block`, in order: the
/// total is their running sum from 0, so a caller that splits `x` at multiples of 1024 and adds the blocks of the
/// parts in order gets the very same total.
#[inline(always)]
fn bce_zero_blocks_body<const GROUP: usize>(
    x: &[f32],
    grad: Option<&mut [f32]>,
    scale: f32,
    block: &mut dyn FnMut(f64),
) {
    match grad {
        Some(g) => bce_zero_loop::<GROUP>(
            x,
            |i, s| {
                for (gv, &sv) in g[i..i + s.len()].iter_mut().zip(s) {
                    *gv = sv * scale;
                }
            },
            block,
        ),
        None => bce_zero_loop::<GROUP>(x, |_, _| {}, block),
    }
}

/// The loop of [`bce_zero_body`], `GROUP` elements per step; `sigmoid(i, s)` receives σ(x[i..i + s.len()]).
///
/// One element's exp, log1p and division form a long chain of dependent operations: a step of several
/// registers' worth (GROUP a multiple of 8 dividing 1024) keeps independent chains in flight. The sum is the
/// same whatever GROUP is: lane j of the eight adds BCE of elements j, j + 8, j + 16, … in that order, the lanes
/// go to f64 after every 1024 elements, and the last (len mod 8) elements go to lane 0.
///
/// Each term added is BCE(x, 0) + x·0: the same number for a finite x (adding ±0 to a value ≥ 0), NaN for ±inf
/// and NaN, so a non-finite input shows in the sum at the cost of two operations per register instead of a
/// separate pass over the data.
#[inline(always)]
fn bce_zero_loop<const GROUP: usize>(x: &[f32], mut sigmoid: impl FnMut(usize, &[f32]), block: &mut dyn FnMut(f64)) {
    let mut lanes = [0.0f32; 8];
    let mut flush = |lanes: &mut [f32; 8]| {
        block(lanes.iter().map(|&v| v as f64).sum::<f64>());
        *lanes = [0.0; 8];
    };
    let grouped = x.len() / GROUP * GROUP;
    for (gi, xs) in x[..grouped].chunks_exact(GROUP).enumerate() {
        let mut l = [0.0f32; GROUP];
        let mut s = [0.0f32; GROUP];
        for j in 0..GROUP {
            let (lj, sj) = bce_sigmoid(xs[j]);
            (l[j], s[j]) = (lj + xs[j] * 0.0, sj);
        }
        for row in l.chunks_exact(8) {
            for j in 0..8 {
                lanes[j] += row[j];
            }
        }
        sigmoid(gi * GROUP, &s);
        if gi % (1024 / GROUP) == 1024 / GROUP - 1 {
            flush(&mut lanes);
        }
    }
    // The tail: whole registers of eight (never completing a 1024 block: 1024 is a multiple of GROUP), then lane 0.
    let mut xc = x[grouped..].chunks_exact(8);
    let mut s = [0.0f32; 8];
    for (k, xs) in (&mut xc).enumerate() {
        for j in 0..8 {
            let l;
            (l, s[j]) = bce_sigmoid(xs[j]);
            lanes[j] += l + xs[j] * 0.0;
        }
        sigmoid(grouped + 8 * k, &s);
    }
    let rest = xc.remainder();
    for (j, &xv) in rest.iter().enumerate() {
        let l;
        (l, s[j]) = bce_sigmoid(xv);
        lanes[0] += l + xv * 0.0;
    }
    sigmoid(x.len() - rest.len(), &s[..rest.len()]);
    flush(&mut lanes);
}

/// Steps of two registers for AVX2 and SSE2, of four AVX-512 registers (64 elements) for AVX-512. Two chains of
/// AVX2 registers leave room for the polynomial constants in the sixteen registers; with four, the compiler reloads
/// and spills them every step (bce_probe on a Zen 3 EPYC: 11.3 → 10.3 instructions per element, 2.2 → 1.75 ns).
const GROUP_256: usize = 16;
const GROUP_512: usize = 64;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn bce_zero_avx2(x: &[f32], grad: Option<&mut [f32]>, scale: f32, block: &mut dyn FnMut(f64)) {
    bce_zero_blocks_body::<GROUP_256>(x, grad, scale, block)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn bce_zero_avx512(x: &[f32], grad: Option<&mut [f32]>, scale: f32, block: &mut dyn FnMut(f64)) {
    bce_zero_blocks_body::<GROUP_512>(x, grad, scale, block)
}

/// Whether this CPU runs the AVX-512 builds (checked once per call; the check is a cached load).
#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    std::is_x86_feature_detected!("avx512f") && has_avx2()
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// Dispatches to the AVX-512 or the AVX2 build when the CPU has it.
pub fn bce_zero_f32(x: &[f32], grad: Option<&mut [f32]>, scale: f32) -> f64 {
    let mut total = 0.0f64;
    bce_zero_blocks_f32(x, grad, scale, &mut |block| total += block);
    total
}

/// [`bce_zero_f32`] as its block sums (see [`bce_zero_blocks_body`]), in the build this CPU runs.
fn bce_zero_blocks_f32(x: &[f32], grad: Option<&mut [f32]>, scale: f32, block: &mut dyn FnMut(f64)) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512() {
            // SAFETY: the features the function was compiled for are present on this CPU.
            return unsafe { bce_zero_avx512(x, grad, scale, block) };
        }
        if has_avx2() {
            // SAFETY: as above.
            return unsafe { bce_zero_avx2(x, grad, scale, block) };
        }
    }
    bce_zero_blocks_body::<GROUP_256>(x, grad, scale, block)
}

/// Elements per task of [`bce_zero_par_f32`]: 64 blocks of 1024 (256 KiB of logits).
const BCE_CHUNK: usize = 64 * 1024;

/// [`bce_zero_f32`] on every thread: chunks of [`BCE_CHUNK`] elements (a multiple of the 1024-element block) run in
/// parallel, and their block sums are added in order afterwards, so the total has the bits of the one-thread pass
/// (a chunk's last, empty block adds +0 to a total ≥ 0 or NaN). The class pass of one image is most of a small
/// batch's work: at B = 1 it would otherwise run on one thread while the others wait.
pub fn bce_zero_par_f32(x: &[f32], grad: Option<&mut [f32]>, scale: f32) -> f64 {
    use rayon::prelude::*;
    if x.len() <= BCE_CHUNK {
        return bce_zero_f32(x, grad, scale);
    }
    let blocks_of = |xc: &[f32], gc: Option<&mut [f32]>| {
        let mut blocks = Vec::with_capacity(BCE_CHUNK / 1024 + 1);
        bce_zero_blocks_f32(xc, gc, scale, &mut |b| blocks.push(b));
        blocks
    };
    let blocks: Vec<Vec<f64>> = match grad {
        Some(g) => {
            x.par_chunks(BCE_CHUNK).zip(g.par_chunks_mut(BCE_CHUNK)).map(|(xc, gc)| blocks_of(xc, Some(gc))).collect()
        }
        None => x.par_chunks(BCE_CHUNK).map(|xc| blocks_of(xc, None)).collect(),
    };
    let mut total = 0.0f64;
    for b in blocks.iter().flatten() {
        total += b;
    }
    total
}

/// Soft-argmax of one side for every cell of a level: `z` holds the side's R bins as rows of `hw`
/// values (channel-major, as in NCHW); writes Σ k·softmax_k per cell into `out`. Vectorised across
/// cells, which is the contiguous axis.
#[inline(always)]
fn softmax_expect_cells_body(z: &[f32], hw: usize, r: usize, out: &mut [f32]) {
    const CH: usize = 256;
    let mut m = [0.0f32; CH];
    let mut sum = [0.0f32; CH];
    let mut wsum = [0.0f32; CH];
    for c0 in (0..hw).step_by(CH) {
        let n = CH.min(hw - c0);
        m[..n].copy_from_slice(&z[c0..c0 + n]);
        for k in 1..r {
            for (mv, &zv) in m[..n].iter_mut().zip(&z[k * hw + c0..k * hw + c0 + n]) {
                *mv = mv.max(zv);
            }
        }
        sum[..n].iter_mut().for_each(|v| *v = 0.0);
        wsum[..n].iter_mut().for_each(|v| *v = 0.0);
        for k in 0..r {
            let kf = k as f32;
            let row = &z[k * hw + c0..k * hw + c0 + n];
            for i in 0..n {
                let e = exp_neg(row[i] - m[i]);
                sum[i] += e;
                wsum[i] += e * kf;
            }
        }
        for i in 0..n {
            out[c0 + i] = wsum[i] / sum[i];
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_expect_cells_avx2(z: &[f32], hw: usize, r: usize, out: &mut [f32]) {
    softmax_expect_cells_body(z, hw, r, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn softmax_expect_cells_avx512(z: &[f32], hw: usize, r: usize, out: &mut [f32]) {
    softmax_expect_cells_body(z, hw, r, out)
}

pub fn softmax_expect_cells_f32(z: &[f32], hw: usize, r: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512() {
            // SAFETY: the features the function was compiled for are present on this CPU.
            return unsafe { softmax_expect_cells_avx512(z, hw, r, out) };
        }
        if has_avx2() {
            // SAFETY: as above.
            return unsafe { softmax_expect_cells_avx2(z, hw, r, out) };
        }
    }
    softmax_expect_cells_body(z, hw, r, out)
}

/// [`Real::softmax_run`](crate::Real::softmax_run) vectorised across the run's cells. Unlike `softmax_expect_cells_body`,
/// each lane does the per-anchor soft-argmax's operations in its order (`softmax_parts`: the max fold, e^(z − max), the
/// sum in bin order, the division, the weighted sum in bin order), so each lane has that function's bits. Lanes past
/// `n` work on the plane's next cells (or zeros at its end); what they hold has no meaning.
#[inline(always)]
fn softmax_run_body(z: &[f32], hw: usize, r: usize, c0: usize, n: usize, out: &mut SoftmaxRun<f32>) {
    // Whole rows of RUN_CELLS where the plane has them: a copy of constant size is one vector load and store, which
    // the loads below take straight from the store (a copy of n elements is a memmove call whose pieces they cannot).
    let whole = c0 + RUN_CELLS <= hw;
    let mut m = [f32::NEG_INFINITY; RUN_CELLS];
    for (k, row) in out.z[..r].iter_mut().enumerate() {
        let src = &z[k * hw + c0..];
        if whole {
            row.copy_from_slice(&src[..RUN_CELLS]);
        } else {
            row[..n].copy_from_slice(&src[..n]);
            row[n..].fill(0.0);
        }
        for (mv, &zv) in m.iter_mut().zip(row.iter()) {
            *mv = mv.max(zv);
        }
    }
    let mut sum = [0.0f32; RUN_CELLS];
    for (prow, zrow) in out.p[..r].iter_mut().zip(&out.z[..r]) {
        for j in 0..RUN_CELLS {
            prow[j] = exp_neg(zrow[j] - m[j]);
            sum[j] += prow[j];
        }
    }
    let mut dist = [0.0f32; RUN_CELLS];
    for (k, prow) in out.p[..r].iter_mut().enumerate() {
        let kf = k as f32;
        for j in 0..RUN_CELLS {
            prow[j] /= sum[j];
            dist[j] += prow[j] * kf;
        }
    }
    (out.dist, out.max, out.sum) = (dist, m, sum);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_run_avx2(z: &[f32], hw: usize, r: usize, c0: usize, n: usize, out: &mut SoftmaxRun<f32>) {
    softmax_run_body(z, hw, r, c0, n, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn softmax_run_avx512(z: &[f32], hw: usize, r: usize, c0: usize, n: usize, out: &mut SoftmaxRun<f32>) {
    softmax_run_body(z, hw, r, c0, n, out)
}

/// `Real::softmax_run` for f32 (r ≤ [`RUN_MAX_BINS`], n ≤ [`RUN_CELLS`]).
pub fn softmax_run_f32(z: &[f32], hw: usize, r: usize, c0: usize, n: usize, out: &mut SoftmaxRun<f32>) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512() {
            // SAFETY: the features the function was compiled for are present on this CPU.
            return unsafe { softmax_run_avx512(z, hw, r, c0, n, out) };
        }
        if has_avx2() {
            // SAFETY: as above.
            return unsafe { softmax_run_avx2(z, hw, r, c0, n, out) };
        }
    }
    softmax_run_body(z, hw, r, c0, n, out)
}

/// True when every value is finite; one vectorisable pass (x·0 is NaN exactly for ±inf and NaN), in the AVX-512 or
/// AVX2 build when the CPU has it: the portable build (SSE2, four registers of sums) read about 15 GB/s on one core, well
/// below the memory's speed, and this check reads every prediction tensor (a fifth of a pose call).
pub fn all_finite_f32(x: &[f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512() {
            // SAFETY: the features the function was compiled for are present on this CPU.
            return unsafe { all_finite_avx512(x) };
        }
        if has_avx2() {
            // SAFETY: as above.
            return unsafe { all_finite_avx2(x) };
        }
    }
    all_finite_body::<16>(x)
}

/// LANES independent sums of x·0 (so that the additions do not wait for each other): all ±0 exactly when every x is
/// finite.
#[inline(always)]
fn all_finite_body<const LANES: usize>(x: &[f32]) -> bool {
    let mut acc = [0.0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for j in 0..LANES {
            acc[j] += c[j] * 0.0;
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += v * 0.0;
    }
    acc.iter().all(|a| *a == 0.0)
}

/// Eight AVX2 registers of sums.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn all_finite_avx2(x: &[f32]) -> bool {
    all_finite_body::<64>(x)
}

/// Eight AVX-512 registers of sums.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn all_finite_avx512(x: &[f32]) -> bool {
    all_finite_body::<128>(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_log1p_are_accurate_over_the_range_used() {
        let mut worst_exp = 0.0f64;
        let mut worst_log = 0.0f64;
        for i in 0..200_000 {
            let t = -(i as f32) * 4.3e-4; // 0 .. −86
            let want = (t as f64).exp();
            worst_exp = worst_exp.max(((exp_neg(t) as f64) - want).abs() / want);
            let e = (i as f32 / 200_000.0).powi(3); // dense near 0
            let want = (e as f64).ln_1p();
            if want > 0.0 {
                worst_log = worst_log.max(((log1p_unit(e) as f64) - want).abs() / want);
            }
        }
        assert!(worst_exp < 4e-7, "exp relative error {worst_exp}");
        assert!(worst_log < 4e-7, "log1p relative error {worst_log}");
    }

    #[test]
    fn fused_pass_matches_plain_math() {
        let x: Vec<f32> = (0..5000).map(|i| ((i * 7919) % 4001) as f32 / 100.0 - 20.0).collect();
        let mut g = vec![0.0f32; x.len()];
        let s = bce_zero_f32(&x, Some(&mut g), 0.5);
        let want: f64 = x.iter().map(|&v| (v as f64).max(0.0) + (-(v as f64).abs()).exp().ln_1p()).sum();
        assert!((s - want).abs() / want < 1e-6, "{s} vs {want}");
        for (&xv, &gv) in x.iter().zip(&g) {
            let sig = 1.0 / (1.0 + (-(xv as f64)).exp());
            assert!(((gv as f64) - 0.5 * sig).abs() <= 1e-6 * (0.5 * sig) + 1e-30, "x {xv}: {gv} vs {}", 0.5 * sig);
        }
        assert_eq!(bce_zero_f32(&x, None, 0.5), s);
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for at in [0, 4321, 4999] {
                let mut y = x.clone();
                y[at] = bad;
                assert!(!bce_zero_f32(&y, None, 0.5).is_finite(), "{bad} at {at}");
            }
        }
        assert!(all_finite_f32(&x));
        // Every build, a bad value in the vector part and in the tail, at the first and the last element.
        for at in [0, 127, 128, 4321, 4999] {
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut y = x.clone();
                y[at] = bad;
                assert!(!all_finite_f32(&y), "{bad} at {at}");
                assert!(!all_finite_body::<16>(&y), "portable, {bad} at {at}");
                #[cfg(target_arch = "x86_64")]
                if has_avx2() {
                    // SAFETY: AVX2 and FMA are present (checked).
                    assert!(!unsafe { all_finite_avx2(&y) }, "avx2, {bad} at {at}");
                }
            }
        }
        assert!(all_finite_body::<16>(&x) && all_finite_f32(&x[..4999]) && all_finite_f32(&[]));
    }

    /// The parallel class pass gives the one-thread pass's sum and σ bit for bit, for lengths around its chunk size.
    #[test]
    fn parallel_pass_matches_the_one_thread_pass_bit_for_bit() {
        let x: Vec<f32> = (0..3 * BCE_CHUNK + 777).map(|i| ((i * 7919) % 4001) as f32 / 50.0 - 60.0).collect();
        for n in [BCE_CHUNK, BCE_CHUNK + 1, 2 * BCE_CHUNK, 3 * BCE_CHUNK + 777] {
            let x = &x[..n];
            let (mut want, mut got) = (vec![0.0f32; n], vec![1.0f32; n]);
            let sum = bce_zero_f32(x, Some(&mut want), 0.37);
            assert_eq!(bce_zero_par_f32(x, Some(&mut got), 0.37).to_bits(), sum.to_bits(), "sum, n {n}");
            assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "σ, n {n}");
            assert_eq!(bce_zero_par_f32(x, None, 0.37).to_bits(), sum.to_bits(), "sum without σ, n {n}");
        }
    }

    /// The SIMD builds promise the portable build's numbers: every σ bit for bit, and the same sum (same lanes,
    /// same order), for lengths that leave every kind of tail.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn simd_builds_match_the_portable_build_bit_for_bit() {
        let x: Vec<f32> = (0..9000).map(|i| ((i * 7919) % 4001) as f32 / 50.0 - 60.0).collect();
        for n in [0, 5, 8, 31, 64, 1024, 1030, 4163, 9000] {
            let x = &x[..n];
            let mut want = vec![0.0f32; n];
            let sum = bce_zero_body::<GROUP_256>(x, Some(&mut want), 0.37);
            let mut got = vec![0.0f32; n];
            if has_avx2() {
                // SAFETY: AVX2 and FMA are present (checked).
                let mut total = 0.0f64;
                unsafe { bce_zero_avx2(x, Some(&mut got), 0.37, &mut |b| total += b) };
                assert_eq!(total.to_bits(), sum.to_bits(), "avx2 sum, n {n}");
                assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "avx2 σ, n {n}");
            }
            if has_avx512() {
                // SAFETY: AVX-512F, AVX2 and FMA are present (checked).
                let mut total = 0.0f64;
                unsafe { bce_zero_avx512(x, Some(&mut got), 0.37, &mut |b| total += b) };
                assert_eq!(total.to_bits(), sum.to_bits(), "avx512 sum, n {n}");
                assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "avx512 σ, n {n}");
            }
        }
        // The step width changes no bit (the lanes and their order do not depend on it): the widths of every build.
        let want = bce_zero_body::<GROUP_256>(&x, None, 0.37);
        for (group, got) in [
            (8, bce_zero_body::<8>(&x, None, 0.37)),
            (32, bce_zero_body::<32>(&x, None, 0.37)),
            (GROUP_512, bce_zero_body::<GROUP_512>(&x, None, 0.37)),
        ] {
            assert_eq!(got.to_bits(), want.to_bits(), "step of {group} elements");
        }
        let (hw, r) = (700, 16);
        let z: Vec<f32> = (0..hw * r).map(|i| ((i * 2654435761usize) % 1009) as f32 / 90.0 - 5.0).collect();
        let mut want = vec![0.0f32; hw];
        softmax_expect_cells_body(&z, hw, r, &mut want);
        let mut got = vec![0.0f32; hw];
        softmax_expect_cells_f32(&z, hw, r, &mut got);
        assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "soft-argmax cells");
    }

    /// The run soft-argmax gives, lane by lane, the bits of the per-anchor one (its distance, softmax and log-sum-exp
    /// parts), in every build, for runs of every length, up to the end of the plane, with repeated and extreme logits.
    #[test]
    fn run_soft_argmax_matches_the_per_anchor_one_bit_for_bit() {
        let (hw, r) = (37, 16);
        let mut z: Vec<f32> = (0..hw * r).map(|i| ((i * 2654435761usize) % 2003) as f32 / 61.0 - 16.0).collect();
        z[5] = z[5 + hw];
        z[9 * hw + 20] = 80.0;
        z[3 * hw + 21] = -80.0;
        let bits = |run: &SoftmaxRun<f32>, n: usize| -> Vec<u32> {
            let lanes = |v: &[f32; RUN_CELLS]| v[..n].to_vec();
            let mut all = [lanes(&run.dist), lanes(&run.max), lanes(&run.sum)].concat();
            for k in 0..r {
                all.extend(lanes(&run.z[k]).into_iter().chain(lanes(&run.p[k])));
            }
            all.iter().map(|v| v.to_bits()).collect()
        };
        for c0 in [0, 3, 20, hw - 16, hw - 5, hw - 1] {
            for n in 1..=RUN_CELLS.min(hw - c0) {
                let mut want = SoftmaxRun::default();
                crate::dfl::softmax_run_cells(&z, hw, r, c0, n, &mut want);
                let mut probs = vec![0.0f32; r];
                for j in 0..n {
                    let bins: Vec<f32> = (0..r).map(|k| z[k * hw + c0 + j]).collect();
                    let (dist, lse) = crate::dfl::softmax_expectation_lse(&bins, &mut probs);
                    assert_eq!(
                        (dist.to_bits(), lse.to_bits()),
                        (want.dist[j].to_bits(), (want.max[j] + want.sum[j].ln()).to_bits())
                    );
                }
                let mut got = SoftmaxRun::default();
                softmax_run_f32(&z, hw, r, c0, n, &mut got);
                assert_eq!(bits(&got, n), bits(&want, n), "dispatched, c0 {c0} n {n}");
                softmax_run_body(&z, hw, r, c0, n, &mut got);
                assert_eq!(bits(&got, n), bits(&want, n), "portable, c0 {c0} n {n}");
            }
        }
    }

    /// The branch-free clamp and the read of n from the bits give what `max` and `as i32` gave, for every
    /// argument the callers can pass (t ≤ 0, NaN) and a sweep of the reduction's rounding boundaries.
    #[test]
    fn exp_neg_matches_its_plain_form() {
        fn plain(t: f32) -> f32 {
            let t = t.max(-87.0);
            const MAGIC: f32 = 12_582_912.0;
            let n = (t * std::f32::consts::LOG2_E + MAGIC) - MAGIC;
            let r = t - n * 0.693_359_4 - n * (-2.121_944_4e-4);
            let p = 1.987_569_1e-4f32;
            let p = p * r + 1.398_199_9e-3;
            let p = p * r + 8.333_452e-3;
            let p = p * r + 4.166_579_6e-2;
            let p = p * r + 1.666_666_5e-1;
            let p = p * r + 0.5;
            let er = p * r * r + r + 1.0;
            er * f32::from_bits(((n as i32 + 127) as u32) << 23)
        }
        let mut t = 0.0f32;
        while t > -100.0 {
            assert_eq!(exp_neg(t).to_bits(), plain(t).to_bits(), "t {t}");
            assert_eq!(exp_neg(-t).to_bits(), plain(-t).to_bits(), "t {}", -t);
            t = f32::from_bits(t.to_bits() + 997) - 1e-3;
        }
        for t in [f32::NAN, f32::NEG_INFINITY, -0.0, f32::MIN] {
            assert_eq!(exp_neg(t).to_bits(), plain(t).to_bits(), "t {t}");
        }
    }
}
