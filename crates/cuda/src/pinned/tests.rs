//! The policy, the registrations and the per-call routing, with a recording fake in place of the driver; one test
//! of the real path, on a GPU only.

use std::sync::{Arc, Mutex};

use super::*;

const MIB: usize = 1 << 20;

/// What happened, in order: "acquire A", "release A", "drop A" (a keepalive token), "register A", "wait",
/// "unregister A"; buffers named by their address in MiB.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, s: String) {
        self.0.lock().unwrap().push(s);
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
    fn count(&self, prefix: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|s| s.starts_with(prefix)).count()
    }
}

fn name(r: HostRange) -> String {
    format!("{}", r.addr / MIB)
}

/// A registrar that accepts everything but the ranges in `refuse`.
#[derive(Clone, Default)]
struct FakeRegistrar {
    log: Log,
    refuse: Vec<HostRange>,
}

impl Registrar for FakeRegistrar {
    fn acquire(&self, r: HostRange) -> bool {
        self.log.push(format!("acquire {}", name(r)));
        !self.refuse.contains(&r)
    }
    fn release(&self, r: HostRange) {
        self.log.push(format!("release {}", name(r)));
    }
}

/// A keepalive whose memory is where it was made until `gone` is set (a detached ArrayBuffer).
struct Token {
    range: HostRange,
    gone: Arc<Mutex<bool>>,
    log: Log,
}

// SAFETY: fake ranges, never copied from or to.
unsafe impl Keepalive for Token {
    fn range(&mut self) -> Option<HostRange> {
        (!*self.gone.lock().unwrap()).then_some(self.range)
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        self.log.push(format!("drop {}", name(self.range)));
    }
}

/// `mib` MiB at address `at` MiB.
fn buf(at: usize, mib: usize) -> HostRange {
    HostRange { addr: at * MIB, bytes: mib * MIB }
}

struct Fixture {
    log: Log,
    pins: HostPins<Token, FakeRegistrar>,
    gone: Arc<Mutex<bool>>,
}

fn fixture(budget_mib: usize, refuse: Vec<HostRange>) -> Fixture {
    let log = Log::default();
    let registrar = FakeRegistrar { log: log.clone(), refuse };
    Fixture { pins: HostPins::with_registrar(registrar, None, budget_mib * MIB), log, gone: Default::default() }
}

impl Fixture {
    fn offer(&mut self, r: HostRange, role: Role) -> Offer {
        let (log, gone) = (self.log.clone(), self.gone.clone());
        self.pins.offer(r, role, || Some(Token { range: r, gone, log }))
    }

    /// One call's offers, then its prepared ranges.
    fn call(&mut self, buffers: &[(HostRange, Role)]) -> (Vec<Offer>, Vec<HostRange>) {
        let offers = buffers.iter().map(|&(r, role)| self.offer(r, role)).collect();
        (offers, self.pins.prepare().ranges().to_vec())
    }
}

#[test]
fn outputs_register_at_once_inputs_when_seen_again_and_both_are_reused() {
    let mut f = fixture(1024, vec![]);
    let (out, pred) = (buf(100, 8), buf(200, 8));
    let calls = [(out, Role::Output), (pred, Role::Input)];
    assert_eq!(f.call(&calls), (vec![Offer::Registered, Offer::FirstSighting], vec![out]));
    assert_eq!(f.call(&calls), (vec![Offer::Cached, Offer::Registered], vec![out, pred]));
    for _ in 0..3 {
        assert_eq!(f.call(&calls), (vec![Offer::Cached, Offer::Cached], vec![out, pred]));
    }
    assert_eq!(f.log.take(), ["acquire 100", "acquire 200"], "each registered once");
    let s = f.pins.stats();
    assert_eq!((s.buffers, s.bytes, s.registrations, s.releases), (2, 16 * MIB, 2, 0));
    // A fresh prediction array every call is never registered.
    for i in 0..5 {
        assert_eq!(f.offer(buf(300 + 10 * i, 8), Role::Input), Offer::FirstSighting);
    }
    assert_eq!(f.log.count("acquire"), 0);
}

#[test]
fn the_least_recently_used_goes_first_and_never_one_the_call_uses() {
    let mut f = fixture(24, vec![]);
    let (a, b, c, d) = (buf(100, 8), buf(200, 8), buf(300, 8), buf(400, 8));
    for r in [a, b, c] {
        f.call(&[(r, Role::Output)]);
    }
    f.call(&[(a, Role::Output)]); // a is now the most recent, b the least.
    f.log.take();
    assert_eq!(f.call(&[(d, Role::Output)]).0, [Offer::Registered]);
    assert_eq!(f.log.take(), ["release 200", "drop 200", "acquire 400"], "unregistered before its token goes");
    // A call that uses c, a and d leaves nothing to evict for another 8 MiB.
    let (offers, ranges) = f.call(&[(c, Role::Output), (a, Role::Output), (d, Role::Output), (b, Role::Output)]);
    assert_eq!(offers, [Offer::Cached, Offer::Cached, Offer::Cached, Offer::Skipped]);
    assert_eq!(ranges, [a, c, d].iter().copied().filter(|r| ranges.contains(r)).collect::<Vec<_>>());
    assert_eq!(ranges.len(), 3);
    assert_eq!(f.log.count("release"), 0);
    assert_eq!(f.pins.stats().bytes, 24 * MIB);
}

