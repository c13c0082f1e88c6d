//! Connecting: standalone (`ConnectionManager`, reconnects by itself) or cluster, behind one
//! type, and dedicated connections for blocking reads.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ConnectionAddr, Pipeline, RedisFuture, TlsCertificates, Value};

/// Default bound on one Redis command (blocking reads get their block time on top).
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_millis(1000);
/// Default namespace of keys.
pub const DEFAULT_KEY_PREFIX: &str = "batchgate";

/// Where Redis is and how to talk to it. `Debug` shows the URLs without their passwords.
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://host:port` URLs: one server, or the cluster's seed nodes.
    pub urls: Vec<String>,
    /// Talk the cluster protocol (slots, redirects).
    pub cluster: bool,
    /// Namespace of every key.
    pub key_prefix: String,
    /// Bound on one command.
    pub op_timeout: Duration,
    /// TLS settings for `rediss://` URLs.
    pub tls: RedisTls,
}

/// TLS to Redis, for `rediss://` URLs: the CA to trust (the system's roots without one) and a
/// client certificate for servers that require one. `Debug` shows only what is set.
#[derive(Clone, Default)]
pub struct RedisTls {
    /// PEM of the CA that signed the servers' certificates, trusted instead of the system's.
    pub ca: Option<Vec<u8>>,
    /// PEM of a client certificate and of its private key.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca", &self.ca.as_ref().map(|_| "<set>"))
            .field("client", &self.client.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl RedisTls {
    fn is_empty(&self) -> bool {
        self.ca.is_none() && self.client.is_none()
    }

    fn certificates(&self) -> TlsCertificates {
        TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.ca.clone(),
        }
    }
}

/// Whether a URL asks for TLS.
fn is_tls(url: &str) -> bool {
    url.get(..9)
        .is_some_and(|s| s.eq_ignore_ascii_case("rediss://"))
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field(
                "urls",
                &self.urls.iter().map(|u| redact(u)).collect::<Vec<_>>(),
            )
            .field("cluster", &self.cluster)
            .field("key_prefix", &self.key_prefix)
            .field("op_timeout", &self.op_timeout)
            .field("tls", &self.tls)
            .finish()
    }
}

/// A Redis URL fit for logs: `redis://user:secret@host` becomes `redis://user:***@host`, and
/// a password given as a query parameter (`unix:///run/redis.sock?user=u&pass=secret`, the
/// way a Unix socket's URL carries credentials) becomes `pass=***`.
pub fn redact(url: &str) -> String {
    let url = redact_userinfo(url);
    match url.split_once('?') {
        None => url,
        Some((base, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((name, _)) if name.eq_ignore_ascii_case("pass") => format!("{name}=***"),
                    _ => param.to_owned(),
                })
                .collect();
            format!("{base}?{}", params.join("&"))
        }
    }
}

fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = userinfo.split(':').next().unwrap_or_default();
    if userinfo.contains(':') {
        format!("{scheme}://{user}:***@{host}")
    } else {
        format!("{scheme}://***@{host}")
    }
}

/// Whether a URL names a Unix socket (`unix://`, `redis+unix://`, `valkey+unix://`).
fn is_unix(url: &str) -> bool {
    url.split_once("://").is_some_and(|(scheme, _)| {
        let scheme = scheme.to_ascii_lowercase();
        scheme == "unix" || scheme.ends_with("+unix")
    })
}

/// Why Redis settings cannot be used, found before anything connects.
#[derive(Debug, thiserror::Error)]
pub enum RedisConfigError {
    /// No URL at all.
    #[error("at least one --redis URL is needed")]
    NoUrl,
    /// A URL the client refuses.
    #[error("invalid --redis URL {url}: {error}")]
    Url {
        /// The URL, its password redacted.
        url: String,
        /// What the client said.
        error: redis::RedisError,
    },
    /// Some URLs with TLS, some without.
    #[error("give every --redis URL as rediss:// (TLS) or none")]
    MixedTls,
    /// TLS files for URLs without TLS.
    #[error("--redis-ca and --redis-client-cert apply to rediss:// URLs only (TLS)")]
    TlsFilesWithoutTls,
    /// Several URLs of a standalone Redis.
    #[error("several --redis URLs need --redis-cluster")]
    SeveralUrlsWithoutCluster,
    /// A cluster's seed given as a Unix socket.
    #[error(
        "a Redis Cluster is reached over TCP (its nodes announce host:port): give \
         --redis-cluster redis:// or rediss:// URLs, not unix://"
    )]
    UnixCluster,
    /// A prefix that would break the keys' hash tags.
    #[error("--key-prefix must be non-empty and contain no braces")]
    KeyPrefix,
}

