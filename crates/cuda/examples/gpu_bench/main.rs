//! GPU benchmark of every CUDA task loss (issues 4 and 12), run by scripts/gpu-check.sh on a GPU machine:
//!
//! ```text
//! gpu_bench --out DIR [--cases det8,seg,...] [--batch B] [--size S] [--iters 30] [--warmup 3]
//!           [--write-cases | --cases-only] [--cpu-check] [--list]
//! ```
//! The cases are cases.rs's table (the CPU benchmark's shapes, bench/cases.ts, and one case each for
//! classification, E2E and TVP); `--batch` / `--size` override every case's batch and image size (`--size` must
//! be a multiple of 32), e.g. small shapes to try the plumbing on a CPU. Per case (measure.rs): kernel time (CUDA
//! events around the kernels of each call, `yolo_loss_cuda::time_kernels`), end to end from host `f32` slices
//! (uploads, kernels, gradient download), end to end into `out` from page-locked caller buffers (pinned.rs: the
//! binding's path, issue 13), the memory-traffic floor (every prediction read once, every gradient written once, at
//! the measured device copy bandwidth), the PCIe floor (every prediction up and every gradient down at the measured
//! page-locked copy rates), for detection each kernel's share; `--cpu-check`: the CPU backend's differences.
//! `--write-cases` also writes each case's inputs under DIR/<case>/ (raw little-endian f32 + manifest.json,
//! bench/data.ts's format) for bench/gpu_reference.py, so that the reference runs on the very same numbers;
//! `--cases-only` writes them without a GPU (with `--cpu-check`: and the CPU backend's values). One JSON object per
//! case goes to stdout and to DIR/ours.json (one per line).

mod cases;
mod measure;
mod pinned;

use std::path::PathBuf;

use serde_json::{json, Map, Value};
use yolo_loss_cuda::{gpu, CudaDetectionLoss, STAGES};

use cases::{inputs, with_loss, write_case, CaseDef, Task, Tensors, CASES};
use measure::{copy_bandwidth, median, object, CpuOnly, Measure};
use pinned::pcie_rates;

struct Args {
    out: PathBuf,
    cases: Vec<CaseDef>,
    batch: Option<usize>,
    size: Option<usize>,
    iters: usize,
    warmup: usize,
    write_cases: bool,
    cases_only: bool,
    cpu_check: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        out: PathBuf::from("gpu-bench-out"),
        cases: CASES.to_vec(),
        batch: None,
        size: None,
        iters: 30,
        warmup: 3,
        write_cases: false,
        cases_only: false,
        cpu_check: false,
    };
    let mut argv = std::env::args().skip(1);
    let num = |v: Option<String>| {
        let v = v.unwrap_or_default();
        v.parse::<usize>().unwrap_or_else(|_| panic!("expected a number, got '{v}'"))
    };
    while let Some(flag) = argv.next() {
        match flag.as_str() {
            "--out" => a.out = PathBuf::from(argv.next().expect("--out DIR")),
            "--cases" => {
                let ids = argv.next().expect("--cases ID,ID,...");
                a.cases = ids
                    .split(',')
                    .map(|id| {
                        let c = CASES.iter().find(|c| c.id == id);
                        c.unwrap_or_else(|| panic!("unknown case '{id}' (--list names them)")).clone()
                    })
                    .collect();
            }
            "--batch" => a.batch = Some(num(argv.next())),
            "--size" => a.size = Some(num(argv.next())),
            "--iters" => a.iters = num(argv.next()),
            "--warmup" => a.warmup = num(argv.next()),
            "--write-cases" => a.write_cases = true,
            "--cases-only" => (a.write_cases, a.cases_only) = (true, true),
            "--cpu-check" => a.cpu_check = true,
            "--list" => {
                CASES.iter().for_each(|c| println!("{:8} {:12} {}", c.id, c.task.name(), c.shape()));
                std::process::exit(0);
            }
            other => panic!("unknown argument {other} (see the file header)"),
        }
    }
    assert!(a.size.is_none_or(|s| s > 0 && s % 32 == 0), "--size: a positive multiple of 32");
    for c in &mut a.cases {
        c.batch = a.batch.unwrap_or(c.batch);
        c.size = a.size.unwrap_or(c.size);
    }
    a
}

