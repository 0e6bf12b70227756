//! The detection kernels on the CPU emulator (emu/, built by build.rs with the host C++ compiler), against the CPU
//! backend and the reference fixtures: the same bodies as the GPU tests (tests/detection.rs), so every CI run
//! checks the kernels' logic even without a GPU. Slow-ish (every GPU thread is a fiber): small cases only.

// Loaded once in the crate: the other tasks' emulator tests use these two from here (a file included twice would
// be two copies of one module).
#[path = "../../tests/common/mod.rs"]
pub(crate) mod common;
#[path = "../../tests/common/parity.rs"]
#[macro_use]
pub(crate) mod parity;

use crate::detection::CudaDetectionLoss;
use crate::e2e::CudaE2EDetectLoss;
use crate::prompts::CudaTVPDetectLoss;
#[cfg(yolo_cuda_emulator)]
use yolo_loss_core::e2e::E2EPreds;
use yolo_loss_core::{Real, TaskLoss};

/// The emulator's makers, or None after printing why the emulator tests are skipped.
#[cfg(yolo_cuda_emulator)]
fn emulator(test: &str) -> Option<parity::Makers<'static>> {
    let _ = test;
    Some(parity::Makers {
        det: &CudaDetectionLoss::emulated,
        e2e: &CudaE2EDetectLoss::emulated,
        tvp: &CudaTVPDetectLoss::emulated,
    })
}

#[cfg(not(yolo_cuda_emulator))]
fn emulator(test: &str) -> Option<parity::Makers<'static>> {
    crate::test_support::skip_without_emulator(test);
    None
}

#[cfg(yolo_cuda_emulator)]
#[test]
fn emulator_params_layout_matches_the_kernels() {
    assert_eq!(super::emu::cxx_layout(), super::params::layout_probe(), "DetParams: C++ (size, offsets) vs Rust");
}

/// The kernels' per-logit BCE and sigmoid are a port of the CPU backend's (fastmath.rs): compiled without
/// contraction (like nvcc --fmad=false) they must agree to the bit, so the two backends cannot drift apart unseen.
#[cfg(yolo_cuda_emulator)]
#[test]
fn kernel_class_math_is_the_cpu_backends_bit_for_bit() {
    let mut xs: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.025).collect();
    xs.extend([0.0, -0.0, 1e-30, -1e-30, 1e-7, -1e-7, 87.5, -87.5, 88.0, -88.0, 1e4, -1e4, f32::MAX, -f32::MAX]);
    for x in xs {
        let (loss, sig) = super::emu::kernel_bce_sigmoid(x);
        let (cpu_loss, cpu_sig) = Real::bce_sigmoid(x);
        assert_eq!((loss.to_bits(), sig.to_bits()), (cpu_loss.to_bits(), cpu_sig.to_bits()), "x = {x}");
        // And through the CPU's vectorised pass (the SIMD build the CPU backend dispatches to).
        let mut grad = [0.0f32];
        let sum = <f32 as Real>::bce_zero(&[x], Some(&mut grad), 1.0);
        assert_eq!((sum, grad[0].to_bits()), (loss as f64, sig.to_bits()), "x = {x} (vectorised pass)");
    }
}

kernel_tests!(emulator => emulator_v8_detection_fixtures, emulator_e2e_fixtures,
    emulator_tvp_fixtures_and_text_channels, emulator_synthetic_cases, emulator_errors_match_cpu);

/// The loss types cross threads (the binding runs them on worker threads).
#[test]
fn loss_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<CudaDetectionLoss>();
    check::<CudaE2EDetectLoss>();
    check::<CudaTVPDetectLoss>();
    check::<crate::DetectionLossAny>();
}

