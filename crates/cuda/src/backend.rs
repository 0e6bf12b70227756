//! Backend selection for every task loss: what the binding's `device: 'cpu' | 'cuda' | 'cuda:N' | 'auto'` maps to.
//!
//! [`Selected`] holds the CPU type of a task, its CUDA type, or both, chosen per instance from a [`Device`]:
//! * `Cuda(n)`: the CUDA backend on device `cuda:n` or an error — `ERR_CUDA_UNAVAILABLE` with the reason when there
//!   is no usable driver, no such GPU, no kernel build or no CUDA backend for the task; `ERR_INVALID_ARGUMENT` for a
//!   configuration beyond the CUDA backend's limits.
//! * `Auto`: where the CUDA backend can be built on `cuda:0`, both backends, each call on the faster one for its
//!   shapes, measured on the first calls of each shape ([`AutoLoss`], crate::auto); otherwise (no usable GPU, or a
//!   configuration beyond the CUDA limits) the CPU backend alone, silently and with no probing.
//! * `Cpu`: the CPU backend (crates/core).
//!
//! [`Selected::backend`] says which backend runs every call (None under 'auto' with both), [`Selected::last_backend`]
//! which one ran the latest, [`Selected::backend_for`] which one calls of given shapes run on.
//!
//! Both sides implement [`TaskLoss`] with the same predictions and batch, so [`Selected`] does too, by delegation
//! (f32 only). Every task has a CUDA type (implementing [`TaskLoss`] and [`CudaLoss`]), named in its alias below.

use std::str::FromStr;

use yolo_loss_core::classification::V8ClassificationLoss;
use yolo_loss_core::e2e::E2EDetectLoss;
use yolo_loss_core::loss::{GradBufs, LossValues};
use yolo_loss_core::pose::{PoseConfig, V8PoseLoss};
use yolo_loss_core::prompts::{TVPDetectLoss, TVPSegmentLoss};
use yolo_loss_core::segmentation::V8SegmentationLoss;
use yolo_loss_core::{DetectionConfig, LossError, Result, TaskLoss, V8DetectionLoss, V8OBBLoss};

use crate::auto::{measured, AutoLoss, ShapeKey};
use crate::classification::CudaClassificationLoss;
use crate::detection::CudaDetectionLoss;
use crate::e2e::CudaE2EDetectLoss;
use crate::obb::CudaObbLoss;
use crate::pose::CudaPoseLoss;
use crate::prompts::CudaTVPDetectLoss;
use crate::segmentation::{CudaSegmentationLoss, CudaTVPSegmentLoss};

/// What the caller asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    /// `'cuda:N'`, the GPU of CUDA ordinal N (`'cuda'` is `'cuda:0'`).
    Cuda(usize),
    Auto,
}

impl FromStr for Device {
    type Err = LossError;
    /// `'cpu'`, `'cuda'`, `'cuda:N'` (N decimal digits only) or `'auto'`; anything else is `ERR_INVALID_ARGUMENT`.
    /// Whether GPU N exists is not checked here (that is `ERR_CUDA_UNAVAILABLE`, when the loss is built).
    fn from_str(s: &str) -> Result<Self> {
        let ordinal = |n: &str| n.bytes().all(|b| b.is_ascii_digit()).then(|| n.parse::<usize>().ok()).flatten();
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            "auto" => Ok(Device::Auto),
            _ => s.strip_prefix("cuda:").and_then(ordinal).map(Device::Cuda).ok_or_else(|| {
                LossError::invalid(format!(
                    "device: expected 'cpu', 'cuda', 'cuda:N' (N a GPU ordinal: 0, 1, ...) or 'auto', got '{s}'"
                ))
            }),
        }
    }
}

/// What an instance runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Cpu,
    Cuda,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
        }
    }
}

/// The CPU loss of a task, as the selection builds it: its configuration, constructor and reference name.
pub trait CpuLoss: TaskLoss<f32> + Sized {
    type Config: Clone;
    /// The reference's name of the loss (`v8DetectionLoss`), for messages.
    const NAME: &'static str;
    fn build(cfg: Self::Config) -> Result<Self>;
    /// The shape key of a call ([`ShapeKey`]): what 'auto' remembers its choice of backend by.
    fn shape_key(preds: &Self::Preds<'_>, batch: &Self::Batch<'_>) -> ShapeKey;
}

/// The CUDA backend of the CPU loss `C`: the same predictions and batch, built on a GPU.
pub trait CudaLoss<C: CpuLoss>:
    for<'a> TaskLoss<f32, Preds<'a> = C::Preds<'a>, Batch<'a> = C::Batch<'a>> + Sized
{
    /// Validates `cfg` as `C` does, then opens `cuda:<ordinal>`.
    fn build_on(cfg: C::Config, ordinal: usize) -> Result<Self>;
}

