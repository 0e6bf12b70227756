/**
 * Just enough raster graphics for the demo's pictures: an RGB canvas with rectangles, lines, a 5×7 bitmap font
 * and image blits, and a PNG encoder (zlib from Node's standard library, adaptive row filters).
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */

import { deflateSync } from 'node:zlib';

export type RGB = readonly [number, number, number];

// 5×7 glyphs, one byte per row (bit 4 = leftmost column), HD44780 style.
const GLYPHS: Record<string, string> = {
  ' ': '00000000000000', '.': '00000000000c0c', ',': '000000000c0408', ':': '000c0c000c0c00', '-': '0000001f000000',
  '+': '0004041f040400', '=': '00001f001f0000', '/': '00010204081000', '(': '02040808080402', ')': '08040202020408',
  '@': '0e11010d15150e', '%': '18190204081303', '[': '0e08080808080e', ']': '0e02020202020e', '_': '0000000000001f',
  '#': '0a0a1f0a1f0a0a', '<': '02040810080402', '>': '08040201020408', "'": '04040800000000', '|': '04040404040404',
  '×': '00110a040a1100', '0': '0e11131519110e', '1': '040c040404040e', '2': '0e11010204081f', '3': '1f02040201110e',
  '4': '02060a121f0202', '5': '1f101e0101110e', '6': '0608101e11110e', '7': '1f010204080808', '8': '0e11110e11110e',
  '9': '0e11110f01020c', a: '00000e010f110f', b: '1010161911111e', c: '00000e1010110e', d: '01010d1311110f',
  e: '00000e111f100e', f: '0609081c080808', g: '000f11110f010e', h: '10101619111111', i: '04000c0404040e',
  j: '0200060202120c', k: '10101214181412', l: '0c04040404040e', m: '00001a15151111', n: '00001619111111',
  o: '00000e1111110e', p: '00001e111e1010', q: '00000d130f0101', r: '00001619101010', s: '00000e100e011e',
  t: '08081c08080906', u: '0000111111130d', v: '00001111110a04', w: '0000111115150a', x: '0000110a040a11',
  y: '000011110f010e', z: '00001f0204081f', A: '0e1111111f1111', B: '1e11111e11111e', C: '0e11101010110e',
  D: '1c12111111121c', E: '1f10101e10101f', F: '1f10101e101010', G: '0e11101711110f', H: '1111111f111111',
  I: '0e04040404040e', J: '0702020202120c', K: '11121418141211', L: '1010101010101f', M: '111b1515111111',
  N: '11111915131111', O: '0e11111111110e', P: '1e11111e101010', Q: '0e11111115120d', R: '1e11111e141211',
  S: '0f10100e01011e', T: '1f040404040404', U: '1111111111110e', V: '11111111110a04', W: '1111111515150a',
  X: '11110a040a1111', Y: '1111110a040404', Z: '1f01020408101f',
};

const GLYPH_ROWS: Record<string, number[]> = Object.fromEntries(
  Object.entries(GLYPHS).map(([ch, hex]) => [ch, Array.from({ length: 7 }, (_, r) => parseInt(hex.slice(2 * r, 2 * r + 2), 16))]),
);

/** Width in pixels of `text` drawn at `scale` (6 px per character at scale 1, one of them spacing). */
export function textWidth(text: string, scale = 1): number {
  return text.length * 6 * scale - scale;
}

export class Raster {
  readonly data: Uint8Array;

  constructor(
    readonly width: number,
    readonly height: number,
    background: RGB = [255, 255, 255],
  ) {
    this.data = new Uint8Array(width * height * 3);
    this.fillRect(0, 0, width, height, background);
  }

  set(x: number, y: number, c: RGB, alpha = 1): void {
    x = Math.round(x);
    y = Math.round(y);
    if (x < 0 || y < 0 || x >= this.width || y >= this.height) return;
    const p = (y * this.width + x) * 3;
    if (alpha >= 1) {
      this.data[p] = c[0];
      this.data[p + 1] = c[1];
      this.data[p + 2] = c[2];
    } else {
      for (let k = 0; k < 3; k++) this.data[p + k] = Math.round(this.data[p + k]! * (1 - alpha) + c[k]! * alpha);
    }
  }

  fillRect(x: number, y: number, w: number, h: number, c: RGB, alpha = 1): void {
    for (let j = Math.max(0, Math.floor(y)); j < Math.min(this.height, Math.floor(y + h)); j++) {
      for (let i = Math.max(0, Math.floor(x)); i < Math.min(this.width, Math.floor(x + w)); i++) this.set(i, j, c, alpha);
    }
  }

