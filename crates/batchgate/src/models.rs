//! Several models in one deployment (`--model`). The first model is the process's own; each
//! further model gets its own queue (in process, or on Redis its own keys, under
//! `<key prefix>:<model>`), its own batcher (limits, policy state, in-flight limit) and its
//! own workers, so that a batch never mixes models. In process, the models share the result
//! store and the dedupe cache (whose keys name the model); each has its own dead letters and
//! load board, so that a replay goes back to its own queue and each model sheds by its own
//! workers. With several models, every model's batching metrics carry a `model` label.

use std::sync::Arc;

use batchgate_batcher::{Batcher, BatcherMetrics, DrainReport};
use batchgate_gateway::ModelBackends;
use batchgate_queue::dead_letters::DEFAULT_DEAD_LETTER_CAPACITY;
use batchgate_queue::memory::{MemoryDeadLetters, MemoryQueue, DEFAULT_PARTITIONS};
use batchgate_queue::{Backends, Intake, MemoryLoadBoard, Steps};
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backend::StoreConfig;
use crate::serve::{build_worker, BatcherPart};

/// A model after the first: its name and, in a process that batches, its batcher.
#[derive(Debug, Clone)]
pub struct ModelPart {
    /// Its name, as requests give it.
    pub name: String,
    /// Its batching limits and policy, and its workers; `None` in a gateway alone.
    pub batcher: Option<BatcherPart>,
}

/// The further models' backends, for the gateway and for the shutdown.
pub(crate) struct Models {
    /// What the gateway admits each model's tasks through, in order.
    pub(crate) gateway: Vec<ModelBackends>,
    /// Each model's own Redis backends, stopped at the end.
    backends: Vec<Backends>,
}

/// The further models' batchers, drained at shutdown.
pub(crate) struct Batchers {
    /// Each one's stop, and its task.
    running: Vec<(CancellationToken, JoinHandle<DrainReport>)>,
}

/// The `model` label of a model's metrics.
pub(crate) fn labelled<'r>(registry: &'r mut Registry, model: &str) -> &'r mut Registry {
    registry.sub_registry_with_label(("model".into(), model.to_owned().into()))
}

/// Builds each further model's queue (in process, or its own Redis keys) and starts its
/// batcher, if it has one. `first` are the process's backends, built from `store`; `waits`
/// as for them (a gateway waits for results).
pub(crate) async fn start(
    models: &[ModelPart],
    first: &Backends,
    store: &StoreConfig,
    waits: bool,
    registry: &mut Registry,
) -> anyhow::Result<(Models, Batchers)> {
    let mut gateway = Vec::with_capacity(models.len());
    let mut backends = Vec::new();
    let mut running = Vec::with_capacity(models.len());
    for model in models {
        let mut own = match &first.memory {
            Some(memory) => {
                let queue = Arc::new(MemoryQueue::new(
                    store.partitions.unwrap_or(DEFAULT_PARTITIONS),
                    store.queue_capacity,
                ));
                let intake: Arc<dyn Intake> = Arc::new(Steps {
                    queue: queue.clone(),
                    results: memory.results.clone(),
                    dedupe: memory.dedupe.clone(),
                });
                ModelBackends {
                    intake,
                    queue,
                    results: first.results.clone(),
                    dead_letters: Arc::new(MemoryDeadLetters::new(DEFAULT_DEAD_LETTER_CAPACITY)),
                    load_board: Arc::new(MemoryLoadBoard::default()),
                    workers_healthy: None,
                    gateway_id: None,
                }
            }
            None => {
                let mut own = store.clone();
                if let Some(redis) = own.redis.as_mut() {
                    redis.redis.key_prefix = format!("{}:{}", redis.redis.key_prefix, model.name);
                }
                let built = crate::backend::build(&own, waits).await?;
                let parts = ModelBackends {
                    intake: built.intake.clone(),
                    queue: built.queue.clone(),
                    results: built.results.clone(),
                    dead_letters: built.dead_letters.clone(),
                    load_board: built.load_board.clone(),
                    workers_healthy: None,
                    gateway_id: built.gateway_id.clone(),
                };
                backends.push(built);
                parts
            }
        };
        if let Some(part) = &model.batcher {
            let registry = labelled(registry, &model.name);
            let (worker, healthy) = build_worker(&part.worker, registry)?;
            own.workers_healthy = Some(healthy);
            let batcher = Batcher::new(
                own.queue.clone(),
                own.results.clone(),
                own.dead_letters.clone(),
                worker,
                part.config,
                BatcherMetrics::register(registry),
            )
            // Its own board: the gateways shed this model's tasks by its own workers.
            .with_load_board(
                own.load_board.clone(),
                format!("{}:{}", first.name, model.name),
            );
            let stop = CancellationToken::new();
            running.push((stop.clone(), tokio::spawn(batcher.run(stop))));
        }
        gateway.push(own);
    }
    Ok((Models { gateway, backends }, Batchers { running }))
}

impl Models {
    /// Stops the further models' own backends.
    pub(crate) async fn shutdown(self) {
        for backends in self.backends {
            backends.shutdown().await;
        }
    }
}

impl Batchers {
    /// Drains every further model's batcher (admission is closed already); the batches
    /// drained.
    pub(crate) async fn drain(self) -> u64 {
        for (stop, _) in &self.running {
            stop.cancel();
        }
        let mut drained = 0;
        for (_, task) in self.running {
            match task.await {
                Ok(report) => drained += report.drained_batches,
                Err(error) => tracing::warn!(%error, "a model's batcher failed during the drain"),
            }
        }
        drained
    }
}
