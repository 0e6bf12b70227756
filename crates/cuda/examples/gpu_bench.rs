//! GPU benchmark of the CUDA detection loss (issue 4), run by scripts/gpu-check.sh on a GPU machine:
//!
//! ```text
//! gpu_bench --out DIR [--labels 8,1000] [--batch 16] [--size 640] [--nc 80] [--iters 30] [--warmup 3]
//!           [--write-cases | --cases-only] [--cpu-check]
//! ```
//! For each label count it builds one deterministic case (B images of size×size, strides 8/16/32, reg_max 16),
//! times `value_and_grad` of `CudaDetectionLoss` (kernel time from CUDA events around the kernels, and end to end
//! from host `f32` slices: uploads, kernels, gradient download), and measures the device's copy bandwidth to give
//! the memory-traffic floor (reading every prediction once and writing every gradient once). `--write-cases` also
//! writes each case's inputs under DIR/case_<labels>/ (raw little-endian f32 + manifest.json) for
//! bench/gpu_reference.py, so that the reference runs on the very same numbers. `--cpu-check` runs the CPU
//! backend once per case and reports the largest differences. One JSON object per case goes to stdout and to
//! DIR/ours.json (one per line).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use yolo_loss_core::{DetBatch, DetectionConfig, Hyp, TensorRef, V8DetectionLoss};
use yolo_loss_cuda::cudarc::driver::sys::CUevent_flags;
use yolo_loss_cuda::{gpu, CudaDetectionLoss, STAGES};
use yolo_loss_testkit::Lcg;

struct Args {
    out: PathBuf,
    labels: Vec<usize>,
    batch: usize,
    size: usize,
    nc: usize,
    iters: usize,
    warmup: usize,
    write_cases: bool,
    cases_only: bool,
    cpu_check: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        out: PathBuf::from("gpu-bench-out"),
        labels: vec![8, 1000],
        batch: 16,
        size: 640,
        nc: 80,
        iters: 30,
        warmup: 3,
        write_cases: false,
        cases_only: false,
        cpu_check: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    let num = |v: &str| v.parse::<usize>().unwrap_or_else(|_| panic!("not a number: {v}"));
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--out" => a.out = PathBuf::from(&v),
            "--labels" => a.labels = v.split(',').map(num).collect(),
            "--batch" => a.batch = num(&v),
            "--size" => a.size = num(&v),
            "--nc" => a.nc = num(&v),
            "--iters" => a.iters = num(&v),
            "--warmup" => a.warmup = num(&v),
            "--write-cases" => {
                a.write_cases = true;
                i += 1;
                continue;
            }
            "--cases-only" => {
                a.write_cases = true;
                a.cases_only = true;
                i += 1;
                continue;
            }
            "--cpu-check" => {
                a.cpu_check = true;
                i += 1;
                continue;
            }
            other => panic!("unknown argument {other} (see the file header)"),
        }
        i += 2;
    }
    a
}

struct Case {
    cfg: DetectionConfig,
    levels: Vec<(Vec<f32>, Vec<usize>)>,
    batch_idx: Vec<f32>,
    cls: Vec<f32>,
    bboxes: Vec<f32>,
    /// Shapes of the label tensors: `[N]`, `[N, 1]`, `[N, 4]`.
    label_shapes: [Vec<usize>; 3],
}

impl Case {
    /// The level tensors as the losses take them.
    fn feats(&self) -> Vec<TensorRef<'_, f32>> {
        self.levels.iter().map(|(d, s)| TensorRef::new(d, s)).collect()
    }

    /// The labels as the losses take them.
    fn batch(&self) -> DetBatch<'_, f32> {
        let [s1, s2, s4] = &self.label_shapes;
        DetBatch {
            batch_idx: TensorRef::new(&self.batch_idx, s1),
            cls: TensorRef::new(&self.cls, s2),
            bboxes: TensorRef::new(&self.bboxes, s4),
        }
    }
}

