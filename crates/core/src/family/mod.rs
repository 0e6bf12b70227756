//! The pieces every detection-family loss shares (detection, segmentation, pose, OBB, the prompt losses, and the CUDA
//! backend's checks), one concern per file:
//! * [`head`]: the validated head outputs ([`head::Head`]: batch size, anchor grid, level data) and their
//!   finiteness check;
//! * `image_preds`: one image's predictions as the assigner and the box terms read them (decoding, caches, runs of
//!   cells);
//! * [`assigned`]: a batch's labels, padded GT table and task-aligned assignment (`Assigned`);
//! * `terms`: one image's class and box terms with their gradients, the per-image gradient slices, the sums.

pub mod assigned;
pub mod head;
pub(crate) mod image_preds;
pub(crate) mod terms;
