//! Builds the gateway's [`AppState`] from its configuration and the process's [`Backends`]:
//! the one way the binary and the tests make a gateway.

use std::sync::Arc;
use std::time::Duration;

use batchgate_queue::Backends;
use prometheus_client::registry::Registry;

use crate::auth::{Authenticator, KeyError};
use crate::config::{EdgeConfig, GatewayConfig};
use crate::metrics::GatewayMetrics;
use crate::ops::{ModelQueue, Ops, OpsGauges, OpsParts};
use crate::rate_limit::MemoryRateLimiter;
use crate::readiness::{Readiness, WorkersHealthy, DEFAULT_QUEUE_ERROR_TOLERANCE};
use crate::shed::Shedder;
use crate::state::{Admission, AppState, ModelBackends, RateLimits, Shared};

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
    /// The backends of the models after the first, in the order of `config.models`.
    further_models: Vec<ModelBackends>,
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
            further_models: Vec::new(),
        }
    }

    /// The backends of the models after the first (`config.models[1..]`, in order), each
    /// with its model's own queue.
    pub fn further_models(mut self, models: Vec<ModelBackends>) -> Self {
        self.further_models = models;
        self
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
    ///
    /// `backends` are the process's (in memory, or on Redis shared by every gateway and
    /// batcher): the gateway keeps handles to the ones it uses.
    pub fn build(self, backends: &Backends) -> Result<AppState, BuildError> {
        let mut registry = self.registry;
        let metrics = GatewayMetrics::register(&mut registry);
        // With several models, each one's gauges carry its name.
        let labels: Vec<Option<String>> = if self.config.models.len() > 1 {
            self.config.models.iter().cloned().map(Some).collect()
        } else {
            vec![None]
        };
        let mut models = vec![ModelQueue {
            label: labels.first().cloned().flatten(),
            queue: backends.queue.clone(),
            dead_letters: backends.dead_letters.clone(),
        }];
        for (i, further) in self.further_models.iter().enumerate() {
            models.push(ModelQueue {
                label: labels.get(i + 1).cloned().flatten(),
                queue: further.queue.clone(),
                dead_letters: further.dead_letters.clone(),
            });
        }
        let labels: Vec<Option<String>> = models.iter().map(|m| m.label.clone()).collect();
        let gauges = OpsGauges::register_models(&mut registry, &labels);
        let shedder = Arc::new(Shedder::new(self.edge.shed));
        let model_shedders: Vec<Arc<Shedder>> = self
            .further_models
            .iter()
            .map(|_| Arc::new(Shedder::new(self.edge.shed)))
            .collect();
        for (label, shedder) in labels
            .iter()
            .zip(std::iter::once(&shedder).chain(&model_shedders))
        {
            match label {
                Some(model) => shedder.register(
                    registry.sub_registry_with_label(("model".into(), model.clone().into())),
                ),
                None => shedder.register(&mut registry),
            }
        }
        let auth = Arc::new(Authenticator::new(self.edge.auth)?);
        let admission = Arc::new(Admission::default());
        let readiness = Readiness::new(self.queue_error_tolerance, self.workers_healthy)
            .with_further_models(
                self.further_models
                    .iter()
                    .map(|m| m.workers_healthy.clone()),
            );
        let ops = Ops::new(OpsParts {
            models,
            results: backends.results.clone(),
            registry: Arc::new(registry),
            readiness: Arc::new(readiness),
            admission: admission.clone(),
            gauges,
        });
        Ok(AppState::new(Shared {
            queue: backends.queue.clone(),
            results: backends.results.clone(),
            intake: backends.intake.clone(),
            further_models: self.further_models,
            dedupe: backends.dedupe,
            gateway_id: backends.gateway_id.clone(),
            admission,
            shedder,
            model_shedders,
            load_board: backends.load_board.clone(),
            rate_limits: self.edge.rate_limit.map(|r| RateLimits {
                default: r.default,
                overrides: r.overrides,
                limiter: backends
                    .rate_limiter
                    .clone()
                    .unwrap_or_else(|| Arc::new(MemoryRateLimiter::default())),
            }),
            dead_letters: backends.dead_letters.clone(),
            admin_token: self.edge.admin_token,
            auth,
            config: self.config,
            metrics,
            ops,
        }))
    }
}
