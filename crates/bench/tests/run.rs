//! `run()` end to end against the tiny honest server of `support`.

mod support;

use std::sync::atomic::Ordering;

use batchgate_bench::{run, BenchArgs, BenchError, Report};
use clap::Parser;
use tokio::net::TcpListener;

use support::{
    resident_bytes, start, Behaviour, TestServer, TASKS_PER_BATCH, WORKER_SECS_PER_BATCH,
};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: BenchArgs,
}

fn args(url: &str, flags: &[&str]) -> BenchArgs {
    let argv = ["bench", "--url", url]
        .into_iter()
        .chain(flags.iter().copied());
    Cli::try_parse_from(argv).expect("valid flags").args
}

/// Counts add up: every outcome is of a sent request, or of one never sent for lack of a
/// connection.
fn assert_counts_add_up(report: &Report) {
    let total: u64 = report.outcomes.values().sum();
    let overloaded = report
        .outcomes
        .get("client_overloaded")
        .copied()
        .unwrap_or(0);
    assert_eq!(total, report.sent + overloaded, "{:?}", report.outcomes);
    assert_eq!(report.ok + report.errors, total);
}

fn assert_all_ok(report: &Report) {
    assert_counts_add_up(report);
    assert!(report.sent > 0);
    assert_eq!(report.errors, 0, "{:?}", report.outcomes);
    assert_eq!(report.ok, report.sent);
    let latency = report.latency_ms.expect("ok requests have latencies");
    assert_eq!(latency.count, report.ok);
    assert!(latency.p50 <= latency.p99 && latency.p99 <= latency.max);
}

/// The server's delta over the run is the traffic the run sent: `server` saw no request
/// before the first scrape, and every one before the last.
fn assert_server_delta(report: &Report, server: &TestServer) {
    let delta = &report.server.delta;
    let total = server.0.inferences.load(Ordering::Relaxed);
    assert_eq!(
        total, report.sent,
        "no warmup: the server saw exactly the run"
    );
    assert_eq!(
        server.seen_at_scrapes(),
        [0, total],
        "a scrape before, one after"
    );
    assert_eq!(report.server.scrape_error, None);
    assert_eq!(delta.batches, Some(total));
    assert_eq!(delta.mean_batch_size, Some(TASKS_PER_BATCH as f64));
    let flushes: Vec<_> = delta
        .flushes
        .iter()
        .map(|(r, n)| (r.as_str(), *n))
        .collect();
    assert_eq!(flushes, [("full", total - total / 3), ("timer", total / 3)]);
    assert_eq!(delta.resident_memory_bytes, Some(resident_bytes(total)));
    assert_worker_busy(report, server);
}

