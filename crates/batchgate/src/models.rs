//! Several models in one embedded deployment (`serve --model …`). The first model is the
//! process's own batcher; each further model gets its own in-process queue, its own batcher
//! (limits, policy state, in-flight limit) and its own workers, so that a batch never mixes
//! models, and shares the result store and the dedupe cache (whose keys name the model). Every
//! model's batching metrics carry a `model` label.

use std::sync::Arc;

use batchgate_batcher::{Batcher, BatcherMetrics, DrainReport};
use batchgate_queue::memory::{MemoryQueue, DEFAULT_PARTITIONS};
use batchgate_queue::{Backends, Dedupe, Intake, Steps};
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::serve::{build_worker, BatcherPart};

/// A model after the first: its name and its batcher.
#[derive(Debug, Clone)]
pub struct ModelPart {
    /// Its name, as requests give it.
    pub name: String,
    /// Its batching limits and policy, and its workers.
    pub batcher: BatcherPart,
}

/// The running batchers of the models after the first.
pub(crate) struct Models {
    /// Each model's intake, in order: the gateway admits a model's tasks through it.
    pub(crate) intakes: Vec<Arc<dyn Intake>>,
    /// Each model's batcher: its stop, and its task.
    running: Vec<(CancellationToken, JoinHandle<DrainReport>)>,
}

/// The `model` label of a model's metrics.
pub(crate) fn labelled<'r>(registry: &'r mut Registry, model: &str) -> &'r mut Registry {
    registry.sub_registry_with_label(("model".into(), model.to_owned().into()))
}

/// Starts a queue and a batcher for each of `models` on the process's in-process `backends`
/// (`partitions` and `capacity` as the first model's queue).
pub(crate) fn start(
    models: &[ModelPart],
    backends: &Backends,
    partitions: Option<usize>,
    capacity: usize,
    registry: &mut Registry,
) -> anyhow::Result<Models> {
    let Some(memory) = &backends.memory else {
        anyhow::bail!("several models run on the in-process backends only (not with --redis)");
    };
    let mut intakes: Vec<Arc<dyn Intake>> = Vec::with_capacity(models.len());
    let mut running = Vec::with_capacity(models.len());
    for model in models {
        let queue = Arc::new(MemoryQueue::new(
            partitions.unwrap_or(DEFAULT_PARTITIONS),
            capacity,
        ));
        intakes.push(Arc::new(Steps {
            queue: queue.clone(),
            results: backends.results.clone(),
            dedupe: memory.dedupe.clone().map(|d| d as Arc<dyn Dedupe>),
        }));
        let registry = labelled(registry, &model.name);
        let (worker, _healthy) = build_worker(&model.batcher.worker, registry)?;
        let batcher = Batcher::new(
            queue,
            backends.results.clone(),
            backends.dead_letters.clone(),
            worker,
            model.batcher.config,
            BatcherMetrics::register(registry),
        );
        let stop = CancellationToken::new();
        running.push((stop.clone(), tokio::spawn(batcher.run(stop))));
    }
    Ok(Models { intakes, running })
}

impl Models {
    /// Drains every model's batcher (admission is closed already); the batches drained.
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
