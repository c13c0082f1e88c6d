//! Worker slots: how many worker calls may be under way at once, and the backpressure that
//! moves that limit.
//!
//! The limit starts at `max_inflight_batches`. With backpressure on, it follows the worker's
//! signals AIMD-style, as TCP's congestion window does: an overload answer (`429`/`503`) halves
//! it — at most once per round trip (the smoothed duration of a worker call), so the answers
//! to calls sent before the cut do not cut it again — and every `limit` successful calls raise
//! it by one, back up to the configured maximum. A lower limit does not cancel calls under
//! way; new batches wait until fewer than `limit` are out.
//!
//! [`SlotState`] holds the count and the limit and makes every decision on them, with the time
//! as an argument; `Slots` only adds the lock and the wait for a free slot.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use batchgate_policy::Load;
use tokio::sync::Notify;

/// The round trip assumed before any call was measured: a batch at the reference deployment's figures.
pub const INITIAL_ROUND_TRIP: Duration = Duration::from_millis(200);
/// Shortest quiet time after a cut, whatever the round trip.
const MIN_COOLDOWN: Duration = Duration::from_millis(5);
/// Weight of a new call duration in the smoothed round trip.
const ROUND_TRIP_WEIGHT: f64 = 0.125;

/// The limit and its arithmetic, free of I/O so it can be tested with a fake clock.
#[derive(Debug, Clone)]
pub struct Aimd {
    /// Calls allowed at once now; in `1..=max`.
    limit: usize,
    /// The configured ceiling.
    max: usize,
    /// Whether signals move the limit at all.
    enabled: bool,
    /// Successes since the last raise.
    successes: usize,
    /// When the limit was last cut.
    last_cut: Option<Instant>,
    /// Smoothed duration of a worker call: the quiet time after a cut.
    round_trip: Duration,
}

impl Aimd {
    /// A limit of `max` (at least 1), moved by signals only if `enabled`, assuming calls take
    /// `round_trip` until one is measured.
    pub fn new(max: usize, enabled: bool, round_trip: Duration) -> Self {
        let max = max.max(1);
        Aimd {
            limit: max,
            max,
            enabled,
            successes: 0,
            last_cut: None,
            round_trip,
        }
    }

    /// Folds one call's duration into the smoothed round trip (as TCP's SRTT).
    pub fn timed(&mut self, took: Duration) {
        let rtt = self.round_trip.as_secs_f64();
        let next = rtt + ROUND_TRIP_WEIGHT * (took.as_secs_f64() - rtt);
        self.round_trip = Duration::from_secs_f64(next.max(0.0));
    }

    /// Calls allowed at once now.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The worker said it is overloaded at `now`. Returns whether the limit was cut.
    pub fn overloaded(&mut self, now: Instant) -> bool {
        if !self.enabled {
            return false;
        }
        if self.last_cut.is_some_and(|cut| {
            now.saturating_duration_since(cut) < self.round_trip.max(MIN_COOLDOWN)
        }) {
            return false;
        }
        self.last_cut = Some(now);
        self.successes = 0;
        let before = self.limit;
        self.limit = (self.limit / 2).max(1);
        self.limit < before
    }

    /// A worker call succeeded. Returns whether the limit was raised.
    pub fn succeeded(&mut self) -> bool {
        if !self.enabled || self.limit >= self.max {
            return false;
        }
        self.successes += 1;
        if self.successes >= self.limit {
            self.successes = 0;
            self.limit += 1;
            return true;
        }
        false
    }
}

/// The limiter the batcher and its dispatches share.
#[derive(Debug)]
pub(crate) struct Slots {
    state: Mutex<SlotState>,
    /// Woken when a slot frees or the limit rises.
    freed: Notify,
}

/// The slots' state and every decision on it, without locks or waiting: the limiter below
/// wraps it for the async driver, and the simulator (`crates/simulate`) drives it in virtual
/// time.
#[derive(Debug, Clone)]
pub struct SlotState {
    aimd: Aimd,
    /// Slots held now (batches being gathered or dispatched).
    in_use: usize,
}

impl SlotState {
    /// No slot held, under the limit `aimd` keeps.
    pub fn new(aimd: Aimd) -> Self {
        SlotState { aimd, in_use: 0 }
    }

    /// Takes a slot if fewer than the limit are held; whether it did.
    pub fn try_take(&mut self) -> bool {
        if self.in_use < self.aimd.limit() {
            self.in_use += 1;
            true
        } else {
            false
        }
    }

    /// Gives a slot back.
    pub fn release(&mut self) {
        self.in_use = self.in_use.saturating_sub(1);
    }

    /// The worker's slots as seen by the holder of one: free ones besides its own, and the
    /// limit.
    pub fn load(&self) -> Load {
        Load {
            idle_slots: self.aimd.limit().saturating_sub(self.in_use),
            total_slots: self.aimd.limit(),
        }
    }

