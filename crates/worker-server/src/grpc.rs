//! The worker batch API over gRPC (`proto/worker.proto`) and the standard health service,
//! mounted on the HTTP router by path: the port serves HTTP/1.1 and HTTP/2 alike, and gRPC
//! clients speak HTTP/2 with prior knowledge.

use axum::Router;
use batchgate_protocol::worker_grpc::worker_server::{Worker as WorkerService, WorkerServer};
use batchgate_protocol::worker_grpc::{InferRequest, InferResponse, SERVICE_NAME};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health as HealthService, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use super::{Served, MAX_BODY_BYTES};

/// The gRPC face of a served model.
struct GrpcApi {
    /// The model and its checks, shared with the HTTP routes.
    served: Served,
}

#[tonic::async_trait]
impl WorkerService for GrpcApi {
    async fn infer(
        &self,
        request: Request<InferRequest>,
    ) -> Result<Response<InferResponse>, Status> {
        let inputs = request.into_inner().inputs;
        let outputs = self
            .served
            .run(&inputs)
            .await
            .map_err(|e| e.grpc_status())?;
        Ok(Response::new(InferResponse { outputs }))
    }
}

/// The standard health service: the worker service, and the server as a whole (the empty
/// name), are serving for as long as the server runs.
struct Health;

/// `Watch` is not offered (batchgate's pool polls `Check`).
type WatchStream = std::pin::Pin<
    Box<
        dyn tonic::codegen::tokio_stream::Stream<Item = Result<HealthCheckResponse, Status>> + Send,
    >,
>;

#[tonic::async_trait]
impl HealthService for Health {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        match request.get_ref().service.as_str() {
            "" | SERVICE_NAME => Ok(Response::new(HealthCheckResponse {
                status: ServingStatus::Serving.into(),
            })),
            other => Err(Status::not_found(format!("unknown service {other:?}"))),
        }
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("use Check"))
    }
}

/// `router` with the gRPC services added under their paths.
pub(super) fn add_routes(router: Router, served: Served) -> Router {
    let worker = WorkerServer::new(GrpcApi { served })
        .max_decoding_message_size(MAX_BODY_BYTES)
        .max_encoding_message_size(MAX_BODY_BYTES);
    let health = HealthServer::new(Health);
    let health_name = <HealthServer<Health> as NamedService>::NAME;
    router
        .route_service(&format!("/{SERVICE_NAME}/{{*method}}"), worker)
        .route_service(&format!("/{health_name}/{{*method}}"), health)
}
