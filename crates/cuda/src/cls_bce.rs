//! Launchers of `cuda/cls_bce.cu`: the classification BCE of one level and its gradient (docs/spec.md §9 step 8, §6.1),
//! as a dense pass over all class logits with target 0 plus a sparse correction for the non-zero targets.
//!
//! For a level, with `scale` = B·g_cls/S (the factor the gradient of the summed loss vector carries):
//! ```text
//! let mut sums = PartialSums::new(gpu, 2)?;
//! cls_bce::dense(gpu, &feat, shape, 4 * reg_max, nc, scale, Some(&mut grad), &mut sums)?;
//! cls_bce::positive(gpu, &feat, Some(&mut grad), &index, &target, scale, &mut sums)?;
//! let bce_sum = sums.total(gpu)?;   // Σ over anchors and classes of BCE(x, t), unscaled
//! ```

use cudarc::driver::{CudaSlice, PushKernelArg};
use yolo_loss_core::{LossError, Result};

use crate::errors;
use crate::gpu::Gpu;
use crate::launch::{arg_or_null, blocks, config, int, int64, MAX_REDUCTION_BLOCKS};
use crate::level::LevelShape;
use crate::partials::PartialSums;

pub(crate) const DENSE_KERNEL: &str = "yl_cls_bce_dense";
pub(crate) const POSITIVE_KERNEL: &str = "yl_cls_bce_positive";

/// Pass 1: adds Σ BCE(x, 0) over the class logits (channels `class_offset .. class_offset + nc` of `feat`) to
/// `sums` and, when `grad` is given (same shape as `feat`), writes σ(x)·scale into its class channels (the box
/// channels of `grad` are not touched).
#[allow(clippy::too_many_arguments)]
pub fn dense(
    gpu: &Gpu,
    feat: &CudaSlice<f32>,
    shape: LevelShape,
    class_offset: usize,
    nc: usize,
    scale: f32,
    grad: Option<&mut CudaSlice<f32>>,
    sums: &mut PartialSums,
) -> Result<()> {
    shape.check_len("feats", feat.len())?;
    if let Some(g) = &grad {
        shape.check_len("grad", g.len())?;
    }
    if class_offset + nc > shape.channels {
        return Err(LossError::shape(format!(
            "feats: class channels {class_offset}..{} do not fit in {} channels",
            class_offset + nc,
            shape.channels
        )));
    }
    let n = shape.batch * nc * shape.hw();
    let grid = blocks(n, MAX_REDUCTION_BLOCKS);
    if grid == 0 {
        return Ok(());
    }
    let dims = (
        int("batch", shape.batch)?,
        int("channels", shape.channels)?,
        int("height·width", shape.hw())?,
        int("class offset", class_offset)?,
        int("nc", nc)?,
    );
    let mut partials = sums.claim(grid)?;
    let f = gpu.function(DENSE_KERNEL)?;
    let mut launch = gpu.stream().launch_builder(f);
    launch.arg(feat);
    arg_or_null(&mut launch, grad);
    launch.arg(&mut partials);
    launch.arg(&dims.0).arg(&dims.1).arg(&dims.2).arg(&dims.3).arg(&dims.4).arg(&scale);
    // SAFETY: arguments match yl_cls_bce_dense (feat, grad or null, partials with `grid` slots, 5 ints, a float);
    // the shape checks above bound every index the kernel forms.
    unsafe { launch.launch(config(grid)) }.map_err(|e| errors::driver("launching the class BCE", e))?;
    Ok(())
}

