//! A batcher's composition: from its config, backends and worker to a running driver, and
//! its drain.

use std::sync::Arc;

use batchgate_queue::{Backends, DeadLetters, LoadBoard, Queue, ResultStore};
use batchgate_worker::Worker;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::driver::{Batcher, BatcherConfig, DrainReport};
use crate::metrics::BatcherMetrics;

/// The backends a batcher runs on.
pub struct BatcherBackends {
    /// Where tasks come from.
    pub queue: Arc<dyn Queue>,
    /// Where results go.
    pub results: Arc<dyn ResultStore>,
    /// Where tasks that failed for good go.
    pub dead_letters: Arc<dyn DeadLetters>,
    /// Where the workers' load is reported for the gateways' shedding.
    pub load_board: Arc<dyn LoadBoard>,
    /// This batcher's name on the load board.
    pub name: String,
}

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

/// Builds the batcher (its metrics registered in `registry`) and runs it on a task of its own.
pub fn run(
    config: BatcherConfig,
    backends: BatcherBackends,
    worker: Arc<dyn Worker>,
    registry: &mut Registry,
) -> Running {
    let metrics = BatcherMetrics::register(registry);
    let batcher = Batcher::new(
        backends.queue,
        backends.results,
        backends.dead_letters,
        worker,
        config,
        metrics,
    )
    .with_load_board(backends.load_board, backends.name);
    let stop = CancellationToken::new();
    let task = tokio::spawn(batcher.run(stop.clone()));
    Running { stop, task }
}

impl From<&Backends> for BatcherBackends {
    fn from(backends: &Backends) -> Self {
        BatcherBackends {
            queue: backends.queue.clone(),
            results: backends.results.clone(),
            dead_letters: backends.dead_letters.clone(),
            load_board: backends.load_board.clone(),
            name: backends.name.clone(),
        }
    }
}
