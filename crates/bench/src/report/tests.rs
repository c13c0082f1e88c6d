use std::time::Duration;

use super::*;
use crate::args::{DEFAULT_MAX_CONNECTIONS, DEFAULT_SEED};

fn config() -> RunConfig {
    RunConfig::of(&Config {
        url: "http://127.0.0.1:1".to_owned(),
        urls: vec!["http://127.0.0.1:1".to_owned()],
        mode: Mode::Open {
            rate: 100.0,
            arrivals: ArrivalKind::Poisson,
            burst: None,
        },
        duration: Duration::from_secs(2),
        warmup: Duration::ZERO,
        input_bytes: 64,
        unique_ratio: 1.0,
        wait_ms: 1000,
        timeout: Duration::from_secs(5),
        max_connections: DEFAULT_MAX_CONNECTIONS,
        seed: DEFAULT_SEED,
        check: true,
        http2: false,
        worker_slots: 32,
        api: crate::args::Api::Inference,
        inputs_per_request: 1,
        model: None,
        bearer: None,
        report: None,
    })
}

fn totals() -> Totals {
    let mut latency_us = Histogram::new(3).expect("valid histogram");
    for micros in 1..=180 {
        latency_us.record(micros * 100).expect("in range");
    }
    Totals {
        sent: 195,
        outcomes: [
            ("ok", 180),
            ("http_429:rate_limited", 10),
            ("client_overloaded", 7),
        ]
        .into_iter()
        .map(|(kind, count)| (kind.to_owned(), count))
        .collect(),
        latency_us,
    }
}

fn server() -> ServerReport {
    ServerReport {
        delta: ServerDelta {
            batches: Some(10),
            mean_batch_size: Some(18.0),
            flushes: [("full".to_owned(), 8), ("timer".to_owned(), 2)]
                .into_iter()
                .collect(),
            resident_memory_bytes: Some(50 << 20),
        },
        worker_busy: Some(WorkerBusy {
            worker_busy_window_secs: 2.5,
            worker_call_seconds: 20.0,
            worker_busy_slots: 8.0,
            worker_busy_fraction: 0.25,
        }),
        scrape_error: None,
    }
}

#[test]
fn counts_add_up_and_unanswered_are_abandoned() {
    let report = Report::new(config(), totals(), server());
    assert_eq!(report.outcomes[ABANDONED], 5); // 195 sent, 190 answered
    assert_eq!(report.ok, 180);
    assert_eq!(report.errors, 10 + 7 + 5);
    let total: u64 = report.outcomes.values().sum();
    assert_eq!(total, report.sent + report.outcomes["client_overloaded"]);
    assert_eq!(report.achieved_rate, 90.0);
    let latency = report.latency_ms.expect("there were ok requests");
    assert_eq!(latency.count, 180);
    assert!((latency.p50 - 9.0).abs() < 0.01, "{latency:?}");
    assert!((latency.max - 18.0).abs() < 0.02, "{latency:?}");
}

#[test]
fn json_shape() {
    let report = Report::new(config(), totals(), server());
    let json: serde_json::Value =
        serde_json::from_str(&report.to_json()).expect("the report is JSON");
    for key in [
        "config",
        "measured_secs",
        "sent",
        "ok",
        "errors",
        "achieved_rate",
        "outcomes",
        "latency_ms",
        "server",
    ] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
    assert_eq!(json["config"]["mode"], "open");
    assert_eq!(json["config"]["arrivals"], "poisson");
    assert_eq!(json["config"]["concurrency"], serde_json::Value::Null);
    assert_eq!(json["outcomes"]["http_429:rate_limited"], 10);
    for key in ["count", "mean", "p50", "p90", "p99", "p999", "max"] {
        assert!(json["latency_ms"][key].is_number(), "latency_ms.{key}");
    }
    assert_eq!(json["server"]["mean_batch_size"], 18.0);
    assert_eq!(json["server"]["batches"], 10);
    assert_eq!(json["server"]["flushes"]["full"], 8);
    assert_eq!(json["server"]["resident_memory_bytes"], 50 << 20);
    assert_eq!(json["server"]["scrape_error"], serde_json::Value::Null);
    assert_eq!(json["server"]["worker_busy_fraction"], 0.25);
    assert_eq!(json["server"]["worker_busy_slots"], 8.0);
    assert_eq!(json["server"]["worker_call_seconds"], 20.0);
    assert_eq!(json["server"]["worker_busy_window_secs"], 2.5);
    assert_eq!(json["config"]["worker_slots"], 32);
    assert_eq!(json["config"]["burst_rate"], serde_json::Value::Null);

    // Without the worker-call histogram the worker fields are left out.
    let mut server = server();
    server.worker_busy = None;
    let json: serde_json::Value =
        serde_json::from_str(&Report::new(config(), totals(), server).to_json())
            .expect("the report is JSON");
    assert!(json["server"].get("worker_busy_fraction").is_none());
    assert_eq!(json["server"]["mean_batch_size"], 18.0);
}

#[test]
fn a_burst_profile_is_stated() {
    let mut config = config();
    config.rate = Some(500.0);
    config.burst_rate = Some(15_000.0);
    config.burst_secs = Some(2.0);
    config.burst_every_secs = Some(10.0);
    config.burst_mean_rate = Some(3400.0);
    let report = Report::new(config, totals(), server());
    let table = report.to_string();
    assert!(
        table.contains(
            "bursts                15000 requests/s for 2s every 10s from the start of the \
             measured window, 500/s between (mean 3400.0/s)"
        ),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&report.to_json()).expect("the report is JSON");
    assert_eq!(json["config"]["rate"], 500.0);
    assert_eq!(json["config"]["burst_rate"], 15_000.0);
    assert_eq!(json["config"]["burst_secs"], 2.0);
    assert_eq!(json["config"]["burst_every_secs"], 10.0);
    assert_eq!(json["config"]["burst_mean_rate"], 3400.0);
}

#[test]
fn table_names_every_part() {
    let table = Report::new(config(), totals(), server()).to_string();
    for part in [
        "open loop, 100 requests/s (poisson arrivals)",
        "http_429:rate_limited",
        "p99.9",
        "mean batch size       18.00 over 10 batches",
        "full 8, timer 2",
        "50.0 MiB",
        "worker busy           8.00 slot-seconds/s = 25.0% of 32 slots (over 2.5s)",
    ] {
        assert!(table.contains(part), "missing {part:?} in\n{table}");
    }
    let empty = Report::new(
        config(),
        Totals {
            sent: 0,
            outcomes: BTreeMap::new(),
            latency_us: Histogram::new(3).expect("valid histogram"),
        },
        ServerReport::default(),
    );
    assert!(empty.latency_ms.is_none());
    assert!(empty.to_string().contains("n/a"));
}
