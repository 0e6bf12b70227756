//! Borrowed, row-major tensors and the validation every public entry point runs on them.

use rayon::prelude::*;

use crate::error::{LossError, Result};
use crate::real::Real;

/// A read-only view of caller memory: `data.len() == shape.iter().product()`.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a, F> {
    pub data: &'a [F],
    pub shape: &'a [usize],
}

impl<'a, F: Real> TensorRef<'a, F> {
    pub fn new(data: &'a [F], shape: &'a [usize]) -> Self {
        Self { data, shape }
    }

    /// Checks that `data` holds exactly `product(shape)` values.
    pub fn check_len(&self, name: &str) -> Result<()> {
        let want: usize = self.shape.iter().product();
        if want != self.data.len() {
            return Err(LossError::shape(format!(
                "{name}: expected data of length {want} (product of shape {}), got {}",
                fmt_shape(self.shape),
                self.data.len()
            )));
        }
        Ok(())
    }

    /// Checks the rank and the length.
    pub fn check_rank(&self, name: &str, rank: usize, layout: &str) -> Result<()> {
        if self.shape.len() != rank {
            return Err(LossError::shape(format!(
                "{name}: expected a rank-{rank} tensor {layout}, got shape {}",
                fmt_shape(self.shape)
            )));
        }
        self.check_len(name)
    }

    /// Checks that every value is finite; names the first offending element.
    pub fn check_finite(&self, name: &str) -> Result<()> {
        if all_finite_parallel(self.data) {
            return Ok(());
        }
        if let Some(i) = self.data.iter().position(|v| !v.is_finite()) {
            return Err(LossError::non_finite(format!(
                "{name}: expected finite values, got {} at flat index {i} (index {})",
                self.data[i],
                fmt_index(self.shape, i)
            )));
        }
        Ok(())
    }
}

/// Elements per task of [`all_finite_parallel`]: 1 MiB of f32, enough to hide the cost of handing out a task,
/// small enough that two threads share a 5 MB tensor.
const FINITE_CHUNK: usize = 1 << 18;

/// Whether every value is finite, the chunks of a large tensor checked on every thread: the task losses check each
/// prediction tensor (up to 77 MB) before anything else, and one thread alone cannot read that at the memory's
/// speed (a third of a pose call was this check on one core).
pub fn all_finite_parallel<F: Real>(x: &[F]) -> bool {
    if x.len() <= FINITE_CHUNK {
        return F::all_finite(x);
    }
    x.par_chunks(FINITE_CHUNK).all(F::all_finite)
}

pub fn fmt_shape(shape: &[usize]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// Multi-index of a flat row-major offset, for error messages.
pub fn fmt_index(shape: &[usize], mut flat: usize) -> String {
    let mut idx = vec![0usize; shape.len()];
    for (d, &n) in shape.iter().enumerate().rev() {
        if n > 0 {
            idx[d] = flat % n;
            flat /= n;
        }
    }
    fmt_shape(&idx)
}
