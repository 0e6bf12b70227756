/**
 * The task losses beyond v8DetectionLoss: v8SegmentationLoss, v8PoseLoss, v8OBBLoss, v8ClassificationLoss,
 * E2EDetectLoss, TVPDetectLoss and TVPSegmentLoss. Every one has `call`, `valueAndGrad`, `callAsync`,
 * `valueAndGradAsync`, `device`, `lastDevice` and `deviceFor`; `preds` and `batch` are laid out as in docs/api.md, and `grads` has the structure
 * of `preds` (same nesting, every tensor shaped like its prediction tensor). Both `valueAndGrad` forms also write
 * into a caller's `out` of that structure instead of fresh arrays (`./grads`).
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */

import { types as utilTypes } from 'node:util';

import type * as Native from '../native/binding';
import {
  callNative,
  checkBatch,
  checkBatchSize,
  checkBoolean,
  checkDetectionBatch,
  checkDevice,
  checkFeats,
  checkModel,
  checkPositiveInt,
  checkScale,
  checkTensor,
  checkTuple,
  describe,
  isObject,
  lossError,
  native,
  nativeConfig,
  rethrow,
  type CheckedModel,
  type DetectionBatch,
  type Hyp,
  type ModelInfo,
  type Options,
  type Tensor,
  type ValueAndGrad,
} from './common';
import { checkGradOptions, checkOut, structureGrads, type GradOptions, type PredTree } from './grads';

// ------------------------------------------------------------------------------------------------------------
// Public types

/** v8SegmentationLoss / TVPSegmentLoss predictions: level tensors, mask coefficients `[B, nm, A]`, prototypes
 * `[B, nm, Hm, Wm]`. */
export type SegmentationPreds = [feats: Tensor[], pred_masks: Tensor, proto: Tensor];
/** v8PoseLoss predictions: level tensors and raw keypoints `[B, K*D, A]` (channel k·D + d). */
export type PosePreds = [feats: Tensor[], kpts: Tensor];
/** v8OBBLoss predictions: level tensors and the activated angle `[B, 1, A]`. */
export type OBBPreds = [feats: Tensor[], angle: Tensor];
/** E2EDetectLoss predictions: the two branches of an end-to-end head, each shaped like detection's. */
export interface E2EPreds {
  one2many: Tensor[];
  one2one: Tensor[];
}

/** Segmentation batch: the detection labels plus `masks`, `[B, H, W]` index maps when `overlap_mask` (value j ≥ 1
 * = the image's j-th label in batch order, 0 = background), else `[N, H, W]` 0/1 masks in label order. */
export interface SegmentationBatch extends DetectionBatch {
  masks: Tensor;
}

/** Pose batch: the detection labels plus `keypoints [N, K, D]` (x/W, y/H, visibility when D = 3). */
export interface PoseBatch extends DetectionBatch {
  keypoints: Tensor;
}

/** OBB batch: `bboxes` is `[N, 5]`, normalized cx, cy, w, h and the angle in radians. */
export type OBBBatch = DetectionBatch;

/** Classification batch: `cls [B]`, one class id per image. */
export interface ClassificationBatch {
  cls: Tensor;
  [key: string]: unknown;
}

export type SegmentationValueAndGrad = ValueAndGrad<SegmentationPreds>;
export type PoseValueAndGrad = ValueAndGrad<PosePreds>;
export type OBBValueAndGrad = ValueAndGrad<OBBPreds>;
export type ClassificationValueAndGrad = ValueAndGrad<Tensor>;
export type E2EValueAndGrad = ValueAndGrad<E2EPreds>;

export interface PoseOptions extends Options {
  /**
   * Whether `kpt_shape` `[17, 3]` uses the COCO OKS sigmas (default true: what the reference does for a head whose
   * `kpt_shape` is the list `[17, 3]`, i.e. every model built from YAML). `false` gives the uniform sigmas 1/K the
   * reference uses when the head's `kpt_shape` is the tuple `(17, 3)`. Other shapes always use 1/K.
   */
  oksSigmas?: boolean;
}

