//! 'auto' with both backends, the CUDA side on the kernel emulator (v8DetectionLoss): the probe alternates, the
//! choice sticks per shape key, and every call returns exactly what the backend it ran on returns. Plus the table of
//! keys, and 'auto' without a GPU.

use std::time::Duration;

use yolo_loss_core::{DetectionConfig, TaskLoss, V8DetectionLoss};

use super::{Races, ShapeKey};
use crate::backend::{Backend, Device, Selected};
use crate::detection::CudaDetectionLoss;

/// A full table forgets its least recently used key, and only that one.
#[test]
fn the_table_forgets_the_least_recently_used_key() {
    let keys: Vec<ShapeKey> = (0..4).map(|i| ShapeKey(i * 7919)).collect();
    let mut races = Races::new(3);
    for &k in &keys[..3] {
        races.race(k).record(Backend::Cpu, Some(Duration::from_millis(1)));
    }
    races.race(keys[0]); // key 1 is now the least recently used
    races.race(keys[3]);
    assert!(races.get(keys[1]).is_none(), "key 1 forgotten");
    for k in [keys[0], keys[2], keys[3]] {
        assert!(races.get(k).is_some(), "{k:?} kept");
    }
    // What key 0 had recorded is still there: its next probe is the CUDA one; key 3 starts afresh on the CPU.
    assert_eq!(races.get(keys[0]).map(|r| r.next()), Some(Backend::Cuda));
    assert_eq!(races.get(keys[3]).map(|r| r.next()), Some(Backend::Cpu));
    // A time reported for a forgotten key is dropped, not given to another.
    races.record(keys[1], Backend::Cpu, Some(Duration::ZERO));
    assert!(races.get(keys[1]).is_none());
}

/// Without a usable GPU (this machine, CI), 'auto' is the CPU backend alone: no second backend, no probing, every
/// call reported on the CPU before it is made. With one it holds both.
#[test]
fn auto_without_a_gpu_is_the_cpu_alone() {
    let cfg = DetectionConfig { nc: 2, reg_max: 4, strides: vec![8.0], hyp: Default::default(), tal_topk: 10 };
    let loss = crate::DetectionLossAny::new(cfg, Device::Auto).unwrap();
    match crate::availability() {
        crate::Availability::Unavailable { .. } => {
            assert!(matches!(loss, Selected::Cpu(_)));
            assert_eq!((loss.backend(), loss.last_backend()), (Some(Backend::Cpu), Some(Backend::Cpu)));
        }
        crate::Availability::Available { .. } => {
            assert!(matches!(loss, Selected::Auto(_)));
            assert_eq!((loss.backend(), loss.last_backend()), (None, None));
        }
    }
}

#[cfg(not(yolo_cuda_emulator))]
#[test]
fn auto_on_the_emulator() {
    crate::test_support::skip_without_emulator("auto_on_the_emulator");
}

#[cfg(yolo_cuda_emulator)]
mod emulated {
    use yolo_loss_core::{DetBatch, ErrorCode, LossOutput};

    use super::*;
    use crate::auto::race::PROBES;
    use crate::auto::{measured, AutoLoss, Timing};
    use crate::detection::tests::common::{refs, Owned};
    use crate::detection::tests::parity::{synthetic, SynthSpec, Synthetic};
    use Backend::{Cpu, Cuda};

    type Auto = Selected<V8DetectionLoss, CudaDetectionLoss>;

    /// One 64×64 image, 84 anchors, reg_max 4, `labels` labels: small enough for the emulator. The seeds used
    /// are ones where the two backends' bits differ (most cases this small agree to the bit).
    fn case(labels: usize, seed: u64) -> Synthetic {
        let spec =
            SynthSpec { batch: 1, img_h: 64, img_w: 64, reg_max: 4, per_image: labels, seed, ..Default::default() };
        synthetic(&spec)
    }

    fn auto(cfg: &DetectionConfig, timing: Timing) -> Auto {
        Selected::Auto(AutoLoss::new(
            V8DetectionLoss::new(cfg.clone()).unwrap(),
            CudaDetectionLoss::emulated(cfg.clone()).unwrap(),
            timing,
        ))
    }

    /// Injected timings: the CUDA side "takes" 1 ms, the CPU 2 ms, whatever they really take.
    fn cuda_faster(b: Backend, _: Duration) -> Duration {
        Duration::from_millis(if b == Cuda { 1 } else { 2 })
    }

    /// What each backend alone returns for `s`: `value_and_grad` on the CPU, on the emulator. They differ in some
    /// bits (the cases are chosen so), so a result tells which backend made it.
    fn alone(s: &Synthetic) -> [LossOutput<f32>; 2] {
        let (feats, batch) = (refs(&s.levels), s.labels.det());
        let cpu = V8DetectionLoss::new(s.cfg.clone()).unwrap().value_and_grad(&feats, &batch).unwrap();
        let emu = CudaDetectionLoss::emulated(s.cfg.clone()).unwrap().value_and_grad(&feats, &batch).unwrap();
        assert_ne!(cpu, emu, "the backends' results cannot be told apart");
        [cpu, emu]
    }

    fn of(b: Backend, [cpu, emu]: &[LossOutput<f32>; 2]) -> &LossOutput<f32> {
        if b == Cpu {
            cpu
        } else {
            emu
        }
    }

