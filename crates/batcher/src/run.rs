//! A batcher's composition: from its config, backends and worker to a running driver, and
//! its drain.

use std::sync::Arc;

use batchgate_queue::Backends;
use batchgate_worker::Worker;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::driver::{Batcher, BatcherConfig, DrainReport};
use crate::metrics::BatcherMetrics;

/// A batcher running in the background, until [`Running::drain`].
pub struct Running {
    /// Cancelled to start the drain.
    stop: CancellationToken,
    /// The driver's task.
    task: JoinHandle<DrainReport>,
}

impl Running {
    /// Stops reading and waits for everything read to be dispatched, stored and acked; the
    /// batches drained, or `None` if the driver's task failed. The caller closes admission
    /// first and bounds this wait with its grace period.
    pub async fn drain(self) -> Option<u64> {
        self.stop.cancel();
        match self.task.await {
            Ok(report) => Some(report.drained_batches),
            Err(join_error) => {
                tracing::warn!(%join_error, "the batcher task failed during the drain");
                None
            }
        }
    }
}

/// Builds the batcher on the process's `backends` (its metrics registered in `registry`) and
/// runs it on a task of its own.
pub fn run(
    config: BatcherConfig,
    backends: &Backends,
    worker: Arc<dyn Worker>,
    registry: &mut Registry,
) -> Running {
    let metrics = BatcherMetrics::register(registry);
    let batcher = Batcher::new(
        backends.queue.clone(),
        backends.results.clone(),
        backends.dead_letters.clone(),
        worker,
        config,
        metrics,
    )
    .with_load_board(backends.load_board.clone(), backends.name.clone());
    let stop = CancellationToken::new();
    let task = tokio::spawn(batcher.run(stop.clone()));
    Running { stop, task }
}
