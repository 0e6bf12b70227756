//! The oriented-box family against the reference fixtures (ultralytics 8.3.117): v8OBBLoss, probiou,
//! dist2rbox, RotatedBboxLoss and RotatedTaskAlignedAssigner.

mod common;

use common::{assert_close, load_kind, to_f64, Fixture};
use yolo_loss_core::blocks::BboxLossInputs;
use yolo_loss_core::obb::{assign_dense_rotated, dist2rbox_batch, probiou_batch, rotated_bbox_loss};
use yolo_loss_core::{DetBatch, DetectionConfig, Hyp, TensorRef, V8OBBLoss};

fn obb_config(f: &Fixture) -> DetectionConfig {
    let c = &f.config;
    let hyp = &c["hyp"];
    let d = Hyp::default();
    DetectionConfig {
        nc: c["nc"].as_u64().unwrap() as usize,
        reg_max: c["reg_max"].as_u64().unwrap() as usize,
        strides: c["stride"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect(),
        hyp: Hyp { box_gain: hyp["box"].as_f64().unwrap_or(d.box_gain), cls: hyp["cls"].as_f64().unwrap_or(d.cls), dfl: hyp["dfl"].as_f64().unwrap_or(d.dfl), ..d },
        tal_topk: 10,
    }
}

#[test]
fn v8_obb_loss_matches_reference() {
    for f in load_kind("v8OBBLoss") {
        let crit = V8OBBLoss::new(obb_config(&f)).unwrap();
        let levels: Vec<(Vec<f32>, Vec<usize>)> = (0..)
            .map(|i| format!("preds.{i}"))
            .take_while(|n| f.has(n))
            .map(|n| (f.get(&n).f32(), f.get(&n).shape.clone()))
            .collect();
        let feats: Vec<TensorRef<f32>> = levels.iter().map(|(d, s)| TensorRef::new(d, s)).collect();
        let ang = f.get("preds.angle");
        let ang_d = ang.f32();
        let angle = TensorRef::new(&ang_d, &ang.shape);
        let (bi, cls, bb) = (f.get("batch.batch_idx"), f.get("batch.cls"), f.get("batch.bboxes"));
        let (bi_d, cls_d, bb_d) = (bi.f32(), cls.f32(), bb.f32());
        let batch = DetBatch { batch_idx: TensorRef::new(&bi_d, &bi.shape), cls: TensorRef::new(&cls_d, &cls.shape), bboxes: TensorRef::new(&bb_d, &bb.shape) };
        let out = crit.value_and_grad(&feats, angle, &batch).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        assert_close(&format!("{} loss", f.name), &to_f64(&out.loss), f.get("out.loss"));
        assert_close(&format!("{} loss_items", f.name), &to_f64(&out.loss_items), f.get("out.loss_items"));
        assert_eq!(out.grads.len(), levels.len() + 1, "{}: level grads then the angle grad", f.name);
        for (i, g) in out.grads[..levels.len()].iter().enumerate() {
            assert_close(&format!("{} grad.preds.{i}", f.name), &to_f64(g), f.get(&format!("grad.preds.{i}")));
        }
        assert_close(&format!("{} grad.angle", f.name), &to_f64(&out.grads[levels.len()]), f.get("grad.angle"));
        let plain = crit.call(&feats, angle, &batch).unwrap();
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
        let out = probiou_batch(TensorRef::new(&d1, &o1.shape), TensorRef::new(&d2, &o2.shape), ciou, eps, Some(&up)).unwrap_or_else(|e| panic!("{}: {e}", f.name));
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
    for f in load_kind("RotatedBboxLoss") {
        let r = f.config["reg_max"].as_u64().unwrap() as usize;
        let names = ["in.pred_dist", "in.pred_bboxes", "in.anchor_points", "in.target_bboxes", "in.target_scores"];
        let data: Vec<Vec<f32>> = names.iter().map(|n| f.get(n).f32()).collect();
        let t = |i: usize| TensorRef::new(&data[i], &f.get(names[i]).shape);
        let fg: Vec<bool> = f.get("in.fg_mask").data.iter().map(|&v| v != 0.0).collect();
        let inp = BboxLossInputs {
            pred_dist: t(0),
            pred_bboxes: t(1),
            anchor_points: t(2),
            target_bboxes: t(3),
            target_scores: t(4),
            target_scores_sum: f.get("in.target_scores_sum").data[0] as f32,
            fg_mask: &fg,
        };
        let out = rotated_bbox_loss(&inp, r).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        assert_close(&format!("{} loss_iou", f.name), &[out.loss_iou as f64], f.get("out.loss_iou"));
        assert_close(&format!("{} loss_dfl", f.name), &[out.loss_dfl as f64], f.get("out.loss_dfl"));
        assert_close(&format!("{} grad.pred_dist", f.name), &to_f64(&out.grad_pred_dist), f.get("grad.pred_dist"));
        assert_close(&format!("{} grad.pred_bboxes", f.name), &to_f64(&out.grad_pred_bboxes), f.get("grad.pred_bboxes"));
    }
}

#[test]
fn rotated_task_aligned_assigner_matches_reference() {
    common::check_assigner_kind("RotatedTaskAlignedAssigner", |cfg, [a, b, c, d, e, g]| assign_dense_rotated(cfg, a, b, c, d, e, g));
}
