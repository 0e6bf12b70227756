/**
 * The asynchronous forms run on the libuv thread pool: a timer fires while a long `valueAndGradAsync` of every task
 * loss is pending (the JavaScript thread is not blocked), and the losses can be used from several worker_threads at
 * once (two workers with their own instances, computing at the same time, get exactly the main thread's results).
 * Serial: the worker test blocks the main thread with synchronous reference calls, which would starve the timer.
 */
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';

import test from 'ava';
import * as yolo from 'yolo-loss';
import type { Tensor, ValueAndGrad } from 'yolo-loss';

import { gpuBackend } from './helpers/devices.js';
import { makeCase } from './helpers/synthetic.js';
import { clsCase, e2eCase, obbCase, poseCase, segCase, tvpCase, tvpSegCase } from './helpers/tasks.js';

/** A case description that can be posted to a worker (plain data only). */
interface Desc {
  kind: string;
  model: unknown;
  options?: unknown;
  preds: unknown;
  batch: unknown;
}

interface Loss {
  device: string;
  valueAndGrad(preds: unknown, batch: unknown): ValueAndGrad<unknown>;
  valueAndGradAsync(preds: unknown, batch: unknown): Promise<ValueAndGrad<unknown>>;
}

/** The same construction as helpers/loss-worker.mjs. */
function makeLoss(d: Desc): Loss {
  const y = yolo as unknown as Record<string, new (...args: unknown[]) => Loss>;
  if (d.kind === 'v8DetectionLoss') return new y['v8DetectionLoss']!(d.model, 10, d.options);
  if (d.kind === 'v8ClassificationLoss') return new y['v8ClassificationLoss']!(d.options);
  return new y[d.kind]!(d.model, d.options);
}

/** One case per task loss, built on demand; `scale` sizes them (batch size and input side). */
function cases(scale: { B: number; side: number; perImage: number }): (() => Desc)[] {
  const o = { B: scale.B, h: scale.side, w: scale.side, nc: 8, perImage: scale.perImage };
  return [
    () => {
      const c = makeCase(o);
      return { kind: 'v8DetectionLoss', model: c.model, preds: c.preds, batch: c.batch };
    },
    () => {
      const c = segCase({ ...o, nm: 32 });
      return { kind: 'v8SegmentationLoss', model: c.model, preds: c.preds, batch: c.batch };
    },
    () => {
      const c = poseCase({ ...o, K: 17, D: 3 });
      return { kind: 'v8PoseLoss', model: c.model, preds: c.preds, batch: c.batch };
    },
    () => {
      const c = obbCase(o);
      return { kind: 'v8OBBLoss', model: c.model, preds: c.preds, batch: c.batch };
    },
    () => {
      const c = clsCase({ B: 512 * scale.B, nc: 1000 });
      return { kind: 'v8ClassificationLoss', model: null, options: { device: 'cpu' }, preds: c.preds, batch: c.batch };
    },
    () => {
      const c = e2eCase(o);
      return { kind: 'E2EDetectLoss', model: c.model, preds: c.preds, batch: c.batch };
    },
    () => {
      const c = tvpCase({ ...o, nc: 4, vnc: 4 });
      return { kind: 'TVPDetectLoss', model: c.model, preds: c.preds, batch: c.batch };
    },
    () => {
      const c = tvpSegCase({ ...o, nc: 4, vnc: 4, nm: 32 });
      return { kind: 'TVPSegmentLoss', model: c.model, preds: c.preds, batch: c.batch };
    },
  ];
}

test.serial('a timer fires while a long valueAndGradAsync / callAsync of every task loss is pending', async (t) => {
  for (const make of cases({ B: 16, side: 640, perImage: 20 })) {
    const d = make();
    const loss = makeLoss(d);
    let ticks = 0;
    let pending = true;
    const timer = setInterval(() => {
      if (pending) ticks++;
    }, 1);
    const started = performance.now();
    try {
      await loss.valueAndGradAsync(d.preds, d.batch);
      pending = false;
      const ms = performance.now() - started;
      t.log(`${d.kind}: valueAndGradAsync ${ms.toFixed(1)} ms, ${ticks} timer ticks while pending`);
      t.true(ticks > 0, `${d.kind}: no timer fired during a ${ms.toFixed(1)} ms valueAndGradAsync (the event loop was blocked)`);
      ticks = 0;
      pending = true;
      const callStarted = performance.now();
      await (loss as unknown as { callAsync(p: unknown, b: unknown): Promise<unknown> }).callAsync(d.preds, d.batch);
      pending = false;
      const callMs = performance.now() - callStarted;
      t.log(`${d.kind}: callAsync ${callMs.toFixed(1)} ms, ${ticks} timer ticks while pending`);
      t.true(ticks > 0, `${d.kind}: no timer fired during a ${callMs.toFixed(1)} ms callAsync`);
    } finally {
      clearInterval(timer);
    }
  }
});

/** Every tensor of a result, in order (bit patterns compared with deepEqual). */
function flat(r: ValueAndGrad<unknown>): Float32Array[] {
  const out: Float32Array[] = [r.loss, r.lossItems];
  const walk = (x: unknown): void => {
    if (Array.isArray(x)) x.forEach(walk);
    else if (typeof x === 'object' && x !== null) {
      if ((x as Tensor).data instanceof Float32Array) out.push((x as Tensor).data);
      else Object.values(x).forEach(walk);
    }
  };
  walk(r.grads);
  return out;
}

test.serial('two worker_threads with their own instances compute at the same time and match the main thread', async (t) => {
  // A fixed device (the GPU where there is one): results are compared bit for bit across calls, which 'auto' with
  // both backends does not promise for a shape's first calls.
  const descs = cases({ B: 2, side: 128, perImage: 4 }).map((make) => {
    const d = make();
    return { options: { device: gpuBackend(d.kind) }, ...d };
  });
  const want = descs.map((d) => makeLoss(d).valueAndGrad(d.preds, d.batch));
  const script = path.join(__dirname, 'helpers', 'loss-worker.mjs');
  const run = () =>
    new Promise<{ threadDevice: string; results: { kind: string; sync: ValueAndGrad<unknown>; async: ValueAndGrad<unknown> }[] }>((resolve, reject) => {
      const w = new Worker(script, { workerData: { cases: descs, rounds: 3 } });
      w.once('message', resolve);
      w.once('error', reject);
      w.once('exit', (code) => {
        if (code !== 0) reject(new Error(`worker exited with code ${code}`));
      });
    });
  // Both workers start before either is awaited, and the main thread keeps computing meanwhile.
  const workers = [run(), run()];
  const again = await Promise.all(descs.map((d) => makeLoss(d).valueAndGradAsync(d.preds, d.batch)));
  const outs = await Promise.all(workers);
  for (const [w, out] of outs.entries()) {
    t.is(out.threadDevice, gpuBackend());
    t.is(out.results.length, descs.length);
    out.results.forEach((r, i) => {
      t.is(r.kind, descs[i]!.kind);
      t.deepEqual(flat(r.sync), flat(want[i]!), `worker ${w}, ${r.kind}: valueAndGrad differs from the main thread`);
      t.deepEqual(flat(r.async), flat(want[i]!), `worker ${w}, ${r.kind}: valueAndGradAsync differs from the main thread`);
    });
  }
  again.forEach((r, i) => t.deepEqual(flat(r), flat(want[i]!), `main thread async, ${descs[i]!.kind}`));
});
