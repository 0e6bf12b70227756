/**
 * Device selection of the losses with a CUDA backend (`CUDA_LOSSES` of helpers/devices.ts): the default
 * 'auto' gives the results of 'cpu' in every form (bit for bit where it resolves to the CPU, as on a machine
 * without a usable GPU; within the fixture tolerance where it runs on CUDA), and a configuration beyond the CUDA
 * backend's limits runs on the CPU under 'auto' but is refused under 'cuda'. For every task loss: the device
 * strings ('cuda:N', malformed ones, a GPU that is not there), and what `cudaAvailability()` reports. What `device`,
 * `lastDevice` and `deviceFor` say: under 'auto' without a usable GPU, the CPU from the start; with one, 'auto', the
 * probe's alternation over a shape's first six calls, then one backend for that shape.
 */
import test from 'ava';
import {
  E2EDetectLoss,
  TVPDetectLoss,
  TVPSegmentLoss,
  cudaAvailability,
  v8ClassificationLoss,
  v8DetectionLoss,
  v8OBBLoss,
  v8PoseLoss,
  v8SegmentationLoss,
  type ModelInfo,
  type ValueAndGrad,
} from 'yolo-loss';

import { CUDA_LOSSES, autoBackend } from './helpers/devices.js';
import { closeness, leaves, sameBits } from './helpers/fixtures.js';
import { makeCase } from './helpers/synthetic.js';
import { clsCase, e2eCase, obbCase, poseCase, segCase, tvpCase, tvpSegCase, type AnyLoss } from './helpers/tasks.js';

/** What every loss says about where it runs. */
interface Placement {
  device: string;
  lastDevice: string | undefined;
  deviceFor(preds: unknown, batch: unknown): string | undefined;
}

interface DeviceCase {
  name: string;
  make(options?: object): AnyLoss & Placement;
  preds: unknown;
  batch: unknown;
}

function cases(): DeviceCase[] {
  const o = { B: 2, h: 64, w: 64, nc: 3, perImage: 3 };
  const d = makeCase({ ...o, seed: 11 });
  const e = e2eCase({ ...o, seed: 13 });
  const p = tvpCase({ ...o, nc: 3, vnc: 2, seed: 17 });
  const k = clsCase({ B: 6, nc: 9, seed: 19 });
  const q = poseCase({ ...o, K: 17, D: 3, seed: 23 });
  const s = segCase({ ...o, seed: 19 });
  const sn = segCase({ ...o, overlap: false, seed: 23 });
  const ps = tvpSegCase({ ...o, nc: 3, vnc: 2, seed: 29 });
  const r = obbCase({ ...o, seed: 31 });
  return [
    { name: 'v8DetectionLoss', make: (opt) => new v8DetectionLoss(d.model, 10, opt), preds: d.preds, batch: d.batch },
    { name: 'E2EDetectLoss', make: (opt) => new E2EDetectLoss(e.model, opt), preds: e.preds, batch: e.batch },
    { name: 'TVPDetectLoss', make: (opt) => new TVPDetectLoss(p.model, opt), preds: p.preds, batch: p.batch },
    { name: 'v8PoseLoss', make: (opt) => new v8PoseLoss(q.model, opt), preds: q.preds, batch: q.batch },
    { name: 'v8ClassificationLoss', make: (opt) => new v8ClassificationLoss(opt), preds: k.preds, batch: k.batch },
    { name: 'v8SegmentationLoss', make: (opt) => new v8SegmentationLoss(s.model, opt), preds: s.preds, batch: s.batch },
    {
      name: 'v8SegmentationLoss (overlap_mask false)',
      make: (opt) => new v8SegmentationLoss(sn.model, opt),
      preds: sn.preds,
      batch: sn.batch,
    },
    { name: 'TVPSegmentLoss', make: (opt) => new TVPSegmentLoss(ps.model, opt), preds: ps.preds, batch: ps.batch },
    { name: 'v8OBBLoss', make: (opt) => new v8OBBLoss(r.model, opt), preds: r.preds, batch: r.batch },
  ];
}

