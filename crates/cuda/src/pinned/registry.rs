//! The process-wide registrations: one per host range, counted by the instances that hold it (a range can be
//! registered only once per process, and two losses may well be handed the same buffer), and the two driver calls.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, OnceLock};

use cudarc::driver::sys;

use super::HostRange;
use crate::gpu::opened_gpus;

/// What a cache asks of the registrations: hold a range registered (`false`: it cannot be, copies stay staged) and
/// let it go again. Each successful `acquire` is matched by exactly one `release`.
pub trait Registrar {
    fn acquire(&self, range: HostRange) -> bool;
    fn release(&self, range: HostRange);
}

/// The driver's side of registering host memory (a fake one in the tests).
pub(crate) trait HostDriver {
    fn register(&self, range: HostRange) -> Result<(), String>;
    /// Only ranges that `register` accepted, once each, after `wait_idle`.
    fn unregister(&self, range: HostRange);
    /// Waits until no queued copy can still use registered memory.
    fn wait_idle(&self);
}

/// Registered ranges and how many holders each has.
pub(crate) struct Registry<D> {
    driver: D,
    held: Mutex<Vec<(HostRange, usize)>>,
}

/// The driver pins whole pages: two ranges that share a page cannot both be registered.
const PAGE: usize = 4096;

fn pages(r: &HostRange) -> HostRange {
    let start = r.addr / PAGE * PAGE;
    HostRange { addr: start, bytes: r.end().next_multiple_of(PAGE) - start }
}

impl<D: HostDriver> Registry<D> {
    pub(crate) fn new(driver: D) -> Self {
        Registry { driver, held: Mutex::new(Vec::new()) }
    }

    #[cfg(test)]
    pub(crate) fn driver(&self) -> &D {
        &self.driver
    }

    /// Ranges registered now (tests).
    #[cfg(test)]
    pub(crate) fn registered(&self) -> Vec<(HostRange, usize)> {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl<D: HostDriver> Registrar for Registry<D> {
    /// The same range again: one more holder. A range sharing a page with another registered one: refused (the
    /// driver would refuse it too). Otherwise registered; a driver error is a refusal.
    fn acquire(&self, range: HostRange) -> bool {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, holders)) = held.iter_mut().find(|(r, _)| *r == range) {
            *holders += 1;
            return true;
        }
        if held.iter().any(|(r, _)| pages(r).overlaps(&pages(&range))) {
            return false;
        }
        if self.driver.register(range).is_err() {
            return false;
        }
        held.push((range, 1));
        true
    }

    /// One holder less; the last one unregisters the range, once every queued copy is done. A range not held (a
    /// bug of the caller) is ignored rather than unregistered twice.
    fn release(&self, range: HostRange) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let Some(i) = held.iter().position(|(r, _)| *r == range) else { return };
        held[i].1 -= 1;
        if held[i].1 == 0 {
            held.swap_remove(i);
            self.driver.wait_idle();
            self.driver.unregister(range);
        }
    }
}

/// The CUDA driver: `cuMemHostRegister` / `cuMemHostUnregister` in the context of an opened device.
pub(crate) struct CudaHost;

/// cudarc panics on a driver symbol it cannot find; that must not cross into the caller (nor out of a finalizer).
fn no_panic<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| Err("the CUDA driver call panicked".into()))
}

impl HostDriver for CudaHost {
    fn register(&self, range: HostRange) -> Result<(), String> {
        no_panic(|| {
            // Any opened device's context will do: PORTABLE makes the range page-locked for every context.
            let gpu = opened_gpus().next().ok_or("no CUDA device is open")?;
            gpu.stream().context().bind_to_thread().map_err(|e| e.to_string())?;
            // SAFETY: the range is the caller's live memory (the cache holds its Keepalive token, which keeps it
            // allocated until after `unregister`); registering only pins its pages and changes none of its bytes.
            unsafe {
                sys::cuMemHostRegister_v2(
                    range.addr as *mut std::ffi::c_void,
                    range.bytes,
                    sys::CU_MEMHOSTREGISTER_PORTABLE,
                )
            }
            .result()
            .map_err(|e| e.to_string())
        })
    }

    fn unregister(&self, range: HostRange) {
        let _ = no_panic(|| {
            let gpu = opened_gpus().next().ok_or("no CUDA device is open")?;
            gpu.stream().context().bind_to_thread().map_err(|e| e.to_string())?;
            // SAFETY: `range` was registered by `register` and is unregistered once (Registry::release), after
            // wait_idle: no queued copy uses it. Its Keepalive token is dropped only after this returns.
            unsafe { sys::cuMemHostUnregister(range.addr as *mut std::ffi::c_void) }.result().map_err(|e| e.to_string())
        });
    }

    fn wait_idle(&self) {
        // Every copy of this crate runs on an opened device's one stream.
        for gpu in opened_gpus() {
            let _ = gpu.synchronize();
        }
    }
}

/// The registrations of this process (what [`Driver`] uses).
pub(crate) fn registry() -> &'static Registry<CudaHost> {
    static REGISTRY: OnceLock<Registry<CudaHost>> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry::new(CudaHost))
}

/// The registrar of real caches: the process-wide registrations on the CUDA driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct Driver;

impl Registrar for Driver {
    fn acquire(&self, range: HostRange) -> bool {
        registry().acquire(range)
    }

    fn release(&self, range: HostRange) {
        registry().release(range)
    }
}
