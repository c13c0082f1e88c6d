//! Every protocol of the server, through batchgate's own adapters, on a real port.

use std::time::Duration;

use async_trait::async_trait;
use batchgate_protocol::openai::embedding_of_output;
use batchgate_protocol::sim_output;
use batchgate_sim::{Faults, SimConfig};
use batchgate_worker::{
    GrpcWorker, HttpJsonWorker, KserveV2Worker, OpenAiWorker, Output, Worker, WorkerError,
};

use super::*;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `served` on a free port until the test ends; returns `host:port`.
async fn serve(served: Served) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(run(served, listener, None, CancellationToken::new()));
    addr
}

fn fast_sim(faults: Faults) -> Arc<SimWorker> {
    Arc::new(
        SimWorker::new(SimConfig {
            base: Duration::from_millis(1),
            per_item: Duration::ZERO,
            max_batch_size: 4,
            ..SimConfig::default()
        })
        .with_faults(faults),
    )
}

/// One adapter per protocol, all pointed at `addr`.
fn adapters(addr: &str, model: &str) -> Vec<(&'static str, Arc<dyn Worker>)> {
    vec![
        (
            "http",
            Arc::new(HttpJsonWorker::new(&format!("http://{addr}"), TIMEOUT).expect("client")),
        ),
        (
            "grpc",
            Arc::new(GrpcWorker::new(addr, TIMEOUT).expect("client")),
        ),
        (
            "kserve-v2",
            Arc::new(
                KserveV2Worker::new(
                    &format!("http://{addr}/v2/models/{model}"),
                    "input",
                    "output",
                    TIMEOUT,
                )
                .expect("client"),
            ),
        ),
        (
            "openai",
            Arc::new(
                OpenAiWorker::new(&format!("http://{addr}/v1"), model, TIMEOUT).expect("client"),
            ),
        ),
    ]
}

