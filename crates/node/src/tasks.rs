//! The task losses beyond `v8DetectionLoss`: segmentation, pose, OBB, classification, E2E and the YOLOE prompt
//! losses, each as one native class with `call`, `valueAndGrad` and their `...Async` forms.
//!
//! All of them share one mechanism: the napi method packs its arguments into a flat list of named tensors
//! ([`Arg`]) in a loss-specific order plus the sizes of its level lists, and [`TaskLoss::eval`] unpacks that
//! list into the core's call. Synchronous methods pack borrowed slices of the caller's `Float32Array`s (no copy);
//! the asynchronous ones copy the list once ([`LossTask`]) and evaluate it on the libuv pool.

use std::sync::Arc;

use napi::bindgen_prelude::{AsyncTask, Float32Array, JsError};
use napi::{Env, Task};
use napi_derive::napi;
use yolo_loss_core::classification::V8ClassificationLoss;
use yolo_loss_core::e2e::E2EDetectLoss;
use yolo_loss_core::pose::{PoseBatch, PoseConfig, V8PoseLoss};
use yolo_loss_core::prompts::{TVPDetectLoss, TVPSegmentLoss};
use yolo_loss_core::segmentation::{SegBatch, V8SegmentationLoss};
use yolo_loss_core::{DetBatch, LossError, LossOutput, TensorRef, V8OBBLoss};

use crate::{
    check_table_size, detection_config, dims_to_js, guarded, invalid, resolve_device, to_dims,
    to_js, to_usize, view, Code, CoreResult, NativeDetBatch, NativeDetectionConfig,
    NativeLossOutput, NativeTensor,
};

// ------------------------------------------------------------------------------------------------------------
// The shared mechanism

/// One tensor of a call: its name in error messages, its data and its shape as JavaScript numbers.
pub(crate) struct Arg<'a> {
    name: String,
    data: &'a [f32],
    shape: &'a [f64],
}

/// [`Arg`] with its own copies (the asynchronous methods).
struct OwnedArg {
    name: String,
    data: Vec<f32>,
    shape: Vec<f64>,
}

fn arg<'a>(name: impl Into<String>, t: &'a NativeTensor) -> Arg<'a> {
    // `&*t.data` is the caller's memory: no copy.
    Arg {
        name: name.into(),
        data: &t.data,
        shape: &t.shape,
    }
}

/// `name[0]`, `name[1]`, ... for a list of level tensors.
fn levels<'a>(name: &str, ts: &'a [NativeTensor]) -> impl Iterator<Item = Arg<'a>> + 'a {
    let name = name.to_string();
    ts.iter()
        .enumerate()
        .map(move |(i, t)| arg(format!("{name}[{i}]"), t))
}

/// The tensors of one call, flat, and the sizes of the level lists at their front.
pub(crate) struct Packed<'a> {
    args: Vec<Arg<'a>>,
    groups: Vec<usize>,
}

/// A core loss evaluated from a [`Packed`] list.
pub(crate) trait TaskLoss: Send + Sync + 'static {
    /// `t` holds the tensors in the order the native class packed them; `groups` the level-list sizes.
    fn eval(
        &self,
        t: &[TensorRef<'_, f32>],
        groups: &[usize],
        want_grad: bool,
    ) -> CoreResult<LossOutput<f32>>;
}

