//! The pool's view of each worker on the batcher's `/metrics`, read at each scrape:
//! `batchgate_pool_worker_healthy{worker}` (1 while it takes calls, 0 while its health check
//! fails) and `batchgate_pool_inflight_calls{worker}` (calls under way on it, or waiting for
//! one of its places). Per zone (docs/zones.md): `batchgate_zone_batches_total{zone}`
//! (worker calls, by the zone of the worker that took them; `zone=""` for workers without
//! one) and `batchgate_cross_zone_calls_total{zone}` (those of them that left the batcher's
//! zone), both counted by the pool as it places calls.

use batchgate_worker::pool::MemberStatus;
use batchgate_worker::Pool;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

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
        let gauge = ConstGauge::new(0i64).metric_type();
        let by_worker = |value: fn(&MemberStatus) -> i64| {
            status
                .iter()
                .map(move |w| (w.name.as_str(), ConstGauge::new(value(w))))
        };
        family(
            &mut encoder,
            (
                "batchgate_pool_worker_healthy",
                "1 while the worker takes calls, 0 while its health check fails",
            ),
            gauge,
            "worker",
            by_worker(|w| i64::from(w.healthy)),
        )?;
        family(
            &mut encoder,
            (
                "batchgate_pool_inflight_calls",
                "Batch calls under way on each worker (or waiting for one of its places)",
            ),
            gauge,
            "worker",
            by_worker(|w| i64::try_from(w.in_flight).unwrap_or(i64::MAX)),
        )?;
        // Per zone: a handful of workers, summed at each scrape.
        let mut per_zone: Vec<(&str, u64, u64)> = Vec::new();
        for worker in &status {
            let zone = worker.zone.as_ref().map_or("", |z| z.as_str());
            let cross = if worker.remote { worker.calls } else { 0 };
            match per_zone.iter_mut().find(|(z, _, _)| *z == zone) {
                Some(entry) => {
                    entry.1 += worker.calls;
                    entry.2 += cross;
                }
                None => per_zone.push((zone, worker.calls, cross)),
            }
        }
        let counter = ConstCounter::new(0u64).metric_type();
        family(
            &mut encoder,
            (
                "batchgate_zone_batches",
                "Worker calls, by the zone of the worker that took them",
            ),
            counter,
            "zone",
            per_zone
                .iter()
                .map(|(zone, calls, _)| (*zone, ConstCounter::new(*calls))),
        )?;
        family(
            &mut encoder,
            ("batchgate_cross_zone_calls", "Worker calls sent outside this batcher's zone (its zone's workers busy or down), by the worker's zone"),
            counter,
            "zone",
            per_zone.iter().map(|(zone, _, cross)| (*zone, ConstCounter::new(*cross))),
        )
    }
}

/// One metric family, `(name, help)`, with a sample per `(label value, metric)` row.
fn family<'a, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    (name, help): (&str, &str),
    kind: MetricType,
    label: &str,
    rows: impl Iterator<Item = (&'a str, M)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (value, metric) in rows {
        metric.encode(family.encode_family(&[(label, value)])?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use batchgate_worker::{PoolConfig, WorkerSpec};
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    use super::*;

    /// The pool's metrics page as text, and parsed.
    fn scrape(pool: Pool) -> (String, prometheus_parse::Scrape) {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(PoolCollector(pool)));
        let mut text = String::new();
        encode(&mut text, &registry).expect("encode");
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let scrape = prometheus_parse::Scrape::parse(lines.into_iter().map(Ok)).expect("parse");
        (text, scrape)
    }

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
        let (_, scrape) = scrape(pool);
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
        for sample in scrape
            .samples
            .iter()
            .filter(|s| s.metric.starts_with("batchgate_pool_"))
        {
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

    #[tokio::test]
    async fn calls_are_counted_per_zone_of_the_worker() {
        // One worker per zone that answers at once; the pool runs in zone a, so b's calls
        // are cross-zone.
        let app = axum::Router::new().route(
            "/v1/batch",
            axum::routing::post(
                |axum::Json(r): axum::Json<batchgate_protocol::worker_api::BatchRequest>| async move {
                    axum::Json(batchgate_protocol::worker_api::BatchResponse { outputs: r.inputs })
                },
            ),
        );
        let mut urls = Vec::new();
        for zone in ["a", "b"] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            urls.push(format!(
                "http://{}?zone={zone}",
                listener.local_addr().expect("addr")
            ));
            let app = app.clone();
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
        let specs: Vec<WorkerSpec> = urls.iter().map(|u| u.parse().expect("spec")).collect();
        let config = PoolConfig {
            timeout: Duration::from_secs(5),
            zone: Some("a".parse().expect("zone")),
            ..PoolConfig::default()
        };
        let pool = Pool::connect(&specs, &config, None).expect("pool");
        let inputs = vec!["x".to_owned()];
        for _ in 0..3 {
            batchgate_worker::Worker::infer(&pool, &inputs)
                .await
                .expect("zone a answers");
        }
        let (text, scrape) = scrape(pool);
        assert!(
            text.contains("# TYPE batchgate_zone_batches counter"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE batchgate_cross_zone_calls counter"),
            "{text}"
        );
        let value = |metric: &str, zone: &str| {
            scrape
                .samples
                .iter()
                .find(|s| s.metric == metric && s.labels.get("zone") == Some(zone))
                .map(|s| match s.value {
                    // The parser types a `_total` sample of a counter family as untyped.
                    prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                    ref other => panic!("{metric} is not a counter: {other:?}"),
                })
        };
        assert_eq!(
            value("batchgate_zone_batches_total", "a"),
            Some(3.0),
            "{text}"
        );
        assert_eq!(
            value("batchgate_zone_batches_total", "b"),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            value("batchgate_cross_zone_calls_total", "a"),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            value("batchgate_cross_zone_calls_total", "b"),
            Some(0.0),
            "{text}"
        );
    }
}