// ------------------------------------------------------------------------------------------------------------
// The shared machinery

/**
 * The caller's buffers a CUDA instance keeps page-locked (registered with the driver) so that copies go straight
 * between them and the GPU (`out` buffers, and prediction arrays of synchronous calls passed again): `buffers` and
 * `bytes` now, and over the instance's life how many were locked, unlocked, and refused by the driver (then its
 * copies simply stay staged). All zeros on the CPU backend.
 */
export interface PinnedMemory {
  buffers: number;
  bytes: number;
  registrations: number;
  releases: number;
  refusals: number;
}

/** The native side of a task loss (method shorthand: argument lists differ per loss). */
export interface NativeTaskLoss {
  readonly device: string;
  pinnedMemory(): PinnedMemory;
  releasePinnedMemory(): void;
  readonly lastDevice?: string | null;
  deviceFor(...args: never[]): string | null | undefined;
  call(...args: never[]): Native.NativeLossOutput;
  valueAndGrad(...args: never[]): Native.NativeLossOutput;
  callAsync(...args: never[]): Promise<Native.NativeLossOutput>;
  valueAndGradAsync(...args: never[]): Promise<Native.NativeLossOutput>;
}

/** The checked arguments of one call: `args` for the binding, `preds` its prediction tensors in the structure of
 * `preds` (which `grads` and `out` have). */
export interface Prepared {
  args: unknown[];
  preds: PredTree;
}

type AnyCall = (...args: unknown[]) => Native.NativeLossOutput;
type AnyAsyncCall = (...args: unknown[]) => Promise<Native.NativeLossOutput>;
type AnyDeviceFor = (...args: unknown[]) => string | null | undefined;

/** A backend the binding names: 'cpu' or 'cuda'; anything else (null, undefined: none yet) is `undefined`. */
function backendName(d: string | null | undefined): 'cpu' | 'cuda' | undefined {
  return d === 'cpu' || d === 'cuda' ? d : undefined;
}

/**
 * The native half of a task loss and the four ways to run it on prepared arguments: what `call`, `valueAndGrad`,
 * `callAsync` and `valueAndGradAsync` of every loss do once its arguments are checked.
 */
class LossRunner {
  readonly native: NativeTaskLoss;

  constructor(nativeLoss: NativeTaskLoss) {
    this.native = nativeLoss;
  }

  /** What runs the calls: 'cpu', 'cuda', or 'auto' (both backends, each call on the faster one for its shapes). */
  get device(): 'cpu' | 'cuda' | 'auto' {
    const d = this.native.device;
    return d === 'cuda' || d === 'auto' ? d : 'cpu';
  }

  /** The backend the latest call started on; with one backend always that one; `undefined` under 'auto' before the
   * first call. */
  get lastDevice(): 'cpu' | 'cuda' | undefined {
    return backendName(this.native.lastDevice);
  }

  /** The backend calls with these prepared arguments' shapes run on; `undefined` under 'auto' while they are timed. */
  deviceFor(p: Prepared): 'cpu' | 'cuda' | undefined {
    return backendName(callNative(() => (this.native.deviceFor as AnyDeviceFor).apply(this.native, p.args)));
  }

  pinnedMemory(): PinnedMemory {
    return this.native.pinnedMemory();
  }

  releasePinnedMemory(): void {
    this.native.releasePinnedMemory();
  }

  call(p: Prepared): [loss: Float32Array, lossItems: Float32Array] {
    const out = callNative(() => (this.native.call as AnyCall).apply(this.native, p.args));
    return [out.loss, out.lossItems];
  }

  valueAndGrad<P>(p: Prepared, options?: GradOptions<P>): ValueAndGrad<P> {
    const g = gradCall<P>(p, options);
    return g.result(callNative(() => (this.native.valueAndGrad as AnyCall).apply(this.native, g.args)));
  }

