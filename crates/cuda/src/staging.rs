//! Large host↔device copies through pinned (page-locked) staging buffers of our own.
//!
//! Callers hand us pageable memory (a Float32Array's backing store, a `Vec`). A plain copy from pageable memory is
//! staged by the driver through small internal buffers, one piece after the other, with the CPU copy and the DMA
//! never overlapping. Here a large copy goes in chunks through two pinned buffers: while the DMA engine moves
//! chunk i, several CPU threads copy chunk i + 1 into the other buffer (one thread alone copies slower than PCIe
//! moves data). Copies below [`MIN_STAGED_BYTES`] keep the plain path: they are latency-bound, not bandwidth-bound.
//!
//! The buffers are allocated on the first large copy and kept for the life of the process (2 × [`CHUNK`] bytes).
//! If pinned memory cannot be had, copies fall back to the plain path for good.

use std::sync::Mutex;

use cudarc::driver::{result, sys, CudaEvent, CudaStream, DriverError};
use rayon::prelude::*;

/// Bytes per chunk: large enough that a DMA's fixed cost is small, small enough that the pipeline fills quickly.
const CHUNK: usize = 4 << 20;
const SLOTS: usize = 2;
/// Copies of at least this many bytes go through the staging buffers.
pub(crate) const MIN_STAGED_BYTES: usize = 2 * CHUNK;
/// Pieces of a chunk that CPU threads copy in parallel.
const PIECE: usize = 512 << 10;

struct Slot {
    host: *mut u8,
    /// Recorded after the DMA that last used `host`: the buffer is free once it has completed.
    done: CudaEvent,
}

// SAFETY: `host` is pinned memory owned by the slot alone; it is only touched under `Staging`'s mutex.
unsafe impl Send for Slot {}

impl Drop for Slot {
    fn drop(&mut self) {
        // A DMA may still read or write the buffer: wait before freeing it. Errors cannot be reported from here.
        let _ = self.done.synchronize();
        // SAFETY: `host` came from malloc_host and is freed once.
        let _ = unsafe { result::free_host(self.host as *mut std::ffi::c_void) };
    }
}

/// The pinned buffers, created on first use. `None` inside: not tried yet; an empty `Vec`: unavailable.
#[derive(Default)]
pub(crate) struct Staging {
    slots: Mutex<Option<Vec<Slot>>>,
}

fn driver<T>(what: &str, r: std::result::Result<T, DriverError>) -> yolo_loss_core::Result<T> {
    r.map_err(|e| crate::errors::driver(what, e))
}

/// dst ← src with several threads for large chunks.
fn parallel_copy(src: &[u8], dst: &mut [u8]) {
    if src.len() <= PIECE {
        dst.copy_from_slice(src);
    } else {
        dst.par_chunks_mut(PIECE).zip(src.par_chunks(PIECE)).for_each(|(d, s)| d.copy_from_slice(s));
    }
}

impl Staging {
    fn with_slots<R>(
        &self,
        stream: &CudaStream,
        f: impl FnOnce(&mut [Slot]) -> yolo_loss_core::Result<R>,
    ) -> Option<yolo_loss_core::Result<R>> {
        let mut guard = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slots = guard.get_or_insert_with(|| Self::allocate(stream).unwrap_or_default());
        if slots.is_empty() {
            return None;
        }
        Some(f(slots))
    }

