/**
 * Every error code: bad input throws (sync) or rejects (async) an Error whose `code` is stable and whose message
 * names the argument, what was expected and what was given. The caller's arrays are never modified.
 */
import { createRequire } from 'node:module';
import * as path from 'node:path';

import test, { type ExecutionContext } from 'ava';
import { cudaAvailability, v8DetectionLoss, type DetectionBatch, type ErrorCode, type Tensor } from 'yolo-loss';

import { expectAll as expectEachForm, expectCode, withValue } from './helpers/errors.js';
import { sameBits, snapshot } from './helpers/fixtures.js';
import { inputsOf, makeCase, tensor, type Case } from './helpers/synthetic.js';

/** A deep copy of a case whose tensors can be edited freely. */
function fresh(opts?: Parameters<typeof makeCase>[0]): Case {
  return makeCase(opts);
}

/** Runs `call`, `valueAndGrad` and both async forms on the case and expects the same error from each; checks that
 * no input array was modified. */
async function expectAll(t: ExecutionContext, c: Case, code: ErrorCode, message: RegExp, preds: Tensor[] = c.preds, batch: DetectionBatch = c.batch): Promise<void> {
  const loss = new v8DetectionLoss(c.model);
  const all: unknown[] = [...(Array.isArray(preds) ? preds : []), ...(batch ? [batch.batch_idx, batch.cls, batch.bboxes] : [])];
  const inputs = all.filter((x): x is Tensor => typeof x === 'object' && x !== null && (x as Tensor).data instanceof Float32Array);
  await expectEachForm(t, loss, preds, batch, code, message, inputs);
}

// ---------------------------------------------------------------------------------------------------------------
// Shapes

test('the valid base case runs (so every failure below is caused by the one change it makes)', (t) => {
  const c = fresh();
  const [loss, items] = new v8DetectionLoss(c.model).call(c.preds, c.batch);
  t.is(loss.length, 3);
  t.is(items.length, 3);
});

test('ERR_SHAPE_MISMATCH: data length does not match the shape', async (t) => {
  const c = fresh();
  const p = [...c.preds];
  p[1] = { data: p[1]!.data.subarray(1), shape: p[1]!.shape };
  await expectAll(t, c, 'ERR_SHAPE_MISMATCH', /preds\[1\].*product of shape/, p);
});

test('ERR_SHAPE_MISMATCH: a prediction of the wrong rank', async (t) => {
  const c = fresh();
  const p = [...c.preds];
  const [B, C, H, W] = p[0]!.shape as [number, number, number, number];
  p[0] = { data: p[0]!.data, shape: [B, C, H * W] };
  await expectAll(t, c, 'ERR_SHAPE_MISMATCH', /preds\[0\]/, p);
});

test('ERR_SHAPE_MISMATCH: a negative or fractional dimension', async (t) => {
  const c = fresh();
  const p = [...c.preds];
  p[0] = { data: p[0]!.data, shape: [2, 66, -8, -8] };
  await expectAll(t, c, 'ERR_SHAPE_MISMATCH', /preds\[0\]\.shape\[2\]/, p);
  p[0] = { data: p[0]!.data, shape: [2, 66, 8, 8.5] };
  await expectAll(t, c, 'ERR_SHAPE_MISMATCH', /preds\[0\]\.shape\[3\]/, p);
});

test('ERR_SHAPE_MISMATCH: channel count does not match nc', async (t) => {
  const c = fresh({ nc: 3 });
  await expectAll(t, { ...c, model: { ...c.model, nc: 2 } }, 'ERR_SHAPE_MISMATCH', /preds\[0\].*67|67.*preds\[0\]|channel/);
});

test('ERR_SHAPE_MISMATCH: channel count does not match reg_max', async (t) => {
  const c = fresh({ reg_max: 16 });
  await expectAll(t, { ...c, model: { ...c.model, reg_max: 8 } }, 'ERR_SHAPE_MISMATCH', /preds\[0\]/);
  const d = fresh({ reg_max: 1 });
  await expectAll(t, { ...d, model: { nc: d.model.nc, stride: d.model.stride } }, 'ERR_SHAPE_MISMATCH', /preds\[0\]/); // reg_max defaults to 16
});

