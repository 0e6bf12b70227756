//! v8ClassificationLoss test bodies shared by the GPU (tests/classification.rs) and the kernel emulator
//! (src/classification/tests.rs): each takes the CUDA loss's maker and checks it against the reference fixtures and
//! the CPU backend. The includer provides a `common` module (mod.rs).

#![allow(dead_code)]

use yolo_loss_core::classification::V8ClassificationLoss;
use yolo_loss_core::{LossOutput, Result, TaskLoss, TensorRef};

use super::common::{check_forms, check_loss_output, check_refusal, load_kind, Case, Lcg, Owned};

/// Any loss with the classification loss's inputs (the CUDA type on either device).
pub trait ClsLoss: for<'a> TaskLoss<f32, Preds<'a> = TensorRef<'a, f32>, Batch<'a> = TensorRef<'a, f32>> {}
impl<T: for<'a> TaskLoss<f32, Preds<'a> = TensorRef<'a, f32>, Batch<'a> = TensorRef<'a, f32>>> ClsLoss for T {}

/// One classification call's inputs, owned: logits `[B, nc]`, class ids `[B]` or `[B, 1]`.
pub struct ClsCase {
    pub logits: Owned,
    pub cls: Owned,
}

impl Case for ClsCase {
    type Preds<'a> = TensorRef<'a, f32>;
    type Batch<'a> = TensorRef<'a, f32>;
    fn lend<T>(&self, f: impl FnOnce(Self::Preds<'_>, &Self::Batch<'_>) -> T) -> T {
        f(self.logits.r(), &self.cls.r())
    }
}

/// Every form on one input ([`check_forms`]), CUDA against CPU within the fixtures' tolerance (relative 1e-4, floor
/// 1e-5 of the largest magnitude); the emulator agrees to the bit (same expf/logf), a GPU within its expf's ulps.
fn check<L: ClsLoss>(what: &str, loss: &L, case: &ClsCase) -> LossOutput<f32> {
    check_forms::<ClsCase>(what, loss, &V8ClassificationLoss::new(), case, (1e-4, 1e-5))
}

/// Every v8ClassificationLoss fixture: against the reference and the CPU backend.
pub fn fixtures<L: ClsLoss>(make: &dyn Fn() -> Result<L>) {
    let fixtures = load_kind("v8ClassificationLoss");
    assert!(!fixtures.is_empty(), "no v8ClassificationLoss fixtures");
    let loss = make().unwrap();
    for f in fixtures {
        let case = ClsCase { logits: Owned::of(&f, "preds.logits"), cls: Owned::of(&f, "batch.cls") };
        let out = check(&f.name, &loss, &case);
        check_loss_output(&format!("CUDA {}", f.name), &f, &out, &["grad.logits".to_string()]);
    }
}

/// Random logits against the CPU backend: one image of one class, many classes (ImageNet's 1000), a larger batch,
/// extreme logits (exp underflows for all but the largest), `[B, 1]` class ids.
pub fn synthetic<L: ClsLoss>(make: &dyn Fn() -> Result<L>) {
    let loss = make().unwrap();
    for (b, nc, spread, seed) in
        [(1usize, 1usize, 1.0f32, 1u64), (3, 1000, 4.0, 2), (300, 10, 2.0, 3), (5, 7, 300.0, 4)]
    {
        let mut rng = Lcg(seed);
        let logits = Owned { data: (0..b * nc).map(|_| rng.uniform(-spread, spread)).collect(), shape: vec![b, nc] };
        let cls = Owned { data: (0..b).map(|_| (rng.next_u32() as usize % nc) as f32).collect(), shape: vec![b, 1] };
        check(&format!("B {b}, nc {nc}, logits in ±{spread}"), &loss, &ClsCase { logits, cls });
    }
}

/// Bad input: the CPU backend's error (code and message), from every form.
pub fn errors<L: ClsLoss>(make: &dyn Fn() -> Result<L>) {
    let (cpu, loss) = (V8ClassificationLoss::new(), make().unwrap());
    let t = |data: Vec<f32>, shape: Vec<usize>| Owned { data, shape };
    let cases = [
        ("rank 1 logits", t(vec![0.0; 4], vec![4]), t(vec![0.0], vec![1])),
        ("empty logits", t(vec![], vec![0, 3]), t(vec![], vec![0])),
        ("class count", t(vec![0.0; 6], vec![2, 3]), t(vec![0.0; 3], vec![3])),
        ("NaN logit", t(vec![0.0, f32::NAN, 1.0, 2.0], vec![2, 2]), t(vec![0.0, 1.0], vec![2])),
        ("inf class", t(vec![0.0; 4], vec![2, 2]), t(vec![0.0, f32::INFINITY], vec![2])),
        ("class out of range", t(vec![0.0; 4], vec![2, 2]), t(vec![0.0, 2.0], vec![2])),
        ("fractional class", t(vec![0.0; 4], vec![2, 2]), t(vec![0.5, 1.0], vec![2])),
        ("negative class", t(vec![0.0; 4], vec![2, 2]), t(vec![1.0, -1.0], vec![2])),
    ];
    for (what, logits, cls) in cases {
        check_refusal::<ClsCase>(what, &loss, &cpu, &ClsCase { logits, cls });
    }
}

/// `time_kernels` around calls (the benchmark's kernel clock, shared by every task through `Kernels`): the same
/// output as an untimed call; the device time of both calls' kernels on a GPU (`device_clock`), none on the
/// emulator (no device clock); none for a closure that launches nothing, and an inner clock's calls count in it only.
pub fn time_kernels<L: ClsLoss>(make: &dyn Fn() -> Result<L>, device_clock: bool) {
    use yolo_loss_cuda::time_kernels;
    let loss = make().unwrap();
    let mut rng = Lcg(7);
    let logits = Owned { data: (0..64 * 100).map(|_| rng.uniform(-3.0, 3.0)).collect(), shape: vec![64, 100] };
    let cls = Owned { data: (0..64).map(|_| (rng.next_u32() % 100) as f32).collect(), shape: vec![64] };
    let plain = loss.value_and_grad(logits.r(), &cls.r()).unwrap();
    let ((first, second), ms) = time_kernels(|| {
        let first = loss.value_and_grad(logits.r(), &cls.r()).unwrap();
        (first, loss.value_and_grad(logits.r(), &cls.r()).unwrap())
    });
    assert_eq!((&first, &second), (&plain, &plain), "timed calls compute what untimed ones do");
    assert_eq!(ms.is_some(), device_clock, "device time: {ms:?}");
    assert!(ms.is_none_or(|ms| ms > 0.0 && ms.is_finite()), "device time: {ms:?}");
    let ((_, inner), outer) = time_kernels(|| time_kernels(|| loss.call(logits.r(), &cls.r()).unwrap()));
    assert_eq!((inner.is_some(), outer), (device_clock, None), "nested clocks");
}
