//! The oriented-box family against the reference fixtures (ultralytics 8.3.117): v8OBBLoss, probiou,
//! dist2rbox, RotatedBboxLoss and RotatedTaskAlignedAssigner.

mod common;

use common::{
    assert_close, check_loss_output, check_overwrite, config, grad_names, levels, load_kind, refs, to_f64, Labels,
    Owned,
};
use yolo_loss_core::obb::{assign_dense_rotated, dist2rbox_batch, probiou_batch, rotated_bbox_loss, ObbPreds};
use yolo_loss_core::{TaskLoss, TensorRef, V8OBBLoss};

#[test]
fn v8_obb_loss_matches_reference() {
    for f in load_kind("v8OBBLoss") {
        // The OBB fixtures carry no tal_topk: `config` gives 10.
        let crit = V8OBBLoss::new(config(&f)).unwrap();
        let lv = levels(&f, "preds");
        let feats = refs(&lv);
        let ang = Owned::of(&f, "preds.angle");
        let angle = ang.r();
        let lab = Labels::of(&f);
        let batch = lab.det();
        let out = crit
            .value_and_grad(ObbPreds { feats: &feats, angle }, &batch)
            .unwrap_or_else(|e| panic!("{}: {e}", f.name));
        // The level gradients, then the angle's.
        let mut names = grad_names("grad.preds", lv.len());
        names.push("grad.angle".to_string());
        check_loss_output(&f.name, &f, &out, &names);
        check_overwrite(&f.name, &crit, ObbPreds { feats: &feats, angle }, &batch, &out);
        let plain = crit.call(ObbPreds { feats: &feats, angle }, &batch).unwrap();
        assert_eq!(plain.loss, out.loss, "{}: call and value_and_grad disagree", f.name);
        assert!(plain.grads.is_empty());
    }
}

#[test]
fn probiou_matches_reference() {
    for f in load_kind("probiou") {
        let ciou = f.cfg_bool("CIoU");
        let eps = f.config["eps"].as_f64().unwrap_or(1e-7) as f32;
        let (o1, o2) = (f.get("in.obb1"), f.get("in.obb2"));
        let (d1, d2, up) = (o1.f32(), o2.f32(), f.get("in.upstream").f32());
        let out = probiou_batch(TensorRef::new(&d1, &o1.shape), TensorRef::new(&d2, &o2.shape), ciou, eps, Some(&up))
            .unwrap_or_else(|e| panic!("{}: {e}", f.name));
        assert_close(&format!("{} iou", f.name), &to_f64(&out.iou), f.get("out.iou"));
        assert_close(&format!("{} grad.obb1", f.name), &to_f64(&out.grad_obb1), f.get("grad.obb1"));
        assert_close(&format!("{} grad.obb2", f.name), &to_f64(&out.grad_obb2), f.get("grad.obb2"));
    }
}

#[test]
fn dist2rbox_matches_reference() {
    for f in load_kind("dist2rbox") {
        let names = ["in.pred_dist", "in.pred_angle", "in.anchor_points"];
        let data: Vec<Vec<f32>> = names.iter().map(|n| f.get(n).f32()).collect();
        let t = |i: usize| TensorRef::new(&data[i], &f.get(names[i]).shape);
        let up = f.get("in.upstream").f32();
        let out = dist2rbox_batch(t(0), t(1), t(2), Some(&up)).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        assert_eq!(out.shape, f.get("out.boxes").shape, "{}: output shape", f.name);
        assert_close(&format!("{} boxes", f.name), &to_f64(&out.boxes), f.get("out.boxes"));
        assert_close(&format!("{} grad.pred_dist", f.name), &to_f64(&out.grad_pred_dist), f.get("grad.pred_dist"));
        assert_close(&format!("{} grad.pred_angle", f.name), &to_f64(&out.grad_pred_angle), f.get("grad.pred_angle"));
    }
}

#[test]
fn rotated_bbox_loss_matches_reference() {
    common::check_bbox_loss_kind("RotatedBboxLoss", rotated_bbox_loss);
}

#[test]
fn rotated_task_aligned_assigner_matches_reference() {
    common::check_assigner_kind("RotatedTaskAlignedAssigner", |cfg, [a, b, c, d, e, g]| {
        assign_dense_rotated(cfg, a, b, c, d, e, g)
    });
}
