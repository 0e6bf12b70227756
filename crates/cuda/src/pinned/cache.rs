//! One loss instance's registered buffers and the policy that decides which (see the module comment of pinned.rs).

use std::collections::VecDeque;

use super::{Driver, HostRange, Keepalive, PinnedCall, Registrar, Role};
use crate::gpu::{opened_gpu, Gpu};

/// Buffers smaller than this are never registered: their copies are latency-bound, and registering costs more.
pub const MIN_PIN_BYTES: usize = 1 << 20;
/// Most bytes one instance keeps registered (page-locked memory is taken from what the OS can page; 1 GiB holds the
/// predictions and gradients of several B=16, 640² detection heads).
pub const PIN_BUDGET_BYTES: usize = 1 << 30;
/// How many input ranges seen once (and refused ones) an instance remembers.
const REMEMBERED: usize = 64;

/// What [`HostPins::offer`] did with a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Registered before: used as it is.
    Cached,
    /// Registered now.
    Registered,
    /// An input seen for the first time: remembered, not registered.
    FirstSighting,
    /// Not registered: below [`MIN_PIN_BYTES`], over the budget (after evicting what this call does not use), sharing
    /// memory with a registered buffer, refused by the driver (now or before), or no keepalive to be had.
    Skipped,
}

/// Counters of one instance, for introspection and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PinStats {
    /// Buffers registered now, and their bytes.
    pub buffers: usize,
    pub bytes: usize,
    /// Registrations made and released over the instance's life; registrations refused.
    pub registrations: u64,
    pub releases: u64,
    pub refusals: u64,
}

struct Entry<K> {
    range: HostRange,
    /// Dropped only after the range is released (see `HostPins::release`).
    keep: K,
    /// The call that last used it.
    last_call: u64,
}

/// The registered buffers of one loss instance and its policy: offer a call's buffers ([`HostPins::offer`]), then
/// [`HostPins::prepare`] the call, which checks them and returns the ranges its copies may use directly. Everything
/// still registered is released when this is dropped (the binding: when the JavaScript instance is collected) or
/// by [`HostPins::release_all`].
pub struct HostPins<K: Keepalive, R: Registrar = Driver> {
    registrar: R,
    /// Where the call's copies run (None: nowhere to wait for, the tests' fake registrar).
    gpu: Option<&'static Gpu>,
    budget: usize,
    entries: Vec<Entry<K>>,
    seen: VecDeque<HostRange>,
    refused: VecDeque<HostRange>,
    /// The call being offered buffers (incremented by `prepare`).
    call: u64,
    stats: PinStats,
}

impl<K: Keepalive> HostPins<K> {
    /// The cache of an instance on `cuda:<ordinal>`; None unless that device is open (the instance runs there).
    pub fn on_device(ordinal: usize) -> Option<Self> {
        let gpu = opened_gpu(ordinal)?;
        Some(Self::with_registrar(Driver, Some(gpu), PIN_BUDGET_BYTES))
    }
}

impl<K: Keepalive, R: Registrar> HostPins<K, R> {
    pub(crate) fn with_registrar(registrar: R, gpu: Option<&'static Gpu>, budget: usize) -> Self {
        HostPins {
            registrar,
            gpu,
            budget,
            entries: Vec::new(),
            seen: VecDeque::new(),
            refused: VecDeque::new(),
            call: 0,
            stats: PinStats::default(),
        }
    }

    /// A buffer of the coming call and how it is used. `keep` makes its keepalive token, asked for only when the
    /// buffer is to be registered now.
    pub fn offer(&mut self, range: HostRange, role: Role, keep: impl FnOnce() -> Option<K>) -> Offer {
        if let Some(e) = self.entries.iter_mut().find(|e| e.range == range) {
            e.last_call = self.call;
            return Offer::Cached;
        }
        if range.bytes < MIN_PIN_BYTES
            || range.bytes > self.budget
            || self.refused.contains(&range)
            || self.entries.iter().any(|e| e.range.overlaps(&range))
        {
            return Offer::Skipped;
        }
        if role == Role::Input && !self.seen.contains(&range) {
            remember(&mut self.seen, range);
            return Offer::FirstSighting;
        }
        if !self.make_room(range.bytes) {
            return Offer::Skipped;
        }
        let Some(mut keep) = keep() else { return Offer::Skipped };
        if keep.range() != Some(range) {
            return Offer::Skipped;
        }
        self.seen.retain(|r| *r != range);
        if !self.registrar.acquire(range) {
            self.stats.refusals += 1;
            remember(&mut self.refused, range);
            return Offer::Skipped;
        }
        self.stats.registrations += 1;
        self.entries.push(Entry { range, keep, last_call: self.call });
        Offer::Registered
    }

    /// Evicts least recently used buffers that the coming call does not use until `bytes` more fit the budget;
    /// false if they cannot.
    fn make_room(&mut self, bytes: usize) -> bool {
        let evictable: usize =
            self.entries.iter().filter(|e| e.last_call != self.call).map(|e| e.range.bytes).sum::<usize>();
        if self.pinned_bytes() - evictable + bytes > self.budget {
            return false;
        }
        while self.pinned_bytes() + bytes > self.budget {
            let lru = (0..self.entries.len())
                .filter(|&i| self.entries[i].last_call != self.call)
                .min_by_key(|&i| self.entries[i].last_call)
                .expect("the evictable bytes cover the excess");
            self.release(lru);
        }
        true
    }

    fn pinned_bytes(&self) -> usize {
        self.entries.iter().map(|e| e.range.bytes).sum()
    }

    /// Ends the offers of a call: drops every registration whose memory is no longer where it was registered (a
    /// detached `ArrayBuffer`), and returns the ranges of this call's buffers that stay registered.
    pub fn prepare(&mut self) -> PinnedCall {
        let mut i = 0;
        while i < self.entries.len() {
            let e = &mut self.entries[i];
            if e.keep.range() == Some(e.range) {
                i += 1;
            } else {
                self.release(i);
            }
        }
        let ranges = self.entries.iter().filter(|e| e.last_call == self.call).map(|e| e.range).collect();
        self.call += 1;
        PinnedCall::new(ranges, self.gpu)
    }

    /// Releases every registration (the binding's `releasePinnedMemory()`); later calls register anew.
    pub fn release_all(&mut self) {
        while !self.entries.is_empty() {
            self.release(self.entries.len() - 1);
        }
        self.seen.clear();
        self.refused.clear();
    }

    pub fn stats(&self) -> PinStats {
        PinStats { buffers: self.entries.len(), bytes: self.pinned_bytes(), ..self.stats }
    }

    /// Unregisters entry `i` (the registrar waits for queued copies), then drops its keepalive token: in this
    /// order, so the memory outlives its registration.
    fn release(&mut self, i: usize) {
        let e = self.entries.swap_remove(i);
        self.registrar.release(e.range);
        self.stats.releases += 1;
        drop(e.keep);
    }
}

impl<K: Keepalive, R: Registrar> Drop for HostPins<K, R> {
    fn drop(&mut self) {
        self.release_all();
    }
}

fn remember(list: &mut VecDeque<HostRange>, range: HostRange) {
    if list.len() == REMEMBERED {
        list.pop_front();
    }
    list.push_back(range);
}
