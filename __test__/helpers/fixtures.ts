/**
 * Loading the reference fixtures (`fixtures/data/*.safetensors`, see fixtures/README.md) and comparing numbers.
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */

import { readdirSync, existsSync } from 'node:fs';
import * as path from 'node:path';

import test, { type ExecutionContext } from 'ava';
import type { DetectionBatch, ModelInfo, Tensor } from 'yolo-loss';

import { readSafetensors, type StTensor } from './safetensors.js';
import type { AnyLoss } from './tasks.js';

export const FIXTURE_DIR = path.resolve(__dirname, '..', '..', 'fixtures', 'data');

export interface Fixture {
  name: string;
  kind: string;
  config: Record<string, unknown>;
  description: string;
  tensors: Map<string, StTensor>;
}

export function listFixtures(): string[] {
  if (!existsSync(FIXTURE_DIR)) return [];
  return readdirSync(FIXTURE_DIR)
    .filter((f) => f.endsWith('.safetensors'))
    .sort()
    .map((f) => path.join(FIXTURE_DIR, f));
}

export function loadFixture(file: string): Fixture {
  const st = readSafetensors(file);
  return {
    name: path.basename(file, '.safetensors'),
    kind: st.metadata['kind'] ?? '',
    config: JSON.parse(st.metadata['config'] ?? '{}') as Record<string, unknown>,
    description: st.metadata['description'] ?? '',
    tensors: st.tensors,
  };
}

export function fixturesOfKind(kind: string): Fixture[] {
  return listFixtures()
    .map(loadFixture)
    .filter((f) => f.kind === kind);
}

/** The fixtures of `kind`, with a test that there is at least one. */
export function fixturesToCheck(kind: string): Fixture[] {
  const fixtures = fixturesOfKind(kind);
  test(`there are ${kind} fixtures to check`, (t) => {
    t.true(fixtures.length > 0, `no ${kind} fixture found in fixtures/data`);
  });
  return fixtures;
}

/** A fixture tensor as a float32 `Tensor` (F32 as is; other dtypes converted). */
export function f32(fx: Fixture, name: string): Tensor {
  const t = fx.tensors.get(name);
  if (t === undefined) throw new Error(`fixture ${fx.name}: no tensor ${name}`);
  return { data: t.data instanceof Float32Array ? t.data : Float32Array.from(t.data), shape: [...t.shape] };
}

/** `preds.0`, `preds.1`, ... in order. */
export function indexed(fx: Fixture, prefix: string): Tensor[] {
  const out: Tensor[] = [];
  for (let i = 0; fx.tensors.has(`${prefix}.${i}`); i++) out.push(f32(fx, `${prefix}.${i}`));
  return out;
}

/** The constructor arguments of a `v8DetectionLoss` fixture. */
export function detectionArgs(fx: Fixture): { model: ModelInfo; talTopk: number } {
  const c = fx.config as { nc: number; reg_max: number; stride: number[]; tal_topk?: number; hyp?: Record<string, number> };
  return {
    model: { nc: c.nc, reg_max: c.reg_max, stride: c.stride, args: { ...(c.hyp ?? {}) } },
    talTopk: c.tal_topk ?? 10,
  };
}

export function detectionBatch(fx: Fixture): DetectionBatch {
  return { batch_idx: f32(fx, 'batch.batch_idx'), cls: f32(fx, 'batch.cls'), bboxes: f32(fx, 'batch.bboxes') };
}

/**
 * The project's tolerance (the same as the core's fixture tests): element i passes when
 *   |got_i − want_i| ≤ 1e-4 · |want_i| + 1e-5 · max_j |want_j| + 1e-12,
 * i.e. relative 1e-4, with an absolute floor of 1e-5 of the reference tensor's largest magnitude (elements that
 * cancel to ~0 in fp32 carry the reference's own rounding error and are compared on the tensor's scale).
 * Returns null when everything passes, else a description of the worst element.
 */
export function closeness(got: ArrayLike<number>, want: ArrayLike<number>, rel = 1e-4, floor = 1e-5): string | null {
  if (got.length !== want.length) return `length ${got.length}, expected ${want.length}`;
  let scale = 0;
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]!));
  let bad = 0;
  let worst = -1;
  let worstErr = -1;
  for (let i = 0; i < want.length; i++) {
    const g = got[i]!;
    const w = want[i]!;
    const err = Math.abs(g - w);
    if (!(err <= rel * Math.abs(w) + floor * scale + 1e-12)) {
      bad++;
      if (!(err <= worstErr)) {
        worst = i;
        worstErr = err;
      }
    }
  }
  if (bad === 0) return null;
  return `${bad} of ${want.length} elements differ; worst at ${worst}: got ${got[worst]}, want ${want[worst]} (err ${worstErr.toExponential(3)}, scale ${scale.toExponential(3)})`;
}

/** A deep copy of tensors, to check afterwards that the library did not modify its inputs. */
export function snapshot(ts: Tensor[]): Tensor[] {
  return ts.map((t) => ({ data: t.data.slice(), shape: [...t.shape] }));
}

/** Whether the tensors have the data and the shapes of their `snapshot`. */
export function unchanged(inputs: Tensor[], copies: Tensor[]): boolean {
  return inputs.every((x, i) => sameBits(x.data, copies[i]!.data) && x.shape.join() === copies[i]!.shape.join());
}

/** Every tensor of a (nested) structure, in order. */
export function leaves(x: unknown): Tensor[] {
  if (Array.isArray(x)) return x.flatMap(leaves);
  if (typeof x === 'object' && x !== null) {
    if ((x as Tensor).data instanceof Float32Array) return [x as Tensor];
    return Object.values(x).flatMap(leaves);
  }
  return [];
}

/** `call` gives `wantLoss` and `wantItems` as Float32Arrays; the inputs come back unmodified. */
export function callMatches(t: ExecutionContext, loss: AnyLoss, preds: unknown, batch: unknown, inputs: Tensor[], wantLoss: Tensor, wantItems: Tensor): void {
  const copies = snapshot(inputs);
  const [l, items] = loss.call(preds as never, batch as never);
  t.true(l instanceof Float32Array && items instanceof Float32Array);
  t.is(closeness(l, wantLoss.data), null, 'loss');
  t.is(closeness(items, wantItems.data), null, 'lossItems');
  t.true(unchanged(inputs, copies), 'inputs modified by call');
}

/** `callAsync` and `valueAndGradAsync` give what `valueAndGrad` gives; the inputs come back unmodified. */
export async function asyncMatchesSync(t: ExecutionContext, loss: AnyLoss, preds: unknown, batch: unknown, inputs: Tensor[]): Promise<void> {
  const copies = snapshot(inputs);
  const sync = loss.valueAndGrad(preds as never, batch as never);
  const [l, items] = await loss.callAsync(preds as never, batch as never);
  const r = await loss.valueAndGradAsync(preds as never, batch as never);
  t.deepEqual(l, sync.loss);
  t.deepEqual(items, sync.lossItems);
  t.deepEqual(r.loss, sync.loss);
  t.deepEqual(r.lossItems, sync.lossItems);
  t.deepEqual(r.grads, sync.grads);
  t.true(unchanged(inputs, copies), 'inputs modified by the async forms');
}

export function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}
