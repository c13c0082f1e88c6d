//! Known traffic in, exact metric values out: `/metrics` scraped and parsed with a Prometheus
//! text parser, on the embedded deployment and on the worker process.

mod common;

use std::time::Duration;

use batchgate_policy::Limits;
use batchgate_protocol::api::TaskStatus;
use common::{fast_sim, infer, serve_config, start_serve, start_worker, Infra, Proc};
use prometheus_parse::{Scrape, Value};

/// `GET {base}/metrics`, parsed.
async fn scrape(http: &reqwest::Client, base: &str) -> Scrape {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics text");
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("valid exposition text")
}

/// The one sample of `name` whose labels include `labels`; fails the test if absent.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .filter_map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
            _ => None,
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one sample of {name}{labels:?}, got {found:?}"
    );
    found[0]
}

/// Cumulative count of histogram `name` at upper bound `le`.
fn bucket(scrape: &Scrape, name: &str, le: f64) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == name)
        .unwrap_or_else(|| panic!("histogram {name} missing"));
    let Value::Histogram(buckets) = &sample.value else {
        panic!("{name} is not a histogram");
    };
    buckets
        .iter()
        .find(|b| b.less_than == le)
        .unwrap_or_else(|| panic!("{name} has no bucket le={le}"))
        .count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_traffic_gives_exact_counts_batches_and_histograms() {
    let worker = start_worker(fast_sim(4)).await;
    let mut config = serve_config(&Infra::None, &worker.url, 4);
    let part = config.batcher.as_mut().expect("a batcher");
    // Batches of 4; a lone task leaves on the timer. The window is long enough that eight
    // concurrent submissions always fill two batches before it closes.
    part.config.limits = Limits {
        max_batch_size: 4,
        max_wait: Duration::from_millis(1500),
    };
    let serve = start_serve(config).await;
    let http = common::client();

    // Eight distinct inputs at once: two full batches.
    let answers = futures::future::join_all((0..8).map(|i| {
        let (http, url) = (&http, &serve.url);
        async move { infer(http, url, &format!("input-{i}")).await }
    }))
    .await;
    assert!(answers.iter().all(|a| a.status == TaskStatus::Success));
    // One alone: a batch of one, flushed by the timer.
    assert_eq!(
        infer(&http, &serve.url, "alone").await.status,
        TaskStatus::Success
    );
    // A resubmission: answered from the dedupe cache, not run again.
    assert_eq!(
        infer(&http, &serve.url, "input-0").await.status,
        TaskStatus::Success
    );
    // An empty input: 422, nothing enqueued.
    let refused = http
        .post(format!("{}/v1/inference", serve.url))
        .json(&serde_json::json!({ "input": "" }))
        .send()
        .await
        .expect("send");
    assert_eq!(refused.status(), 422);

    let m = scrape(&http, &serve.url).await;
    let submit = "/v1/inference";
    assert_eq!(
        value(
            &m,
            "batchgate_http_requests_total",
            &[("route", submit), ("status", "200")]
        ),
        10.0
    );
    assert_eq!(
        value(
            &m,
            "batchgate_http_requests_total",
            &[("route", submit), ("status", "422")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "batchgate_http_errors_total",
            &[("code", "invalid_request")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "batchgate_http_request_duration_seconds_count",
            &[("route", submit)]
        ),
        11.0
    );
    assert_eq!(value(&m, "batchgate_tasks_accepted_total", &[]), 9.0);
    assert_eq!(value(&m, "batchgate_dedupe_hits_total", &[]), 1.0);
    assert_eq!(
        value(
            &m,
            "batchgate_tasks_completed_total",
            &[("outcome", "success")]
        ),
        9.0
    );
    assert_eq!(
        value(&m, "batchgate_batches_total", &[("reason", "full")]),
        2.0
    );
    assert_eq!(
        value(&m, "batchgate_batches_total", &[("reason", "timer")]),
        1.0
    );
    // Batch sizes 4, 4 and 1.
    assert_eq!(value(&m, "batchgate_batch_size_count", &[]), 3.0);
    assert_eq!(value(&m, "batchgate_batch_size_sum", &[]), 9.0);
    assert_eq!(bucket(&m, "batchgate_batch_size", 1.0), 1.0);
    assert_eq!(bucket(&m, "batchgate_batch_size", 2.0), 1.0);
    assert_eq!(bucket(&m, "batchgate_batch_size", 4.0), 3.0);
    assert_eq!(bucket(&m, "batchgate_batch_size", f64::INFINITY), 3.0);
    assert_eq!(
        value(&m, "batchgate_worker_call_duration_seconds_count", &[]),
        3.0
    );
    // Every task that ran is timed once from acceptance: to its batch leaving, to its result.
    assert_eq!(value(&m, "batchgate_task_wait_seconds_count", &[]), 9.0);
    assert_eq!(value(&m, "batchgate_task_latency_seconds_count", &[]), 9.0);
    // The lone task waited the whole window: its wait is at least 1.5 s, the others' less.
    assert_eq!(bucket(&m, "batchgate_task_wait_seconds", 1.0), 8.0);
    assert_eq!(value(&m, "batchgate_inflight_batches_max", &[]), 4.0);
    assert_eq!(value(&m, "batchgate_inflight_batches", &[]), 0.0);
    assert_eq!(value(&m, "batchgate_worker_retries_total", &[]), 0.0);
    assert_eq!(value(&m, "batchgate_collapsed_inputs_total", &[]), 0.0);
    assert_eq!(value(&m, "batchgate_dead_letter_queue_tasks", &[]), 0.0);
    assert_eq!(value(&m, "batchgate_rate_limited_total", &[]), 0.0);
    let depth: f64 = (0..16)
        .map(|p| {
            value(
                &m,
                "batchgate_queue_depth",
                &[("partition", &p.to_string())],
            )
        })
        .sum();
    assert_eq!(depth, 0.0);
    // Nine records, one per task that ran (the dedupe hit shares one).
    assert_eq!(value(&m, "batchgate_result_store_records", &[]), 9.0);
    // The worker saw the same three calls.
    assert_eq!(worker.sim.stats().calls, 3);

    serve.shutdown().await;
    worker.stop.cancel();
}

#[test]
fn the_worker_process_exports_its_calls_items_and_busy_time() {
    let worker = Proc::start(&[
        "worker",
        "--sim",
        "--listen",
        "127.0.0.1:0",
        "--base-ms",
        "5",
        "--per-item-ms",
        "0",
    ]);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let http = common::client();
        for n in [3, 5] {
            let inputs: Vec<String> = (0..n).map(|i| format!("x{i}")).collect();
            let answer = http
                .post(format!("{}/v1/batch", worker.url))
                .json(&serde_json::json!({ "inputs": inputs }))
                .send()
                .await
                .expect("call");
            assert_eq!(answer.status(), 200);
        }
        let m = scrape(&http, &worker.url).await;
        assert_eq!(
            value(
                &m,
                "batchgate_worker_calls_total",
                &[("outcome", "success")]
            ),
            2.0
        );
        assert_eq!(value(&m, "batchgate_worker_items_total", &[]), 8.0);
        assert_eq!(value(&m, "batchgate_worker_inflight_calls", &[]), 0.0);
        assert_eq!(value(&m, "batchgate_worker_slots", &[]), 32.0);
        // Two calls of at least 5 ms each held a slot.
        assert!(value(&m, "batchgate_worker_busy_seconds_total", &[]) >= 0.010);
    });
}

