//! Two models with different limits (64 inputs / 50 ms and 8 / 5 ms) and a worker each,
//! under concurrent load through `/v1/inference` and `/v1/embeddings`, embedded and on Redis
//! (2 gateways, 1 batcher): no batch mixes models (each worker fails any batch that holds the
//! other model's input, and counts what it ran), each model's batch limit holds at its worker,
//! and the per-model batching metrics add up to what the workers saw.

mod common;

use std::time::Duration;

use batchgate::models::ModelPart;
use batchgate::serve::{BatcherPart, WorkerChoice};
use batchgate_batcher::BatcherConfig;
use batchgate_policy::Limits;
use batchgate_protocol::api::TaskStatus;
use batchgate_protocol::sim_output;
use batchgate_sim::{Faults, SimConfig};
use common::{client, metrics, serve_config, start_faulty_worker, start_serve, Backend, Infra};
use prometheus_parse::{Scrape, Value};

/// Requests per model.
const PER_MODEL: usize = 300;

/// A simulated worker that fails any batch holding an input meant for `other`.
async fn worker_refusing(other: &str, max_batch_size: usize) -> common::Worker {
    let config = SimConfig {
        slots: 4,
        base: Duration::from_millis(20),
        per_item: Duration::from_micros(100),
        max_batch_size,
    };
    let faults = Faults {
        poison_pattern: Some(format!("for {other}")),
        ..Faults::default()
    };
    start_faulty_worker(config, faults).await
}

/// `batchgate_batch_size`'s count and sum for `model` (`None`: the series without a model
/// label, a batcher process's own first model).
fn batch_size(scrape: &Scrape, model: Option<&str>) -> (f64, f64) {
    let series = |suffix: &str| {
        scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == format!("batchgate_batch_size{suffix}")
                    && s.labels.get("model") == model
            })
            .map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    if let (Some(count), Some(sum)) = (series("_count"), series("_sum")) {
        return (count, sum);
    }
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == "batchgate_batch_size" && s.labels.get("model") == model)
        .unwrap_or_else(|| panic!("no batch size histogram for model {model:?}"));
    let Value::Histogram(buckets) = &sample.value else {
        panic!("batchgate_batch_size is not a histogram");
    };
    let count = buckets.last().map_or(0.0, |b| b.count);
    let sum = scrape
        .samples
        .iter()
        .find(|s| s.metric == "batchgate_batch_size_sum" && s.labels.get("model") == model)
        .map_or(f64::NAN, |s| match s.value {
            Value::Untyped(v) | Value::Counter(v) | Value::Gauge(v) => v,
            _ => f64::NAN,
        });
    (count, sum)
}

/// The second model's batcher part: 8 inputs, 5 ms, its own worker.
fn small_part(url: &str) -> BatcherPart {
    BatcherPart {
        config: BatcherConfig {
            limits: Limits {
                max_batch_size: 8,
                max_wait: Duration::from_millis(5),
            },
            max_inflight_batches: 4,
            ..BatcherConfig::default()
        },
        worker: WorkerChoice::remote(&[url], Duration::from_secs(10)).expect("valid URL"),
    }
}

