//! v8PoseLoss test bodies shared by the GPU (tests/pose.rs) and the kernel emulator (src/pose/tests.rs): each
//! takes the CUDA loss's maker and checks it against the reference fixtures and the CPU backend. The includer
//! provides `common` (mod.rs) and `parity` (parity.rs: the synthetic detection cases).

#![allow(dead_code)]

use yolo_loss_core::pose::{PoseBatch, PoseConfig, PosePreds, V8PoseLoss};
use yolo_loss_core::{LossOutput, Result, TaskLoss};

use super::common::{
    check_forms, check_loss_output, check_refusal, config, grad_names, levels, load_kind, refs, Case, Fixture, Labels,
    Lcg, Owned,
};
use super::parity::{synthetic as detection_case, SynthSpec};

/// Any loss with the pose loss's inputs (the CUDA type on either device).
pub trait PoseLoss: for<'a> TaskLoss<f32, Preds<'a> = PosePreds<'a, f32>, Batch<'a> = PoseBatch<'a, f32>> {}
impl<T: for<'a> TaskLoss<f32, Preds<'a> = PosePreds<'a, f32>, Batch<'a> = PoseBatch<'a, f32>>> PoseLoss for T {}

pub type Maker<'a, L> = &'a dyn Fn(PoseConfig) -> Result<L>;

/// One pose call's inputs, owned.
pub struct PoseCase {
    pub cfg: PoseConfig,
    pub levels: Vec<Owned>,
    pub kpts: Owned,
    pub labels: Labels,
    pub keypoints: Owned,
}

impl PoseCase {
    fn of(f: &Fixture) -> Self {
        let ks = f.config["kpt_shape"].as_array().unwrap();
        let kpt_shape = (ks[0].as_u64().unwrap() as usize, ks[1].as_u64().unwrap() as usize);
        let is_list = f.config["kpt_shape_is_list"].as_bool().unwrap_or(true);
        PoseCase {
            cfg: PoseConfig { det: config(f), kpt_shape, oks_sigmas: Some(is_list) },
            levels: levels(f, "preds"),
            kpts: Owned::of(f, "preds.kpts"),
            labels: Labels::of(f),
            keypoints: Owned::of(f, "batch.keypoints"),
        }
    }
}

impl Case for PoseCase {
    type Preds<'a> = PosePreds<'a, f32>;
    type Batch<'a> = PoseBatch<'a, f32>;
    fn lend<T>(&self, f: impl FnOnce(Self::Preds<'_>, &Self::Batch<'_>) -> T) -> T {
        let feats = refs(&self.levels);
        let preds = PosePreds { feats: &feats, kpts: self.kpts.r() };
        f(preds, &PoseBatch { det: self.labels.det(), keypoints: self.keypoints.r() })
    }
}

/// Every form on one case ([`check_forms`]), CUDA against CPU within relative 1e-5 with a floor of 1e-6 of the
/// largest magnitude (as the detection bodies).
fn check<L: PoseLoss>(what: &str, make: Maker<L>, c: &PoseCase) -> LossOutput<f32> {
    let (loss, cpu) = (make(c.cfg.clone()).unwrap(), V8PoseLoss::new(c.cfg.clone()).unwrap());
    check_forms::<PoseCase>(what, &loss, &cpu, c, (1e-5, 1e-6))
}

/// Every v8PoseLoss fixture (both sigma choices, D = 2 and 3, invisible keypoints, no positives): against the
/// reference and the CPU backend.
pub fn fixtures<L: PoseLoss>(make: Maker<L>) {
    let fixtures = load_kind("v8PoseLoss");
    assert!(!fixtures.is_empty(), "no v8PoseLoss fixtures");
    for f in fixtures {
        let c = PoseCase::of(&f);
        let out = check(&f.name, make, &c);
        let mut names = grad_names("grad.preds", c.levels.len());
        names.push("grad.kpts".to_string());
        check_loss_output(&format!("CUDA {}", f.name), &f, &out, &names);
    }
}

/// A synthetic pose case: the detection case of `spec`, keypoints `[B, K·D, A]` in ±2, GT keypoints around each
/// box with about a third invisible (D = 3).
pub fn synthetic_case(spec: &SynthSpec, (k, d): (usize, usize), oks_sigmas: Option<bool>) -> PoseCase {
    let s = detection_case(spec);
    let mut rng = Lcg(spec.seed + 100);
    let anchors: usize = s.levels.iter().map(|l| l.shape[2] * l.shape[3]).sum();
    let kpts = Owned {
        data: (0..spec.batch * k * d * anchors).map(|_| rng.uniform(-2.0, 2.0)).collect(),
        shape: vec![spec.batch, k * d, anchors],
    };
    let n = s.labels.bi.data.len();
    let mut keypoints = Vec::with_capacity(n * k * d);
    for bb in s.labels.bb.data.chunks(4) {
        for _ in 0..k {
            keypoints.push(bb[0] + rng.uniform(-0.5, 0.5) * bb[2]);
            keypoints.push(bb[1] + rng.uniform(-0.5, 0.5) * bb[3]);
            if d == 3 {
                keypoints.push(if rng.next_u32().is_multiple_of(3) { 0.0 } else { 2.0 });
            }
        }
    }
    PoseCase {
        cfg: PoseConfig { det: s.cfg, kpt_shape: (k, d), oks_sigmas },
        levels: s.levels,
        kpts,
        labels: s.labels,
        keypoints: Owned { data: keypoints, shape: vec![n, k, d] },
    }
}

