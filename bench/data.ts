/**
 * The one data generator of the benchmark. For a case it builds, from the case's seed, every input of the loss
 * (head outputs and the batch dict) and writes them to a folder: one raw little-endian float32 file per tensor
 * (`NAME.f32`) and `manifest.json` naming them with their shapes. Our runner (`worker.ts`) and the reference
 * runner (`reference.py`) both read that folder, so both sides see the same bytes.
 *
 * Plausible inputs (like a partly trained network on real labels):
 * - box-distribution logits ~ N(0, 1.5²) (random DFL distributions);
 * - class logits ~ N(−4, 1.5²) (mostly negative, as a trained head's);
 * - labels: exactly `labelsPerImage` per image, inside the image, widths log-uniform from 2 % to 30 % of the
 *   image, aspect ratio log-normal, class ids uniform in [0, nc); each image's labels sorted by decreasing area
 *   (the dataloader's order for overlap masks);
 * - segmentation: mask coefficients ~ N(0, (2/√nm)²), prototypes ~ N(0, 1), GT index maps with one ellipse per
 *   label (smaller objects painted last, so they win where objects overlap);
 * - pose: keypoints inside their box, visibility 2 (70 %), 1 (10 %), 0 (20 %, half of them with zero
 *   coordinates); raw keypoint outputs ~ N(0, 0.5²), visibility logits ~ N(0, 2²);
 * - OBB: GT angle uniform in (0, π/2]; predicted angle (σ(z) − 1/4)·π with z ~ N(0, 1) (the head's activation).
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { anchorsOf, type CaseDef } from './cases';
import { rng } from '../src/rng';

export interface TensorEntry {
  file: string;
  shape: number[];
}

export interface Manifest {
  case: CaseDef;
  /** `preds.0` .. `preds.{L-1}`, `preds.pred_masks`, `preds.proto`, `preds.kpts`, `preds.angle`, `batch.<key>`. */
  tensors: Record<string, TensorEntry>;
  /** Total bytes written. */
  bytes: number;
}