test('ERR_SHAPE_MISMATCH: levels that do not fit the strides', async (t) => {
  const c = fresh();
  const p = [...c.preds];
  p[1] = tensor([2, 66, 5, 4]); // level 0 is 8×8 at stride 8, so stride 16 needs 4×4
  await expectAll(t, c, 'ERR_SHAPE_MISMATCH', /preds\[1\]/, p);
  const q = [...c.preds];
  q[2] = tensor([2, 66, 4, 4]);
  await expectAll(t, c, 'ERR_SHAPE_MISMATCH', /preds\[2\]/, q);
});

test('ERR_SHAPE_MISMATCH: not one tensor per stride', async (t) => {
  const c = fresh();
  await expectAll(t, c, 'ERR_SHAPE_MISMATCH', /preds/, c.preds.slice(0, 2));
  await expectAll(t, c, 'ERR_SHAPE_MISMATCH', /preds/, []);
});

test('ERR_SHAPE_MISMATCH: levels with different batch sizes', async (t) => {
  const c = fresh();
  const p = [...c.preds];
  p[2] = tensor([3, 66, 2, 2]);
  await expectAll(t, c, 'ERR_SHAPE_MISMATCH', /preds\[2\]/, p);
});

test('ERR_SHAPE_MISMATCH: label tensors that disagree', async (t) => {
  const c = fresh();
  const N = c.batch.batch_idx.shape[0]!;
  await expectAll(t, c, 'ERR_SHAPE_MISMATCH', /batch\.bboxes/, c.preds, { ...c.batch, bboxes: tensor([N, 3]) });
  await expectAll(t, c, 'ERR_SHAPE_MISMATCH', /batch\.cls/, c.preds, { ...c.batch, cls: tensor([N + 1, 1]) });
  await expectAll(t, c, 'ERR_SHAPE_MISMATCH', /batch\.batch_idx/, c.preds, { ...c.batch, batch_idx: tensor([N, 2]) });
});

// ---------------------------------------------------------------------------------------------------------------
// Labels

function withLabel(c: Case, key: 'batch_idx' | 'cls' | 'bboxes', index: number, value: number): DetectionBatch {
  return { ...c.batch, [key]: withValue(c.batch[key], index, value) };
}

test('ERR_LABEL_OUT_OF_RANGE: image index outside [0, B)', async (t) => {
  const c = fresh({ B: 2 });
  await expectAll(t, c, 'ERR_LABEL_OUT_OF_RANGE', /batch\.batch_idx\[1\].*\[0, 2\).*got 2/, c.preds, withLabel(c, 'batch_idx', 1, 2));
  await expectAll(t, c, 'ERR_LABEL_OUT_OF_RANGE', /batch\.batch_idx\[0\]/, c.preds, withLabel(c, 'batch_idx', 0, -1));
  await expectAll(t, c, 'ERR_LABEL_OUT_OF_RANGE', /batch\.batch_idx\[0\]/, c.preds, withLabel(c, 'batch_idx', 0, 0.5));
});

test('ERR_LABEL_OUT_OF_RANGE: class id outside [0, nc)', async (t) => {
  const c = fresh({ nc: 2 });
  await expectAll(t, c, 'ERR_LABEL_OUT_OF_RANGE', /batch\.cls\[2\].*\[0, 2\).*got 2/, c.preds, withLabel(c, 'cls', 2, 2));
  await expectAll(t, c, 'ERR_LABEL_OUT_OF_RANGE', /batch\.cls\[0\]/, c.preds, withLabel(c, 'cls', 0, -1));
});

test('ERR_LABEL_OUT_OF_RANGE: negative box size', async (t) => {
  const c = fresh();
  await expectAll(t, c, 'ERR_LABEL_OUT_OF_RANGE', /batch\.bboxes\[1\]/, c.preds, withLabel(c, 'bboxes', 4 + 2, -0.1));
  await expectAll(t, c, 'ERR_LABEL_OUT_OF_RANGE', /batch\.bboxes\[0\]/, c.preds, withLabel(c, 'bboxes', 3, -1e-3));
});

