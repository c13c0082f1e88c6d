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

/// The gauges read from the backends and the OS at each scrape, in every process.
#[derive(Debug, Clone)]
pub struct OpsGauges {
    /// `batchgate_queue_depth{partition}`.
    pub queue_depth: Family<PartitionLabel, Gauge>,
    /// `batchgate_dead_letter_queue_tasks`: failed tasks held for inspection and replay.
    pub dead_letter_queue: Gauge,
    /// `batchgate_result_store_records`.
    pub result_store_records: Gauge,
    /// `batchgate_process_resident_memory_bytes`.
    pub resident_memory: Gauge,
}

impl OpsGauges {
    /// Creates the gauges and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let g = OpsGauges {
            queue_depth: Family::default(),
            dead_letter_queue: Gauge::default(),
            result_store_records: Gauge::default(),
            resident_memory: Gauge::default(),
        };
        registry.register(
            "batchgate_queue_depth",
            "Tasks waiting in each queue partition",
            g.queue_depth.clone(),
        );
        registry.register(
            "batchgate_dead_letter_queue_tasks",
            "Failed tasks held in the dead-letter queue",
            g.dead_letter_queue.clone(),
        );
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
    /// The queue: its depth on `/metrics`, its health on `/readyz`.
    pub queue: Arc<dyn Queue>,
    /// The result store: its size on `/metrics`.
    pub results: Arc<dyn ResultStore>,
    /// The dead letters: their count on `/metrics`.
    pub dead_letters: Arc<dyn DeadLetters>,
    /// The process's registry, rendered by `/metrics` (every part registers in it).
    pub registry: Arc<Registry>,
    /// What `/readyz` answers besides admission: draining, queue errors, workers.
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

    /// Queue, stores and readiness of a process without the API; registers the scrape-time
    /// gauges in `registry` first.
    pub fn build(
        queue: Arc<dyn Queue>,
        results: Arc<dyn ResultStore>,
        dead_letters: Arc<dyn DeadLetters>,
        mut registry: Registry,
        readiness: Arc<Readiness>,
    ) -> Self {
        let gauges = OpsGauges::register(&mut registry);
        Ops::new(OpsParts {
            queue,
            results,
            dead_letters,
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
