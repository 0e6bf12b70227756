/**
 * `npm run demo`: trains a small YOLO-style detector in TensorFlow.js with yolo-loss's v8DetectionLoss (through the
 * `yolo-loss/tfjs` adapter) on synthetic shapes generated on the fly, then scores it on held-out images.
 *
 * Writes to the output folder: loss_curve.png, predictions.png (held-out images, ground truth against
 * predictions), metrics.json (mAP@0.5, AP per class, timings, the options).
 *
 *     npm run demo -- --steps 600 --batch 16 --seed 0 --out out
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */

import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';

import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';

import { isYoloLossError, v8DetectionLoss, type DetectionBatch } from '../index';
import { tfjsLoss } from '../tfjs/index';
import { meanAveragePrecision, decode, nms, type Detection, type GroundTruth } from './metrics';
import { Detector, STRIDES } from './model';
import { lossCurvePng, predictionsPng, type LossPoint } from './plots';
import { CLASS_COLOURS, CLASS_NAMES, ShapesDataset, collate, yoloLabelLines, type Batch, type Sample } from './shapes';

const HELP = `Usage: npm run demo -- [options]

Trains a small YOLO-style detector (tfjs) with v8DetectionLoss on synthetic shapes and scores it on held-out images.

  --steps N       training steps (default 600)
  --batch N       images per step (default 16)
  --seed N        seed of the data, the held-out set and the weights (default 0)
  --out DIR       output folder for loss_curve.png, predictions.png, metrics.json (default out)
  --imgsz N       image side, a multiple of 32 (default 128)
  --lr X          peak learning rate of Adam (default 0.004)
  --val N         held-out images for mAP@0.5 (default 256)
  --backend NAME  tfjs backend: wasm (default, XNNPACK) or cpu (plain JavaScript, far slower)
  -h, --help      this text`;

interface Options {
  steps: number;
  batch: number;
  seed: number;
  out: string;
  imgsz: number;
  lr: number;
  val: number;
  backend: 'wasm' | 'cpu';
}

/** A bad command line: reported in one line with the usage, without a stack. */
class UsageError extends Error {}

function parseOptions(argv: string[]): Options | undefined {
  try {
    return checkOptions(argv);
  } catch (e) {
    throw e instanceof UsageError ? e : new UsageError(e instanceof Error ? e.message : String(e));
  }
}