// ---------------------------------------------------------------------------------------------------------------
// Non-finite values

for (const [label, value] of [['NaN', NaN], ['Infinity', Infinity], ['-Infinity', -Infinity]] as const) {
  test(`ERR_NON_FINITE: ${label} in preds`, async (t) => {
    const c = fresh();
    const p = c.preds.map((x) => ({ data: x.data.slice(), shape: [...x.shape] }));
    p[1]!.data[17] = value;
    await expectAll(t, c, 'ERR_NON_FINITE', /preds\[1\]/, p);
  });

  test(`ERR_NON_FINITE: ${label} in the labels`, async (t) => {
    const c = fresh();
    await expectAll(t, c, 'ERR_NON_FINITE', /batch\.bboxes/, c.preds, withLabel(c, 'bboxes', 5, value));
    await expectAll(t, c, 'ERR_NON_FINITE', /batch\.cls/, c.preds, withLabel(c, 'cls', 1, value));
    await expectAll(t, c, 'ERR_NON_FINITE', /batch\.batch_idx/, c.preds, withLabel(c, 'batch_idx', 1, value));
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Structure and configuration

test('ERR_INVALID_ARGUMENT: preds and batch of the wrong kind', async (t) => {
  const c = fresh();
  await expectAll(t, c, 'ERR_INVALID_ARGUMENT', /preds: expected an array/, c.preds[0] as unknown as Tensor[]);
  const p = [...c.preds];
  p[0] = { data: Float64Array.from(p[0]!.data) as unknown as Float32Array, shape: p[0]!.shape };
  await expectAll(t, c, 'ERR_INVALID_ARGUMENT', /preds\[0\]\.data: expected a Float32Array, got a Float64Array/, p);
  await expectAll(t, c, 'ERR_INVALID_ARGUMENT', /preds\[2\]: expected a tensor/, [...c.preds.slice(0, 2), null as unknown as Tensor]);
  const { bboxes: _omit, ...noBoxes } = c.batch;
  await expectAll(t, c, 'ERR_INVALID_ARGUMENT', /batch\.bboxes/, c.preds, noBoxes as DetectionBatch);
  await expectAll(t, c, 'ERR_INVALID_ARGUMENT', /batch: expected an object/, c.preds, null as unknown as DetectionBatch);
  await expectAll(t, c, 'ERR_INVALID_ARGUMENT', /batch\.cls\.shape/, c.preds, { ...c.batch, cls: { data: c.batch.cls.data, shape: 'N,1' } as unknown as Tensor });
});

test('ERR_INVALID_ARGUMENT: unusable model, tal_topk or options', (t) => {
  const m = fresh().model;
  expectCode(t, () => new v8DetectionLoss({ ...m, nc: 0 }), 'ERR_INVALID_ARGUMENT', /model\.nc/);
  expectCode(t, () => new v8DetectionLoss({ ...m, nc: 2.5 }), 'ERR_INVALID_ARGUMENT', /model\.nc/);
  expectCode(t, () => new v8DetectionLoss({ ...m, stride: [] }), 'ERR_INVALID_ARGUMENT', /model\.stride/);
  expectCode(t, () => new v8DetectionLoss({ ...m, stride: [8, -16, 32] }), 'ERR_INVALID_ARGUMENT', /model\.stride\[1\]/);
  expectCode(t, () => new v8DetectionLoss({ ...m, reg_max: 0 }), 'ERR_INVALID_ARGUMENT', /model\.reg_max/);
  expectCode(t, () => new v8DetectionLoss({ ...m, args: { box: NaN } }), 'ERR_INVALID_ARGUMENT', /model\.args\.box/);
  expectCode(t, () => new v8DetectionLoss({ ...m, args: { overlap_mask: 1 as unknown as boolean } }), 'ERR_INVALID_ARGUMENT', /model\.args\.overlap_mask/);
  expectCode(t, () => new v8DetectionLoss(m, 0), 'ERR_INVALID_ARGUMENT', /tal_topk/);
  expectCode(t, () => new v8DetectionLoss(null as unknown as typeof m), 'ERR_INVALID_ARGUMENT', /model/);
  expectCode(t, () => new v8DetectionLoss(m, 10, { device: 'gpu' as 'cpu' }), 'ERR_INVALID_ARGUMENT', /options\.device/);
});

test("ERR_CUDA_UNAVAILABLE: device 'cuda' where CUDA cannot run, with the probe's reason", (t) => {
  const m = fresh().model;
  const probe = cudaAvailability();
  if (probe.available) {
    // v8DetectionLoss has a CUDA backend: where the probe finds CUDA usable, 'cuda' runs on it and 'auto' holds it
    // besides the CPU.
    t.is(new v8DetectionLoss(m, 10, { device: 'cuda' }).device, 'cuda');
    t.is(new v8DetectionLoss(m, 10, { device: 'auto' }).device, 'auto');
    return;
  }
  const err = t.throws(() => new v8DetectionLoss(m, 10, { device: 'cuda' }), { instanceOf: Error });
  t.is((err as Error & { code?: unknown }).code, 'ERR_CUDA_UNAVAILABLE');
  t.regex(err?.message ?? '', /options\.device/);
  t.true((probe.reason ?? '').length > 0, 'the probe gives a reason');
  t.true(err?.message.includes(probe.reason ?? '\u0000'), 'the message carries the probe reason');
  // 'auto' silently falls back to the CPU.
  t.is(new v8DetectionLoss(m, 10, { device: 'auto' }).device, 'cpu');
});

// ---------------------------------------------------------------------------------------------------------------
// Building blocks

test('bboxDecode and preprocess reject bad shapes', (t) => {
  const loss = new v8DetectionLoss(fresh().model);
  expectCode(t, () => loss.bboxDecode(tensor([3, 3]), tensor([1, 3, 64])), 'ERR_SHAPE_MISMATCH', /anchor/i);
  expectCode(t, () => loss.bboxDecode(tensor([3, 2]), tensor([1, 3, 60])), 'ERR_SHAPE_MISMATCH', /pred_?dist/i);
  expectCode(t, () => loss.preprocess(tensor([2, 5]), 2, [64, 64, 64, 64]), 'ERR_SHAPE_MISMATCH', /targets/);
  expectCode(t, () => loss.preprocess(tensor([2, 6]), 2, [64, 64, 64]), 'ERR_SHAPE_MISMATCH', /scaleTensor/);
  expectCode(t, () => loss.preprocess(tensor([2, 6]), -1, [64, 64, 64, 64]), 'ERR_INVALID_ARGUMENT', /batchSize/);
});

// ---------------------------------------------------------------------------------------------------------------
// Panics

test('ERR_INTERNAL: a panic inside the native code becomes an error, the process lives on', (t) => {
  const require = createRequire(__filename);
  const native = require(path.resolve(__dirname, '..', 'native', 'yolo-loss.node')) as { __panicForTest(): void };
  const err = t.throws(() => native.__panicForTest(), { instanceOf: Error });
  t.is((err as Error & { code?: unknown }).code, 'ERR_INTERNAL');
  t.regex(err?.message ?? '', /deliberate panic/);
  // And the library still works afterwards.
  const c = fresh();
  t.is(new v8DetectionLoss(c.model).call(c.preds, c.batch)[0].length, 3);
});

test('inputs are unchanged after successful calls', async (t) => {
  const c = fresh({ B: 3, perImage: 4 });
  const copies = snapshot(inputsOf(c));
  const loss = new v8DetectionLoss(c.model);
  loss.call(c.preds, c.batch);
  loss.valueAndGrad(c.preds, c.batch);
  await loss.callAsync(c.preds, c.batch);
  await loss.valueAndGradAsync(c.preds, c.batch);
  inputsOf(c).forEach((x, i) => {
    t.true(sameBits(x.data, copies[i]!.data));
    t.deepEqual(x.shape, copies[i]!.shape);
  });
});
