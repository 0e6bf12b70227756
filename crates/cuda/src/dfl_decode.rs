//! Launcher of `cuda/dfl_decode.cu`: the soft-argmax box decode of the detection levels (docs/spec.md §9 bbox_decode).

use cudarc::driver::{CudaSlice, PushKernelArg};
use yolo_loss_core::{LossError, Result};

use crate::errors;
use crate::gpu::Gpu;
use crate::launch::{elementwise, int};
use crate::level::LevelShape;

pub(crate) const KERNEL: &str = "yl_dfl_decode_level";

/// Decodes one level into `dist` and `boxes`, both `[B, anchors_total, 4]`, at anchors
/// `anchor_offset .. anchor_offset + H·W`: `dist` the (l, t, r, b) distances Σ k·softmax(z)_k (the raw channels
/// when `reg_max == 1`), `boxes` the grid-unit xyxy box around the anchor centre (x + ½, y + ½). The box logits
/// are channels `0 .. 4·reg_max` of `feat`, side-major (docs/spec.md §4).
#[allow(clippy::too_many_arguments)]
pub fn decode_level(
    gpu: &Gpu,
    feat: &CudaSlice<f32>,
    shape: LevelShape,
    reg_max: usize,
    anchors_total: usize,
    anchor_offset: usize,
    dist: &mut CudaSlice<f32>,
    boxes: &mut CudaSlice<f32>,
) -> Result<()> {
    shape.check_len("feats", feat.len())?;
    if reg_max == 0 || shape.channels < 4 * reg_max {
        return Err(LossError::invalid(format!(
            "reg_max: {reg_max} needs 4·reg_max ≤ channels ({}) and reg_max ≥ 1",
            shape.channels
        )));
    }
    if anchor_offset + shape.hw() > anchors_total {
        return Err(LossError::shape(format!(
            "anchors: level anchors {anchor_offset}..{} do not fit in {anchors_total} anchors",
            anchor_offset + shape.hw()
        )));
    }
    let out_len = shape.batch * anchors_total * 4;
    for (name, len) in [("dist", dist.len()), ("boxes", boxes.len())] {
        if len != out_len {
            return Err(LossError::shape(format!(
                "{name}: expected [{}, {anchors_total}, 4] = {out_len} values, got {len}",
                shape.batch
            )));
        }
    }
    let n = shape.batch * 4 * shape.hw();
    if n == 0 {
        return Ok(());
    }
    let args = (
        int("batch", shape.batch)?,
        int("channels", shape.channels)?,
        int("height", shape.height)?,
        int("width", shape.width)?,
        int("reg_max", reg_max)?,
        int("anchors", anchors_total)?,
        int("anchor offset", anchor_offset)?,
    );
    let f = gpu.function(KERNEL)?;
    let mut launch = gpu.stream().launch_builder(f);
    launch.arg(feat).arg(dist).arg(boxes);
    launch.arg(&args.0).arg(&args.1).arg(&args.2).arg(&args.3).arg(&args.4).arg(&args.5).arg(&args.6);
    // SAFETY: the argument list matches yl_dfl_decode_level's parameters in order and type (3 pointers, 7 ints);
    // the lengths checked above bound every index the kernel forms.
    unsafe { launch.launch(elementwise(n)) }.map_err(|e| errors::driver("launching the DFL decode", e))?;
    Ok(())
}

