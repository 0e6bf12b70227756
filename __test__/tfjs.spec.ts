/**
 * yolo-loss/tfjs: the tfjs op's value is sum(loss) and its gradient is valueAndGrad's (scaled by the incoming dy),
 * for every task loss; data is shared with tfjs, not copied, on the cpu backend; preds that do not fit are refused.
 */
import * as tf from '@tensorflow/tfjs';
import test, { type ExecutionContext } from 'ava';
import {
  E2EDetectLoss,
  TVPDetectLoss,
  TVPSegmentLoss,
  isYoloLossError,
  v8ClassificationLoss,
  v8DetectionLoss,
  v8OBBLoss,
  v8PoseLoss,
  v8SegmentationLoss,
  type DetectionBatch,
  type Tensor,
} from 'yolo-loss';
import { PREDS_STRUCTURE, tfjsLoss, type DifferentiableLoss, type LossRecord } from 'yolo-loss/tfjs';

import { closeness } from './helpers/fixtures.js';
import { makeCase, rng, tensor } from './helpers/synthetic.js';

test.before(async () => {
  tf.env().set('PROD', true); // no "install tfjs-node" banner
  await tf.setBackend('cpu');
});

const toTf = (t: Tensor): tf.Tensor => tf.tensor(t.data, t.shape, 'float32');

/** The plain tensors of a nested structure, in depth-first order (arrays by index, objects by key order). */
function leaves(x: unknown): Tensor[] {
  if (Array.isArray(x)) return x.flatMap(leaves);
  const t = x as Partial<Tensor>;
  if (t.data instanceof Float32Array) return [t as Tensor];
  return Object.values(x as object).flatMap(leaves);
}

/** The same structure with tf.Tensor leaves. */
function mapTf(x: unknown): unknown {
  if (Array.isArray(x)) return x.map(mapTf);
  const t = x as Partial<Tensor>;
  if (t.data instanceof Float32Array) return toTf(t as Tensor);
  return Object.fromEntries(Object.entries(x as object).map(([k, v]) => [k, mapTf(v)]));
}

function sum(a: Float32Array): number {
  return a.reduce((s, v) => s + v, 0);
}

/** tf.valueAndGrads of the adapter op against valueAndGrad, for any loss: same value, bit-identical gradients. */
function checkAgainstValueAndGrad(t: ExecutionContext, criterion: DifferentiableLoss<never, never>, preds: unknown, batch: unknown): void {
  const loss = tfjsLoss(criterion) as unknown as ((p: unknown, b: unknown) => tf.Scalar) & { last: LossRecord | undefined };
  const want = (criterion as unknown as DifferentiableLoss<unknown, unknown>).valueAndGrad(preds, batch);
  const tfPreds = mapTf(preds);
  const tfLeaves: tf.Tensor[] = [];
  (function collect(x: unknown): void {
    if (x instanceof tf.Tensor) tfLeaves.push(x);
    else if (Array.isArray(x)) x.forEach(collect);
    else Object.values(x as object).forEach(collect);
  })(tfPreds);
  // tf.valueAndGrads differentiates with respect to the very tensors the structure holds.
  const { value, grads } = tf.valueAndGrads(() => loss(tfPreds, batch))(tfLeaves);
  t.is(value.dataSync()[0], Math.fround(sum(want.loss)));
  t.deepEqual(Array.from(loss.last!.lossItems), Array.from(want.lossItems));
  const wantGrads = leaves(want.grads);
  t.is(grads.length, wantGrads.length);
  grads.forEach((g, i) => {
    t.deepEqual(g.shape, wantGrads[i]!.shape);
    t.deepEqual(g.dataSync(), wantGrads[i]!.data, `gradient ${i}`);
  });
  tf.dispose([value, ...grads, ...tfLeaves]);
}

test('v8DetectionLoss: value = sum(loss), gradients = valueAndGrad, items recorded', (t) => {
  const c = makeCase({ B: 3, perImage: 3, seed: 4 });
  const criterion = new v8DetectionLoss(c.model);
  checkAgainstValueAndGrad(t, criterion, c.preds, c.batch);
  const loss = tfjsLoss(criterion);
  t.is(loss.criterion, criterion);
  t.is(loss.structure, 'levels');
  t.is(loss.last, undefined);
});

