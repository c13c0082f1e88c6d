//! Real clients through batchgate's front doors: the official `openai` Python SDK
//! (`client.embeddings.create`), `tritonclient[http]` (`InferenceServerClient.infer`) and
//! `tritonclient[grpc]` (the same over gRPC), 200 concurrent callers each, the bearer token as
//! the API key, every answer checked (`tests/api_clients/clients.py`, `grpc_clients.py`). The
//! simulated worker sits behind the OpenAI-style adapter, so outputs are vectors end to end:
//! OpenAI's base64 floats, KServe's `FP32` tensor. The HTTP clients run in memory and on
//! Redis (two gateways, one batcher).
//!
//! `scripts/test.sh` installs the clients from PyPI in a virtual environment and names its
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
use common::{client, fast_sim, metrics, serve_config, start_serve, start_worker, Backend, Infra};
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

/// The Python of the clients' virtual environment, or `None` when the test may be skipped
/// (`BATCHGATE_ALLOW_NO_API_CLIENTS=1` set by hand); fails otherwise.
fn clients_python(test: &str) -> Option<std::ffi::OsString> {
    let python = std::env::var_os("BATCHGATE_API_CLIENTS_PYTHON");
    if python.is_none() {
        assert!(
            std::env::var_os("BATCHGATE_ALLOW_NO_API_CLIENTS").is_some_and(|v| v == "1"),
            "BATCHGATE_API_CLIENTS_PYTHON is not set: run scripts/test.sh (it installs the \
             openai and tritonclient packages), or set BATCHGATE_ALLOW_NO_API_CLIENTS=1 to run \
             without this test"
        );
        eprintln!("NOT RUN: {test} — BATCHGATE_ALLOW_NO_API_CLIENTS=1 and no clients");
    }
    python
}

/// A deployment with JWT authentication and the model [`MODEL`], batching 64 / 50 ms, the
/// simulated worker behind the OpenAI-style adapter (so outputs are vectors): in memory one
/// `serve`; on Redis two gateways and one batcher.
struct Deployment {
    worker: common::Worker,
    _infra: Infra,
    gateways: Vec<common::Serve>,
    /// The batcher, where it runs apart from the gateways.
    batcher: Option<common::Serve>,
    /// A token the gateways accept.
    api_key: String,
}

impl Deployment {
    /// Where the batch metrics are: the batcher's process.
    fn batching(&self) -> &common::Serve {
        self.batcher.as_ref().unwrap_or(&self.gateways[0])
    }

    async fn shutdown(self) {
        for gateway in self.gateways {
            assert!(gateway.shutdown().await.drained);
        }
        if let Some(batcher) = self.batcher {
            assert!(batcher.shutdown().await.drained);
        }
    }
}

async fn start_deployment(backend: Backend) -> Deployment {
    let worker = start_worker(fast_sim(2)).await;
    let infra = Infra::start(backend).await;
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
    // Hundreds of requests from one subject: this test is about batching, not the rate limit.
    config.edge.rate_limit = None;
    let (gateways, batcher) = if backend == Backend::Memory {
        (vec![start_serve(config).await], None)
    } else {
        let mut gateway = config.clone();
        gateway.batcher = None;
        let mut batcher = config;
        batcher.gateway = None;
        let first = start_serve(gateway.clone()).await;
        let second = start_serve(gateway).await;
        (vec![first, second], Some(start_serve(batcher).await))
    };
    let api_key = mint(&TokenArgs {
        sub: "sdk-user".into(),
        secret: SECRET.into(),
        ttl: Duration::from_secs(600),
        issuer: None,
        audience: None,
    })
    .expect("token");
    Deployment {
        worker,
        _infra: infra,
        gateways,
        batcher,
        api_key,
    }
}

/// Runs `script` (in `tests/api_clients/`) with `args`; its stdout, once it succeeded.
async fn run_script(python: std::ffi::OsString, script: &str, args: Vec<String>) -> String {
    let script = format!("{}/tests/api_clients/{script}", env!("CARGO_MANIFEST_DIR"));
    let run = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(&script)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("run the clients' script")
    })
    .await
    .expect("script runner");
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "the clients' script failed ({}):\n{stdout}\n{stderr}",
        run.status
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_and_triton_clients_get_correct_batched_answers() {
    let Some(python) = clients_python("API clients test") else {
        return;
    };
    clients_batch_across_callers(python, Backend::Memory).await;
}

