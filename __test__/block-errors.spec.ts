/**
 * Error codes of the building blocks and helpers: shapes that do not fit, non-finite values, masks that are not
 * 0/1, unusable configurations. Each message names the argument, what was expected and what was given; inputs are
 * never modified.
 */
import test from 'ava';
import {
  BboxLoss,
  DFLoss,
  FocalLoss,
  KeypointLoss,
  RotatedBboxLoss,
  RotatedTaskAlignedAssigner,
  TaskAlignedAssigner,
  VarifocalLoss,
  bbox2dist,
  bboxIouWithGrad,
  bbox_iou,
  dist2bbox,
  dist2rbox,
  dist2rboxWithGrad,
  make_anchors,
  probiou,
  v8DetectionLoss,
} from 'yolo-loss';

import { expectCode, withValue } from './helpers/errors.js';
import { tensor } from './helpers/synthetic.js';

test('VarifocalLoss / FocalLoss', (t) => {
  const p = tensor([2, 3, 4], (i) => i / 10);
  const l = tensor([2, 3, 4]);
  const vfl = new VarifocalLoss();
  expectCode(t, () => vfl.forward(p, l, tensor([2, 4, 3])), 'ERR_SHAPE_MISMATCH', /label: expected shape \[2, 3, 4\]/, [p, l]);
  expectCode(t, () => vfl.forwardWithGrad(p, tensor([2, 3]), l), 'ERR_SHAPE_MISMATCH', /gt_score/);
  expectCode(t, () => vfl.forward(withValue(p, 3, NaN), l, l), 'ERR_NON_FINITE', /pred_score/);
  expectCode(t, () => vfl.forward(p, l, withValue(l, 0, Infinity)), 'ERR_NON_FINITE', /label/);
  expectCode(t, () => vfl.forward(tensor([5]), tensor([5]), tensor([5])), 'ERR_SHAPE_MISMATCH', /pred_score: expected a tensor of rank ≥ 2/);
  expectCode(t, () => new VarifocalLoss(NaN), 'ERR_INVALID_ARGUMENT', /gamma/);
  const fl = new FocalLoss();
  expectCode(t, () => fl.forward(p, tensor([2, 3, 5])), 'ERR_SHAPE_MISMATCH', /label/);
  expectCode(t, () => fl.forwardWithGrad(withValue(p, 0, -Infinity), l), 'ERR_NON_FINITE', /pred/);
  expectCode(t, () => fl.forward(p, { data: [0, 1] as unknown as Float32Array, shape: [2] }), 'ERR_INVALID_ARGUMENT', /label\.data: expected a Float32Array/);
  expectCode(t, () => new FocalLoss(1.5, '0.25' as unknown as number), 'ERR_INVALID_ARGUMENT', /alpha/);
});

test('DFLoss', (t) => {
  const dfl = new DFLoss(8);
  const pd = tensor([12, 8]);
  const target = tensor([3, 4], () => 2.5);
  expectCode(t, () => new DFLoss(1), 'ERR_INVALID_ARGUMENT', /reg_max: expected at least 2/);
  expectCode(t, () => new DFLoss(0), 'ERR_INVALID_ARGUMENT', /reg_max/);
  expectCode(t, () => dfl.call(tensor([12, 7]), target), 'ERR_SHAPE_MISMATCH', /pred_dist: expected shape \[12, 8\]/);
  expectCode(t, () => dfl.call(pd, tensor([3, 3])), 'ERR_SHAPE_MISMATCH', /target: expected shape \[n, 4\]/);
  expectCode(t, () => dfl.call(pd, withValue(target, 2, NaN)), 'ERR_NON_FINITE', /target/);
  expectCode(t, () => dfl.callWithGrad(pd, target, tensor([3])), 'ERR_SHAPE_MISMATCH', /upstream: expected shape \[3, 1\]/);
  expectCode(t, () => dfl.callWithGrad(pd, target, withValue(tensor([3, 1]), 1, NaN)), 'ERR_NON_FINITE', /upstream/);
});

