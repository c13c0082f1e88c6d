//! `batchgate bench --api inference|openai|kserve`: a short run of the real binary against a
//! real `batchgate serve` (simulated worker, and a second model on a `worker --sim`) through
//! each front door, every output checked against the simulated worker's, the same JSON
//! report for each; a model not served is counted by its error code.

mod common;

use std::process::Command;

use common::Proc;

/// Runs `batchgate bench` against `url` with `flags` and returns its JSON report.
fn bench(url: &str, flags: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_batchgate"))
        .args([
            "bench",
            "--url",
            url,
            "--rate",
            "40",
            "--duration",
            "1s",
            "--worker-slots",
            "4",
            "--input-bytes",
            "64",
            "--json",
        ])
        .args(flags)
        .output()
        .expect("run batchgate bench");
    assert!(
        out.status.success(),
        "bench {flags:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

#[test]
fn bench_drives_every_front_door_and_checks_each_output() {
    let worker = Proc::sim_worker(2, 10);
    let small = format!("small:worker={},max_batch_size=8", worker.url);
    let serve = Proc::start(&[
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
        "--model",
        &small,
    ]);
    // A seed per run: a resent input would be answered by dedupe without a batch.
    for (api, inputs, model, seed) in [
        ("inference", "1", None, "1"),
        ("inference", "1", Some("small"), "2"),
        ("openai", "3", None, "3"),
        ("openai", "3", Some("small"), "4"),
        ("kserve", "4", None, "5"),
        ("kserve", "2", Some("small"), "6"),
    ] {
        let mut flags = vec!["--api", api, "--inputs-per-request", inputs, "--seed", seed];
        if let Some(model) = model {
            flags.extend(["--model", model]);
        }
        let report = bench(&serve.url, &flags);
        let sent = report["sent"].as_u64().expect("sent");
        assert!(sent > 0, "{report}");
        assert_eq!(
            report["ok"].as_u64(),
            Some(sent),
            "{api} {model:?}: {report}"
        );
        assert_eq!(report["errors"].as_u64(), Some(0), "{report}");
        assert_eq!(report["config"]["api"], api);
        assert_eq!(
            report["config"]["inputs_per_request"].as_u64(),
            inputs.parse::<u64>().ok()
        );
        assert!(report["latency_ms"]["p99"].as_f64().is_some(), "{report}");
    }
    // A model not served: every request counted by the door's error code.
    for api in ["openai", "kserve"] {
        let report = bench(
            &serve.url,
            &["--api", api, "--model", "nope", "--seed", "7"],
        );
        let sent = report["sent"].as_u64().expect("sent");
        assert_eq!(report["errors"].as_u64(), Some(sent), "{report}");
        assert_eq!(
            report["outcomes"]["http_404:model_not_found"].as_u64(),
            Some(sent),
            "{report}"
        );
    }
    // /v1/inference takes one input: asking for more is refused before any load.
    let refused = Command::new(env!("CARGO_BIN_EXE_batchgate"))
        .args([
            "bench",
            "--url",
            &serve.url,
            "--rate",
            "1",
            "--duration",
            "1s",
        ])
        .args(["--inputs-per-request", "2"])
        .output()
        .expect("run batchgate bench");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--inputs-per-request"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
