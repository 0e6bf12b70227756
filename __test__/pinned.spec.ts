/**
 * Page-locked caller buffers (CUDA): a CUDA instance registers the caller's `out` tensors with the driver on first
 * sight and the prediction arrays of a synchronous call when they are passed again, keeps them (and a reference to
 * each) across calls, and releases them on `releasePinnedMemory()`, when an array is detached, or when it is
 * garbage-collected. On the CPU backend nothing is ever locked and `pinnedMemory()` is all zeros; what can be
 * asserted everywhere is that, the counters, bit-equal results with and without `out` over repeated calls, caller
 * arrays left as they were, and that instances and arrays collected in either order crash nothing (run with
 * `--expose-gc`, see package.json). On a GPU machine (`device` 'cuda') the same tests check the registrations.
 */
import test from 'ava';
import { v8DetectionLoss, type PinnedMemory, type Tensor } from 'yolo-loss';

import { sameBits, snapshot, unchanged } from './helpers/fixtures.js';
import { inputsOf, makeCase } from './helpers/synthetic.js';

/** B = 4 at 320×320, 80 classes: the largest level's gradient is 3.7 MB, above the 1 MiB locking threshold. */
const CASE = { B: 4, h: 320, w: 320, nc: 80, perImage: 4, seed: 3 };
const MIB = 1 << 20;
const ZERO: PinnedMemory = { buffers: 0, bytes: 0, registrations: 0, releases: 0, refusals: 0 };

const outLike = (preds: Tensor[]): Tensor[] => preds.map((p) => ({ data: new Float32Array(p.data.length).fill(7), shape: [...p.shape] }));
/** The buffers the cache would lock (1 MiB and more), and their bytes. */
const lockable = (ts: Tensor[]): { count: number; bytes: number } => {
  const big = ts.filter((x) => x.data.byteLength >= MIB);
  return { count: big.length, bytes: big.reduce((a, x) => a + x.data.byteLength, 0) };
};

const gc = (): void => {
  const collect = (globalThis as { gc?: () => void }).gc;
  if (!collect) throw new Error('run with --expose-gc (ava nodeArguments in package.json)');
  collect();
};

test.serial('repeated valueAndGrad with { out }: the fresh bits every call; out locked at once and the predictions when seen again on CUDA, never on the CPU', (t) => {
  const c = makeCase(CASE);
  const loss = new v8DetectionLoss(c.model);
  const fresh = loss.valueAndGrad(c.preds, c.batch);
  const out = outLike(c.preds);
  const [outs, preds] = [lockable(out), lockable(c.preds)];
  t.true(outs.count >= 1, 'the case has a buffer worth locking');
  for (let i = 0; i < 4; i++) {
    const r = loss.valueAndGrad(c.preds, c.batch, { out });
    t.is(r.grads, out);
    t.true(sameBits(r.loss, fresh.loss), `call ${i}: loss`);
    out.forEach((o, l) => t.true(sameBits(o.data, fresh.grads[l]!.data), `call ${i}: gradient ${l}`));
    out.forEach((o) => o.data.fill(7));
  }
  const stats = loss.pinnedMemory();
  if (loss.device === 'cpu') {
    t.deepEqual(stats, ZERO);
  } else {
    const [buffers, bytes] = [outs.count + preds.count, outs.bytes + preds.bytes];
    t.deepEqual(stats, { buffers, bytes, registrations: buffers, releases: 0, refusals: 0 });
  }
  loss.releasePinnedMemory();
  loss.releasePinnedMemory();
  const after = loss.pinnedMemory();
  t.is(after.buffers, 0);
  t.is(after.bytes, 0);
  t.is(after.releases, after.registrations, 'everything locked was released, once');
  // The next call locks out anew; the predictions count as unseen again.
  loss.valueAndGrad(c.preds, c.batch, { out });
  t.is(loss.pinnedMemory().buffers, loss.device === 'cpu' ? 0 : outs.count);
});

