/**
 * Small deterministic cases for every task loss beyond detection (no reference values needed): the API, error,
 * async and worker_threads tests build their inputs here.
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */
import type { DetectionBatch, E2EPreds, ModelInfo, OBBPreds, PoseBatch, PosePreds, SegmentationBatch, SegmentationPreds, Tensor, ValueAndGrad } from 'yolo-loss';

import { makeCase, rng, tensor } from './synthetic.js';

/** A task loss (v8DetectionLoss too) as the generic checks use it. */
export interface AnyLoss {
  call(preds: never, batch: never): [Float32Array, Float32Array];
  valueAndGrad(preds: never, batch: never): ValueAndGrad<unknown>;
  callAsync(preds: never, batch: never): Promise<[Float32Array, Float32Array]>;
  valueAndGradAsync(preds: never, batch: never): Promise<ValueAndGrad<unknown>>;
}

export interface CaseOpts {
  B?: number;
  h?: number;
  w?: number;
  nc?: number;
  reg_max?: number;
  perImage?: number;
  seed?: number;
}

/** Total anchors of a 3-level head (strides 8, 16, 32) on an h×w input. */
export function anchorsOf(h: number, w: number, stride = [8, 16, 32]): number {
  return stride.reduce((a, s) => a + Math.ceil(h / s) * Math.ceil(w / s), 0);
}

function counts(batch: DetectionBatch, B: number): number[] {
  const c = new Array<number>(B).fill(0);
  for (const i of batch.batch_idx.data) c[i]! += 1;
  return c;
}

/** Ground-truth masks at input/4 that paint each label's box: index maps (overlap) or one 0/1 mask per label. */
function masksFor(batch: DetectionBatch, B: number, hm: number, wm: number, overlap: boolean): Tensor {
  const N = batch.batch_idx.data.length;
  const masks = tensor(overlap ? [B, hm, wm] : [N, hm, wm]);
  const seen = new Array<number>(B).fill(0);
  for (let k = 0; k < N; k++) {
    const b = batch.batch_idx.data[k]!;
    const [cx, cy, bw, bh] = batch.bboxes.data.subarray(4 * k, 4 * k + 4);
    const j = ++seen[b]!;
    const plane = overlap ? b : k;
    for (let r = Math.floor((cy! - bh! / 2) * hm); r < Math.ceil((cy! + bh! / 2) * hm); r++) {
      for (let c = Math.floor((cx! - bw! / 2) * wm); c < Math.ceil((cx! + bw! / 2) * wm); c++) {
        if (r >= 0 && r < hm && c >= 0 && c < wm) masks.data[(plane * hm + r) * wm + c] = overlap ? j : 1;
      }
    }
  }
  return masks;
}

export interface SegCase {
  model: ModelInfo;
  preds: SegmentationPreds;
  batch: SegmentationBatch;
}

export function segCase(opts: CaseOpts & { nm?: number; overlap?: boolean } = {}): SegCase {
  const { B = 2, h = 64, w = 64, nm = 4, overlap = true, seed = 11 } = opts;
  const c = makeCase({ ...opts, B, h, w, seed });
  const r = rng(seed + 1000);
  const A = anchorsOf(h, w);
  const [hm, wm] = [h / 4, w / 4];
  const predMasks = tensor([B, nm, A], () => r() * 2 - 1);
  const proto = tensor([B, nm, hm, wm], () => r() * 2 - 1);
  return {
    model: { ...c.model, args: { overlap_mask: overlap } },
    preds: [c.preds, predMasks, proto],
    batch: { ...c.batch, masks: masksFor(c.batch, B, hm, wm, overlap) },
  };
}

export interface PoseCase {
  model: ModelInfo;
  preds: PosePreds;
  batch: PoseBatch;
}

