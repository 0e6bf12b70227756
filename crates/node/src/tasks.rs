//! The task losses: v8DetectionLoss, segmentation, pose, OBB, classification, E2E and the YOLOE prompt losses,
//! each as one native class with `call`, `valueAndGrad` and their `...Async` forms.
//!
//! All of them share one mechanism, generic over the core's [`TaskLoss`]: the napi method packs its arguments into a
//! flat list of named tensors ([`Packed`]), the prediction tensors first, in a loss-specific order, plus the sizes of
//! its level lists, and [`Eval::eval`] unpacks that list into the task's predictions and batch ([`Unpack`], one
//! `impl` per task) and runs `call` or `value_and_grad_into`. Synchronous methods pack borrowed slices of the caller's
//! `Float32Array`s (no copy) and have the core write the gradients into V8-owned `Float32Array`s created for the call
//! ([`crate::JsGrad`]); the asynchronous ones copy the list once ([`LossTask`]), evaluate it on the libuv pool into
//! `Vec`s and hand those to JavaScript as external buffers. Both `valueAndGrad` forms take an optional `out`, the
//! caller's own gradient buffers ([`CallerGrads`]): the core then writes into them and nothing is allocated for the
//! gradients. Each class is a thin shell written by [`task_loss_class!`]: one line per method, into that generic code.
//!
//! Every loss runs on the backend `device` selects: a `crates/cuda` [`Selected`] (CUDA or CPU; a task without a CUDA
//! backend refuses `device: 'cuda'` there).

use std::borrow::Cow;
use std::sync::Arc;

use napi::bindgen_prelude::{AsyncTask, Float32Array, JsError};
use napi::{Env, Task};
use napi_derive::napi;
use rayon::prelude::*;
use yolo_loss_core::classification::V8ClassificationLoss;
use yolo_loss_core::detection::{bbox_decode, GradBufs, LossValues};
use yolo_loss_core::e2e::{E2EDetectLoss, E2EPreds};
use yolo_loss_core::obb::ObbPreds;
use yolo_loss_core::pose::{PoseBatch, PoseConfig, PosePreds, V8PoseLoss};
use yolo_loss_core::prompts::{TVPDetectLoss, TVPSegmentLoss};
use yolo_loss_core::segmentation::{SegBatch, SegPreds, V8SegmentationLoss};
use yolo_loss_core::{
    DetBatch, LossError, LossOutput, TaskLoss, TensorRef, V8DetectionLoss, V8OBBLoss,
};
use yolo_loss_cuda::{
    ClassificationLossAny, CpuLoss, CudaLoss, DetectionLossAny, E2EDetectLossAny, ObbLossAny,
    PoseLossAny, SegmentationLossAny, Selected, TVPDetectLossAny, TVPSegmentLossAny,
};

use crate::{
    arg, cuda_refused, detection_config, guarded, guarded_js, invalid, js_copy, js_zeros,
    out_tensor, parse_device, preprocess_table, to_js, to_usize, with_views, Arg, Code, CoreResult,
    GradBuffer, NativeDetBatch, NativeDetectionConfig, NativeLossOutput, NativeTensor,
};

// ------------------------------------------------------------------------------------------------------------
// The shared mechanism

/// The tensors of one call, flat (the `preds` prediction tensors first), and the sizes of the level lists.
#[derive(Default)]
pub(crate) struct Packed<'a> {
    args: Vec<Arg<'a>>,
    groups: Vec<usize>,
    /// How many of `args`, from the front, are prediction tensors (one gradient each).
    preds: usize,
}

impl<'a> Packed<'a> {
    /// A list of level tensors (predictions), named `name[0]`, `name[1]`, ...; its size goes to the groups.
    fn levels(mut self, name: &str, ts: &'a [NativeTensor]) -> Self {
        self.groups.push(ts.len());
        for (i, t) in ts.iter().enumerate() {
            self = self.pred(arg(format!("{name}[{i}]"), t));
        }
        self
    }

