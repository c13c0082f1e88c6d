//! `batchgate worker --sim`: the reference worker server.

use std::sync::Arc;

use batchgate_sim::{Faults, SimConfig, SimWorker};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// What the worker server runs.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    /// The simulated cost model.
    pub sim: SimConfig,
    /// Failures to inject.
    pub faults: Faults,
}

/// Serves the batch API until `shutdown`, then lets calls under way finish.
pub async fn run(
    config: WorkerConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    info!(
        %addr,
        slots = config.sim.slots,
        base_ms = config.sim.base.as_secs_f64() * 1e3,
        per_item_ms = config.sim.per_item.as_secs_f64() * 1e3,
        "simulated worker listening on http://{addr} (POST /v1/batch)"
    );
    if config.faults != Faults::default() {
        tracing::warn!(faults = ?config.faults, "fault injection is on");
    }
    let worker = Arc::new(SimWorker::new(config.sim).with_faults(config.faults));
    batchgate_sim::server::run(worker, listener, shutdown).await?;
    info!("simulated worker stopped");
    Ok(())
}
