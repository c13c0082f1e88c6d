//! The seams between the gateway and the batcher: the task [`Queue`] and the [`Intake`] that
//! admits tasks into it.
//!
//! Both are traits so that the same gateway and batcher code runs on the embedded deployment
//! (in-process implementations, in [`memory`]) and on the distributed one (Redis). The result
//! store and the dedupe cache an admission writes to are in `batchgate_store`.
//!
//! Layout:
//! - [`Queue`], [`Delivery`], [`Receipt`], [`QueueError`]: enqueue, read a batch's worth, ack.
//! - [`DeadLetters`]: failed tasks with input, error and attempts, to inspect and replay.
//! - [`Intake`]: record + dedupe + enqueue as one operation; [`Steps`] composes the three.
//! - [`load`]: the batchers' report of their workers' load ([`LoadBoard`]), for shedding.
//! - [`rate_limiter`]: the per-user rate limiter's trait ([`RateLimiter`]), which a backend
//!   may implement (Redis: exact across gateways); the in-process one is the gateway's.
//! - [`memory`]: the in-process, bounded, partitioned queue and dead letters;
//!   [`memory::build`] makes a process's [`Backends`] of them and of `batchgate_store`'s
//!   in-process stores.
//! - [`Backends`]: every backend of one process, as the gateway and the batcher take them.

mod backends;
pub mod dead_letters;
mod intake;
pub mod load;
pub mod memory;
mod queue;
pub mod rate_limiter;

pub use backends::{Backends, MemoryStores};
pub use dead_letters::{DeadLetter, DeadLetters, Failure, Selection};
pub use intake::{AdmitError, Admitted, AdmittedOwned, Intake, QuietAnswer, QuietReply, Steps};
pub use load::{LoadBoard, MemoryLoadBoard, WorkerLoad};
pub use queue::{Backlog, Delivery, Queue, QueueError, Receipt, DEFAULT_QUEUE_CAPACITY};
pub use rate_limiter::{Decision, Rate, RateLimiter};
