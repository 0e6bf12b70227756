/**
 * Parity with the reference (ultralytics 8.3.117 under PyTorch, fp32) for every building block and helper:
 * VarifocalLoss, FocalLoss, DFLoss, BboxLoss, RotatedBboxLoss, KeypointLoss, TaskAlignedAssigner,
 * RotatedTaskAlignedAssigner, make_anchors, dist2bbox, bbox2dist, dist2rbox, bbox_iou, probiou. Values through the
 * plain form, values and gradients through the gradient form; inputs must come back unmodified.
 * Tolerance: see `closeness` (relative 1e-4 with an absolute floor of 1e-5 of the tensor's largest magnitude).
 */
import test, { type ExecutionContext } from 'ava';
import {
  BboxLoss,
  DFLoss,
  FocalLoss,
  KeypointLoss,
  OKS_SIGMA,
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
  probiouWithGrad,
  type Tensor,
} from 'yolo-loss';

import { closeness, f32, fixturesToCheck, sameBits, snapshot, type Fixture } from './helpers/fixtures.js';

function cfg<T>(fx: Fixture): T {
  return fx.config as T;
}

/** Runs `body` for every fixture of `kind`, after checking there is at least one; checks the inputs (every
 * `in.*` tensor) are not modified. */
function forKind(kind: string, body: (t: ExecutionContext, fx: Fixture, input: (name: string) => Tensor) => void): void {
  for (const fx of fixturesToCheck(kind)) {
    test(`${kind} ${fx.name}`, (t) => {
      const inputs = new Map<string, Tensor>();
      const input = (name: string): Tensor => {
        let x = inputs.get(name);
        if (x === undefined) {
          x = f32(fx, name);
          inputs.set(name, x);
        }
        return x;
      };
      for (const name of fx.tensors.keys()) if (name.startsWith('in.')) input(name);
      const copies = snapshot([...inputs.values()]);
      body(t, fx, input);
      [...inputs.values()].forEach((x, i) => t.true(sameBits(x.data, copies[i]!.data), 'an input was modified'));
    });
  }
}

function close(t: ExecutionContext, got: Tensor | number, fx: Fixture, name: string): void {
  const want = f32(fx, name);
  if (typeof got === 'number') {
    t.is(closeness([got], want.data), null, name);
    return;
  }
  t.deepEqual(got.shape, want.shape, `${name}: shape`);
  t.true(got.data instanceof Float32Array, `${name}: a Float32Array`);
  t.is(closeness(got.data, want.data), null, name);
}

forKind('VarifocalLoss', (t, fx, input) => {
  const { gamma, alpha } = cfg<{ gamma: number; alpha: number }>(fx);
  const vfl = new VarifocalLoss(gamma, alpha);
  const args = [input('in.pred_score'), input('in.gt_score'), input('in.label')] as const;
  close(t, vfl.forward(...args), fx, 'out.loss');
  const r = vfl.forwardWithGrad(...args);
  close(t, r.value, fx, 'out.loss');
  close(t, r.grads.predScore, fx, 'grad.pred_score');
  close(t, r.grads.gtScore, fx, 'grad.gt_score');
});

forKind('FocalLoss', (t, fx, input) => {
  const { gamma, alpha } = cfg<{ gamma: number; alpha: number }>(fx);
  const fl = new FocalLoss(gamma, alpha);
  close(t, fl.forward(input('in.pred'), input('in.label')), fx, 'out.loss');
  const r = fl.forwardWithGrad(input('in.pred'), input('in.label'));
  close(t, r.value, fx, 'out.loss');
  close(t, r.grads.pred, fx, 'grad.pred');
});

forKind('DFLoss', (t, fx, input) => {
  const dfl = new DFLoss(cfg<{ reg_max: number }>(fx).reg_max);
  close(t, dfl.call(input('in.pred_dist'), input('in.target')), fx, 'out.loss');
  const r = dfl.callWithGrad(input('in.pred_dist'), input('in.target'), input('in.upstream'));
  close(t, r.value, fx, 'out.loss');
  close(t, r.grads.predDist, fx, 'grad.pred_dist');
});

function bboxLossCase(t: ExecutionContext, fx: Fixture, input: (name: string) => Tensor, loss: BboxLoss): void {
  const args = [
    input('in.pred_dist'),
    input('in.pred_bboxes'),
    input('in.anchor_points'),
    input('in.target_bboxes'),
    input('in.target_scores'),
    input('in.target_scores_sum'),
    input('in.fg_mask'),
  ] as const;
  const [liou, ldfl] = loss.forward(...args);
  close(t, liou, fx, 'out.loss_iou');
  close(t, ldfl, fx, 'out.loss_dfl');
  // The divisor may also be given as a plain number.
  const r = loss.forwardWithGrad(args[0], args[1], args[2], args[3], args[4], args[5].data[0]!, args[6]);
  close(t, r.value[0], fx, 'out.loss_iou');
  close(t, r.value[1], fx, 'out.loss_dfl');
  close(t, r.grads.predDist, fx, 'grad.pred_dist');
  close(t, r.grads.predBboxes, fx, 'grad.pred_bboxes');
}

forKind('BboxLoss', (t, fx, input) => {
  const loss = new BboxLoss(cfg<{ reg_max: number }>(fx).reg_max);
  t.is(loss.dfl_loss === null, loss.reg_max === 1);
  bboxLossCase(t, fx, input, loss);
});

forKind('RotatedBboxLoss', (t, fx, input) => {
  bboxLossCase(t, fx, input, new RotatedBboxLoss(cfg<{ reg_max: number }>(fx).reg_max));
});

