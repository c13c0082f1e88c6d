//! The crate's error type.

use std::error::Error as _;

/// Why a bench run could not produce a report. Failed requests are not errors: they are
/// counted in the report.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The flags do not describe a run.
    #[error("invalid flags: {0}")]
    InvalidArgs(String),
    /// The chart report (`--report`) could not be written.
    #[error("cannot write the report to {path}: {source}", path = .0.display(), source = .1)]
    Report(std::path::PathBuf, #[source] std::io::Error),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// The server did not answer `GET /metrics` (before the load: nothing was sent).
    #[error("server not reachable at {url}: {reason}")]
    Unreachable {
        /// The URL scraped.
        url: String,
        /// The transport error and its causes.
        reason: String,
    },
    /// `GET /metrics` answered with an error status.
    #[error("{url} answered HTTP {status}")]
    MetricsStatus {
        /// The URL scraped.
        url: String,
        /// The status code.
        status: u16,
    },
    /// `GET /metrics` answered something that is not Prometheus text format.
    #[error("cannot parse the metrics at {url}: {reason}")]
    MetricsParse {
        /// The URL scraped.
        url: String,
        /// What the parser said.
        reason: String,
    },
}

/// An error and its causes on one line (`reqwest`'s own message omits the cause, e.g.
/// "connection refused").
pub(crate) fn chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
