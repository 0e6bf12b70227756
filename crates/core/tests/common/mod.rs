//! Test helpers of the core's integration tests: those of `yolo-loss-testkit` (fixture reader and tolerance,
//! fixture tensors as core types), shared with the CUDA crate's tests, and the checks of the dense blocks.

#![allow(dead_code, unused_imports)]

pub use yolo_loss_testkit::{
    assert_close, check_loss_output, config, grad_names, levels, load_kind, refs, to_f64, Fixture, Labels, Owned,
};

use yolo_loss_core::{LossOutput, TaskLoss};

/// `value_and_grad_overwrite` into buffers full of leftovers (NaN, 1e30: a training loop's from its last step) gives
/// `out`, the same call's `value_and_grad`, bit for bit: every element of every gradient is written, whether the loss
/// clears what it does not write itself (the detection losses) or gets its buffers zero-filled first (the default).
pub fn check_overwrite<L: TaskLoss<f32>>(
    name: &str,
    crit: &L,
    preds: L::Preds<'_>,
    batch: &L::Batch<'_>,
    out: &LossOutput<f32>,
) {
    let mut bufs: Vec<Vec<f32>> =
        out.grads.iter().map(|g| (0..g.len()).map(|i| if i % 3 == 0 { f32::NAN } else { 1e30 }).collect()).collect();
    let mut slices: Vec<&mut [f32]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
    let (loss, items) =
        crit.value_and_grad_overwrite(preds, batch, &mut slices).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!((&loss, &items), (&out.loss, &out.loss_items), "{name}: value_and_grad_overwrite values");
    for (i, (got, want)) in bufs.iter().zip(&out.grads).enumerate() {
        assert!(
            got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name}: value_and_grad_overwrite gradient {i}"
        );
    }
}

/// Runs a dense assigner (`TaskAlignedAssigner` or its rotated variant) on every fixture of `kind`
/// and checks the five outputs: masks and indices exactly, boxes and scores within tolerance.
pub fn check_assigner_kind(
    kind: &str,
    run: impl Fn(
        &yolo_loss_core::assigner::AssignerConfig,
        [yolo_loss_core::TensorRef<f32>; 6],
    ) -> yolo_loss_core::Result<yolo_loss_core::blocks::DenseAssignment<f32>>,
) {
    for f in load_kind(kind) {
        let c = &f.config;
        let cfg = yolo_loss_core::assigner::AssignerConfig {
            topk: c["topk"].as_u64().unwrap() as usize,
            num_classes: c["num_classes"].as_u64().unwrap() as usize,
            alpha: c["alpha"].as_f64().unwrap(),
            beta: c["beta"].as_f64().unwrap(),
            eps: c["eps"].as_f64().unwrap(),
        };
        let names = ["in.pd_scores", "in.pd_bboxes", "in.anc_points", "in.gt_labels", "in.gt_bboxes", "in.mask_gt"];
        let data: Vec<Vec<f32>> = names.iter().map(|n| f.get(n).f32()).collect();
        let inputs = std::array::from_fn(|i| yolo_loss_core::TensorRef::new(&data[i], &f.get(names[i]).shape));
        let out = run(&cfg, inputs).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        let fg: Vec<f64> = out.fg_mask.iter().map(|&b| b as u8 as f64).collect();
        assert_eq!(fg, f.get("out.fg_mask").data, "{}: fg_mask", f.name);
        let idx: Vec<f64> = out.target_gt_idx.iter().map(|&v| v as f64).collect();
        assert_eq!(idx, f.get("out.target_gt_idx").data, "{}: target_gt_idx", f.name);
        let labels: Vec<f64> = out.target_labels.iter().map(|&v| v as f64).collect();
        assert_eq!(labels, f.get("out.target_labels").data, "{}: target_labels", f.name);
        assert_close(&format!("{} target_bboxes", f.name), &to_f64(&out.target_bboxes), f.get("out.target_bboxes"));
        assert_close(&format!("{} target_scores", f.name), &to_f64(&out.target_scores), f.get("out.target_scores"));
    }
}

/// Runs a box loss (`BboxLoss` or `RotatedBboxLoss`) on every fixture of `kind` and checks both loss terms and
/// both gradients.
pub fn check_bbox_loss_kind(
    kind: &str,
    run: impl Fn(
        &yolo_loss_core::blocks::BboxLossInputs<f32>,
        usize,
    ) -> yolo_loss_core::Result<yolo_loss_core::blocks::BboxLossOutput<f32>>,
) {
    for f in load_kind(kind) {
        let r = f.config["reg_max"].as_u64().unwrap() as usize;
        let names = ["in.pred_dist", "in.pred_bboxes", "in.anchor_points", "in.target_bboxes", "in.target_scores"];
        let data: Vec<Vec<f32>> = names.iter().map(|n| f.get(n).f32()).collect();
        let t = |i: usize| yolo_loss_core::TensorRef::new(&data[i], &f.get(names[i]).shape);
        let fg: Vec<bool> = f.get("in.fg_mask").data.iter().map(|&v| v != 0.0).collect();
        let inp = yolo_loss_core::blocks::BboxLossInputs {
            pred_dist: t(0),
            pred_bboxes: t(1),
            anchor_points: t(2),
            target_bboxes: t(3),
            target_scores: t(4),
            target_scores_sum: f.get("in.target_scores_sum").data[0] as f32,
            fg_mask: &fg,
        };
        let out = run(&inp, r).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        assert_close(&format!("{} loss_iou", f.name), &[out.loss_iou as f64], f.get("out.loss_iou"));
        assert_close(&format!("{} loss_dfl", f.name), &[out.loss_dfl as f64], f.get("out.loss_dfl"));
        assert_close(&format!("{} grad.pred_dist", f.name), &to_f64(&out.grad_pred_dist), f.get("grad.pred_dist"));
        assert_close(
            &format!("{} grad.pred_bboxes", f.name),
            &to_f64(&out.grad_pred_bboxes),
            f.get("grad.pred_bboxes"),
        );
    }
}
