//! v8DetectionLoss (docs/spec.md §9): forward and analytic backward, parallel over images.
//!
//! One call runs in three phases:
//! 1. per image (parallel): task-aligned assignment, decoding only the anchors that lie inside a GT;
//! 2. the divisor S = max(Σ target scores, 1) over the batch;
//! 3. per image (parallel): one pass over the class logits (Σ BCE(x, 0) and σ(x) into the gradient),
//!    then sparse corrections and the box/DFL terms at the positives only.
//!
//! Nothing of size (B × A × nc) is allocated besides the gradient itself, nothing of size (B × M × A) at all.

use crate::assigner::Positive;
use crate::dfl::softmax_expectation;
use crate::error::{LossError, Result};
use rayon::prelude::*;

use crate::family::assigned::Assigned;
use crate::family::head::preds_error_first;
use crate::family::terms::{box_terms, class_terms, per_image_grads, times_batch, GradScales, TermSums};
use crate::geometry::dist2bbox;
use crate::hyp::Hyp;
use crate::labels::GtTable;
use crate::loss::TaskLoss;
use crate::real::Real;
use crate::tensor::{fmt_shape, TensorRef};

/// The detection family's shared pieces, defined in [`crate::family`] and [`crate::loss`], by their names in the
/// detection API (the CUDA crate validates and reports through them).
pub use crate::family::assigned::{decodes_all_up_front, labels_and_gt};
pub use crate::family::head::{check_preds_finite, Head};
pub use crate::loss::{GradBufs, LossOutput, LossValues};

/// What Ultralytics reads from the model and the constructor arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectionConfig {
    pub nc: usize,
    pub reg_max: usize,
    pub strides: Vec<f64>,
    pub hyp: Hyp,
    pub tal_topk: usize,
}

/// The label part of the Ultralytics batch dict.
#[derive(Debug, Clone, Copy)]
pub struct DetBatch<'a, F> {
    /// `[N]` image index of each label.
    pub batch_idx: TensorRef<'a, F>,
    /// `[N, 1]` (or `[N]`) class ids, integer valued.
    pub cls: TensorRef<'a, F>,
    /// `[N, 4]` normalized cx, cy, w, h.
    pub bboxes: TensorRef<'a, F>,
}

#[derive(Debug, Clone)]
pub struct V8DetectionLoss {
    pub cfg: DetectionConfig,
}

