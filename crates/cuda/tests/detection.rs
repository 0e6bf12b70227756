//! The detection family on each backend: one test body per backend (tests/common/parity.rs), the CPU one always,
//! the CUDA one where a GPU is present (else it prints why it is skipped; YOLO_LOSS_REQUIRE_GPU=1 makes that a
//! failure). The same bodies also run on the kernel emulator in the crate's unit tests.

mod common;
#[path = "common/gpu.rs"]
mod gpu;
#[path = "common/parity.rs"]
#[macro_use]
mod parity;

use parity::{Backend, Makers};
use yolo_loss_core::{DetectionConfig, ErrorCode, Hyp, TaskLoss};
use yolo_loss_cuda::{
    Backend as Which, CudaDetectionLoss, CudaE2EDetectLoss, CudaTVPDetectLoss, DetectionLossAny, Device,
};

fn cuda(test: &str) -> Option<Makers<'static>> {
    gpu::gpu_or_skip(test)?;
    Some(Makers { det: &CudaDetectionLoss::new, e2e: &CudaE2EDetectLoss::new, tvp: &CudaTVPDetectLoss::new })
}

#[test]
fn cpu_v8_detection_fixtures() {
    parity::v8_detection_fixtures(&Backend::Cpu);
}

#[test]
fn cpu_e2e_fixtures() {
    parity::e2e_fixtures(&Backend::Cpu);
}

#[test]
fn cpu_tvp_fixtures() {
    parity::tvp_fixtures(&Backend::Cpu);
}

kernel_tests!(cuda => cuda_v8_detection_fixtures, cuda_e2e_fixtures, cuda_tvp_fixtures_and_text_channels,
    cuda_synthetic_cases_match_cpu, cuda_errors_match_cpu);

/// Dense images: 1000 labels per image at 640×640 with 80 classes, against the CPU backend (same positives).
#[test]
fn cuda_dense_1000_labels_per_image_matches_cpu() {
    let Some(mk) = cuda("cuda_dense_1000_labels_per_image_matches_cpu") else { return };
    let s = parity::synthetic(&parity::SynthSpec {
        batch: 2,
        img_h: 640,
        img_w: 640,
        nc: 80,
        per_image: 1000,
        min_side: 0.01,
        max_side: 0.12,
        seed: 31,
        ..parity::SynthSpec::default()
    });
    parity::synthetic_matches_cpu("dense 2×1000 labels", &mk, &s);
}

/// Device selection: 'cuda' without a usable GPU is ERR_CUDA_UNAVAILABLE with the reason; 'auto' falls back to
/// the CPU and says so. Runs on every machine (the GPU branch where there is one).
#[test]
fn device_selection_reports_the_backend() {
    let cfg = DetectionConfig { nc: 3, reg_max: 16, strides: vec![8.0, 16.0, 32.0], hyp: Hyp::default(), tal_topk: 10 };
    let auto = DetectionLossAny::new(cfg.clone(), Device::Auto).unwrap();
    assert_eq!(DetectionLossAny::new(cfg.clone(), Device::Cpu).unwrap().backend(), Some(Which::Cpu));
    match yolo_loss_cuda::gpu(0) {
        Ok(g) => {
            // 'auto' holds both backends: the first six calls of a shape alternate, then the faster runs it.
            assert_eq!(auto.backend(), None);
            let s = parity::synthetic(&parity::SynthSpec::default());
            let (feats, batch) = (common::refs(&s.levels), s.labels.det());
            let auto = DetectionLossAny::new(s.cfg.clone(), Device::Auto).unwrap();
            let cpu = DetectionLossAny::new(s.cfg.clone(), Device::Cpu).unwrap().value_and_grad(&feats, &batch);
            let mut ran = Vec::new();
            for _ in 0..8 {
                let out = auto.value_and_grad(&feats, &batch).unwrap();
                parity::compare_outputs("auto", &out, cpu.as_ref().unwrap());
                ran.push(auto.last_backend().unwrap());
            }
            let chosen = auto.backend_for(&feats, &batch).unwrap();
            assert_eq!(ran[..6], [Which::Cpu, Which::Cuda, Which::Cpu, Which::Cuda, Which::Cpu, Which::Cuda]);
            assert_eq!(ran[6..], [chosen, chosen]);
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("note: 'auto' chose {} for the default synthetic case\n", chosen.as_str()).as_bytes(),
            );
            let c = CudaDetectionLoss::new(cfg.clone()).unwrap();
            assert_eq!(c.device_name(), g.device_name());
            // A configuration beyond the CUDA limits: an error for 'cuda', the CPU for 'auto'.
            let big = DetectionConfig { tal_topk: 64, ..cfg.clone() };
            assert_eq!(CudaDetectionLoss::new(big.clone()).unwrap_err().code, ErrorCode::InvalidArgument);
            assert_eq!(DetectionLossAny::new(big, Device::Auto).unwrap().backend(), Some(Which::Cpu));
        }
        Err(_) => {
            assert!(!gpu::require_gpu(), "YOLO_LOSS_REQUIRE_GPU=1 but CUDA is unavailable");
            assert_eq!(auto.backend(), Some(Which::Cpu));
            let e = DetectionLossAny::new(cfg.clone(), Device::Cuda(0)).unwrap_err();
            assert_eq!(e.code, ErrorCode::CudaUnavailable, "{e}");
            assert!(!e.message.is_empty());
            assert_eq!(CudaE2EDetectLoss::new(cfg.clone()).unwrap_err().code, ErrorCode::CudaUnavailable);
            assert_eq!(CudaTVPDetectLoss::new(cfg.clone()).unwrap_err().code, ErrorCode::CudaUnavailable);
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("note: device 'cuda' here: {}: {}\n", e.code.as_str(), e.message).as_bytes(),
            );
        }
    }
    // A bad configuration is the CPU backend's error on every device.
    let bad = DetectionConfig { nc: 0, ..cfg };
    for d in [Device::Cpu, Device::Cuda(0), Device::Auto] {
        assert_eq!(DetectionLossAny::new(bad.clone(), d).unwrap_err().code, ErrorCode::InvalidArgument, "{d:?}");
    }
    assert_eq!("gpu".parse::<Device>().unwrap_err().code, ErrorCode::InvalidArgument);
}

