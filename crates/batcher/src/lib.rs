//! The batcher driver: the I/O around the pure policy.
//!
//! It reads tasks from the [`Queue`](batchgate_queue::Queue), hands them to the batching
//! policy (fixed wait-or-full, or adaptive), and when the policy releases a batch, calls the worker once with the whole batch,
//! writes every task's result to the [`ResultStore`](batchgate_store::ResultStore), and only
//! then acknowledges the tasks in the queue.
//!
//! A batch is formed only when a worker slot is free (`max_inflight_batches`): while the worker
//! is saturated, tasks wait in the queue — where depth is visible and bounded — rather than in
//! a buffer here, and the next free slot takes a full batch at once.
//!
//! Layout:
//! - [`driver`]: [`Batcher`], the read → batch → dispatch loop and its drain on shutdown.
//! - `dispatch`: one batch's trip: expire tasks too old to run, collapse identical inputs,
//!   call the worker (bisecting a rejected batch to isolate a bad input), store, ack.
//! - [`gather`]: the gather loop's decision (dispatch now, or read how many until when), pure,
//!   so the simulator runs the same code in virtual time.
//! - [`load`]: the report of the workers' load that gateways shed by.
//! - [`slots`]: the in-flight limit and its backpressure (AIMD on the worker's `429`/`503`);
//!   [`slots::SlotState`] is its pure part.
//! - [`metrics`]: [`BatcherMetrics`], registered in the process's Prometheus registry.
//! - [`run`](mod@run): [`run()`], a batcher built from its config and the process's backends
//!   and started;
//!   [`Running::drain`] stops it.

mod dispatch;
pub mod driver;
pub mod gather;
pub mod load;
pub mod metrics;
pub mod run;
pub mod slots;

pub use driver::{Batcher, BatcherConfig, DrainReport};
pub use metrics::BatcherMetrics;
pub use run::{run, Running};