impl V8DetectionLoss {
    pub fn new(cfg: DetectionConfig) -> Result<Self> {
        if cfg.nc == 0 {
            return Err(LossError::invalid("model.nc: expected a class count of at least 1, got 0"));
        }
        if cfg.reg_max == 0 {
            return Err(LossError::invalid("model.reg_max: expected at least 1, got 0"));
        }
        if cfg.strides.is_empty() || cfg.strides.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(LossError::invalid(format!(
                "model.stride: expected one positive stride per level, got {:?}",
                cfg.strides
            )));
        }
        if cfg.tal_topk == 0 {
            return Err(LossError::invalid("tal_topk: expected at least 1, got 0"));
        }
        let h = &cfg.hyp;
        for (k, v) in [("box", h.box_gain), ("cls", h.cls), ("dfl", h.dfl)] {
            if !v.is_finite() {
                return Err(LossError::non_finite(format!("model.args.{k}: expected a finite gain, got {v}")));
            }
        }
        Ok(Self { cfg })
    }

    /// `bbox_decode(anchor_points [A,2], pred_dist [B,A,4R])` → (`[B,A,4]` grid xyxy, shape).
    pub fn bbox_decode<F: Real>(
        &self,
        anchor_points: TensorRef<F>,
        pred_dist: TensorRef<F>,
    ) -> Result<(Vec<F>, Vec<usize>)> {
        bbox_decode(anchor_points, pred_dist, self.cfg.reg_max)
    }

    /// The loss over a window of class channels (`nc` classes from channel `cls_ch0` of `channels`);
    /// with `only_cls`, the gradient is that of the cls component alone and the loss is `[cls]`
    /// (TVPDetectLoss back-propagates only that one).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_window<F: Real>(
        &self,
        feats: &[TensorRef<F>],
        batch: &DetBatch<F>,
        grads: GradBufs<F>,
        channels: usize,
        cls_ch0: usize,
        nc: usize,
        only_cls: bool,
        init: GradInit,
    ) -> Result<LossValues<F>> {
        let cfg = &self.cfg;
        // The finiteness check of `Head::validate_channels`, split so that the class window, most of the data,
        // is checked by the BCE pass that reads it anyway (a non-finite logit makes its sum non-finite), and the
        // other channels image by image just before the image's assignment reads them (from cache, then). Any
        // error met before then, and a non-finite result of either part, defer to the full check, so the error is
        // the one the validation in one go gives: the first non-finite element, before any label error.
        let head = Head::validate_shapes(feats, &cfg.strides, cfg.reg_max, channels, cls_ch0, nc)?;
        let (asg, finite) =
            Assigned::new_checking(head, batch, cfg.tal_topk, true).map_err(|e| preds_error_first(feats, e))?;
        if !finite {
            check_preds_finite(feats)?;
        }
        if init == GradInit::Any {
            clear_outside_class_window(&asg.head, grads);
        }
        let (mut loss, items, bce_sum) = self.losses_with_scales(&asg, grads, None, only_cls);
        if !bce_sum.is_finite() {
            // Also reached by finite logits whose sum overflows: then the check passes and the result stands.
            check_preds_finite(feats)?;
        }
        if only_cls {
            loss = vec![loss[1]];
        }
        Ok((loss, items))
    }

    /// Phase 3: the loss terms and gradients for a fixed assignment and divisor S (the reference
    /// treats both as constants, so this is the function autograd differentiates).
    /// Also returns the raw class sum, non-finite when a class logit is.
    fn losses_with_scales<F: Real>(
        &self,
        asg: &Assigned<F>,
        grads: GradBufs<F>,
        frozen_alpha: Option<&[Vec<F>]>,
        only_cls: bool,
    ) -> (Vec<F>, Vec<F>, f64) {
        let head = &asg.head;
        let gains = [self.cfg.hyp.box_gain, self.cfg.hyp.cls, self.cfg.hyp.dfl];
        let mut scales = GradScales { frozen_alpha, ..GradScales::new(head.batch, gains, asg.s) };
        if only_cls {
            scales.iou = F::zero();
            scales.dfl = F::zero();
        }
        let sums =
            per_image_grads(grads, head.batch, |b, g| image_terms(head, &asg.gt, b, &asg.positives[b], &scales, g));
        let items = asg.items(&[sums.iou, sums.bce, sums.dfl], &gains);
        (times_batch(&items, head.batch), items, sums.bce)
    }
}

/// The level tensors `[B, 4·reg_max + nc, H_l, W_l]`; gradients: one per level.
impl<F: Real> TaskLoss<F> for V8DetectionLoss {
    type Preds<'a> = &'a [TensorRef<'a, F>];
    type Batch<'a> = DetBatch<'a, F>;

    fn run(&self, feats: &[TensorRef<F>], batch: &DetBatch<F>, grads: GradBufs<F>) -> Result<LossValues<F>> {
        let c = self.cfg.reg_max * 4;
        self.run_window(feats, batch, grads, c + self.cfg.nc, c, self.cfg.nc, false, GradInit::Zeroed)
    }

    /// Into buffers of any contents: the call zeroes only the channels that positives alone write (the box
    /// channels), after every check; the class channels are stored whole by the class pass anyway, so they cost no
    /// extra pass.
    fn run_overwrite(&self, feats: &[TensorRef<F>], batch: &DetBatch<F>, grads: GradBufs<F>) -> Result<LossValues<F>> {
        let c = self.cfg.reg_max * 4;
        self.run_window(feats, batch, grads, c + self.cfg.nc, c, self.cfg.nc, false, GradInit::Any)
    }
}

/// What the gradient buffers of a call hold when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GradInit {
    /// Zeros (fresh buffers, or a caller's zero-filled ones): only the elements that are not zero are written.
    Zeroed,
    /// Anything: every element is written.
    Any,
}

