/**
 * A short training run through yolo-loss/tfjs: the demo's detector (small) on one fixed batch of synthetic shapes,
 * Adam via optimizer.minimize(() => loss(model.predict(x), batch)). The loss must drop by a clear margin.
 */
import * as tf from '@tensorflow/tfjs';
import test from 'ava';
import { v8DetectionLoss } from 'yolo-loss';
import { tfjsLoss } from 'yolo-loss/tfjs';

import { Detector, STRIDES } from '../demo/model.js';
import { ShapesDataset, collate } from '../demo/shapes.js';

test.before(async () => {
  tf.env().set('PROD', true);
  await tf.setBackend('cpu');
});

test('training on a fixed batch lowers the loss by a clear margin (and every item with it)', (t) => {
  const S = 64;
  const B = 4;
  const nc = 6;
  const reg_max = 8;
  const samples = new ShapesDataset(11, { size: S, maxObjects: 2, minSide: 0.2 }).take(B);
  const c = collate(samples);
  const n = c.cls.length;
  const batch = { batch_idx: { data: c.batch_idx, shape: [n] }, cls: { data: c.cls, shape: [n, 1] }, bboxes: { data: c.bboxes, shape: [n, 4] } };
  const model = new Detector({ imgsz: S, nc, reg_max, widths: [8, 16, 24, 32, 32], headWidth: 16, seed: 1 });
  const loss = tfjsLoss(new v8DetectionLoss({ nc, stride: [...STRIDES], reg_max }));
  const optimizer = tf.train.adam(0.01);
  const x = tf.tensor4d(c.images, [B, S, S, 3]);
  const totals: number[] = [];
  const items: number[][] = [];
  for (let step = 0; step < 40; step++) {
    const cost = optimizer.minimize(() => loss(model.predict(x), batch), true, model.variables)!;
    totals.push(cost.dataSync()[0]!);
    items.push(Array.from(loss.last!.lossItems));
    cost.dispose();
  }
  const first = totals[0]!;
  const last = Math.min(...totals.slice(-5));
  t.log(`loss ${first.toFixed(3)} → ${last.toFixed(3)}; items [${items[0]!.map((v) => v.toFixed(3))}] → [${items[items.length - 1]!.map((v) => v.toFixed(3))}]`);
  t.true(totals.every(Number.isFinite));
  t.true(last < 0.5 * first, `loss ${first} → ${last}: expected to halve`);
  items[0]!.forEach((v, k) => t.true(items[items.length - 1]![k]! < v, `item ${k}: ${v} → ${items[items.length - 1]![k]}`));
  x.dispose();
  model.dispose();
  optimizer.dispose();
});
