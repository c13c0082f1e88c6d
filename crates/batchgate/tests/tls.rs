//! TLS at the edge and mTLS between batcher and worker, over real sockets and processes:
//! `batchgate certs` makes the files, a `batchgate worker --sim` process requires client
//! certificates, and a batcher with and without one calls it.

mod common;

use std::path::Path;
use std::time::Duration;

use batchgate::serve::WorkerChoice;
use batchgate_net::{client_config, install_crypto_provider, ClientTlsFiles, TlsFiles};
use batchgate_protocol::api::TaskStatus;
use common::*;
use serde_json::json;

/// Runs `batchgate certs --out DIR` and returns DIR's files.
fn make_certs(dir: &Path) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_batchgate"))
        .args(["certs", "--out"])
        .arg(dir)
        .output()
        .expect("run batchgate certs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("--tls-cert"), "{summary}");
    for name in [
        "ca.pem",
        "server.pem",
        "server-key.pem",
        "client.pem",
        "client-key.pem",
    ] {
        assert!(dir.join(name).is_file(), "{name} written");
    }
}

fn https_client(files: &ClientTlsFiles) -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::builder()
        .use_preconfigured_tls(client_config(files).expect("client TLS config"))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

fn batcher_tls(dir: &Path, with_cert: bool) -> ClientTlsFiles {
    ClientTlsFiles {
        ca: Some(dir.join("ca.pem")),
        cert: with_cert.then(|| dir.join("client.pem")),
        key: with_cert.then(|| dir.join("client-key.pem")),
    }
}

#[tokio::test]
async fn the_worker_requires_a_client_certificate_and_the_batcher_presents_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path();
    make_certs(certs);
    let path = |name: &str| certs.join(name).to_string_lossy().into_owned();
    let worker = Proc::start(&[
        "worker",
        "--sim",
        "--listen",
        "127.0.0.1:0",
        "--base-ms",
        "5",
        "--per-item-ms",
        "0.1",
        "--tls-cert",
        &path("server.pem"),
        "--tls-key",
        &path("server-key.pem"),
        "--client-ca",
        &path("ca.pem"),
    ]);
    assert!(worker.url.starts_with("https://"), "{}", worker.url);
    let batch = json!({ "inputs": ["a", "b"] });

    // A TLS client without a certificate is refused in the handshake.
    let refused = https_client(&batcher_tls(certs, false))
        .post(format!("{}/v1/batch", worker.url))
        .json(&batch)
        .send()
        .await;
    assert!(refused.is_err(), "no client certificate: {refused:?}");
    // Plain HTTP gets nothing either.
    let plain = client()
        .post(format!(
            "{}/v1/batch",
            worker.url.replace("https://", "http://")
        ))
        .json(&batch)
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP to the TLS port: {plain:?}");
    // With the certificate, the call goes through.
    let answer = https_client(&batcher_tls(certs, true))
        .post(format!("{}/v1/batch", worker.url))
        .json(&batch)
        .send()
        .await
        .expect("mTLS call");
    assert_eq!(answer.status(), 200);

    // The whole path: a batcher presenting its certificate gets every task done.
    let infra = Infra::start(Backend::Memory).await;
    let mut config = serve_config(&infra, &worker.url, 4);
    if let Some(part) = config.batcher.as_mut() {
        part.worker = WorkerChoice::Remote {
            workers: vec![worker.url.parse().expect("worker URL")],
            pool: batchgate_worker::PoolConfig {
                timeout: Duration::from_secs(5),
                ..Default::default()
            },
            tls: batcher_tls(certs, true),
        };
    }
    let serve = start_serve(config).await;
    let http = client();
    for i in 0..20 {
        let input = format!("over mTLS {i}");
        let view = infer(&http, &serve.url, &input).await;
        assert_eq!(view.status, TaskStatus::Success, "{view:?}");
        assert_eq!(
            view.output.as_deref(),
            Some(batchgate_protocol::sim_output(&input).as_str())
        );
    }
    assert!(serve.shutdown().await.drained);
}

#[tokio::test]
async fn the_gateway_serves_https_with_its_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path();
    make_certs(certs);
    let worker = start_worker(fast_sim(4)).await;
    let infra = Infra::start(Backend::Memory).await;
    let mut config = serve_config(&infra, &worker.url, 4);
    config.tls = Some(TlsFiles {
        cert: certs.join("server.pem"),
        key: certs.join("server-key.pem"),
        client_ca: None,
    });
    let serve = start_serve(config).await;
    let base = serve.url.replace("http://", "https://");
    let http = https_client(&batcher_tls(certs, false));
    let view = infer(&http, &base, "hello over TLS").await;
    assert_eq!(view.status, TaskStatus::Success, "{view:?}");
    // The same port does not speak plain HTTP.
    assert!(client()
        .get(format!("{}/healthz", serve.url))
        .send()
        .await
        .is_err());
    assert!(serve.shutdown().await.drained);
}

#[test]
fn tls_flags_are_checked_before_binding() {
    let refused = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_batchgate"))
            .args(args)
            .output()
            .expect("run batchgate");
        assert!(!out.status.success(), "{args:?} must be refused");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // `serve` on loopback without auth, plus `extra`, must be refused with a message
    // containing `expected`.
    let serve_refused = |extra: &[&str], expected: &str| {
        let mut args = vec!["serve", "--insecure-no-auth", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let err = refused(&args);
        assert!(err.contains(expected), "{extra:?}: {err}");
    };
    let err = refused(&[
        "worker",
        "--sim",
        "--listen",
        "127.0.0.1:0",
        "--client-ca",
        "ca.pem",
    ]);
    assert!(err.contains("--client-ca needs --tls-cert"), "{err}");
    serve_refused(&["--worker-url", "https://127.0.0.1:9"], "--worker-ca");
    serve_refused(
        &[
            "--worker-url",
            "http://127.0.0.1:9",
            "--worker-ca",
            "ca.pem",
        ],
        "https://",
    );
    serve_refused(&["--tls-cert", "cert.pem"], "--tls-key");
    serve_refused(
        &[
            "--tls-cert",
            "/nonexistent/cert.pem",
            "--tls-key",
            "/nonexistent/key.pem",
        ],
        "/nonexistent/cert.pem",
    );
}
