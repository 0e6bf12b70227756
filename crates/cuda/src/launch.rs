//! Host values as the kernels' parameter types.

use yolo_loss_core::{LossError, Result};

/// A size as the kernels' `int` parameter; `name` says which in the error.
pub(crate) fn int(name: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        LossError::invalid(format!("{name}: {v} is too large for the CUDA kernels (at most {})", i32::MAX))
    })
}
