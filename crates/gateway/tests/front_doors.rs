//! The OpenAI-compatible and KServe V2 front doors through the router, with this test acting
//! as the batcher: each input is a task of its own, the answer is in input order whatever
//! order the results come in, typed outputs are rendered in each protocol's form, and errors
//! come in each protocol's shape.

mod support;

use std::time::Duration;

use base64::Engine;
use batchgate_gateway::GatewayConfig;
use batchgate_protocol::Output;
use batchgate_store::Outcome;
use serde_json::{json, Value};
use support::*;

/// A gateway serving the model `embedder`, with authentication.
fn embedder() -> Gateway {
    let config = GatewayConfig {
        models: vec!["embedder".into()],
        ..GatewayConfig::default()
    };
    gateway_with(config, jwt_edge(), 1000)
}

/// Acts as the batcher for `n` tasks: reads them, then answers each (in reverse order of
/// reading) with what `output` makes of its input.
async fn answer_tasks(gw: &Gateway, n: usize, output: impl Fn(&str) -> Outcome) {
    let mut tasks = Vec::new();
    while tasks.len() < n {
        let read = gw
            .queue
            .read(n - tasks.len(), Duration::from_secs(5))
            .await
            .expect("read");
        tasks.extend(read.into_iter().map(|d| d.task));
    }
    assert_eq!(tasks.len(), n, "one task per input");
    for task in tasks.iter().rev() {
        gw.finish(&task.task_id, output(&task.input)).await;
    }
}

/// A vector that names its input: its length and first byte.
fn vector_of(input: &str) -> Output {
    Output::Vector(vec![
        input.len() as f32,
        f32::from(input.as_bytes()[0]),
        -0.5,
    ])
}

#[tokio::test]
async fn embeddings_come_back_in_input_order_as_floats_or_base64() {
    let gw = embedder();
    let jwt = token("alice");
    for (format, inputs) in [
        ("float", ["a", "bb", "ccc"]),
        ("base64", ["x", "yy", "zzz"]),
    ] {
        let body = json!({"model": "embedder", "input": inputs, "encoding_format": format});
        let (answer, ()) = tokio::join!(
            gw.post("/v1/embeddings", Some(&jwt), &body),
            answer_tasks(&gw, 3, |i| Outcome::Success(vector_of(i)))
        );
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(
            (
                answer.body["object"].as_str(),
                answer.body["model"].as_str()
            ),
            (Some("list"), Some("embedder"))
        );
        for (index, input) in inputs.iter().enumerate() {
            let item = &answer.body["data"][index];
            assert_eq!(item["index"], index);
            let Output::Vector(want) = vector_of(input) else {
                unreachable!()
            };
            let got: Vec<f32> = match format {
                "float" => serde_json::from_value(item["embedding"].clone()).expect("floats"),
                _ => base64::engine::general_purpose::STANDARD
                    .decode(item["embedding"].as_str().expect("base64 text"))
                    .expect("base64")
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            };
            assert_eq!(got, want, "{format} {input}");
        }
    }
    // One text alone is a list of one; a text output stands for its derived vector.
    let body = json!({"model": "embedder", "input": "solo"});
    let (answer, ()) = tokio::join!(
        gw.post("/v1/embeddings", Some(&jwt), &body),
        answer_tasks(&gw, 1, |_| Outcome::Success(Output::Text(
            "[0.25,2]".into()
        )))
    );
    assert_eq!(
        answer.body["data"][0]["embedding"],
        json!([0.25, 2.0]),
        "{answer:?}"
    );
    assert_eq!(answer.body["usage"]["prompt_tokens"], 1);
}

