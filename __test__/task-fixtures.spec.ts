/**
 * Parity with the reference (ultralytics 8.3.117 under PyTorch, fp32) for every task loss beyond detection:
 * v8SegmentationLoss, v8PoseLoss, v8OBBLoss, v8ClassificationLoss, E2EDetectLoss, TVPDetectLoss, TVPSegmentLoss.
 * Every fixture runs through the built package: `call`, `valueAndGrad` (loss, loss items and every gradient tensor,
 * in the structure of `preds`) and the async forms; the inputs must come back unmodified.
 * Tolerance: see `closeness` (relative 1e-4 with an absolute floor of 1e-5 of the tensor's largest magnitude).
 */
import test from 'ava';
import {
  E2EDetectLoss,
  TVPDetectLoss,
  TVPSegmentLoss,
  v8ClassificationLoss,
  v8OBBLoss,
  v8PoseLoss,
  v8SegmentationLoss,
  type ModelInfo,
  type Tensor,
} from 'yolo-loss';

import {
  asyncMatchesSync,
  callMatches,
  closeness,
  detectionBatch,
  f32,
  fixturesToCheck,
  indexed,
  leaves,
  snapshot,
  unchanged,
  type Fixture,
} from './helpers/fixtures.js';
import type { AnyLoss } from './helpers/tasks.js';

interface Setup {
  loss: AnyLoss;
  preds: unknown;
  batch: unknown;
  /** The reference gradients, in the structure of `preds`. */
  want: unknown;
  /** Every input tensor (for the unchanged check). */
  inputs: Tensor[];
}

interface Kind {
  kind: string;
  setup(fx: Fixture): Setup;
}

function modelOf(fx: Fixture): ModelInfo {
  const c = fx.config as { nc: number; reg_max?: number; stride: number[]; hyp?: Record<string, number | boolean> };
  return { nc: c.nc, reg_max: c.reg_max ?? 16, stride: c.stride, args: { ...(c.hyp ?? {}) } };
}

function segSetup(fx: Fixture, make: (m: ModelInfo) => AnyLoss): Setup {
  const preds = [indexed(fx, 'preds'), f32(fx, 'preds.pred_masks'), f32(fx, 'preds.proto')];
  const batch = { ...detectionBatch(fx), masks: f32(fx, 'batch.masks') };
  const want = [indexed(fx, 'grad.preds'), f32(fx, 'grad.pred_masks'), f32(fx, 'grad.proto')];
  return { loss: make(modelOf(fx)), preds, batch, want, inputs: [...leaves(preds), ...leaves(batch)] };
}

