//! What every process serves to its operators — `/healthz`, `/readyz`, `/metrics` and the
//! status page — and the little it needs for them: a batcher-only process builds this and
//! nothing of the API (no authenticator, shedder or request metrics).

use std::ops::Deref;
use std::sync::Arc;

use batchgate_queue::{DeadLetters, Queue};
use batchgate_store::ResultStore;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::metrics::PartitionLabel;
use crate::readiness::Readiness;
use crate::state::Admission;

/// One model's queue and dead letters, as the operator routes see them.
#[derive(Clone)]
pub struct ModelQueue {
    /// Its `model` label on `/metrics` and its name on `/readyz`: `None` for the only model,
    /// and for a batcher process's first model (whose name that process is not told).
    pub label: Option<String>,
    /// Its queue: its depth on `/metrics`, its health on `/readyz`.
    pub queue: Arc<dyn Queue>,
    /// Its dead letters: their count on `/metrics`.
    pub dead_letters: Arc<dyn DeadLetters>,
}

/// One model's scrape-time gauges (labelled with its name when there are several).
#[derive(Debug, Clone, Default)]
pub struct QueueGauges {
    /// `batchgate_queue_depth{partition}`.
    pub queue_depth: Family<PartitionLabel, Gauge>,
    /// `batchgate_dead_letter_queue_tasks`: failed tasks held for inspection and replay.
    pub dead_letter_queue: Gauge,
}

/// The gauges read from the backends and the OS at each scrape, in every process.
#[derive(Debug, Clone)]
pub struct OpsGauges {
    /// Each model's queue gauges, in the order of [`OpsParts::models`].
    pub models: Vec<QueueGauges>,
    /// `batchgate_result_store_records`.
    pub result_store_records: Gauge,
    /// `batchgate_process_resident_memory_bytes`.
    pub resident_memory: Gauge,
}

impl OpsGauges {
    /// Creates the gauges of one unlabelled model and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        Self::register_models(registry, &[None])
    }

    /// Creates the gauges of models labelled `labels` (`None`: no `model` label) and
    /// registers them in `registry`.
    pub fn register_models(registry: &mut Registry, labels: &[Option<String>]) -> Self {
        let g = OpsGauges {
            models: labels.iter().map(|_| QueueGauges::default()).collect(),
            result_store_records: Gauge::default(),
            resident_memory: Gauge::default(),
        };
        for (label, gauges) in labels.iter().zip(&g.models) {
            let registry = match label {
                Some(model) => {
                    registry.sub_registry_with_label(("model".into(), model.clone().into()))
                }
                None => &mut *registry,
            };
            registry.register(
                "batchgate_queue_depth",
                "Tasks waiting in each queue partition",
                gauges.queue_depth.clone(),
            );
            registry.register(
                "batchgate_dead_letter_queue_tasks",
                "Failed tasks held in the dead-letter queue",
                gauges.dead_letter_queue.clone(),
            );
        }
        registry.register(
            "batchgate_result_store_records",
            "Records in the result store",
            g.result_store_records.clone(),
        );
        registry.register(
            "batchgate_process_resident_memory_bytes",
            "Resident memory of this process",
            g.resident_memory.clone(),
        );
        g
    }
}

/// The parts of [`Ops`].
pub struct OpsParts {
    /// Every model's queue and dead letters, the first model's first.
    pub models: Vec<ModelQueue>,
    /// The result store: its size on `/metrics`.
    pub results: Arc<dyn ResultStore>,
    /// The process's registry, rendered by `/metrics` (every part registers in it).
    pub registry: Arc<Registry>,
    /// What `/readyz` answers besides admission: draining, queue errors, each model's
    /// workers.
    pub readiness: Arc<Readiness>,
    /// Closed by shutdown; `/readyz` answers 503 once it is.
    pub admission: Arc<Admission>,
    /// The scrape-time gauges, registered in `registry`.
    pub gauges: OpsGauges,
}

/// Cheap-to-clone handle to what the operator routes read (one `Arc`).
#[derive(Clone)]
pub struct Ops(Arc<OpsParts>);

impl Ops {
    /// Wraps the parts.
    pub fn new(parts: OpsParts) -> Self {
        Ops(Arc::new(parts))
    }

    /// Queue, stores and readiness of a process without the API and with one model;
    /// registers the scrape-time gauges in `registry` first.
    pub fn build(
        queue: Arc<dyn Queue>,
        results: Arc<dyn ResultStore>,
        dead_letters: Arc<dyn DeadLetters>,
        registry: Registry,
        readiness: Arc<Readiness>,
    ) -> Self {
        let model = ModelQueue {
            label: None,
            queue,
            dead_letters,
        };
        Self::build_models(vec![model], results, registry, readiness)
    }

    /// As [`Ops::build`], for several models (`readiness` knows each one's workers, in the
    /// same order).
    pub fn build_models(
        models: Vec<ModelQueue>,
        results: Arc<dyn ResultStore>,
        mut registry: Registry,
        readiness: Arc<Readiness>,
    ) -> Self {
        let labels: Vec<Option<String>> = models.iter().map(|m| m.label.clone()).collect();
        let gauges = OpsGauges::register_models(&mut registry, &labels);
        Ops::new(OpsParts {
            models,
            results,
            registry: Arc::new(registry),
            readiness,
            admission: Arc::new(Admission::default()),
            gauges,
        })
    }
}

impl Deref for Ops {
    type Target = OpsParts;

    fn deref(&self) -> &OpsParts {
        &self.0
    }
}
