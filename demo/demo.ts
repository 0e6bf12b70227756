/**
 * `npm run demo`: one training-sized step of v8DetectionLoss.
 *
 * Builds an example batch like a YOLOv8/11 detection head sees it at 640×640 (B = 16, nc = 80, strides 8/16/32,
 * reg_max 16, about 8 labels per image, random but plausible head outputs), runs `valueAndGrad`, and prints the
 * loss items, the gradient norm of every level and the time it took.
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */

import { cpus } from 'node:os';

import { isYoloLossError, v8DetectionLoss, type DetectionBatch, type Tensor } from '../index';
import { rng } from '../src/rng';

const B = 16;
const IMG = 640;
const NC = 80;
const REG_MAX = 16;
const STRIDE = [8, 16, 32];
const LABELS_PER_IMAGE = 8;

const uniform = rng(2025);
function normal(mean: number, std: number): number {
  const u = 1 - uniform();
  const v = uniform();
  return mean + std * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/** Head outputs `[B, 4·reg_max + nc, H, W]` per level: box-distribution logits ~ N(0, 1.5); class logits ~ N(b_l, 1)
 * around the bias a Detect head is initialised with, b_l = log(5 / nc / (640 / s_l)²) (about 5 objects per image
 * spread over the level's cells). */
function makePreds(): Tensor[] {
  const C = 4 * REG_MAX + NC;
  return STRIDE.map((s) => {
    const clsBias = Math.log(5 / NC / (IMG / s) ** 2);
    const H = IMG / s;
    const W = IMG / s;
    const data = new Float32Array(B * C * H * W);
    const plane = H * W;
    for (let b = 0; b < B; b++) {
      for (let c = 0; c < C; c++) {
        const base = (b * C + c) * plane;
        const [mean, std] = c < 4 * REG_MAX ? [0, 1.5] : [clsBias, 1];
        for (let i = 0; i < plane; i++) data[base + i] = normal(mean, std);
      }
    }
    return { data, shape: [B, C, H, W] };
  });
}

/** About 8 labels per image (5 to 11), sizes from small to large, normalized cx, cy, w, h. */
function makeBatch(): DetectionBatch {
  const idx: number[] = [];
  const cls: number[] = [];
  const boxes: number[] = [];
  for (let b = 0; b < B; b++) {
    const n = LABELS_PER_IMAGE - 3 + Math.floor(uniform() * 7);
    for (let j = 0; j < n; j++) {
      const w = Math.exp(Math.log(0.02) + uniform() * Math.log(0.6 / 0.02));
      const h = Math.min(0.9, w * Math.exp(normal(0, 0.4)));
      idx.push(b);
      cls.push(Math.floor(uniform() * NC));
      boxes.push(w / 2 + uniform() * (1 - w), h / 2 + uniform() * (1 - h), w, h);
    }
  }
  const N = idx.length;
  return {
    batch_idx: { data: Float32Array.from(idx), shape: [N] },
    cls: { data: Float32Array.from(cls), shape: [N, 1] },
    bboxes: { data: Float32Array.from(boxes), shape: [N, 4] },
  };
}

function norm(a: Float32Array, from = 0, to = a.length): number {
  let s = 0;
  for (let i = from; i < to; i++) s += a[i]! * a[i]!;
  return Math.sqrt(s);
}

/** L2 norms of the box-distribution and class channels of one level gradient `[B, C, H, W]`. */
function splitNorms(g: Tensor): { box: number; cls: number; all: number } {
  const [b, c, h, w] = g.shape as [number, number, number, number];
  const plane = h * w;
  let box = 0;
  let cl = 0;
  for (let i = 0; i < b; i++) {
    for (let ch = 0; ch < c; ch++) {
      const base = (i * c + ch) * plane;
      const n = norm(g.data, base, base + plane) ** 2;
      if (ch < 4 * REG_MAX) box += n;
      else cl += n;
    }
  }
  return { box: Math.sqrt(box), cls: Math.sqrt(cl), all: Math.sqrt(box + cl) };
}

function ms(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

function fmt(x: number, digits = 4): string {
  return x.toPrecision(digits);
}

function main(): void {
  const preds = makePreds();
  const batch = makeBatch();
  const A = STRIDE.reduce((s, st) => s + (IMG / st) ** 2, 0);
  const N = batch.batch_idx.shape[0]!;
  const loss = new v8DetectionLoss({ nc: NC, stride: STRIDE, reg_max: REG_MAX });
  console.log(`yolo-loss demo: v8DetectionLoss on ${loss.device}, ${cpus().length} CPU core(s)`);
  console.log(`  batch B=${B}, ${IMG}x${IMG}, nc=${NC}, reg_max=${REG_MAX}, strides ${STRIDE.join('/')}: ${A} anchors, ${N} labels`);
  console.log(`  preds: ${preds.map((p) => `[${p.shape.join(', ')}]`).join(' ')} (${((preds.reduce((s, p) => s + p.data.length, 0) * 4) / 2 ** 20).toFixed(1)} MiB)`);

  let t0 = process.hrtime.bigint();
  const r = loss.valueAndGrad(preds, batch);
  const first = ms(t0);
  const runs = 3;
  t0 = process.hrtime.bigint();
  for (let i = 0; i < runs; i++) loss.valueAndGrad(preds, batch);
  const again = ms(t0) / runs;
  t0 = process.hrtime.bigint();
  for (let i = 0; i < runs; i++) loss.call(preds, batch);
  const callOnly = ms(t0) / runs;

  const [box, cls, dfl] = r.lossItems as unknown as [number, number, number];
  console.log('');
  console.log(`  loss items (box, cls, dfl): ${fmt(box)}  ${fmt(cls)}  ${fmt(dfl)}`);
  console.log(`  loss (x B, what the trainer sums): [${Array.from(r.loss, (v) => fmt(v)).join(', ')}]  sum ${fmt(r.loss.reduce((s, v) => s + v, 0))}`);
  console.log('');
  console.log('  gradient of sum(loss), L2 norm per level:');
  r.grads.forEach((g, i) => {
    const n = splitNorms(g);
    console.log(`    level ${i} (stride ${STRIDE[i]}, [${g.shape.join(', ')}]): ${fmt(n.all)}  (box/DFL channels ${fmt(n.box)}, class channels ${fmt(n.cls)})`);
  });
  console.log('');
  console.log(`  time: valueAndGrad ${first.toFixed(1)} ms (first call), ${again.toFixed(1)} ms (mean of ${runs} more); call ${callOnly.toFixed(1)} ms (mean of ${runs})`);
}

try {
  main();
} catch (e) {
  if (isYoloLossError(e)) {
    console.error(`yolo-loss demo failed: ${e.code}: ${e.message}`);
  } else {
    console.error('yolo-loss demo failed:', e);
  }
  process.exitCode = 1;
}