/// Validates the shapes (JavaScript numbers), builds the views and evaluates, under the panic guard.
fn run_packed<L: TaskLoss + ?Sized>(
    loss: &L,
    args: &[Arg<'_>],
    groups: &[usize],
    want_grad: bool,
) -> CoreResult<LossOutput<f32>> {
    let what = if want_grad { "valueAndGrad" } else { "call" };
    guarded(what, || {
        let dims = args
            .iter()
            .map(|a| to_dims(&a.name, a.shape))
            .collect::<CoreResult<Vec<_>>>()?;
        let views = args
            .iter()
            .zip(&dims)
            .map(|(a, d)| view(&a.name, a.data, d))
            .collect::<CoreResult<Vec<_>>>()?;
        loss.eval(&views, groups, want_grad)
    })
}

fn run_sync<L: TaskLoss + ?Sized>(
    loss: &L,
    packed: Packed<'_>,
    want_grad: bool,
) -> napi::Result<NativeLossOutput, Code> {
    run_packed(loss, &packed.args, &packed.groups, want_grad)
        .map(NativeLossOutput::from)
        .map_err(to_js)
}

/// A task-loss evaluation on the libuv pool, over private copies of the inputs.
pub struct LossTask {
    loss: Arc<dyn TaskLoss>,
    args: Vec<OwnedArg>,
    groups: Vec<usize>,
    want_grad: bool,
}

impl LossTask {
    fn new(loss: Arc<dyn TaskLoss>, packed: Packed<'_>, want_grad: bool) -> AsyncTask<LossTask> {
        let args = packed
            .args
            .into_iter()
            .map(|a| OwnedArg {
                name: a.name,
                data: a.data.to_vec(),
                shape: a.shape.to_vec(),
            })
            .collect();
        AsyncTask::new(LossTask {
            loss,
            args,
            groups: packed.groups,
            want_grad,
        })
    }
}

impl Task for LossTask {
    type Output = CoreResult<LossOutput<f32>>;
    type JsValue = NativeLossOutput;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        let args: Vec<Arg<'_>> = self
            .args
            .iter()
            .map(|a| Arg {
                name: a.name.clone(),
                data: &a.data,
                shape: &a.shape,
            })
            .collect();
        Ok(run_packed(&*self.loss, &args, &self.groups, self.want_grad))
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> napi::Result<NativeLossOutput> {
        match output {
            Ok(o) => Ok(o.into()),
            // Reject with a JS Error carrying our code: build it here, on the JS thread, and hand napi the object.
            Err(e) => Err(napi::Error::from(JsError::from(to_js(e)).into_unknown(env))),
        }
    }
}

/// The core names the level tensors of a head `preds[l]`; in a tuple of predictions (segmentation, pose, OBB)
/// they are `feats[l]` and the angle is `angle`, as in the public API.
fn rename_feats(mut e: LossError) -> LossError {
    e.message = e
        .message
        .replace("preds[", "feats[")
        .replace("preds:", "feats:")
        .replace("preds.angle", "angle");
    e
}

fn det_batch<'a>(t: &[TensorRef<'a, f32>]) -> DetBatch<'a, f32> {
    DetBatch {
        batch_idx: t[0],
        cls: t[1],
        bboxes: t[2],
    }
}

fn det_batch_args(b: &NativeDetBatch) -> [Arg<'_>; 3] {
    [
        arg("batch.batch_idx", &b.batch_idx),
        arg("batch.cls", &b.cls),
        arg("batch.bboxes", &b.bboxes),
    ]
}

/// Splits the flat list into the first `n` tensors and the rest.
fn split<'s, 'a>(
    t: &'s [TensorRef<'a, f32>],
    n: usize,
) -> (&'s [TensorRef<'a, f32>], &'s [TensorRef<'a, f32>]) {
    t.split_at(n.min(t.len()))
}

// ------------------------------------------------------------------------------------------------------------
// Batches

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

#[napi(object)]
pub struct NativePoseConfig {
    pub det: NativeDetectionConfig,
    /// `[K, D]`.
    pub kpt_shape: Vec<f64>,
    /// Whether `[17, 3]` uses the COCO OKS sigmas (a YAML list `kpt_shape`); false: uniform 1/K (a tuple).
    pub oks_sigmas: bool,
}

// ------------------------------------------------------------------------------------------------------------
// TaskLoss implementations (order of the packed tensors in the comments)