    /// One prediction tensor. Predictions come before every batch tensor.
    fn pred(mut self, a: Arg<'a>) -> Self {
        debug_assert_eq!(
            self.preds,
            self.args.len(),
            "prediction tensors are packed first"
        );
        self.args.push(a);
        self.preds = self.args.len();
        self
    }

    fn tensor(self, name: &'static str, t: &'a NativeTensor) -> Self {
        self.pred(arg(name, t))
    }

    /// One batch tensor (no gradient).
    fn label(mut self, name: &'static str, t: &'a NativeTensor) -> Self {
        self.args.push(arg(name, t));
        self
    }

    /// `batch.batch_idx`, `batch.cls`, `batch.bboxes`.
    fn labels(self, batch: &'a impl Labels) -> Self {
        let [batch_idx, cls, bboxes] = batch.labels();
        self.label("batch.batch_idx", batch_idx)
            .label("batch.cls", cls)
            .label("batch.bboxes", bboxes)
    }
}

/// A loss evaluated from a [`Packed`] list: every [`Selected`] task loss whose CPU type is [`Unpack`] (object-safe,
/// so that [`LossTask`] holds any of them).
pub(crate) trait Eval: Send + Sync + 'static {
    /// `t` holds the tensors in the order the native class packed them; `groups` the level-list sizes. Without
    /// `grads` this is `call`; with them, `value_and_grad_into`: one buffer per prediction tensor (the front of `t`),
    /// as long as it, zero-filled unless [`Eval::overwrites_grads`].
    fn eval(
        &self,
        t: &[TensorRef<'_, f32>],
        groups: &[usize],
        grads: Option<GradBufs<'_, '_, f32>>,
    ) -> CoreResult<LossValues<f32>>;

    /// Whether `eval` writes every element of its gradient buffers, so that a caller's `out` needs no zeroing
    /// first (the core's [`TaskLoss::overwrites_grads`]).
    fn overwrites_grads(&self) -> bool;
}

/// How the packed tensors of a task's native class become the task's predictions and batch; implemented on the
/// task's CPU type (its CUDA type takes the same arguments).
pub(crate) trait Unpack: CpuLoss {
    /// `t`: the tensors in packing order (checked against their shapes, not yet against the task); `groups`: the
    /// level-list sizes.
    fn unpack<'a>(
        t: &'a [TensorRef<'a, f32>],
        groups: &[usize],
    ) -> (Self::Preds<'a>, Self::Batch<'a>);

    /// The core's error messages in the words of this task's public API.
    fn rename(e: LossError) -> LossError {
        e
    }
}

