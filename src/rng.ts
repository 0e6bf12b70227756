/**
 * The seeded PRNG of the demo, the benchmark and the tests (internal: not exported by the package).
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */

/** mulberry32: a tiny, fast, seeded PRNG, uniform in [0, 1); the same seed gives the same numbers everywhere. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