/// levels…, pred_masks, proto, batch_idx, cls, bboxes, masks.
impl TaskLoss for V8SegmentationLoss {
    fn eval(
        &self,
        t: &[TensorRef<'_, f32>],
        g: &[usize],
        want_grad: bool,
    ) -> CoreResult<LossOutput<f32>> {
        let (feats, rest) = split(t, g[0]);
        let batch = SegBatch {
            det: det_batch(&rest[2..5]),
            masks: rest[5],
        };
        if want_grad {
            self.value_and_grad(feats, rest[0], rest[1], &batch)
        } else {
            self.call(feats, rest[0], rest[1], &batch)
        }
        .map_err(rename_feats)
    }
}

/// levels…, pred_masks, proto, batch_idx, cls, bboxes, masks.
impl TaskLoss for TVPSegmentLoss {
    fn eval(
        &self,
        t: &[TensorRef<'_, f32>],
        g: &[usize],
        want_grad: bool,
    ) -> CoreResult<LossOutput<f32>> {
        let (feats, rest) = split(t, g[0]);
        let batch = SegBatch {
            det: det_batch(&rest[2..5]),
            masks: rest[5],
        };
        if want_grad {
            self.value_and_grad(feats, rest[0], rest[1], &batch)
        } else {
            self.call(feats, rest[0], rest[1], &batch)
        }
        .map_err(rename_feats)
    }
}

/// levels…, kpts, batch_idx, cls, bboxes, keypoints.
impl TaskLoss for V8PoseLoss {
    fn eval(
        &self,
        t: &[TensorRef<'_, f32>],
        g: &[usize],
        want_grad: bool,
    ) -> CoreResult<LossOutput<f32>> {
        let (feats, rest) = split(t, g[0]);
        let batch = PoseBatch {
            det: det_batch(&rest[1..4]),
            keypoints: rest[4],
        };
        if want_grad {
            self.value_and_grad(feats, rest[0], &batch)
        } else {
            self.call(feats, rest[0], &batch)
        }
        .map_err(rename_feats)
    }
}

/// levels…, angle, batch_idx, cls, bboxes.
impl TaskLoss for V8OBBLoss {
    fn eval(
        &self,
        t: &[TensorRef<'_, f32>],
        g: &[usize],
        want_grad: bool,
    ) -> CoreResult<LossOutput<f32>> {
        let (feats, rest) = split(t, g[0]);
        let batch = det_batch(&rest[1..4]);
        if want_grad {
            self.value_and_grad(feats, rest[0], &batch)
        } else {
            self.call(feats, rest[0], &batch)
        }
        .map_err(rename_feats)
    }
}

/// logits, cls.
impl TaskLoss for V8ClassificationLoss {
    fn eval(
        &self,
        t: &[TensorRef<'_, f32>],
        _: &[usize],
        want_grad: bool,
    ) -> CoreResult<LossOutput<f32>> {
        if want_grad {
            self.value_and_grad(t[0], t[1])
        } else {
            self.call(t[0], t[1])
        }
    }
}

/// one2many levels…, one2one levels…, batch_idx, cls, bboxes.
impl TaskLoss for E2EDetectLoss {
    fn eval(
        &self,
        t: &[TensorRef<'_, f32>],
        g: &[usize],
        want_grad: bool,
    ) -> CoreResult<LossOutput<f32>> {
        let (o2m, rest) = split(t, g[0]);
        let (o2o, rest) = split(rest, g[1]);
        let batch = det_batch(rest);
        if want_grad {
            self.value_and_grad(o2m, o2o, &batch)
        } else {
            self.call(o2m, o2o, &batch)
        }
    }
}

/// levels…, batch_idx, cls, bboxes.
impl TaskLoss for TVPDetectLoss {
    fn eval(
        &self,
        t: &[TensorRef<'_, f32>],
        g: &[usize],
        want_grad: bool,
    ) -> CoreResult<LossOutput<f32>> {
        let (feats, rest) = split(t, g[0]);
        let batch = det_batch(rest);
        if want_grad {
            self.value_and_grad(feats, &batch)
        } else {
            self.call(feats, &batch)
        }
    }
}

fn seg_packed<'a>(
    feats: &'a [NativeTensor],
    pred_masks: &'a NativeTensor,
    proto: &'a NativeTensor,
    batch: &'a NativeSegBatch,
) -> Packed<'a> {
    let mut args: Vec<Arg<'a>> = levels("feats", feats).collect();
    args.push(arg("pred_masks", pred_masks));
    args.push(arg("proto", proto));
    args.push(arg("batch.batch_idx", &batch.batch_idx));
    args.push(arg("batch.cls", &batch.cls));
    args.push(arg("batch.bboxes", &batch.bboxes));
    args.push(arg("batch.masks", &batch.masks));
    Packed {
        args,
        groups: vec![feats.len()],
    }
}

fn new_loss<T>(
    what: &str,
    device: &str,
    make: impl FnOnce() -> CoreResult<T>,
) -> napi::Result<(Arc<T>, &'static str), Code> {
    guarded(what, || {
        let device = resolve_device(device)?;
        Ok((Arc::new(make()?), device))
    })
    .map_err(to_js)
}

// ------------------------------------------------------------------------------------------------------------
// v8SegmentationLoss

/// Native half of `v8SegmentationLoss`. Gradients: one per level, then `pred_masks`, then `proto`.
#[napi]
pub struct NativeSegmentationLoss {
    inner: Arc<V8SegmentationLoss>,
    device: &'static str,
}

#[napi]
impl NativeSegmentationLoss {
    #[napi(constructor)]
    pub fn new(config: NativeDetectionConfig) -> napi::Result<Self, Code> {
        let (inner, device) = new_loss("new v8SegmentationLoss", &config.device, || {
            V8SegmentationLoss::new(detection_config(&config)?)
        })?;
        Ok(Self { inner, device })
    }

