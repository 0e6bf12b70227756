//! The task losses beyond detection, and the loss blocks, against the reference fixtures.

mod common;

use common::{
    assert_close, check_loss_output, check_overwrite, config, grad_names, levels, load_kind, refs, to_f64, Fixture,
    Labels, Owned,
};
use yolo_loss_core::classification::V8ClassificationLoss;
use yolo_loss_core::e2e::{E2EDetectLoss, E2EPreds};
use yolo_loss_core::focal::{focal_loss, varifocal_loss};
use yolo_loss_core::pose::{keypoint_loss, PoseBatch, PoseConfig, PosePreds, V8PoseLoss};
use yolo_loss_core::prompts::{TVPDetectLoss, TVPSegmentLoss};
use yolo_loss_core::segmentation::{SegBatch, SegPreds, V8SegmentationLoss};
use yolo_loss_core::TaskLoss;

/// Runs a segmentation-shaped loss, built by `make` for each fixture of `kind`, as `value_and_grad(SegPreds { feats,
/// pred_masks, proto }, batch)` and checks loss, items and the level, coefficient and prototype gradients.
fn check_segmentation_kind<L>(kind: &str, make: impl Fn(&Fixture) -> L)
where
    L: for<'a> TaskLoss<f32, Preds<'a> = SegPreds<'a, f32>, Batch<'a> = SegBatch<'a, f32>>,
{
    for f in load_kind(kind) {
        let feats = levels(&f, "preds");
        let (pm, pr, masks) =
            (Owned::of(&f, "preds.pred_masks"), Owned::of(&f, "preds.proto"), Owned::of(&f, "batch.masks"));
        let lab = Labels::of(&f);
        let batch = SegBatch { det: lab.det(), masks: masks.r() };
        let crit = make(&f);
        let preds = SegPreds { feats: &refs(&feats), pred_masks: pm.r(), proto: pr.r() };
        let out = crit.value_and_grad(preds, &batch).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        let mut names = grad_names("grad.preds", feats.len());
        names.extend(["grad.pred_masks".to_string(), "grad.proto".to_string()]);
        check_loss_output(&f.name, &f, &out, &names);
        check_overwrite(&f.name, &crit, preds, &batch, &out);
    }
}

#[test]
fn v8_segmentation_loss_matches_reference() {
    check_segmentation_kind("v8SegmentationLoss", |f| V8SegmentationLoss::new(config(f)).unwrap());
}

#[test]
fn v8_pose_loss_matches_reference() {
    for f in load_kind("v8PoseLoss") {
        let ks = f.config["kpt_shape"].as_array().unwrap();
        let kpt_shape = (ks[0].as_u64().unwrap() as usize, ks[1].as_u64().unwrap() as usize);
        let is_list = f.config["kpt_shape_is_list"].as_bool().unwrap_or(true);
        let crit = V8PoseLoss::new(PoseConfig { det: config(&f), kpt_shape, oks_sigmas: Some(is_list) }).unwrap();
        let feats = levels(&f, "preds");
        let (kp, gk) = (Owned::of(&f, "preds.kpts"), Owned::of(&f, "batch.keypoints"));
        let lab = Labels::of(&f);
        let batch = PoseBatch { det: lab.det(), keypoints: gk.r() };
        let preds = PosePreds { feats: &refs(&feats), kpts: kp.r() };
        let out = crit.value_and_grad(preds, &batch).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        let mut names = grad_names("grad.preds", feats.len());
        names.push("grad.kpts".to_string());
        check_loss_output(&f.name, &f, &out, &names);
        check_overwrite(&f.name, &crit, preds, &batch, &out);
    }
}

