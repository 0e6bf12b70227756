//! Core math against the reference fixtures written by `fixtures/generate.py` (ultralytics 8.3.117).

mod common;

use common::{
    assert_close, check_loss_output, check_overwrite, config, grad_names, levels, load_kind, refs, to_f64, Labels,
};
use yolo_loss_core::blocks::{assign_dense, bbox_loss, dfl_loss};
use yolo_loss_core::geometry::{bbox2dist, dist2bbox, AnchorGrid};
use yolo_loss_core::iou::{bbox_iou_grad, IouKind};
use yolo_loss_core::{TaskLoss, TensorRef, V8DetectionLoss};

#[test]
fn v8_detection_loss_matches_reference() {
    for f in load_kind("v8DetectionLoss") {
        let crit = V8DetectionLoss::new(config(&f)).unwrap();
        let lv = levels(&f, "preds");
        let feats = refs(&lv);
        let lab = Labels::of(&f);
        let batch = lab.det();
        let out = crit.value_and_grad(&feats, &batch).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        check_loss_output(&f.name, &f, &out, &grad_names("grad.preds", lv.len()));
        // Caller-provided buffers receive the same gradients.
        let mut bufs: Vec<Vec<f32>> = out.grads.iter().map(|g| vec![0.0; g.len()]).collect();
        let mut slices: Vec<&mut [f32]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
        let (loss, items) = crit.value_and_grad_into(&feats, &batch, &mut slices).unwrap();
        assert_eq!((loss, items), (out.loss.clone(), out.loss_items.clone()), "{}: value_and_grad_into values", f.name);
        assert_eq!(bufs, out.grads, "{}: value_and_grad_into gradients", f.name);
        check_overwrite(&f.name, &crit, &feats, &batch, &out);
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
        let (loss, grad) =
            dfl_loss(TensorRef::new(&pdd, &pd.shape), TensorRef::new(&tgd, &tg.shape), r, Some(&up)).unwrap();
        assert_close(&format!("{} loss", f.name), &to_f64(&loss), f.get("out.loss"));
        assert_close(&format!("{} grad", f.name), &to_f64(&grad), f.get("grad.pred_dist"));
    }
}

#[test]
fn bbox_loss_matches_reference() {
    common::check_bbox_loss_kind("BboxLoss", bbox_loss);
}

#[test]
fn make_anchors_matches_reference() {
    for f in load_kind("make_anchors") {
        let shapes: Vec<(usize, usize)> = f.config["shapes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s[0].as_u64().unwrap() as usize, s[1].as_u64().unwrap() as usize))
            .collect();
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
