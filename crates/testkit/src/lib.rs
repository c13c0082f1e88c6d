//! Test harness: real `redis-server` processes (standalone or a 6-node cluster) on free
//! loopback ports, torn down when dropped. Used by tests only. [`Secure`] starts them with TLS
//! only (no plain port) and, if asked, a password and an ACL user, as a managed Redis is.
//!
//! Servers keep nothing on disk (`--save ""`, `--appendonly no`) and run in a temporary
//! directory each. They are stopped by their own PID. Starting one is `async`: its readiness
//! is awaited (PING through `redis-cli`, run as a child process) without blocking the
//! runtime of the test that waits.
//!
//! Also [`MemoryLog`], a log writer that keeps what it is given, for tests of log output.

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

/// TLS and credentials for a test Redis, as a managed Redis requires them. The certificate
/// files are made by the test (e.g. `batchgate certs`).
#[derive(Debug, Clone)]
pub struct Secure {
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// The server's certificate and key.
    pub cert: PathBuf,
    /// The server's key.
    pub key: PathBuf,
    /// A client certificate and key: what `redis-cli` and cluster nodes present to each other.
    pub client_cert: PathBuf,
    /// The client certificate's key.
    pub client_key: PathBuf,
    /// Whether clients must present a certificate signed by `ca` (`--tls-auth-clients yes`);
    /// otherwise one is optional.
    pub require_client_cert: bool,
    /// The password of the default user (`--requirepass`), if any.
    pub password: Option<String>,
    /// An ACL user with every right and its password, if any.
    pub user: Option<(String, String)>,
}

impl Secure {
    /// The server's arguments: TLS only (`--port 0`), for clients, replication and the
    /// cluster bus, and the credentials.
    fn server_args(&self, port: u16) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-replication".into(),
            "yes".into(),
            "--tls-cluster".into(),
            "yes".into(),
            "--tls-auth-clients".into(),
            if self.require_client_cert {
                "yes"
            } else {
                "optional"
            }
            .into(),
        ];
        for (flag, path) in [
            ("--tls-ca-cert-file", &self.ca),
            ("--tls-cert-file", &self.cert),
            ("--tls-key-file", &self.key),
            ("--tls-client-cert-file", &self.client_cert),
            ("--tls-client-key-file", &self.client_key),
        ] {
            args.push(flag.into());
            args.push(path.display().to_string());
        }
        if let Some(password) = &self.password {
            for flag in ["--requirepass", "--masterauth"] {
                args.push(flag.into());
                args.push(password.clone());
            }
        }
        if let Some((user, password)) = &self.user {
            // One config line; redis-server joins the words that follow a `--name`.
            args.push("--user".into());
            args.extend([
                user.clone(),
                "on".into(),
                format!(">{password}"),
                "~*".into(),
                "&*".into(),
                "+@all".into(),
            ]);
        }
        args
    }

    /// `redis-cli`'s arguments to reach such a server.
    fn cli_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec!["--tls".into(), "--cacert".into()];
        args.push(self.ca.display().to_string());
        args.extend(["--cert".into(), self.client_cert.display().to_string()]);
        args.extend(["--key".into(), self.client_key.display().to_string()]);
        if let Some(password) = &self.password {
            args.extend(["-a".into(), password.clone(), "--no-auth-warning".into()]);
        }
        args
    }
}

/// `url` with `user:password@` (or `:password@` without a user) before its host.
pub fn with_credentials(url: &str, user: Option<&str>, password: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}:{password}@{rest}", user.unwrap_or("")),
        None => url.to_owned(),
    }
}

/// The name of a server's Unix socket in its directory ([`RedisServer::start_unix`]).
const UNIX_SOCKET: &str = "redis.sock";

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
    /// TLS and credentials, if any (boxed: most servers have none).
    secure: Option<Box<Secure>>,
}

impl RedisServer {
    /// Starts a standalone server and waits until it answers PING.
    pub async fn start() -> Self {
        Self::start_with(&[], None).await
    }

