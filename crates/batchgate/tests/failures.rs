//! Failure handling end to end: injected worker faults, the dead-letter queue and its admin
//! API, load shedding at the edge and client deadlines.

mod common;

use std::time::Duration;

use batchgate::serve::WorkerChoice;
use batchgate_protocol::api::{TaskStatus, TaskView};
use batchgate_protocol::sim_output;
use common::{
    client, fast_sim, infer, metrics, serve_config, start_serve, Backend, Infra, ADMIN_TOKEN,
};

/// A counter's value in a `/metrics` page (0 when absent).
fn counter(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits (without blocking the runtime, within 30 s) until the in-process worker's counters
/// satisfy `reached`.
async fn worker_reaches(
    worker: &common::Worker,
    what: &str,
    reached: impl Fn(&batchgate_sim::SimStats) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !reached(&worker.sim.stats()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "worker never reached: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn fault_run(backend: Backend) {
    let infra = Infra::start(backend).await;
    let worker = common::start_faulty_worker(
        fast_sim(8),
        batchgate_sim::Faults {
            error_rate: 0.2,
            hang_rate: 0.01,
            seed: Some(20261129),
            ..Default::default()
        },
    )
    .await;
    let mut config = serve_config(&infra, &worker.url, 8);
    if let Some(part) = config.batcher.as_mut() {
        // A hung call costs its timeout: short, yet far above a call's 20-30 ms even on a
        // machine so loaded that calls take seconds (a timed-out call would count as a fault
        // that was not injected).
        part.worker = WorkerChoice::remote(&[&worker.url], Duration::from_millis(5000))
            .expect("a valid worker URL");
    }
    let serve = start_serve(config).await;
    let http = client();
    let inputs: Vec<String> = (0..1500)
        .map(|i| format!("{backend:?} fault {i}"))
        .collect();
    let views =
        futures::future::join_all(inputs.iter().map(|input| infer(&http, &serve.url, input))).await;
    let mut failed = 0;
    for (input, view) in inputs.iter().zip(&views) {
        match view.status {
            TaskStatus::Success => assert_eq!(view.output, Some(sim_output(input)), "{input}"),
            TaskStatus::Failed => {
                failed += 1;
                let error = view.error.as_deref().unwrap_or_default();
                assert!(error.starts_with("worker error: "), "{input}: {error}");
            }
            TaskStatus::Pending => panic!("{input} still pending after its wait"),
        }
    }
    let page = metrics(&http, &serve.url).await;
    let retries = counter(&page, "batchgate_worker_retries_total");
    let exhausted = counter(&page, "batchgate_worker_errors_total");
    let dead = counter(&page, "batchgate_dead_letters_total");
    let stats = worker.sim.stats();
    let injected = (stats.calls_failed_injected + stats.calls_hung) as f64;
    // Every injected fault was either retried or ended a call that had no retries left.
    assert_eq!(injected, retries + exhausted, "{stats:?}");
    assert!(retries > 0.0, "faults were injected and retried");
    // Every failed task, and only those, went to the dead-letter queue.
    assert_eq!(dead, f64::from(failed));
    let listing: serde_json::Value = http
        .get(format!("{}/admin/dlq?limit=10000", serve.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(listing["count"], failed);
    serve.shutdown().await;
    worker.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_20_percent_failures_and_1_percent_hangs_no_task_is_lost_memory() {
    fault_run(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_20_percent_failures_and_1_percent_hangs_no_task_is_lost_redis() {
    fault_run(Backend::Redis).await;
}

async fn dead_letter_run(backend: Backend) {
    let infra = Infra::start(backend).await;
    let worker = common::start_faulty_worker(
        fast_sim(2),
        batchgate_sim::Faults {
            poison_pattern: Some("POISON".into()),
            ..Default::default()
        },
    )
    .await;
    let serve = start_serve(serve_config(&infra, &worker.url, 2)).await;
    let http = client();
    let bad = infer(&http, &serve.url, "a POISON pill").await;
    assert_eq!(bad.status, TaskStatus::Failed);
    let ok = infer(&http, &serve.url, "a good one").await;
    assert_eq!(ok.status, TaskStatus::Success);

    let dlq = format!("{}/admin/dlq", serve.url);
    let unauthorized = http.get(&dlq).send().await.expect("send");
    assert_eq!(unauthorized.status(), 401);
    let wrong = http
        .get(&dlq)
        .bearer_auth("not-the-token-at-all")
        .send()
        .await
        .expect("send");
    assert_eq!(wrong.status(), 401);

    let listing: serde_json::Value = http
        .get(&dlq)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(listing["count"], 1, "{listing}");
    let entry = &listing["entries"][0];
    assert_eq!(entry["task_id"], bad.task_id.as_str());
    assert_eq!(entry["input"], "a POISON pill");
    assert_eq!(entry["error"], "worker error: worker answered 500");
    assert!(entry["attempts"].as_u64().unwrap_or(0) >= 1, "{entry}");

    // Replay: the same task id runs again (and, still poisoned, fails and returns).
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
    assert_eq!(replayed["task_ids"][0], bad.task_id.as_str());
    let again: TaskView = http
        .get(format!(
            "{}/v1/result/{}?wait_ms=10000",
            serve.url, bad.task_id
        ))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(again.status, TaskStatus::Failed);
    let mut count = serde_json::Value::Null;
    for _ in 0..50 {
        let listing: serde_json::Value = http
            .get(&dlq)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        count = listing["count"].clone();
        if count == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count, 1, "the replayed task failed again and is back");

    let purged: serde_json::Value = http
        .post(format!("{dlq}/purge"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({ "limit": 100 }))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(purged["count"], 1);
    serve.shutdown().await;
    worker.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_replayed_and_purged_memory() {
    dead_letter_run(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_replayed_and_purged_redis() {
    dead_letter_run(Backend::Redis).await;
}

async fn shed_run(backend: Backend) {
    let infra = Infra::start(backend).await;
    // One slot at ≈ 500 ms a full batch: ≈ 128 tasks a second, far below what even a debug
    // build admits, so the overload does not depend on how fast this machine is.
    let worker = common::start_faulty_worker(
        batchgate_sim::SimConfig {
            slots: 1,
            base: Duration::from_millis(500),
            per_item: Duration::from_micros(100),
            max_batch_size: 64,
        },
        batchgate_sim::Faults::default(),
    )
    .await;
    let mut config = serve_config(&infra, &worker.url, 1);
    config.edge.shed = batchgate_gateway::ShedBound::QueueWait(Duration::from_millis(500));
    let serve = start_serve(config).await;
    let http = client();
    // First a backlog, so that the gateway has measured the batchers' capacity (it never
    // sheds on a guess): 300 tasks at once, then time for a few batches to be taken.
    let warm = futures::future::join_all((0..300u32).map(|i| {
        let http = http.clone();
        let url = format!("{}/v1/inference", serve.url);
        async move {
            http.post(url)
                .json(&serde_json::json!({ "input": format!("{backend:?} warm {i}") }))
                .send()
                .await
                .expect("send")
                .status()
                .as_u16()
        }
    }))
    .await;
    assert!(warm.iter().all(|s| *s == 202), "a cold start is not shed");
    // Measured means batches taken and reported: wait for the worker to finish three.
    worker_reaches(&worker, "3 calls done", |s| s.calls >= 3).await;
    // Then 3,000 submissions at about 1,500/s (one every 2/3 ms, as an open-loop client would
    // send them): 23 seconds of the worker's work in two.
    let started = tokio::time::Instant::now();
    let answers = futures::future::join_all((0..3000u32).map(|i| {
        let http = http.clone();
        let url = format!("{}/v1/inference", serve.url);
        async move {
            tokio::time::sleep_until(started + Duration::from_micros(667) * i).await;
            let r = http
                .post(url)
                .json(&serde_json::json!({ "input": format!("{backend:?} shed {i}") }))
                .send()
                .await
                .expect("send");
            let status = r.status().as_u16();
            let retry_after = r.headers().contains_key("retry-after");
            let body: serde_json::Value = r.json().await.expect("json");
            (status, retry_after, body)
        }
    }))
    .await;
    let shed: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 503).collect();
    let accepted: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 202).collect();
    assert_eq!(shed.len() + accepted.len(), 3000);
    assert!(!shed.is_empty(), "an overload this size is shed");
    assert!(shed
        .iter()
        .all(|(_, retry_after, body)| *retry_after && body["error"]["code"] == "overloaded"));
    // Every accepted task completes.
    for (_, _, body) in accepted {
        let id = body["task_id"].as_str().expect("id");
        let view: TaskView = http
            .get(format!("{}/v1/result/{id}?wait_ms=30000", serve.url))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert_eq!(view.status, TaskStatus::Success, "{id}");
    }
    let page = metrics(&http, &serve.url).await;
    assert!(page.contains("code=\"overloaded\""), "shedding is counted");
    serve.shutdown().await;
    worker.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_with_503_and_accepted_tasks_still_succeed_memory() {
    shed_run(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_with_503_and_accepted_tasks_still_succeed_redis() {
    shed_run(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_past_its_deadline_is_not_sent_to_the_worker() {
    let infra = Infra::start(Backend::Memory).await;
    // One slot, one second a call: the second batch waits a second in the queue.
    let worker = common::start_faulty_worker(
        batchgate_sim::SimConfig {
            slots: 1,
            base: Duration::from_millis(1000),
            per_item: Duration::ZERO,
            max_batch_size: 64,
        },
        batchgate_sim::Faults::default(),
    )
    .await;
    let mut config = serve_config(&infra, &worker.url, 1);
    config.edge.shed = batchgate_gateway::ShedBound::Off;
    let serve = start_serve(config).await;
    let http = client();
    let submit = |input: &'static str, timeout_ms: Option<u64>| {
        let http = http.clone();
        let url = format!("{}/v1/inference", serve.url);
        async move {
            let mut body = serde_json::json!({ "input": input });
            if let Some(t) = timeout_ms {
                body["timeout_ms"] = t.into();
            }
            let r = http.post(url).json(&body).send().await.expect("send");
            assert_eq!(r.status(), 202);
            let view: TaskView = r.json().await.expect("json");
            view.task_id
        }
    };
    let first = submit("occupies the worker", None).await;
    // The second task is submitted once the first holds the worker's only slot.
    worker_reaches(&worker, "the first call running", |s| s.in_flight == 1).await;
    let hurried = submit("wants an answer within 300 ms", Some(300)).await;
    for id in [&first, &hurried] {
        let view: TaskView = http
            .get(format!("{}/v1/result/{id}?wait_ms=10000", serve.url))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        if id == &first {
            assert_eq!(view.status, TaskStatus::Success);
        } else {
            assert_eq!(view.status, TaskStatus::Failed);
            let error = view.error.unwrap_or_default();
            assert!(error.starts_with("expired: deadline passed"), "{error}");
        }
    }
    assert_eq!(
        worker.sim.stats().calls,
        1,
        "the late task never reached the worker"
    );
    let bad = http
        .post(format!("{}/v1/inference", serve.url))
        .json(&serde_json::json!({ "input": "x", "timeout_ms": 0 }))
        .send()
        .await
        .expect("send");
    assert_eq!(bad.status(), 422);
    serve.shutdown().await;
    worker.stop.cancel();
}

const SECRET: &str = "a-rate-limit-test-secret-of-32-bytes+";

fn token(sub: &str) -> String {
    batchgate::token::mint(&batchgate::token::TokenArgs {
        sub: sub.into(),
        secret: SECRET.into(),
        ttl: Duration::from_secs(300),
        issuer: None,
        audience: None,
    })
    .expect("token")
}

fn limited(config: &mut batchgate::serve::ServeConfig, limit: u64) {
    config.edge.auth = batchgate_gateway::AuthConfig::Jwt {
        keys: batchgate_gateway::auth::KeySource::Secret(SECRET.as_bytes().to_vec()),
        issuer: None,
        audience: None,
    };
    config.edge.rate_limit = Some(batchgate::serve::RateLimitConfig {
        default: batchgate_queue::Rate {
            limit,
            period: Duration::from_secs(60),
        },
        overrides: [("vip".to_owned(), 1000)].into(),
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_over_its_rate_gets_429_and_others_do_not() {
    let infra = Infra::start(Backend::Memory).await;
    let worker = common::start_faulty_worker(fast_sim(2), batchgate_sim::Faults::default()).await;
    let mut config = serve_config(&infra, &worker.url, 2);
    limited(&mut config, 3);
    let serve = start_serve(config).await;
    let http = client();
    let send = |user: &str, i: usize| {
        http.post(format!("{}/v1/inference", serve.url))
            .bearer_auth(token(user))
            .json(&serde_json::json!({ "input": format!("{user} {i}") }))
            .send()
    };
    // 3 a minute, all at once if they like; then one every 20 s.
    for i in 0..3 {
        assert_eq!(send("greedy", i).await.expect("send").status(), 202);
    }
    let refused = send("greedy", 3).await.expect("send");
    assert_eq!(refused.status(), 429);
    let h = refused.headers();
    let retry_after: u64 = h["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("secs");
    assert!((19..=20).contains(&retry_after), "{retry_after}");
    assert_eq!(h["ratelimit-limit"], "3");
    assert_eq!(h["ratelimit-remaining"], "0");
    assert!(h.contains_key("ratelimit-reset"));
    let body: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited");
    for i in 4..10 {
        assert_eq!(send("greedy", i).await.expect("send").status(), 429);
    }
    assert_eq!(send("polite", 0).await.expect("send").status(), 202);
    for i in 0..10 {
        assert_eq!(
            send("vip", i).await.expect("send").status(),
            202,
            "override"
        );
    }
    let page = metrics(&http, &serve.url).await;
    assert!(counter(&page, "batchgate_rate_limited_total") >= 7.0);
    serve.shutdown().await;
    worker.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_is_exact_across_two_gateways_on_redis() {
    let infra = Infra::start(Backend::Redis).await;
    let worker = common::start_faulty_worker(fast_sim(2), batchgate_sim::Faults::default()).await;
    // Two gateways (no batcher needed: admission is what is counted).
    let mut gateways = Vec::new();
    for _ in 0..2 {
        let mut config = serve_config(&infra, &worker.url, 2);
        config.batcher = None;
        limited(&mut config, 100);
        gateways.push(start_serve(config).await);
    }
    let http = client();
    let alice = token("alice");
    let started = std::time::Instant::now();
    let answers = futures::future::join_all((0..300usize).map(|i| {
        let request = http
            .post(format!("{}/v1/inference", gateways[i % 2].url))
            .bearer_auth(&alice)
            .json(&serde_json::json!({ "input": format!("alice {i}") }));
        async move { request.send().await.expect("send").status().as_u16() }
    }))
    .await;
    let elapsed = started.elapsed();
    let accepted = answers.iter().filter(|s| **s == 202).count();
    let limited = answers.iter().filter(|s| **s == 429).count();
    assert_eq!(accepted + limited, 300);
    // GCRA refills continuously: 100 at once, plus 100 per minute of the test's duration.
    let refill = (elapsed.as_secs_f64() * 100.0 / 60.0).ceil() as usize;
    assert!(
        (100..=100 + refill).contains(&accepted),
        "{accepted} accepted in {elapsed:?}"
    );
    for g in gateways {
        g.shutdown().await;
    }
    worker.stop.cancel();
}
