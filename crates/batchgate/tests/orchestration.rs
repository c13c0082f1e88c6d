//! What an orchestrator (Kubernetes, compose) sees of a process: the SIGTERM sequence —
//! readiness 503 first, requests still served during the shutdown delay, then a drain that
//! ends within its bound with no accepted task lost — and readiness that follows the workers'
//! health and tolerates a short Redis outage. Real processes, signalled by PID, real HTTP on
//! 127.0.0.1 port 0.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use batchgate_protocol::api::{ErrorBody, TaskStatus, TaskView};
use batchgate_protocol::sim_output;
use batchgate_testkit::RedisServer;
use common::logged::Logged;
use common::{assert_simulated_success, client, signal, spawn_long_poll, wait_exit, Proc};

/// `batchgate ARGS` with `env`, logging at info, its log lines kept.
fn start(args: &[&str], env: &[(&str, &str)]) -> Logged {
    let mut command = Command::new(env!("CARGO_BIN_EXE_batchgate"));
    command
        .args(args)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied());
    Logged::spawn(command)
}

/// `GET {base}/readyz`: the status code and the `status` field.
async fn readyz(http: &reqwest::Client, base: &str) -> (u16, serde_json::Value) {
    let response = http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz answered");
    let code = response.status().as_u16();
    (code, response.json().await.expect("readyz body"))
}