/// Pass 2 (after [`dense`], same stream): for each `(index[j], target[j])`, with `index` flat offsets into the
/// level tensor and `target` the non-zero target scores, adds −t·x to `sums` and −t·scale to `grad[index]`.
/// Out-of-range indices are ignored by the kernel; [`positive_from_host`] rejects them instead.
pub fn positive(
    gpu: &Gpu,
    feat: &CudaSlice<f32>,
    grad: Option<&mut CudaSlice<f32>>,
    index: &CudaSlice<u64>,
    target: &CudaSlice<f32>,
    scale: f32,
    sums: &mut PartialSums,
) -> Result<()> {
    if index.len() != target.len() {
        return Err(LossError::shape(format!(
            "target: expected {} values (one per index), got {}",
            index.len(),
            target.len()
        )));
    }
    if let Some(g) = &grad {
        if g.len() != feat.len() {
            return Err(LossError::shape(format!("grad: expected {} values like feats, got {}", feat.len(), g.len())));
        }
    }
    let grid = blocks(index.len(), MAX_REDUCTION_BLOCKS);
    if grid == 0 {
        return Ok(());
    }
    let (count, numel) = (int64("positives", index.len())?, int64("feats", feat.len())?);
    let mut partials = sums.claim(grid)?;
    let f = gpu.function(POSITIVE_KERNEL)?;
    let mut launch = gpu.stream().launch_builder(f);
    launch.arg(feat);
    arg_or_null(&mut launch, grad);
    launch.arg(&mut partials).arg(index).arg(target).arg(&count).arg(&numel).arg(&scale);
    // SAFETY: arguments match yl_cls_bce_positive (feat, grad or null, partials with `grid` slots, index, target,
    // two int64, a float); the kernel bounds-checks every index against numel.
    unsafe { launch.launch(config(grid)) }.map_err(|e| errors::driver("launching the class BCE correction", e))?;
    Ok(())
}

