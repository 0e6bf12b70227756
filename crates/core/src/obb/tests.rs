//! The OBB loss and its pieces: finite differences with the assignment held fixed, errors, the assigner's candidates.

use super::assign::assign_batch_rotated;
use super::geometry::corner_bounds;
use super::*;
use crate::assigner::AssignerConfig;
use crate::blocks::BboxLossInputs;
use crate::detection::{DetBatch, DetectionConfig};
use crate::dfl::softmax_expectation;
use crate::family::assigned::score_divisor;
use crate::family::head::Head;
use crate::family::image_preds::sigmoid;
use crate::hyp::Hyp;
use crate::labels::Labels;
use crate::loss::TaskLoss;
use crate::tensor::TensorRef;

use crate::testing::{random_levels, Lcg};

fn config(nc: usize, reg_max: usize, strides: &[f64]) -> DetectionConfig {
    DetectionConfig {
        nc,
        reg_max,
        strides: strides.to_vec(),
        hyp: Hyp { box_gain: 7.5, cls: 0.5, dfl: 1.5, ..Hyp::default() },
        tal_topk: 3,
    }
}

/// Central differences in f64 of the whole OBB loss with the assignment (and S) held fixed, against
/// the analytic gradient, for every logit and every angle of a case with overlapping rotated boxes.
#[test]
fn gradient_matches_finite_differences_with_frozen_assignment() {
    for reg_max in [16usize, 1] {
        let (nc, strides) = (3, vec![8.0, 16.0]);
        let crit = V8OBBLoss::new(config(nc, reg_max, &strides)).unwrap();
        assert_eq!(crit.cfg.tal_topk, OBB_TOPK);
        let c = 4 * reg_max + nc;
        let shapes = [vec![2usize, c, 6, 8], vec![2, c, 3, 4]];
        let na = 6 * 8 + 3 * 4;
        let mut rng = Lcg(17 + reg_max as u64);
        let mut levels = random_levels(&mut rng, &shapes, reg_max, 0.8);
        let mut angle: Vec<f64> = (0..2 * na).map(|_| rng.next() * 3.0 - 0.7).collect();
        let bi = [0.0, 0.0, 1.0, 1.0];
        let cls = [1.0, 2.0, 0.0, 2.0];
        let boxes =
            [0.45, 0.5, 0.5, 0.3, 0.4, 0.5, 0.45, 0.4, 0.35, 1.2, 0.5, 0.55, 0.6, 0.5, 0.05, 0.3, 0.4, 0.3, 0.6, 1.5];
        let (s1, s2, s5) = ([4usize], [4usize, 1usize], [4usize, 5usize]);
        let batch = DetBatch {
            batch_idx: TensorRef::new(&bi, &s1),
            cls: TensorRef::new(&cls, &s2),
            bboxes: TensorRef::new(&boxes, &s5),
        };
        let ashape = [2usize, 1, na];
        let feats: Vec<TensorRef<f64>> = levels.iter().zip(&shapes).map(|(d, s)| TensorRef::new(d, s)).collect();
        let (head, gt) = crit.prepare(&feats, TensorRef::new(&angle, &ashape), &batch).unwrap();
        let (positives, _) = assign_batch_rotated(&head, &angle, &gt, &AssignerConfig::for_loss(OBB_TOPK, nc));
        assert!(positives.iter().map(|p| p.len()).sum::<usize>() >= 10, "the case must have positives");
        let s = score_divisor::<f64>(&positives);
        let base = crit.losses_given_assignment(&head, &angle, &gt, &positives, s, true);
        let full =
            crit.value_and_grad(ObbPreds { feats: &feats, angle: TensorRef::new(&angle, &ashape) }, &batch).unwrap();
        assert_eq!(full.loss, base.loss);
        let total = |lv: &[Vec<f64>], ang: &[f64]| -> f64 {
            let feats: Vec<TensorRef<f64>> = lv.iter().zip(&shapes).map(|(d, s)| TensorRef::new(d, s)).collect();
            let head = Head::validate(&feats, &strides, reg_max, nc).unwrap();
            crit.losses_given_assignment(&head, ang, &gt, &positives, s, false).loss.iter().sum()
        };
        let h = 1e-6;
        let check = |fd: f64, an: f64, what: &str| {
            assert!((fd - an).abs() < 1e-6 * (1.0 + fd.abs()), "reg_max {reg_max} {what}: fd {fd} analytic {an}")
        };
        for l in 0..levels.len() {
            for i in 0..levels[l].len() {
                let orig = levels[l][i];
                levels[l][i] = orig + h;
                let fp = total(&levels, &angle);
                levels[l][i] = orig - h;
                let fm = total(&levels, &angle);
                levels[l][i] = orig;
                check((fp - fm) / (2.0 * h), base.grads[l][i], &format!("level {l} elem {i}"));
            }
        }
        let mut nonzero = 0;
        for i in 0..angle.len() {
            let orig = angle[i];
            angle[i] = orig + h;
            let fp = total(&levels, &angle);
            angle[i] = orig - h;
            let fm = total(&levels, &angle);
            angle[i] = orig;
            let an = base.grads[levels.len()][i];
            check((fp - fm) / (2.0 * h), an, &format!("angle {i}"));
            nonzero += (an != 0.0) as usize;
        }
        assert!(nonzero >= 10, "the angle must receive gradient at the positives");
    }
}

