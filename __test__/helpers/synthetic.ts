/**
 * Small deterministic detection cases for the API and error tests (no reference values needed).
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */
import type { DetectionBatch, ModelInfo, Tensor } from 'yolo-loss';
import { rng } from '../../src/rng.js';
export { rng };

export interface Case {
  model: ModelInfo;
  preds: Tensor[];
  batch: DetectionBatch;
}

export function tensor(shape: number[], fill: (i: number) => number = () => 0): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = fill(i);
  return { data, shape: [...shape] };
}

/** B images of h×w pixels, logits ~ U(-2, 2), `perImage` labels per image with plausible boxes. */
export function makeCase(opts: { B?: number; h?: number; w?: number; nc?: number; reg_max?: number; stride?: number[]; perImage?: number; seed?: number } = {}): Case {
  const { B = 2, h = 64, w = 64, nc = 2, reg_max = 16, stride = [8, 16, 32], perImage = 2, seed = 1 } = opts;
  const r = rng(seed);
  const C = 4 * reg_max + nc;
  const preds = stride.map((s) => tensor([B, C, Math.floor(h / s), Math.floor(w / s)], () => r() * 4 - 2));
  const idx: number[] = [];
  const cls: number[] = [];
  const boxes: number[] = [];
  for (let b = 0; b < B; b++) {
    for (let j = 0; j < perImage; j++) {
      const bw = 0.2 + 0.5 * r();
      const bh = 0.2 + 0.5 * r();
      idx.push(b);
      cls.push(Math.floor(r() * nc));
      boxes.push(bw / 2 + (1 - bw) * r(), bh / 2 + (1 - bh) * r(), bw, bh);
    }
  }
  const N = idx.length;
  return {
    model: { nc, stride: [...stride], reg_max },
    preds,
    batch: {
      batch_idx: { data: Float32Array.from(idx), shape: [N] },
      cls: { data: Float32Array.from(cls), shape: [N, 1] },
      bboxes: { data: Float32Array.from(boxes), shape: [N, 4] },
    },
  };
}

/** Every input tensor of a case, for snapshot/unchanged checks. */
export function inputsOf(c: Case): Tensor[] {
  return [...c.preds, c.batch.batch_idx, c.batch.cls, c.batch.bboxes];
}
