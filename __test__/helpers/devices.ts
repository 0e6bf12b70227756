/**
 * Which backend a loss runs on. The losses of `CUDA_LOSSES` have a CUDA backend: with
 * `device: 'auto'` (the default) they hold both backends when the probe finds CUDA usable, within the CUDA backend's
 * limits (tal_topk ≤ 32, at most 8 levels), and run each call on the faster one for its shapes; else the CPU alone.
 * The other losses run on the CPU.
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

/** What `device` reports for `device: 'auto'`: 'auto' (both backends) for a loss with a CUDA backend where CUDA is
 * usable, else 'cpu'. */
export function autoBackend(loss = 'v8DetectionLoss'): 'cpu' | 'auto' {
  return gpuBackend(loss) === 'cuda' ? 'auto' : 'cpu';
}

/** The one fixed device that runs on the GPU where 'auto' could: 'cuda' for a loss with a CUDA backend where CUDA is
 * usable, else 'cpu'. For tests that compare bits across calls (under 'auto' with both backends the bits of a shape's
 * first calls depend on which backend its probe ran them on). */
export function gpuBackend(loss = 'v8DetectionLoss'): 'cpu' | 'cuda' {
  return CUDA_LOSSES.includes(loss) && cudaAvailability().available ? 'cuda' : 'cpu';
}
