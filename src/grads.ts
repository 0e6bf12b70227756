/**
 * The structure of `grads`: the binding returns (or writes) one flat gradient per prediction tensor; the facade gives
 * them the structure of `preds` (levels, tuples, the E2E object), and checks a caller's `out` against that same
 * structure before the binding writes into it.
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */

import type * as Native from '../native/binding';
import { checkTensor, describe, fmtShape, isObject, lossError, type Tensor } from './common';

/** The checked prediction tensors of one call in the structure of `preds`: a tensor, or an array (levels, tuples)
 * or object (E2E) of them. Its tensors, in order, are the binding's prediction tensors. */
export type PredTree = Native.NativeTensor | readonly PredTree[] | { readonly [key: string]: PredTree };

/** What `valueAndGrad` and `valueAndGradAsync` take after `preds` and `batch`. */
export interface GradOptions<G> {
  /**
   * Caller-owned gradient buffers with the structure of `grads` (that of `preds`, every tensor shaped like its
   * prediction tensor, `data` a Float32Array of its own). The gradients are written into them and `out` itself is
   * returned as `grads`, so a training loop allocates nothing per step. Refused before anything is written:
   * another structure or shape (`ERR_SHAPE_MISMATCH`; a non-array where an array belongs, or data that is not a
   * Float32Array: `ERR_INVALID_ARGUMENT`), and memory shared with any tensor of `preds` or `batch` or between two
   * `out` tensors (`ERR_INVALID_ARGUMENT`). An error found later (labels, non-finite values) may leave `out`
   * partly written. With `valueAndGradAsync`, `out` is written while the promise is pending: do not read, write,
   * transfer or resize it (nor pass it to another pending call) until the promise settles.
   */
  out?: G;
}

function isTensorNode(node: PredTree): node is Native.NativeTensor {
  return !Array.isArray(node) && ArrayBuffer.isView((node as { data?: unknown }).data);
}

/** The prediction tensors of `tree`, in order. */
export function predTensors(tree: PredTree): Native.NativeTensor[] {
  if (isTensorNode(tree)) return [tree];
  const children: readonly PredTree[] = Array.isArray(tree) ? tree : Object.values(tree);
  return children.flatMap(predTensors);
}

/** The binding's flat gradients in the structure of `tree`, each shaped like its prediction tensor. */
export function structureGrads<G>(flat: readonly Float32Array[], tree: PredTree): G {
  const want = predTensors(tree).length;
  if (flat.length !== want) {
    throw lossError('ERR_INTERNAL', `valueAndGrad: the core returned ${flat.length} gradients for ${want} prediction tensors`);
  }
  let next = 0;
  const build = (node: PredTree): unknown => {
    if (isTensorNode(node)) return { data: flat[next++]!, shape: [...node.shape] } satisfies Tensor;
    if (Array.isArray(node)) return node.map(build);
    return Object.fromEntries(Object.entries(node).map(([key, child]) => [key, build(child)]));
  };
  return build(tree) as G;
}

/** `options` of `valueAndGrad`: undefined or an object; its `out` (undefined when absent). */
export function checkGradOptions(options: unknown): unknown {
  if (options === undefined) return undefined;
  if (!isObject(options) || Array.isArray(options)) {
    throw lossError('ERR_INVALID_ARGUMENT', `options: expected an object { out? }, got ${describe(options)}`);
  }
  return options['out'];
}

/**
 * Checks the caller's `out` against the structure and shapes of `tree` and returns its data arrays in the order
 * of the prediction tensors. Whether they share memory with an input or with each other is checked by the
 * binding, which holds the addresses.
 */
export function checkOut(out: unknown, tree: PredTree, name = 'out'): Float32Array[] {
  if (isTensorNode(tree)) {
    const t = checkTensor(name, out);
    if (t.shape.length !== tree.shape.length || t.shape.some((d, i) => d !== tree.shape[i])) {
      throw lossError('ERR_SHAPE_MISMATCH', `${name}: expected shape ${fmtShape(tree.shape)} (that of its prediction tensor), got ${fmtShape(t.shape)}`);
    }
    return [t.data];
  }
  if (Array.isArray(tree)) {
    const items = tree as readonly PredTree[];
    if (!Array.isArray(out)) {
      throw lossError('ERR_INVALID_ARGUMENT', `${name}: expected an array of ${items.length} entries (the structure of preds), got ${describe(out)}`);
    }
    if (out.length !== items.length) {
      throw lossError('ERR_SHAPE_MISMATCH', `${name}: expected ${items.length} entries (as many as in preds), got ${out.length}`);
    }
    return items.flatMap((node, i) => checkOut(out[i], node, `${name}[${i}]`));
  }
  const keys = Object.keys(tree);
  if (!isObject(out) || Array.isArray(out)) {
    throw lossError('ERR_INVALID_ARGUMENT', `${name}: expected an object { ${keys.join(', ')} } (the structure of preds), got ${describe(out)}`);
  }
  return keys.flatMap((key) => checkOut(out[key], (tree as { readonly [key: string]: PredTree })[key]!, `${name}.${key}`));
}
