/**
 * The pieces of the training demo (`npm run demo`): the convolution with the fast gradient against tfjs's own,
 * decode / NMS / AP / mAP, the synthetic shapes, the PNG encoder.
 */
import { inflateSync } from 'node:zlib';

import * as tf from '@tensorflow/tfjs';
import test from 'ava';

import { averagePrecision, decode, iou, meanAveragePrecision, nms, type Detection, type GroundTruth } from '../demo/metrics.js';
import { Detector, conv2d, samePad } from '../demo/model.js';
import { smooth } from '../demo/plots.js';
import { Raster, crc32, encodePng } from '../demo/raster.js';
import { CLASS_COLOURS, ShapesDataset, collate, yoloLabelLines } from '../demo/shapes.js';

test.before(async () => {
  tf.env().set('PROD', true);
  await tf.setBackend('cpu');
});

// ------------------------------------------------------------------------------------------------------------
// conv2d with the gradient made of forward convolutions

test('samePad follows TensorFlow', (t) => {
  t.deepEqual(samePad(8, 3, 1), [1, 1, 8]);
  t.deepEqual(samePad(8, 3, 2), [0, 1, 4]);
  t.deepEqual(samePad(9, 3, 2), [1, 1, 5]);
  t.deepEqual(samePad(7, 1, 1), [0, 0, 7]);
  t.deepEqual(samePad(10, 5, 2), [1, 2, 5]);
});

test('conv2d: value and both gradients equal tf.conv2d under autograd (strides 1 and 2, even and odd sizes, 1×1, 3×3, 5×5)', (t) => {
  const cases: [number, number, number, number, number, number, number][] = [
    [2, 8, 8, 3, 4, 3, 1],
    [2, 8, 8, 3, 4, 3, 2],
    [2, 9, 7, 3, 4, 3, 2],
    [2, 6, 10, 3, 5, 3, 2],
    [1, 6, 7, 2, 3, 3, 2],
    [1, 6, 6, 2, 3, 1, 1],
    [2, 10, 10, 3, 2, 5, 2],
    [1, 7, 5, 2, 2, 3, 1],
    [1, 11, 11, 2, 3, 5, 1],
  ];
  for (const [B, H, W, ci, co, k, s] of cases) {
    tf.tidy(() => {
      const x = tf.randomNormal([B, H, W, ci], 0, 1, 'float32', 1) as tf.Tensor4D;
      const w = tf.randomNormal([k, k, ci, co], 0, 1, 'float32', 2) as tf.Tensor4D;
      const r = tf.randomNormal(tf.conv2d(x, w, s, 'same').shape, 0, 1, 'float32', 3);
      const ref = tf.valueAndGrads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, s, 'same'), r)));
      const ours = tf.valueAndGrads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(conv2d(a as tf.Tensor4D, b as tf.Tensor4D, s), r)));
      const want = ref([x, w]);
      const got = ours([x, w]);
      const label = `B${B} ${H}x${W} ${ci}->${co} k${k} s${s}`;
      t.true(Math.abs(got.value.dataSync()[0]! - want.value.dataSync()[0]!) < 1e-4, label);
      want.grads.forEach((g, i) => {
        t.deepEqual(got.grads[i]!.shape, g.shape, label);
        const err = tf.max(tf.abs(tf.sub(got.grads[i]!, g))).dataSync()[0]!;
        const scale = tf.max(tf.abs(g)).dataSync()[0]!;
        t.true(err <= 1e-5 * Math.max(1, scale), `${label}: gradient ${i} off by ${err}`);
      });
    });
  }
});

test('conv2d(inputGrad = false) gives zeros for x and the same filter gradient', (t) => {
  tf.tidy(() => {
    const x = tf.randomNormal([2, 8, 8, 3], 0, 1, 'float32', 4) as tf.Tensor4D;
    const w = tf.randomNormal([3, 3, 3, 4], 0, 1, 'float32', 5) as tf.Tensor4D;
    const [gx, gw] = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 2, false)))([x, w]);
    const [, gw2] = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 2)))([x, w]);
    t.true(gx!.dataSync().every((v) => v === 0));
    t.deepEqual(gw!.dataSync(), gw2!.dataSync());
  });
});

