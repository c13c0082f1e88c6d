//! Shared test harness: real servers on 127.0.0.1 port 0, torn down by their tokens.

#![allow(dead_code, unreachable_pub)]

pub mod logged;
pub mod raw;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use batchgate::backend::{RedisBackend, StoreConfig};
use batchgate::serve::{BatcherPart, ServeConfig, ServeOutcome, WorkerChoice};
use batchgate_batcher::BatcherConfig;
use batchgate_gateway::GatewayConfig;
use batchgate_policy::Limits;
use batchgate_protocol::api::TaskView;
use batchgate_redis::RedisConfig;
use batchgate_sim::{SimConfig, SimWorker};
use batchgate_testkit::{RedisCluster, RedisServer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A simulated worker served over HTTP, so its counters see exactly what the batcher sent.
pub struct Worker {
    pub url: String,
    pub sim: Arc<SimWorker>,
    pub stop: CancellationToken,
}

pub async fn start_worker(config: SimConfig) -> Worker {
    start_faulty_worker(config, batchgate_sim::Faults::default()).await
}

/// A simulated worker that fails on purpose as `faults` says.
pub async fn start_faulty_worker(config: SimConfig, faults: batchgate_sim::Faults) -> Worker {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind worker");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let sim = Arc::new(SimWorker::new(config).with_faults(faults));
    let stop = CancellationToken::new();
    let server = batchgate_worker_server::run(sim.clone(), listener, None, stop.clone());
    tokio::spawn(async move {
        server.await.expect("worker server failed");
    });
    Worker { url, sim, stop }
}

/// A fast cost model for tests: short calls, still batch-shaped.
pub fn fast_sim(slots: usize) -> SimConfig {
    SimConfig {
        slots,
        base: Duration::from_millis(20),
        per_item: Duration::from_micros(100),
        max_batch_size: 64,
    }
}

/// Which backends a scenario runs on; every scenario runs on all three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// In-process queue and stores (the embedded default).
    Memory,
    /// One `redis-server`, started for the test.
    Redis,
    /// A 6-node Redis Cluster (3 masters, 3 replicas), started for the test.
    Cluster,
}

/// Redis processes a test runs on; dropped (killed) at the end of the test.
pub enum Infra {
    None,
    Redis(RedisServer),
    Cluster(RedisCluster),
}

impl Infra {
    pub async fn start(backend: Backend) -> Infra {
        match backend {
            Backend::Memory => Infra::None,
            Backend::Redis => Infra::Redis(RedisServer::start().await),
            Backend::Cluster => Infra::Cluster(RedisCluster::start().await),
        }
    }

    /// The Redis settings of this infrastructure, with short recovery times for tests. The
    /// command timeout is generous: scenarios check behaviour, and a 2,000-request burst
    /// against six redis-servers on a loaded 2-core machine must not turn into 503s.
    pub fn redis(&self) -> Option<RedisBackend> {
        let (urls, cluster) = match self {
            Infra::None => return None,
            Infra::Redis(r) => (vec![r.url()], false),
            Infra::Cluster(c) => (c.urls(), true),
        };
        Some(RedisBackend {
            redis: RedisConfig {
                urls,
                cluster,
                key_prefix: "test".into(),
                op_timeout: Duration::from_secs(5),
                tls: Default::default(),
            },
            visibility_timeout: Duration::from_millis(1500),
            max_deliveries: 5,
        })
    }
}

pub fn store_config(infra: &Infra) -> StoreConfig {
    StoreConfig {
        // Each backend's own default (on Redis: 1 partition standalone, 16 on a cluster).
        partitions: None,
        queue_capacity: 50_000,
        max_results: 1_000_000,
        result_ttl: Duration::from_secs(600),
        dedupe_ttl: Some(Duration::from_secs(300)),
        redis: infra.redis(),
        zone: None,
    }
}

/// The admin token of the test deployments.
pub const ADMIN_TOKEN: &str = "test-admin-token";

pub fn serve_config(infra: &Infra, worker_url: &str, max_inflight_batches: usize) -> ServeConfig {
    ServeConfig {
        store: store_config(infra),
        gateway: Some(GatewayConfig::default()),
        connections: batchgate_net::ConnectionLimits::default(),
        // Shedding off: these scenarios check behaviour under bursts they make on purpose;
        // shedding has its own tests (`failures.rs`).
        edge: batchgate::serve::EdgeConfig {
            admin_token: Some(ADMIN_TOKEN.into()),
            shed: batchgate_gateway::ShedBound::Off,
            ..Default::default()
        },
        batcher: Some(BatcherPart {
            config: BatcherConfig {
                limits: Limits::default(),
                max_inflight_batches,
                ..BatcherConfig::default()
            },
            worker: WorkerChoice::remote(&[worker_url], Duration::from_secs(10))
                .expect("a valid worker URL"),
        }),
        grace_period: Duration::from_secs(30),
        shutdown_delay: Duration::ZERO,
        queue_error_tolerance: batchgate_gateway::readiness::DEFAULT_QUEUE_ERROR_TOLERANCE,
        tls: None,
        models: Vec::new(),
    }
}

/// `batchgate serve` in this process.
pub struct Serve {
    pub url: String,
    pub stop: CancellationToken,
    pub task: JoinHandle<anyhow::Result<ServeOutcome>>,
}

pub async fn start_serve(config: ServeConfig) -> Serve {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind gateway");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    let task = tokio::spawn(batchgate::serve::run(config, listener, stop.clone()));
    Serve { url, stop, task }
}

