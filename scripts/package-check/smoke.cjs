/**
 * The installed package through `require` (CommonJS): every task loss against its fixture, `yolo-loss/tfjs` on the
 * tfjs cpu backend, and what `cudaAvailability()` says. Run by scripts/test-package.sh inside an empty project where
 * `yolo-loss` was installed from its tarballs or a registry.
 *
 *     node smoke.cjs FIXTURE_DIR PLATFORM       # PLATFORM: napi's name, e.g. linux-x64-gnu
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */
'use strict';

const path = require('node:path');

const { closeness, leaves, readSafetensors, reporter } = require('./fixtures.cjs');
const { checkEveryTask } = require('./tasks.cjs');

async function main() {
  const [fixtureDir, platform] = process.argv.slice(2);
  const report = reporter();
  const yl = require('yolo-loss');

  // No binary in the main package: the addon must have come from the platform package.
  const main = path.dirname(require.resolve('yolo-loss/package.json'));
  const platformPkg = require.resolve(`yolo-loss-${platform}/package.json`, { paths: [main] });
  report.check(Boolean(platformPkg), `require: the platform package resolves from yolo-loss (${path.dirname(platformPkg)})`);

  checkEveryTask(yl, fixtureDir, report, 'require');

  const cuda = yl.cudaAvailability();
  console.log(`cudaAvailability(): ${JSON.stringify(cuda)}`);
  report.check(typeof cuda.available === 'boolean', 'cudaAvailability() answers');
  if (platform.startsWith('linux-')) {
    // The Linux packages carry the kernels: SASS from Turing (sm_75) on, whatever GPU (if any) this machine has.
    const sass = cuda.sassArchitectures;
    report.check(sass.includes('sm_75') && sass.includes('sm_90'), `the addon carries SASS for sm_75 … (${sass.join(' ')})`);
  }

  // yolo-loss/tfjs: the op's value is sum(loss) and its gradient valueAndGrad's.
  const tf = require('@tensorflow/tfjs-core');
  require('@tensorflow/tfjs-backend-cpu');
  tf.env().set('PROD', true);
  await tf.setBackend('cpu');
  const { tfjsLoss } = require('yolo-loss/tfjs');
  const fx = readSafetensors(path.join(fixtureDir, 'det_realistic.safetensors'));
  const c = JSON.parse(fx.metadata.config);
  const criterion = new yl.v8DetectionLoss({ nc: c.nc, reg_max: c.reg_max, stride: c.stride, args: c.hyp }, c.tal_topk);
  const levels = [0, 1, 2].map((i) => fx.tensors.get(`preds.${i}`));
  const batch = Object.fromEntries(['batch_idx', 'cls', 'bboxes'].map((k) => [k, fx.tensors.get(`batch.${k}`)]));
  const plain = levels.map((t) => ({ data: t.data, shape: t.shape }));
  const want = criterion.valueAndGrad(plain, batch);
  const op = tfjsLoss(criterion);
  const { value, grads } = tf.valueAndGrads((...xs) => op(xs, batch))(levels.map((t) => tf.tensor(t.data, t.shape)));
  const sum = want.loss.reduce((a, b) => a + b, 0);
  report.check(Math.abs(value.dataSync()[0] - sum) <= 1e-5 * Math.abs(sum), `yolo-loss/tfjs: value ${value.dataSync()[0]} = sum(loss) ${sum}`);
  const bad = grads.map((g, i) => closeness(g.dataSync(), leaves(want.grads)[i])).find(Boolean);
  report.check(!bad, `yolo-loss/tfjs: gradients equal valueAndGrad's${bad ? `: ${bad}` : ''}`);

  console.log(`smoke.cjs: ${report.passed} passed, ${report.failures} failed`);
  process.exitCode = report.failures === 0 ? 0 : 1;
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
