/**
 * yolo-loss/tfjs: every task loss of yolo-loss as a TensorFlow.js op.
 *
 * `tfjsLoss(criterion)` wraps a loss object (anything with `valueAndGrad(preds, batch)`: v8DetectionLoss and the
 * other task losses) into a function `(preds, batch) => tf.Scalar` whose value is `sum(loss)` (what the Ultralytics
 * trainer back-propagates) and whose gradient, through `tf.customGrad`, is the one `valueAndGrad` computes. So
 *
 *     const loss = tfjsLoss(new v8DetectionLoss({ nc: 4, stride: [8, 16, 32], reg_max: 8 }));
 *     optimizer.minimize(() => loss(model(x), batch));
 *
 * trains a tfjs model. `preds` has the structure the loss expects (docs/api.md) with `tf.Tensor` leaves, laid out as in
 * docs/spec.md §4 (channels first: a level is `[B, 4*reg_max + nc, H, W]`; a tfjs conv net is channels last, so end it with
 * `tf.transpose(y, [0, 3, 1, 2])`). `batch` entries may be `tf.Tensor`s or plain `{ data, shape }` tensors.
 *
 * Copies. The op reads each prediction tensor with `dataSync()` and hands the gradients to tfjs with `tf.tensor()`.
 * On the `cpu` backend both are free: `dataSync()` of a float32 tensor returns the backend's own Float32Array and
 * `tf.tensor(float32Array)` adopts the array, so a step copies no prediction or gradient data at all (the incoming
 * `dy` is applied in place to the gradient arrays, which the op owns). On the `wasm` backend each prediction tensor
 * is copied once out of the WebAssembly heap and each gradient once into it; on `webgl`/`webgpu` they are a download
 * and an upload. The losses' caller-owned form (`valueAndGrad(preds, batch, { out })`) is not used: on `cpu` it
 * would save nothing (tfjs already adopts the fresh arrays), and on `wasm` it could only save the copy into the
 * heap by writing into memory the backend allocates and owns, through its internals (`makeOutput`, raw heap
 * offsets), with gradients that leak whenever the op runs without a backward pass.
 *
 * tfjs is an optional peer dependency of yolo-loss: install `@tensorflow/tfjs` (or `@tensorflow/tfjs-core` and a
 * backend) yourself.
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */

import * as tf from '@tensorflow/tfjs-core';

import {
  E2EDetectLoss,
  TVPDetectLoss,
  TVPSegmentLoss,
  v8ClassificationLoss,
  v8DetectionLoss,
  v8OBBLoss,
  v8PoseLoss,
  v8SegmentationLoss,
  type ErrorCode,
  type Tensor,
  type YoloLossError,
} from '../index';

// ------------------------------------------------------------------------------------------------------------
// Types

/** What the adapter needs from a loss object: `valueAndGrad(preds, batch)` → `{ loss, lossItems, grads }`, with
 * `grads` shaped like `preds`. Every task loss of yolo-loss has it; `call` is used by `evaluate` when present. */
export interface DifferentiableLoss<P = never, B = never> {
  valueAndGrad(preds: P, batch: B): { loss: Float32Array; lossItems: Float32Array; grads: unknown };
  call?(preds: P, batch: B): [loss: Float32Array, lossItems: Float32Array];
}

/**
 * The structure of a loss's `preds`: `'tensor'` one tensor, `'levels'` the per-level list of a Detect head
 * (`[B, 4*reg_max + nc, H_l, W_l]` each), an array for a tuple, an object for a dict.
 */
export type PredsStructure = 'tensor' | 'levels' | readonly PredsStructure[] | { readonly [key: string]: PredsStructure };

/** The `preds` structure of each task loss (docs/api.md), used when `tfjsLoss` is given no structure. */
export const PREDS_STRUCTURE = Object.freeze({
  v8DetectionLoss: 'levels',
  v8SegmentationLoss: ['levels', 'tensor', 'tensor'],
  v8PoseLoss: ['levels', 'tensor'],
  v8OBBLoss: ['levels', 'tensor'],
  v8ClassificationLoss: 'tensor',
  E2EDetectLoss: { one2many: 'levels', one2one: 'levels' },
  TVPDetectLoss: 'levels',
  TVPSegmentLoss: ['levels', 'tensor', 'tensor'],
} as const satisfies Record<string, PredsStructure>);