#[test]
fn small_overlapping_and_oversized_buffers_are_not_registered() {
    let mut f = fixture(16, vec![]);
    assert_eq!(f.offer(HostRange { addr: 0, bytes: MIN_PIN_BYTES - 4 }, Role::Output), Offer::Skipped);
    assert_eq!(f.offer(buf(100, 32), Role::Output), Offer::Skipped, "over the whole budget");
    assert_eq!(f.offer(buf(200, 8), Role::Output), Offer::Registered);
    assert_eq!(f.offer(HostRange { addr: 204 * MIB, bytes: 8 * MIB }, Role::Output), Offer::Skipped, "overlaps");
    assert_eq!(f.log.take(), ["acquire 200"]);
}

#[test]
fn a_refused_registration_leaves_the_buffer_staged_and_is_not_retried() {
    let refused = buf(100, 8);
    let mut f = fixture(64, vec![refused]);
    for _ in 0..3 {
        assert_eq!(f.call(&[(refused, Role::Output)]), (vec![Offer::Skipped], vec![]));
    }
    assert_eq!(f.log.take(), ["acquire 100", "drop 100"], "asked once; its token dropped");
    assert_eq!(f.pins.stats().refusals, 1);
    // release_all forgets the refusal: a later call may try again.
    f.pins.release_all();
    f.call(&[(refused, Role::Output)]);
    assert_eq!(f.log.count("acquire"), 1);
}

#[test]
fn a_buffer_whose_memory_moved_is_released_before_the_call() {
    let mut f = fixture(64, vec![]);
    let out = buf(100, 8);
    f.call(&[(out, Role::Output)]);
    *f.gone.lock().unwrap() = true;
    f.log.take();
    assert_eq!(f.call(&[(out, Role::Output)]), (vec![Offer::Cached], vec![]), "not used by the call");
    assert_eq!(f.log.take(), ["release 100", "drop 100"]);
    assert_eq!(f.pins.stats().buffers, 0);
}

#[test]
fn everything_is_released_once_on_drop_and_by_release_all() {
    let mut f = fixture(64, vec![]);
    let (a, b) = (buf(100, 8), buf(200, 8));
    f.call(&[(a, Role::Output), (b, Role::Output)]);
    f.pins.release_all();
    f.pins.release_all();
    assert_eq!(f.log.count("release"), 2);
    f.call(&[(a, Role::Output)]);
    let log = f.log.clone();
    drop(f);
    let events = log.take();
    assert_eq!(events.iter().filter(|e| e.starts_with("release")).count(), 3, "{events:?}");
    assert_eq!(events[events.len() - 2..], ["release 100".to_string(), "drop 100".to_string()]);
}

/// A driver that records, and refuses ranges in `refuse`.
#[derive(Default)]
struct FakeDriver {
    log: Log,
    refuse: Vec<HostRange>,
}

impl HostDriver for FakeDriver {
    fn register(&self, r: HostRange) -> Result<(), String> {
        self.log.push(format!("register {}", name(r)));
        if self.refuse.contains(&r) {
            Err("refused".into())
        } else {
            Ok(())
        }
    }
    fn unregister(&self, r: HostRange) {
        self.log.push(format!("unregister {}", name(r)));
    }
    fn wait_idle(&self) {
        self.log.push("wait".into());
    }
}

#[test]
fn the_registry_counts_holders_and_unregisters_once_after_the_copies() {
    let reg = Registry::new(FakeDriver { refuse: vec![buf(300, 8)], ..Default::default() });
    let (a, b) = (buf(100, 8), HostRange { addr: 200 * MIB, bytes: 8 * MIB - 4096 + 100 });
    assert!(reg.acquire(a) && reg.acquire(a), "a second holder of the same range");
    assert!(!reg.acquire(HostRange { addr: 100 * MIB + 4096, bytes: MIB }), "inside a registered range");
    assert!(!reg.acquire(buf(300, 8)), "the driver refused");
    assert!(reg.acquire(b));
    // b ends 100 bytes into a page; a range starting after those bytes still shares that page.
    assert!(!reg.acquire(HostRange { addr: b.end() + 8, bytes: MIB }), "shares a page, not a byte");
    reg.release(a);
    assert_eq!(reg.registered(), [(a, 1), (b, 1)]);
    reg.release(a);
    reg.release(a); // not held any more: ignored, not unregistered twice
    reg.release(b);
    assert!(reg.registered().is_empty());
    let log = reg.driver().log.take();
    assert_eq!(
        log,
        ["register 100", "register 300", "register 200", "wait", "unregister 100", "wait", "unregister 200"]
    );
}