/// Box logits in [−2, 2], class logits in [−8, 2] (mostly background, as in training), labels of random
/// classes: boxes of side 5–60 % of the image for sparse images, 1–8 % for dense ones (≥ 100 labels).
fn make_case(a: &Args, labels: usize) -> Case {
    let reg_max = 16;
    let strides = [8.0, 16.0, 32.0];
    let c = 4 * reg_max + a.nc;
    let mut rng = Lcg(0x5eed_0000 + labels as u64);
    let levels = strides
        .iter()
        .map(|&s| {
            let n = (a.size as f64 / s).ceil() as usize;
            let shape = vec![a.batch, c, n, n];
            let hw = n * n;
            let mut data = vec![0f32; a.batch * c * hw];
            for (i, v) in data.iter_mut().enumerate() {
                let ch = (i / hw) % c;
                *v = if ch < 4 * reg_max { rng.uniform(-2.0, 2.0) } else { rng.uniform(-8.0, 2.0) };
            }
            (data, shape)
        })
        .collect();
    let (lo, hi) = if labels >= 100 { (0.01, 0.08) } else { (0.05, 0.6) };
    let (mut batch_idx, mut cls, mut bboxes) = (vec![], vec![], vec![]);
    for b in 0..a.batch {
        for _ in 0..labels {
            let (w, h) = (rng.uniform(lo, hi), rng.uniform(lo, hi));
            batch_idx.push(b as f32);
            cls.push((rng.next_u32() as usize % a.nc) as f32);
            bboxes.extend_from_slice(&[rng.uniform(w / 2.0, 1.0 - w / 2.0), rng.uniform(h / 2.0, 1.0 - h / 2.0), w, h]);
        }
    }
    let cfg = DetectionConfig { nc: a.nc, reg_max, strides: strides.to_vec(), hyp: Hyp::default(), tal_topk: 10 };
    let n = batch_idx.len();
    Case { cfg, levels, batch_idx, cls, bboxes, label_shapes: [vec![n], vec![n, 1], vec![n, 4]] }
}

