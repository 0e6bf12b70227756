//! The decision of `device: 'auto'` for one shape key, as a pure value: which backend the next call runs on and,
//! once both have been timed [`PROBES`] times, which one is faster. No clock here: the caller times each call and
//! reports the duration, so the rule is tested with made-up timings.
//!
//! The rule: the probe alternates the backends (CPU first), [`PROBES`] calls each, and keeps each backend's fastest
//! successful call. The minimum, not the mean or median: noise on a shared machine (another process, a page fault,
//! the first call's allocations of a backend: CUDA arenas, the CPU's scratch) only ever adds time, so the fastest of
//! a few calls is the best estimate of what the backend costs, and alternating spreads slow phases over both. The
//! backend with the smaller minimum wins; a tie goes to the CPU (it holds no GPU memory and its bits are those of
//! `device: 'cpu'`). A call that failed on the backend itself (out of GPU memory, a CUDA error) counts as a probe
//! without a time: a backend none of whose probes succeeded loses, and if neither succeeded the CPU is chosen. The
//! decision is final for the key.

use std::time::Duration;

use crate::backend::Backend;

/// Timed calls per backend before the decision: three each, so that one slow first call (allocation, caches, the
/// driver's first launches) cannot decide alone, at a bounded price (the slower backend runs three calls).
pub(crate) const PROBES: u8 = 3;

/// One backend's probe so far: how many calls were timed and the fastest of those that succeeded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    runs: u8,
    best: Option<Duration>,
}

impl Tally {
    fn add(&mut self, took: Option<Duration>) {
        self.runs = self.runs.saturating_add(1);
        self.best = match (self.best, took) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// The state of one shape key: probing (the two tallies), or decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Race {
    Probing { cpu: Tally, cuda: Tally },
    Decided(Backend),
}

impl Default for Race {
    fn default() -> Self {
        Race::Probing { cpu: Tally::default(), cuda: Tally::default() }
    }
}

impl Race {
    /// The backend the next call runs on: the decided one, or while probing the one with fewer timed calls (the CPU
    /// on a tie), so that the two alternate.
    pub fn next(&self) -> Backend {
        match *self {
            Race::Decided(b) => b,
            Race::Probing { cpu, cuda } if cuda.runs < cpu.runs => Backend::Cuda,
            Race::Probing { .. } => Backend::Cpu,
        }
    }

    /// The decided backend, None while probing.
    pub fn decided(&self) -> Option<Backend> {
        match *self {
            Race::Decided(b) => Some(b),
            Race::Probing { .. } => None,
        }
    }

    /// Records a timed call on `backend`: its wall-clock duration, or None where it failed on the backend itself.
    /// Decides once both backends have [`PROBES`] calls. After the decision a late report (a call that started
    /// probing on another thread before it) changes nothing.
    pub fn record(&mut self, backend: Backend, took: Option<Duration>) {
        let Race::Probing { cpu, cuda } = self else { return };
        match backend {
            Backend::Cpu => cpu.add(took),
            Backend::Cuda => cuda.add(took),
        }
        if cpu.runs >= PROBES && cuda.runs >= PROBES {
            *self = Race::Decided(faster(*cpu, *cuda));
        }
    }
}

/// The winner of two complete tallies: the smaller best time; the CPU on a tie or where neither succeeded.
fn faster(cpu: Tally, cuda: Tally) -> Backend {
    match (cpu.best, cuda.best) {
        (Some(c), Some(g)) if g < c => Backend::Cuda,
        (None, Some(_)) => Backend::Cuda,
        _ => Backend::Cpu,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a fake probe call reports: a time in milliseconds, or a failure.
    const OUTCOMES: [Option<u64>; 4] = [Some(1), Some(2), Some(3), None];

    /// The expected winner, computed independently of [`Race`]: the fastest success of each side, compared.
    fn oracle(cpu: &[Option<u64>], cuda: &[Option<u64>]) -> Backend {
        let best = |s: &[Option<u64>]| s.iter().flatten().min().copied();
        match (best(cpu), best(cuda)) {
            (Some(c), Some(g)) if g < c => Backend::Cuda,
            (None, Some(_)) => Backend::Cuda,
            _ => Backend::Cpu,
        }
    }

    /// Every combination of outcomes of the 2·PROBES probe calls (4^6 of them): the calls alternate CPU, CUDA, ...;
    /// nothing is decided before the last; the decision is the oracle's and sticks.
    #[test]
    fn every_outcome_sequence_alternates_then_picks_the_fastest() {
        let calls = 2 * PROBES as u32;
        for code in 0..OUTCOMES.len().pow(calls) {
            let mut race = Race::default();
            let (mut cpu, mut cuda) = (Vec::new(), Vec::new());
            let mut rest = code;
            for i in 0..calls {
                let outcome = OUTCOMES[rest % OUTCOMES.len()];
                rest /= OUTCOMES.len();
                assert_eq!(race.decided(), None, "code {code}: decided before call {i}");
                let want = if i % 2 == 0 { Backend::Cpu } else { Backend::Cuda };
                assert_eq!(race.next(), want, "code {code}: call {i}");
                race.record(want, outcome.map(Duration::from_millis));
                if want == Backend::Cpu { &mut cpu } else { &mut cuda }.push(outcome);
            }
            let winner = oracle(&cpu, &cuda);
            assert_eq!(race.decided(), Some(winner), "code {code}: cpu {cpu:?}, cuda {cuda:?}");
            for b in [Backend::Cpu, Backend::Cuda] {
                race.record(b, Some(Duration::ZERO));
                assert_eq!((race.next(), race.decided()), (winner, Some(winner)), "code {code}: after the decision");
            }
        }
    }

    /// Concurrent calls may report out of turn (two CPU probes in a row): each report counts, and the decision waits
    /// for both sides' PROBES.
    #[test]
    fn reports_out_of_turn_count_and_the_decision_waits_for_both_sides() {
        let mut race = Race::default();
        for _ in 0..5 {
            race.record(Backend::Cpu, Some(Duration::from_micros(900)));
        }
        assert_eq!((race.next(), race.decided()), (Backend::Cuda, None));
        race.record(Backend::Cuda, Some(Duration::from_micros(800)));
        race.record(Backend::Cuda, Some(Duration::from_micros(950)));
        assert_eq!(race.decided(), None);
        race.record(Backend::Cuda, Some(Duration::from_micros(2000)));
        assert_eq!(race.decided(), Some(Backend::Cuda), "0.8 ms beats 0.9 ms");
    }

    #[test]
    fn a_tie_goes_to_the_cpu_and_nanoseconds_count() {
        let decide = |cpu: u64, cuda: u64| {
            let mut race = Race::default();
            for _ in 0..PROBES {
                race.record(Backend::Cpu, Some(Duration::from_nanos(cpu)));
                race.record(Backend::Cuda, Some(Duration::from_nanos(cuda)));
            }
            race.decided()
        };
        assert_eq!(decide(1000, 1000), Some(Backend::Cpu));
        assert_eq!(decide(1000, 999), Some(Backend::Cuda));
        assert_eq!(decide(999, 1000), Some(Backend::Cpu));
    }
}