    #[napi(getter)]
    pub fn device(&self) -> String {
        self.device.to_string()
    }

    #[napi]
    pub fn call(
        &self,
        feats: Vec<NativeTensor>,
        pred_masks: NativeTensor,
        proto: NativeTensor,
        batch: NativeSegBatch,
    ) -> napi::Result<NativeLossOutput, Code> {
        run_sync(
            &*self.inner,
            seg_packed(&feats, &pred_masks, &proto, &batch),
            false,
        )
    }

    #[napi]
    pub fn value_and_grad(
        &self,
        feats: Vec<NativeTensor>,
        pred_masks: NativeTensor,
        proto: NativeTensor,
        batch: NativeSegBatch,
    ) -> napi::Result<NativeLossOutput, Code> {
        run_sync(
            &*self.inner,
            seg_packed(&feats, &pred_masks, &proto, &batch),
            true,
        )
    }

    /// Like `call`, on the libuv thread pool. The inputs are copied before this returns.
    #[napi(ts_return_type = "Promise<NativeLossOutput>")]
    pub fn call_async(
        &self,
        feats: Vec<NativeTensor>,
        pred_masks: NativeTensor,
        proto: NativeTensor,
        batch: NativeSegBatch,
    ) -> AsyncTask<LossTask> {
        LossTask::new(
            self.inner.clone(),
            seg_packed(&feats, &pred_masks, &proto, &batch),
            false,
        )
    }

    /// Like `valueAndGrad`, on the libuv thread pool. The inputs are copied before this returns.
    #[napi(ts_return_type = "Promise<NativeLossOutput>")]
    pub fn value_and_grad_async(
        &self,
        feats: Vec<NativeTensor>,
        pred_masks: NativeTensor,
        proto: NativeTensor,
        batch: NativeSegBatch,
    ) -> AsyncTask<LossTask> {
        LossTask::new(
            self.inner.clone(),
            seg_packed(&feats, &pred_masks, &proto, &batch),
            true,
        )
    }
}

// ------------------------------------------------------------------------------------------------------------
// TVPSegmentLoss

/// Native half of `TVPSegmentLoss` (intended semantics; the 8.3.117 reference raises on every call).
#[napi]
pub struct NativeTvpSegmentLoss {
    inner: Arc<TVPSegmentLoss>,
    device: &'static str,
}

#[napi]
impl NativeTvpSegmentLoss {
    #[napi(constructor)]
    pub fn new(config: NativeDetectionConfig) -> napi::Result<Self, Code> {
        let (inner, device) = new_loss("new TVPSegmentLoss", &config.device, || {
            TVPSegmentLoss::new(detection_config(&config)?)
        })?;
        Ok(Self { inner, device })
    }

    #[napi(getter)]
    pub fn device(&self) -> String {
        self.device.to_string()
    }

    #[napi]
    pub fn call(
        &self,
        feats: Vec<NativeTensor>,
        pred_masks: NativeTensor,
        proto: NativeTensor,
        batch: NativeSegBatch,
    ) -> napi::Result<NativeLossOutput, Code> {
        run_sync(
            &*self.inner,
            seg_packed(&feats, &pred_masks, &proto, &batch),
            false,
        )
    }

    #[napi]
    pub fn value_and_grad(
        &self,
        feats: Vec<NativeTensor>,
        pred_masks: NativeTensor,
        proto: NativeTensor,
        batch: NativeSegBatch,
    ) -> napi::Result<NativeLossOutput, Code> {
        run_sync(
            &*self.inner,
            seg_packed(&feats, &pred_masks, &proto, &batch),
            true,
        )
    }

    /// Like `call`, on the libuv thread pool. The inputs are copied before this returns.
    #[napi(ts_return_type = "Promise<NativeLossOutput>")]
    pub fn call_async(
        &self,
        feats: Vec<NativeTensor>,
        pred_masks: NativeTensor,
        proto: NativeTensor,
        batch: NativeSegBatch,
    ) -> AsyncTask<LossTask> {
        LossTask::new(
            self.inner.clone(),
            seg_packed(&feats, &pred_masks, &proto, &batch),
            false,
        )
    }