/// Every `batchgate_*` metric the Grafana dashboard queries is exported by a live process's
/// `/metrics`, as a sample. Names merely written somewhere in the source do not count, so the
/// labelled families that have no series until their event happens are made to have one:
/// the traffic includes an overload that is shed (`batchgate_shed_total`, and its 503 in
/// `batchgate_http_errors_total`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_queries_only_exported_metrics() {
    let dashboard = include_str!("../../../deploy/grafana/batchgate.json");
    // One slot at ≈ 500 ms a batch, and shedding past 1 ms of estimated queue wait: a
    // backlog of ten batches keeps the slot busy for five seconds, and is shed.
    let worker = start_worker(batchgate_sim::SimConfig {
        slots: 1,
        base: Duration::from_millis(500),
        per_item: Duration::from_micros(100),
        max_batch_size: 64,
    })
    .await;
    let mut config = serve_config(&Infra::None, &worker.url, 1);
    config.edge.shed = batchgate_gateway::ShedBound::QueueWait(Duration::from_millis(1));
    let serve = start_serve(config).await;
    let worker_process = Proc::start(&["worker", "--sim", "--listen", "127.0.0.1:0"]);
    let http = common::client();
    assert_eq!(
        infer(&http, &serve.url, "one").await.status,
        TaskStatus::Success
    );
    let submit = |input: String| {
        let (http, url) = (http.clone(), format!("{}/v1/inference", serve.url));
        async move {
            let answer = http
                .post(url)
                .json(&serde_json::json!({ "input": input }))
                .send()
                .await
                .expect("send");
            answer.status().as_u16()
        }
    };
    futures::future::join_all((0..640).map(|i| submit(format!("backlog {i}")))).await;
    // The gateway sheds once the batcher has reported its slot busy: wait for that, one
    // submission at a time, within a bound.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut probe = 0;
    while submit(format!("probe {probe}")).await != 503 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a backlog of 640 tasks on one slot was never shed"
        );
        probe += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut exported: Vec<String> = Vec::new();
    for base in [&serve.url, &worker_process.url] {
        let scraped = scrape(&http, base).await;
        exported.extend(scraped.samples.into_iter().map(|s| s.metric));
        exported.extend(scraped.docs.into_keys());
    }
    let mut missing = Vec::new();
    for word in dashboard.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if !word.starts_with("batchgate_") || word == "batchgate_" {
            continue;
        }
        let family = ["_bucket", "_sum", "_count", "_total"]
            .iter()
            .find_map(|suffix| word.strip_suffix(suffix))
            .unwrap_or(word);
        if !exported.iter().any(|e| e == family || e == word) {
            missing.push(word.to_owned());
        }
    }
    assert!(missing.is_empty(), "not exported: {missing:?}");
    serve.shutdown().await;
    worker.stop.cancel();
}