/// Zeroes, in every level's gradient, the channels outside the class window (the box channels, and the unused prompt
/// channels of a TVP head): the elements a call writes at positives only. The class window needs no clearing: the
/// class pass stores every element of it. One task per image and level, on every thread.
fn clear_outside_class_window<F: Real>(head: &Head<F>, grads: GradBufs<F>) {
    let (c0, c1) = (head.cls_ch0, head.cls_ch0 + head.nc);
    for (l, g) in grads.iter_mut().enumerate().take(head.levels.len()) {
        let hw = head.grid.levels[l].len();
        g.par_chunks_mut(head.channels * hw).for_each(|image| {
            image[..c0 * hw].fill(F::zero());
            image[c1 * hw..].fill(F::zero());
        });
    }
}

/// One image's detection terms (class and box) and, when `grads` is non-empty, its gradient slices.
fn image_terms<F: Real>(
    head: &Head<F>,
    gt: &GtTable<F>,
    b: usize,
    positives: &[Positive<F>],
    sc: &GradScales<F>,
    grads: &mut [&mut [F]],
) -> TermSums {
    let bce = class_terms(head, gt, b, positives, sc.cls, grads);
    let (iou, dfl) = box_terms(head, gt, b, positives, sc, grads);
    TermSums { bce, iou, dfl }
}

/// `bbox_decode` on channel-last predictions: anchor_points `[A,2]`, pred_dist `[B,A,4R]` → `[B,A,4]`.
pub fn bbox_decode<F: Real>(
    anchor_points: TensorRef<F>,
    pred_dist: TensorRef<F>,
    reg_max: usize,
) -> Result<(Vec<F>, Vec<usize>)> {
    anchor_points.check_rank("anchor_points", 2, "[A, 2]")?;
    pred_dist.check_rank("pred_dist", 3, &format!("[B, A, {}]", 4 * reg_max))?;
    let a = anchor_points.shape[0];
    if anchor_points.shape[1] != 2 {
        return Err(LossError::shape(format!(
            "anchor_points: expected shape [A, 2], got {}",
            fmt_shape(anchor_points.shape)
        )));
    }
    if pred_dist.shape[1] != a || pred_dist.shape[2] != 4 * reg_max {
        return Err(LossError::shape(format!(
            "pred_dist: expected shape [B, {a}, {}] (4·reg_max per anchor), got {}",
            4 * reg_max,
            fmt_shape(pred_dist.shape)
        )));
    }
    anchor_points.check_finite("anchor_points")?;
    pred_dist.check_finite("pred_dist")?;
    let bsz = pred_dist.shape[0];
    let mut out = Vec::with_capacity(bsz * a * 4);
    let mut probs = vec![F::zero(); reg_max];
    for row in pred_dist.data.chunks(4 * reg_max) {
        let i = (out.len() / 4) % a.max(1);
        let mut d = [F::zero(); 4];
        for (s, ds) in d.iter_mut().enumerate() {
            let z = &row[s * reg_max..(s + 1) * reg_max];
            *ds = if reg_max == 1 { z[0] } else { softmax_expectation(z, &mut probs) };
        }
        out.extend_from_slice(&dist2bbox(d, [anchor_points.data[2 * i], anchor_points.data[2 * i + 1]], false));
    }
    Ok((out, vec![bsz, a, 4]))
}

