/**
 * Timing helpers shared by the runner and the worker (the Python side follows the same rules).
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */

/** How many iterations to time: warm-up first, then enough iterations to fill `targetS` seconds, within bounds. */
export interface IterPlan {
  warmup: number;
  min: number;
  max: number;
  targetS: number;
}

export const OURS_PLAN: IterPlan = { warmup: 2, min: 10, max: 40, targetS: 4 };
export const OURS_PLAN_QUICK: IterPlan = { warmup: 2, min: 3, max: 10, targetS: 1 };
export const REF_PLAN: IterPlan = { warmup: 1, min: 3, max: 10, targetS: 20 };
export const REF_PLAN_QUICK: IterPlan = { warmup: 1, min: 1, max: 3, targetS: 3 };

/** Iterations to time after a warm-up call of `firstMs`. */
export function iterations(plan: IterPlan, firstMs: number): number {
  const n = Math.ceil((plan.targetS * 1000) / Math.max(firstMs, 1e-3));
  return Math.min(plan.max, Math.max(plan.min, n));
}

export interface Stats {
  median_ms: number;
  min_ms: number;
  p25_ms: number;
  p75_ms: number;
  max_ms: number;
}

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

export function stats(times: number[]): Stats {
  const s = [...times].sort((a, b) => a - b);
  return {
    median_ms: quantile(s, 0.5),
    min_ms: s[0] ?? NaN,
    p25_ms: quantile(s, 0.25),
    p75_ms: quantile(s, 0.75),
    max_ms: s[s.length - 1] ?? NaN,
  };
}
