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
  type DetectionBatch,
  type Hyp,
  type ModelInfo,
  type Options,
  type Tensor,
  type ValueAndGrad,
} from './common';
import type { GradOptions } from './grads';
import { LossRunner, familyAttributes, prepareLevels, type PinnedMemory } from './tasks';

/** `valueAndGrad`'s result: `grads[i]` is d sum(loss) / d preds[i], shaped like `preds[i]`. */
export interface DetectionValueAndGrad extends ValueAndGrad<Tensor[]> {
  loss: Float32Array;
  lossItems: Float32Array;
  grads: Tensor[];
}

/**
 * `v8DetectionLoss` of Ultralytics (docs/spec.md §9): CIoU box loss, BCE classification loss and DFL, with the
 * task-aligned assigner. `call` mirrors `__call__`; `valueAndGrad` adds the gradient of `sum(loss)` with respect
 * to every prediction tensor.
 */
export class v8DetectionLoss {
  /** Number of classes. */
  readonly nc!: number;
  /** Outputs per anchor: `nc + 4 * reg_max`. */
  readonly no!: number;
  readonly reg_max!: number;
  /** Whether DFL is used (`reg_max > 1`). */
  readonly use_dfl!: boolean;
  readonly stride!: readonly number[];
  readonly hyp!: Readonly<Hyp>;
  readonly tal_topk: number;

  readonly #run: LossRunner<Native.NativeDetectionLoss>;

  /**
   * @param model what Ultralytics reads from the model: `nc`, `stride`, `reg_max` (default 16), `args`.
   * @param tal_topk top-k of the task-aligned assigner (default 10).
   * @param options `device`: 'cpu' | 'cuda' | 'cuda:N' | 'auto' (default 'auto': where CUDA is usable, the faster of it and the CPU for each call's shapes, else the CPU; see {@link Options}).
   */
  constructor(model: ModelInfo, tal_topk = 10, options?: Options) {
    const m = checkModel(model);
    const topk = checkPositiveInt('tal_topk', tal_topk);
    const device = checkDevice(options);
    Object.assign(this, familyAttributes(m));
    this.tal_topk = topk;
    const N = native();
    this.#run = new LossRunner(callNative(() => new N.NativeDetectionLoss(nativeConfig(m, topk, device))));
  }

  /** What runs the calls: 'cpu', 'cuda', or 'auto' (with a usable GPU under `device: 'auto'`: both backends, each
   * call on the faster one for its shapes, see {@link Options}). */
  get device(): 'cpu' | 'cuda' | 'auto' {
    return this.#run.device;
  }

  /** The caller's buffers this instance keeps page-locked for direct GPU copies (CUDA: `out` buffers, and prediction
   * arrays passed again; see docs/api.md). */
  pinnedMemory(): PinnedMemory {
    return this.#run.pinnedMemory();
  }

  /** Unlocks every buffer this instance page-locked (also done when the instance is garbage-collected). Call it
   * before transferring or dropping an `out` buffer or prediction array you will not pass again, to give its pages
   * back at once. */
  releasePinnedMemory(): void {
    this.#run.releasePinnedMemory();
  }

  /** The backend the latest call started on, 'cpu' or 'cuda' (with one backend: that one, calls or not);
   * `undefined` under 'auto' before the first call. */
  get lastDevice(): 'cpu' | 'cuda' | undefined {
    return this.#run.lastDevice;
  }

  /** The backend calls with the shapes of `preds` and `batch` run on, 'cpu' or 'cuda'; `undefined` under 'auto'
   * while those shapes are still being timed (or were not seen yet). Runs nothing: the structure and shapes are
   * checked as in `call`, the contents (label values, finiteness) are not. */
  deviceFor(preds: Tensor[], batch: DetectionBatch): 'cpu' | 'cuda' | undefined {
    return this.#run.deviceFor(prepareLevels(preds, batch));
  }

  /**
   * `__call__(preds, batch)`: `[loss, lossItems]`, `loss = B · [box·g_box, cls·g_cls, dfl·g_dfl]` (what the
   * trainer sums and back-propagates), `lossItems` the same without the ×B.
   * @param preds one tensor per level, `[B, 4*reg_max + nc, H_l, W_l]`.
   * @param batch `{ batch_idx [N], cls [N,1], bboxes [N,4] }` (normalized cx, cy, w, h).
   */
  call(preds: Tensor[], batch: DetectionBatch): [loss: Float32Array, lossItems: Float32Array] {
    return this.#run.call(prepareLevels(preds, batch));
  }

  /** `call` plus the gradient of `sum(loss)` with respect to every tensor of `preds`, shaped like it: fresh arrays,
   * or written into `options.out` (see {@link GradOptions}), which is returned as `grads`. */
  valueAndGrad(preds: Tensor[], batch: DetectionBatch): DetectionValueAndGrad;
  valueAndGrad<O extends Tensor[]>(preds: Tensor[], batch: DetectionBatch, options: { out: O }): ValueAndGrad<O>;
  valueAndGrad(preds: Tensor[], batch: DetectionBatch, options?: GradOptions<Tensor[]>): DetectionValueAndGrad;
  valueAndGrad(preds: Tensor[], batch: DetectionBatch, options?: GradOptions<Tensor[]>): DetectionValueAndGrad {
    return this.#run.valueAndGrad(prepareLevels(preds, batch), options);
  }

  /**
   * `call` on the libuv thread pool. The inputs are copied before this returns, so the caller may reuse its
   * buffers at once. Bad input rejects with the same errors `call` throws.
   */
  async callAsync(preds: Tensor[], batch: DetectionBatch): Promise<[loss: Float32Array, lossItems: Float32Array]> {
    return this.#run.callAsync(prepareLevels(preds, batch));
  }

  /** `valueAndGrad` on the libuv thread pool (inputs copied before this returns; `options.out` is written while the
   * promise is pending and must be left alone until it settles). */
  valueAndGradAsync(preds: Tensor[], batch: DetectionBatch): Promise<DetectionValueAndGrad>;
  valueAndGradAsync<O extends Tensor[]>(preds: Tensor[], batch: DetectionBatch, options: { out: O }): Promise<ValueAndGrad<O>>;
  valueAndGradAsync(preds: Tensor[], batch: DetectionBatch, options?: GradOptions<Tensor[]>): Promise<DetectionValueAndGrad>;
  async valueAndGradAsync(preds: Tensor[], batch: DetectionBatch, options?: GradOptions<Tensor[]>): Promise<DetectionValueAndGrad> {
    return this.#run.valueAndGradAsync(prepareLevels(preds, batch), options);
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
    return callNative(() => this.#run.native.bboxDecode(a, p));
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
