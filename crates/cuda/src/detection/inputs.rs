//! A call's inputs on the device: the level tensors (uploaded once), their gradient buffers, the GT table.

use yolo_loss_core::{Result, TensorRef};

use super::host::PackedGt;
use crate::launch::{Dev, DevBuf, DevPtr};

/// The prediction tensor of every level and, when a gradient is wanted, a buffer for its gradient.
pub(crate) struct Levels {
    feats: Vec<DevBuf<f32>>,
    grads: Vec<DevBuf<f32>>,
}

impl Levels {
    pub fn upload(dev: Dev, feats: &[TensorRef<f32>], want_grad: bool) -> Result<Self> {
        let uploaded =
            feats.iter().enumerate().map(|(l, f)| dev.upload(&format!("preds[{l}]"), f.data)).collect::<Result<_>>()?;
        let grads = if want_grad {
            let grad =
                |(l, f): (usize, &TensorRef<f32>)| dev.alloc(&format!("the gradient of preds[{l}]"), f.data.len());
            feats.iter().enumerate().map(grad).collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        Ok(Levels { feats: uploaded, grads })
    }

    pub fn feat(&self, level: usize) -> DevPtr<f32> {
        self.feats[level].ptr()
    }

    /// Null without a gradient (the kernels then write none).
    pub fn grad(&self, level: usize) -> DevPtr<f32> {
        self.grads.get(level).map_or(DevPtr::default(), DevBuf::ptr)
    }

    /// The gradients, into `into` (one buffer per level, as long as it; checked by the caller) or, without it,
    /// into fresh vectors. None were computed: nothing.
    pub fn download_grads(&self, mut into: Option<&mut [&mut [f32]]>) -> Result<Vec<Vec<f32>>> {
        let mut fresh = Vec::new();
        for (l, g) in self.grads.iter().enumerate() {
            let what = format!("the gradient of preds[{l}]");
            match into.as_deref_mut() {
                Some(bufs) => g.view().download(&what, &mut *bufs[l])?,
                None => {
                    let mut host = vec![0f32; self.feats[l].view().len()];
                    g.view().download(&what, &mut host)?;
                    fresh.push(host);
                }
            }
        }
        Ok(fresh)
    }
}

/// The GT table as host.rs packed it: the boxes, and one buffer of ints holding classes, validities and the
/// images' soft-argmax forms.
pub(crate) struct DeviceGt {
    boxes: DevBuf<f32>,
    ints: DevBuf<i32>,
    packed: PackedGt,
}

impl DeviceGt {
    pub fn upload(dev: Dev, packed: PackedGt) -> Result<Self> {
        let boxes = dev.upload("the GT boxes", &packed.boxes)?;
        let ints = dev.upload("the GT classes", &packed.ints)?;
        Ok(DeviceGt { boxes, ints, packed })
    }

    pub fn boxes(&self) -> DevPtr<f32> {
        self.boxes.ptr()
    }

    pub fn classes(&self) -> DevPtr<i32> {
        self.ints.slice(self.packed.cls()).ptr()
    }

    pub fn valid(&self) -> DevPtr<i32> {
        self.ints.slice(self.packed.valid()).ptr()
    }

    pub fn soft_argmax_forms(&self) -> DevPtr<i32> {
        self.ints.slice(self.packed.bulk()).ptr()
    }

    /// GT slots: images × most labels of an image.
    pub fn slots(&self) -> usize {
        self.packed.slots
    }

    /// GT slots per image.
    pub fn per_image(&self) -> usize {
        self.packed.per_image
    }

    /// Threads per block of the assign kernel (host.rs).
    pub fn assign_threads(&self) -> u32 {
        self.packed.assign_threads
    }
}