    fn allocate(stream: &CudaStream) -> std::result::Result<Vec<Slot>, DriverError> {
        let ctx = stream.context();
        ctx.bind_to_thread()?;
        (0..SLOTS)
            .map(|_| {
                let done = ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING))?;
                // SAFETY: a plain pinned allocation (no flags: cached, so that the CPU reads back downloads fast).
                let host = unsafe { result::malloc_host(CHUNK, 0) }? as *mut u8;
                Ok(Slot { host, done })
            })
            .collect()
    }

    /// Copies `src` to device address `dst` (enqueued on `stream`; `src` may be reused when this returns).
    /// `None`: no staging buffers, use the plain copy.
    pub(crate) fn htod(
        &self,
        stream: &CudaStream,
        what: &str,
        dst: u64,
        src: &[u8],
    ) -> Option<yolo_loss_core::Result<()>> {
        self.with_slots(stream, |slots| {
            driver("binding the CUDA context", stream.context().bind_to_thread())?;
            for (i, chunk) in src.chunks(CHUNK).enumerate() {
                let slot = &mut slots[i % SLOTS];
                driver("waiting for a staging buffer", slot.done.synchronize())?;
                // SAFETY: the slot's buffer holds CHUNK ≥ chunk.len() bytes, and no DMA uses it (waited above).
                let host = unsafe { std::slice::from_raw_parts_mut(slot.host, chunk.len()) };
                parallel_copy(chunk, host);
                // SAFETY: the destination range lies in the caller's device buffer (dst + src.len() bytes); the
                // source stays untouched until `done` has passed (checked before the next write to it).
                driver(&format!("copying {what} to the GPU"), unsafe {
                    result::memcpy_htod_async(dst + (i * CHUNK) as u64, host, stream.cu_stream())
                })?;
                driver("recording a copy event", slot.done.record(stream))?;
            }
            Ok(())
        })
    }

    /// Copies `dst.len()` bytes from device address `src` into `dst`, after everything queued before on `stream`.
    /// `None`: no staging buffers, use the plain copy.
    pub(crate) fn dtoh(
        &self,
        stream: &CudaStream,
        what: &str,
        src: u64,
        dst: &mut [u8],
    ) -> Option<yolo_loss_core::Result<()>> {
        self.with_slots(stream, |slots| {
            driver("binding the CUDA context", stream.context().bind_to_thread())?;
            let chunks = dst.len().div_ceil(CHUNK);
            let total = dst.len();
            let len_of = |j: usize| CHUNK.min(total - j * CHUNK);
            let issue = |slots: &mut [Slot], j: usize| -> yolo_loss_core::Result<()> {
                let slot = &mut slots[j % SLOTS];
                // SAFETY: the slot's buffer holds CHUNK bytes, and the CPU finished reading it (issue order below).
                let host = unsafe { std::slice::from_raw_parts_mut(slot.host, len_of(j)) };
                // SAFETY: the source range lies in the device buffer (src + dst.len() bytes).
                driver(&format!("copying {what} from the GPU"), unsafe {
                    result::memcpy_dtoh_async(host, src + (j * CHUNK) as u64, stream.cu_stream())
                })?;
                driver("recording a copy event", slot.done.record(stream))
            };
            for j in 0..chunks.min(SLOTS) {
                issue(slots, j)?;
            }
            for j in 0..chunks {
                {
                    let slot = &slots[j % SLOTS];
                    driver("waiting for the GPU", slot.done.synchronize())?;
                    // SAFETY: the DMA into this buffer has completed (event above); len_of(j) ≤ CHUNK bytes.
                    let host = unsafe { std::slice::from_raw_parts(slot.host, len_of(j)) };
                    parallel_copy(host, &mut dst[j * CHUNK..j * CHUNK + len_of(j)]);
                }
                if j + SLOTS < chunks {
                    issue(slots, j + SLOTS)?;
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use cudarc::driver::DevicePtr;

    use crate::test_support::gpu_or_skip;

    /// Sizes around the chunk boundaries, staged and plain in both directions, against each other.
    #[test]
    fn staged_copies_round_trip_any_length() {
        let Some(gpu) = gpu_or_skip("staging::staged_copies_round_trip_any_length") else { return };
        for len in [super::MIN_STAGED_BYTES, 3 * super::CHUNK + 12_345, 9 * super::CHUNK - 1] {
            let host: Vec<u8> = (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
            let buf = gpu.zeros::<u8>("round trip", len).unwrap();
            let ptr = buf.device_ptr(gpu.stream()).0;
            for (up, down) in [(true, true), (true, false), (false, true)] {
                gpu.set_staged_copies(up);
                gpu.copy_htod("round trip", ptr, &host).unwrap();
                gpu.set_staged_copies(down);
                let mut back = vec![0u8; len];
                gpu.copy_dtoh("round trip", ptr, &mut back).unwrap();
                assert!(back == host, "length {len}, staged upload {up}, staged download {down}");
            }
            gpu.set_staged_copies(true);
        }
    }
}
