//! A CUDA instance's page-locked buffers, the caller's `out` gradient buffers and prediction arrays
//! (crates/cuda/src/pinned.rs has the policy and its reasons): each registration holds a reference to the caller's
//! `Float32Array`, so the memory cannot be collected while the GPU may copy from or into it; the instance's
//! finalizer (or `releasePinnedMemory()`) unregisters everything, then drops the references.

use std::mem::ManuallyDrop;
use std::sync::Mutex;

use napi::bindgen_prelude::{Float32Array, FromNapiValue, ToNapiValue};
use napi::{sys, Env};
use yolo_loss_cuda::{Backend, Device, HostPins, HostRange, Keepalive, PinStats, PinnedCall, Role};

/// The registrations of one instance; none for an instance on the CPU.
pub(crate) struct Pins(Option<Mutex<HostPins<JsKeep>>>);

impl Pins {
    /// For an instance that `device` put on `backend` (None: 'auto' holding both, whose CUDA side is `cuda:0`).
    pub(crate) fn new(device: Device, backend: Option<Backend>) -> Self {
        let ordinal = match (backend, device) {
            (Some(Backend::Cpu), _) => return Pins(None),
            (_, Device::Cuda(n)) => n,
            _ => 0,
        };
        Pins(HostPins::on_device(ordinal).map(Mutex::new))
    }

    fn lock(&self) -> Option<std::sync::MutexGuard<'_, HostPins<JsKeep>>> {
        Some(self.0.as_ref()?.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// On the JavaScript thread, before a call: offers the caller's prediction arrays `inputs` (registered when seen
    /// again) and `out` buffers (registered on first sight) and returns the ranges the call may copy from and into
    /// directly (none on the CPU). The lock is not held during the call: an asynchronous call runs later on the pool with this
    /// snapshot (its `out` stays alive through its own references; should a later call evict one meanwhile, copies
    /// into it simply become the driver's pageable copies).
    pub(crate) fn prepare(&self, env: &Env, inputs: &[&Float32Array], out: &[Float32Array]) -> PinnedCall {
        let Some(mut pins) = self.lock() else { return PinnedCall::default() };
        let buffers = inputs.iter().map(|&arr| (arr, Role::Input)).chain(out.iter().map(|arr| (arr, Role::Output)));
        for (arr, role) in buffers {
            pins.offer(HostRange::of(arr), role, || JsKeep::new(env, arr));
        }
        pins.prepare()
    }

    /// `releasePinnedMemory()`.
    pub(crate) fn release(&self) {
        if let Some(mut pins) = self.lock() {
            pins.release_all();
        }
    }

    pub(crate) fn stats(&self) -> PinStats {
        self.lock().map(|p| p.stats()).unwrap_or_default()
    }
}

/// A reference of our own to a caller's `Float32Array`: keeps its `ArrayBuffer` from being collected.
pub(crate) struct JsKeep {
    arr: Float32Array,
    env: sys::napi_env,
}

// SAFETY: the env is only used by `range`, which the cache calls from `prepare`, on the JavaScript thread; the
// reference itself may be dropped on any thread (napi-rs hands its deletion to the JavaScript thread).
unsafe impl Send for JsKeep {}

impl JsKeep {
    /// A second reference to the array behind `arr`, which napi-rs made from a JavaScript value (the call's argument
    /// conversion: it holds a reference of its own).
    fn new(env: &Env, arr: &Float32Array) -> Option<Self> {
        // napi-rs hands out the JavaScript value of such an array only through `&mut` (which merely reads the
        // reference it holds), and the caller's tensors are borrowed shared by the call's packing: a bitwise copy,
        // never dropped (its drop would delete the reference the original still owns), lends it that `&mut`.
        // SAFETY: reads `arr`'s fields; the copy only lives here and is never dropped.
        let mut copy = ManuallyDrop::new(unsafe { std::ptr::read(arr) });
        // SAFETY: on the JavaScript thread, inside the native call that received `arr`.
        let value = unsafe { <&mut Float32Array as ToNapiValue>::to_napi_value(env.raw(), &mut copy) }.ok()?;
        // SAFETY: as above; `value` is the typed array itself.
        let arr = unsafe { Float32Array::from_napi_value(env.raw(), value) }.ok()?;
        Some(JsKeep { arr, env: env.raw() })
    }
}

// SAFETY: the reference keeps the typed array, and so its ArrayBuffer, from being collected; its memory stays where
// it is unless the buffer is detached (transferred), which `range` then reports (length 0), so the cache drops the
// registration before the next call copies anything.
unsafe impl Keepalive for JsKeep {
    fn range(&mut self) -> Option<HostRange> {
        // SAFETY: called on the JavaScript thread (see `Send` above); reads the array's current data pointer and
        // length through our reference.
        unsafe {
            let value = <&mut Float32Array as ToNapiValue>::to_napi_value(self.env, &mut self.arr).ok()?;
            let (mut kind, mut len, mut data) = (0, 0usize, std::ptr::null_mut());
            let (mut buffer, mut offset) = (std::ptr::null_mut(), 0usize);
            let status = sys::napi_get_typedarray_info(
                self.env,
                value,
                &mut kind,
                &mut len,
                &mut data,
                &mut buffer,
                &mut offset,
            );
            (status == sys::Status::napi_ok && !data.is_null() && len > 0)
                .then(|| HostRange { addr: data as usize, bytes: len * std::mem::size_of::<f32>() })
        }
    }
}

/// What `pinnedMemory()` returns.
#[napi_derive::napi(object)]
pub struct NativePinnedMemory {
    /// Buffers page-locked now, and their bytes.
    pub buffers: f64,
    pub bytes: f64,
    /// Buffers locked and unlocked over the instance's life; lock attempts the driver refused.
    pub registrations: f64,
    pub releases: f64,
    pub refusals: f64,
}

impl From<PinStats> for NativePinnedMemory {
    fn from(s: PinStats) -> Self {
        NativePinnedMemory {
            buffers: s.buffers as f64,
            bytes: s.bytes as f64,
            registrations: s.registrations as f64,
            releases: s.releases as f64,
            refusals: s.refusals as f64,
        }
    }
}