/// The constructors of a CUDA loss type `$cuda` (the backend of `$cpu`, configured by `$config`) from its one
/// `fn on(cfg, dev: impl FnOnce() -> Result<Dev>) -> Result<Self>`, which validates `cfg` as the CPU type does and
/// against the CUDA backend's limits before it opens the device (so a bad configuration is reported as such even
/// without a GPU): `new` (on `cuda:0`), `on_device` (on `cuda:<ordinal>`), `emulated` (the kernels' CPU emulator, for
/// this crate's tests) and the [`CudaLoss`] impl.
macro_rules! cuda_constructors {
    ($cuda:ty, $cpu:ty, $config:ty) => {
        impl $cuda {
            /// On the GPU `cuda:0` (as [`Self::on_device`]).
            pub fn new(cfg: $config) -> yolo_loss_core::Result<Self> {
                Self::on_device(cfg, 0)
            }

            /// Validates `cfg` as the CPU backend does, then opens the GPU `cuda:<ordinal>`: `ERR_CUDA_UNAVAILABLE`
            /// (with the reason) where there is none, `ERR_INVALID_ARGUMENT` for a configuration beyond the CUDA
            /// backend's limits.
            pub fn on_device(cfg: $config, ordinal: usize) -> yolo_loss_core::Result<Self> {
                Self::on(cfg, || Ok($crate::launch::Dev::Gpu($crate::gpu(ordinal)?)))
            }

            /// The same loss on the CPU emulator of the kernels (tests of this crate).
            #[cfg(all(test, yolo_cuda_emulator))]
            pub(crate) fn emulated(cfg: $config) -> yolo_loss_core::Result<Self> {
                Self::on(cfg, || Ok($crate::launch::Dev::Emu))
            }
        }

        impl $crate::backend::CudaLoss<$cpu> for $cuda {
            fn build_on(cfg: $config, ordinal: usize) -> yolo_loss_core::Result<Self> {
                Self::on_device(cfg, ordinal)
            }
        }
    };
}
pub(crate) use cuda_constructors;

/// A task loss on the backend a [`Device`] selected, per instance: the CPU type `C`, the CUDA type `G`, or under
/// 'auto' with a usable GPU both, each call on the faster one for its shapes.
#[derive(Debug, Clone)]
pub enum Selected<C, G> {
    Cpu(C),
    Cuda(G),
    Auto(AutoLoss<C, G>),
}

impl<C: CpuLoss, G: CudaLoss<C>> Selected<C, G> {
    pub fn new(cfg: C::Config, device: Device) -> Result<Self> {
        match device {
            Device::Cpu => C::build(cfg).map(Self::Cpu),
            Device::Cuda(ordinal) => G::build_on(cfg, ordinal).map(Self::Cuda),
            // Any CUDA failure (no GPU, or a configuration only the CPU backend takes) falls back to the CPU alone,
            // with no probing; an invalid configuration then fails in the CPU constructor with its own error.
            Device::Auto => match G::build_on(cfg.clone(), 0) {
                Ok(cuda) => Ok(Self::Auto(AutoLoss::new(C::build(cfg)?, cuda, measured))),
                Err(_) => C::build(cfg).map(Self::Cpu),
            },
        }
    }

    /// The backend every call runs on; None under 'auto' with both backends (then it depends on the shapes).
    pub fn backend(&self) -> Option<Backend> {
        match self {
            Self::Cpu(_) => Some(Backend::Cpu),
            Self::Cuda(_) => Some(Backend::Cuda),
            Self::Auto(_) => None,
        }
    }

    /// The backend the latest call started on (with one backend, that one, calls or not); None under 'auto' before
    /// the first call.
    pub fn last_backend(&self) -> Option<Backend> {
        match self {
            Self::Auto(a) => a.last_backend(),
            _ => self.backend(),
        }
    }

    /// The backend calls with these predictions and batch run on; None under 'auto' while their shapes are being
    /// probed (or have not been seen).
    pub fn backend_for(&self, preds: C::Preds<'_>, batch: &C::Batch<'_>) -> Option<Backend> {
        match self {
            Self::Auto(a) => a.backend_for(C::shape_key(&preds, batch)),
            _ => self.backend(),
        }
    }
}

impl<C: CpuLoss, G: CudaLoss<C>> TaskLoss<f32> for Selected<C, G> {
    type Preds<'a> = C::Preds<'a>;
    type Batch<'a> = C::Batch<'a>;

    fn run(&self, preds: C::Preds<'_>, batch: &C::Batch<'_>, grads: GradBufs<f32>) -> Result<LossValues<f32>> {
        match self {
            Self::Cpu(c) => c.run(preds, batch, grads),
            Self::Cuda(g) => g.run(preds, batch, grads),
            Self::Auto(a) => a.run_on(C::shape_key(&preds, batch), |backend| match backend {
                Backend::Cpu => a.cpu().run(preds, batch, grads),
                Backend::Cuda => a.cuda().run(preds, batch, grads),
            }),
        }
    }

    fn run_overwrite(
        &self,
        preds: C::Preds<'_>,
        batch: &C::Batch<'_>,
        grads: GradBufs<f32>,
    ) -> Result<LossValues<f32>> {
        match self {
            Self::Cpu(c) => c.run_overwrite(preds, batch, grads),
            Self::Cuda(g) => g.run_overwrite(preds, batch, grads),
            Self::Auto(a) => a.run_on(C::shape_key(&preds, batch), |backend| match backend {
                Backend::Cpu => a.cpu().run_overwrite(preds, batch, grads),
                Backend::Cuda => a.cuda().run_overwrite(preds, batch, grads),
            }),
        }
    }

