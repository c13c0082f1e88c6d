//! SIGTERM under load: every task accepted before the signal finishes as SUCCESS, and the
//! process exits cleanly. Runs the real binary and signals it by its PID.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use batchgate_protocol::api::{ErrorBody, TaskView};
use common::{
    assert_simulated_success, client, signal, spawn_batchgate, spawn_long_poll, wait_exit,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_nothing_that_was_accepted() {
    // Few slow simulated GPUs, so a backlog is queued when the signal lands.
    let (mut child, url) = spawn_batchgate(&[
        "serve",
        "--insecure-no-auth",
        "--listen",
        "127.0.0.1:0",
        "--sim-slots",
        "2",
        "--sim-base-ms",
        "100",
        // Shedding off: the load here outruns 2 slots on purpose, and every refusal must be
        // the drain's `shutting_down`.
        "--shed-wait-ms",
        "0",
    ]);
    let http = client();
    let signalled = Arc::new(AtomicBool::new(false));
    let submitted = Arc::new(AtomicUsize::new(0));
    // Tasks answered 202, and a wake-up once enough are in for the signal to land on a backlog.
    let accepted_count = Arc::new(AtomicUsize::new(0));
    let backlog = Arc::new(tokio::sync::Notify::new());
    const SIGNAL_AFTER_ACCEPTED: usize = 200;
    const MAX_TASKS: usize = 4000;
    const MAX_LOAD_TIME: Duration = Duration::from_secs(5);

    // 16 submitters; each follows its accepted task with a long poll right away.
    let submitters: Vec<_> = (0..16)
        .map(|c| {
            let (http, url, signalled, submitted) = (
                http.clone(),
                url.clone(),
                signalled.clone(),
                submitted.clone(),
            );
            let (accepted_count, backlog) = (accepted_count.clone(), backlog.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let mut polls = Vec::new();
                let mut refused_after_signal = 0;
                for i in 0.. {
                    if started.elapsed() > MAX_LOAD_TIME
                        || submitted.fetch_add(1, Ordering::Relaxed) >= MAX_TASKS
                        || refused_after_signal >= 3
                    {
                        break;
                    }
                    let input = format!("client {c} task {i}");
                    let response = http
                        .post(format!("{url}/v1/inference"))
                        .json(&serde_json::json!({ "input": input }))
                        .send()
                        .await;
                    let view = match response {
                        Ok(r) if r.status() == 202 => r.json::<TaskView>().await.expect("202 body"),
                        Ok(r) => {
                            // The only refusal allowed is the one shutdown gives.
                            let body: ErrorBody = r.json().await.expect("error body");
                            assert_eq!(body.error.code, "shutting_down");
                            assert!(signalled.load(Ordering::SeqCst));
                            refused_after_signal += 1;
                            continue;
                        }
                        Err(_) => {
                            // Connection refused once the server has stopped listening.
                            assert!(
                                signalled.load(Ordering::SeqCst),
                                "request failed before the signal"
                            );
                            refused_after_signal += 1;
                            continue;
                        }
                    };
                    if accepted_count.fetch_add(1, Ordering::SeqCst) + 1 == SIGNAL_AFTER_ACCEPTED {
                        backlog.notify_one();
                    }
                    polls.push(spawn_long_poll(&http, &url, &view.task_id, input));
                }
                polls
            })
        })
        .collect();

    // Signal once a backlog is queued (2 slots of 100 ms serve ~1,300 tasks/s at most; the
    // submitters send faster), not after a guessed time.
    tokio::time::timeout(MAX_LOAD_TIME, backlog.notified())
        .await
        .expect("200 tasks accepted before the load ended");
    signalled.store(true, Ordering::SeqCst);
    signal(&child, "TERM");

    let mut accepted = 0;
    for submitter in submitters {
        for poll in submitter.await.expect("submitter") {
            let (input, view) = poll.await.expect("poll");
            assert_simulated_success(&input, &view);
            accepted += 1;
        }
    }
    let status =
        tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(60)))
            .await
            .expect("join");
    assert!(status.success(), "exit status {status}");
    // Every task answered 202 was polled to its end above: none slipped past the count.
    assert_eq!(accepted, accepted_count.load(Ordering::SeqCst));
    eprintln!("{accepted} accepted tasks, all SUCCESS across SIGTERM");
}
