/**
 * v8DetectionLoss.
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */

import type * as Native from '../native/binding';
import {
  callNative,
  checkBatchSize,
  checkDevice,
  checkModel,
  checkPositiveInt,
  checkScale,
  checkTensor,
  native,
  nativeConfig,
  type CheckedModel,
  type DetectionBatch,
  type ModelInfo,
  type Options,
  type Tensor,
  type ValueAndGrad,
} from './common';
import { DetectionFamilyLoss, prepareLevels, type Prepared } from './tasks';

/** `valueAndGrad`'s result: `grads[i]` is d sum(loss) / d preds[i], shaped like `preds[i]`. */
export type DetectionValueAndGrad = ValueAndGrad<Tensor[]>;

/**
 * `v8DetectionLoss` of Ultralytics (docs/spec.md §9): CIoU box loss, BCE classification loss and DFL, with the
 * task-aligned assigner. `call` mirrors `__call__`: `[loss, lossItems]`, `loss = B · [box·g_box, cls·g_cls,
 * dfl·g_dfl]` (what the trainer sums and back-propagates), `lossItems` the same without the ×B; `valueAndGrad` adds
 * the gradient of `sum(loss)` with respect to every prediction tensor (the methods of {@link TaskLoss}).
 */
export class v8DetectionLoss extends DetectionFamilyLoss<Tensor[], DetectionBatch> {
  readonly tal_topk: number;

  readonly #native: Native.NativeDetectionLoss;

  /**
   * @param model what Ultralytics reads from the model: `nc`, `stride`, `reg_max` (default 16), `args`.
   * @param tal_topk top-k of the task-aligned assigner (default 10).
   * @param options `device`: 'cpu' | 'cuda' | 'cuda:N' | 'auto' (default 'auto': where CUDA is usable, the faster of it and the CPU for each call's shapes, else the CPU; see {@link Options}).
   */
  constructor(model: ModelInfo, tal_topk = 10, options?: Options) {
    const [nativeLoss, m, topk] = detectionNative(model, tal_topk, options);
    super(nativeLoss, m);
    this.tal_topk = topk;
    this.#native = nativeLoss;
  }

  /**
   * @param preds one tensor per level, `[B, 4*reg_max + nc, H_l, W_l]`.
   * @param batch `{ batch_idx [N], cls [N,1], bboxes [N,4] }` (normalized cx, cy, w, h).
   */
  protected prepare(preds: Tensor[], batch: DetectionBatch): Prepared {
    return prepareLevels(preds, batch);
  }

  /**
   * `bbox_decode(anchor_points, pred_dist)`: expected distances (softmax over the `reg_max` bins when DFL is on)
   * turned into xyxy boxes around the anchors, in grid units.
   * @param anchorPoints `[A, 2]` anchor centres (grid units of their level).
   * @param predDist `[B, A, 4*reg_max]` box-distribution logits, side-major.
   * @returns `[B, A, 4]`.
   */
  bboxDecode(anchorPoints: Tensor, predDist: Tensor): Tensor {
    const a = checkTensor('anchorPoints', anchorPoints);
    const p = checkTensor('predDist', predDist);
    return callNative(() => this.#native.bboxDecode(a, p));
  }

  /**
   * `preprocess(targets, batch_size, scale_tensor)`: labels `[N, 6]` = (batch_idx, cls, cx, cy, w, h) grouped per
   * image into `[B, M, 5]` = (cls, x1, y1, x2, y2) scaled by `scaleTensor` (W, H, W, H), zero padded.
   */
  preprocess(targets: Tensor, batchSize: number, scaleTensor: Tensor | number[] | Float32Array): Tensor {
    const t = checkTensor('targets', targets);
    const b = checkBatchSize(batchSize);
    const scale = checkScale(scaleTensor);
    return callNative(() => native().preprocess(t, b, scale));
  }
}

/** The checked `model` and `tal_topk` and the native half, in the order of the checks (`super` must come first). */
function detectionNative(model: unknown, tal_topk: unknown, options: unknown): [Native.NativeDetectionLoss, CheckedModel, number] {
  const m = checkModel(model);
  const topk = checkPositiveInt('tal_topk', tal_topk);
  const device = checkDevice(options);
  const N = native();
  return [callNative(() => new N.NativeDetectionLoss(nativeConfig(m, topk, device))), m, topk];
}
