/**
 * The public surface of the building blocks and helpers: Ultralytics' constructor defaults, gradient forms that
 * agree with the plain forms, broadcasting of the pairwise helpers (values and accumulated gradients), the
 * assigner feeding BboxLoss, the no-GT assignment.
 */
import test from 'ava';
import {
  BboxLoss,
  DFLoss,
  FocalLoss,
  KeypointLoss,
  RotatedBboxLoss,
  RotatedTaskAlignedAssigner,
  TaskAlignedAssigner,
  VarifocalLoss,
  bbox2dist,
  bboxIouWithGrad,
  bbox_iou,
  dist2bbox,
  dist2rbox,
  dist2rboxWithGrad,
  make_anchors,
  probiou,
  probiouWithGrad,
  type Tensor,
} from 'yolo-loss';

import { closeness } from './helpers/fixtures.js';
import { rng, tensor } from './helpers/synthetic.js';

const T = (data: number[], shape: number[]): Tensor => ({ data: Float32Array.from(data), shape });

test('constructor defaults are Ultralytics\'', (t) => {
  const vfl = new VarifocalLoss();
  t.deepEqual([vfl.gamma, vfl.alpha], [2.0, 0.75]);
  const fl = new FocalLoss();
  t.deepEqual([fl.gamma, fl.alpha], [1.5, 0.25]);
  t.is(new DFLoss().reg_max, 16);
  const bl = new BboxLoss();
  t.is(bl.reg_max, 16);
  t.true(bl.dfl_loss instanceof DFLoss);
  t.is(new BboxLoss(1).dfl_loss, null);
  t.true(new RotatedBboxLoss(16) instanceof BboxLoss);
  const tal = new TaskAlignedAssigner();
  t.deepEqual([tal.topk, tal.num_classes, tal.bg_idx, tal.alpha, tal.beta, tal.eps], [13, 80, 80, 1.0, 6.0, 1e-9]);
  const rtal = new RotatedTaskAlignedAssigner({ topk: 10, num_classes: 3, alpha: 0.5 });
  t.deepEqual([rtal.topk, rtal.num_classes, rtal.bg_idx, rtal.alpha, rtal.beta], [10, 3, 3, 0.5, 6.0]);
  t.true(rtal instanceof TaskAlignedAssigner);
});

test('gradient forms return the plain value; upstream defaults to ones', (t) => {
  const r = rng(3);
  const p = tensor([2, 3, 4], () => r() * 4 - 2);
  const q = tensor([2, 3, 4], () => r());
  const l = tensor([2, 3, 4], () => (r() < 0.3 ? 1 : 0));
  const vfl = new VarifocalLoss();
  t.is(vfl.forwardWithGrad(p, q, l).value, vfl.forward(p, q, l));
  const fl = new FocalLoss();
  const g = fl.forwardWithGrad(p, l);
  t.is(g.value, fl.forward(p, l));
  t.deepEqual(g.grads.pred.shape, [2, 3, 4]);
  t.true(g.grads.pred.data !== p.data);

  const dfl = new DFLoss(8);
  const pd = tensor([12, 8], () => r() * 2);
  const target = tensor([3, 4], () => r() * 9 - 1);
  const plain = dfl.call(pd, target);
  t.deepEqual(plain.shape, [3, 1]);
  const a = dfl.callWithGrad(pd, target);
  const b = dfl.callWithGrad(pd, target, tensor([3, 1], () => 1));
  t.deepEqual(a.value, plain);
  t.deepEqual(a.grads.predDist, b.grads.predDist);
  // Linear in the upstream.
  const c = dfl.callWithGrad(pd, target, tensor([3, 1], () => 2));
  t.is(closeness(c.grads.predDist.data, Array.from(a.grads.predDist.data, (v) => 2 * v), 1e-6, 0), null);
});

test('KeypointLoss: perfect predictions cost 0; gradient only in x, y', (t) => {
  const gt = T([1, 1, 2, 2, 2, 0, 3, 3, 2], [1, 3, 3]);
  const kl = new KeypointLoss([0.5, 0.5, 0.5]);
  t.deepEqual(Array.from(kl.sigmas), [0.5, 0.5, 0.5]);
  const mask = T([1, 1, 1], [1, 3]);
  const area = T([4], [1, 1]);
  t.is(kl.forward(gt, gt, mask, area), 0);
  const off = T([1.5, 1, 5, 2, 2, 0, 3, 3, 9], [1, 3, 3]);
  const r = kl.forwardWithGrad(off, gt, mask, area);
  t.true(r.value > 0);
  t.deepEqual(r.grads.predKpts.shape, [1, 3, 3]);
  t.deepEqual([2, 5, 8].map((i) => r.grads.predKpts.data[i]), [0, 0, 0]);
  t.true(r.grads.predKpts.data[0]! > 0);
  t.is(new KeypointLoss(Float64Array.from([0.5, 0.5, 0.5])).forward(off, gt, mask, area), r.value);
});