test('Detector: three levels [B, 4*reg_max + nc, H/s, W/s] for strides 8, 16, 32, Detect bias init', (t) => {
  const m = new Detector({ imgsz: 64, nc: 3, reg_max: 4, widths: [4, 8, 8, 8, 8], headWidth: 8 });
  tf.tidy(() => {
    const out = m.predict(tf.zeros([2, 64, 64, 3]) as tf.Tensor4D);
    t.deepEqual(
      out.map((o) => o.shape),
      [
        [2, 19, 8, 8],
        [2, 19, 4, 4],
        [2, 19, 2, 2],
      ],
    );
  });
  t.true(m.parameterCount > 0);
  t.is(m.variables.length, 2 * (9 + 12)); // 9 backbone convs, 4 per head level; weights and biases
  m.dispose();
});

// ------------------------------------------------------------------------------------------------------------
// decode, NMS, AP, mAP

/** One level `[1, 4R + nc, H, W]` filled with `fill`. */
function level(R: number, nc: number, H: number, W: number, fill = -20): { data: Float32Array; shape: number[] } {
  return { data: new Float32Array((4 * R + nc) * H * W).fill(fill), shape: [1, 4 * R + nc, H, W] };
}

test('decode: DFL soft-argmax distances × stride around the anchor centre, sigmoid scores, conf filter', (t) => {
  const R = 4;
  const nc = 2;
  const p = level(R, nc, 2, 2);
  const plane = 4;
  const at = (ch: number, y: number, x: number, v: number): void => void (p.data[ch * plane + y * 2 + x] = v);
  // Anchor (y 1, x 0): distances left 1, top 2, right 3 (one-hot logits), bottom 1.5 (two equal logits 1 and 2).
  for (let side = 0; side < 4; side++) for (let k = 0; k < R; k++) at(side * R + k, 1, 0, 0);
  at(0 * R + 1, 1, 0, 30);
  at(1 * R + 2, 1, 0, 30);
  at(2 * R + 3, 1, 0, 30);
  at(3 * R + 1, 1, 0, 30);
  at(3 * R + 2, 1, 0, 30);
  at(4 * R + 1, 1, 0, 0); // class 1: score 0.5
  const dets = decode([p], { nc, reg_max: R, strides: [8], conf: 0.25 });
  t.is(dets.length, 1);
  t.is(dets[0]!.length, 1);
  const d = dets[0]![0]!;
  t.is(d.cls, 1);
  t.true(Math.abs(d.score - 0.5) < 1e-9);
  // Anchor centre (0.5, 1.5) in grid units.
  const want = [(0.5 - 1) * 8, (1.5 - 2) * 8, (0.5 + 3) * 8, (1.5 + 1.5) * 8];
  [d.x1, d.y1, d.x2, d.y2].forEach((v, i) => t.true(Math.abs(v - want[i]!) < 1e-4, `coordinate ${i}: ${v} vs ${want[i]}`));
  // Nothing above a higher threshold; multi-label: a second class on the same anchor gives a second candidate.
  t.is(decode([p], { nc, reg_max: R, strides: [8], conf: 0.6 })[0]!.length, 0);
  at(4 * R + 0, 1, 0, 2);
  t.deepEqual(
    decode([p], { nc, reg_max: R, strides: [8], conf: 0.25 })[0]!.map((x) => x.cls).sort(),
    [0, 1],
  );
  t.throws(() => decode([p], { nc: 3, reg_max: R, strides: [8] }), { message: /expected \[1, 19, H, W\]/ });
});

test('decode: reg_max 1 reads the distances directly; levels and images keep their strides and order', (t) => {
  const a = level(1, 1, 2, 2, 1); // every distance 1, every score σ(1)
  const b = level(1, 1, 1, 1, 2);
  const dets = decode([a, b], { nc: 1, reg_max: 1, strides: [16, 32], conf: 0.5 });
  t.is(dets[0]!.length, 5);
  const last = dets[0]![4]!;
  t.deepEqual([last.x1, last.y1, last.x2, last.y2], [(0.5 - 2) * 32, (0.5 - 2) * 32, (0.5 + 2) * 32, (0.5 + 2) * 32]);
  const first = dets[0]![0]!;
  t.deepEqual([first.x1, first.y1, first.x2, first.y2], [(0.5 - 1) * 16, (0.5 - 1) * 16, (0.5 + 1) * 16, (0.5 + 1) * 16]);
});