impl<C, G> Eval for Selected<C, G>
where
    C: Unpack + Send + Sync + 'static,
    G: CudaLoss<C> + Send + Sync + 'static,
{
    fn eval(
        &self,
        t: &[TensorRef<'_, f32>],
        groups: &[usize],
        grads: Option<GradBufs<'_, '_, f32>>,
    ) -> CoreResult<LossValues<f32>> {
        let (preds, batch) = C::unpack(t, groups);
        match grads {
            None => self.call(preds, &batch).map(|o| (o.loss, o.loss_items)),
            Some(bufs) => self.value_and_grad_into(preds, &batch, bufs),
        }
        .map_err(C::rename)
    }

    fn overwrites_grads(&self) -> bool {
        TaskLoss::overwrites_grads(self)
    }
}

/// Validates the shapes (JavaScript numbers) and builds the views; then, for the gradient, asks `grads` for one
/// buffer per prediction tensor as [`Eval::eval`] takes them (given the prediction views, only once the inputs
/// passed those checks, and only as long as data the caller already holds) and evaluates into them. All of it under
/// the panic guard.
fn run_packed<L: Eval + ?Sized, G: GradBuffer>(
    loss: &L,
    args: &[Arg<'_>],
    groups: &[usize],
    preds: usize,
    want_grad: bool,
    grads: impl FnOnce(&[TensorRef<'_, f32>]) -> CoreResult<Vec<G>>,
) -> CoreResult<(LossValues<f32>, Vec<G>)> {
    let what = if want_grad { "valueAndGrad" } else { "call" };
    guarded(what, || {
        with_views(args, |views| {
            if !want_grad {
                return Ok((loss.eval(views, groups, None)?, Vec::new()));
            }
            let mut bufs = grads(&views[..preds])?;
            let values = {
                let mut slices: Vec<&mut [f32]> = bufs.iter_mut().map(G::as_mut_slice).collect();
                loss.eval(views, groups, Some(&mut slices))?
            };
            Ok((values, bufs))
        })
    })
}

/// Fresh zero-filled gradients as long as the prediction tensors, made by `zeros`.
fn fresh<G>(
    zeros: impl Fn(usize) -> CoreResult<G>,
) -> impl FnOnce(&[TensorRef<'_, f32>]) -> CoreResult<Vec<G>> {
    move |preds| preds.iter().map(|v| zeros(v.data.len())).collect()
}

/// The caller's `out`: one `Float32Array` per prediction tensor, in the packing order, into which the gradients are
/// written (the binding of `valueAndGrad(preds, batch, { out })`). [`CallerGrads::check`] refuses buffers that do
/// not fit before anything is written; [`CallerGrads::for_loss`] then hands them to the core.
///
/// Each `Float32Array` holds a strong reference to the caller's array, so the memory stays alive while an
/// asynchronous evaluation writes into it on the libuv pool. It cannot stop the caller from writing, transferring
/// (detaching) or resizing the buffer meanwhile; the facade documents that `out` is the computation's until the
/// promise settles, as Node's own `fs.read` does for its buffer.
pub(crate) struct CallerGrads(Vec<Float32Array>);

impl CallerGrads {
    /// One buffer per prediction tensor of `packed`, each exactly as long as it, none sharing a byte with any
    /// tensor of `packed` (predictions and batch) or with another buffer: the core reads the inputs while it writes
    /// the gradients, and two gradients in one place would overwrite each other. `ERR_SHAPE_MISMATCH` for the count
    /// and the lengths, `ERR_INVALID_ARGUMENT` for shared memory.
    fn check(&self, packed: &Packed<'_>) -> CoreResult<()> {
        let preds = &packed.args[..packed.preds];
        if self.0.len() != preds.len() {
            return Err(LossError::shape(format!(
                "out: expected {} gradient buffers (one per prediction tensor), got {}",
                preds.len(),
                self.0.len()
            )));
        }
        let out_name = |i: usize| format!("out for {}", preds[i].name);
        for (i, (buf, pred)) in self.0.iter().zip(preds).enumerate() {
            if buf.len() != pred.data.len() {
                return Err(LossError::shape(format!(
                    "{}: expected {} float32 values (as many as {}), got {}",
                    out_name(i),
                    pred.data.len(),
                    pred.name,
                    buf.len()
                )));
            }
        }
        for (i, buf) in self.0.iter().enumerate() {
            let clash = packed
                .args
                .iter()
                .find(|a| overlaps(buf, a.data))
                .map(|a| a.name.to_string())
                .or_else(|| (0..i).find(|&j| overlaps(buf, &self.0[j])).map(out_name));
            if let Some(other) = clash {
                return Err(invalid(format!(
                    "{}: expected a buffer of its own, got one that shares memory with {other} (out may not alias \
                     an input or another out tensor)",
                    out_name(i)
                )));
            }
        }
        Ok(())
    }

    /// The buffers as the core's gradient slices, zero-filled unless `loss` writes every element (the CPU core
    /// writes only where a gradient is non-zero). Only after [`CallerGrads::check`] passed.
    fn for_loss<L: Eval + ?Sized>(&mut self, loss: &L) -> Vec<&mut [f32]> {
        let mut bufs: Vec<&mut [f32]> = self
            .0
            .iter_mut()
            // SAFETY: `check` made sure that no two buffers and no input share a byte, so this is the only reference
            // to this memory in Rust. The synchronous methods run with the JavaScript thread inside this call; the
            // asynchronous ones own the reference that keeps the memory alive, and the caller has agreed not to
            // touch `out` until the promise settles. The backing store never moves.
            .map(|a| unsafe { a.as_mut() })
            .collect();
        if !loss.overwrites_grads() {
            zero_fill(&mut bufs);
        }
        bufs
    }
}

/// Zero-fills `bufs` on every core: a caller's buffers hold the previous step's gradients, and at training sizes
/// (77 MB at B=16, 640×640, nc=80) one thread's memset of them takes milliseconds, a good part of a whole call.
fn zero_fill(bufs: &mut [&mut [f32]]) {
    /// 1 MiB of float32 per task: large enough to amortise the scheduling, small enough to share one level.
    const CHUNK: usize = 1 << 18;
    bufs.par_iter_mut()
        .flat_map(|b| b.par_chunks_mut(CHUNK))
        .for_each(|c| c.fill(0.0));
}

/// Whether two arrays share at least one byte (empty ones share none).
fn overlaps(a: &[f32], b: &[f32]) -> bool {
    let (a, b) = (a.as_ptr_range(), b.as_ptr_range());
    !a.is_empty() && !b.is_empty() && a.start < b.end && b.start < a.end
}

/// `call` / `valueAndGrad`: the caller's arrays read in place, every output a V8-owned `Float32Array` (the
/// gradients written by the core directly, the two loss vectors copied); with `out`, the gradients go into the
/// caller's buffers instead and `grads` comes back empty (the facade returns `out`).
fn run_sync<L: Eval + ?Sized>(
    env: &Env,
    loss: &L,
    packed: Packed<'_>,
    want_grad: bool,
    out: Option<Vec<Float32Array>>,
) -> napi::Result<NativeLossOutput, Code> {
    let (values, items, grads) = match out {
        None => {
            let ((values, items), grads) = run_packed(
                loss,
                &packed.args,
                &packed.groups,
                packed.preds,
                want_grad,
                fresh(|n| js_zeros(env, n)),
            )
            .map_err(to_js)?;
            (
                values,
                items,
                grads.into_iter().map(crate::JsGrad::into_array).collect(),
            )
        }
        Some(out) => {
            let mut out = CallerGrads(out);
            out.check(&packed).map_err(to_js)?;
            let ((values, items), _) = run_packed(
                loss,
                &packed.args,
                &packed.groups,
                packed.preds,
                want_grad,
                |_| Ok(out.for_loss(loss)),
            )
            .map_err(to_js)?;
            (values, items, Vec::new())
        }
    };
    Ok(NativeLossOutput {
        loss: js_copy(env, &values).map_err(to_js)?,
        loss_items: js_copy(env, &items).map_err(to_js)?,
        grads,
    })
}

/// [`Arg`] with its own copies (the asynchronous methods).
struct OwnedArg {
    name: String,
    data: Vec<f32>,
    shape: Vec<f64>,
}

/// A task-loss evaluation on the libuv pool, over private copies of the inputs (and, with `out`, into the caller's
/// gradient buffers).
pub struct LossTask {
    loss: Arc<dyn Eval>,
    args: Vec<OwnedArg>,
    groups: Vec<usize>,
    preds: usize,
    want_grad: bool,
    out: Option<CallerGrads>,
}

impl LossTask {
    /// Checks `out` against the caller's own tensors (the copies could not alias it), then copies the inputs.
    fn new(
        loss: Arc<dyn Eval>,
        packed: Packed<'_>,
        want_grad: bool,
        out: Option<Vec<Float32Array>>,
    ) -> napi::Result<AsyncTask<LossTask>, Code> {
        let out = out.map(CallerGrads);
        if let Some(out) = &out {
            out.check(&packed).map_err(to_js)?;
        }
        let args = packed
            .args
            .into_iter()
            .map(|a| OwnedArg {
                name: a.name.into_owned(),
                data: a.data.to_vec(),
                shape: a.shape.to_vec(),
            })
            .collect();
        Ok(AsyncTask::new(LossTask {
            loss,
            args,
            groups: packed.groups,
            preds: packed.preds,
            want_grad,
            out,
        }))
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
                name: Cow::Borrowed(&a.name),
                data: &a.data,
                shape: &a.shape,
            })
            .collect();
        let (loss, groups, preds, want_grad) =
            (&*self.loss, &self.groups, self.preds, self.want_grad);
        let out = match &mut self.out {
            None => run_packed(
                loss,
                &args,
                groups,
                preds,
                want_grad,
                fresh(|n| Ok(yolo_loss_core::alloc::zeroed(n))),
            ),
            Some(out) => run_packed(loss, &args, groups, preds, want_grad, |_| {
                Ok(out.for_loss(loss))
            })
            .map(|(values, _)| (values, Vec::new())),
        };
        Ok(out.map(|((loss, loss_items), grads)| LossOutput {
            loss,
            loss_items,
            grads,
        }))
    }

    /// The results become external `ArrayBuffer`s that own the `Vec`s (no copy, nothing done on the JavaScript
    /// thread but wrapping them). Node frees them by finalizers that run when the event loop turns, which it does
    /// between two resolutions: this callback itself is one turn of the loop, and an awaiting caller cannot start
    /// the next computation before it. (Copying into V8-owned buffers here would block the JavaScript thread for
    /// a copy of every gradient.)
    fn resolve(&mut self, env: Env, output: Self::Output) -> napi::Result<NativeLossOutput> {
        match output {
            Ok(o) => Ok(o.into()),
            // Reject with a JS Error carrying our code: build it here, on the JS thread, and hand napi the object.
            Err(e) => Err(napi::Error::from(JsError::from(to_js(e)).into_unknown(env))),
        }
    }
}

/// A native class's loss and the backend it runs on ('cpu' or 'cuda').
type Built<L> = (Arc<L>, &'static str);

/// Builds a native class's loss under the guard: parses `device`, then the configuration, then selects the backend;
/// returns the instance and the backend it runs on.
fn new_loss<C, G>(
    what: &str,
    device: &str,
    config: impl FnOnce() -> CoreResult<C::Config>,
) -> napi::Result<Built<Selected<C, G>>, Code>
where
    C: CpuLoss,
    G: CudaLoss<C>,
{
    guarded_js(what, || {
        let device = parse_device(device)?;
        let loss = Selected::<C, G>::new(config()?, device).map_err(cuda_refused)?;
        let backend = loss.backend().as_str();
        Ok((Arc::new(loss), backend))
    })
}

/// One native task-loss class over the selected loss `$loss`, named `$name` in JavaScript: the constructor, `device`,
/// and `call`, `valueAndGrad`, `callAsync`, `valueAndGradAsync`, all four taking `$arg`s and packing them with
/// `$pack`; then the class's own methods. The constructor takes the argument `$cfg`, reads the requested device from
/// `$device` and the loss's configuration from `$config`.
///
/// Doc comments given to the macro are written `#[doc = " ..."]`: a `///` comment that passes through
/// `macro_rules!` becomes a raw string, which napi-rs copies into `binding.d.ts` with its `r"`.
macro_rules! task_loss_class {
    (
        $(#[$doc:meta])*
        $class:ident($loss:ty, $name:literal)
        new($cfg:ident: $cfg_ty:ty) on $device:expr => $config:expr;
        args($($arg:ident: $arg_ty:ty),+) => $pack:expr;
        $($extra:tt)*
    ) => {
        $(#[$doc])*
        #[napi]
        pub struct $class {
            inner: Arc<$loss>,
            device: &'static str,
        }

        #[napi]
        impl $class {
            #[napi(constructor)]
            pub fn new($cfg: $cfg_ty) -> napi::Result<Self, Code> {
                let (inner, device) = new_loss(concat!("new ", $name), &$device, || $config)?;
                Ok(Self { inner, device })
            }

            /// The backend that runs: 'cpu' or 'cuda'.
            #[napi(getter)]
            pub fn device(&self) -> String {
                self.device.to_string()
            }

            #[napi]
            pub fn call(&self, env: Env, $($arg: $arg_ty),+) -> napi::Result<NativeLossOutput, Code> {
                run_sync(&env, &*self.inner, $pack, false, None)
            }

            #[doc = " With `out` (one buffer per prediction tensor, in the order of `grads`), the gradients are"]
            #[doc = " written into it and `grads` comes back empty."]
            #[napi]
            pub fn value_and_grad(
                &self,
                env: Env,
                $($arg: $arg_ty,)+
                out: Option<Vec<Float32Array>>,
            ) -> napi::Result<NativeLossOutput, Code> {
                run_sync(&env, &*self.inner, $pack, true, out)
            }

            #[doc = " Like `call`, on the libuv thread pool. The inputs are copied before this returns."]
            #[napi(ts_return_type = "Promise<NativeLossOutput>")]
            pub fn call_async(&self, $($arg: $arg_ty),+) -> napi::Result<AsyncTask<LossTask>, Code> {
                LossTask::new(self.inner.clone(), $pack, false, None)
            }

            #[doc = " Like `valueAndGrad`, on the libuv thread pool. The inputs are copied before this returns; `out`"]
            #[doc = " (checked before this returns) is written while the work runs: the caller leaves it alone until"]
            #[doc = " the promise settles."]
            #[napi(ts_return_type = "Promise<NativeLossOutput>")]
            pub fn value_and_grad_async(
                &self,
                $($arg: $arg_ty,)+
                out: Option<Vec<Float32Array>>,
            ) -> napi::Result<AsyncTask<LossTask>, Code> {
                LossTask::new(self.inner.clone(), $pack, true, out)
            }

            $($extra)*
        }
    };
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

/// A batch that holds the detection labels.
trait Labels {
    fn labels(&self) -> [&NativeTensor; 3];
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

// ------------------------------------------------------------------------------------------------------------
// How each task unpacks its tensors (the order of the packed tensors in the comments)

// levels…, batch_idx, cls, bboxes.
impl Unpack for V8DetectionLoss {
    fn unpack<'a>(
        t: &'a [TensorRef<'a, f32>],
        g: &[usize],
    ) -> (&'a [TensorRef<'a, f32>], DetBatch<'a, f32>) {
        let (feats, rest) = split(t, g[0]);
        (feats, det_batch(rest))
    }
}

// levels…, batch_idx, cls, bboxes.
impl Unpack for TVPDetectLoss {
    fn unpack<'a>(
        t: &'a [TensorRef<'a, f32>],
        g: &[usize],
    ) -> (&'a [TensorRef<'a, f32>], DetBatch<'a, f32>) {
        V8DetectionLoss::unpack(t, g)
    }
}

// levels…, pred_masks, proto, batch_idx, cls, bboxes, masks.
fn unpack_seg<'a>(
    t: &'a [TensorRef<'a, f32>],
    g: &[usize],
) -> (SegPreds<'a, f32>, SegBatch<'a, f32>) {
    let (feats, rest) = split(t, g[0]);
    let preds = SegPreds {
        feats,
        pred_masks: rest[0],
        proto: rest[1],
    };
    (
        preds,
        SegBatch {
            det: det_batch(&rest[2..5]),
            masks: rest[5],
        },
    )
}

