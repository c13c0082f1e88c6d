//! The gRPC adapter against a real gRPC server on a loopback port.

use batchgate_protocol::worker_grpc::worker_server::{Worker as WorkerService, WorkerServer};
use batchgate_protocol::worker_grpc::InferResponse;
use tonic::{Request, Response, Status};

use super::*;

/// Upper-cases its inputs; an input `!NAME` makes it answer the gRPC code NAME instead, and
/// `?short` one output too few.
struct Upper;

#[tonic::async_trait]
impl WorkerService for Upper {
    async fn infer(
        &self,
        request: Request<InferRequest>,
    ) -> Result<Response<InferResponse>, Status> {
        let inputs = request.into_inner().inputs;
        match inputs.first().map(String::as_str) {
            Some("!RESOURCE_EXHAUSTED") => Err(Status::resource_exhausted("all slots busy")),
            Some("!INVALID_ARGUMENT") => Err(Status::invalid_argument("batch too large")),
            Some("?short") => Ok(Response::new(InferResponse { outputs: vec![] })),
            _ => Ok(Response::new(InferResponse {
                outputs: inputs.iter().map(|i| i.to_uppercase()).collect(),
            })),
        }
    }
}

/// Serves `Upper` and the health service; returns `host:port` and the health reporter.
async fn serve() -> (String, tonic_health::server::HealthReporter) {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<WorkerServer<Upper>>().await;
    let routes = tonic::service::Routes::new(WorkerServer::new(Upper))
        .add_service(health)
        .prepare()
        .into_axum_router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move { axum::serve(listener, routes).await });
    (addr, reporter)
}

fn batch(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn round_trip_keeps_order_and_health_follows_the_server() {
    let (addr, reporter) = serve().await;
    let w = GrpcWorker::new(&addr, Duration::from_secs(5)).expect("client");
    assert_eq!(
        w.infer(&batch(&["a", "b"])).await.expect("answer"),
        ["A", "B"]
    );
    w.health().await.expect("serving");
    reporter.set_not_serving::<WorkerServer<Upper>>().await;
    let error = w.health().await.expect_err("not serving");
    assert!(
        matches!(error, WorkerError::Status { status: 503, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn worker_statuses_map_to_http_ones_and_short_answers_are_invalid() {
    let (addr, _reporter) = serve().await;
    let w = GrpcWorker::new(&addr, Duration::from_secs(5)).expect("client");
    let overloaded = w
        .infer(&batch(&["!RESOURCE_EXHAUSTED"]))
        .await
        .expect_err("429");
    assert!(overloaded.is_overload(), "{overloaded:?}");
    match w.infer(&batch(&["!INVALID_ARGUMENT"])).await {
        Err(WorkerError::Status { status, message }) => {
            assert_eq!((status, message.as_str()), (400, "batch too large"));
        }
        other => panic!("unexpected {other:?}"),
    }
    let short = w.infer(&batch(&["?short", "x"])).await.expect_err("short");
    assert!(
        matches!(short, WorkerError::InvalidResponse(_)),
        "{short:?}"
    );
}

#[tokio::test]
async fn an_unreachable_worker_is_unreachable_not_a_status() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let w = GrpcWorker::new(&format!("127.0.0.1:{port}"), Duration::from_secs(2)).expect("client");
    let error = w.infer(&batch(&["a"])).await.expect_err("closed port");
    assert!(matches!(error, WorkerError::Unreachable(_)), "{error:?}");
    let error = w.health().await.expect_err("closed port");
    assert!(matches!(error, WorkerError::Unreachable(_)), "{error:?}");
}

#[test]
fn every_code_has_an_http_status() {
    let overload = [Code::ResourceExhausted, Code::Unavailable].map(http_equivalent);
    assert_eq!(overload, [429, 503]);
}
