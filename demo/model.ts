/**
 * A small YOLO-style detector in TensorFlow.js: a strided conv backbone (SiLU, residual stride-1 blocks) with three
 * output levels at strides 8, 16 and 32, and a decoupled Detect head per level whose output has the channel layout of
 * docs/spec.md §4: `[B, 4*reg_max + nc, H, W]`, box-distribution logits side-major first, then class logits.
 *
 * The convolutions use `conv2d` below: tf.conv2d forward, and a gradient computed with forward convolutions too
 * (dx: a convolution of the dilated, padded dy with the flipped kernel; dW: a convolution of the transposed input
 * with dy as the kernel). tfjs's own Conv2DBackpropFilter is a scalar loop on the cpu backend (about 0.05 GFLOP/s)
 * and does not exist on the wasm backend; forward convolutions run at tens of GFLOP/s there (XNNPACK).
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */

import * as tf from '@tensorflow/tfjs';

// ------------------------------------------------------------------------------------------------------------
// conv2d with a gradient made of forward convolutions

/** TensorFlow 'same' padding along one axis: [before, after, output size]. */
export function samePad(size: number, k: number, s: number): [number, number, number] {
  const out = Math.ceil(size / s);
  const total = Math.max((out - 1) * s + k - size, 0);
  const before = Math.floor(total / 2);
  return [before, total - before, out];
}

/** Pads (positive) or crops (negative) each axis by [before, after]. */
function padOrCrop<T extends tf.Tensor>(t: T, cfg: [number, number][]): T {
  let out: tf.Tensor = t;
  if (cfg.some(([b, a]) => b > 0 || a > 0)) out = tf.pad(out, cfg.map(([b, a]) => [Math.max(b, 0), Math.max(a, 0)] as [number, number]));
  if (cfg.some(([b, a]) => b < 0 || a < 0)) {
    const begin = cfg.map(([b]) => Math.max(-b, 0));
    const size = out.shape.map((n, i) => n - begin[i]! - Math.max(-cfg[i]![1], 0));
    out = tf.slice(out, begin, size);
  }
  return out as T;
}

/** Inserts s − 1 zeros after every element along H and W: [B, H, W, C] → [B, sH, sW, C]. */
function dilate(dy: tf.Tensor4D, s: number): tf.Tensor4D {
  if (s === 1) return dy;
  const [B, H, W, C] = dy.shape;
  const spread = tf.pad(tf.reshape(dy, [B, H, 1, W, 1, C]), [[0, 0], [0, 0], [0, s - 1], [0, 0], [0, s - 1], [0, 0]]);
  return tf.reshape(spread, [B, H * s, W * s, C]);
}

/** The taps of a k×k kernel in reverse order, as a [k·k, k·k] matrix (a matMul flips faster than tf.reverse on wasm). */
const flipMatrices = new Map<number, tf.Tensor2D>();
function flipKernel(w: tf.Tensor4D): tf.Tensor4D {
  const [kh, kw, ci, co] = w.shape;
  const n = kh * kw;
  let j = flipMatrices.get(n);
  if (!j) {
    j = tf.keep(tf.tensor2d(Array.from({ length: n * n }, (_, i) => (Math.floor(i / n) + (i % n) === n - 1 ? 1 : 0)), [n, n]));
    flipMatrices.set(n, j);
  }
  return tf.reshape(tf.matMul(j, tf.reshape(w, [n, ci * co])), [kh, kw, ci, co]);
}

/**
 * Stride 2, 3×3, even H and W (no padding before): the four output phases (even/odd row × even/odd column) of dx
 * are 2×2 convolutions of dy, so one 2×2 convolution with 4·Cin outputs and a depth-to-space give dx without the
 * zeros of the dilated form. Tap (a, b) of phase (p, q) is w[R[p][a], R[q][b]], R = [[2, 0], [−, 1]].
 */
