/**
 * A TypeScript user's code against the installed package's types (scripts/test-package.sh compiles it with `tsc
 * --strict`, declaration files checked too): the public names, option and result types resolve, nothing is `any`.
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */
import { cudaAvailability, isYoloLossError, v8DetectionLoss, v8PoseLoss, type DetectionBatch, type Tensor } from 'yolo-loss';

const t = (shape: number[]): Tensor => ({ data: new Float32Array(shape.reduce((a, b) => a * b, 1)), shape });
const criterion = new v8DetectionLoss({ nc: 2, stride: [8, 16, 32] }, 10, { device: 'cpu' });
const batch: DetectionBatch = { batch_idx: t([0]), cls: t([0, 1]), bboxes: t([0, 4]) };
const result = criterion.valueAndGrad([t([1, 66, 8, 8]), t([1, 66, 4, 4]), t([1, 66, 2, 2])], batch);
const firstLevel: Tensor | undefined = result.grads[0];
const items: Float32Array = result.lossItems;
const pose = new v8PoseLoss({ nc: 1, stride: [8, 16, 32], kpt_shape: [17, 3] }, { device: 'auto' });
const cuda: boolean = cudaAvailability().available;
// @ts-expect-error: the device is one of 'cpu' | 'cuda' | 'cuda:N' | 'auto'
new v8DetectionLoss({ nc: 2, stride: [8] }, 10, { device: 'gpu' });
try {
  criterion.call([], batch);
} catch (e) {
  if (isYoloLossError(e)) console.log(e.code);
}
console.log(firstLevel?.shape, items.length, pose.device, cuda);
