/**
 * A synthetic detection dataset generated on the fly: filled rectangles and ellipses in three colours (six classes)
 * on noisy, shaded grey backgrounds, with YOLO-format labels (class, normalized cx, cy, w, h). Seeded: the same
 * seed gives the same images.
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */

import { rng } from '../src/rng';

/** The classes: shape × colour. */
export const CLASS_NAMES = ['red rect', 'green rect', 'blue rect', 'red ellipse', 'green ellipse', 'blue ellipse'] as const;

/** Nominal colour of each class (also used to draw its boxes), RGB in [0, 1]. */
export const CLASS_COLOURS: readonly (readonly [number, number, number])[] = [
  [0.86, 0.16, 0.14],
  [0.16, 0.72, 0.2],
  [0.16, 0.3, 0.9],
  [0.86, 0.16, 0.14],
  [0.16, 0.72, 0.2],
  [0.16, 0.3, 0.9],
];

/** A YOLO label: class id and the box as normalized centre x, centre y, width, height. */
export interface Label {
  cls: number;
  cx: number;
  cy: number;
  w: number;
  h: number;
}

export interface Sample {
  /** `[size, size, 3]` RGB in [0, 1], row-major (channels last, as tfjs wants). */
  image: Float32Array;
  labels: Label[];
}

export interface ShapesOptions {
  /** Image side in pixels (default 128). */
  size?: number;
  /** Objects per image: uniform in [minObjects, maxObjects] (default 1..4). */
  minObjects?: number;
  maxObjects?: number;
  /** Object side as a fraction of the image side: uniform in [minSide, maxSide] (default 0.1..0.45). */
  minSide?: number;
  maxSide?: number;
}

/** Whether two boxes come closer than `margin` (normalized units). */
function overlaps(a: Label, b: Label, margin: number): boolean {
  return Math.abs(a.cx - b.cx) < (a.w + b.w) / 2 + margin && Math.abs(a.cy - b.cy) < (a.h + b.h) / 2 + margin;
}

/** An endless, seeded stream of samples. */
export class ShapesDataset {
  readonly size: number;
  readonly nc = CLASS_NAMES.length;
  readonly #rand: () => number;
  readonly #opts: Required<ShapesOptions>;
  #spare: number | undefined;

  constructor(seed: number, options: ShapesOptions = {}) {
    this.#opts = { size: 128, minObjects: 1, maxObjects: 4, minSide: 0.1, maxSide: 0.45, ...options };
    this.size = this.#opts.size;
    this.#rand = rng(seed);
  }

  #normal(): number {
    if (this.#spare !== undefined) {
      const s = this.#spare;
      this.#spare = undefined;
      return s;
    }
    const u = 1 - this.#rand();
    const v = this.#rand();
    const r = Math.sqrt(-2 * Math.log(u));
    this.#spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  #uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.#rand();
  }

  /** The next image and its labels. */
  next(): Sample {
    const S = this.size;
    const o = this.#opts;
    const img = new Float32Array(S * S * 3);
    // Background: a tinted grey with a linear shading across the image.
    const grey = this.#uniform(0.3, 0.7);
    const base = [0, 1, 2].map(() => grey + this.#uniform(-0.08, 0.08));
    const angle = this.#uniform(0, 2 * Math.PI);
    const amp = this.#uniform(0, 0.25);
    const gx = (Math.cos(angle) * amp) / S;
    const gy = (Math.sin(angle) * amp) / S;
    for (let y = 0; y < S; y++) {
      for (let x = 0; x < S; x++) {
        const shade = gx * (x - S / 2) + gy * (y - S / 2);
        const p = (y * S + x) * 3;
        for (let c = 0; c < 3; c++) img[p + c] = base[c]! + shade;
      }
    }
    // Objects: boxes that do not touch (so every label is the whole visible shape).
    const labels: Label[] = [];
    const n = o.minObjects + Math.floor(this.#rand() * (o.maxObjects - o.minObjects + 1));
    for (let k = 0, tries = 0; k < n && tries < 50; tries++) {
      const w = this.#uniform(o.minSide, o.maxSide);
      const h = Math.min(o.maxSide, Math.max(o.minSide, w * Math.exp(this.#uniform(-0.6, 0.6))));
      const cand: Label = { cls: Math.floor(this.#rand() * this.nc), cx: this.#uniform(w / 2, 1 - w / 2), cy: this.#uniform(h / 2, 1 - h / 2), w, h };
      if (labels.some((l) => overlaps(l, cand, 2 / this.size))) continue;
      // Snap to whole pixels so the label is exactly the painted extent.
      const x0 = Math.round((cand.cx - w / 2) * S);
      const x1 = Math.round((cand.cx + w / 2) * S);
      const y0 = Math.round((cand.cy - h / 2) * S);
      const y1 = Math.round((cand.cy + h / 2) * S);
      const label: Label = { cls: cand.cls, cx: (x0 + x1) / 2 / S, cy: (y0 + y1) / 2 / S, w: (x1 - x0) / S, h: (y1 - y0) / S };
      const colour = CLASS_COLOURS[label.cls]!.map((v) => Math.min(1, Math.max(0, v + this.#uniform(-0.1, 0.1))));
      const ellipse = label.cls >= 3;
      const rx = (x1 - x0) / 2;
      const ry = (y1 - y0) / 2;
      const mx = (x0 + x1) / 2;
      const my = (y0 + y1) / 2;
      for (let y = y0; y < y1; y++) {
        for (let x = x0; x < x1; x++) {
          if (ellipse) {
            const dx = (x + 0.5 - mx) / rx;
            const dy = (y + 0.5 - my) / ry;
            if (dx * dx + dy * dy > 1) continue;
          }
          const p = (y * S + x) * 3;
          for (let c = 0; c < 3; c++) img[p + c] = colour[c]!;
        }
      }
      labels.push(label);
      k++;
    }
    // Sensor noise over everything.
    const sigma = this.#uniform(0.03, 0.1);
    for (let i = 0; i < img.length; i++) img[i] = Math.min(1, Math.max(0, img[i]! + sigma * this.#normal()));
    return { image: img, labels };
  }

  /** `count` samples. */
  take(count: number): Sample[] {
    return Array.from({ length: count }, () => this.next());
  }
}

/** The labels of an image as the lines of a YOLO `.txt` label file. */
export function yoloLabelLines(labels: readonly Label[]): string[] {
  return labels.map((l) => `${l.cls} ${l.cx.toFixed(6)} ${l.cy.toFixed(6)} ${l.w.toFixed(6)} ${l.h.toFixed(6)}`);
}

/** A batch in the Ultralytics layout: images `[B, S, S, 3]` (channels last, for tfjs) and the label tensors. */
export interface Batch {
  images: Float32Array;
  batch_idx: Float32Array;
  cls: Float32Array;
  bboxes: Float32Array;
}

export function collate(samples: readonly Sample[]): Batch {
  const n = samples.reduce((s, x) => s + x.labels.length, 0);
  const per = samples[0]?.image.length ?? 0;
  const images = new Float32Array(samples.length * per);
  const batch_idx = new Float32Array(n);
  const cls = new Float32Array(n);
  const bboxes = new Float32Array(4 * n);
  let k = 0;
  samples.forEach((s, b) => {
    images.set(s.image, b * per);
    for (const l of s.labels) {
      batch_idx[k] = b;
      cls[k] = l.cls;
      bboxes.set([l.cx, l.cy, l.w, l.h], 4 * k);
      k++;
    }
  });
  return { images, batch_idx, cls, bboxes };
}
