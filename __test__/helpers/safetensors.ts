/**
 * A minimal reader of the safetensors format, for the test fixtures:
 * 8-byte little-endian header length n, then n bytes of JSON header
 * `{ "__metadata__"?: { string: string }, name: { dtype, shape, data_offsets: [begin, end] } }`,
 * then the raw little-endian tensor bytes (offsets relative to the end of the header).
 * Supported dtypes: F32, F64, I32, U8 (zero-size tensors included).
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */

import { readFileSync } from 'node:fs';

export type Dtype = 'F32' | 'F64' | 'I32' | 'U8';

export interface StTensor {
  dtype: Dtype;
  shape: number[];
  /** The values in their own type (a copy, aligned, independent of the file buffer). */
  data: Float32Array | Float64Array | Int32Array | Uint8Array;
}

export interface SafeTensors {
  metadata: Record<string, string>;
  tensors: Map<string, StTensor>;
}

const BYTES: Record<Dtype, number> = { F32: 4, F64: 8, I32: 4, U8: 1 };

function fail(file: string, msg: string): never {
  throw new Error(`safetensors ${file}: ${msg}`);
}

export function parseSafetensors(buf: Uint8Array, file = '<buffer>'): SafeTensors {
  if (buf.byteLength < 8) fail(file, `too short (${buf.byteLength} bytes)`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const n = dv.getBigUint64(0, true);
  if (n > BigInt(buf.byteLength - 8)) fail(file, `header length ${n} exceeds the file`);
  const headerLen = Number(n);
  const header = JSON.parse(new TextDecoder('utf-8').decode(buf.subarray(8, 8 + headerLen))) as Record<string, unknown>;
  const base = 8 + headerLen;
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, StTensor>();
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      Object.assign(metadata, entry as Record<string, string>);
      continue;
    }
    const { dtype, shape, data_offsets } = entry as { dtype: string; shape: number[]; data_offsets: [number, number] };
    if (!(dtype in BYTES)) fail(file, `${name}: unsupported dtype ${dtype}`);
    const dt = dtype as Dtype;
    const count = shape.reduce((a, b) => a * b, 1);
    const [begin, end] = data_offsets;
    if (end - begin !== count * BYTES[dt]) fail(file, `${name}: ${end - begin} bytes for shape [${shape.join(', ')}] of ${dt}`);
    if (base + end > buf.byteLength) fail(file, `${name}: data beyond the end of the file`);
    const at = base + begin;
    let data: StTensor['data'];
    switch (dt) {
      case 'F32': {
        const a = new Float32Array(count);
        for (let i = 0; i < count; i++) a[i] = dv.getFloat32(at + 4 * i, true);
        data = a;
        break;
      }
      case 'F64': {
        const a = new Float64Array(count);
        for (let i = 0; i < count; i++) a[i] = dv.getFloat64(at + 8 * i, true);
        data = a;
        break;
      }
      case 'I32': {
        const a = new Int32Array(count);
        for (let i = 0; i < count; i++) a[i] = dv.getInt32(at + 4 * i, true);
        data = a;
        break;
      }
      case 'U8':
        data = buf.slice(at, at + count);
        break;
    }
    tensors.set(name, { dtype: dt, shape: [...shape], data });
  }
  return { metadata, tensors };
}

export function readSafetensors(file: string): SafeTensors {
  return parseSafetensors(readFileSync(file), file);
}

/** Writes a safetensors file image (used by the reader's own test). */
export function encodeSafetensors(tensors: Record<string, StTensor>, metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata) header['__metadata__'] = metadata;
  let offset = 0;
  const parts: Uint8Array[] = [];
  for (const [name, t] of Object.entries(tensors)) {
    const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength).slice();
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes.byteLength] };
    offset += bytes.byteLength;
    parts.push(bytes);
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.byteLength + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.byteLength), true);
  out.set(json, 8);
  let at = 8 + json.byteLength;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}