  async callAsync(p: Prepared): Promise<[loss: Float32Array, lossItems: Float32Array]> {
    let out: Native.NativeLossOutput;
    try {
      out = await (this.native.callAsync as AnyAsyncCall).apply(this.native, p.args);
    } catch (e) {
      rethrow(e);
    }
    return [out.loss, out.lossItems];
  }

  async valueAndGradAsync<P>(p: Prepared, options?: GradOptions<P>): Promise<ValueAndGrad<P>> {
    const g = gradCall<P>(p, options);
    let r: Native.NativeLossOutput;
    try {
      r = await (this.native.valueAndGradAsync as AnyAsyncCall).apply(this.native, g.args);
    } catch (e) {
      rethrow(e);
    }
    return g.result(r);
  }
}

/**
 * The binding's arguments of a `valueAndGrad` call and how its output becomes `ValueAndGrad`: without `options.out`
 * the binding's fresh gradients in the structure of `preds`; with it, `out` checked and passed flat after the
 * other arguments (the binding writes into it and returns no gradients), and `out` itself returned as `grads`.
 */
function gradCall<P>(p: Prepared, options: unknown): { args: unknown[]; result(r: Native.NativeLossOutput): ValueAndGrad<P> } {
  const out = checkGradOptions(options);
  if (out === undefined) {
    return { args: p.args, result: (r) => ({ loss: r.loss, lossItems: r.lossItems, grads: structureGrads<P>(r.grads, p.preds) }) };
  }
  return { args: [...p.args, checkOut(out, p.preds)], result: (r) => ({ loss: r.loss, lossItems: r.lossItems, grads: out as P }) };
}

/**
 * What every task loss offers. `P` is the structure of `preds` (and of `grads`), `B` that of `batch`.
 */
export abstract class TaskLoss<P, B> {
  readonly #run: LossRunner;

  protected constructor(nativeLoss: NativeTaskLoss) {
    this.#run = new LossRunner(nativeLoss);
  }

  /** Checks the structure of `preds` and `batch` and packs them for the binding. */
  protected abstract prepare(preds: P, batch: B): Prepared;

  /** What runs the calls: 'cpu', 'cuda', or 'auto' (with a usable GPU under `device: 'auto'`: both backends, each
   * call on the faster one for its shapes, see {@link Options}). */
  get device(): 'cpu' | 'cuda' | 'auto' {
    return this.#run.device;
  }

  /** The caller's buffers this instance keeps page-locked for direct GPU copies (CUDA: `out` buffers, and prediction
   * arrays passed again; see docs/api.md). */
  pinnedMemory(): PinnedMemory {
    return this.#run.pinnedMemory();
  }

  /** Unlocks every buffer this instance page-locked (also done when the instance is garbage-collected). Call it
   * before transferring or dropping an `out` buffer or prediction array you will not pass again, to give its pages
   * back at once. */
  releasePinnedMemory(): void {
    this.#run.releasePinnedMemory();
  }

  /** The backend the latest call started on, 'cpu' or 'cuda' (with one backend: that one, calls or not);
   * `undefined` under 'auto' before the first call. */
  get lastDevice(): 'cpu' | 'cuda' | undefined {
    return this.#run.lastDevice;
  }

  /** The backend calls with the shapes of `preds` and `batch` run on, 'cpu' or 'cuda'; `undefined` under 'auto'
   * while those shapes are still being timed (or were not seen yet). Runs nothing: the structure and shapes are
   * checked as in `call`, the contents (label values, finiteness) are not. */
  deviceFor(preds: P, batch: B): 'cpu' | 'cuda' | undefined {
    return this.#run.deviceFor(this.prepare(preds, batch));
  }

  /** `__call__(preds, batch)`: `[loss, lossItems]` (the back-propagated vector and the detached one). */
  call(preds: P, batch: B): [loss: Float32Array, lossItems: Float32Array] {
    return this.#run.call(this.prepare(preds, batch));
  }

