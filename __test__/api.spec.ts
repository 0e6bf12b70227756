/**
 * The public surface of docs/api.md: constructor defaults, outputs, the building blocks, borrowed inputs of every
 * kind of ArrayBuffer view.
 */
import test from 'ava';
import { DEFAULT_HYP, cudaAvailability, isYoloLossError, v8DetectionLoss, type Tensor } from 'yolo-loss';

import { closeness } from './helpers/fixtures.js';
import { autoBackend } from './helpers/devices.js';
import { makeCase, tensor } from './helpers/synthetic.js';

test('constructor: default.yaml hyperparameters, reg_max 16, tal_topk 10, device auto', (t) => {
  const loss = new v8DetectionLoss({ nc: 80, stride: [8, 16, 32] });
  t.deepEqual({ ...loss.hyp }, { box: 7.5, cls: 0.5, dfl: 1.5, pose: 12, kobj: 1, overlap_mask: true });
  t.deepEqual({ ...loss.hyp }, { ...DEFAULT_HYP });
  t.is(loss.reg_max, 16);
  t.is(loss.no, 144);
  t.true(loss.use_dfl);
  t.is(loss.tal_topk, 10);
  t.deepEqual([...loss.stride], [8, 16, 32]);
  t.is(loss.device, autoBackend());
  t.is(new v8DetectionLoss({ nc: 1, stride: [8] }, 10, { device: 'cpu' }).device, 'cpu');
});

test('constructor: missing args keys take the defaults, unknown keys are ignored', (t) => {
  const args = { box: 5, overlap_mask: false, imgsz: 640, lr0: 0.01 } as unknown as { box: number; overlap_mask: boolean };
  const loss = new v8DetectionLoss({ nc: 3, stride: [8, 16, 32], reg_max: 1, args }, 13);
  t.deepEqual({ ...loss.hyp }, { box: 5, cls: 0.5, dfl: 1.5, pose: 12, kobj: 1, overlap_mask: false });
  t.is(loss.no, 7);
  t.false(loss.use_dfl);
  t.is(loss.tal_topk, 13);
});

test('constructor: the model object is not kept or modified', (t) => {
  const model = { nc: 2, stride: [8, 16, 32], args: { box: 1 } };
  const loss = new v8DetectionLoss(model);
  model.stride[0] = 4;
  model.args.box = 2;
  t.deepEqual([...loss.stride], [8, 16, 32]);
  t.is(loss.hyp.box, 1);
  t.deepEqual(model, { nc: 2, stride: [4, 16, 32], args: { box: 2 } });
});

test('gains scale the components linearly', (t) => {
  const c = makeCase({ seed: 3 });
  const [, base] = new v8DetectionLoss(c.model).call(c.preds, c.batch);
  const [, scaled] = new v8DetectionLoss({ ...c.model, args: { box: 15, cls: 0.25, dfl: 3 } }).call(c.preds, c.batch);
  t.is(closeness(scaled, [base[0]! * 2, base[1]! * 0.5, base[2]! * 2], 1e-6, 0), null);
});

test('call: fresh Float32Arrays, loss = B × lossItems; valueAndGrad gives the same values', (t) => {
  const c = makeCase({ B: 3, perImage: 3 });
  const loss = new v8DetectionLoss(c.model);
  const [l1, i1] = loss.call(c.preds, c.batch);
  const [l2] = loss.call(c.preds, c.batch);
  t.true(l1 instanceof Float32Array && i1 instanceof Float32Array);
  t.is(l1.length, 3);
  t.not(l1, l2);
  t.deepEqual(l1, l2);
  t.is(closeness(l1, Array.from(i1, (v) => v * 3), 1e-6, 0), null);
  t.true(i1.every((v) => Number.isFinite(v) && v >= 0));
  const r = loss.valueAndGrad(c.preds, c.batch);
  t.deepEqual(r.loss, l1);
  t.deepEqual(r.lossItems, i1);
  t.is(r.grads.length, 3);
  r.grads.forEach((g, i) => {
    t.deepEqual(g.shape, c.preds[i]!.shape);
    t.is(g.data.length, c.preds[i]!.data.length);
    t.true(g.data.every(Number.isFinite));
    t.not(g.data.buffer, c.preds[i]!.data.buffer);
  });
  // The class logits of every anchor receive gradient (BCE over all anchors).
  t.true(r.grads[0]!.data.some((v) => v !== 0));
});

test('inputs may be views into larger or shared buffers (read in place, offsets respected)', (t) => {
  const c = makeCase({ seed: 7 });
  const loss = new v8DetectionLoss(c.model);
  const want = loss.valueAndGrad(c.preds, c.batch);
  const relocate = (x: Tensor, shared: boolean): Tensor => {
    const buf = shared ? new SharedArrayBuffer((x.data.length + 5) * 4) : new ArrayBuffer((x.data.length + 5) * 4);
    const view = new Float32Array(buf, 12, x.data.length); // byteOffset 12, trailing garbage after it
    new Float32Array(buf).fill(Number.NaN);
    view.set(x.data);
    return { data: view, shape: x.shape };
  };
  for (const shared of [false, true]) {
    const preds = c.preds.map((x) => relocate(x, shared));
    const batch = { batch_idx: relocate(c.batch.batch_idx, shared), cls: relocate(c.batch.cls, shared), bboxes: relocate(c.batch.bboxes, shared) };
    const got = loss.valueAndGrad(preds, batch);
    t.deepEqual(got.loss, want.loss);
    t.deepEqual(got.grads, want.grads);
  }
});

