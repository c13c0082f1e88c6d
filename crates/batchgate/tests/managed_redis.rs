//! batchgate against a Redis run the way managed Redis services are: TLS only (no plain
//! port), a password or an ACL user, sometimes client certificates. Real `redis-server`
//! processes (standalone and a 6-node cluster, TLS on the cluster bus and replication too),
//! certificates from `batchgate certs`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use batchgate::backend::RedisBackend;
use batchgate_protocol::api::{TaskStatus, TaskView};
use batchgate_protocol::sim_output;
use batchgate_redis::conn::redact;
use batchgate_redis::{RedisConfig, RedisTls};
use batchgate_testkit::{with_credentials, RedisCluster, RedisServer, Secure};
use common::logged::Logged;
use common::{
    client, fast_sim, make_certs, run_to_exit, serve_config, start_serve, start_worker, Infra, Proc,
};

/// The password of the default user of the test servers.
const DEFAULT_PASSWORD: &str = "default-user-pw-4d1c";
/// The ACL user the standalone server has, and its password.
const ACL_USER: &str = "batchgate-app";
const ACL_PASSWORD: &str = "acl-user-pw-93be";

fn secure(dir: &Path, require_client_cert: bool, user: bool) -> Secure {
    Secure {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client-key.pem"),
        require_client_cert,
        password: Some(DEFAULT_PASSWORD.into()),
        user: user.then(|| (ACL_USER.into(), ACL_PASSWORD.into())),
    }
}

fn tls(dir: &Path, client_cert: bool) -> RedisTls {
    let read = |name: &str| std::fs::read(dir.join(name)).expect("read cert");
    RedisTls {
        ca: Some(read("ca.pem")),
        client: client_cert.then(|| (read("client.pem"), read("client-key.pem"))),
    }
}

