//! `batchgate dlq list|replay|purge`: the dead-letter queue, through a gateway's admin API.

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

/// Bound on one admin call.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Flags of `batchgate dlq`.
#[derive(Debug, Args)]
pub struct DlqArgs {
    /// Base URL of a gateway (or `serve`) with the admin API on.
    #[arg(long, env = "BATCHGATE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,

    /// The gateway's --admin-token.
    #[arg(long, env = "BATCHGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,

    #[command(subcommand)]
    pub action: DlqAction,
}

/// What to do with the dead letters.
#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// Print the oldest entries (JSON) and the count.
    List {
        /// Entries to print.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Send entries back under their task ids, each to its own model's queue (results become
    /// PENDING again).
    Replay(Which),
    /// Delete entries.
    Purge(Which),
}

/// Which entries: `--id` (repeatable), else the oldest `--limit`.
#[derive(Debug, Args)]
pub struct Which {
    /// An entry id, as `list` prints it (a further model's as `<model>/<id>`); repeat for
    /// several.
    #[arg(long = "id")]
    pub ids: Vec<String>,
    /// Without --id: this many of the oldest entries.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

impl Which {
    fn body(&self) -> Value {
        if self.ids.is_empty() {
            json!({ "limit": self.limit })
        } else {
            json!({ "ids": self.ids })
        }
    }
}

/// Runs the action and prints the gateway's JSON answer.
pub async fn run(args: DlqArgs) -> anyhow::Result<()> {
    batchgate_net::install_crypto_provider();
    let http = reqwest::Client::builder().timeout(TIMEOUT).build()?;
    let base = args.url.trim_end_matches('/');
    let request = match &args.action {
        DlqAction::List { limit } => http.get(format!("{base}/admin/dlq?limit={limit}")),
        DlqAction::Replay(which) => http
            .post(format!("{base}/admin/dlq/replay"))
            .json(&which.body()),
        DlqAction::Purge(which) => http
            .post(format!("{base}/admin/dlq/purge"))
            .json(&which.body()),
    };
    let response = request
        .bearer_auth(&args.admin_token)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {base}: {e}"))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| anyhow::anyhow!("{base} answered {status} without JSON: {e}"))?;
    if !status.is_success() {
        let message = body["error"]["message"].as_str().unwrap_or("no message");
        anyhow::bail!("{base} answered {status}: {message}");
    }
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(())
}