    /// Like `valueAndGrad`, on the libuv thread pool. The inputs are copied before this returns.
    #[napi(ts_return_type = "Promise<NativeLossOutput>")]
    pub fn value_and_grad_async(
        &self,
        feats: Vec<NativeTensor>,
        pred_masks: NativeTensor,
        proto: NativeTensor,
        batch: NativeSegBatch,
    ) -> AsyncTask<LossTask> {
        LossTask::new(
            self.inner.clone(),
            seg_packed(&feats, &pred_masks, &proto, &batch),
            true,
        )
    }
}

// ------------------------------------------------------------------------------------------------------------
// v8PoseLoss

fn pose_packed<'a>(
    feats: &'a [NativeTensor],
    kpts: &'a NativeTensor,
    batch: &'a NativePoseBatch,
) -> Packed<'a> {
    let mut args: Vec<Arg<'a>> = levels("feats", feats).collect();
    args.push(arg("kpts", kpts));
    args.push(arg("batch.batch_idx", &batch.batch_idx));
    args.push(arg("batch.cls", &batch.cls));
    args.push(arg("batch.bboxes", &batch.bboxes));
    args.push(arg("batch.keypoints", &batch.keypoints));
    Packed {
        args,
        groups: vec![feats.len()],
    }
}

/// Native half of `v8PoseLoss`. Gradients: one per level, then `kpts`.
#[napi]
pub struct NativePoseLoss {
    inner: Arc<V8PoseLoss>,
    device: &'static str,
}

#[napi]
impl NativePoseLoss {
    #[napi(constructor)]
    pub fn new(config: NativePoseConfig) -> napi::Result<Self, Code> {
        let (inner, device) = new_loss("new v8PoseLoss", &config.det.device, || {
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
            V8PoseLoss::new(PoseConfig {
                det: detection_config(&config.det)?,
                kpt_shape,
                // A JavaScript kpt_shape is always an array: [17, 3] means the OKS sigmas unless told otherwise.
                oks_sigmas: if config.oks_sigmas { None } else { Some(false) },
            })
        })?;
        Ok(Self { inner, device })
    }

    #[napi(getter)]
    pub fn device(&self) -> String {
        self.device.to_string()
    }

    /// The per-keypoint sigmas of the KeypointLoss (OKS for [17, 3], else 1/K).
    #[napi(getter)]
    pub fn sigmas(&self) -> Vec<f64> {
        self.inner.cfg.sigmas()
    }

    #[napi]
    pub fn call(
        &self,
        feats: Vec<NativeTensor>,
        kpts: NativeTensor,
        batch: NativePoseBatch,
    ) -> napi::Result<NativeLossOutput, Code> {
        run_sync(&*self.inner, pose_packed(&feats, &kpts, &batch), false)
    }

    #[napi]
    pub fn value_and_grad(
        &self,
        feats: Vec<NativeTensor>,
        kpts: NativeTensor,
        batch: NativePoseBatch,
    ) -> napi::Result<NativeLossOutput, Code> {
        run_sync(&*self.inner, pose_packed(&feats, &kpts, &batch), true)
    }

    /// Like `call`, on the libuv thread pool. The inputs are copied before this returns.
    #[napi(ts_return_type = "Promise<NativeLossOutput>")]
    pub fn call_async(
        &self,
        feats: Vec<NativeTensor>,
        kpts: NativeTensor,
        batch: NativePoseBatch,
    ) -> AsyncTask<LossTask> {
        LossTask::new(
            self.inner.clone(),
            pose_packed(&feats, &kpts, &batch),
            false,
        )
    }

    /// Like `valueAndGrad`, on the libuv thread pool. The inputs are copied before this returns.
    #[napi(ts_return_type = "Promise<NativeLossOutput>")]
    pub fn value_and_grad_async(
        &self,
        feats: Vec<NativeTensor>,
        kpts: NativeTensor,
        batch: NativePoseBatch,
    ) -> AsyncTask<LossTask> {
        LossTask::new(self.inner.clone(), pose_packed(&feats, &kpts, &batch), true)
    }
}

// ------------------------------------------------------------------------------------------------------------
// v8OBBLoss

fn obb_packed<'a>(
    feats: &'a [NativeTensor],
    angle: &'a NativeTensor,
    batch: &'a NativeDetBatch,
) -> Packed<'a> {
    let mut args: Vec<Arg<'a>> = levels("feats", feats).collect();
    args.push(arg("angle", angle));
    args.extend(det_batch_args(batch));
    Packed {
        args,
        groups: vec![feats.len()],
    }
}

/// Native half of `v8OBBLoss`. Gradients: one per level, then `angle`.
#[napi]
pub struct NativeObbLoss {
    inner: Arc<V8OBBLoss>,
    device: &'static str,
}

#[napi]
impl NativeObbLoss {
    #[napi(constructor)]
    pub fn new(config: NativeDetectionConfig) -> napi::Result<Self, Code> {
        let (inner, device) = new_loss("new v8OBBLoss", &config.device, || {
            V8OBBLoss::new(detection_config(&config)?)
        })?;
        Ok(Self { inner, device })
    }

