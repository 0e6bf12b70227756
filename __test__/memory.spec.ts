/**
 * Memory of training loops. A synchronous loop of `valueAndGrad` calls never lets the event loop turn, so its
 * gradients must not depend on anything the event loop does to be freed: the synchronous methods return
 * `Float32Array`s whose memory V8 allocated and owns (counted in `process.memoryUsage().arrayBuffers`, freed by the
 * garbage collector), not external buffers whose finalizers Node defers to the event loop (which kept every
 * gradient of such a loop alive: resident memory grew by the size of all of them). An awaiting loop over
 * `valueAndGradAsync` turns the event loop between calls, and stays bounded too. The other synchronous functions
 * (building blocks, helpers) return V8-owned copies of their results, bounded the same way.
 *
 * Serial, and alone in its file (its own process): the checks read the process's resident memory.
 */
import test from 'ava';
import { make_anchors, v8DetectionLoss } from 'yolo-loss';

import { makeCase } from './helpers/synthetic.js';

/** B = 8 at 320×320 with 80 classes: 2100 anchors, 144 channels, 9.7 MB of gradients per call. */
const CASE = { B: 8, h: 320, w: 320, nc: 80, perImage: 8, seed: 7 };
const CALLS = 100;
/** Growth allowed during the loop, as a fraction of the bytes of every gradient the loop returned. */
const BOUND = 0.25;

const MB = 1e6;
const gradBytes = (grads: { data: Float32Array }[]) => grads.reduce((a, g) => a + g.data.byteLength, 0);

test.serial('a synchronous valueAndGrad loop keeps rss and arrayBuffers bounded (V8-owned gradients)', (t) => {
  const c = makeCase(CASE);
  const loss = new v8DetectionLoss(c.model);
  // The gradients live in V8's own ArrayBuffers: one call adds their bytes to arrayBuffers.
  const before = process.memoryUsage().arrayBuffers;
  const first = loss.valueAndGrad(c.preds, c.batch);
  const perCall = gradBytes(first.grads);
  t.true(process.memoryUsage().arrayBuffers - before >= perCall, 'the gradients are V8-owned ArrayBuffers');
  const m0 = process.memoryUsage();
  let rss = m0.rss;
  let arrayBuffers = m0.arrayBuffers;
  let sum = 0;
  for (let i = 0; i < CALLS; i++) {
    const r = loss.valueAndGrad(c.preds, c.batch);
    sum += r.loss[0]!;
    const m = process.memoryUsage();
    rss = Math.max(rss, m.rss);
    arrayBuffers = Math.max(arrayBuffers, m.arrayBuffers);
  }
  const total = CALLS * perCall;
  const info = `${CALLS} calls, ${(total / MB).toFixed(0)} MB of gradients: rss +${((rss - m0.rss) / MB).toFixed(0)} MB, arrayBuffers +${((arrayBuffers - m0.arrayBuffers) / MB).toFixed(0)} MB`;
  t.log(info);
  t.true(rss - m0.rss < BOUND * total, info);
  t.true(arrayBuffers - m0.arrayBuffers < BOUND * total, info);
  t.true(Math.abs(sum / CALLS - first.loss[0]!) <= 1e-6 * Math.abs(first.loss[0]!), 'every call gives the same loss');
});

test.serial('an awaiting valueAndGradAsync loop keeps rss bounded', async (t) => {
  const c = makeCase(CASE);
  const loss = new v8DetectionLoss(c.model);
  const perCall = gradBytes((await loss.valueAndGradAsync(c.preds, c.batch)).grads);
  const m0 = process.memoryUsage();
  let rss = m0.rss;
  for (let i = 0; i < CALLS; i++) {
    await loss.valueAndGradAsync(c.preds, c.batch);
    rss = Math.max(rss, process.memoryUsage().rss);
  }
  const total = CALLS * perCall;
  const info = `${CALLS} calls, ${(total / MB).toFixed(0)} MB of gradients: rss +${((rss - m0.rss) / MB).toFixed(0)} MB`;
  t.log(info);
  t.true(rss - m0.rss < BOUND * total, info);
});

test.serial('a synchronous loop of a building block keeps rss bounded (V8-owned results)', (t) => {
  // make_anchors of one 640×640 level: 4.9 MB of results per call, nothing else allocated.
  const run = () => make_anchors([[640, 640]], [8]);
  const perCall = gradBytes(run());
  const m0 = process.memoryUsage();
  let rss = m0.rss;
  for (let i = 0; i < CALLS; i++) {
    run();
    rss = Math.max(rss, process.memoryUsage().rss);
  }
  const total = CALLS * perCall;
  const info = `${CALLS} calls, ${(total / MB).toFixed(0)} MB of results: rss +${((rss - m0.rss) / MB).toFixed(0)} MB`;
  t.log(info);
  t.true(rss - m0.rss < BOUND * total, info);
});
