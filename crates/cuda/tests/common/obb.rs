//! v8OBBLoss test bodies shared by the GPU (tests/obb.rs) and the kernel emulator (src/obb/tests.rs): each takes
//! the CUDA loss's maker and checks it against the reference fixtures and the CPU backend. The includer provides
//! `common` (mod.rs) and `parity` (parity.rs: the synthetic detection cases).

#![allow(dead_code)]

use yolo_loss_core::obb::{ObbBatch, ObbPreds};
use yolo_loss_core::{DetectionConfig, LossOutput, Result, TaskLoss, V8OBBLoss};

use super::common::{
    check_forms, check_loss_output, check_refusal, config, grad_names, levels, load_kind, refs, Case, Fixture, Labels,
    Lcg, Owned,
};
use super::parity::{synthetic as detection_case, SynthSpec};

/// Any loss with the OBB loss's inputs (the CUDA type on either device).
pub trait ObbLoss: for<'a> TaskLoss<f32, Preds<'a> = ObbPreds<'a, f32>, Batch<'a> = ObbBatch<'a, f32>> {}
impl<T: for<'a> TaskLoss<f32, Preds<'a> = ObbPreds<'a, f32>, Batch<'a> = ObbBatch<'a, f32>>> ObbLoss for T {}

pub type Maker<'a, L> = &'a dyn Fn(DetectionConfig) -> Result<L>;

/// One OBB call's inputs, owned.
pub struct ObbCase {
    pub cfg: DetectionConfig,
    pub levels: Vec<Owned>,
    pub angle: Owned,
    pub labels: Labels,
}

impl ObbCase {
    fn of(f: &Fixture) -> Self {
        ObbCase {
            cfg: config(f),
            levels: levels(f, "preds"),
            angle: Owned::of(f, "preds.angle"),
            labels: Labels::of(f),
        }
    }
}

impl Case for ObbCase {
    type Preds<'a> = ObbPreds<'a, f32>;
    type Batch<'a> = ObbBatch<'a, f32>;
    fn lend<T>(&self, f: impl FnOnce(Self::Preds<'_>, &Self::Batch<'_>) -> T) -> T {
        let feats = refs(&self.levels);
        f(ObbPreds { feats: &feats, angle: self.angle.r() }, &self.labels.det())
    }
}

/// Every form on one case ([`check_forms`]), CUDA against CPU within the fixtures' tolerance: |Δ| ≤ 1e-4·|ref| +
/// 1e-5·max|ref|.
fn check<L: ObbLoss>(what: &str, make: Maker<L>, c: &ObbCase) -> LossOutput<f32> {
    let (loss, cpu) = (make(c.cfg.clone()).unwrap(), V8OBBLoss::new(c.cfg.clone()).unwrap());
    check_forms::<ObbCase>(what, &loss, &cpu, c, (1e-4, 1e-5))
}

/// Every v8OBBLoss fixture: against the CPU backend and the reference.
pub fn fixtures<L: ObbLoss>(make: Maker<L>) {
    let fixtures = load_kind("v8OBBLoss");
    assert!(!fixtures.is_empty(), "no v8OBBLoss fixtures");
    for f in fixtures {
        let c = ObbCase::of(&f);
        let out = check(&f.name, make, &c);
        let mut names = grad_names("grad.preds", c.levels.len());
        names.push("grad.angle".to_string());
        check_loss_output(&format!("CUDA {}", f.name), &f, &out, &names);
    }
}

/// A synthetic OBB case: the detection case of `spec` with an angle per label in ±0.8 and predicted angles `[B, 1,
/// A]` in ±1.
pub fn synthetic_case(spec: &SynthSpec) -> ObbCase {
    let s = detection_case(spec);
    let mut rng = Lcg(spec.seed + 200);
    let anchors: usize = s.levels.iter().map(|l| l.shape[2] * l.shape[3]).sum();
    let angle = Owned {
        data: (0..spec.batch * anchors).map(|_| rng.uniform(-1.0, 1.0)).collect(),
        shape: vec![spec.batch, 1, anchors],
    };
    let n = s.labels.bi.data.len();
    let mut bb = Vec::with_capacity(5 * n);
    for b in s.labels.bb.data.chunks(4) {
        bb.extend_from_slice(b);
        bb.push(rng.uniform(-0.8, 0.8));
    }
    let labels = Labels { bi: s.labels.bi, cls: s.labels.cls, bb: Owned { data: bb, shape: vec![n, 5] } };
    ObbCase { cfg: DetectionConfig { tal_topk: 10, ..s.cfg }, levels: s.levels, angle, labels }
}

