//! `batchgate worker --sim`: the reference worker server.
//!
//! With `--crash-after`, the process exits on its own (code [`CRASH_EXIT_CODE`]) once the
//! simulated worker "crashes": no drain, no goodbye, as a GPU host that went down.

use std::sync::Arc;

use batchgate_sim::server::Stopped;
use batchgate_sim::{Faults, SimConfig, SimWorker};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Exit code of `batchgate worker` when it crashes on purpose (`--crash-after`): EX_SOFTWARE,
/// distinct from a clean stop (0) and from a configuration error (1).
pub const CRASH_EXIT_CODE: i32 = 70;

/// What the worker server runs.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    /// The simulated cost model.
    pub sim: SimConfig,
    /// Failures to inject.
    pub faults: Faults,
    /// Serve the real model in this directory instead of the simulated one.
    #[cfg(feature = "model")]
    pub model_dir: Option<std::path::PathBuf>,
}

/// Serves the batch API until `shutdown`, then lets calls under way finish. Never returns if
/// the simulated worker crashes on purpose: the process exits with [`CRASH_EXIT_CODE`].
pub async fn run(
    config: WorkerConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    #[cfg(feature = "model")]
    if let Some(dir) = &config.model_dir {
        let worker = crate::serve::load_model(dir, config.sim.max_batch_size)
            .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        info!(%addr, "model worker listening on http://{addr} (POST /v1/batch)");
        crate::batch_api::run(Arc::new(worker), listener, shutdown).await?;
        info!("model worker stopped");
        return Ok(());
    }
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
    match batchgate_sim::server::run(worker, listener, shutdown).await? {
        Stopped::Shutdown => {
            info!("simulated worker stopped");
            Ok(())
        }
        Stopped::Crashed => {
            tracing::error!(
                exit_code = CRASH_EXIT_CODE,
                "simulated crash (--crash-after): exiting the process at once"
            );
            // Abrupt on purpose: connections still open are cut, nothing is drained.
            std::process::exit(CRASH_EXIT_CODE)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn config(flags: &[&str]) -> Result<WorkerConfig, String> {
        let argv = ["batchgate", "worker", "--sim"].iter().chain(flags);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        let Command::Worker(args) = cli.command else {
            panic!("worker expected")
        };
        args.into_config()
    }

    #[test]
    fn fault_flags_become_faults() {
        let faults = config(&[
            "--slow-rate=0.25",
            "--slow-factor=4",
            "--hang-rate=0.01",
            "--crash-after=1000",
            "--max-queued-calls=0",
            "--fault-seed=42",
        ])
        .expect("valid")
        .faults;
        assert_eq!(
            faults,
            Faults {
                slow_rate: 0.25,
                slow_factor: 4.0,
                hang_rate: 0.01,
                crash_after: Some(1000),
                max_queued_calls: Some(0),
                seed: Some(42),
                ..Faults::default()
            }
        );
        assert_eq!(config(&[]).expect("valid").faults, Faults::default());
    }

    #[test]
    fn bad_fault_flags_are_refused_with_the_flag_named() {
        for (flag, expected) in [
            (
                "--error-rate=1.5",
                "--error-rate must be in [0, 1], got 1.5",
            ),
            (
                "--slow-rate=-0.1",
                "--slow-rate must be in [0, 1], got -0.1",
            ),
            ("--hang-rate=NaN", "--hang-rate must be in [0, 1], got NaN"),
            (
                "--slow-factor=0.5",
                "--slow-factor must be a finite number ≥ 1, got 0.5",
            ),
            ("--crash-after=0", "--crash-after must be at least 1"),
        ] {
            assert_eq!(config(&[flag]).expect_err(flag), expected);
        }
    }
}
