/**
 * Which backend a loss runs on. The losses of `CUDA_LOSSES` have a CUDA backend: with
 * `device: 'auto'` (the default) they run on CUDA when the probe finds it usable, within the CUDA backend's limits
 * (tal_topk ≤ 32, at most 8 levels), else on the CPU. The other losses run on the CPU.
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */
import { cudaAvailability } from 'yolo-loss';

/** The losses with a CUDA backend, by their public names. */
export const CUDA_LOSSES: readonly string[] = [
  'v8DetectionLoss',
  'E2EDetectLoss',
  'TVPDetectLoss',
  'v8SegmentationLoss',
  'TVPSegmentLoss',
  'v8PoseLoss',
  'v8OBBLoss',
  'v8ClassificationLoss',
];

/** What `device` reports for `device: 'auto'`: 'cuda' for a loss with a CUDA backend where CUDA is usable. */
export function autoBackend(loss = 'v8DetectionLoss'): 'cpu' | 'cuda' {
  return CUDA_LOSSES.includes(loss) && cudaAvailability().available ? 'cuda' : 'cpu';
}