#[test]
fn copies_are_direct_only_inside_their_call_and_only_within_its_ranges() {
    let pinned = HostRange { addr: 0x1000_0000, bytes: 16 * MIB };
    let inside = HostRange { addr: pinned.addr + MIB, bytes: 8 * MIB };
    let straddling = HostRange { addr: pinned.end() - MIB, bytes: 8 * MIB };
    let small = HostRange { addr: 0x9000_0000, bytes: 1024 };
    let large = HostRange { addr: 0x9000_0000, bytes: 64 * MIB };
    assert_eq!(route(inside, true), Route::Staged, "no call: nothing is direct");
    let r = PinnedCall::new(vec![pinned], None).run(|| {
        assert_eq!(route(inside, true), Route::Direct);
        assert_eq!(route(pinned, false), Route::Direct);
        assert_eq!(route(straddling, true), Route::Staged);
        assert_eq!(route(small, true), Route::Plain);
        assert_eq!(route(large, false), Route::Plain);
        Err::<(), _>(yolo_loss_core::LossError::invalid("the call failed"))
    });
    assert_eq!(r.unwrap_err().message, "the call failed");
    assert_eq!(route(inside, true), Route::Staged, "the call's ranges end with it, error or not");
    let panicked =
        std::panic::catch_unwind(|| PinnedCall::new(vec![pinned], None).run(|| -> Result<(), _> { panic!() }));
    assert!(panicked.is_err());
    assert_eq!(route(inside, true), Route::Staged, "and when it panics");
}

/// On a GPU: a detection loss with its predictions and gradient buffers registered gives the same bits as without,
/// and the registrations go with the cache.
#[test]
fn registered_buffers_give_the_same_results_on_the_gpu() {
    use crate::detection::tests::common::refs;
    use crate::detection::tests::parity::{synthetic, SynthSpec};
    use crate::test_support::gpu_or_skip;
    use crate::CudaDetectionLoss;
    use yolo_loss_core::TaskLoss;

    let Some(_) = gpu_or_skip("pinned::registered_buffers_give_the_same_results_on_the_gpu") else { return };
    // Every level at least MIN_PIN_BYTES (the smallest: 8 × 144 × 20 × 20 values).
    let case = synthetic(&SynthSpec { batch: 8, img_h: 640, img_w: 640, nc: 80, ..Default::default() });
    let (feats, batch) = (refs(&case.levels), case.labels.det());
    let loss = CudaDetectionLoss::new(case.cfg.clone()).unwrap();
    let want = loss.value_and_grad(&feats, &batch).unwrap();
    let mut out: Vec<Vec<f32>> = want.grads.iter().map(|g| vec![f32::NAN; g.len()]).collect();

    /// The test's vectors outlive the cache (dropped at the end of the test, after it).
    struct Borrowed(HostRange);
    // SAFETY: see above; the vectors are never resized.
    unsafe impl Keepalive for Borrowed {
        fn range(&mut self) -> Option<HostRange> {
            Some(self.0)
        }
    }
    let mut pins = HostPins::<Borrowed>::on_device(0).expect("cuda:0 is open");
    for call in 0..3 {
        for f in &feats {
            pins.offer(HostRange::of(f.data), Role::Input, || Some(Borrowed(HostRange::of(f.data))));
        }
        for o in &out {
            pins.offer(HostRange::of(o), Role::Output, || Some(Borrowed(HostRange::of(o))));
        }
        let prepared = pins.prepare();
        assert_eq!(prepared.ranges().len(), if call == 0 { out.len() } else { out.len() + feats.len() });
        let mut slices: Vec<&mut [f32]> = out.iter_mut().map(|v| v.as_mut_slice()).collect();
        let (l, items) = prepared.run(|| loss.value_and_grad_overwrite(&feats, &batch, &mut slices)).unwrap();
        assert_eq!((l, items), (want.loss.clone(), want.loss_items.clone()), "call {call}");
        for (got, w) in out.iter().zip(&want.grads) {
            assert!(got.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits()), "call {call}: gradients differ");
        }
        out.iter_mut().for_each(|o| o.fill(f32::NAN));
    }
    assert_eq!(pins.stats().registrations as usize, out.len() + feats.len());
    drop(pins);
    assert!(super::registry::registry().registered().is_empty());
}
