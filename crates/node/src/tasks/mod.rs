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
//! Every loss runs on the backend `device` selects: a `crates/cuda` [`Selected`] (CUDA, CPU, or under 'auto' with a
//! usable GPU both, each call on the faster one for its shapes: every path above, async and `out` included, goes
//! through [`Eval::eval`] and so through that choice).
//!
//! Files: `mod.rs` the mechanism (packing, [`Eval`] over every [`Selected`] loss, the synchronous run, the
//! constructor, the class macro), `run_async.rs` the asynchronous task, `out.rs` the caller's `out` buffers, `pins.rs`
//! the page-locking of the caller's buffers on CUDA (`pinnedMemory()`, `releasePinnedMemory()`),
//! `unpack.rs` how each task's packed tensors become its predictions and batch, `classes.rs` the classes.

use std::borrow::Cow;
use std::sync::Arc;

use napi::bindgen_prelude::Float32Array;
use napi::Env;
use yolo_loss_core::loss::{GradBufs, LossValues};
use yolo_loss_core::{LossError, TaskLoss, TensorRef};
use yolo_loss_cuda::{Backend, CpuLoss, CudaLoss, Selected};

use crate::{
    arg, cuda_refused, guarded, guarded_js, js_copy, js_zeros, parse_device, to_js, with_views, Arg, Code, CoreResult,
    GradBuffer, NativeLossOutput, NativeTensor,
};
use out::CallerGrads;
use pins::Pins;

mod out;
mod pins;
mod run_async;
mod unpack;

/// The tensors of one call, flat (the `preds` prediction tensors first), and the sizes of the level lists.
#[derive(Default)]
pub(crate) struct Packed<'a> {
    args: Vec<Arg<'a>>,
    groups: Vec<usize>,
    /// How many of `args`, from the front, are prediction tensors (one gradient each).
    preds: usize,
    /// The caller's arrays of those prediction tensors, in order (what a CUDA instance may page-lock, `pins.rs`).
    arrays: Vec<&'a Float32Array>,
}

impl<'a> Packed<'a> {
    /// A list of level tensors (predictions), named `name[0]`, `name[1]`, ...; its size goes to the groups.
    fn levels(mut self, name: &str, ts: &'a [NativeTensor]) -> Self {
        self.groups.push(ts.len());
        for (i, t) in ts.iter().enumerate() {
            self = self.pred(format!("{name}[{i}]"), t);
        }
        self
    }

    /// One prediction tensor. Predictions come before every batch tensor.
    fn pred(mut self, name: impl Into<Cow<'a, str>>, t: &'a NativeTensor) -> Self {
        debug_assert_eq!(self.preds, self.args.len(), "prediction tensors are packed first");
        self.args.push(arg(name, t));
        self.arrays.push(&t.data);
        self.preds = self.args.len();
        self
    }

    fn tensor(self, name: &'static str, t: &'a NativeTensor) -> Self {
        self.pred(name, t)
    }

    /// One batch tensor (no gradient).
    fn label(mut self, name: &'static str, t: &'a NativeTensor) -> Self {
        self.args.push(arg(name, t));
        self
    }

    /// `batch.batch_idx`, `batch.cls`, `batch.bboxes`.
    fn labels(self, batch: &'a impl Labels) -> Self {
        let [batch_idx, cls, bboxes] = batch.labels();
        self.label("batch.batch_idx", batch_idx).label("batch.cls", cls).label("batch.bboxes", bboxes)
    }
}

/// A batch that holds the detection labels.
trait Labels {
    fn labels(&self) -> [&NativeTensor; 3];
}

