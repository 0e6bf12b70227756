/**
 * The building blocks of the losses, with Ultralytics' constructors and methods (`forward`, `call`) plus a
 * gradient form of every differentiable one (`forwardWithGrad`, `callWithGrad`, `bboxIouWithGrad`,
 * `probiouWithGrad`, `dist2rboxWithGrad`) that returns `{ value, grads }`: `value` is what the plain form returns,
 * `grads` holds one tensor per differentiable input, shaped like it, named like the parameter.
 *
 * For a scalar value the gradient is that of the value. For a tensor value (`DFLoss`, `bbox_iou`, `probiou`,
 * `dist2rbox`) it is that of `sum(value · upstream)`, `upstream` an optional tensor shaped like the value (ones
 * when omitted). For `BboxLoss`/`RotatedBboxLoss` it is that of `lossIou + lossDfl`.
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */

import { types as utilTypes } from 'node:util';

import type * as Native from '../native/binding';
import {
  callNative,
  checkBoolean,
  checkFeats,
  checkFiniteNumber,
  checkNumbers,
  checkOptionalTensor,
  checkPositiveInt,
  checkTensor,
  describe,
  isObject,
  lossError,
  native,
  type Tensor,
} from './common';

/** The result of a gradient form. */
export interface WithGrad<V, G> {
  value: V;
  grads: G;
}

function scalar(v: Native.NativeValueGrads): number {
  return v.value.data[0]!;
}

function shaped(data: Float32Array | undefined, like: Native.NativeTensor): Tensor {
  if (data === undefined) throw lossError('ERR_INTERNAL', 'yolo-loss: the native binding returned too few gradients');
  return { data, shape: [...like.shape] };
}

/** Tensor arguments checked in order, each named (in errors too) after its key. */
type Checked<K extends string> = Record<K, Native.NativeTensor>;

function tensors<K extends string>(named: Record<K, unknown>): Checked<K> {
  const out = {} as Checked<K>;
  for (const key of Object.keys(named) as K[]) out[key] = checkTensor(key, named[key]);
  return out;
}

/** The checked inputs of a native call and its result. */
interface Run<K extends string> {
  t: Checked<K>;
  out: Native.NativeValueGrads;
}

/** The gradients of a gradient form: those of the binding in order, each shaped like and named after the input
 * it belongs to. */
function gradsOf<K extends string>(out: Native.NativeValueGrads, like: Checked<K>): Record<K, Tensor> {
  const grads = {} as Record<K, Tensor>;
  (Object.keys(like) as K[]).forEach((key, i) => {
    grads[key] = shaped(out.grads[i], like[key]);
  });
  return grads;
}

function checkOptions(name: string, options: unknown): Record<string, unknown> {
  if (options === undefined || options === null) return {};
  if (!isObject(options) || Array.isArray(options)) {
    throw lossError('ERR_INVALID_ARGUMENT', `${name}: expected an object, got ${describe(options)}`);
  }
  return options;
}

function optionalNumber(name: string, v: unknown, dflt: number): number {
  return v === undefined ? dflt : checkFiniteNumber(name, v);
}

function optionalBoolean(name: string, v: unknown, dflt: boolean): boolean {
  return v === undefined ? dflt : checkBoolean(name, v);
}

// ------------------------------------------------------------------------------------------------------------
// VarifocalLoss, FocalLoss

/** `VarifocalLoss(gamma=2.0, alpha=0.75)` (docs/spec.md §8.1; RT-DETR's, not used by the YOLO losses). */
export class VarifocalLoss {
  readonly gamma: number;
  readonly alpha: number;

  constructor(gamma = 2.0, alpha = 0.75) {
    this.gamma = checkFiniteNumber('gamma', gamma);
    this.alpha = checkFiniteNumber('alpha', alpha);
  }

