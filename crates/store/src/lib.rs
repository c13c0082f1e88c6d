//! Where tasks' results live: the [`ResultStore`], and the [`Dedupe`] cache that lets
//! identical inputs share one task.
//!
//! Both are traits so that the same gateway and batcher code runs on the embedded deployment
//! (in-process implementations, in [`memory`]) and on the distributed one (Redis).
//!
//! Layout:
//! - [`ResultStore`], [`TaskRecord`], [`Completion`], [`StoreError`]: one record per task, with
//!   TTL, and a `wait` that is woken by the completion rather than by polling.
//! - [`Dedupe`]: SHA-256 of an input → the task that already runs it.
//! - [`memory`]: the sharded in-process result store and dedupe cache, kept compact (packed
//!   keys, interned owners).

mod dedupe;
pub mod memory;
mod results;

pub use dedupe::{Dedupe, DEFAULT_DEDUPE_TTL};
pub use results::{
    Completion, Expectation, Outcome, ResultStore, StoreError, TaskRecord, Watched,
    DEFAULT_MAX_RESULTS, DEFAULT_RESULT_TTL,
};
