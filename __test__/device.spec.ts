/**
 * Device selection of the losses with a CUDA backend (v8DetectionLoss, E2EDetectLoss, TVPDetectLoss): the default
 * 'auto' gives the results of 'cpu' in every form (bit for bit where it resolves to the CPU, as on a machine
 * without a usable GPU; within the fixture tolerance where it runs on CUDA), and a configuration beyond the CUDA
 * backend's limits runs on the CPU under 'auto' but is refused under 'cuda'.
 */
import test from 'ava';
import { E2EDetectLoss, TVPDetectLoss, v8DetectionLoss, type ValueAndGrad } from 'yolo-loss';

import { autoBackend } from './helpers/devices.js';
import { closeness, leaves, sameBits } from './helpers/fixtures.js';
import { makeCase } from './helpers/synthetic.js';
import { e2eCase, tvpCase, type AnyLoss } from './helpers/tasks.js';

interface DeviceCase {
  name: string;
  make(options?: object): AnyLoss & { device: string };
  preds: unknown;
  batch: unknown;
}

function cases(): DeviceCase[] {
  const o = { B: 2, h: 64, w: 64, nc: 3, perImage: 3 };
  const d = makeCase({ ...o, seed: 11 });
  const e = e2eCase({ ...o, seed: 13 });
  const p = tvpCase({ ...o, nc: 3, vnc: 2, seed: 17 });
  return [
    { name: 'v8DetectionLoss', make: (opt) => new v8DetectionLoss(d.model, 10, opt), preds: d.preds, batch: d.batch },
    { name: 'E2EDetectLoss', make: (opt) => new E2EDetectLoss(e.model, opt), preds: e.preds, batch: e.batch },
    { name: 'TVPDetectLoss', make: (opt) => new TVPDetectLoss(p.model, opt), preds: p.preds, batch: p.batch },
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
    t.is(auto.device, autoBackend(c.name));
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

test("v8DetectionLoss: a tal_topk beyond the CUDA backend's 32 runs on the CPU under 'auto', is refused under 'cuda'", (t) => {
  const m = makeCase().model;
  t.is(new v8DetectionLoss(m, 33).device, 'cpu');
  t.is(new v8DetectionLoss(m, 32).device, autoBackend());
  const err = t.throws(() => new v8DetectionLoss(m, 33, { device: 'cuda' }), { instanceOf: Error });
  t.is((err as Error & { code?: unknown }).code, 'ERR_INVALID_ARGUMENT');
  t.regex(err?.message ?? '', /tal_topk: the CUDA backend supports at most 32, got 33/);
});
