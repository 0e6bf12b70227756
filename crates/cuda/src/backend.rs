//! Backend selection for the detection-family losses: what the binding's `device: 'cpu' | 'cuda' | 'cuda:N' |
//! 'auto'` maps to.
//!
//! * `Cuda(n)`: the CUDA backend on device `cuda:n` or an error — `ERR_CUDA_UNAVAILABLE` with the reason when there
//!   is no usable driver, no such GPU or no kernel build; `ERR_INVALID_ARGUMENT` for a configuration beyond the
//!   CUDA backend's limits.
//! * `Auto`: the CUDA backend on `cuda:0` when it can be built, otherwise (silently) the CPU backend; [`Backend`]
//!   says which.
//! * `Cpu`: the CPU backend (crates/core).
//!
//! Each `*Any` type takes and returns exactly what the core type does (f32 only).

use std::str::FromStr;

use yolo_loss_core::detection::{GradBufs, LossValues};
use yolo_loss_core::e2e::E2EDetectLoss;
use yolo_loss_core::prompts::TVPDetectLoss;
use yolo_loss_core::{DetBatch, DetectionConfig, LossError, LossOutput, Result, TensorRef, V8DetectionLoss};

use crate::detection::CudaDetectionLoss;
use crate::e2e::CudaE2EDetectLoss;
use crate::prompts::CudaTVPDetectLoss;

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

/// `device` → a CUDA instance on the given ordinal, a CPU instance, or the CUDA error.
fn select<T>(device: Device, cpu: impl FnOnce() -> Result<T>, cuda: impl FnOnce(usize) -> Result<T>) -> Result<T> {
    match device {
        Device::Cpu => cpu(),
        Device::Cuda(ordinal) => cuda(ordinal),
        // Any CUDA failure (no GPU, or a configuration only the CPU backend takes) falls back; an invalid
        // configuration then fails in the CPU constructor with its own error.
        Device::Auto => cuda(0).or_else(|_| cpu()),
    }
}

/// One `*Any` type: the enum over the CPU and CUDA types, its constructor from a `Device`, `backend`, and
/// `call` / `value_and_grad` / `value_and_grad_into` forwarded to the instance with the prediction arguments
/// `$arg` (then the batch, then the gradient buffers).
macro_rules! any_loss {
    ($(#[$doc:meta])* $name:ident($cpu:ty, $cuda:ty) { $($arg:ident),+ }, $into_doc:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub enum $name {
            Cpu($cpu),
            Cuda($cuda),
        }

        impl $name {
            pub fn new(cfg: DetectionConfig, device: Device) -> Result<Self> {
                let cpu = || <$cpu>::new(cfg.clone()).map(Self::Cpu);
                select(device, cpu, |ordinal| <$cuda>::on_device(cfg.clone(), ordinal).map(Self::Cuda))
            }
            pub fn backend(&self) -> Backend {
                match self {
                    Self::Cpu(_) => Backend::Cpu,
                    Self::Cuda(_) => Backend::Cuda,
                }
            }
            pub fn call(&self, $($arg: &[TensorRef<f32>],)+ batch: &DetBatch<f32>) -> Result<LossOutput<f32>> {
                match self {
                    Self::Cpu(c) => c.call($($arg,)+ batch),
                    Self::Cuda(g) => g.call($($arg,)+ batch),
                }
            }
            pub fn value_and_grad(
                &self,
                $($arg: &[TensorRef<f32>],)+
                batch: &DetBatch<f32>,
            ) -> Result<LossOutput<f32>> {
                match self {
                    Self::Cpu(c) => c.value_and_grad($($arg,)+ batch),
                    Self::Cuda(g) => g.value_and_grad($($arg,)+ batch),
                }
            }
            #[doc = $into_doc]
            pub fn value_and_grad_into(
                &self,
                $($arg: &[TensorRef<f32>],)+
                batch: &DetBatch<f32>,
                grads: GradBufs<f32>,
            ) -> Result<LossValues<f32>> {
                match self {
                    Self::Cpu(c) => c.value_and_grad_into($($arg,)+ batch, grads),
                    Self::Cuda(g) => g.value_and_grad_into($($arg,)+ batch, grads),
                }
            }
        }
    };
}

any_loss!(
    /// v8DetectionLoss on the selected backend.
    DetectionLossAny(V8DetectionLoss, CudaDetectionLoss) { feats },
    "Gradients into caller-provided zero-filled buffers, one per level; returns (loss, items)."
);

any_loss!(
    /// E2EDetectLoss on the selected backend.
    E2EDetectLossAny(E2EDetectLoss, CudaE2EDetectLoss) { o2m, o2o },
    "Gradients into caller-provided zero-filled buffers (one2many levels, then one2one); returns (loss, items)."
);

any_loss!(
    /// TVPDetectLoss on the selected backend.
    TVPDetectLossAny(TVPDetectLoss, CudaTVPDetectLoss) { feats },
    "Gradients into caller-provided zero-filled buffers, one per level; returns (loss, items)."
);

#[cfg(test)]
mod tests {
    use super::*;
    use yolo_loss_core::ErrorCode;

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
