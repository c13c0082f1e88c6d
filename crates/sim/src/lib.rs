//! The reference "fixed GPU worker": a cost model that behaves like a batch inference server.
//!
//! A call with `n` inputs takes `base + per_item × n` (defaults 150 ms and 0.78 ms, ≈ 200 ms
//! for 64), at most `slots` calls run at once (the simulated GPUs) and further calls queue for
//! a slot. Every output is [`batchgate_protocol::sim_output`] of its input, so any result can
//! be checked by whoever sent the input.
//!
//! Layout:
//! - [`model`]: [`SimWorker`], the cost model; it implements [`batchgate_worker::Worker`] so
//!   `batchgate serve` can use it in-process.
//! - [`faults`]: [`Faults`], what to inject on purpose: errors, poison, slow calls, hangs, a
//!   crash, and 429s when the wait queue is full.
//!
//! The server that puts this model (or any `Worker`) behind the worker protocols over HTTP and
//! gRPC (`batchgate worker`) is `batchgate_worker_server`.

pub mod faults;
pub mod model;

pub use faults::{Faults, DEFAULT_SLOW_FACTOR};
pub use model::{SimConfig, SimError, SimStats, SimWorker};