#[test]
fn dist2rbox_gradient_matches_finite_differences() {
    let mut rng = Lcg(5);
    for _ in 0..50 {
        let d: [f64; 4] = std::array::from_fn(|_| rng.next() * 10.0);
        let th = rng.next() * 3.0 - 0.8;
        let a = [rng.next() * 20.0, rng.next() * 20.0];
        let up: [f64; 4] = std::array::from_fn(|_| rng.next() * 2.0 - 1.0);
        let f = |d: [f64; 4], th: f64| dist2rbox(d, th, a).iter().zip(&up).map(|(x, u)| x * u).sum::<f64>();
        let (gd, gt) = dist2rbox_grad(d, th, up);
        let h = 1e-6;
        for k in 0..4 {
            let (mut dp, mut dm) = (d, d);
            dp[k] += h;
            dm[k] -= h;
            let fd = (f(dp, th) - f(dm, th)) / (2.0 * h);
            assert!((fd - gd[k]).abs() < 1e-7, "d{k}: fd {fd} analytic {}", gd[k]);
        }
        let fd = (f(d, th + h) - f(d, th - h)) / (2.0 * h);
        assert!((fd - gt).abs() < 1e-7, "theta: fd {fd} analytic {gt}");
    }
    // θ = 0: the plain centre/size decode.
    assert_eq!(dist2rbox([1.0f64, 2.0, 3.0, 6.0], 0.0, [10.0, 20.0]), [11.0, 22.0, 4.0, 8.0]);
}

#[test]
fn rotated_centre_in_box_is_inclusive() {
    // θ = 0: corners are exact, anchors on the edges count.
    let b = [60.0f32, 60.0, 32.0, 48.0, 0.0];
    assert!(center_in_rotated_box([44.0, 36.0], b));
    assert!(center_in_rotated_box([76.0, 84.0], b));
    assert!(!center_in_rotated_box([76.01, 60.0], b));
    assert!(!center_in_rotated_box([60.0, 35.99], b));
    // 45°: the centre and points along the rotated axes.
    let r = [0.0f64, 0.0, 4.0, 2.0, std::f64::consts::FRAC_PI_4];
    assert!(center_in_rotated_box([0.0, 0.0], r));
    assert!(center_in_rotated_box([1.3, 1.3], r));
    assert!(!center_in_rotated_box([1.3, -1.3], r));
    assert!(!center_in_rotated_box([1.5, 0.0], r));
    // The bounding rectangle covers every corner.
    let k = xywhr_corners(r);
    let bb = corner_bounds(r);
    for p in k {
        assert!(p[0] >= bb[0] && p[0] <= bb[2] && p[1] >= bb[1] && p[1] <= bb[3]);
    }
}