impl Unpack for V8SegmentationLoss {
    fn unpack<'a>(
        t: &'a [TensorRef<'a, f32>],
        g: &[usize],
    ) -> (SegPreds<'a, f32>, SegBatch<'a, f32>) {
        unpack_seg(t, g)
    }
    fn rename(e: LossError) -> LossError {
        rename_feats(e)
    }
}

impl Unpack for TVPSegmentLoss {
    fn unpack<'a>(
        t: &'a [TensorRef<'a, f32>],
        g: &[usize],
    ) -> (SegPreds<'a, f32>, SegBatch<'a, f32>) {
        unpack_seg(t, g)
    }
    fn rename(e: LossError) -> LossError {
        rename_feats(e)
    }
}

// levels…, kpts, batch_idx, cls, bboxes, keypoints.
impl Unpack for V8PoseLoss {
    fn unpack<'a>(
        t: &'a [TensorRef<'a, f32>],
        g: &[usize],
    ) -> (PosePreds<'a, f32>, PoseBatch<'a, f32>) {
        let (feats, rest) = split(t, g[0]);
        let batch = PoseBatch {
            det: det_batch(&rest[1..4]),
            keypoints: rest[4],
        };
        (
            PosePreds {
                feats,
                kpts: rest[0],
            },
            batch,
        )
    }
    fn rename(e: LossError) -> LossError {
        rename_feats(e)
    }
}

