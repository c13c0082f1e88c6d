//! Several models, each watched on its own: a model whose only worker slot is saturated sheds
//! its own submissions (503 `overloaded` with `Retry-After`) while another model's still go
//! through; a model whose worker is down is not ready (`/v2/models/{name}/ready` 503) while
//! the others and the process stay ready; queue depth and the load signal carry each model's
//! name; and a further model's dead letter, replayed, runs on its own model's worker again.
//! Embedded and on Redis (`serve --redis`).

mod common;

use std::time::Duration;

use batchgate::models::ModelPart;
use batchgate::serve::{BatcherPart, WorkerChoice};
use batchgate_batcher::BatcherConfig;
use batchgate_policy::Limits;
use batchgate_protocol::api::TaskStatus;
use batchgate_sim::{Faults, SimConfig};
use batchgate_worker::PoolConfig;
use common::{
    client, closed_port_url, fast_sim, metrics, serve_config, start_faulty_worker, start_serve,
    Backend, Infra, ADMIN_TOKEN,
};
use prometheus_parse::{Scrape, Value};

/// A batcher part on the worker at `url`: `max_batch_size` inputs, one call at a time,
/// health checked every 100 ms.
fn part(url: &str, max_batch_size: usize) -> BatcherPart {
    BatcherPart {
        config: BatcherConfig {
            limits: Limits {
                max_batch_size,
                max_wait: Duration::from_millis(5),
            },
            max_inflight_batches: 1,
            ..BatcherConfig::default()
        },
        worker: WorkerChoice::Remote {
            workers: vec![url.parse().expect("a valid worker URL")],
            pool: PoolConfig {
                timeout: Duration::from_secs(10),
                health_interval: Duration::from_millis(100),
                ..PoolConfig::default()
            },
            tls: Default::default(),
        },
    }
}

/// The value of the sample of `name` whose labels include every pair of `labels`, summed
/// over the others (partitions).
fn sample(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for s in scrape.samples.iter().filter(|s| s.metric == name) {
        if labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)) {
            if let Value::Gauge(v) | Value::Untyped(v) | Value::Counter(v) = s.value {
                *found.get_or_insert(0.0) += v;
            }
        }
    }
    found
}

async fn scrape(http: &reqwest::Client, url: &str) -> Scrape {
    let page = metrics(http, url).await;
    Scrape::parse(page.lines().map(|l| Ok(l.to_owned()))).expect("exposition")
}

/// Submits `input` to `model` without waiting: the status, whether `Retry-After` came, and
/// the body.
async fn submit(
    http: &reqwest::Client,
    url: &str,
    model: &str,
    input: String,
) -> (u16, bool, serde_json::Value) {
    let response = http
        .post(format!("{url}/v1/inference"))
        .json(&serde_json::json!({ "input": input, "model": model }))
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    let retry_after = response.headers().contains_key("retry-after");
    (status, retry_after, response.json().await.expect("json"))
}

