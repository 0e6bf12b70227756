/**
 * Shared pieces of the facade: the public types of docs/api.md, the error type, the native binding loader and the
 * cheap structural validation every class runs before it calls the binding (the core validates the numbers).
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */

import * as path from 'node:path';
import { types as utilTypes } from 'node:util';

import type * as Native from '../native/binding';
import { loadBinding } from './loader';

// ------------------------------------------------------------------------------------------------------------
// Public types (docs/api.md)

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

/** 'cuda' is 'cuda:0'; 'cuda:N' is the GPU of CUDA ordinal N (after CUDA_VISIBLE_DEVICES), as `cudaAvailability().devices` lists them. */
export type Device = 'cpu' | 'cuda' | `cuda:${number}` | 'auto';

export interface Options {
  /**
   * Default 'auto'. Every loss has a CUDA backend (v8DetectionLoss, E2EDetectLoss, TVPDetectLoss,
   * v8SegmentationLoss, TVPSegmentLoss, v8PoseLoss, v8OBBLoss and v8ClassificationLoss).
   *
   * 'auto': where CUDA is usable on cuda:0 (`cudaAvailability()`) and the configuration is within the CUDA backend's
   * limits (detection family: tal_topk ≤ 32, at most 8 levels), the instance holds both backends and runs each call
   * on the faster one for its shapes: the first calls of each shape key (the prediction tensors' shapes, the label
   * count's power-of-two bucket, for segmentation the mask size) alternate CPU, CUDA, ... three each, timed
   * wall-clock; the faster (fastest of its three) then runs every later call of that key (`deviceFor` says which).
   * The two agree within the fixture tolerance but not to the bit, so a key's first six calls may differ in the last
   * bits from later ones; 'cpu' or 'cuda' give fixed bits from the first call. Without a usable GPU (or beyond the
   * CUDA limits) 'auto' is the CPU alone, with no timing at all.
   *
   * 'cuda' / 'cuda:N' throws `ERR_CUDA_UNAVAILABLE` (with the reason; for a GPU that is not there, how many there
   * are) when it cannot run. Any other string is `ERR_INVALID_ARGUMENT`. `device` on the instance says what runs
   * ('cpu', 'cuda' or 'auto'), `lastDevice` which backend the latest call ran on.
   */
  device?: Device;
}

/** The `batch` dict of a detection loss (extra keys such as `img` or `masks` are ignored). */
export interface DetectionBatch {
  batch_idx: Tensor;
  cls: Tensor;
  bboxes: Tensor;
  [key: string]: unknown;
}

/** What `valueAndGrad` returns: the two values of `call` plus `grads`, shaped like `preds` (same nesting). */
export interface ValueAndGrad<G> {
  loss: Float32Array;
  lossItems: Float32Array;
  /** d sum(loss) / d preds, with the structure of `preds`; every tensor shaped like its prediction tensor. */
  grads: G;
}

/** The stable `code` of every error this library throws. */
export type ErrorCode =
  | 'ERR_SHAPE_MISMATCH'
  | 'ERR_LABEL_OUT_OF_RANGE'
  | 'ERR_NON_FINITE'
  | 'ERR_INVALID_ARGUMENT'
  | 'ERR_CUDA_UNAVAILABLE'
  | 'ERR_CUDA_OUT_OF_MEMORY'
  | 'ERR_INTERNAL'
  | 'ERR_NATIVE_BINDING';

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
  'ERR_NATIVE_BINDING',
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
  // This file is src/common.ts (run from source with tsx) or dist/src/common.js (built).
  let dir = __dirname;
  if (path.basename(dir) === 'src') dir = path.dirname(dir);
  if (path.basename(dir) === 'dist') dir = path.dirname(dir);
  return dir;
}

let nativeBinding: typeof Native | undefined;

/** The native addon, loaded on first use (once per thread: every worker thread loads its own instance). Where it
 * comes from (a local build, the platform package) is `src/loader.ts`'s business. */
export function native(): typeof Native {
  if (nativeBinding === undefined) {
    nativeBinding = loadBinding(packageRoot()).binding as typeof Native;
  }
  return nativeBinding;
}

/** Where a GPU's kernels come from. */
export interface CudaKernels {
  /** 'sass': this build's machine code for the GPU, loaded as it is; 'ptx': JIT-compiled by the driver (a GPU newer than the build). */
  source: 'sass' | 'ptx';
  /** The part of the kernels' fatbin that runs: 'sm_90' (SASS) or 'compute_121' (PTX). */
  target: string;
  /** true once the GPU has been opened in this process and a loaded kernel said so; false: derived from the compute capability. */
  confirmed: boolean;
}