test('bbox_iou: xywh by default, CIoU > DIoU > GIoU precedence, broadcasting [M,1,4] × [1,A,4] → [M,A,1]', (t) => {
  const a = T([0.5, 0.5, 1, 1], [1, 4]);
  t.is(closeness(bbox_iou(a, a).data, [1], 1e-6, 0), null);
  t.deepEqual(bbox_iou(a, a).shape, [1, 1]);
  const x1 = T([0, 0, 1, 1], [1, 4]);
  const x2 = T([0.5, 0, 1.5, 1], [1, 4]);
  const iou = bbox_iou(x1, x2, { xywh: false }).data[0]!;
  t.is(closeness([iou], [0.5 / 1.5], 1e-5, 0), null);
  const ciou = bbox_iou(x1, x2, { xywh: false, GIoU: true, DIoU: true, CIoU: true }).data[0]!;
  t.is(ciou, bbox_iou(x1, x2, { xywh: false, CIoU: true }).data[0]!);
  const diou = bbox_iou(x1, x2, { xywh: false, GIoU: true, DIoU: true }).data[0]!;
  t.is(diou, bbox_iou(x1, x2, { xywh: false, DIoU: true }).data[0]!);
  t.true(diou < iou);

  const r = rng(5);
  const M = 3;
  const A = 5;
  const box = () => {
    const x = r() * 10;
    const y = r() * 10;
    return [x, y, x + 1 + r() * 5, y + 1 + r() * 5];
  };
  const gt = T(Array.from({ length: M }, box).flat(), [M, 1, 4]);
  const pd = T(Array.from({ length: A }, box).flat(), [1, A, 4]);
  const opts = { xywh: false, CIoU: true };
  const all = bbox_iou(gt, pd, opts);
  t.deepEqual(all.shape, [M, A, 1]);
  for (let m = 0; m < M; m++) {
    for (let k = 0; k < A; k++) {
      const one = bbox_iou(T(Array.from(gt.data.subarray(4 * m, 4 * m + 4)), [4]), T(Array.from(pd.data.subarray(4 * k, 4 * k + 4)), [4]), opts);
      t.deepEqual(one.shape, [1]);
      t.is(all.data[m * A + k], one.data[0]);
    }
  }
  // Gradients of a broadcast input accumulate over the rows it was broadcast to.
  const w = bboxIouWithGrad(gt, pd, opts);
  t.deepEqual(w.value, all);
  t.deepEqual(w.grads.box1.shape, [M, 1, 4]);
  t.deepEqual(w.grads.box2.shape, [1, A, 4]);
  const sum = new Float64Array(4);
  for (let k = 0; k < A; k++) {
    const one = bboxIouWithGrad(T(Array.from(gt.data.subarray(0, 4)), [1, 4]), T(Array.from(pd.data.subarray(4 * k, 4 * k + 4)), [1, 4]), opts);
    one.grads.box1.data.forEach((v, i) => (sum[i] = sum[i]! + v));
  }
  t.is(closeness(w.grads.box1.data.subarray(0, 4), sum, 1e-5, 1e-6), null);
});

test('probiou: identical boxes ≈ 1, symmetric, broadcasting; gradient shapes', (t) => {
  const a = T([5, 5, 4, 2, 0.3], [1, 5]);
  const b = T([6, 5, 3, 3, 1.0, 5, 5, 4, 2, 0.3], [2, 5]);
  const v = probiou(a, b);
  t.deepEqual(v.shape, [2, 1]);
  t.true(v.data[1]! > 0.99);
  t.deepEqual(probiou(b, a).data, v.data);
  const g = probiouWithGrad(a, b, { CIoU: true });
  t.deepEqual(g.grads.obb1.shape, [1, 5]);
  t.deepEqual(g.grads.obb2.shape, [2, 5]);
  t.deepEqual(g.value, probiou(a, b, { CIoU: true }));
});

