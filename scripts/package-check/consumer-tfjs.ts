/**
 * A TypeScript user's tfjs training code against `yolo-loss/tfjs`'s types (compiled by scripts/test-package.sh with
 * skipLibCheck: tfjs-core's own declarations do not compile on their own).
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */
import * as tf from '@tensorflow/tfjs-core';
import { v8DetectionLoss } from 'yolo-loss';
import { tfjsLoss } from 'yolo-loss/tfjs';

const loss = tfjsLoss(new v8DetectionLoss({ nc: 2, stride: [8, 16, 32] }));
const levels = [8, 4, 2].map((s) => tf.zeros([1, 66, s, s]));
const batch = { batch_idx: tf.tensor1d([0]), cls: tf.tensor2d([[1]]), bboxes: tf.tensor2d([[0.5, 0.5, 0.2, 0.2]]) };
const value: tf.Scalar = loss(levels, batch);
console.log(value.shape);