#[test]
fn labels_filter_and_padding_follow_the_reference() {
    let bi = [0.0f32, 1.0, 0.0];
    let cls = [1.0f32, 0.0, 2.0];
    // Image 64 (H) × 192 (W): width scaled by H, height by W.
    let boxes = [0.5f32, 0.5, 2.5 / 64.0, 0.2, 0.3, 0.5, 0.5, 0.4, 0.3, 0.1, 0.2, 0.2, 0.5, 1.9 / 192.0, 0.0];
    let (s1, s2, s5) = ([3usize], [3usize, 1usize], [3usize, 5usize]);
    let labels =
        validate_obb_labels(TensorRef::new(&bi, &s1), TensorRef::new(&cls, &s2), TensorRef::new(&boxes, &s5), 2, 3)
            .unwrap();
    let kept = labels.without_tiny(64.0, 192.0);
    assert_eq!(kept.image, vec![0, 1]);
    let t = ObbGtTable::build_rotated(&kept, 2, [192.0, 64.0, 192.0, 64.0]);
    assert_eq!(t.max_labels, 1);
    assert_eq!(t.boxes[0], [96.0, 32.0, 2.5 * 3.0, 0.2 * 64.0, 0.3]);
    // A box whose five values sum to ≤ 0 is padding (θ counts).
    let zero = [0.0f32, 0.0, 0.0, 0.0, 0.0];
    let neg = [0.0f32, 0.0, 0.0, 0.0, -0.5];
    for (b, valid) in [(zero, false), (neg, false), ([0.0, 0.0, 0.0, 0.0, 0.5], true)] {
        let l = Labels::<f32, 5> { image: vec![0], cls: vec![0.0], boxes: vec![b] };
        assert_eq!(ObbGtTable::build_rotated(&l, 1, [1.0; 4]).valid, vec![valid]);
    }
    let (rows, shape) = preprocess_obb(
        TensorRef::new(&[1.0f32, 2.0, 0.5, 0.5, 0.25, 0.5, 1.0], &[1, 7]),
        2,
        [100.0, 50.0, 100.0, 50.0],
    )
    .unwrap();
    assert_eq!(shape, vec![2, 1, 6]);
    assert_eq!(rows, vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 50.0, 25.0, 25.0, 25.0, 1.0]);
}

#[test]
fn no_positives_give_zero_box_terms_and_zero_angle_gradient() {
    let crit = V8OBBLoss::new(config(2, 16, &[8.0, 16.0])).unwrap();
    let c = 64 + 2;
    let l0 = vec![0.1f32; 2 * c * 8 * 8];
    let l1 = vec![-0.2f32; 2 * c * 4 * 4];
    let (sh0, sh1) = ([2usize, c, 8, 8], [2usize, c, 4, 4]);
    let angle = vec![0.3f32; 2 * 80];
    let ash = [2usize, 1, 80];
    // One 3×3 px GT between anchor centres.
    let (bi, cls, bb) = ([0.0f32], [1.0f32], [10.0 / 64.0, 26.0 / 64.0, 3.0 / 64.0, 3.0 / 64.0, 0.3]);
    let batch = DetBatch {
        batch_idx: TensorRef::new(&bi, &[1]),
        cls: TensorRef::new(&cls, &[1, 1]),
        bboxes: TensorRef::new(&bb, &[1, 5]),
    };
    let out = crit
        .value_and_grad(
            ObbPreds {
                feats: &[TensorRef::new(&l0, &sh0), TensorRef::new(&l1, &sh1)],
                angle: TensorRef::new(&angle, &ash),
            },
            &batch,
        )
        .unwrap();
    assert_eq!(out.loss[0], 0.0);
    assert_eq!(out.loss[2], 0.0);
    assert!(out.loss[1] > 0.0);
    assert_eq!(out.grads.len(), 3);
    assert!(out.grads[2].iter().all(|&g| g == 0.0));
    // Box channels get nothing; class channels do.
    assert!(out.grads[0][..64 * 64].iter().all(|&g| g == 0.0));
    assert!(out.grads[0][64 * 64..66 * 64].iter().all(|&g| g > 0.0));
}