async fn two_models(backend: Backend) {
    let big = worker_refusing("small", 64).await;
    let small = worker_refusing("big", 8).await;
    let infra = Infra::start(backend).await;
    let mut config = serve_config(&infra, &big.url, 4);
    if let Some(part) = config.batcher.as_mut() {
        part.config.limits = Limits {
            max_batch_size: 64,
            max_wait: Duration::from_millis(50),
        };
    }
    if let Some(gateway) = config.gateway.as_mut() {
        gateway.models = vec!["big".into(), "small".into()];
    }
    config.models = vec![ModelPart {
        name: "small".into(),
        batcher: Some(small_part(&small.url)),
    }];
    // Embedded: one process. On Redis: two gateways that name both models, and one batcher
    // that batches both.
    let (gateways, batcher) = if backend == Backend::Memory {
        let serve = start_serve(config).await;
        (vec![serve], None)
    } else {
        let mut gateway = config.clone();
        gateway.batcher = None;
        gateway.models[0].batcher = None;
        let mut batcher = config;
        batcher.gateway = None;
        let first = start_serve(gateway.clone()).await;
        let second = start_serve(gateway).await;
        (vec![first, second], Some(start_serve(batcher).await))
    };
    let http = client();
    let urls: Vec<String> = gateways.iter().map(|g| g.url.clone()).collect();

    let submit = |model: &'static str, i: usize| {
        let http = http.clone();
        let url = format!("{}/v1/inference?wait_ms=30000", urls[i % urls.len()]);
        async move {
            let input = format!("input {i} for {model}");
            let view: batchgate_protocol::api::TaskView = http
                .post(url)
                .json(&serde_json::json!({ "input": input, "model": model }))
                .send()
                .await
                .expect("send")
                .json()
                .await
                .expect("a task view");
            (input, view)
        }
    };
    let calls = (0..PER_MODEL).flat_map(|i| [submit("big", i), submit("small", i)]);
    let answers = futures::future::join_all(calls).await;
    for (input, view) in &answers {
        assert_eq!(view.status, TaskStatus::Success, "{input}: {view:?}");
        assert_eq!(
            view.output.as_deref(),
            Some(sim_output(input).as_str()),
            "{input}"
        );
    }
    // A further model's result is read through any gateway.
    let (input, view) = answers.last().expect("answers");
    let read: batchgate_protocol::api::TaskView = http
        .get(format!("{}/v1/result/{}", urls[0], view.task_id))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("a task view");
    assert_eq!(read.output.as_deref(), Some(sim_output(input).as_str()));
    // The OpenAI door routes by model too.
    let embeddings = http
        .post(format!("{}/v1/embeddings", urls[0]))
        .json(&serde_json::json!({"model": "small", "input": ["one for small", "two for small"]}))
        .send()
        .await
        .expect("send");
    assert_eq!(embeddings.status(), 200);
    let unknown = http
        .post(format!("{}/v1/inference", urls[0]))
        .json(&serde_json::json!({"input": "x", "model": "neither"}))
        .send()
        .await
        .expect("send");
    assert_eq!(unknown.status(), 404);

    let (big_stats, small_stats) = (big.sim.stats(), small.sim.stats());
    // Every input reached its own model's worker and no other (a mixed batch would have
    // failed at the worker and left a task FAILED above).
    assert_eq!(big_stats.items, PER_MODEL as u64);
    assert_eq!(small_stats.items, PER_MODEL as u64 + 2);
    assert_eq!(
        big_stats.calls_failed_injected + small_stats.calls_failed_injected,
        0
    );
    // Each model's limit held at its worker.
    assert!(small_stats.max_batch_seen <= 8, "{small_stats:?}");
    assert_eq!(small_stats.oversized_calls, 0);
    assert!(
        big_stats.max_batch_seen > 8,
        "the big model's batches never grew past the small one's limit: {big_stats:?}"
    );
    // Per-model metrics add up to what each worker ran.
    let batching = batcher.as_ref().unwrap_or(&gateways[0]);
    let page = metrics(&http, &batching.url).await;
    let scrape = Scrape::parse(page.lines().map(|l| Ok(l.to_owned()))).expect("exposition");
    // A batcher process alone does not know its first model's name: that one is unlabelled.
    let first = batcher.is_none().then_some("big");
    for (model, stats) in [(first, big_stats), (Some("small"), small_stats)] {
        let (count, sum) = batch_size(&scrape, model);
        assert_eq!(
            (count, sum),
            (stats.calls as f64, stats.items as f64),
            "{model:?}: batches and inputs on /metrics against the worker's"
        );
    }
    for gateway in gateways {
        gateway.shutdown().await;
    }
    if let Some(batcher) = batcher {
        batcher.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_models_never_share_a_batch_and_keep_their_own_limits() {
    two_models(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_models_on_redis_with_two_gateways_and_one_batcher() {
    two_models(Backend::Redis).await;
}