/** `P` (a structure of plain `Tensor`s) with `tf.Tensor` leaves. */
export type TfjsPreds<P> = P extends Tensor
  ? tf.Tensor
  : P extends readonly unknown[]
    ? { [K in keyof P]: TfjsPreds<P[K]> }
    : P extends object
      ? { [K in keyof P]: TfjsPreds<P[K]> }
      : P;

/** A batch dict whose tensors may also be `tf.Tensor`s (any dtype; integer labels are converted). */
export type TfjsBatch<B> = { [K in keyof B]: B[K] extends Tensor ? Tensor | tf.Tensor : B[K] };

type PredsOf<C> = C extends { valueAndGrad(preds: infer P, batch: infer _B): unknown } ? P : never;
type BatchOf<C> = C extends { valueAndGrad(preds: infer _P, batch: infer B): unknown } ? B : never;

/** The values of the latest call, as plain arrays (for logging). */
export interface LossRecord {
  /** `sum(loss)`: the op's value. */
  total: number;
  /** The loss vector the op sums (`B · [box, cls, dfl]` for detection). */
  loss: Float32Array;
  /** The detached items (`[box, cls, dfl]` for detection): what Ultralytics prints. */
  lossItems: Float32Array;
}

/** The function `tfjsLoss` returns. */
export interface TfjsLoss<C extends DifferentiableLoss<never, never>> {
  /**
   * `sum(loss)` as a scalar tfjs op whose gradient with respect to every tensor of `preds` is `valueAndGrad`'s
   * (times the incoming gradient). Use it inside `optimizer.minimize(() => ...)`, `tf.grads`, `tf.variableGrads`.
   */
  (preds: TfjsPreds<PredsOf<C>>, batch: TfjsBatch<BatchOf<C>>): tf.Scalar;
  /** The wrapped loss object. */
  readonly criterion: C;
  /** The structure `preds` is checked against (undefined: taken from each call's `preds`). */
  readonly structure: PredsStructure | undefined;
  /** The values of the latest call (op or `evaluate`), undefined before the first. */
  readonly last: LossRecord | undefined;
  /** The loss without a gradient (`criterion.call` when it has one): for validation; records `last` too. */
  evaluate(preds: TfjsPreds<PredsOf<C>>, batch: TfjsBatch<BatchOf<C>>): LossRecord;
}

// ------------------------------------------------------------------------------------------------------------
// Errors (the same `code`s as the core's, so `isYoloLossError` recognises them)

function adapterError(code: ErrorCode, message: string): YoloLossError {
  const e = new Error(message) as YoloLossError;
  e.code = code;
  return e;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'undefined';
  if (v instanceof tf.Tensor) return `a ${v.dtype} tf.Tensor of shape [${v.shape.join(', ')}]`;
  if (Array.isArray(v)) return `an array of length ${v.length}`;
  if (ArrayBuffer.isView(v)) return `a ${v.constructor.name}`;
  if (typeof v === 'object') return 'an object';
  return `${typeof v} ${String(v)}`;
}

// ------------------------------------------------------------------------------------------------------------
// Structure: resolve `preds` against the structure into a tree whose leaves are tf.Tensors

type Node =
  | { kind: 'tensor'; index: number }
  | { kind: 'array'; items: Node[] }
  | { kind: 'object'; keys: string[]; items: Node[] };

interface LevelRules {
  /** Number of levels (the criterion's `stride.length`), when known. */
  levels?: number;
  /** Channels per level (the criterion's `no`), when fixed. */
  channels?: number;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof tf.Tensor) && !ArrayBuffer.isView(v);
}

class Resolver {
  readonly leaves: tf.Tensor[] = [];

  constructor(private readonly rules: LevelRules) {}

