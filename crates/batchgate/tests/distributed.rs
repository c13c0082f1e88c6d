//! The distributed deployment as separate processes on a real redis-server: a batcher killed
//! mid-batch, a process that is gateway and batcher (`serve --redis`) killed under load,
//! Redis itself restarted under load, and processes that reach Redis over its Unix socket.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use batchgate_protocol::api::{ErrorBody, TaskStatus, TaskView};
use batchgate_protocol::sim_output;
use batchgate_testkit::RedisServer;
use common::{assert_simulated_success, client, Proc};

/// Submits `input` through `gateway` and follows the task to its end through `poll_via`.
async fn run_task(
    http: &reqwest::Client,
    gateway: &str,
    poll_via: &str,
    input: String,
) -> Option<(String, TaskView)> {
    // A 503 with Retry-After (Redis slow on a loaded machine, say) is the gateway refusing
    // the task, not losing it: like a real client, try again after the pause, a few times.
    let mut attempts = 0;
    let response = loop {
        let response = http
            .post(format!("{gateway}/v1/inference"))
            .json(&serde_json::json!({ "input": input }))
            .send()
            .await
            .ok()?;
        attempts += 1;
        if response.status() != 503 || attempts == 5 {
            break response;
        }
        let pause = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .unwrap_or(1);
        tokio::time::sleep(Duration::from_secs(pause)).await;
    };
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    assert_eq!(status, 202, "submission refused {attempts} times: {body}");
    let accepted: TaskView = serde_json::from_str(&body).expect("202 body");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = http
            .get(format!(
                "{poll_via}/v1/result/{}?wait_ms=10000",
                accepted.task_id
            ))
            .send()
            .await
            .expect("poll sent");
        let status = response.status();
        let body = response.text().await.expect("poll answered");
        // A 503 (Redis slow on a loaded machine) refuses this poll, not the task: poll again.
        if status == 503 {
            assert!(
                Instant::now() < deadline,
                "polls of {} refused",
                accepted.task_id
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        let view: TaskView = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("poll answered {status} {body}: {e}"));
        if view.status.is_terminal() {
            return Some((input, view));
        }
        assert!(
            Instant::now() < deadline,
            "task {} still pending",
            accepted.task_id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batcher_killed_mid_batch_loses_no_accepted_task() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let common_flags = ["--redis", url.as_str(), "--visibility-timeout-ms", "1500"];
    let worker = Proc::sim_worker(16, 100);
    let gateway = |_: usize| {
        // Shedding off: this test is about recovery, and counts every refusal as a failure.
        let mut args = vec![
            "gateway",
            "--insecure-no-auth",
            "--listen",
            "127.0.0.1:0",
            "--shed-wait-ms",
            "0",
        ];
        args.extend(common_flags);
        Proc::start(&args)
    };
    let batcher = |_: usize| {
        let mut args = vec!["batcher", "--listen", "127.0.0.1:0", "--worker-url"];
        args.push(worker.url.as_str());
        args.extend(common_flags);
        Proc::start(&args)
    };
    let gateways = [gateway(0), gateway(1)];
    let mut victim = batcher(0);
    let _survivor = batcher(1);

    // 2,000 requests/s for 3 s, alternating gateways; results are polled through the other one.
    let http = client();
    let rate = 2000;
    let total = 3 * rate;
    let killed = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(total);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let started = Instant::now();
    for i in 0..total {
        if i % (rate / 1000) == 0 {
            tick.tick().await;
        }
        if i == total / 3 && !killed.swap(true, Ordering::SeqCst) {
            // Mid-run, with batches in flight (each takes 100 ms at the worker).
            let _ = victim.child.kill();
        }
        let (submit, poll) = (&gateways[i % 2].url, &gateways[(i + 1) % 2].url);
        let (http, submit, poll) = (http.clone(), submit.clone(), poll.clone());
        tasks.push(tokio::spawn(async move {
            run_task(&http, &submit, &poll, format!("crash test task {i}")).await
        }));
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "load generation fell far behind"
    );
    let _ = victim.child.wait();

    let mut done = 0;
    for t in tasks {
        let (input, view) = t
            .await
            .expect("task")
            .expect("submission reached a gateway");
        assert_simulated_success(&input, &view);
        done += 1;
    }
    assert_eq!(done, total);
    // Redelivered tasks may have run twice; that is allowed, losing one is not. The streams
    // are empty once everything is acknowledged.
    let waiting: usize = redis
        .cli(&["--scan", "--pattern", "batchgate:*:tasks"])
        .unwrap_or_default()
        .lines()
        .map(|key| {
            redis
                .cli(&["XLEN", key])
                .and_then(|n| n.trim().parse::<usize>().ok())
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(waiting, 0, "acknowledged entries leave the streams");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_answer_503_while_redis_is_down_and_recover_on_their_own() {
    let mut redis = RedisServer::start().await;
    let url = redis.url();
    let serve = Proc::start(&[
        "serve",
        "--insecure-no-auth",
        "--listen",
        "127.0.0.1:0",
        "--redis",
        &url,
        "--redis-timeout-ms",
        "500",
        "--sim-base-ms",
        "10",
        // Readiness fails at the first queue error (the default tolerates 10 s of them,
        // tested in orchestration.rs).
        "--readiness-tolerance-ms",
        "0",
    ]);
    let http = client();
    let submit = |input: &str| {
        http.post(format!("{}/v1/inference?wait_ms=5000", serve.url))
            .json(&serde_json::json!({ "input": input }))
            .send()
    };
    let ok: TaskView = submit("before")
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(ok.status, TaskStatus::Success);

    redis.kill();
    let started = Instant::now();
    let refused = submit("while down").await.expect("an answer, not a hang");
    let took = started.elapsed();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let body: ErrorBody = refused.json().await.expect("json error");
    assert_eq!(body.error.code, "unavailable");
    assert!(took < Duration::from_secs(5), "503 took {took:?}");
    let ready = http
        .get(format!("{}/readyz", serve.url))
        .send()
        .await
        .expect("readyz answers");
    assert_eq!(ready.status(), 503);

    // Back, empty (nothing was persisted): the same processes pick up again by themselves.
    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = submit("after").await.expect("send");
        if response.status() == 200 {
            let view: TaskView = response.json().await.expect("json");
            assert_eq!(view.output, Some(sim_output("after")));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery: last status {}",
            response.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ready = http
        .get(format!("{}/readyz", serve.url))
        .send()
        .await
        .expect("readyz answers");
    assert_eq!(ready.status(), 200);
}

// A process that is gateway and batcher (`serve --redis`) keeps the tasks of the groups it
// admits for its own reads, besides storing their messages in Redis. SIGKILLed with such groups kept
// and batches in flight, every task it accepted is finished by another such process, from
// Redis's copy: none is lost, none fails, every output is right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serve_process_killed_mid_load_loses_no_accepted_task() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let serve = || {
        Proc::start(&[
            "serve",
            "--insecure-no-auth",
            "--listen",
            "127.0.0.1:0",
            "--redis",
            url.as_str(),
            "--visibility-timeout-ms",
            "1500",
            // Shedding off: every refusal would count as a failure here.
            "--shed-wait-ms",
            "0",
            "--sim-slots",
            "8",
            "--sim-base-ms",
            "100",
        ])
    };
    let mut victim = serve();
    let survivor = serve();

    // 500 requests/s for 3 s: until the kill, every other one goes to the victim; after it,
    // all go to the survivor. Every result is polled through the survivor.
    let http = client();
    let rate = 500;
    let total = 3 * rate;
    let kill_at = total / 3;
    let mut tasks = Vec::with_capacity(total);
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    for i in 0..total {
        tick.tick().await;
        if i == kill_at {
            // Mid-run: groups admitted and kept, batches in flight (100 ms each).
            let _ = victim.child.kill();
        }
        let to_victim = i < kill_at && i % 2 == 0;
        let submit = if to_victim {
            &victim.url
        } else {
            &survivor.url
        };
        let (http, submit, poll) = (http.clone(), submit.clone(), survivor.url.clone());
        tasks.push(tokio::spawn(async move {
            let done = run_task(&http, &submit, &poll, format!("serve crash task {i}")).await;
            (to_victim, done)
        }));
    }
    let _ = victim.child.wait();

    let (mut by_victim, mut by_survivor) = (0, 0);
    for t in tasks {
        let (to_victim, done) = t.await.expect("task");
        // Only a request the victim never answered (cut by the kill) may have no result: it
        // was not accepted.
        let Some((input, view)) = done else {
            assert!(to_victim, "a submission to the survivor was not answered");
            continue;
        };
        assert_simulated_success(&input, &view);
        if to_victim {
            by_victim += 1;
        } else {
            by_survivor += 1;
        }
    }
    assert!(by_victim > 0, "the victim accepted tasks before the kill");
    assert_eq!(by_survivor, total - kill_at / 2);
}

// On Redis a waiting request is not woken by its admission's answer, only by its result: the
// answer wakes it only when it is a refusal (or a duplicate). A request refused because the
// queue is full is answered at once, not when its wait would have ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_request_refused_by_a_full_queue_on_redis_is_answered_at_once() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    // One task fills the queue, and its batch takes a minute: the queue stays full.
    let serve = Proc::start(&[
        "serve",
        "--insecure-no-auth",
        "--listen",
        "127.0.0.1:0",
        "--redis",
        &url,
        "--queue-capacity",
        "1",
        "--sim-base-ms",
        "60000",
    ]);
    let http = client();
    let first = http
        .post(format!("{}/v1/inference", serve.url))
        .json(&serde_json::json!({ "input": "fills the queue" }))
        .send()
        .await
        .expect("send");
    assert_eq!(first.status(), 202);
    // Waits up to a minute for its result; a refusal that did not wake it would leave it
    // waiting past the client's bound.
    let refused = http
        .post(format!("{}/v1/inference?wait_ms=60000", serve.url))
        .timeout(Duration::from_secs(20))
        .json(&serde_json::json!({ "input": "finds it full" }))
        .send()
        .await
        .expect("an answer before the wait ends");
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let body: ErrorBody = refused.json().await.expect("json error");
    assert_eq!(body.error.code, "overloaded");
}

// A Redis on the same host may be reached over its Unix socket: gateways, a batcher and the
// notices between them (pub/sub) all go through the socket. Tasks submitted through one gateway
// are followed to their end through the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_and_a_batcher_work_through_a_unix_socket() {
    let redis = RedisServer::start_unix().await;
    let url = redis.unix_url().expect("the server's socket");
    let worker = Proc::sim_worker(4, 20);
    let gateway = || {
        Proc::start(&[
            "gateway",
            "--insecure-no-auth",
            "--listen",
            "127.0.0.1:0",
            "--redis",
            url.as_str(),
        ])
    };
    let gateways = [gateway(), gateway()];
    let _batcher = Proc::start(&[
        "batcher",
        "--listen",
        "127.0.0.1:0",
        "--worker-url",
        worker.url.as_str(),
        "--redis",
        url.as_str(),
    ]);

    let http = client();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (submit, poll) = (&gateways[i % 2].url, &gateways[(i + 1) % 2].url);
        let (http, submit, poll) = (http.clone(), submit.clone(), poll.clone());
        tasks.push(tokio::spawn(async move {
            run_task(&http, &submit, &poll, format!("unix socket task {i}")).await
        }));
    }
    for t in tasks {
        let (input, view) = t.await.expect("task").expect("answered");
        assert_simulated_success(&input, &view);
    }
    // Everything went through the socket: Redis holds the deployment's keys, and its clients
    // include Unix-socket connections (the TCP port is there only for redis-cli).
    let clients = redis.cli(&["CLIENT", "LIST"]).expect("CLIENT LIST");
    let on_socket = clients.lines().filter(|l| l.contains("laddr=/")).count();
    assert!(on_socket >= 3, "clients on the socket: {clients}");
    assert!(
        !clients
            .lines()
            .any(|l| l.contains("laddr=127.0.0.1") && !l.contains("cmd=client")),
        "a batchgate process reached Redis over TCP: {clients}"
    );
}