#[tokio::test]
async fn openai_errors_are_in_openai_shape() {
    let gw = embedder();
    let jwt = token("alice");
    let check = |answer: &Answer, status: u16, code: &str, kind: &str| {
        assert_eq!(answer.status, status, "{answer:?}");
        assert_eq!(answer.body["error"]["code"], code, "{answer:?}");
        assert_eq!(answer.body["error"]["type"], kind, "{answer:?}");
        assert!(answer.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    };
    let unknown = gw
        .post(
            "/v1/embeddings",
            Some(&jwt),
            &json!({"model": "other", "input": "x"}),
        )
        .await;
    check(&unknown, 404, "model_not_found", "not_found_error");
    assert_eq!(unknown.body["error"]["param"], "model");
    let dimensions = json!({"model": "embedder", "input": "x", "dimensions": 8});
    let refused = gw.post("/v1/embeddings", Some(&jwt), &dimensions).await;
    check(
        &refused,
        400,
        "unsupported_parameter",
        "invalid_request_error",
    );
    assert!(refused.text.contains("dimensions"), "{refused:?}");
    let empty = gw
        .post(
            "/v1/embeddings",
            Some(&jwt),
            &json!({"model": "embedder", "input": []}),
        )
        .await;
    check(&empty, 422, "invalid_request", "invalid_request_error");
    let no_key = gw
        .post(
            "/v1/embeddings",
            None,
            &json!({"model": "embedder", "input": "x"}),
        )
        .await;
    check(&no_key, 401, "unauthenticated", "authentication_error");
    let models = gw.get("/v1/models", Some(&jwt)).await;
    assert_eq!(models.body["data"][0]["id"], "embedder", "{models:?}");
    assert_eq!(models.body["object"], "list");
    check(
        &gw.get("/v1/models", None).await,
        401,
        "unauthenticated",
        "authentication_error",
    );
    // A failed input fails the request, naming the input; no task is left unread.
    let body = json!({"model": "embedder", "input": ["ok", "bad"]});
    let (failed, ()) = tokio::join!(
        gw.post("/v1/embeddings", Some(&jwt), &body),
        answer_tasks(&gw, 2, |i| if i == "bad" {
            Outcome::Failed("worker error: boom".into())
        } else {
            Outcome::Success(vector_of(i))
        })
    );
    check(&failed, 502, "inference_failed", "server_error");
    assert!(failed.text.contains("input 1"), "{failed:?}");
    // batchgate's own API keeps its own shape.
    let own = gw.post("/v1/inference", None, &json!({"input": "x"})).await;
    assert_eq!(own.body["error"]["code"], "unauthenticated");
    assert!(own.body["error"].get("type").is_none(), "{own:?}");
}

#[tokio::test]
async fn kserve_infer_answers_fp32_rows_for_vectors_and_bytes_for_text() {
    let gw = embedder();
    let jwt = token("bob");
    let body = json!({"id": "r-1", "inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": ["a", "bb", "ccc"]}]});
    let (answer, ()) = tokio::join!(
        gw.post("/v2/models/embedder/infer", Some(&jwt), &body),
        answer_tasks(&gw, 3, |i| Outcome::Success(vector_of(i)))
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        (
            answer.body["model_name"].as_str(),
            answer.body["id"].as_str()
        ),
        (Some("embedder"), Some("r-1"))
    );
    let tensor = &answer.body["outputs"][0];
    assert_eq!(
        (tensor["name"].as_str(), tensor["datatype"].as_str()),
        (Some("output"), Some("FP32"))
    );
    assert_eq!(tensor["shape"], json!([3, 3]));
    assert_eq!(
        tensor["data"],
        json!([1.0, 97.0, -0.5, 2.0, 98.0, -0.5, 3.0, 99.0, -0.5])
    );

    let column = json!({"inputs": [{"name": "x", "shape": [2, 1], "datatype": "BYTES", "data": [["p"], ["q"]]}]});
    let (answer, ()) = tokio::join!(
        gw.post("/v2/models/embedder/infer", Some(&jwt), &column),
        answer_tasks(&gw, 2, |i| Outcome::Success(Output::Text(i.to_uppercase())))
    );
    let tensor = &answer.body["outputs"][0];
    assert_eq!(
        (tensor["datatype"].as_str(), &tensor["shape"]),
        (Some("BYTES"), &json!([2])),
        "{answer:?}"
    );
    assert_eq!(tensor["data"], json!(["P", "Q"]));
}

