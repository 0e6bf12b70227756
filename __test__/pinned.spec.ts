/**
 * Page-locked `out` buffers (CUDA): a CUDA instance registers the caller's `out` tensors with the driver on first
 * sight, keeps them (and a reference to each) across calls, and releases them on `releasePinnedMemory()` or when it
 * is garbage-collected. On the CPU backend nothing is ever locked and `pinnedMemory()` is all zeros; what can be
 * asserted everywhere is that, the counters, bit-equal results with and without `out` over repeated calls, and that
 * instances collected with their `out` buffers still in use crash nothing (run with `--expose-gc`, see package.json).
 * On a GPU machine (`device` 'cuda') the same tests check the registrations themselves.
 */
import test from 'ava';
import { v8DetectionLoss, type PinnedMemory, type Tensor } from 'yolo-loss';

import { sameBits } from './helpers/fixtures.js';
import { makeCase } from './helpers/synthetic.js';

/** B = 4 at 320×320, 80 classes: the largest level's gradient is 3.7 MB, above the 1 MiB locking threshold. */
const CASE = { B: 4, h: 320, w: 320, nc: 80, perImage: 4, seed: 3 };
const MIB = 1 << 20;
const ZERO: PinnedMemory = { buffers: 0, bytes: 0, registrations: 0, releases: 0, refusals: 0 };

const outLike = (preds: Tensor[]): Tensor[] => preds.map((p) => ({ data: new Float32Array(p.data.length).fill(7), shape: [...p.shape] }));

const gc = (): void => {
  const collect = (globalThis as { gc?: () => void }).gc;
  if (!collect) throw new Error('run with --expose-gc (ava nodeArguments in package.json)');
  collect();
};

test.serial('repeated valueAndGrad with { out }: the fresh bits every call; out locked once on CUDA, never on the CPU', (t) => {
  const c = makeCase(CASE);
  const loss = new v8DetectionLoss(c.model);
  const fresh = loss.valueAndGrad(c.preds, c.batch);
  const out = outLike(c.preds);
  const lockable = out.filter((o) => o.data.byteLength >= MIB);
  t.true(lockable.length >= 1, 'the case has a buffer worth locking');
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
    const bytes = lockable.reduce((a, o) => a + o.data.byteLength, 0);
    t.deepEqual(stats, { buffers: lockable.length, bytes, registrations: lockable.length, releases: 0, refusals: 0 });
  }
  loss.releasePinnedMemory();
  loss.releasePinnedMemory();
  const after = loss.pinnedMemory();
  t.is(after.buffers, 0);
  t.is(after.bytes, 0);
  t.is(after.releases, after.registrations, 'everything locked was released, once');
  // Locked anew by the next call.
  loss.valueAndGrad(c.preds, c.batch, { out });
  t.is(loss.pinnedMemory().buffers, loss.device === 'cpu' ? 0 : lockable.length);
});

test.serial('instances collected while their out buffers live on (and vice versa) crash nothing', async (t) => {
  const c = makeCase(CASE);
  const keep: Tensor[][] = [];
  for (let round = 0; round < 3; round++) {
    const loss = new v8DetectionLoss(c.model);
    const out = outLike(c.preds);
    for (let i = 0; i < 2; i++) loss.valueAndGrad(c.preds, c.batch, { out });
    await loss.valueAndGradAsync(c.preds, c.batch, { out });
    if (round % 2 === 0) keep.push(out); // the other rounds' out goes with its instance
    gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
  gc();
  await new Promise((resolve) => setImmediate(resolve));
  // The kept buffers are intact and usable as out again by a new instance.
  const loss = new v8DetectionLoss(c.model);
  const fresh = loss.valueAndGrad(c.preds, c.batch);
  for (const out of keep) {
    loss.valueAndGrad(c.preds, c.batch, { out });
    out.forEach((o, l) => t.true(sameBits(o.data, fresh.grads[l]!.data)));
  }
  t.is(keep.length, 2);
});