impl Serve {
    /// Stops the server and re-raises its failure, if any, in the test.
    pub async fn shutdown(self) -> ServeOutcome {
        self.stop.cancel();
        self.task
            .await
            .expect("serve task panicked")
            .expect("serve failed")
    }
}

/// `POST /v1/inference?wait_ms=30000` with `input`; the answer's task view.
/// Long-polls `task_id` on `base` (up to 30 s) in a task of its own; yields `input` with the
/// result, for load tests that check every accepted task's output at the end.
pub fn spawn_long_poll(
    http: &reqwest::Client,
    base: &str,
    task_id: &str,
    input: String,
) -> JoinHandle<(String, TaskView)> {
    let url = format!("{base}/v1/result/{task_id}?wait_ms=30000");
    let http = http.clone();
    tokio::spawn(async move {
        let result: TaskView = http
            .get(url)
            .send()
            .await
            .expect("long poll sent")
            .json()
            .await
            .expect("long poll answered");
        (input, result)
    })
}

/// `batchgate certs --out DIR`: a throwaway CA, a server and a client certificate.
pub fn make_certs(dir: &std::path::Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_batchgate"))
        .args(["certs", "--out"])
        .arg(dir)
        .stdout(Stdio::null())
        .status()
        .expect("run batchgate certs");
    assert!(status.success(), "batchgate certs failed");
}

/// Runs `batchgate ARGS` (with `env`, logging at debug) until it exits, within 60 s; its
/// status and its log.
pub fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_batchgate"))
        .args(args)
        .env("RUST_LOG", "debug")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn batchgate");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let status = wait_exit(&mut child, Duration::from_secs(60));
    (status, reader.join().expect("stderr reader"))
}

/// Asserts that the task of `input` ended SUCCESS with the simulated worker's output for it.
pub fn assert_simulated_success(input: &str, view: &TaskView) {
    assert_eq!(
        view.status,
        batchgate_protocol::api::TaskStatus::Success,
        "{input}: {:?}",
        view.error
    );
    assert_eq!(
        view.output,
        Some(batchgate_protocol::sim_output(input)),
        "{input}"
    );
}

pub async fn infer(http: &reqwest::Client, base: &str, input: &str) -> TaskView {
    http.post(format!("{base}/v1/inference?wait_ms=30000"))
        .json(&serde_json::json!({ "input": input }))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("a task view")
}

/// A server's `/metrics` page.
pub async fn metrics(http: &reqwest::Client, base: &str) -> String {
    http.get(format!("{base}/metrics"))
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text")
}

/// A simulated worker's counters (`GET /v1/stats`).
pub async fn sim_stats(http: &reqwest::Client, url: &str) -> batchgate_sim::SimStats {
    http.get(format!("{url}/v1/stats"))
        .send()
        .await
        .expect("stats answered")
        .json()
        .await
        .expect("stats json")
}

/// A loopback URL where nothing listens (bound, then released): every call to it fails.
pub fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("http://{}", listener.local_addr().expect("addr"))
}

pub fn client() -> reqwest::Client {
    batchgate_net::install_crypto_provider();
    reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// Declares one `#[tokio::test]` per backend for an `async fn scenario(backend: Backend)`.
#[macro_export]
macro_rules! on_every_backend {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                super::$scenario($crate::common::Backend::Memory).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                super::$scenario($crate::common::Backend::Redis).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis_cluster() {
                super::$scenario($crate::common::Backend::Cluster).await;
            }
        }
    };
}

/// Starts the `batchgate` binary with `args` and returns it with the base URL it logs when
/// listening (every server subcommand logs `listening on http://ADDR`, or `https://`).
pub fn spawn_batchgate(args: &[&str]) -> (Child, String) {
    spawn_batchgate_with_env(args, &[])
}

/// [`spawn_batchgate`] with extra environment variables.
pub fn spawn_batchgate_with_env(args: &[&str], env: &[(&str, &str)]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_batchgate"))
        .args(args)
        .env("RUST_LOG", "info")
        // No shutdown delay unless a test asks for one: SIGTERM goes straight to the drain.
        .env("BATCHGATE_SHUTDOWN_DELAY_MS", "0")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn batchgate");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        // Keep reading to the end so the child never blocks on a full pipe.
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if std::env::var_os("BATCHGATE_TEST_LOGS").is_some() {
                eprintln!("{line}");
            }
            if !sent {
                let url = line
                    .split("listening on ")
                    .nth(1)
                    .filter(|rest| rest.starts_with("http://") || rest.starts_with("https://"))
                    .map(|rest| rest.chars().take_while(|c| !c.is_whitespace()).collect());
                if let Some(url) = url {
                    let _ = tx.send(url);
                    sent = true;
                }
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("batchgate did not report its address");
    (child, url)
}

/// Sends `SIG<name>` to a child we started, by its PID.
pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Waits for a child to exit, killing it and failing the test past `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("batchgate did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed (SIGKILL) when dropped, so a failing test leaves nothing behind.
pub struct Proc {
    pub child: Child,
    pub url: String,
}

impl Proc {
    pub fn start(args: &[&str]) -> Proc {
        let (child, url) = spawn_batchgate(args);
        Proc { child, url }
    }

    /// `batchgate worker --sim` with `slots` simulated GPUs and `base_ms` per batch.
    pub fn sim_worker(slots: u32, base_ms: u32) -> Proc {
        let (slots, base_ms) = (slots.to_string(), base_ms.to_string());
        Proc::start(&[
            "worker",
            "--sim",
            "--listen",
            "127.0.0.1:0",
            "--slots",
            &slots,
            "--base-ms",
            &base_ms,
        ])
    }

    /// [`Proc::start`] with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let (child, url) = spawn_batchgate_with_env(args, env);
        Proc { child, url }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
