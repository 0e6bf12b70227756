//! What the benchmark measures on a case, for any task ([`Measure`], a [`Visit`]): kernel time, end to end (also from
//! page-locked caller buffers, pinned.rs), the memory and PCIe floors, the CPU-backend check; [`CpuOnly`]: the CPU
//! backend's values alone (no GPU: `--cases-only`).

use std::time::Instant;

use serde_json::{json, Map, Value};
use yolo_loss_core::{LossOutput, Predictions};
use yolo_loss_cuda::cudarc::driver::sys::CUevent_flags;
use yolo_loss_cuda::{time_kernels, CpuLoss, CudaLoss, Gpu};

use crate::cases::Visit;
use crate::pinned::{e2e_pinned, pcie_floor_ms, PcieRates};

/// Wall-clock milliseconds of each of `iters` runs of `f`.
pub fn times(iters: usize, mut f: impl FnMut()) -> Vec<f64> {
    (0..iters)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

/// Device-to-device copy bandwidth in bytes/s (read + write), the ceiling of a memory-bound kernel.
pub fn copy_bandwidth(g: &Gpu) -> f64 {
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
    2.0 * (n * 4) as f64 / (median(&mut times) / 1000.0)
}

fn max_abs(v: &[f32]) -> f64 {
    v.iter().fold(0f64, |m, &x| m.max(x.abs() as f64))
}

/// max over elements of |a − b| / (|b| + 1e-6·max|b|).
fn max_rel_diff(a: &[f32], b: &[f32]) -> f64 {
    let scale = max_abs(b).max(1e-30);
    a.iter().zip(b).map(|(&x, &y)| ((x - y).abs() as f64) / ((y.abs() as f64) + 1e-6 * scale)).fold(0.0, f64::max)
}

/// max |a − b| / max |b|: the gradient's difference relative to its own scale (an element-wise ratio is dominated
/// by elements that are a rounding error of the gradient's size, e.g. σ(x) − t near 0).
fn normwise_diff(a: &[f32], b: &[f32]) -> f64 {
    let scale = max_abs(b).max(1e-30);
    a.iter().zip(b).map(|(&x, &y)| (x - y).abs() as f64).fold(0.0, f64::max) / scale
}

/// Elements outside the fixtures' tolerance |a − b| ≤ 1e-4·|b| + 1e-5·max|b| (crates/testkit).
fn outside_tolerance(a: &[f32], b: &[f32]) -> usize {
    let scale = max_abs(b);
    a.iter().zip(b).filter(|&(&x, &y)| ((x - y).abs() as f64) > 1e-4 * (y.abs() as f64) + 1e-5 * scale).count()
}

/// √Σ g² over every gradient (compared with the reference's by bench/gpu_reference.py).
fn grad_norm(out: &LossOutput<f32>) -> f64 {
    out.grads.iter().flatten().map(|&g| (g as f64) * (g as f64)).sum::<f64>().sqrt()
}

/// The CPU backend on the case: its values, and the differences of `gpu` (when given) to them.
fn cpu_check<C: CpuLoss>(
    cfg: C::Config,
    preds: C::Preds<'_>,
    batch: &C::Batch<'_>,
    gpu: Option<&LossOutput<f32>>,
) -> Map<String, Value> {
    let t0 = Instant::now();
    let cpu = C::build(cfg).expect("CPU loss").value_and_grad(preds, batch).expect("CPU value_and_grad");
    let mut m = object(json!({
        "cpu_ms": t0.elapsed().as_secs_f64() * 1e3,
        "cpu_loss": cpu.loss, "cpu_items": cpu.loss_items, "cpu_grad_norm": grad_norm(&cpu),
    }));
    if let Some(out) = gpu {
        let pairs = || out.grads.iter().zip(&cpu.grads);
        m.insert("loss_rel_diff".into(), json!(max_rel_diff(&out.loss, &cpu.loss)));
        m.insert("grad_rel_diff".into(), json!(pairs().map(|(g, c)| normwise_diff(g, c)).fold(0.0, f64::max)));
        m.insert("grad_outside_tolerance".into(), json!(pairs().map(|(g, c)| outside_tolerance(g, c)).sum::<usize>()));
    }
    m
}

/// The fields of a `json!({...})`.
pub fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not a JSON object: {other}"),
    }
}