// levels…, angle, batch_idx, cls, bboxes.
impl Unpack for V8OBBLoss {
    fn unpack<'a>(
        t: &'a [TensorRef<'a, f32>],
        g: &[usize],
    ) -> (ObbPreds<'a, f32>, DetBatch<'a, f32>) {
        let (feats, rest) = split(t, g[0]);
        (
            ObbPreds {
                feats,
                angle: rest[0],
            },
            det_batch(&rest[1..4]),
        )
    }
    fn rename(e: LossError) -> LossError {
        rename_feats(e)
    }
}

// logits, cls.
impl Unpack for V8ClassificationLoss {
    fn unpack<'a>(
        t: &'a [TensorRef<'a, f32>],
        _: &[usize],
    ) -> (TensorRef<'a, f32>, TensorRef<'a, f32>) {
        (t[0], t[1])
    }
}

// one2many levels…, one2one levels…, batch_idx, cls, bboxes.
impl Unpack for E2EDetectLoss {
    fn unpack<'a>(
        t: &'a [TensorRef<'a, f32>],
        g: &[usize],
    ) -> (E2EPreds<'a, f32>, DetBatch<'a, f32>) {
        let (one2many, rest) = split(t, g[0]);
        let (one2one, rest) = split(rest, g[1]);
        (E2EPreds { one2many, one2one }, det_batch(rest))
    }
}

