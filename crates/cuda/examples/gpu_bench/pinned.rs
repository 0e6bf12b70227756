//! End to end from page-locked caller buffers (issue 13), by the binding's path: the caller's prediction slices and
//! `out` gradient buffers offered to a [`HostPins`] cache every call, the call run in its [`PinnedCall`] scope
//! (copies straight between those buffers and the GPU), `value_and_grad_overwrite` into `out`; and the PCIe floor it
//! is measured against (every prediction up and every gradient down at the measured page-locked copy rates).

use std::time::Instant;

use serde_json::{json, Map, Value};
use yolo_loss_core::{LossOutput, Predictions};
use yolo_loss_cuda::{CpuLoss, CudaLoss, Gpu, HostPins, HostRange, Keepalive, Role};

use crate::measure::{median, object, times};

/// Copy rates between page-locked host memory and the GPU, bytes/s.
#[derive(Debug, Clone, Copy)]
pub struct PcieRates {
    pub htod: f64,
    pub dtoh: f64,
}

/// The rates of 256 MiB copies each way (median of 10, wall clock around each synchronous copy), from and into
/// page-locked host memory: the most one call's uploads and downloads can get.
pub fn pcie_rates(g: &Gpu) -> PcieRates {
    let n = 1usize << 26; // 256 MiB of f32
    let mut dev = g.zeros::<f32>("PCIe rate buffer", n).expect("256 MiB free");
    let s = g.stream();
    // SAFETY: page-locked memory of n f32 with unset contents; the first copy (device to host) sets all of it
    // before anything reads it.
    let mut host = unsafe { s.context().alloc_pinned_with_flags::<f32>(n, 0) }.expect("256 MiB page-locked");
    let rate = |copy: &mut dyn FnMut()| {
        copy();
        (n * 4) as f64 / (median(&mut times(10, copy)) / 1e3)
    };
    let dtoh = rate(&mut || s.memcpy_dtoh(&dev, &mut host).and_then(|()| s.synchronize()).expect("copy"));
    let htod = rate(&mut || s.memcpy_htod(&host, &mut dev).and_then(|()| s.synchronize()).expect("copy"));
    PcieRates { htod, dtoh }
}

/// The floor of one call from host arrays: every prediction uploaded and every gradient (as large) downloaded at
/// `rates`, one after the other (the gradients exist only once the uploads are in and the kernels done).
pub fn pcie_floor_ms(pred_bytes: usize, rates: PcieRates) -> f64 {
    (pred_bytes as f64 / rates.htod + pred_bytes as f64 / rates.dtoh) * 1e3
}

/// Memory of this module's that outlives the cache holding it (see `e2e_pinned`).
struct Borrowed(HostRange);

// SAFETY: made only for the prediction slices, borrowed for the whole of `e2e_pinned`, and its `out` vectors, which
// are declared before the cache (so dropped after it) and never resized.
unsafe impl Keepalive for Borrowed {
    fn range(&mut self) -> Option<HostRange> {
        Some(self.0)
    }
}

/// `calls` calls as the binding makes them with `{ out }` on the same prediction arrays every step: each call
/// offers the predictions ([`Role::Input`]: registered on their second sighting) and `out` ([`Role::Output`]: at
/// once) and runs in the cache's scope. The first `untimed` calls (at least 2: those register) are not timed; the
/// fields: the median of the rest (`e2e_pinned_ms`), the untimed calls' times (`e2e_pinned_first_ms`), what was
/// registered (`pinned_buffers`, `pinned_bytes`, `pin_refusals`) and whether the results are `want`'s bits.
pub fn e2e_pinned<C: CpuLoss, G: CudaLoss<C>>(
    loss: &G,
    preds: C::Preds<'_>,
    batch: &C::Batch<'_>,
    want: &LossOutput<f32>,
    untimed: usize,
    calls: usize,
) -> Map<String, Value> {
    let inputs = preds.tensors();
    let mut out: Vec<Vec<f32>> = inputs.iter().map(|p| vec![f32::NAN; p.len()]).collect();
    let mut pins = HostPins::<Borrowed>::on_device(0).expect("cuda:0 is open");
    let untimed = untimed.max(2);
    let (mut first, mut timed, mut same_bits) = (vec![], vec![], true);
    for call in 0..untimed + calls {
        let t0 = Instant::now();
        for p in &inputs {
            pins.offer(HostRange::of(p), Role::Input, || Some(Borrowed(HostRange::of(p))));
        }
        for o in &out {
            pins.offer(HostRange::of(o), Role::Output, || Some(Borrowed(HostRange::of(o))));
        }
        let mut slices: Vec<&mut [f32]> = out.iter_mut().map(|o| o.as_mut_slice()).collect();
        let (l, items) =
            pins.prepare().run(|| loss.value_and_grad_overwrite(preds, batch, &mut slices)).expect("value_and_grad");
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        if call < untimed { &mut first } else { &mut timed }.push(ms);
        same_bits &= same(&l, &want.loss) && same(&items, &want.loss_items);
        same_bits &= out.iter().zip(&want.grads).all(|(o, w)| same(o, w));
    }
    let stats = pins.stats();
    object(json!({
        "e2e_pinned_ms": median(&mut timed), "e2e_pinned_first_ms": first, "pinned_buffers": stats.buffers,
        "pinned_bytes": stats.bytes, "pin_refusals": stats.refusals, "pinned_same_bits": same_bits,
    }))
}

fn same(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}
