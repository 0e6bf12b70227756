//! Core math against the reference fixtures written by `fixtures/generate.py` (ultralytics 8.3.117).

mod common;

use common::{assert_close, load_kind, to_f64, Fixture};
use yolo_loss_core::blocks::{assign_dense, bbox_loss, dfl_loss, BboxLossInputs};
use yolo_loss_core::geometry::{bbox2dist, dist2bbox, AnchorGrid};
use yolo_loss_core::iou::{bbox_iou_grad, IouKind};
use yolo_loss_core::{DetBatch, DetectionConfig, Hyp, TensorRef, V8DetectionLoss};

fn detection_config(f: &Fixture) -> DetectionConfig {
    let c = &f.config;
    let hyp = &c["hyp"];
    let d = Hyp::default();
    DetectionConfig {
        nc: c["nc"].as_u64().unwrap() as usize,
        reg_max: c["reg_max"].as_u64().unwrap() as usize,
        strides: c["stride"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect(),
        hyp: Hyp { box_gain: hyp["box"].as_f64().unwrap_or(d.box_gain), cls: hyp["cls"].as_f64().unwrap_or(d.cls), dfl: hyp["dfl"].as_f64().unwrap_or(d.dfl), ..d },
        tal_topk: c["tal_topk"].as_u64().unwrap_or(10) as usize,
    }
}

#[test]
fn v8_detection_loss_matches_reference() {
    for f in load_kind("v8DetectionLoss") {
        let crit = V8DetectionLoss::new(detection_config(&f)).unwrap();
        let levels: Vec<(Vec<f32>, Vec<usize>)> = (0..)
            .map(|i| format!("preds.{i}"))
            .take_while(|n| f.has(n))
            .map(|n| (f.get(&n).f32(), f.get(&n).shape.clone()))
            .collect();
        let feats: Vec<TensorRef<f32>> = levels.iter().map(|(d, s)| TensorRef::new(d, s)).collect();
        let (bi, cls, bb) = (f.get("batch.batch_idx"), f.get("batch.cls"), f.get("batch.bboxes"));
        let (bi_d, cls_d, bb_d) = (bi.f32(), cls.f32(), bb.f32());
        let batch = DetBatch { batch_idx: TensorRef::new(&bi_d, &bi.shape), cls: TensorRef::new(&cls_d, &cls.shape), bboxes: TensorRef::new(&bb_d, &bb.shape) };
        let out = crit.value_and_grad(&feats, &batch).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        assert_close(&format!("{} loss", f.name), &to_f64(&out.loss), f.get("out.loss"));
        assert_close(&format!("{} loss_items", f.name), &to_f64(&out.loss_items), f.get("out.loss_items"));
        for (i, g) in out.grads.iter().enumerate() {
            assert_close(&format!("{} grad.preds.{i}", f.name), &to_f64(g), f.get(&format!("grad.preds.{i}")));
        }
        // Caller-provided buffers receive the same gradients.
        let mut bufs: Vec<Vec<f32>> = out.grads.iter().map(|g| vec![0.0; g.len()]).collect();
        let mut slices: Vec<&mut [f32]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
        let (loss, items) = crit.value_and_grad_into(&feats, &batch, &mut slices).unwrap();
        assert_eq!((loss, items), (out.loss.clone(), out.loss_items.clone()), "{}: value_and_grad_into values", f.name);
        assert_eq!(bufs, out.grads, "{}: value_and_grad_into gradients", f.name);
        // `call` returns the same values without gradients.
        let plain = crit.call(&feats, &batch).unwrap();
        assert_eq!(plain.loss, out.loss, "{}: call and value_and_grad disagree", f.name);
        assert!(plain.grads.is_empty());
    }
}

#[test]
fn task_aligned_assigner_matches_reference() {
    common::check_assigner_kind("TaskAlignedAssigner", |cfg, [a, b, c, d, e, g]| assign_dense(cfg, a, b, c, d, e, g));
}

#[test]
fn bbox_iou_matches_reference_in_every_mode() {
    for f in load_kind("bbox_iou") {
        let kind = IouKind::from_flags(f.cfg_bool("GIoU"), f.cfg_bool("DIoU"), f.cfg_bool("CIoU"));
        let xywh = f.cfg_bool("xywh");
        let eps = f.config["eps"].as_f64().unwrap_or(1e-7) as f32;
        let (b1, b2, up) = (f.get("in.box1").f32(), f.get("in.box2").f32(), f.get("in.upstream").f32());
        let (mut val, mut g1, mut g2) = (vec![], vec![], vec![]);
        for i in 0..up.len() {
            let a: [f32; 4] = b1[4 * i..4 * i + 4].try_into().unwrap();
            let b: [f32; 4] = b2[4 * i..4 * i + 4].try_into().unwrap();
            let (v, ga, gb) = bbox_iou_grad(a, b, xywh, kind, eps, up[i]);
            val.push(v as f64);
            g1.extend(ga.iter().map(|&x| x as f64));
            g2.extend(gb.iter().map(|&x| x as f64));
        }
        assert_close(&format!("{} iou", f.name), &val, f.get("out.iou"));
        assert_close(&format!("{} grad.box1", f.name), &g1, f.get("grad.box1"));
        assert_close(&format!("{} grad.box2", f.name), &g2, f.get("grad.box2"));
    }
}

#[test]
fn dfloss_matches_reference() {
    for f in load_kind("DFLoss") {
        let r = f.config["reg_max"].as_u64().unwrap() as usize;
        let (pd, tg, up) = (f.get("in.pred_dist"), f.get("in.target"), f.get("in.upstream").f32());
        let (pdd, tgd) = (pd.f32(), tg.f32());
        let (loss, grad) = dfl_loss(TensorRef::new(&pdd, &pd.shape), TensorRef::new(&tgd, &tg.shape), r, Some(&up)).unwrap();
        assert_close(&format!("{} loss", f.name), &to_f64(&loss), f.get("out.loss"));
        assert_close(&format!("{} grad", f.name), &to_f64(&grad), f.get("grad.pred_dist"));
    }
}

#[test]
fn bbox_loss_matches_reference() {
    for f in load_kind("BboxLoss") {
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
        let out = bbox_loss(&inp, r).unwrap();
        assert_close(&format!("{} loss_iou", f.name), &[out.loss_iou as f64], f.get("out.loss_iou"));
        assert_close(&format!("{} loss_dfl", f.name), &[out.loss_dfl as f64], f.get("out.loss_dfl"));
        assert_close(&format!("{} grad.pred_dist", f.name), &to_f64(&out.grad_pred_dist), f.get("grad.pred_dist"));
        assert_close(&format!("{} grad.pred_bboxes", f.name), &to_f64(&out.grad_pred_bboxes), f.get("grad.pred_bboxes"));
    }
}

#[test]
fn make_anchors_matches_reference() {
    for f in load_kind("make_anchors") {
        let shapes: Vec<(usize, usize)> = f.config["shapes"].as_array().unwrap().iter().map(|s| (s[0].as_u64().unwrap() as usize, s[1].as_u64().unwrap() as usize)).collect();
        let strides: Vec<f64> = f.config["strides"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let offset = f.config["grid_cell_offset"].as_f64().unwrap_or(0.5);
        let (pts, st) = AnchorGrid::new(&shapes, &strides).make_anchors::<f32>(offset);
        assert_close(&format!("{} anchor_points", f.name), &to_f64(&pts), f.get("out.anchor_points"));
        assert_close(&format!("{} stride_tensor", f.name), &to_f64(&st), f.get("out.stride_tensor"));
    }
}

#[test]
fn dist2bbox_and_bbox2dist_match_reference() {
    for f in load_kind("dist2bbox") {
        let (d, a) = (f.get("in.distance").f32(), f.get("in.anchor_points").f32());
        let xywh = f.cfg_bool("xywh");
        let out: Vec<f64> = (0..a.len() / 2)
            .flat_map(|i| dist2bbox(d[4 * i..4 * i + 4].try_into().unwrap(), [a[2 * i], a[2 * i + 1]], xywh))
            .map(|v| v as f64)
            .collect();
        assert_close(&f.name, &out, f.get("out.boxes"));
    }
    for f in load_kind("bbox2dist") {
        let (a, b) = (f.get("in.anchor_points").f32(), f.get("in.bbox").f32());
        let r = f.cfg_f64("reg_max");
        let out: Vec<f64> = (0..a.len() / 2)
            .flat_map(|i| bbox2dist([a[2 * i], a[2 * i + 1]], b[4 * i..4 * i + 4].try_into().unwrap(), r))
            .map(|v| v as f64)
            .collect();
        assert_close(&f.name, &out, f.get("out.dist"));
    }
}
