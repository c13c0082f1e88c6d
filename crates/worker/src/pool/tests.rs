//! The pool against real HTTP workers on loopback ports.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use batchgate_protocol::worker_api::{BatchRequest, BatchResponse};
use tokio::sync::{mpsc, Semaphore};

use super::*;

/// A JSON batch worker that records what it gets. With a gate, each call waits for a permit
/// the test hands out, after announcing its arrival.
struct Recorder {
    /// Sizes of the batches received, in arrival order.
    sizes: Mutex<Vec<usize>>,
    /// Calls inside the handler right now, and the most seen at once.
    current: AtomicUsize,
    most: AtomicUsize,
    /// Answers 503 to health checks and calls while false.
    healthy: AtomicBool,
    /// Told of each arrival (the number of calls inside at that moment).
    arrived: Option<mpsc::UnboundedSender<usize>>,
    /// Calls wait for a permit here before answering.
    gate: Option<Semaphore>,
}

impl Recorder {
    fn calls(&self) -> usize {
        self.sizes.lock().expect("not poisoned").len()
    }
}

async fn batch(
    State(r): State<Arc<Recorder>>,
    Json(req): Json<BatchRequest>,
) -> Result<Json<BatchResponse>, StatusCode> {
    if !r.healthy.load(Ordering::SeqCst) {
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    r.sizes.lock().expect("not poisoned").push(req.inputs.len());
    let now = r.current.fetch_add(1, Ordering::SeqCst) + 1;
    r.most.fetch_max(now, Ordering::SeqCst);
    if let Some(tx) = &r.arrived {
        let _ = tx.send(now);
    }
    if let Some(gate) = &r.gate {
        gate.acquire().await.expect("open").forget();
    }
    r.current.fetch_sub(1, Ordering::SeqCst);
    Ok(Json(BatchResponse {
        outputs: req.inputs.iter().map(|i| i.to_uppercase()).collect(),
    }))
}

async fn healthz(State(r): State<Arc<Recorder>>) -> StatusCode {
    if r.healthy.load(Ordering::SeqCst) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Starts a recorder; `gated` calls wait for the test; arrivals go to the returned receiver.
async fn start(gated: bool) -> (String, Arc<Recorder>, mpsc::UnboundedReceiver<usize>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let recorder = Arc::new(Recorder {
        sizes: Mutex::new(Vec::new()),
        current: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
        healthy: AtomicBool::new(true),
        arrived: Some(tx),
        gate: gated.then(|| Semaphore::new(0)),
    });
    let app = Router::new()
        .route("/v1/batch", post(batch))
        .route("/healthz", get(healthz))
        .with_state(recorder.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, recorder, rx)
}

fn pool(urls: &[String]) -> Pool {
    let specs: Vec<WorkerSpec> = urls.iter().map(|u| u.parse().expect("valid URL")).collect();
    Pool::connect(&specs, &PoolConfig::default(), None).expect("pool")
}

fn inputs(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("in{i}")).collect()
}

fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("http://{}", listener.local_addr().expect("addr"))
}

#[tokio::test]
async fn each_batch_goes_to_the_least_busy_worker() {
    let (a, ra, mut arrivals_a) = start(true).await;
    let (b, rb, mut arrivals_b) = start(true).await;
    let pool = pool(&[a, b]);
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.infer(&inputs(2)).await })
        })
        .collect();
    // Four calls, none finished: two on each worker.
    for _ in 0..2 {
        arrivals_a.recv().await.expect("arrival at a");
        arrivals_b.recv().await.expect("arrival at b");
    }
    assert_eq!((ra.calls(), rb.calls()), (2, 2));
    assert!(pool.status().iter().all(|s| s.in_flight == 2));
    ra.gate.as_ref().expect("gated").add_permits(2);
    rb.gate.as_ref().expect("gated").add_permits(2);
    for call in calls {
        assert_eq!(call.await.expect("join").expect("answer"), ["IN0", "IN1"]);
    }
    assert!(pool.status().iter().all(|s| s.in_flight == 0));
}

#[tokio::test]
async fn a_batch_larger_than_a_worker_takes_is_split_and_reassembled_in_order() {
    let (url, recorder, _) = start(false).await;
    let pool = pool(&[format!("{url}?max_batch_size=3")]);
    let outputs = pool.infer(&inputs(8)).await.expect("answer");
    let expected: Vec<String> = inputs(8).iter().map(|i| i.to_uppercase()).collect();
    assert_eq!(outputs, expected);
    let mut sizes = recorder.sizes.lock().expect("not poisoned").clone();
    sizes.sort_unstable();
    assert_eq!(sizes, [2, 3, 3]);
}

#[tokio::test]
async fn calls_beyond_a_workers_in_flight_limit_wait_for_a_place() {
    let (url, recorder, mut arrivals) = start(true).await;
    let pool = pool(&[format!("{url}?max_inflight_batches=1")]);
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.infer(&inputs(1)).await })
        })
        .collect();
    // Each call arrives alone; the next only once the one inside is let go.
    for _ in 0..3 {
        assert_eq!(arrivals.recv().await.expect("arrival"), 1);
        recorder.gate.as_ref().expect("gated").add_permits(1);
    }
    for call in calls {
        call.await.expect("join").expect("answer");
    }
    assert_eq!(recorder.most.load(Ordering::SeqCst), 1);
    assert_eq!(recorder.calls(), 3);
}