    /// Runs 2·PROBES + 3 calls of `s` through `loss`, rotating the forms (`value_and_grad`, `call`,
    /// `value_and_grad_overwrite` into buffers holding garbage), checks each against the backend it reports it ran
    /// on, bit for bit, and returns the backends in order. Checks that nothing is decided before the probe's end.
    fn run_calls(loss: &Auto, s: &Synthetic, want: &[LossOutput<f32>; 2]) -> Vec<Backend> {
        let (feats, batch) = (refs(&s.levels), s.labels.det());
        let mut ran = Vec::new();
        for i in 0..2 * PROBES as usize + 3 {
            let decided = loss.backend_for(&feats, &batch);
            assert_eq!(decided.is_some(), i >= 2 * PROBES as usize, "call {i}: decided {decided:?}");
            let (out, grads) = match i % 3 {
                0 => (loss.value_and_grad(&feats, &batch).unwrap(), true),
                1 => (loss.call(&feats, &batch).unwrap(), false),
                _ => {
                    let mut bufs: Vec<Vec<f32>> = feats.iter().map(|t| vec![f32::NAN; t.data.len()]).collect();
                    let mut slices: Vec<&mut [f32]> = bufs.iter_mut().map(Vec::as_mut_slice).collect();
                    let (loss, loss_items) = loss.value_and_grad_overwrite(&feats, &batch, &mut slices).unwrap();
                    (LossOutput { loss, loss_items, grads: bufs }, true)
                }
            };
            let b = loss.last_backend().unwrap();
            let w = of(b, want);
            assert_eq!((&out.loss, &out.loss_items), (&w.loss, &w.loss_items), "call {i} on {b:?}");
            if grads {
                assert_eq!(out.grads, w.grads, "call {i} on {b:?}: gradients");
            }
            ran.push(b);
        }
        ran
    }

    /// The probe's order, then the winner on every later call.
    fn expected(winner: Backend) -> Vec<Backend> {
        let probe = (0..PROBES).flat_map(|_| [Cpu, Cuda]);
        probe.chain([winner; 3]).collect()
    }

    /// Real wall-clock timing: the emulator (every GPU thread a fiber) is far slower than the CPU backend, so the
    /// probe of both ends on the CPU. (Not a speed test: the gap is orders of magnitude, see the printed times.)
    #[test]
    fn measured_the_emulator_loses_to_the_cpu() {
        let s = case(3, 2);
        let want = alone(&s);
        let loss = auto(&s.cfg, measured);
        assert_eq!(loss.last_backend(), None, "no call yet");
        assert_eq!(run_calls(&loss, &s, &want), expected(Cpu));
        let (feats, batch) = (refs(&s.levels), s.labels.det());
        let time = |l: &dyn Fn()| {
            let t = std::time::Instant::now();
            l();
            t.elapsed()
        };
        let cpu = V8DetectionLoss::new(s.cfg.clone()).unwrap();
        let emu = CudaDetectionLoss::emulated(s.cfg.clone()).unwrap();
        eprintln!(
            "auto probe on the emulator: cpu {:?}, emulated cuda {:?} per call",
            time(&|| drop(cpu.value_and_grad(&feats, &batch))),
            time(&|| drop(emu.value_and_grad(&feats, &batch))),
        );
    }

    /// Injected timings that make CUDA faster: the probe ends on CUDA, and later calls return the emulator's bits.
    #[test]
    fn injected_timings_choose_cuda() {
        let s = case(3, 15);
        let want = alone(&s);
        let loss = auto(&s.cfg, cuda_faster);
        assert_eq!(run_calls(&loss, &s, &want), expected(Cuda));
        assert_eq!(loss.backend(), None, "'auto' with both backends");
    }

    /// A call of other shapes (here: a label count in another bucket) is raced on its own, and the first key keeps
    /// its choice; bad input fails on the backend whose turn it is without counting as a probe.
    #[test]
    fn each_shape_key_is_raced_on_its_own_and_bad_input_is_no_probe() {
        let a = case(3, 23);
        let loss = auto(&a.cfg, cuda_faster);
        assert_eq!(run_calls(&loss, &a, &alone(&a)), expected(Cuda));
        let b = case(9, 12); // 9 labels: bucket 8–15, 3 labels: bucket 2–3
        let (feats, batch) = (refs(&b.levels), b.labels.det());
        let mut bad_cls = Owned { data: b.labels.cls.data.clone(), shape: b.labels.cls.shape.clone() };
        bad_cls.data[0] = 99.0;
        let bad = DetBatch { cls: bad_cls.r(), ..batch };
        for _ in 0..2 {
            let e = loss.value_and_grad(&feats, &bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::LabelOutOfRange, "{e}");
            assert_eq!(loss.last_backend(), Some(Cpu), "the probe's first turn, not used up by bad input");
        }
        assert_eq!(run_calls(&loss, &b, &alone(&b)), expected(Cuda));
        let (fa, ba) = (refs(&a.levels), a.labels.det());
        assert_eq!(loss.backend_for(&fa, &ba), Some(Cuda));
        loss.call(&fa, &ba).unwrap();
        assert_eq!(loss.last_backend(), Some(Cuda), "the first key's choice, no new probe");
    }

    /// Calls from several threads during the probe: no deadlock, each returns its backend's exact result (they
    /// report the backend by their result, since `last_backend` is shared), and the race completes.
    #[test]
    fn concurrent_calls_race_safely() {
        let s = case(9, 19);
        let want = alone(&s);
        let loss = auto(&s.cfg, cuda_faster);
        let (feats, batch) = (refs(&s.levels), s.labels.det());
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..4 {
                        let out = loss.value_and_grad(&feats, &batch).unwrap();
                        assert!(out == want[0] || out == want[1], "a result of neither backend");
                    }
                });
            }
        });
        assert_eq!(loss.backend_for(&feats, &batch), Some(Cuda), "16 calls complete the probe");
    }
}
