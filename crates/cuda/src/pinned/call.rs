//! Which host ranges one call may copy asynchronously, and the wait at its end.
//!
//! The loss's copies (`Gpu::copy_htod` / `copy_dtoh`) only see slices; whether a slice lies in registered memory that
//! is valid for this call is what [`PinnedCall::run`] tells them, through a thread-local set for the duration of
//! the call (the loss runs on the calling thread; the binding has no other way into `TaskLoss::run`). Outside such a
//! scope nothing counts as registered and every copy takes the staged or plain path, as before.
//!
//! A direct copy is queued and not waited for: uploads of every level go to the DMA engine at once, and the gradient
//! downloads land straight in the caller's buffers. The scope's end waits for the stream, so that when the call
//! returns (with a result or an error) no DMA still reads the caller's inputs or writes its outputs.

use std::cell::RefCell;

use yolo_loss_core::Result;

use super::HostRange;
use crate::gpu::Gpu;
use crate::staging::MIN_STAGED_BYTES;

thread_local! {
    static DIRECT: RefCell<Vec<HostRange>> = const { RefCell::new(Vec::new()) };
}

/// The registered ranges of one call's buffers (from [`super::HostPins::prepare`]); the default has none (a call
/// on the CPU, or with nothing registered), and its `run` only runs the call.
#[derive(Default)]
pub struct PinnedCall {
    ranges: Vec<HostRange>,
    gpu: Option<&'static Gpu>,
}

impl PinnedCall {
    pub(crate) fn new(ranges: Vec<HostRange>, gpu: Option<&'static Gpu>) -> Self {
        PinnedCall { ranges, gpu }
    }

    pub fn ranges(&self) -> &[HostRange] {
        &self.ranges
    }

    /// Runs the call `f` with its copies from and to these ranges direct, then waits for the device (also when `f`
    /// fails or panics). An error of a queued copy that only this wait sees becomes the call's error.
    pub fn run<T>(self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        if self.ranges.is_empty() {
            return f();
        }
        /// Restores the thread's previous set and waits, on every way out of `f`.
        struct Scope {
            previous: Vec<HostRange>,
            gpu: Option<&'static Gpu>,
            waited: bool,
        }
        impl Drop for Scope {
            fn drop(&mut self) {
                if !self.waited {
                    if let Some(gpu) = self.gpu {
                        let _ = gpu.synchronize();
                    }
                }
                DIRECT.with(|d| *d.borrow_mut() = std::mem::take(&mut self.previous));
            }
        }
        let previous = DIRECT.with(|d| d.replace(self.ranges));
        let mut scope = Scope { previous, gpu: self.gpu, waited: false };
        let out = f();
        scope.waited = true;
        let waited = scope.gpu.map_or(Ok(()), Gpu::synchronize);
        drop(scope);
        let value = out?;
        waited.map(|()| value)
    }
}

/// How a copy of `range` goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Registered for this call: queued as an asynchronous DMA, waited for at the end of the call.
    Direct,
    /// Through our pinned staging buffers (staging.rs).
    Staged,
    /// The driver's own copy of pageable memory, waited for.
    Plain,
}

pub(crate) fn route(range: HostRange, staged_copies: bool) -> Route {
    if DIRECT.with(|d| d.borrow().iter().any(|r| r.contains(&range))) {
        Route::Direct
    } else if range.bytes >= MIN_STAGED_BYTES && staged_copies {
        Route::Staged
    } else {
        Route::Plain
    }
}
