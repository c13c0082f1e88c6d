//! The in-process stores' evictions on `/metrics`, read at each scrape:
//! `batchgate_result_store_evictions_total` (results dropped before their TTL to make room for
//! newer ones, at `--max-results`) and `batchgate_dedupe_evictions_total` (dedupe entries
//! dropped the same way, so those inputs may run again).

use batchgate_queue::MemoryStores;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;

/// Reads the stores' eviction counts on each scrape.
#[derive(Debug, Clone)]
pub struct EvictionCollector(pub MemoryStores);

impl Collector for EvictionCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let counters = [
            (
                "batchgate_result_store_evictions",
                "Results dropped before their TTL to make room for newer ones (--max-results)",
                Some(self.0.results.evicted()),
            ),
            (
                "batchgate_dedupe_evictions",
                "Dedupe entries dropped before their TTL to make room for newer ones",
                self.0.dedupe.as_ref().map(|d| d.evicted()),
            ),
        ];
        for (name, help, value) in counters {
            let Some(value) = value else { continue };
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}
