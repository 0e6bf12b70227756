/**
 * The public surface of the task losses beyond detection: constructor attributes and defaults, the structure of
 * `grads`, relations between the losses (E2E = two detection losses, TVP = detection/segmentation on the
 * visual-prompt channels, overlap and non-overlap masks describing the same objects), OBB's bboxDecode and
 * preprocess.
 */
import test from 'ava';
import {
  DEFAULT_HYP,
  E2EDetectLoss,
  OKS_SIGMA,
  TVPDetectLoss,
  TVPSegmentLoss,
  TaskLoss,
  v8ClassificationLoss,
  v8DetectionLoss,
  v8OBBLoss,
  v8PoseLoss,
  v8SegmentationLoss,
  type Tensor,
} from 'yolo-loss';

import { autoBackend } from './helpers/devices.js';
import { closeness } from './helpers/fixtures.js';
import { tensor } from './helpers/synthetic.js';
import { anchorsOf, clsCase, e2eCase, obbCase, poseCase, segCase, tvpCase, tvpSegCase } from './helpers/tasks.js';

const shapes = (ts: Tensor[]) => ts.map((x) => x.shape);

test('v8SegmentationLoss: attributes, loss = B·lossItems, grads [levels[], pred_masks, proto]', (t) => {
  const c = segCase({ B: 3, perImage: 3 });
  const loss = new v8SegmentationLoss(c.model);
  t.true(loss instanceof TaskLoss);
  t.is(loss.device, autoBackend('v8SegmentationLoss'));
  t.is(loss.nc, 2);
  t.is(loss.no, 66);
  t.is(loss.reg_max, 16);
  t.true(loss.use_dfl);
  t.is(loss.tal_topk, 10);
  t.true(loss.overlap);
  t.false(new v8SegmentationLoss({ ...c.model, args: { overlap_mask: false } }).overlap);
  t.deepEqual({ ...loss.hyp }, { ...DEFAULT_HYP });
  const [l, items] = loss.call(c.preds, c.batch);
  t.is(l.length, 4);
  t.is(closeness(l, Array.from(items, (v) => v * 3), 1e-6, 0), null);
  t.true(items.every((v) => Number.isFinite(v) && v >= 0));
  t.true(items[1]! > 0, 'the mask term is active');
  const r = loss.valueAndGrad(c.preds, c.batch);
  t.deepEqual(r.loss, l);
  t.is(r.grads.length, 3);
  t.deepEqual(shapes(r.grads[0]), shapes(c.preds[0]));
  t.deepEqual(r.grads[1].shape, c.preds[1].shape);
  t.deepEqual(r.grads[2].shape, c.preds[2].shape);
  t.true(r.grads[1].data.some((v) => v !== 0), 'mask coefficients receive gradient');
  t.true(r.grads[2].data.some((v) => v !== 0), 'prototypes receive gradient');
});

test('v8SegmentationLoss: index maps and binary masks of the same (non-overlapping) objects give the same loss', (t) => {
  // One label per image: the index map of an image is its label's binary mask.
  const a = segCase({ perImage: 1, overlap: true, seed: 5 });
  const b = segCase({ perImage: 1, overlap: false, seed: 5 });
  t.deepEqual(Array.from(a.batch.masks.data), Array.from(b.batch.masks.data));
  const ra = new v8SegmentationLoss(a.model).valueAndGrad(a.preds, a.batch);
  const rb = new v8SegmentationLoss(b.model).valueAndGrad(b.preds, b.batch);
  t.deepEqual(ra.loss, rb.loss);
  t.deepEqual(ra.grads, rb.grads);
});

test('v8PoseLoss: kpt_shape, OKS or uniform sigmas, loss [box, pose, kobj, cls, dfl], grads [levels[], kpts]', (t) => {
  const c = poseCase({ K: 5, D: 3 });
  const loss = new v8PoseLoss(c.model);
  t.deepEqual([...loss.kpt_shape], [5, 3]);
  t.deepEqual(Array.from(loss.sigmas), new Array(5).fill(Math.fround(1 / 5)));
  const coco = new v8PoseLoss({ nc: 1, stride: [8, 16, 32], kpt_shape: [17, 3] });
  // The COCO OKS sigmas (the core's literals may differ from the reference's `np.array([...]) / 10` in the last bit).
  t.is(closeness(coco.sigmas, OKS_SIGMA, 1e-15, 0), null);
  const tuple = new v8PoseLoss({ nc: 1, stride: [8, 16, 32], kpt_shape: [17, 3] }, { oksSigmas: false });
  t.deepEqual(Array.from(tuple.sigmas), new Array(17).fill(Math.fround(1 / 17)));
  const [l, items] = loss.call(c.preds, c.batch);
  t.is(l.length, 5);
  t.is(closeness(l, Array.from(items, (v) => v * 2), 1e-6, 0), null);
  t.true(items[1]! > 0 && items[2]! > 0, 'pose and kobj terms are active');
  const r = loss.valueAndGrad(c.preds, c.batch);
  t.is(r.grads.length, 2);
  t.deepEqual(shapes(r.grads[0]), shapes(c.preds[0]));
  t.deepEqual(r.grads[1].shape, c.preds[1].shape);
  t.true(r.grads[1].data.some((v) => v !== 0));
  // D = 2: no visibility channel, kobj is 0.
  const d2 = poseCase({ K: 4, D: 2 });
  t.is(new v8PoseLoss(d2.model).call(d2.preds, d2.batch)[1][2], 0);
});

