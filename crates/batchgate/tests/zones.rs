//! Zone-aware batching with two simulated zones, as separate processes: the simulated workers
//! of zone b are slower than zone a's (as calls across zones would be). Under a load the
//! workers keep up with, batches stay in their zone; once zone a's worker is killed
//! (SIGKILL), zone a's tasks are served by zone b's worker, and every accepted task still
//! ends SUCCESS with its own output. On Redis (two gateways and two batchers, one per zone)
//! and embedded (`serve --zone`).

mod common;

use std::time::{Duration, Instant};

use batchgate_protocol::api::TaskView;
use batchgate_testkit::RedisServer;
use common::{assert_simulated_success, client, metrics, sim_stats, Proc};
use tokio::task::JoinHandle;

/// Tasks per second each zone's gateway gets; a few percent of what one worker serves.
const RATE: usize = 100;
/// Seconds of each phase.
const SECS: usize = 3;

/// Submits `input` through `gateway` and waits for its end (a 503 is retried, like a client
/// would, a few times).
async fn run_task(http: reqwest::Client, gateway: String, input: String) -> (String, TaskView) {
    let mut view = None;
    for _ in 0..5 {
        let response = http
            .post(format!("{gateway}/v1/inference?wait_ms=30000"))
            .json(&serde_json::json!({ "input": input }))
            .send()
            .await
            .expect("gateway answers");
        if response.status() == 503 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        view = Some(response.json::<TaskView>().await.expect("a task view"));
        break;
    }
    let mut view = view.expect("accepted within 5 tries");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !view.status.is_terminal() && Instant::now() < deadline {
        view = http
            .get(format!(
                "{gateway}/v1/result/{}?wait_ms=10000",
                view.task_id
            ))
            .send()
            .await
            .expect("poll answered")
            .json()
            .await
            .expect("a task view");
    }
    (input, view)
}

/// `RATE` tasks a second for `SECS` seconds through each gateway (zone a's first), calling
/// `midway` once a third of them is out; checks that every one ends SUCCESS with its own
/// output. Returns how many went through each gateway.
async fn load(gateways: &[&str], tag: &str, mut midway: impl FnMut()) -> usize {
    let http = client();
    let total = RATE * SECS;
    let mut tasks: Vec<JoinHandle<(String, TaskView)>> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE as u64));
    let started = Instant::now();
    for i in 0..total {
        if i == total / 3 {
            midway();
        }
        tick.tick().await;
        for (zone, gateway) in gateways.iter().enumerate() {
            let input = format!("zones {tag} task {i} via {zone}");
            tasks.push(tokio::spawn(run_task(
                http.clone(),
                gateway.to_string(),
                input,
            )));
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(3 * SECS as u64),
        "load generation fell far behind"
    );
    for task in tasks {
        let (input, view) = task.await.expect("task");
        assert_simulated_success(&input, &view);
    }
    total
}