#[tokio::test]
async fn kserve_metadata_health_and_errors() {
    let gw = embedder();
    let jwt = token("bob");
    let server = gw.get("/v2", None).await;
    assert_eq!(
        (server.status.as_u16(), server.body["name"].as_str()),
        (200, Some("batchgate"))
    );
    assert_eq!(gw.get("/v2/health/live", None).await.status, 200);
    assert_eq!(gw.get("/v2/health/ready", None).await.status, 200);
    let meta = gw.get("/v2/models/embedder", Some(&jwt)).await;
    assert_eq!(meta.body["name"], "embedder", "{meta:?}");
    assert_eq!(meta.body["inputs"][0]["datatype"], "BYTES");
    assert_eq!(
        gw.get("/v2/models/embedder/ready", Some(&jwt)).await.status,
        200
    );
    let check = |answer: &Answer, status: u16, code: &str| {
        assert_eq!(answer.status, status, "{answer:?}");
        assert_eq!(answer.body["code"], code, "{answer:?}");
        assert!(
            answer.body["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{answer:?}"
        );
    };
    check(
        &gw.get("/v2/models/other", Some(&jwt)).await,
        404,
        "model_not_found",
    );
    check(
        &gw.get("/v2/models/other/ready", Some(&jwt)).await,
        404,
        "model_not_found",
    );
    check(
        &gw.get("/v2/models/embedder", None).await,
        401,
        "unauthenticated",
    );
    let texts = |shape: Value, data: Value| json!({"inputs": [{"name": "t", "shape": shape, "datatype": "BYTES", "data": data}]});
    check(
        &gw.post(
            "/v2/models/other/infer",
            Some(&jwt),
            &texts(json!([1]), json!(["a"])),
        )
        .await,
        404,
        "model_not_found",
    );
    check(
        &gw.post(
            "/v2/models/embedder/infer",
            Some(&jwt),
            &texts(json!([2]), json!(["a"])),
        )
        .await,
        422,
        "invalid_request",
    );
    let fp32 = json!({"inputs": [{"name": "t", "shape": [1], "datatype": "FP32", "data": [1.0]}]});
    check(
        &gw.post("/v2/models/embedder/infer", Some(&jwt), &fp32)
            .await,
        422,
        "invalid_request",
    );
    let other_output = json!({"inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "data": ["a"]}], "outputs": [{"name": "logits"}]});
    check(
        &gw.post("/v2/models/embedder/infer", Some(&jwt), &other_output)
            .await,
        400,
        "unsupported_parameter",
    );
    let mut binary = request(
        "POST",
        "/v2/models/embedder/infer",
        Some(&jwt),
        Some(texts(json!([1]), json!(["a"])).to_string()),
    );
    binary.headers_mut().insert(
        "inference-header-content-length",
        "10".parse().expect("header"),
    );
    check(&gw.call(binary).await, 400, "unsupported_parameter");
    // No task was admitted by any refused request.
    assert_eq!(gw.queued().await, 0);
}

#[tokio::test]
async fn the_inference_api_shows_a_vector_as_json_text() {
    let gw = gateway(open_edge());
    let task_id = gw.submit("anything").await;
    gw.finish(&task_id, Outcome::Success(Output::Vector(vec![0.5, -1.0])))
        .await;
    let view = gw.get(&format!("/v1/result/{task_id}"), None).await;
    assert_eq!(view.body["output"], "[0.5,-1.0]", "{view:?}");
}

#[tokio::test]
async fn the_inference_api_takes_an_optional_model_and_refuses_unknown_ones() {
    let gw = embedder();
    let jwt = token("carol");
    let named = json!({"input": "x", "model": "embedder"});
    assert_eq!(
        gw.post("/v1/inference", Some(&jwt), &named).await.status,
        202
    );
    let unnamed = json!({"input": "y"});
    assert_eq!(
        gw.post("/v1/inference", Some(&jwt), &unnamed).await.status,
        202
    );
    let other = json!({"input": "z", "model": "other"});
    let refused = gw.post("/v1/inference", Some(&jwt), &other).await;
    refused.assert_error(404, "model_not_found");
    assert_eq!(gw.queued().await, 2, "the refused input was not admitted");
}
