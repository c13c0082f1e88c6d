//! The batching policy: decides when a batch is ready, and nothing else.
//!
//! It is pure: no I/O, no clock of its own, no async. The caller hands it the time with every
//! call, so the same code runs in the batcher (real time), in tests (a fake or paused clock) and
//! in the simulator (virtual time).
//!
//! Layout:
//! - [`Policy`]: the buffer and the decision, under one of two [`Rule`]s:
//!   - `Fixed`, the classic wait-or-full: flush at `max_batch_size` tasks, or `max_wait` after
//!     the first task of the current batch, whichever comes first;
//!   - `Adaptive`: the same bounds, plus an early flush when waiting cannot fill the batch and
//!     at least half the worker's slots are idle, and a longer hold (up to `max_hold`) when the batch would take
//!     the worker's last free slot. The rule, with a worked example, is in `docs/batching.md`.
//! - [`Load`]: what the caller tells the policy of the worker's slots at each decision.
//! - [`ArrivalRate`]: the smoothed arrival rates the adaptive rule uses (over 1 s and over
//!   `max_wait`; it takes the larger).
//! - [`Batch`] and [`FlushReason`]: what a flush hands back, and why it happened.

mod rate;

pub use rate::ArrivalRate;

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// Article default: the fixed batch API accepts at most 64 inputs.
pub const DEFAULT_MAX_BATCH_SIZE: usize = 64;
/// Article default: no task waits more than 50 ms in the batch buffer.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_millis(50);
/// Adaptive default: the longest a batch is held when it would take the worker's last slot.
pub const DEFAULT_MAX_HOLD: Duration = Duration::from_millis(100);
/// Adaptive default: the shortest wait before an early flush, so that the first tasks of a
/// burst gather into a batch instead of each leaving alone before the rate shows the burst.
pub const DEFAULT_MIN_WAIT: Duration = Duration::from_millis(5);
/// Adaptive default: the arrival rate is smoothed over this time constant.
pub const DEFAULT_RATE_WINDOW: Duration = Duration::from_secs(1);

/// Why a batch left the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlushReason {
    /// The buffer reached `max_batch_size`.
    Full,
    /// `max_wait` passed since the first task of the batch arrived (with the adaptive rule and
    /// no other worker slot free, `max_hold`).
    Timer,
    /// The adaptive rule: waiting would not fill the batch before its deadline, and the worker
    /// has slots to spare, so the batch goes now.
    Early,
    /// The batcher is shutting down and flushes what it holds.
    Drain,
}

impl FlushReason {
    /// Stable lowercase name, used as a metric label and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FlushReason::Full => "full",
            FlushReason::Timer => "timer",
            FlushReason::Early => "early",
            FlushReason::Drain => "drain",
        }
    }
}

impl fmt::Display for FlushReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A batch the policy released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch<T> {
    /// The items, in arrival order; never more than `max_batch_size`.
    pub items: Vec<T>,
    /// Why it was released.
    pub reason: FlushReason,
    /// When its first item arrived in the buffer, to measure the time spent waiting.
    pub opened_at: Instant,
}

/// The limits of a wait-or-full policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most items in one batch (the worker API's limit). At least 1.
    pub max_batch_size: usize,
    /// Longest time the first item of a batch waits for company.
    pub max_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            max_wait: DEFAULT_MAX_WAIT,
        }
    }
}

/// Settings of the adaptive rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adaptive {
    /// Time constant of the arrival-rate estimate.
    pub rate_window: Duration,
    /// Longest wait of a batch's first task when the batch would take the worker's last free
    /// slot; never less than `max_wait`.
    pub max_hold: Duration,
    /// Shortest wait of a batch's first task before an early flush; never more than
    /// `max_wait`.
    pub min_wait: Duration,
}

impl Default for Adaptive {
    fn default() -> Self {
        Adaptive {
            rate_window: DEFAULT_RATE_WINDOW,
            max_hold: DEFAULT_MAX_HOLD,
            min_wait: DEFAULT_MIN_WAIT,
        }
    }
}

/// When a batch goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rule {
    /// Wait-or-full, whatever the load.
    #[default]
    Fixed,
    /// Wait-or-full within bounds, steered by the arrival rate and the worker's free slots.
    Adaptive(Adaptive),
}

impl Rule {
    /// Stable lowercase name, as `--policy` takes it.
    pub fn name(&self) -> &'static str {
        match self {
            Rule::Fixed => "fixed",
            Rule::Adaptive(_) => "adaptive",
        }
    }
}

