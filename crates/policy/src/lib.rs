//! The batching policy: decides when a batch is ready, and nothing else.
//!
//! It is pure: no I/O, no clock of its own, no async. The caller hands it the time with every
//! call, so the same code runs in the batcher (real time), in tests (a fake or paused clock) and
//! in the simulator (virtual time).
//!
//! Layout:
//! - [`WaitOrFull`]: the article's hybrid trigger — flush at `max_batch_size` tasks, or
//!   `max_wait` after the first task of the current batch, whichever comes first.
//! - [`Batch`] and [`FlushReason`]: what a flush hands back, and why it happened.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// Article default: the fixed batch API accepts at most 64 inputs.
pub const DEFAULT_MAX_BATCH_SIZE: usize = 64;
/// Article default: no task waits more than 50 ms in the batch buffer.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_millis(50);

/// Why a batch left the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlushReason {
    /// The buffer reached `max_batch_size`.
    Full,
    /// `max_wait` passed since the first task of the batch arrived.
    Timer,
    /// The batcher is shutting down and flushes what it holds.
    Drain,
}

impl FlushReason {
    /// Stable lowercase name, used as a metric label and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FlushReason::Full => "full",
            FlushReason::Timer => "timer",
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

/// Wait-or-full: the article's hybrid trigger.
///
/// Items are pushed as they arrive. A batch is ready when `max_batch_size` items are buffered
/// (reason `Full`), or when `max_wait` has passed since the first buffered item arrived (reason
/// `Timer`). Items past a full batch stay buffered for the next one, and the next batch's window
/// opens at its own first item's arrival.
#[derive(Debug)]
pub struct WaitOrFull<T> {
    /// The configured limits.
    limits: Limits,
    /// Buffered items with their arrival time, oldest first.
    buffer: VecDeque<(T, Instant)>,
}

impl<T> WaitOrFull<T> {
    /// A policy with the given limits. A `max_batch_size` of 0 is taken as 1.
    pub fn new(limits: Limits) -> Self {
        let limits = Limits {
            max_batch_size: limits.max_batch_size.max(1),
            ..limits
        };
        WaitOrFull {
            limits,
            buffer: VecDeque::with_capacity(limits.max_batch_size),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Buffers one item that arrived at `now`.
    pub fn push(&mut self, item: T, now: Instant) {
        self.buffer.push_back((item, now));
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

    /// When the current batch becomes ready by time, if anything is buffered.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.buffer
            .front()
            .map(|(_, arrived)| *arrived + self.limits.max_wait)
    }

    /// Whether a batch would be released at `now`, without releasing it.
    pub fn ready_reason(&self, now: Instant) -> Option<FlushReason> {
        if self.buffer.len() >= self.limits.max_batch_size {
            Some(FlushReason::Full)
        } else if self.next_deadline().is_some_and(|deadline| now >= deadline) {
            Some(FlushReason::Timer)
        } else {
            None
        }
    }

    /// Releases the next batch if one is ready at `now`.
    pub fn take_ready(&mut self, now: Instant) -> Option<Batch<T>> {
        let reason = self.ready_reason(now)?;
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

    fn take(&mut self, reason: FlushReason) -> Batch<T> {
        let n = self.buffer.len().min(self.limits.max_batch_size);
        let opened_at = self
            .buffer
            .front()
            .map(|(_, arrived)| *arrived)
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
