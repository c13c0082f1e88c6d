//! The binary's command line: help text, validation before binding, config file errors.

mod common;

use std::process::Command;

fn batchgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_batchgate"))
        .args(args)
        .output()
        .expect("run batchgate")
}

#[test]
fn help_documents_flags_with_their_defaults_and_env() {
    let out = batchgate(&["serve", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--listen",
        "[default: 127.0.0.1:8080]",
        "--max-batch-size",
        "[default: 64]",
        "--max-wait-ms",
        "[default: 50]",
        "--partitions",
        "Default: 16 in process and on a Redis Cluster",
        "1 on a standalone Redis",
        "--worker-url",
        "--sim-slots",
        "[env: BATCHGATE_MAX_WAIT_MS=]",
        "--config",
        "--dedupe-scope",
        "with --insecure-no-auth the request's `client_id`",
        "--dedupe-ttl-secs",
        "0 turns dedupe off, for models whose outputs differ",
        "--retry-budget-percent",
        "[default: 20]",
    ] {
        assert!(
            help.contains(needle),
            "serve --help lacks {needle:?}:\n{help}"
        );
    }
    let out = batchgate(&["worker", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--sim",
        "--slots",
        "--base-ms",
        "[default: 150]",
        "--per-item-ms",
        "[default: 0.78]",
    ] {
        assert!(
            help.contains(needle),
            "worker --help lacks {needle:?}:\n{help}"
        );
    }
    let out = batchgate(&["bench", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--url",
        "--rate",
        "--concurrency",
        "--duration",
        "--input-bytes",
        "--json",
        "--api",
        "--inputs-per-request",
        "--model",
        "kserve",
    ] {
        assert!(
            help.contains(needle),
            "bench --help lacks {needle:?}:\n{help}"
        );
    }
}

#[test]
fn help_shows_no_secret_from_the_environment() {
    let secrets = [
        (
            "BATCHGATE_REDIS",
            "redis://:secretpw-redis@127.0.0.1:6379",
            "secretpw-redis",
        ),
        (
            "BATCHGATE_JWT_SECRET",
            "jwt-secret-value-of-32-bytes-or-more",
            "jwt-secret-value",
        ),
        (
            "BATCHGATE_ADMIN_TOKEN",
            "admin-token-value-16+",
            "admin-token-value",
        ),
    ];
    for command in ["gateway", "serve", "batcher"] {
        let out = Command::new(env!("CARGO_BIN_EXE_batchgate"))
            .args([command, "--help"])
            .envs(secrets.iter().map(|(k, v, _)| (*k, *v)))
            .output()
            .expect("run batchgate");
        assert!(out.status.success());
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("BATCHGATE_REDIS"),
            "{command} --help names the variable"
        );
        for (_, _, secret) in secrets {
            assert!(
                !help.contains(secret),
                "{command} --help shows {secret}:\n{help}"
            );
        }
    }
}

#[test]
fn invalid_configuration_is_refused_before_binding() {
    let out = batchgate(&["serve", "--max-batch-size", "0", "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--max-batch-size must be at least 1"), "{err}");
}

#[test]
fn a_missing_config_file_is_a_clear_error() {
    let out = batchgate(&["serve", "--config", "/nonexistent/batchgate.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read config file /nonexistent/batchgate.toml"),
        "{err}"
    );
}

#[test]
fn batching_and_edge_flags_are_checked_before_binding() {
    let out = batchgate(&["serve", "--policy", "eager", "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fixed") && err.contains("adaptive"), "{err}");
    let out = batchgate(&[
        "serve",
        "--insecure-no-auth",
        "--admin-token",
        "short",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at least 16 characters"), "{err}");
}

#[test]
fn dlq_talks_to_the_admin_api_and_reports_refusals() {
    let token = "cli-test-admin-token";
    let (mut child, url) = common::spawn_batchgate(&[
        "serve",
        "--insecure-no-auth",
        "--listen",
        "127.0.0.1:0",
        "--admin-token",
        token,
    ]);
    let out = batchgate(&["dlq", "--url", &url, "--admin-token", token, "list"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(listing["count"], 0);
    let out = batchgate(&[
        "dlq",
        "--url",
        &url,
        "--admin-token",
        "wrong-token-000000",
        "purge",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401") && err.contains("admin token"), "{err}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_gateway_needs_keys_or_an_explicit_loopback_only_opt_out() {
    let out = batchgate(&["serve", "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no authentication configured"), "{err}");
    let out = batchgate(&["serve", "--insecure-no-auth", "--listen", "0.0.0.0:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only allowed on a loopback address"), "{err}");
    let out = batchgate(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--jwt-secret",
        "too-short",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at least 32 bytes"), "{err}");
}

#[test]
fn token_prints_a_jwt_alone_on_stdout() {
    let out = batchgate(&[
        "token",
        "--sub",
        "alice",
        "--secret",
        "a-cli-test-secret-of-at-least-32-bytes",
        "--ttl",
        "10m",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let token = stdout.trim_end();
    assert_eq!(stdout.lines().count(), 1);
    assert_eq!(token.split('.').count(), 3, "{token}");
    let out = batchgate(&["token", "--sub", "alice", "--secret", "short"]);
    assert!(!out.status.success());
}

#[test]
fn bad_worker_urls_are_refused_before_binding_with_the_reason() {
    for (url, expected) in [
        ("ftp://127.0.0.1:9000", "unknown scheme \"ftp\""),
        ("127.0.0.1:9000", "has no scheme"),
        ("kserve-v2+http://127.0.0.1:9000/v2/models", "names a model"),
        (
            "grpc://127.0.0.1:9000?max_batch_size=0",
            "max_batch_size must be a whole number",
        ),
        (
            "http://127.0.0.1:9000?batch=8",
            "unknown query parameter \"batch\"",
        ),
    ] {
        let out = batchgate(&[
            "serve",
            "--insecure-no-auth",
            "--listen",
            "127.0.0.1:0",
            "--worker-url",
            "http://127.0.0.1:9000",
            "--worker-url",
            url,
        ]);
        assert!(!out.status.success(), "{url}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--worker-url") && err.contains(expected),
            "{url}: {err}"
        );
    }
}

/// `worker --crash-after N` ends the process itself, at once and with its own exit code, so
/// that a supervisor (and the fault tests) can tell a simulated crash from a clean stop (0)
/// and a configuration error (1).
#[tokio::test]
async fn a_worker_told_to_crash_exits_at_once_with_its_own_code() {
    let mut worker = common::Proc::start(&[
        "worker",
        "--sim",
        "--listen",
        "127.0.0.1:0",
        "--base-ms",
        "0",
        "--per-item-ms",
        "0",
        "--crash-after",
        "1",
    ]);
    // The one call runs, then the process goes: its answer may or may not arrive first.
    let _ = common::client()
        .post(format!("{}/v1/batch", worker.url))
        .json(&serde_json::json!({ "inputs": ["a"] }))
        .send()
        .await;
    let status = tokio::task::spawn_blocking(move || {
        common::wait_exit(&mut worker.child, std::time::Duration::from_secs(10))
    })
    .await
    .expect("wait");
    assert_eq!(status.code(), Some(70), "{status:?}");
}

/// The runtime's worker threads of a running process (tokio names them `tokio-rt-worker`;
/// its blocking threads have another name), once `want` have taken their name (a new
/// thread has its creator's until it first runs), or all there are after 10 s.
fn runtime_threads(pid: u32, want: usize) -> usize {
    let count = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .expect("list the process's threads")
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.trim() == "tokio-rt-worker")
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while count() < want && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Any more would have been named by now too.
    std::thread::sleep(std::time::Duration::from_millis(100));
    count()
}

/// `--worker-threads N` (or `BATCHGATE_WORKER_THREADS`) sizes the async runtime: one thread
/// a process where several share a small host; 0 is refused before anything starts.
#[test]
fn worker_threads_size_the_runtime() {
    let start = |threads: &str| {
        common::Proc::start(&[
            "worker",
            "--sim",
            "--listen",
            "127.0.0.1:0",
            "--worker-threads",
            threads,
        ])
    };
    let one = start("1");
    assert_eq!(runtime_threads(one.child.id(), 1), 1);
    let three = start("3");
    assert_eq!(runtime_threads(three.child.id(), 3), 3);
    let (env_status, _) = common::run_to_exit(
        &["worker", "--sim", "--listen", "127.0.0.1:0"],
        &[("BATCHGATE_WORKER_THREADS", "0")],
    );
    assert_eq!(env_status.code(), Some(2), "0 threads is refused");
}