  leaf(name: string, v: unknown): Node {
    if (!(v instanceof tf.Tensor)) {
      throw adapterError('ERR_INVALID_ARGUMENT', `${name}: expected a tf.Tensor, got ${describe(v)}`);
    }
    if (v.isDisposed) {
      throw adapterError('ERR_INVALID_ARGUMENT', `${name}: expected a live tf.Tensor, got a disposed one`);
    }
    if (v.dtype !== 'float32') {
      throw adapterError('ERR_INVALID_ARGUMENT', `${name}: expected a float32 tf.Tensor, got ${describe(v)}`);
    }
    this.leaves.push(v);
    return { kind: 'tensor', index: this.leaves.length - 1 };
  }

  levels(name: string, v: unknown): Node {
    if (!Array.isArray(v) || v.length === 0) {
      throw adapterError('ERR_INVALID_ARGUMENT', `${name}: expected a non-empty array of level tensors [B, C, H, W], got ${describe(v)}`);
    }
    const { levels, channels } = this.rules;
    if (levels !== undefined && v.length !== levels) {
      throw adapterError('ERR_SHAPE_MISMATCH', `${name}: expected ${levels} level tensors (one per stride), got ${v.length}`);
    }
    let batch = -1;
    const items = v.map((t: unknown, i) => {
      const node = this.leaf(`${name}[${i}]`, t);
      const shape = (t as tf.Tensor).shape;
      if (shape.length !== 4) {
        throw adapterError('ERR_SHAPE_MISMATCH', `${name}[${i}]: expected a rank-4 tensor [B, C, H, W], got shape [${shape.join(', ')}]`);
      }
      if (channels !== undefined && shape[1] !== channels) {
        const hint = shape[3] === channels ? ' (channels last? tfjs convolutions are NHWC: pass tf.transpose(y, [0, 3, 1, 2]))' : '';
        throw adapterError('ERR_SHAPE_MISMATCH', `${name}[${i}]: expected ${channels} channels (4*reg_max + nc) in dimension 1 of [B, C, H, W], got shape [${shape.join(', ')}]${hint}`);
      }
      if (batch >= 0 && shape[0] !== batch) {
        throw adapterError('ERR_SHAPE_MISMATCH', `${name}[${i}]: expected batch size ${batch} like ${name}[0], got shape [${shape.join(', ')}]`);
      }
      batch = shape[0]!;
      return node;
    });
    return { kind: 'array', items };
  }

  resolve(name: string, v: unknown, s: PredsStructure | undefined): Node {
    if (s === undefined) return this.infer(name, v);
    if (s === 'tensor') return this.leaf(name, v);
    if (s === 'levels') return this.levels(name, v);
    if (Array.isArray(s)) {
      const spec = s as readonly PredsStructure[];
      if (!Array.isArray(v) || v.length !== spec.length) {
        throw adapterError('ERR_INVALID_ARGUMENT', `${name}: expected an array of ${spec.length} entries, got ${describe(v)}`);
      }
      return { kind: 'array', items: spec.map((sub, i) => this.resolve(`${name}[${i}]`, v[i], sub)) };
    }
    const spec = s as { readonly [key: string]: PredsStructure };
    if (!isPlainObject(v)) {
      throw adapterError('ERR_INVALID_ARGUMENT', `${name}: expected an object { ${Object.keys(spec).join(', ')} }, got ${describe(v)}`);
    }
    const keys = Object.keys(spec);
    return { kind: 'object', keys, items: keys.map((k) => this.resolve(`${name}.${k}`, v[k], spec[k])) };
  }

  infer(name: string, v: unknown): Node {
    if (Array.isArray(v)) return { kind: 'array', items: v.map((x: unknown, i) => this.infer(`${name}[${i}]`, x)) };
    if (isPlainObject(v)) {
      const keys = Object.keys(v);
      return { kind: 'object', keys, items: keys.map((k) => this.infer(`${name}.${k}`, v[k])) };
    }
    return this.leaf(name, v);
  }
}

/** The structure of `preds` with plain tensors at the leaves. */
function rebuild(node: Node, leaves: readonly Tensor[]): unknown {
  switch (node.kind) {
    case 'tensor':
      return leaves[node.index];
    case 'array':
      return node.items.map((n) => rebuild(n, leaves));
    case 'object': {
      const out: Record<string, unknown> = {};
      node.keys.forEach((k, i) => (out[k] = rebuild(node.items[i]!, leaves)));
      return out;
    }
  }
}