    /// The limit now.
    pub fn limit(&self) -> usize {
        self.aimd.limit()
    }

    /// Slots held now.
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// Tells the limit how a worker call went at `now` and how long it took; returns whether
    /// the limit rose (a waiter may now take a slot).
    pub fn observe(&mut self, overloaded: bool, took: Duration, now: Instant) -> bool {
        if overloaded {
            self.aimd.overloaded(now);
            false
        } else {
            // An overload answer is quick and says nothing of how long work takes.
            self.aimd.timed(took);
            self.aimd.succeeded()
        }
    }
}

/// One slot; frees itself when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Arc<Slots>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.lock().release();
        self.slots.freed.notify_one();
    }
}

impl Slots {
    pub(crate) fn new(aimd: Aimd) -> Arc<Self> {
        Arc::new(Slots {
            state: Mutex::new(SlotState::new(aimd)),
            freed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, SlotState> {
        // The state is a pair of integers, consistent after every statement: a panic elsewhere
        // cannot leave it half-written, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until fewer than `limit` slots are held, and takes one.
    pub(crate) async fn acquire(self: &Arc<Self>) -> Slot {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Register before checking, so a release between the check and the wait is seen.
            freed.as_mut().enable();
            if self.lock().try_take() {
                return Slot {
                    slots: self.clone(),
                };
            }
            freed.await;
        }
    }

    /// The worker's slots as seen by the holder of one: free ones besides its own, and the
    /// limit.
    pub(crate) fn load(&self) -> Load {
        self.lock().load()
    }

    /// The limit now.
    pub(crate) fn limit(&self) -> usize {
        self.lock().limit()
    }

    /// Tells the limiter how a worker call went and how long it took; returns the limit after.
    pub(crate) fn observe(&self, overloaded: bool, took: Duration, now: Instant) -> usize {
        let mut state = self.lock();
        let raised = state.observe(overloaded, took, now);
        let limit = state.limit();
        drop(state);
        if raised {
            self.freed.notify_one();
        }
        limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn overload_halves_once_per_round_trip_and_successes_raise_by_one() {
        let t0 = Instant::now();
        let mut a = Aimd::new(32, true, 500 * MS);
        assert!(a.overloaded(t0));
        assert_eq!(a.limit(), 16);
        // Answers to calls sent before the cut arrive within the cooldown: no further cut.
        assert!(!a.overloaded(t0 + 100 * MS));
        assert_eq!(a.limit(), 16);
        assert!(a.overloaded(t0 + 600 * MS));
        assert_eq!(a.limit(), 8);
        // 8 successes raise it to 9, 9 more to 10.
        for _ in 0..7 {
            assert!(!a.succeeded());
        }
        assert!(a.succeeded());
        assert_eq!(a.limit(), 9);
        for _ in 0..9 {
            a.succeeded();
        }
        assert_eq!(a.limit(), 10);
    }

    #[test]
    fn the_quiet_time_follows_the_measured_round_trip() {
        let t0 = Instant::now();
        let mut a = Aimd::new(32, true, 500 * MS);
        for _ in 0..100 {
            a.timed(20 * MS);
        }
        assert!(a.overloaded(t0));
        assert!(!a.overloaded(t0 + 10 * MS));
        assert!(a.overloaded(t0 + 25 * MS), "one round trip later");
        assert_eq!(a.limit(), 8);
    }

    #[test]
    fn limit_stays_within_one_and_the_maximum() {
        let t0 = Instant::now();
        let mut a = Aimd::new(4, true, MS);
        for i in 0..10 {
            a.overloaded(t0 + 2 * MS * i);
        }
        assert_eq!(a.limit(), 1);
        for _ in 0..100 {
            a.succeeded();
        }
        assert_eq!(a.limit(), 4);
    }

    #[test]
    fn disabled_limit_never_moves() {
        let mut a = Aimd::new(8, false, MS);
        assert!(!a.overloaded(Instant::now()));
        assert_eq!(a.limit(), 8);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_holds_new_batches_back_until_enough_finish() {
        let slots = Slots::new(Aimd::new(4, true, MS));
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(slots.acquire().await);
        }
        assert_eq!(slots.load().idle_slots, 0);
        assert_eq!(slots.observe(true, MS, Instant::now()), 2);
        held.pop();
        // Three still out against a limit of 2: the next waits until two more finish.
        let waiter = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire().await }
        });
        tokio::time::sleep(10 * MS).await;
        assert!(!waiter.is_finished());
        held.pop();
        tokio::time::sleep(10 * MS).await;
        assert!(!waiter.is_finished());
        held.pop();
        let _slot = tokio::time::timeout(10 * MS, waiter)
            .await
            .expect("a slot frees")
            .expect("join");
        assert_eq!(
            slots.load(),
            Load {
                idle_slots: 0,
                total_slots: 2
            }
        );
    }
}
