//! Errors that cross the library boundary.
//!
//! Every failure carries a stable machine-readable code (surfaced to JavaScript as `error.code`)
//! and a message that names the argument, what was expected and what was given.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// A tensor has the wrong rank or shape, or two tensors disagree.
    ShapeMismatch,
    /// A label refers to an image or class that does not exist, or a box has a negative size.
    LabelOutOfRange,
    /// NaN or ±Infinity in an input.
    NonFinite,
    /// A configuration value is unusable (zero classes, empty strides, topk of 0, ...).
    InvalidArgument,
    /// `device: 'cuda'` was requested but the CUDA backend cannot run here.
    CudaUnavailable,
    /// The GPU ran out of memory.
    CudaOutOfMemory,
    /// A bug on our side (a caught panic). Never expected; reported instead of crashing.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ShapeMismatch => "ERR_SHAPE_MISMATCH",
            ErrorCode::LabelOutOfRange => "ERR_LABEL_OUT_OF_RANGE",
            ErrorCode::NonFinite => "ERR_NON_FINITE",
            ErrorCode::InvalidArgument => "ERR_INVALID_ARGUMENT",
            ErrorCode::CudaUnavailable => "ERR_CUDA_UNAVAILABLE",
            ErrorCode::CudaOutOfMemory => "ERR_CUDA_OUT_OF_MEMORY",
            ErrorCode::Internal => "ERR_INTERNAL",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LossError {
    pub code: ErrorCode,
    pub message: String,
}

impl LossError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
    pub fn shape(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ShapeMismatch, message)
    }
    pub fn label(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::LabelOutOfRange, message)
    }
    pub fn non_finite(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NonFinite, message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }
}

impl fmt::Display for LossError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for LossError {}

pub type Result<T> = std::result::Result<T, LossError>;