forKind('KeypointLoss', (t, fx, input) => {
  // The sigmas as stored: float64 COCO sigmas in kpt_coco17 (the reference then computes in float64).
  const raw = fx.tensors.get('in.sigmas')!.data;
  const kl = new KeypointLoss(raw instanceof Float64Array ? raw : Float32Array.from(raw));
  if (raw instanceof Float64Array && raw.length === 17) t.deepEqual(kl.sigmas, Float64Array.from(OKS_SIGMA));
  const args = [input('in.pred_kpts'), input('in.gt_kpts'), input('in.kpt_mask'), input('in.area')] as const;
  close(t, kl.forward(...args), fx, 'out.loss');
  const r = kl.forwardWithGrad(...args);
  close(t, r.value, fx, 'out.loss');
  close(t, r.grads.predKpts, fx, 'grad.pred_kpts');
});

function assignerCase(t: ExecutionContext, fx: Fixture, input: (name: string) => Tensor, assigner: TaskAlignedAssigner): void {
  const out = assigner.forward(
    input('in.pd_scores'),
    input('in.pd_bboxes'),
    input('in.anc_points'),
    input('in.gt_labels'),
    input('in.gt_bboxes'),
    input('in.mask_gt'),
  );
  const [labels, bboxes, scores, fg, gtIdx] = out;
  // Integer and boolean outputs must match exactly.
  for (const [got, name] of [[labels, 'out.target_labels'], [fg, 'out.fg_mask'], [gtIdx, 'out.target_gt_idx']] as const) {
    const want = f32(fx, name);
    t.deepEqual(got.shape, want.shape, `${name}: shape`);
    t.deepEqual(Array.from(got.data), Array.from(want.data), name);
  }
  close(t, bboxes, fx, 'out.target_bboxes');
  close(t, scores, fx, 'out.target_scores');
}

type AssignerConfig = { topk: number; num_classes: number; alpha: number; beta: number; eps: number };

forKind('TaskAlignedAssigner', (t, fx, input) => {
  assignerCase(t, fx, input, new TaskAlignedAssigner(cfg<AssignerConfig>(fx)));
});

forKind('RotatedTaskAlignedAssigner', (t, fx, input) => {
  assignerCase(t, fx, input, new RotatedTaskAlignedAssigner(cfg<AssignerConfig>(fx)));
});

forKind('make_anchors', (t, fx) => {
  const c = cfg<{ strides: number[]; grid_cell_offset: number; shapes: [number, number][] }>(fx);
  // From level sizes and from level tensors (only their shapes are read).
  const feats = c.shapes.map(([h, w]) => ({ data: new Float32Array(2 * 3 * h * w), shape: [2, 3, h, w] }));
  for (const src of [c.shapes, feats]) {
    const [points, strides] = make_anchors(src, c.strides, c.grid_cell_offset);
    close(t, points, fx, 'out.anchor_points');
    close(t, strides, fx, 'out.stride_tensor');
  }
  if (c.grid_cell_offset === 0.5) close(t, make_anchors(c.shapes, c.strides)[0], fx, 'out.anchor_points');
});

forKind('dist2bbox', (t, fx, input) => {
  const { xywh } = cfg<{ xywh: boolean }>(fx);
  close(t, dist2bbox(input('in.distance'), input('in.anchor_points'), xywh), fx, 'out.boxes');
  if (xywh) close(t, dist2bbox(input('in.distance'), input('in.anchor_points')), fx, 'out.boxes');
});

forKind('bbox2dist', (t, fx, input) => {
  close(t, bbox2dist(input('in.anchor_points'), input('in.bbox'), cfg<{ reg_max: number }>(fx).reg_max), fx, 'out.dist');
});

forKind('dist2rbox', (t, fx, input) => {
  const args = [input('in.pred_dist'), input('in.pred_angle'), input('in.anchor_points')] as const;
  close(t, dist2rbox(...args), fx, 'out.boxes');
  const r = dist2rboxWithGrad(...args, input('in.upstream'));
  close(t, r.value, fx, 'out.boxes');
  close(t, r.grads.predDist, fx, 'grad.pred_dist');
  close(t, r.grads.predAngle, fx, 'grad.pred_angle');
});

forKind('bbox_iou', (t, fx, input) => {
  const c = cfg<{ xywh: boolean; GIoU: boolean; DIoU: boolean; CIoU: boolean; eps: number }>(fx);
  const options = { xywh: c.xywh, GIoU: c.GIoU, DIoU: c.DIoU, CIoU: c.CIoU, eps: c.eps };
  close(t, bbox_iou(input('in.box1'), input('in.box2'), options), fx, 'out.iou');
  const r = bboxIouWithGrad(input('in.box1'), input('in.box2'), options, input('in.upstream'));
  close(t, r.value, fx, 'out.iou');
  // grad.* is autograd of the installed torch (the intersection clamp blocks gradient at exactly 0).
  close(t, r.grads.box1, fx, 'grad.box1');
  close(t, r.grads.box2, fx, 'grad.box2');
});

forKind('probiou', (t, fx, input) => {
  const c = cfg<{ CIoU: boolean; eps: number }>(fx);
  close(t, probiou(input('in.obb1'), input('in.obb2'), c), fx, 'out.iou');
  const r = probiouWithGrad(input('in.obb1'), input('in.obb2'), c, input('in.upstream'));
  close(t, r.value, fx, 'out.iou');
  close(t, r.grads.obb1, fx, 'grad.obb1');
  close(t, r.grads.obb2, fx, 'grad.obb2');
});
