/**
 * Caller-owned outputs: `valueAndGrad(preds, batch, { out })` and `valueAndGradAsync(preds, batch, { out })` of every
 * task loss write the fresh form's gradients, bit for bit, into the caller's tensors and return them as `grads`;
 * an `out` of another structure, shape or type, or one that shares memory with an input or with itself, is refused
 * with a coded error before anything is written (out and inputs compared with snapshots taken before the call).
 */
import test, { type ExecutionContext } from 'ava';
import {
  E2EDetectLoss,
  TVPDetectLoss,
  TVPSegmentLoss,
  v8ClassificationLoss,
  v8DetectionLoss,
  v8OBBLoss,
  v8PoseLoss,
  v8SegmentationLoss,
  type ErrorCode,
  type SegmentationPreds,
  type Tensor,
  type ValueAndGrad,
} from 'yolo-loss';

import { gpuBackend } from './helpers/devices.js';
import { leaves, sameBits, snapshot, unchanged } from './helpers/fixtures.js';
import { makeCase } from './helpers/synthetic.js';
import { clsCase, e2eCase, obbCase, poseCase, segCase, tvpCase, tvpSegCase } from './helpers/tasks.js';

/** A task loss seen through its `{ out }` forms. */
interface OutLoss {
  valueAndGrad(preds: unknown, batch: unknown, options?: { out: unknown }): ValueAndGrad<unknown>;
  valueAndGradAsync(preds: unknown, batch: unknown, options?: { out: unknown }): Promise<ValueAndGrad<unknown>>;
}

interface Setup {
  loss: OutLoss;
  preds: unknown;
  batch: unknown;
}

const asOut = (loss: unknown): OutLoss => loss as OutLoss;

/** A fixed device (the GPU where there is one): `{ out }` results are compared bit for bit with an earlier call's,
 * which 'auto' with both backends does not promise for a shape's first calls. */
const fixed = (name: string) => ({ device: gpuBackend(name) });

/** One small case per task loss. */
const CASES: [name: string, make: () => Setup][] = [
  ['v8DetectionLoss', () => { const c = makeCase({ perImage: 3 }); return { loss: asOut(new v8DetectionLoss(c.model, 10, fixed('v8DetectionLoss'))), preds: c.preds, batch: c.batch }; }],
  ['v8SegmentationLoss', () => { const c = segCase(); return { loss: asOut(new v8SegmentationLoss(c.model, fixed('v8SegmentationLoss'))), preds: c.preds, batch: c.batch }; }],
  ['v8PoseLoss', () => { const c = poseCase(); return { loss: asOut(new v8PoseLoss(c.model, fixed('v8PoseLoss'))), preds: c.preds, batch: c.batch }; }],
  ['v8OBBLoss', () => { const c = obbCase(); return { loss: asOut(new v8OBBLoss(c.model, fixed('v8OBBLoss'))), preds: c.preds, batch: c.batch }; }],
  ['v8ClassificationLoss', () => { const c = clsCase(); return { loss: asOut(new v8ClassificationLoss(fixed('v8ClassificationLoss'))), preds: c.preds, batch: c.batch }; }],
  ['E2EDetectLoss', () => { const c = e2eCase(); return { loss: asOut(new E2EDetectLoss(c.model, fixed('E2EDetectLoss'))), preds: c.preds, batch: c.batch }; }],
  ['TVPDetectLoss', () => { const c = tvpCase(); return { loss: asOut(new TVPDetectLoss(c.model, fixed('TVPDetectLoss'))), preds: c.preds, batch: c.batch }; }],
  ['TVPSegmentLoss', () => { const c = tvpSegCase(); return { loss: asOut(new TVPSegmentLoss(c.model, fixed('TVPSegmentLoss'))), preds: c.preds, batch: c.batch }; }],
];

/** A value no gradient of these cases has: every element of a fresh `out` holds it before the call. */
const SENTINEL = 1234.5;