/** One GPU the driver reports. */
export interface CudaDevice {
  /** `device: 'cuda:<ordinal>'`. */
  ordinal: number;
  name: string;
  /** e.g. '8.6'. */
  computeCapability: string;
  totalMemoryBytes: number;
  /** Whether the CUDA backend can run on it; if not, `reason` says why. */
  usable: boolean;
  reason?: string;
  /** Absent when none of this build's kernels runs on it. */
  kernels?: CudaKernels;
}

/**
 * What the CUDA probe of this build says. `available`, `deviceName` / `reason`, `computeCapability` and `kernels`
 * are about cuda:0 (what 'cuda' and 'auto' use); `devices` lists every GPU; `sassArchitectures` are the GPU
 * architectures this build carries machine code for.
 */
export interface CudaAvailability {
  available: boolean;
  deviceName?: string;
  reason?: string;
  computeCapability?: string;
  kernels?: CudaKernels;
  /** The newest CUDA version the installed driver supports, e.g. '13.0'; absent without a driver. */
  driverVersion?: string;
  sassArchitectures: string[];
  devices: CudaDevice[];
}

/** What the CUDA probe of this build says (see `CudaAvailability`). Never throws. */
export function cudaAvailability(): CudaAvailability {
  const a = native().cudaAvailability();
  const kernels = (k: Native.NativeCudaKernels | undefined | null): { kernels?: CudaKernels } =>
    k ? { kernels: { source: k.source === 'ptx' ? 'ptx' : 'sass', target: k.target, confirmed: k.confirmed } } : {};
  const devices: CudaDevice[] = a.devices.map((d) => ({
    ordinal: d.ordinal,
    name: d.name,
    computeCapability: d.computeCapability,
    totalMemoryBytes: d.totalMemoryBytes,
    usable: d.usable,
    ...(d.reason != null ? { reason: d.reason } : {}),
    ...kernels(d.kernels),
  }));
  return {
    available: a.available,
    ...(a.available ? { deviceName: a.deviceName ?? '' } : { reason: a.reason ?? '' }),
    ...(a.computeCapability != null ? { computeCapability: a.computeCapability } : {}),
    ...kernels(a.kernels),
    ...(a.driverVersion != null ? { driverVersion: a.driverVersion } : {}),
    sassArchitectures: a.sassArchitectures,
    devices,
  };
}

// ------------------------------------------------------------------------------------------------------------
// Cheap structural validation (the core validates the numbers)

export function lossError(code: ErrorCode, message: string): YoloLossError {
  const e = new Error(message) as YoloLossError;
  e.code = code;
  return e;
}