const phaseSelections = new Map<string, tf.Tensor2D>();
function conv2dGradInputStride2(dy: tf.Tensor4D, w: tf.Tensor4D): tf.Tensor4D {
  const [, , ci, co] = w.shape;
  let sel = phaseSelections.get('3x3');
  if (!sel) {
    const R = [
      [2, 0],
      [-1, 1],
    ];
    const rows: number[] = [];
    // Rows ordered (a, b, p, q); each picks one tap of the 3×3 kernel or none.
    for (const a of [0, 1]) for (const b of [0, 1]) for (const p of [0, 1]) for (const q of [0, 1]) {
      const r = R[p]![a]!;
      const c = R[q]![b]!;
      for (let t = 0; t < 9; t++) rows.push(r >= 0 && c >= 0 && t === r * 3 + c ? 1 : 0);
    }
    sel = tf.keep(tf.tensor2d(rows, [16, 9]));
    phaseSelections.set('3x3', sel);
  }
  const taps = tf.reshape(tf.matMul(sel, tf.reshape(w, [9, ci * co])), [2, 2, 2, 2, ci, co]); // a, b, p, q, ci, co
  const k = tf.reshape(tf.transpose(taps, [0, 1, 5, 2, 3, 4]), [2, 2, co, 4 * ci]); // a, b, co, (p, q, ci)
  const phases = tf.conv2d(tf.pad(dy, [[0, 0], [1, 0], [1, 0], [0, 0]]), k as tf.Tensor4D, 1, 'valid');
  // Depth to space (tf.depthToSpace is slow on wasm): [B, Ho, Wo, p, q, ci] → [B, Ho, p, Wo, q, ci].
  const [B, Ho, Wo] = phases.shape;
  return tf.reshape(tf.transpose(tf.reshape(phases, [B, Ho, Wo, 2, 2, ci]), [0, 1, 3, 2, 4, 5]), [B, 2 * Ho, 2 * Wo, ci]);
}

/** d conv2d(x, w, s, 'same') / dx for the incoming dy, as one stride-1 convolution. */
export function conv2dGradInput(dy: tf.Tensor4D, w: tf.Tensor4D, xShape: readonly number[], s: number): tf.Tensor4D {
  const [, H, W] = xShape as [number, number, number, number];
  const [kh, kw] = w.shape;
  if (s === 2 && kh === 3 && kw === 3 && H % 2 === 0 && W % 2 === 0) return conv2dGradInputStride2(dy, w);
  const [pt, , Ho] = samePad(H, kh, s);
  const [pl, , Wo] = samePad(W, kw, s);
  // dy spread to stride 1 (its length is s·(Ho−1)+1 plus s−1 trailing zeros), then framed so that a 'valid'
  // convolution with the flipped kernel lands exactly on the H×W input positions.
  const d = padOrCrop(dilate(dy, s), [
    [0, 0],
    [kh - 1 - pt, H + pt - s * Ho],
    [kw - 1 - pl, W + pl - s * Wo],
    [0, 0],
  ]);
  return tf.conv2d(d, tf.transpose(flipKernel(w), [0, 1, 3, 2]), 1, 'valid');
}

/** d conv2d(x, w, s, 'same') / dw for the incoming dy, as one dilated convolution over the batch. */
export function conv2dGradFilter(x: tf.Tensor4D, dy: tf.Tensor4D, wShape: readonly number[], s: number): tf.Tensor4D {
  const [, H, W] = x.shape;
  const [kh, kw] = wShape as [number, number, number, number];
  const [pt, pb] = samePad(H, kh, s);
  const [pl, pr] = samePad(W, kw, s);
  const xp = padOrCrop(x, [[0, 0], [pt, pb], [pl, pr], [0, 0]]);
  // out[ci, ky, kx, co] = Σ_{b, oy, ox} xp[b, ky + s·oy, kx + s·ox, ci] · dy[b, oy, ox, co]
  let out = tf.conv2d(tf.transpose(xp, [3, 1, 2, 0]), tf.transpose(dy, [1, 2, 0, 3]), 1, 'valid', 'NHWC', s);
  if (out.shape[1] !== kh || out.shape[2] !== kw) out = tf.slice(out, [0, 0, 0, 0], [-1, kh, kw, -1]);
  return tf.transpose(out, [1, 2, 0, 3]);
}

/**
 * `tf.conv2d(x, w, stride, 'same')` (NHWC) with the fast gradient above. `inputGrad: false` skips the gradient
 * with respect to x (zeros), for a layer that reads the images.
 */
export function conv2d(x: tf.Tensor4D, w: tf.Tensor4D, stride: number, inputGrad = true): tf.Tensor4D {
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xx, ww, save] = args as [tf.Tensor4D, tf.Tensor4D, tf.GradSaveFunc];
    save([xx, ww]);
    return {
      value: tf.conv2d(xx, ww, stride, 'same'),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [xs, ws] = saved as [tf.Tensor4D, tf.Tensor4D];
        const d = dy as tf.Tensor4D;
        return [inputGrad ? conv2dGradInput(d, ws, xs.shape, stride) : tf.zerosLike(xs), conv2dGradFilter(xs, d, ws.shape, stride)];
      },
    };
  }) as (x: tf.Tensor, w: tf.Tensor) => tf.Tensor4D;
  return op(x, w);
}