test('the incoming dy scales the gradient (loss × 3, loss summed twice, mean of two losses)', (t) => {
  const c = makeCase({ seed: 6 });
  const criterion = new v8DetectionLoss(c.model);
  const loss = tfjsLoss(criterion);
  const want = criterion.valueAndGrad(c.preds, c.batch);
  const xs = c.preds.map(toTf);
  const cases: [string, (ps: tf.Tensor[]) => tf.Scalar, number][] = [
    ['3 × loss', (ps) => tf.mul(loss(ps, c.batch), 3), 3],
    ['loss + loss', (ps) => tf.add(loss(ps, c.batch), loss(ps, c.batch)), 2],
    ['-0.5 × loss', (ps) => tf.mul(loss(ps, c.batch), -0.5), -0.5],
  ];
  for (const [name, f, scale] of cases) {
    const grads = tf.grads((...ps: tf.Tensor[]) => f(ps))(xs);
    grads.forEach((g, i) => {
      const w = Array.from(want.grads[i]!.data, (v) => v * scale);
      t.is(closeness(g.dataSync() as Float32Array, w, 1e-6, 1e-7), null, `${name}, level ${i}`);
    });
    tf.dispose(grads);
  }
  tf.dispose(xs);
});

test('cpu backend: the loss reads tfjs data in place and tfjs adopts the gradient arrays (no copies)', (t) => {
  const c = makeCase({ seed: 8 });
  const criterion = new v8DetectionLoss(c.model);
  const seen: Float32Array[] = [];
  let returned: Float32Array[] = [];
  const spy = {
    valueAndGrad(preds: Tensor[], batch: DetectionBatch) {
      preds.forEach((p) => seen.push(p.data));
      const r = criterion.valueAndGrad(preds, batch);
      returned = r.grads.map((g) => g.data);
      return r;
    },
  };
  const loss = tfjsLoss(spy, 'levels');
  const xs = c.preds.map(toTf);
  const grads = tf.grads((...ps: tf.Tensor[]) => loss(ps, c.batch))(xs);
  xs.forEach((x, i) => t.true(seen[i] === (x.dataSync() as unknown), `preds[${i}] is the backend's own array`));
  grads.forEach((g, i) => t.true((g.dataSync() as unknown) === returned[i], `grad ${i} is the array valueAndGrad returned`));
  tf.dispose([...xs, ...grads]);
});

test('optimizer.minimize trains tf.Variables through the op and leaks no tensors', (t) => {
  const c = makeCase({ seed: 10 });
  const loss = tfjsLoss(new v8DetectionLoss(c.model));
  const vars = c.preds.map((p) => tf.variable(toTf(p)));
  const opt = tf.train.adam(0.05);
  const before = tf.memory().numTensors;
  const costs: number[] = [];
  for (let i = 0; i < 15; i++) {
    const cost = opt.minimize(() => loss(vars, c.batch), true, vars)!;
    costs.push(cost.dataSync()[0]!);
    cost.dispose();
  }
  t.true(costs[costs.length - 1]! < 0.7 * costs[0]!, `cost ${costs[0]} → ${costs[costs.length - 1]}`);
  t.is(Math.fround(loss.last!.total), costs[costs.length - 1]!);
  // Adam's slots are created on the first step; after that the count stays put.
  const settled = tf.memory().numTensors;
  opt.minimize(() => loss(vars, c.batch), false, vars);
  t.is(tf.memory().numTensors, settled);
  t.true(settled >= before);
  tf.dispose(vars);
  opt.dispose();
});

test('evaluate: the loss without a gradient (criterion.call), recorded in last', (t) => {
  const c = makeCase({ seed: 12 });
  const criterion = new v8DetectionLoss(c.model);
  const loss = tfjsLoss(criterion);
  const xs = c.preds.map(toTf);
  const [want, items] = criterion.call(c.preds, c.batch);
  const r = loss.evaluate(xs, c.batch);
  t.deepEqual(r.loss, want);
  t.deepEqual(r.lossItems, items);
  t.is(r.total, sum(want));
  t.is(loss.last, r);
  tf.dispose(xs);
});