/// `cuda:N` past the last GPU is ERR_CUDA_UNAVAILABLE and says how many GPUs there are (or why there are none).
#[test]
fn a_missing_gpu_ordinal_is_unavailable_and_says_how_many_there_are() {
    let cfg = DetectionConfig { nc: 3, reg_max: 16, strides: vec![8.0, 16.0, 32.0], hyp: Hyp::default(), tal_topk: 10 };
    let found = yolo_loss_cuda::devices();
    let missing = found.devices.len() + 7;
    let e = DetectionLossAny::new(cfg.clone(), Device::Cuda(missing)).unwrap_err();
    assert_eq!(e.code, ErrorCode::CudaUnavailable, "{e}");
    match &found.problem {
        // No driver or no device at all: that is the reason, whatever the ordinal.
        Some(problem) => assert_eq!(&e.message, problem),
        None => assert!(e.message.contains(&format!("{} CUDA device", found.devices.len())), "{}", e.message),
    }
    assert_eq!(CudaE2EDetectLoss::on_device(cfg.clone(), missing).unwrap_err().message, e.message);
    assert_eq!(CudaTVPDetectLoss::on_device(cfg.clone(), missing).unwrap_err().message, e.message);
    // 'auto' means cuda:0 or the CPU, never an error for want of a GPU.
    assert!(DetectionLossAny::new(cfg, Device::Auto).is_ok());
}

/// Every usable GPU at once, one thread per GPU and two per device sharing it, each against the CPU backend: the
/// devices' contexts are their own (no process-wide single context). With one GPU this is two threads on it.
#[test]
fn cuda_every_gpu_at_once_from_threads() {
    if gpu::gpu_or_skip("cuda_every_gpu_at_once_from_threads").is_none() {
        return;
    }
    let usable: Vec<usize> =
        yolo_loss_cuda::devices().devices.iter().filter(|d| d.unusable.is_none()).map(|d| d.ordinal).collect();
    let s = parity::synthetic(&parity::SynthSpec { seed: 41, ..parity::SynthSpec::default() });
    let feats = common::refs(&s.levels);
    let batch = s.labels.det();
    let cpu = yolo_loss_core::V8DetectionLoss::new(s.cfg.clone()).unwrap().value_and_grad(&feats, &batch).unwrap();
    std::thread::scope(|scope| {
        for &ordinal in usable.iter().chain(&usable) {
            let (s, cpu) = (&s, &cpu);
            scope.spawn(move || {
                let loss = CudaDetectionLoss::on_device(s.cfg.clone(), ordinal).unwrap();
                assert_eq!(loss.device_name(), yolo_loss_cuda::gpu(ordinal).unwrap().device_name());
                let (feats, batch) = (common::refs(&s.levels), s.labels.det());
                for _ in 0..3 {
                    let out = loss.value_and_grad(&feats, &batch).unwrap();
                    parity::compare_outputs(&format!("cuda:{ordinal}"), &out, cpu);
                }
            });
        }
    });
    for ordinal in usable {
        let g = yolo_loss_cuda::gpu(ordinal).unwrap();
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("note: cuda:{ordinal} {} runs {}\n", g.device_name(), g.kernel_source().target()).as_bytes(),
        );
    }
}
