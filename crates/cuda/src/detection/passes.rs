//! The loss passes of the detection family after the assignment (cuda/det_loss.cu), and what every pass
//! accumulates into ([`Accumulators`]: per-block partial sums, status flags).
//!
//! ```text
//! yl_det_class    per (b, 16 classes, a): class logits, BCE sum and gradient, in one pass
//! yl_det_box      per (b, a, side), positives only: CIoU and DFL terms and the box-channel gradient
//! ```

use yolo_loss_core::detection::check_preds_finite;
use yolo_loss_core::{ErrorCode, LossError, Result, TensorRef};

use super::params::DetParams;
use super::run::{Kernels, BOX, CLASS};
use super::stages::{Grids, BLOCK};
use crate::launch::{Arena, ArenaLayout, Part};

/// The class pass: BCE of every class logit of the loss's window against the target scores, and its gradient.
pub(crate) fn class_pass(kernels: &mut Kernels, p: &DetParams, g: &Grids) -> Result<()> {
    kernels.launch(CLASS, g.class_blocks, BLOCK, p)
}

/// The box pass over the positives: CIoU and DFL terms, and the gradient of the box channels.
pub(crate) fn box_pass(kernels: &mut Kernels, p: &DetParams, g: &Grids) -> Result<()> {
    kernels.launch(BOX, g.box_blocks, BLOCK, p)
}

/// Per-block partial sums of the passes, in double, laid out as the kernels index them: score pass | class BCE |
/// box (1 − CIoU)·w | DFL·w; and the status flags (zeroed): [0] a non-finite prediction was seen, [1] score
/// blocks done.
pub(crate) struct Accumulators {
    pub sums: Part<f64>,
    pub flags: Part<u32>,
    score_blocks: usize,
    class_blocks: usize,
    box_blocks: usize,
}

/// The loss terms summed over the batch (before the division by S and the gains).
pub(crate) struct LossSums {
    pub iou: f64,
    pub bce: f64,
    pub dfl: f64,
}

impl Accumulators {
    pub fn plan(layout: &mut ArenaLayout, g: &Grids) -> Self {
        let (score_blocks, class_blocks, box_blocks) =
            (g.score_blocks as usize, g.class_blocks as usize, g.box_blocks as usize);
        Accumulators {
            sums: layout.part(score_blocks + class_blocks + 2 * box_blocks),
            flags: layout.zeroed(4),
            score_blocks,
            class_blocks,
            box_blocks,
        }
    }

    /// After the kernels: an error if one of them saw a non-finite prediction (the CPU backend's error, found on
    /// the host now that it is known to be there).
    pub fn check_finite(&self, arena: &Arena, feats: &[TensorRef<f32>]) -> Result<()> {
        let mut flags = [0u32; 4];
        arena.view(self.flags).download("the status flags", &mut flags)?;
        if flags[0] != 0 {
            check_preds_finite(feats)?;
            return Err(LossError::new(
                ErrorCode::Internal,
                "the CUDA kernels saw a non-finite prediction that the host check does not find",
            ));
        }
        Ok(())
    }

    /// The partial sums added up in block order (reproducible).
    pub fn download(&self, arena: &Arena) -> Result<LossSums> {
        let view = arena.view(self.sums);
        let mut partials = vec![0f64; view.len()];
        view.download("the loss partial sums", &mut partials)?;
        let (class_from, box_from) = (self.score_blocks, self.score_blocks + self.class_blocks);
        let sum = |from: usize, len: usize| partials[from..from + len].iter().sum::<f64>();
        Ok(LossSums {
            bce: sum(class_from, self.class_blocks),
            iou: sum(box_from, self.box_blocks),
            dfl: sum(box_from + self.box_blocks, self.box_blocks),
        })
    }
}