/** The loss, the items and every gradient, in order. */
function arrays(r: ValueAndGrad<unknown>): Float32Array[] {
  return [r.loss, r.lossItems, ...leaves(r.grads).map((g) => g.data)];
}

for (const c of cases()) {
  test(`${c.name}: 'auto' gives the results of 'cpu' (call, valueAndGrad, async forms)`, async (t) => {
    const cpu = c.make({ device: 'cpu' });
    const auto = c.make();
    t.is(cpu.device, 'cpu');
    t.is(auto.device, autoBackend(c.name.split(' ')[0]));
    const want = cpu.valueAndGrad(c.preds as never, c.batch as never);
    const [wantLoss, wantItems] = cpu.call(c.preds as never, c.batch as never);
    const got = [
      auto.valueAndGrad(c.preds as never, c.batch as never),
      await auto.valueAndGradAsync(c.preds as never, c.batch as never),
    ];
    const calls = [auto.call(c.preds as never, c.batch as never), await auto.callAsync(c.preds as never, c.batch as never)];
    const same = (a: Float32Array, b: Float32Array, what: string) => {
      if (auto.device === 'cpu') t.true(sameBits(a, b), `${what}: bit for bit`);
      else t.is(closeness(a, b), null, what);
    };
    for (const g of got) {
      const [x, y] = [arrays(g), arrays(want)];
      t.is(x.length, y.length);
      x.forEach((a, i) => same(a, y[i]!, `array ${i}`));
    }
    for (const [l, items] of calls) {
      same(l, wantLoss, 'call loss');
      same(items, wantItems, 'call lossItems');
    }
  });
}

for (const c of cases()) {
  test(`${c.name}: device, lastDevice and deviceFor under 'cpu' and 'auto'`, async (t) => {
    const cpu = c.make({ device: 'cpu' });
    t.deepEqual([cpu.device, cpu.lastDevice, cpu.deviceFor(c.preds, c.batch)], ['cpu', 'cpu', 'cpu'], "'cpu', before a call");
    const auto = c.make();
    if (autoBackend(c.name.split(' ')[0]) === 'cpu') {
      // No usable GPU: the CPU alone, known before any call (nothing is timed).
      t.deepEqual([auto.device, auto.lastDevice, auto.deviceFor(c.preds, c.batch)], ['cpu', 'cpu', 'cpu']);
      auto.call(c.preds as never, c.batch as never);
      t.is(auto.lastDevice, 'cpu');
      return;
    }
    t.deepEqual([auto.device, auto.lastDevice], ['auto', undefined], "'auto' with a GPU, before a call");
    const ran: (string | undefined)[] = [];
    for (let i = 0; i < 6; i++) {
      t.is(auto.deviceFor(c.preds, c.batch), undefined, `call ${i}: the shapes are still being timed`);
      if (i % 2 === 0) auto.call(c.preds as never, c.batch as never);
      else await auto.valueAndGradAsync(c.preds as never, c.batch as never);
      ran.push(auto.lastDevice);
    }
    t.deepEqual(ran, ['cpu', 'cuda', 'cpu', 'cuda', 'cpu', 'cuda'], 'the probe alternates, three calls each');
    const chosen = auto.deviceFor(c.preds, c.batch);
    t.true(chosen === 'cpu' || chosen === 'cuda', `chosen: ${chosen}`);
    t.log(`${c.name}: 'auto' chose ${chosen}`);
    for (let i = 0; i < 2; i++) {
      auto.valueAndGrad(c.preds as never, c.batch as never);
      t.is(auto.lastDevice, chosen, 'every later call of these shapes');
    }
  });
}

