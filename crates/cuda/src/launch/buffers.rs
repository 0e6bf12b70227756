//! Typed device buffers, on the GPU (cudarc's `CudaSlice<T>` and views of it) or, in tests, in host memory that
//! the emulated kernels address directly. A kernel parameter struct holds [`DevPtr<T>`]s, taken from a
//! [`DevBuf<T>`] or from a [`Part<T>`] of an [`Arena`] (several buffers in one allocation: one cudaMalloc and one
//! memset per call instead of one each), so that a `float*` field can only be filled from a buffer of `f32`s.

use std::marker::PhantomData;
use std::ops::Range;

use cudarc::driver::{result, CudaSlice, DevicePtr, DeviceRepr, ValidAsZeroBits};
use yolo_loss_core::{ErrorCode, LossError, Result};

use super::Dev;
use crate::errors;

/// What a device buffer may hold: plain numbers (any byte pattern is some value, all-zero bytes are zero).
pub(crate) trait Elem: DeviceRepr + ValidAsZeroBits + Copy {}
impl<T: DeviceRepr + ValidAsZeroBits + Copy> Elem for T {}

/// The device address of a buffer of `T`s, as a kernel parameter field (`T*` in C; null by default: a pointer
/// that a launch does not use).
#[repr(transparent)]
#[derive(Debug)]
pub(crate) struct DevPtr<T> {
    addr: u64,
    _elem: PhantomData<fn() -> T>,
}

impl<T> Clone for DevPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for DevPtr<T> {}
impl<T> Default for DevPtr<T> {
    fn default() -> Self {
        DevPtr { addr: 0, _elem: PhantomData }
    }
}

impl<T> DevPtr<T> {
    fn new(addr: u64) -> Self {
        DevPtr { addr, _elem: PhantomData }
    }
}

/// `len` values of `T` on a device, freed on drop.
pub(crate) struct DevBuf<T: Elem> {
    dev: Dev,
    mem: Mem<T>,
    len: usize,
}

enum Mem<T: Elem> {
    /// At least one element (the driver allocates no empty buffers).
    Gpu(CudaSlice<T>),
    #[cfg(all(test, yolo_cuda_emulator))]
    Host(HostMem<T>),
}

/// Zeroed host memory that emulated kernels write through raw pointers (so not a `Vec` we hold references into).
#[cfg(all(test, yolo_cuda_emulator))]
struct HostMem<T> {
    ptr: *mut T,
    len: usize,
}

#[cfg(all(test, yolo_cuda_emulator))]
impl<T: Elem> HostMem<T> {
    fn zeroed(len: usize) -> Self {
        // SAFETY: Elem types are valid as all-zero bytes.
        let v: Box<[T]> = (0..len.max(1)).map(|_| unsafe { std::mem::zeroed() }).collect();
        HostMem { len: v.len(), ptr: Box::into_raw(v) as *mut T }
    }
}

#[cfg(all(test, yolo_cuda_emulator))]
impl<T> Drop for HostMem<T> {
    fn drop(&mut self) {
        // SAFETY: ptr and len are those of the boxed slice made in `zeroed`, freed once.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr, self.len)) });
    }
}

/// A borrowed range of `T`s of a device buffer (all of a [`DevBuf`], or one [`Part`] of an [`Arena`]).
#[derive(Clone, Copy)]
pub(crate) struct View<'a, T> {
    dev: Dev,
    ptr: DevPtr<T>,
    len: usize,
    _owner: PhantomData<&'a T>,
}