const KINDS: Kind[] = [
  {
    kind: 'v8SegmentationLoss',
    setup: (fx) => segSetup(fx, (m) => new v8SegmentationLoss(m, { device: 'cpu' }) as unknown as AnyLoss),
  },
  {
    kind: 'TVPSegmentLoss',
    setup: (fx) => segSetup(fx, (m) => new TVPSegmentLoss(m) as unknown as AnyLoss),
  },
  {
    kind: 'v8PoseLoss',
    setup(fx) {
      const c = fx.config as { kpt_shape: [number, number]; kpt_shape_is_list?: boolean };
      const loss = new v8PoseLoss({ ...modelOf(fx), kpt_shape: c.kpt_shape }, { oksSigmas: c.kpt_shape_is_list ?? true });
      const preds = [indexed(fx, 'preds'), f32(fx, 'preds.kpts')];
      const batch = { ...detectionBatch(fx), keypoints: f32(fx, 'batch.keypoints') };
      const want = [indexed(fx, 'grad.preds'), f32(fx, 'grad.kpts')];
      return { loss: loss as unknown as AnyLoss, preds, batch, want, inputs: [...leaves(preds), ...leaves(batch)] };
    },
  },
  {
    kind: 'v8OBBLoss',
    setup(fx) {
      const preds = [indexed(fx, 'preds'), f32(fx, 'preds.angle')];
      const batch = detectionBatch(fx);
      const want = [indexed(fx, 'grad.preds'), f32(fx, 'grad.angle')];
      return { loss: new v8OBBLoss(modelOf(fx)) as unknown as AnyLoss, preds, batch, want, inputs: [...leaves(preds), ...leaves(batch)] };
    },
  },
  {
    kind: 'v8ClassificationLoss',
    setup(fx) {
      const preds = f32(fx, 'preds.logits');
      const batch = { cls: f32(fx, 'batch.cls') };
      return { loss: new v8ClassificationLoss() as unknown as AnyLoss, preds, batch, want: f32(fx, 'grad.logits'), inputs: [preds, batch.cls] };
    },
  },
  {
    kind: 'E2EDetectLoss',
    setup(fx) {
      const preds = { one2many: indexed(fx, 'preds.one2many'), one2one: indexed(fx, 'preds.one2one') };
      const batch = detectionBatch(fx);
      const want = { one2many: indexed(fx, 'grad.one2many'), one2one: indexed(fx, 'grad.one2one') };
      return { loss: new E2EDetectLoss(modelOf(fx)) as unknown as AnyLoss, preds, batch, want, inputs: [...leaves(preds), ...leaves(batch)] };
    },
  },
  {
    kind: 'TVPDetectLoss',
    setup(fx) {
      const preds = indexed(fx, 'preds');
      const batch = detectionBatch(fx);
      return { loss: new TVPDetectLoss(modelOf(fx)) as unknown as AnyLoss, preds, batch, want: indexed(fx, 'grad.preds'), inputs: [...preds, ...leaves(batch)] };
    },
  },
];

/** The same nesting with tensors replaced by their shapes. */
function structure(x: unknown): unknown {
  if (Array.isArray(x)) return x.map(structure);
  if (typeof x === 'object' && x !== null) {
    if ((x as Tensor).data instanceof Float32Array) return (x as Tensor).shape;
    return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, structure(v)]));
  }
  return x;
}

for (const { kind, setup } of KINDS) {
  const fixtures = fixturesToCheck(kind);

  for (const fx of fixtures) {
    const wantLoss = f32(fx, 'out.loss');
    const wantItems = f32(fx, 'out.loss_items');

    test(`${kind} ${fx.name}: call`, (t) => {
      const s = setup(fx);
      callMatches(t, s.loss, s.preds, s.batch, s.inputs, wantLoss, wantItems);
    });

    test(`${kind} ${fx.name}: valueAndGrad`, (t) => {
      const s = setup(fx);
      const copies = snapshot(s.inputs);
      const r = s.loss.valueAndGrad(s.preds as never, s.batch as never);
      t.is(closeness(r.loss, wantLoss.data), null, 'loss');
      t.is(closeness(r.lossItems, wantItems.data), null, 'lossItems');
      // grads has the structure of preds, every tensor shaped like its prediction tensor.
      t.deepEqual(structure(r.grads), structure(s.preds), 'grads shaped like preds');
      t.deepEqual(structure(s.want), structure(s.preds), 'fixture has one gradient per prediction tensor');
      const got = leaves(r.grads);
      const want = leaves(s.want);
      const preds = leaves(s.preds);
      got.forEach((g, i) => {
        t.true(g.data.buffer !== preds[i]!.data.buffer, `gradient ${i} is a fresh array`);
        t.is(closeness(g.data, want[i]!.data), null, `gradient ${i} (shape [${g.shape.join(', ')}])`);
      });
      t.true(unchanged(s.inputs, copies), 'inputs modified by valueAndGrad');
    });

    test(`${kind} ${fx.name}: callAsync and valueAndGradAsync agree with the sync forms`, async (t) => {
      const s = setup(fx);
      await asyncMatchesSync(t, s.loss, s.preds, s.batch, s.inputs);
    });
  }
}