test('deviceFor refuses tensors whose data does not fit their shape with the error of call', (t) => {
  const c = makeCase();
  const loss = new v8DetectionLoss(c.model);
  const preds = c.preds.map((p, i) => (i === 0 ? { data: p.data.subarray(1), shape: p.shape } : p));
  const viaCall = t.throws(() => loss.call(preds, c.batch)) as Error & { code?: string };
  const viaDeviceFor = t.throws(() => loss.deviceFor(preds, c.batch)) as Error & { code?: string };
  t.is(viaDeviceFor.code, 'ERR_SHAPE_MISMATCH');
  t.deepEqual([viaDeviceFor.code, viaDeviceFor.message], [viaCall.code, viaCall.message]);
});

test("v8DetectionLoss: a tal_topk beyond the CUDA backend's 32 runs on the CPU under 'auto', is refused under 'cuda'", (t) => {
  const m = makeCase().model;
  t.is(new v8DetectionLoss(m, 33).device, 'cpu');
  t.is(new v8DetectionLoss(m, 32).device, autoBackend());
  const err = t.throws(() => new v8DetectionLoss(m, 33, { device: 'cuda' }), { instanceOf: Error });
  t.is((err as Error & { code?: unknown }).code, 'ERR_INVALID_ARGUMENT');
  t.regex(err?.message ?? '', /tal_topk: the CUDA backend supports at most 32, got 33/);
});

/** Every task loss's constructor, with a model that suits it. */
const MAKERS: [string, (options?: object) => { device: string }][] = (() => {
  const m: ModelInfo = { nc: 2, stride: [8, 16, 32], kpt_shape: [5, 3] };
  return [
    ['v8DetectionLoss', (o) => new v8DetectionLoss(m, 10, o)],
    ['v8SegmentationLoss', (o) => new v8SegmentationLoss(m, o)],
    ['v8PoseLoss', (o) => new v8PoseLoss(m, o)],
    ['v8OBBLoss', (o) => new v8OBBLoss(m, o)],
    ['v8ClassificationLoss', (o) => new v8ClassificationLoss(o)],
    ['E2EDetectLoss', (o) => new E2EDetectLoss(m, o)],
    ['TVPDetectLoss', (o) => new TVPDetectLoss(m, o)],
    ['TVPSegmentLoss', (o) => new TVPSegmentLoss(m, o)],
  ];
})();

function codeOf(t: { throws: (f: () => unknown) => unknown }, f: () => unknown): { code: unknown; message: string } {
  const err = t.throws(f) as (Error & { code?: unknown }) | undefined;
  return { code: err?.code, message: err?.message ?? '' };
}

test("every task loss: a malformed device string is ERR_INVALID_ARGUMENT naming options.device and what it got", (t) => {
  const malformed = ['cuda:', 'cuda:-1', 'cuda:1x', 'gpu', 'CUDA', 'cuda:1.5', ' cuda', 'cuda:0x1', 'cpu:0', ''];
  for (const [name, make] of MAKERS) {
    for (const bad of [...malformed, 'cuda:99999999999999999999999']) {
      const e = codeOf(t, () => make({ device: bad }));
      t.is(e.code, 'ERR_INVALID_ARGUMENT', `${name} with '${bad}'`);
      const expected = "options.device: expected 'cpu', 'cuda', 'cuda:N' (N a GPU ordinal: 0, 1, ...) or 'auto', got ";
      t.true(e.message.startsWith(expected) && e.message.includes(bad), `${name} with '${bad}': ${e.message}`);
    }
    t.is(codeOf(t, () => make({ device: 1 })).code, 'ERR_INVALID_ARGUMENT', `${name} with a number`);
  }
});

