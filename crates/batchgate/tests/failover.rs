//! Several workers behind one batcher: one is killed (SIGKILL) under load, and no accepted
//! task is lost — its batches in flight, and every later one, go to the worker that is left.

mod common;

use std::time::Duration;

use batchgate::serve::WorkerChoice;
use batchgate_protocol::api::{TaskStatus, TaskView};
use batchgate_protocol::sim_output;
use common::{client, infer, serve_config, sim_stats, start_serve, Infra, Proc};

/// A reference worker process: 4 slots, ~60 ms per batch of 64.
fn worker_process() -> Proc {
    Proc::start(&[
        "worker",
        "--sim",
        "--listen",
        "127.0.0.1:0",
        "--slots",
        "4",
        "--base-ms",
        "50",
        "--per-item-ms",
        "0.15",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_under_load_loses_no_accepted_task() {
    let mut doomed = worker_process();
    let survivor = worker_process();
    let infra = Infra::start(common::Backend::Memory);
    let mut config = serve_config(&infra, &survivor.url, 8);
    // One worker by gRPC, the other by the JSON API: a pool may mix protocols.
    let doomed_url = format!("grpc://{}", doomed.url.trim_start_matches("http://"));
    if let Some(part) = config.batcher.as_mut() {
        part.worker = WorkerChoice::remote(&[&doomed_url, &survivor.url], Duration::from_secs(10))
            .expect("valid worker URLs");
    }
    let serve = start_serve(config).await;
    let http = client();

    let n = 3000;
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..n {
        let (http, url, done) = (http.clone(), serve.url.clone(), done_tx.clone());
        tokio::spawn(async move {
            let input = format!("failover input {i}");
            let view = infer(&http, &url, &input).await;
            let _ = done.send((input, view));
        });
    }
    drop(done_tx);

    // Kill the first worker once both have served and it has batches in flight.
    let mut views: Vec<(String, TaskView)> = Vec::with_capacity(n);
    let mut killed_with = None;
    while let Some(done) = done_rx.recv().await {
        views.push(done);
        if killed_with.is_none() && views.len() >= 100 {
            let before = sim_stats(&http, &doomed.url).await;
            if before.in_flight > 0 {
                doomed.child.kill().expect("SIGKILL the worker");
                killed_with = Some(before);
            }
        }
    }
    // Killed while it held batches (whether or not any had finished by then).
    let before = killed_with.expect("the worker was killed while it had batches in flight");
    assert!(before.in_flight > 0, "{before:?}");
    assert_eq!(views.len(), n, "every submission was answered");
    for (input, view) in &views {
        assert_eq!(view.status, TaskStatus::Success, "{input}: {view:?}");
        assert_eq!(view.output, Some(sim_output(input)), "{input}");
    }

    // Later work goes to the survivor alone, and succeeds.
    let after: Vec<TaskView> = futures::future::join_all((0..50).map(|i| {
        let http = http.clone();
        let url = serve.url.clone();
        async move { infer(&http, &url, &format!("after the kill {i}")).await }
    }))
    .await;
    assert!(after.iter().all(|v| v.status == TaskStatus::Success));
    let survivor_stats = sim_stats(&http, &survivor.url).await;
    assert!(survivor_stats.items > 0, "{survivor_stats:?}");
    assert!(serve.shutdown().await.drained);
}