#[test]
fn bad_inputs_are_rejected() {
    use crate::error::ErrorCode;
    let crit = V8OBBLoss::new(config(2, 1, &[8.0])).unwrap();
    let l0 = vec![0.5f32; 6 * 4 * 4];
    let sh0 = [1usize, 6, 4, 4];
    let feats = [TensorRef::new(&l0, &sh0)];
    let angle = vec![0.1f32; 16];
    let (bi, cls, bb) = ([0.0f32], [1.0f32], [0.5f32, 0.5, 0.5, 0.5, 0.2]);
    let batch = DetBatch {
        batch_idx: TensorRef::new(&bi, &[1]),
        cls: TensorRef::new(&cls, &[1, 1]),
        bboxes: TensorRef::new(&bb, &[1, 5]),
    };
    assert!(crit.call(ObbPreds { feats: &feats, angle: TensorRef::new(&angle, &[1, 1, 16]) }, &batch).is_ok());
    let e = crit.call(ObbPreds { feats: &feats, angle: TensorRef::new(&angle, &[1, 16, 1]) }, &batch).unwrap_err();
    assert_eq!(e.code, ErrorCode::ShapeMismatch);
    assert!(e.message.contains("preds.angle"), "{}", e.message);
    let mut bad = angle.clone();
    bad[3] = f32::NAN;
    let e = crit.call(ObbPreds { feats: &feats, angle: TensorRef::new(&bad, &[1, 1, 16]) }, &batch).unwrap_err();
    assert_eq!(e.code, ErrorCode::NonFinite);
    let bb4 = [0.5f32, 0.5, 0.5, 0.5];
    let b4 = DetBatch { bboxes: TensorRef::new(&bb4, &[1, 4]), ..batch };
    let e = crit.call(ObbPreds { feats: &feats, angle: TensorRef::new(&angle, &[1, 1, 16]) }, &b4).unwrap_err();
    assert_eq!(e.code, ErrorCode::ShapeMismatch);
    assert!(e.message.contains("[1, 5]"), "{}", e.message);
    let bbi = [0.5f32, 0.5, 0.5, 0.5, f32::INFINITY];
    let binf = DetBatch { bboxes: TensorRef::new(&bbi, &[1, 5]), ..batch };
    assert_eq!(
        crit.call(ObbPreds { feats: &feats, angle: TensorRef::new(&angle, &[1, 1, 16]) }, &binf).unwrap_err().code,
        ErrorCode::NonFinite
    );
    // Finite when normalized, infinite in pixels.
    let bbo = [0.5f32, 0.5, 3e37, 0.5, 0.1];
    let bov = DetBatch { bboxes: TensorRef::new(&bbo, &[1, 5]), ..batch };
    let e = crit.call(ObbPreds { feats: &feats, angle: TensorRef::new(&angle, &[1, 1, 16]) }, &bov).unwrap_err();
    assert_eq!(e.code, ErrorCode::NonFinite);
    assert!(e.message.contains("batch.bboxes"), "{}", e.message);
    let cls_bad = [2.0f32];
    let bc = DetBatch { cls: TensorRef::new(&cls_bad, &[1, 1]), ..batch };
    assert_eq!(
        crit.call(ObbPreds { feats: &feats, angle: TensorRef::new(&angle, &[1, 1, 16]) }, &bc).unwrap_err().code,
        ErrorCode::LabelOutOfRange
    );
    // Fewer anchors than the fixed top-10 while labels exist.
    let l_small = vec![0.5f32; 6 * 3 * 3];
    let e = crit
        .call(
            ObbPreds {
                feats: &[TensorRef::new(&l_small, &[1, 6, 3, 3])],
                angle: TensorRef::new(&angle[..9], &[1, 1, 9]),
            },
            &batch,
        )
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ShapeMismatch);
    // Building blocks.
    let o = [1.0f32, 2.0, 3.0, 4.0, 0.5];
    let e =
        probiou_batch(TensorRef::new(&o, &[1, 5]), TensorRef::new(&o[..4], &[1, 4]), false, 1e-7, None).unwrap_err();
    assert!(e.message.contains("obb2"), "{}", e.message);
    let on = [1.0f32, 2.0, 3.0, 4.0, f32::NAN];
    assert_eq!(
        probiou_batch(TensorRef::new(&o, &[1, 5]), TensorRef::new(&on, &[1, 5]), false, 1e-7, None).unwrap_err().code,
        ErrorCode::NonFinite
    );
    let d = [1.0f32, 2.0, 3.0, 4.0];
    let e = dist2rbox_batch(
        TensorRef::new(&d, &[1, 4]),
        TensorRef::new(&[f32::INFINITY], &[1, 1]),
        TensorRef::new(&[0.0f32, 0.0], &[1, 2]),
        None,
    )
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::NonFinite);
    assert!(e.message.contains("pred_angle"), "{}", e.message);
    let e = dist2rbox_batch(
        TensorRef::new(&d, &[1, 4]),
        TensorRef::new(&[0.1f32], &[1, 1]),
        TensorRef::new(&[0.0f32, 0.0, 1.0, 1.0], &[2, 2]),
        None,
    )
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::ShapeMismatch);
}