test("every task loss: 'cuda:N' of a GPU that is not there is ERR_CUDA_UNAVAILABLE, saying how many there are", (t) => {
  const probe = cudaAvailability();
  const missing = `cuda:${probe.devices.length + 7}`;
  for (const [name, make] of MAKERS) {
    const e = codeOf(t, () => make({ device: missing }));
    t.is(e.code, 'ERR_CUDA_UNAVAILABLE', `${name} with '${missing}'`);
    t.regex(e.message, /^options\.device: /, name);
    t.true(CUDA_LOSSES.includes(name), `${name} has a CUDA backend`);
    if (probe.devices.length > 0) {
      t.true(e.message.includes(`${missing} does not exist: ${probe.devices.length} CUDA device`), e.message);
    } else {
      // No driver or no GPU: that is the reason, whichever ordinal was asked for.
      t.true(probe.reason !== undefined && e.message.endsWith(probe.reason), `${e.message} / ${probe.reason}`);
    }
  }
});

test("every loss with a CUDA backend: 'cuda' runs on CUDA, or is ERR_CUDA_UNAVAILABLE with the driver's reason", (t) => {
  const probe = cudaAvailability();
  for (const [name, make] of MAKERS.filter(([n]) => CUDA_LOSSES.includes(n))) {
    if (probe.available) {
      t.is(make({ device: 'cuda' }).device, 'cuda', name);
    } else {
      const e = codeOf(t, () => make({ device: 'cuda' }));
      t.is(e.code, 'ERR_CUDA_UNAVAILABLE', name);
      t.true(probe.reason !== undefined && e.message.endsWith(probe.reason), `${name}: ${e.message} / ${probe.reason}`);
      t.false(e.message.includes('no CUDA backend'), `${name}: ${e.message}`);
    }
  }
  t.deepEqual(
    MAKERS.map(([n]) => n).filter((n) => CUDA_LOSSES.includes(n)).sort(),
    [...CUDA_LOSSES].sort(),
    'every loss of CUDA_LOSSES is tested',
  );
});

test("'cuda' and 'cuda:0' are the same device", (t) => {
  for (const [name, make] of MAKERS) {
    const run = (device: string) => {
      try {
        return make({ device }).device;
      } catch (e) {
        return (e as Error & { code?: string }).code + ': ' + (e as Error).message.replace(/'cuda(:0)?'/, "'cuda'");
      }
    };
    t.is(run('cuda:0'), run('cuda'), name);
  }
});

test('cudaAvailability: cuda:0, every device, the SASS architectures of the build', (t) => {
  const a = cudaAvailability();
  t.is(typeof a.available, 'boolean');
  t.true(Array.isArray(a.devices) && Array.isArray(a.sassArchitectures));
  const arch = (s: string) => Number(s.replace(/^(sm|compute)_/, ''));
  for (const s of a.sassArchitectures) t.regex(s, /^sm_\d+$/);
  t.deepEqual([...a.sassArchitectures].sort((x, y) => arch(x) - arch(y)), a.sassArchitectures, 'ascending');
  if (a.sassArchitectures.length > 0) t.is(a.sassArchitectures[0], 'sm_75');
  a.devices.forEach((d, i) => {
    t.is(d.ordinal, i);
    t.regex(d.computeCapability, /^\d+\.\d+$/);
    t.true(d.totalMemoryBytes > 0 && d.name.length > 0);
    t.is(d.usable, d.reason === undefined, `cuda:${i}: usable, or a reason`);
    if (d.usable) t.truthy(d.kernels, `cuda:${i}: a usable device runs some kernels`);
    if (d.kernels?.source === 'sass') t.true(a.sassArchitectures.includes(d.kernels.target), d.kernels.target);
    if (d.kernels?.source === 'ptx') t.is(arch(d.kernels.target), arch(a.sassArchitectures.at(-1) ?? ''));
  });
  if (a.available) {
    t.is(a.deviceName, a.devices[0]?.name);
    t.is(a.computeCapability, a.devices[0]?.computeCapability);
    t.deepEqual(a.kernels, a.devices[0]?.kernels);
  } else {
    t.true((a.reason ?? '').length > 0);
    if (a.devices.length === 0) t.is(a.computeCapability, undefined);
  }
  t.log(JSON.stringify(a));
});