#[test]
fn v8_classification_loss_matches_reference() {
    for f in load_kind("v8ClassificationLoss") {
        let (lg, cls) = (Owned::of(&f, "preds.logits"), Owned::of(&f, "batch.cls"));
        let crit = V8ClassificationLoss::new();
        let out = crit.value_and_grad(lg.r(), &cls.r()).unwrap();
        check_loss_output(&f.name, &f, &out, &["grad.logits".to_string()]);
        check_overwrite(&f.name, &crit, lg.r(), &cls.r(), &out);
    }
}

#[test]
fn e2e_detect_loss_matches_reference() {
    for f in load_kind("E2EDetectLoss") {
        let crit = E2EDetectLoss::new(config(&f)).unwrap();
        let (o2m, o2o) = (levels(&f, "preds.one2many"), levels(&f, "preds.one2one"));
        let lab = Labels::of(&f);
        let preds = E2EPreds { one2many: &refs(&o2m), one2one: &refs(&o2o) };
        let out = crit.value_and_grad(preds, &lab.det()).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        let mut names = grad_names("grad.one2many", o2m.len());
        names.extend(grad_names("grad.one2one", o2o.len()));
        check_loss_output(&f.name, &f, &out, &names);
        check_overwrite(&f.name, &crit, preds, &lab.det(), &out);
    }
}

#[test]
fn tvp_detect_loss_matches_reference() {
    for f in load_kind("TVPDetectLoss") {
        let crit = TVPDetectLoss::new(config(&f)).unwrap();
        let feats = levels(&f, "preds");
        let lab = Labels::of(&f);
        let out = crit.value_and_grad(&refs(&feats), &lab.det()).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        check_loss_output(&f.name, &f, &out, &grad_names("grad.preds", feats.len()));
        check_overwrite(&f.name, &crit, &refs(&feats), &lab.det(), &out);
    }
}

#[test]
fn tvp_segment_loss_matches_reference() {
    check_segmentation_kind("TVPSegmentLoss", |f| TVPSegmentLoss::new(config(f)).unwrap());
}

#[test]
fn varifocal_and_focal_losses_match_reference() {
    for f in load_kind("VarifocalLoss") {
        let (p, q, l) = (Owned::of(&f, "in.pred_score"), Owned::of(&f, "in.gt_score"), Owned::of(&f, "in.label"));
        let (loss, gp, gq) = varifocal_loss(p.r(), q.r(), l.r(), f.cfg_f64("gamma"), f.cfg_f64("alpha")).unwrap();
        assert_close(&format!("{} loss", f.name), &[loss as f64], f.get("out.loss"));
        assert_close(&format!("{} grad.pred_score", f.name), &to_f64(&gp), f.get("grad.pred_score"));
        assert_close(&format!("{} grad.gt_score", f.name), &to_f64(&gq), f.get("grad.gt_score"));
    }
    for f in load_kind("FocalLoss") {
        let (p, l) = (Owned::of(&f, "in.pred"), Owned::of(&f, "in.label"));
        let (loss, gp) = focal_loss(p.r(), l.r(), f.cfg_f64("gamma"), f.cfg_f64("alpha")).unwrap();
        assert_close(&format!("{} loss", f.name), &[loss as f64], f.get("out.loss"));
        assert_close(&format!("{} grad.pred", f.name), &to_f64(&gp), f.get("grad.pred"));
    }
}

#[test]
fn keypoint_loss_matches_reference() {
    for f in load_kind("KeypointLoss") {
        let (p, g, m, a) = (
            Owned::of(&f, "in.pred_kpts"),
            Owned::of(&f, "in.gt_kpts"),
            Owned::of(&f, "in.kpt_mask"),
            Owned::of(&f, "in.area"),
        );
        let sigmas = f.get("in.sigmas").data.clone();
        let (loss, grad) = keypoint_loss(p.r(), g.r(), m.r(), a.r(), &sigmas).unwrap();
        assert_close(&format!("{} loss", f.name), &[loss as f64], f.get("out.loss"));
        assert_close(&format!("{} grad.pred_kpts", f.name), &to_f64(&grad), f.get("grad.pred_kpts"));
    }
}