/// `GET url` until it answers `status`, for at most 30 s.
async fn until_status(http: &reqwest::Client, url: &str, status: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = http.get(url).send().await.expect("send").status().as_u16();
        if got == status {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} still answers {got}, not {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three models: `slow` (one slot, 250 ms a call of at most 8), `fast` (4 slots, 20 ms) and
/// `broken` (its worker's port closed). On memory `fast` is the first model; on Redis `slow`
/// is, so that either way round one model's state must not decide for another.
async fn each_model_on_its_own(backend: Backend) {
    let slow = start_faulty_worker(
        SimConfig {
            slots: 1,
            base: Duration::from_millis(250),
            per_item: Duration::from_micros(100),
            max_batch_size: 8,
        },
        Faults::default(),
    )
    .await;
    let fast = start_faulty_worker(fast_sim(4), Faults::default()).await;
    let infra = Infra::start(backend).await;
    let parts = [
        ("slow", part(&slow.url, 8)),
        ("fast", part(&fast.url, 64)),
        ("broken", part(&closed_port_url(), 64)),
    ];
    let order: [usize; 3] = if backend == Backend::Memory {
        [1, 0, 2]
    } else {
        [0, 1, 2]
    };
    let mut config = serve_config(&infra, &fast.url, 4);
    // Shedding as by default: on the latency objective.
    config.edge.shed = batchgate_gateway::ShedBound::default();
    config.batcher = Some(parts[order[0]].1.clone());
    if let Some(gateway) = config.gateway.as_mut() {
        gateway.models = order.iter().map(|&i| parts[i].0.to_owned()).collect();
    }
    config.models = order[1..]
        .iter()
        .map(|&i| ModelPart {
            name: parts[i].0.into(),
            batcher: Some(parts[i].1.clone()),
        })
        .collect();
    let serve = start_serve(config).await;
    let http = client();

    // The broken model is not ready, the others and the process are.
    until_status(&http, &format!("{}/v2/models/broken/ready", serve.url), 503).await;
    for ready in [
        "/v2/models/fast/ready",
        "/v2/models/slow/ready",
        "/v2/health/ready",
    ] {
        let status = http
            .get(format!("{}{ready}", serve.url))
            .send()
            .await
            .expect("send")
            .status();
        assert_eq!(status, 200, "{ready}");
    }
    let readyz: serde_json::Value = http
        .get(format!("{}/readyz", serve.url))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(readyz["status"], "ready", "{readyz}");
    assert_eq!(readyz["models"]["broken"]["status"], "no_healthy_worker");
    assert_eq!(readyz["models"]["fast"]["status"], "ready", "{readyz}");

    // A backlog on the slow model, so that its capacity is measured (nothing is shed on a
    // guess): 200 tasks at once, about six seconds of its worker's work.
    let warm = futures::future::join_all(
        (0..200).map(|i| submit(&http, &serve.url, "slow", format!("warm {i}"))),
    )
    .await;
    assert!(
        warm.iter().all(|(status, _, _)| *status == 202),
        "a cold start is not shed"
    );
    // Then the slow model sheds its own submissions once it has measured its worker.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    let refused = loop {
        i += 1;
        let answer = submit(&http, &serve.url, "slow", format!("more {i}")).await;
        if answer.0 == 503 {
            break answer;
        }
        assert_eq!(answer.0, 202, "{answer:?}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the saturated model was never shed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(refused.1, "Retry-After");
    assert_eq!(refused.2["error"]["code"], "overloaded", "{refused:?}");
    // Meanwhile the fast model's submissions go through and complete.
    for i in 0..20 {
        let view: batchgate_protocol::api::TaskView = http
            .post(format!("{}/v1/inference?wait_ms=10000", serve.url))
            .json(&serde_json::json!({ "input": format!("fast {i}"), "model": "fast" }))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("a task view, not a refusal");
        assert_eq!(view.status, TaskStatus::Success, "{view:?}");
    }
    // Queue depth and the load signal, by model.
    let scrape = scrape(&http, &serve.url).await;
    let depth = |model| sample(&scrape, "batchgate_queue_depth", &[("model", model)]);
    assert!(
        depth("slow").is_some_and(|d| d > 0.0),
        "{:?}",
        depth("slow")
    );
    assert_eq!(depth("fast"), Some(0.0));
    let busy = |model| sample(&scrape, "batchgate_workers_busy_ratio", &[("model", model)]);
    assert!(busy("slow").is_some_and(|b| b >= 0.8), "{:?}", busy("slow"));
    assert!(busy("fast").is_some_and(|b| b < 0.8), "{:?}", busy("fast"));
    let status: serde_json::Value = http
        .get(format!("{}/status.json", serve.url))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert!(
        status["queue_depth_by_model"]["slow"].as_f64() > Some(0.0),
        "{status}"
    );
    // Nothing of the slow model ran anywhere else.
    assert_eq!(fast.sim.stats().items, 20);
    serve.shutdown().await;
    slow.stop.cancel();
    fast.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_model_sheds_and_is_ready_on_its_own_memory() {
    each_model_on_its_own(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_model_sheds_and_is_ready_on_its_own_redis() {
    each_model_on_its_own(Backend::Redis).await;
}

/// A further model's task that failed for good is listed under its model and, replayed
/// (through `batchgate dlq replay`'s admin route), runs on its own model's worker again.
async fn replay_to_its_own_model(backend: Backend) {
    // Each worker fails any batch holding a poisoned input; the first model's also fails
    // any holding the further model's inputs, so a replay sent to the wrong queue shows.
    let first = start_faulty_worker(
        fast_sim(2),
        Faults {
            poison_pattern: Some("for small".into()),
            ..Faults::default()
        },
    )
    .await;
    let small = start_faulty_worker(
        fast_sim(2),
        Faults {
            poison_pattern: Some("POISON".into()),
            ..Faults::default()
        },
    )
    .await;
    let infra = Infra::start(backend).await;
    let mut config = serve_config(&infra, &first.url, 2);
    if let Some(gateway) = config.gateway.as_mut() {
        gateway.models = vec!["big".into(), "small".into()];
    }
    config.models = vec![ModelPart {
        name: "small".into(),
        batcher: Some(part(&small.url, 64)),
    }];
    let serve = start_serve(config).await;
    let http = client();
    let view: batchgate_protocol::api::TaskView = http
        .post(format!("{}/v1/inference?wait_ms=10000", serve.url))
        .json(&serde_json::json!({ "input": "a POISON pill for small", "model": "small" }))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("a task view");
    assert_eq!(view.status, TaskStatus::Failed, "{view:?}");
    let dlq = format!("{}/admin/dlq", serve.url);
    let listing = |expected: u64| {
        let http = http.clone();
        let dlq = dlq.clone();
        async move {
            // The dead letter is written after the result: wait for it, 10 s at most.
            for _ in 0..200 {
                let listing: serde_json::Value = http
                    .get(&dlq)
                    .bearer_auth(ADMIN_TOKEN)
                    .send()
                    .await
                    .expect("send")
                    .json()
                    .await
                    .expect("json");
                if listing["count"] == expected {
                    return listing;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("the dead-letter queue never held {expected}");
        }
    };
    let listed = listing(1).await;
    let entry = &listed["entries"][0];
    assert_eq!(entry["model"], "small", "{listed}");
    assert_eq!(entry["task_id"], view.task_id.as_str());
    assert!(
        entry["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("small/")),
        "{listed}"
    );
    // Its calls (poisoned, so counted only in the slots' busy time) went to its own model's
    // worker.
    let small_busy = small.sim.stats().busy_seconds;
    assert!(small_busy > 0.0);
    let replayed: serde_json::Value = http
        .post(format!("{dlq}/replay"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({ "ids": [entry["id"]] }))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(replayed["task_ids"][0], view.task_id.as_str(), "{replayed}");
    let again: batchgate_protocol::api::TaskView = http
        .get(format!(
            "{}/v1/result/{}?wait_ms=10000",
            serve.url, view.task_id
        ))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(again.status, TaskStatus::Failed, "{again:?}");
    // It ran on its own model's worker (poisoned still), never on the first model's.
    let back = listing(1).await;
    assert_eq!(back["entries"][0]["model"], "small", "{back}");
    assert!(small.sim.stats().busy_seconds > small_busy);
    assert_eq!(
        first.sim.stats().busy_seconds,
        0.0,
        "{:?}",
        first.sim.stats()
    );
    serve.shutdown().await;
    first.stop.cancel();
    small.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_further_models_dead_letter_replays_to_its_own_queue_memory() {
    replay_to_its_own_model(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_further_models_dead_letter_replays_to_its_own_queue_redis() {
    replay_to_its_own_model(Backend::Redis).await;
}