    /// Starts a standalone server reached over TLS only, with the given credentials.
    pub async fn start_secure(secure: &Secure) -> Self {
        Self::start_with(&[], Some(Box::new(secure.clone()))).await
    }

    /// Starts a standalone server that also listens on a Unix socket in its directory (see
    /// [`RedisServer::unix_url`]); its TCP port stays open for `redis-cli`.
    pub async fn start_unix() -> Self {
        let dir = scratch_dir("redis");
        let socket = dir.join(UNIX_SOCKET).to_string_lossy().into_owned();
        let extra = ["--unixsocket", socket.as_str(), "--unixsocketperm", "700"];
        Self::start_in(dir, &extra, None).await
    }

    async fn start_with(extra: &[&str], secure: Option<Box<Secure>>) -> Self {
        Self::start_in(scratch_dir("redis"), extra, secure).await
    }

    async fn start_in(dir: PathBuf, extra: &[&str], secure: Option<Box<Secure>>) -> Self {
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            secure,
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
        let ports = match &self.secure {
            Some(secure) => secure.server_args(self.port),
            None => vec!["--port".into(), self.port.to_string()],
        };
        let child = Command::new("redis-server")
            .args(&ports)
            .args(["--bind", "127.0.0.1"])
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
            if self
                .cli_async(&["PING"])
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

    /// `redis://127.0.0.1:PORT`, or `rediss://…` with TLS (without credentials: see
    /// [`with_credentials`]).
    pub fn url(&self) -> String {
        let scheme = if self.secure.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `unix:///…/redis.sock` for a server started by [`RedisServer::start_unix`], else `None`.
    pub fn unix_url(&self) -> Option<String> {
        let socket = self.dir.join(UNIX_SOCKET);
        socket
            .exists()
            .then(|| format!("unix://{}", socket.display()))
    }

    /// `redis-cli`'s arguments for this server (over TLS, authenticated, if it needs that)
    /// followed by `args`.
    fn cli_args(&self, args: &[&str]) -> Vec<String> {
        let mut all = self
            .secure
            .as_ref()
            .map(|s| s.cli_args())
            .unwrap_or_default();
        all.extend(args.iter().map(|a| (*a).to_owned()));
        all
    }

    /// Runs `redis-cli` against this server (over TLS, authenticated, if it needs that); its
    /// output, or `None` if it failed.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        redis_cli(self.port, &self.cli_args(args))
    }

    /// [`RedisServer::cli`] without blocking the caller's runtime.
    async fn cli_async(&self, args: &[&str]) -> Option<String> {
        redis_cli_async(self.port, &self.cli_args(args)).await
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

fn redis_cli(port: u16, args: &[String]) -> Option<String> {
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

/// `redis-cli` without blocking the caller's runtime.
async fn redis_cli_async(port: u16, args: &[String]) -> Option<String> {
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
        Self::start_with(None).await
    }

    /// The same, every node reached over TLS only (clients, replication and the cluster bus),
    /// with the given credentials.
    pub async fn start_secure(secure: &Secure) -> Self {
        Self::start_with(Some(secure)).await
    }

    async fn start_with(secure: Option<&Secure>) -> Self {
        let mut nodes: Vec<RedisServer> = Vec::with_capacity(6);
        for _ in 0..6 {
            nodes.push(
                RedisServer::start_with(
                    &["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"],
                    secure.map(|s| Box::new(s.clone())),
                )
                .await,
            );
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = tokio::process::Command::new("redis-cli")
            .args(secure.map(Secure::cli_args).unwrap_or_default())
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
            while !node
                .cli_async(&["CLUSTER", "INFO"])
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

/// A log written to memory: hand clones of it to a `tracing_subscriber` as its writer, then
/// read what they wrote with [`MemoryLog::text`].
#[derive(Clone, Debug, Default)]
pub struct MemoryLog(std::sync::Arc<Mutex<Vec<u8>>>);

impl MemoryLog {
    /// Everything written so far, as text.
    pub fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        String::from_utf8(bytes).expect("a log of UTF-8 text")
    }
}

impl std::io::Write for MemoryLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
