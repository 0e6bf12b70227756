/**
 * The installed package through `import` (ES modules): named exports resolve, and every task loss matches its
 * fixture. The CommonJS twin, with the tfjs check, is smoke.cjs.
 *
 *     node smoke.mjs FIXTURE_DIR
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */
import { createRequire } from 'node:module';

import * as yl from 'yolo-loss';
import { v8DetectionLoss, cudaAvailability } from 'yolo-loss';
import { tfjsLoss } from 'yolo-loss/tfjs';

const require = createRequire(import.meta.url);
const { reporter } = require('./fixtures.cjs');
const { checkEveryTask } = require('./tasks.cjs');

const report = reporter();
report.check(typeof v8DetectionLoss === 'function' && typeof cudaAvailability === 'function', 'import: named exports of yolo-loss');
report.check(typeof tfjsLoss === 'function', 'import: named export tfjsLoss of yolo-loss/tfjs');
checkEveryTask(yl, process.argv[2], report, 'import');
console.log(`smoke.mjs: ${report.passed} passed, ${report.failures} failed`);
process.exitCode = report.failures === 0 ? 0 : 1;
