//! The caller's `out` of `valueAndGrad(preds, batch, { out })`: its checks, and its buffers handed to the core.

use napi::bindgen_prelude::Float32Array;
use yolo_loss_core::LossError;

use super::Packed;
use crate::{invalid, CoreResult};

/// The caller's `out`: one `Float32Array` per prediction tensor, in the packing order, into which the gradients are
/// written (the binding of `valueAndGrad(preds, batch, { out })`). [`CallerGrads::check`] refuses buffers that do
/// not fit before anything is written; [`CallerGrads::slices`] then hands them to the core, which writes every
/// element (`value_and_grad_overwrite`: they hold the previous step's gradients, and no zeroing pass is made first).
///
/// Each `Float32Array` holds a strong reference to the caller's array, so the memory stays alive while an
/// asynchronous evaluation writes into it on the libuv pool. It cannot stop the caller from writing, transferring
/// (detaching) or resizing the buffer meanwhile; the facade documents that `out` is the computation's until the
/// promise settles, as Node's own `fs.read` does for its buffer.
pub(crate) struct CallerGrads(pub(super) Vec<Float32Array>);

impl CallerGrads {
    /// One buffer per prediction tensor of `packed`, each exactly as long as it, none sharing a byte with any
    /// tensor of `packed` (predictions and batch) or with another buffer: the core reads the inputs while it writes
    /// the gradients, and two gradients in one place would overwrite each other. `ERR_SHAPE_MISMATCH` for the count
    /// and the lengths, `ERR_INVALID_ARGUMENT` for shared memory.
    pub(super) fn check(&self, packed: &Packed<'_>) -> CoreResult<()> {
        let preds = &packed.args[..packed.preds];
        if self.0.len() != preds.len() {
            return Err(LossError::shape(format!(
                "out: expected {} gradient buffers (one per prediction tensor), got {}",
                preds.len(),
                self.0.len()
            )));
        }
        let out_name = |i: usize| format!("out for {}", preds[i].name);
        for (i, (buf, pred)) in self.0.iter().zip(preds).enumerate() {
            if buf.len() != pred.data.len() {
                return Err(LossError::shape(format!(
                    "{}: expected {} float32 values (as many as {}), got {}",
                    out_name(i),
                    pred.data.len(),
                    pred.name,
                    buf.len()
                )));
            }
        }
        for (i, buf) in self.0.iter().enumerate() {
            let clash = packed
                .args
                .iter()
                .find(|a| overlaps(buf, a.data))
                .map(|a| a.name.to_string())
                .or_else(|| (0..i).find(|&j| overlaps(buf, &self.0[j])).map(out_name));
            if let Some(other) = clash {
                return Err(invalid(format!(
                    "{}: expected a buffer of its own, got one that shares memory with {other} (out may not alias \
                     an input or another out tensor)",
                    out_name(i)
                )));
            }
        }
        Ok(())
    }

    /// The buffers as the core's gradient slices, as they are. Only after [`CallerGrads::check`] passed.
    pub(super) fn slices(&mut self) -> Vec<&mut [f32]> {
        self.0
            .iter_mut()
            // SAFETY: `check` made sure that no two buffers and no input share a byte, so this is the only reference
            // to this memory in Rust. The synchronous methods run with the JavaScript thread inside this call; the
            // asynchronous ones own the reference that keeps the memory alive, and the caller has agreed not to
            // touch `out` until the promise settles. The backing store never moves.
            .map(|a| unsafe { a.as_mut() })
            .collect()
    }
}

/// Whether two arrays share at least one byte (empty ones share none).
fn overlaps(a: &[f32], b: &[f32]) -> bool {
    let (a, b) = (a.as_ptr_range(), b.as_ptr_range());
    !a.is_empty() && !b.is_empty() && a.start < b.end && b.start < a.end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_is_sharing_a_byte() {
        let data = [0f32; 8];
        assert!(overlaps(&data[0..4], &data[3..8]));
        assert!(overlaps(&data[2..3], &data[0..8]));
        assert!(!overlaps(&data[0..4], &data[4..8]), "adjacent views share no byte");
        assert!(!overlaps(&data[2..2], &data[0..8]), "an empty view shares nothing");
        assert!(!overlaps(&data[0..4], &[0f32; 4]));
    }
}