  /** Outline of the box (x1, y1)–(x2, y2), `t` pixels thick inwards; `dash` > 0 draws dashes of that length. */
  strokeRect(x1: number, y1: number, x2: number, y2: number, c: RGB, t = 1, dash = 0): void {
    x1 = Math.round(x1);
    y1 = Math.round(y1);
    x2 = Math.round(x2);
    y2 = Math.round(y2);
    const on = (k: number): boolean => dash <= 0 || Math.floor(k / dash) % 2 === 0;
    for (let k = 0; k < t; k++) {
      for (let x = x1; x <= x2; x++) {
        if (on(x - x1)) {
          this.set(x, y1 + k, c);
          this.set(x, y2 - k, c);
        }
      }
      for (let y = y1; y <= y2; y++) {
        if (on(y - y1)) {
          this.set(x1 + k, y, c);
          this.set(x2 - k, y, c);
        }
      }
    }
  }

  /** A straight line `t` pixels wide. */
  line(x0: number, y0: number, x1: number, y1: number, c: RGB, t = 1, alpha = 1): void {
    const n = Math.max(1, Math.ceil(Math.max(Math.abs(x1 - x0), Math.abs(y1 - y0))));
    const r = (t - 1) / 2;
    for (let i = 0; i <= n; i++) {
      const x = x0 + ((x1 - x0) * i) / n;
      const y = y0 + ((y1 - y0) * i) / n;
      if (t <= 1) this.set(x, y, c, alpha);
      else this.fillRect(Math.round(x - r), Math.round(y - r), t, t, c, alpha);
    }
  }

  /** `text` with its top-left corner at (x, y); unknown characters are drawn as spaces. */
  text(x: number, y: number, text: string, c: RGB, scale = 1): void {
    let cx = Math.round(x);
    for (const ch of text) {
      const rows = GLYPH_ROWS[ch] ?? GLYPH_ROWS[' ']!;
      rows.forEach((bits, r) => {
        for (let col = 0; col < 5; col++) {
          if (bits & (0x10 >> col)) this.fillRect(cx + col * scale, Math.round(y) + r * scale, scale, scale, c);
        }
      });
      cx += 6 * scale;
    }
  }

  /** Draws an `[h, w, 3]` RGB image in [0, 1] at (x, y), each pixel as a `scale`×`scale` block. */
  blit(x: number, y: number, img: Float32Array, w: number, h: number, scale = 1): void {
    for (let j = 0; j < h * scale; j++) {
      for (let i = 0; i < w * scale; i++) {
        const p = (Math.floor(j / scale) * w + Math.floor(i / scale)) * 3;
        const v = (k: number): number => Math.min(255, Math.max(0, Math.round(img[p + k]! * 255)));
        const c: RGB = [v(0), v(1), v(2)];
        this.set(x + i, y + j, c);
      }
    }
  }

  /** The canvas as a PNG file (8-bit RGB). */
  toPng(): Buffer {
    return encodePng(this.width, this.height, this.data);
  }
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32(buf: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < buf.length; i++) c = CRC_TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, body: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + body.length);
  out.writeUInt32BE(body.length, 0);
  out.write(type, 4, 'ascii');
  Buffer.from(body.buffer, body.byteOffset, body.byteLength).copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + body.length)), 8 + body.length);
  return out;
}

function paeth(a: number, b: number, c: number): number {
  const p = a + b - c;
  const pa = Math.abs(p - a);
  const pb = Math.abs(p - b);
  const pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/** An 8-bit RGB PNG of `rgb` (`width·height·3` bytes, row-major); each row gets the filter with the smallest
 * sum of absolute residuals. */
export function encodePng(width: number, height: number, rgb: Uint8Array): Buffer {
  const stride = width * 3;
  if (rgb.length !== stride * height) throw new Error(`encodePng: expected ${stride * height} bytes, got ${rgb.length}`);
  const raw = new Uint8Array((stride + 1) * height);
  const cand = Array.from({ length: 5 }, () => new Uint8Array(stride));
  for (let y = 0; y < height; y++) {
    const row = rgb.subarray(y * stride, (y + 1) * stride);
    const up = y > 0 ? rgb.subarray((y - 1) * stride, y * stride) : new Uint8Array(stride);
    let best = 0;
    let bestCost = Infinity;
    for (let f = 0; f < 5; f++) {
      const o = cand[f]!;
      let cost = 0;
      for (let i = 0; i < stride; i++) {
        const a = i >= 3 ? row[i - 3]! : 0;
        const b = up[i]!;
        const c = i >= 3 ? up[i - 3]! : 0;
        const pred = f === 0 ? 0 : f === 1 ? a : f === 2 ? b : f === 3 ? (a + b) >> 1 : paeth(a, b, c);
        const v = (row[i]! - pred) & 0xff;
        o[i] = v;
        cost += v < 128 ? v : 256 - v;
      }
      if (cost < bestCost) {
        bestCost = cost;
        best = f;
      }
    }
    raw[y * (stride + 1)] = best;
    raw.set(cand[best]!, y * (stride + 1) + 1);
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type: RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw, { level: 9 })),
    chunk('IEND', new Uint8Array(0)),
  ]);
}
