//! The segmentation losses on a GPU: the bodies of tests/common/seg_parity.rs (also run on the kernel emulator in
//! the crate's unit tests); skipped with the reason where there is no GPU (YOLO_LOSS_REQUIRE_GPU=1: a failure).

mod common;
#[path = "common/gpu.rs"]
mod gpu;
#[path = "common/parity.rs"]
#[macro_use]
mod parity;
#[path = "common/seg_parity.rs"]
#[macro_use]
mod seg_parity;

use yolo_loss_core::{DetectionConfig, ErrorCode};
use yolo_loss_cuda::{
    Backend as Which, CudaDetectionLoss, CudaE2EDetectLoss, CudaSegmentationLoss, CudaTVPDetectLoss,
    CudaTVPSegmentLoss, Device, SegmentationLossAny, TVPSegmentLossAny,
};

fn cuda(test: &str) -> Option<seg_parity::SegMakers<'static>> {
    gpu::gpu_or_skip(test)?;
    Some(seg_parity::SegMakers {
        seg: &|c| CudaSegmentationLoss::on_device(c, 0),
        tvp: &|c| CudaTVPSegmentLoss::on_device(c, 0),
    })
}

seg_kernel_tests!(cuda => cuda_v8_segmentation_fixtures, cuda_tvp_segment_fixtures_and_text_channels,
    cuda_segmentation_synthetic_cases, cuda_segmentation_errors_match_cpu);

/// Device selection: 'cuda' without a usable GPU is ERR_CUDA_UNAVAILABLE with the driver's reason (not a "no CUDA
/// backend" message), 'auto' falls back to the CPU; with a GPU 'cuda' is the CUDA backend and 'auto' holds both
/// (`backend()` None: chosen per shape).
#[test]
fn segmentation_device_selection() {
    let cfg = DetectionConfig { nc: 2, reg_max: 4, strides: vec![8.0], hyp: Default::default(), tal_topk: 10 };
    match yolo_loss_cuda::gpu(0) {
        Ok(_) => {
            for (device, want) in [(Device::Cuda(0), Some(Which::Cuda)), (Device::Auto, None)] {
                assert_eq!(SegmentationLossAny::new(cfg.clone(), device).unwrap().backend(), want);
                assert_eq!(TVPSegmentLossAny::new(cfg.clone(), device).unwrap().backend(), want);
            }
        }
        Err(why) => {
            for e in [
                SegmentationLossAny::new(cfg.clone(), Device::Cuda(0)).unwrap_err(),
                TVPSegmentLossAny::new(cfg.clone(), Device::Cuda(0)).unwrap_err(),
            ] {
                assert_eq!((e.code, &e.message), (ErrorCode::CudaUnavailable, &why.message));
            }
            assert_eq!(SegmentationLossAny::new(cfg.clone(), Device::Auto).unwrap().backend(), Some(Which::Cpu));
            assert_eq!(TVPSegmentLossAny::new(cfg.clone(), Device::Auto).unwrap().backend(), Some(Which::Cpu));
        }
    }
    // A configuration beyond the CUDA backend's limits: refused under 'cuda', the CPU under 'auto'.
    let deep = DetectionConfig { tal_topk: 33, ..cfg };
    let e = SegmentationLossAny::new(deep.clone(), Device::Cuda(0)).unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (ErrorCode::InvalidArgument, "tal_topk: the CUDA backend supports at most 32, got 33")
    );
    assert_eq!(TVPSegmentLossAny::new(deep.clone(), Device::Cuda(0)).unwrap_err().code, ErrorCode::InvalidArgument);
    assert_eq!(SegmentationLossAny::new(deep.clone(), Device::Auto).unwrap().backend(), Some(Which::Cpu));
    assert_eq!(TVPSegmentLossAny::new(deep, Device::Auto).unwrap().backend(), Some(Which::Cpu));
}