/// Polls `/readyz` every 20 ms until it answers `code`, at most `limit`; the last body.
async fn await_readyz(
    http: &reqwest::Client,
    base: &str,
    code: u16,
    limit: Duration,
) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let (got, body) = readyz(http, base).await;
        if got == code {
            return body;
        }
        assert!(
            started.elapsed() < limit,
            "/readyz still {got} {body} after {limit:?}, expected {code}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A number after `key=` in a log line (text format: `key=123`).
fn field(line: &str, key: &str) -> Option<u64> {
    let rest = line.split(&format!("{key}=")).nth(1)?;
    rest.chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .ok()
}

const SHUTDOWN_DELAY_MS: u64 = 3000;
const DRAIN_BOUND_SECS: u64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_readiness_off_first_serves_through_the_delay_then_drains_within_the_bound() {
    // Two slow simulated GPUs (about 400 tasks/s), slower than the load, so a backlog is
    // queued when the drain starts.
    let delay = SHUTDOWN_DELAY_MS.to_string();
    let bound = DRAIN_BOUND_SECS.to_string();
    let mut server = start(
        &[
            "serve",
            "--insecure-no-auth",
            "--listen",
            "127.0.0.1:0",
            "--sim-slots",
            "2",
            "--sim-base-ms",
            "250",
            // Shedding off: every refusal must be the drain's `shutting_down`.
            "--shed-wait-ms",
            "0",
            "--shutdown-delay-ms",
            &delay,
            "--grace-period-secs",
            &bound,
        ],
        &[],
    );
    let url = server.url.clone();
    let http = client();
    assert_eq!(readyz(&http, &url).await.0, 200);

    let signalled = Arc::new(AtomicBool::new(false));
    let not_ready = Arc::new(AtomicBool::new(false));
    let accepted_while_not_ready = Arc::new(AtomicUsize::new(0));
    let submitted = Arc::new(AtomicUsize::new(0));
    const MAX_TASKS: usize = 6000;
    const MAX_LOAD_TIME: Duration = Duration::from_secs(20);

    // 8 submitters; each follows its accepted task with a long poll right away, and stops
    // after the refusals of the drain.
    let submitters: Vec<_> = (0..8)
        .map(|c| {
            let (http, url, signalled, not_ready, accepted_while_not_ready, submitted) = (
                http.clone(),
                url.clone(),
                signalled.clone(),
                not_ready.clone(),
                accepted_while_not_ready.clone(),
                submitted.clone(),
            );
            tokio::spawn(async move {
                let started = Instant::now();
                let mut polls = Vec::new();
                let mut refused = 0;
                for i in 0.. {
                    if started.elapsed() > MAX_LOAD_TIME
                        || submitted.fetch_add(1, Ordering::Relaxed) >= MAX_TASKS
                        || refused >= 3
                    {
                        break;
                    }
                    let input = format!("client {c} task {i}");
                    let was_not_ready = not_ready.load(Ordering::SeqCst);
                    let response = http
                        .post(format!("{url}/v1/inference"))
                        .json(&serde_json::json!({ "input": input }))
                        .send()
                        .await;
                    let view = match response {
                        Ok(r) if r.status() == 202 => r.json::<TaskView>().await.expect("202 body"),
                        Ok(r) => {
                            let body: ErrorBody = r.json().await.expect("error body");
                            assert_eq!(body.error.code, "shutting_down");
                            assert!(signalled.load(Ordering::SeqCst));
                            refused += 1;
                            continue;
                        }
                        Err(_) => {
                            assert!(signalled.load(Ordering::SeqCst), "refused before SIGTERM");
                            refused += 1;
                            continue;
                        }
                    };
                    if was_not_ready {
                        accepted_while_not_ready.fetch_add(1, Ordering::SeqCst);
                    }
                    polls.push(spawn_long_poll(&http, &url, &view.task_id, input));
                }
                polls
            })
        })
        .collect();

    // Load first, then the signal.
    let loading = Instant::now();
    while submitted.load(Ordering::Relaxed) < 300 {
        assert!(loading.elapsed() < Duration::from_secs(20), "no load");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    signalled.store(true, Ordering::SeqCst);
    let signal_at = Instant::now();
    signal(&server.child, "TERM");

    // 1. Readiness turns 503 (on the API port, in the API's error shape)...
    await_readyz(&http, &url, 503, Duration::from_secs(2)).await;
    not_ready.store(true, Ordering::SeqCst);
    // ... 2. while new work is still accepted and answered: the process does not refuse
    // while a load balancer may still route to it.
    let input = "submitted after readiness turned 503";
    let late: TaskView = http
        .post(format!("{url}/v1/inference?wait_ms=30000"))
        .json(&serde_json::json!({ "input": input }))
        .send()
        .await
        .expect("answered during the shutdown delay")
        .json()
        .await
        .expect("a task view, not a refusal");
    assert_eq!(late.status, TaskStatus::Success);
    assert_eq!(late.output, Some(sim_output(input)));
    assert!(
        server.line("shutdown delay over").is_none(),
        "the drain began before the request made after readiness turned 503 was answered"
    );

    // 3. Every task accepted, before or after the signal, finishes as SUCCESS.
    let mut accepted = 0;
    for submitter in submitters {
        for poll in submitter.await.expect("submitter") {
            let (input, view) = poll.await.expect("poll");
            assert_simulated_success(&input, &view);
            accepted += 1;
        }
    }
    // 4. The drain ends within its bound, and the process exits cleanly (it exits with an
    // error when the drain outlasts the bound).
    let limit = Duration::from_millis(SHUTDOWN_DELAY_MS)
        + Duration::from_secs(DRAIN_BOUND_SECS)
        + batchgate::serve::HTTP_CLOSE_GRACE;
    let mut child = std::mem::replace(
        &mut server.child,
        Command::new("true").spawn().expect("placeholder"),
    );
    let status = tokio::task::spawn_blocking(move || wait_exit(&mut child, limit))
        .await
        .expect("join");
    let exited_after = signal_at.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        exited_after < limit,
        "exited {exited_after:?} after SIGTERM"
    );
    let started = server
        .line("shutting down: /readyz now answers 503")
        .expect("the shutdown sequence is logged");
    assert_eq!(
        field(&started, "shutdown_delay_ms"),
        Some(SHUTDOWN_DELAY_MS),
        "{started}"
    );
    let complete = server
        .line("drain complete")
        .expect("drain complete logged");
    let drain_ms = field(&complete, "drain_ms").expect("drain_ms logged");
    assert!(drain_ms <= DRAIN_BOUND_SECS * 1000, "{complete}");
    let drained_batches = field(&complete, "drained_batches").expect("drained_batches logged");
    assert!(
        drained_batches > 0,
        "nothing was left to drain; the test proved little: {complete}"
    );
    assert!(
        exited_after >= Duration::from_millis(SHUTDOWN_DELAY_MS),
        "exited {exited_after:?} after SIGTERM, before the shutdown delay ended"
    );
    assert!(
        accepted > 100,
        "only {accepted} tasks were accepted; the test proved little"
    );
    let late = accepted_while_not_ready.load(Ordering::SeqCst);
    eprintln!(
        "{accepted} accepted tasks, all SUCCESS; {late} of them accepted while /readyz was 503; \
         drain {drain_ms} ms ({drained_batches} batches), exit {exited_after:?} after SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batcher_readiness_follows_its_workers_health() {
    let redis = RedisServer::start().await;
    let worker = Proc::sim_worker(4, 10);
    let batcher = Proc::start(&[
        "batcher",
        "--redis",
        &redis.url(),
        "--worker-url",
        &worker.url,
        "--worker-health-interval-ms",
        "100",
        "--listen",
        "127.0.0.1:0",
    ]);
    let http = client();
    let body = await_readyz(&http, &batcher.url, 200, Duration::from_secs(10)).await;
    assert_eq!(body["status"], "ready", "{body}");
    drop(worker); // SIGKILL, by PID.
    let body = await_readyz(&http, &batcher.url, 503, Duration::from_secs(10)).await;
    assert_eq!(body["status"], "no_healthy_worker", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_readiness_tolerates_a_short_redis_outage_then_fails() {
    let mut redis = RedisServer::start().await;
    let gateway = Proc::start(&[
        "gateway",
        "--insecure-no-auth",
        "--redis",
        &redis.url(),
        "--redis-timeout-ms",
        "200",
        "--readiness-tolerance-ms",
        "1500",
        "--listen",
        "127.0.0.1:0",
    ]);
    let http = client();
    let (code, body) = readyz(&http, &gateway.url).await;
    assert_eq!((code, &body["status"]), (200, &serde_json::json!("ready")));

    redis.kill();
    let down_at = Instant::now();
    // The first failing check is within the tolerance: still ready, and it says why.
    let (code, body) = readyz(&http, &gateway.url).await;
    assert!(
        down_at.elapsed() < Duration::from_millis(1500),
        "the check itself took past the tolerance; the test proved nothing"
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["queue"], "unavailable", "{body}");
    // Past the tolerance: not ready.
    await_readyz(&http, &gateway.url, 503, Duration::from_secs(10)).await;
    assert!(down_at.elapsed() >= Duration::from_millis(1500));
    // Redis back: ready again at the first good check.
    redis.restart().await;
    let body = await_readyz(&http, &gateway.url, 200, Duration::from_secs(10)).await;
    assert_eq!(body["status"], "ready", "{body}");
}