fn write_f32(path: &Path, v: &[f32]) {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn write_case(dir: &Path, c: &Case) {
    std::fs::create_dir_all(dir).unwrap();
    let mut levels = String::new();
    for (l, (data, shape)) in c.levels.iter().enumerate() {
        write_f32(&dir.join(format!("preds_{l}.f32")), data);
        let _ =
            write!(levels, "{}{{\"file\": \"preds_{l}.f32\", \"shape\": {shape:?}}}", if l > 0 { ", " } else { "" });
    }
    write_f32(&dir.join("batch_idx.f32"), &c.batch_idx);
    write_f32(&dir.join("cls.f32"), &c.cls);
    write_f32(&dir.join("bboxes.f32"), &c.bboxes);
    let n = c.batch_idx.len();
    let manifest = format!(
        "{{\"nc\": {}, \"reg_max\": {}, \"strides\": {:?}, \"hyp\": {{\"box\": {}, \"cls\": {}, \"dfl\": {}}}, \"tal_topk\": {}, \
         \"levels\": [{levels}], \"labels\": {n}, \"batch_idx\": \"batch_idx.f32\", \"cls\": \"cls.f32\", \"bboxes\": \"bboxes.f32\"}}",
        c.cfg.nc, c.cfg.reg_max, c.cfg.strides, c.cfg.hyp.box_gain, c.cfg.hyp.cls, c.cfg.hyp.dfl, c.cfg.tal_topk
    );
    std::fs::write(dir.join("manifest.json"), manifest).unwrap();
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

/// Device-to-device copy bandwidth in bytes/s (read + write), the ceiling of a memory-bound kernel.
fn copy_bandwidth() -> f64 {
    let g = gpu(0).expect("a GPU");
    let n = 1usize << 28; // 1 GiB of f32
    let src = g.zeros::<f32>("bandwidth source", n).expect("1 GiB free");
    let mut dst = g.zeros::<f32>("bandwidth target", n).expect("1 GiB free");
    let s = g.stream();
    s.memcpy_dtod(&src, &mut dst).unwrap();
    let mut times = vec![];
    for _ in 0..10 {
        let e0 = s.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).unwrap();
        s.memcpy_dtod(&src, &mut dst).unwrap();
        let e1 = s.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).unwrap();
        times.push(e0.elapsed_ms(&e1).unwrap() as f64);
    }
    let ms = median(&mut times);
    2.0 * (n * 4) as f64 / (ms / 1000.0)
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f64 {
    let scale = b.iter().fold(0f64, |m, &v| m.max(v.abs() as f64)).max(1e-30);
    a.iter().zip(b).map(|(&x, &y)| ((x - y).abs() as f64) / ((y.abs() as f64) + 1e-6 * scale)).fold(0.0, f64::max)
}

/// max |a − b| / max |b|: the gradient's difference relative to its own scale (an element-wise ratio is dominated
/// by elements that are a rounding error of the gradient's size, e.g. σ(x) − t near 0).
fn normwise_diff(a: &[f32], b: &[f32]) -> f64 {
    let scale = b.iter().fold(0f64, |m, &v| m.max(v.abs() as f64)).max(1e-30);
    a.iter().zip(b).map(|(&x, &y)| (x - y).abs() as f64).fold(0.0, f64::max) / scale
}

/// Elements outside the fixtures' tolerance |a − b| ≤ 1e-4·|b| + 1e-5·max|b| (crates/testkit).
fn outside_tolerance(a: &[f32], b: &[f32]) -> usize {
    let scale = b.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
    a.iter().zip(b).filter(|&(&x, &y)| ((x - y).abs() as f64) > 1e-4 * (y.abs() as f64) + 1e-5 * scale).count()
}

fn main() {
    let a = parse_args();
    if a.cases_only {
        // Only the inputs (no GPU needed): for trying bench/gpu_reference.py elsewhere.
        // With --cpu-check, also the CPU backend's loss on each case (to compare with the reference anywhere).
        for &labels in &a.labels {
            let c = make_case(&a, labels);
            write_case(&a.out.join(format!("case_{labels}")), &c);
            if a.cpu_check {
                let (feats, batch) = (c.feats(), c.batch());
                let cpu = V8DetectionLoss::new(c.cfg.clone()).unwrap().call(&feats, &batch).unwrap();
                println!("{{\"labels\": {labels}, \"cpu_loss\": {:?}}}", cpu.loss);
            }
        }
        return;
    }
    let g = match gpu(0) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("gpu_bench: no GPU: {e}");
            std::process::exit(2);
        }
    };
    std::fs::create_dir_all(&a.out).unwrap();
    let bw = copy_bandwidth();
    let mut lines = String::new();
    for &labels in &a.labels {
        let c = make_case(&a, labels);
        if a.write_cases {
            write_case(&a.out.join(format!("case_{labels}")), &c);
        }
        let (feats, batch) = (c.feats(), c.batch());
        let loss = CudaDetectionLoss::new(c.cfg.clone()).expect("CUDA loss");
        for _ in 0..a.warmup {
            loss.value_and_grad_timed(&feats, &batch, false).expect("value_and_grad");
        }
        let (mut kernel, mut e2e, mut upload, mut download) = (vec![], vec![], vec![], vec![]);
        let mut stages: Vec<Vec<f64>> = vec![vec![]; STAGES.len()];
        let mut last = None;
        for _ in 0..a.iters {
            let t0 = Instant::now();
            let (out, timing) = loss.value_and_grad_timed(&feats, &batch, false).expect("value_and_grad");
            e2e.push(t0.elapsed().as_secs_f64() * 1e3);
            kernel.push(timing.kernel_ms() as f64);
            if let Some(st) = timing.stages {
                upload.push(st.upload_ms);
                download.push(st.download_ms);
            }
            last = Some((out, timing));
        }
        // Each kernel's share, in runs of their own (the events between kernels add to the total).
        for _ in 0..a.iters.min(10) {
            let (_, timing) = loss.value_and_grad_timed(&feats, &batch, true).expect("value_and_grad");
            if let Some(st) = timing.stages {
                for (k, v) in st.stage_ms.iter().enumerate() {
                    stages[k].push(*v as f64);
                }
            }
        }
        let stage_json = STAGES
            .iter()
            .zip(stages.iter_mut())
            .map(|(name, v)| format!("\"{name}\": {:.4}", median(v)))
            .collect::<Vec<_>>()
            .join(", ");
        // Plain value_and_grad (no events, no assignment download): the end-to-end time a caller sees.
        let mut plain = vec![];
        for _ in 0..a.iters {
            let t0 = Instant::now();
            loss.value_and_grad(&feats, &batch).expect("value_and_grad");
            plain.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        // The same with the driver's own staging of pageable memory (what a plain cuMemcpy does).
        g.set_staged_copies(false);
        let mut pageable = vec![];
        for _ in 0..a.iters.min(10) {
            let t0 = Instant::now();
            loss.value_and_grad(&feats, &batch).expect("value_and_grad");
            pageable.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        g.set_staged_copies(true);
        let (out, timing) = last.expect("at least one iteration");
        let kmin = kernel.iter().cloned().fold(f64::INFINITY, f64::min);
        let bytes: usize = c.levels.iter().map(|(d, _)| d.len() * 4 * 2).sum();
        let floor_ms = bytes as f64 / bw * 1e3;
        let mut line = format!(
            "{{\"labels\": {labels}, \"batch\": {}, \"size\": {}, \"nc\": {}, \"device\": {:?}, \"kernel_ms\": {:.4}, \
             \"kernel_min_ms\": {kmin:.4}, \"e2e_ms\": {:.3}, \"e2e_timed_ms\": {:.3}, \"positives\": {}, \"loss\": {:?}, \
             \"floor_ms\": {floor_ms:.4}, \"bandwidth_gbs\": {:.1}, \"bytes\": {bytes}, \"stages_ms\": {{{stage_json}}}, \
             \"upload_ms\": {:.3}, \"download_ms\": {:.3}, \"e2e_pageable_ms\": {:.3}",
            a.batch,
            a.size,
            a.nc,
            g.device_name(),
            median(&mut kernel),
            median(&mut plain),
            median(&mut e2e),
            timing.positives,
            out.loss,
            bw / 1e9,
            median(&mut upload),
            median(&mut download),
            median(&mut pageable)
        );
        if a.cpu_check {
            let t0 = Instant::now();
            let cpu = V8DetectionLoss::new(c.cfg.clone()).unwrap().value_and_grad(&feats, &batch).unwrap();
            let cpu_ms = t0.elapsed().as_secs_f64() * 1e3;
            let pairs = || out.grads.iter().zip(&cpu.grads);
            let grad_diff = pairs().map(|(g, c)| normwise_diff(g, c)).fold(0.0, f64::max);
            let outside: usize = pairs().map(|(g, c)| outside_tolerance(g, c)).sum();
            let _ = write!(
                line,
                ", \"cpu_ms\": {cpu_ms:.1}, \"cpu_loss\": {:?}, \"loss_rel_diff\": {:.3e}, \"grad_rel_diff\": {grad_diff:.3e}, \
                 \"grad_outside_tolerance\": {outside}",
                cpu.loss,
                max_rel_diff(&out.loss, &cpu.loss)
            );
        }
        line.push('}');
        println!("{line}");
        lines.push_str(&line);
        lines.push('\n');
    }
    std::fs::write(a.out.join("ours.json"), lines).unwrap();
}