    #[napi(getter)]
    pub fn device(&self) -> String {
        self.device.to_string()
    }

    #[napi]
    pub fn call(
        &self,
        feats: Vec<NativeTensor>,
        angle: NativeTensor,
        batch: NativeDetBatch,
    ) -> napi::Result<NativeLossOutput, Code> {
        run_sync(&*self.inner, obb_packed(&feats, &angle, &batch), false)
    }

    #[napi]
    pub fn value_and_grad(
        &self,
        feats: Vec<NativeTensor>,
        angle: NativeTensor,
        batch: NativeDetBatch,
    ) -> napi::Result<NativeLossOutput, Code> {
        run_sync(&*self.inner, obb_packed(&feats, &angle, &batch), true)
    }

    /// Like `call`, on the libuv thread pool. The inputs are copied before this returns.
    #[napi(ts_return_type = "Promise<NativeLossOutput>")]
    pub fn call_async(
        &self,
        feats: Vec<NativeTensor>,
        angle: NativeTensor,
        batch: NativeDetBatch,
    ) -> AsyncTask<LossTask> {
        LossTask::new(
            self.inner.clone(),
            obb_packed(&feats, &angle, &batch),
            false,
        )
    }

    /// Like `valueAndGrad`, on the libuv thread pool. The inputs are copied before this returns.
    #[napi(ts_return_type = "Promise<NativeLossOutput>")]
    pub fn value_and_grad_async(
        &self,
        feats: Vec<NativeTensor>,
        angle: NativeTensor,
        batch: NativeDetBatch,
    ) -> AsyncTask<LossTask> {
        LossTask::new(self.inner.clone(), obb_packed(&feats, &angle, &batch), true)
    }

    /// `bbox_decode(anchor_points [A,2], pred_dist [B,A,4R], pred_angle [B,A,1])` → `[B,A,5]` grid xywhr.
    #[napi]
    pub fn bbox_decode(
        &self,
        anchor_points: NativeTensor,
        pred_dist: NativeTensor,
        pred_angle: NativeTensor,
    ) -> napi::Result<NativeTensor, Code> {
        let (data, dims) = guarded("bboxDecode", || {
            let ad = to_dims("anchorPoints", &anchor_points.shape)?;
            let pd = to_dims("predDist", &pred_dist.shape)?;
            let an = to_dims("predAngle", &pred_angle.shape)?;
            self.inner.bbox_decode(
                view("anchorPoints", &anchor_points.data, &ad)?,
                view("predDist", &pred_dist.data, &pd)?,
                view("predAngle", &pred_angle.data, &an)?,
            )
        })
        .map_err(to_js)?;
        Ok(NativeTensor {
            data: Float32Array::new(data),
            shape: dims_to_js(&dims),
        })
    }

    /// `preprocess(targets [N,7], batch_size, scale (W,H,W,H))` → `[B, M, 6]`.
    #[napi]
    pub fn preprocess(
        &self,
        targets: NativeTensor,
        batch_size: f64,
        scale: Vec<f64>,
    ) -> napi::Result<NativeTensor, Code> {
        let (data, dims) = guarded("preprocess", || {
            let b = to_usize("batchSize", batch_size)?;
            let s: [f32; 4] = match scale.as_slice() {
                [a, b, c, d] => [*a as f32, *b as f32, *c as f32, *d as f32],
                other => {
                    return Err(LossError::shape(format!(
                        "scaleTensor: expected 4 values (W, H, W, H), got {}",
                        other.len()
                    )))
                }
            };
            let td = to_dims("targets", &targets.shape)?;
            let t = view("targets", &targets.data, &td)?;
            check_table_size(b, td.first().copied().unwrap_or(0), 6)?;
            self.inner.preprocess(t, b, s)
        })
        .map_err(to_js)?;
        Ok(NativeTensor {
            data: Float32Array::new(data),
            shape: dims_to_js(&dims),
        })
    }
}

// ------------------------------------------------------------------------------------------------------------
// v8ClassificationLoss

fn cls_packed<'a>(preds: &'a NativeTensor, cls: &'a NativeTensor) -> Packed<'a> {
    Packed {
        args: vec![arg("preds", preds), arg("batch.cls", cls)],
        groups: Vec::new(),
    }
}

/// Native half of `v8ClassificationLoss`. Gradient: one, of the logits.
#[napi]
pub struct NativeClassificationLoss {
    inner: Arc<V8ClassificationLoss>,
    device: &'static str,
}

#[napi]
impl NativeClassificationLoss {
    #[napi(constructor)]
    pub fn new(device: String) -> napi::Result<Self, Code> {
        let (inner, device) = new_loss("new v8ClassificationLoss", &device, || {
            Ok(V8ClassificationLoss::new())
        })?;
        Ok(Self { inner, device })
    }

