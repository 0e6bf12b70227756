//! napi-rs binding (being written).
