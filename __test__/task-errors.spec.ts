/**
 * Error codes of the task losses beyond detection: bad input throws (sync) or rejects (async) an Error with a
 * stable `code` whose message names the argument, what was expected and what was given; the caller's arrays are
 * never modified. Each case changes one thing in a valid input.
 */
import test from 'ava';
import {
  E2EDetectLoss,
  TVPDetectLoss,
  TVPSegmentLoss,
  cudaAvailability,
  v8ClassificationLoss,
  v8OBBLoss,
  v8PoseLoss,
  v8SegmentationLoss,
  type ModelInfo,
} from 'yolo-loss';

import { CUDA_LOSSES, autoBackend } from './helpers/devices.js';
import { expectAll, expectCode, withValue } from './helpers/errors.js';
import { tensor } from './helpers/synthetic.js';
import { clsCase, e2eCase, obbCase, poseCase, segCase, tvpCase, tvpSegCase } from './helpers/tasks.js';

// ---------------------------------------------------------------------------------------------------------------
// The valid base cases

test('the valid base cases run (so every failure below is caused by the one change it makes)', (t) => {
  const s = segCase();
  t.is(new v8SegmentationLoss(s.model).call(s.preds, s.batch)[0].length, 4);
  const sn = segCase({ overlap: false });
  t.is(new v8SegmentationLoss(sn.model).call(sn.preds, sn.batch)[0].length, 4);
  const p = poseCase();
  t.is(new v8PoseLoss(p.model).call(p.preds, p.batch)[0].length, 5);
  const o = obbCase();
  t.is(new v8OBBLoss(o.model).call(o.preds, o.batch)[0].length, 3);
  const c = clsCase();
  t.is(new v8ClassificationLoss().call(c.preds, c.batch)[0].length, 1);
  const e = e2eCase();
  t.is(new E2EDetectLoss(e.model).call(e.preds, e.batch)[0].length, 3);
  const v = tvpCase();
  t.is(new TVPDetectLoss(v.model).call(v.preds, v.batch)[0].length, 1);
  const vs = tvpSegCase();
  t.is(new TVPSegmentLoss(vs.model).call(vs.preds, vs.batch)[0].length, 1);
});

// ---------------------------------------------------------------------------------------------------------------
// v8SegmentationLoss

test('v8SegmentationLoss: masks whose shape does not fit the labels or the batch', async (t) => {
  const c = segCase();
  const loss = new v8SegmentationLoss(c.model);
  const [, hm, wm] = c.batch.masks.shape as [number, number, number];
  await expectAll(t, loss, c.preds, { ...c.batch, masks: tensor([3, hm, wm]) }, 'ERR_SHAPE_MISMATCH', /batch\.masks: expected shape \[2, H, W\]/);
  await expectAll(t, loss, c.preds, { ...c.batch, masks: tensor([2, hm * wm]) }, 'ERR_SHAPE_MISMATCH', /batch\.masks/);
  const n = segCase({ overlap: false });
  const N = n.batch.batch_idx.shape[0]!;
  await expectAll(t, new v8SegmentationLoss(n.model), n.preds, { ...n.batch, masks: tensor([N - 1, hm, wm]) }, 'ERR_SHAPE_MISMATCH', new RegExp(`batch\\.masks: expected shape \\[${N}, H, W\\]`));
});

test('v8SegmentationLoss: a mask index beyond the image\'s label count, a binary mask value outside [0, 1]', async (t) => {
  const c = segCase({ perImage: 2 });
  const loss = new v8SegmentationLoss(c.model);
  // Image 0 has 2 labels: index 3 does not exist.
  await expectAll(t, loss, c.preds, { ...c.batch, masks: withValue(c.batch.masks, 5, 3) }, 'ERR_LABEL_OUT_OF_RANGE', /batch\.masks\[0\].*0\.\.=2.*got 3/);
  await expectAll(t, loss, c.preds, { ...c.batch, masks: withValue(c.batch.masks, 5, 0.5) }, 'ERR_LABEL_OUT_OF_RANGE', /batch\.masks\[0\]/);
  await expectAll(t, loss, c.preds, { ...c.batch, masks: withValue(c.batch.masks, 5, -1) }, 'ERR_LABEL_OUT_OF_RANGE', /batch\.masks\[0\]/);
  const n = segCase({ overlap: false });
  await expectAll(t, new v8SegmentationLoss(n.model), n.preds, { ...n.batch, masks: withValue(n.batch.masks, 7, 2) }, 'ERR_LABEL_OUT_OF_RANGE', /batch\.masks: expected values in \[0, 1\]/);
});

