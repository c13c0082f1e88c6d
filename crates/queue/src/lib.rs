//! The seams between the gateway and the batcher: the task [`Queue`] and the [`ResultStore`].
//!
//! Both are traits so that the same gateway and batcher code runs on the embedded deployment
//! (in-process implementations, in [`memory`]) and on the distributed one (Redis).
//!
//! Layout:
//! - [`Queue`], [`Delivery`], [`Receipt`], [`QueueError`]: enqueue, read a batch's worth, ack.
//! - [`ResultStore`], [`TaskRecord`], [`Completion`], [`StoreError`]: one record per task, with
//!   TTL, and a `wait` that is woken by the completion rather than by polling.
//! - [`DeadLetters`]: failed tasks with input, error and attempts, to inspect and replay.
//! - [`Dedupe`]: SHA-256 of an input → the task that already runs it.
//! - [`Intake`]: record + dedupe + enqueue as one operation; [`Steps`] composes the above.
//! - [`load`]: the batchers' report of their workers' load ([`LoadBoard`]), for shedding.
//! - [`rate_limit`]: per-user GCRA limits ([`RateLimiter`]), in memory.
//! - [`memory`]: the in-process, bounded, partitioned queue, the sharded result store and the
//!   dedupe cache; [`memory::build`] makes a process's [`Backends`] of them.
//! - [`Backends`]: every backend of one process, as the gateway and the batcher take them.

mod backends;
pub mod dead_letters;
mod dedupe;
mod intake;
pub mod load;
pub mod memory;
mod queue;
pub mod rate_limit;
mod store;

pub use backends::{Backends, MemoryStores};
pub use dead_letters::{DeadLetter, DeadLetters, Failure, Selection};
pub use dedupe::{Dedupe, DEFAULT_DEDUPE_TTL};
pub use intake::{AdmitError, Admitted, Intake, Steps};
pub use load::{LoadBoard, MemoryLoadBoard, WorkerLoad};
pub use queue::{Backlog, Delivery, Queue, QueueError, Receipt, DEFAULT_QUEUE_CAPACITY};
pub use rate_limit::{Decision, MemoryRateLimiter, Rate, RateLimiter};
pub use store::{
    Completion, Expectation, Outcome, ResultStore, StoreError, TaskRecord, Watched,
    DEFAULT_MAX_RESULTS, DEFAULT_RESULT_TTL,
};
