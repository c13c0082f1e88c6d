//! The backends of one process — in memory ([`crate::memory::build`]) or on Redis (the Redis
//! crate's `build`) — as the gateway and the batcher take them, and what keeps them running.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use batchgate_store::memory::{MemoryDedupe, MemoryResultStore};
use batchgate_store::ResultStore;

use crate::{DeadLetters, Intake, LoadBoard, Queue, RateLimiter};

/// The backends of one process and the background tasks they need.
pub struct Backends {
    /// The task queue.
    pub queue: Arc<dyn Queue>,
    /// The result store.
    pub results: Arc<dyn ResultStore>,
    /// Admits tasks (record, dedupe, enqueue).
    pub intake: Arc<dyn Intake>,
    /// Tasks that failed for good, to inspect and replay.
    pub dead_letters: Arc<dyn DeadLetters>,
    /// Per-user request counts shared by every gateway (on Redis); `None`: each gateway
    /// counts in its own memory (the gateway's `MemoryRateLimiter`).
    pub rate_limiter: Option<Arc<dyn RateLimiter>>,
    /// The batchers' reports of their workers' load, which the gateways shed by.
    pub load_board: Arc<dyn LoadBoard>,
    /// This process's name on the load board (and, on Redis, in the stream group).
    pub name: String,
    /// Whether dedupe is on.
    pub dedupe: bool,
    /// This process's name on the notification bus (Redis gateways only).
    pub gateway_id: Option<String>,
    /// The in-process stores, for their eviction counts on `/metrics` (in memory only).
    pub memory: Option<MemoryStores>,
    /// Background tasks (result sweeper, notification subscription), stopped by `shutdown`.
    pub tasks: Vec<JoinHandle<()>>,
    /// Stops the background tasks.
    pub stop: CancellationToken,
}

/// The in-process stores behind [`Backends`], by their concrete types.
#[derive(Debug, Clone)]
pub struct MemoryStores {
    /// The result store.
    pub results: Arc<MemoryResultStore>,
    /// The dedupe cache, if dedupe is on.
    pub dedupe: Option<Arc<MemoryDedupe>>,
}

impl Backends {
    /// Stops the background tasks and waits for them.
    pub async fn shutdown(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