    #[napi(getter)]
    pub fn device(&self) -> String {
        self.device.to_string()
    }

    #[napi]
    pub fn call(
        &self,
        preds: NativeTensor,
        cls: NativeTensor,
    ) -> napi::Result<NativeLossOutput, Code> {
        run_sync(&*self.inner, cls_packed(&preds, &cls), false)
    }

    #[napi]
    pub fn value_and_grad(
        &self,
        preds: NativeTensor,
        cls: NativeTensor,
    ) -> napi::Result<NativeLossOutput, Code> {
        run_sync(&*self.inner, cls_packed(&preds, &cls), true)
    }

    /// Like `call`, on the libuv thread pool. The inputs are copied before this returns.
    #[napi(ts_return_type = "Promise<NativeLossOutput>")]
    pub fn call_async(&self, preds: NativeTensor, cls: NativeTensor) -> AsyncTask<LossTask> {
        LossTask::new(self.inner.clone(), cls_packed(&preds, &cls), false)
    }

    /// Like `valueAndGrad`, on the libuv thread pool. The inputs are copied before this returns.
    #[napi(ts_return_type = "Promise<NativeLossOutput>")]
    pub fn value_and_grad_async(
        &self,
        preds: NativeTensor,
        cls: NativeTensor,
    ) -> AsyncTask<LossTask> {
        LossTask::new(self.inner.clone(), cls_packed(&preds, &cls), true)
    }
}

// ------------------------------------------------------------------------------------------------------------
// E2EDetectLoss

fn e2e_packed<'a>(
    one2many: &'a [NativeTensor],
    one2one: &'a [NativeTensor],
    batch: &'a NativeDetBatch,
) -> Packed<'a> {
    let mut args: Vec<Arg<'a>> = levels("preds.one2many", one2many).collect();
    args.extend(levels("preds.one2one", one2one));
    args.extend(det_batch_args(batch));
    Packed {
        args,
        groups: vec![one2many.len(), one2one.len()],
    }
}

/// Native half of `E2EDetectLoss`. Gradients: the one2many levels, then the one2one levels.
#[napi]
pub struct NativeE2EDetectLoss {
    inner: Arc<E2EDetectLoss>,
    device: &'static str,
}

#[napi]
impl NativeE2EDetectLoss {
    #[napi(constructor)]
    pub fn new(config: NativeDetectionConfig) -> napi::Result<Self, Code> {
        let (inner, device) = new_loss("new E2EDetectLoss", &config.device, || {
            E2EDetectLoss::new(detection_config(&config)?)
        })?;
        Ok(Self { inner, device })
    }

    #[napi(getter)]
    pub fn device(&self) -> String {
        self.device.to_string()
    }

    #[napi]
    pub fn call(
        &self,
        one2many: Vec<NativeTensor>,
        one2one: Vec<NativeTensor>,
        batch: NativeDetBatch,
    ) -> napi::Result<NativeLossOutput, Code> {
        run_sync(&*self.inner, e2e_packed(&one2many, &one2one, &batch), false)
    }

    #[napi]
    pub fn value_and_grad(
        &self,
        one2many: Vec<NativeTensor>,
        one2one: Vec<NativeTensor>,
        batch: NativeDetBatch,
    ) -> napi::Result<NativeLossOutput, Code> {
        run_sync(&*self.inner, e2e_packed(&one2many, &one2one, &batch), true)
    }

