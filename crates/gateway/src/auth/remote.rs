//! Fetching a JWKS from an identity provider: over HTTPS, bounded in time and size, one
//! fetch at a time, and — when caused by a token naming an unknown `kid` — at most once per
//! [`RemoteJwks::min_interval`]. A failed fetch keeps the last good key set.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::error::FetchError;
use super::keys::jwks_keys;
use super::{Key, RemoteJwks};

/// Bound on one fetch (connecting, sending, reading the whole answer).
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS or discovery document read; a provider's is a few kilobytes.
pub(super) const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// Failed scheduled fetches are logged at most this often.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

/// Fetches one provider's JWKS. Shared by every request of a gateway.
pub(crate) struct Fetcher {
    source: RemoteJwks,
    http: reqwest::Client,
    /// When the last fetch started, whatever its outcome.
    last_attempt: Mutex<Option<Instant>>,
    /// When a failure was last logged.
    last_failure_log: Mutex<Option<Instant>>,
    /// Held during a fetch: concurrent callers wait for it rather than fetch again.
    busy: tokio::sync::Mutex<()>,
    /// Fetches made, for tests and logs.
    fetches: std::sync::atomic::AtomicU64,
}

impl Fetcher {
    pub(crate) fn new(source: RemoteJwks) -> Result<Self, FetchError> {
        if !source.url.starts_with("https://") {
            return Err(FetchError::NotHttps { url: source.url });
        }
        batchgate_net::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .https_only(true)
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3));
        if let Some(ca) = &source.ca {
            let pem = std::fs::read(ca).map_err(|error| FetchError::ReadCa {
                path: ca.clone(),
                error,
            })?;
            let certificates =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|error| FetchError::BadCa {
                    path: ca.clone(),
                    error,
                })?;
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder.build().map_err(FetchError::Client)?;
        Ok(Fetcher {
            source,
            http,
            last_attempt: Mutex::new(None),
            last_failure_log: Mutex::new(None),
            busy: tokio::sync::Mutex::new(()),
            fetches: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The configured URL (of the key set, or of the issuer).
    pub(crate) fn url(&self) -> &str {
        &self.source.url
    }

    pub(crate) fn refresh_every(&self) -> Duration {
        self.source.refresh.max(Duration::from_secs(1))
    }

    /// Fetches the key set now.
    pub(crate) async fn fetch(&self) -> Result<Vec<Key>, FetchError> {
        let _one = self.busy.lock().await;
        self.fetch_now().await
    }

    /// [`Fetcher::fetch`] for the schedule: a failure is logged (at most once a minute) and
    /// gives `None`, so the caller keeps its keys.
    pub(crate) async fn fetch_logged(&self) -> Option<Vec<Key>> {
        match self.fetch().await {
            Ok(keys) => {
                tracing::debug!(keys = keys.len(), url = %self.source.url, "JWKS fetched");
                Some(keys)
            }
            Err(error) => {
                self.log_failure(&error);
                None
            }
        }
    }

    /// A fetch for a token naming an unknown `kid`, unless `known()` turns true while waiting
    /// for a fetch under way, or the last fetch started less than `min_interval` ago. `None`:
    /// nothing fetched (or the fetch failed): the keys stay as they are.
    pub(crate) async fn fetch_for_unknown_kid(&self, known: impl Fn() -> bool) -> Option<Vec<Key>> {
        let _one = self.busy.lock().await;
        if known() {
            return None;
        }
        let recent = self
            .last_attempt
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| at.elapsed() < self.source.min_interval);
        if recent {
            return None;
        }
        match self.fetch_now().await {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), url = %self.source.url, "JWKS fetched for a token with an unknown kid");
                Some(keys)
            }
            Err(error) => {
                self.log_failure(&error);
                None
            }
        }
    }

    /// How many fetches were started.
    pub(crate) fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn log_failure(&self, error: &FetchError) {
        let mut last = self
            .last_failure_log
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|at| at.elapsed() >= FAILURE_LOG_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(%error, "cannot fetch the JWKS; keeping the last good keys");
        }
    }

    /// One fetch, the caller holding `busy`.
    async fn fetch_now(&self) -> Result<Vec<Key>, FetchError> {
        *self.last_attempt.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let url = if self.source.discover {
            let issuer = self.source.url.trim_end_matches('/');
            let discovery = format!("{issuer}/.well-known/openid-configuration");
            let document: serde_json::Value = serde_json::from_slice(&self.get(&discovery).await?)
                .map_err(|error| FetchError::DiscoveryNotJson {
                    url: discovery.clone(),
                    error,
                })?;
            let Some(jwks_uri) = document.get("jwks_uri").and_then(serde_json::Value::as_str)
            else {
                return Err(FetchError::NoJwksUri { url: discovery });
            };
            if !jwks_uri.starts_with("https://") {
                return Err(FetchError::JwksUriNotHttps { url: discovery });
            }
            jwks_uri.to_owned()
        } else {
            self.source.url.clone()
        };
        let body = self.get(&url).await?;
        let Ok(text) = std::str::from_utf8(&body) else {
            return Err(FetchError::NotUtf8 { url });
        };
        Ok(jwks_keys(text, &url)?)
    }

    /// GET `url`, the whole body within the timeout and the size bound.
    async fn get(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        let read = async {
            let mut response = self
                .http
                .get(url)
                .header("accept", "application/json")
                .send()
                .await
                .map_err(|error| FetchError::Request {
                    url: url.to_owned(),
                    error,
                })?;
            if !response.status().is_success() {
                return Err(FetchError::Status {
                    url: url.to_owned(),
                    status: response.status(),
                });
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|error| FetchError::Body {
                url: url.to_owned(),
                error,
            })? {
                if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                    return Err(FetchError::TooLarge {
                        url: url.to_owned(),
                    });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        };
        tokio::time::timeout(FETCH_TIMEOUT, read)
            .await
            .map_err(|_| FetchError::Timeout {
                url: url.to_owned(),
            })?
    }
}
