import test from 'ava';

import { encodeSafetensors, parseSafetensors } from './helpers/safetensors.js';

test('safetensors reader: every dtype, zero-size tensors, metadata', (t) => {
  const bytes = encodeSafetensors(
    {
      a: { dtype: 'F32', shape: [2, 3], data: Float32Array.from([1, -2.5, 3, 0, 1e-30, -0]) },
      b: { dtype: 'F64', shape: [2], data: Float64Array.from([Math.PI, -1e300]) },
      c: { dtype: 'I32', shape: [3, 1], data: Int32Array.from([-7, 0, 2147483647]) },
      d: { dtype: 'U8', shape: [4], data: Uint8Array.from([0, 1, 128, 255]) },
      e: { dtype: 'F32', shape: [0, 4], data: new Float32Array(0) },
      f: { dtype: 'F32', shape: [], data: Float32Array.from([42]) },
    },
    { kind: 'test', config: '{"x":1}' },
  );
  const st = parseSafetensors(bytes);
  t.deepEqual(st.metadata, { kind: 'test', config: '{"x":1}' });
  t.deepEqual(st.tensors.get('a'), { dtype: 'F32', shape: [2, 3], data: Float32Array.from([1, -2.5, 3, 0, 1e-30, -0]) });
  t.deepEqual(st.tensors.get('b'), { dtype: 'F64', shape: [2], data: Float64Array.from([Math.PI, -1e300]) });
  t.deepEqual(st.tensors.get('c'), { dtype: 'I32', shape: [3, 1], data: Int32Array.from([-7, 0, 2147483647]) });
  t.deepEqual(st.tensors.get('d'), { dtype: 'U8', shape: [4], data: Uint8Array.from([0, 1, 128, 255]) });
  t.deepEqual(st.tensors.get('e'), { dtype: 'F32', shape: [0, 4], data: new Float32Array(0) });
  t.deepEqual(st.tensors.get('f'), { dtype: 'F32', shape: [], data: Float32Array.from([42]) });
});

test('safetensors reader: data at an unaligned offset', (t) => {
  // A U8 tensor of odd length first puts the F32 data at an offset that is not a multiple of 4.
  const bytes = encodeSafetensors({
    u: { dtype: 'U8', shape: [3], data: Uint8Array.from([1, 2, 3]) },
    v: { dtype: 'F32', shape: [2], data: Float32Array.from([0.5, -8]) },
  });
  t.deepEqual(parseSafetensors(bytes).tensors.get('v')?.data, Float32Array.from([0.5, -8]));
});

test('safetensors reader: rejects bad files', (t) => {
  t.throws(() => parseSafetensors(new Uint8Array(4)), { message: /too short/ });
  const bad = encodeSafetensors({ x: { dtype: 'F32', shape: [2], data: Float32Array.from([1, 2]) } });
  t.throws(() => parseSafetensors(bad.subarray(0, bad.length - 1)), { message: /beyond the end/ });
});