    /// Like `call`, on the libuv thread pool. The inputs are copied before this returns.
    #[napi(ts_return_type = "Promise<NativeLossOutput>")]
    pub fn call_async(
        &self,
        one2many: Vec<NativeTensor>,
        one2one: Vec<NativeTensor>,
        batch: NativeDetBatch,
    ) -> AsyncTask<LossTask> {
        LossTask::new(
            self.inner.clone(),
            e2e_packed(&one2many, &one2one, &batch),
            false,
        )
    }

    /// Like `valueAndGrad`, on the libuv thread pool. The inputs are copied before this returns.
    #[napi(ts_return_type = "Promise<NativeLossOutput>")]
    pub fn value_and_grad_async(
        &self,
        one2many: Vec<NativeTensor>,
        one2one: Vec<NativeTensor>,
        batch: NativeDetBatch,
    ) -> AsyncTask<LossTask> {
        LossTask::new(
            self.inner.clone(),
            e2e_packed(&one2many, &one2one, &batch),
            true,
        )
    }
}

// ------------------------------------------------------------------------------------------------------------
// TVPDetectLoss

fn det_packed<'a>(feats: &'a [NativeTensor], batch: &'a NativeDetBatch) -> Packed<'a> {
    let mut args: Vec<Arg<'a>> = levels("preds", feats).collect();
    args.extend(det_batch_args(batch));
    Packed {
        args,
        groups: vec![feats.len()],
    }
}

/// Native half of `TVPDetectLoss` (`nc` = text prompts; channels beyond them are visual prompts).
#[napi]
pub struct NativeTvpDetectLoss {
    inner: Arc<TVPDetectLoss>,
    device: &'static str,
}

#[napi]
impl NativeTvpDetectLoss {
    #[napi(constructor)]
    pub fn new(config: NativeDetectionConfig) -> napi::Result<Self, Code> {
        let (inner, device) = new_loss("new TVPDetectLoss", &config.device, || {
            TVPDetectLoss::new(detection_config(&config)?)
        })?;
        Ok(Self { inner, device })
    }

    #[napi(getter)]
    pub fn device(&self) -> String {
        self.device.to_string()
    }

    #[napi]
    pub fn call(
        &self,
        feats: Vec<NativeTensor>,
        batch: NativeDetBatch,
    ) -> napi::Result<NativeLossOutput, Code> {
        run_sync(&*self.inner, det_packed(&feats, &batch), false)
    }

    #[napi]
    pub fn value_and_grad(
        &self,
        feats: Vec<NativeTensor>,
        batch: NativeDetBatch,
    ) -> napi::Result<NativeLossOutput, Code> {
        run_sync(&*self.inner, det_packed(&feats, &batch), true)
    }

    /// Like `call`, on the libuv thread pool. The inputs are copied before this returns.
    #[napi(ts_return_type = "Promise<NativeLossOutput>")]
    pub fn call_async(
        &self,
        feats: Vec<NativeTensor>,
        batch: NativeDetBatch,
    ) -> AsyncTask<LossTask> {
        LossTask::new(self.inner.clone(), det_packed(&feats, &batch), false)
    }

    /// Like `valueAndGrad`, on the libuv thread pool. The inputs are copied before this returns.
    #[napi(ts_return_type = "Promise<NativeLossOutput>")]
    pub fn value_and_grad_async(
        &self,
        feats: Vec<NativeTensor>,
        batch: NativeDetBatch,
    ) -> AsyncTask<LossTask> {
        LossTask::new(self.inner.clone(), det_packed(&feats, &batch), true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yolo_loss_core::ErrorCode;

    #[test]
    fn feats_are_renamed_in_tuple_losses() {
        let e = rename_feats(LossError::shape(
            "preds[1]: expected 66 channels; preds: 3 levels; preds.angle: bad",
        ));
        assert_eq!(
            e.message,
            "feats[1]: expected 66 channels; feats: 3 levels; angle: bad"
        );
        assert_eq!(e.code, ErrorCode::ShapeMismatch);
    }

    #[test]
    fn packed_lengths_are_checked_before_the_core() {
        let data = [0f32; 3];
        let shape = [2.0, 2.0];
        let args = [Arg {
            name: "logits".into(),
            data: &data,
            shape: &shape,
        }];
        let e = run_packed(&V8ClassificationLoss::new(), &args, &[], false).unwrap_err();
        assert_eq!(e.code, ErrorCode::ShapeMismatch);
        assert!(e.message.starts_with("logits"), "{}", e.message);
    }
}