/// A loss evaluated from a [`Packed`] list: every [`Selected`] task loss whose CPU type is [`Unpack`] (object-safe,
/// so that [`LossTask`] holds any of them).
pub(crate) trait Eval: Send + Sync + 'static {
    /// `t` holds the tensors in the order the native class packed them; `groups` the level-list sizes. Without
    /// `grads` this is `call`; with them, one buffer per prediction tensor (the front of `t`), as long as it:
    /// `value_and_grad_into` where they are `zeroed` (fresh), else `value_and_grad_overwrite` (a caller's `out` of
    /// any contents, which the core zeroes only where the loss does not write it).
    fn eval(
        &self,
        t: &[TensorRef<'_, f32>],
        groups: &[usize],
        grads: Option<GradBufs<'_, '_, f32>>,
        zeroed: bool,
    ) -> CoreResult<LossValues<f32>>;

    /// The backend calls with these tensors run on ([`Selected::backend_for`]): None under 'auto' while their
    /// shapes are probed or unseen.
    fn backend_for(&self, t: &[TensorRef<'_, f32>], groups: &[usize]) -> Option<Backend>;
}

/// How the packed tensors of a task's native class become the task's predictions and batch; implemented on the
/// task's CPU type (its CUDA type takes the same arguments).
pub(crate) trait Unpack: CpuLoss {
    /// `t`: the tensors in packing order (checked against their shapes, not yet against the task); `groups`: the
    /// level-list sizes.
    fn unpack<'a>(t: &'a [TensorRef<'a, f32>], groups: &[usize]) -> (Self::Preds<'a>, Self::Batch<'a>);

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
        zeroed: bool,
    ) -> CoreResult<LossValues<f32>> {
        let (preds, batch) = C::unpack(t, groups);
        match grads {
            None => self.call(preds, &batch).map(|o| (o.loss, o.loss_items)),
            Some(bufs) if zeroed => self.value_and_grad_into(preds, &batch, bufs),
            Some(bufs) => self.value_and_grad_overwrite(preds, &batch, bufs),
        }
        .map_err(C::rename)
    }

    fn backend_for(&self, t: &[TensorRef<'_, f32>], groups: &[usize]) -> Option<Backend> {
        let (preds, batch) = C::unpack(t, groups);
        Selected::backend_for(self, preds, &batch)
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
                return Ok((loss.eval(views, groups, None, true)?, Vec::new()));
            }
            let mut bufs = grads(&views[..preds])?;
            let values = {
                let mut slices: Vec<&mut [f32]> = bufs.iter_mut().map(G::as_mut_slice).collect();
                loss.eval(views, groups, Some(&mut slices), G::ZEROED)?
            };
            Ok((values, bufs))
        })
    })
}

/// Fresh zero-filled gradients as long as the prediction tensors, made by `zeros`.
fn fresh<G>(zeros: impl Fn(usize) -> CoreResult<G>) -> impl FnOnce(&[TensorRef<'_, f32>]) -> CoreResult<Vec<G>> {
    move |preds| preds.iter().map(|v| zeros(v.data.len())).collect()
}

/// `call` / `valueAndGrad`: the caller's arrays read in place, every output a V8-owned `Float32Array` (the
/// gradients written by the core directly, the two loss vectors copied); with `out`, the gradients go into the
/// caller's buffers instead and `grads` comes back empty (the facade returns `out`). On CUDA, `pins` page-locks the
/// caller's buffers worth it first (`out` at once, prediction arrays when passed again), so that their copies go
/// straight between them and the GPU.
fn run_sync<L: Eval + ?Sized>(
    env: &Env,
    (loss, pins): (&L, &Pins),
    packed: Packed<'_>,
    want_grad: bool,
    out: Option<Vec<Float32Array>>,
) -> napi::Result<NativeLossOutput, Code> {
    let mut out = out.map(CallerGrads);
    if let Some(out) = &out {
        out.check(&packed).map_err(to_js)?;
    }
    let pinned = pins.prepare(env, &packed.arrays, out.as_ref().map_or(&[], |o| &o.0));
    let (args, groups, preds) = (&packed.args, &packed.groups, packed.preds);
    let ((values, items), grads) = pinned
        .run(|| match &mut out {
            None => run_packed(loss, args, groups, preds, want_grad, fresh(|n| js_zeros(env, n)))
                .map(|(values, grads)| (values, grads.into_iter().map(crate::JsGrad::into_array).collect())),
            Some(out) => run_packed(loss, args, groups, preds, want_grad, |_| Ok(out.slices()))
                .map(|(values, _)| (values, Vec::new())),
        })
        .map_err(to_js)?;
    Ok(NativeLossOutput {
        loss: js_copy(env, &values).map_err(to_js)?,
        loss_items: js_copy(env, &items).map_err(to_js)?,
        grads,
    })
}

/// `deviceFor`: the backend calls of these arguments' shapes run on, once the tensors pass the length checks.
fn device_for<L: Eval + ?Sized>(loss: &L, packed: Packed<'_>) -> napi::Result<Option<String>, Code> {
    let backend = guarded_js("deviceFor", || with_views(&packed.args, |v| Ok(loss.backend_for(v, &packed.groups))))?;
    Ok(backend.map(|b| b.as_str().to_string()))
}

/// A native class's loss, what it runs on ('cpu', 'cuda', or 'auto': both, chosen per shape) and its page-locked
/// buffers.
type Built<L> = (Arc<L>, &'static str, Pins);

/// Builds a native class's loss under the guard: parses `device`, then the configuration, then selects the backend;
/// returns the instance, what it runs on and its (empty) page-locked buffers.
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
        let pins = Pins::new(device, loss.backend());
        let backend = loss.backend().map_or("auto", Backend::as_str);
        Ok((Arc::new(loss), backend, pins))
    })
}

