/**
 * The demo's two pictures: the loss curve of a training run and predictions against ground truth on held-out
 * images.
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */

import type { Detection, GroundTruth } from './metrics';
import { Raster, textWidth, type RGB } from './raster';

const BLACK: RGB = [20, 20, 20];
const GREY: RGB = [150, 150, 150];
const LIGHT: RGB = [228, 228, 228];

/** One point of the loss history: the loss items of a step (per image, gains applied). */
export interface LossPoint {
  step: number;
  items: readonly number[];
}

function niceStep(range: number, ticks: number): number {
  const raw = range / Math.max(1, ticks);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
}

function fmtTick(v: number, step: number): string {
  const digits = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  return v.toFixed(digits);
}

/** Centred moving average over `w` points (shrinking at the ends). */
export function smooth(v: readonly number[], w: number): number[] {
  const h = Math.max(0, Math.floor(w / 2));
  const prefix = [0];
  for (const x of v) prefix.push(prefix[prefix.length - 1]! + x);
  return v.map((_, i) => {
    const a = Math.max(0, i - h);
    const b = Math.min(v.length, i + h + 1);
    return (prefix[b]! - prefix[a]!) / (b - a);
  });
}

/**
 * The loss curve: the total and every item per step (faint) with a moving average (bold), linear axes.
 * @param names the item names, e.g. ['box', 'cls', 'dfl'].
 */
export function lossCurvePng(history: readonly LossPoint[], names: readonly string[], title: string): Buffer {
  const W = 760;
  const H = 432;
  const m = { l: 58, r: 16, t: 52, b: 44 };
  const img = new Raster(W, H);
  const series: { name: string; colour: RGB; values: number[] }[] = [
    { name: 'total', colour: BLACK, values: history.map((p) => p.items.reduce((a, b) => a + b, 0)) },
    ...names.map((name, k) => ({
      name,
      colour: ([[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189]] as RGB[])[k % 5]!,
      values: history.map((p) => p.items[k] ?? 0),
    })),
  ];
  const steps = history.map((p) => p.step);
  const x0 = steps[0] ?? 0;
  const x1 = Math.max(x0 + 1, steps[steps.length - 1] ?? 1);
  const w = Math.max(1, Math.round(history.length / 40));
  const smoothed = series.map((s) => smooth(s.values, w));
  // The y range follows the smoothed curves (a few spiky steps should not squash the plot).
  const yMax = Math.max(1e-6, ...smoothed.flat()) * 1.08;
  const px = (x: number): number => m.l + ((x - x0) / (x1 - x0)) * (W - m.l - m.r);
  const py = (y: number): number => H - m.b - (Math.min(y, yMax) / yMax) * (H - m.t - m.b);

  const yStep = niceStep(yMax, 6);
  for (let y = 0; y <= yMax + 1e-9; y += yStep) {
    img.line(m.l, py(y), W - m.r, py(y), LIGHT);
    const label = fmtTick(y, yStep);
    img.text(m.l - 6 - textWidth(label), py(y) - 3, label, BLACK);
  }
  const xStep = niceStep(x1 - x0, 8);
  for (let x = Math.ceil(x0 / xStep) * xStep; x <= x1; x += xStep) {
    img.line(px(x), m.t, px(x), H - m.b, LIGHT);
    const label = String(Math.round(x));
    img.text(px(x) - textWidth(label) / 2, H - m.b + 7, label, BLACK);
  }
  img.strokeRect(m.l, m.t, W - m.r, H - m.b, GREY);
  img.text((W - textWidth('step')) / 2, H - 16, 'step', BLACK);
  img.text(12, m.t - 14, 'loss per image', BLACK);
  img.text((W - textWidth(title, 2)) / 2, 10, title, BLACK, 2);

  series.forEach((s, k) => {
    const faint = s.values.length > 1;
    for (let i = 1; i < s.values.length && faint; i++) img.line(px(steps[i - 1]!), py(s.values[i - 1]!), px(steps[i]!), py(s.values[i]!), s.colour, 1, 0.18);
    const sm = smoothed[k]!;
    for (let i = 1; i < sm.length; i++) img.line(px(steps[i - 1]!), py(sm[i - 1]!), px(steps[i]!), py(sm[i]!), s.colour, 2);
  });
  // Legend, top right.
  let ly = m.t + 10;
  const lx = W - m.r - 120;
  img.fillRect(lx - 8, ly - 6, 118, series.length * 14 + 6, [255, 255, 255], 0.85);
  for (const s of series) {
    img.fillRect(lx, ly, 16, 3, s.colour);
    img.text(lx + 22, ly - 2, s.name, BLACK);
    ly += 14;
  }
  return img.toPng();
}

