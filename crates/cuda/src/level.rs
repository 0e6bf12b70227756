//! Shape of one detection level tensor `[B, C, H, W]` (docs/spec.md §4), as the kernels read it.

use yolo_loss_core::{LossError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelShape {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl LevelShape {
    pub fn new(batch: usize, channels: usize, height: usize, width: usize) -> Self {
        Self { batch, channels, height, width }
    }

    /// Anchors of the level: H·W.
    pub fn hw(&self) -> usize {
        self.height * self.width
    }

    pub fn numel(&self) -> usize {
        self.batch * self.channels * self.hw()
    }

    /// Checks that a buffer `name` of `len` elements holds exactly this tensor.
    pub(crate) fn check_len(&self, name: &str, len: usize) -> Result<()> {
        if len != self.numel() {
            return Err(LossError::shape(format!(
                "{name}: expected {} values for a [{}, {}, {}, {}] level tensor, got {len}",
                self.numel(),
                self.batch,
                self.channels,
                self.height,
                self.width
            )));
        }
        Ok(())
    }
}
