/**
 * `npm run bench` (issue 5): times `valueAndGrad` of every task loss at standard training shapes, runs the
 * Ultralytics reference on the same inputs in the same run (when `python3` can import it), and reports median
 * time, ratio to the reference and peak resident memory as a console table, `docs/bench/results.json`,
 * `docs/bench/results.md` and the chart `docs/bench/time_vs_labels.svg`.
 *
 *   npm run bench                       # everything (several minutes: the reference needs ~14 s per call at
 *                                       # 1000 labels per image)
 *   npm run bench -- --quick            # fewer iterations
 *   npm run bench -- --no-reference     # ours only
 *   npm run bench -- --cases det8,det1000
 *   npm run bench -- --list             # the cases
 *
 * Other options: `--out DIR` (default docs/bench), `--device cpu|cuda|auto` (ours, default cpu),
 * `--ref-threads N` (torch threads, default 2), `--python EXE` (default python3), `--keep-data` (keep the
 * generated inputs and print where they are).
 *
 * Each case: one seeded generator (data.ts) writes the inputs to a temporary folder; ours runs in a fresh Node
 * process (worker.ts) and the reference in a fresh Python process (reference.py), one after the other, so each
 * process's peak RSS is that case's own. Both report the median of several timed calls after a warm-up.
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */

import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import * as lib from '../index';
import { anchorsOf, CASES, CLASS_OF, shapeOf, type CaseDef } from './cases';
import { generateCase } from './data';
import { chart } from './svg';
import { OURS_PLAN, OURS_PLAN_QUICK, REF_PLAN, REF_PLAN_QUICK, type IterPlan } from './timing';

const ROOT = path.resolve(__dirname, '..', '..');

interface Options {
  quick: boolean;
  reference: boolean;
  cases: string[] | undefined;
  out: string;
  device: string;
  refThreads: number;
  python: string;
  keepData: boolean;
  list: boolean;
}