  /** `call` plus the gradient of `sum(loss)` with respect to every prediction tensor, with the structure of
   * `preds`: fresh arrays, or written into `options.out` (see {@link GradOptions}), which is returned as `grads`. */
  valueAndGrad(preds: P, batch: B): ValueAndGrad<P>;
  valueAndGrad<O extends P>(preds: P, batch: B, options: { out: O }): ValueAndGrad<O>;
  valueAndGrad(preds: P, batch: B, options?: GradOptions<P>): ValueAndGrad<P>;
  valueAndGrad(preds: P, batch: B, options?: GradOptions<P>): ValueAndGrad<P> {
    return this.#run.valueAndGrad<P>(this.prepare(preds, batch), options);
  }

  /**
   * `call` on the libuv thread pool. The inputs are copied before this returns, so the caller may reuse its
   * buffers at once. Bad input rejects with the same errors `call` throws.
   */
  async callAsync(preds: P, batch: B): Promise<[loss: Float32Array, lossItems: Float32Array]> {
    return this.#run.callAsync(this.prepare(preds, batch));
  }

  /** `valueAndGrad` on the libuv thread pool (inputs copied before this returns; `options.out` is written while the
   * promise is pending and must be left alone until it settles). */
  valueAndGradAsync(preds: P, batch: B): Promise<ValueAndGrad<P>>;
  valueAndGradAsync<O extends P>(preds: P, batch: B, options: { out: O }): Promise<ValueAndGrad<O>>;
  valueAndGradAsync(preds: P, batch: B, options?: GradOptions<P>): Promise<ValueAndGrad<P>>;
  async valueAndGradAsync(preds: P, batch: B, options?: GradOptions<P>): Promise<ValueAndGrad<P>> {
    return this.#run.valueAndGradAsync<P>(this.prepare(preds, batch), options);
  }
}

/** The attributes the detection-family losses share, from the checked model. */
function familyAttributes(m: CheckedModel): {
  nc: number;
  no: number;
  reg_max: number;
  use_dfl: boolean;
  stride: readonly number[];
  hyp: Readonly<Hyp>;
} {
  return {
    nc: m.nc,
    no: m.nc + 4 * m.reg_max,
    reg_max: m.reg_max,
    use_dfl: m.reg_max > 1,
    stride: Object.freeze([...m.stride]),
    hyp: Object.freeze({ ...m.hyp }),
  };
}

/** The attributes the detection-family losses share with v8DetectionLoss. */
export abstract class DetectionFamilyLoss<P, B> extends TaskLoss<P, B> {
  /** Number of classes (TVP losses: text prompts). */
  readonly nc!: number;
  /** Outputs per anchor: `nc + 4 * reg_max`. */
  readonly no!: number;
  readonly reg_max!: number;
  /** Whether DFL is used (`reg_max > 1`). */
  readonly use_dfl!: boolean;
  readonly stride!: readonly number[];
  readonly hyp!: Readonly<Hyp>;

  protected constructor(nativeLoss: NativeTaskLoss, m: CheckedModel) {
    super(nativeLoss);
    Object.assign(this, familyAttributes(m));
  }
}

/** The native classes of the detection-family losses built from the detection configuration alone. */
type FamilyNative = 'NativeSegmentationLoss' | 'NativeObbLoss' | 'NativeE2EDetectLoss' | 'NativeTvpDetectLoss' | 'NativeTvpSegmentLoss';

/** The checked `model` and `options` of a detection-family loss and its native half (assigner top-k 10): the
 * arguments of `DetectionFamilyLoss`'s constructor. */
function family<K extends FamilyNative>(model: unknown, options: unknown, cls: K): [InstanceType<(typeof Native)[K]>, CheckedModel] {
  const m = checkModel(model);
  const device = checkDevice(options);
  type Ctor = new (config: Native.NativeDetectionConfig) => InstanceType<(typeof Native)[K]>;
  return [callNative(() => new (native()[cls] as Ctor)(nativeConfig(m, 10, device))), m];
}

/** The predictions of a detection loss, one tensor per level, and its batch (v8DetectionLoss, TVPDetectLoss). */
export function prepareLevels(preds: Tensor[], batch: DetectionBatch): Prepared {
  const feats = checkFeats(preds);
  const b = checkDetectionBatch(batch);
  return { args: [feats, b], preds: feats };
}

