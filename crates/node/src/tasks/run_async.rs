//! The asynchronous forms (`callAsync`, `valueAndGradAsync`): one evaluation on the libuv pool over private copies of
//! the inputs.

use std::borrow::Cow;
use std::sync::Arc;

use napi::bindgen_prelude::{AsyncTask, Float32Array, JsError};
use napi::{Env, Task};
use yolo_loss_core::LossOutput;

use yolo_loss_cuda::PinnedCall;

use super::out::CallerGrads;
use super::pins::Pins;
use super::{fresh, run_packed, Eval, Packed};
use crate::{to_js, Arg, Code, CoreResult, NativeLossOutput};

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
    /// The `out` ranges page-locked for this call (CUDA).
    pinned: PinnedCall,
}

impl LossTask {
    /// Checks `out` against the caller's own tensors (the copies could not alias it) and has the instance's `pins`
    /// lock it (here, on the JavaScript thread), then copies the inputs.
    ///
    /// The prediction arrays are not offered to `pins`: the call reads its own copies, made before this returns (the
    /// caller may reuse its arrays at once), and those are fresh allocations every call. Locking them would pin
    /// their pages for one upload, which costs more than the staged copy it saves, and they are never seen again.
    /// Reading the caller's arrays in place instead (which would make them worth locking) would let the caller
    /// change them under a running computation.
    pub(super) fn new(
        loss: Arc<dyn Eval>,
        packed: Packed<'_>,
        want_grad: bool,
        out_and_pins: Option<(Vec<Float32Array>, &Pins, &Env)>,
    ) -> napi::Result<AsyncTask<LossTask>, Code> {
        let (mut out, mut pinned) = (None, PinnedCall::default());
        if let Some((arrays, pins, env)) = out_and_pins {
            let grads = CallerGrads(arrays);
            grads.check(&packed).map_err(to_js)?;
            pinned = pins.prepare(env, &[], &grads.0);
            out = Some(grads);
        }
        let args = packed
            .args
            .into_iter()
            .map(|a| OwnedArg { name: a.name.into_owned(), data: a.data.to_vec(), shape: a.shape.to_vec() })
            .collect();
        Ok(AsyncTask::new(LossTask { loss, args, groups: packed.groups, preds: packed.preds, want_grad, out, pinned }))
    }
}

impl Task for LossTask {
    type Output = CoreResult<LossOutput<f32>>;
    type JsValue = NativeLossOutput;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        let args: Vec<Arg<'_>> =
            self.args.iter().map(|a| Arg { name: Cow::Borrowed(&a.name), data: &a.data, shape: &a.shape }).collect();
        let (loss, groups, preds, want_grad) = (&*self.loss, &self.groups, self.preds, self.want_grad);
        let out = match (&mut self.out, std::mem::take(&mut self.pinned)) {
            (None, _) => {
                run_packed(loss, &args, groups, preds, want_grad, fresh(|n| Ok(yolo_loss_core::alloc::zeroed(n))))
            }
            (Some(out), pinned) => {
                let args = &args;
                pinned
                    .run(move || run_packed(loss, args, groups, preds, want_grad, move |_| Ok(out.slices())))
                    .map(|(values, _)| (values, Vec::new()))
            }
        };
        Ok(out.map(|((loss, loss_items), grads)| LossOutput { loss, loss_items, grads }))
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