function parseArgs(argv: string[]): Options {
  const o: Options = {
    quick: false,
    reference: true,
    cases: undefined,
    out: path.join(ROOT, 'docs', 'bench'),
    device: 'cpu',
    refThreads: 2,
    python: 'python3',
    keepData: false,
    list: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const val = (): string => {
      const eq = a.indexOf('=');
      if (eq >= 0) return a.slice(eq + 1);
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a}: missing value`);
      return v;
    };
    const key = a.split('=')[0];
    switch (key) {
      case '--quick': o.quick = true; break;
      case '--no-reference': o.reference = false; break;
      case '--cases': o.cases = val().split(',').map((s) => s.trim()).filter(Boolean); break;
      case '--out': o.out = path.resolve(val()); break;
      case '--device': o.device = val(); break;
      case '--ref-threads': o.refThreads = Number(val()); break;
      case '--python': o.python = val(); break;
      case '--keep-data': o.keepData = true; break;
      case '--list': o.list = true; break;
      case '--help': case '-h':
        console.log(fs.readFileSync(__filename, 'utf8').split('*/')[0]);
        process.exit(0);
        break;
      default:
        throw new Error(`unknown option ${a} (see --help)`);
    }
  }
  return o;
}

// ------------------------------------------------------------------------------------------------------------
// Machine

interface Machine {
  cpu: string;
  cpu_short: string;
  cores: number;
  mem_gib: number;
  os: string;
  node: string;
  git: string;
  ours_threads: string;
}

function machine(): Machine {
  let git = 'unknown';
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: ROOT, encoding: 'utf8' }).trim();
    git = dirty ? `${head} (with uncommitted changes)` : head;
  } catch {
    /* not a git checkout */
  }
  let cpu = os.cpus()[0]?.model?.trim() ?? 'unknown';
  let cpuShort = cpu;
  try {
    // A virtual CPU's model name is often generic ("AMD EPYC"): add family/model and the hypervisor from lscpu.
    const ls = execFileSync('lscpu', [], { encoding: 'utf8' });
    const field = (k: string): string | undefined => new RegExp(`^${k}:\\s*(.+)$`, 'm').exec(ls)?.[1]?.trim();
    const model = field('Model name');
    if (model) cpu = cpuShort = model;
    const extra = [
      field('CPU family') !== undefined ? `family ${field('CPU family')} model ${field('Model')}` : undefined,
      field('Hypervisor vendor') !== undefined ? `${field('Hypervisor vendor')} guest` : undefined,
      field('L3 cache') !== undefined ? `L3 ${field('L3 cache')}` : undefined,
    ].filter((x) => x !== undefined);
    if (extra.length) cpu += ` (${extra.join(', ')})`;
  } catch {
    /* no lscpu */
  }
  return {
    cpu,
    cpu_short: cpuShort,
    cores: os.cpus().length,
    mem_gib: os.totalmem() / 2 ** 30,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    git,
    ours_threads: process.env['RAYON_NUM_THREADS'] ? `RAYON_NUM_THREADS=${process.env['RAYON_NUM_THREADS']}` : `${os.cpus().length} (rayon default: all cores)`,
  };
}

function load(): [number, number, number] {
  const l = os.loadavg();
  return [l[0]!, l[1]!, l[2]!];
}

// ------------------------------------------------------------------------------------------------------------
// Running one side

interface SideResult {
  status: 'ok' | 'error' | 'not-bound' | 'skipped';
  message?: string;
  median_ms?: number;
  min_ms?: number;
  p25_ms?: number;
  p75_ms?: number;
  max_ms?: number;
  warmup_ms?: number[];
  times_ms?: number[];
  iters?: number;
  peak_rss_mb?: number;
  rss_after_load_mb?: number;
  loss?: number[];
  loss_items?: number[];
  grad_norm?: number;
  threads?: number | string;
  [k: string]: unknown;
}

function lastJsonLine(stdout: string): SideResult | undefined {
  const lines = stdout.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('{'));
  for (let i = lines.length - 1; i >= 0; i--) {
    try {
      return JSON.parse(lines[i]!) as SideResult;
    } catch {
      /* keep looking */
    }
  }
  return undefined;
}

function runChild(exe: string, args: string[], env: NodeJS.ProcessEnv, timeoutS: number): SideResult {
  const r = spawnSync(exe, args, { cwd: ROOT, env, encoding: 'utf8', maxBuffer: 64 * 2 ** 20, timeout: timeoutS * 1000 });
  if (r.error) return { status: 'error', message: `${exe}: ${r.error.message}` };
  const res = lastJsonLine(r.stdout ?? '');
  if (res) return res;
  const why = r.signal ? `killed by ${r.signal}` : `exit code ${r.status}`;
  const tail = `${r.stderr ?? ''}`.trim().split('\n').slice(-5).join(' | ');
  return { status: 'error', message: `${path.basename(exe)} ${why}, no result${tail ? `: ${tail}` : ''}` };
}

function runOurs(dir: string, plan: IterPlan, device: string): SideResult {
  return runChild(process.execPath, ['--expose-gc', path.join(__dirname, 'worker.js'), dir, JSON.stringify({ plan, device })], process.env, 1200);
}

function runReference(o: Options, dir: string, plan: IterPlan): SideResult {
  const env = { ...process.env, OMP_NUM_THREADS: String(o.refThreads), MKL_NUM_THREADS: String(o.refThreads) };
  return runChild(o.python, [path.join(ROOT, 'bench', 'reference.py'), dir, JSON.stringify({ plan, threads: o.refThreads })], env, 3600);
}

interface Probe {
  ok: boolean;
  error?: string;
  python?: string;
  torch?: string;
  ultralytics?: string;
  numpy?: string;
}

function probeReference(o: Options): Probe {
  const r = spawnSync(o.python, [path.join(ROOT, 'bench', 'reference.py'), '--probe'], { cwd: ROOT, encoding: 'utf8', timeout: 300_000 });
  if (r.error) return { ok: false, error: `${o.python} cannot be run (${r.error.message})` };
  const p = lastJsonLine(r.stdout ?? '') as unknown as Probe | undefined;
  if (!p) return { ok: false, error: `${o.python} bench/reference.py --probe printed no result (exit ${r.status}): ${(r.stderr ?? '').trim().split('\n').slice(-2).join(' | ')}` };
  if (!p.ok) p.error = `${o.python} cannot import the reference: ${p.error}`;
  return p;
}

// ------------------------------------------------------------------------------------------------------------
// Report

interface CaseResult {
  id: string;
  task: string;
  class: string;
  group: string;
  shape: string;
  note: string;
  B: number;
  img: [number, number];
  anchors: number;
  labels_per_image: number;
  labels: number;
  input_mb: number;
  ours: SideResult;
  reference: SideResult;
  /** reference median / ours median */
  ratio: number | null;
  /** Median of the memory-traffic floor measured by ours' worker (floor.ts), and ours median / that. */
  floor_ms: number | null;
  ours_over_floor: number | null;
  /** max_i |ours_i − ref_i| / max_i |ref_i| over the loss vector (a check that both saw the same inputs) */
  loss_rel_diff: number | null;
  /** |‖grad‖ ours − ‖grad‖ ref| / ‖grad‖ ref over all prediction tensors */
  grad_norm_rel_diff: number | null;
  loadavg_before: number[];
  loadavg_after: number[];
  /** Why the timings of this case look disturbed (empty when they do not). */
  noisy: string[];
}

/** Interquartile spread relative to the median above this marks a side as disturbed (other load on the machine). */
const NOISY_SPREAD = 0.2;

function noiseOf(ours: SideResult, reference: SideResult): string[] {
  const out: string[] = [];
  for (const [side, s] of [['ours', ours], ['reference', reference]] as const) {
    if (s.status !== 'ok' || !s.median_ms || (s.iters ?? 0) < 3) continue;
    const spread = (s.p75_ms! - s.p25_ms!) / s.median_ms;
    if (spread > NOISY_SPREAD) out.push(`${side} IQR ${(spread * 100).toFixed(0)} %`);
  }
  return out;
}

/** "4.03 ms", "196 ms", "13.8 s" */
function fmtMs(v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return '—';
  if (v >= 10000) return `${(v / 1000).toFixed(1)} s`;
  if (v >= 1000) return `${(v / 1000).toFixed(2)} s`;
  if (v >= 100) return `${v.toFixed(0)} ms`;
  if (v >= 10) return `${v.toFixed(1)} ms`;
  return `${v.toFixed(2)} ms`;
}

function fmtMb(v: number | undefined): string {
  return v === undefined || !Number.isFinite(v) ? '—' : v.toFixed(0);
}

function fmtRatio(r: number | null): string {
  if (r === null) return '—';
  return r >= 100 ? `${r.toFixed(0)}×` : `${r.toFixed(1)}×`;
}

/** ours ÷ floor: "2.35×" */
function fmtFloorRatio(r: number | null): string {
  return r === null ? '—' : `${r.toFixed(2)}×`;
}

/** The floor's median from ours' worker (floor.ts), when it ran. */
function floorOf(ours: SideResult): number | null {
  const f = ours['floor'] as { median_ms?: number } | undefined;
  return ours.status === 'ok' && f?.median_ms !== undefined && Number.isFinite(f.median_ms) ? f.median_ms : null;
}

function sideCell(s: SideResult): string | undefined {
  if (s.status === 'ok') return undefined;
  if (s.status === 'not-bound') return 'not bound yet';
  if (s.status === 'skipped') return s.message ?? 'not run';
  return 'error';
}

function relDiff(a: number[] | undefined, b: number[] | undefined): number | null {
  if (!a || !b || a.length !== b.length || a.length === 0) return null;
  const scale = Math.max(...b.map(Math.abs), 1e-12);
  return Math.max(...a.map((x, i) => Math.abs(x - b[i]!))) / scale;
}

function table(rows: string[][]): string {
  const w = rows[0]!.map((_, j) => Math.max(...rows.map((r) => [...r[j]!].length)));
  const line = (r: string[]): string => r.map((c, j) => (j < 2 ? c.padEnd(w[j]!) : c.padStart(w[j]!))).join('  ');
  return [line(rows[0]!), w.map((n) => '-'.repeat(n)).join('  '), ...rows.slice(1).map(line)].join('\n');
}

function consoleRows(results: CaseResult[]): string[][] {
  const rows = [['case', 'shape', 'ours', 'reference', 'ratio', 'floor', 'ours/floor', 'ours RSS MB', 'ref RSS MB', 'iters o/r', 'loss Δrel']];
  for (const r of results) {
    rows.push([
      r.id,
      r.shape,
      sideCell(r.ours) ?? fmtMs(r.ours.median_ms),
      sideCell(r.reference) ?? fmtMs(r.reference.median_ms),
      fmtRatio(r.ratio) + (r.noisy.length ? '*' : ''),
      r.floor_ms === null ? '—' : fmtMs(r.floor_ms),
      fmtFloorRatio(r.ours_over_floor),
      r.ours.status === 'ok' ? fmtMb(r.ours.peak_rss_mb) : '—',
      r.reference.status === 'ok' ? fmtMb(r.reference.peak_rss_mb) : '—',
      `${r.ours.iters ?? '—'}/${r.reference.iters ?? '—'}`,
      r.loss_rel_diff === null ? '—' : r.loss_rel_diff.toExponential(1),
    ]);
  }
  return rows;
}

/** The median of `valueAndGrad(preds, batch, { out })` (caller-owned gradient buffers), or why there is none. */
function outCell(r: CaseResult): string {
  const o = r.ours['out'] as (Partial<SideResult> & { same_grad_norm?: boolean }) | undefined;
  if (r.ours.status !== 'ok' || o?.median_ms === undefined) return '—';
  return fmtMs(o.median_ms) + (o.same_grad_norm === false ? ' (≠ fresh!)' : '');
}

/** `rows` with the column "ours {out}" after "ours" (rows[0] the header, then one row per result). */
function withOutColumn(rows: string[][], results: CaseResult[]): string[][] {
  const at = rows[0]!.indexOf('ours') + 1;
  return rows.map((row, i) => [...row.slice(0, at), i === 0 ? 'ours {out}' : outCell(results[i - 1]!), ...row.slice(at)]);
}

function markdownTable(results: CaseResult[]): string {
  const out = [
    '| case | loss | shape | ours median | ours {out} median | reference median | ratio | floor | ours ÷ floor | ours peak RSS | reference peak RSS |',
    '|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of results) {
    const ours = sideCell(r.ours) ?? fmtMs(r.ours.median_ms);
    const ref = sideCell(r.reference) ?? fmtMs(r.reference.median_ms);
    out.push(
      `| \`${r.id}\` | ${r.class} | ${r.shape} | ${ours} | ${outCell(r)} | ${ref} | ${fmtRatio(r.ratio)}${r.noisy.length ? '*' : ''} | ` +
        `${r.floor_ms === null ? '—' : fmtMs(r.floor_ms)} | ${fmtFloorRatio(r.ours_over_floor)} | ` +
        `${r.ours.status === 'ok' ? `${fmtMb(r.ours.peak_rss_mb)} MB` : '—'} | ` +
        `${r.reference.status === 'ok' ? `${fmtMb(r.reference.peak_rss_mb)} MB` : '—'} |`,
    );
  }
  return out.join('\n');
}