function segBatch(batch: unknown): Native.NativeSegBatch {
  const b = checkBatch(batch, ['batch_idx', 'cls', 'bboxes', 'masks'] as const);
  return { batchIdx: b.batch_idx, cls: b.cls, bboxes: b.bboxes, masks: b.masks };
}

function prepareSegmentation(preds: unknown, batch: unknown): Prepared {
  const [feats, predMasks, proto] = checkTuple(preds, ['pred_masks', 'proto']) as [Native.NativeTensor[], Native.NativeTensor, Native.NativeTensor];
  const b = segBatch(batch);
  return { args: [feats, predMasks, proto, b], preds: [feats, predMasks, proto] };
}

// ------------------------------------------------------------------------------------------------------------
// v8SegmentationLoss

/**
 * `v8SegmentationLoss` (docs/spec.md §10): the detection terms plus the mask term (BCE of coefficient·prototype logits
 * inside each positive's box, normalised by the box area; gain `box`). `loss = B · [box, seg, cls, dfl]`.
 * `model.args.overlap_mask` chooses the `batch.masks` format.
 */
export class v8SegmentationLoss extends DetectionFamilyLoss<SegmentationPreds, SegmentationBatch> {
  readonly tal_topk = 10;
  /** `overlap_mask`: GT masks are `[B, H, W]` index maps (true) or `[N, H, W]` binary masks (false). */
  readonly overlap: boolean;

  /**
   * @param model `nc`, `stride`, `reg_max` (default 16), `args` (`box` is also the mask gain; `overlap_mask`).
   * @param options `device`: 'cpu' | 'cuda' | 'cuda:N' | 'auto' (default 'auto': where CUDA is usable, the faster of it and the CPU for each call's shapes, else the CPU; see {@link Options}).
   */
  constructor(model: ModelInfo, options?: Options) {
    super(...family(model, options, 'NativeSegmentationLoss'));
    this.overlap = this.hyp.overlap_mask;
  }

  /**
   * @param preds `[feats, pred_masks, proto]`: level tensors `[B, 4*reg_max + nc, H_l, W_l]`, mask coefficients
   *   `[B, nm, A]`, prototypes `[B, nm, Hm, Wm]`.
   * @param batch `{ batch_idx, cls, bboxes, masks }`.
   */
  protected prepare(preds: SegmentationPreds, batch: SegmentationBatch): Prepared {
    return prepareSegmentation(preds, batch);
  }
}

// ------------------------------------------------------------------------------------------------------------
// v8PoseLoss

function checkKptShape(v: unknown): [number, number] {
  if (v === undefined || v === null) {
    throw lossError('ERR_INVALID_ARGUMENT', 'model.kpt_shape: expected [K, D] (keypoints per instance, values per keypoint: 2 or 3), got nothing (v8PoseLoss needs it)');
  }
  if (!(Array.isArray(v) || utilTypes.isTypedArray(v)) || (v as ArrayLike<unknown>).length !== 2) {
    throw lossError('ERR_INVALID_ARGUMENT', `model.kpt_shape: expected [K, D], got ${describe(v)}`);
  }
  const s = v as ArrayLike<unknown>;
  const k = checkPositiveInt('model.kpt_shape[0]', s[0]);
  const d = checkPositiveInt('model.kpt_shape[1]', s[1]);
  if (d !== 2 && d !== 3) {
    throw lossError('ERR_INVALID_ARGUMENT', `model.kpt_shape[1]: expected 2 (x, y) or 3 (x, y, visibility), got ${d}`);
  }
  return [k, d];
}

/**
 * `v8PoseLoss` (docs/spec.md §11): the detection terms plus the OKS-style keypoint location loss and the keypoint
 * visibility BCE of the positives. `loss = B · [box, pose, kobj, cls, dfl]`.
 */