/// Why this process may not use the deployment's Redis ([`check_layout`]).
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// The deployment recorded another partition count.
    #[error(
        "this deployment's Redis says --partitions {recorded}, but this process was given \
         {given}: every process of a deployment (same --key-prefix) must use the same count"
    )]
    Partitions {
        /// The count the deployment recorded.
        recorded: usize,
        /// The count this process was given.
        given: usize,
    },
    /// Redis refused this process's credentials ([`is_refusal`]).
    #[error(
        "Redis refused this process: {0} (check the user and password of the --redis URL, and \
         --redis-ca, --redis-client-cert and --redis-client-key for TLS)"
    )]
    Refused(redis::RedisError),
}

impl RedisConfig {
    /// Checks the URLs before anything connects.
    pub fn validate(&self) -> Result<(), RedisConfigError> {
        if self.urls.is_empty() {
            return Err(RedisConfigError::NoUrl);
        }
        for url in &self.urls {
            self.client(url).map_err(|error| RedisConfigError::Url {
                url: redact(url),
                error,
            })?;
        }
        let tls = self.urls.iter().filter(|u| is_tls(u)).count();
        if tls != 0 && tls != self.urls.len() {
            return Err(RedisConfigError::MixedTls);
        }
        if tls == 0 && !self.tls.is_empty() {
            return Err(RedisConfigError::TlsFilesWithoutTls);
        }
        if !self.cluster && self.urls.len() > 1 {
            return Err(RedisConfigError::SeveralUrlsWithoutCluster);
        }
        if self.cluster && self.urls.iter().any(|u| is_unix(u)) {
            return Err(RedisConfigError::UnixCluster);
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}']) {
            return Err(RedisConfigError::KeyPrefix);
        }
        Ok(())
    }

    /// A shared, multiplexed connection for ordinary commands. Standalone connects lazily and
    /// reconnects by itself, so a process can start while Redis is down.
    pub async fn connect(&self) -> redis::RedisResult<RedisConn> {
        if self.cluster {
            Ok(RedisConn::Cluster(
                self.cluster_client()?.get_async_connection().await?,
            ))
        } else {
            let client = self.client(&self.urls[0])?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.op_timeout))
                .set_response_timeout(Some(self.op_timeout))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_secs(1));
            Ok(RedisConn::Single(ConnectionManager::new_lazy_with_config(
                client, config,
            )?))
        }
    }

    /// A connection of its own for blocking commands (`XREADGROUP … BLOCK`), which would
    /// otherwise hold up every command multiplexed behind them. Its response timeout allows
    /// for `block`.
    pub async fn connect_blocking(&self, block: Duration) -> redis::RedisResult<RedisConn> {
        let timeout = self.op_timeout + block;
        if self.cluster {
            let client = self
                .cluster_builder()
                .connection_timeout(self.op_timeout)
                .response_timeout(timeout)
                .build()?;
            Ok(RedisConn::Cluster(client.get_async_connection().await?))
        } else {
            let client = self.client(&self.urls[0])?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.op_timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_secs(1));
            Ok(RedisConn::Single(
                ConnectionManager::new_with_config(client, config).await?,
            ))
        }
    }

    /// A client for pub/sub. In a cluster, classic PUBLISH reaches every node, so one seed
    /// node serves.
    pub fn pubsub_client(&self) -> redis::RedisResult<redis::Client> {
        self.client(&self.urls[0])
    }

    /// A client for one URL, with the TLS settings if it is a `rediss://` URL.
    pub fn client(&self, url: &str) -> redis::RedisResult<redis::Client> {
        if is_tls(url) {
            batchgate_net::install_crypto_provider();
            redis::Client::build_with_tls(url, self.tls.certificates())
        } else {
            redis::Client::open(url)
        }
    }

    /// How to reach another node (`host:port`, as a cluster reports its nodes) the way `like`
    /// is reached: the same TLS settings, credentials and protocol.
    pub fn node_info(
        &self,
        like: &redis::Client,
        host: String,
        port: u16,
    ) -> redis::RedisResult<redis::ConnectionInfo> {
        let info = like.get_connection_info().clone();
        let addr = match info.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host, port),
        };
        Ok(info.set_addr(addr))
    }

    fn cluster_builder(&self) -> redis::cluster::ClusterClientBuilder {
        let builder = ClusterClient::builder(self.urls.clone());
        if self.urls.iter().any(|u| is_tls(u)) {
            batchgate_net::install_crypto_provider();
            builder.certs(self.tls.certificates())
        } else {
            builder
        }
    }

    fn cluster_client(&self) -> redis::RedisResult<ClusterClient> {
        self.cluster_builder()
            .connection_timeout(self.op_timeout)
            .response_timeout(self.op_timeout)
            .retries(2)
            .build()
    }
}