test('v8SegmentationLoss: prediction tensors that do not fit, non-finite values', async (t) => {
  const c = segCase();
  const loss = new v8SegmentationLoss(c.model);
  const [feats, pm, proto] = c.preds;
  const [B, nm, A] = pm.shape as [number, number, number];
  await expectAll(t, loss, [feats, tensor([B, nm, A - 1]), proto], c.batch, 'ERR_SHAPE_MISMATCH', /pred_masks: expected shape \[2, 4, \d+\]/);
  await expectAll(t, loss, [feats, tensor([B, nm + 1, A]), proto], c.batch, 'ERR_SHAPE_MISMATCH', /pred_masks/);
  await expectAll(t, loss, [feats, pm, tensor([B, nm, 16])], c.batch, 'ERR_SHAPE_MISMATCH', /proto: expected a rank-4/);
  const f = [...feats];
  f[1] = tensor([2, 67, 4, 4]);
  await expectAll(t, loss, [f, pm, proto], c.batch, 'ERR_SHAPE_MISMATCH', /feats\[1\]: expected 66 channels/);
  await expectAll(t, loss, [feats, pm, withValue(proto, 3, NaN)], c.batch, 'ERR_NON_FINITE', /proto/);
  await expectAll(t, loss, [feats, withValue(pm, 3, Infinity)], c.batch, 'ERR_INVALID_ARGUMENT', /preds: expected \[feats/);
  await expectAll(t, loss, [feats, withValue(pm, 3, -Infinity), proto], c.batch, 'ERR_NON_FINITE', /pred_masks/);
  await expectAll(t, loss, [feats, pm, proto], { ...c.batch, masks: withValue(c.batch.masks, 0, NaN) }, 'ERR_NON_FINITE', /batch\.masks/);
});

test('v8SegmentationLoss: structure (preds not a 3-tuple, a missing masks key, masks of the wrong type)', async (t) => {
  const c = segCase();
  const loss = new v8SegmentationLoss(c.model);
  // The level list alone (3 levels look like a 3-tuple): preds[0] is then a tensor, not the list of levels.
  await expectAll(t, loss, c.preds[0], c.batch, 'ERR_INVALID_ARGUMENT', /preds\[0\]: expected feats, an array of level tensors \(preds is \[feats: Tensor\[\], pred_masks: Tensor, proto: Tensor\]\)/);
  await expectAll(t, loss, c.preds.slice(0, 2), c.batch, 'ERR_INVALID_ARGUMENT', /preds: expected \[feats: Tensor\[\], pred_masks: Tensor, proto: Tensor\], got an array of length 2/);
  await expectAll(t, loss, [[c.preds[1], null], c.preds[1], c.preds[2]], c.batch, 'ERR_INVALID_ARGUMENT', /feats\[1\]: expected a tensor/);
  const { masks: _m, ...noMasks } = c.batch;
  await expectAll(t, loss, c.preds, noMasks, 'ERR_INVALID_ARGUMENT', /batch\.masks: expected a tensor, got nothing/);
  await expectAll(t, loss, c.preds, { ...c.batch, masks: { data: Uint8Array.from(c.batch.masks.data), shape: c.batch.masks.shape } }, 'ERR_INVALID_ARGUMENT', /batch\.masks\.data: expected a Float32Array, got a Uint8Array/);
});

// ---------------------------------------------------------------------------------------------------------------
// v8PoseLoss

test('v8PoseLoss: keypoints that do not fit the labels or kpt_shape; K·D of the predictions', async (t) => {
  const c = poseCase({ K: 5, D: 3 });
  const loss = new v8PoseLoss(c.model);
  const N = c.batch.batch_idx.shape[0]!;
  await expectAll(t, loss, c.preds, { ...c.batch, keypoints: tensor([N + 1, 5, 3]) }, 'ERR_SHAPE_MISMATCH', new RegExp(`batch\\.keypoints: expected shape \\[${N}, 5, 3\\]`));
  await expectAll(t, loss, c.preds, { ...c.batch, keypoints: tensor([N, 5, 2]) }, 'ERR_SHAPE_MISMATCH', /batch\.keypoints/);
  await expectAll(t, loss, c.preds, { ...c.batch, keypoints: tensor([N, 15]) }, 'ERR_SHAPE_MISMATCH', /batch\.keypoints/);
  const [feats, kpts] = c.preds;
  const [B, , A] = kpts.shape as [number, number, number];
  await expectAll(t, loss, [feats, tensor([B, 5 * 2, A])], c.batch, 'ERR_SHAPE_MISMATCH', /kpts: expected shape \[2, 15, \d+\] \(K·D = 5·3/);
  await expectAll(t, loss, [feats, tensor([B, 15, A + 1])], c.batch, 'ERR_SHAPE_MISMATCH', /kpts/);
  await expectAll(t, loss, [feats, withValue(kpts, 0, NaN)], c.batch, 'ERR_NON_FINITE', /kpts/);
  await expectAll(t, loss, c.preds, { ...c.batch, keypoints: withValue(c.batch.keypoints, 4, Infinity) }, 'ERR_NON_FINITE', /batch\.keypoints/);
  const { keypoints: _k, ...noKpts } = c.batch;
  await expectAll(t, loss, c.preds, noKpts, 'ERR_INVALID_ARGUMENT', /batch\.keypoints/);
  await expectAll(t, loss, [feats], c.batch, 'ERR_INVALID_ARGUMENT', /preds: expected \[feats: Tensor\[\], kpts: Tensor\]/);
});

test('v8PoseLoss: kpt_shape is required and must be [K, D] with D = 2 or 3', (t) => {
  const m: ModelInfo = { nc: 1, stride: [8, 16, 32] };
  expectCode(t, () => new v8PoseLoss(m), 'ERR_INVALID_ARGUMENT', /model\.kpt_shape.*got nothing/);
  expectCode(t, () => new v8PoseLoss({ ...m, kpt_shape: [17, 4] }), 'ERR_INVALID_ARGUMENT', /model\.kpt_shape\[1\]: expected 2 .* or 3/);
  expectCode(t, () => new v8PoseLoss({ ...m, kpt_shape: [0, 3] }), 'ERR_INVALID_ARGUMENT', /model\.kpt_shape\[0\]/);
  expectCode(t, () => new v8PoseLoss({ ...m, kpt_shape: [17] as unknown as [number, number] }), 'ERR_INVALID_ARGUMENT', /model\.kpt_shape: expected \[K, D\]/);
  expectCode(t, () => new v8PoseLoss({ ...m, kpt_shape: [17, 3] }, { oksSigmas: 'yes' as unknown as boolean }), 'ERR_INVALID_ARGUMENT', /options\.oksSigmas/);
});

// ---------------------------------------------------------------------------------------------------------------
// v8OBBLoss

test('v8OBBLoss: non-finite angles, boxes without the angle column, an angle tensor that does not fit', async (t) => {
  const c = obbCase();
  const loss = new v8OBBLoss(c.model);
  const [feats, angle] = c.preds;
  for (const v of [NaN, Infinity, -Infinity]) {
    await expectAll(t, loss, [feats, withValue(angle, 7, v)], c.batch, 'ERR_NON_FINITE', /^angle: expected finite values/);
    await expectAll(t, loss, c.preds, { ...c.batch, bboxes: withValue(c.batch.bboxes, 4, v) }, 'ERR_NON_FINITE', /batch\.bboxes/);
  }
  const N = c.batch.batch_idx.shape[0]!;
  await expectAll(t, loss, c.preds, { ...c.batch, bboxes: tensor([N, 4], () => 0.3) }, 'ERR_SHAPE_MISMATCH', /batch\.bboxes/);
  const [B, , A] = angle.shape as [number, number, number];
  await expectAll(t, loss, [feats, tensor([B, A])], c.batch, 'ERR_SHAPE_MISMATCH', /^angle: expected shape \[2, 1, \d+\]/);
  await expectAll(t, loss, [feats, tensor([B, 1, A - 1])], c.batch, 'ERR_SHAPE_MISMATCH', /^angle/);
  await expectAll(t, loss, c.preds, { ...c.batch, cls: withValue(c.batch.cls, 0, 5) }, 'ERR_LABEL_OUT_OF_RANGE', /batch\.cls\[0\]/);
  await expectAll(t, loss, c.preds, { ...c.batch, bboxes: withValue(c.batch.bboxes, 2, -0.1) }, 'ERR_LABEL_OUT_OF_RANGE', /batch\.bboxes\[0\]/);
  await expectAll(t, loss, c.preds, { ...c.batch, batch_idx: withValue(c.batch.batch_idx, 0, 2) }, 'ERR_LABEL_OUT_OF_RANGE', /batch\.batch_idx\[0\]/);
});

test('v8OBBLoss: bboxDecode and preprocess reject bad shapes', (t) => {
  const loss = new v8OBBLoss({ nc: 1, stride: [8] });
  expectCode(t, () => loss.bboxDecode(tensor([3, 2]), tensor([1, 3, 64]), tensor([1, 3, 2])), 'ERR_SHAPE_MISMATCH', /pred_angle/);
  expectCode(t, () => loss.bboxDecode(tensor([3, 2]), tensor([1, 3, 60]), tensor([1, 3, 1])), 'ERR_SHAPE_MISMATCH', /pred_dist/);
  expectCode(t, () => loss.preprocess(tensor([2, 6]), 1, [8, 8, 8, 8]), 'ERR_SHAPE_MISMATCH', /targets/);
  expectCode(t, () => loss.preprocess(tensor([2, 7]), 1, [8, 8]), 'ERR_SHAPE_MISMATCH', /scaleTensor/);
});

// ---------------------------------------------------------------------------------------------------------------
// v8ClassificationLoss

test('v8ClassificationLoss: class ids, shapes, non-finite logits, structure', async (t) => {
  const c = clsCase({ B: 4, nc: 5 });
  const loss = new v8ClassificationLoss();
  await expectAll(t, loss, c.preds, { cls: withValue(c.batch.cls, 2, 5) }, 'ERR_LABEL_OUT_OF_RANGE', /batch\.cls\[2\]: expected an integer class id in \[0, 5\), got 5/);
  await expectAll(t, loss, c.preds, { cls: withValue(c.batch.cls, 0, 1.5) }, 'ERR_LABEL_OUT_OF_RANGE', /batch\.cls\[0\]/);
  await expectAll(t, loss, c.preds, { cls: tensor([5]) }, 'ERR_SHAPE_MISMATCH', /batch\.cls: expected shape \[4\]/);
  await expectAll(t, loss, tensor([4, 5, 1]), c.batch, 'ERR_SHAPE_MISMATCH', /preds: expected a rank-2/);
  await expectAll(t, loss, withValue(c.preds, 3, NaN), c.batch, 'ERR_NON_FINITE', /preds/);
  await expectAll(t, loss, [c.preds], c.batch, 'ERR_INVALID_ARGUMENT', /preds: expected a tensor/);
  await expectAll(t, loss, c.preds, {}, 'ERR_INVALID_ARGUMENT', /batch\.cls/);
});

// ---------------------------------------------------------------------------------------------------------------
// E2EDetectLoss

test('E2EDetectLoss: branches named in the errors, structure of preds, labels', async (t) => {
  const c = e2eCase();
  const loss = new E2EDetectLoss(c.model);
  const o2o = [...c.preds.one2one];
  o2o[2] = tensor([2, 66, 3, 3]);
  await expectAll(t, loss, { ...c.preds, one2one: o2o }, c.batch, 'ERR_SHAPE_MISMATCH', /preds\.one2one\[2\]/);
  const o2m = [...c.preds.one2many];
  o2m[0] = withValue(o2m[0]!, 1, NaN);
  await expectAll(t, loss, { ...c.preds, one2many: o2m }, c.batch, 'ERR_NON_FINITE', /preds\.one2many\[0\]/);
  await expectAll(t, loss, c.preds.one2many, c.batch, 'ERR_INVALID_ARGUMENT', /preds: expected an object \{ one2many/);
  await expectAll(t, loss, { one2many: c.preds.one2many }, c.batch, 'ERR_INVALID_ARGUMENT', /preds\.one2one: expected an array/);
  await expectAll(t, loss, c.preds, { ...c.batch, cls: withValue(c.batch.cls, 0, 2) }, 'ERR_LABEL_OUT_OF_RANGE', /batch\.cls\[0\]/);
});

// ---------------------------------------------------------------------------------------------------------------
// TVPDetectLoss / TVPSegmentLoss

test('TVPDetectLoss / TVPSegmentLoss: fewer channels than the text prompts, labels beyond the visual prompts', async (t) => {
  const c = tvpCase({ nc: 3, vnc: 2 });
  const loss = new TVPDetectLoss(c.model);
  const few = c.preds.map((p) => tensor([p.shape[0]!, 64 + 2, p.shape[2]!, p.shape[3]!]));
  await expectAll(t, loss, few, c.batch, 'ERR_SHAPE_MISMATCH', /preds\[0\]: expected at least 67 channels/);
  await expectAll(t, loss, c.preds, { ...c.batch, cls: withValue(c.batch.cls, 0, 2) }, 'ERR_LABEL_OUT_OF_RANGE', /batch\.cls\[0\].*\[0, 2\)/);
  const s = tvpSegCase({ nc: 2, vnc: 3 });
  const seg = new TVPSegmentLoss(s.model);
  await expectAll(t, seg, s.preds, { ...s.batch, cls: withValue(s.batch.cls, 1, 3) }, 'ERR_LABEL_OUT_OF_RANGE', /batch\.cls\[1\]/);
  await expectAll(t, seg, [s.preds[0], s.preds[1], withValue(s.preds[2], 0, NaN)], s.batch, 'ERR_NON_FINITE', /proto/);
  await expectAll(t, seg, s.preds, { ...s.batch, masks: tensor([5, 2, 2]) }, 'ERR_SHAPE_MISMATCH', /batch\.masks/);
});

// ---------------------------------------------------------------------------------------------------------------
// Configuration

test('every task loss: unusable model or options; device cpu, auto (CUDA for the detection family where usable), cuda', (t) => {
  const m: ModelInfo = { nc: 2, stride: [8, 16, 32], kpt_shape: [5, 3] };
  const makers: [string, (model: ModelInfo, options?: object) => unknown][] = [
    ['v8SegmentationLoss', (x, o) => new v8SegmentationLoss(x, o)],
    ['v8PoseLoss', (x, o) => new v8PoseLoss(x, o)],
    ['v8OBBLoss', (x, o) => new v8OBBLoss(x, o)],
    ['E2EDetectLoss', (x, o) => new E2EDetectLoss(x, o)],
    ['TVPDetectLoss', (x, o) => new TVPDetectLoss(x, o)],
    ['TVPSegmentLoss', (x, o) => new TVPSegmentLoss(x, o)],
    ['v8ClassificationLoss', (_x, o) => new v8ClassificationLoss(o)],
  ];
  for (const [name, make] of makers) {
    if (name !== 'v8ClassificationLoss') {
      expectCode(t, () => make({ ...m, nc: 0 }), 'ERR_INVALID_ARGUMENT', /model\.nc/);
      expectCode(t, () => make({ ...m, stride: [] }), 'ERR_INVALID_ARGUMENT', /model\.stride/);
      expectCode(t, () => make({ ...m, reg_max: 1.5 }), 'ERR_INVALID_ARGUMENT', /model\.reg_max/);
      expectCode(t, () => make({ ...m, args: { cls: Infinity } }), 'ERR_INVALID_ARGUMENT', /model\.args\.cls/);
      expectCode(t, () => make(null as unknown as ModelInfo), 'ERR_INVALID_ARGUMENT', /model/);
    }
    expectCode(t, () => make(m, { device: 'gpu' }), 'ERR_INVALID_ARGUMENT', /options\.device/);
    const device = (o: object) => (make(m, o) as { device: string }).device;
    t.is(device({ device: 'cpu' }), 'cpu', `${name}: 'cpu'`);
    t.is(device({ device: 'auto' }), autoBackend(name), `${name}: 'auto'`);
    const probe = cudaAvailability();
    t.true(CUDA_LOSSES.includes(name), `${name} has a CUDA backend`);
    if (probe.available) {
      t.is(device({ device: 'cuda' }), 'cuda', `${name}: 'cuda'`);
      continue;
    }
    const err = t.throws(() => make(m, { device: 'cuda' }), { instanceOf: Error });
    t.is((err as Error & { code?: unknown }).code, 'ERR_CUDA_UNAVAILABLE', `${name} with device 'cuda'`);
    t.regex(err?.message ?? '', /options\.device/);
    t.true(err?.message.includes(probe.reason ?? '\u0000'), `${name}: the message carries the probe's reason`);
  }
});
