//! Caller-owned host buffers page-locked for direct DMA (`cuMemHostRegister`), cached per loss instance.
//!
//! A copy between pageable memory and the GPU goes through staging buffers (the driver's, or ours in staging.rs):
//! a CPU copy on top of every DMA. Memory that is page-locked ("registered") is copied by the DMA engine directly,
//! asynchronously, at the PCIe rate. Registering costs time (the kernel pins every page: milliseconds for the 77 MB
//! of a B=16, 640², nc=80 detection head), so it pays only for buffers a caller hands us again and again:
//!
//! * **Gradient outputs** (`valueAndGrad(preds, batch, { out })`): a caller passes `out` to reuse it every step, so
//!   it is registered the first time it is seen ([`Role::Output`]).
//! * **Prediction inputs**: often fresh arrays every step (registering those would cost more than it saves), so one
//!   is registered only when the same range (address and length) is seen a second time ([`Role::Input`]).
//! * Each instance keeps at most [`PIN_BUDGET_BYTES`] registered, evicting the least recently used buffer first;
//!   buffers below [`MIN_PIN_BYTES`] are never registered (their copies are latency-bound, not bandwidth-bound).
//!
//! Safety, the heart of it: a registered range must not be freed (or unmapped and mapped again) while registered,
//! or DMA reaches stale pages. So every registration holds a [`Keepalive`] token from the caller that keeps the
//! memory alive (the binding's: a reference to the JavaScript array), the registration is dropped before its token,
//! and a token also says where its memory is *now*, which is checked before each call (an `ArrayBuffer` can be
//! detached by a transfer: its registration is then dropped before the call copies anything). Unregistering waits
//! for every opened device's stream first, so no queued DMA still uses the range.
//!
//! Files: `cache.rs` the per-instance policy ([`HostPins`]), `registry.rs` the process-wide, reference-counted
//! registrations and the two driver calls, `call.rs` which ranges one call may copy asynchronously (and the wait at
//! its end).

mod cache;
mod call;
mod registry;
#[cfg(test)]
mod tests;

pub use cache::{HostPins, Offer, PinStats, MIN_PIN_BYTES, PIN_BUDGET_BYTES};
pub use call::PinnedCall;
pub(crate) use call::{route, Route};
pub use registry::{Driver, Registrar};
#[cfg(test)]
pub(crate) use registry::{HostDriver, Registry};

/// A range of host memory: `bytes` bytes from address `addr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostRange {
    pub addr: usize,
    pub bytes: usize,
}

impl HostRange {
    /// The bytes of `data`.
    pub fn of<T>(data: &[T]) -> Self {
        HostRange { addr: data.as_ptr() as usize, bytes: std::mem::size_of_val(data) }
    }

    pub fn end(&self) -> usize {
        self.addr + self.bytes
    }

    /// Whether the two share a byte.
    pub fn overlaps(&self, other: &HostRange) -> bool {
        self.addr < other.end() && other.addr < self.end()
    }

    /// Whether every byte of `inner` is in `self`.
    pub fn contains(&self, inner: &HostRange) -> bool {
        self.addr <= inner.addr && inner.end() <= self.end()
    }
}

/// How a buffer is used in a call, which decides when it is worth registering (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The caller's gradient buffer (`out`): registered on first sight.
    Output,
    /// A prediction tensor: registered on its second sighting.
    Input,
}

/// What keeps a registered buffer's memory alive: owned by the cache for as long as the registration lasts, and
/// dropped only after the range is unregistered.
///
/// # Safety
/// While the token lives and [`Keepalive::range`] returns the range it was offered for, that memory stays
/// allocated at that address (not freed, not unmapped).
pub unsafe trait Keepalive: Send {
    /// Where the kept memory is now; `None` when it is gone (a detached `ArrayBuffer`). Called before each call on
    /// the thread that makes the calls (the binding's: the JavaScript thread).
    fn range(&mut self) -> Option<HostRange>;
}
