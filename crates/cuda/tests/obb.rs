//! v8OBBLoss on the GPU: the test bodies of tests/common/obb.rs (which also run on the kernel emulator in the
//! crate's unit tests), skipped with the reason where there is no GPU (YOLO_LOSS_REQUIRE_GPU=1 makes that a
//! failure).

#[path = "common/obb.rs"]
mod bodies;
mod common;
#[path = "common/gpu.rs"]
mod gpu;
#[path = "common/parity.rs"]
mod parity;

#[allow(unused_imports)] // what parity.rs expects beside it
use yolo_loss_cuda::{CudaDetectionLoss, CudaE2EDetectLoss, CudaObbLoss, CudaTVPDetectLoss};

fn cuda(test: &str) -> Option<bodies::Maker<'static, CudaObbLoss>> {
    gpu::gpu_or_skip(test)?;
    Some(&CudaObbLoss::new)
}

#[test]
fn cuda_obb_fixtures() {
    let Some(make) = cuda("cuda_obb_fixtures") else { return };
    bodies::fixtures(make);
}

#[test]
fn cuda_obb_synthetic() {
    let Some(make) = cuda("cuda_obb_synthetic") else { return };
    bodies::synthetic(make);
}

#[test]
fn cuda_obb_errors() {
    let Some(make) = cuda("cuda_obb_errors") else { return };
    bodies::errors(make);
}