const box = (x1: number, y1: number, x2: number, y2: number, cls = 0, score = 1): Detection => ({ x1, y1, x2, y2, cls, score });

test('iou and nms: per class, best first, overlap threshold, max_det', (t) => {
  t.is(iou(box(0, 0, 10, 10), box(5, 0, 15, 10)), 50 / 150);
  t.is(iou(box(0, 0, 10, 10), box(10, 0, 20, 10)), 0);
  const dets = [box(0, 0, 10, 10, 0, 0.9), box(1, 0, 11, 10, 0, 0.8), box(1, 0, 11, 10, 1, 0.7), box(20, 20, 30, 30, 0, 0.6), box(5, 0, 15, 10, 0, 0.5)];
  const kept = nms(dets, 0.5);
  t.deepEqual(
    kept.map((d) => d.score),
    [0.9, 0.7, 0.6, 0.5],
  );
  t.deepEqual(
    nms(dets, 0.3).map((d) => d.score),
    [0.9, 0.7, 0.6],
  );
  t.is(nms(dets, 0.5, 2).length, 2);
  t.deepEqual(
    nms(dets, 0.5, 100, true).map((d) => d.score),
    [0.9, 0.6, 0.5],
  );
});

test('averagePrecision: all-point interpolation by hand', (t) => {
  t.is(averagePrecision([true, true], 2), 1);
  t.is(averagePrecision([], 3), 0);
  t.true(Number.isNaN(averagePrecision([false], 0)));
  // TP, FP, TP with 3 GT: recall 1/3 at precision 1, 2/3 at precision 2/3.
  t.true(Math.abs(averagePrecision([true, false, true], 3) - (1 / 3 + (1 / 3) * (2 / 3))) < 1e-12);
  // FP first, then TP: the envelope takes precision 1/2 over recall [0, 1].
  t.true(Math.abs(averagePrecision([false, true], 1) - 0.5) < 1e-12);
});

test('meanAveragePrecision: perfect, shifted, wrong class, duplicates, classes without ground truth', (t) => {
  const gts: GroundTruth[][] = [
    [
      { x1: 0, y1: 0, x2: 10, y2: 10, cls: 0 },
      { x1: 20, y1: 20, x2: 40, y2: 40, cls: 1 },
    ],
    [{ x1: 5, y1: 5, x2: 15, y2: 25, cls: 0 }],
  ];
  const perfect = gts.map((g) => g.map((b) => ({ ...b, score: 0.9 })));
  let r = meanAveragePrecision(perfect, gts, 3);
  t.is(r.map, 1);
  t.deepEqual(r.gtCount, [2, 1, 0]);
  t.true(Number.isNaN(r.ap[2]!));
  // Shifted by half the width: IoU 1/3 < 0.5 for every box → 0.
  const shifted = gts.map((g) => g.map((b) => ({ ...b, x1: b.x1 + (b.x2 - b.x1) / 2, x2: b.x2 + (b.x2 - b.x1) / 2, score: 0.9 })));
  t.is(meanAveragePrecision(shifted, gts, 3).map, 0);
  // A duplicate of a matched box is a false positive; ranked after the true positives it leaves AP at 1.
  const dup = perfect.map((d) => [...d, ...d.map((b) => ({ ...b, score: 0.1 }))]);
  t.is(meanAveragePrecision(dup, gts, 3).map, 1);
  // Ranked first, a wrong-class box costs class 2 nothing (no GT) but a wrong box of class 0 halves its first step.
  const wrong = perfect.map((d, i) => (i === 0 ? [box(50, 50, 60, 60, 0, 0.95), ...d] : d));
  r = meanAveragePrecision(wrong, gts, 3);
  t.true(Math.abs(r.ap[0]! - (2 / 3) * 1) < 1e-12, String(r.ap[0]));
  t.is(r.ap[1], 1);
});

// ------------------------------------------------------------------------------------------------------------
// Synthetic shapes, PNG