/// A name that is no batching rule's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownRule(pub String);

impl fmt::Display for UnknownRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown batching policy {:?}: expected \"fixed\" or \"adaptive\"",
            self.0
        )
    }
}

impl std::error::Error for UnknownRule {}

impl FromStr for Rule {
    type Err = UnknownRule;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fixed" => Ok(Rule::Fixed),
            "adaptive" => Ok(Rule::Adaptive(Adaptive::default())),
            other => Err(UnknownRule(other.to_owned())),
        }
    }
}

/// The worker's slots as the caller sees them when it asks for a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Slots free besides the one the next batch would take.
    pub idle_slots: usize,
    /// Slots in all (the current in-flight limit).
    pub total_slots: usize,
}

impl Load {
    /// Idle slots at or above which the adaptive rule may flush early: half of all slots, at
    /// least one. Below it, the worker is busy enough that fuller batches pay, and the idle
    /// half is kept to absorb a burst with full batches.
    pub fn spare_threshold(&self) -> usize {
        (self.total_slots / 2).max(1)
    }
}

/// The batch buffer and the decision of when it goes.
///
/// Items are pushed as they arrive. A batch is ready when `max_batch_size` items are buffered
/// (reason `Full`), or when the rule's deadline has passed since the first buffered item arrived
/// (reason `Timer`), or — adaptive rule only — when an early flush pays (reason `Early`). Items
/// past a full batch stay buffered for the next one, and the next batch's window opens at its
/// own first item's arrival.
#[derive(Debug)]
pub struct Policy<T> {
    /// The configured limits.
    limits: Limits,
    /// Which rule decides.
    rule: Rule,
    /// Buffered items with their arrival time, oldest first.
    buffer: VecDeque<(T, Instant)>,
    /// Arrivals per second over `rate_window`, for the adaptive rule: slow to forget a busy
    /// spell, so a brief lull does not trigger early flushes.
    rate: ArrivalRate,
    /// Arrivals per second over `max_wait`: quick to see a burst begin, so a burst does not
    /// leave in small early batches. The adaptive rule uses the larger of the two.
    recent: ArrivalRate,
}

impl<T> Policy<T> {
    /// A policy with the given limits and rule. A `max_batch_size` of 0 is taken as 1, an
    /// adaptive `max_hold` below `max_wait` as `max_wait`, and a `min_wait` above it as
    /// `max_wait`.
    pub fn new(limits: Limits, rule: Rule) -> Self {
        let limits = Limits {
            max_batch_size: limits.max_batch_size.max(1),
            ..limits
        };
        let rule = match rule {
            Rule::Fixed => Rule::Fixed,
            Rule::Adaptive(a) => Rule::Adaptive(Adaptive {
                max_hold: a.max_hold.max(limits.max_wait),
                min_wait: a.min_wait.min(limits.max_wait),
                ..a
            }),
        };
        let window = match rule {
            Rule::Adaptive(a) => a.rate_window,
            Rule::Fixed => DEFAULT_RATE_WINDOW,
        };
        Policy {
            limits,
            rule,
            buffer: VecDeque::with_capacity(limits.max_batch_size),
            rate: ArrivalRate::new(window),
            recent: ArrivalRate::new(limits.max_wait),
        }
    }