test('v8OBBLoss: loss [box, cls, dfl], grads [levels[], angle], bboxDecode and preprocess', (t) => {
  const c = obbCase();
  const loss = new v8OBBLoss(c.model);
  t.is(loss.tal_topk, 10);
  const [l, items] = loss.call(c.preds, c.batch);
  t.is(l.length, 3);
  t.true(items[0]! > 0);
  const r = loss.valueAndGrad(c.preds, c.batch);
  t.deepEqual(shapes(r.grads[0]), shapes(c.preds[0]));
  t.deepEqual(r.grads[1].shape, c.preds[1].shape);
  t.true(r.grads[1].data.some((v) => v !== 0), 'the angle receives gradient');

  const obb = new v8OBBLoss({ nc: 1, stride: [8], reg_max: 1 });
  const anchors: Tensor = { data: Float32Array.from([0.5, 0.5]), shape: [1, 2] };
  const dec = obb.bboxDecode(anchors, { data: Float32Array.from([1, 1, 3, 1]), shape: [1, 1, 4] }, { data: Float32Array.from([Math.PI / 2]), shape: [1, 1, 1] });
  t.deepEqual(dec.shape, [1, 1, 5]);
  // Distances (1, 1, 3, 1): offset (1, 0) in the box frame, rotated by π/2 → (0, 1); w = 4, h = 2.
  t.is(closeness(dec.data, [0.5, 1.5, 4, 2, Math.PI / 2], 1e-6, 1e-6), null);
  const targets: Tensor = { data: Float32Array.from([1, 0, 0.5, 0.5, 0.25, 0.5, 0.3, 0, 0, 0.25, 0.25, 0.5, 0.5, 1]), shape: [2, 7] };
  const pre = obb.preprocess(targets, 2, [64, 32, 64, 32]);
  t.deepEqual(pre.shape, [2, 1, 6]);
  t.is(closeness(pre.data, [0, 16, 8, 32, 16, 1, 0, 32, 16, 16, 16, 0.3], 1e-6, 0), null);
});

test('v8ClassificationLoss: 1-element loss = lossItems, mean cross entropy, gradient (softmax − onehot)/B', (t) => {
  const loss = new v8ClassificationLoss({ device: 'cpu' });
  t.is(loss.device, 'cpu');
  const preds: Tensor = { data: Float32Array.from([0, 0, 0, 2, 0, 0]), shape: [2, 3] };
  const batch = { cls: { data: Float32Array.from([1, 0]), shape: [2] } };
  const [l, items] = loss.call(preds, batch);
  t.is(l.length, 1);
  t.deepEqual(l, items);
  const ce = (Math.log(3) + (Math.log(Math.exp(2) + 2) - 2)) / 2;
  t.is(closeness(l, [ce], 1e-6, 0), null);
  const r = loss.valueAndGrad(preds, batch);
  t.deepEqual(r.grads.shape, [2, 3]);
  const s = Math.exp(2) + 2;
  t.is(closeness(r.grads.data, [1 / 6, 1 / 6 - 0.5, 1 / 6, (Math.exp(2) / s - 1) / 2, 1 / s / 2, 1 / s / 2], 1e-5, 0), null);
  const c = clsCase({ B: 8, nc: 10 });
  t.is(loss.valueAndGrad(c.preds, c.batch).grads.data.length, 80);
});

test('E2EDetectLoss: the sum of a top-10 and a top-1 v8DetectionLoss, grads { one2many, one2one }', (t) => {
  const c = e2eCase();
  const loss = new E2EDetectLoss(c.model);
  t.is(loss.one2many_topk, 10);
  t.is(loss.one2one_topk, 1);
  const r = loss.valueAndGrad(c.preds, c.batch);
  const o2m = new v8DetectionLoss(c.model, 10).valueAndGrad(c.preds.one2many, c.batch);
  const o2o = new v8DetectionLoss(c.model, 1).valueAndGrad(c.preds.one2one, c.batch);
  t.is(closeness(r.loss, Array.from(o2m.loss, (v, i) => v + o2o.loss[i]!), 1e-6, 0), null);
  t.is(closeness(r.lossItems, Array.from(o2m.lossItems, (v, i) => v + o2o.lossItems[i]!), 1e-6, 0), null);
  t.deepEqual(Object.keys(r.grads).sort(), ['one2many', 'one2one']);
  t.deepEqual(r.grads.one2many, o2m.grads);
  t.deepEqual(r.grads.one2one, o2o.grads);
});