/// The `reg_max` of a detection loss on either backend (`bboxDecode` runs on the CPU).
fn det_reg_max(loss: &DetectionLossAny) -> usize {
    match loss {
        DetectionLossAny::Cpu(c) => c.cfg.reg_max,
        DetectionLossAny::Cuda(g) => g.cfg.reg_max,
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

// ------------------------------------------------------------------------------------------------------------
// The classes

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
        self.inner.cpu().cfg.sigmas()
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
                |v| self.inner.cpu().bbox_decode(v[0], v[1], v[2]),
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
            self.inner.cpu().preprocess(t, b, s)
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
    fn overlap_is_sharing_a_byte() {
        let data = [0f32; 8];
        assert!(overlaps(&data[0..4], &data[3..8]));
        assert!(overlaps(&data[2..3], &data[0..8]));
        assert!(
            !overlaps(&data[0..4], &data[4..8]),
            "adjacent views share no byte"
        );
        assert!(
            !overlaps(&data[2..2], &data[0..8]),
            "an empty view shares nothing"
        );
        assert!(!overlaps(&data[0..4], &[0f32; 4]));
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
        let e = run_packed(
            &ClassificationLossAny::new((), yolo_loss_cuda::Device::Cpu).unwrap(),
            &args,
            &[],
            1,
            true,
            fresh(|n| Ok(vec![0f32; n])),
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::ShapeMismatch);
        assert!(e.message.starts_with("logits"), "{}", e.message);
    }
}
