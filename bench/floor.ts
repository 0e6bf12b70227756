/**
 * The memory-traffic floor of a case (issue 13): the time to read every prediction tensor once and write every
 * gradient once on this machine, with as many threads as ours uses, measured in the worker's process right after
 * ours on the same inputs. No loss can take less (ours reads each prediction at least once and writes each
 * gradient element), so `ours ÷ floor` says how far a case is from the memory's speed.
 *
 * How: the predictions are copied (outside the timing) into `SharedArrayBuffer`s, gradient-sized shared buffers are
 * allocated, and `threads` worker threads each copy their share of every tensor from prediction to gradient
 * (`TypedArray.prototype.set`, a `memcpy`: one read and one write per element). A timed round is from the start
 * signal to the last thread's done signal. The gradient buffers are reused across rounds, like caller-owned
 * outputs, so the floor holds no page faults; warm-up rounds come first.
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */

import * as os from 'node:os';
import { Worker } from 'node:worker_threads';

import { iterations, stats, type IterPlan, type Stats } from './timing';

/** Each thread's loop: wait for the next round, copy its share of every tensor, count itself done. */
const THREAD_SOURCE = `
const { workerData } = require('node:worker_threads');
const { control, preds, grads, index, threads } = workerData;
const ctl = new Int32Array(control);
const src = preds.map((b) => new Float32Array(b));
const dst = grads.map((b) => new Float32Array(b));
let seen = 0;
for (;;) {
  Atomics.wait(ctl, 0, seen);
  seen = Atomics.load(ctl, 0);
  if (seen < 0) break;
  for (let t = 0; t < src.length; t++) {
    const n = src[t].length;
    const lo = Math.floor((n * index) / threads);
    const hi = Math.floor((n * (index + 1)) / threads);
    dst[t].set(src[t].subarray(lo, hi), lo);
  }
  Atomics.add(ctl, 1, 1);
  Atomics.notify(ctl, 1);
}
`;

/** The thread count of ours: `RAYON_NUM_THREADS` when set (the runner sets it), else every core, as rayon does. */
export function oursThreads(): number {
  const env = Number(process.env['RAYON_NUM_THREADS']);
  return Number.isInteger(env) && env > 0 ? env : os.availableParallelism();
}

export interface FloorResult extends Stats {
  threads: number;
  /** Bytes read plus bytes written per round. */
  bytes: number;
  times_ms: number[];
}

/** Times read-once/write-once rounds over `preds` with `threads` threads (plan as ours: warm-up, then timed). */
export async function measureFloor(preds: Float32Array[], threads: number, plan: IterPlan): Promise<FloorResult> {
  const shared = preds.map((p) => {
    const s = new SharedArrayBuffer(p.byteLength);
    new Float32Array(s).set(p);
    return s;
  });
  const grads = preds.map((p) => new SharedArrayBuffer(p.byteLength));
  // [0]: round number (−1: stop), [1]: threads done in this round.
  const control = new SharedArrayBuffer(8);
  const ctl = new Int32Array(control);
  const workers = Array.from(
    { length: threads },
    (_, index) => new Worker(THREAD_SOURCE, { eval: true, workerData: { control, preds: shared, grads, index, threads } }),
  );
  await Promise.all(workers.map((w) => new Promise((r) => w.once('online', r))));
  const round = (): number => {
    Atomics.store(ctl, 1, 0);
    const t0 = process.hrtime.bigint();
    Atomics.add(ctl, 0, 1);
    Atomics.notify(ctl, 0);
    for (let done = 0; done < threads; done = Atomics.load(ctl, 1)) Atomics.wait(ctl, 1, done);
    return Number(process.hrtime.bigint() - t0) / 1e6;
  };
  try {
    let first = 0;
    for (let i = 0; i < plan.warmup; i++) first = round();
    const times = Array.from({ length: iterations(plan, first) }, round);
    const bytes = 2 * preds.reduce((s, p) => s + p.byteLength, 0);
    return { ...stats(times), threads, bytes, times_ms: times };
  } finally {
    Atomics.store(ctl, 0, -1);
    Atomics.notify(ctl, 0);
    await Promise.all(workers.map((w) => new Promise((r) => w.once('exit', r))));
  }
}
