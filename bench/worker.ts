/**
 * One benchmark case of ours, in its own Node process (so `process.resourceUsage().maxRSS` is this case's peak):
 * `node --expose-gc dist/bench/worker.js <case dir> '{"plan": …, "device": "cpu"}'`.
 *
 * Reads the inputs written by `data.ts`, builds the loss through the public package API, calls `valueAndGrad`
 * `plan.warmup` times, then times `iterations(plan, first)` calls end to end (from the input `Float32Array`s to the
 * returned loss and gradient arrays). Between timed calls (outside the timed region) it drops the result, runs the
 * garbage collector (`--expose-gc`) and lets the event loop turn so the finalizers of the returned buffers run: a
 * call never pays for the previous call's garbage and the peak RSS reflects one live set of outputs. Then, as the
 * `out` entry, the same timing of `valueAndGrad(preds, batch, { out })` into one set of caller-owned buffers
 * allocated before (after the peak RSS above is read, so that stays the fresh form's). Then it times the
 * memory-traffic floor of the same inputs with the same thread count (floor.ts). Prints one JSON line on stdout.
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */

import * as fs from 'node:fs';
import * as path from 'node:path';

import * as lib from '../index';
import { CLASS_OF, type CaseDef } from './cases';
import { readTensor, type Manifest } from './data';
import { measureFloor, oursThreads } from './floor';
import { iterations, stats, type IterPlan } from './timing';

type AnyTensor = { data: Float32Array; shape: number[] };
interface LossLike {
  valueAndGrad(preds: unknown, batch: unknown, options?: { out: unknown }): { loss: Float32Array; lossItems: Float32Array; grads: unknown };
}
type LossCtor = new (model: Record<string, unknown>, ...rest: unknown[]) => LossLike;

function mb(kb: number): number {
  return kb / 1024;
}

/** Every gradient array in a result (an array of tensors, or an object of tensors / arrays of tensors). */
function gradArrays(g: unknown, out: Float32Array[] = []): Float32Array[] {
  if (g instanceof Float32Array) out.push(g);
  else if (Array.isArray(g)) g.forEach((x) => gradArrays(x, out));
  else if (typeof g === 'object' && g !== null) {
    const o = g as Record<string, unknown>;
    if (o['data'] instanceof Float32Array) out.push(o['data']);
    else Object.values(o).forEach((x) => gradArrays(x, out));
  }
  return out;
}

/** Zero-filled tensors with the structure and shapes of `preds`: the caller-owned `out` of the `{ out }` form. */
function outLike(preds: unknown): unknown {
  if (Array.isArray(preds)) return preds.map(outLike);
  const t = preds as AnyTensor;
  return { data: new Float32Array(t.data.length), shape: [...t.shape] };
}

function l2(arrays: Float32Array[]): number {
  let s = 0;
  for (const a of arrays) for (let i = 0; i < a.length; i++) s += a[i]! * a[i]!;
  return Math.sqrt(s);
}

/** The constructor arguments and call arguments of a task, in the package's API (Ultralytics' structure). */
function build(c: CaseDef, t: Record<string, AnyTensor>, device: string): { ctorArgs: unknown[]; preds: unknown; batch: Record<string, AnyTensor> } {
  const feats = c.strides.map((_, l) => t[`preds.${l}`]!);
  const model: Record<string, unknown> = { nc: c.nc, stride: c.strides, reg_max: c.reg_max };
  const batch: Record<string, AnyTensor> = {
    batch_idx: t['batch.batch_idx']!,
    cls: t['batch.cls']!,
    bboxes: t['batch.bboxes']!,
  };
  switch (c.task) {
    case 'detect':
      return { ctorArgs: [model, 10, { device }], preds: feats, batch };
    case 'segment':
      batch['masks'] = t['batch.masks']!;
      model['args'] = { overlap_mask: true };
      return { ctorArgs: [model, { device }], preds: [feats, t['preds.pred_masks']!, t['preds.proto']!], batch };
    case 'pose':
      batch['keypoints'] = t['batch.keypoints']!;
      model['kpt_shape'] = c.kpt_shape;
      return { ctorArgs: [model, { device }], preds: [feats, t['preds.kpts']!], batch };
    case 'obb':
      return { ctorArgs: [model, { device }], preds: [feats, t['preds.angle']!], batch };
  }
}