test('batch entries may be tf.Tensors, integer labels included', (t) => {
  const c = makeCase({ seed: 14 });
  const criterion = new v8DetectionLoss(c.model);
  const loss = tfjsLoss(criterion);
  const xs = c.preds.map(toTf);
  const batch = {
    batch_idx: tf.tensor(Array.from(c.batch.batch_idx.data), c.batch.batch_idx.shape, 'int32'),
    cls: tf.tensor(Array.from(c.batch.cls.data), c.batch.cls.shape, 'int32'),
    bboxes: toTf(c.batch.bboxes),
  };
  const v = loss(xs, batch);
  t.is(v.dataSync()[0], Math.fround(sum(criterion.call(c.preds, c.batch)[0])));
  tf.dispose([v, ...xs, ...Object.values(batch)]);
});

// ------------------------------------------------------------------------------------------------------------
// Refusals

function expectRefusal(t: ExecutionContext, fn: () => unknown, code: string, message: RegExp): void {
  const err = t.throws(fn);
  t.true(isYoloLossError(err), String(err));
  t.is((err as Error & { code: string }).code, code, err?.message);
  t.regex(err!.message, message);
  t.regex(err!.message, /expected/);
  t.regex(err!.message, /got/);
}

test('refuses preds that do not fit, before running anything, and leaks nothing', (t) => {
  const c = makeCase({ B: 2, seed: 16 });
  const criterion = new v8DetectionLoss(c.model); // nc 2, reg_max 16: 66 channels
  const loss = tfjsLoss(criterion);
  const good = c.preds.map(toTf);
  const before = tf.memory().numTensors;
  const nhwc = good.map((x) => tf.transpose(x, [0, 2, 3, 1]));
  const run = (preds: unknown, batch: unknown = c.batch) => () => tf.tidy(() => (loss as unknown as (p: unknown, b: unknown) => tf.Scalar)(preds, batch));
  expectRefusal(t, run(nhwc), 'ERR_SHAPE_MISMATCH', /preds\[0\]: expected 66 channels .*got shape \[2, 8, 8, 66\] \(channels last\?/);
  const narrow = good.map((x) => tf.slice(x, [0, 0, 0, 0], [-1, 65, -1, -1]));
  expectRefusal(t, run(narrow), 'ERR_SHAPE_MISMATCH', /expected 66 channels/);
  expectRefusal(t, run(good.slice(0, 2)), 'ERR_SHAPE_MISMATCH', /expected 3 level tensors \(one per stride\), got 2/);
  const rank3 = [tf.reshape(good[0]!, [2, 66, 64]), good[1], good[2]];
  expectRefusal(t, run(rank3), 'ERR_SHAPE_MISMATCH', /preds\[0\]: expected a rank-4 tensor/);
  const otherBatch = [good[0], tf.concat([good[1]!, good[1]!]), good[2]];
  expectRefusal(t, run(otherBatch), 'ERR_SHAPE_MISMATCH', /preds\[1\]: expected batch size 2/);
  const ints = tf.cast(good[1]!, 'int32');
  expectRefusal(t, run([good[0], ints, good[2]]), 'ERR_INVALID_ARGUMENT', /preds\[1\]: expected a float32 tf.Tensor, got a int32/);
  expectRefusal(t, run(c.preds), 'ERR_INVALID_ARGUMENT', /preds\[0\]: expected a tf.Tensor, got an object/);
  expectRefusal(t, run(good[0]), 'ERR_INVALID_ARGUMENT', /preds: expected a non-empty array of level tensors/);
  const disposed = tf.clone(good[2]!);
  disposed.dispose();
  expectRefusal(t, run([good[0], good[1], disposed]), 'ERR_INVALID_ARGUMENT', /preds\[2\]: expected a live tf.Tensor/);
  tf.dispose([...nhwc, ...narrow, rank3[0]!, otherBatch[1]!, ints]);
  t.is(tf.memory().numTensors, before);
  tf.dispose(good);
});

test("the loss's own checks pass through the op with their codes (inside tf.customGrad), and nothing leaks", (t) => {
  const c = makeCase({ B: 2, seed: 18 });
  const loss = tfjsLoss(new v8DetectionLoss(c.model));
  const good = c.preds.map(toTf);
  const before = tf.memory().numTensors;
  // Levels that fit no stride (every level 8×8): the core's shape check.
  const same = [good[0]!, good[0]!, good[0]!];
  const run = (preds: tf.Tensor[], batch: unknown) => () =>
    tf.tidy(() => tf.grads((...ps: tf.Tensor[]) => (loss as unknown as (p: unknown, b: unknown) => tf.Scalar)(ps, batch))(preds));
  let err = t.throws(run(same, c.batch));
  t.is((err as Error & { code?: string }).code, 'ERR_SHAPE_MISMATCH', err?.message);
  const badCls = { ...c.batch, cls: { data: c.batch.cls.data.map(() => 7), shape: c.batch.cls.shape } };
  err = t.throws(run(good, badCls));
  t.is((err as Error & { code?: string }).code, 'ERR_LABEL_OUT_OF_RANGE', err?.message);
  err = t.throws(run(good, { batch_idx: c.batch.batch_idx }));
  t.is((err as Error & { code?: string }).code, 'ERR_INVALID_ARGUMENT', err?.message);
  t.is(tf.memory().numTensors, before);
  // The engine is left usable.
  const v = (loss as unknown as (p: unknown, b: unknown) => tf.Scalar)(good, c.batch);
  t.true(Number.isFinite(v.dataSync()[0]!));
  tf.dispose([v, ...good]);
});

test('refuses a criterion without valueAndGrad, and preds of the wrong nesting for a given structure', (t) => {
  expectRefusal(t, () => tfjsLoss({} as never), 'ERR_INVALID_ARGUMENT', /criterion: expected a loss object with valueAndGrad/);
  const c = makeCase({ seed: 20 });
  const xs = c.preds.map(toTf);
  const loss = tfjsLoss(new v8DetectionLoss(c.model), ['levels', 'tensor']);
  expectRefusal(t, () => (loss as unknown as (p: unknown, b: unknown) => unknown)(xs, c.batch), 'ERR_INVALID_ARGUMENT', /preds: expected an array of 2 entries, got an array of length 3/);
  const e2e = tfjsLoss(new v8DetectionLoss(c.model), { one2many: 'levels', one2one: 'levels' });
  expectRefusal(t, () => (e2e as unknown as (p: unknown, b: unknown) => unknown)(xs, c.batch), 'ERR_INVALID_ARGUMENT', /preds: expected an object \{ one2many, one2one \}/);
  tf.dispose(xs);
});

// ------------------------------------------------------------------------------------------------------------
// The other task losses

const A = (h: number, w: number): number => [8, 16, 32].reduce((s, st) => s + Math.ceil(h / st) * Math.ceil(w / st), 0);

test('PREDS_STRUCTURE follows docs/api.md', (t) => {
  t.deepEqual(PREDS_STRUCTURE.v8SegmentationLoss, ['levels', 'tensor', 'tensor']);
  t.deepEqual(PREDS_STRUCTURE.E2EDetectLoss, { one2many: 'levels', one2one: 'levels' });
  t.is(PREDS_STRUCTURE.v8ClassificationLoss, 'tensor');
});

/** Mask coefficients, prototypes (input/4) and index-map masks painting each label's box, for a makeCase case. */
function segInputs(c: ReturnType<typeof makeCase>, seed: number): { predMasks: Tensor; proto: Tensor; masks: Tensor } {
  const r = rng(seed);
  const nm = 4;
  const predMasks = tensor([2, nm, A(64, 64)], () => r() * 2 - 1);
  const proto = tensor([2, nm, 16, 16], () => r() * 2 - 1);
  const masks = tensor([2, 16, 16]);
  const seen = [0, 0];
  c.batch.batch_idx.data.forEach((b, k) => {
    const j = ++seen[b]!;
    const [cx, cy, w, h] = c.batch.bboxes.data.subarray(4 * k, 4 * k + 4);
    for (let y = Math.floor((cy! - h! / 2) * 16); y < Math.ceil((cy! + h! / 2) * 16); y++) {
      for (let x = Math.floor((cx! - w! / 2) * 16); x < Math.ceil((cx! + w! / 2) * 16); x++) masks.data[(b * 16 + y) * 16 + x] = j;
    }
  });
  return { predMasks, proto, masks };
}

test('v8SegmentationLoss through the adapter: gradients = valueAndGrad', (t) => {
  const c = makeCase({ B: 2, perImage: 2, seed: 22 });
  const { predMasks, proto, masks } = segInputs(c, 23);
  checkAgainstValueAndGrad(t, new v8SegmentationLoss(c.model), [c.preds, predMasks, proto], { ...c.batch, masks });
});

test('TVPSegmentLoss through the adapter: gradients = valueAndGrad', (t) => {
  const vnc = 3;
  const c = makeCase({ B: 2, perImage: 2, nc: 2 + vnc, seed: 34 });
  const { predMasks, proto, masks } = segInputs(c, 35);
  const batch = { ...c.batch, cls: { data: c.batch.cls.data.map((v) => v % vnc), shape: c.batch.cls.shape }, masks };
  checkAgainstValueAndGrad(t, new TVPSegmentLoss({ ...c.model, nc: 2 }), [c.preds, predMasks, proto], batch);
});

test('v8PoseLoss through the adapter: gradients = valueAndGrad', (t) => {
  const c = makeCase({ B: 2, perImage: 2, seed: 24 });
  const r = rng(25);
  const N = c.batch.batch_idx.data.length;
  const kpts = tensor([2, 4 * 3, A(64, 64)], () => r() - 0.5);
  const keypoints = tensor([N, 4, 3], (i) => (i % 3 === 2 ? 2 : r()));
  checkAgainstValueAndGrad(t, new v8PoseLoss({ ...c.model, kpt_shape: [4, 3] }), [c.preds, kpts], { ...c.batch, keypoints });
});

test('v8OBBLoss through the adapter: gradients = valueAndGrad', (t) => {
  const c = makeCase({ B: 2, perImage: 2, seed: 26 });
  const r = rng(27);
  const N = c.batch.batch_idx.data.length;
  const angle = tensor([2, 1, A(64, 64)], () => (r() - 0.25) * Math.PI);
  const bboxes = tensor([N, 5], (i) => (i % 5 === 4 ? 0.1 + r() : c.batch.bboxes.data[Math.floor(i / 5) * 4 + (i % 5)]!));
  checkAgainstValueAndGrad(t, new v8OBBLoss(c.model), [c.preds, angle], { ...c.batch, bboxes });
});

test('v8ClassificationLoss through the adapter: gradients = valueAndGrad', (t) => {
  const r = rng(28);
  checkAgainstValueAndGrad(t, new v8ClassificationLoss(), tensor([4, 5], () => r() * 6 - 3), { cls: tensor([4], () => Math.floor(r() * 5)) });
});

test('E2EDetectLoss through the adapter: gradients = valueAndGrad', (t) => {
  const a = makeCase({ seed: 30 });
  const b = makeCase({ seed: 31 });
  checkAgainstValueAndGrad(t, new E2EDetectLoss(a.model), { one2many: a.preds, one2one: b.preds }, a.batch);
});

test('TVPDetectLoss through the adapter: gradients = valueAndGrad (visual-prompt channels beyond no)', (t) => {
  const vnc = 3;
  const c = makeCase({ nc: 2 + vnc, seed: 32 }); // 2 text prompts + 3 visual prompts
  const batch = { ...c.batch, cls: { data: c.batch.cls.data.map((v) => v % vnc), shape: c.batch.cls.shape } };
  checkAgainstValueAndGrad(t, new TVPDetectLoss({ ...c.model, nc: 2 }), c.preds, batch);
});
