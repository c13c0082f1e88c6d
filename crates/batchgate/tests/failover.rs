//! Several workers behind one batcher: one is killed (SIGKILL) under load, and no accepted
//! task is lost — its batches in flight, and every later one, go to the worker that is left.

mod common;

use std::time::Duration;

use batchgate::serve::WorkerChoice;
use batchgate_protocol::api::{TaskStatus, TaskView};
use batchgate_protocol::sim_output;
use common::{client, infer, metrics, serve_config, sim_stats, start_serve, Infra, Proc};

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
    let infra = Infra::start(common::Backend::Memory).await;
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
    // The loop only kills a worker holding batches; that it did is all `expect` says here.
    killed_with.expect("the worker was killed while it had batches in flight");
    assert_eq!(views.len(), n, "every submission was answered");
    for (input, view) in &views {
        assert_eq!(view.status, TaskStatus::Success, "{input}: {view:?}");
        assert_eq!(view.output, Some(sim_output(input)), "{input}");
    }
    // The pool saw the death: the killed worker is out of rotation — at once if a call to it
    // failed after the kill, else at its next health check (every second).
    let doomed_label = format!("worker=\"{doomed_url}\"");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = metrics(&http, &serve.url).await;
        let healthy = sample(&metrics, "batchgate_pool_worker_healthy", &doomed_label);
        if healthy == Some(0.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the killed worker is still in rotation ({healthy:?}):\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Later work goes to the survivor alone, and succeeds: it runs every one of these inputs.
    let survivor_before = sim_stats(&http, &survivor.url).await;
    let later = 50;
    let after: Vec<TaskView> = futures::future::join_all((0..later).map(|i| {
        let http = http.clone();
        let url = serve.url.clone();
        async move { infer(&http, &url, &format!("after the kill {i}")).await }
    }))
    .await;
    assert!(after.iter().all(|v| v.status == TaskStatus::Success));
    let survivor_after = sim_stats(&http, &survivor.url).await;
    assert!(
        survivor_after.items - survivor_before.items >= later,
        "the survivor ran {} of the {later} later inputs",
        survivor_after.items - survivor_before.items
    );
    assert!(serve.shutdown().await.drained);
}

/// The value of the sample of metric `name` whose labels include `label`.
fn sample(metrics: &str, name: &str, label: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|line| line.strip_prefix(name).is_some_and(|l| l.starts_with('{')))
        .find(|line| line.contains(label))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}