/// Keeps the labels of the images `keep` says.
fn keep_labels(c: &mut ObbCase, keep: impl Fn(usize) -> bool) {
    let rows: Vec<usize> = (0..c.labels.bi.data.len()).filter(|&r| keep(c.labels.bi.data[r] as usize)).collect();
    let pick = |o: &Owned, w: usize| Owned {
        data: rows.iter().flat_map(|&r| o.data[r * w..(r + 1) * w].to_vec()).collect(),
        shape: [vec![rows.len()], o.shape[1..].to_vec()].concat(),
    };
    c.labels = Labels { bi: pick(&c.labels.bi, 1), cls: pick(&c.labels.cls, 1), bb: pick(&c.labels.bb, 5) };
}

/// Synthetic cases against the CPU backend: the default batch, a crowded one, reg_max 1, an image without labels,
/// a batch without labels (zero box terms and a zero angle gradient).
pub fn synthetic<L: ObbLoss>(make: Maker<L>) {
    let base = SynthSpec::default();
    let cases = [
        ("default", SynthSpec { seed: 71, ..base }),
        ("crowded", SynthSpec { seed: 72, per_image: 30, batch: 3, ..base }),
        ("reg_max 1", SynthSpec { seed: 73, reg_max: 1, ..base }),
    ];
    for (name, spec) in cases {
        check(name, make, &synthetic_case(&spec));
    }
    let mut c = synthetic_case(&SynthSpec { seed: 74, batch: 3, ..base });
    keep_labels(&mut c, |image| image != 1);
    check("an image without labels", make, &c);
    let mut c = synthetic_case(&SynthSpec { seed: 75, ..base });
    keep_labels(&mut c, |_| false);
    let out = check("no labels", make, &c);
    assert!(out.grads.last().unwrap().iter().all(|&g| g == 0.0), "no labels: a zero angle gradient");
    assert_eq!((out.loss_items[0], out.loss_items[2]), (0.0, 0.0), "no labels: zero box and DFL terms");
}

/// Bad input: the CPU backend's error (code and message), from every form.
pub fn errors<L: ObbLoss>(make: Maker<L>) {
    let base = synthetic_case(&SynthSpec { seed: 81, per_image: 2, ..SynthSpec::default() });
    let (cpu, loss) = (V8OBBLoss::new(base.cfg.clone()).unwrap(), make(base.cfg.clone()).unwrap());
    let check = |what: &str, c: &ObbCase| check_refusal::<ObbCase>(what, &loss, &cpu, c);
    let copy = |o: &Owned| Owned { data: o.data.clone(), shape: o.shape.clone() };
    let variant = |edit: &dyn Fn(&mut ObbCase)| {
        let mut c = ObbCase {
            cfg: base.cfg.clone(),
            levels: base.levels.iter().map(copy).collect(),
            angle: copy(&base.angle),
            labels: Labels { bi: copy(&base.labels.bi), cls: copy(&base.labels.cls), bb: copy(&base.labels.bb) },
        };
        edit(&mut c);
        c
    };
    check("angle shape", &variant(&|c| c.angle.shape[2] -= 1));
    check("NaN angle", &variant(&|c| c.angle.data[7] = f32::NAN));
    check("NaN pred", &variant(&|c| c.levels[1].data[3] = f32::NAN));
    check(
        "boxes of 4 columns",
        &variant(&|c| c.labels.bb = Owned { data: c.labels.bb.data[..4 * 4].to_vec(), shape: vec![4, 4] }),
    );
    check("class out of range", &variant(&|c| c.labels.cls.data[0] = 99.0));
    check("inf box", &variant(&|c| c.labels.bb.data[2] = f32::INFINITY));
}
