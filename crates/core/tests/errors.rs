//! Bad input gets a coded error naming the argument, never a panic or a NaN.

use yolo_loss_core::{DetBatch, DetectionConfig, ErrorCode, Hyp, TaskLoss, TensorRef, V8DetectionLoss};

const NC: usize = 3;
const R: usize = 4;

fn crit() -> V8DetectionLoss {
    V8DetectionLoss::new(DetectionConfig {
        nc: NC,
        reg_max: R,
        strides: vec![8.0, 16.0],
        hyp: Hyp::default(),
        tal_topk: 4,
    })
    .unwrap()
}

fn shapes() -> Vec<Vec<usize>> {
    vec![vec![1, 4 * R + NC, 4, 4], vec![1, 4 * R + NC, 2, 2]]
}

/// Zero logits and one label; tests break one thing at a time.
struct Case {
    lv: Vec<Vec<f32>>,
    sh: Vec<Vec<usize>>,
    bi: [f32; 1],
    cls: [f32; 1],
    bb: [f32; 4],
}

impl Case {
    fn valid() -> Self {
        let sh = shapes();
        let lv = sh.iter().map(|s| vec![0.0; s.iter().product()]).collect();
        Case { lv, sh, bi: [0.0], cls: [1.0], bb: [0.5, 0.5, 0.3, 0.3] }
    }

    /// Runs `f` on the case's tensors, borrowed as the loss takes them.
    fn with<T>(&self, f: impl FnOnce(&[TensorRef<f32>], &DetBatch<f32>) -> T) -> T {
        let feats: Vec<TensorRef<f32>> = self.lv.iter().zip(&self.sh).map(|(d, s)| TensorRef::new(d, s)).collect();
        let (s1, s2, s4) = ([1usize], [1usize, 1], [1usize, 4]);
        let batch = DetBatch {
            batch_idx: TensorRef::new(&self.bi, &s1),
            cls: TensorRef::new(&self.cls, &s2),
            bboxes: TensorRef::new(&self.bb, &s4),
        };
        f(&feats, &batch)
    }
}

/// The valid case with one thing broken by `edit`: the loss must reject it.
fn run(edit: impl FnOnce(&mut Case)) -> yolo_loss_core::LossError {
    let mut c = Case::valid();
    edit(&mut c);
    c.with(|feats, batch| crit().value_and_grad(feats, batch).expect_err("bad input must be rejected"))
}

fn expect(e: yolo_loss_core::LossError, code: ErrorCode, names: &str) {
    assert_eq!(e.code, code, "{e}");
    assert!(e.message.contains(names), "message should name {names}: {e}");
    assert!(e.message.contains("expected") && e.message.contains("got"), "message should say expected/got: {e}");
}

#[test]
fn the_valid_case_runs() {
    let out = Case::valid().with(|feats, batch| crit().value_and_grad(feats, batch)).unwrap();
    assert!(out.loss.iter().all(|v| v.is_finite()));
}

#[test]
fn shape_errors_name_the_level() {
    expect(
        run(|c| {
            c.sh[1][1] -= 1;
            c.lv[1].truncate(c.sh[1].iter().product());
        }),
        ErrorCode::ShapeMismatch,
        "preds[1]",
    );
    expect(
        run(|c| {
            c.sh[1][2] = 3;
            c.lv[1].resize(c.sh[1].iter().product(), 0.0);
        }),
        ErrorCode::ShapeMismatch,
        "preds[1]",
    );
    expect(
        run(|c| {
            c.lv[0].pop();
        }),
        ErrorCode::ShapeMismatch,
        "preds[0]",
    );
}

#[test]
fn label_errors_name_the_label() {
    expect(run(|c| c.bi[0] = 1.0), ErrorCode::LabelOutOfRange, "batch.batch_idx[0]");
    expect(run(|c| c.cls[0] = NC as f32), ErrorCode::LabelOutOfRange, "batch.cls[0]");
    expect(run(|c| c.bb[2] = -0.1), ErrorCode::LabelOutOfRange, "batch.bboxes[0]");
}

