//! The decision of the gather loop, free of I/O: given the policy, the time and the slots'
//! load, either a batch goes now or the batcher reads more, up to a count and a deadline.
//!
//! The async driver (`driver.rs`) runs it against the queue in real time; the simulator
//! (`crates/simulate`) runs the very same function in virtual time, so both form the same
//! batches from the same arrivals.

use std::time::{Duration, Instant};

use batchgate_policy::{Batch, Load, Policy};

/// What a batcher holding a free slot does next.
#[derive(Debug)]
pub enum Step<T> {
    /// Send this batch to the worker.
    Dispatch(Batch<T>),
    /// Read at most `max` more items, waiting for the first of them no later than `until`
    /// (`None`: nothing is buffered, wait as long as the reader likes).
    Read {
        /// Room left in the batch.
        max: usize,
        /// When the policy wants to be asked again if nothing arrives.
        until: Option<Instant>,
    },
}

/// The next step at `now` under `load`; releases the batch from the policy when one is ready.
pub fn step<T>(policy: &mut Policy<T>, now: Instant, load: Load) -> Step<T> {
    match policy.take_ready(now, load) {
        Some(batch) => Step::Dispatch(batch),
        None => Step::Read {
            max: policy.room(),
            until: policy.next_deadline(now, load),
        },
    }
}

/// Buffers items read at `now`.
pub fn absorb<T>(policy: &mut Policy<T>, items: impl IntoIterator<Item = T>, now: Instant) {
    absorb_waited(
        policy,
        items.into_iter().map(|item| (item, Duration::ZERO)),
        now,
    );
}

/// Buffers items read at `now`, each with how long it had waited for a batch before it was
/// queued (`Delivery::waited`: an admission's gathering on Redis), which its batch's window
/// counts as waited already (`Policy::push_waited`).
pub fn absorb_waited<T>(
    policy: &mut Policy<T>,
    items: impl IntoIterator<Item = (T, Duration)>,
    now: Instant,
) {
    for (item, waited) in items {
        policy.push_waited(item, now, waited);
    }
}
