/**
 * yolo-loss: the training losses of Ultralytics YOLO as a native Node.js library.
 *
 * This file is the public TypeScript facade (the package's entry point). The classes check the JavaScript-level
 * structure of their arguments (cheap: types, shapes, lengths), fill in defaults, and call the native binding
 * (`crates/node`), which calls the Rust core. The core validates every number. Names follow Ultralytics
 * (`v8DetectionLoss`, `batch_idx`, `reg_max`, ...); methods of our own are camelCase (`__call__` → `call`).
 *
 * The implementation lives in `src/`: `common.ts` (types, errors, validation, the native loader), `detection.ts`
 * (v8DetectionLoss), `tasks.ts` (the other task losses), `grads.ts` (the structure of `grads` and of a caller's
 * `out`), `blocks.ts` (building blocks and helpers).
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */

export {
  DEFAULT_HYP,
  cudaAvailability,
  isYoloLossError,
  type CudaAvailability,
  type CudaDevice,
  type CudaKernels,
  type Device,
  type DetectionBatch,
  type ErrorCode,
  type Hyp,
  type ModelInfo,
  type Options,
  type Tensor,
  type ValueAndGrad,
  type YoloLossError,
} from './src/common';

export { v8DetectionLoss, type DetectionValueAndGrad } from './src/detection';

export type { GradOptions } from './src/grads';

export {
  DetectionFamilyLoss,
  E2EDetectLoss,
  TaskLoss,
  TVPDetectLoss,
  TVPSegmentLoss,
  v8ClassificationLoss,
  v8OBBLoss,
  v8PoseLoss,
  v8SegmentationLoss,
  type ClassificationBatch,
  type ClassificationValueAndGrad,
  type E2EPreds,
  type E2EValueAndGrad,
  type OBBBatch,
  type OBBPreds,
  type OBBValueAndGrad,
  type PinnedMemory,
  type PoseBatch,
  type PoseOptions,
  type PosePreds,
  type PoseValueAndGrad,
  type SegmentationBatch,
  type SegmentationPreds,
  type SegmentationValueAndGrad,
} from './src/tasks';

export {
  BboxLoss,
  DFLoss,
  FocalLoss,
  KeypointLoss,
  OKS_SIGMA,
  RotatedBboxLoss,
  RotatedTaskAlignedAssigner,
  TaskAlignedAssigner,
  VarifocalLoss,
  bbox2dist,
  bboxIouWithGrad,
  bbox_iou,
  dist2bbox,
  dist2rbox,
  dist2rboxWithGrad,
  make_anchors,
  probiou,
  probiouWithGrad,
  type AssignerOptions,
  type Assignment,
  type BboxIouOptions,
  type BboxLossGrads,
  type ProbiouOptions,
  type WithGrad,
} from './src/blocks';
