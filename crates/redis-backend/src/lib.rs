//! The distributed deployment's backends, on Redis or Redis Cluster.
//!
//! - the task queue: one Redis Stream per partition, one consumer group, at-least-once with
//!   claim of entries a dead batcher left behind, and a dead-letter stream;
//! - the result store: one string record per task with a TTL (`record`), and cross-process
//!   wake-ups of long polls (the batcher publishes to the channel of the gateway that waits);
//! - the dedupe cache: SHA-256 of the input → task id, set-if-absent with a TTL, claimed in the
//!   same script that records and enqueues the task.
//!
//! Every key is hash-tagged with its partition (`{p03}`), so a task's result and dedupe entry
//! live on one cluster slot, and its stream entry on the same node (admission puts a call's
//! tasks in one entry of one of that node's streams); partition tags are chosen so that
//! partitions spread evenly over the slot space, hence over the masters.
//!
//! Layout:
//! - [`keys`]: every key and channel name, in one place.
//! - [`conn`]: [`RedisConfig`] and a connection that is either standalone or cluster.
//! - [`queue`]: [`RedisQueue`], the [`Queue`](batchgate_queue::Queue) on Streams; with
//!   `entry` (what a stream entry holds: one task or a group), `reader` (batch-sized
//!   reads), `leases` (renewal, heartbeat, Redis's clock), `claimer` (recovery, dead
//!   letters, departed consumers), `depth` (what the streams hold, in tasks),
//!   `local_groups` (the groups this process admitted, kept for its own reads).
//! - `record`: the layout of a task's record (one string), shared with the scripts.
//! - `topology`: which partitions share a node, so calls are grouped per node.
//! - `settle`: the one script that writes results, notifies and acknowledges.
//! - [`store`]: [`RedisResultStore`], the [`ResultStore`](batchgate_store::ResultStore).
//! - [`dead_letters`]: [`RedisDeadLetters`], the dead-letter stream, to list, replay, purge.
//! - [`notify`]: [`Notifier`], the gateway's subscription that wakes local waiters.
//! - [`intake`]: [`RedisIntake`], admission (dedupe claim, pending record, enqueue),
//!   gathered: one script call per group of tasks.
//! - [`load_board`]: [`RedisLoadBoard`], the batchers' reports of their workers' load.
//! - [`rate_limit`]: [`RedisRateLimiter`], per-user GCRA limits exact across gateways.
//! - [`wiring`]: [`build`], a process's [`Backends`](batchgate_queue::Backends) on Redis.
//! - `lua/`: the scripts, loaded with `include_str!`.

mod claimer;
pub mod conn;
pub mod dead_letters;
mod depth;
mod entry;
pub mod intake;
pub mod keys;
mod leases;
pub mod load_board;
mod local_groups;
pub mod notify;
pub mod queue;
pub mod rate_limit;
mod reader;
mod record;
mod settle;
pub mod store;
mod topology;
pub mod wiring;

pub use conn::{RedisConfig, RedisConn, RedisTls};
pub use dead_letters::RedisDeadLetters;
pub use intake::RedisIntake;
pub use keys::Keys;
pub use load_board::RedisLoadBoard;
pub use local_groups::LocalGroups;
pub use notify::Notifier;
pub use queue::{RedisQueue, RedisQueueConfig};
pub use rate_limit::RedisRateLimiter;
pub use record::safe_gateway_id;
pub use store::RedisResultStore;
pub use wiring::{build, process_name, RedisBackendConfig, WiringError};

/// A Redis failure, as text for the backend-neutral error types.
pub(crate) fn describe(error: &redis::RedisError) -> String {
    error.to_string()
}

/// A reply field as text (bulk or simple string).
pub(crate) fn value_text(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}