#[tokio::test]
async fn an_unreachable_worker_is_dropped_and_its_batch_goes_to_another() {
    let (good, recorder, _) = start(false).await;
    let pool = pool(&[closed_port_url(), good]);
    for _ in 0..4 {
        assert_eq!(pool.infer(&inputs(1)).await.expect("answer"), ["IN0"]);
    }
    assert_eq!(recorder.calls(), 4);
    let status = pool.status();
    assert!(!status[0].healthy && status[1].healthy, "{status:?}");
    pool.health().await.expect("one worker is up");
}

#[tokio::test]
async fn health_checks_drop_a_failing_worker_and_take_it_back_when_it_passes() {
    let (a, ra, _) = start(false).await;
    let (b, rb, _) = start(false).await;
    let pool = pool(&[a, b]);

    ra.healthy.store(false, Ordering::SeqCst);
    pool.check_health().await;
    assert!(!pool.status()[0].healthy);
    for _ in 0..4 {
        pool.infer(&inputs(1)).await.expect("answer");
    }
    assert_eq!(
        (ra.calls(), rb.calls()),
        (0, 4),
        "nothing goes to a worker that is down"
    );

    ra.healthy.store(true, Ordering::SeqCst);
    pool.check_health().await;
    assert!(pool.status()[0].healthy);
    for _ in 0..4 {
        pool.infer(&inputs(1)).await.expect("answer");
    }
    // Idle workers take turns: back in the rotation, it gets half.
    assert_eq!((ra.calls(), rb.calls()), (2, 6));
}

#[tokio::test]
async fn a_pool_with_no_reachable_worker_fails_like_its_worker() {
    let pool = pool(&[closed_port_url(), closed_port_url()]);
    let error = pool.infer(&inputs(1)).await.expect_err("nothing listens");
    assert!(matches!(error, WorkerError::Unreachable(_)), "{error:?}");
    assert!(pool.status().iter().all(|s| !s.healthy));
    // Still tried while all are down: a call is the probe.
    let error = pool.infer(&inputs(1)).await.expect_err("still nothing");
    assert!(matches!(error, WorkerError::Unreachable(_)), "{error:?}");
    assert!(pool.health().await.is_err());
    assert!(Pool::connect(&[], &PoolConfig::default(), None).is_err());
}

/// The next arrival at a recorder, failing the test if none comes within 10 s (a call placed
/// elsewhere would otherwise leave the test waiting for ever).
async fn arrival(arrivals: &mut mpsc::UnboundedReceiver<usize>) {
    tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
        .await
        .expect("a call arrived in time")
        .expect("the recorder is alive");
}

fn zoned_pool(zone: &str, urls: &[String]) -> Pool {
    let specs: Vec<WorkerSpec> = urls.iter().map(|u| u.parse().expect("valid URL")).collect();
    let config = PoolConfig {
        zone: Some(zone.parse().expect("zone")),
        ..PoolConfig::default()
    };
    Pool::connect(&specs, &config, None).expect("pool")
}

#[tokio::test]
async fn batches_stay_in_the_pools_zone_until_its_workers_are_saturated() {
    let (home, rh, mut arrivals_home) = start(true).await;
    let (away, ra, mut arrivals_away) = start(true).await;
    let pool = zoned_pool(
        "a",
        &[
            format!("{away}?zone=b&max_inflight_batches=2"),
            format!("{home}?zone=a&max_inflight_batches=2"),
        ],
    );
    let call = || {
        let pool = pool.clone();
        tokio::spawn(async move { pool.infer(&inputs(1)).await })
    };
    // Idle, the away worker is as free as the home one: the zone decides.
    let first = [call(), call()];
    for _ in 0..2 {
        arrival(&mut arrivals_home).await;
    }
    assert_eq!((rh.calls(), ra.calls()), (2, 0));
    // The home worker's places are taken: the next calls leave the zone.
    let spilled = [call(), call()];
    for _ in 0..2 {
        arrival(&mut arrivals_away).await;
    }
    assert_eq!((rh.calls(), ra.calls()), (2, 2));
    // Both saturated: the next waits at home for a place.
    let waiting = call();
    rh.gate.as_ref().expect("gated").add_permits(3);
    ra.gate.as_ref().expect("gated").add_permits(2);
    for c in first.into_iter().chain(spilled).chain([waiting]) {
        c.await.expect("join").expect("answer");
    }
    assert_eq!((rh.calls(), ra.calls()), (3, 2));
    let status = pool.status();
    assert_eq!(
        status
            .iter()
            .map(|s| (s.zone.as_ref().map(|z| z.to_string()), s.remote, s.calls))
            .collect::<Vec<_>>(),
        [(Some("b".into()), true, 2), (Some("a".into()), false, 3)]
    );
}

#[tokio::test]
async fn a_zone_whose_workers_are_down_is_served_by_another_zone() {
    let (away, ra, _) = start(false).await;
    let pool = zoned_pool(
        "a",
        &[
            format!("{}?zone=a", closed_port_url()),
            format!("{away}?zone=b"),
        ],
    );
    for _ in 0..4 {
        assert_eq!(pool.infer(&inputs(1)).await.expect("answer"), ["IN0"]);
    }
    assert_eq!(ra.calls(), 4);
    let status = pool.status();
    assert!(!status[0].healthy && status[1].remote, "{status:?}");
    // Once the home worker passes a check again, batches come home.
    let (home, rh, _) = start(false).await;
    let pool = zoned_pool("a", &[format!("{home}?zone=a"), format!("{away}?zone=b")]);
    for _ in 0..4 {
        pool.infer(&inputs(1)).await.expect("answer");
    }
    assert_eq!((rh.calls(), ra.calls()), (4, 4));
}
