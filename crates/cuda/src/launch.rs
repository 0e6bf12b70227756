//! Launch geometry shared by the launchers.

use cudarc::driver::{CudaSlice, LaunchArgs, LaunchConfig, PushKernelArg};
use yolo_loss_core::{LossError, Result};

/// Threads per block of every kernel; `yl::kBlockThreads` in cuda/common.cuh is the same number.
pub(crate) const BLOCK_THREADS: u32 = 256;

/// Most blocks a reduction kernel gets. Fixed (not derived from the GPU's size) so that the per-block partial
/// sums, and with them the rounding of the total, are the same on every GPU. 1024 blocks of 256 threads fill
/// any current GPU; the grid-stride loops cover larger inputs.
pub(crate) const MAX_REDUCTION_BLOCKS: u32 = 1024;

/// Most blocks an element-wise kernel gets (the rest is covered by its grid-stride loop).
const MAX_ELEMENTWISE_BLOCKS: u32 = 65_535;

/// Blocks for `n` work items, between 1 and `max` (0 items: 0 blocks, nothing to launch).
pub(crate) fn blocks(n: usize, max: u32) -> u32 {
    n.div_ceil(BLOCK_THREADS as usize).min(max as usize) as u32
}

pub(crate) fn config(blocks: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK_THREADS, 1, 1), shared_mem_bytes: 0 }
}

pub(crate) fn elementwise(n: usize) -> LaunchConfig {
    config(blocks(n, MAX_ELEMENTWISE_BLOCKS))
}

/// A size as the kernels' `int` parameter; `name` says which in the error.
pub(crate) fn int(name: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        LossError::invalid(format!("{name}: {v} is too large for the CUDA kernels (at most {})", i32::MAX))
    })
}

/// The kernels index with 64-bit integers; a count as their `int64_t` parameter.
pub(crate) fn int64(name: &str, v: usize) -> Result<i64> {
    i64::try_from(v).map_err(|_| LossError::invalid(format!("{name}: {v} is too large for the CUDA kernels")))
}

/// Pushes an optional output buffer: the buffer, or a null pointer (the kernels test for it and skip the output).
pub(crate) fn arg_or_null<'a>(launch: &mut LaunchArgs<'a>, buf: Option<&'a mut CudaSlice<f32>>) {
    static NULL: u64 = 0;
    match buf {
        Some(b) => launch.arg(b),
        None => launch.arg(&NULL),
    };
}
