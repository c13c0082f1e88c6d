//! [`ServerTls`]: the TLS side of a server, from PEM files, reloaded while it runs.
//!
//! A reload builds a whole new configuration and swaps it in only if it is valid: a
//! half-written certificate file leaves the server on the old one (and logs why). New
//! connections use the new configuration; connections already open keep theirs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::{pem, provider, TlsError};

/// How often the files are checked for a change (modification time and size).
pub const RELOAD_POLL: Duration = Duration::from_secs(2);

/// Where a server's TLS material lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// The certificate's private key (PEM).
    pub key: PathBuf,
    /// With a CA file, every client must present a certificate signed by it (mTLS).
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    fn paths(&self) -> impl Iterator<Item = &Path> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
    }
}

/// What the files looked like at the last (re)load: a change of any means "reload".
type Stamp = Vec<Option<(SystemTime, u64)>>;

fn stamp(files: &TlsFiles) -> Stamp {
    files
        .paths()
        .map(|p| {
            let meta = std::fs::metadata(p).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
}

/// A server's TLS configuration; cloning shares it.
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<Inner>,
}

struct Inner {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
    loaded: Mutex<Stamp>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.inner.files)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the files; any error here should stop the process from starting.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let loaded = stamp(&files);
        let config = server_config(&files)?;
        Ok(ServerTls {
            inner: Arc::new(Inner {
                files,
                current: RwLock::new(Arc::new(config)),
                loaded: Mutex::new(loaded),
            }),
        })
    }

    /// The files this configuration comes from.
    pub fn files(&self) -> &TlsFiles {
        &self.inner.files
    }

    /// Reads the files again and, if they make a valid configuration, uses it for every new
    /// connection. On error the configuration in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = stamp(&self.inner.files);
        let config = server_config(&self.inner.files)?;
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(config);
        *self
            .inner
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = loaded;
        Ok(())
    }

    /// An acceptor with the configuration in use now.
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = self
            .inner
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        TlsAcceptor::from(config)
    }

    fn changed_on_disk(&self) -> bool {
        let now = stamp(&self.inner.files);
        *self
            .inner
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            != now
    }

    fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(()) => {
                tracing::info!(cert = %self.inner.files.cert.display(), why, "TLS configuration reloaded")
            }
            Err(error) => {
                tracing::error!(%error, why, "TLS reload failed; keeping the configuration in use")
            }
        }
    }

    /// Reloads on SIGHUP and whenever the files change (checked every [`RELOAD_POLL`]),
    /// until `stop`. Installing the SIGHUP handler replaces SIGHUP's default action
    /// (terminate) for the whole process.
    pub fn spawn_reloader(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut hangup = match tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::hangup(),
            ) {
                Ok(signal) => Some(signal),
                Err(error) => {
                    tracing::warn!(%error, "no SIGHUP handler: TLS reloads on file change only");
                    None
                }
            };
            let mut poll = tokio::time::interval(RELOAD_POLL);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                        tls.reload_logged("SIGHUP");
                    }
                    _ = poll.tick() => {
                        if tls.changed_on_disk() {
                            tls.reload_logged("files changed");
                        }
                    }
                }
            }
        })
    }
}

fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let certs = pem::certificates(&files.cert)?;
    let key = pem::private_key(&files.key)?;
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let roots = pem::roots(ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::ClientCa {
                    path: ca.clone(),
                    message: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
