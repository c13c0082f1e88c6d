//! Real clients through batchgate's front doors: the official `openai` Python SDK
//! (`client.embeddings.create`) and `tritonclient[http]` (`InferenceServerClient.infer`),
//! 200 concurrent callers each, the bearer token as the API key, every answer checked
//! (`tests/api_clients/clients.py`). The simulated worker sits behind the OpenAI-style adapter,
//! so outputs are vectors end to end: OpenAI's base64 floats, KServe's `FP32` tensor.
//!
//! `scripts/test.sh` installs both clients from PyPI in a virtual environment and names its
//! Python in `BATCHGATE_API_CLIENTS_PYTHON`; without it this test fails, unless
//! `BATCHGATE_ALLOW_NO_API_CLIENTS=1` is set by hand (CI refuses to run with it set).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use batchgate::serve::WorkerChoice;
use batchgate::token::{mint, TokenArgs};
use batchgate_gateway::auth::KeySource;
use batchgate_gateway::AuthConfig;
use batchgate_policy::Limits;
use common::{client, fast_sim, metrics, serve_config, start_serve, start_worker, Infra};
use prometheus_parse::{Scrape, Value};

const SECRET: &str = "an-api-clients-test-secret-of-32-bytes";
/// Concurrent callers of each client.
const CALLERS: usize = 200;
/// The model name the deployment serves.
const MODEL: &str = "embedder";

/// Batches (worker calls) and how many of them held more than `size` inputs.
fn batches_above(text: &str, size: f64) -> (f64, f64) {
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("exposition text");
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == "batchgate_batch_size")
        .expect("batch size histogram");
    let Value::Histogram(buckets) = &sample.value else {
        panic!("batchgate_batch_size is not a histogram");
    };
    let count = |le: f64| {
        buckets
            .iter()
            .find(|b| b.less_than == le)
            .map_or(0.0, |b| b.count)
    };
    let total = count(f64::INFINITY);
    (total, total - count(size))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_and_triton_clients_get_correct_batched_answers() {
    let Some(python) = std::env::var_os("BATCHGATE_API_CLIENTS_PYTHON") else {
        assert!(
            std::env::var_os("BATCHGATE_ALLOW_NO_API_CLIENTS").is_some_and(|v| v == "1"),
            "BATCHGATE_API_CLIENTS_PYTHON is not set: run scripts/test.sh (it installs the \
             openai and tritonclient packages), or set BATCHGATE_ALLOW_NO_API_CLIENTS=1 to run \
             without this test"
        );
        eprintln!("NOT RUN: API clients test — BATCHGATE_ALLOW_NO_API_CLIENTS=1 and no clients");
        return;
    };
    let worker = start_worker(fast_sim(2)).await;
    let infra = Infra::start(common::Backend::Memory).await;
    let url = format!("openai+{}/v1", worker.url);
    let mut config = serve_config(&infra, &url, 2);
    if let Some(part) = config.batcher.as_mut() {
        part.worker = WorkerChoice::remote(&[&url], Duration::from_secs(30)).expect("valid URL");
        part.config.limits = Limits {
            max_batch_size: 64,
            max_wait: Duration::from_millis(50),
        };
    }
    if let Some(gateway) = config.gateway.as_mut() {
        gateway.models = vec![MODEL.to_owned()];
    }
    config.edge.auth = AuthConfig::Jwt {
        keys: KeySource::Secret(SECRET.as_bytes().to_vec()),
        issuer: None,
        audience: None,
    };
    // 400 requests from one subject: this test is about batching, not the rate limit.
    config.edge.rate_limit = None;
    let serve = start_serve(config).await;
    let api_key = mint(&TokenArgs {
        sub: "sdk-user".into(),
        secret: SECRET.into(),
        ttl: Duration::from_secs(600),
        issuer: None,
        audience: None,
    })
    .expect("token");

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api_clients/clients.py");
    let (base, callers) = (serve.url.clone(), CALLERS.to_string());
    let run = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args([script, &base, &api_key, MODEL, &callers])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("run clients.py")
    })
    .await
    .expect("clients.py runner");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "clients.py failed ({}):\n{stdout}\n{stderr}",
        run.status
    );

    // 200 × 2 OpenAI inputs and 200 × 3 KServe inputs, one task each. A request holds at most
    // 3 inputs, so a batch of more than 4 gathered several callers' inputs.
    let page = metrics(&client(), &serve.url).await;
    let (batches, across_callers) = batches_above(&page, 4.0);
    let stats = worker.sim.stats();
    assert_eq!(stats.items, (CALLERS * 5) as u64, "{stdout}");
    assert!(
        batches > 0.0 && across_callers > 0.0,
        "batches {batches}, of more than 4 inputs {across_callers}"
    );
    assert!(
        (stats.calls as f64) < (CALLERS * 2) as f64,
        "{} worker calls for {} requests: inputs were not batched across callers",
        stats.calls,
        CALLERS * 2
    );
    eprintln!(
        "api clients: {} inputs in {} worker calls ({across_callers} batches of more than 4)",
        stats.items, stats.calls
    );
    assert!(serve.shutdown().await.drained);
}
