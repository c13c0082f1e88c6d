//! Faults injected on purpose, to test and benchmark what batchgate does with a worker that
//! fails, slows down, hangs, crashes or pushes back.
//!
//! Every call draws its fate once, when it arrives (before it waits for a slot): hang or not,
//! slow or not, failed or not. Draws come from one generator, so a [`Faults::seed`] makes the
//! faults reproducible for a given order of arriving calls.

use std::sync::Mutex;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Default for [`Faults::slow_factor`]: a slow call takes ten times its modelled cost.
pub const DEFAULT_SLOW_FACTOR: f64 = 10.0;

/// What to inject. The default injects nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Fraction of calls, in [0, 1], that fail at random with 500 after spending their
    /// modelled time.
    pub error_rate: f64,
    /// Any batch with an input containing this fails whole with 500.
    pub poison_pattern: Option<String>,
    /// Fraction of calls, in [0, 1], that take [`Faults::slow_factor`] times their modelled
    /// cost (a GPU throttling, a noisy neighbour).
    pub slow_rate: f64,
    /// How many times its modelled cost a slow call takes (at least 1).
    pub slow_factor: f64,
    /// Fraction of calls, in [0, 1], that never answer: only the client's timeout ends them.
    /// A hung call holds no slot and no queue place (the request was lost, not the GPU), so
    /// hangs cannot wedge the worker; it is dropped when its client disconnects, and ends
    /// with 503 when the server shuts down so that it does not hold the drain forever.
    pub hang_rate: f64,
    /// After this many calls have run to the end of their modelled time, the worker "crashes":
    /// those calls answer, every later or still running call never does, and
    /// the worker server's `run` (`batchgate_worker_server`) returns `Stopped::Crashed` so that the
    /// `batchgate worker` process exits. `None`: never.
    pub crash_after: Option<u64>,
    /// Overload signalling: when every slot is busy and this many calls already wait for one,
    /// a call is refused at once with 429 instead of queueing. `None`: the wait queue is
    /// unbounded.
    pub max_queued_calls: Option<usize>,
    /// Seed of the fault draws, for reproducible runs; `None` seeds from the OS.
    pub seed: Option<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            error_rate: 0.0,
            poison_pattern: None,
            slow_rate: 0.0,
            slow_factor: DEFAULT_SLOW_FACTOR,
            hang_rate: 0.0,
            crash_after: None,
            max_queued_calls: None,
            seed: None,
        }
    }
}

/// The random faults one call was dealt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Fate {
    /// Never answer.
    pub(crate) hang: bool,
    /// Take `slow_factor` times the modelled cost.
    pub(crate) slow: bool,
    /// Fail with 503 once the modelled time is spent.
    pub(crate) fail: bool,
}

/// Deals each call its [`Fate`].
#[derive(Debug)]
pub(crate) struct Dice {
    /// The rates to draw against.
    hang_rate: f64,
    slow_rate: f64,
    error_rate: f64,
    /// One generator for every call: a seed then fixes the whole sequence of fates. Locked
    /// only for the three draws, never across an `.await`.
    rng: Mutex<SmallRng>,
}

impl Dice {
    pub(crate) fn new(faults: &Faults) -> Self {
        let rng = match faults.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_rng(&mut rand::rng()),
        };
        Dice {
            hang_rate: faults.hang_rate,
            slow_rate: faults.slow_rate,
            error_rate: faults.error_rate,
            rng: Mutex::new(rng),
        }
    }

    /// The next call's fate. Three draws every time, whatever the rates, so that a seed gives
    /// the same sequence of fates whichever faults are on.
    pub(crate) fn roll(&self) -> Fate {
        let mut rng = self
            .rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (hang, slow, fail): (f64, f64, f64) = (rng.random(), rng.random(), rng.random());
        Fate {
            hang: hang < self.hang_rate,
            slow: slow < self.slow_rate,
            fail: fail < self.error_rate,
        }
    }
}

#[cfg(test)]
mod tests;
