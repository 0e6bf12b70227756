//! The native task-loss classes, each a thin shell written by `task_loss_class!`, and the batch and configuration
//! objects only they take.

use std::sync::Arc;

use napi::bindgen_prelude::{AsyncTask, Float32Array};
use napi::Env;
use napi_derive::napi;
use yolo_loss_core::detection::bbox_decode;
use yolo_loss_core::pose::PoseConfig;
use yolo_loss_cuda::{
    ClassificationLossAny, DetectionLossAny, E2EDetectLossAny, ObbLossAny, PoseLossAny, SegmentationLossAny,
    TVPDetectLossAny, TVPSegmentLossAny,
};

use super::pins::{NativePinnedMemory, Pins};
use super::run_async::LossTask;
use super::{device_for, new_loss, run_sync, Labels, Packed};
use crate::{
    arg, detection_config, guarded_js, invalid, out_tensor, preprocess_table, to_js, to_usize, with_views, Code,
    NativeDetBatch, NativeDetectionConfig, NativeLossOutput, NativeTensor,
};

/// The batch of the segmentation losses: the detection labels plus `masks`.
#[napi(object)]
pub struct NativeSegBatch {
    pub batch_idx: NativeTensor,
    pub cls: NativeTensor,
    pub bboxes: NativeTensor,
    /// `[B, H, W]` index maps (overlap_mask) or `[N, H, W]` 0/1 masks.
    pub masks: NativeTensor,
}

/// The batch of the pose loss: the detection labels plus `keypoints [N, K, D]`.
#[napi(object)]
pub struct NativePoseBatch {
    pub batch_idx: NativeTensor,
    pub cls: NativeTensor,
    pub bboxes: NativeTensor,
    pub keypoints: NativeTensor,
}

macro_rules! labels {
    ($($batch:ty),+) => {
        $(impl Labels for $batch {
            fn labels(&self) -> [&NativeTensor; 3] {
                [&self.batch_idx, &self.cls, &self.bboxes]
            }
        })+
    };
}

labels!(NativeDetBatch, NativeSegBatch, NativePoseBatch);

#[napi(object)]
pub struct NativePoseConfig {
    pub det: NativeDetectionConfig,
    /// `[K, D]`.
    pub kpt_shape: Vec<f64>,
    /// Whether `[17, 3]` uses the COCO OKS sigmas (a YAML list `kpt_shape`); false: uniform 1/K (a tuple).
    pub oks_sigmas: bool,
}

/// The `reg_max` of a detection loss on either backend (`bboxDecode` runs on the CPU).
fn det_reg_max(loss: &DetectionLossAny) -> usize {
    match loss {
        DetectionLossAny::Cpu(c) => c.cfg.reg_max,
        DetectionLossAny::Cuda(g) => g.cfg.reg_max,
        DetectionLossAny::Auto(a) => a.cpu().cfg.reg_max,
    }
}

fn seg_packed<'a>(
    feats: &'a [NativeTensor],
    pred_masks: &'a NativeTensor,
    proto: &'a NativeTensor,
    batch: &'a NativeSegBatch,
) -> Packed<'a> {
    Packed::default()
        .levels("feats", feats)
        .tensor("pred_masks", pred_masks)
        .tensor("proto", proto)
        .labels(batch)
        .label("batch.masks", &batch.masks)
}

task_loss_class! {
    #[doc = " Native half of `v8DetectionLoss` (CUDA or CPU)."]
    NativeDetectionLoss(DetectionLossAny, "v8DetectionLoss")
    new(config: NativeDetectionConfig) on config.device => detection_config(&config);
    args(preds: Vec<NativeTensor>, batch: NativeDetBatch) =>
        Packed::default().levels("preds", &preds).labels(&batch);

    #[doc = " `bbox_decode(anchor_points [A,2], pred_dist [B,A,4R])` → `[B,A,4]` grid xyxy."]
    #[napi]
    pub fn bbox_decode(
        &self,
        env: Env,
        anchor_points: NativeTensor,
        pred_dist: NativeTensor,
    ) -> napi::Result<NativeTensor, Code> {
        let (data, dims) = guarded_js("bboxDecode", || {
            with_views(
                &[arg("anchorPoints", &anchor_points), arg("predDist", &pred_dist)],
                |v| bbox_decode(v[0], v[1], det_reg_max(&self.inner)),
            )
        })?;
        out_tensor(&env, &data, &dims).map_err(to_js)
    }
}

task_loss_class! {
    #[doc = " Native half of `v8SegmentationLoss`. Gradients: one per level, then `pred_masks`, then `proto`."]
    NativeSegmentationLoss(SegmentationLossAny, "v8SegmentationLoss")
    new(config: NativeDetectionConfig) on config.device => detection_config(&config);
    args(feats: Vec<NativeTensor>, pred_masks: NativeTensor, proto: NativeTensor, batch: NativeSegBatch) =>
        seg_packed(&feats, &pred_masks, &proto, &batch);
}

