//! The chart report (`--report`) of a real bench run against a real `batchgate serve`, and of
//! a simulation: parsed as XML, every chart is there and drew data, and nothing refers to a
//! resource outside the file.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const CHARTS: [&str; 4] = [
    "latency-over-time",
    "latency-cdf",
    "batch-sizes",
    "throughput",
];

/// A `batchgate serve` process, killed by its PID when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve() -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_batchgate"))
        .args([
            "serve",
            "--insecure-no-auth",
            "--listen",
            "127.0.0.1:0",
            "--sim-slots",
            "4",
            "--sim-base-ms",
            "20",
            "--sim-per-item-ms",
            "0.1",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start batchgate serve");
    let stderr = child.stderr.take().expect("stderr piped");
    let mut lines = BufReader::new(stderr).lines();
    let mut url = None;
    // The log names the address within its first lines; bounded by the lines it writes.
    for line in lines.by_ref().take(200) {
        let line = line.expect("read the server's log");
        if let Some(at) = line.find("listening on http://") {
            let rest = &line[at + "listening on ".len()..];
            url = rest.split_whitespace().next().map(str::to_owned);
            break;
        }
    }
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let url = url.expect("the server logs its address");
    Server { child, url }
}

/// Checks one report: each chart present, with data points and drawn marks.
fn check(text: &str) {
    for resource in [
        "href=\"http",
        "src=\"http",
        "url(http",
        "@import",
        "<script",
    ] {
        assert!(
            !text.contains(resource),
            "refers outside the file: {resource}"
        );
    }
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    let doc = roxmltree::Document::parse_with_options(text, options)
        .expect("the report is well-formed XML");
    for id in CHARTS {
        let chart = doc
            .descendants()
            .find(|n| n.attribute("id") == Some(id))
            .unwrap_or_else(|| panic!("chart {id} missing"));
        let points: usize = chart
            .attribute("data-points")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("chart {id} has no data-points"));
        assert!(points >= 2, "chart {id} drew {points} points");
        // Data drawn as a line (polyline) or bars (rect with a fill other than the
        // background's).
        let marks = chart
            .descendants()
            .filter(|n| {
                n.has_tag_name("polyline")
                    || (n.has_tag_name("rect")
                        && n.attribute("fill").is_some_and(|f| f != "#FFFFFF"))
            })
            .count();
        assert!(marks > 0, "chart {id} has no line or bar");
    }
}