class Gen {
  readonly u: () => number;
  #spare: number | undefined;
  constructor(seed: number) {
    this.u = rng(seed);
  }
  /** Standard normal (Box–Muller, both values used). */
  n(): number {
    if (this.#spare !== undefined) {
      const s = this.#spare;
      this.#spare = undefined;
      return s;
    }
    const u = 1 - this.u();
    const v = this.u();
    const r = Math.sqrt(-2 * Math.log(u));
    this.#spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }
  fillNormal(a: Float32Array, from: number, to: number, mean: number, std: number): void {
    for (let i = from; i < to; i++) a[i] = mean + std * this.n();
  }
}

interface Label {
  cls: number;
  cx: number;
  cy: number;
  w: number;
  h: number;
  theta: number;
}

function makeLabels(g: Gen, c: CaseDef): Label[][] {
  const images: Label[][] = [];
  for (let b = 0; b < c.B; b++) {
    const img: Label[] = [];
    for (let j = 0; j < c.labelsPerImage; j++) {
      const w = Math.exp(Math.log(0.02) + g.u() * Math.log(0.3 / 0.02));
      const h = Math.min(0.45, Math.max(0.01, w * Math.exp(0.35 * g.n())));
      img.push({
        cls: Math.min(c.nc - 1, Math.floor(g.u() * c.nc)),
        cx: w / 2 + g.u() * (1 - w),
        cy: h / 2 + g.u() * (1 - h),
        w,
        h,
        theta: c.task === 'obb' ? Math.max(1e-3, g.u()) * (Math.PI / 2) : 0,
      });
    }
    img.sort((p, q) => q.w * q.h - p.w * p.h);
    images.push(img);
  }
  return images;
}

/** Writes the case's inputs into `dir` (created) and returns the manifest. */
export function generateCase(c: CaseDef, dir: string): Manifest {
  if (os.endianness() !== 'LE') throw new Error('bench data: little-endian host required');
  fs.mkdirSync(dir, { recursive: true });
  const g = new Gen(c.seed);
  const tensors: Record<string, TensorEntry> = {};
  let bytes = 0;
  const put = (name: string, data: Float32Array, shape: number[]): void => {
    const file = `${name}.f32`;
    fs.writeFileSync(path.join(dir, file), new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    tensors[name] = { file, shape };
    bytes += data.byteLength;
  };

  // Head outputs per level: [B, 4R + nc, H_l, W_l].
  const R = c.reg_max;
  const C = 4 * R + c.nc;
  c.strides.forEach((s, l) => {
    const H = Math.ceil(c.imgH / s);
    const W = Math.ceil(c.imgW / s);
    const plane = H * W;
    const data = new Float32Array(c.B * C * plane);
    for (let b = 0; b < c.B; b++) {
      const base = b * C * plane;
      g.fillNormal(data, base, base + 4 * R * plane, 0, 1.5);
      g.fillNormal(data, base + 4 * R * plane, base + C * plane, -4, 1.5);
    }
    put(`preds.${l}`, data, [c.B, C, H, W]);
  });
  const A = anchorsOf(c);

  const labels = makeLabels(g, c);
  const rows = labels.flatMap((img, b) => img.map((l) => ({ b, l })));
  const N = rows.length;
  put('batch.batch_idx', Float32Array.from(rows, (r) => r.b), [N]);
  put('batch.cls', Float32Array.from(rows, (r) => r.l.cls), [N, 1]);
  if (c.task === 'obb') {
    put('batch.bboxes', Float32Array.from(rows.flatMap((r) => [r.l.cx, r.l.cy, r.l.w, r.l.h, r.l.theta])), [N, 5]);
  } else {
    put('batch.bboxes', Float32Array.from(rows.flatMap((r) => [r.l.cx, r.l.cy, r.l.w, r.l.h])), [N, 4]);
  }

  if (c.task === 'segment') {
    const nm = c.nm ?? 32;
    const hm = c.imgH / 4;
    const wm = c.imgW / 4;
    const pm = new Float32Array(c.B * nm * A);
    g.fillNormal(pm, 0, pm.length, 0, 2 / Math.sqrt(nm));
    put('preds.pred_masks', pm, [c.B, nm, A]);
    const proto = new Float32Array(c.B * nm * hm * wm);
    g.fillNormal(proto, 0, proto.length, 0, 1);
    put('preds.proto', proto, [c.B, nm, hm, wm]);
    // overlap_mask index maps [B, hm, wm]: label j of image b painted with j + 1; labels are sorted by decreasing
    // area, so painting in label order lets smaller objects win.
    const masks = new Float32Array(c.B * hm * wm);
    labels.forEach((img, b) => {
      img.forEach((l, j) => {
        const cx = l.cx * wm;
        const cy = l.cy * hm;
        const rx = Math.max((l.w * wm) / 2, 0.5);
        const ry = Math.max((l.h * hm) / 2, 0.5);
        const y0 = Math.max(0, Math.floor(cy - ry));
        const y1 = Math.min(hm - 1, Math.ceil(cy + ry));
        const x0 = Math.max(0, Math.floor(cx - rx));
        const x1 = Math.min(wm - 1, Math.ceil(cx + rx));
        for (let y = y0; y <= y1; y++) {
          for (let x = x0; x <= x1; x++) {
            const dx = (x + 0.5 - cx) / rx;
            const dy = (y + 0.5 - cy) / ry;
            if (dx * dx + dy * dy <= 1) masks[(b * hm + y) * wm + x] = j + 1;
          }
        }
      });
    });
    put('batch.masks', masks, [c.B, hm, wm]);
  }

  if (c.task === 'pose') {
    const [K, D] = c.kpt_shape ?? [17, 3];
    const kp = new Float32Array(N * K * D);
    rows.forEach((r, i) => {
      for (let k = 0; k < K; k++) {
        const o = (i * K + k) * D;
        const x = r.l.cx + (g.u() - 0.5) * r.l.w;
        const y = r.l.cy + (g.u() - 0.5) * r.l.h;
        const u = g.u();
        const v = u < 0.7 ? 2 : u < 0.8 ? 1 : 0;
        const zero = v === 0 && g.u() < 0.5;
        kp[o] = zero ? 0 : x;
        kp[o + 1] = zero ? 0 : y;
        if (D === 3) kp[o + 2] = v;
      }
    });
    put('batch.keypoints', kp, [N, K, D]);
    const kpts = new Float32Array(c.B * K * D * A);
    for (let b = 0; b < c.B; b++) {
      for (let ch = 0; ch < K * D; ch++) {
        const base = (b * K * D + ch) * A;
        const vis = D === 3 && ch % D === 2;
        g.fillNormal(kpts, base, base + A, 0, vis ? 2 : 0.5);
      }
    }
    put('preds.kpts', kpts, [c.B, K * D, A]);
  }

  if (c.task === 'obb') {
    const angle = new Float32Array(c.B * A);
    for (let i = 0; i < angle.length; i++) angle[i] = (1 / (1 + Math.exp(-g.n())) - 0.25) * Math.PI;
    put('preds.angle', angle, [c.B, 1, A]);
  }

  const manifest: Manifest = { case: c, tensors, bytes };
  fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(manifest, null, 1));
  return manifest;
}

/** Reads a tensor written by `generateCase` (no copy: a view on the file's buffer). */
export function readTensor(dir: string, e: TensorEntry): { data: Float32Array; shape: number[] } {
  const buf = fs.readFileSync(path.join(dir, e.file));
  const n = e.shape.reduce((a, b) => a * b, 1);
  if (buf.byteLength !== 4 * n) throw new Error(`bench data: ${e.file} has ${buf.byteLength} bytes, expected ${4 * n}`);
  const data =
    buf.byteOffset % 4 === 0 ? new Float32Array(buf.buffer, buf.byteOffset, n) : new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + 4 * n));
  return { data, shape: [...e.shape] };
}
