//! A `--worker-url`, parsed and checked at start-up: which protocol, where, and the limits of
//! that one worker. The scheme names the protocol:
//!
//! | URL | protocol |
//! |---|---|
//! | `http://host:port[/prefix]` | batchgate's JSON batch API (`POST {url}/v1/batch`) |
//! | `grpc://host:port` | `batchgate.worker.v1.Worker/Infer` over gRPC (h2c) |
//! | `grpcs://host:port` | the same over TLS (`--worker-ca`, client certificate for mTLS) |
//! | `kserve-v2+http://host:port/v2/models/NAME[/versions/V]` | KServe V2 / Open Inference Protocol |
//! | `openai+http://host:port/v1` | OpenAI-style `POST {url}/embeddings` |
//!
//! Query parameters set the worker's limits — `max_batch_size` (larger batches are split
//! into several calls), `max_inflight_batches` (calls under way at once), `timeout_ms` —, the
//! worker's `zone` (batchers prefer workers of their own `--zone`), protocol options: `input`
//! and `output` (V2 tensor names), `model` (OpenAI), and where the worker's bearer token or
//! API key is: `token_file=PATH` or `token_env=NAME` (never the secret itself in the URL).
//! Anything else is refused, so a typo fails at start-up rather than being ignored.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use batchgate_protocol::kserve_v2::{DEFAULT_INPUT_NAME, DEFAULT_OUTPUT_NAME};
use batchgate_protocol::zone::Zone;
use reqwest::Url;

use crate::openai::DEFAULT_MODEL;

/// The schemes understood, as shown in error messages.
pub const SCHEMES: &str =
    "http://, https://, grpc://, grpcs://, kserve-v2+http(s)://, openai+http(s)://";

/// Why a worker URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// No `scheme://` at the start.
    #[error("worker URL {url:?} has no scheme: use one of {SCHEMES}")]
    NoScheme {
        /// The URL given.
        url: String,
    },
    /// A scheme batchgate has no adapter for.
    #[error("worker URL {url:?}: unknown scheme {scheme:?}; use one of {SCHEMES}")]
    UnknownScheme {
        /// The URL given.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// Not a URL, or not one this protocol can use.
    #[error("worker URL {url:?}: {reason}")]
    Malformed {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Which protocol a worker speaks, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// batchgate's JSON batch API.
    HttpJson {
        /// `http://host:port[/prefix]`, without a trailing slash.
        base: String,
    },
    /// The batch API over gRPC.
    Grpc {
        /// `host:port`.
        authority: String,
        /// Over TLS (`grpcs://`).
        tls: bool,
    },
    /// KServe V2 / Open Inference Protocol over HTTP.
    KserveV2 {
        /// `http://host:port/v2/models/NAME[/versions/V]`.
        model_url: String,
        /// The input tensor's name.
        input: String,
        /// The output tensor's name.
        output: String,
    },
    /// OpenAI-style embeddings.
    OpenAi {
        /// `http://host:port/v1`, without a trailing slash.
        base: String,
        /// The model named in requests.
        model: String,
    },
}

/// Limits of one worker; `None` takes the batcher's setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerLimits {
    /// Most inputs in one call to it; a larger batch is split into several calls.
    pub max_batch_size: Option<usize>,
    /// Most calls under way to it at once; more wait for one to finish.
    pub max_inflight_batches: Option<usize>,
    /// Bound on one call to it.
    pub timeout: Option<Duration>,
}

/// One worker: protocol, address and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSpec {
    /// How to call it.
    pub protocol: Protocol,
    /// Its own limits.
    pub limits: WorkerLimits,
    /// The URL without its query, for logs.
    pub name: String,
    /// The zone it runs in (`zone=`); `None`: no zone (it counts as every batcher's own).
    pub zone: Option<Zone>,
    /// Where its bearer token (API key) is, if it needs one.
    pub token: Option<TokenSource>,
}

/// Where a worker's bearer token or API key is kept: never in the URL itself, so it is not on
/// a command line or in a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A file holding it (`token_file=PATH`), surrounding whitespace ignored.
    File(std::path::PathBuf),
    /// An environment variable holding it (`token_env=NAME`).
    Env(String),
}

