//! Workers reached the way hosted inference servers are: gRPC over TLS with client
//! certificates (`grpcs://`), and an API key the worker requires, read by batchgate from a
//! file or an environment variable named in the worker URL. Real `batchgate worker` and
//! `batchgate serve` processes on loopback, certificates from `batchgate certs`.

mod common;

use std::path::Path;
use std::process::Command;

use batchgate_protocol::api::TaskStatus;
use batchgate_protocol::sim_output;
use common::logged::Logged;
use common::{client, infer, make_certs, run_to_exit, Proc};

const API_KEY: &str = "worker-api-key-5e21f0";

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// `batchgate serve ARGS` (loopback, no auth) with `env`, its log collected.
fn serve(args: &[&str], env: &[(&str, &str)]) -> Logged {
    let mut command = Command::new(env!("CARGO_BIN_EXE_batchgate"));
    command
        .args(["serve", "--insecure-no-auth", "--listen", "127.0.0.1:0"])
        .args(["--worker-retries", "0"])
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "debug")
        .env("BATCHGATE_SHUTDOWN_DELAY_MS", "0");
    Logged::spawn(command)
}

/// gRPC over TLS, the worker requiring a client certificate and an API key: batchgate
/// presents both (the key from an environment variable the URL names) and every task
/// succeeds; without the key, the worker refuses the calls; the key never reaches the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcs_with_mtls_and_an_api_key_end_to_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path();
    make_certs(certs);
    let key_file = certs.join("api-key");
    std::fs::write(&key_file, format!("{API_KEY}\n")).expect("write key");
    let worker = Proc::start(&[
        "worker",
        "--sim",
        "--listen",
        "127.0.0.1:0",
        "--base-ms",
        "20",
        "--tls-cert",
        &path(certs, "server.pem"),
        "--tls-key",
        &path(certs, "server-key.pem"),
        "--client-ca",
        &path(certs, "ca.pem"),
        "--api-key-file",
        &key_file.display().to_string(),
    ]);
    let authority = worker.url.trim_start_matches("https://");
    let tls = [
        "--worker-ca".to_owned(),
        path(certs, "ca.pem"),
        "--client-cert".to_owned(),
        path(certs, "client.pem"),
        "--client-key".to_owned(),
        path(certs, "client-key.pem"),
    ];
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();

    let with_key = format!("grpcs://{authority}?token_env=BG_TEST_WORKER_KEY");
    let mut args = vec!["--worker-url", with_key.as_str()];
    args.extend(&tls);
    let gateway = serve(&args, &[("BG_TEST_WORKER_KEY", API_KEY)]);
    let tasks = (0..40).map(|i| {
        let base = gateway.url.clone();
        async move {
            let input = format!("grpcs input {i}");
            (infer(&client(), &base, &input).await, input)
        }
    });
    for (view, input) in futures::future::join_all(tasks).await {
        assert_eq!(view.status, TaskStatus::Success, "{view:?}");
        assert_eq!(view.output.as_deref(), Some(sim_output(&input).as_str()));
    }
    let log = gateway.lines().join("\n");
    assert!(log.contains(&format!("grpcs://{authority}")), "{log}");
    assert!(!log.contains(API_KEY), "the worker's API key was logged");
    drop(gateway);

    // The same worker without the key: refused (gRPC UNAUTHENTICATED, HTTP 401).
    let without_key = format!("grpcs://{authority}");
    let mut args = vec!["--worker-url", without_key.as_str()];
    args.extend(&tls);
    let gateway = serve(&args, &[]);
    let view = infer(&client(), &gateway.url, "no key").await;
    assert_eq!(view.status, TaskStatus::Failed, "{view:?}");
    assert!(
        view.error.as_deref().is_some_and(|e| e.contains("401")),
        "{view:?}"
    );
}

/// An OpenAI-compatible worker requiring an API key: calls without it (or with a wrong one)
/// get 401, health checks stay open; batchgate sends the key read from the file the URL
/// names; a URL naming a missing file stops start-up with the file's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_requiring_an_api_key_refuses_calls_without_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("api-key");
    std::fs::write(&key_file, API_KEY).expect("write key");
    let key_path = key_file.display().to_string();
    let worker = Proc::start(&[
        "worker",
        "--sim",
        "--listen",
        "127.0.0.1:0",
        "--base-ms",
        "20",
        "--api-key-file",
        &key_path,
    ]);
    let http = client();
    let batch = serde_json::json!({ "inputs": ["a"] });
    for key in [None, Some("wrong-key"), Some(API_KEY)] {
        let mut request = http.post(format!("{}/v1/batch", worker.url)).json(&batch);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let status = request.send().await.expect("send").status();
        let expected = if key == Some(API_KEY) { 200 } else { 401 };
        assert_eq!(status, expected, "key {key:?}");
    }
    let health = http
        .get(format!("{}/healthz", worker.url))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);

    let authority = worker.url.trim_start_matches("http://");
    let with_key = format!("openai+http://{authority}/v1?token_file={key_path}");
    let gateway = serve(&["--worker-url", &with_key], &[]);
    let view = infer(&http, &gateway.url, "with the key").await;
    assert_eq!(view.status, TaskStatus::Success, "{view:?}");
    assert!(!gateway.lines().join("\n").contains(API_KEY));
    drop(gateway);

    let without_key = format!("openai+http://{authority}/v1");
    let gateway = serve(&["--worker-url", &without_key], &[]);
    let view = infer(&http, &gateway.url, "without the key").await;
    assert_eq!(view.status, TaskStatus::Failed, "{view:?}");
    assert!(
        view.error.as_deref().is_some_and(|e| e.contains("401")),
        "{view:?}"
    );
    drop(gateway);

    let missing = format!("http://{authority}?token_file=/nonexistent/api-key");
    let (status, stderr) = run_to_exit(
        &[
            "serve",
            "--insecure-no-auth",
            "--listen",
            "127.0.0.1:0",
            "--worker-url",
            &missing,
        ],
        &[],
    );
    assert!(!status.success());
    assert!(stderr.contains("/nonexistent/api-key"), "{stderr}");
}