export interface PredictionTile {
  /** `[size, size, 3]` RGB in [0, 1]. */
  image: Float32Array;
  gts: readonly GroundTruth[];
  dets: readonly Detection[];
}

/**
 * A grid of held-out images, each drawn `scale`× larger: ground truth as dashed white boxes, predictions as solid
 * boxes in their class colour with a tag "name score".
 */
export function predictionsPng(
  tiles: readonly PredictionTile[],
  size: number,
  opts: {
    cols: number;
    scale: number;
    classNames: readonly string[];
    classColours: readonly (readonly [number, number, number])[];
    title: string;
    /** Round pixel values to multiples of this many 8-bit levels (smaller files for noisy images; default 1). */
    quantize?: number;
  },
): Buffer {
  const { cols, scale } = opts;
  const rows = Math.ceil(tiles.length / cols);
  const gap = 6;
  const top = 44;
  const tile = size * scale;
  const W = cols * tile + (cols + 1) * gap;
  const H = top + rows * tile + (rows + 1) * gap;
  const img = new Raster(W, H, [250, 250, 250]);
  img.text(gap, 8, opts.title, BLACK, 2);
  img.strokeRect(gap, 30, gap + 18, 38, [90, 90, 90], 2, 4);
  img.text(gap + 26, 30, 'ground truth', BLACK);
  img.fillRect(gap + 120, 30, 18, 9, [220, 40, 40]);
  img.text(gap + 146, 30, 'prediction (class colour, score)', BLACK);
  const dark = (c: readonly number[]): RGB => [Math.round(c[0]! * 200), Math.round(c[1]! * 200), Math.round(c[2]! * 200)];
  tiles.forEach((t, i) => {
    const ox = gap + (i % cols) * (tile + gap);
    const oy = top + gap + Math.floor(i / cols) * (tile + gap);
    const q = opts.quantize ?? 1;
    img.blit(ox, oy, q > 1 ? t.image.map((v) => (Math.round((v * 255) / q) * q) / 255) : t.image, size, size, scale);
    for (const g of t.gts) img.strokeRect(ox + g.x1 * scale, oy + g.y1 * scale, ox + g.x2 * scale - 1, oy + g.y2 * scale - 1, [255, 255, 255], 2, 5);
    for (const d of t.dets) {
      const colour = dark(opts.classColours[d.cls] ?? [1, 1, 1]);
      const x1 = Math.max(ox, ox + d.x1 * scale);
      const y1 = Math.max(oy, oy + d.y1 * scale);
      const x2 = Math.min(ox + tile - 1, ox + d.x2 * scale);
      const y2 = Math.min(oy + tile - 1, oy + d.y2 * scale);
      img.strokeRect(x1, y1, x2, y2, colour, 2);
      const label = `${opts.classNames[d.cls] ?? d.cls} ${d.score.toFixed(2)}`;
      const ty = y1 - 11 >= oy ? y1 - 11 : y1 + 2;
      const tx = Math.min(x1, ox + tile - textWidth(label) - 4);
      img.fillRect(tx, ty, textWidth(label) + 4, 11, colour);
      img.text(tx + 2, ty + 2, label, [255, 255, 255]);
    }
  });
  return img.toPng();
}