/// All levels at once: `levels` in order (level 0 first, as the anchors are numbered), every one with the same
/// batch size. Returns (`dist`, `boxes`), each `[B, A, 4]` with A = Σ H·W.
pub fn decode(
    gpu: &Gpu,
    levels: &[(&CudaSlice<f32>, LevelShape)],
    reg_max: usize,
) -> Result<(CudaSlice<f32>, CudaSlice<f32>)> {
    let batch = levels.first().map_or(0, |(_, s)| s.batch);
    if let Some((l, (_, s))) = levels.iter().enumerate().find(|(_, (_, s))| s.batch != batch) {
        return Err(LossError::shape(format!(
            "feats[{l}]: expected batch size {batch} like feats[0], got {}",
            s.batch
        )));
    }
    let anchors: usize = levels.iter().map(|(_, s)| s.hw()).sum();
    let mut dist = gpu.zeros("decoded distances", batch * anchors * 4)?;
    let mut boxes = gpu.zeros("decoded boxes", batch * anchors * 4)?;
    let mut offset = 0;
    for (feat, shape) in levels {
        decode_level(gpu, feat, *shape, reg_max, anchors, offset, &mut dist, &mut boxes)?;
        offset += shape.hw();
    }
    Ok((dist, boxes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{assert_close, gpu_or_skip, Lcg};
    use yolo_loss_core::dfl::softmax_expectation;

    /// The CPU reference: core's softmax expectation per side, then dist2bbox around (x + ½, y + ½).
    fn reference(levels: &[(Vec<f32>, LevelShape)], reg_max: usize) -> (Vec<f32>, Vec<f32>) {
        let batch = levels[0].1.batch;
        let anchors: usize = levels.iter().map(|(_, s)| s.hw()).sum();
        let (mut dist, mut boxes) = (vec![0.0; batch * anchors * 4], vec![0.0; batch * anchors * 4]);
        for b in 0..batch {
            let mut a = 0;
            for (data, s) in levels {
                let hw = s.hw();
                for p in 0..hw {
                    let (ax, ay) = ((p % s.width) as f32 + 0.5, (p / s.width) as f32 + 0.5);
                    for side in 0..4 {
                        let z: Vec<f32> =
                            (0..reg_max).map(|k| data[(b * s.channels + side * reg_max + k) * hw + p]).collect();
                        let d = if reg_max == 1 { z[0] } else { softmax_expectation(&z, &mut vec![0.0; reg_max]) };
                        let o = (b * anchors + a + p) * 4 + side;
                        dist[o] = d;
                        boxes[o] = [ax - d, ay - d, ax + d, ay + d][side];
                    }
                }
                a += hw;
            }
        }
        (dist, boxes)
    }

    fn run(test: &str, reg_max: usize, nc: usize, sizes: &[(usize, usize)], batch: usize) {
        let Some(gpu) = gpu_or_skip(test) else { return };
        let mut rng = Lcg(7 + reg_max as u64);
        let host: Vec<(Vec<f32>, LevelShape)> = sizes
            .iter()
            .map(|&(h, w)| {
                let s = LevelShape::new(batch, 4 * reg_max + nc, h, w);
                ((0..s.numel()).map(|_| rng.uniform(-6.0, 6.0)).collect(), s)
            })
            .collect();
        let dev: Vec<CudaSlice<f32>> = host.iter().map(|(d, _)| gpu.upload("feats", d).unwrap()).collect();
        let levels: Vec<(&CudaSlice<f32>, LevelShape)> = dev.iter().zip(&host).map(|(d, (_, s))| (d, *s)).collect();
        let (dist, boxes) = decode(gpu, &levels, reg_max).unwrap();
        let (want_dist, want_boxes) = reference(&host, reg_max);
        assert_close("dist", &gpu.download("dist", &dist).unwrap(), &want_dist, 1e-5, 1e-5);
        assert_close("boxes", &gpu.download("boxes", &boxes).unwrap(), &want_boxes, 1e-5, 1e-5);
    }

    #[test]
    fn matches_cpu_decode_with_dfl() {
        run("dfl_decode::matches_cpu_decode_with_dfl", 16, 5, &[(8, 6), (4, 3), (2, 2)], 3);
    }

    #[test]
    fn matches_cpu_decode_without_dfl() {
        run("dfl_decode::matches_cpu_decode_without_dfl", 1, 2, &[(5, 7), (3, 4)], 2);
    }

    #[test]
    fn rejects_buffers_of_the_wrong_size() {
        let Some(gpu) = gpu_or_skip("dfl_decode::rejects_buffers_of_the_wrong_size") else { return };
        let s = LevelShape::new(1, 64, 2, 2);
        let feat = gpu.zeros::<f32>("feats", s.numel()).unwrap();
        let mut small = gpu.zeros::<f32>("dist", 3).unwrap();
        let mut boxes = gpu.zeros::<f32>("boxes", 16).unwrap();
        let e = decode_level(gpu, &feat, s, 16, 4, 0, &mut small, &mut boxes).unwrap_err();
        assert_eq!(e.code, yolo_loss_core::ErrorCode::ShapeMismatch, "{e}");
    }
}