interface Target {
  name: string;
  verdict: 'met' | 'missed' | 'not measured';
  detail: string;
}

function evaluateTargets(results: CaseResult[]): Target[] {
  const by = (id: string): CaseResult | undefined => results.find((r) => r.id === id);
  const ok = (s: SideResult | undefined): s is SideResult & { median_ms: number; peak_rss_mb: number } => s?.status === 'ok';
  const targets: Target[] = [];
  const ratioTarget = (id: string, min: number, name: string): void => {
    const r = by(id);
    if (!r || r.ratio === null) {
      targets.push({ name, verdict: 'not measured', detail: r ? 'reference or ours did not run' : `case ${id} not run` });
      return;
    }
    targets.push({
      name,
      verdict: r.ratio >= min ? 'met' : 'missed',
      detail:
        `${fmtRatio(r.ratio)} (ours ${fmtMs(r.ours.median_ms)}, reference ${fmtMs(r.reference.median_ms)}; ` +
        `fastest calls: ${fmtMs(r.ours.min_ms)} vs ${fmtMs(r.reference.min_ms)}, ${fmtRatio(r.reference.min_ms! / r.ours.min_ms!)})`,
    });
  };
  // Issue 13: every case at least 25x the reference, det1000 at least 150x.
  for (const r of results) {
    if (r.id !== 'det1000') ratioTarget(r.id, 25, `${r.id}: >= 25x faster than the reference`);
  }
  ratioTarget('det1000', 150, 'det1000: >= 150x faster than the reference');
  const d8 = by('det8');
  const d1k = by('det1000');
  if (ok(d8?.ours) && ok(d1k?.ours)) {
    const q = d1k.ours.peak_rss_mb / d8.ours.peak_rss_mb;
    targets.push({
      name: 'det1000: peak RSS <= 1.5x det8',
      verdict: q <= 1.5 ? 'met' : 'missed',
      detail: `${q.toFixed(2)}x (${fmtMb(d1k.ours.peak_rss_mb)} MB vs ${fmtMb(d8.ours.peak_rss_mb)} MB; inputs alone ` +
        `${fmtMb(d8.ours.rss_after_load_mb)} MB after loading)`,
    });
  } else {
    targets.push({ name: 'det1000: peak RSS <= 1.5x det8', verdict: 'not measured', detail: 'det8 or det1000 did not run' });
  }
  // Linear growth: the exponent k of t ∝ x^k between the smallest and the largest point (k <= 1: at most linear).
  const slope = (ids: string[], x: (r: CaseResult) => number, name: string, what: string): void => {
    const rs = ids.map(by).filter((r): r is CaseResult => ok(r?.ours));
    if (rs.length < 2) {
      targets.push({ name, verdict: 'not measured', detail: `needs at least two of ${ids.join(', ')}` });
      return;
    }
    const first = rs[0]!;
    const last = rs[rs.length - 1]!;
    const k = Math.log(last.ours.median_ms! / first.ours.median_ms!) / Math.log(x(last) / x(first));
    const per = rs.map((r) => `${x(r)}: ${fmtMs(r.ours.median_ms)} (${((r.ours.median_ms! / x(r)) * (what === 'image' ? 1 : 1000)).toFixed(3)} ms per ${what === 'image' ? 'image' : '1000 anchors'})`);
    targets.push({
      name,
      verdict: k <= 1.1 ? 'met' : 'missed',
      detail: `t ∝ ${what === 'image' ? 'B' : 'A'}^${k.toFixed(2)}; ${per.join(', ')}`,
    });
  };
  slope(['det8_b1', 'det8_b4', 'det8'], (r) => r.B, 'time linear in B (B = 1, 4, 16; 640x640, 8 labels/img)', 'image');
  slope(['det8_320', 'det8', 'det8_960'], (r) => r.anchors, 'time linear in anchors (320, 640, 960 px; B = 16)', 'anchors');
  return targets;
}

