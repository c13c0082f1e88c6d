//! `batchgate probe`: one HTTP GET of a health endpoint, for a container's `HEALTHCHECK` in an
//! image that has no shell and no curl. Exits 0 on a 2xx answer, 1 otherwise.

use std::time::Duration;

use clap::Args;

/// Flags of `batchgate probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The URL to GET; any 2xx answer is healthy.
    #[arg(
        long,
        env = "BATCHGATE_PROBE_URL",
        default_value = "http://127.0.0.1:8080/healthz"
    )]
    pub url: String,

    /// Bound on the whole call, in milliseconds.
    #[arg(long, env = "BATCHGATE_PROBE_TIMEOUT_MS", default_value_t = 2000)]
    pub timeout_ms: u64,
}

/// GETs the URL; an error unless the answer is 2xx.
pub async fn run(args: &ProbeArgs) -> anyhow::Result<()> {
    batchgate_net::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(args.timeout_ms.max(1)))
        .build()?;
    let response = http
        .get(&args.url)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {}: {e}", args.url))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        anyhow::bail!("{} answered {status}", args.url)
    }
}