test.serial('the same prediction arrays again (call, valueAndGrad, async): bit-identical results, locked on their second sighting on CUDA only, left unchanged', async (t) => {
  const c = makeCase(CASE);
  const before = snapshot(inputsOf(c));
  const loss = new v8DetectionLoss(c.model);
  const preds = lockable(c.preds);
  t.true(preds.count >= 1, 'the case has a prediction worth locking');
  const first = loss.valueAndGrad(c.preds, c.batch);
  t.deepEqual(loss.pinnedMemory(), ZERO, 'first sighting: nothing locked');
  for (let i = 0; i < 3; i++) {
    const r = loss.valueAndGrad(c.preds, c.batch);
    t.true(sameBits(r.loss, first.loss), `call ${i}: loss`);
    t.true(sameBits(r.lossItems, first.lossItems), `call ${i}: lossItems`);
    r.grads.forEach((g, l) => t.true(sameBits(g.data, first.grads[l]!.data), `call ${i}: gradient ${l}`));
    const [value] = loss.call(c.preds, c.batch);
    t.true(sameBits(value, first.loss), `call ${i}: call`);
  }
  // The asynchronous form reads copies of its inputs: it locks nothing, and gives the same bits.
  const locked = loss.pinnedMemory();
  const a = await loss.valueAndGradAsync(c.preds, c.batch);
  t.true(sameBits(a.loss, first.loss));
  a.grads.forEach((g, l) => t.true(sameBits(g.data, first.grads[l]!.data), `async gradient ${l}`));
  t.deepEqual(loss.pinnedMemory(), locked);
  if (loss.device === 'cpu') {
    t.deepEqual(locked, ZERO);
  } else {
    t.deepEqual(locked, { buffers: preds.count, bytes: preds.bytes, registrations: preds.count, releases: 0, refusals: 0 });
  }
  t.true(unchanged(inputsOf(c), before), 'the caller arrays are as they were');
});

test.serial('a locked prediction array that is detached is let go; fresh arrays give the same bits', (t) => {
  const c = makeCase(CASE);
  const copy = (ts: Tensor[]): Tensor[] => ts.map((x) => ({ data: x.data.slice(), shape: [...x.shape] }));
  const loss = new v8DetectionLoss(c.model);
  const first = loss.valueAndGrad(c.preds, c.batch);
  const mine = copy(c.preds);
  for (let i = 0; i < 2; i++) loss.valueAndGrad(mine, c.batch);
  const locked = loss.pinnedMemory().buffers;
  for (const p of mine) structuredClone(p.data.buffer, { transfer: [p.data.buffer as ArrayBuffer] });
  t.is(mine[0]!.data.length, 0, 'detached');
  const r = loss.valueAndGrad(copy(c.preds), c.batch);
  t.true(sameBits(r.loss, first.loss));
  r.grads.forEach((g, l) => t.true(sameBits(g.data, first.grads[l]!.data), `gradient ${l}`));
  const stats = loss.pinnedMemory();
  t.is(stats.buffers, 0, 'the detached arrays are unlocked, the fresh ones seen once');
  t.is(stats.releases, locked);
  t.is(locked, loss.device === 'cpu' ? 0 : lockable(c.preds).count);
});

test.serial('instances collected while their locked buffers live on (and vice versa) crash nothing', async (t) => {
  const c = makeCase(CASE);
  const keep: { preds: Tensor[]; out: Tensor[] }[] = [];
  for (let round = 0; round < 3; round++) {
    const loss = new v8DetectionLoss(c.model);
    const preds = c.preds.map((x) => ({ data: x.data.slice(), shape: [...x.shape] }));
    const out = outLike(c.preds);
    for (let i = 0; i < 2; i++) loss.valueAndGrad(preds, c.batch, { out });
    await loss.valueAndGradAsync(preds, c.batch, { out });
    if (round % 2 === 0) keep.push({ preds, out }); // the other rounds' arrays go with their instance
    gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
  gc();
  await new Promise((resolve) => setImmediate(resolve));
  // The kept arrays are intact and usable again by a new instance.
  const loss = new v8DetectionLoss(c.model);
  const fresh = loss.valueAndGrad(c.preds, c.batch);
  for (const { preds, out } of keep) {
    t.true(unchanged(preds, c.preds), 'the kept predictions are intact');
    for (let i = 0; i < 2; i++) loss.valueAndGrad(preds, c.batch, { out });
    out.forEach((o, l) => t.true(sameBits(o.data, fresh.grads[l]!.data)));
  }
  t.is(keep.length, 2);
  // The caller lets go of the arrays this instance locked (its references keep them alive until it goes): its next
  // calls, and its collection later, crash nothing.
  keep.length = 0;
  gc();
  await new Promise((resolve) => setImmediate(resolve));
  t.true(sameBits(loss.valueAndGrad(c.preds, c.batch).loss, fresh.loss));
});
