/**
 * yolo-loss: the training losses of Ultralytics YOLO as a native Node.js library.
 *
 * This file is the public TypeScript facade (the package's entry point). It checks the JavaScript-level
 * structure of its arguments (cheap: types, shapes, lengths), fills in defaults, and calls the native binding
 * (`crates/node`), which calls the Rust core. The core validates every number. Names follow Ultralytics
 * (`v8DetectionLoss`, `batch_idx`, `reg_max`, ...); methods of our own are camelCase (`__call__` → `call`).
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */

import * as path from 'node:path';
import { types as utilTypes } from 'node:util';

import type * as Native from './native/binding';

// ------------------------------------------------------------------------------------------------------------
// Public types (API.md)

/** A row-major float32 tensor: `data.length === product(shape)`. Plain objects are accepted. */
export interface Tensor {
  data: Float32Array;
  shape: number[];
}

/** The hyperparameters read from `model.args` (Ultralytics `default.yaml`). */
export interface Hyp {
  box: number;
  cls: number;
  dfl: number;
  pose: number;
  kobj: number;
  overlap_mask: boolean;
}

/** What Ultralytics reads from `model`. */
export interface ModelInfo {
  /** Number of classes (head.nc). */
  nc: number;
  /** Stride of each level, e.g. `[8, 16, 32]`. */
  stride: number[];
  /** Default 16; 1 disables DFL. */
  reg_max?: number;
  /** Pose only, e.g. `[17, 3]`. */
  kpt_shape?: [number, number];
  /** Hyperparameters; missing keys take the `default.yaml` values. Other keys are ignored. */
  args?: Partial<Hyp>;
}

export type Device = 'cpu' | 'cuda' | 'auto';

export interface Options {
  /** Default 'auto': CUDA when usable, else CPU. 'cuda' throws `ERR_CUDA_UNAVAILABLE` when it cannot run. */
  device?: Device;
}

/** The `batch` dict of a detection loss (extra keys such as `img` or `masks` are ignored). */
export interface DetectionBatch {
  batch_idx: Tensor;
  cls: Tensor;
  bboxes: Tensor;
  [key: string]: unknown;
}

/** `valueAndGrad`'s result: `grads[i]` is d sum(loss) / d preds[i], shaped like `preds[i]`. */
export interface DetectionValueAndGrad {
  loss: Float32Array;
  lossItems: Float32Array;
  grads: Tensor[];
}

/** The stable `code` of every error this library throws. */
export type ErrorCode =
  | 'ERR_SHAPE_MISMATCH'
  | 'ERR_LABEL_OUT_OF_RANGE'
  | 'ERR_NON_FINITE'
  | 'ERR_INVALID_ARGUMENT'
  | 'ERR_CUDA_UNAVAILABLE'
  | 'ERR_CUDA_OUT_OF_MEMORY'
  | 'ERR_INTERNAL';

/** An `Error` thrown (or rejected with) by this library. */
export interface YoloLossError extends Error {
  code: ErrorCode;
}

/** Whether `e` is an error of this library (an `Error` with one of our codes). */
export function isYoloLossError(e: unknown): e is YoloLossError {
  if (!(e instanceof Error)) return false;
  const code: unknown = (e as Error & { code?: unknown }).code;
  return typeof code === 'string' && ERROR_CODES.has(code);
}

const ERROR_CODES: ReadonlySet<string> = new Set<ErrorCode>([
  'ERR_SHAPE_MISMATCH',
  'ERR_LABEL_OUT_OF_RANGE',
  'ERR_NON_FINITE',
  'ERR_INVALID_ARGUMENT',
  'ERR_CUDA_UNAVAILABLE',
  'ERR_CUDA_OUT_OF_MEMORY',
  'ERR_INTERNAL',
]);

/** `default.yaml` values of the keys the losses read. */
export const DEFAULT_HYP: Readonly<Hyp> = Object.freeze({
  box: 7.5,
  cls: 0.5,
  dfl: 1.5,
  pose: 12.0,
  kobj: 1.0,
  overlap_mask: true,
});

