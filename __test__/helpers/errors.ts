/**
 * Checks of the errors the library throws (sync) or rejects with (async): a stable `code`, and a message that names
 * the argument, what was expected and what was given; the caller's arrays are never modified.
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */
import type { ExecutionContext } from 'ava';
import type { ErrorCode, Tensor } from 'yolo-loss';

import { leaves, sameBits, snapshot } from './fixtures.js';
import type { AnyLoss } from './tasks.js';

/** `fn` throws an Error with `code` whose message matches `message` and says what was expected and what was given;
 * `inputs` are left as they were. */
export function expectCode(t: ExecutionContext, fn: () => unknown, code: ErrorCode, message: RegExp, inputs: Tensor[] = []): void {
  const copies = snapshot(inputs);
  const err = t.throws(fn, { instanceOf: Error });
  inputs.forEach((x, i) => t.true(sameBits(x.data, copies[i]!.data), 'an input array was modified'));
  if (err === undefined) return;
  t.is((err as Error & { code?: unknown }).code, code, `code for: ${err.message}`);
  t.regex(err.message, message);
  t.regex(err.message, /expected/, 'the message says what was expected');
  t.regex(err.message, /got/, 'the message says what was given');
}

/** `p()` rejects with an Error with `code` whose message matches `message`. */
export async function expectReject(t: ExecutionContext, p: () => Promise<unknown>, code: ErrorCode, message: RegExp): Promise<void> {
  const err = await t.throwsAsync(p, { instanceOf: Error });
  if (err === undefined) return;
  t.is((err as Error & { code?: unknown }).code, code, `code for: ${err.message}`);
  t.regex(err.message, message);
}

/** The same error from `call`, `valueAndGrad` and both async forms of `loss`; no array of `inputs` (by default every
 * tensor of `preds` and `batch`) modified. */
export async function expectAll(
  t: ExecutionContext,
  loss: unknown,
  preds: unknown,
  batch: unknown,
  code: ErrorCode,
  message: RegExp,
  inputs: Tensor[] = [...leaves(preds), ...leaves(batch)],
): Promise<void> {
  const l = loss as AnyLoss;
  const copies = snapshot(inputs);
  expectCode(t, () => l.call(preds as never, batch as never), code, message);
  expectCode(t, () => l.valueAndGrad(preds as never, batch as never), code, message);
  await expectReject(t, () => l.callAsync(preds as never, batch as never), code, message);
  await expectReject(t, () => l.valueAndGradAsync(preds as never, batch as never), code, message);
  inputs.forEach((x, i) => t.true(sameBits(x.data, copies[i]!.data), 'an input array was modified'));
}

/** A copy of `x` with element `i` set to `v`. */
export function withValue(x: Tensor, i: number, v: number): Tensor {
  const data = x.data.slice();
  data[i] = v;
  return { data, shape: [...x.shape] };
}