  /**
   * `forward(pred_score, gt_score, label)`: Σ over every axis but 1 of the mean over axis 1 of
   * BCE(pred, gt_score) · (α·σ(pred)^γ·(1 − label) + gt_score·label).
   * @param predScore logits `[b, n, c]` (any shape of rank ≥ 2); @param gtScore, @param label the same shape.
   */
  forward(predScore: Tensor, gtScore: Tensor, label: Tensor): number {
    return scalar(this.#run(predScore, gtScore, label, false).out);
  }

  /** `forward` and its gradients with respect to `predScore` and `gtScore` (the weight is not detached). */
  forwardWithGrad(predScore: Tensor, gtScore: Tensor, label: Tensor): WithGrad<number, { predScore: Tensor; gtScore: Tensor }> {
    const { t, out } = this.#run(predScore, gtScore, label, true);
    return { value: scalar(out), grads: gradsOf(out, { predScore: t.predScore, gtScore: t.gtScore }) };
  }

  #run(predScore: Tensor, gtScore: Tensor, label: Tensor, wantGrad: boolean): Run<'predScore' | 'gtScore' | 'label'> {
    const t = tensors({ predScore, gtScore, label });
    return { t, out: callNative(() => native().varifocalLossNative(t.predScore, t.gtScore, t.label, this.gamma, this.alpha, wantGrad)) };
  }
}

/** `FocalLoss(gamma=1.5, alpha=0.25)` (docs/spec.md §8.2; not used by the YOLO losses). `alpha ≤ 0` disables the α factor. */
export class FocalLoss {
  readonly gamma: number;
  readonly alpha: number;

  constructor(gamma = 1.5, alpha = 0.25) {
    this.gamma = checkFiniteNumber('gamma', gamma);
    this.alpha = checkFiniteNumber('alpha', alpha);
  }

  /** `forward(pred, label)`: the focal BCE, mean over axis 1, summed over the rest. @param pred logits, rank ≥ 2. */
  forward(pred: Tensor, label: Tensor): number {
    return scalar(this.#run(pred, label, false).out);
  }

  /** `forward` and its gradient with respect to `pred` (the modulating factor is not detached). */
  forwardWithGrad(pred: Tensor, label: Tensor): WithGrad<number, { pred: Tensor }> {
    const { t, out } = this.#run(pred, label, true);
    return { value: scalar(out), grads: gradsOf(out, { pred: t.pred }) };
  }

  #run(pred: Tensor, label: Tensor, wantGrad: boolean): Run<'pred' | 'label'> {
    const t = tensors({ pred, label });
    return { t, out: callNative(() => native().focalLossNative(t.pred, t.label, this.gamma, this.alpha, wantGrad)) };
  }
}

// ------------------------------------------------------------------------------------------------------------
// DFLoss, BboxLoss, RotatedBboxLoss

/** `DFLoss(reg_max=16)` (docs/spec.md §8.3): distribution focal loss. */
export class DFLoss {
  readonly reg_max: number;

  constructor(reg_max = 16) {
    this.reg_max = checkPositiveInt('reg_max', reg_max);
    if (this.reg_max < 2) {
      throw lossError('ERR_INVALID_ARGUMENT', `reg_max: expected at least 2 for DFLoss, got ${this.reg_max}`);
    }
  }

  /**
   * `__call__(pred_dist, target)`: `[n, 1]`, the DFL of each anchor (mean over its 4 sides). The target is clamped
   * to [0, reg_max − 1.01] (on a copy: the caller's tensor is not modified).
   * @param predDist `[4n, reg_max]` logits, rows anchor-major, side-minor; @param target `[n, 4]` distances.
   */
  call(predDist: Tensor, target: Tensor): Tensor {
    return this.#run(predDist, target, undefined, false).out.value;
  }

  /** `call` and the gradient of `sum(value · upstream)` with respect to `predDist` (`upstream [n, 1]`, default ones). */
  callWithGrad(predDist: Tensor, target: Tensor, upstream?: Tensor): WithGrad<Tensor, { predDist: Tensor }> {
    const { t, out } = this.#run(predDist, target, upstream, true);
    return { value: out.value, grads: gradsOf(out, { predDist: t.predDist }) };
  }

  #run(predDist: Tensor, target: Tensor, upstream: Tensor | undefined, wantGrad: boolean): Run<'predDist' | 'target'> {
    const t = tensors({ predDist, target });
    const u = checkOptionalTensor('upstream', upstream);
    return { t, out: callNative(() => native().dfLossNative(t.predDist, t.target, this.reg_max, u, wantGrad)) };
  }
}

