/**
 * Plain-CommonJS helpers for the checks that run the package where no TypeScript exists (an empty project after
 * `npm install`, a GPU machine with only a node binary): read a reference fixture, walk a result's tensors, compare
 * with the fixtures' tolerance. The ava suite's TypeScript twins are __test__/helpers/{safetensors,fixtures}.ts.
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */
'use strict';

const fs = require('node:fs');

/** A safetensors file (fixtures/README.md): `{ metadata, tensors: Map<name, { dtype, shape, data: Float32Array }> }`,
 * every dtype converted to float32 as the losses take it. */
function readSafetensors(file) {
  const bytes = fs.readFileSync(file);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8'));
  const body = 8 + headerLength;
  const read = { F32: (b, i) => b.readFloatLE(i), F64: (b, i) => b.readDoubleLE(i), I32: (b, i) => b.readInt32LE(i), U8: (b, i) => b[i] };
  const size = { F32: 4, F64: 8, I32: 4, U8: 1 };
  const tensors = new Map();
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    if (!read[t.dtype]) throw new Error(`${file}: ${name} has dtype ${t.dtype}, which this reader does not know`);
    const [start, end] = t.data_offsets;
    const data = new Float32Array((end - start) / size[t.dtype]);
    for (let i = 0; i < data.length; i++) data[i] = read[t.dtype](bytes, body + start + i * size[t.dtype]);
    tensors.set(name, { dtype: t.dtype, shape: t.shape, data });
  }
  return { metadata: header.__metadata__ ?? {}, tensors };
}

/** The Float32Arrays of a nested result or input (arrays by index, objects by sorted key). */
function leaves(x) {
  if (x && x.data instanceof Float32Array) return [x.data];
  if (Array.isArray(x)) return x.flatMap(leaves);
  if (x && typeof x === 'object') return Object.keys(x).sort().flatMap((k) => leaves(x[k]));
  return [];
}

/** null when every element is within the fixtures' tolerance |Δ| ≤ 1e-4·|want| + 1e-5·max|want|, else where not. */
function closeness(got, want) {
  if (got.length !== want.length) return `length ${got.length} vs ${want.length}`;
  let scale = 0;
  for (const v of want) scale = Math.max(scale, Math.abs(v));
  for (let i = 0; i < got.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    if (!(d <= 1e-4 * Math.abs(want[i]) + 1e-5 * scale)) return `[${i}]: ${got[i]} vs ${want[i]}`;
  }
  return null;
}

/** A check list that prints `ok`/`FAIL` lines and counts failures. */
function reporter() {
  const r = {
    failures: 0,
    passed: 0,
    check(ok, what) {
      console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
      if (ok) r.passed += 1;
      else r.failures += 1;
    },
  };
  return r;
}

module.exports = { closeness, leaves, readSafetensors, reporter };
