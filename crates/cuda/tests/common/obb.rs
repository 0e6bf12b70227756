//! v8OBBLoss test bodies shared by the GPU (tests/obb.rs) and the kernel emulator (src/obb/tests.rs): each takes
//! the CUDA loss's maker and checks it against the reference fixtures and the CPU backend. The includer provides
//! `common` (mod.rs) and `parity` (parity.rs: the synthetic detection cases).

#![allow(dead_code)]

use yolo_loss_core::obb::{ObbBatch, ObbPreds};
use yolo_loss_core::{DetectionConfig, LossOutput, Result, TaskLoss, V8OBBLoss};

use super::common::{
    assert_close_tol, check_loss_output, config, grad_names, levels, load_kind, refs, to_f64, Fixture, Labels, Lcg,
    Owned,
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

    fn run<T>(&self, f: impl FnOnce(ObbPreds<f32>, &ObbBatch<f32>) -> T) -> T {
        let feats = refs(&self.levels);
        f(ObbPreds { feats: &feats, angle: self.angle.r() }, &self.labels.det())
    }
}

/// CUDA against CPU within the fixtures' tolerance: |Δ| ≤ 1e-4·|ref| + 1e-5·max|ref|.
fn compare(what: &str, cuda: &LossOutput<f32>, cpu: &LossOutput<f32>) {
    let close = |name: &str, a: &[f32], b: &[f32]| {
        assert_close_tol(&format!("{what} {name}"), &to_f64(a), &to_f64(b), 1e-4, 1e-5)
    };
    close("loss", &cuda.loss, &cpu.loss);
    close("items", &cuda.loss_items, &cpu.loss_items);
    assert_eq!(cuda.grads.len(), cpu.grads.len(), "{what}: gradient count");
    for (i, (g, c)) in cuda.grads.iter().zip(&cpu.grads).enumerate() {
        close(&format!("grad[{i}]"), g, c);
    }
}

/// Every form on one case: `value_and_grad` against the CPU backend, `call` with the same values and no gradient,
/// `value_and_grad_into` on NaN-filled buffers (every element written) with the same bits. Returns the output.
fn check_forms<L: ObbLoss>(what: &str, make: Maker<L>, c: &ObbCase) -> LossOutput<f32> {
    let cpu = c.run(|p, b| V8OBBLoss::new(c.cfg.clone()).unwrap().value_and_grad(p, b)).unwrap();
    let loss = make(c.cfg.clone()).unwrap();
    let out = c.run(|p, b| loss.value_and_grad(p, b)).unwrap_or_else(|e| panic!("{what}: {e}"));
    compare(what, &out, &cpu);
    let call = c.run(|p, b| loss.call(p, b)).unwrap();
    assert_eq!((&call.loss, &call.loss_items), (&out.loss, &out.loss_items), "{what}: call");
    assert!(call.grads.is_empty(), "{what}: call computes no gradient");
    let mut bufs: Vec<Vec<f32>> = out.grads.iter().map(|g| vec![f32::NAN; g.len()]).collect();
    let mut slices: Vec<&mut [f32]> = bufs.iter_mut().map(|v| v.as_mut_slice()).collect();
    let (l, items) = c.run(|p, b| loss.value_and_grad_into(p, b, &mut slices)).unwrap();
    assert_eq!((&l, &items), (&out.loss, &out.loss_items), "{what}: value_and_grad_into");
    for (i, (got, want)) in bufs.iter().zip(&out.grads).enumerate() {
        assert_eq!(to_f64(got), to_f64(want), "{what}: value_and_grad_into gradient {i}");
    }
    out
}

/// Every v8OBBLoss fixture: against the CPU backend and the reference.
pub fn fixtures<L: ObbLoss>(make: Maker<L>) {
    let fixtures = load_kind("v8OBBLoss");
    assert!(!fixtures.is_empty(), "no v8OBBLoss fixtures");
    for f in fixtures {
        let c = ObbCase::of(&f);
        let out = check_forms(&f.name, make, &c);
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
        check_forms(name, make, &synthetic_case(&spec));
    }
    let mut c = synthetic_case(&SynthSpec { seed: 74, batch: 3, ..base });
    keep_labels(&mut c, |image| image != 1);
    check_forms("an image without labels", make, &c);
    let mut c = synthetic_case(&SynthSpec { seed: 75, ..base });
    keep_labels(&mut c, |_| false);
    let out = check_forms("no labels", make, &c);
    assert!(out.grads.last().unwrap().iter().all(|&g| g == 0.0), "no labels: a zero angle gradient");
    assert_eq!((out.loss_items[0], out.loss_items[2]), (0.0, 0.0), "no labels: zero box and DFL terms");
}

/// Bad input: the CPU backend's error (code and message), from every form.
pub fn errors<L: ObbLoss>(make: Maker<L>) {
    let base = synthetic_case(&SynthSpec { seed: 81, per_image: 2, ..SynthSpec::default() });
    let (cpu, loss) = (V8OBBLoss::new(base.cfg.clone()).unwrap(), make(base.cfg.clone()).unwrap());
    let check = |what: &str, c: &ObbCase| {
        let want = c.run(|p, b| cpu.value_and_grad(p, b)).expect_err("bad input must be rejected");
        let got = c.run(|p, b| loss.value_and_grad(p, b)).expect_err("bad input must be rejected");
        assert_eq!((got.code, &got.message), (want.code, &want.message), "{what}");
        let got = c.run(|p, b| loss.call(p, b)).expect_err("bad input must be rejected");
        assert_eq!((got.code, &got.message), (want.code, &want.message), "{what} (call)");
    };
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