test('BboxLoss / RotatedBboxLoss', (t) => {
  const [B, A] = [1, 3];
  const args = (w: number) =>
    [tensor([B, A, 64]), tensor([B, A, w], (i) => [1, 1, 3, 3, 0][i % w]!), tensor([A, 2], () => 2), tensor([B, A, w], (i) => [1, 1, 3, 3, 0][i % w]!), tensor([B, A, 2], () => 0.5), 1, tensor([B, A], () => 1)] as const;
  const a = args(4);
  const bl = new BboxLoss();
  t.true(Number.isFinite(bl.forward(...a)[0]), 'the base case runs');
  expectCode(t, () => bl.forward(a[0], a[1], a[2], a[3], a[4], a[5], withValue(a[6], 1, 0.5)), 'ERR_INVALID_ARGUMENT', /fg_mask: expected 0 or 1.*got 0\.5 at flat index 1/);
  expectCode(t, () => bl.forward(a[0], a[1], a[2], a[3], a[4], a[5], withValue(a[6], 1, NaN)), 'ERR_NON_FINITE', /fg_mask/);
  expectCode(t, () => bl.forward(a[0], a[1], a[2], a[3], a[4], a[5], tensor([B, A + 1])), 'ERR_SHAPE_MISMATCH', /fg_mask: expected 3 values/);
  expectCode(t, () => bl.forward(a[0], a[1], a[2], a[3], a[4], 0, a[6]), 'ERR_INVALID_ARGUMENT', /targetScoresSum: expected a positive divisor/);
  expectCode(t, () => bl.forward(a[0], a[1], a[2], a[3], a[4], NaN, a[6]), 'ERR_NON_FINITE', /targetScoresSum/);
  expectCode(t, () => bl.forward(a[0], a[1], a[2], a[3], a[4], tensor([2]), a[6]), 'ERR_SHAPE_MISMATCH', /targetScoresSum: expected a number or a 1-element tensor/);
  expectCode(t, () => bl.forward(a[0], a[1], a[2], a[3], a[4], '1' as unknown as number, a[6]), 'ERR_INVALID_ARGUMENT', /targetScoresSum/);
  expectCode(t, () => bl.forward(a[0], tensor([B, A, 5]), a[2], a[3], a[4], a[5], a[6]), 'ERR_SHAPE_MISMATCH', /pred_bboxes/);
  expectCode(t, () => bl.forward(a[0], a[1], tensor([A + 1, 2]), a[3], a[4], a[5], a[6]), 'ERR_SHAPE_MISMATCH', /anchor_points/);
  expectCode(t, () => bl.forwardWithGrad(a[0], withValue(a[1], 0, Infinity), a[2], a[3], a[4], a[5], a[6]), 'ERR_NON_FINITE', /pred_bboxes/);
  const r = args(5);
  const rbl = new RotatedBboxLoss(16);
  t.true(Number.isFinite(rbl.forward(...r)[0]), 'the rotated base case runs');
  expectCode(t, () => rbl.forward(...a), 'ERR_SHAPE_MISMATCH', /pred_bboxes: expected shape \[1, 3, 5\]/);
  expectCode(t, () => rbl.forward(r[0], r[1], r[2], withValue(r[3], 4, NaN), r[4], r[5], r[6]), 'ERR_NON_FINITE', /target_bboxes/);
});

test('KeypointLoss', (t) => {
  expectCode(t, () => new KeypointLoss([]), 'ERR_INVALID_ARGUMENT', /sigmas: expected one sigma per keypoint/);
  expectCode(t, () => new KeypointLoss([0.1, -1]), 'ERR_INVALID_ARGUMENT', /sigmas\[1\]: expected a positive finite number/);
  expectCode(t, () => new KeypointLoss([0.1, NaN]), 'ERR_INVALID_ARGUMENT', /sigmas\[1\]/);
  expectCode(t, () => new KeypointLoss('0.1' as unknown as number[]), 'ERR_INVALID_ARGUMENT', /sigmas: expected an array of numbers/);
  const kl = new KeypointLoss([0.1, 0.2, 0.3]);
  const k = tensor([2, 3, 3], () => 1);
  const m = tensor([2, 3], () => 1);
  const area = tensor([2, 1], () => 4);
  t.true(Number.isFinite(kl.forward(k, k, m, area)), 'the base case runs');
  expectCode(t, () => kl.forward(tensor([2, 4, 3]), tensor([2, 4, 3]), tensor([2, 4]), area), 'ERR_SHAPE_MISMATCH', /sigmas: expected 4 values/);
  expectCode(t, () => kl.forward(k, tensor([2, 2, 3]), m, area), 'ERR_SHAPE_MISMATCH', /gt_kpts: expected shape \[2, 3, D ≥ 2\]/);
  expectCode(t, () => kl.forward(k, k, tensor([3, 2]), area), 'ERR_SHAPE_MISMATCH', /kpt_mask: expected shape \[2, 3\]/);
  expectCode(t, () => kl.forward(tensor([2, 3, 1]), k, m, area), 'ERR_SHAPE_MISMATCH', /pred_kpts: expected D ≥ 2/);
  expectCode(t, () => kl.forwardWithGrad(k, k, m, withValue(area, 1, NaN)), 'ERR_NON_FINITE', /area/);
});

