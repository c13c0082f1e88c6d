//! Test harness: real `redis-server` processes (standalone or a 6-node cluster) on free
//! loopback ports, torn down when dropped. Used by tests only.
//!
//! Servers keep nothing on disk (`--save ""`, `--appendonly no`) and run in a temporary
//! directory each. They are stopped by their own PID. Starting one is `async`: its readiness
//! is awaited (PING through `redis-cli`, run as a child process) without blocking the
//! runtime of the test that waits.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a server may take to answer PING, or a cluster to reach `cluster_state:ok`.
const START_LIMIT: Duration = Duration::from_secs(60);
/// Attempts at starting one server (another process may take its port in between).
const START_ATTEMPTS: usize = 5;

/// A free TCP port on 127.0.0.1 (bound, then released for the server to take), never the
/// same twice in one test process, so parallel tests cannot be handed one port.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("no free loopback port");
        if HANDED_OUT
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(port)
        {
            return port;
        }
    }
}

fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "batchgate-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// One `redis-server` process.
pub struct RedisServer {
    /// The process, killed on drop.
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its working directory, removed on drop.
    dir: PathBuf,
    /// Extra arguments, kept to restart it the same way.
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a standalone server and waits until it answers PING.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    async fn start_with(extra: &[&str]) -> Self {
        let port = free_port();
        let dir = scratch_dir("redis");
        let mut server = RedisServer {
            child: None,
            port,
            dir,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        for _ in 0..START_ATTEMPTS {
            if self.try_spawn().await {
                return;
            }
            // The port was taken before the server bound it: try another.
            self.port = free_port();
        }
        panic!("redis-server did not start after {START_ATTEMPTS} attempts");
    }

    /// Starts the server; true once it answers PING, false if it exited first.
    async fn try_spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if redis_cli_async(self.port, &["PING"])
                .await
                .is_some_and(|r| r.trim() == "PONG")
            {
                return true;
            }
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited {
                self.child = None;
                return false;
            }
            assert!(
                start.elapsed() < START_LIMIT,
                "redis-server did not answer PING"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli` against this server; its output, or `None` if it failed.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        redis_cli(self.port, args)
    }

    /// Kills the server (SIGKILL, by PID).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty (nothing was persisted).
    pub async fn restart(&mut self) {
        self.kill();
        for _ in 0..START_ATTEMPTS {
            if self.try_spawn().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("redis-server did not restart on port {}", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn redis_cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// [`RedisServer::cli`] without blocking the caller's runtime.
async fn redis_cli_async(port: u16, args: &[&str]) -> Option<String> {
    let out = tokio::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A 6-node Redis Cluster: 3 masters, 3 replicas.
pub struct RedisCluster {
    /// The nodes, masters first.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts 6 cluster-enabled servers, joins them with `redis-cli --cluster create`, and
    /// waits for `cluster_state:ok` on every node.
    pub async fn start() -> Self {
        let mut nodes: Vec<RedisServer> = Vec::with_capacity(6);
        for _ in 0..6 {
            nodes.push(
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "5000",
                ])
                .await,
            );
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = tokio::process::Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .expect("run redis-cli --cluster create");
        assert!(out.success(), "redis-cli --cluster create failed");
        let start = Instant::now();
        for node in &nodes {
            while !redis_cli_async(node.port, &["CLUSTER", "INFO"])
                .await
                .is_some_and(|i| i.contains("cluster_state:ok"))
            {
                assert!(
                    start.elapsed() < START_LIMIT,
                    "redis did not become ready (cluster_state:ok)"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        RedisCluster { nodes }
    }

    /// The seed URLs of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}