/// A standalone or cluster connection; cloning is shallow (both multiplex).
#[derive(Clone)]
pub enum RedisConn {
    /// One server, reconnecting on failure.
    Single(ConnectionManager),
    /// A cluster, routing each command by its key's slot.
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

/// Makes sure every process of a deployment splits tasks over the same partitions: the first
/// records its count, the others compare (`Some`) or adopt it (`None`: the first process
/// records `default`). A mismatch would silently strand tasks in streams no batcher reads, so
/// it stops the process. If Redis cannot be reached yet, the check is skipped (with a
/// warning) so that a process can start before Redis; if Redis refuses the process's
/// password or certificates, that stops it too ([`is_refusal`]).
pub async fn check_layout(
    conn: &mut RedisConn,
    key: &str,
    partitions: Option<usize>,
    default: usize,
    limit: Duration,
) -> Result<usize, LayoutError> {
    let wanted = partitions.unwrap_or(default);
    let existing: redis::RedisResult<Option<usize>> = bounded(
        limit,
        redis::cmd("SET")
            .arg(key)
            .arg(wanted)
            .arg("NX")
            .arg("GET")
            .query_async(conn),
    )
    .await;
    match (existing, partitions) {
        (Ok(Some(n)), Some(given)) if n != given => {
            Err(LayoutError::Partitions { recorded: n, given })
        }
        (Ok(Some(n)), None) => Ok(n),
        (Ok(_), _) => Ok(wanted),
        (Err(error), _) if is_refusal(&error) => Err(LayoutError::Refused(error)),
        (Err(error), _) => {
            tracing::warn!(%error, partitions = wanted, "could not check the partition count in Redis; starting anyway");
            Ok(wanted)
        }
    }
}

/// Whether an error says Redis refuses this process as configured (a wrong password or user,
/// a user without the rights, a server certificate not trusted or a client certificate
/// refused), as opposed to Redis not being reachable yet. Retrying will not help.
pub fn is_refusal(error: &redis::RedisError) -> bool {
    if error.kind() == redis::ErrorKind::AuthenticationFailed {
        return true;
    }
    let text = error.to_string();
    [
        "WRONGPASS",
        "NOAUTH",
        "NOPERM",
        "certificate",
        "Certificate",
        "handshake",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

/// Runs `op` with a bound, turning a timeout into a Redis I/O error.
/// `first`, the outcome of a call that ran `script` (alone or in a pipeline), unless Redis
/// had lost the script (a restart, `SCRIPT FLUSH`): then the script is loaded and `call` run
/// again, alone. Each step is bounded by `limit`.
pub(crate) async fn unless_script_lost<T: redis::FromRedisValue>(
    first: redis::RedisResult<T>,
    conn: &mut RedisConn,
    script: &redis::Script,
    call: &redis::Cmd,
    limit: Duration,
) -> redis::RedisResult<T> {
    match first {
        Err(error)
            if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
        {
            bounded(limit, script.prepare_invoke().load_async(conn)).await?;
            bounded(limit, call.query_async(conn)).await
        }
        other => other,
    }
}

pub(crate) async fn bounded<T>(
    limit: Duration,
    op: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    match tokio::time::timeout(limit, op).await {
        Ok(result) => result,
        Err(_) => Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "redis command timed out",
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact("redis://u:s3cret@h:6379/0"),
            "redis://u:***@h:6379/0"
        );
        assert_eq!(redact("redis://:s3cret@h:6379"), "redis://:***@h:6379");
        assert_eq!(redact("redis://token@h"), "redis://***@h");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
        // A Unix socket's URL carries its credentials as query parameters.
        assert_eq!(
            redact("unix:///run/redis.sock?user=app&pass=s3cret&db=2"),
            "unix:///run/redis.sock?user=app&pass=***&db=2"
        );
        assert_eq!(
            redact("redis+unix:///run/redis.sock?PASS=s3cret"),
            "redis+unix:///run/redis.sock?PASS=***"
        );
        assert_eq!(redact("unix:///run/redis.sock"), "unix:///run/redis.sock");
    }

    fn config(urls: &[&str], cluster: bool) -> RedisConfig {
        RedisConfig {
            urls: urls.iter().map(|u| (*u).to_owned()).collect(),
            cluster,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            op_timeout: DEFAULT_OP_TIMEOUT,
            tls: RedisTls::default(),
        }
    }

    #[test]
    fn a_unix_socket_serves_a_standalone_redis_only() {
        for url in [
            "unix:///run/redis.sock",
            "redis+unix:///run/redis.sock?db=1",
        ] {
            assert!(config(&[url], false).validate().is_ok(), "{url}");
            assert!(
                matches!(
                    config(&[url], true).validate(),
                    Err(RedisConfigError::UnixCluster)
                ),
                "{url}"
            );
        }
        assert!(config(&["redis://127.0.0.1:7000"], true).validate().is_ok());
        // The error names the flag and what to give instead.
        let why = RedisConfigError::UnixCluster.to_string();
        assert!(
            why.contains("--redis-cluster") && why.contains("unix://"),
            "{why}"
        );
    }
}