/// A digest of every output bit of the emulated kernels on every detection, E2E and TVP fixture and on the
/// synthetic cases: loss, items and gradients of `value_and_grad`, `call`'s values, the assignment (anchor, GT
/// slot, score bits). Refactors that leave the math alone must leave it unchanged: run this test with
/// `--nocapture` before the change, then with `YOLO_LOSS_EMU_DIGEST=<the printed digest>` after it.
#[cfg(yolo_cuda_emulator)]
#[test]
fn emulator_output_digest() {
    use common::{config, levels, load_kind, refs, Labels};
    use yolo_loss_core::LossOutput;

    #[derive(Default)]
    struct Fnv(u64);
    impl Fnv {
        fn word(&mut self, w: u64) {
            for byte in w.to_le_bytes() {
                self.0 = (self.0 ^ byte as u64).wrapping_mul(0x100_0000_01b3);
            }
        }
        fn floats(&mut self, v: &[f32]) {
            self.word(v.len() as u64);
            v.iter().for_each(|x| self.word(x.to_bits() as u64));
        }
        fn output(&mut self, o: &LossOutput<f32>) {
            self.floats(&o.loss);
            self.floats(&o.loss_items);
            self.word(o.grads.len() as u64);
            o.grads.iter().for_each(|g| self.floats(g));
        }
        fn assignment(&mut self, a: &[Vec<(usize, usize, f32)>]) {
            for image in a {
                self.word(image.len() as u64);
                for &(anchor, gt, score) in image {
                    [anchor as u64, gt as u64, score.to_bits() as u64].into_iter().for_each(|w| self.word(w));
                }
            }
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    for f in load_kind("v8DetectionLoss") {
        let (feats, lab) = (levels(&f, "preds"), Labels::of(&f));
        let loss = CudaDetectionLoss::emulated(config(&f)).unwrap();
        h.output(&loss.value_and_grad(&refs(&feats), &lab.det()).unwrap());
        h.output(&loss.call(&refs(&feats), &lab.det()).unwrap());
        h.assignment(&loss.assignment(&refs(&feats), &lab.det()).unwrap());
    }
    for f in load_kind("E2EDetectLoss") {
        let (o2m, o2o, lab) = (levels(&f, "preds.one2many"), levels(&f, "preds.one2one"), Labels::of(&f));
        let loss = CudaE2EDetectLoss::emulated(config(&f)).unwrap();
        let (one2many, one2one) = (refs(&o2m), refs(&o2o));
        let preds = E2EPreds { one2many: &one2many, one2one: &one2one };
        h.output(&loss.value_and_grad(preds, &lab.det()).unwrap());
        h.output(&loss.call(preds, &lab.det()).unwrap());
        h.assignment(&loss.one2many.assignment(&refs(&o2m), &lab.det()).unwrap());
        h.assignment(&loss.one2one.assignment(&refs(&o2o), &lab.det()).unwrap());
    }
    for f in load_kind("TVPDetectLoss") {
        let (feats, lab) = (levels(&f, "preds"), Labels::of(&f));
        let loss = CudaTVPDetectLoss::emulated(config(&f)).unwrap();
        h.output(&loss.value_and_grad(&refs(&feats), &lab.det()).unwrap());
        h.output(&loss.call(&refs(&feats), &lab.det()).unwrap());
    }
    for (seed, per_image, topk) in [(31u64, 6, 10), (32, 40, 13), (33, 3, 1)] {
        let s = parity::synthetic(&parity::SynthSpec { seed, per_image, topk, ..Default::default() });
        let loss = CudaDetectionLoss::emulated(s.cfg.clone()).unwrap();
        h.output(&loss.value_and_grad(&refs(&s.levels), &s.labels.det()).unwrap());
        h.assignment(&loss.assignment(&refs(&s.levels), &s.labels.det()).unwrap());
    }
    let digest = format!("{:016x}", h.0);
    eprintln!("emulator output digest: {digest}");
    if let Ok(want) = std::env::var("YOLO_LOSS_EMU_DIGEST") {
        assert_eq!(digest, want.trim(), "the emulated kernels' outputs changed");
    }
}