// ------------------------------------------------------------------------------------------------------------
// The native binding

function packageRoot(): string {
  // dist/index.js after the build; index.ts itself when run from source (tsx).
  return path.basename(__dirname) === 'dist' ? path.dirname(__dirname) : __dirname;
}

let nativeBinding: typeof Native | undefined;

function native(): typeof Native {
  if (nativeBinding === undefined) {
    const file = path.join(packageRoot(), 'native', 'yolo-loss.node');
    try {
      nativeBinding = require(file) as typeof Native;
    } catch (cause) {
      throw lossError(
        'ERR_INTERNAL',
        `yolo-loss: cannot load the native binding ${file} (build it with \`npm run build\`): ${String(cause)}`,
      );
    }
  }
  return nativeBinding;
}

/** What the CUDA probe of this build says: `{ available, deviceName?, reason? }`. Never throws. */
export function cudaAvailability(): { available: boolean; deviceName?: string; reason?: string } {
  const a = native().cudaAvailability();
  return a.available ? { available: true, deviceName: a.deviceName ?? '' } : { available: false, reason: a.reason ?? '' };
}

// ------------------------------------------------------------------------------------------------------------
// Cheap structural validation (the core validates the numbers)

function lossError(code: ErrorCode, message: string): YoloLossError {
  const e = new Error(message) as YoloLossError;
  e.code = code;
  return e;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return `an array of length ${v.length}`;
  if (ArrayBuffer.isView(v)) return `a ${v.constructor.name}`;
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)}`;
  return `${typeof v} ${String(v)}`;
}

function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null;
}

/** Checks `{ data: Float32Array, shape: number[] }` with `data.length === product(shape)`; returns a clean copy of
 * the structure (same data array, copied shape). */
function checkTensor(name: string, t: unknown): Native.NativeTensor {
  if (!isObject(t) || Array.isArray(t) || ArrayBuffer.isView(t)) {
    throw lossError('ERR_INVALID_ARGUMENT', `${name}: expected a tensor { data: Float32Array, shape: number[] }, got ${describe(t)}`);
  }
  const { data, shape } = t;
  if (!utilTypes.isFloat32Array(data)) {
    throw lossError('ERR_INVALID_ARGUMENT', `${name}.data: expected a Float32Array, got ${describe(data)}`);
  }
  if (!Array.isArray(shape)) {
    throw lossError('ERR_INVALID_ARGUMENT', `${name}.shape: expected an array of dimensions, got ${describe(shape)}`);
  }
  let product = 1;
  const dims: number[] = new Array<number>(shape.length);
  for (let i = 0; i < shape.length; i++) {
    const d: unknown = shape[i];
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
      throw lossError('ERR_SHAPE_MISMATCH', `${name}.shape[${i}]: expected a non-negative integer dimension, got ${describe(d)}`);
    }
    dims[i] = d;
    product *= d;
  }
  if (product !== data.length) {
    throw lossError(
      'ERR_SHAPE_MISMATCH',
      `${name}: expected data of length ${product} (product of shape ${fmtShape(dims)}), got ${data.length}`,
    );
  }
  return { data, shape: dims };
}

function checkDetectionBatch(batch: unknown): Native.NativeDetBatch {
  if (!isObject(batch) || Array.isArray(batch)) {
    throw lossError('ERR_INVALID_ARGUMENT', `batch: expected an object { batch_idx, cls, bboxes }, got ${describe(batch)}`);
  }
  for (const key of ['batch_idx', 'cls', 'bboxes']) {
    if (!(key in batch)) {
      throw lossError('ERR_INVALID_ARGUMENT', `batch.${key}: expected a tensor, got nothing (the key is missing)`);
    }
  }
  return {
    batchIdx: checkTensor('batch.batch_idx', batch['batch_idx']),
    cls: checkTensor('batch.cls', batch['cls']),
    bboxes: checkTensor('batch.bboxes', batch['bboxes']),
  };
}

function checkFeats(preds: unknown): Native.NativeTensor[] {
  if (!Array.isArray(preds)) {
    throw lossError('ERR_INVALID_ARGUMENT', `preds: expected an array of tensors (one per level), got ${describe(preds)}`);
  }
  return preds.map((t: unknown, i) => checkTensor(`preds[${i}]`, t));
}

function checkPositiveInt(name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) {
    throw lossError('ERR_INVALID_ARGUMENT', `${name}: expected a positive integer, got ${describe(v)}`);
  }
  return v;
}

function checkHyp(args: unknown): Hyp {
  if (args === undefined || args === null) return { ...DEFAULT_HYP };
  if (!isObject(args) || Array.isArray(args)) {
    throw lossError('ERR_INVALID_ARGUMENT', `model.args: expected an object of hyperparameters, got ${describe(args)}`);
  }
  const hyp: Hyp = { ...DEFAULT_HYP };
  for (const key of ['box', 'cls', 'dfl', 'pose', 'kobj'] as const) {
    const v = args[key];
    if (v === undefined) continue;
    if (typeof v !== 'number' || !Number.isFinite(v)) {
      throw lossError('ERR_INVALID_ARGUMENT', `model.args.${key}: expected a finite number, got ${describe(v)}`);
    }
    hyp[key] = v;
  }
  const om = args['overlap_mask'];
  if (om !== undefined) {
    if (typeof om !== 'boolean') {
      throw lossError('ERR_INVALID_ARGUMENT', `model.args.overlap_mask: expected a boolean, got ${describe(om)}`);
    }
    hyp.overlap_mask = om;
  }
  return hyp;
}

function checkModel(model: unknown): { nc: number; stride: number[]; reg_max: number; hyp: Hyp } {
  if (!isObject(model) || Array.isArray(model)) {
    throw lossError('ERR_INVALID_ARGUMENT', `model: expected { nc, stride, reg_max?, args? }, got ${describe(model)}`);
  }
  const nc = checkPositiveInt('model.nc', model['nc']);
  const s = model['stride'];
  if (!Array.isArray(s) && !utilTypes.isTypedArray(s)) {
    throw lossError('ERR_INVALID_ARGUMENT', `model.stride: expected an array of level strides, got ${describe(s)}`);
  }
  const stride = Array.from(s as ArrayLike<unknown>, (v, i) => {
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
      throw lossError('ERR_INVALID_ARGUMENT', `model.stride[${i}]: expected a positive number, got ${describe(v)}`);
    }
    return v;
  });
  if (stride.length === 0) {
    throw lossError('ERR_INVALID_ARGUMENT', 'model.stride: expected at least one level stride, got an empty array');
  }
  const reg_max = model['reg_max'] === undefined ? 16 : checkPositiveInt('model.reg_max', model['reg_max']);
  return { nc, stride, reg_max, hyp: checkHyp(model['args']) };
}

function checkDevice(options: unknown): Device {
  if (options === undefined || options === null) return 'auto';
  if (!isObject(options)) {
    throw lossError('ERR_INVALID_ARGUMENT', `options: expected an object { device? }, got ${describe(options)}`);
  }
  const d = options['device'];
  if (d === undefined) return 'auto';
  if (d !== 'cpu' && d !== 'cuda' && d !== 'auto') {
    throw lossError('ERR_INVALID_ARGUMENT', `options.device: expected 'cpu', 'cuda' or 'auto', got ${describe(d)}`);
  }
  return d;
}

/** Errors from the binding already carry `code`; anything else (a napi conversion failure) becomes ERR_INTERNAL. */
function rethrow(e: unknown): never {
  if (isYoloLossError(e)) throw e;
  const err = lossError('ERR_INTERNAL', `yolo-loss: unexpected error from the native binding: ${e instanceof Error ? e.message : String(e)}`);
  (err as Error & { cause?: unknown }).cause = e;
  throw err;
}

function withShapes(grads: Float32Array[], preds: readonly Native.NativeTensor[]): Tensor[] {
  if (grads.length !== preds.length) {
    throw lossError('ERR_INTERNAL', `valueAndGrad: the core returned ${grads.length} gradients for ${preds.length} prediction tensors`);
  }
  return grads.map((data, i) => ({ data, shape: [...preds[i]!.shape] }));
}

// ------------------------------------------------------------------------------------------------------------
// v8DetectionLoss

/**
 * `v8DetectionLoss` of Ultralytics (SPEC §9): CIoU box loss, BCE classification loss and DFL, with the
 * task-aligned assigner. `call` mirrors `__call__`; `valueAndGrad` adds the gradient of `sum(loss)` with respect
 * to every prediction tensor.
 */
export class v8DetectionLoss {
  /** Number of classes. */
  readonly nc: number;
  /** Outputs per anchor: `nc + 4 * reg_max`. */
  readonly no: number;
  readonly reg_max: number;
  /** Whether DFL is used (`reg_max > 1`). */
  readonly use_dfl: boolean;
  readonly stride: readonly number[];
  readonly hyp: Readonly<Hyp>;
  readonly tal_topk: number;

  readonly #native: Native.NativeDetectionLoss;

  /**
   * @param model what Ultralytics reads from the model: `nc`, `stride`, `reg_max` (default 16), `args`.
   * @param tal_topk top-k of the task-aligned assigner (default 10).
   * @param options `device`: 'cpu' | 'cuda' | 'auto' (default 'auto').
   */
  constructor(model: ModelInfo, tal_topk = 10, options?: Options) {
    const m = checkModel(model);
    const topk = checkPositiveInt('tal_topk', tal_topk);
    const device = checkDevice(options);
    this.nc = m.nc;
    this.reg_max = m.reg_max;
    this.no = m.nc + 4 * m.reg_max;
    this.use_dfl = m.reg_max > 1;
    this.stride = Object.freeze([...m.stride]);
    this.hyp = Object.freeze({ ...m.hyp });
    this.tal_topk = topk;
    const N = native();
    try {
      this.#native = new N.NativeDetectionLoss({
        nc: m.nc,
        regMax: m.reg_max,
        strides: [...m.stride],
        talTopk: topk,
        hyp: {
          boxGain: m.hyp.box,
          cls: m.hyp.cls,
          dfl: m.hyp.dfl,
          pose: m.hyp.pose,
          kobj: m.hyp.kobj,
          overlapMask: m.hyp.overlap_mask,
        },
        device,
      });
    } catch (e) {
      rethrow(e);
    }
  }

  /** The backend that runs the computation: 'cpu' or 'cuda'. */
  get device(): 'cpu' | 'cuda' {
    return this.#native.device === 'cuda' ? 'cuda' : 'cpu';
  }

  /**
   * `__call__(preds, batch)`: `[loss, lossItems]`, `loss = B · [box·g_box, cls·g_cls, dfl·g_dfl]` (what the
   * trainer sums and back-propagates), `lossItems` the same without the ×B.
   * @param preds one tensor per level, `[B, 4*reg_max + nc, H_l, W_l]`.
   * @param batch `{ batch_idx [N], cls [N,1], bboxes [N,4] }` (normalized cx, cy, w, h).
   */
  call(preds: Tensor[], batch: DetectionBatch): [loss: Float32Array, lossItems: Float32Array] {
    const feats = checkFeats(preds);
    const b = checkDetectionBatch(batch);
    let out: Native.NativeLossOutput;
    try {
      out = this.#native.call(feats, b);
    } catch (e) {
      rethrow(e);
    }
    return [out.loss, out.lossItems];
  }

  /** `call` plus the gradient of `sum(loss)` with respect to every tensor of `preds`, shaped like it. */
  valueAndGrad(preds: Tensor[], batch: DetectionBatch): DetectionValueAndGrad {
    const feats = checkFeats(preds);
    const b = checkDetectionBatch(batch);
    let out: Native.NativeLossOutput;
    try {
      out = this.#native.valueAndGrad(feats, b);
    } catch (e) {
      rethrow(e);
    }
    return { loss: out.loss, lossItems: out.lossItems, grads: withShapes(out.grads, feats) };
  }

  /**
   * `call` on the libuv thread pool. The inputs are copied before this returns, so the caller may reuse its
   * buffers at once. Bad input rejects with the same errors `call` throws.
   */
  async callAsync(preds: Tensor[], batch: DetectionBatch): Promise<[loss: Float32Array, lossItems: Float32Array]> {
    const feats = checkFeats(preds);
    const b = checkDetectionBatch(batch);
    let out: Native.NativeLossOutput;
    try {
      out = await this.#native.callAsync(feats, b);
    } catch (e) {
      rethrow(e);
    }
    return [out.loss, out.lossItems];
  }

  /** `valueAndGrad` on the libuv thread pool (inputs copied before this returns). */
  async valueAndGradAsync(preds: Tensor[], batch: DetectionBatch): Promise<DetectionValueAndGrad> {
    const feats = checkFeats(preds);
    const b = checkDetectionBatch(batch);
    let out: Native.NativeLossOutput;
    try {
      out = await this.#native.valueAndGradAsync(feats, b);
    } catch (e) {
      rethrow(e);
    }
    return { loss: out.loss, lossItems: out.lossItems, grads: withShapes(out.grads, feats) };
  }

  /**
   * `bbox_decode(anchor_points, pred_dist)`: expected distances (softmax over the `reg_max` bins when DFL is on)
   * turned into xyxy boxes around the anchors, in grid units.
   * @param anchorPoints `[A, 2]` anchor centres (grid units of their level).
   * @param predDist `[B, A, 4*reg_max]` box-distribution logits, side-major.
   * @returns `[B, A, 4]`.
   */
  bboxDecode(anchorPoints: Tensor, predDist: Tensor): Tensor {
    const a = checkTensor('anchorPoints', anchorPoints);
    const p = checkTensor('predDist', predDist);
    try {
      return this.#native.bboxDecode(a, p);
    } catch (e) {
      rethrow(e);
    }
  }

  /**
   * `preprocess(targets, batch_size, scale_tensor)`: labels `[N, 6]` = (batch_idx, cls, cx, cy, w, h) grouped per
   * image into `[B, M, 5]` = (cls, x1, y1, x2, y2) scaled by `scaleTensor` (W, H, W, H), zero padded.
   */
  preprocess(targets: Tensor, batchSize: number, scaleTensor: Tensor | number[] | Float32Array): Tensor {
    const t = checkTensor('targets', targets);
    if (typeof batchSize !== 'number' || !Number.isSafeInteger(batchSize) || batchSize < 0) {
      throw lossError('ERR_INVALID_ARGUMENT', `batchSize: expected a non-negative integer, got ${describe(batchSize)}`);
    }
    let scale: number[];
    if (Array.isArray(scaleTensor) || utilTypes.isFloat32Array(scaleTensor)) {
      scale = Array.from(scaleTensor as ArrayLike<unknown>, (v, i) => {
        if (typeof v !== 'number') {
          throw lossError('ERR_INVALID_ARGUMENT', `scaleTensor[${i}]: expected a number, got ${describe(v)}`);
        }
        return v;
      });
    } else {
      scale = Array.from(checkTensor('scaleTensor', scaleTensor).data);
    }
    if (scale.length !== 4) {
      throw lossError('ERR_SHAPE_MISMATCH', `scaleTensor: expected 4 values (W, H, W, H), got ${scale.length}`);
    }
    try {
      return native().preprocess(t, batchSize, scale);
    } catch (e) {
      rethrow(e);
    }
  }
}