/// `--cases-only --cpu-check`: the CPU backend's values (to compare with the reference anywhere).
pub struct CpuOnly;

impl Visit for CpuOnly {
    type Out = Map<String, Value>;
    fn visit<C: CpuLoss, G: CudaLoss<C>>(
        &mut self,
        cfg: C::Config,
        preds: C::Preds<'_>,
        batch: &C::Batch<'_>,
    ) -> Self::Out {
        cpu_check::<C>(cfg, preds, batch, None)
    }
}

/// The GPU measurements of a case.
pub struct Measure<'a> {
    pub gpu: &'a Gpu,
    /// Device copy bandwidth (bytes/s, read + write).
    pub bandwidth: f64,
    /// Page-locked host to device and back.
    pub pcie: PcieRates,
    pub warmup: usize,
    pub iters: usize,
    pub cpu_check: bool,
}

impl Visit for Measure<'_> {
    type Out = Map<String, Value>;

    /// Kernel time (`time_kernels`: CUDA events around each call's kernels, uploads and downloads excluded), end to
    /// end (plain `value_and_grad` from host arrays to host gradients; again with the driver's staging of pageable
    /// memory instead of ours; and into `out` from page-locked buffers, pinned.rs), the floor (every prediction read
    /// once, every gradient written once, at the copy bandwidth), the PCIe floor (every prediction up, every
    /// gradient down, at the page-locked copy rates) and, when asked, the CPU backend's differences.
    fn visit<C: CpuLoss, G: CudaLoss<C>>(
        &mut self,
        cfg: C::Config,
        preds: C::Preds<'_>,
        batch: &C::Batch<'_>,
    ) -> Self::Out {
        let loss = G::build_on(cfg.clone(), 0).expect("CUDA loss");
        let call = || loss.value_and_grad(preds, batch).expect("value_and_grad");
        for _ in 0..self.warmup {
            call();
        }
        let mut kernel = vec![];
        let mut out = None;
        for _ in 0..self.iters {
            let (o, ms) = time_kernels(call);
            kernel.push(ms.expect("device time of the kernels") as f64);
            out = Some(o);
        }
        let out = out.expect("at least one iteration");
        let mut e2e = times(self.iters, || drop(call()));
        self.gpu.set_staged_copies(false);
        let mut pageable = times(self.iters.min(10), || drop(call()));
        self.gpu.set_staged_copies(true);
        let pinned = e2e_pinned::<C, G>(&loss, preds, batch, &out, self.warmup, self.iters);
        let pred_bytes: usize = 4 * preds.tensors().iter().map(|t| t.len()).sum::<usize>();
        let bytes = 2 * pred_bytes;
        let floor_ms = bytes as f64 / self.bandwidth * 1e3;
        let kmin = kernel.iter().cloned().fold(f64::INFINITY, f64::min);
        let mut m = object(json!({
            "kernel_ms": median(&mut kernel), "kernel_min_ms": kmin, "e2e_ms": median(&mut e2e),
            "e2e_pageable_ms": median(&mut pageable), "floor_ms": floor_ms, "bytes": bytes,
            "pcie_floor_ms": pcie_floor_ms(pred_bytes, self.pcie),
            "loss": out.loss, "items": out.loss_items, "grad_norm": grad_norm(&out),
        }));
        m.extend(pinned);
        if self.cpu_check {
            m.extend(cpu_check::<C>(cfg, preds, batch, Some(&out)));
        }
        m
    }
}