/** The gradient arrays of `grads` (structured like `preds`), in leaf order, checked against the leaves' sizes. */
function gradLeaves(node: Node, grads: unknown, leaves: readonly Tensor[], out: Float32Array[], name = 'grads'): void {
  const broken = (what: string): YoloLossError =>
    adapterError('ERR_INTERNAL', `yolo-loss/tfjs: valueAndGrad returned ${name} as ${what}, not in the structure of preds`);
  switch (node.kind) {
    case 'tensor': {
      const g = grads as Partial<Tensor> | undefined;
      const want = leaves[node.index]!.data.length;
      if (!g || !(g.data instanceof Float32Array) || g.data.length !== want) throw broken(describe(g?.data ?? g));
      out[node.index] = g.data;
      return;
    }
    case 'array':
      if (!Array.isArray(grads) || grads.length !== node.items.length) throw broken(describe(grads));
      node.items.forEach((n, i) => gradLeaves(n, grads[i], leaves, out, `${name}[${i}]`));
      return;
    case 'object':
      if (!isPlainObject(grads)) throw broken(describe(grads));
      node.items.forEach((n, i) => gradLeaves(n, grads[node.keys[i]!], leaves, out, `${name}.${node.keys[i]}`));
      return;
  }
}

/**
 * A tf.Tensor's values as a Float32Array: on the cpu backend the backend's own array (no copy), else one download.
 * The core never writes into its inputs.
 */
function readFloat32(t: tf.Tensor): Float32Array {
  const d = t.dataSync();
  return d instanceof Float32Array ? d : Float32Array.from(d as ArrayLike<number>);
}

/** Batch tensors given as tf.Tensors become plain tensors (integer or bool labels are converted to float32). */
function plainBatch(batch: unknown): unknown {
  if (!isPlainObject(batch)) return batch; // the loss reports what it expected
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(batch)) {
    if (v instanceof tf.Tensor) {
      if (v.isDisposed) throw adapterError('ERR_INVALID_ARGUMENT', `batch.${k}: expected a live tf.Tensor, got a disposed one`);
      if (v.dtype === 'string' || v.dtype === 'complex64') {
        throw adapterError('ERR_INVALID_ARGUMENT', `batch.${k}: expected a numeric tf.Tensor, got ${describe(v)}`);
      }
      out[k] = { data: readFloat32(v), shape: [...v.shape] };
    } else {
      out[k] = v;
    }
  }
  return out;
}

function knownStructure(criterion: unknown): PredsStructure | undefined {
  if (criterion instanceof v8DetectionLoss) return PREDS_STRUCTURE.v8DetectionLoss;
  if (criterion instanceof TVPSegmentLoss) return PREDS_STRUCTURE.TVPSegmentLoss;
  if (criterion instanceof v8SegmentationLoss) return PREDS_STRUCTURE.v8SegmentationLoss;
  if (criterion instanceof v8PoseLoss) return PREDS_STRUCTURE.v8PoseLoss;
  if (criterion instanceof v8OBBLoss) return PREDS_STRUCTURE.v8OBBLoss;
  if (criterion instanceof v8ClassificationLoss) return PREDS_STRUCTURE.v8ClassificationLoss;
  if (criterion instanceof E2EDetectLoss) return PREDS_STRUCTURE.E2EDetectLoss;
  if (criterion instanceof TVPDetectLoss) return PREDS_STRUCTURE.TVPDetectLoss;
  return undefined;
}

function levelRules(criterion: unknown): LevelRules {
  const c = criterion as { stride?: unknown; no?: unknown; ori_no?: unknown };
  const rules: LevelRules = {};
  if (Array.isArray(c.stride)) rules.levels = c.stride.length;
  // TVP losses take any number of prompt channels on top of `no`.
  if (typeof c.no === 'number' && c.ori_no === undefined) rules.channels = c.no;
  return rules;
}

function sum(a: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]!;
  return s;
}

// ------------------------------------------------------------------------------------------------------------
// The op

