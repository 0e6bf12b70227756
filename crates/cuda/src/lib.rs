//! CUDA backend (stub: kernels arrive with issue 4). Reports why CUDA cannot be used.

/// Whether the CUDA backend can run on this machine, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    Available { device_name: String },
    Unavailable { reason: String },
}

/// Probes the driver and the device without panicking.
pub fn availability() -> Availability {
    Availability::Unavailable { reason: "this build of yolo-loss has no CUDA kernels".to_string() }
}