test('dist2bbox / bbox2dist: anchors broadcast over the batch, xyxy round trip, clamp to [0, reg_max − 0.01]', (t) => {
  const anchors = T([0.5, 0.5, 1.5, 0.5], [2, 2]);
  const dist = T([1, 1, 1, 1, 0, 0, 2, 2, 3, 1, 0, 1, 1, 2, 3, 4], [2, 2, 4]);
  const xyxy = dist2bbox(dist, anchors, false);
  t.deepEqual(xyxy.shape, [2, 2, 4]);
  t.deepEqual(Array.from(xyxy.data.subarray(0, 8)), [-0.5, -0.5, 1.5, 1.5, 1.5, 0.5, 3.5, 2.5]);
  const xywh = dist2bbox(dist, anchors);
  t.deepEqual(Array.from(xywh.data.subarray(0, 4)), [0.5, 0.5, 2, 2]);
  const back = bbox2dist(anchors, xyxy, 16);
  t.is(closeness(back.data, dist.data, 1e-6, 0), null);
  const clamped = bbox2dist(anchors, xyxy, 2);
  t.true(clamped.data.every((v) => v >= 0 && v <= Math.fround(1.99)));
});

test('dist2rbox: leading batch axes, θ = 0 gives the axis-aligned centre and size; gradient shapes', (t) => {
  const anchors = T([0.5, 0.5, 1.5, 0.5], [2, 2]);
  const dist = T([1, 1, 3, 1, 0, 0, 2, 2, 1, 1, 1, 1, 2, 2, 2, 2], [2, 2, 4]);
  const angle = T([0, 0, 0, 0], [2, 2, 1]);
  const out = dist2rbox(dist, angle, anchors);
  t.deepEqual(out.shape, [2, 2, 4]);
  t.deepEqual(Array.from(out.data.subarray(0, 4)), [1.5, 0.5, 4, 2]);
  const g = dist2rboxWithGrad(dist, angle, anchors);
  t.deepEqual(g.grads.predDist.shape, [2, 2, 4]);
  t.deepEqual(g.grads.predAngle.shape, [2, 2, 1]);
});

test('make_anchors: from level tensors or sizes, typed-array strides, default offset 0.5', (t) => {
  const [p, s] = make_anchors([[2, 3], [1, 2]], Float32Array.from([8, 16]));
  t.deepEqual(p.shape, [8, 2]);
  t.deepEqual(s.shape, [8, 1]);
  t.deepEqual(Array.from(p.data), [0.5, 0.5, 1.5, 0.5, 2.5, 0.5, 0.5, 1.5, 1.5, 1.5, 2.5, 1.5, 0.5, 0.5, 1.5, 0.5]);
  t.deepEqual(Array.from(s.data), [8, 8, 8, 8, 8, 8, 16, 16]);
  const [p2] = make_anchors([tensor([1, 5, 2, 3]), tensor([1, 5, 1, 2])], [8, 16], 0);
  t.deepEqual(Array.from(p2.data.subarray(0, 4)), [0, 0, 1, 0]);
});

test('TaskAlignedAssigner feeds BboxLoss; no GT at all gives background everywhere', (t) => {
  // One 16x16 level at stride 4: anchors in pixels.
  const [grid] = make_anchors([[4, 4]], [4]);
  const A = 16;
  const anc = { data: grid.data.map((v) => v * 4), shape: [A, 2] };
  const gtBoxes = T([2, 2, 14, 14], [1, 1, 4]);
  const pd = tensor([1, A, 4], (i) => [3, 3, 13, 13][i % 4]!);
  const scores = tensor([1, A, 2], (i) => (i % 2 === 0 ? 0.8 : 0.1));
  const tal = new TaskAlignedAssigner({ topk: 4, num_classes: 2, alpha: 0.5, beta: 6 });
  const [labels, tb, ts, fg, idx] = tal.forward(scores, pd, anc, T([0], [1, 1, 1]), gtBoxes, T([1], [1, 1, 1]));
  t.deepEqual(labels.shape, [1, A]);
  t.deepEqual(tb.shape, [1, A, 4]);
  t.deepEqual(ts.shape, [1, A, 2]);
  t.deepEqual(idx.shape, [1, A]);
  t.is(fg.data.reduce((a, b) => a + b, 0), 4);
  t.true(fg.data.every((v) => v === 0 || v === 1));
  const sum = Math.max(ts.data.reduce((a, b) => a + b, 0), 1);
  const [liou, ldfl] = new BboxLoss(16).forward(
    tensor([1, A, 64], () => 0),
    { data: pd.data.map((v) => v / 4), shape: [1, A, 4] },
    grid,
    { data: tb.data.map((v) => v / 4), shape: [1, A, 4] },
    ts,
    sum,
    fg,
  );
  t.true(Number.isFinite(liou) && liou > 0 && Number.isFinite(ldfl) && ldfl > 0);

  const none = tal.forward(scores, pd, anc, tensor([1, 0, 1]), tensor([1, 0, 4]), tensor([1, 0, 1]));
  t.true(none[0].data.every((v) => v === 2), 'labels = num_classes');
  t.true([none[1], none[2], none[3], none[4]].every((x) => x.data.every((v) => v === 0)));
});