/// The same clients on Redis, through two gateways (half the callers on each) and one
/// batcher: the batcher's batches gather inputs of several callers, of both gateways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_and_triton_clients_through_two_gateways_and_one_batcher_on_redis() {
    let Some(python) = clients_python("API clients test on Redis") else {
        return;
    };
    clients_batch_across_callers(python, Backend::Redis).await;
}

/// Runs `clients.py` against every gateway of a deployment at once, [`CALLERS`] callers of
/// each client in all, and checks that every input ran once and batches mixed callers.
async fn clients_batch_across_callers(python: std::ffi::OsString, backend: Backend) {
    let deployment = start_deployment(backend).await;
    let share = CALLERS / deployment.gateways.len();
    // Each gateway's callers have numbers, and so inputs, of their own: the same inputs would
    // share tasks (dedupe).
    let runs = deployment.gateways.iter().enumerate().map(|(k, gateway)| {
        let args = vec![
            gateway.url.clone(),
            deployment.api_key.clone(),
            MODEL.to_owned(),
            share.to_string(),
            (k * share).to_string(),
        ];
        run_script(python.clone(), "clients.py", args)
    });
    let stdout = futures::future::join_all(runs).await.join("\n");

    // 200 × 2 OpenAI inputs and 200 × 3 KServe inputs, one task each. A request holds at most
    // 3 inputs, so a batch of more than 4 gathered several callers' inputs.
    let page = metrics(&client(), &deployment.batching().url).await;
    let (batches, across_callers) = batches_above(&page, 4.0);
    let stats = deployment.worker.sim.stats();
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
        "api clients ({backend:?}): {} inputs in {} worker calls ({across_callers} batches of more than 4)",
        stats.items, stats.calls
    );
    deployment.shutdown().await;
}

/// Triton's gRPC client through the KServe V2 gRPC door on the same port: health, metadata,
/// a call without a token, then 200 concurrent callers of 3 texts each (sent as
/// `raw_input_contents`), every `FP32` answer checked, and batches formed across callers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triton_grpc_client_gets_correct_batched_answers() {
    let Some(python) = clients_python("Triton gRPC client test") else {
        return;
    };
    let deployment = start_deployment(Backend::Memory).await;
    let serve = &deployment.gateways[0];
    let host_port = serve
        .url
        .strip_prefix("http://")
        .expect("an http:// URL")
        .to_owned();
    let args = vec![
        host_port,
        deployment.api_key.clone(),
        MODEL.to_owned(),
        CALLERS.to_string(),
    ];
    let stdout = run_script(python, "grpc_clients.py", args).await;

    // 200 × 3 inputs, one task each: a batch of more than 4 (a bucket's bound) gathered
    // several callers' inputs.
    let page = metrics(&client(), &serve.url).await;
    let (batches, across_callers) = batches_above(&page, 4.0);
    let stats = deployment.worker.sim.stats();
    assert_eq!(stats.items, (CALLERS * 3) as u64, "{stdout}");
    assert!(
        batches > 0.0 && across_callers > 0.0,
        "batches {batches}, of more than 4 inputs {across_callers}"
    );
    assert!(
        (stats.calls as f64) < CALLERS as f64,
        "{} worker calls for {} requests: inputs were not batched across callers",
        stats.calls,
        CALLERS
    );
    // Each call counted by method and status; the one without a token by its code.
    for line in [
        r#"batchgate_grpc_requests_total{method="ModelInfer",code="OK"} 200"#,
        r#"batchgate_grpc_requests_total{method="ModelReady",code="UNAUTHENTICATED"} 1"#,
        r#"batchgate_http_errors_total{code="unauthenticated"} 1"#,
    ] {
        assert!(page.contains(line), "no {line:?} in\n{page}");
    }
    eprintln!(
        "triton grpc client: {} inputs in {} worker calls ({across_callers} batches of more than 4)",
        stats.items, stats.calls
    );
    deployment.shutdown().await;
}
