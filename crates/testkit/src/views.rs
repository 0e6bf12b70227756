//! A fixture's tensors as the losses take them (owned f32 copies borrowed as `TensorRef`s), the detection
//! configuration of a task-loss fixture, and the check of a loss output against the fixture.

use yolo_loss_core::{DetBatch, DetectionConfig, Hyp, LossOutput, TensorRef};

use crate::{assert_close, to_f64, Fixture};

/// An owned f32 copy of a tensor (of a fixture or a synthetic case), borrowed as a `TensorRef`.
pub struct Owned {
    pub data: Vec<f32>,
    pub shape: Vec<usize>,
}

impl Owned {
    pub fn of(f: &Fixture, name: &str) -> Self {
        let t = f.get(name);
        Owned { data: t.f32(), shape: t.shape.clone() }
    }
    pub fn r(&self) -> TensorRef<'_, f32> {
        TensorRef::new(&self.data, &self.shape)
    }
}

/// The level tensors `{prefix}.0`, `{prefix}.1`, … of a fixture, as many as it has.
pub fn levels(f: &Fixture, prefix: &str) -> Vec<Owned> {
    (0..).map(|i| format!("{prefix}.{i}")).take_while(|n| f.has(n)).map(|n| Owned::of(f, &n)).collect()
}

pub fn refs(v: &[Owned]) -> Vec<TensorRef<'_, f32>> {
    v.iter().map(Owned::r).collect()
}

/// The `DetectionConfig` of a task-loss fixture: `nc`, `stride`, `reg_max` (default 16), `tal_topk` (default 10)
/// and the gains of `hyp` (defaults: `Hyp::default()`).
pub fn config(f: &Fixture) -> DetectionConfig {
    let c = &f.config;
    let h = &c["hyp"];
    let d = Hyp::default();
    let g = |k: &str, dv: f64| h[k].as_f64().unwrap_or(dv);
    DetectionConfig {
        nc: c["nc"].as_u64().unwrap() as usize,
        reg_max: c["reg_max"].as_u64().unwrap_or(16) as usize,
        strides: c["stride"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect(),
        hyp: Hyp {
            box_gain: g("box", d.box_gain),
            cls: g("cls", d.cls),
            dfl: g("dfl", d.dfl),
            pose: g("pose", d.pose),
            kobj: g("kobj", d.kobj),
            overlap_mask: h["overlap_mask"].as_bool().unwrap_or(d.overlap_mask),
        },
        tal_topk: c["tal_topk"].as_u64().unwrap_or(10) as usize,
    }
}

/// The label part of a fixture (`batch.batch_idx`, `batch.cls`, `batch.bboxes`) or of a synthetic case.
pub struct Labels {
    pub bi: Owned,
    pub cls: Owned,
    pub bb: Owned,
}

impl Labels {
    pub fn of(f: &Fixture) -> Self {
        Labels { bi: Owned::of(f, "batch.batch_idx"), cls: Owned::of(f, "batch.cls"), bb: Owned::of(f, "batch.bboxes") }
    }
    pub fn det(&self) -> DetBatch<'_, f32> {
        DetBatch { batch_idx: self.bi.r(), cls: self.cls.r(), bboxes: self.bb.r() }
    }
}

/// `{prefix}.0` … `{prefix}.{n-1}`: the fixture names of n level gradients.
pub fn grad_names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}.{i}")).collect()
}

/// A loss output against fixture `f`: `out.loss`, `out.loss_items` and one gradient per name in `grad_names`
/// (exactly as many), each within the fixture tolerance; messages start with `what`.
pub fn check_loss_output(what: &str, f: &Fixture, out: &LossOutput<f32>, grad_names: &[String]) {
    assert_close(&format!("{what} loss"), &to_f64(&out.loss), f.get("out.loss"));
    assert_close(&format!("{what} loss_items"), &to_f64(&out.loss_items), f.get("out.loss_items"));
    assert_eq!(out.grads.len(), grad_names.len(), "{what}: gradient count");
    for (g, n) in out.grads.iter().zip(grad_names) {
        assert_close(&format!("{what} {n}"), &to_f64(g), f.get(n));
    }
}
