//! One evaluation of v8ClassificationLoss on the device: the CPU backend's checks on the host, the logits and class
//! indices up, one kernel (cuda/cls.cu: a thread per image), the per-image terms and the gradient down. The loss is
//! the mean of the per-image terms, added in image order in double as the CPU backend adds them.

use yolo_loss_core::classification::checked_inputs;
use yolo_loss_core::loss::{GradBufs, LossValues};
use yolo_loss_core::{Result, TensorRef};

use super::params::ClsParams;
use crate::detection::run::{Kernels, Timing};
use crate::launch::{int, Dev};

/// The kernel (cuda/cls.cu).
pub(crate) const XENT: &str = "yl_cls_xent";
/// Threads per block.
const BLOCK: u32 = 256;

pub(crate) fn run(
    dev: Dev,
    logits: TensorRef<f32>,
    cls: &TensorRef<f32>,
    grads: GradBufs<f32>,
) -> Result<LossValues<f32>> {
    let (b, nc, classes) = checked_inputs(&logits, cls)?;
    let shape = (int("batch size", b)?, int("classes", nc)?);
    int("logits", logits.data.len())?;
    let target: Vec<i32> = classes.iter().map(|&j| j as i32).collect();
    let logits_dev = dev.upload("preds", logits.data)?;
    let target_dev = dev.upload("batch.cls", &target)?;
    let row_loss = dev.alloc::<f32>("the per-image losses", b)?;
    let grad = match grads.is_empty() {
        true => None,
        false => Some(dev.alloc::<f32>("the gradient of preds", logits.data.len())?),
    };
    let params = ClsParams::new(shape, &logits_dev, &target_dev, grad.as_ref(), &row_loss);
    // Through `Kernels` as every task's launches, so that `time_kernels` times this one too.
    let mut kernels = Kernels::start(dev, Timing::Off)?;
    kernels.launch(XENT, b.div_ceil(BLOCK as usize) as u32, BLOCK, &params)?;
    kernels.finish()?;
    if let Some(g) = &grad {
        g.view().download("the gradient of preds", &mut *grads[0])?;
    }
    let mut rows = vec![0f32; b];
    row_loss.view().download("the per-image losses", &mut rows)?;
    let total: f64 = rows.iter().map(|&v| v as f64).sum();
    let loss = (total / b as f64) as f32;
    Ok((vec![loss], vec![loss]))
}
