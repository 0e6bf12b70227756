//! Allocation of the large gradient outputs.
//!
//! A gradient is as large as the predictions (77 MB at B=16, 640×640, nc=80) and is fresh on every
//! call (it is handed to JavaScript). With 4 KiB pages its first touch costs ~19 000 page faults,
//! which cost more than the arithmetic; asking for transparent huge pages (where the kernel is in
//! `madvise` mode, the common default) cuts that to a few dozen.

/// A zero-filled vector; large ones are backed by huge pages where the OS allows it.
pub fn zeroed<F: Copy + Default>(len: usize) -> Vec<F> {
    let v = vec![F::default(); len];
    #[cfg(target_os = "linux")]
    advise_huge_pages(&v);
    v
}

#[cfg(target_os = "linux")]
fn advise_huge_pages<T>(v: &[T]) {
    const HUGE: usize = 2 << 20;
    let bytes = std::mem::size_of_val(v);
    if bytes < 4 * HUGE {
        return;
    }
    let start = v.as_ptr() as usize;
    let first = (start + HUGE - 1) & !(HUGE - 1);
    let end = (start + bytes) & !(HUGE - 1);
    if end > first {
        // SAFETY: the range lies inside memory this vector owns; MADV_HUGEPAGE only changes how the
        // kernel backs it (contents stay zero), and failure is harmless, so the result is ignored.
        unsafe {
            libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
        }
    }
}
