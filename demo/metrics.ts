/**
 * From head outputs to a score: decode (DFL soft-argmax → distances × stride → boxes, sigmoid class scores),
 * per-class non-maximum suppression, and VOC-style average precision at one IoU threshold, averaged over classes.
 * Plain arrays, no tfjs.
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */

/** A row-major float32 tensor (the loss's `Tensor`). */
export interface PlainTensor {
  data: Float32Array;
  shape: readonly number[];
}

/** A box in pixels, corners (x1, y1) top-left and (x2, y2) bottom-right. */
export interface Box {
  x1: number;
  y1: number;
  x2: number;
  y2: number;
}

export interface Detection extends Box {
  cls: number;
  score: number;
}

export interface GroundTruth extends Box {
  cls: number;
}

export function iou(a: Box, b: Box): number {
  const iw = Math.min(a.x2, b.x2) - Math.max(a.x1, b.x1);
  const ih = Math.min(a.y2, b.y2) - Math.max(a.y1, b.y1);
  if (iw <= 0 || ih <= 0) return 0;
  const inter = iw * ih;
  const union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter;
  return union > 0 ? inter / union : 0;
}

export interface DecodeOptions {
  nc: number;
  reg_max: number;
  strides: readonly number[];
  /** Keep (anchor, class) pairs scoring above this (default 0.001, as for mAP). */
  conf?: number;
}

/**
 * Candidate detections of every image: for each anchor of each level and each class whose sigmoid score exceeds
 * `conf`, the box decoded from the distribution logits (softmax over `reg_max` bins, expectation = distance in grid
 * units, per side left/top/right/bottom around the anchor centre, × stride). Multi-label, like Ultralytics' val.
 * @param preds one `[B, 4*reg_max + nc, H, W]` tensor per level.
 */
export function decode(preds: readonly PlainTensor[], o: DecodeOptions): Detection[][] {
  const { nc, reg_max: R } = o;
  const conf = o.conf ?? 0.001;
  const logitConf = Math.log(conf / (1 - conf));
  const B = preds[0]?.shape[0] ?? 0;
  const out: Detection[][] = Array.from({ length: B }, () => []);
  const dist = new Float64Array(4);
  preds.forEach((p, l) => {
    const [b_, C, H, W] = p.shape as [number, number, number, number];
    if (b_ !== B || C !== 4 * R + nc) throw new Error(`decode: level ${l} has shape [${p.shape.join(', ')}], expected [${B}, ${4 * R + nc}, H, W]`);
    const s = o.strides[l]!;
    const plane = H * W;
    for (let b = 0; b < B; b++) {
      const base = b * C * plane;
      for (let a = 0; a < plane; a++) {
        let any = false;
        for (let c = 0; c < nc && !any; c++) any = p.data[base + (4 * R + c) * plane + a]! > logitConf;
        if (!any) continue;
        for (let side = 0; side < 4; side++) {
          if (R === 1) {
            dist[side] = p.data[base + side * plane + a]!;
            continue;
          }
          let m = -Infinity;
          for (let k = 0; k < R; k++) m = Math.max(m, p.data[base + (side * R + k) * plane + a]!);
          let z = 0;
          let e = 0;
          for (let k = 0; k < R; k++) {
            const w = Math.exp(p.data[base + (side * R + k) * plane + a]! - m);
            z += w;
            e += k * w;
          }
          dist[side] = e / z;
        }
        const ax = (a % W) + 0.5;
        const ay = Math.floor(a / W) + 0.5;
        const box = { x1: (ax - dist[0]!) * s, y1: (ay - dist[1]!) * s, x2: (ax + dist[2]!) * s, y2: (ay + dist[3]!) * s };
        for (let c = 0; c < nc; c++) {
          const logit = p.data[base + (4 * R + c) * plane + a]!;
          if (logit > logitConf) out[b]!.push({ ...box, cls: c, score: 1 / (1 + Math.exp(-logit)) });
        }
      }
    }
  });
  return out;
}

/**
 * Greedy per-class NMS: highest score first, drop every box of the same class (of any class when `agnostic`)
 * overlapping a kept one by more than `iouThreshold`; at most `maxDet` survivors, best first.
 */
export function nms(dets: readonly Detection[], iouThreshold = 0.5, maxDet = 100, agnostic = false): Detection[] {
  const sorted = [...dets].sort((a, b) => b.score - a.score);
  const kept: Detection[] = [];
  for (const d of sorted) {
    if (kept.length >= maxDet) break;
    if (kept.every((k) => (!agnostic && k.cls !== d.cls) || iou(k, d) <= iouThreshold)) kept.push(d);
  }
  return kept;
}

/**
 * Area under the precision–recall curve with the precision made monotone (the maximum to the right), integrated
 * over every recall step (VOC 2010+ "all points").
 * @param tp for each detection of one class, sorted by decreasing score: whether it matched a ground truth.
 * @param nGt the number of ground-truth boxes of that class.
 */
export function averagePrecision(tp: readonly boolean[], nGt: number): number {
  if (nGt === 0) return Number.NaN;
  const n = tp.length;
  const recall = new Float64Array(n + 2);
  const precision = new Float64Array(n + 2);
  let hits = 0;
  for (let i = 0; i < n; i++) {
    if (tp[i]) hits++;
    recall[i + 1] = hits / nGt;
    precision[i + 1] = hits / (i + 1);
  }
  recall[n + 1] = recall[n]!;
  precision[n + 1] = 0;
  for (let i = n; i >= 0; i--) precision[i] = Math.max(precision[i]!, precision[i + 1]!);
  let ap = 0;
  for (let i = 1; i <= n + 1; i++) ap += (recall[i]! - recall[i - 1]!) * precision[i]!;
  return ap;
}

export interface MapResult {
  /** Mean of `ap` over the classes with ground truth. */
  map: number;
  /** AP of each class (NaN where the class has no ground truth). */
  ap: number[];
  /** Ground-truth count of each class. */
  gtCount: number[];
}

/**
 * VOC-style mAP at one IoU threshold: per class, detections of all images sorted by score; each is a true positive
 * when it overlaps a not yet matched ground truth of its class in its image by at least `iouThreshold` (the best
 * overlapping one), else a false positive.
 */
export function meanAveragePrecision(dets: readonly (readonly Detection[])[], gts: readonly (readonly GroundTruth[])[], nc: number, iouThreshold = 0.5): MapResult {
  const ap: number[] = [];
  const gtCount: number[] = [];
  for (let c = 0; c < nc; c++) {
    const flat: { img: number; d: Detection }[] = [];
    dets.forEach((ds, img) => ds.forEach((d) => d.cls === c && flat.push({ img, d })));
    flat.sort((a, b) => b.d.score - a.d.score);
    const used = gts.map((g) => g.map(() => false));
    let n = 0;
    gts.forEach((g) => g.forEach((t) => t.cls === c && n++));
    const tp = flat.map(({ img, d }) => {
      let best = -1;
      let bestIou = iouThreshold;
      (gts[img] ?? []).forEach((t, j) => {
        if (t.cls !== c || used[img]![j]) return;
        const v = iou(d, t);
        if (v >= bestIou) {
          bestIou = v;
          best = j;
        }
      });
      if (best < 0) return false;
      used[img]![best] = true;
      return true;
    });
    ap.push(averagePrecision(tp, n));
    gtCount.push(n);
  }
  const valid = ap.filter((v) => !Number.isNaN(v));
  return { map: valid.length ? valid.reduce((a, b) => a + b, 0) / valid.length : 0, ap, gtCount };
}
