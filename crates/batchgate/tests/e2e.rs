//! The whole request path over real HTTP: gateway → queue → batcher → worker → store, the
//! worker reached by each of its protocols (JSON, gRPC, KServe V2, OpenAI embeddings).

#[macro_use]
mod common;

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use batchgate_protocol::api::{TaskStatus, TaskView};
use batchgate_protocol::openai::embedding_of_output;
use batchgate_protocol::sim_output;
use batchgate_protocol::task::unix_ms;
use batchgate_protocol::Output;
use common::{
    client, closed_port_url, fast_sim, infer, serve_config, start_serve, start_worker, Backend,
    Infra,
};

on_every_backend!(two_thousand_concurrent_submissions_all_succeed_in_batches_of_at_most_64);
async fn two_thousand_concurrent_submissions_all_succeed_in_batches_of_at_most_64(
    backend: Backend,
) {
    two_thousand_over(backend, Protocol::Json).await;
}

/// How the batcher talks to the reference worker (one server speaks them all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Json,
    Grpc,
    KserveV2,
    OpenAi,
}

impl Protocol {
    /// The `--worker-url` of the worker at `http_url` in this protocol.
    fn url(self, http_url: &str) -> String {
        let addr = http_url.trim_start_matches("http://");
        match self {
            Protocol::Json => http_url.to_owned(),
            Protocol::Grpc => format!("grpc://{addr}"),
            Protocol::KserveV2 => format!("kserve-v2+http://{addr}/v2/models/sim"),
            Protocol::OpenAi => format!("openai+http://{addr}/v1"),
        }
    }

    /// What a task's output is for `input`: the simulator's digest, or, through the
    /// embeddings API, the JSON text of the embedding derived from it.
    fn expected_output(self, input: &str) -> String {
        match self {
            // The adapter reads the worker's vector as 32-bit floats, a typed output that
            // `/v1/inference` shows as its JSON array text.
            Protocol::OpenAi => Output::Vector(
                embedding_of_output(&sim_output(input))
                    .into_iter()
                    .map(|x| x as f32)
                    .collect(),
            )
            .to_text(),
            _ => sim_output(input),
        }
    }
}

