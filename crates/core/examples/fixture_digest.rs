//! Runs every task loss on every fixture of its kind in `fixtures/data` and prints a digest of every output bit:
//! `call`, `value_and_grad` and `value_and_grad_into` in f32, `value_and_grad` in f64, and the message of a
//! refused gradient buffer. A refactor that keeps the per-element math leaves every line the same:
//!
//! ```sh
//! cargo run --release -p yolo-loss-core --example fixture_digest > before.txt   # ... change ..., then again
//! ```
use yolo_loss_core::classification::V8ClassificationLoss;
use yolo_loss_core::e2e::{E2EDetectLoss, E2EPreds};
use yolo_loss_core::loss::{GradBufs, LossValues};
use yolo_loss_core::obb::ObbPreds;
use yolo_loss_core::pose::{PoseBatch, PoseConfig, PosePreds, V8PoseLoss};
use yolo_loss_core::prompts::{TVPDetectLoss, TVPSegmentLoss};
use yolo_loss_core::segmentation::{SegBatch, SegPreds, V8SegmentationLoss};
use yolo_loss_core::{DetBatch, LossOutput, Real, Result, TaskLoss, TensorRef, V8DetectionLoss, V8OBBLoss};
use yolo_loss_testkit::{config, load_kind, Fixture};

/// A fixture tensor in both precisions.
struct T {
    f32: Vec<f32>,
    f64: Vec<f64>,
    shape: Vec<usize>,
}

impl T {
    fn of(f: &Fixture, name: &str) -> Self {
        let t = f.get(name);
        T { f32: t.f32(), f64: t.data.clone(), shape: t.shape.clone() }
    }
    fn levels(f: &Fixture, prefix: &str) -> Vec<T> {
        (0..).map(|i| format!("{prefix}.{i}")).take_while(|n| f.has(n)).map(|n| T::of(f, &n)).collect()
    }
}

trait Pick<F> {
    fn r(&self) -> TensorRef<'_, F>;
}
impl Pick<f32> for T {
    fn r(&self) -> TensorRef<'_, f32> {
        TensorRef::new(&self.f32, &self.shape)
    }
}
impl Pick<f64> for T {
    fn r(&self) -> TensorRef<'_, f64> {
        TensorRef::new(&self.f64, &self.shape)
    }
}

fn refs<F>(v: &[T]) -> Vec<TensorRef<'_, F>>
where
    T: Pick<F>,
{
    v.iter().map(|t| t.r()).collect()
}

/// FNV-1a over bytes.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf29ce484222325)
    }
    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 = (self.0 ^ x as u64).wrapping_mul(0x100000001b3);
        }
    }
    fn f32s(&mut self, v: &[f32]) {
        v.iter().for_each(|x| self.bytes(&x.to_bits().to_le_bytes()));
    }
    fn f64s(&mut self, v: &[f64]) {
        v.iter().for_each(|x| self.bytes(&x.to_bits().to_le_bytes()));
    }
}

/// The digest of one output (or of its error: code and message).
fn digest<F: Real>(r: &Result<LossOutput<F>>, bits: impl Fn(&mut Fnv, &[F])) -> u64 {
    let mut h = Fnv::new();
    match r {
        Ok(o) => {
            h.bytes(&[o.loss.len() as u8, o.loss_items.len() as u8, o.grads.len() as u8]);
            bits(&mut h, &o.loss);
            bits(&mut h, &o.loss_items);
            o.grads.iter().for_each(|g| bits(&mut h, g));
        }
        Err(e) => h.bytes(format!("{:?} {}", e.code, e.message).as_bytes()),
    }
    h.0
}

/// The four forms of one loss on one fixture: `call`, `vg`, `into` (f32; `into` gets zero-filled buffers shaped like
/// `vg`'s gradients), `vg64`, and `into` with one buffer too short.
struct Forms<'a> {
    call: &'a dyn Fn() -> Result<LossOutput<f32>>,
    vg: &'a dyn Fn() -> Result<LossOutput<f32>>,
    into: &'a dyn Fn(GradBufs<f32>) -> Result<LossValues<f32>>,
    vg64: &'a dyn Fn() -> Result<LossOutput<f64>>,
}