fn as_bytes<T: Elem>(v: &[T]) -> &[u8] {
    // SAFETY: Elem values are plain numbers; any byte view of them is valid to read.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

fn as_bytes_mut<T: Elem>(v: &mut [T]) -> &mut [u8] {
    // SAFETY: as above, and every byte pattern is a valid Elem value, so any bytes written leave valid values.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, std::mem::size_of_val(v)) }
}

impl Dev {
    /// `len` values of `T`, uninitialised on the GPU (every kernel writes what it later reads). In debug builds
    /// every byte is 0xFF (NaN as f32), so that an element a kernel fails to write shows up in the tests.
    pub fn alloc<T: Elem>(&self, what: &str, len: usize) -> Result<DevBuf<T>> {
        let buf = self.alloc_uninit(what, len)?;
        if cfg!(debug_assertions) {
            buf.fill_bytes(0xFF)?;
        }
        Ok(buf)
    }

    /// A device copy of `host`.
    pub fn upload<T: Elem>(&self, what: &str, host: &[T]) -> Result<DevBuf<T>> {
        let buf = self.alloc_uninit(what, host.len())?;
        match self {
            // The destination is the buffer's own allocation, host.len() values long.
            Dev::Gpu(gpu) if !host.is_empty() => gpu.copy_htod(what, buf.ptr().addr, as_bytes(host))?,
            Dev::Gpu(_) => {}
            #[cfg(all(test, yolo_cuda_emulator))]
            // SAFETY: the host buffer holds at least host.len() values.
            Dev::Emu => unsafe { std::ptr::copy_nonoverlapping(host.as_ptr(), buf.ptr().addr as *mut T, host.len()) },
        }
        Ok(buf)
    }

    /// The buffers of `layout` in one allocation: its zeroed parts zero, the others as [`Dev::alloc`].
    pub fn arena(&self, what: &str, layout: &ArenaLayout) -> Result<Arena> {
        let zeroed = layout.zeroed.next_multiple_of(PART_ALIGN);
        let bytes = self.alloc_uninit::<u8>(what, zeroed + layout.other)?;
        bytes.fill_range(0..zeroed, 0)?;
        if cfg!(debug_assertions) {
            bytes.fill_range(zeroed..zeroed + layout.other, 0xFF)?;
        }
        Ok(Arena { bytes, zeroed })
    }

    fn alloc_uninit<T: Elem>(&self, what: &str, len: usize) -> Result<DevBuf<T>> {
        let mem = match self {
            Dev::Gpu(gpu) => {
                let bytes = len.saturating_mul(std::mem::size_of::<T>());
                // SAFETY: callers either fill the buffer before any kernel reads it, or only read what kernels wrote.
                let slice =
                    unsafe { gpu.stream().alloc::<T>(len.max(1)) }.map_err(|e| errors::alloc(what, bytes, e))?;
                Mem::Gpu(slice)
            }
            #[cfg(all(test, yolo_cuda_emulator))]
            Dev::Emu => Mem::Host(HostMem::zeroed(len)),
        };
        Ok(DevBuf { dev: *self, mem, len })
    }
}

impl<T: Elem> DevBuf<T> {
    /// The device address of element 0.
    pub fn ptr(&self) -> DevPtr<T> {
        match &self.mem {
            // Event tracking is off (gpu.rs), so the guard `device_ptr` returns records nothing.
            Mem::Gpu(s) => DevPtr::new(s.device_ptr(s.stream()).0),
            #[cfg(all(test, yolo_cuda_emulator))]
            Mem::Host(h) => DevPtr::new(h.ptr as u64),
        }
    }

    pub fn view(&self) -> View<'_, T> {
        View { dev: self.dev, ptr: self.ptr(), len: self.len, _owner: PhantomData }
    }

    /// Elements `range` (within the buffer: a cudarc view of the slice on the GPU).
    pub fn slice(&self, range: Range<usize>) -> View<'_, T> {
        assert!(range.start <= range.end && range.end <= self.len, "a view past the end of its buffer");
        let ptr = match &self.mem {
            Mem::Gpu(s) => {
                let view = s.slice(range.clone());
                let (addr, _unrecorded) = view.device_ptr(s.stream());
                DevPtr::new(addr)
            }
            #[cfg(all(test, yolo_cuda_emulator))]
            Mem::Host(h) => DevPtr::new(h.ptr.wrapping_add(range.start) as u64),
        };
        View { dev: self.dev, ptr, len: range.len(), _owner: PhantomData }
    }

    /// Sets every byte to `byte` (queued on the stream on the GPU).
    fn fill_bytes(&self, byte: u8) -> Result<()> {
        self.fill_range(0..self.len * std::mem::size_of::<T>(), byte)
    }

    /// Sets the bytes `range` of the buffer to `byte`.
    fn fill_range(&self, range: Range<usize>, byte: u8) -> Result<()> {
        let (start, bytes) = (range.start as u64, range.len());
        if bytes == 0 {
            return Ok(());
        }
        match &self.mem {
            Mem::Gpu(s) => {
                // A raw driver call: make the context current on this thread first (cudarc's own calls do).
                s.context().bind_to_thread().map_err(|e| errors::driver("binding the CUDA context", e))?;
                // SAFETY: the range is the buffer's own allocation; the stream orders it with the kernels.
                unsafe { result::memset_d8_async(self.ptr().addr + start, byte, bytes, s.stream().cu_stream()) }
                    .map_err(|e| errors::driver("clearing a work buffer", e))
            }
            #[cfg(all(test, yolo_cuda_emulator))]
            Mem::Host(h) => {
                // SAFETY: the range lies in the host buffer (callers' ranges); no kernel runs meanwhile (emulated launches return
                // when done).
                unsafe { std::ptr::write_bytes((h.ptr as *mut u8).add(range.start), byte, bytes) };
                Ok(())
            }
        }
    }
}