/// The sum of the samples of `name` in a `/metrics` page whose labels include `label`.
fn sample(page: &str, name: &str, label: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Calls a simulated worker ran.
async fn worker_calls(http: &reqwest::Client, worker: &str) -> u64 {
    sim_stats(http, worker).await.calls
}

/// The two zones' workers: a fast one in zone a, a slower one in zone b, 8 slots each.
fn workers() -> (Proc, Proc, Vec<String>) {
    let a = Proc::sim_worker(8, 20);
    let b = Proc::sim_worker(8, 60);
    let urls = vec![
        format!("{}?zone=a&max_inflight_batches=8", a.url),
        format!("{}?zone=b&max_inflight_batches=8", b.url),
    ];
    (a, b, urls)
}

/// Calls that stayed in their batcher's zone, and all calls, from the batchers' metrics.
async fn zone_counts(http: &reqwest::Client, batchers: &[(&str, &str)]) -> (f64, f64) {
    let (mut home, mut all) = (0.0, 0.0);
    for (zone, url) in batchers {
        let page = metrics(http, url).await;
        let calls = sample(&page, "batchgate_zone_batches_total", "");
        let cross = sample(&page, "batchgate_cross_zone_calls_total", "");
        assert_eq!(
            calls - cross,
            sample(
                &page,
                "batchgate_zone_batches_total",
                &format!("zone=\"{zone}\"")
            ),
            "zone {zone}: every call not counted as cross-zone went to its own zone\n{page}"
        );
        home += calls - cross;
        all += calls;
    }
    (home, all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_stay_in_their_zone_on_redis_and_a_dead_zone_is_served_by_the_other() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let (mut worker_a, worker_b, worker_urls) = workers();
    let workers_flag = worker_urls.join(",");
    let gateway = |zone: &str| {
        Proc::start(&[
            "gateway",
            "--insecure-no-auth",
            "--listen",
            "127.0.0.1:0",
            "--shed-wait-ms",
            "0",
            "--redis",
            &url,
            "--zone",
            zone,
        ])
    };
    let batcher = |zone: &str| {
        Proc::start(&[
            "batcher",
            "--listen",
            "127.0.0.1:0",
            "--redis",
            &url,
            "--zone",
            zone,
            "--worker-url",
            &workers_flag,
            "--worker-health-interval-ms",
            "200",
        ])
    };
    let (gateway_a, gateway_b) = (gateway("a"), gateway("b"));
    let (batcher_a, batcher_b) = (batcher("a"), batcher("b"));
    let gateways = [gateway_a.url.as_str(), gateway_b.url.as_str()];
    let batchers = [("a", batcher_a.url.as_str()), ("b", batcher_b.url.as_str())];
    let http = client();

    // Normal load: each zone's tasks are batched by its own batcher (its streams) and sent
    // to its own worker.
    let submitted = load(&gateways, "normal", || {}).await;
    for (zone, url) in batchers {
        let page = metrics(&http, url).await;
        let done = sample(
            &page,
            "batchgate_tasks_completed_total",
            "outcome=\"success\"",
        );
        assert_eq!(
            done, submitted as f64,
            "zone {zone}'s batcher ran exactly its gateway's tasks"
        );
    }
    let (home, all) = zone_counts(&http, &batchers).await;
    assert!(all > 0.0);
    assert!(
        home / all >= 0.95,
        "only {home} of {all} batches stayed in their zone"
    );
    eprintln!("normal load: {home} of {all} batches in their zone");

    // Zone a's worker dies mid-run: zone a's batcher sends its tasks to zone b, and none is
    // lost.
    let before_b = worker_calls(&http, &worker_b.url).await;
    load(&gateways, "zone a down", || {
        let _ = worker_a.child.kill();
    })
    .await;
    let _ = worker_a.child.wait();
    let page = metrics(&http, batcher_a.url.as_str()).await;
    let crossed = sample(&page, "batchgate_cross_zone_calls_total", "zone=\"b\"");
    assert!(crossed > 0.0, "zone a's batcher never used zone b\n{page}");
    assert!(worker_calls(&http, &worker_b.url).await > before_b);
    eprintln!("zone a down: {crossed} calls from zone a's batcher to zone b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_serve_prefers_its_zones_worker_and_falls_back_when_it_dies() {
    let (mut worker_a, worker_b, worker_urls) = workers();
    let workers_flag = worker_urls.join(",");
    let serve = Proc::start(&[
        "serve",
        "--insecure-no-auth",
        "--listen",
        "127.0.0.1:0",
        "--shed-wait-ms",
        "0",
        "--zone",
        "a",
        "--worker-url",
        &workers_flag,
        "--worker-health-interval-ms",
        "200",
    ]);
    let http = client();
    load(&[serve.url.as_str()], "normal", || {}).await;
    // Counted at the workers: zone a's took (nearly) every batch.
    let (at_a, at_b) = (
        worker_calls(&http, &worker_a.url).await,
        worker_calls(&http, &worker_b.url).await,
    );
    assert!(
        at_a as f64 / (at_a + at_b) as f64 >= 0.95,
        "zone a's worker ran {at_a} batches, zone b's {at_b}"
    );
    let (home, all) = zone_counts(&http, &[("a", serve.url.as_str())]).await;
    assert_eq!((home, all), (at_a as f64, (at_a + at_b) as f64));
    eprintln!("normal load: {at_a} of {} batches in zone a", at_a + at_b);

    load(&[serve.url.as_str()], "zone a down", || {
        let _ = worker_a.child.kill();
    })
    .await;
    let _ = worker_a.child.wait();
    let page = metrics(&http, &serve.url).await;
    let crossed = sample(&page, "batchgate_cross_zone_calls_total", "zone=\"b\"");
    assert!(crossed > 0.0, "serve never used zone b\n{page}");
    assert!(worker_calls(&http, &worker_b.url).await > at_b);
    eprintln!("zone a down: {crossed} calls to zone b");
}