task_loss_class! {
    #[doc = " Native half of `TVPSegmentLoss` (intended semantics; the 8.3.117 reference raises on every call)."]
    NativeTvpSegmentLoss(TVPSegmentLossAny, "TVPSegmentLoss")
    new(config: NativeDetectionConfig) on config.device => detection_config(&config);
    args(feats: Vec<NativeTensor>, pred_masks: NativeTensor, proto: NativeTensor, batch: NativeSegBatch) =>
        seg_packed(&feats, &pred_masks, &proto, &batch);
}

task_loss_class! {
    #[doc = " Native half of `v8PoseLoss`. Gradients: one per level, then `kpts`."]
    NativePoseLoss(PoseLossAny, "v8PoseLoss")
    new(config: NativePoseConfig) on config.det.device => {
        let kpt_shape = match config.kpt_shape.as_slice() {
            [k, d] => (
                to_usize("model.kpt_shape[0]", *k)?,
                to_usize("model.kpt_shape[1]", *d)?,
            ),
            other => {
                return Err(invalid(format!(
                    "model.kpt_shape: expected [K, D], got {} values",
                    other.len()
                )))
            }
        };
        Ok(PoseConfig {
            det: detection_config(&config.det)?,
            kpt_shape,
            // A JavaScript kpt_shape is always an array: [17, 3] means the OKS sigmas unless told otherwise.
            oks_sigmas: if config.oks_sigmas { None } else { Some(false) },
        })
    };
    args(feats: Vec<NativeTensor>, kpts: NativeTensor, batch: NativePoseBatch) =>
        Packed::default()
            .levels("feats", &feats)
            .tensor("kpts", &kpts)
            .labels(&batch)
            .label("batch.keypoints", &batch.keypoints);

    #[doc = " The per-keypoint sigmas of the KeypointLoss (OKS for [17, 3], else 1/K)."]
    #[napi(getter)]
    pub fn sigmas(&self) -> Vec<f64> {
        self.inner.config().sigmas()
    }
}

task_loss_class! {
    #[doc = " Native half of `v8OBBLoss`. Gradients: one per level, then `angle`."]
    NativeObbLoss(ObbLossAny, "v8OBBLoss")
    new(config: NativeDetectionConfig) on config.device => detection_config(&config);
    args(feats: Vec<NativeTensor>, angle: NativeTensor, batch: NativeDetBatch) =>
        Packed::default().levels("feats", &feats).tensor("angle", &angle).labels(&batch);

    #[doc = " `bbox_decode(anchor_points [A,2], pred_dist [B,A,4R], pred_angle [B,A,1])` → `[B,A,5]` grid xywhr."]
    #[napi]
    pub fn bbox_decode(
        &self,
        env: Env,
        anchor_points: NativeTensor,
        pred_dist: NativeTensor,
        pred_angle: NativeTensor,
    ) -> napi::Result<NativeTensor, Code> {
        let (data, dims) = guarded_js("bboxDecode", || {
            with_views(
                &[
                    arg("anchorPoints", &anchor_points),
                    arg("predDist", &pred_dist),
                    arg("predAngle", &pred_angle),
                ],
                |v| self.inner.cpu_loss().bbox_decode(v[0], v[1], v[2]),
            )
        })?;
        out_tensor(&env, &data, &dims).map_err(to_js)
    }

    #[doc = " `preprocess(targets [N,7], batch_size, scale (W,H,W,H))` → `[B, M, 6]`."]
    #[napi]
    pub fn preprocess(
        &self,
        env: Env,
        targets: NativeTensor,
        batch_size: f64,
        scale: Vec<f64>,
    ) -> napi::Result<NativeTensor, Code> {
        preprocess_table(&env, &targets, batch_size, &scale, 6, |t, b, s| {
            self.inner.cpu_loss().preprocess(t, b, s)
        })
    }
}

task_loss_class! {
    #[doc = " Native half of `v8ClassificationLoss`. Gradient: one, of the logits."]
    NativeClassificationLoss(ClassificationLossAny, "v8ClassificationLoss")
    new(device: String) on device => Ok(());
    args(preds: NativeTensor, cls: NativeTensor) =>
        Packed::default().tensor("preds", &preds).label("batch.cls", &cls);
}

task_loss_class! {
    #[doc = " Native half of `E2EDetectLoss` (CUDA or CPU). Gradients: the one2many levels, then the one2one levels."]
    NativeE2EDetectLoss(E2EDetectLossAny, "E2EDetectLoss")
    new(config: NativeDetectionConfig) on config.device => detection_config(&config);
    args(one2many: Vec<NativeTensor>, one2one: Vec<NativeTensor>, batch: NativeDetBatch) =>
        Packed::default()
            .levels("preds.one2many", &one2many)
            .levels("preds.one2one", &one2one)
            .labels(&batch);
}

task_loss_class! {
    #[doc = " Native half of `TVPDetectLoss` (CUDA or CPU; `nc` = text prompts, channels beyond them are visual prompts)."]
    NativeTvpDetectLoss(TVPDetectLossAny, "TVPDetectLoss")
    new(config: NativeDetectionConfig) on config.device => detection_config(&config);
    args(feats: Vec<NativeTensor>, batch: NativeDetBatch) =>
        Packed::default().levels("preds", &feats).labels(&batch);
}
