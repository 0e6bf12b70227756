/**
 * The benchmark cases of `npm run bench` (issue 5): standard training shapes of every task loss.
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */

export type Task = 'detect' | 'segment' | 'pose' | 'obb';

/** What a case runs: the loss, the model it reads and the batch it sees. */
export interface CaseDef {
  /** Short name used by `--cases` and in the table. */
  id: string;
  task: Task;
  /** Which part of the report it belongs to: the labels sweep (the chart), batch/anchor scaling, other tasks. */
  group: 'labels' | 'scaling' | 'tasks';
  /** Batch size. */
  B: number;
  /** Input image height and width (pixels). */
  imgH: number;
  imgW: number;
  nc: number;
  reg_max: number;
  strides: number[];
  /** Labels of every image (exactly this many). */
  labelsPerImage: number;
  /** Segmentation: mask coefficients (prototype count); prototypes are imgH/4 × imgW/4. */
  nm?: number;
  /** Pose: [K, D]. */
  kpt_shape?: [number, number];
  /** Seed of the data generator (inputs are a pure function of the case definition). */
  seed: number;
  /** One line for the report. */
  note: string;
}

const DET = { task: 'detect' as const, imgH: 640, imgW: 640, nc: 80, reg_max: 16, strides: [8, 16, 32] };

export const CASES: CaseDef[] = [
  { ...DET, id: 'det8', group: 'labels', B: 16, labelsPerImage: 8, seed: 101, note: 'COCO-like batch (target: >= 25x)' },
  { ...DET, id: 'det100', group: 'labels', B: 16, labelsPerImage: 100, seed: 102, note: 'crowded images' },
  { ...DET, id: 'det300', group: 'labels', B: 16, labelsPerImage: 300, seed: 103, note: 'very crowded images' },
  { ...DET, id: 'det1000', group: 'labels', B: 16, labelsPerImage: 1000, seed: 104, note: 'extreme (target: >= 150x, RSS <= 1.5x det8)' },
  { ...DET, id: 'det8_b1', group: 'scaling', B: 1, labelsPerImage: 8, seed: 105, note: 'B=1 latency' },
  { ...DET, id: 'det8_b4', group: 'scaling', B: 4, labelsPerImage: 8, seed: 106, note: 'linear in B' },
  { ...DET, id: 'det8_320', group: 'scaling', B: 16, imgH: 320, imgW: 320, labelsPerImage: 8, seed: 107, note: 'linear in anchors (2100)' },
  { ...DET, id: 'det8_960', group: 'scaling', B: 16, imgH: 960, imgW: 960, labelsPerImage: 8, seed: 108, note: 'linear in anchors (18900)' },
  {
    ...DET, task: 'segment', id: 'seg', group: 'tasks', B: 16, labelsPerImage: 8, nm: 32, seed: 109,
    note: 'v8SegmentationLoss, nm=32, 160x160 prototypes, overlap_mask',
  },
  {
    ...DET, task: 'pose', id: 'pose', group: 'tasks', B: 16, nc: 1, labelsPerImage: 8, kpt_shape: [17, 3], seed: 110,
    note: 'v8PoseLoss, COCO keypoints 17x3 (float64 OKS sigmas in the reference)',
  },
  {
    ...DET, task: 'obb', id: 'obb', group: 'tasks', B: 16, imgH: 1024, imgW: 1024, nc: 15, labelsPerImage: 8, seed: 111,
    note: 'v8OBBLoss, DOTAv1 training shape (1024x1024, nc=15)',
  },
];

export function anchorsOf(c: CaseDef): number {
  return c.strides.reduce((s, st) => s + Math.ceil(c.imgH / st) * Math.ceil(c.imgW / st), 0);
}

/** The class each task needs in the package. */
export const CLASS_OF: Record<Task, string> = {
  detect: 'v8DetectionLoss',
  segment: 'v8SegmentationLoss',
  pose: 'v8PoseLoss',
  obb: 'v8OBBLoss',
};

/** "B=16 640x640 nc=80 8 lab/img" */
export function shapeOf(c: CaseDef): string {
  let s = `B=${c.B} ${c.imgW}x${c.imgH} nc=${c.nc} ${c.labelsPerImage} lab/img`;
  if (c.nm !== undefined) s += ` nm=${c.nm} proto ${c.imgW / 4}x${c.imgH / 4}`;
  if (c.kpt_shape !== undefined) s += ` kpt ${c.kpt_shape[0]}x${c.kpt_shape[1]}`;
  return s;
}
