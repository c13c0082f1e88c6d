//! The real-model hook (`--features model`): a model directory behind `serve` in-process, and
//! behind the batch API of `worker --model-dir`. A tiny random BERT written by the test stands
//! in for all-MiniLM-L6-v2; it goes through the same load path.

#[macro_use]
mod common;

use std::sync::Arc;

use batchgate::serve::WorkerChoice;
use batchgate_model::tiny::{write_tiny_model, HIDDEN};
use batchgate_model::EmbeddingModel;
use batchgate_protocol::api::TaskStatus;
use common::{client, infer, serve_config, start_serve, Infra};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn tiny_model_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tiny_model(dir.path()).expect("write tiny model");
    dir
}

fn parse(output: &str) -> Vec<f32> {
    serde_json::from_str(output).expect("an output is a JSON array of numbers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_a_model_dir_answers_each_input_with_its_embedding() {
    let dir = tiny_model_dir();
    let model = EmbeddingModel::load(dir.path()).expect("load");
    let infra = Infra::None;
    let mut config = serve_config(&infra, "http://unused", 2);
    if let Some(batcher) = config.batcher.as_mut() {
        batcher.worker = WorkerChoice::Model {
            dir: dir.path().to_path_buf(),
            max_batch_size: 64,
        };
    }
    let serve = start_serve(config).await;
    let http = client();

    // 100 submissions at once: they meet in batches, padded together.
    let inputs: Vec<String> = (0..100)
        .map(|i| {
            format!(
                "the cat sat on the mat {}",
                "and the dog ran ".repeat(i % 7)
            )
        })
        .map(|s| {
            format!(
                "{s} {}",
                "hello world ".repeat(usize::from(s.len() % 3 == 0))
            )
        })
        .enumerate()
        .map(|(i, s)| format!("{s} number {i}"))
        .collect();
    let views =
        futures::future::join_all(inputs.iter().map(|input| infer(&http, &serve.url, input))).await;
    for (input, view) in inputs.iter().zip(&views) {
        assert_eq!(view.status, TaskStatus::Success, "{input:?}: {view:?}");
        let got = parse(view.output.as_deref().expect("output"));
        assert_eq!(got.len(), HIDDEN);
        // The same model, alone: batching in the server did not change the answer.
        let alone = model.embed(&[input]).expect("embed alone");
        let diff = got
            .iter()
            .zip(&alone[0])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-5, "{input:?} differs by {diff}");
    }
    let outcome = serve.shutdown().await;
    assert!(outcome.drained);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_server_serves_the_model_and_refuses_what_it_cannot_run() {
    let dir = tiny_model_dir();
    let worker = batchgate::serve::load_model(dir.path(), 4).expect("load");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    let served = batchgate_worker_server::Served::model("tiny", Arc::new(worker), 4);
    let server = tokio::spawn(batchgate_worker_server::run(
        served,
        listener,
        None,
        stop.clone(),
    ));
    let http = client();
    let call = |body: serde_json::Value| {
        let http = http.clone();
        let url = format!("{url}/v1/batch");
        async move {
            let response = http.post(&url).json(&body).send().await.expect("send");
            let status = response.status().as_u16();
            (
                status,
                response
                    .json::<serde_json::Value>()
                    .await
                    .expect("json body"),
            )
        }
    };

    let (status, body) = call(serde_json::json!({"inputs": ["hello world", "a cat"]})).await;
    assert_eq!(status, 200, "{body}");
    let outputs = body["outputs"].as_array().expect("outputs");
    assert_eq!(outputs.len(), 2);
    for output in outputs {
        let v = parse(output.as_str().expect("string output"));
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }

    let (status, body) = call(serde_json::json!({"inputs": vec!["a"; 5]})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("batch_too_large"))
    );
    let (status, body) = call(serde_json::json!({"inputs": []})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("empty_batch"))
    );
    let (status, body) = call(serde_json::json!({"inputs": [1, 2]})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_request"))
    );

    stop.cancel();
    server.await.expect("task").expect("server");
}

#[test]
fn a_bad_model_dir_is_refused_before_anything_starts() {
    use clap::Parser;
    let parse = |argv: &[&str]| batchgate::cli::Cli::try_parse_from(argv).expect("flags parse");
    let missing = "/nonexistent/model";
    let batchgate::cli::Command::Worker(args) =
        parse(&["batchgate", "worker", "--model-dir", missing]).command
    else {
        panic!("worker expected")
    };
    let error = args.into_config().expect_err("a missing directory");
    assert!(
        error.starts_with("--model-dir: model directory /nonexistent/model does not exist"),
        "{error}"
    );
    let batchgate::cli::Command::Serve(args) = parse(&[
        "batchgate",
        "serve",
        "--insecure-no-auth",
        "--model-dir",
        missing,
    ])
    .command
    else {
        panic!("serve expected")
    };
    let error = args.into_config().expect_err("a missing directory");
    assert!(error.starts_with("--model-dir: model directory"), "{error}");
    // --sim and --model-dir are two different workers.
    assert!(batchgate::cli::Cli::try_parse_from([
        "batchgate",
        "worker",
        "--sim",
        "--model-dir",
        "x"
    ])
    .is_err());
}