fn batch(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The vector the OpenAI-style adapter reads for a simulated output.
fn vector(output: &str) -> Vec<f32> {
    embedding_of_output(output)
        .into_iter()
        .map(|x| x as f32)
        .collect()
}

#[tokio::test]
async fn every_protocol_runs_the_same_model_on_one_port() {
    let sim = fast_sim(Faults::default());
    let addr = serve(Served::sim(sim.clone())).await;
    let inputs = batch(&["hello", "world", "hello world"]);
    for (protocol, worker) in adapters(&addr, "sim") {
        worker.health().await.expect(protocol);
        let outputs = worker.infer(&inputs).await.expect(protocol);
        let expected: Vec<Output> = inputs
            .iter()
            .map(|i| match protocol {
                "openai" => Output::Vector(vector(&sim_output(i))),
                _ => Output::Text(sim_output(i)),
            })
            .collect();
        assert_eq!(outputs, expected, "{protocol}");
    }
    // The simulator counted every call, whichever protocol carried it.
    let stats = sim.stats();
    assert_eq!((stats.calls, stats.items), (4, 12));
}

#[tokio::test]
async fn refusals_keep_their_meaning_in_every_protocol() {
    let sim = fast_sim(Faults {
        max_queued_calls: Some(0),
        ..Faults::default()
    });
    let addr = serve(Served::sim(sim)).await;
    let too_many = batch(&["1", "2", "3", "4", "5"]);
    for (protocol, worker) in adapters(&addr, "sim") {
        match worker.infer(&too_many).await {
            // gRPC has no 413: INVALID_ARGUMENT, a 4xx all the same (not retried).
            Err(WorkerError::Status { status, message }) => {
                assert!(
                    status == 413 || (protocol == "grpc" && status == 400),
                    "{protocol}: {status}"
                );
                assert!(
                    message.contains("exceeds the limit of 4"),
                    "{protocol}: {message}"
                );
            }
            other => panic!("{protocol}: {other:?}"),
        }
    }
    // A model the server does not have.
    for (protocol, worker) in adapters(&addr, "nope") {
        if protocol == "kserve-v2" || protocol == "openai" {
            let error = worker.infer(&batch(&["x"])).await.expect_err(protocol);
            assert!(
                matches!(error, WorkerError::Status { status: 404, .. }),
                "{protocol}: {error:?}"
            );
        }
    }
    let v2 = KserveV2Worker::new(
        &format!("http://{addr}/v2/models/sim"),
        "text",
        "output",
        TIMEOUT,
    )
    .expect("client");
    let error = v2
        .infer(&batch(&["x"]))
        .await
        .expect_err("wrong input name");
    assert!(
        matches!(error, WorkerError::Status { status: 400, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn v2_metadata_and_health_endpoints_answer() {
    let addr = serve(Served::sim(fast_sim(Faults::default()))).await;
    batchgate_net::install_crypto_provider();
    let http = reqwest::Client::new();
    for path in [
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/sim/ready",
    ] {
        let status = http
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .expect("send")
            .status();
        assert_eq!(status, 200, "{path}");
    }
    let meta: batchgate_protocol::kserve_v2::ModelMetadata = http
        .get(format!("http://{addr}/v2/models/sim"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (
            meta.inputs[0].name.as_str(),
            meta.inputs[0].datatype.as_str()
        ),
        ("input", "BYTES")
    );
    assert_eq!(meta.outputs[0].name, "output");
    let missing = http
        .get(format!("http://{addr}/v2/models/other/ready"))
        .send()
        .await
        .expect("send");
    assert_eq!(missing.status(), 404);
    let body: batchgate_protocol::kserve_v2::ErrorResponse = missing.json().await.expect("json");
    assert!(body.error.contains("other"), "{body:?}");
}

/// A stand-in for a real model: not the simulator, so no stats and no simulator limits.
struct Shout;

#[async_trait]
impl Worker for Shout {
    async fn infer(&self, inputs: &[String]) -> Result<Vec<Output>, WorkerError> {
        Ok(inputs
            .iter()
            .map(|i| Output::Text(i.to_uppercase()))
            .collect())
    }
}

#[tokio::test]
async fn any_worker_can_be_served_in_place_of_the_simulator() {
    let addr = serve(Served::model("shout", Arc::new(Shout), 2)).await;
    for (protocol, worker) in adapters(&addr, "shout") {
        let outputs = worker.infer(&batch(&["a", "b"])).await.expect(protocol);
        match protocol {
            "openai" => assert_eq!(outputs[0], Output::Vector(vector("A"))),
            _ => assert_eq!(
                outputs,
                [Output::from("A"), Output::from("B")],
                "{protocol}"
            ),
        }
        let error = worker
            .infer(&batch(&["a", "b", "c"]))
            .await
            .expect_err(protocol);
        assert!(
            matches!(error, WorkerError::Status { .. }),
            "{protocol}: {error:?}"
        );
    }
    let stats = reqwest::get(format!("http://{addr}/v1/stats"))
        .await
        .expect("send");
    assert_eq!(stats.status(), 404);
}

#[tokio::test]
async fn the_simulator_answers_to_further_model_names() {
    let sim = fast_sim(Faults::default());
    let served = Served::sim(sim).with_names(vec!["small".into(), "big".into()]);
    assert!(served.serves("sim") && served.serves("small") && !served.serves("other"));
    let addr = serve(served).await;
    for name in ["sim", "small", "big"] {
        for (protocol, worker) in adapters(&addr, name) {
            let outputs = worker.infer(&batch(&["x"])).await.expect(protocol);
            assert_eq!(outputs.len(), 1, "{protocol} {name}");
        }
    }
    let other = adapters(&addr, "other");
    let (_, kserve) = other
        .iter()
        .find(|(p, _)| *p == "kserve-v2")
        .expect("a KServe adapter");
    assert!(
        kserve.infer(&batch(&["x"])).await.is_err(),
        "an unknown name"
    );
}