export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'nothing (undefined)';
  if (Array.isArray(v)) return `an array of length ${v.length}`;
  if (ArrayBuffer.isView(v)) return `a ${v.constructor.name}`;
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)}`;
  return `${typeof v} ${String(v)}`;
}

export function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null;
}

/** Checks `{ data: Float32Array, shape: number[] }` with `data.length === product(shape)`; returns a clean copy of
 * the structure (same data array, copied shape). */
export function checkTensor(name: string, t: unknown): Native.NativeTensor {
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

/** `undefined`/`null` → undefined, else a checked tensor. */
export function checkOptionalTensor(name: string, t: unknown): Native.NativeTensor | undefined {
  return t === undefined || t === null ? undefined : checkTensor(name, t);
}

/** A batch dict: an object that has every key of `keys`, each a tensor. Returns the checked tensors by key. */
export function checkBatch<K extends string>(batch: unknown, keys: readonly K[]): Record<K, Native.NativeTensor> {
  if (!isObject(batch) || Array.isArray(batch)) {
    throw lossError('ERR_INVALID_ARGUMENT', `batch: expected an object { ${keys.join(', ')} }, got ${describe(batch)}`);
  }
  for (const key of keys) {
    if (!(key in batch)) {
      throw lossError('ERR_INVALID_ARGUMENT', `batch.${key}: expected a tensor, got nothing (the key is missing)`);
    }
  }
  const out = {} as Record<K, Native.NativeTensor>;
  for (const key of keys) out[key] = checkTensor(`batch.${key}`, batch[key]);
  return out;
}

export function checkDetectionBatch(batch: unknown): Native.NativeDetBatch {
  const b = checkBatch(batch, ['batch_idx', 'cls', 'bboxes'] as const);
  return { batchIdx: b.batch_idx, cls: b.cls, bboxes: b.bboxes };
}

/** A list of level tensors named `name[0]`, `name[1]`, ... */
export function checkFeats(preds: unknown, name = 'preds'): Native.NativeTensor[] {
  if (!Array.isArray(preds)) {
    throw lossError('ERR_INVALID_ARGUMENT', `${name}: expected an array of tensors (one per level), got ${describe(preds)}`);
  }
  return preds.map((t: unknown, i) => checkTensor(`${name}[${i}]`, t));
}

/** A tuple of predictions `[feats: Tensor[], ...tensors]` (segmentation, pose, OBB). */
export function checkTuple(preds: unknown, names: readonly string[]): [Native.NativeTensor[], ...Native.NativeTensor[]] {
  const layout = `[feats: Tensor[], ${names.map((n) => `${n}: Tensor`).join(', ')}]`;
  if (!Array.isArray(preds) || preds.length !== names.length + 1) {
    throw lossError('ERR_INVALID_ARGUMENT', `preds: expected ${layout}, got ${describe(preds)}`);
  }
  if (!Array.isArray(preds[0])) {
    throw lossError('ERR_INVALID_ARGUMENT', `preds[0]: expected feats, an array of level tensors (preds is ${layout}), got ${describe(preds[0])}`);
  }
  const feats = checkFeats(preds[0], 'feats');
  return [feats, ...names.map((n, i) => checkTensor(n, preds[i + 1]))];
}

export function checkPositiveInt(name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) {
    throw lossError('ERR_INVALID_ARGUMENT', `${name}: expected a positive integer, got ${describe(v)}`);
  }
  return v;
}

export function checkFiniteNumber(name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    throw lossError('ERR_INVALID_ARGUMENT', `${name}: expected a finite number, got ${describe(v)}`);
  }
  return v;
}

export function checkBoolean(name: string, v: unknown): boolean {
  if (typeof v !== 'boolean') {
    throw lossError('ERR_INVALID_ARGUMENT', `${name}: expected a boolean, got ${describe(v)}`);
  }
  return v;
}

/** A list of finite numbers given as an array, a typed array or a tensor. */
export function checkNumbers(name: string, v: unknown): number[] {
  let values: ArrayLike<unknown>;
  if (Array.isArray(v) || utilTypes.isTypedArray(v)) values = v as ArrayLike<unknown>;
  else if (isObject(v) && 'data' in v) values = checkTensor(name, v).data;
  else throw lossError('ERR_INVALID_ARGUMENT', `${name}: expected an array of numbers, got ${describe(v)}`);
  return Array.from(values, (x, i) => {
    if (typeof x !== 'number' && typeof x !== 'bigint') {
      throw lossError('ERR_INVALID_ARGUMENT', `${name}[${i}]: expected a number, got ${describe(x)}`);
    }
    return Number(x);
  });
}

export function checkHyp(args: unknown): Hyp {
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

/** The checked model description of the detection family. */
export interface CheckedModel {
  nc: number;
  stride: number[];
  reg_max: number;
  hyp: Hyp;
}

export function checkModel(model: unknown): CheckedModel {
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

export function checkDevice(options: unknown): Device {
  if (options === undefined || options === null) return 'auto';
  if (!isObject(options)) {
    throw lossError('ERR_INVALID_ARGUMENT', `options: expected an object { device? }, got ${describe(options)}`);
  }
  const d = options['device'];
  if (d === undefined) return 'auto';
  // The binding parses it again (and refuses an N too large for an integer): the same rule and message.
  if (typeof d !== 'string' || !/^(cpu|cuda|auto|cuda:[0-9]+)$/.test(d)) {
    throw lossError(
      'ERR_INVALID_ARGUMENT',
      `options.device: expected 'cpu', 'cuda', 'cuda:N' (N a GPU ordinal: 0, 1, ...) or 'auto', got ${describe(d)}`,
    );
  }
  return d as Device;
}

/** The configuration object every native detection-family loss takes. */
export function nativeConfig(m: CheckedModel, talTopk: number, device: Device): Native.NativeDetectionConfig {
  return {
    nc: m.nc,
    regMax: m.reg_max,
    strides: [...m.stride],
    talTopk,
    hyp: {
      boxGain: m.hyp.box,
      cls: m.hyp.cls,
      dfl: m.hyp.dfl,
      pose: m.hyp.pose,
      kobj: m.hyp.kobj,
      overlapMask: m.hyp.overlap_mask,
    },
    device,
  };
}

/** Errors from the binding already carry `code`; anything else (a napi conversion failure) becomes ERR_INTERNAL. */
export function rethrow(e: unknown): never {
  if (isYoloLossError(e)) throw e;
  const err = lossError('ERR_INTERNAL', `yolo-loss: unexpected error from the native binding: ${e instanceof Error ? e.message : String(e)}`);
  (err as Error & { cause?: unknown }).cause = e;
  throw err;
}

/** Runs `f`, passing our errors through and turning any other exception into ERR_INTERNAL. */
export function callNative<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    rethrow(e);
  }
}

/** The `scaleTensor` argument of `preprocess`: 4 numbers (W, H, W, H) as an array, a Float32Array or a tensor. */
export function checkScale(scaleTensor: unknown): number[] {
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
  return scale;
}

export function checkBatchSize(batchSize: unknown): number {
  if (typeof batchSize !== 'number' || !Number.isSafeInteger(batchSize) || batchSize < 0) {
    throw lossError('ERR_INVALID_ARGUMENT', `batchSize: expected a non-negative integer, got ${describe(batchSize)}`);
  }
  return batchSize;
}