    /// Wait-or-full.
    pub fn fixed(limits: Limits) -> Self {
        Policy::new(limits, Rule::Fixed)
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The rule in force.
    pub fn rule(&self) -> Rule {
        self.rule
    }

    /// The arrival-rate estimate at `now`, in items per second: the larger of the rate over
    /// `rate_window` and the rate over `max_wait`.
    pub fn arrival_rate(&self, now: Instant) -> f64 {
        self.rate.at(now).max(self.recent.at(now))
    }

    /// Buffers one item that arrived at `now`.
    pub fn push(&mut self, item: T, now: Instant) {
        self.push_waited(item, now, Duration::ZERO);
    }

    /// Buffers one item that arrived at `now` after waiting `waited` for a batch on its way
    /// (an admission gathered with others before it was queued). The window counts from when
    /// it began to wait, so that wait is not paid again on top of it: the batch opened then,
    /// if no item already buffered is older. The arrival rate counts the item at `now`.
    pub fn push_waited(&mut self, item: T, now: Instant, waited: Duration) {
        let began = now.checked_sub(waited).unwrap_or(now);
        if let Some((_, opened)) = self.buffer.front_mut() {
            *opened = (*opened).min(began);
        }
        self.buffer.push_back((item, began));
        self.rate.record(1, now);
        self.recent.record(1, now);
    }

    /// How many items are buffered.
    pub fn len(&self) -> usize {
        self.buffer.len()
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    /// How many more items fit before the current batch is full (0 when one is ready by size).
    pub fn room(&self) -> usize {
        self.limits.max_batch_size.saturating_sub(self.buffer.len())
    }

    /// When the caller should ask again if nothing arrives: `now` if a batch is ready, else the
    /// earliest time one could become ready under `load`; `None` when nothing is buffered.
    ///
    /// For the early flush this uses the arrival rate as of `now`; as the rate only decays in
    /// silence, the true moment may come slightly sooner, never later than the timer.
    pub fn next_deadline(&self, now: Instant, load: Load) -> Option<Instant> {
        let first = self.first_arrival()?;
        if self.ready_reason(now, load).is_some() {
            return Some(now);
        }
        let timer = first + self.wait_bound(load);
        match self.rule {
            Rule::Fixed => Some(timer),
            Rule::Adaptive(a) => {
                if load.idle_slots == 0 || load.idle_slots < load.spare_threshold() {
                    return Some(timer);
                }
                let per_sec = self.arrival_rate(now);
                // Waiting cannot fill the batch once the time left is below room / rate (at
                // once if nothing arrives at all); and never before `min_wait`.
                let cannot_fill = if per_sec > 0.0 {
                    let fill = Duration::try_from_secs_f64(self.room() as f64 / per_sec)
                        .unwrap_or(Duration::MAX);
                    timer.checked_sub(fill).unwrap_or(first).max(first)
                } else {
                    first
                };
                let early = cannot_fill.max(first + a.min_wait);
                // Past `early` and still not ready is the boundary case (exactly full at the
                // deadline): fall back to the timer rather than have the caller spin.
                Some(if early > now { early.min(timer) } else { timer })
            }
        }
    }

    /// Whether a batch would be released at `now` under `load`, without releasing it.
    pub fn ready_reason(&self, now: Instant, load: Load) -> Option<FlushReason> {
        let first = self.first_arrival()?;
        if self.buffer.len() >= self.limits.max_batch_size {
            return Some(FlushReason::Full);
        }
        if now >= first + self.wait_bound(load) {
            return Some(FlushReason::Timer);
        }
        match self.rule {
            Rule::Fixed => None,
            Rule::Adaptive(a) => {
                if load.idle_slots == 0
                    || load.idle_slots < load.spare_threshold()
                    || now < first + a.min_wait
                {
                    return None;
                }
                let left = (first + self.limits.max_wait)
                    .saturating_duration_since(now)
                    .as_secs_f64();
                let expected = self.buffer.len() as f64 + self.arrival_rate(now) * left;
                (expected < self.limits.max_batch_size as f64).then_some(FlushReason::Early)
            }
        }
    }

    /// Releases the next batch if one is ready at `now` under `load`.
    pub fn take_ready(&mut self, now: Instant, load: Load) -> Option<Batch<T>> {
        let reason = self.ready_reason(now, load)?;
        Some(self.take(reason))
    }

    /// Releases up to one batch of whatever is buffered, ready or not (for shutdown).
    pub fn drain(&mut self) -> Option<Batch<T>> {
        if self.buffer.is_empty() {
            None
        } else {
            Some(self.take(FlushReason::Drain))
        }
    }

    /// How long the first item may wait under `load`: `max_wait`, or with the adaptive rule and
    /// no other slot free, `max_hold`.
    fn wait_bound(&self, load: Load) -> Duration {
        match self.rule {
            Rule::Adaptive(a) if load.idle_slots == 0 => a.max_hold,
            _ => self.limits.max_wait,
        }
    }

    fn first_arrival(&self) -> Option<Instant> {
        self.buffer.front().map(|(_, arrived)| *arrived)
    }

    fn take(&mut self, reason: FlushReason) -> Batch<T> {
        let n = self.buffer.len().min(self.limits.max_batch_size);
        let opened_at = self
            .first_arrival()
            .expect("take() is only called with a non-empty buffer. This is a bug.");
        let items = self.buffer.drain(..n).map(|(item, _)| item).collect();
        Batch {
            items,
            reason,
            opened_at,
        }
    }
}

#[cfg(test)]
mod tests;