// ------------------------------------------------------------------------------------------------------------
// The detector

export interface DetectorConfig {
  /** Input side (a multiple of 32). */
  imgsz: number;
  nc: number;
  reg_max: number;
  /** Backbone widths at strides 2, 4, 8, 16, 32. */
  widths?: [number, number, number, number, number];
  /** Hidden width of each head branch. */
  headWidth?: number;
  /** Seed of the weight initialisation. */
  seed?: number;
}

export const STRIDES = [8, 16, 32] as const;

const silu = (x: tf.Tensor4D): tf.Tensor4D => tf.mul(x, tf.sigmoid(x));

interface ConvLayer {
  w: tf.Variable<tf.Rank.R4>;
  b: tf.Variable<tf.Rank.R1>;
  stride: number;
}

export class Detector {
  readonly config: Required<DetectorConfig>;
  readonly variables: tf.Variable[] = [];
  readonly #backbone: ConvLayer[] = [];
  readonly #heads: { box: ConvLayer[]; cls: ConvLayer[] }[] = [];
  #seed: number;

  constructor(config: DetectorConfig) {
    this.config = { widths: [16, 32, 64, 96, 128], headWidth: 48, seed: 0, ...config };
    const { nc, reg_max, imgsz, widths, headWidth } = this.config;
    if (imgsz % 32 !== 0) throw new Error(`imgsz: expected a multiple of 32, got ${imgsz}`);
    this.#seed = this.config.seed * 1000;
    let c = 3;
    widths.forEach((w, i) => {
      this.#backbone.push(this.#conv(c, w, 3, 2, 'silu'));
      if (i > 0) this.#backbone.push(this.#conv(w, w, 3, 1, 'silu'));
      c = w;
    });
    STRIDES.forEach((s, l) => {
      const cin = widths[l + 2]!;
      // Ultralytics' Detect.bias_init: box logits 1.0, class logits log(5 / nc / (imgsz / s)²).
      const box = [this.#conv(cin, headWidth, 3, 1, 'silu'), this.#conv(headWidth, 4 * reg_max, 1, 1, 'linear', 1.0)];
      const cls = [this.#conv(cin, headWidth, 3, 1, 'silu'), this.#conv(headWidth, nc, 1, 1, 'linear', Math.log(5 / nc / (imgsz / s) ** 2))];
      this.#heads.push({ box, cls });
    });
  }

  #conv(cin: number, cout: number, k: number, stride: number, act: 'silu' | 'linear', bias = 0): ConvLayer {
    const std = act === 'silu' ? Math.sqrt(2 / (k * k * cin)) : 0.01;
    const w = tf.variable(tf.randomNormal([k, k, cin, cout], 0, std, 'float32', ++this.#seed)) as tf.Variable<tf.Rank.R4>;
    const b = tf.variable(tf.fill([cout], bias)) as tf.Variable<tf.Rank.R1>;
    this.variables.push(w, b);
    return { w, b, stride };
  }

  /** Number of trainable parameters. */
  get parameterCount(): number {
    return this.variables.reduce((s, v) => s + v.size, 0);
  }

  static #apply(l: ConvLayer, x: tf.Tensor4D, inputGrad = true): tf.Tensor4D {
    return tf.add(conv2d(x, l.w, l.stride, inputGrad), l.b);
  }

  /**
   * Head outputs for images `[B, imgsz, imgsz, 3]` in [0, 1]: one `[B, 4*reg_max + nc, H_l, W_l]` tensor per level
   * (strides 8, 16, 32), channels first as the loss wants them.
   */
  predict(images: tf.Tensor4D): tf.Tensor4D[] {
    const feats: tf.Tensor4D[] = [];
    let x = images;
    this.#backbone.forEach((l, i) => {
      const y = silu(Detector.#apply(l, x, i > 0));
      x = l.stride === 1 ? tf.add(x, y) : y; // residual stride-1 blocks
      if (l.stride === 1 && i >= 4) feats.push(x); // the end of the stride-8, -16 and -32 stages
    });
    return feats.map((f, l) => {
      const { box, cls } = this.#heads[l]!;
      const b = Detector.#apply(box[1]!, silu(Detector.#apply(box[0]!, f)));
      const c = Detector.#apply(cls[1]!, silu(Detector.#apply(cls[0]!, f)));
      return tf.transpose(tf.concat([b, c], 3), [0, 3, 1, 2]);
    });
  }

  dispose(): void {
    this.variables.forEach((v) => v.dispose());
  }
}