// ------------------------------------------------------------------------------------------------------------

function main(): void {
  const o = parseArgs(process.argv.slice(2));
  if (o.list) {
    for (const c of CASES) console.log(`${c.id.padEnd(9)} ${CLASS_OF[c.task].padEnd(19)} ${shapeOf(c)}  (${c.note})`);
    return;
  }
  let cases = CASES;
  if (o.cases) {
    const unknown = o.cases.filter((id) => !CASES.some((c) => c.id === id));
    if (unknown.length) throw new Error(`unknown case(s) ${unknown.join(', ')}; known: ${CASES.map((c) => c.id).join(', ')}`);
    cases = CASES.filter((c) => o.cases!.includes(c.id));
  }
  const m = machine();
  const oursPlan = o.quick ? OURS_PLAN_QUICK : OURS_PLAN;
  const refPlan = o.quick ? REF_PLAN_QUICK : REF_PLAN;

  console.log('yolo-loss benchmark (issue 5): valueAndGrad vs the Ultralytics reference, same inputs, same run');
  console.log(`  machine: ${m.cpu}, ${m.cores} cores, ${m.mem_gib.toFixed(1)} GiB RAM, ${m.os}`);
  console.log(`  ours:    yolo-loss ${m.git}, Node ${m.node}, device ${o.device}, threads ${m.ours_threads}`);
  let probe: Probe = { ok: false, error: 'not requested (--no-reference)' };
  if (o.reference) {
    probe = probeReference(o);
    if (probe.ok) {
      console.log(`  reference: ultralytics ${probe.ultralytics}, torch ${probe.torch}, Python ${probe.python}, CPU float32, ${o.refThreads} torch threads`);
      if (probe.ultralytics !== '8.3.117') console.log(`  WARNING: the reference is ultralytics ${probe.ultralytics}, not 8.3.117`);
    } else {
      console.log(`  reference: NOT RUN — ${probe.error}`);
      console.log('             (needs torch and ultralytics==8.3.117; the table has our numbers only)');
    }
  } else {
    console.log('  reference: not run (--no-reference)');
  }
  const l0 = load();
  console.log(`  load average at start: ${l0.map((x) => x.toFixed(2)).join(' ')}`);
  const describePlan = (p: IterPlan): string => `${p.warmup} warm-up, then ${p.min}–${p.max} timed calls (about ${p.targetS} s)`;
  console.log(`  iterations: ours ${describePlan(oursPlan)}; reference ${describePlan(refPlan)}; median reported`);
  console.log('');

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'yolo-loss-bench-'));
  const results: CaseResult[] = [];
  try {
    for (const c of cases) {
      const cls = CLASS_OF[c.task];
      const bound = typeof (lib as unknown as Record<string, unknown>)[cls] === 'function';
      const dir = path.join(tmp, c.id);
      const before = load();
      process.stdout.write(`${c.id.padEnd(9)} ${shapeOf(c)}: generating inputs... `);
      const t0 = Date.now();
      const man = generateCase(c, dir);
      process.stdout.write(`${(man.bytes / 2 ** 20).toFixed(0)} MiB in ${((Date.now() - t0) / 1000).toFixed(1)} s; `);
      let ours: SideResult;
      if (bound) {
        process.stdout.write('ours... ');
        ours = runOurs(dir, oursPlan, o.device);
        process.stdout.write(ours.status === 'ok' ? `${fmtMs(ours.median_ms)}; ` : `${ours.status}; `);
      } else {
        ours = { status: 'not-bound', message: `${cls} is not exported by the package yet` };
        process.stdout.write(`ours: ${cls} not bound yet; `);
      }
      let reference: SideResult;
      if (probe.ok) {
        process.stdout.write('reference... ');
        reference = runReference(o, dir, refPlan);
        process.stdout.write(reference.status === 'ok' ? fmtMs(reference.median_ms) : reference.status);
      } else {
        reference = { status: 'skipped', message: 'not run' };
      }
      process.stdout.write('\n');
      for (const [side, s] of [['ours', ours], ['reference', reference]] as const) {
        if (s.status === 'error') console.log(`          ${side} failed: ${s.message}`);
      }
      if (!o.keepData) fs.rmSync(dir, { recursive: true, force: true });
      const both = ours.status === 'ok' && reference.status === 'ok';
      results.push({
        id: c.id,
        task: c.task,
        class: cls,
        group: c.group,
        shape: shapeOf(c),
        note: c.note,
        B: c.B,
        img: [c.imgH, c.imgW],
        anchors: anchorsOf(c),
        labels_per_image: c.labelsPerImage,
        labels: c.B * c.labelsPerImage,
        input_mb: man.bytes / 2 ** 20,
        ours,
        reference,
        ratio: both ? reference.median_ms! / ours.median_ms! : null,
        floor_ms: floorOf(ours),
        ours_over_floor: floorOf(ours) === null ? null : ours.median_ms! / floorOf(ours)!,
        loss_rel_diff: both ? relDiff(ours.loss, reference.loss) : null,
        grad_norm_rel_diff:
          both && ours.grad_norm !== undefined && reference.grad_norm !== undefined
            ? Math.abs(ours.grad_norm - reference.grad_norm) / Math.max(reference.grad_norm, 1e-30)
            : null,
        loadavg_before: before,
        loadavg_after: load(),
        noisy: noiseOf(ours, reference),
      });
    }
  } finally {
    if (o.keepData) console.log(`inputs kept in ${tmp}`);
    else fs.rmSync(tmp, { recursive: true, force: true });
  }
  const l1 = load();

  console.log('');
  console.log(table(withOutColumn(consoleRows(results), results)));
  console.log('');
  console.log('  ours: valueAndGrad end to end from Float32Array (loss + gradients of every prediction tensor);');
  console.log('  ours {out}: the same into caller-owned gradient buffers (valueAndGrad(preds, batch, { out }), one set reused);');
  console.log('  reference: criterion(preds, batch) + loss.sum().backward(); ratio = reference / ours (medians);');
  console.log('  floor: read every prediction tensor once and write every gradient once (memcpy into reused buffers),');
  console.log('    with as many threads as ours, in ours\' process after ours, same inputs; ours/floor = ours median / floor median;');
  console.log('  RSS: peak resident set of the process that ran the case (inputs, library/runtime included);');
  console.log('  loss Δrel: max |ours − ref| / max |ref| over the loss vector (both sides saw the same inputs).');
  if (results.some((r) => r.noisy.length)) {
    console.log(`  *: timings disturbed by other load on the machine (interquartile range above ${NOISY_SPREAD * 100} % of the median):`);
    for (const r of results.filter((x) => x.noisy.length)) console.log(`     ${r.id}: ${r.noisy.join('; ')}`);
  }
  const notBound = results.filter((r) => r.ours.status === 'not-bound').map((r) => `${r.id} (${r.class})`);
  if (notBound.length) console.log(`  not bound yet in the package: ${notBound.join(', ')}`);
  console.log(`  load average: ${l0.map((x) => x.toFixed(2)).join(' ')} at start, ${l1.map((x) => x.toFixed(2)).join(' ')} at the end`);
  const targets = evaluateTargets(results);
  console.log('');
  console.log('Targets (benchmark goals of issues 5 and 13, not tests):');
  for (const t of targets) console.log(`  [${t.verdict}] ${t.name}: ${t.detail}`);

  // Files
  fs.mkdirSync(o.out, { recursive: true });
  const when = new Date().toISOString();
  const json = {
    schema: 1,
    generated_at: when,
    machine: m,
    loadavg: { start: l0, end: l1 },
    options: { quick: o.quick, reference: o.reference, device: o.device, ref_threads: o.refThreads, cases: cases.map((c) => c.id) },
    plans: { ours: oursPlan, reference: refPlan },
    reference: probe,
    results,
    targets,
  };
  fs.writeFileSync(path.join(o.out, 'results.json'), JSON.stringify(json, null, 2) + '\n');

  const machineLine =
    `${m.cpu}, ${m.cores} cores, ${m.mem_gib.toFixed(0)} GiB RAM, ${m.os}; Node ${m.node}` +
    (probe.ok ? `; reference ultralytics ${probe.ultralytics} / torch ${probe.torch}, CPU fp32, ${o.refThreads} threads` : '; reference not run') +
    `; load average ${l0.map((x) => x.toFixed(1)).join(' ')} → ${l1.map((x) => x.toFixed(1)).join(' ')}`;
  const md = [
    `Machine: ${machineLine}. yolo-loss ${m.git}, device ${o.device}, ${when.slice(0, 10)}${o.quick ? ', --quick' : ''}.`,
    '',
    markdownTable(results),
    '',
    ...(results.some((r) => r.noisy.length)
      ? [`\\* timings disturbed by other load on the machine (interquartile range above ${NOISY_SPREAD * 100} % of the median): ` +
          results.filter((r) => r.noisy.length).map((r) => `${r.id} (${r.noisy.join('; ')})`).join(', '), '']
      : []),
    ...targets.map((t) => `* **${t.verdict}**: ${t.name}: ${t.detail}`),
    '',
  ].join('\n');
  fs.writeFileSync(path.join(o.out, 'results.md'), md);

  const sweep = results.filter((r) => r.group === 'labels');
  const series = [
    { name: 'yolo-loss', color: '#1f77b4', points: sweep.filter((r) => r.ours.status === 'ok').map((r) => [r.labels_per_image, r.ours.median_ms!] as [number, number]) },
    { name: 'reference', color: '#d62728', points: sweep.filter((r) => r.reference.status === 'ok').map((r) => [r.labels_per_image, r.reference.median_ms!] as [number, number]) },
  ].filter((s) => s.points.length > 0);
  if (series.length) {
    const ratios = sweep.filter((r) => r.ratio !== null).map((r) => `${r.labels_per_image}/img: ${fmtRatio(r.ratio)}`);
    const svg = chart(
      'v8DetectionLoss: valueAndGrad vs reference forward+backward',
      `B=16, 640x640, nc=80, reg_max 16, strides 8/16/32 · ${m.cpu_short}, ${m.cores} cores · ${when.slice(0, 10)}`,
      series,
      ['ratio (reference / ours):', ...ratios, '', `load avg ${l0[0].toFixed(1)} → ${l1[0].toFixed(1)}`].join('\n'),
    );
    fs.writeFileSync(path.join(o.out, 'time_vs_labels.svg'), svg);
  }
  console.log('');
  console.log(`wrote ${path.relative(process.cwd(), path.join(o.out, 'results.json'))}, results.md${series.length ? ', time_vs_labels.svg' : ''}`);
}

try {
  main();
} catch (e) {
  console.error(`bench failed: ${e instanceof Error ? e.message : String(e)}`);
  process.exitCode = 1;
}
