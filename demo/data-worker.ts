/**
 * The demo's batch generator on a worker thread: the training loop's thread runs tfjs while this one paints the
 * next batch of synthetic shapes. Same seed, same stream as generating in line.
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */

import { parentPort, workerData } from 'node:worker_threads';

import { ShapesDataset, collate } from './shapes';

const { seed, size, batch } = workerData as { seed: number; size: number; batch: number };
const data = new ShapesDataset(seed, { size });

parentPort!.on('message', () => {
  const b = collate(data.take(batch));
  parentPort!.postMessage(b, [b.images.buffer, b.batch_idx.buffer, b.cls.buffer, b.bboxes.buffer] as ArrayBuffer[]);
});