/// The dense RotatedBboxLoss gradients against finite differences (pred boxes and DFL logits as
/// independent leaves, as in the reference module).
#[test]
fn rotated_bbox_loss_gradient_matches_finite_differences() {
    let mut rng = Lcg(3);
    let (b, a, nc, r) = (2usize, 5usize, 2usize, 8usize);
    let anchors: Vec<f64> = (0..a).flat_map(|i| [i as f64 + 0.5, 1.5]).collect();
    let target: Vec<f64> = (0..b * a).flat_map(|i| [(i % a) as f64 + 0.7, 1.2, 3.0, 2.0, 0.4]).collect();
    let mut pred: Vec<f64> = target.iter().map(|&v| v * (1.0 + 0.2 * (rng.next() - 0.5)) + 0.1).collect();
    let mut dist: Vec<f64> = (0..b * a * 4 * r).map(|_| rng.next() * 3.0 - 1.5).collect();
    let mut scores = vec![0.0f64; b * a * nc];
    let fg: Vec<bool> = (0..b * a).map(|i| i % 3 != 1).collect();
    for i in 0..b * a {
        if fg[i] {
            scores[i * nc + i % nc] = 0.2 + 0.6 * rng.next();
        }
    }
    let sh = |v: Vec<usize>| v;
    let (s_d, s_b, s_a, s_s) = (sh(vec![b, a, 4 * r]), sh(vec![b, a, 5]), sh(vec![a, 2]), sh(vec![b, a, nc]));
    let run = |dist: &[f64], pred: &[f64]| {
        let inp = BboxLossInputs {
            pred_dist: TensorRef::new(dist, &s_d),
            pred_bboxes: TensorRef::new(pred, &s_b),
            anchor_points: TensorRef::new(&anchors, &s_a),
            target_bboxes: TensorRef::new(&target, &s_b),
            target_scores: TensorRef::new(&scores, &s_s),
            target_scores_sum: 1.7,
            fg_mask: &fg,
        };
        rotated_bbox_loss(&inp, r).unwrap()
    };
    let base = run(&dist, &pred);
    let h = 1e-6;
    for i in 0..pred.len() {
        let o = pred[i];
        pred[i] = o + h;
        let p = run(&dist, &pred);
        pred[i] = o - h;
        let m = run(&dist, &pred);
        pred[i] = o;
        let fd = (p.loss_iou + p.loss_dfl - m.loss_iou - m.loss_dfl) / (2.0 * h);
        assert!(
            (fd - base.grad_pred_bboxes[i]).abs() < 1e-6 * (1.0 + fd.abs()),
            "box {i}: fd {fd} analytic {}",
            base.grad_pred_bboxes[i]
        );
    }
    for i in 0..dist.len() {
        let o = dist[i];
        dist[i] = o + h;
        let p = run(&dist, &pred);
        dist[i] = o - h;
        let m = run(&dist, &pred);
        dist[i] = o;
        let fd = (p.loss_iou + p.loss_dfl - m.loss_iou - m.loss_dfl) / (2.0 * h);
        assert!(
            (fd - base.grad_pred_dist[i]).abs() < 1e-6 * (1.0 + fd.abs()),
            "dist {i}: fd {fd} analytic {}",
            base.grad_pred_dist[i]
        );
    }
}