/// The case's line: what it is, then what was measured.
fn line(c: &CaseDef, measured: Map<String, Value>) -> String {
    let mut m = object(json!({
        "case": c.id, "task": c.task.name(), "shape": c.shape(), "batch": c.batch, "size": c.size, "nc": c.nc,
        "labels": c.labels_per_image,
    }));
    m.extend(measured);
    Value::Object(m).to_string()
}

/// Detection only: each kernel's share (an event after each, in runs of their own), the positives, the host time
/// of the checks + uploads and of the downloads (`CudaDetectionLoss::value_and_grad_timed`).
fn detection_stages(c: &CaseDef, t: &Tensors, runs: usize) -> Map<String, Value> {
    let loss = CudaDetectionLoss::new(c.config()).expect("CUDA loss");
    let (feats, batch) = (t.levels("preds"), t.labels());
    let (mut stages, mut upload, mut download): (Vec<Vec<f64>>, Vec<f64>, Vec<f64>) =
        (vec![vec![]; STAGES.len()], vec![], vec![]);
    let mut positives = 0;
    for _ in 0..runs {
        let (_, timing) = loss.value_and_grad_timed(&feats, &batch, true).expect("value_and_grad");
        positives = timing.positives;
        let st = timing.stages.expect("device times");
        stages.iter_mut().zip(st.stage_ms).for_each(|(v, ms)| v.push(ms as f64));
        upload.push(st.upload_ms);
        download.push(st.download_ms);
    }
    let per_stage: Map<String, Value> =
        STAGES.iter().zip(&mut stages).map(|(name, v)| (name.to_string(), json!(median(v)))).collect();
    object(json!({
        "positives": positives, "stages_ms": per_stage, "upload_ms": median(&mut upload),
        "download_ms": median(&mut download),
    }))
}

fn main() {
    let a = parse_args();
    std::fs::create_dir_all(&a.out).unwrap_or_else(|e| panic!("creating {}: {e}", a.out.display()));
    let mut lines = String::new();
    let mut emit = |l: String| {
        println!("{l}");
        lines.push_str(&l);
        lines.push('\n');
    };
    if a.cases_only {
        // Only the inputs (no GPU needed): for trying bench/gpu_reference.py elsewhere; with --cpu-check also the
        // CPU backend's values on each case (to compare with the reference anywhere).
        for c in &a.cases {
            let t = inputs(c);
            write_case(&a.out.join(c.id), c, &t);
            emit(line(c, if a.cpu_check { with_loss(c, &t, &mut CpuOnly) } else { Map::new() }));
        }
        std::fs::write(a.out.join("ours.json"), lines).unwrap();
        return;
    }
    let g = match gpu(0) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("gpu_bench: no GPU: {e}");
            std::process::exit(2);
        }
    };
    let (bandwidth, pcie) = (copy_bandwidth(g), pcie_rates(g));
    let mut measure = Measure { gpu: g, bandwidth, pcie, warmup: a.warmup, iters: a.iters, cpu_check: a.cpu_check };
    for c in &a.cases {
        let t = inputs(c);
        if a.write_cases {
            write_case(&a.out.join(c.id), c, &t);
        }
        let mut m = with_loss(c, &t, &mut measure);
        m.insert("device".into(), json!(g.device_name()));
        m.insert("bandwidth_gbs".into(), json!(bandwidth / 1e9));
        m.insert("htod_gbs".into(), json!(pcie.htod / 1e9));
        m.insert("dtoh_gbs".into(), json!(pcie.dtoh / 1e9));
        if c.task == Task::Detect {
            m.extend(detection_stages(c, &t, a.iters.min(10)));
        }
        emit(line(c, m));
    }
    std::fs::write(a.out.join("ours.json"), lines).unwrap();
}