/** Tensors with the structure and shapes of `preds`, filled with the sentinel, each over its own ArrayBuffer. */
function outLike(preds: unknown): unknown {
  if (Array.isArray(preds)) return preds.map(outLike);
  const p = preds as Record<string, unknown>;
  if (p['data'] instanceof Float32Array) {
    const t = preds as Tensor;
    return { data: new Float32Array(t.data.length).fill(SENTINEL), shape: [...t.shape] };
  }
  return Object.fromEntries(Object.entries(p).map(([k, v]) => [k, outLike(v)]));
}

/** `out` with its first tensor replaced by `f(first)`. */
function withFirst(out: unknown, f: (t: Tensor) => unknown): unknown {
  if (Array.isArray(out)) return [withFirst(out[0], f), ...out.slice(1)];
  const o = out as Record<string, unknown>;
  if (o['data'] instanceof Float32Array) return f(out as Tensor);
  const [k0, ...rest] = Object.keys(o);
  return { [k0!]: withFirst(o[k0!], f), ...Object.fromEntries(rest.map((k) => [k, o[k]])) };
}

/** `out` without the last tensor of its first list of tensors (undefined when it has none: classification). */
function withoutOne(out: unknown): unknown {
  if (Array.isArray(out)) {
    if (out.every((x) => !Array.isArray(x) && (x as Tensor).data instanceof Float32Array)) return out.slice(0, -1);
    return [withoutOne(out[0]), ...out.slice(1)];
  }
  const o = out as Record<string, unknown>;
  if (o['data'] instanceof Float32Array) return undefined;
  const [k0, ...rest] = Object.keys(o);
  return { [k0!]: withoutOne(o[k0!]), ...Object.fromEntries(rest.map((k) => [k, o[k]])) };
}

/** `out` whose tensors all lie in one ArrayBuffer, one after the other with `gap` floats between them (a negative
 * gap overlaps each with the one before). */
function packedOut(out: unknown, gap: number): unknown {
  const ts = leaves(out);
  const starts: number[] = [];
  let end = 0;
  for (const t of ts) {
    const start = starts.length === 0 ? 0 : end + gap;
    starts.push(start);
    end = start + t.data.length;
  }
  const buffer = new ArrayBuffer(4 * end);
  const views = new Map<Tensor, Tensor>();
  ts.forEach((t, i) => views.set(t, { data: new Float32Array(buffer, 4 * starts[i]!, t.data.length).fill(SENTINEL), shape: [...t.shape] }));
  const rebuild = (x: unknown): unknown => {
    if (Array.isArray(x)) return x.map(rebuild);
    const v = views.get(x as Tensor);
    if (v) return v;
    return Object.fromEntries(Object.entries(x as Record<string, unknown>).map(([k, y]) => [k, rebuild(y)]));
  };
  return rebuild(out);
}

/** Both `{ out }` results give the fresh form's loss, items and gradients bit for bit, in the caller's tensors. */
function sameAsFresh(t: ExecutionContext, fresh: ValueAndGrad<unknown>, r: ValueAndGrad<unknown>, out: unknown): void {
  t.is(r.grads, out, 'grads is the caller\'s out');
  t.true(sameBits(r.loss, fresh.loss), 'loss');
  t.true(sameBits(r.lossItems, fresh.lossItems), 'lossItems');
  const want = leaves(fresh.grads);
  const got = leaves(out);
  t.is(got.length, want.length);
  want.forEach((g, i) => t.true(sameBits(got[i]!.data, g.data), `gradient ${i} bit for bit`));
  t.true(want.some((g) => g.data.some((v) => v !== 0)), 'the case has non-zero gradients');
}