test('TaskAlignedAssigner / RotatedTaskAlignedAssigner', (t) => {
  expectCode(t, () => new TaskAlignedAssigner({ topk: 0 }), 'ERR_INVALID_ARGUMENT', /topk/);
  expectCode(t, () => new TaskAlignedAssigner({ num_classes: 2.5 }), 'ERR_INVALID_ARGUMENT', /num_classes/);
  expectCode(t, () => new TaskAlignedAssigner({ alpha: NaN }), 'ERR_INVALID_ARGUMENT', /alpha/);
  expectCode(t, () => new RotatedTaskAlignedAssigner('x' as unknown as object), 'ERR_INVALID_ARGUMENT', /options: expected an object/);
  const tal = new TaskAlignedAssigner({ topk: 2, num_classes: 2 });
  const [B, A, M] = [1, 4, 2];
  const inputs = [tensor([B, A, 2], () => 0.5), tensor([B, A, 4], (i) => [0, 0, 8, 8][i % 4]!), tensor([A, 2], (i) => 1 + i), tensor([B, M, 1]), tensor([B, M, 4], (i) => [0, 0, 8, 8][i % 4]!), tensor([B, M, 1], () => 1)] as const;
  t.is(tal.forward(...inputs).length, 5, 'the base case runs');
  const [s, p, a, l, g, m] = inputs;
  expectCode(t, () => tal.forward(tensor([B, A, 3]), p, a, l, g, m), 'ERR_SHAPE_MISMATCH', /pd_scores: expected 2 classes/, [...inputs]);
  expectCode(t, () => tal.forward(s, p, a, withValue(l, 1, 2), g, m), 'ERR_LABEL_OUT_OF_RANGE', /gt_labels\[0, 1\]: expected a class id in \[0, 2\)/);
  expectCode(t, () => tal.forward(s, withValue(p, 2, NaN), a, l, g, m), 'ERR_NON_FINITE', /pd_bboxes/);
  expectCode(t, () => tal.forward(s, p, a, l, g, withValue(m, 0, Infinity)), 'ERR_NON_FINITE', /mask_gt/);
  expectCode(t, () => tal.forward(s, p, tensor([A, 3]), l, g, m), 'ERR_SHAPE_MISMATCH', /anc_points/);
  expectCode(t, () => tal.forward(s, p, a, tensor([B, M]), g, m), 'ERR_SHAPE_MISMATCH', /gt_labels/);
  expectCode(t, () => new TaskAlignedAssigner({ topk: 5, num_classes: 2 }).forward(s, p, a, l, g, m), 'ERR_SHAPE_MISMATCH', /at least topk = 5 anchors, got 4/);
  const rtal = new RotatedTaskAlignedAssigner({ topk: 2, num_classes: 2 });
  expectCode(t, () => rtal.forward(s, p, a, l, g, m), 'ERR_SHAPE_MISMATCH', /pd_bboxes: expected shape \[1, 4, 5\]/);
});

test('make_anchors', (t) => {
  expectCode(t, () => make_anchors([[2, 2], [1, 1]], [8]), 'ERR_SHAPE_MISMATCH', /strides: expected one stride per level \(2 levels\), got 1/);
  expectCode(t, () => make_anchors('feats' as unknown as [number, number][], [8]), 'ERR_INVALID_ARGUMENT', /feats: expected an array/);
  expectCode(t, () => make_anchors([[2]] as unknown as [number, number][], [8]), 'ERR_SHAPE_MISMATCH', /feats\[0\]: expected a level size \[H, W\]/);
  expectCode(t, () => make_anchors([tensor([1, 2, 2])], [8]), 'ERR_SHAPE_MISMATCH', /feats\[0\]: expected a rank-4 tensor/);
  expectCode(t, () => make_anchors([[2, 2]], [NaN]), 'ERR_INVALID_ARGUMENT', /strides\[0\]/);
  expectCode(t, () => make_anchors([[2, 2]], [8], NaN), 'ERR_INVALID_ARGUMENT', /grid_cell_offset/);
  expectCode(t, () => make_anchors([[2.5, 2]], [8]), 'ERR_INVALID_ARGUMENT', /feats\[0\] height/);
  // Sizes decided by numbers alone are bounded (a failed allocation would abort the process).
  expectCode(t, () => make_anchors([[1e9, 1e9]], [8]), 'ERR_INVALID_ARGUMENT', /feats: expected at most \d+ anchors/);
  const det = new v8DetectionLoss({ nc: 2, stride: [8] });
  const targets = { data: Float32Array.from([0, 0, 0.5, 0.5, 0.1, 0.1]), shape: [1, 6] };
  expectCode(t, () => det.preprocess(targets, 1e12, [8, 8, 8, 8]), 'ERR_INVALID_ARGUMENT', /batchSize: expected at most/);
});