/// Keeps the labels of the images `keep` says (and their keypoints).
fn keep_labels(c: &mut PoseCase, keep: impl Fn(usize) -> bool) {
    let kd = c.cfg.kpt_shape.0 * c.cfg.kpt_shape.1;
    let rows: Vec<usize> = (0..c.labels.bi.data.len()).filter(|&r| keep(c.labels.bi.data[r] as usize)).collect();
    let pick = |o: &Owned, w: usize| Owned {
        data: rows.iter().flat_map(|&r| o.data[r * w..(r + 1) * w].to_vec()).collect(),
        shape: [vec![rows.len()], o.shape[1..].to_vec()].concat(),
    };
    c.labels = Labels { bi: pick(&c.labels.bi, 1), cls: pick(&c.labels.cls, 1), bb: pick(&c.labels.bb, 4) };
    c.keypoints = pick(&c.keypoints, kd);
}

/// Synthetic cases against the CPU backend: COCO-17 with OKS sigmas and with uniform ones, D = 2, a crowded
/// batch, an image without labels, a batch without labels, top-1.
pub fn synthetic<L: PoseLoss>(make: Maker<L>) {
    let base = SynthSpec::default();
    let cases = [
        ("COCO-17, OKS sigmas", SynthSpec { seed: 51, ..base }, (17, 3), None),
        ("COCO-17, uniform sigmas", SynthSpec { seed: 52, ..base }, (17, 3), Some(false)),
        ("K 5, D 2", SynthSpec { seed: 53, ..base }, (5, 2), None),
        ("crowded, K 4", SynthSpec { seed: 54, per_image: 30, batch: 3, ..base }, (4, 3), None),
        ("top-1", SynthSpec { seed: 55, topk: 1, ..base }, (6, 3), None),
    ];
    for (name, spec, shape, oks) in cases {
        check(name, make, &synthetic_case(&spec, shape, oks));
    }
    let mut c = synthetic_case(&SynthSpec { seed: 56, batch: 3, ..base }, (17, 3), None);
    keep_labels(&mut c, |image| image != 1);
    check("an image without labels", make, &c);
    let mut c = synthetic_case(&SynthSpec { seed: 57, ..base }, (5, 3), None);
    keep_labels(&mut c, |_| false);
    let out = check("no labels", make, &c);
    assert!(out.grads.last().unwrap().iter().all(|&g| g == 0.0), "no labels: a zero kpts gradient");
}

/// Bad input: the CPU backend's error (code and message), from every form, in the CPU backend's order.
pub fn errors<L: PoseLoss>(make: Maker<L>) {
    let base = synthetic_case(&SynthSpec { seed: 61, per_image: 2, ..SynthSpec::default() }, (5, 3), None);
    let (cpu, loss) = (V8PoseLoss::new(base.cfg.clone()).unwrap(), make(base.cfg.clone()).unwrap());
    let check = |what: &str, c: &PoseCase| check_refusal::<PoseCase>(what, &loss, &cpu, c);
    let copy = |o: &Owned| Owned { data: o.data.clone(), shape: o.shape.clone() };
    let variant = |edit: &dyn Fn(&mut PoseCase)| {
        let mut c = PoseCase {
            cfg: base.cfg.clone(),
            levels: base.levels.iter().map(copy).collect(),
            kpts: copy(&base.kpts),
            labels: Labels { bi: copy(&base.labels.bi), cls: copy(&base.labels.cls), bb: copy(&base.labels.bb) },
            keypoints: copy(&base.keypoints),
        };
        edit(&mut c);
        c
    };
    check("kpts shape", &variant(&|c| c.kpts.shape[1] -= 1));
    check("NaN kpt", &variant(&|c| c.kpts.data[7] = f32::NAN));
    check(
        "NaN pred and kpts shape",
        &variant(&|c| {
            c.levels[0].data[3] = f32::NAN;
            c.kpts.shape[2] += 1;
        }),
    );
    check("GT keypoints shape", &variant(&|c| c.keypoints.shape[2] = 2));
    check("inf GT keypoint", &variant(&|c| c.keypoints.data[4] = f32::INFINITY));
    check("class out of range", &variant(&|c| c.labels.cls.data[0] = 99.0));
    check(
        "NaN kpt and class out of range",
        &variant(&|c| {
            c.kpts.data[0] = f32::NAN;
            c.labels.cls.data[0] = 99.0;
        }),
    );
}
