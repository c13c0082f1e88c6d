//! The pool's view of each worker on the batcher's `/metrics`, read at each scrape:
//! `batchgate_pool_worker_healthy{worker}` (1 while it takes calls, 0 while its health check
//! fails) and `batchgate_pool_inflight_calls{worker}` (calls under way on it, or waiting for
//! one of its places).

use batchgate_worker::Pool;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;

/// Reads [`Pool::status`] on each scrape.
#[derive(Clone)]
pub struct PoolCollector(pub Pool);

impl std::fmt::Debug for PoolCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PoolCollector").finish_non_exhaustive()
    }
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let status = self.0.status();
        let kind = ConstGauge::new(0i64).metric_type();
        let mut healthy = encoder.encode_descriptor(
            "batchgate_pool_worker_healthy",
            "1 while the worker takes calls, 0 while its health check fails",
            None,
            kind,
        )?;
        for worker in &status {
            let labels = [("worker", worker.name.as_str())];
            ConstGauge::new(i64::from(worker.healthy)).encode(healthy.encode_family(&labels)?)?;
        }
        let mut in_flight = encoder.encode_descriptor(
            "batchgate_pool_inflight_calls",
            "Batch calls under way on each worker (or waiting for one of its places)",
            None,
            kind,
        )?;
        for worker in &status {
            let labels = [("worker", worker.name.as_str())];
            ConstGauge::new(i64::try_from(worker.in_flight).unwrap_or(i64::MAX))
                .encode(in_flight.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use batchgate_worker::{PoolConfig, WorkerSpec};
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    use super::*;

    // A runtime, because the gRPC client's channel is built inside one.
    #[tokio::test]
    async fn every_worker_of_the_pool_has_its_gauges() {
        let specs: Vec<WorkerSpec> = ["http://127.0.0.1:1", "grpc://127.0.0.1:2"]
            .iter()
            .map(|u| u.parse().expect("spec"))
            .collect();
        let config = PoolConfig {
            timeout: Duration::from_secs(1),
            ..PoolConfig::default()
        };
        let pool = Pool::connect(&specs, &config, None).expect("pool");
        let mut registry = Registry::default();
        registry.register_collector(Box::new(PoolCollector(pool)));
        let mut text = String::new();
        encode(&mut text, &registry).expect("encode");
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let scrape = prometheus_parse::Scrape::parse(lines.into_iter().map(Ok)).expect("parse");
        for name in [
            "batchgate_pool_worker_healthy",
            "batchgate_pool_inflight_calls",
        ] {
            let workers: Vec<&str> = scrape
                .samples
                .iter()
                .filter(|s| s.metric == name)
                .filter_map(|s| s.labels.get("worker"))
                .collect();
            assert_eq!(
                workers,
                ["http://127.0.0.1:1", "grpc://127.0.0.1:2"],
                "{name}"
            );
        }
        // Nothing has failed a health check yet, and nothing is under way.
        for sample in &scrape.samples {
            let expected = if sample.metric == "batchgate_pool_worker_healthy" {
                1.0
            } else {
                0.0
            };
            assert!(
                matches!(sample.value, prometheus_parse::Value::Gauge(v) if v == expected),
                "{sample:?}"
            );
        }
    }
}