export class v8PoseLoss extends DetectionFamilyLoss<PosePreds, PoseBatch> {
  readonly tal_topk = 10;
  /** `[K, D]`. */
  readonly kpt_shape: readonly [number, number];
  /** The KeypointLoss sigmas: the COCO OKS sigmas for `[17, 3]` (see `options.oksSigmas`), else 1/K. */
  readonly sigmas: Float64Array;

  /**
   * @param model `nc`, `stride`, `reg_max`, `kpt_shape` (required), `args` (`pose`, `kobj` gains).
   * @param options `device`; `oksSigmas` (default true, see {@link PoseOptions}).
   */
  constructor(model: ModelInfo, options?: PoseOptions) {
    const m = checkModel(model);
    const kptShape = checkKptShape((model as unknown as Record<string, unknown>)['kpt_shape']);
    const device = checkDevice(options);
    const oks = options?.oksSigmas === undefined ? true : checkBoolean('options.oksSigmas', options.oksSigmas);
    const n = callNative(() => new (native().NativePoseLoss)({ det: nativeConfig(m, 10, device), kptShape: [...kptShape], oksSigmas: oks }));
    super(n, m);
    this.kpt_shape = Object.freeze([kptShape[0], kptShape[1]] as const);
    this.sigmas = Float64Array.from(n.sigmas);
  }

  /**
   * @param preds `[feats, kpts]`: level tensors and raw keypoints `[B, K*D, A]`.
   * @param batch `{ batch_idx, cls, bboxes, keypoints [N, K, D] }`.
   */
  protected prepare(preds: PosePreds, batch: PoseBatch): Prepared {
    const [feats, kpts] = checkTuple(preds, ['kpts']) as [Native.NativeTensor[], Native.NativeTensor];
    const b = checkBatch(batch, ['batch_idx', 'cls', 'bboxes', 'keypoints'] as const);
    return {
      args: [feats, kpts, { batchIdx: b.batch_idx, cls: b.cls, bboxes: b.bboxes, keypoints: b.keypoints }],
      preds: [feats, kpts],
    };
  }
}

// ------------------------------------------------------------------------------------------------------------
// v8OBBLoss

/**
 * `v8OBBLoss` (docs/spec.md §13): oriented boxes with the rotated task-aligned assigner (top-10), probIoU box loss, DFL on
 * the axis-aligned target and BCE classification. `loss = B · [box, cls, dfl]`. The angle gradient is with
 * respect to the activated angle θ the head outputs.
 */
export class v8OBBLoss extends DetectionFamilyLoss<OBBPreds, OBBBatch> {
  /** The rotated assigner's top-k (fixed at 10 in the reference). */
  readonly tal_topk = 10;
  readonly #obb: Native.NativeObbLoss;

  /**
   * @param model `nc`, `stride`, `reg_max` (default 16), `args`.
   * @param options `device`: 'cpu' | 'cuda' | 'cuda:N' | 'auto' (default 'auto': where CUDA is usable, the faster of it and the CPU for each call's shapes, else the CPU; see {@link Options}).
   */
  constructor(model: ModelInfo, options?: Options) {
    const [n, m] = family(model, options, 'NativeObbLoss');
    super(n, m);
    this.#obb = n;
  }

  /**
   * @param preds `[feats, angle]`: level tensors and the activated angle `[B, 1, A]`.
   * @param batch `{ batch_idx, cls, bboxes [N, 5] }` (normalized cx, cy, w, h, angle in radians).
   */
  protected prepare(preds: OBBPreds, batch: OBBBatch): Prepared {
    const [feats, angle] = checkTuple(preds, ['angle']) as [Native.NativeTensor[], Native.NativeTensor];
    const b = checkDetectionBatch(batch);
    return { args: [feats, angle, b], preds: [feats, angle] };
  }