/**
 * Wraps a yolo-loss loss object as a tfjs op: `tfjsLoss(criterion)(preds, batch)` is the scalar `sum(loss)` with
 * `valueAndGrad`'s gradient.
 *
 * @param criterion any task loss of yolo-loss (or an object with the same `valueAndGrad`).
 * @param structure the structure of its `preds`; default: the task's structure from {@link PREDS_STRUCTURE}, or,
 *   for another object, whatever nesting of arrays and objects each call's `preds` has.
 *
 * `preds` is refused with an `ERR_INVALID_ARGUMENT` error (not a float32 tf.Tensor where one is expected, a
 * different nesting) or an `ERR_SHAPE_MISMATCH` error (a level that is not `[B, no, H, W]`, a level count other
 * than the strides', levels of different batch sizes) before anything runs; the loss then checks every number
 * itself and throws its own coded errors.
 */
export function tfjsLoss<C extends DifferentiableLoss<never, never>>(criterion: C, structure?: PredsStructure): TfjsLoss<C> {
  if (typeof criterion !== 'object' || criterion === null || typeof (criterion as { valueAndGrad?: unknown }).valueAndGrad !== 'function') {
    throw adapterError('ERR_INVALID_ARGUMENT', `criterion: expected a loss object with valueAndGrad(preds, batch), got ${describe(criterion)}`);
  }
  const spec = structure ?? knownStructure(criterion);
  const rules = levelRules(criterion);
  const loss = criterion as unknown as DifferentiableLoss<unknown, unknown>;
  let last: LossRecord | undefined;

  function prepare(preds: unknown): { tree: Node; leaves: tf.Tensor[] } {
    const r = new Resolver(rules);
    const tree = r.resolve('preds', preds, spec);
    return { tree, leaves: r.leaves };
  }

  const op = (preds: unknown, batch: unknown): tf.Scalar => {
    const { tree, leaves } = prepare(preds);
    const b = plainBatch(batch);
    const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
      const inputs = args.slice(0, leaves.length) as tf.Tensor[];
      const plain: Tensor[] = inputs.map((t) => ({ data: readFloat32(t), shape: [...t.shape] }));
      const r = loss.valueAndGrad(rebuild(tree, plain), b);
      const grads = new Array<Float32Array>(plain.length);
      gradLeaves(tree, r.grads, plain, grads);
      const total = sum(r.loss);
      last = { total, loss: r.loss, lossItems: r.lossItems };
      let owned = true;
      return {
        value: tf.scalar(total),
        gradFunc: (dy: tf.Tensor) => {
          // d(scale · sum(loss)) = scale · valueAndGrad's gradient. The arrays are ours: scaled in place and adopted
          // by tf.tensor (no copy on the cpu backend); a second backward pass (higher-order use) works on copies.
          const scale = dy.dataSync()[0]!;
          const out = grads.map((g, i) => {
            const d = owned ? g : g.slice();
            if (scale !== 1) for (let j = 0; j < d.length; j++) d[j]! *= scale;
            return tf.tensor(d, inputs[i]!.shape, 'float32');
          });
          owned = false;
          return out;
        },
      };
    });
    return f(...leaves) as tf.Scalar;
  };

  const evaluate = (preds: unknown, batch: unknown): LossRecord => {
    const { tree, leaves } = prepare(preds);
    const plain = rebuild(tree, leaves.map((t) => ({ data: readFloat32(t), shape: [...t.shape] })));
    const b = plainBatch(batch);
    let l: Float32Array;
    let items: Float32Array;
    if (typeof loss.call === 'function') {
      [l, items] = loss.call(plain, b);
    } else {
      ({ loss: l, lossItems: items } = loss.valueAndGrad(plain, b));
    }
    last = { total: sum(l), loss: l, lossItems: items };
    return last;
  };

  Object.defineProperties(op, {
    criterion: { value: criterion, enumerable: true },
    structure: { value: spec, enumerable: true },
    last: { get: () => last, enumerable: true },
    evaluate: { value: evaluate, enumerable: true },
  });
  return op as unknown as TfjsLoss<C>;
}
