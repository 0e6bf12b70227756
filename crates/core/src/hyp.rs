//! Hyperparameters read from `model.args` (Ultralytics `default.yaml` defaults).

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hyp {
    /// Box (CIoU / probIoU) gain; also the mask gain of segmentation.
    pub box_gain: f64,
    pub cls: f64,
    pub dfl: f64,
    pub pose: f64,
    pub kobj: f64,
    pub overlap_mask: bool,
}

impl Default for Hyp {
    fn default() -> Self {
        Self { box_gain: 7.5, cls: 0.5, dfl: 1.5, pose: 12.0, kobj: 1.0, overlap_mask: true }
    }
}