/** The gradients of `BboxLoss.forwardWithGrad` (of `lossIou + lossDfl`). */
export interface BboxLossGrads {
  predDist: Tensor;
  predBboxes: Tensor;
}

/**
 * `BboxLoss(reg_max=16)` (docs/spec.md §8.4): the CIoU box loss and the DFL of the positive anchors, weighted by the sum of
 * their target scores, divided by `targetScoresSum`.
 */
export class BboxLoss {
  readonly reg_max: number;
  /** The DFLoss used when `reg_max > 1`, else null. */
  readonly dfl_loss: DFLoss | null;
  readonly #rotated: boolean;

  constructor(reg_max = 16) {
    this.reg_max = checkPositiveInt('reg_max', reg_max);
    this.dfl_loss = this.reg_max > 1 ? new DFLoss(this.reg_max) : null;
    this.#rotated = this instanceof RotatedBboxLoss;
  }

  /**
   * `forward(...)` → `[lossIou, lossDfl]`. Axis-aligned boxes are xyxy, rotated ones (RotatedBboxLoss) xywhr, in
   * grid units.
   * @param predDist `[B, A, 4*reg_max]` logits; @param predBboxes `[B, A, 4]` (rotated: `[B, A, 5]`);
   * @param anchorPoints `[A, 2]`; @param targetBboxes like `predBboxes`; @param targetScores `[B, A, nc]`;
   * @param targetScoresSum the divisor (the losses pass max(Σ target scores, 1)), a number or a 1-element tensor;
   * @param fgMask `[B, A]` of 0/1.
   */
  forward(
    predDist: Tensor,
    predBboxes: Tensor,
    anchorPoints: Tensor,
    targetBboxes: Tensor,
    targetScores: Tensor,
    targetScoresSum: number | Tensor,
    fgMask: Tensor,
  ): [lossIou: number, lossDfl: number] {
    return lossPair(this.#run(predDist, predBboxes, anchorPoints, targetBboxes, targetScores, targetScoresSum, fgMask, false).out);
  }

  /** `forward` and the gradients of `lossIou + lossDfl` with respect to `predDist` and `predBboxes` (independent
   * inputs: the DFL part reaches `predDist`, the IoU part `predBboxes`). */
  forwardWithGrad(
    predDist: Tensor,
    predBboxes: Tensor,
    anchorPoints: Tensor,
    targetBboxes: Tensor,
    targetScores: Tensor,
    targetScoresSum: number | Tensor,
    fgMask: Tensor,
  ): WithGrad<[lossIou: number, lossDfl: number], BboxLossGrads> {
    const { t, out } = this.#run(predDist, predBboxes, anchorPoints, targetBboxes, targetScores, targetScoresSum, fgMask, true);
    return { value: lossPair(out), grads: gradsOf(out, { predDist: t.predDist, predBboxes: t.predBboxes }) };
  }

  #run(
    predDist: Tensor,
    predBboxes: Tensor,
    anchorPoints: Tensor,
    targetBboxes: Tensor,
    targetScores: Tensor,
    targetScoresSum: number | Tensor,
    fgMask: Tensor,
    wantGrad: boolean,
  ): Run<'predDist' | 'predBboxes' | 'anchorPoints' | 'targetBboxes' | 'targetScores'> {
    const t = tensors({ predDist, predBboxes, anchorPoints, targetBboxes, targetScores });
    const inputs: Native.NativeBboxLossInputs = {
      ...t,
      targetScoresSum: checkScalar('targetScoresSum', targetScoresSum),
      fgMask: checkTensor('fgMask', fgMask),
    };
    return { t, out: callNative(() => native().bboxLossNative(inputs, this.reg_max, this.#rotated, wantGrad)) };
  }
}

/** The value of BboxLoss: `[lossIou, lossDfl]`. */
function lossPair(out: Native.NativeValueGrads): [lossIou: number, lossDfl: number] {
  return [out.value.data[0]!, out.value.data[1]!];
}

/** A number, or a tensor holding exactly one. */
function checkScalar(name: string, v: unknown): number {
  if (typeof v === 'number') return v;
  if (isObject(v) && !Array.isArray(v)) {
    const t = checkTensor(name, v);
    if (t.data.length !== 1) {
      throw lossError('ERR_SHAPE_MISMATCH', `${name}: expected a number or a 1-element tensor, got shape [${t.shape.join(', ')}]`);
    }
    return t.data[0]!;
  }
  throw lossError('ERR_INVALID_ARGUMENT', `${name}: expected a number or a 1-element tensor, got ${describe(v)}`);
}

/**
 * `RotatedBboxLoss(reg_max)` (docs/spec.md §8.5): 1 − probIoU of the positives' xywhr boxes, and the DFL of the
 * **axis-aligned** target (θ ignored). Same `forward`/`forwardWithGrad` as BboxLoss with 5-wide boxes; the
 * gradient with respect to `predBboxes` includes the angle column.
 */
export class RotatedBboxLoss extends BboxLoss {
  constructor(reg_max: number) {
    super(reg_max);
  }
}

// ------------------------------------------------------------------------------------------------------------
// KeypointLoss

/** `KeypointLoss(sigmas)` (docs/spec.md §8.6): the OKS-style keypoint location loss. */
export class KeypointLoss {
  /** Per-keypoint sigmas (float64: the COCO sigmas `OKS_SIGMA` make the loss float64 as in the reference). */
  readonly sigmas: Float64Array;

  /** @param sigmas `[K]` positive numbers: an array, a Float32Array/Float64Array or a tensor. */
  constructor(sigmas: Tensor | ArrayLike<number>) {
    const s = checkNumbers('sigmas', sigmas);
    if (s.length === 0) throw lossError('ERR_INVALID_ARGUMENT', 'sigmas: expected one sigma per keypoint, got an empty list');
    s.forEach((v, i) => {
      if (!(Number.isFinite(v) && v > 0)) throw lossError('ERR_INVALID_ARGUMENT', `sigmas[${i}]: expected a positive finite number, got ${v}`);
    });
    this.sigmas = Float64Array.from(s);
  }

  /**
   * `forward(pred_kpts, gt_kpts, kpt_mask, area)`: the mean over all P·K entries of
   * f_p·(1 − exp(−d/((2σ)²·(area + 1e-9)·2)))·mask, f_p = K / (visible + 1e-9).
   * @param predKpts `[P, K, D ≥ 2]` decoded, grid units; @param gtKpts `[P, K, D ≥ 2]`; @param kptMask `[P, K]`
   * (0/1); @param area `[P, 1]`.
   */
  forward(predKpts: Tensor, gtKpts: Tensor, kptMask: Tensor, area: Tensor): number {
    return scalar(this.#run(predKpts, gtKpts, kptMask, area, false).out);
  }

  /** `forward` and its gradient with respect to `predKpts` (zeros beyond x, y). */
  forwardWithGrad(predKpts: Tensor, gtKpts: Tensor, kptMask: Tensor, area: Tensor): WithGrad<number, { predKpts: Tensor }> {
    const { t, out } = this.#run(predKpts, gtKpts, kptMask, area, true);
    return { value: scalar(out), grads: gradsOf(out, { predKpts: t.predKpts }) };
  }

  #run(predKpts: Tensor, gtKpts: Tensor, kptMask: Tensor, area: Tensor, wantGrad: boolean): Run<'predKpts' | 'gtKpts' | 'kptMask' | 'area'> {
    const t = tensors({ predKpts, gtKpts, kptMask, area });
    const sigmas = Array.from(this.sigmas);
    return { t, out: callNative(() => native().keypointLossNative(t.predKpts, t.gtKpts, t.kptMask, t.area, sigmas, wantGrad)) };
  }
}

/** The 17 COCO keypoint OKS sigmas (`ultralytics.utils.metrics.OKS_SIGMA`), float64. */
export const OKS_SIGMA: Readonly<Float64Array> = Float64Array.from(
  [0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89].map((v) => v / 10),
);

// ------------------------------------------------------------------------------------------------------------
// Assigners

/** Constructor options of the assigners (Ultralytics' defaults: topk 13, num_classes 80, alpha 1, beta 6, eps 1e-9;
 * the losses use topk 10, num_classes nc, alpha 0.5, beta 6). */
export interface AssignerOptions {
  topk?: number;
  num_classes?: number;
  alpha?: number;
  beta?: number;
  eps?: number;
}

/** What `forward` returns, in Ultralytics' order; integer outputs and the mask are float32 tensors. */
export type Assignment = [
  /** `[B, A]` class id per anchor (`num_classes` everywhere when there is no GT at all). */
  targetLabels: Tensor,
  /** `[B, A, 4]` (rotated: `[B, A, 5]`) assigned GT box, background anchors get GT slot 0's. */
  targetBboxes: Tensor,
  /** `[B, A, num_classes]` soft targets. */
  targetScores: Tensor,
  /** `[B, A]` 1 for positive anchors, else 0. */
  fgMask: Tensor,
  /** `[B, A]` GT slot per anchor (0 for background). */
  targetGtIdx: Tensor,
];

/**
 * `TaskAlignedAssigner({ topk, num_classes, alpha, beta, eps })` (docs/spec.md §7). No gradients. Top-k ties are broken
 * deterministically (larger metric first, then lower anchor index).
 */
export class TaskAlignedAssigner {
  readonly topk: number;
  readonly num_classes: number;
  /** The background class index (`num_classes`). */
  readonly bg_idx: number;
  readonly alpha: number;
  readonly beta: number;
  readonly eps: number;
  readonly #rotated: boolean;

  constructor(options: AssignerOptions = {}) {
    const o = checkOptions('options', options);
    this.topk = o['topk'] === undefined ? 13 : checkPositiveInt('topk', o['topk']);
    this.num_classes = o['num_classes'] === undefined ? 80 : checkPositiveInt('num_classes', o['num_classes']);
    this.bg_idx = this.num_classes;
    this.alpha = optionalNumber('alpha', o['alpha'], 1.0);
    this.beta = optionalNumber('beta', o['beta'], 6.0);
    this.eps = optionalNumber('eps', o['eps'], 1e-9);
    this.#rotated = this instanceof RotatedTaskAlignedAssigner;
  }

  /**
   * `forward(pd_scores, pd_bboxes, anc_points, gt_labels, gt_bboxes, mask_gt)`.
   * @param pdScores `[B, A, num_classes]` probabilities; @param pdBboxes `[B, A, 4]` pixel xyxy (rotated: `[B, A, 5]`
   * pixel xywhr); @param ancPoints `[A, 2]` pixels; @param gtLabels `[B, M, 1]`; @param gtBboxes `[B, M, 4]`
   * (rotated: `[B, M, 5]`); @param maskGt `[B, M, 1]` 0/1.
   */
  forward(pdScores: Tensor, pdBboxes: Tensor, ancPoints: Tensor, gtLabels: Tensor, gtBboxes: Tensor, maskGt: Tensor): Assignment {
    const t = tensors({ pdScores, pdBboxes, ancPoints, gtLabels, gtBboxes, maskGt });
    const cfg: Native.NativeAssignerConfig = { topk: this.topk, numClasses: this.num_classes, alpha: this.alpha, beta: this.beta, eps: this.eps };
    const out = callNative(() =>
      native().taskAlignedAssignNative(cfg, t.pdScores, t.pdBboxes, t.ancPoints, t.gtLabels, t.gtBboxes, t.maskGt, this.#rotated),
    );
    return [out[0]!, out[1]!, out[2]!, out[3]!, out[4]!];
  }
}

/** `RotatedTaskAlignedAssigner(...)` (docs/spec.md §7): rotated boxes (cx, cy, w, h, θ), inclusive rotated centre-in-box,
 * probIoU overlaps; `targetBboxes` is `[B, A, 5]`. */
export class RotatedTaskAlignedAssigner extends TaskAlignedAssigner {}

// ------------------------------------------------------------------------------------------------------------
// Geometry helpers

/**
 * `make_anchors(feats, strides, grid_cell_offset=0.5)` → `[anchorPoints [A, 2], strideTensor [A, 1]]`: the centre
 * (x + offset, y + offset) of every cell of every level (grid units of its level, level by level, row-major) and
 * its stride.
 * @param feats the level tensors `[B, C, H_l, W_l]`, or their sizes `[[H_l, W_l], ...]`.
 */
export function make_anchors(
  feats: Tensor[] | ReadonlyArray<readonly [number, number]>,
  strides: ArrayLike<number> | Tensor,
  grid_cell_offset = 0.5,
): [anchorPoints: Tensor, strideTensor: Tensor] {
  if (!Array.isArray(feats)) {
    throw lossError('ERR_INVALID_ARGUMENT', `feats: expected an array of level tensors or of [H, W] sizes, got ${describe(feats)}`);
  }
  const shapes = (feats as unknown[]).every((f) => Array.isArray(f) || utilTypes.isTypedArray(f))
    ? (feats as unknown[]).map((f, l) => {
        const s = checkNumbers(`feats[${l}]`, f);
        if (s.length !== 2) throw lossError('ERR_SHAPE_MISMATCH', `feats[${l}]: expected a level size [H, W], got ${s.length} values`);
        return s;
      })
    : checkFeats(feats, 'feats').map((t, l) => {
        if (t.shape.length !== 4) {
          throw lossError('ERR_SHAPE_MISMATCH', `feats[${l}]: expected a rank-4 tensor [B, C, H, W], got shape [${t.shape.join(', ')}]`);
        }
        return [t.shape[2]!, t.shape[3]!];
      });
  const s = checkNumbers('strides', strides);
  const offset = checkFiniteNumber('grid_cell_offset', grid_cell_offset);
  const out = callNative(() => native().makeAnchorsNative(shapes, s, offset));
  return [out[0]!, out[1]!];
}

/**
 * `dist2bbox(distance, anchor_points, xywh=true)`: distances (l, t, r, b) from the anchors → boxes, xywh (centre,
 * size) or xyxy. `distance [..., 4]`, `anchorPoints [..., 2]`; leading axes broadcast. → `[..., 4]`.
 */
export function dist2bbox(distance: Tensor, anchorPoints: Tensor, xywh = true): Tensor {
  const t = tensors({ distance, anchorPoints });
  const x = checkBoolean('xywh', xywh);
  return callNative(() => native().dist2bboxNative(t.distance, t.anchorPoints, x));
}

/**
 * `bbox2dist(anchor_points, bbox, reg_max)`: xyxy boxes → distances (l, t, r, b) from the anchors, clamped to
 * [0, reg_max − 0.01] (the losses pass `reg_max − 1`). `anchorPoints [..., 2]`, `bbox [..., 4]`; leading axes
 * broadcast. → `[..., 4]`.
 */
export function bbox2dist(anchorPoints: Tensor, bbox: Tensor, reg_max: number): Tensor {
  const t = tensors({ anchorPoints, bbox });
  const r = checkFiniteNumber('reg_max', reg_max);
  return callNative(() => native().bbox2distNative(t.anchorPoints, t.bbox, r));
}

/**
 * `dist2rbox(pred_dist, pred_angle, anchor_points)`: rotated-frame distances (l, t, r, b) and angle → rotated boxes
 * (cx, cy, w, h). `predDist [..., A, 4]`, `predAngle [..., A, 1]`, `anchorPoints [A, 2]`. → `[..., A, 4]`.
 */
export function dist2rbox(predDist: Tensor, predAngle: Tensor, anchorPoints: Tensor): Tensor {
  return runDist2rbox(predDist, predAngle, anchorPoints, undefined, false).out.value;
}

/** `dist2rbox` and the gradients of `sum(value · upstream)` with respect to `predDist` and `predAngle`. */
export function dist2rboxWithGrad(
  predDist: Tensor,
  predAngle: Tensor,
  anchorPoints: Tensor,
  upstream?: Tensor,
): WithGrad<Tensor, { predDist: Tensor; predAngle: Tensor }> {
  const { t, out } = runDist2rbox(predDist, predAngle, anchorPoints, upstream, true);
  return { value: out.value, grads: gradsOf(out, { predDist: t.predDist, predAngle: t.predAngle }) };
}

function runDist2rbox(
  predDist: Tensor,
  predAngle: Tensor,
  anchorPoints: Tensor,
  upstream: Tensor | undefined,
  wantGrad: boolean,
): Run<'predDist' | 'predAngle' | 'anchorPoints'> {
  const t = tensors({ predDist, predAngle, anchorPoints });
  const u = checkOptionalTensor('upstream', upstream);
  return { t, out: callNative(() => native().dist2rboxNative(t.predDist, t.predAngle, t.anchorPoints, u, wantGrad)) };
}

/** Options of `bbox_iou` (Ultralytics' keyword arguments and defaults). */
export interface BboxIouOptions {
  /** Boxes are (cx, cy, w, h) (default true) or (x1, y1, x2, y2). */
  xywh?: boolean;
  GIoU?: boolean;
  DIoU?: boolean;
  /** CIoU takes precedence over DIoU, DIoU over GIoU. */
  CIoU?: boolean;
  /** Default 1e-7. */
  eps?: number;
}

function iouOptions(options: unknown): Native.NativeIouOptions {
  const o = checkOptions('options', options);
  return {
    xywh: optionalBoolean('options.xywh', o['xywh'], true),
    giou: optionalBoolean('options.GIoU', o['GIoU'], false),
    diou: optionalBoolean('options.DIoU', o['DIoU'], false),
    ciou: optionalBoolean('options.CIoU', o['CIoU'], false),
    eps: optionalNumber('options.eps', o['eps'], 1e-7),
  };
}

/**
 * `bbox_iou(box1, box2, { xywh, GIoU, DIoU, CIoU, eps })` (docs/spec.md §6.2): `[..., 1]` for `box1 [..., 4]` and
 * `box2 [..., 4]` (leading axes broadcast).
 */
export function bbox_iou(box1: Tensor, box2: Tensor, options?: BboxIouOptions): Tensor {
  return runBboxIou(box1, box2, options, undefined, false).out.value;
}

/** `bbox_iou` and the gradients of `sum(value · upstream)` with respect to both boxes (CIoU's α held constant, as
 * autograd does). */
export function bboxIouWithGrad(
  box1: Tensor,
  box2: Tensor,
  options?: BboxIouOptions,
  upstream?: Tensor,
): WithGrad<Tensor, { box1: Tensor; box2: Tensor }> {
  const { t, out } = runBboxIou(box1, box2, options, upstream, true);
  return { value: out.value, grads: gradsOf(out, t) };
}

function runBboxIou(box1: Tensor, box2: Tensor, options: unknown, upstream: Tensor | undefined, wantGrad: boolean): Run<'box1' | 'box2'> {
  const t = tensors({ box1, box2 });
  const o = iouOptions(options);
  const u = checkOptionalTensor('upstream', upstream);
  return { t, out: callNative(() => native().bboxIouNative(t.box1, t.box2, o, u, wantGrad)) };
}

/** Options of `probiou`. */
export interface ProbiouOptions {
  /** Subtract CIoU's aspect term (default false). */
  CIoU?: boolean;
  /** Default 1e-7. */
  eps?: number;
}

function probiouOptions(options: unknown): { ciou: boolean; eps: number } {
  const o = checkOptions('options', options);
  return { ciou: optionalBoolean('options.CIoU', o['CIoU'], false), eps: optionalNumber('options.eps', o['eps'], 1e-7) };
}

/**
 * `probiou(obb1, obb2, { CIoU, eps })` (docs/spec.md §6.3): the probabilistic IoU of oriented boxes (cx, cy, w, h, θ),
 * `[..., 1]` for `obb1 [..., 5]`, `obb2 [..., 5]` (leading axes broadcast).
 */
export function probiou(obb1: Tensor, obb2: Tensor, options?: ProbiouOptions): Tensor {
  return runProbiou(obb1, obb2, options, undefined, false).out.value;
}

/** `probiou` and the gradients of `sum(value · upstream)` with respect to both boxes. */
export function probiouWithGrad(
  obb1: Tensor,
  obb2: Tensor,
  options?: ProbiouOptions,
  upstream?: Tensor,
): WithGrad<Tensor, { obb1: Tensor; obb2: Tensor }> {
  const { t, out } = runProbiou(obb1, obb2, options, upstream, true);
  return { value: out.value, grads: gradsOf(out, t) };
}

function runProbiou(obb1: Tensor, obb2: Tensor, options: unknown, upstream: Tensor | undefined, wantGrad: boolean): Run<'obb1' | 'obb2'> {
  const t = tensors({ obb1, obb2 });
  const o = probiouOptions(options);
  const u = checkOptionalTensor('upstream', upstream);
  return { t, out: callNative(() => native().probiouNative(t.obb1, t.obb2, o.ciou, o.eps, u, wantGrad)) };
}
