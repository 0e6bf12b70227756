//! Test helpers of this crate, shared by its unit tests (emulator) and integration tests (GPU): those of
//! `yolo-loss-testkit` (fixture reader and tolerance, fixture tensors as core types), shared with the core's tests.
//! `parity.rs` beside it holds the detection test bodies both run, the other tasks' files theirs; the generic
//! checks of every form of a loss on one case ([`check_forms`], [`check_refusal`]) are here.

// Each test binary includes this file and uses part of it.
#![allow(unused_imports, dead_code)]

pub use yolo_loss_testkit::{
    assert_close_tol, check_loss_output, config, grad_names, levels, load_kind, refs, to_f64, Fixture, Labels, Lcg,
    Owned,
};

use yolo_loss_core::{LossOutput, TaskLoss};

/// A task's owned inputs, lent to a loss as its predictions and batch.
pub trait Case {
    type Preds<'a>;
    type Batch<'a>;
    fn lend<T>(&self, f: impl FnOnce(Self::Preds<'_>, &Self::Batch<'_>) -> T) -> T;
}

/// Any loss (the CPU backend or the CUDA type on either device) taking the inputs of case type `K`.
pub trait LossOf<K: Case>: for<'a> TaskLoss<f32, Preds<'a> = K::Preds<'a>, Batch<'a> = K::Batch<'a>> {}
impl<K: Case, L: for<'a> TaskLoss<f32, Preds<'a> = K::Preds<'a>, Batch<'a> = K::Batch<'a>>> LossOf<K> for L {}

/// Every form of `loss` on one case: `value_and_grad` against the CPU backend `cpu` within `|Δ| ≤ rel·|cpu| +
/// abs·max|cpu|`, `call` with the same values and no gradient, `value_and_grad_into` on NaN-filled buffers (every
/// element must be written) with the same bits. Returns the `value_and_grad` output. (Name `K` at the call: it
/// cannot be inferred before the losses' bounds are checked.)
pub fn check_forms<K: Case>(
    what: &str,
    loss: &impl LossOf<K>,
    cpu: &impl LossOf<K>,
    case: &K,
    (rel, abs): (f64, f64),
) -> LossOutput<f32> {
    let want = case.lend(|p, b| cpu.value_and_grad(p, b)).unwrap();
    let out = case.lend(|p, b| loss.value_and_grad(p, b)).unwrap_or_else(|e| panic!("{what}: {e}"));
    let close = |name: &str, a: &[f32], b: &[f32]| {
        assert_close_tol(&format!("{what} {name}"), &to_f64(a), &to_f64(b), rel, abs)
    };
    close("loss", &out.loss, &want.loss);
    close("items", &out.loss_items, &want.loss_items);
    assert_eq!(out.grads.len(), want.grads.len(), "{what}: gradient count");
    for (i, (g, c)) in out.grads.iter().zip(&want.grads).enumerate() {
        close(&format!("grad[{i}]"), g, c);
    }
    let call = case.lend(|p, b| loss.call(p, b)).unwrap();
    assert_eq!((&call.loss, &call.loss_items), (&out.loss, &out.loss_items), "{what}: call");
    assert!(call.grads.is_empty(), "{what}: call computes no gradient");
    let mut bufs: Vec<Vec<f32>> = out.grads.iter().map(|g| vec![f32::NAN; g.len()]).collect();
    let mut slices: Vec<&mut [f32]> = bufs.iter_mut().map(|v| v.as_mut_slice()).collect();
    let (l, items) = case.lend(|p, b| loss.value_and_grad_into(p, b, &mut slices)).unwrap();
    assert_eq!((&l, &items), (&out.loss, &out.loss_items), "{what}: value_and_grad_into");
    for (i, (got, want)) in bufs.iter().zip(&out.grads).enumerate() {
        assert_eq!(to_f64(got), to_f64(want), "{what}: value_and_grad_into gradient {i}");
    }
    out
}

/// Bad input: `loss` refuses `case` with the CPU backend's error (code and message), from `value_and_grad` and `call`.
pub fn check_refusal<K: Case>(what: &str, loss: &impl LossOf<K>, cpu: &impl LossOf<K>, case: &K) {
    let want = case.lend(|p, b| cpu.value_and_grad(p, b)).expect_err("bad input must be rejected");
    let got = case.lend(|p, b| loss.value_and_grad(p, b)).expect_err("bad input must be rejected");
    assert_eq!((got.code, &got.message), (want.code, &want.message), "{what}");
    let got = case.lend(|p, b| loss.call(p, b)).expect_err("bad input must be rejected");
    assert_eq!((got.code, &got.message), (want.code, &want.message), "{what} (call)");
}