fn line(total: &mut Fnv, kind: &str, name: &str, f: Forms) {
    let d32 = |r: &Result<LossOutput<f32>>| digest(r, |h, v| h.f32s(v));
    let vg = (f.vg)();
    let lens: Vec<usize> = vg.as_ref().map(|o| o.grads.iter().map(Vec::len).collect()).unwrap_or_default();
    let into = |lens: &[usize]| {
        let mut bufs: Vec<Vec<f32>> = lens.iter().map(|&n| vec![0.0; n]).collect();
        let r = {
            let mut s: Vec<&mut [f32]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
            (f.into)(&mut s)
        };
        r.map(|(loss, loss_items)| LossOutput { loss, loss_items, grads: bufs })
    };
    let mut short = lens.clone();
    if let Some(n) = short.last_mut() {
        *n = n.saturating_sub(1);
    }
    let ds = [d32(&(f.call)()), d32(&vg), d32(&into(&lens)), digest(&(f.vg64)(), |h, v| h.f64s(v)), d32(&into(&short))];
    ds.iter().for_each(|d| total.bytes(&d.to_le_bytes()));
    println!(
        "{kind:22} {name:32} call {:016x} vg {:016x} into {:016x} vg64 {:016x} short {:016x}",
        ds[0], ds[1], ds[2], ds[3], ds[4]
    );
}

/// The four forms of one loss on one fixture: `preds32`/`preds64` and `b32`/`b64` are expressions building the
/// predictions and the batch in f32 and f64 (evaluated in each closure, since the forms borrow them).
macro_rules! forms {
    ($crit:expr, $preds32:expr, $preds64:expr, $b32:expr, $b64:expr) => {
        Forms {
            call: &|| $crit.call($preds32, $b32),
            vg: &|| $crit.value_and_grad($preds32, $b32),
            into: &|g| $crit.value_and_grad_into($preds32, $b32, g),
            vg64: &|| $crit.value_and_grad($preds64, $b64),
        }
    };
}

/// The detection labels of a fixture, and further batch tensors by name.
struct Labels {
    batch_idx: T,
    cls: T,
    bboxes: T,
}

impl Labels {
    fn of(f: &Fixture) -> Self {
        Labels { batch_idx: T::of(f, "batch.batch_idx"), cls: T::of(f, "batch.cls"), bboxes: T::of(f, "batch.bboxes") }
    }
    fn det<F>(&self) -> DetBatch<'_, F>
    where
        T: Pick<F>,
    {
        DetBatch { batch_idx: self.batch_idx.r(), cls: self.cls.r(), bboxes: self.bboxes.r() }
    }
}