#[test]
fn non_finite_values_are_rejected() {
    expect(run(|c| c.lv[1][5] = f32::NAN), ErrorCode::NonFinite, "preds[1]");
    expect(run(|c| c.lv[0][0] = f32::INFINITY), ErrorCode::NonFinite, "preds[0]");
    expect(run(|c| c.bb[1] = f32::NAN), ErrorCode::NonFinite, "batch.bboxes");
    // Finite when normalized, infinite in pixels.
    expect(run(|c| c.bb[2] = 3e37), ErrorCode::NonFinite, "batch.bboxes");
}

#[test]
fn gradient_buffers_must_match_the_predictions() {
    let c = Case::valid();
    let mut a = vec![0.0f32; c.lv[0].len()];
    let mut b = vec![0.0f32; c.lv[1].len() - 1];
    let e = c.with(|feats, batch| crit().value_and_grad_into(feats, batch, &mut [&mut a, &mut b])).unwrap_err();
    expect(e, ErrorCode::ShapeMismatch, "grads");
    let e = c.with(|feats, batch| crit().value_and_grad_into(feats, batch, &mut [&mut a])).unwrap_err();
    expect(e, ErrorCode::ShapeMismatch, "grads");
}

/// The class logits are checked by the pass that reads them, the other channels per image before its
/// assignment: the error must still be the one a check of every tensor in order gives (the first non-finite
/// element of the first bad level), before label errors, with and without gradients.
#[test]
fn non_finite_class_logits_are_reported_as_by_one_full_check() {
    const HW0: usize = 16;
    const CLS0: usize = 4 * R * HW0; // first class logit of level 0
    let edits: [fn(&mut Case); 8] = [
        |c| c.lv[0][CLS0 + 5] = f32::NEG_INFINITY,
        |c| c.lv[0][CLS0 + 2 * HW0 - 1] = f32::NAN,
        |c| {
            c.lv[0][CLS0 + 7] = f32::INFINITY;
            c.lv[0][CLS0 + 20] = f32::NAN;
        },
        // A class logit of level 0 comes before a box logit of level 1.
        |c| {
            c.lv[0][CLS0 + 3] = f32::NAN;
            c.lv[1][0] = f32::NAN;
        },
        // The very last class logit.
        |c| {
            let n = c.lv[1].len();
            c.lv[1][n - 1] = f32::NAN;
        },
        // Non-finite logits come before label errors.
        |c| {
            c.lv[0][CLS0] = f32::NAN;
            c.cls[0] = NC as f32;
        },
        |c| {
            c.lv[0][CLS0] = f32::NAN;
            c.bb[2] = -0.1;
        },
        |c| {
            c.lv[1][3] = f32::INFINITY;
            c.bi[0] = 1.0;
        },
    ];
    for (i, edit) in edits.iter().enumerate() {
        let mut c = Case::valid();
        edit(&mut c);
        let want = c
            .with(|feats, _| feats.iter().enumerate().find_map(|(l, f)| f.check_finite(&format!("preds[{l}]")).err()))
            .expect("case has a non-finite value");
        let got = run(*edit);
        assert_eq!((got.code, &got.message), (want.code, &want.message), "case {i}");
        let got = c.with(|feats, batch| crit().call(feats, batch)).expect_err("call must reject it too");
        assert_eq!((got.code, &got.message), (want.code, &want.message), "case {i}, call");
    }
    // Huge finite logits may overflow the class sum: no error then.
    let mut c = Case::valid();
    c.lv[0][CLS0..CLS0 + NC * HW0].iter_mut().for_each(|v| *v = 3e38);
    assert!(c.with(|feats, batch| crit().value_and_grad(feats, batch)).is_ok());
}