test('shapes: deterministic per seed, labels inside the image and painted in their class colour', (t) => {
  const a = new ShapesDataset(3, { size: 64 }).take(20);
  const b = new ShapesDataset(3, { size: 64 }).take(20);
  t.deepEqual(a, b);
  t.notDeepEqual(a, new ShapesDataset(4, { size: 64 }).take(20));
  for (const s of a) {
    t.is(s.image.length, 64 * 64 * 3);
    t.true(s.labels.length >= 1 && s.labels.length <= 4);
    for (const l of s.labels) {
      t.true(l.cls >= 0 && l.cls < 6);
      t.true(l.cx - l.w / 2 >= -1e-9 && l.cx + l.w / 2 <= 1 + 1e-9 && l.cy - l.h / 2 >= -1e-9 && l.cy + l.h / 2 <= 1 + 1e-9);
      // The centre pixel has the class colour (± jitter and noise).
      const p = (Math.floor(l.cy * 64) * 64 + Math.floor(l.cx * 64)) * 3;
      const c = CLASS_COLOURS[l.cls]!;
      const dist = Math.hypot(s.image[p]! - c[0], s.image[p + 1]! - c[1], s.image[p + 2]! - c[2]);
      t.true(dist < 0.6, `centre colour off by ${dist}`);
    }
  }
  t.regex(yoloLabelLines(a[0]!.labels)[0]!, /^\d \d\.\d{6} \d\.\d{6} \d\.\d{6} \d\.\d{6}$/);
  const batch = collate(a.slice(0, 3));
  const n = a.slice(0, 3).reduce((s, x) => s + x.labels.length, 0);
  t.is(batch.images.length, 3 * 64 * 64 * 3);
  t.is(batch.cls.length, n);
  t.is(batch.bboxes.length, 4 * n);
  t.deepEqual(Array.from(new Set(batch.batch_idx)), [0, 1, 2]);
});

test('encodePng: a valid PNG (signature, CRCs) whose pixels decode back exactly', (t) => {
  const img = new Raster(7, 5, [10, 20, 30]);
  img.fillRect(1, 1, 3, 2, [200, 100, 50]);
  img.line(0, 4, 6, 0, [0, 255, 0]);
  img.text(0, 0, 'a', [1, 2, 3]);
  const png = img.toPng();
  t.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  // Walk the chunks, check every CRC, collect IDAT.
  let off = 8;
  const idat: Buffer[] = [];
  const types: string[] = [];
  while (off < png.length) {
    const len = png.readUInt32BE(off);
    const type = png.toString('ascii', off + 4, off + 8);
    types.push(type);
    t.is(png.readUInt32BE(off + 8 + len), crc32(png.subarray(off + 4, off + 8 + len)), `CRC of ${type}`);
    if (type === 'IDAT') idat.push(png.subarray(off + 8, off + 8 + len));
    off += 12 + len;
  }
  t.deepEqual(types, ['IHDR', 'IDAT', 'IEND']);
  t.is(png.readUInt32BE(16), 7);
  t.is(png.readUInt32BE(20), 5);
  // Undo the row filters.
  const raw = inflateSync(Buffer.concat(idat));
  const stride = 21;
  const out = new Uint8Array(5 * stride);
  for (let y = 0; y < 5; y++) {
    const f = raw[y * (stride + 1)]!;
    for (let i = 0; i < stride; i++) {
      const v = raw[y * (stride + 1) + 1 + i]!;
      const a = i >= 3 ? out[y * stride + i - 3]! : 0;
      const b = y > 0 ? out[(y - 1) * stride + i]! : 0;
      const c = i >= 3 && y > 0 ? out[(y - 1) * stride + i - 3]! : 0;
      const p = a + b - c;
      const pred = [0, a, b, (a + b) >> 1, Math.abs(p - a) <= Math.abs(p - b) && Math.abs(p - a) <= Math.abs(p - c) ? a : Math.abs(p - b) <= Math.abs(p - c) ? b : c][f]!;
      out[y * stride + i] = (v + pred) & 0xff;
    }
  }
  t.deepEqual(out, img.data);
  t.is(crc32(new TextEncoder().encode('123456789')), 0xcbf43926);
  t.throws(() => encodePng(2, 2, new Uint8Array(5)), { message: /expected 12 bytes/ });
});

test('smooth: centred moving average', (t) => {
  t.deepEqual(smooth([1, 2, 3, 4, 5], 3), [1.5, 2, 3, 4, 4.5]);
  t.deepEqual(smooth([1, 2], 1), [1, 2]);
});