/// Why a worker's token could not be read. Names where it was looked for, never what was
/// found.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read.
    #[error("cannot read the worker token file {}: {error}", path.display())]
    ReadFile {
        /// The file.
        path: std::path::PathBuf,
        /// What reading it said.
        error: std::io::Error,
    },
    /// The variable is not set (or not UTF-8).
    #[error("the worker token variable {name} is not set (or not UTF-8)")]
    Unset {
        /// The variable.
        name: String,
    },
    /// The file holds only whitespace.
    #[error("the worker token file {} is empty", path.display())]
    EmptyFile {
        /// The file.
        path: std::path::PathBuf,
    },
    /// The variable holds only whitespace.
    #[error("the worker token variable {name} is empty")]
    EmptyVar {
        /// The variable.
        name: String,
    },
    /// The token holds characters an HTTP header cannot carry.
    #[error("the worker token holds characters a header cannot carry")]
    NotAHeader,
}

/// A worker's bearer token. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct WorkerToken(String);

impl fmt::Debug for WorkerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WorkerToken(<redacted>)")
    }
}

impl WorkerToken {
    /// The `Authorization` header's value, marked sensitive (kept out of HTTP/2 header
    /// compression tables and debug output).
    pub(crate) fn header(&self) -> Result<reqwest::header::HeaderValue, TokenError> {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", self.0))
            .map_err(|_| TokenError::NotAHeader)?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// The token itself, for gRPC metadata.
    pub(crate) fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

impl TokenSource {
    /// Reads the token now. Errors name where it was looked for, never what was found.
    pub fn read(&self) -> Result<WorkerToken, TokenError> {
        let text = match self {
            TokenSource::File(path) => {
                std::fs::read_to_string(path).map_err(|error| TokenError::ReadFile {
                    path: path.clone(),
                    error,
                })?
            }
            TokenSource::Env(name) => {
                std::env::var(name).map_err(|_| TokenError::Unset { name: name.clone() })?
            }
        };
        let token = text.trim();
        if token.is_empty() {
            return Err(match self {
                TokenSource::File(path) => TokenError::EmptyFile { path: path.clone() },
                TokenSource::Env(name) => TokenError::EmptyVar { name: name.clone() },
            });
        }
        let token = WorkerToken(token.to_owned());
        token.header()?;
        Ok(token)
    }
}

impl WorkerSpec {
    /// Whether calls to this worker go over TLS (`https://`, `kserve-v2+https://`,
    /// `openai+https://`).
    pub fn uses_tls(&self) -> bool {
        match &self.protocol {
            Protocol::HttpJson { base } | Protocol::OpenAi { base, .. } => {
                base.starts_with("https://")
            }
            Protocol::KserveV2 { model_url, .. } => model_url.starts_with("https://"),
            Protocol::Grpc { tls, .. } => *tls,
        }
    }
}

impl fmt::Display for WorkerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl FromStr for WorkerSpec {
    type Err = SpecError;

    fn from_str(url: &str) -> Result<Self, SpecError> {
        let malformed = |reason: String| SpecError::Malformed {
            url: url.to_owned(),
            reason,
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(SpecError::NoScheme {
                url: url.to_owned(),
            });
        };
        let scheme = scheme.to_ascii_lowercase();
        if ![
            "http",
            "https",
            "grpc",
            "grpcs",
            "kserve-v2+http",
            "kserve-v2+https",
            "openai+http",
            "openai+https",
        ]
        .contains(&scheme.as_str())
        {
            return Err(SpecError::UnknownScheme {
                url: url.to_owned(),
                scheme,
            });
        }
        // Every protocol runs over HTTP, plain or TLS: parse the rest as such a URL, which
        // checks the host and port.
        let transport = if scheme == "https" || scheme == "grpcs" || scheme.ends_with("+https") {
            "https"
        } else {
            "http"
        };
        let parsed =
            Url::parse(&format!("{transport}://{rest}")).map_err(|e| malformed(e.to_string()))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(malformed(
                "credentials in worker URLs are not supported".into(),
            ));
        }
        if parsed.fragment().is_some() {
            return Err(malformed("a worker URL has no #fragment".into()));
        }
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| malformed("no host".into()))?;
        let authority = match parsed.port_or_known_default() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let path = parsed.path().trim_end_matches('/').to_owned();
        let origin = format!("{transport}://{authority}");

        let mut query = Query::parse(&parsed, url)?;
        let limits = WorkerLimits {
            max_batch_size: query.positive("max_batch_size")?,
            max_inflight_batches: query.positive("max_inflight_batches")?,
            timeout: query
                .positive("timeout_ms")?
                .map(|ms| Duration::from_millis(ms as u64)),
        };
        let zone = query
            .take("zone")
            .map(|z| z.parse::<Zone>())
            .transpose()
            .map_err(|e| malformed(e.to_string()))?;
        let protocol = match scheme.as_str() {
            "http" | "https" => Protocol::HttpJson {
                base: format!("{origin}{path}"),
            },
            "grpc" | "grpcs" => {
                if !path.is_empty() {
                    return Err(malformed(format!(
                        "a {scheme}:// URL is host:port only (the method's path is fixed), not {path:?}"
                    )));
                }
                Protocol::Grpc {
                    authority: authority.clone(),
                    tls: scheme == "grpcs",
                }
            }
            "kserve-v2+http" | "kserve-v2+https" => {
                check_v2_model_path(&path, url)?;
                Protocol::KserveV2 {
                    model_url: format!("{origin}{path}"),
                    input: query.name("input", DEFAULT_INPUT_NAME)?,
                    output: query.name("output", DEFAULT_OUTPUT_NAME)?,
                }
            }
            _ => {
                if path.is_empty() {
                    return Err(malformed(
                        "an openai+http:// URL needs the API's base path, e.g. /v1".into(),
                    ));
                }
                Protocol::OpenAi {
                    base: format!("{origin}{path}"),
                    model: query.name("model", DEFAULT_MODEL)?,
                }
            }
        };
        let token = match (query.take("token_file"), query.take("token_env")) {
            (Some(_), Some(_)) => {
                return Err(malformed("give token_file or token_env, not both".into()))
            }
            (Some(path), None) if !path.is_empty() => Some(TokenSource::File(path.into())),
            (None, Some(name)) if !name.is_empty() => Some(TokenSource::Env(name)),
            (None, None) => None,
            _ => {
                return Err(malformed(
                    "token_file and token_env must not be empty".into(),
                ))
            }
        };
        query.finish()?;
        Ok(WorkerSpec {
            protocol,
            limits,
            name: format!("{scheme}://{authority}{path}"),
            zone,
            token,
        })
    }
}

