//! Stage 1 of every detection-family loss: the task-aligned assignment on the device (cuda/det_decode.cu,
//! cuda/det_assign.cu). Its result, the positives and their targets, stays on the device in the parts of
//! [`AssignmentParts`] for the passes after it to read; only tests and timing download it.
//!
//! ```text
//! yl_det_decode   per (b, side, a): soft-argmax distances; zero the box channels of the gradient
//! yl_det_assign   per GT slot (a block of 32–1024 threads): candidates under the box, top-k, claims,
//!                 per-anchor best overlap
//! yl_det_resolve  per (b, a): conflict resolution; per-GT max t and u
//! yl_det_scores   per (b, a): soft scores; S and the gradient scales (last block)
//! ```

use yolo_loss_core::Result;

use super::params::DetParams;
use super::run::{Assignment, Kernels, ASSIGN, DECODE, RESOLVE, SCORES};
use super::stages::{Grids, BLOCK};
use crate::launch::{Arena, ArenaLayout, Part};

/// The assignment's buffers in the call's arena. Read by later passes: `pos_*` and `scalars`.
pub(crate) struct AssignmentParts {
    /// Per (b, a), zeroed: the best (overlap bits, ~GT) over the GTs containing the anchor; how many GTs' top-k
    /// picked it.
    pub best: Part<u64>,
    pub count: Part<u32>,
    /// Per GT slot, zeroed: max align metric t and overlap u over its positives (float bits).
    pub gt_t: Part<u32>,
    pub gt_u: Part<u32>,
    /// Per (b, a, side): decoded distances, grid units.
    pub dist: Part<f32>,
    /// Per (b, a): the picking GT where count is 1.
    pub claim: Part<u32>,
    /// Per (b, a), the positives: GT slot (−1: background), t, u, class (−1: background), target score.
    pub pos_gt: Part<i32>,
    pub pos_t: Part<f32>,
    pub pos_u: Part<f32>,
    pub pos_cls: Part<i32>,
    pub pos_score: Part<f32>,
    /// S = max(Σ target scores, 1), then the gradient scales of the iou, cls and dfl sums.
    pub scalars: Part<f32>,
}

impl AssignmentParts {
    /// Reserves the buffers for `anchors` = B·A anchors and `slots` = B·M GT slots.
    pub fn plan(layout: &mut ArenaLayout, anchors: usize, slots: usize) -> Self {
        AssignmentParts {
            best: layout.zeroed(anchors),
            count: layout.zeroed(anchors),
            gt_t: layout.zeroed(slots),
            gt_u: layout.zeroed(slots),
            dist: layout.part(4 * anchors),
            claim: layout.part(anchors),
            pos_gt: layout.part(anchors),
            pos_t: layout.part(anchors),
            pos_u: layout.part(anchors),
            pos_cls: layout.part(anchors),
            pos_score: layout.part(anchors),
            scalars: layout.part(4),
        }
    }

    /// Queues the four kernels of the assignment.
    pub fn launch(kernels: &mut Kernels, p: &DetParams, g: &Grids) -> Result<()> {
        kernels.launch(DECODE, g.decode_blocks, BLOCK, p)?;
        kernels.launch(ASSIGN, g.assign_blocks, g.assign_threads, p)?;
        kernels.launch(RESOLVE, g.anchor_blocks, BLOCK, p)?;
        kernels.launch(SCORES, g.score_blocks, BLOCK, p)
    }

    /// S, the divisor of the loss sums.
    pub fn divisor(&self, arena: &Arena) -> Result<f32> {
        let mut scalars = [0f32; 4];
        arena.view(self.scalars).download("the score divisor", &mut scalars)?;
        Ok(scalars[0])
    }

    /// The positives of each of `batch` images of `anchors` anchors: (anchor, GT slot, target score).
    pub fn download(&self, arena: &Arena, batch: usize, anchors: usize) -> Result<Assignment> {
        let mut gt = vec![0i32; batch * anchors];
        let mut score = vec![0f32; batch * anchors];
        arena.view(self.pos_gt).download("the assignment", &mut gt)?;
        arena.view(self.pos_score).download("the target scores", &mut score)?;
        let positives = |img: usize| {
            let at = move |an: usize| img * anchors + an;
            (0..anchors).filter(|&an| gt[at(an)] >= 0).map(|an| (an, gt[at(an)] as usize, score[at(an)])).collect()
        };
        Ok((0..batch).map(positives).collect())
    }
}