    fn overwrites_grads(&self) -> bool {
        match self {
            Self::Cpu(c) => c.overwrites_grads(),
            Self::Cuda(g) => g.overwrites_grads(),
            // Either may run the next call.
            Self::Auto(a) => a.cpu().overwrites_grads() && a.cuda().overwrites_grads(),
        }
    }
}

/// v8DetectionLoss on the selected backend.
pub type DetectionLossAny = Selected<V8DetectionLoss, CudaDetectionLoss>;
/// E2EDetectLoss on the selected backend.
pub type E2EDetectLossAny = Selected<E2EDetectLoss, CudaE2EDetectLoss>;
/// TVPDetectLoss on the selected backend.
pub type TVPDetectLossAny = Selected<TVPDetectLoss, CudaTVPDetectLoss>;
/// v8SegmentationLoss on the selected backend.
pub type SegmentationLossAny = Selected<V8SegmentationLoss, CudaSegmentationLoss>;
/// TVPSegmentLoss on the selected backend.
pub type TVPSegmentLossAny = Selected<TVPSegmentLoss, CudaTVPSegmentLoss>;
/// v8PoseLoss on the selected backend.
pub type PoseLossAny = Selected<V8PoseLoss, CudaPoseLoss>;
/// v8OBBLoss on the selected backend.
pub type ObbLossAny = Selected<V8OBBLoss, CudaObbLoss>;
/// v8ClassificationLoss on the selected backend.
pub type ClassificationLossAny = Selected<V8ClassificationLoss, CudaClassificationLoss>;

/// `CpuLoss` for a core loss built by `new(cfg)`.
macro_rules! cpu_loss {
    ($($loss:ty: $config:ty, $name:literal;)+) => {
        $(impl CpuLoss for $loss {
            type Config = $config;
            const NAME: &'static str = $name;
            fn build(cfg: $config) -> Result<Self> {
                <$loss>::new(cfg)
            }
            fn shape_key(preds: &Self::Preds<'_>, batch: &Self::Batch<'_>) -> ShapeKey {
                ShapeKey::of(preds, batch)
            }
        })+
    };
}

cpu_loss! {
    V8DetectionLoss: DetectionConfig, "v8DetectionLoss";
    E2EDetectLoss: DetectionConfig, "E2EDetectLoss";
    TVPDetectLoss: DetectionConfig, "TVPDetectLoss";
    V8SegmentationLoss: DetectionConfig, "v8SegmentationLoss";
    TVPSegmentLoss: DetectionConfig, "TVPSegmentLoss";
    V8PoseLoss: PoseConfig, "v8PoseLoss";
    V8OBBLoss: DetectionConfig, "v8OBBLoss";
}

impl CpuLoss for V8ClassificationLoss {
    type Config = ();
    const NAME: &'static str = "v8ClassificationLoss";
    fn build((): ()) -> Result<Self> {
        Ok(Self::new())
    }
    fn shape_key(preds: &Self::Preds<'_>, batch: &Self::Batch<'_>) -> ShapeKey {
        ShapeKey::of(preds, batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yolo_loss_core::ErrorCode;

    /// Under 'auto', an invalid configuration is the CPU constructor's error (not a CUDA one), GPU or not.
    #[test]
    fn auto_reports_an_invalid_configuration_as_the_cpu_backend_does() {
        let cfg = DetectionConfig { nc: 0, reg_max: 4, strides: vec![8.0], hyp: Default::default(), tal_topk: 10 };
        let want = V8OBBLoss::new(cfg.clone()).unwrap_err();
        let e = ObbLossAny::new(cfg, Device::Auto).unwrap_err();
        assert_eq!((e.code, &e.message), (ErrorCode::InvalidArgument, &want.message));
    }

    #[test]
    fn device_strings() {
        for (s, want) in [
            ("cpu", Device::Cpu),
            ("auto", Device::Auto),
            ("cuda", Device::Cuda(0)),
            ("cuda:0", Device::Cuda(0)),
            ("cuda:1", Device::Cuda(1)),
            ("cuda:17", Device::Cuda(17)),
        ] {
            assert_eq!(s.parse::<Device>().unwrap(), want, "{s}");
        }
        for bad in [
            "cuda:",
            "cuda:-1",
            "cuda:+1",
            "cuda:1x",
            "cuda: 1",
            "cuda:1.0",
            "cuda:0x1",
            "CUDA",
            "gpu",
            "",
            " cuda",
            "cuda:99999999999999999999999",
            "cuda:1:0",
            "cpu:0",
        ] {
            let e = bad.parse::<Device>().unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidArgument, "{bad}");
            assert_eq!(
                e.message,
                format!("device: expected 'cpu', 'cuda', 'cuda:N' (N a GPU ordinal: 0, 1, ...) or 'auto', got '{bad}'")
            );
        }
    }
}