export function poseCase(opts: CaseOpts & { K?: number; D?: number } = {}): PoseCase {
  const { B = 2, h = 64, w = 64, K = 5, D = 3, seed = 21 } = opts;
  const c = makeCase({ ...opts, B, h, w, seed });
  const r = rng(seed + 1000);
  const A = anchorsOf(h, w);
  const N = c.batch.batch_idx.data.length;
  const kpts = tensor([B, K * D, A], () => r() - 0.5);
  const keypoints = tensor([N, K, D], (i) => (D === 3 && i % D === 2 ? (r() < 0.8 ? 2 : 0) : r()));
  return { model: { ...c.model, kpt_shape: [K, D] }, preds: [c.preds, kpts], batch: { ...c.batch, keypoints } };
}

export interface ObbCase {
  model: ModelInfo;
  preds: OBBPreds;
  batch: DetectionBatch;
}

export function obbCase(opts: CaseOpts = {}): ObbCase {
  const { B = 2, h = 64, w = 64, seed = 31 } = opts;
  const c = makeCase({ ...opts, B, h, w, seed });
  const r = rng(seed + 1000);
  const A = anchorsOf(h, w);
  const N = c.batch.batch_idx.data.length;
  const angle = tensor([B, 1, A], () => (r() - 0.25) * Math.PI);
  const bboxes = tensor([N, 5], (i) => (i % 5 === 4 ? 0.05 + 1.5 * r() : c.batch.bboxes.data[Math.floor(i / 5) * 4 + (i % 5)]!));
  return { model: c.model, preds: [c.preds, angle], batch: { ...c.batch, bboxes } };
}

export interface ClsCase {
  preds: Tensor;
  batch: { cls: Tensor };
}

export function clsCase(opts: { B?: number; nc?: number; seed?: number } = {}): ClsCase {
  const { B = 4, nc = 5, seed = 41 } = opts;
  const r = rng(seed);
  return { preds: tensor([B, nc], () => r() * 6 - 3), batch: { cls: tensor([B], () => Math.floor(r() * nc)) } };
}

export interface E2ECase {
  model: ModelInfo;
  preds: E2EPreds;
  batch: DetectionBatch;
}

export function e2eCase(opts: CaseOpts = {}): E2ECase {
  const { seed = 51 } = opts;
  const a = makeCase({ ...opts, seed });
  const b = makeCase({ ...opts, seed: seed + 1 });
  return { model: a.model, preds: { one2many: a.preds, one2one: b.preds }, batch: a.batch };
}

export interface TvpCase {
  /** `nc` = text prompts. */
  model: ModelInfo;
  /** Level tensors with `4·reg_max + nc + vnc` channels. */
  preds: Tensor[];
  batch: DetectionBatch;
  vnc: number;
}

/** A case drawn with `nc + vnc` classes as a TVP case: `nc` text prompts, `vnc` visual prompts. */
function visualPrompts<P, B extends DetectionBatch>(c: { model: ModelInfo; preds: P; batch: B }, nc: number, vnc: number) {
  // Labels were drawn in [0, nc + vnc): fold them into the VP slots [0, vnc) (all zero when vnc = 0).
  const cls = tensor(c.batch.cls.shape, (i) => (vnc > 0 ? c.batch.cls.data[i]! % vnc : 0));
  return { model: { ...c.model, nc }, preds: c.preds, batch: { ...c.batch, cls }, vnc };
}

/** TVP detection case: `nc` text prompts, `vnc` visual prompts; labels index the VP slots. */
export function tvpCase(opts: CaseOpts & { vnc?: number } = {}): TvpCase {
  const { nc = 3, vnc = 2, seed = 61 } = opts;
  return visualPrompts(makeCase({ ...opts, nc: nc + vnc, seed }), nc, vnc);
}

export interface TvpSegCase {
  model: ModelInfo;
  preds: SegmentationPreds;
  batch: SegmentationBatch;
  vnc: number;
}

export function tvpSegCase(opts: CaseOpts & { vnc?: number; nm?: number; overlap?: boolean } = {}): TvpSegCase {
  const { nc = 3, vnc = 2, seed = 71 } = opts;
  return visualPrompts(segCase({ ...opts, nc: nc + vnc, seed }), nc, vnc);
}

export { counts as labelCounts };