test('TVPDetectLoss: the detection loss on the visual-prompt channels, only its cls component back-propagated', (t) => {
  const c = tvpCase({ nc: 3, vnc: 2 });
  const loss = new TVPDetectLoss(c.model);
  t.is(loss.ori_nc, 3);
  t.is(loss.ori_no, 3 + 64);
  t.is(loss.ori_reg_max, 16);
  const r = loss.valueAndGrad(c.preds, c.batch);
  t.is(r.loss.length, 1);
  t.is(r.lossItems.length, 3);
  // Reference: v8DetectionLoss with nc = vnc on [box channels, VP channels].
  const vp = c.preds.map((p) => {
    const [B, C, H, W] = p.shape as [number, number, number, number];
    const hw = H * W;
    const keep = [...Array(64).keys(), ...Array.from({ length: 2 }, (_, i) => 64 + 3 + i)];
    return tensor([B, keep.length, H, W], (i) => {
      const b = Math.floor(i / (keep.length * hw));
      const ch = Math.floor(i / hw) % keep.length;
      return p.data[(b * C + keep[ch]!) * hw + (i % hw)]!;
    });
  });
  const det = new v8DetectionLoss({ ...c.model, nc: 2 }).valueAndGrad(vp, c.batch);
  t.is(closeness(r.lossItems, det.lossItems, 1e-6, 0), null);
  t.is(closeness(r.loss, [det.loss[1]!], 1e-6, 0), null);
  // Gradient only in the VP class channels.
  r.grads.forEach((g, l) => {
    const [B, C, H, W] = g.shape as [number, number, number, number];
    for (let b = 0; b < B; b++) {
      for (let ch = 0; ch < C; ch++) {
        const plane = g.data.subarray((b * C + ch) * H * W, (b * C + ch + 1) * H * W);
        if (ch < 64 + 3) t.true(plane.every((v) => v === 0), `level ${l} channel ${ch} must get no gradient`);
      }
    }
  });
  t.true(r.grads[0]!.data.some((v) => v !== 0));
  // No visual-prompt channels: [3] zeros and zero gradients.
  const none = tvpCase({ nc: 3, vnc: 0 });
  const z = new TVPDetectLoss(none.model).valueAndGrad(none.preds, none.batch);
  t.deepEqual(Array.from(z.loss), [0, 0, 0]);
  t.deepEqual(Array.from(z.lossItems), [0, 0, 0]);
  t.true(z.grads.every((g) => g.data.every((v) => v === 0)));
});

test('TVPSegmentLoss: intended semantics, loss [cls component], items [box, seg, cls, dfl]; zeros without VP channels', (t) => {
  const c = tvpSegCase({ nc: 2, vnc: 3, overlap: false });
  const loss = new TVPSegmentLoss(c.model);
  t.false(loss.overlap);
  t.is(loss.ori_nc, 2);
  const r = loss.valueAndGrad(c.preds, c.batch);
  t.is(r.loss.length, 1);
  t.is(r.lossItems.length, 4);
  t.is(closeness(r.loss, [r.lossItems[2]! * 2], 1e-6, 0), null);
  t.true(r.lossItems[1]! > 0, 'the mask term is computed (for logging)');
  t.true(r.grads[1].data.every((v) => v === 0) && r.grads[2].data.every((v) => v === 0), 'no gradient to masks or prototypes');
  const none = tvpSegCase({ nc: 2, vnc: 0 });
  const z = new TVPSegmentLoss(none.model).valueAndGrad(none.preds, none.batch);
  t.deepEqual(Array.from(z.loss), [0, 0, 0, 0]);
  t.deepEqual(Array.from(z.lossItems), [0, 0, 0, 0]);
  t.true([...z.grads[0], z.grads[1], z.grads[2]].every((g) => g.data.every((v) => v === 0)));
});

test('every task loss: constructor inputs are not kept; fresh outputs; device auto', (t) => {
  const model = { nc: 2, stride: [8, 16, 32], kpt_shape: [5, 3] as [number, number], args: { box: 1 } };
  const all = [
    new v8SegmentationLoss(model),
    new v8PoseLoss(model),
    new v8OBBLoss(model),
    new E2EDetectLoss(model),
    new TVPDetectLoss(model),
    new TVPSegmentLoss(model),
  ];
  model.stride[0] = 4;
  model.args.box = 2;
  model.kpt_shape[0] = 9;
  for (const loss of all) {
    t.is(loss.device, autoBackend(loss.constructor.name));
    t.deepEqual([...loss.stride], [8, 16, 32]);
    t.is(loss.hyp.box, 1);
    t.true(Object.isFrozen(loss.stride));
  }
  t.deepEqual([...(all[1] as v8PoseLoss).kpt_shape], [5, 3]);
  t.is(new v8ClassificationLoss().device, autoBackend('v8ClassificationLoss'));
  // Two calls give equal but distinct arrays.
  const c = segCase();
  const loss = new v8SegmentationLoss(c.model);
  const [a] = loss.call(c.preds, c.batch);
  const [b] = loss.call(c.preds, c.batch);
  t.not(a, b);
  t.deepEqual(a, b);
  t.is(anchorsOf(64, 64), c.preds[1].shape[2]!);
});
