//! Builds the gateway's [`AppState`] from its configuration and its backends: the one way the
//! binary and the tests make a gateway.

use std::sync::Arc;
use std::time::Duration;

use batchgate_queue::{Backends, DeadLetters, Intake, LoadBoard, Queue, RateLimiter, ResultStore};
use prometheus_client::registry::Registry;

use crate::auth::{Authenticator, KeyError};
use crate::config::{EdgeConfig, GatewayConfig};
use crate::metrics::GatewayMetrics;
use crate::ops::{Ops, OpsGauges, OpsParts};
use crate::readiness::{Readiness, WorkersHealthy, DEFAULT_QUEUE_ERROR_TOLERANCE};
use crate::shed::Shedder;
use crate::state::{Admission, AppState, RateLimits, Shared};

/// The backends a gateway runs on (in memory, or Redis shared by every gateway and batcher).
pub struct GatewayBackends {
    /// The task queue: depth and backlog (tasks enter through `intake`).
    pub queue: Arc<dyn Queue>,
    /// Where results are read and waited on.
    pub results: Arc<dyn ResultStore>,
    /// Admits tasks: pending record, dedupe claim, enqueue.
    pub intake: Arc<dyn Intake>,
    /// Failed tasks, for the admin API.
    pub dead_letters: Arc<dyn DeadLetters>,
    /// Per-user request counts.
    pub rate_limiter: Arc<dyn RateLimiter>,
    /// The batchers' reports of their workers' load, which the shedder samples.
    pub load_board: Arc<dyn LoadBoard>,
    /// Whether the intake's dedupe cache is on.
    pub dedupe: bool,
    /// This gateway's name on the notification bus (Redis), put in each task's `reply_to`;
    /// `None` where everything runs in one process.
    pub gateway_id: Option<String>,
}

/// A gateway's configuration, turned into an [`AppState`] by [`StateBuilder::build`].
pub struct StateBuilder {
    /// Limits of the API.
    config: GatewayConfig,
    /// Auth, rate limits, shedding, admin API.
    edge: EdgeConfig,
    /// How long queue errors may last before `/readyz` answers 503.
    queue_error_tolerance: Duration,
    /// Whether any worker is healthy, in a process that also runs a batcher.
    workers_healthy: Option<WorkersHealthy>,
    /// The process's registry, which other parts (a batcher) may have registered in already.
    registry: Registry,
}

/// Why a gateway could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The authentication keys could not be loaded.
    #[error(transparent)]
    AuthKeys(#[from] KeyError),
}

impl StateBuilder {
    /// A gateway with these limits and protections, default readiness, its own registry.
    pub fn new(config: GatewayConfig, edge: EdgeConfig) -> Self {
        StateBuilder {
            config,
            edge,
            queue_error_tolerance: DEFAULT_QUEUE_ERROR_TOLERANCE,
            workers_healthy: None,
            registry: Registry::default(),
        }
    }

    /// How long queue errors may last before `/readyz` answers 503.
    pub fn queue_error_tolerance(mut self, tolerance: Duration) -> Self {
        self.queue_error_tolerance = tolerance;
        self
    }

    /// Makes `/readyz` depend on the workers of the batcher in this process.
    pub fn workers_healthy(mut self, healthy: WorkersHealthy) -> Self {
        self.workers_healthy = Some(healthy);
        self
    }

    /// Renders `registry` on `/metrics`, with the gateway's metrics registered in it.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Loads the keys, registers the metrics and wraps everything in the shared state. Starts
    /// nothing: [`crate::run`] starts the background tasks (key reloads, shedding samples).
    pub fn build(self, backends: GatewayBackends) -> Result<AppState, BuildError> {
        let mut registry = self.registry;
        let metrics = GatewayMetrics::register(&mut registry);
        let gauges = OpsGauges::register(&mut registry);
        let auth = Arc::new(Authenticator::new(self.edge.auth)?);
        let admission = Arc::new(Admission::default());
        let ops = Ops::new(OpsParts {
            queue: backends.queue.clone(),
            results: backends.results.clone(),
            dead_letters: backends.dead_letters.clone(),
            registry: Arc::new(registry),
            readiness: Arc::new(Readiness::new(
                self.queue_error_tolerance,
                self.workers_healthy,
            )),
            admission: admission.clone(),
            gauges,
        });
        let rate_limiter = backends.rate_limiter;
        Ok(AppState::new(Shared {
            queue: backends.queue,
            results: backends.results,
            intake: backends.intake,
            dedupe: backends.dedupe,
            gateway_id: backends.gateway_id,
            admission,
            shedder: Arc::new(Shedder::new(self.edge.shed)),
            load_board: backends.load_board,
            rate_limits: self.edge.rate_limit.map(|r| RateLimits {
                default: r.default,
                overrides: r.overrides,
                limiter: rate_limiter,
            }),
            dead_letters: backends.dead_letters,
            admin_token: self.edge.admin_token,
            auth,
            config: self.config,
            metrics,
            ops,
        }))
    }
}

impl From<&Backends> for GatewayBackends {
    fn from(backends: &Backends) -> Self {
        GatewayBackends {
            queue: backends.queue.clone(),
            results: backends.results.clone(),
            intake: backends.intake.clone(),
            dead_letters: backends.dead_letters.clone(),
            rate_limiter: backends.rate_limiter.clone(),
            load_board: backends.load_board.clone(),
            dedupe: backends.dedupe,
            gateway_id: backends.gateway_id.clone(),
        }
    }
}