/// The same scenario with the batcher talking each other protocol to the reference worker.
mod over_each_protocol {
    use super::{two_thousand_over, Backend, Protocol};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grpc() {
        two_thousand_over(Backend::Memory, Protocol::Grpc).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kserve_v2() {
        two_thousand_over(Backend::Memory, Protocol::KserveV2).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn openai_embeddings() {
        two_thousand_over(Backend::Memory, Protocol::OpenAi).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grpc_on_redis() {
        two_thousand_over(Backend::Redis, Protocol::Grpc).await;
    }
}

async fn two_thousand_over(backend: Backend, protocol: Protocol) {
    let infra = Infra::start(backend).await;
    let worker = start_worker(fast_sim(8)).await;
    let serve = start_serve(serve_config(&infra, &protocol.url(&worker.url), 8)).await;
    let http = client();

    let requests = (0..2000).map(|i| {
        let http = http.clone();
        let url = format!("{}/v1/inference?wait_ms=30000", serve.url);
        async move {
            let input = format!("distinct input number {i}");
            let response = http
                .post(&url)
                .json(&serde_json::json!({ "input": input, "client_id": "e2e" }))
                .send()
                .await
                .expect("send");
            assert_eq!(response.status(), 200, "input {i}");
            let view: TaskView = response.json().await.expect("json");
            (input, view)
        }
    });
    let results = futures::future::join_all(requests).await;

    let mut ids = HashSet::new();
    for (input, view) in &results {
        assert_eq!(view.status, TaskStatus::Success);
        assert_eq!(
            view.output.as_deref(),
            Some(protocol.expected_output(input).as_str()),
            "{protocol:?}"
        );
        assert!(ids.insert(view.task_id.clone()), "task ids are unique");
    }
    let stats = worker.sim.stats();
    if backend == Backend::Memory {
        assert_eq!(stats.items, 2000, "each input went to the worker once");
    } else {
        // Redis delivers at least once: on a loaded machine a lease renewal can miss the
        // tests' 1.5 s visibility timeout and a batch in flight is claimed and run again
        // (seen once on a fresh clone: 5 inputs twice). Never more than a batch or two.
        assert!(
            (2000..2000 + 128).contains(&stats.items),
            "each input went to the worker, rarely twice: {stats:?}"
        );
    }
    assert_eq!(stats.oversized_calls, 0);
    assert!(stats.max_batch_seen <= 64, "{stats:?}");
    assert!(stats.calls >= 2000 / 64, "{stats:?}");

    let outcome = serve.shutdown().await;
    assert!(outcome.drained);
    worker.stop.cancel();
}

on_every_backend!(long_poll_is_woken_by_the_result_not_by_its_timeout);
async fn long_poll_is_woken_by_the_result_not_by_its_timeout(backend: Backend) {
    let infra = Infra::start(backend).await;
    // One slow call, so the task is surely pending when the long poll starts.
    let worker = start_worker(batchgate_sim::SimConfig {
        base: Duration::from_millis(300),
        ..fast_sim(1)
    })
    .await;
    let serve = start_serve(serve_config(&infra, &worker.url, 1)).await;
    let http = client();

    let accepted: TaskView = http
        .post(format!("{}/v1/inference", serve.url))
        .json(&serde_json::json!({ "input": "wake me" }))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(accepted.status, TaskStatus::Pending);

    let polled: TaskView = http
        .get(format!(
            "{}/v1/result/{}?wait_ms=30000",
            serve.url, accepted.task_id
        ))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let answered_at = unix_ms(SystemTime::now());
    assert_eq!(polled.status, TaskStatus::Success);
    assert_eq!(polled.output, Some(sim_output("wake me")));
    let stored_at = polled.completed_at.expect("completed_at");
    // Returned as soon as the result was stored, not at the end of its 30 s wait.
    let gap = answered_at.saturating_sub(stored_at);
    assert!(
        gap < 1000,
        "long poll answered {gap} ms after the result was stored"
    );
    eprintln!("long poll answered {gap} ms after the result was stored");

    // Polling a finished task answers at once; an unknown one is a 404.
    let again = http
        .get(format!("{}/v1/result/{}", serve.url, accepted.task_id))
        .send()
        .await
        .expect("send");
    assert_eq!(again.status(), 200);
    let missing = http
        .get(format!("{}/v1/result/no-such-task?wait_ms=10", serve.url))
        .send()
        .await
        .expect("send");
    assert_eq!(missing.status(), 404);

    serve.shutdown().await;
    worker.stop.cancel();
}

on_every_backend!(worker_failure_fails_the_batch_with_a_reason);
async fn worker_failure_fails_the_batch_with_a_reason(backend: Backend) {
    let infra = Infra::start(backend).await;
    // Nothing listens on this port: every call fails to connect.
    let closed = closed_port_url();
    let serve = start_serve(serve_config(&infra, &closed, 1)).await;
    let http = client();
    let inputs: Vec<String> = (0..3).map(|i| format!("x{i}")).collect();
    let submits = inputs.iter().map(|input| infer(&http, &serve.url, input));
    for view in futures::future::join_all(submits).await {
        assert_eq!(view.status, TaskStatus::Failed);
        let error = view.error.expect("a reason");
        assert_eq!(error, "worker error: worker unreachable");
    }
    serve.shutdown().await;
}

on_every_backend!(identical_concurrent_submissions_share_one_task_and_one_worker_call);
async fn identical_concurrent_submissions_share_one_task_and_one_worker_call(backend: Backend) {
    let infra = Infra::start(backend).await;
    let worker = start_worker(fast_sim(4)).await;
    let serve = start_serve(serve_config(&infra, &worker.url, 4)).await;
    let http = client();
    let n = 50;
    let submits = (0..n).map(|_| infer(&http, &serve.url, "the same trending prompt"));
    let views = futures::future::join_all(submits).await;
    let ids: HashSet<_> = views.iter().map(|v| v.task_id.clone()).collect();
    assert_eq!(ids.len(), 1, "one task for {n} identical inputs");
    for v in &views {
        assert_eq!(v.status, TaskStatus::Success);
        assert_eq!(v.output, Some(sim_output("the same trending prompt")));
    }
    assert_eq!(
        worker.sim.stats().items,
        1,
        "the input reached the worker once"
    );
    // A different input is a different task.
    let other = infer(&http, &serve.url, "another prompt").await;
    assert!(!ids.contains(&other.task_id));
    serve.shutdown().await;
    worker.stop.cancel();
}

on_every_backend!(a_task_older_than_the_queue_age_limit_fails_as_expired_unsent);
async fn a_task_older_than_the_queue_age_limit_fails_as_expired_unsent(backend: Backend) {
    let infra = Infra::start(backend).await;
    let worker = start_worker(fast_sim(1)).await;
    let mut config = serve_config(&infra, &worker.url, 1);
    // Every task is older than zero by the time its batch leaves.
    if let Some(part) = config.batcher.as_mut() {
        part.config.max_queue_age = Duration::ZERO;
    }
    let serve = start_serve(config).await;
    let view = infer(&client(), &serve.url, "too late").await;
    assert_eq!(view.status, TaskStatus::Failed);
    let error = view.error.expect("a reason");
    assert!(error.starts_with("expired: waited"), "{error}");
    assert_eq!(
        worker.sim.stats().calls,
        0,
        "an expired task never reaches the worker"
    );
    serve.shutdown().await;
    worker.stop.cancel();
}

on_every_backend!(a_failed_task_is_not_handed_to_its_duplicates);
async fn a_failed_task_is_not_handed_to_its_duplicates(backend: Backend) {
    let infra = Infra::start(backend).await;
    let closed = closed_port_url();
    let serve = start_serve(serve_config(&infra, &closed, 1)).await;
    let http = client();
    let first = infer(&http, &serve.url, "flaky").await;
    assert_eq!(first.status, TaskStatus::Failed);
    // The failure may have been transient: the same input runs again, as its own task.
    let second = infer(&http, &serve.url, "flaky").await;
    assert_eq!(second.status, TaskStatus::Failed);
    assert_ne!(second.task_id, first.task_id);
    serve.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_input_fails_alone_and_its_batch_mates_succeed() {
    let infra = Infra::start(Backend::Memory).await;
    let worker = common::start_faulty_worker(
        fast_sim(4),
        batchgate_sim::Faults {
            poison_pattern: Some("POISON".into()),
            ..Default::default()
        },
    )
    .await;
    let serve = start_serve(serve_config(&infra, &worker.url, 4)).await;
    let http = client();
    let inputs: Vec<String> = (0..64)
        .map(|i| {
            if i == 17 {
                format!("input {i} POISON")
            } else {
                format!("input {i}")
            }
        })
        .collect();
    let views =
        futures::future::join_all(inputs.iter().map(|input| infer(&http, &serve.url, input))).await;
    for (input, view) in inputs.iter().zip(&views) {
        if input.contains("POISON") {
            assert_eq!(view.status, TaskStatus::Failed, "{input}");
            assert_eq!(
                view.error.as_deref(),
                Some("worker error: worker answered 500")
            );
        } else {
            assert_eq!(
                view.status,
                TaskStatus::Success,
                "{input}: {:?}",
                view.error
            );
            assert_eq!(view.output, Some(sim_output(input)));
        }
    }
    let metrics = http
        .get(format!("{}/metrics", serve.url))
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("batchgate_bisections_total ") && !l.ends_with(" 0")),
        "the poisoned batch was bisected"
    );
    serve.shutdown().await;
    worker.stop.cancel();
}
