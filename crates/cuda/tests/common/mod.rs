//! Test helpers of this crate, shared by its unit tests (emulator) and integration tests (GPU): the fixture reader
//! and tolerance of `yolo-loss-testkit` (shared with the core's tests), and fixture views as core types.
//! `parity.rs` beside it holds the test bodies both run.

#![allow(dead_code)]

pub use yolo_loss_testkit::{assert_close, assert_close_tol, load_kind, to_f64, Fixture, Lcg};

/// Owned f32 copies of a fixture's tensors, borrowed as `TensorRef`s.
pub struct Owned {
    pub data: Vec<f32>,
    pub shape: Vec<usize>,
}

impl Owned {
    pub fn of(f: &Fixture, name: &str) -> Self {
        let t = f.get(name);
        Owned { data: t.f32(), shape: t.shape.clone() }
    }
    pub fn r(&self) -> yolo_loss_core::TensorRef<'_, f32> {
        yolo_loss_core::TensorRef::new(&self.data, &self.shape)
    }
}

pub fn levels(f: &Fixture, prefix: &str) -> Vec<Owned> {
    (0..).map(|i| format!("{prefix}.{i}")).take_while(|n| f.has(n)).map(|n| Owned::of(f, &n)).collect()
}

pub fn refs(v: &[Owned]) -> Vec<yolo_loss_core::TensorRef<'_, f32>> {
    v.iter().map(Owned::r).collect()
}

pub fn config(f: &Fixture) -> yolo_loss_core::DetectionConfig {
    let c = &f.config;
    let h = &c["hyp"];
    let d = yolo_loss_core::Hyp::default();
    let g = |k: &str, dv: f64| h[k].as_f64().unwrap_or(dv);
    yolo_loss_core::DetectionConfig {
        nc: c["nc"].as_u64().unwrap() as usize,
        reg_max: c["reg_max"].as_u64().unwrap_or(16) as usize,
        strides: c["stride"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect(),
        hyp: yolo_loss_core::Hyp { box_gain: g("box", d.box_gain), cls: g("cls", d.cls), dfl: g("dfl", d.dfl), ..d },
        tal_topk: c["tal_topk"].as_u64().unwrap_or(10) as usize,
    }
}

/// The label part of a fixture (or of a synthetic case).
pub struct Labels {
    pub bi: Owned,
    pub cls: Owned,
    pub bb: Owned,
}

impl Labels {
    pub fn of(f: &Fixture) -> Self {
        Labels { bi: Owned::of(f, "batch.batch_idx"), cls: Owned::of(f, "batch.cls"), bb: Owned::of(f, "batch.bboxes") }
    }
    pub fn det(&self) -> yolo_loss_core::DetBatch<'_, f32> {
        yolo_loss_core::DetBatch { batch_idx: self.bi.r(), cls: self.cls.r(), bboxes: self.bb.r() }
    }
}