test('batch: extra keys are ignored; labels as [N] class ids are accepted like [N, 1]', (t) => {
  const c = makeCase({ seed: 5 });
  const loss = new v8DetectionLoss(c.model);
  const [want] = loss.call(c.preds, c.batch);
  const [got] = loss.call(c.preds, { ...c.batch, img: 'ignored', im_file: ['a.jpg'] });
  t.deepEqual(got, want);
  const flatCls = { data: c.batch.cls.data, shape: [c.batch.cls.shape[0]!] };
  t.deepEqual(loss.call(c.preds, { ...c.batch, cls: flatCls })[0], want);
});

test('async forms resolve on the thread pool and accept reuse of the inputs at once', async (t) => {
  const c = makeCase({ seed: 9, B: 2 });
  const loss = new v8DetectionLoss(c.model);
  const want = loss.valueAndGrad(c.preds, c.batch);
  const pending = loss.valueAndGradAsync(c.preds, c.batch);
  // The inputs were copied before valueAndGradAsync returned: overwriting them now cannot change the result.
  const saved = c.preds.map((x) => x.data.slice());
  c.preds.forEach((x) => x.data.fill(Number.NaN));
  const got = await pending;
  c.preds.forEach((x, i) => x.data.set(saved[i]!));
  t.deepEqual(got.loss, want.loss);
  t.deepEqual(got.grads, want.grads);
  const all = await Promise.all([1, 2, 3, 4].map(() => loss.callAsync(c.preds, c.batch)));
  all.forEach(([l]) => t.deepEqual(l, want.loss));
});

test('bboxDecode: expected distances around the anchors (DFL and reg_max 1)', (t) => {
  const loss = new v8DetectionLoss({ nc: 1, stride: [8] });
  const anchors: Tensor = { data: Float32Array.from([0.5, 0.5, 1.5, 0.5]), shape: [2, 2] };
  // Uniform logits: the expectation over bins 0..15 is 7.5 on every side.
  const out = loss.bboxDecode(anchors, tensor([1, 2, 64]));
  t.deepEqual(out.shape, [1, 2, 4]);
  t.is(closeness(out.data, [-7, -7, 8, 8, -6, -7, 9, 8], 1e-6, 0), null);
  // One-hot-ish logits: side-major channels (side·R + bin); a large logit on bin 3 of the right side of anchor 1.
  const logits = tensor([1, 2, 64]);
  logits.data[64 + 2 * 16 + 3] = 50;
  const out2 = loss.bboxDecode(anchors, logits);
  t.is(closeness(out2.data.subarray(4), [-6, -7, 1.5 + 3, 8], 1e-5, 0), null);

  const raw = new v8DetectionLoss({ nc: 1, stride: [8], reg_max: 1 });
  const out3 = raw.bboxDecode(anchors, { data: Float32Array.from([1, 2, 3, 4, 0, 0, 0, 0]), shape: [1, 2, 4] });
  t.is(closeness(out3.data, [-0.5, -1.5, 3.5, 4.5, 1.5, 0.5, 1.5, 0.5], 1e-6, 0), null);
});

test('preprocess: labels grouped per image in batch order, scaled, xyxy, zero padded', (t) => {
  const loss = new v8DetectionLoss({ nc: 2, stride: [8] });
  const targets: Tensor = {
    data: Float32Array.from([
      1, 0, 0.5, 0.5, 0.2, 0.4, //
      0, 1, 0.25, 0.25, 0.5, 0.5, //
      1, 1, 0.1, 0.1, 0.1, 0.1,
    ]),
    shape: [3, 6],
  };
  const want = [
    1, 0, 0, 320, 240, /**/ 0, 0, 0, 0, 0, //
    0, 256, 144, 384, 336, /**/ 1, 32, 24, 96, 72,
  ];
  for (const scale of [[640, 480, 640, 480], Float32Array.from([640, 480, 640, 480]), { data: Float32Array.from([640, 480, 640, 480]), shape: [4] }]) {
    const out = loss.preprocess(targets, 2, scale);
    t.deepEqual(out.shape, [2, 2, 5]);
    t.is(closeness(out.data, want, 1e-6, 0), null);
  }
  const empty = loss.preprocess(tensor([0, 6]), 3, [64, 64, 64, 64]);
  t.deepEqual(empty.shape, [3, 0, 5]);
  t.is(empty.data.length, 0);
});

test('cudaAvailability: a boolean and, when unavailable, a reason', (t) => {
  const a = cudaAvailability();
  t.is(typeof a.available, 'boolean');
  if (a.available) t.is(typeof a.deviceName, 'string');
  else t.true(typeof a.reason === 'string' && a.reason.length > 0);
});

test('isYoloLossError recognises our errors only', (t) => {
  const err = t.throws(() => new v8DetectionLoss({ nc: 0, stride: [8] }));
  t.true(isYoloLossError(err));
  t.false(isYoloLossError(new Error('x')));
  t.false(isYoloLossError({ code: 'ERR_INTERNAL' }));
});