/// One native task-loss class over the selected loss `$loss`, named `$name` in JavaScript: the constructor, `device`,
/// `lastDevice`, and `call`, `valueAndGrad`, `callAsync`, `valueAndGradAsync`, `deviceFor`, all taking `$arg`s and
/// packing them with `$pack`; then the class's own methods. The constructor takes the argument `$cfg`, reads the requested device from
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
            /// Released (unregistered, then the references dropped) when the instance is collected.
            pins: Pins,
        }

        #[napi]
        impl $class {
            #[napi(constructor)]
            pub fn new($cfg: $cfg_ty) -> napi::Result<Self, Code> {
                let (inner, device, pins) = new_loss(concat!("new ", $name), &$device, || $config)?;
                Ok(Self { inner, device, pins })
            }

            /// What runs the calls: 'cpu', 'cuda', or 'auto' (both backends, each call on the faster one for its
            /// shapes).
            #[napi(getter)]
            pub fn device(&self) -> String {
                self.device.to_string()
            }

            /// The backend the latest call started on, 'cpu' or 'cuda' (with one backend: that one); undefined
            /// under 'auto' before the first call.
            #[napi(getter)]
            pub fn last_device(&self) -> Option<String> {
                self.inner.last_backend().map(|b| b.as_str().to_string())
            }

            #[doc = " The backend calls with these arguments' shapes run on, 'cpu' or 'cuda'; undefined under 'auto'"]
            #[doc = " while those shapes are still being timed (or were not seen yet). Runs nothing."]
            #[napi]
            pub fn device_for(&self, $($arg: $arg_ty),+) -> napi::Result<Option<String>, Code> {
                device_for(&*self.inner, $pack)
            }

            #[napi]
            pub fn call(&self, env: Env, $($arg: $arg_ty),+) -> napi::Result<NativeLossOutput, Code> {
                run_sync(&env, (&*self.inner, &self.pins), $pack, false, None)
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
                run_sync(&env, (&*self.inner, &self.pins), $pack, true, out)
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
                env: Env,
                $($arg: $arg_ty,)+
                out: Option<Vec<Float32Array>>,
            ) -> napi::Result<AsyncTask<LossTask>, Code> {
                LossTask::new(self.inner.clone(), $pack, true, out.map(|o| (o, &self.pins, &env)))
            }

            #[doc = " The caller's buffers this instance keeps page-locked for direct GPU copies (CUDA only; zeros on"]
            #[doc = " the CPU): `out` buffers, and prediction arrays passed again. Also its registrations over its life."]
            #[napi]
            pub fn pinned_memory(&self) -> NativePinnedMemory {
                self.pins.stats().into()
            }

            #[doc = " Unlocks every buffer this instance page-locked and drops its references to them (done anyway"]
            #[doc = " when the instance is collected); later calls lock buffers anew."]
            #[napi]
            pub fn release_pinned_memory(&self) {
                self.pins.release()
            }

            $($extra)*
        }
    };
}

mod classes;

#[cfg(test)]
mod tests {
    use super::*;
    use yolo_loss_core::ErrorCode;
    use yolo_loss_cuda::ClassificationLossAny;

    #[test]
    fn packed_lengths_are_checked_before_the_core() {
        let data = [0f32; 3];
        let shape = [2.0, 2.0];
        let args = [Arg { name: "logits".into(), data: &data, shape: &shape }];
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