  /**
   * `bbox_decode(anchor_points, pred_dist, pred_angle)`: rotated boxes `[B, A, 5]` (cx, cy, w, h, θ) in grid units.
   * @param anchorPoints `[A, 2]`; @param predDist `[B, A, 4*reg_max]`; @param predAngle `[B, A, 1]`.
   */
  bboxDecode(anchorPoints: Tensor, predDist: Tensor, predAngle: Tensor): Tensor {
    const a = checkTensor('anchorPoints', anchorPoints);
    const p = checkTensor('predDist', predDist);
    const t = checkTensor('predAngle', predAngle);
    return callNative(() => this.#obb.bboxDecode(a, p, t));
  }

  /**
   * `preprocess(targets, batch_size, scale_tensor)`: labels `[N, 7]` = (batch_idx, cls, cx, cy, w, h, θ) grouped
   * per image into `[B, M, 6]` = (cls, cx, cy, w, h scaled by (W, H, W, H), θ), zero padded.
   */
  preprocess(targets: Tensor, batchSize: number, scaleTensor: Tensor | number[] | Float32Array): Tensor {
    const t = checkTensor('targets', targets);
    const b = checkBatchSize(batchSize);
    const scale = checkScale(scaleTensor);
    return callNative(() => this.#obb.preprocess(t, b, scale));
  }
}

// ------------------------------------------------------------------------------------------------------------
// v8ClassificationLoss

/**
 * `v8ClassificationLoss` (docs/spec.md §12): mean cross entropy over the batch. `loss` and `lossItems` are the same
 * 1-element value (not multiplied by B).
 */
export class v8ClassificationLoss extends TaskLoss<Tensor, ClassificationBatch> {
  /** @param options `device`: 'cpu' | 'cuda' | 'cuda:N' | 'auto' (default 'auto': where CUDA is usable, the faster of it and the CPU for each call's shapes, else the CPU; see {@link Options}). */
  constructor(options?: Options) {
    const device = checkDevice(options);
    super(callNative(() => new (native().NativeClassificationLoss)(device)));
  }

  /**
   * @param preds logits `[B, nc]`.
   * @param batch `{ cls [B] }` integer class ids.
   */
  protected prepare(preds: Tensor, batch: ClassificationBatch): Prepared {
    const logits = checkTensor('preds', preds);
    const b = checkBatch(batch, ['cls'] as const);
    return { args: [logits, b.cls], preds: logits };
  }
}

// ------------------------------------------------------------------------------------------------------------
// E2EDetectLoss

/**
 * `E2EDetectLoss` (docs/spec.md §14): a one-to-many (top-10) and a one-to-one (top-1) v8DetectionLoss on the two branches
 * of an end-to-end head, summed. `loss = B · [box, cls, dfl]` of both.
 */
export class E2EDetectLoss extends DetectionFamilyLoss<E2EPreds, DetectionBatch> {
  /** Top-k of the one-to-many and the one-to-one assigner. */
  readonly one2many_topk = 10;
  readonly one2one_topk = 1;

  /**
   * @param model `nc`, `stride`, `reg_max` (default 16), `args`.
   * @param options `device`: 'cpu' | 'cuda' | 'cuda:N' | 'auto' (default 'auto': where CUDA is usable, the faster of it and the CPU for each call's shapes, else the CPU; see {@link Options}).
   */
  constructor(model: ModelInfo, options?: Options) {
    super(...family(model, options, 'NativeE2EDetectLoss'));
  }

  /**
   * @param preds `{ one2many, one2one }`, each one tensor per level `[B, 4*reg_max + nc, H_l, W_l]`.
   * @param batch `{ batch_idx, cls, bboxes }`.
   */
  protected prepare(preds: E2EPreds, batch: DetectionBatch): Prepared {
    if (!isObject(preds) || Array.isArray(preds)) {
      throw lossError('ERR_INVALID_ARGUMENT', `preds: expected an object { one2many: Tensor[], one2one: Tensor[] }, got ${describe(preds)}`);
    }
    const o2m = checkFeats(preds.one2many, 'preds.one2many');
    const o2o = checkFeats(preds.one2one, 'preds.one2one');
    const b = checkDetectionBatch(batch);
    // Key order = the binding's order of the prediction tensors: one2many, then one2one.
    return { args: [o2m, o2o, b], preds: { one2many: o2m, one2one: o2o } };
  }
}

// ------------------------------------------------------------------------------------------------------------
// TVPDetectLoss / TVPSegmentLoss

/**
 * `TVPDetectLoss` (docs/spec.md §15.1), YOLOE with visual prompts: `model.nc` is the number of text prompts; class channels
 * beyond them are visual prompts. The text-prompt channels are dropped and the detection loss runs on the
 * visual-prompt ones (labels index the visual-prompt slots). `loss` is the 1-element `B · cls · g_cls`
 * (only the classification component is back-propagated), `lossItems` the detached `[box, cls, dfl]`. Without
 * visual-prompt channels both are `[3]` zeros and every gradient is zero.
 */
export class TVPDetectLoss extends DetectionFamilyLoss<Tensor[], DetectionBatch> {
  readonly tal_topk = 10;
  /** The text-prompt class count, channel count and reg_max at construction (Ultralytics' `ori_*`). */
  readonly ori_nc: number;
  readonly ori_no: number;
  readonly ori_reg_max: number;

  /**
   * @param model `nc` (text prompts), `stride`, `reg_max` (default 16), `args`.
   * @param options `device`: 'cpu' | 'cuda' | 'cuda:N' | 'auto' (default 'auto': where CUDA is usable, the faster of it and the CPU for each call's shapes, else the CPU; see {@link Options}).
   */
  constructor(model: ModelInfo, options?: Options) {
    super(...family(model, options, 'NativeTvpDetectLoss'));
    this.ori_nc = this.nc;
    this.ori_no = this.no;
    this.ori_reg_max = this.reg_max;
  }

  /**
   * @param preds one tensor per level, `[B, 4*reg_max + nc + vnc, H_l, W_l]` (box, text, visual-prompt channels).
   * @param batch `{ batch_idx, cls, bboxes }`, class ids in [0, vnc).
   */
  protected prepare(preds: Tensor[], batch: DetectionBatch): Prepared {
    return prepareLevels(preds, batch);
  }
}

/**
 * `TVPSegmentLoss` (docs/spec.md §15.2) with its **intended** semantics — a documented deviation: in ultralytics 8.3.117
 * every call raises `AttributeError` (the constructor never sets what `__call__` reads). Like TVPDetectLoss on top
 * of v8SegmentationLoss: the text-prompt channels are dropped, the segmentation loss runs on the visual-prompt
 * channels, `loss` is the 1-element cls component `B · cls · g_cls`, `lossItems` the detached
 * `[box, seg, cls, dfl]`; without visual-prompt channels `[4]` zeros. Gradients reach the visual-prompt class
 * channels only (zeros for the box channels, `pred_masks` and `proto`).
 */
export class TVPSegmentLoss extends DetectionFamilyLoss<SegmentationPreds, SegmentationBatch> {
  readonly tal_topk = 10;
  readonly overlap: boolean;
  readonly ori_nc: number;
  readonly ori_no: number;
  readonly ori_reg_max: number;

  /**
   * @param model `nc` (text prompts), `stride`, `reg_max` (default 16), `args` (`overlap_mask`).
   * @param options `device`: 'cpu' | 'cuda' | 'cuda:N' | 'auto' (default 'auto': where CUDA is usable, the faster of it and the CPU for each call's shapes, else the CPU; see {@link Options}).
   */
  constructor(model: ModelInfo, options?: Options) {
    super(...family(model, options, 'NativeTvpSegmentLoss'));
    this.overlap = this.hyp.overlap_mask;
    this.ori_nc = this.nc;
    this.ori_no = this.no;
    this.ori_reg_max = this.reg_max;
  }

  /**
   * @param preds `[feats, pred_masks, proto]` as v8SegmentationLoss, feats with the visual-prompt channels.
   * @param batch `{ batch_idx, cls, bboxes, masks }`, class ids in [0, vnc).
   */
  protected prepare(preds: SegmentationPreds, batch: SegmentationBatch): Prepared {
    return prepareSegmentation(preds, batch);
  }
}
