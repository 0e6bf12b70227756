//! Runs one task loss on a case folder written by the benchmark's data generator (`bench/data.ts`: raw float32
//! files and `manifest.json`), so that a profiler or an instruction counter sees exactly the inputs of `npm run
//! bench`:
//!
//! ```sh
//! cargo run --release -p yolo-loss-core --example bench_case -- DIR [CALLS] [into|over]
//! ```
//!
//! Prints the median time of CALLS calls of `value_and_grad` (default 5; `into`: `value_and_grad_into` with
//! buffers reused across calls, zeroed between calls outside the timing; `over`: `value_and_grad_overwrite` into the
//! buffers as the last call left them, NaN before the first) and a digest of the last call's loss,
//! items and every gradient bit, which must stay the same across a refactor that keeps the per-element math (and
//! be the same in every mode).
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use yolo_loss_core::loss::{GradBufs, LossValues};
use yolo_loss_core::obb::ObbPreds;
use yolo_loss_core::pose::{PoseBatch, PoseConfig, PosePreds, V8PoseLoss};
use yolo_loss_core::segmentation::{SegBatch, SegPreds, V8SegmentationLoss};
use yolo_loss_core::{DetBatch, DetectionConfig, Hyp, LossOutput, TaskLoss, TensorRef, V8DetectionLoss, V8OBBLoss};

struct Tensor {
    data: Vec<f32>,
    shape: Vec<usize>,
}

impl Tensor {
    fn r(&self) -> TensorRef<'_, f32> {
        TensorRef::new(&self.data, &self.shape)
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: bench_case DIR [CALLS] [into|over]");
    let calls: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let mode = args.next().unwrap_or_default();
    let (into, over) = (mode == "into" || mode == "over", mode == "over");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(Path::new(&dir).join("manifest.json")).unwrap()).unwrap();
    let c = &manifest["case"];
    let mut t: BTreeMap<String, Tensor> = BTreeMap::new();
    for (name, e) in manifest["tensors"].as_object().unwrap() {
        let bytes = std::fs::read(Path::new(&dir).join(e["file"].as_str().unwrap())).unwrap();
        let data = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        let shape = e["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        t.insert(name.clone(), Tensor { data, shape });
    }
    let strides: Vec<f64> = c["strides"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let cfg = DetectionConfig {
        nc: c["nc"].as_u64().unwrap() as usize,
        reg_max: c["reg_max"].as_u64().unwrap() as usize,
        strides: strides.clone(),
        hyp: Hyp::default(),
        tal_topk: 10,
    };
    let feats: Vec<TensorRef<f32>> = (0..strides.len()).map(|l| t[&format!("preds.{l}")].r()).collect();
    let det = DetBatch { batch_idx: t["batch.batch_idx"].r(), cls: t["batch.cls"].r(), bboxes: t["batch.bboxes"].r() };
    let mut inputs: Vec<&[f32]> = feats.iter().map(|f| f.data).collect();
    let task = c["task"].as_str().unwrap();
    let run: Run = match task {
        "detect" => {
            let crit = V8DetectionLoss::new(cfg).unwrap();
            Box::new(move |g| form(&crit, &feats, &det, g, over))
        }
        "segment" => {
            let crit = V8SegmentationLoss::new(cfg).unwrap();
            let (pm, pr) = (t["preds.pred_masks"].r(), t["preds.proto"].r());
            inputs.extend([pm.data, pr.data]);
            let batch = SegBatch { det, masks: t["batch.masks"].r() };
            Box::new(move |g| form(&crit, SegPreds { feats: &feats, pred_masks: pm, proto: pr }, &batch, g, over))
        }
        "pose" => {
            let ks = c["kpt_shape"].as_array().unwrap();
            let kpt_shape = (ks[0].as_u64().unwrap() as usize, ks[1].as_u64().unwrap() as usize);
            let crit = V8PoseLoss::new(PoseConfig { det: cfg, kpt_shape, oks_sigmas: None }).unwrap();
            let kp = t["preds.kpts"].r();
            inputs.push(kp.data);
            let batch = PoseBatch { det, keypoints: t["batch.keypoints"].r() };
            Box::new(move |g| form(&crit, PosePreds { feats: &feats, kpts: kp }, &batch, g, over))
        }
        "obb" => {
            let crit = V8OBBLoss::new(cfg).unwrap();
            let angle = t["preds.angle"].r();
            inputs.push(angle.data);
            Box::new(move |g| form(&crit, ObbPreds { feats: &feats, angle }, &det, g, over))
        }
        other => panic!("unknown task {other}"),
    };
    // Leftovers in the buffers for `over` (it must write every element); zeros for `into`.
    let mut bufs: Vec<Vec<f32>> = inputs.iter().map(|i| vec![if over { f32::NAN } else { 0.0 }; i.len()]).collect();
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..calls.max(1) {
        if into && !over {
            bufs.iter_mut().for_each(|b| b.fill(0.0));
        }
        let t0 = Instant::now();
        let mut out = if into {
            let mut slices: Vec<&mut [f32]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
            run(Some(&mut slices))
        } else {
            run(None)
        };
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        if into {
            out.grads = bufs.clone();
        }
        last = Some(out);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let out = last.unwrap();
    println!(
        "{}: median {:.2} ms (min {:.2}) over {} calls{}; digest {:016x}; loss {:?}",
        c["id"].as_str().unwrap(),
        times[times.len() / 2],
        times[0],
        times.len(),
        if into { format!(" ({mode})") } else { String::new() },
        digest(&out),
        out.loss
    );
}

/// One call of the case's loss: with buffers or without ([`form`]).
type Run<'a> = Box<dyn Fn(Option<GradBufs<f32>>) -> LossOutput<f32> + 'a>;

/// One call of `crit` in the mode asked for: `value_and_grad` without buffers, else `value_and_grad_overwrite`
/// (`over`) or `value_and_grad_into` into them (the gradients are the caller's to read then).
fn form<L: TaskLoss<f32>>(
    crit: &L,
    preds: L::Preds<'_>,
    batch: &L::Batch<'_>,
    g: Option<GradBufs<f32>>,
    over: bool,
) -> LossOutput<f32> {
    let values = |(loss, loss_items): LossValues<f32>| LossOutput { loss, loss_items, grads: Vec::new() };
    match g {
        None => crit.value_and_grad(preds, batch).unwrap(),
        Some(g) if over => values(crit.value_and_grad_overwrite(preds, batch, g).unwrap()),
        Some(g) => values(crit.value_and_grad_into(preds, batch, g).unwrap()),
    }
}

/// FNV-1a over the bits of the loss, the items and every gradient element, in order.
fn digest(o: &LossOutput<f32>) -> u64 {
    let mut h = 0xcbf29ce484222325u64;
    for v in o.loss.iter().chain(&o.loss_items).chain(o.grads.iter().flatten()) {
        for b in v.to_bits().to_le_bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
    }
    h
}
