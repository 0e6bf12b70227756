//! Test helpers of this crate, shared by its unit tests (emulator) and integration tests (GPU): those of
//! `yolo-loss-testkit` (fixture reader and tolerance, fixture tensors as core types), shared with the core's tests.
//! `parity.rs` beside it holds the test bodies both run.

#![allow(unused_imports)]

pub use yolo_loss_testkit::{
    assert_close_tol, check_loss_output, config, grad_names, levels, load_kind, refs, to_f64, Fixture, Labels, Lcg,
    Owned,
};