/// [`positive`] for a list built on the host: checks every index, uploads, launches.
pub fn positive_from_host(
    gpu: &Gpu,
    feat: &CudaSlice<f32>,
    grad: Option<&mut CudaSlice<f32>>,
    index: &[u64],
    target: &[f32],
    scale: f32,
    sums: &mut PartialSums,
) -> Result<()> {
    if let Some(&bad) = index.iter().find(|&&i| i >= feat.len() as u64) {
        return Err(LossError::shape(format!("index: {bad} is outside the level tensor of {} values", feat.len())));
    }
    if index.is_empty() {
        return Ok(());
    }
    let index = gpu.upload("positive indices", index)?;
    let target = gpu.upload("positive targets", target)?;
    positive(gpu, feat, grad, &index, &target, scale, sums)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{assert_close, gpu_or_skip, Lcg};

    struct Case {
        shape: LevelShape,
        class_offset: usize,
        nc: usize,
        feat: Vec<f32>,
        index: Vec<u64>,
        target: Vec<f32>,
    }

    /// A level with logits over a wide range (both branches of the stable forms, and |x| large enough that a naive
    /// log(1 + e^x) would overflow) and one positive class per few anchors.
    fn case(batch: usize, reg_max: usize, nc: usize, h: usize, w: usize, seed: u64) -> Case {
        let shape = LevelShape::new(batch, 4 * reg_max + nc, h, w);
        let mut rng = Lcg(seed);
        let mut feat: Vec<f32> = (0..shape.numel()).map(|_| rng.uniform(-12.0, 12.0)).collect();
        feat[0] = 95.0; // a box channel: must not be read
        let class_offset = 4 * reg_max;
        let last = class_offset * shape.hw() + shape.hw() / 2; // a class logit of image 0 (any hw, 1 included)
        feat[last] = -120.0;
        let (mut index, mut target) = (vec![], vec![]);
        for b in 0..batch {
            for p in (0..shape.hw()).step_by(3) {
                let c = rng.next_u32() as usize % nc;
                index.push(((b * shape.channels + class_offset + c) * shape.hw() + p) as u64);
                target.push(rng.uniform(0.05, 0.95));
            }
        }
        Case { shape, class_offset, nc, feat, index, target }
    }

    /// Plain f64: Σ BCE(x, t) = Σ (1 − t)·x − ln σ(x), and ∂/∂x = (σ(x) − t)·scale, zero on the box channels.
    fn reference(c: &Case, scale: f64) -> (f64, Vec<f32>) {
        let hw = c.shape.hw();
        let mut t = vec![0.0f64; c.feat.len()];
        for (&i, &v) in c.index.iter().zip(&c.target) {
            t[i as usize] = v as f64;
        }
        let (mut sum, mut grad) = (0.0, vec![0.0f32; c.feat.len()]);
        for b in 0..c.shape.batch {
            for ch in c.class_offset..c.class_offset + c.nc {
                for p in 0..hw {
                    let i = (b * c.shape.channels + ch) * hw + p;
                    let x = c.feat[i] as f64;
                    let log_sigmoid = -(x.max(0.0) - x + (-x.abs()).exp().ln_1p());
                    sum += (1.0 - t[i]) * x - log_sigmoid;
                    grad[i] = ((1.0 / (1.0 + (-x).exp()) - t[i]) * scale) as f32;
                }
            }
        }
        (sum, grad)
    }

    fn run(gpu: &Gpu, c: &Case, scale: f32) -> (f64, Vec<f32>) {
        let feat = gpu.upload("feats", &c.feat).unwrap();
        let mut grad = gpu.zeros::<f32>("grad", c.feat.len()).unwrap();
        let mut sums = PartialSums::new(gpu, 2).unwrap();
        dense(gpu, &feat, c.shape, c.class_offset, c.nc, scale, Some(&mut grad), &mut sums).unwrap();
        positive_from_host(gpu, &feat, Some(&mut grad), &c.index, &c.target, scale, &mut sums).unwrap();
        (sums.total(gpu).unwrap(), gpu.download("grad", &grad).unwrap())
    }

    #[test]
    fn matches_plain_bce_sum_and_gradient() {
        let Some(gpu) = gpu_or_skip("cls_bce::matches_plain_bce_sum_and_gradient") else { return };
        for (c, scale) in
            [(case(2, 16, 7, 9, 11, 1), 0.37f32), (case(3, 1, 80, 20, 20, 2), 1.5), (case(1, 16, 1, 1, 1, 3), 1.0)]
        {
            let (sum, grad) = run(gpu, &c, scale);
            let (want_sum, want_grad) = reference(&c, scale as f64);
            assert!((sum - want_sum).abs() <= 1e-5 * want_sum.abs().max(1.0), "sum {sum} vs {want_sum}");
            assert_close("grad", &grad, &want_grad, 1e-6, 1e-5);
        }
    }

    #[test]
    fn large_level_sum_is_accurate_and_reproducible() {
        let Some(gpu) = gpu_or_skip("cls_bce::large_level_sum_is_accurate_and_reproducible") else { return };
        // More elements than MAX_REDUCTION_BLOCKS·256: the grid-stride loop and the partials both matter.
        let c = case(4, 16, 80, 80, 80, 4);
        let first = run(gpu, &c, 0.01);
        let second = run(gpu, &c, 0.01);
        assert_eq!(first.0.to_bits(), second.0.to_bits(), "the sum must not depend on scheduling");
        assert_eq!(first.1, second.1);
        let (want_sum, _) = reference(&c, 0.01);
        assert!((first.0 - want_sum).abs() <= 1e-5 * want_sum.abs(), "sum {} vs {want_sum}", first.0);
    }

    #[test]
    fn loss_only_without_gradient() {
        let Some(gpu) = gpu_or_skip("cls_bce::loss_only_without_gradient") else { return };
        let c = case(2, 16, 4, 5, 5, 5);
        let feat = gpu.upload("feats", &c.feat).unwrap();
        let mut sums = PartialSums::new(gpu, 2).unwrap();
        dense(gpu, &feat, c.shape, c.class_offset, c.nc, 1.0, None, &mut sums).unwrap();
        positive_from_host(gpu, &feat, None, &c.index, &c.target, 1.0, &mut sums).unwrap();
        let (want_sum, _) = reference(&c, 1.0);
        let sum = sums.total(gpu).unwrap();
        assert!((sum - want_sum).abs() <= 1e-5 * want_sum.abs(), "sum {sum} vs {want_sum}");
    }

    #[test]
    fn out_of_memory_is_an_error_not_a_crash() {
        let Some(gpu) = gpu_or_skip("cls_bce::out_of_memory_is_an_error_not_a_crash") else { return };
        let e = gpu.zeros::<f32>("a test buffer", 1 << 50).unwrap_err();
        assert_eq!(e.code, yolo_loss_core::ErrorCode::CudaOutOfMemory, "{e}");
        // The device is still usable afterwards.
        let ok = gpu.upload("after OOM", &[1.0f32, 2.0]).unwrap();
        assert_eq!(gpu.download("after OOM", &ok).unwrap(), vec![1.0, 2.0]);
    }

    #[test]
    fn host_indices_are_checked() {
        let Some(gpu) = gpu_or_skip("cls_bce::host_indices_are_checked") else { return };
        let feat = gpu.zeros::<f32>("feats", 10).unwrap();
        let mut sums = PartialSums::new(gpu, 1).unwrap();
        let e = positive_from_host(gpu, &feat, None, &[10], &[1.0], 1.0, &mut sums).unwrap_err();
        assert_eq!(e.code, yolo_loss_core::ErrorCode::ShapeMismatch, "{e}");
    }
}
