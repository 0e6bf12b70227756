#!/usr/bin/env node
/**
 * The package itself on a GPU machine (part of scripts/gpu-check.sh, which carries node, the built addon and
 * dist/ there: no npm, no node_modules). Plain CommonJS on purpose: it runs where only a node binary exists.
 *
 *     node scripts/gpu-node-check.cjs PACKAGE_DIR      # PACKAGE_DIR holds package.json, dist/, native/
 *
 * Checks, through the public JS API, on the real GPU:
 *   - cudaAvailability() finds it, and `device: 'auto'` holds both backends for v8DetectionLoss, E2EDetectLoss and
 *     TVPDetectLoss (`device` 'auto'; a `tal_topk` beyond the CUDA limit falls back to the CPU; `device: 'cuda'`
 *     refuses it);
 *   - CUDA against CPU, every output (loss, items, every gradient element) within the fixtures' tolerance
 *     |Δ| ≤ 1e-4·|cpu| + 1e-5·max|cpu|, for call / valueAndGrad / callAsync / valueAndGradAsync;
 *   - inputs unchanged; a loss without a CUDA backend still refuses `device: 'cuda'` (ERR_CUDA_UNAVAILABLE);
 *   - what runs on cuda:0 once a loss has used it (SASS of this build for the GPU's compute capability, read back
 *     from a loaded kernel; PTX JIT only on a GPU newer than the build), every device the probe lists, and
 *     `device: 'cuda:N'` past the last GPU (ERR_CUDA_UNAVAILABLE naming how many there are);
 * and times valueAndGrad from Float32Arrays (B=16, 640×640, nc=80, 8 and 1000 labels per image), CUDA and CPU, and
 * says which of the two 'auto' chose for those shapes after its six timed probe calls (and its time then).
 * Exit status 1 when a check fails.
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */
'use strict';

const path = require('node:path');

const { closeness, leaves } = require('./package-check/fixtures.cjs');

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node scripts/gpu-node-check.cjs PACKAGE_DIR');
  process.exit(2);
}
const yl = require(path.resolve(dir, 'dist', 'index.js'));

let failures = 0;
function check(ok, what) {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failures += 1;
}

/** A small seeded generator (the package's own PRNG is internal). */
function lcg(seed) {
  let s = BigInt(seed);
  return () => {
    s = (s * 6364136223846793005n + 1442695040888963407n) & 0xffffffffffffffffn;
    return Number(s >> 11n) / 2 ** 53;
  };
}

/** B images of size² px, box logits U(-2, 2), class logits U(-8, 2), `perImage` labels of side lo..hi. */
function detCase({ B, size, nc, perImage, lo, hi, seed }) {
  const r = lcg(seed);
  const C = 64 + nc;
  const preds = [8, 16, 32].map((s) => {
    const shape = [B, C, size / s, size / s];
    const hw = shape[2] * shape[3];
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    for (let i = 0; i < data.length; i++) data[i] = Math.floor(i / hw) % C < 64 ? r() * 4 - 2 : r() * 10 - 8;
    return { data, shape };
  });
  const idx = [];
  const cls = [];
  const boxes = [];
  for (let b = 0; b < B; b++) {
    for (let j = 0; j < perImage; j++) {
      const w = lo + (hi - lo) * r();
      const h = lo + (hi - lo) * r();
      idx.push(b);
      cls.push(Math.floor(r() * nc));
      boxes.push(w / 2 + (1 - w) * r(), h / 2 + (1 - h) * r(), w, h);
    }
  }
  const N = idx.length;
  const batch = {
    batch_idx: { data: Float32Array.from(idx), shape: [N] },
    cls: { data: Float32Array.from(cls), shape: [N, 1] },
    bboxes: { data: Float32Array.from(boxes), shape: [N, 4] },
  };
  return { model: { nc, stride: [8, 16, 32], reg_max: 16 }, preds, batch };
}

function compare(what, got, want) {
  const [a, b] = [got, want].map((r) => (Array.isArray(r) ? [r[0], r[1]] : [r.loss, r.lossItems, ...leaves(r.grads)]));
  const bad = a.length !== b.length ? 'different numbers of arrays' : a.map((x, i) => closeness(x, b[i])).find((v) => v);
  check(!bad, `${what}: CUDA = CPU within the fixtures' tolerance${bad ? ` (${bad})` : ''}`);
}

function snapshot(c) {
  return [...leaves(c.preds), ...leaves(c.batch)].map((d) => Float32Array.from(d));
}