function checkOptions(argv: string[]): Options | undefined {
  const { values } = parseArgs({
    args: argv,
    options: {
      steps: { type: 'string', default: '600' },
      batch: { type: 'string', default: '16' },
      seed: { type: 'string', default: '0' },
      out: { type: 'string', default: 'out' },
      imgsz: { type: 'string', default: '128' },
      lr: { type: 'string', default: '0.004' },
      val: { type: 'string', default: '256' },
      backend: { type: 'string', default: 'wasm' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(HELP);
    return undefined;
  }
  const int = (name: string, v: string, min: number): number => {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < min) throw new UsageError(`--${name}: expected an integer ≥ ${min}, got ${v}`);
    return n;
  };
  const imgsz = int('imgsz', values.imgsz, 32);
  if (imgsz % 32 !== 0) throw new UsageError(`--imgsz: expected a multiple of 32, got ${imgsz}`);
  const lr = Number(values.lr);
  if (!(lr > 0)) throw new UsageError(`--lr: expected a positive number, got ${values.lr}`);
  if (values.backend !== 'wasm' && values.backend !== 'cpu') throw new UsageError(`--backend: expected wasm or cpu, got ${values.backend}`);
  return {
    steps: int('steps', values.steps, 1),
    batch: int('batch', values.batch, 1),
    seed: int('seed', values.seed, 0),
    out: values.out,
    imgsz,
    lr,
    val: int('val', values.val, 1),
    backend: values.backend,
  };
}

/** Adam whose learning rate follows a schedule. */
class ScheduledAdam extends tf.AdamOptimizer {
  setLearningRate(lr: number): void {
    this.learningRate = lr;
  }
}

/** Linear warm-up over the first 5 % of the steps, then cosine decay to 5 % of the peak. */
function learningRate(step: number, steps: number, peak: number): number {
  const warm = Math.max(1, Math.round(steps * 0.05));
  if (step < warm) return peak * (0.1 + (0.9 * (step + 1)) / warm);
  const t = (step - warm) / Math.max(1, steps - warm);
  return peak * (0.05 + 0.95 * 0.5 * (1 + Math.cos(Math.PI * t)));
}

function labelsOf(c: Batch): DetectionBatch {
  const n = c.cls.length;
  return { batch_idx: { data: c.batch_idx, shape: [n] }, cls: { data: c.cls, shape: [n, 1] }, bboxes: { data: c.bboxes, shape: [n, 4] } };
}

/** Training batches, painted one ahead on a worker thread (in line when the worker script is not there, e.g.
 * when run from source). */
class Batches {
  readonly #worker: Worker | undefined;
  readonly #inline: ShapesDataset | undefined;
  #pending: Promise<Batch> | undefined;

  constructor(seed: number, size: number, readonly batch: number) {
    const script = path.join(__dirname, 'data-worker.js');
    if (existsSync(script)) {
      this.#worker = new Worker(script, { workerData: { seed, size, batch } });
      this.#worker.unref(); // never keeps the process alive (e.g. after an error)
      this.#pending = this.#request();
    } else {
      this.#inline = new ShapesDataset(seed, { size });
    }
  }

  #request(): Promise<Batch> {
    const w = this.#worker!;
    return new Promise((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
      w.postMessage('next');
    });
  }

  async next(): Promise<Batch> {
    if (this.#inline) return collate(this.#inline.take(this.batch));
    const b = await this.#pending!;
    this.#worker!.removeAllListeners('error');
    this.#pending = this.#request();
    return b;
  }

  async close(): Promise<void> {
    await this.#worker?.terminate();
  }
}

function fmtTime(s: number): string {
  const m = Math.floor(s / 60);
  return `${m}:${String(Math.floor(s % 60)).padStart(2, '0')}`;
}

/** A one-line progress bar (redrawn in place on a terminal, a line every 10 % otherwise). */
class Progress {
  readonly #tty = Boolean(process.stdout.isTTY);
  #lastLine = -1;

  constructor(readonly total: number) {}

  update(step: number, text: string, elapsed: number): void {
    const done = step / this.total;
    const width = 24;
    const fill = Math.round(done * width);
    const eta = step > 0 ? (elapsed / step) * (this.total - step) : 0;
    const line = `[${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${String(step).padStart(String(this.total).length)}/${this.total}  ${text}  ${fmtTime(elapsed)} elapsed, ${fmtTime(eta)} left`;
    if (this.#tty) {
      process.stdout.write(`\r${line}\x1b[K`);
    } else {
      const decile = Math.floor(done * 10);
      if (decile !== this.#lastLine || step === this.total) {
        this.#lastLine = decile;
        console.log(line);
      }
    }
  }

  done(): void {
    if (this.#tty) process.stdout.write('\n');
  }
}

interface Evaluation {
  map50: number;
  ap: number[];
  gtCount: number[];
  dets: Detection[][];
  gts: GroundTruth[][];
}

function gtBoxes(s: Sample, size: number): GroundTruth[] {
  return s.labels.map((l) => ({ cls: l.cls, x1: (l.cx - l.w / 2) * size, y1: (l.cy - l.h / 2) * size, x2: (l.cx + l.w / 2) * size, y2: (l.cy + l.h / 2) * size }));
}

/** mAP@0.5 of the model on `samples`: decode, per-class NMS (IoU 0.5, 100 per image), VOC-style AP per class. */
function evaluate(model: Detector, samples: readonly Sample[], size: number, nc: number, reg_max: number): Evaluation {
  const dets: Detection[][] = [];
  const chunk = 32;
  for (let i = 0; i < samples.length; i += chunk) {
    const part = samples.slice(i, i + chunk);
    const images = collate(part).images;
    const outs = tf.tidy(() => model.predict(tf.tensor4d(images, [part.length, size, size, 3])));
    const plain = outs.map((t) => ({ data: t.dataSync() as Float32Array, shape: t.shape }));
    for (const d of decode(plain, { nc, reg_max, strides: STRIDES, conf: 0.001 })) dets.push(nms(d, 0.5, 100));
    outs.forEach((t) => t.dispose());
  }
  const gts = samples.map((s) => gtBoxes(s, size));
  const r = meanAveragePrecision(dets, gts, nc, 0.5);
  return { map50: r.map, ap: r.ap, gtCount: r.gtCount, dets, gts };
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  if (!opts) return;
  const { steps, batch: B, seed, imgsz: S, backend } = opts;
  const nc = CLASS_NAMES.length;
  const reg_max = 8;

  tf.env().set('PROD', true); // no debug checks, no "install tfjs-node" banner
  await tf.setBackend(backend);
  await tf.ready();

  const train = new Batches(seed, S, B);
  const heldOut = new ShapesDataset(seed + 1_000_003, { size: S }).take(opts.val);
  const model = new Detector({ imgsz: S, nc, reg_max, seed });
  const criterion = new v8DetectionLoss({ nc, stride: [...STRIDES], reg_max, args: { box: 7.5, cls: 0.5, dfl: 1.5 } });
  const loss = tfjsLoss(criterion);
  const optimizer = new ScheduledAdam(opts.lr, 0.9, 0.999, 1e-7);

  console.log(`yolo-loss demo: training a YOLO-style detector in TensorFlow.js (${tf.getBackend()} backend, ${cpus().length} CPU cores)`);
  console.log(`  data: synthetic shapes, ${S}x${S}, ${nc} classes (${CLASS_NAMES.join(', ')}), generated on the fly; ${opts.val} held-out images`);
  console.log(`  e.g. the YOLO labels of a held-out image: ${yoloLabelLines(heldOut[0]!.labels).join(' | ')}`);
  console.log(`  model: ${model.parameterCount.toLocaleString('en-US')} parameters, strides ${STRIDES.join('/')}, reg_max ${reg_max}, Detect channels ${criterion.no}`);
  console.log(`  loss: v8DetectionLoss (box 7.5, cls 0.5, dfl 1.5) as a tfjs op (yolo-loss/tfjs); Adam, peak lr ${opts.lr}, ${steps} steps of ${B} images, seed ${seed}`);
  console.log('');

  const history: LossPoint[] = [];
  const progress = new Progress(steps);
  const t0 = performance.now();
  let lossTime = 0;
  let ema: number[] | undefined;
  const checkpoints = new Set([0.25, 0.5, 0.75].map((f) => Math.round(f * steps)));
  const midMaps: { step: number; map50: number }[] = [];
  for (let step = 0; step < steps; step++) {
    optimizer.setLearningRate(learningRate(step, steps, opts.lr));
    const data = await train.next();
    const labels = labelsOf(data);
    const x = tf.tensor4d(data.images, [B, S, S, 3]);
    const cost = optimizer.minimize(
      () => {
        const preds = model.predict(x);
        const tl = performance.now();
        const l = loss(preds, labels);
        lossTime += performance.now() - tl;
        return l;
      },
      true,
      model.variables,
    );
    cost?.dispose();
    x.dispose();
    const items = Array.from(loss.last!.lossItems);
    history.push({ step: step + 1, items });
    ema = ema ? ema.map((v, k) => 0.9 * v + 0.1 * items[k]!) : items;
    const elapsed = (performance.now() - t0) / 1000;
    progress.update(step + 1, `box ${ema[0]!.toFixed(3)}  cls ${ema[1]!.toFixed(3)}  dfl ${ema[2]!.toFixed(3)}  ${(((step + 1) * B) / elapsed).toFixed(0)} img/s`, elapsed);
    if (checkpoints.has(step + 1) && step + 1 < steps) {
      const e = evaluate(model, heldOut.slice(0, Math.min(128, heldOut.length)), S, nc, reg_max);
      midMaps.push({ step: step + 1, map50: e.map50 });
      if (process.stdout.isTTY) process.stdout.write('\n');
      console.log(`  step ${step + 1}: held-out mAP@0.5 ${e.map50.toFixed(3)} (first ${Math.min(128, heldOut.length)} images)`);
    }
  }
  progress.done();
  await train.close();
  const trainSeconds = (performance.now() - t0) / 1000;

  const te = performance.now();
  const ev = evaluate(model, heldOut, S, nc, reg_max);
  const evalSeconds = (performance.now() - te) / 1000;

  console.log('');
  console.log(`held-out mAP@0.5: ${ev.map50.toFixed(3)} on ${opts.val} images (decode, per-class NMS at IoU 0.5, VOC-style AP per class)`);
  CLASS_NAMES.forEach((name, c) => console.log(`  ${name.padEnd(14)} AP@0.5 ${ev.ap[c]!.toFixed(3)}  (${ev.gtCount[c]} boxes)`));

  mkdirSync(opts.out, { recursive: true });
  const curve = path.join(opts.out, 'loss_curve.png');
  writeFileSync(curve, lossCurvePng(history, ['box', 'cls', 'dfl'], `v8DetectionLoss, ${steps} steps of ${B} - held-out mAP@0.5 ${ev.map50.toFixed(3)}`));
  // The picture shows the best class of each object (class-agnostic NMS) scoring at least 0.25.
  const tiles = heldOut.slice(0, 8).map((s, i) => ({ image: s.image, gts: ev.gts[i]!, dets: nms(ev.dets[i]!.filter((d) => d.score >= 0.25), 0.5, 100, true) }));
  const pictures = path.join(opts.out, 'predictions.png');
  writeFileSync(
    pictures,
    predictionsPng(tiles, S, {
      cols: 4,
      scale: 2,
      classNames: CLASS_NAMES,
      classColours: CLASS_COLOURS,
      title: `held-out images - mAP@0.5 ${ev.map50.toFixed(3)}`,
      quantize: 8, // 5 bits per channel: invisible under the sensor noise, half the file size
    }),
  );
  const total = process.uptime();
  const metrics = {
    map50: ev.map50,
    ap50: Object.fromEntries(CLASS_NAMES.map((n, c) => [n, ev.ap[c]])),
    heldOutImages: opts.val,
    midTraining: midMaps,
    finalLossItems: { box: ema![0], cls: ema![1], dfl: ema![2] },
    seconds: { training: trainSeconds, lossAndGradient: lossTime / 1000, evaluation: evalSeconds, process: total },
    options: { ...opts, reg_max, nc, strides: STRIDES },
    backend: tf.getBackend(),
    cpuCores: cpus().length,
  };
  const metricsFile = path.join(opts.out, 'metrics.json');
  writeFileSync(metricsFile, JSON.stringify(metrics, null, 2) + '\n');
  console.log('');
  console.log(`time: ${trainSeconds.toFixed(1)} s training (${((steps * B) / trainSeconds).toFixed(1)} img/s; loss + gradient ${(lossTime / 1000).toFixed(1)} s of it), ${evalSeconds.toFixed(1)} s evaluation, ${total.toFixed(1)} s in all`);
  console.log(`wrote ${curve}, ${pictures}, ${metricsFile}`);
}

main().catch((e: unknown) => {
  if (e instanceof UsageError) console.error(`${e.message}\n\n${HELP}`);
  else if (isYoloLossError(e)) console.error(`yolo-loss demo failed: ${e.code}: ${e.message}`);
  else console.error('yolo-loss demo failed:', e);
  process.exitCode = 1;
});
