//! The task as it travels from the gateway through the queue to the batcher.

use std::time::SystemTime;

/// One accepted request, waiting for the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Unguessable id (UUID v4) handed to the client.
    pub task_id: String,
    /// The input to send to the worker.
    pub input: String,
    /// When the gateway accepted it; used for queue-age and end-to-end latency.
    pub enqueued_at: SystemTime,
}

/// Milliseconds since the Unix epoch, the timestamp unit of the API.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
