//! Finite-difference checks (f64) of the gradients the fixtures cannot isolate: the mask coefficients
//! and prototypes of segmentation, the keypoint channels of pose. Perturbing these tensors leaves the
//! assignment unchanged (it reads class and box channels only), so the full loss is differentiated.

use yolo_loss_core::pose::{PoseBatch, PoseConfig, PosePreds, V8PoseLoss};
use yolo_loss_core::segmentation::{SegBatch, SegPreds, V8SegmentationLoss};
use yolo_loss_core::{DetBatch, DetectionConfig, Hyp, TaskLoss, TensorRef};

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64) / ((1u64 << 53) as f64)
    }
    fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| lo + (hi - lo) * self.next()).collect()
    }
}

const B: usize = 2;
const NC: usize = 3;
const R: usize = 8;

fn det_cfg(hyp: Hyp) -> DetectionConfig {
    DetectionConfig { nc: NC, reg_max: R, strides: vec![8.0, 16.0], hyp, tal_topk: 4 }
}

/// Levels for a 48×64 image: [B, 4R + nc, 6, 8] and [B, 4R + nc, 3, 4].
fn levels(rng: &mut Lcg) -> (Vec<Vec<f64>>, Vec<Vec<usize>>) {
    let c = 4 * R + NC;
    let shapes = vec![vec![B, c, 6, 8], vec![B, c, 3, 4]];
    (shapes.iter().map(|s| rng.vec(s.iter().product(), -2.0, 2.0)).collect(), shapes)
}

const A: usize = 48 + 12;
const BI: [f64; 3] = [0.0, 0.0, 1.0];
const CLS: [f64; 3] = [1.0, 2.0, 0.0];
const BOXES: [f64; 12] = [0.4, 0.5, 0.5, 0.6, 0.55, 0.45, 0.4, 0.5, 0.3, 0.6, 0.35, 0.5];

/// Central differences over every element of `x[t]`, against `analytic`.
fn check(name: &str, x: &mut [Vec<f64>], t: usize, f: &dyn Fn(&[Vec<f64>]) -> f64, analytic: &[f64]) {
    let h = 1e-6;
    let mut nonzero = 0;
    for i in 0..x[t].len() {
        let orig = x[t][i];
        x[t][i] = orig + h;
        let fp = f(x);
        x[t][i] = orig - h;
        let fm = f(x);
        x[t][i] = orig;
        let fd = (fp - fm) / (2.0 * h);
        assert!((fd - analytic[i]).abs() < 1e-6 * (1.0 + fd.abs()), "{name}[{i}]: fd {fd} analytic {}", analytic[i]);
        if analytic[i] != 0.0 {
            nonzero += 1;
        }
    }
    assert!(nonzero > 0, "{name}: the case must exercise the gradient");
}

#[test]
fn segmentation_mask_gradients_match_finite_differences() {
    for overlap in [true, false] {
        let mut rng = Lcg(11 + overlap as u64);
        let (lv, shapes) = levels(&mut rng);
        let nm = 4;
        let (mh, mw) = (12, 16);
        // GT masks at 24×32 (resized to the prototypes' 12×16 by nearest sampling).
        let (gh, gw) = (24, 32);
        let masks: Vec<f64> = if overlap {
            (0..B * gh * gw)
                .map(|i| {
                    let (b, r, c) = (i / (gh * gw), (i / gw) % gh, i % gw);
                    let n = if b == 0 { 2 } else { 1 };
                    ((r * 7 + c * 3) % (n + 1)) as f64
                })
                .collect()
        } else {
            (0..3 * gh * gw).map(|i| ((i * 13) % 5 == 0) as u8 as f64).collect()
        };
        let mshape = if overlap { vec![B, gh, gw] } else { vec![3, gh, gw] };
        let mut x = vec![rng.vec(B * nm * A, -1.0, 1.0), rng.vec(B * nm * mh * mw, -1.0, 1.0)];
        let crit = V8SegmentationLoss::new(det_cfg(Hyp { overlap_mask: overlap, ..Hyp::default() })).unwrap();
        let (s1, s2, s4) = ([3usize], [3usize, 1], [3usize, 4]);
        let batch = SegBatch {
            det: DetBatch {
                batch_idx: TensorRef::new(&BI, &s1),
                cls: TensorRef::new(&CLS, &s2),
                bboxes: TensorRef::new(&BOXES, &s4),
            },
            masks: TensorRef::new(&masks, &mshape),
        };
        let (pm_shape, pr_shape) = ([B, nm, A], [B, nm, mh, mw]);
        let run = |x: &[Vec<f64>], grad: bool| {
            let feats: Vec<TensorRef<f64>> = lv.iter().zip(&shapes).map(|(d, s)| TensorRef::new(d, s)).collect();
            let (pm, pr) = (TensorRef::new(&x[0], &pm_shape), TensorRef::new(&x[1], &pr_shape));
            let preds = SegPreds { feats: &feats, pred_masks: pm, proto: pr };
            if grad { crit.value_and_grad(preds, &batch) } else { crit.call(preds, &batch) }.unwrap()
        };
        let base = run(&x, true);
        assert!(base.loss[1] > 0.0, "mask term must be active");
        let total = |x: &[Vec<f64>]| run(x, false).loss.iter().sum::<f64>();
        let (gm, gp) = (base.grads[2].clone(), base.grads[3].clone());
        check("pred_masks", &mut x, 0, &total, &gm);
        check("proto", &mut x, 1, &total, &gp);
    }
}

#[test]
fn pose_keypoint_gradients_match_finite_differences() {
    for (k, d) in [(3usize, 3usize), (4, 2), (17, 3)] {
        let mut rng = Lcg(5 + k as u64);
        let (lv, shapes) = levels(&mut rng);
        let mut x = vec![rng.vec(B * k * d * A, -1.0, 1.0)];
        let mut kp = rng.vec(3 * k * d, 0.2, 0.8);
        if d == 3 {
            for (i, v) in kp.iter_mut().enumerate().filter(|(i, _)| i % 3 == 2) {
                *v = if i % 7 == 2 { 0.0 } else { 2.0 };
            }
        }
        let crit =
            V8PoseLoss::new(PoseConfig { det: det_cfg(Hyp::default()), kpt_shape: (k, d), oks_sigmas: None }).unwrap();
        let (s1, s2, s4, sk) = ([3usize], [3usize, 1], [3usize, 4], [3usize, k, d]);
        let batch = PoseBatch {
            det: DetBatch {
                batch_idx: TensorRef::new(&BI, &s1),
                cls: TensorRef::new(&CLS, &s2),
                bboxes: TensorRef::new(&BOXES, &s4),
            },
            keypoints: TensorRef::new(&kp, &sk),
        };
        let kshape = [B, k * d, A];
        let run = |x: &[Vec<f64>], grad: bool| {
            let feats: Vec<TensorRef<f64>> = lv.iter().zip(&shapes).map(|(d, s)| TensorRef::new(d, s)).collect();
            let t = TensorRef::new(&x[0], &kshape);
            let preds = PosePreds { feats: &feats, kpts: t };
            if grad { crit.value_and_grad(preds, &batch) } else { crit.call(preds, &batch) }.unwrap()
        };
        let base = run(&x, true);
        assert!(base.loss[1] > 0.0, "pose term must be active");
        let total = |x: &[Vec<f64>]| run(x, false).loss.iter().sum::<f64>();
        let g = base.grads[2].clone();
        check(&format!("kpts {k}x{d}"), &mut x, 0, &total, &g);
    }
}