impl<T: Elem> View<'_, T> {
    pub fn ptr(&self) -> DevPtr<T> {
        self.ptr
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Copies the view into `out` (as long as it), after everything queued before; waits for the copy.
    pub fn download(&self, what: &str, out: &mut [T]) -> Result<()> {
        if out.len() != self.len {
            return Err(LossError::new(
                ErrorCode::Internal,
                format!("download of {what}: {} values into a buffer of {}", self.len, out.len()),
            ));
        }
        if out.is_empty() {
            return Ok(());
        }
        match self.dev {
            Dev::Gpu(gpu) => gpu.copy_dtoh(what, self.ptr.addr, as_bytes_mut(out)),
            #[cfg(all(test, yolo_cuda_emulator))]
            Dev::Emu => {
                // SAFETY: the view borrows a live host buffer of at least `len` values.
                unsafe { std::ptr::copy_nonoverlapping(self.ptr.addr as *const T, out.as_mut_ptr(), self.len) };
                Ok(())
            }
        }
    }
}

/// Where the buffers of an [`Arena`] lie: each part is the next aligned range of one of two sections, the zeroed
/// one (for buffers that kernels accumulate into) and the other one (for buffers that kernels write first).
#[derive(Debug, Default)]
pub(crate) struct ArenaLayout {
    zeroed: usize,
    other: usize,
}

/// One buffer of `len` values of `T` in an arena; only meaningful with an arena of the layout that made it.
#[derive(Debug)]
pub(crate) struct Part<T> {
    zeroed: bool,
    /// Byte offset in its section.
    start: usize,
    len: usize,
    _elem: PhantomData<fn() -> T>,
}

impl<T> Clone for Part<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Part<T> {}

/// Every part starts at a multiple of this many bytes (the driver's own allocation alignment), so that each is
/// aligned for any element type and its accesses coalesce as in a buffer of its own.
const PART_ALIGN: usize = 256;

impl ArenaLayout {
    /// A part that is all zeros when the arena is made.
    pub fn zeroed<T: Elem>(&mut self, len: usize) -> Part<T> {
        Self::take(&mut self.zeroed, true, len)
    }

    /// A part left uninitialised (debug builds: 0xFF bytes, see [`Dev::alloc`]).
    pub fn part<T: Elem>(&mut self, len: usize) -> Part<T> {
        Self::take(&mut self.other, false, len)
    }

    fn take<T: Elem>(section: &mut usize, zeroed: bool, len: usize) -> Part<T> {
        let start = section.next_multiple_of(PART_ALIGN);
        *section = start + len * std::mem::size_of::<T>();
        Part { zeroed, start, len, _elem: PhantomData }
    }
}

/// Several typed buffers in one device allocation (the zeroed section first), addressed by the [`Part`]s of its
/// layout.
pub(crate) struct Arena {
    bytes: DevBuf<u8>,
    /// Bytes of the zeroed section (aligned): where the other section starts.
    zeroed: usize,
}

impl Arena {
    /// The part as a typed view: on the GPU a cudarc view of the allocation's bytes, reinterpreted as `T`s.
    pub fn view<T: Elem>(&self, part: Part<T>) -> View<'_, T> {
        let start = if part.zeroed { part.start } else { self.zeroed + part.start };
        let ptr = match &self.bytes.mem {
            Mem::Gpu(s) => {
                let bytes = s.slice(start..start + part.len * std::mem::size_of::<T>());
                // SAFETY: the range holds exactly part.len values of T at an alignment of PART_ALIGN, and Elem
                // types are valid for any bytes.
                let typed = unsafe { bytes.transmute::<T>(part.len) }.expect("a part's bytes hold its values");
                let (addr, _unrecorded) = typed.device_ptr(s.stream());
                DevPtr::new(addr)
            }
            #[cfg(all(test, yolo_cuda_emulator))]
            Mem::Host(_) => DevPtr::new(self.bytes.ptr().addr + start as u64),
        };
        View { dev: self.bytes.dev, ptr, len: part.len, _owner: PhantomData }
    }

    pub fn ptr<T: Elem>(&self, part: Part<T>) -> DevPtr<T> {
        self.view(part).ptr
    }
}