async function main(): Promise<void> {
  const dir = process.argv[2]!;
  const { plan, device } = JSON.parse(process.argv[3]!) as { plan: IterPlan; device: string };
  const m = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as Manifest;
  const c = m.case;
  const cls = CLASS_OF[c.task];
  const Ctor = (lib as unknown as Record<string, unknown>)[cls];
  if (typeof Ctor !== 'function') {
    console.log(JSON.stringify({ status: 'not-bound', message: `${cls} is not exported by the package yet` }));
    return;
  }
  const t: Record<string, AnyTensor> = {};
  for (const [name, e] of Object.entries(m.tensors)) t[name] = readTensor(dir, e);
  const rssAfterLoad = process.resourceUsage().maxRSS;

  const { ctorArgs, preds, batch } = build(c, t, device);
  const crit = new (Ctor as LossCtor)(...(ctorArgs as [Record<string, unknown>, ...unknown[]]));
  const gc = (globalThis as { gc?: () => void }).gc;
  // The returned arrays are external buffers freed by finalizers that only run once the event loop turns; a
  // synchronous loop would keep every call's outputs alive (and fault in fresh pages on every call). Between calls,
  // outside the timed region: drop the result, collect, and let the event loop run the finalizers, as a training
  // loop with an `await` per step would.
  const settle = async (): Promise<void> => {
    gc?.();
    await new Promise((r) => setTimeout(r, 0));
    await new Promise((r) => setImmediate(r));
    gc?.();
    await new Promise((r) => setTimeout(r, 0));
  };
  const once = (): [number, ReturnType<LossLike['valueAndGrad']>] => {
    const t0 = process.hrtime.bigint();
    const r = crit.valueAndGrad(preds, batch);
    return [Number(process.hrtime.bigint() - t0) / 1e6, r];
  };
  const warm: number[] = [];
  let loss: number[] = [];
  let lossItems: number[] = [];
  let gradNorm = NaN;
  for (let i = 0; i < plan.warmup; i++) {
    const [dt, r] = once();
    warm.push(dt);
    if (i + 1 === plan.warmup) {
      loss = Array.from(r.loss);
      lossItems = Array.from(r.lossItems);
      gradNorm = l2(gradArrays(r.grads));
    }
    await settle();
  }
  const first = warm[warm.length - 1] ?? 0;
  const n = iterations(plan, first);
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    times.push(once()[0]);
    await settle();
  }
  const ru = process.resourceUsage();
  const withOut = await timeOut(crit, preds, batch, plan, n, settle);
  // After ours and after reading the peak RSS (the floor's shared copies of the inputs must not count in ours).
  const floor = await measureFloor(gradArrays(preds), oursThreads(), plan);
  console.log(
    JSON.stringify({
      status: 'ok',
      ...stats(times),
      warmup_ms: warm,
      times_ms: times,
      iters: n,
      peak_rss_mb: mb(ru.maxRSS),
      rss_after_load_mb: mb(rssAfterLoad),
      loss,
      loss_items: lossItems,
      grad_norm: gradNorm,
      threads: process.env['RAYON_NUM_THREADS'] ?? 'all cores (rayon default)',
      gc_between_calls: gc !== undefined,
      device: (crit as unknown as { device?: string }).device ?? 'cpu',
      out: { ...withOut, same_grad_norm: withOut.grad_norm === gradNorm },
      floor,
    }),
  );
}

/** `valueAndGrad(preds, batch, { out })` timed as the fresh form is (`warmup` calls, then `n`), into one `out`. */
async function timeOut(crit: LossLike, preds: unknown, batch: unknown, plan: IterPlan, n: number, settle: () => Promise<void>) {
  const out = outLike(preds);
  const once = (): number => {
    const t0 = process.hrtime.bigint();
    crit.valueAndGrad(preds, batch, { out });
    return Number(process.hrtime.bigint() - t0) / 1e6;
  };
  const warm: number[] = [];
  for (let i = 0; i < plan.warmup; i++) {
    warm.push(once());
    await settle();
  }
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    times.push(once());
    await settle();
  }
  return { ...stats(times), warmup_ms: warm, times_ms: times, iters: n, grad_norm: l2(gradArrays(out)) };
}

main().catch((e: unknown) => {
  const err = e as Error & { code?: string };
  console.log(JSON.stringify({ status: 'error', code: err.code ?? null, message: String(err.message ?? e) }));
  process.exitCode = 1;
});