/// The fused loss path and the dense building blocks agree: decode, assignment, and RotatedBboxLoss.
#[test]
fn fused_loss_agrees_with_dense_blocks() {
    let (nc, r, strides) = (2usize, 16usize, vec![8.0, 16.0]);
    let crit = V8OBBLoss::new(config(nc, r, &strides)).unwrap();
    let c = 4 * r + nc;
    let (h0, w0, h1, w1) = (6usize, 8usize, 3usize, 4usize);
    let na = h0 * w0 + h1 * w1;
    let mut rng = Lcg(99);
    let l0: Vec<f64> = (0..c * h0 * w0).map(|_| rng.next() * 3.0 - 1.5).collect();
    let l1: Vec<f64> = (0..c * h1 * w1).map(|_| rng.next() * 3.0 - 1.5).collect();
    let angle: Vec<f64> = (0..na).map(|_| rng.next() * 2.0 - 0.5).collect();
    let (bi, cls, bb) = ([0.0f64, 0.0], [1.0f64, 0.0], [0.4f64, 0.5, 0.6, 0.5, 0.7, 0.6, 0.45, 0.3, 0.6, 1.2]);
    let batch = DetBatch {
        batch_idx: TensorRef::new(&bi, &[2]),
        cls: TensorRef::new(&cls, &[2, 1]),
        bboxes: TensorRef::new(&bb, &[2, 5]),
    };
    let (sh0, sh1) = ([1usize, c, h0, w0], [1usize, c, h1, w1]);
    let feats = [TensorRef::new(&l0, &sh0), TensorRef::new(&l1, &sh1)];
    let out =
        crit.value_and_grad(ObbPreds { feats: &feats, angle: TensorRef::new(&angle, &[1, 1, na]) }, &batch).unwrap();
    // Channel-last copies for the dense blocks.
    let head = Head::validate(&feats, &strides, r, nc).unwrap();
    let (anc, st) = head.grid.make_anchors::<f64>(0.5);
    let mut pd = Vec::new();
    let mut sc = Vec::new();
    for a in 0..na {
        let p = head.grid.locate(a);
        let hw = head.grid.levels[p.level].len();
        let lv = if p.level == 0 { &l0 } else { &l1 };
        pd.extend((0..4 * r).map(|k| lv[k * hw + p.cell]));
        sc.extend((0..nc).map(|k| sigmoid(lv[(4 * r + k) * hw + p.cell])));
    }
    let (dec, _) = crit
        .bbox_decode(
            TensorRef::new(&anc, &[na, 2]),
            TensorRef::new(&pd, &[1, na, 4 * r]),
            TensorRef::new(&angle, &[1, na, 1]),
        )
        .unwrap();
    let px: Vec<f64> =
        dec.chunks(5).zip(&st).flat_map(|(b, &s)| [b[0] * s, b[1] * s, b[2] * s, b[3] * s, b[4]]).collect();
    let anc_px: Vec<f64> = anc.chunks(2).zip(&st).flat_map(|(p, &s)| [p[0] * s, p[1] * s]).collect();
    let (img_h, img_w) = (48.0, 64.0);
    let gtb: Vec<f64> =
        bb.chunks(5).flat_map(|b| [b[0] * img_w, b[1] * img_h, b[2] * img_w, b[3] * img_h, b[4]]).collect();
    let asg = assign_dense_rotated(
        &AssignerConfig::for_loss(OBB_TOPK, nc),
        TensorRef::new(&sc, &[1, na, nc]),
        TensorRef::new(&px, &[1, na, 5]),
        TensorRef::new(&anc_px, &[na, 2]),
        TensorRef::new(&cls, &[1, 2, 1]),
        TensorRef::new(&gtb, &[1, 2, 5]),
        TensorRef::new(&[1.0, 1.0], &[1, 2, 1]),
    )
    .unwrap();
    assert!(asg.fg_mask.iter().filter(|&&f| f).count() >= 5);
    let s = asg.target_scores.iter().sum::<f64>().max(1.0);
    let tb: Vec<f64> = asg
        .target_bboxes
        .chunks(5)
        .zip(&st)
        .flat_map(|(b, &s)| [b[0] / s, b[1] / s, b[2] / s, b[3] / s, b[4]])
        .collect();
    let (s_d, s_b, s_a, s_s) = ([1, na, 4 * r], [1, na, 5], [na, 2], [1, na, nc]);
    let inp = BboxLossInputs {
        pred_dist: TensorRef::new(&pd, &s_d),
        pred_bboxes: TensorRef::new(&dec, &s_b),
        anchor_points: TensorRef::new(&anc, &s_a),
        target_bboxes: TensorRef::new(&tb, &s_b),
        target_scores: TensorRef::new(&asg.target_scores, &s_s),
        target_scores_sum: s,
        fg_mask: &asg.fg_mask,
    };
    let bl = rotated_bbox_loss(&inp, r).unwrap();
    assert!((out.loss_items[0] - bl.loss_iou * 7.5).abs() < 1e-12, "{} vs {}", out.loss_items[0], bl.loss_iou * 7.5);
    assert!((out.loss_items[2] - bl.loss_dfl * 1.5).abs() < 1e-12);
    // The fused angle gradient = the dense block's gradient for the predicted box, chained through
    // dist2rbox (centre rotation) plus its 5th column (probIoU covariance); B = 1, box gain 7.5.
    let mut probs = vec![0.0f64; r];
    for a in 0..na {
        let g: [f64; 5] = std::array::from_fn(|k| bl.grad_pred_bboxes[5 * a + k]);
        let d: [f64; 4] =
            std::array::from_fn(|s| softmax_expectation(&pd[(4 * a + s) * r..(4 * a + s + 1) * r], &mut probs));
        let want = 7.5 * (g[4] + dist2rbox_grad(d, angle[a], [g[0], g[1], g[2], g[3]]).1);
        assert!((out.grads[2][a] - want).abs() < 1e-12, "anchor {a}: fused {} dense {want}", out.grads[2][a]);
        if !asg.fg_mask[a] {
            assert_eq!(out.grads[2][a], 0.0);
        }
    }
}
