//! The KServe V2 gRPC door of a real `serve` (JWT authentication, the simulated worker, so
//! outputs are text: a `BYTES` tensor), called with a tonic client built from the same
//! `proto/grpc_predict_v2.proto`: the answers, and each error as the status its kind calls
//! for — unknown model `NOT_FOUND`, bad tensors `INVALID_ARGUMENT`, no or a bad token
//! `UNAUTHENTICATED`, over the rate limit `RESOURCE_EXHAUSTED` with `retry-after` — with
//! batchgate's stable code in the `batchgate-error-code` metadata, and counted in the metrics;
//! and the same door over TLS, where the port speaks HTTP/2 by ALPN.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use batchgate::token::{mint, TokenArgs};
use batchgate_gateway::auth::KeySource;
use batchgate_gateway::{AuthConfig, RateLimitConfig};
use batchgate_net::TlsFiles;
use batchgate_protocol::front::kserve_raw::{join_bytes, split_bytes};
use batchgate_protocol::kserve_grpc::grpc_inference_service_client::GrpcInferenceServiceClient;
use batchgate_protocol::kserve_grpc::model_infer_request::InferInputTensor;
use batchgate_protocol::kserve_grpc::model_metadata_response::TensorMetadata;
use batchgate_protocol::kserve_grpc::{
    InferTensorContents, ModelInferRequest, ModelMetadataRequest, ModelReadyRequest,
    ServerLiveRequest, ServerMetadataRequest,
};
use batchgate_protocol::sim_output;
use common::{
    client, fast_sim, make_certs, metrics, serve_config, start_serve, start_worker, Infra,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

const SECRET: &str = "a-kserve-grpc-test-secret-of-32-bytes";
const MODEL: &str = "texts";
/// A subject allowed one API call a minute.
const LIMITED: &str = "limited";

fn token(sub: &str) -> String {
    mint(&TokenArgs {
        sub: sub.into(),
        secret: SECRET.into(),
        ttl: Duration::from_secs(600),
        issuer: None,
        audience: None,
    })
    .expect("token")
}

/// `message` with `authorization: Bearer token`, if any.
fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().expect("ascii token");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// A `BYTES` input tensor of `texts`, as typed contents.
fn typed(shape: Vec<i64>, texts: &[&str]) -> InferInputTensor {
    InferInputTensor {
        name: "text".into(),
        datatype: "BYTES".into(),
        shape,
        parameters: HashMap::new(),
        contents: Some(InferTensorContents {
            bytes_contents: texts.iter().map(|t| t.as_bytes().to_vec()).collect(),
            ..Default::default()
        }),
    }
}

fn infer_request(inputs: Vec<InferInputTensor>, raw: Vec<Vec<u8>>) -> ModelInferRequest {
    ModelInferRequest {
        model_name: MODEL.into(),
        id: "req-1".into(),
        inputs,
        raw_input_contents: raw,
        ..Default::default()
    }
}

/// Asserts `status` has `code` and batchgate's `error_code`, with a message that says what.
fn assert_status(status: &Status, code: Code, error_code: &str, says: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(
        status
            .metadata()
            .get("batchgate-error-code")
            .and_then(|v| v.to_str().ok()),
        Some(error_code),
        "{status:?}"
    );
    assert!(
        status.message().contains(says),
        "{:?} does not say {says:?}",
        status.message()
    );
}

/// A `serve` of [`MODEL`] on the simulated worker at `worker_url`, with JWT authentication.
fn authenticated(infra: &Infra, worker_url: &str) -> batchgate::serve::ServeConfig {
    let mut config = serve_config(infra, worker_url, 2);
    if let Some(gateway) = config.gateway.as_mut() {
        gateway.models = vec![MODEL.to_owned()];
    }
    config.edge.auth = AuthConfig::Jwt {
        keys: KeySource::Secret(SECRET.as_bytes().to_vec()),
        issuer: None,
        audience: None,
    };
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_door_answers_in_order_and_refuses_bad_calls_with_the_right_status() {
    let worker = start_worker(fast_sim(2)).await;
    let infra = Infra::start(common::Backend::Memory).await;
    let mut config = authenticated(&infra, &worker.url);
    config.edge.rate_limit = Some(RateLimitConfig {
        overrides: HashMap::from([(LIMITED.to_owned(), 1)]),
        ..RateLimitConfig::default()
    });
    let serve = start_serve(config).await;
    let channel: Channel = Endpoint::from_shared(serve.url.clone())
        .expect("endpoint")
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .expect("connect");
    let mut grpc = GrpcInferenceServiceClient::new(channel);
    let user = token("grpc-user");
    let user = Some(user.as_str());

    // Live needs no token; the texts come back in order, from typed or raw contents.
    let live = grpc.server_live(ServerLiveRequest {}).await.expect("live");
    assert!(live.into_inner().live);
    let server = grpc
        .server_metadata(ServerMetadataRequest {})
        .await
        .expect("server metadata")
        .into_inner();
    assert_eq!(server.name, "batchgate");
    let metadata = grpc
        .model_metadata(with_token(
            ModelMetadataRequest {
                name: MODEL.into(),
                version: String::new(),
            },
            user,
        ))
        .await
        .expect("model metadata")
        .into_inner();
    assert_eq!(metadata.name, MODEL);
    let datatypes = |t: &[TensorMetadata]| t.iter().map(|t| t.datatype.clone()).collect::<Vec<_>>();
    assert_eq!(datatypes(&metadata.inputs), ["BYTES"]);
    assert_eq!(datatypes(&metadata.outputs), ["BYTES"]);
    let texts = ["first text", "second text", "third text"];
    for (inputs, raw) in [
        (vec![typed(vec![3], &texts)], vec![]),
        (
            vec![typed(vec![3, 1], &[])],
            vec![join_bytes(texts.iter().map(|t| t.as_bytes()))],
        ),
    ] {
        let answer = grpc
            .model_infer(with_token(infer_request(inputs, raw), user))
            .await
            .expect("infer")
            .into_inner();
        assert_eq!(
            (answer.model_name.as_str(), answer.id.as_str()),
            (MODEL, "req-1")
        );
        let [output] = answer.outputs.as_slice() else {
            panic!("one output tensor: {answer:?}");
        };
        assert_eq!(
            (output.datatype.as_str(), output.shape.as_slice()),
            ("BYTES", &[3i64][..])
        );
        let [raw] = answer.raw_output_contents.as_slice() else {
            panic!("one raw output: {answer:?}");
        };
        let got: Vec<&[u8]> = split_bytes(raw, 10).expect("raw BYTES");
        let want: Vec<String> = texts.iter().map(|t| sim_output(t)).collect();
        assert_eq!(got, want.iter().map(|w| w.as_bytes()).collect::<Vec<_>>());
    }

    // A model not served: NOT_FOUND, on metadata, readiness and inference alike.
    let missing = grpc
        .model_metadata(with_token(
            ModelMetadataRequest {
                name: "nope".into(),
                version: String::new(),
            },
            user,
        ))
        .await
        .expect_err("unknown model");
    assert_status(&missing, Code::NotFound, "model_not_found", "nope");
    let mut elsewhere = infer_request(vec![typed(vec![1], &["x"])], vec![]);
    elsewhere.model_name = "nope".into();
    let missing = grpc
        .model_infer(with_token(elsewhere, user))
        .await
        .expect_err("unknown model");
    assert_status(&missing, Code::NotFound, "model_not_found", "nope");

    // Bad tensors: INVALID_ARGUMENT, saying what is wrong.
    let mut fp32 = typed(vec![1], &["x"]);
    fp32.datatype = "FP32".into();
    for (request, says) in [
        (
            infer_request(vec![typed(vec![2], &["only one"])], vec![]),
            "shape",
        ),
        (infer_request(vec![fp32], vec![]), "FP32"),
        (infer_request(vec![], vec![]), "one input tensor"),
        (
            infer_request(vec![typed(vec![1], &[])], vec![vec![200, 0, 0, 0, b'x']]),
            "cut short",
        ),
        (infer_request(vec![typed(vec![1], &[""])], vec![]), "empty"),
    ] {
        let refused = grpc
            .model_infer(with_token(request, user))
            .await
            .expect_err(says);
        assert_status(&refused, Code::InvalidArgument, "invalid_request", says);
    }

    // No token, or a bad one: UNAUTHENTICATED, before anything else is looked at.
    let ready = || ModelReadyRequest {
        name: MODEL.into(),
        version: String::new(),
    };
    let anonymous = grpc.model_ready(ready()).await.expect_err("no token");
    assert_status(
        &anonymous,
        Code::Unauthenticated,
        "unauthenticated",
        "token",
    );
    let forged = grpc
        .model_infer(with_token(
            infer_request(vec![typed(vec![1], &["x"])], vec![]),
            Some("not-a-jwt"),
        ))
        .await
        .expect_err("bad token");
    assert_eq!(forged.code(), Code::Unauthenticated, "{forged:?}");
    assert!(
        grpc.model_ready(with_token(ready(), user))
            .await
            .expect("ready with a token")
            .into_inner()
            .ready
    );

    // Over the caller's rate: RESOURCE_EXHAUSTED with retry-after.
    let limited = token(LIMITED);
    grpc.model_ready(with_token(ready(), Some(&limited)))
        .await
        .expect("the first call of the minute");
    let over = grpc
        .model_ready(with_token(ready(), Some(&limited)))
        .await
        .expect_err("over the rate");
    assert_status(&over, Code::ResourceExhausted, "rate_limited", "too many");
    assert!(over.metadata().get("retry-after").is_some(), "{over:?}");

    // Each counted by method and status, and errors by their stable code.
    let page = metrics(&client(), &serve.url).await;
    for line in [
        r#"batchgate_grpc_requests_total{method="ModelInfer",code="OK"} 2"#,
        r#"batchgate_grpc_requests_total{method="ModelInfer",code="NOT_FOUND"} 1"#,
        r#"batchgate_grpc_requests_total{method="ModelInfer",code="INVALID_ARGUMENT"} 5"#,
        r#"batchgate_grpc_requests_total{method="ModelMetadata",code="NOT_FOUND"} 1"#,
        r#"batchgate_grpc_requests_total{method="ModelReady",code="RESOURCE_EXHAUSTED"} 1"#,
        r#"batchgate_http_errors_total{code="model_not_found"} 2"#,
        r#"batchgate_http_errors_total{code="invalid_request"} 5"#,
        r#"batchgate_http_errors_total{code="unauthenticated"} 2"#,
        r#"batchgate_http_errors_total{code="rate_limited"} 1"#,
    ] {
        assert!(page.contains(line), "no {line:?} in\n{page}");
    }
    // Only the good calls ran, and the second one's texts (identical, same caller) were
    // answered by the first one's tasks (dedupe).
    assert_eq!(worker.sim.stats().items, 3, "only the good calls ran");

    // An HTTP client on a gRPC path gets the JSON 415 of the API.
    let http = client()
        .post(format!(
            "{}/inference.GRPCInferenceService/ModelInfer",
            serve.url
        ))
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("POST");
    assert_eq!(http.status(), 415);
    assert!(serve.shutdown().await.drained);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_door_serves_over_tls_with_the_same_authentication() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path();
    make_certs(certs);
    let worker = start_worker(fast_sim(2)).await;
    let infra = Infra::start(common::Backend::Memory).await;
    let mut config = authenticated(&infra, &worker.url);
    config.tls = Some(TlsFiles {
        cert: certs.join("server.pem"),
        key: certs.join("server-key.pem"),
        client_ca: None,
    });
    let serve = start_serve(config).await;
    let ca = std::fs::read(certs.join("ca.pem")).expect("CA");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(serve.url.replace("http://", "https://"))
        .expect("endpoint")
        .tls_config(tls)
        .expect("TLS configuration")
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .expect("connect over TLS");
    let mut grpc = GrpcInferenceServiceClient::new(channel);
    let user = token("tls-user");
    let answer = grpc
        .model_infer(with_token(
            infer_request(vec![typed(vec![1], &["over TLS"])], vec![]),
            Some(&user),
        ))
        .await
        .expect("infer over TLS")
        .into_inner();
    let [raw] = answer.raw_output_contents.as_slice() else {
        panic!("one raw output: {answer:?}");
    };
    let want = sim_output("over TLS");
    assert_eq!(split_bytes(raw, 10).expect("raw BYTES"), [want.as_bytes()]);
    let anonymous = grpc
        .model_infer(infer_request(vec![typed(vec![1], &["x"])], vec![]))
        .await
        .expect_err("no token");
    assert_status(
        &anonymous,
        Code::Unauthenticated,
        "unauthenticated",
        "token",
    );
    assert!(serve.shutdown().await.drained);
}