for (const [name, make] of CASES) {
  test(`${name}: valueAndGrad { out } writes the fresh gradients into out, every element, and returns it`, (t) => {
    const c = make();
    const inputs = [...leaves(c.preds), ...leaves(c.batch)];
    const copies = snapshot(inputs);
    const fresh = c.loss.valueAndGrad(c.preds, c.batch);
    const out = outLike(c.preds);
    sameAsFresh(t, fresh, c.loss.valueAndGrad(c.preds, c.batch, { out }), out);
    // Again into the same buffers, which now hold gradients: the result does not depend on what out held.
    sameAsFresh(t, fresh, c.loss.valueAndGrad(c.preds, c.batch, { out }), out);
    // Tensors side by side in one ArrayBuffer (no byte shared) are separate buffers.
    const packed = packedOut(out, 0);
    sameAsFresh(t, fresh, c.loss.valueAndGrad(c.preds, c.batch, { out: packed }), packed);
    t.true(unchanged(inputs, copies), 'inputs unchanged');
  });

  test(`${name}: valueAndGradAsync { out } writes the fresh gradients into out and resolves with it`, async (t) => {
    const c = make();
    const inputs = [...leaves(c.preds), ...leaves(c.batch)];
    const copies = snapshot(inputs);
    const fresh = c.loss.valueAndGrad(c.preds, c.batch);
    const out = outLike(c.preds);
    sameAsFresh(t, fresh, await c.loss.valueAndGradAsync(c.preds, c.batch, { out }), out);
    sameAsFresh(t, fresh, await c.loss.valueAndGradAsync(c.preds, c.batch, { out }), out);
    t.true(unchanged(inputs, copies), 'inputs unchanged');
  });

  test(`${name}: an out that does not fit or aliases memory is refused before anything is written`, async (t) => {
    const c = make();
    const out = outLike(c.preds);
    const first = leaves(c.preds)[0]!;
    const bad: [what: string, out: unknown, code: ErrorCode, message: RegExp][] = [
      ['another shape', withFirst(out, (x) => ({ data: x.data, shape: [...x.shape].reverse() })), 'ERR_SHAPE_MISMATCH', /^out\S*: expected shape \[.*\] \(that of its prediction tensor\), got \[/],
      ['another length', withFirst(out, (x) => ({ data: new Float32Array(x.data.length + 1).fill(SENTINEL), shape: x.shape })), 'ERR_SHAPE_MISMATCH', /^out\S*: expected data of length \d+/],
      ['not a Float32Array', withFirst(out, (x) => ({ data: new Float64Array(x.data.length).fill(SENTINEL), shape: x.shape })), 'ERR_INVALID_ARGUMENT', /^out\S*\.data: expected a Float32Array, got a Float64Array/],
      ['a prediction tensor itself', withFirst(out, () => first), 'ERR_INVALID_ARGUMENT', /^out for \S+: expected a buffer of its own, got one that shares memory with \S+/],
      ['no options object', 'out', 'ERR_INVALID_ARGUMENT', /^options: expected an object \{ out\? \}, got the string/],
    ];
    const fewer = withoutOne(out);
    if (fewer !== undefined) {
      bad.push(['one tensor too few', fewer, 'ERR_SHAPE_MISMATCH', /^out\S*: expected \d+ entries \(as many as in preds\), got \d+/]);
      bad.push(['out tensors that overlap', packedOut(out, -1), 'ERR_INVALID_ARGUMENT', /^out for \S+: expected a buffer of its own, got one that shares memory with out for \S+/]);
    } else {
      bad.push(['an array for a tensor', [out], 'ERR_INVALID_ARGUMENT', /^out: expected a tensor/]);
    }
    for (const [what, o, code, message] of bad) {
      const options = what === 'no options object' ? o : { out: o };
      await refused(t, what, c, options, [...leaves(o)], code, message);
    }
  });

  test(`${name}: an out that shares bytes with a batch tensor is refused before anything is written`, async (t) => {
    const c = make();
    // The batch's last tensor and the first out tensor in one ArrayBuffer, overlapping by one float.
    const b = c.batch as Record<string, Tensor>;
    const key = Object.keys(b).at(-1)!;
    const first = leaves(c.preds)[0]!;
    const buffer = new ArrayBuffer(4 * (first.data.length + b[key]!.data.length - 1));
    const outFirst = new Float32Array(buffer, 0, first.data.length).fill(SENTINEL);
    const shared = new Float32Array(buffer, 4 * (first.data.length - 1), b[key]!.data.length);
    shared.set(b[key]!.data);
    const batch = { ...b, [key]: { data: shared, shape: [...b[key]!.shape] } };
    const out = withFirst(outLike(c.preds), (x) => ({ data: outFirst, shape: [...x.shape] }));
    await refused(t, 'shared with a batch tensor', { ...c, batch }, { out }, leaves(out), 'ERR_INVALID_ARGUMENT', new RegExp(`shares memory with batch\\.${key}`));
  });
}

/** `options` is refused by both forms with `code` and `message`; neither `out` nor any input changed. */
async function refused(t: ExecutionContext, what: string, c: Setup, options: unknown, out: Tensor[], code: ErrorCode, message: RegExp): Promise<void> {
  const inputs = [...leaves(c.preds), ...leaves(c.batch)];
  const before = snapshot([...inputs, ...out]);
  const check = (err: unknown, form: string): void => {
    const e = err as Error & { code?: unknown };
    t.true(e instanceof Error, `${what} (${form}): an Error`);
    t.is(e.code, code, `${what} (${form}): code for ${e.message}`);
    t.regex(e.message, message, `${what} (${form})`);
    t.true(unchanged([...inputs, ...out], before), `${what} (${form}): out and inputs unchanged`);
  };
  check(t.throws(() => c.loss.valueAndGrad(c.preds, c.batch, options as { out: unknown })), 'sync');
  check(await t.throwsAsync(() => c.loss.valueAndGradAsync(c.preds, c.batch, options as { out: unknown })), 'async');
}

test('v8ClassificationLoss: an out that is its prediction tensor or a slice of the labels is refused', async (t) => {
  const c = clsCase({ B: 4, nc: 4 });
  const loss = asOut(new v8ClassificationLoss());
  // cls [B] and logits [B, nc]: a view over the labels' buffer extended past them.
  const buffer = new ArrayBuffer(4 * 20);
  const cls = new Float32Array(buffer, 0, 4);
  cls.set(c.batch.cls.data);
  const setup = { loss, preds: c.preds, batch: { cls: { data: cls, shape: [4] } } };
  const out = { data: new Float32Array(buffer, 4 * 2, 16).fill(SENTINEL), shape: [4, 4] };
  await refused(t, 'over the labels', setup, { out }, [out], 'ERR_INVALID_ARGUMENT', /^out for preds: expected a buffer of its own, got one that shares memory with batch\.cls/);
});

test('the typed API: valueAndGrad(p, b, { out }) returns the type of out', async (t) => {
  interface Tagged extends Tensor {
    tag: string;
  }
  const c = makeCase();
  const det = new v8DetectionLoss(c.model);
  const out: Tagged[] = c.preds.map((p, i) => ({ data: new Float32Array(p.data.length), shape: [...p.shape], tag: `level ${i}` }));
  // Compiles only if `grads` has the type of `out` (a fresh result's grads are plain Tensor[]).
  const tags: string[] = det.valueAndGrad(c.preds, c.batch, { out }).grads.map((g) => g.tag);
  t.deepEqual(tags, ['level 0', 'level 1', 'level 2']);
  const s = segCase();
  const seg = new v8SegmentationLoss(s.model);
  const segOut = outLike(s.preds) as SegmentationPreds;
  const r = await seg.valueAndGradAsync(s.preds, s.batch, { out: segOut });
  const proto: Tensor = r.grads[2];
  t.is(proto, segOut[2]);
});