/// Pose, OBB and segmentation check the level tensors by parts too (class window in the class pass, the other
/// channels in the assignment): a non-finite logit is still reported as one full check in order reports it (the
/// first non-finite element of the first bad level), before an error of the task's other tensors or labels.
#[test]
fn task_losses_report_non_finite_logits_as_by_one_full_check() {
    use yolo_loss_core::obb::ObbPreds;
    use yolo_loss_core::pose::{PoseBatch, PoseConfig, PosePreds, V8PoseLoss};
    use yolo_loss_core::segmentation::{SegBatch, SegPreds, V8SegmentationLoss};
    use yolo_loss_core::V8OBBLoss;
    let cfg = DetectionConfig { nc: NC, reg_max: R, strides: vec![8.0, 16.0], hyp: Hyp::default(), tal_topk: 4 };
    let (hw0, a) = (16usize, 20usize);
    let cls0 = 4 * R * hw0;
    // (level, element) set to NaN / inf, and whether the task's own tensor is broken too.
    let cases: [(usize, usize, f32, bool); 5] = [
        (0, cls0 + 5, f32::NEG_INFINITY, false),
        (0, cls0 + 3, f32::NAN, true),
        (1, 2, f32::INFINITY, false),
        (1, 7, f32::NAN, true),
        (1, 4 * R * 4 + 4 * NC - 1, f32::NAN, true),
    ];
    for (i, &(l, at, bad, break_task)) in cases.iter().enumerate() {
        let mut c = Case::valid();
        c.lv[l][at] = bad;
        let want = c
            .with(|feats, _| feats.iter().enumerate().find_map(|(l, f)| f.check_finite(&format!("preds[{l}]")).err()))
            .unwrap();
        let check = |task: &str, got: yolo_loss_core::LossError| {
            assert_eq!((got.code, &got.message), (want.code, &want.message), "case {i}, {task}")
        };
        // Pose: kpt_shape [2, 3]; broken: keypoints of the wrong shape.
        let kp_shape = [1usize, 6, if break_task { a - 1 } else { a }];
        let kp = vec![0.1f32; kp_shape.iter().product()];
        let gk = [0.5f32, 0.5, 2.0, 0.4, 0.6, 2.0];
        let gk_shape = [1usize, 2, 3];
        let pose = V8PoseLoss::new(PoseConfig { det: cfg.clone(), kpt_shape: (2, 3), oks_sigmas: None }).unwrap();
        let got = c.with(|feats, det| {
            pose.value_and_grad(
                PosePreds { feats, kpts: TensorRef::new(&kp, &kp_shape) },
                &PoseBatch { det: *det, keypoints: TensorRef::new(&gk, &gk_shape) },
            )
            .unwrap_err()
        });
        check("pose", got);
        // OBB: broken: a non-finite angle.
        let mut angle = vec![0.2f32; a];
        if break_task {
            angle[0] = f32::NAN;
        }
        let ang_shape = [1usize, 1, a];
        let obb_box = [0.5f32, 0.5, 0.3, 0.3, 0.4];
        let obb = V8OBBLoss::new(cfg.clone()).unwrap();
        let got = c.with(|feats, det| {
            let det = DetBatch { bboxes: TensorRef::new(&obb_box, &[1, 5]), ..*det };
            obb.value_and_grad(ObbPreds { feats, angle: TensorRef::new(&angle, &ang_shape) }, &det).unwrap_err()
        });
        check("obb", got);
        // Segmentation: nm 2, 8×8 prototypes; broken: a mask index beyond the image's labels.
        let (pm, pr) = (vec![0.3f32; 2 * a], vec![0.1f32; 2 * 64]);
        let mut masks = vec![0.0f32; 64];
        masks[9] = if break_task { 5.0 } else { 1.0 };
        let seg = V8SegmentationLoss::new(cfg.clone()).unwrap();
        let got = c.with(|feats, det| {
            let batch = SegBatch { det: *det, masks: TensorRef::new(&masks, &[1, 8, 8]) };
            seg.value_and_grad(
                SegPreds {
                    feats,
                    pred_masks: TensorRef::new(&pm, &[1, 2, a]),
                    proto: TensorRef::new(&pr, &[1, 2, 8, 8]),
                },
                &batch,
            )
            .unwrap_err()
        });
        check("segmentation", got);
    }
}