fn main() {
    let mut total = Fnv::new();
    for kind in ["v8DetectionLoss", "TVPDetectLoss"] {
        for f in load_kind(kind) {
            let (feats, labels) = (T::levels(&f, "preds"), Labels::of(&f));
            let (p32, p64) = (refs::<f32>(&feats), refs::<f64>(&feats));
            let (b32, b64) = (labels.det::<f32>(), labels.det::<f64>());
            if kind == "TVPDetectLoss" {
                let crit = TVPDetectLoss::new(config(&f)).unwrap();
                line(&mut total, kind, &f.name, forms!(crit, &p32, &p64, &b32, &b64));
            } else {
                let crit = V8DetectionLoss::new(config(&f)).unwrap();
                line(&mut total, kind, &f.name, forms!(crit, &p32, &p64, &b32, &b64));
            }
        }
    }
    for f in load_kind("E2EDetectLoss") {
        let (o2m, o2o, labels) = (T::levels(&f, "preds.one2many"), T::levels(&f, "preds.one2one"), Labels::of(&f));
        let crit = E2EDetectLoss::new(config(&f)).unwrap();
        let (b32, b64) = (labels.det::<f32>(), labels.det::<f64>());
        let (m32, m64, o32, o64) = (refs::<f32>(&o2m), refs::<f64>(&o2m), refs::<f32>(&o2o), refs::<f64>(&o2o));
        let forms = forms!(
            crit,
            E2EPreds { one2many: &m32, one2one: &o32 },
            E2EPreds { one2many: &m64, one2one: &o64 },
            &b32,
            &b64
        );
        line(&mut total, &f.kind, &f.name, forms);
    }
    for kind in ["v8SegmentationLoss", "TVPSegmentLoss"] {
        for f in load_kind(kind) {
            let (feats, pm, pr) = (T::levels(&f, "preds"), T::of(&f, "preds.pred_masks"), T::of(&f, "preds.proto"));
            let (labels, masks) = (Labels::of(&f), T::of(&f, "batch.masks"));
            let b32 = SegBatch { det: labels.det(), masks: masks.r() };
            let b64 = SegBatch { det: labels.det(), masks: masks.r() };
            let (p32, p64) = (refs::<f32>(&feats), refs::<f64>(&feats));
            macro_rules! seg_forms {
                ($crit:expr) => {
                    forms!(
                        $crit,
                        SegPreds { feats: &p32, pred_masks: pm.r(), proto: pr.r() },
                        SegPreds { feats: &p64, pred_masks: pm.r(), proto: pr.r() },
                        &b32,
                        &b64
                    )
                };
            }
            if kind == "TVPSegmentLoss" {
                let crit = TVPSegmentLoss::new(config(&f)).unwrap();
                line(&mut total, kind, &f.name, seg_forms!(crit));
            } else {
                let crit = V8SegmentationLoss::new(config(&f)).unwrap();
                line(&mut total, kind, &f.name, seg_forms!(crit));
            }
        }
    }
    for f in load_kind("v8PoseLoss") {
        let ks = f.config["kpt_shape"].as_array().unwrap();
        let kpt_shape = (ks[0].as_u64().unwrap() as usize, ks[1].as_u64().unwrap() as usize);
        let oks = f.config["kpt_shape_is_list"].as_bool().unwrap_or(true);
        let crit = V8PoseLoss::new(PoseConfig { det: config(&f), kpt_shape, oks_sigmas: Some(oks) }).unwrap();
        let (feats, kp) = (T::levels(&f, "preds"), T::of(&f, "preds.kpts"));
        let (labels, gk) = (Labels::of(&f), T::of(&f, "batch.keypoints"));
        let b32 = PoseBatch { det: labels.det(), keypoints: gk.r() };
        let b64 = PoseBatch { det: labels.det(), keypoints: gk.r() };
        let (p32, p64) = (refs::<f32>(&feats), refs::<f64>(&feats));
        let forms =
            forms!(crit, PosePreds { feats: &p32, kpts: kp.r() }, PosePreds { feats: &p64, kpts: kp.r() }, &b32, &b64);
        line(&mut total, &f.kind, &f.name, forms);
    }
    for f in load_kind("v8OBBLoss") {
        let (feats, ang, labels) = (T::levels(&f, "preds"), T::of(&f, "preds.angle"), Labels::of(&f));
        let crit = V8OBBLoss::new(config(&f)).unwrap();
        let (b32, b64) = (labels.det::<f32>(), labels.det::<f64>());
        let (p32, p64) = (refs::<f32>(&feats), refs::<f64>(&feats));
        let forms = forms!(
            crit,
            ObbPreds { feats: &p32, angle: ang.r() },
            ObbPreds { feats: &p64, angle: ang.r() },
            &b32,
            &b64
        );
        line(&mut total, &f.kind, &f.name, forms);
    }
    for f in load_kind("v8ClassificationLoss") {
        let (lg, cls) = (T::of(&f, "preds.logits"), T::of(&f, "batch.cls"));
        let crit = V8ClassificationLoss::new();
        let (c32, c64): (TensorRef<f32>, TensorRef<f64>) = (cls.r(), cls.r());
        line(&mut total, &f.kind, &f.name, forms!(crit, lg.r(), lg.r(), &c32, &c64));
    }
    println!("total {:016x}", total.0);
}