#[test]
fn a_bench_run_renders_every_chart_with_data() {
    let server = serve();
    let dir = tempfile::tempdir().expect("temp dir");
    // A seed per run: the same seed resends the same inputs, which dedupe would answer
    // without a batch.
    for (name, seed) in [("bench.svg", "1"), ("bench.html", "2")] {
        let path = dir.path().join(name);
        let out = Command::new(env!("CARGO_BIN_EXE_batchgate"))
            .args([
                "bench",
                "--url",
                &server.url,
                "--rate",
                "300",
                // Random gaps: with evenly spaced sends every 50 ms window can hold the same
                // number of requests, and the batch-size histogram would have one bar.
                "--arrivals",
                "poisson",
                "--duration",
                "3s",
                "--worker-slots",
                "4",
                "--input-bytes",
                "64",
                "--seed",
                seed,
                "--report",
            ])
            .arg(&path)
            .output()
            .expect("run batchgate bench");
        assert!(
            out.status.success(),
            "bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&path).expect("the report was written");
        check(&text);
        if name.ends_with(".html") {
            assert!(text.starts_with("<!DOCTYPE html>"), "{}", &text[..40]);
        }
    }
}

#[test]
fn a_simulation_renders_every_chart_with_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sim.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_batchgate"))
        .args([
            "simulate",
            "--rate",
            "1920",
            "--sim-slots",
            "2",
            "--duration",
            "5s",
            "--report",
        ])
        .arg(&path)
        .output()
        .expect("run batchgate simulate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check(&std::fs::read_to_string(&path).expect("the report was written"));
}

#[test]
fn bad_simulate_and_plan_flags_are_clear_errors() {
    for (args, needle) in [
        (
            vec!["simulate", "--rate=-5"],
            "--rate must be a positive number",
        ),
        (
            vec!["simulate", "--duration", "1s"],
            "give exactly one of --rate and --trace",
        ),
        (
            vec!["simulate", "--trace", "/nonexistent/trace.txt"],
            "trace file /nonexistent/trace.txt",
        ),
        (
            vec!["simulate", "--rate", "10", "--burst-rate", "100"],
            "--burst-rate needs --burst-secs and --burst-every",
        ),
        (
            vec!["simulate", "--rate", "10", "--max-connections", "0"],
            "--max-connections must be at least 1",
        ),
        (
            vec!["simulate", "--rate", "10", "--gateway-cpu-us=-1"],
            "--gateway-cpu-us must be a number of microseconds, at least 0",
        ),
        (
            vec![
                "simulate",
                "--rate",
                "10",
                "--host-cpu-us",
                "150",
                "--client-cpu-us",
                "80",
            ],
            "cannot be used with",
        ),
        (
            vec!["plan", "--rate", "0", "--p99-ms", "500"],
            "--rate must be a positive number",
        ),
        (
            vec!["plan", "--rate", "1000", "--p99-ms", "100"],
            "no deployment meets p99 < 100 ms",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_batchgate"))
            .args(&args)
            .output()
            .expect("run batchgate");
        assert!(!out.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn simulate_takes_the_bench_and_serve_flag_names() {
    let out = Command::new(env!("CARGO_BIN_EXE_batchgate"))
        .args(["simulate", "--help"])
        .output()
        .expect("run batchgate");
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--rate",
        "--burst-rate",
        "--burst-secs",
        "--burst-every",
        "--arrivals",
        "--duration",
        "--warmup",
        "--seed",
        "--max-connections",
        "--sim-slots",
        "--sim-base-ms",
        "--sim-per-item-ms",
        "--max-batch-size",
        "--max-wait-ms",
        "--policy",
        "--max-hold-ms",
        "--max-inflight-batches",
        "--latency-objective-ms",
        "--shed-wait-ms",
        "--json",
        "--report",
        "[env: BATCHGATE_SIMULATE_RATE=]",
    ] {
        assert!(
            help.contains(needle),
            "simulate --help lacks {needle:?}:\n{help}"
        );
    }
}

#[test]
fn a_trace_file_drives_the_simulation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("trace.txt");
    // 64 requests at once (one full batch), then one alone 1 s later (a timer flush); a
    // comment and a blank line are skipped.
    let mut text = String::from("# send times, seconds\n\n");
    for _ in 0..64 {
        text.push_str("0.5\n");
    }
    text.push_str("1.5\n");
    std::fs::write(&path, text).expect("write the trace");
    let out = Command::new(env!("CARGO_BIN_EXE_batchgate"))
        .args(["simulate", "--duration", "3s", "--json", "--trace"])
        .arg(&path)
        .output()
        .expect("run batchgate simulate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["sent"], 65);
    assert_eq!(report["ok"], 65);
    assert_eq!(report["server"]["batches"], 2);
    assert_eq!(report["server"]["flushes"]["full"], 1);
    assert_eq!(report["server"]["flushes"]["timer"], 1);
    // The lone request waits the 50 ms window, then a call of 150.78 ms, plus 4 ms outside.
    let max = report["latency_ms"]["max"].as_f64().expect("a number");
    assert!((max - 204.78).abs() < 0.5, "{max}");

    std::fs::write(&path, "0.1\nsoon\n").expect("write the trace");
    let out = Command::new(env!("CARGO_BIN_EXE_batchgate"))
        .args(["simulate", "--trace"])
        .arg(&path)
        .output()
        .expect("run batchgate simulate");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 2: not a number of seconds"),
        "{stderr}"
    );
}
