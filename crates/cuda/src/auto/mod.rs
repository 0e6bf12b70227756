//! `device: 'auto'` with a usable GPU: the instance holds both backends and, per shape key, runs the faster one.
//!
//! A GPU is not always faster: for small batches the per-call cost of uploads, launches and downloads exceeds the
//! work, and a many-core CPU can beat the GPU path end to end from host arrays even on large batches. Which one wins
//! depends on the shapes and on the machine, so [`AutoLoss`] measures instead of guessing: the first calls of each
//! shape key ([`ShapeKey`]: prediction shapes, label-count bucket) alternate between the backends, timed wall-clock
//! around the whole call, [`PROBES`](race::PROBES) each; then the faster one ([`race`] has the rule) runs every later
//! call of that key. Up to [`KEYS`] keys are remembered per instance (the least recently used is forgotten, and
//! probed again if it comes back).
//!
//! Both backends agree within the fixtures' tolerance but not to the bit, so during the probe of a key the bits of
//! its results depend on which backend ran; after it they are those of the chosen backend, every call. Fixed bits
//! from the first call on: `device: 'cpu'` or `'cuda'`.
//!
//! Thread safety: calls may come from several threads at once (the binding's async forms run on the libuv pool).
//! The table of keys is behind a mutex held only to look a key up and to record a time, never during a call, so
//! calls run concurrently and nothing waits on another call; a poisoned lock is taken over (its data is a cache of
//! timings, valid whatever happened). Concurrent calls of a key during its probe may time the same backend more
//! than its share; their reports all count, and the decision still waits for both backends' probes.

mod key;
mod race;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use yolo_loss_core::{ErrorCode, Result};

use crate::backend::Backend;
pub use key::ShapeKey;
use race::Race;

/// Shape keys remembered per instance: enough for multi-scale training (a few dozen image sizes times a few label
/// buckets) at about 40 bytes each, and a linear lookup that stays well under a microsecond.
pub const KEYS: usize = 256;

/// How a probe call's measured wall-clock time counts in the race: [`measured`] in production; tests substitute a
/// fixed time per backend to steer the decision without a clock.
pub type Timing = fn(Backend, Duration) -> Duration;

/// The measured time itself.
pub fn measured(_: Backend, took: Duration) -> Duration {
    took
}

/// A task loss on both backends, each call on the one its shape key's race picks.
#[derive(Debug)]
pub struct AutoLoss<C, G> {
    cpu: C,
    cuda: G,
    races: Mutex<Races>,
    /// The backend the latest call started on: [`NO_CALL`] before the first, else [`code`] of it.
    last: AtomicU8,
    timing: Timing,
}

const NO_CALL: u8 = 0;

fn code(b: Backend) -> u8 {
    match b {
        Backend::Cpu => 1,
        Backend::Cuda => 2,
    }
}

impl<C, G> AutoLoss<C, G> {
    pub(crate) fn new(cpu: C, cuda: G, timing: Timing) -> Self {
        Self { cpu, cuda, races: Mutex::new(Races::new(KEYS)), last: AtomicU8::new(NO_CALL), timing }
    }

    pub fn cpu(&self) -> &C {
        &self.cpu
    }

    pub fn cuda(&self) -> &G {
        &self.cuda
    }

    /// The backend the latest call started on; None before the first call.
    pub fn last_backend(&self) -> Option<Backend> {
        match self.last.load(Ordering::Relaxed) {
            NO_CALL => None,
            c if c == code(Backend::Cpu) => Some(Backend::Cpu),
            _ => Some(Backend::Cuda),
        }
    }

    /// The backend chosen for calls of `key`; None while it is probed, or never seen (or forgotten).
    pub fn backend_for(&self, key: ShapeKey) -> Option<Backend> {
        self.races().get(key).and_then(Race::decided)
    }

    /// Runs `call` on the backend the race of `key` picks (passing it which). While the key is probed the call is
    /// timed and the time recorded; a failure of the backend itself (out of GPU memory, a CUDA error) is recorded
    /// as a probe without a time; bad input is not recorded (it says nothing about speed, and is refused alike by
    /// both backends).
    pub(crate) fn run_on<T>(&self, key: ShapeKey, call: impl FnOnce(Backend) -> Result<T>) -> Result<T> {
        // The guard is a temporary of this statement: the lock is released before the call.
        let race = *self.races().race(key);
        let backend = race.next();
        self.last.store(code(backend), Ordering::Relaxed);
        if race.decided().is_some() {
            return call(backend);
        }
        let start = Instant::now();
        let result = call(backend);
        let took = match &result {
            Ok(_) => Some((self.timing)(backend, start.elapsed())),
            Err(e) if is_bad_input(e.code) => return result,
            Err(_) => None,
        };
        self.races().record(key, backend, took);
        result
    }

    fn races(&self) -> MutexGuard<'_, Races> {
        self.races.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Errors about the caller's input, which both backends raise alike before any real work.
fn is_bad_input(code: ErrorCode) -> bool {
    match code {
        ErrorCode::ShapeMismatch | ErrorCode::LabelOutOfRange | ErrorCode::NonFinite | ErrorCode::InvalidArgument => {
            true
        }
        ErrorCode::CudaUnavailable | ErrorCode::CudaOutOfMemory | ErrorCode::Internal => false,
    }
}

/// A copy keeps the decisions made so far (a copy of the same loss runs the same shapes at the same speeds).
impl<C: Clone, G: Clone> Clone for AutoLoss<C, G> {
    fn clone(&self) -> Self {
        Self {
            cpu: self.cpu.clone(),
            cuda: self.cuda.clone(),
            races: Mutex::new(self.races().clone()),
            last: AtomicU8::new(self.last.load(Ordering::Relaxed)),
            timing: self.timing,
        }
    }
}

/// The races of the keys seen, at most `capacity`, the least recently used forgotten first.
#[derive(Debug, Clone)]
struct Races {
    entries: Vec<Entry>,
    capacity: usize,
    /// Counts lookups: an entry's `used` is the count at its latest one.
    tick: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    key: ShapeKey,
    race: Race,
    used: u64,
}

impl Races {
    fn new(capacity: usize) -> Self {
        Self { entries: Vec::new(), capacity, tick: 0 }
    }

    /// The race of `key`, marked as used; a new one if the key is not known, in place of the least recently used
    /// key when the table is full.
    fn race(&mut self, key: ShapeKey) -> &mut Race {
        self.tick += 1;
        let fresh = Entry { key, race: Race::default(), used: self.tick };
        let i = match self.entries.iter().position(|e| e.key == key) {
            Some(i) => i,
            None if self.entries.len() < self.capacity => {
                self.entries.push(fresh);
                self.entries.len() - 1
            }
            None => {
                let oldest = (0..self.entries.len()).min_by_key(|&i| self.entries[i].used).unwrap_or_default();
                self.entries[oldest] = fresh;
                oldest
            }
        };
        self.entries[i].used = self.tick;
        &mut self.entries[i].race
    }

    fn get(&self, key: ShapeKey) -> Option<&Race> {
        self.entries.iter().find(|e| e.key == key).map(|e| &e.race)
    }

    /// A probe's time for `key`; dropped if the key was forgotten meanwhile (its new race starts afresh).
    fn record(&mut self, key: ShapeKey, backend: Backend, took: Option<Duration>) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.key == key) {
            e.race.record(backend, took);
        }
    }
}
