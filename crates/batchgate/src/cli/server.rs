//! Flags every server process (`serve`, `gateway`, `batcher`) shares, flattened once into
//! each: how it shuts down and what its readiness tells orchestrators.

use std::time::Duration;

use clap::Args;

use super::error::ms;

/// Default bound on the shutdown drain, in seconds: with the default shutdown delay (5 s) and
/// the HTTP close (4 s), a process exits within 29 s of SIGTERM, inside Kubernetes' default
/// 30 s termination grace period.
pub const DEFAULT_DRAIN_SECS: u64 = 20;

/// Default time `/readyz` answers 503 before the drain begins: a few of the usual load
/// balancers' health-check periods.
pub const DEFAULT_SHUTDOWN_DELAY: Duration = Duration::from_secs(5);

/// What orchestrators (Kubernetes, compose) and load balancers see of a server process: its
/// shutdown sequence and its readiness.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// On SIGTERM (or SIGINT), how long `/readyz` answers 503 while requests are still served
    /// as before, in milliseconds, before the drain (--grace-period-secs) begins: the time load
    /// balancers (Kubernetes endpoints) take to stop sending new requests here. The process
    /// exits within this + --grace-period-secs + 4 s.
    #[arg(long, env = "BATCHGATE_SHUTDOWN_DELAY_MS", default_value_t = ms(DEFAULT_SHUTDOWN_DELAY))]
    pub shutdown_delay_ms: u64,

    /// Longest the shutdown drain (after --shutdown-delay-ms: answer the requests under way,
    /// finish the batches in hand) may take before the process exits anyway, in seconds.
    #[arg(long, env = "BATCHGATE_GRACE_PERIOD_SECS", default_value_t = DEFAULT_DRAIN_SECS)]
    pub grace_period_secs: u64,

    /// How long the queue (Redis) may keep failing before `/readyz` answers 503, in
    /// milliseconds. A shorter Redis blip leaves readiness at 200 (requests during it still get
    /// 503 `unavailable`), so every gateway does not leave its load balancer at once; 0 fails
    /// readiness at the first error.
    #[arg(long, env = "BATCHGATE_READINESS_TOLERANCE_MS", default_value_t = ms(batchgate_gateway::readiness::DEFAULT_QUEUE_ERROR_TOLERANCE))]
    pub readiness_tolerance_ms: u64,
}

/// The shutdown and readiness part of a process's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifecycle {
    /// Bound on the drain.
    pub grace_period: Duration,
    /// `/readyz` at 503 before the drain.
    pub shutdown_delay: Duration,
    /// Queue errors tolerated before `/readyz` fails.
    pub queue_error_tolerance: Duration,
}

impl ServerArgs {
    /// The durations the flags give.
    pub fn lifecycle(&self) -> Lifecycle {
        Lifecycle {
            grace_period: Duration::from_secs(self.grace_period_secs),
            shutdown_delay: Duration::from_millis(self.shutdown_delay_ms),
            queue_error_tolerance: Duration::from_millis(self.readiness_tolerance_ms),
        }
    }
}