/// A result store at its bound drops its oldest results, not new tasks, and says so: with
/// `max_results` 40, 60 tasks run one after another leave the newest 40 readable, the first
/// 20 gone (404), and 20 evictions counted for the store and for the dedupe cache (bounded
/// by the store, since an entry whose result is gone is of no use).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_result_store_evicts_its_oldest_results_and_counts_them() {
    let infra = Infra::None;
    let worker = start_worker(fast_sim(4)).await;
    let mut config = serve_config(&infra, &worker.url, 4);
    config.store.max_results = 40;
    let serve = start_serve(config).await;
    let http = common::client();
    let mut task_ids = Vec::new();
    for i in 0..60 {
        let view = infer(&http, &serve.url, &format!("bounded store {i}")).await;
        assert_eq!(view.status, TaskStatus::Success, "task {i}: {view:?}");
        task_ids.push(view.task_id);
    }
    for (i, task_id) in task_ids.iter().enumerate() {
        let answer = http
            .get(format!("{}/v1/result/{task_id}", serve.url))
            .send()
            .await
            .expect("send");
        let expected = if i < 20 { 404 } else { 200 };
        assert_eq!(answer.status(), expected, "task {i}");
    }
    let m = scrape(&http, &serve.url).await;
    assert_eq!(
        value(&m, "batchgate_result_store_evictions_total", &[]),
        20.0
    );
    assert_eq!(value(&m, "batchgate_dedupe_evictions_total", &[]), 20.0);
    assert_eq!(value(&m, "batchgate_result_store_records", &[]), 40.0);
    serve.shutdown().await;
    worker.stop.cancel();
}