/// 1,000 concurrent submissions through a whole in-process deployment on `redis`: every one
/// answered with its own output.
async fn scenario(redis: RedisConfig) {
    let worker = start_worker(fast_sim(8)).await;
    let mut config = serve_config(&Infra::None, &worker.url, 8);
    config.store.redis = Some(RedisBackend {
        redis,
        visibility_timeout: Duration::from_millis(1500),
        max_deliveries: 5,
    });
    let serve = start_serve(config).await;
    let http = client();
    let requests = (0..1000).map(|i| {
        let http = http.clone();
        let url = format!("{}/v1/inference?wait_ms=30000", serve.url);
        async move {
            let input = format!("over tls {i}");
            let response = http
                .post(&url)
                .json(&serde_json::json!({ "input": input, "client_id": "tls" }))
                .send()
                .await
                .expect("send");
            let status = response.status();
            let body = response.text().await.expect("body");
            assert_eq!(status, 200, "input {i}: {body}");
            let view: TaskView = serde_json::from_str(&body).expect("json");
            (input, view)
        }
    });
    for (input, view) in futures::future::join_all(requests).await {
        assert_eq!(view.status, TaskStatus::Success, "{view:?}");
        assert_eq!(view.output.as_deref(), Some(sim_output(&input).as_str()));
    }
    let stats = worker.sim.stats();
    assert!((1000..1000 + 128).contains(&stats.items), "{stats:?}");
    assert!(serve.shutdown().await.drained);
    worker.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_over_tls_with_an_acl_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_certs(dir.path());
    let server = RedisServer::start_secure(&secure(dir.path(), false, true)).await;
    scenario(RedisConfig {
        urls: vec![with_credentials(
            &server.url(),
            Some(ACL_USER),
            ACL_PASSWORD,
        )],
        cluster: false,
        key_prefix: "tls".into(),
        op_timeout: Duration::from_secs(5),
        tls: tls(dir.path(), false),
    })
    .await;
    // The tasks went through this server, as that user.
    let streams = server.cli(&["--scan", "--pattern", "tls:*"]).expect("scan");
    assert!(!streams.trim().is_empty(), "no keys written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_over_tls_with_client_certificates_and_a_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_certs(dir.path());
    let cluster = RedisCluster::start_secure(&secure(dir.path(), true, false)).await;
    scenario(RedisConfig {
        urls: cluster
            .urls()
            .iter()
            .map(|u| with_credentials(u, None, DEFAULT_PASSWORD))
            .collect(),
        cluster: true,
        key_prefix: "tls".into(),
        op_timeout: Duration::from_secs(5),
        tls: tls(dir.path(), true),
    })
    .await;
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// The processes of a distributed deployment given a `rediss://` URL with a password (through
/// the environment, so it is not on their command lines): they serve; nothing they log, show
/// on the status page or on `/metrics` holds the password; a wrong CA or a wrong password
/// stops them at start with a message that says which, without the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_reach_a_tls_redis_and_never_show_its_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_certs(dir.path());
    let other = tempfile::tempdir().expect("tempdir");
    make_certs(other.path());
    let server = RedisServer::start_secure(&secure(dir.path(), false, true)).await;
    let url = with_credentials(&server.url(), Some(ACL_USER), ACL_PASSWORD);
    let ca = path(&dir.path().join("ca.pem"));
    // Generous bounds: TLS handshakes on a loaded test machine are slow, and a timeout would
    // read as "Redis not there yet", which does not stop a process.
    let env = [
        ("BATCHGATE_REDIS", url.as_str()),
        ("BATCHGATE_REDIS_TIMEOUT_MS", "10000"),
    ];

    let worker = Proc::sim_worker(4, 20);
    let batcher = logged(
        &[
            "batcher",
            "--listen",
            "127.0.0.1:0",
            "--redis-ca",
            &ca,
            "--worker-url",
            &worker.url,
        ],
        &env,
    );
    let gateway = logged(
        &[
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--insecure-no-auth",
            "--redis-ca",
            &ca,
        ],
        &env,
    );
    let http = client();
    let view: TaskView = http
        .post(format!("{}/v1/inference?wait_ms=20000", gateway.url))
        .json(&serde_json::json!({ "input": "through tls redis" }))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(view.status, TaskStatus::Success, "{view:?}");
    assert_eq!(
        view.output.as_deref(),
        Some(sim_output("through tls redis").as_str())
    );
    let mut shown = String::new();
    for page in ["/metrics", "/status.json", "/"] {
        shown += &http
            .get(format!("{}{page}", gateway.url))
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("text");
    }
    shown += &gateway.lines().join("\n");
    shown += &batcher.lines().join("\n");
    // The URL is logged (announced at start), with its password hidden.
    assert!(shown.contains(&format!("{ACL_USER}:***@")), "{shown}");
    assert!(!shown.contains(ACL_PASSWORD), "the password was shown");

    // Refused at start, with a message that says why and no password: a CA that did not sign
    // the server's certificate, a wrong password, a plain redis:// URL given TLS flags.
    let wrong_ca = path(&other.path().join("ca.pem"));
    let wrong_password = with_credentials(&server.url(), Some(ACL_USER), "not-the-password-77");
    let cases = [
        (
            &wrong_ca,
            url.as_str(),
            ["Redis refused this process", "certificate"],
        ),
        (
            &ca,
            wrong_password.as_str(),
            ["Redis refused this process", "authentication failed"],
        ),
        (&ca, "redis://127.0.0.1:1", ["rediss://", "TLS"]),
    ];
    for (ca, redis, expected) in cases {
        let (status, log) = run_to_exit(
            &[
                "gateway",
                "--listen",
                "127.0.0.1:0",
                "--insecure-no-auth",
                "--redis-ca",
                ca,
            ],
            &[
                ("BATCHGATE_REDIS", redis),
                ("BATCHGATE_REDIS_TIMEOUT_MS", "10000"),
            ],
        );
        assert!(!status.success(), "started with {ca} and {}", redact(redis));
        for needle in expected {
            assert!(log.contains(needle), "{needle:?} not in {log}");
        }
        for password in [ACL_PASSWORD, "not-the-password-77"] {
            assert!(!log.contains(password), "{log}");
        }
    }
}

fn logged(args: &[&str], env: &[(&str, &str)]) -> Logged {
    let mut command = Command::new(env!("CARGO_BIN_EXE_batchgate"));
    command
        .args(args)
        .envs(env.iter().copied())
        .env("BATCHGATE_SHUTDOWN_DELAY_MS", "0");
    Logged::spawn(command)
}