/// A V2 model URL's path ends in `/v2/models/NAME` or `/v2/models/NAME/versions/V`.
fn check_v2_model_path(path: &str, url: &str) -> Result<(), SpecError> {
    let segments: Vec<&str> = path.split('/').collect();
    let ok = |i: usize| {
        segments.get(i) == Some(&"v2")
            && segments.get(i + 1) == Some(&"models")
            && segments.get(i + 2).is_some_and(|name| !name.is_empty())
    };
    let n = segments.len();
    let plain = n >= 3 && ok(n - 3);
    let versioned =
        n >= 5 && segments[n - 2] == "versions" && !segments[n - 1].is_empty() && ok(n - 5);
    if plain || versioned {
        Ok(())
    } else {
        Err(SpecError::Malformed {
            url: url.to_owned(),
            reason: format!(
                "a kserve-v2+http:// URL names a model: …/v2/models/NAME[/versions/V], not {path:?}"
            ),
        })
    }
}

/// The query parameters of a worker URL, taken one by one.
struct Query {
    /// Parameters not taken yet.
    pairs: Vec<(String, String)>,
    /// The URL as given, for the errors.
    given: String,
}

impl Query {
    fn parse(url: &Url, given: &str) -> Result<Query, SpecError> {
        let mut query = Query {
            pairs: Vec::new(),
            given: given.to_owned(),
        };
        for (key, value) in url.query_pairs() {
            if query.pairs.iter().any(|(k, _)| *k == key) {
                return Err(query.malformed(format!("query parameter {key:?} given twice")));
            }
            query.pairs.push((key.into_owned(), value.into_owned()));
        }
        Ok(query)
    }

    fn malformed(&self, reason: String) -> SpecError {
        SpecError::Malformed {
            url: self.given.clone(),
            reason,
        }
    }

    fn take(&mut self, key: &str) -> Option<String> {
        let i = self.pairs.iter().position(|(k, _)| k == key)?;
        Some(self.pairs.remove(i).1)
    }

    /// A whole number ≥ 1.
    fn positive(&mut self, key: &str) -> Result<Option<usize>, SpecError> {
        self.take(key)
            .map(|v| match v.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(self.malformed(format!("{key} must be a whole number ≥ 1, got {v:?}"))),
            })
            .transpose()
    }

    /// A non-empty name, or `default`.
    fn name(&mut self, key: &str, default: &str) -> Result<String, SpecError> {
        match self.take(key) {
            None => Ok(default.to_owned()),
            Some(v) if v.is_empty() => Err(self.malformed(format!("{key} must not be empty"))),
            Some(v) => Ok(v),
        }
    }

    /// Refuses parameters nobody took.
    fn finish(self) -> Result<(), SpecError> {
        match self.pairs.first() {
            None => Ok(()),
            Some((key, _)) => Err(self.malformed(format!(
                "unknown query parameter {key:?} (known: max_batch_size, max_inflight_batches, \
                 timeout_ms, zone, token_file, token_env; input and output for kserve-v2+http; \
                 model for openai+http)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests;
