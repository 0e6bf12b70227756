//! The one hot loop of every detection-family loss: BCE against a zero target and the sigmoid, over
//! all B × A × nc class logits. Written so the compiler vectorises it (no branches, no libm calls),
//! and compiled a second time with AVX2+FMA, picked at run time, so the portable binary stays fast.
//!
//! Accuracy: exp and log1p below are within a few ulp in f32 over the whole range the loop feeds
//! them (the argument of exp is ≤ 0; log1p's argument is in (0, 1]); log1p keeps full *relative*
//! precision for tiny arguments, which matters when most logits are very negative.

/// e^t for t ≤ 0 (clamped below at −87, where e^t underflows f32's normal range anyway).
#[inline(always)]
pub(crate) fn exp_neg(t: f32) -> f32 {
    let t = t.max(-87.0);
    // t = n·ln2 + r, |r| ≤ ln2/2, with ln2 split in two for an exact reduction. n is rounded to the
    // nearest integer by adding and subtracting 1.5·2^23 (plain SSE2 arithmetic, no libm `roundf`).
    const MAGIC: f32 = 12_582_912.0;
    let n = (t * std::f32::consts::LOG2_E + MAGIC) - MAGIC;
    let r = t - n * 0.693_359_4 - n * (-2.121_944_4e-4);
    // Minimax-style polynomial for e^r on [−ln2/2, ln2/2] (Cephes expf coefficients).
    let p = 1.987_569_1e-4f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    // Scale by 2^n through the exponent bits (n ≥ −126 here).
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
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
    (x.max(0.0) + log1p_unit(e), if x >= 0.0 { inv } else { e * inv })
}

/// Σ BCE(x, 0) over `x`, and, when `grad` is given, `grad[i] = σ(x[i])·scale`.
/// Eight independent lanes (one SIMD register) in f32 per 1024-element block, blocks summed in f64.
#[inline(always)]
fn bce_zero_body(x: &[f32], grad: Option<&mut [f32]>, scale: f32) -> f64 {
    let mut total = 0.0f64;
    let mut lanes = [0.0f32; 8];
    let mut flush = |lanes: &mut [f32; 8]| {
        total += lanes.iter().map(|&v| v as f64).sum::<f64>();
        *lanes = [0.0; 8];
    };
    match grad {
        Some(g) => {
            let mut xc = x.chunks_exact(8);
            let mut gc = g.chunks_exact_mut(8);
            for (i, (xs, gs)) in (&mut xc).zip(&mut gc).enumerate() {
                for j in 0..8 {
                    let (l, s) = bce_sigmoid(xs[j]);
                    lanes[j] += l;
                    gs[j] = s * scale;
                }
                if i % 128 == 127 {
                    flush(&mut lanes);
                }
            }
            for (xv, gv) in xc.remainder().iter().zip(gc.into_remainder()) {
                let (l, s) = bce_sigmoid(*xv);
                lanes[0] += l;
                *gv = s * scale;
            }
        }
        None => {
            let mut xc = x.chunks_exact(8);
            for (i, xs) in (&mut xc).enumerate() {
                for j in 0..8 {
                    lanes[j] += bce_sigmoid(xs[j]).0;
                }
                if i % 128 == 127 {
                    flush(&mut lanes);
                }
            }
            for xv in xc.remainder() {
                lanes[0] += bce_sigmoid(*xv).0;
            }
        }
    }
    flush(&mut lanes);
    total
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn bce_zero_avx2(x: &[f32], grad: Option<&mut [f32]>, scale: f32) -> f64 {
    bce_zero_body(x, grad, scale)
}

/// Dispatches to the AVX2 build when the CPU has it.
pub fn bce_zero_f32(x: &[f32], grad: Option<&mut [f32]>, scale: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the features the function was compiled for are present on this CPU.
            return unsafe { bce_zero_avx2(x, grad, scale) };
        }
    }
    bce_zero_body(x, grad, scale)
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

pub fn softmax_expect_cells_f32(z: &[f32], hw: usize, r: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the features the function was compiled for are present on this CPU.
            return unsafe { softmax_expect_cells_avx2(z, hw, r, out) };
        }
    }
    softmax_expect_cells_body(z, hw, r, out)
}

/// True when every value is finite; one vectorisable pass (x·0 is NaN exactly for ±inf and NaN).
#[inline]
pub fn all_finite_f32(x: &[f32]) -> bool {
    let mut acc = [0.0f32; 16];
    for c in x.chunks(16) {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v * 0.0;
        }
    }
    acc.iter().all(|a| *a == 0.0)
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
        assert!(all_finite_f32(&x));
        let mut y = x.clone();
        y[4321] = f32::NAN;
        assert!(!all_finite_f32(&y));
        y[4321] = f32::NEG_INFINITY;
        assert!(!all_finite_f32(&y));
    }
}