/// `preprocess` of the reference, re-exported here for the detection API.
pub use crate::labels::preprocess;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::family::image_preds::ImagePreds;
    use crate::iou::{ciou_alpha, IOU_EPS};
    use crate::loss::zero_grads;

    use crate::testing::{random_levels, Lcg};

    /// `value_and_grad_overwrite` into buffers full of leftovers (NaN, large values) gives `value_and_grad`'s numbers
    /// bit for bit: every element of every level gradient is written. With a TVP-like head whose channels go past the
    /// class window, so that channels on both sides of it need clearing.
    #[test]
    fn overwrite_writes_every_gradient_element() {
        for (reg_max, nc) in [(16usize, 5usize), (1, 3)] {
            let crit = V8DetectionLoss::new(DetectionConfig {
                nc,
                reg_max,
                strides: vec![8.0, 16.0],
                hyp: Hyp::default(),
                tal_topk: 4,
            })
            .unwrap();
            let c = 4 * reg_max + nc;
            let shapes = [vec![2usize, c, 6, 8], vec![2, c, 3, 4]];
            let mut rng = Lcg(11 + reg_max as u64);
            let levels = random_levels(&mut rng, &shapes, reg_max, 1.0);
            let (bi, cls) = ([0.0f32, 0.0, 1.0], [1.0f32, 2.0, 0.0]);
            let boxes = [0.4f32, 0.5, 0.5, 0.6, 0.5, 0.45, 0.4, 0.5, 0.3, 0.6, 0.35, 0.5];
            let (s1, s2, s4) = ([3usize], [3usize, 1usize], [3usize, 4usize]);
            let batch = DetBatch {
                batch_idx: TensorRef::new(&bi, &s1),
                cls: TensorRef::new(&cls, &s2),
                bboxes: TensorRef::new(&boxes, &s4),
            };
            let levels: Vec<Vec<f32>> = levels.iter().map(|l| l.iter().map(|&v| v as f32).collect()).collect();
            let feats: Vec<TensorRef<f32>> = levels.iter().zip(&shapes).map(|(d, s)| TensorRef::new(d, s)).collect();
            let fresh = crit.value_and_grad(&feats, &batch).unwrap();
            assert!(fresh.grads.iter().flatten().any(|&g| g != 0.0));
            let mut bufs: Vec<Vec<f32>> = levels
                .iter()
                .map(|l| (0..l.len()).map(|i| if i % 3 == 0 { f32::NAN } else { 1e30 }).collect())
                .collect();
            let mut slices: Vec<&mut [f32]> = bufs.iter_mut().map(|v| v.as_mut_slice()).collect();
            let (loss, items) = crit.value_and_grad_overwrite(&feats, &batch, &mut slices).unwrap();
            assert_eq!((loss, items), (fresh.loss.clone(), fresh.loss_items.clone()));
            for (l, (got, want)) in bufs.iter().zip(&fresh.grads).enumerate() {
                assert!(got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits()), "reg_max {reg_max}, level {l}");
            }
            // The class window of a wider head (channels after it, as TVP's unused prompts): cleared too.
            let head = Head::validate_channels(&feats, &[8.0, 16.0], reg_max, c, 4 * reg_max, nc - 1).unwrap();
            let mut dirty: Vec<Vec<f32>> = levels.iter().map(|l| vec![f32::NAN; l.len()]).collect();
            let mut slices: Vec<&mut [f32]> = dirty.iter_mut().map(|v| v.as_mut_slice()).collect();
            clear_outside_class_window(&head, &mut slices);
            for (l, g) in dirty.iter().enumerate() {
                let hw = head.grid.levels[l].len();
                for (i, v) in g.iter().enumerate() {
                    let ch = (i / hw) % c;
                    assert_eq!(v.is_nan(), (4 * reg_max..c - 1).contains(&ch), "level {l}, element {i} (channel {ch})");
                }
            }
        }
    }

    /// Central differences in f64 of the loss with the assignment held fixed, against the analytic
    /// gradient, for every logit of a small case with overlapping boxes (reg_max 16 and 1).
    #[test]
    fn gradient_matches_finite_differences_with_frozen_assignment() {
        for reg_max in [16usize, 1] {
            let nc = 3;
            let strides = vec![8.0, 16.0];
            let cfg = DetectionConfig { nc, reg_max, strides: strides.clone(), hyp: Hyp::default(), tal_topk: 4 };
            let crit = V8DetectionLoss::new(cfg).unwrap();
            let c = 4 * reg_max + nc;
            let shapes = [vec![2usize, c, 6, 8], vec![2, c, 3, 4]];
            let mut rng = Lcg(7 + reg_max as u64);
            let mut levels = random_levels(&mut rng, &shapes, reg_max, 1.0);
            let bi = [0.0, 0.0, 1.0];
            let cls = [1.0, 2.0, 0.0];
            let boxes = [0.4, 0.5, 0.5, 0.6, 0.5, 0.45, 0.4, 0.5, 0.3, 0.6, 0.35, 0.5];
            let (s1, s2, s4) = ([3usize], [3usize, 1usize], [3usize, 4usize]);
            let batch = DetBatch {
                batch_idx: TensorRef::new(&bi, &s1),
                cls: TensorRef::new(&cls, &s2),
                bboxes: TensorRef::new(&boxes, &s4),
            };
            let feats: Vec<TensorRef<f64>> = levels.iter().zip(&shapes).map(|(d, s)| TensorRef::new(d, s)).collect();
            let head = Head::validate(&feats, &strides, reg_max, nc).unwrap();
            let asg = Assigned::new(head, &batch, 4).unwrap();
            assert!(asg.num_positives() >= 6, "the case must have positives");
            let (head, gt, positives) = (&asg.head, &asg.gt, &asg.positives);
            let mut grads = zero_grads(&head.levels);
            {
                let mut slices: Vec<&mut [f64]> = grads.iter_mut().map(|v| v.as_mut_slice()).collect();
                crit.losses_with_scales(&asg, &mut slices, None, false);
            }
            // α of every positive at the base point (the test's mirror of autograd's no_grad α).
            let alphas: Vec<Vec<f64>> = (0..2)
                .map(|b| {
                    let mut preds = ImagePreds::new(head, b, false);
                    positives[b]
                        .iter()
                        .map(|p| {
                            let pos = head.grid.locate(p.anchor);
                            let st = head.grid.levels[pos.level].stride;
                            let tb = gt.boxes[b * gt.max_labels + p.gt].map(|v| v / st);
                            ciou_alpha(preds.grid_box(pos), tb, false, IOU_EPS)
                        })
                        .collect()
                })
                .collect();
            let total = |lv: &[Vec<f64>]| -> f64 {
                let feats: Vec<TensorRef<f64>> = lv.iter().zip(&shapes).map(|(d, s)| TensorRef::new(d, s)).collect();
                let head = Head::validate(&feats, &strides, reg_max, nc).unwrap();
                let moved = Assigned {
                    head,
                    labels: asg.labels.clone(),
                    gt: gt.clone(),
                    positives: positives.clone(),
                    s: asg.s,
                };
                crit.losses_with_scales(&moved, &mut [], Some(&alphas), false).0.iter().sum()
            };
            let h = 1e-6;
            for l in 0..levels.len() {
                for i in 0..levels[l].len() {
                    let orig = levels[l][i];
                    levels[l][i] = orig + h;
                    let fp = total(&levels);
                    levels[l][i] = orig - h;
                    let fm = total(&levels);
                    levels[l][i] = orig;
                    let fd = (fp - fm) / (2.0 * h);
                    let an = grads[l][i];
                    assert!(
                        (fd - an).abs() < 1e-6 * (1.0 + fd.abs()),
                        "reg_max {reg_max} level {l} elem {i}: fd {fd} analytic {an}"
                    );
                }
            }
        }
    }
}
