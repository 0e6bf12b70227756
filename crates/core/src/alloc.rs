//! Allocation of the large gradient outputs.
//!
//! A gradient is as large as the predictions (77 MB at B=16, 640×640, nc=80) and is fresh on every
//! call (it is handed to JavaScript). With 4 KiB pages its first touch costs ~19 000 page faults,
//! which cost more than the arithmetic; asking for transparent huge pages (where the kernel is in
//! `madvise` mode, the common default) cuts that to a few dozen.

/// A zero-filled vector; large ones are backed by huge pages where the OS allows it.
pub fn zeroed<F: Copy + Default>(len: usize) -> Vec<F> {
    let mut v = vec![F::default(); len];
    // SAFETY: the range is the vector's own, untouched, zero-filled memory.
    unsafe { advise_huge_pages(v.as_mut_ptr().cast(), std::mem::size_of_val(v.as_slice())) };
    v
}

/// Asks the kernel to back the 2 MiB-aligned interior of `[start, start + bytes)` with transparent huge
/// pages, for buffers of 8 MiB and more (a no-op elsewhere, and where the kernel refuses). Used for our
/// own gradients and by the binding for the V8-owned buffers it hands to JavaScript.
///
/// # Safety
/// The range must be memory the caller owns (allocated, not shared with code that relies on its page
/// layout). MADV_HUGEPAGE only changes how the kernel backs the pages; the contents stay as they are.
pub unsafe fn advise_huge_pages(start: *mut u8, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        if bytes < 4 * HUGE {
            return;
        }
        let start = start as usize;
        let first = (start + HUGE - 1) & !(HUGE - 1);
        let end = (start + bytes) & !(HUGE - 1);
        if end > first {
            // SAFETY: inside the caller's range (see above); failure is harmless, so the result is ignored.
            unsafe {
                libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (start, bytes);
}