test('dist2bbox, bbox2dist, dist2rbox', (t) => {
  const d = tensor([3, 4], () => 1);
  const a = tensor([3, 2], () => 2);
  expectCode(t, () => dist2bbox(tensor([3, 3]), a), 'ERR_SHAPE_MISMATCH', /distance: expected shape \[\.\.\., 4\]/);
  expectCode(t, () => dist2bbox(d, tensor([2, 2])), 'ERR_SHAPE_MISMATCH', /anchor_points: expected leading dimensions that broadcast with distance's \[3\]/);
  expectCode(t, () => dist2bbox(withValue(d, 0, NaN), a), 'ERR_NON_FINITE', /distance/);
  expectCode(t, () => dist2bbox(d, a, 'yes' as unknown as boolean), 'ERR_INVALID_ARGUMENT', /xywh/);
  expectCode(t, () => bbox2dist(a, d, NaN), 'ERR_INVALID_ARGUMENT', /reg_max/);
  expectCode(t, () => bbox2dist(a, tensor([3, 5]), 15), 'ERR_SHAPE_MISMATCH', /bbox/);
  const th = tensor([3, 1]);
  expectCode(t, () => dist2rbox(d, tensor([3, 2]), a), 'ERR_SHAPE_MISMATCH', /pred_angle: expected shape \[3, 1\]/);
  expectCode(t, () => dist2rbox(d, th, tensor([2, 2])), 'ERR_SHAPE_MISMATCH', /anchor_points/);
  expectCode(t, () => dist2rbox(d, withValue(th, 2, NaN), a), 'ERR_NON_FINITE', /pred_angle/);
  expectCode(t, () => dist2rboxWithGrad(d, th, a, tensor([3, 5])), 'ERR_SHAPE_MISMATCH', /upstream: expected shape \[3, 4\]/);
});

test('bbox_iou, probiou', (t) => {
  const b1 = tensor([2, 4], () => 1);
  expectCode(t, () => bbox_iou(b1, tensor([3, 4])), 'ERR_SHAPE_MISMATCH', /box2: expected leading dimensions that broadcast with box1's \[2\], got shape \[3, 4\]/);
  expectCode(t, () => bbox_iou(tensor([2, 5]), b1), 'ERR_SHAPE_MISMATCH', /box1: expected shape \[\.\.\., 4\]/);
  expectCode(t, () => bbox_iou(b1, withValue(b1, 3, NaN)), 'ERR_NON_FINITE', /box2/);
  expectCode(t, () => bbox_iou(b1, b1, { CIoU: 1 as unknown as boolean }), 'ERR_INVALID_ARGUMENT', /options\.CIoU/);
  expectCode(t, () => bbox_iou(b1, b1, { eps: NaN }), 'ERR_INVALID_ARGUMENT', /options\.eps/);
  expectCode(t, () => bboxIouWithGrad(b1, b1, {}, tensor([2])), 'ERR_SHAPE_MISMATCH', /upstream: expected shape \[2, 1\]/);
  expectCode(t, () => bbox_iou(tensor([1 << 14, 1, 4]), tensor([1 << 14, 4])), 'ERR_INVALID_ARGUMENT', /box1, box2: expected a broadcast result of at most/);
  const o = tensor([2, 5], () => 1);
  expectCode(t, () => probiou(o, tensor([2, 4])), 'ERR_SHAPE_MISMATCH', /obb2: expected shape \[\.\.\., 5\]/);
  expectCode(t, () => probiou(withValue(o, 4, Infinity), o), 'ERR_NON_FINITE', /obb1/);
  expectCode(t, () => probiou(o, o, 'CIoU' as unknown as object), 'ERR_INVALID_ARGUMENT', /options: expected an object/);
  t.deepEqual(probiou(o, o, null as unknown as object).shape, [2, 1], 'null options are the defaults');
});
