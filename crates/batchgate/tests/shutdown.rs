//! SIGTERM under load: every task accepted before the signal finishes as SUCCESS, and the
//! process exits cleanly. Runs the real binary and signals it by its PID.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use batchgate_protocol::api::{ErrorBody, TaskStatus, TaskView};
use batchgate_protocol::sim_output;
use common::client;

/// Starts `batchgate serve` on a free port and returns it with its base URL, read from the
/// line it logs when listening.
fn spawn_serve(extra: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_batchgate"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn batchgate");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if !sent {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                    let _ = tx.send(format!("http://{addr}"));
                    sent = true;
                }
            }
            // Keep draining stderr so the child never blocks on a full pipe.
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("batchgate did not report its address");
    (child, url)
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("batchgate did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_nothing_that_was_accepted() {
    // Few slow simulated GPUs, so a backlog is queued when the signal lands.
    let (mut child, url) = spawn_serve(&["--sim-slots", "2", "--sim-base-ms", "100"]);
    let http = client();
    let signalled = Arc::new(AtomicBool::new(false));
    let submitted = Arc::new(AtomicUsize::new(0));
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
                    let poll_url = format!("{url}/v1/result/{}?wait_ms=30000", view.task_id);
                    let http = http.clone();
                    polls.push(tokio::spawn(async move {
                        let result: TaskView = http
                            .get(poll_url)
                            .send()
                            .await
                            .expect("long poll sent")
                            .json()
                            .await
                            .expect("long poll answered");
                        (input, result)
                    }));
                }
                polls
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(700)).await;
    signalled.store(true, Ordering::SeqCst);
    sigterm(&child);

    let mut accepted = 0;
    for submitter in submitters {
        for poll in submitter.await.expect("submitter") {
            let (input, view) = poll.await.expect("poll");
            assert_eq!(view.status, TaskStatus::Success, "{input}");
            assert_eq!(view.output, Some(sim_output(&input)), "{input}");
            accepted += 1;
        }
    }
    let status =
        tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(60)))
            .await
            .expect("join");
    assert!(status.success(), "exit status {status}");
    assert!(
        accepted > 100,
        "only {accepted} tasks were accepted; the test proved little"
    );
    eprintln!("{accepted} accepted tasks, all SUCCESS across SIGTERM");
}
