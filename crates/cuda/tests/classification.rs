//! v8ClassificationLoss on the GPU: the test bodies of tests/common/classification.rs (which also run on the kernel
//! emulator in the crate's unit tests), skipped with the reason where there is no GPU (YOLO_LOSS_REQUIRE_GPU=1 makes
//! that a failure).

#[path = "common/classification.rs"]
mod bodies;
mod common;
#[path = "common/gpu.rs"]
mod gpu;

use yolo_loss_core::Result;
use yolo_loss_cuda::CudaClassificationLoss;

fn cuda(test: &str) -> Option<&'static dyn Fn() -> Result<CudaClassificationLoss>> {
    gpu::gpu_or_skip(test)?;
    Some(&CudaClassificationLoss::new)
}

#[test]
fn cuda_classification_fixtures() {
    let Some(make) = cuda("cuda_classification_fixtures") else { return };
    bodies::fixtures(make);
}

#[test]
fn cuda_classification_synthetic() {
    let Some(make) = cuda("cuda_classification_synthetic") else { return };
    bodies::synthetic(make);
}

#[test]
fn cuda_classification_errors() {
    let Some(make) = cuda("cuda_classification_errors") else { return };
    bodies::errors(make);
}

#[test]
fn cuda_time_kernels() {
    let Some(make) = cuda("cuda_time_kernels") else { return };
    bodies::time_kernels(make, true);
}
