/**
 * Parity with the reference (ultralytics 8.3.117 under PyTorch, fp32): every `v8DetectionLoss` fixture of
 * fixtures/data through the built package, `call`, `valueAndGrad` and their async forms.
 * Tolerance: see `closeness` (relative 1e-4 with an absolute floor of 1e-5 of the tensor's largest magnitude).
 */
import test from 'ava';
import { v8DetectionLoss, type Tensor } from 'yolo-loss';

import {
  asyncMatchesSync,
  callMatches,
  closeness,
  detectionArgs,
  detectionBatch,
  f32,
  fixturesToCheck,
  indexed,
  snapshot,
  unchanged,
  type Fixture,
} from './helpers/fixtures.js';

const fixtures = fixturesToCheck('v8DetectionLoss');

function setup(fx: Fixture) {
  const { model, talTopk } = detectionArgs(fx);
  const loss = new v8DetectionLoss(model, talTopk);
  const preds = indexed(fx, 'preds');
  const batch = detectionBatch(fx);
  const inputs: Tensor[] = [...preds, batch.batch_idx, batch.cls, batch.bboxes];
  return { loss, preds, batch, inputs, copies: snapshot(inputs) };
}

for (const fx of fixtures) {
  const wantLoss = f32(fx, 'out.loss');
  const wantItems = f32(fx, 'out.loss_items');
  const wantGrads = indexed(fx, 'grad.preds');

  test(`${fx.name}: call`, (t) => {
    const { loss, preds, batch, inputs } = setup(fx);
    callMatches(t, loss, preds, batch, inputs, wantLoss, wantItems);
  });

  test(`${fx.name}: valueAndGrad`, (t) => {
    const { loss, preds, batch, inputs, copies } = setup(fx);
    const r = loss.valueAndGrad(preds, batch);
    t.is(closeness(r.loss, wantLoss.data), null, 'loss');
    t.is(closeness(r.lossItems, wantItems.data), null, 'lossItems');
    t.is(r.grads.length, preds.length);
    t.is(wantGrads.length, preds.length, 'fixture has one gradient per level');
    r.grads.forEach((g, i) => {
      t.deepEqual(g.shape, preds[i]!.shape, `grads[${i}].shape`);
      t.true(g.data !== preds[i]!.data, `grads[${i}] is a fresh array`);
      t.is(closeness(g.data, wantGrads[i]!.data), null, `grads[${i}]`);
    });
    t.true(unchanged(inputs, copies), 'inputs modified by valueAndGrad');
  });

  test(`${fx.name}: callAsync and valueAndGradAsync agree with the sync forms`, async (t) => {
    const { loss, preds, batch, inputs } = setup(fx);
    await asyncMatchesSync(t, loss, preds, batch, inputs);
  });
}