function median(v) {
  const s = [...v].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function timeMs(fn, iters) {
  fn();
  const t = [];
  for (let i = 0; i < iters; i++) {
    const t0 = process.hrtime.bigint();
    fn();
    t.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return median(t);
}

async function main() {
  const avail = yl.cudaAvailability();
  console.log(`cudaAvailability(): ${JSON.stringify(avail)}`);
  check(avail.available === true, 'the probe finds the GPU');

  const small = { B: 2, size: 128, nc: 5, perImage: 4, lo: 0.1, hi: 0.6 };
  // E2E: one2many and one2one heads of the same shape. TVP: 3 text prompts and 2 visual prompts (the labels
  // index the visual-prompt slots; the text channels sit between the box and visual-prompt channels).
  const e = detCase({ ...small, seed: 2 });
  const e2 = detCase({ ...small, seed: 4 });
  const tvp = detCase({ ...small, seed: 3 });
  tvp.model.nc = 3;
  tvp.batch.cls.data = tvp.batch.cls.data.map((v) => v % 2);
  const makers = [
    ['v8DetectionLoss', (c, o) => new yl.v8DetectionLoss(c.model, 10, o), detCase({ ...small, seed: 1 })],
    ['E2EDetectLoss', (c, o) => new yl.E2EDetectLoss(c.model, o), { model: e.model, preds: { one2many: e.preds, one2one: e2.preds }, batch: e.batch }],
    ['TVPDetectLoss', (c, o) => new yl.TVPDetectLoss(c.model, o), tvp],
  ];

  for (const [name, make, c] of makers) {
    const before = snapshot(c);
    const gpu = make(c, { device: 'cuda' });
    const cpu = make(c, { device: 'cpu' });
    check(make(c).device === 'auto', `${name}: 'auto' is ${make(c).device}, not both backends`);
    compare(`${name} valueAndGrad`, gpu.valueAndGrad(c.preds, c.batch), cpu.valueAndGrad(c.preds, c.batch));
    compare(`${name} call`, gpu.call(c.preds, c.batch), cpu.call(c.preds, c.batch));
    compare(`${name} valueAndGradAsync`, await gpu.valueAndGradAsync(c.preds, c.batch), cpu.valueAndGrad(c.preds, c.batch));
    compare(`${name} callAsync`, await gpu.callAsync(c.preds, c.batch), cpu.call(c.preds, c.batch));
    const after = snapshot(c);
    check(before.every((d, i) => d.every((v, j) => Object.is(v, after[i][j]))), `${name}: inputs unchanged`);
  }

  const m = makers[0][2].model;
  check(new yl.v8DetectionLoss(m, 33).device === 'cpu', "tal_topk 33: 'auto' falls back to the CPU");
  try {
    new yl.v8DetectionLoss(m, 33, { device: 'cuda' });
    check(false, "tal_topk 33: 'cuda' refuses it");
  } catch (err) {
    check(err.code === 'ERR_INVALID_ARGUMENT', `tal_topk 33: 'cuda' refuses it (${err.code})`);
  }
  try {
    new yl.v8SegmentationLoss(m, { device: 'cuda' });
    check(false, "v8SegmentationLoss: 'cuda' is refused (no CUDA backend)");
  } catch (err) {
    check(err.code === 'ERR_CUDA_UNAVAILABLE', `v8SegmentationLoss: 'cuda' is refused (${err.code})`);
  }

  // Where the kernels come from, now that cuda:0 is open: read back from a loaded kernel.
  const used = yl.cudaAvailability();
  const k = used.kernels || {};
  const own = `sm_${(used.computeCapability || '').replace('.', '')}`;
  console.log(
    `cuda:0 ${used.deviceName}: compute capability ${used.computeCapability}, kernels ${k.source} ${k.target} ` +
      `(confirmed: ${k.confirmed}); driver CUDA ${used.driverVersion}; SASS in this build: ${used.sassArchitectures.join(' ')}`,
  );
  used.devices.forEach((d) =>
    console.log(`  cuda:${d.ordinal} ${d.name} cc ${d.computeCapability} ${(d.totalMemoryBytes / 2 ** 30).toFixed(1)} GiB ` +
      `${d.usable ? 'usable' : `unusable: ${d.reason}`} kernels ${JSON.stringify(d.kernels)}`),
  );
  check(k.confirmed === true, 'cuda:0: the loaded kernels say where they come from');
  if (used.sassArchitectures.includes(own)) {
    check(k.source === 'sass' && k.target === own, `cuda:0: runs this build's SASS for ${own} (got ${k.source} ${k.target})`);
  }
  const missing = `cuda:${used.devices.length}`;
  try {
    new yl.v8DetectionLoss(m, 10, { device: missing });
    check(false, `'${missing}' is refused (no such GPU)`);
  } catch (err) {
    const says = (err.message || '').includes(`${used.devices.length} CUDA device`);
    check(err.code === 'ERR_CUDA_UNAVAILABLE' && says, `'${missing}' is refused, naming the GPU count (${err.message})`);
  }

  // End-to-end time from Float32Arrays, the benchmark's shapes.
  const rows = [];
  for (const [labels, lo, hi] of [[8, 0.05, 0.6], [1000, 0.01, 0.08]]) {
    const c = detCase({ B: 16, size: 640, nc: 80, perImage: labels, lo, hi, seed: 7 });
    const gpu = new yl.v8DetectionLoss(c.model, 10, { device: 'cuda' });
    const cpu = new yl.v8DetectionLoss(c.model, 10, { device: 'cpu' });
    const auto = new yl.v8DetectionLoss(c.model);
    compare(`B16 640² ${labels} labels/img valueAndGrad`, gpu.valueAndGrad(c.preds, c.batch), cpu.valueAndGrad(c.preds, c.batch));
    const g = timeMs(() => gpu.valueAndGrad(c.preds, c.batch), 10);
    const p = timeMs(() => cpu.valueAndGrad(c.preds, c.batch), 5);
    for (let i = 0; i < 6; i++) auto.valueAndGrad(c.preds, c.batch);
    const chosen = auto.deviceFor(c.preds, c.batch);
    check(chosen === 'cpu' || chosen === 'cuda', `${labels} labels/img: 'auto' decided after six calls (${chosen})`);
    const a = timeMs(() => auto.valueAndGrad(c.preds, c.batch), 5);
    rows.push(
      `B16 640² nc80 ${labels} labels/img: valueAndGrad from Float32Array, CUDA ${g.toFixed(1)} ms, CPU ${p.toFixed(1)} ms, ` +
        `'auto' chose ${chosen} (${a.toFixed(1)} ms)`,
    );
  }
  rows.forEach((r) => console.log(r));
  console.log(failures === 0 ? 'node check: all ok' : `node check: ${failures} FAILED`);
  process.exit(failures === 0 ? 0 : 1);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
