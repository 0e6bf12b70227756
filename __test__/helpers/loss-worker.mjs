// A worker_threads worker for __test__/async.spec.ts: builds its own loss instances from the cases it is sent,
// evaluates each with valueAndGrad and valueAndGradAsync (`rounds` times), and posts the results back.
// Plain JavaScript on purpose: it loads the built package (dist/) through the package's own name.
// SPDX-License-Identifier: AGPL-3.0-only
import { createRequire } from 'node:module';
import { parentPort, workerData } from 'node:worker_threads';

const require = createRequire(import.meta.url);
const yolo = require('yolo-loss');

/** The loss of a case description: `{ kind, model, options }`. */
function makeLoss(y, { kind, model, options }) {
  switch (kind) {
    case 'v8DetectionLoss':
      return new y.v8DetectionLoss(model, 10, options);
    case 'v8ClassificationLoss':
      return new y.v8ClassificationLoss(options);
    default:
      return new y[kind](model, options);
  }
}

const { cases, rounds } = workerData;
const results = [];
for (let r = 0; r < rounds; r++) {
  for (const c of cases) {
    const loss = makeLoss(yolo, c);
    const sync = loss.valueAndGrad(c.preds, c.batch);
    const async = await loss.valueAndGradAsync(c.preds, c.batch);
    if (r === rounds - 1) results.push({ kind: c.kind, sync, async });
  }
}
parentPort.postMessage({ threadDevice: makeLoss(yolo, cases[0]).device, results });
