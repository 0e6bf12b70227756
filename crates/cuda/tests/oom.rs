//! Out of GPU memory is `ERR_CUDA_OUT_OF_MEMORY`, never a crash, and the device stays usable. Its own test binary
//! (so its own process): it fills the GPU, which would starve tests running beside it.

mod common;
#[path = "common/gpu.rs"]
mod gpu;
#[path = "common/parity.rs"]
mod parity;
#[path = "common/seg_parity.rs"]
mod seg_parity;

use yolo_loss_core::{ErrorCode, TaskLoss};
use yolo_loss_cuda::{
    CudaDetectionLoss, CudaE2EDetectLoss, CudaSegmentationLoss, CudaTVPDetectLoss, CudaTVPSegmentLoss,
};

#[test]
fn cuda_out_of_memory_is_a_clear_error_and_recoverable() {
    let Some(g) = gpu::gpu_or_skip("cuda_out_of_memory_is_a_clear_error_and_recoverable") else { return };
    // B=16 at 640×640, nc 80: 77 MB of predictions.
    let s = parity::synthetic(&parity::SynthSpec {
        batch: 16,
        img_h: 640,
        img_w: 640,
        nc: 80,
        per_image: 8,
        seed: 41,
        ..parity::SynthSpec::default()
    });
    let loss = CudaDetectionLoss::new(s.cfg.clone()).unwrap();
    let feats = common::refs(&s.levels);
    let before = loss.value_and_grad(&feats, &s.labels.det()).expect("the case fits an empty GPU");
    // A segmentation case too (its own inputs and work buffers).
    let synth = parity::synthetic(&parity::SynthSpec { per_image: 4, seed: 42, ..parity::SynthSpec::default() });
    let seg_case = seg_parity::seg_case("oom", synth, 32, (24, 32), (96, 128), true, 43);
    let seg = CudaSegmentationLoss::on_device(seg_case.cfg.clone(), 0).unwrap();
    let seg_before = seg_case.with(|p, b| seg.value_and_grad(p, b)).expect("the case fits an empty GPU");
    // Take (almost) all free memory: 1 GiB chunks, then 16 MiB ones, until the driver refuses.
    let mut hog = Vec::new();
    for chunk in [1usize << 30, 1 << 24] {
        while let Ok(b) = g.zeros::<u8>("memory hog", chunk) {
            hog.push(b);
        }
    }
    let e = loss.value_and_grad(&feats, &s.labels.det()).expect_err("a full GPU must refuse");
    assert_eq!(e.code, ErrorCode::CudaOutOfMemory, "{e}");
    assert!(e.message.contains("out of memory"), "{e}");
    let e = seg_case.with(|p, b| seg.value_and_grad(p, b)).expect_err("a full GPU must refuse");
    assert_eq!(e.code, ErrorCode::CudaOutOfMemory, "{e}");
    drop(hog);
    let after = loss.value_and_grad(&feats, &s.labels.det()).expect("the device is usable again");
    assert_eq!(after.loss, before.loss, "same input, same device: bitwise the same result");
    assert_eq!(after.grads, before.grads);
    let seg_after = seg_case.with(|p, b| seg.value_and_grad(p, b)).expect("the device is usable again");
    assert_eq!((seg_after.loss, seg_after.grads), (seg_before.loss, seg_before.grads));
}