/// The worker's busy time is that of the requests the server saw from the scrape that starts
/// the measured window (the first, or with a warmup the second) to the last, which comes after
/// every request. The window is the measured one plus the drain (quick here); the scrape at
/// its start may leave a timer tick late.
fn assert_worker_busy(report: &Report, server: &TestServer) {
    let busy = report
        .server
        .worker_busy
        .expect("the server exports worker time");
    let seen = server.seen_at_scrapes();
    let (start, last) = match seen[..] {
        [_, start, last] if report.config.warmup_secs > 0.0 => (start, last),
        [start, last] => (start, last),
        _ => panic!("unexpected scrapes: {seen:?}"),
    };
    assert_eq!(last, server.0.inferences.load(Ordering::Relaxed));
    assert_eq!(
        busy.worker_call_seconds,
        (last - start) as f64 * WORKER_SECS_PER_BATCH
    );
    let window = busy.worker_busy_window_secs;
    assert!(
        window > report.measured_secs - 0.1 && window < report.measured_secs + 2.0,
        "window {window}"
    );
    assert_eq!(busy.worker_busy_slots, busy.worker_call_seconds / window);
    assert_eq!(busy.worker_busy_fraction, busy.worker_busy_slots / 32.0);
    assert_eq!(report.config.worker_slots, 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_fixed_sends_exactly_the_schedule() {
    let (url, server, task) = start(Behaviour::Honest).await;
    let report = run(args(&url, &["--rate", "200", "--duration", "1s"]))
        .await
        .expect("run succeeds");
    assert_all_ok(&report);
    // A fixed schedule of 200/s intends exactly 200 requests in [0, 1s), and none is skipped.
    assert_eq!(report.sent, 200);
    assert_eq!(server.0.inferences.load(Ordering::Relaxed), 200);
    assert_eq!(report.achieved_rate, 200.0);
    assert_server_delta(&report, &server);
    assert_eq!(report.config.mode, "open");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_poisson_polls_pending_tasks() {
    let (url, server, task) = start(Behaviour::Honest).await;
    let flags = [
        "--rate",
        "300",
        "--arrivals",
        "poisson",
        "--duration",
        "1s",
        "--wait-ms",
        "0",
        "--unique-ratio",
        "0.5",
    ];
    let report = run(args(&url, &flags)).await.expect("run succeeds");
    assert_all_ok(&report);
    // Every request was answered 202 and fetched with one poll.
    assert_eq!(server.0.polls.load(Ordering::Relaxed), report.sent);
    assert_server_delta(&report, &server);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_keeps_every_client_busy() {
    let (url, server, task) = start(Behaviour::Honest).await;
    let flags = ["--concurrency", "4", "--duration", "800ms"];
    let report = run(args(&url, &flags)).await.expect("run succeeds");
    assert_all_ok(&report);
    assert_eq!(server.0.inferences.load(Ordering::Relaxed), report.sent);
    assert_server_delta(&report, &server);
    assert_eq!(report.config.mode, "closed");
    assert_eq!(report.config.concurrency, Some(4));
    task.abort();
}

/// Warmup requests reach the server but not the report. In open loop a request belongs to the
/// warmup by its intended time, so the split is exact whatever the machine's speed; the rate
/// ramps over the warmup, which therefore carries half its full-rate count (15 of 30).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmup_requests_are_sent_but_not_recorded() {
    let (url, server, task) = start(Behaviour::Honest).await;
    let flags = ["--rate", "100", "--warmup", "300ms", "--duration", "500ms"];
    let report = run(args(&url, &flags)).await.expect("run succeeds");
    assert_all_ok(&report);
    assert_eq!(report.sent, 50);
    assert_eq!(server.0.inferences.load(Ordering::Relaxed), 65);
    assert_eq!(report.achieved_rate, 100.0);
    // The worker's time is taken over the measured window, from a scrape as it starts.
    assert_worker_busy(&report, &server);
    task.abort();
}

/// Bursts of 500/s for 200 ms every 500 ms, 50/s between, after a 200 ms ramp to 50/s: a fixed
/// schedule intends exactly 2 × (100 + 15) measured requests, and 5 in the ramp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_bursts_send_exactly_their_profile() {
    let (url, server, task) = start(Behaviour::Honest).await;
    let flags = [
        "--rate",
        "50",
        "--burst-rate",
        "500",
        "--burst-secs",
        "0.2",
        "--burst-every",
        "0.5",
        "--warmup",
        "200ms",
        "--duration",
        "1s",
    ];
    let report = run(args(&url, &flags)).await.expect("run succeeds");
    assert_all_ok(&report);
    assert_eq!(report.sent, 230);
    assert_eq!(server.0.inferences.load(Ordering::Relaxed), 235);
    assert_eq!(report.config.rate, Some(50.0));
    assert_eq!(report.config.burst_rate, Some(500.0));
    assert_eq!(report.config.burst_secs, Some(0.2));
    assert_eq!(report.config.burst_every_secs, Some(0.5));
    assert_eq!(report.config.burst_mean_rate, Some(230.0));
    assert!(report.to_string().contains("bursts"));
    assert_worker_busy(&report, &server);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_are_counted_by_status_and_code() {
    let (url, _server, task) = start(Behaviour::RateLimited).await;
    let flags = ["--concurrency", "2", "--duration", "300ms"];
    let report = run(args(&url, &flags)).await.expect("run succeeds");
    assert_counts_add_up(&report);
    assert_eq!(report.ok, 0);
    assert_eq!(report.outcomes.len(), 1, "{:?}", report.outcomes);
    assert_eq!(report.outcomes["http_429:rate_limited"], report.sent);
    assert!(report.latency_ms.is_none());
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_outputs_are_caught_unless_unchecked() {
    let (url, _server, task) = start(Behaviour::WrongOutput).await;
    let report = run(args(&url, &["--rate", "100", "--duration", "200ms"]))
        .await
        .expect("run succeeds");
    assert_counts_add_up(&report);
    assert_eq!(report.sent, 20);
    assert_eq!(report.outcomes["wrong_output"], 20);

    let flags = ["--rate", "100", "--duration", "200ms", "--no-check"];
    let report = run(args(&url, &flags)).await.expect("run succeeds");
    assert_all_ok(&report);
    assert!(!report.config.check);
    task.abort();
}

/// Two connections, both held by a server that never answers: the other requests due in the
/// window are not sent but counted, and the held ones end by the client's timeout. The timeout
/// (3 s) is far past the window (200 ms), so which requests get a connection does not depend
/// on how fast this machine is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_cap_counts_client_overloaded() {
    let (url, _server, task) = start(Behaviour::Silent).await;
    let flags = [
        "--rate",
        "50",
        "--duration",
        "200ms",
        "--max-connections",
        "2",
        "--timeout-ms",
        "3000",
    ];
    let report = run(args(&url, &flags)).await.expect("run succeeds");
    assert_counts_add_up(&report);
    assert_eq!(report.sent, 2);
    assert_eq!(report.outcomes["timeout"], 2);
    assert_eq!(report.outcomes["client_overloaded"], 8);
    task.abort();
}

#[tokio::test]
async fn unreachable_server_fails_before_any_load() {
    // Bind then drop: the port is free and nothing listens on it.
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("bound address"));
    drop(listener);
    let error = run(args(&url, &["--rate", "10", "--duration", "1s"]))
        .await
        .expect_err("nothing listens there");
    assert!(matches!(error, BenchError::Unreachable { .. }), "{error}");
    assert!(error.to_string().contains("/metrics"), "{error}");
}

#[tokio::test]
async fn invalid_flags_fail_before_any_load() {
    let mut bad = args("http://127.0.0.1:9", &["--rate", "10"]);
    bad.unique_ratio = 2.0;
    let error = run(bad).await.expect_err("ratio out of range");
    assert!(matches!(error, BenchError::InvalidArgs(_)), "{error}");
}

/// `--url A,B`: requests go to each server in turn, and the report's server figures are the
/// two servers' metrics added up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_urls_share_the_load_and_their_metrics_add_up() {
    let (a_url, a, a_task) = start(Behaviour::Honest).await;
    let (b_url, b, b_task) = start(Behaviour::Honest).await;
    let both = format!("{a_url},{b_url}/");
    let report = run(args(&both, &["--rate", "200", "--duration", "1s"]))
        .await
        .expect("run succeeds");
    assert_all_ok(&report);
    assert_eq!(report.sent, 200);
    let (at_a, at_b) = (
        a.0.inferences.load(Ordering::Relaxed),
        b.0.inferences.load(Ordering::Relaxed),
    );
    assert_eq!((at_a, at_b), (100, 100), "in turn");
    assert_eq!(report.server.scrape_error, None);
    assert_eq!(
        report.server.delta.batches,
        Some(200),
        "both servers' batches"
    );
    assert_eq!(
        report.server.delta.resident_memory_bytes,
        Some(resident_bytes(100) * 2)
    );
    assert_eq!(report.config.url, format!("{a_url},{b_url}"));
    a_task.abort();
    b_task.abort();
}
