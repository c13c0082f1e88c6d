//! The methods of `inference.GRPCInferenceService`, each doing what its HTTP route does
//! (`kserve.rs`): the same readiness, metadata and admission (`admit.rs`), so the texts of a
//! gRPC call are batched with every other caller's, whatever door they came through.

use axum::extract::State;
use batchgate_protocol::kserve_grpc::grpc_inference_service_server::GrpcInferenceService;
use batchgate_protocol::kserve_grpc::model_metadata_response::TensorMetadata;
use batchgate_protocol::kserve_grpc::{
    ModelInferRequest, ModelInferResponse, ModelMetadataRequest, ModelMetadataResponse,
    ModelReadyRequest, ModelReadyResponse, ServerLiveRequest, ServerLiveResponse,
    ServerMetadataRequest, ServerMetadataResponse, ServerReadyRequest, ServerReadyResponse,
};
use tonic::{Request, Response, Status};

use super::status_of;
use super::tensor::{output_of, texts_of};
use crate::error::ApiError;
use crate::routes::admit::run_all;
use crate::routes::guard::Identity;
use crate::routes::{health, kserve};
use crate::state::AppState;

/// The service's methods; one per gateway, shared by every call (cloning the generated
/// server around it is shallow).
pub(super) struct Door {
    /// What every route of the gateway reads.
    pub(super) state: AppState,
}

impl Door {
    /// Ready as `/readyz` says.
    async fn ready(&self) -> bool {
        let (status, _) = health::readyz(State(self.state.ops.clone())).await;
        status.is_success()
    }

    /// The model's position among those served; a version other than none is refused,
    /// since batchgate serves one version of each model (the HTTP door has no version
    /// routes either).
    fn served(&self, name: &str, version: &str) -> Result<usize, Status> {
        let model = kserve::served(&self.state, name).map_err(|e| status_of(&e))?;
        if !version.is_empty() {
            return Err(status_of(&ApiError::Unsupported(format!(
                "model version {version:?}: each model has one version; leave it empty"
            ))));
        }
        Ok(model)
    }
}

/// The caller the guard identified (it runs before every method that calls this).
fn caller_of<T>(request: &Request<T>) -> Result<String, Status> {
    request
        .extensions()
        .get::<Identity>()
        .map(|Identity(caller)| caller.clone())
        .ok_or_else(|| {
            status_of(&ApiError::Unauthenticated(
                "no identity: this method was not guarded. This is a bug.".into(),
            ))
        })
}

#[tonic::async_trait]
impl GrpcInferenceService for Door {
    async fn server_live(
        &self,
        _request: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _request: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: self.ready().await,
        }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        caller_of(&request)?;
        let request = request.get_ref();
        self.served(&request.name, &request.version)?;
        Ok(Response::new(ModelReadyResponse {
            ready: self.ready().await,
        }))
    }

    async fn server_metadata(
        &self,
        _request: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "batchgate".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: Vec::new(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        caller_of(&request)?;
        let request = request.into_inner();
        self.served(&request.name, &request.version)?;
        let metadata = kserve::metadata_of(request.name);
        let tensors = |tensors: Vec<batchgate_protocol::front::kserve::TensorMetadata>| {
            tensors
                .into_iter()
                .map(|t| TensorMetadata {
                    name: t.name,
                    datatype: t.datatype,
                    shape: t.shape,
                })
                .collect()
        };
        Ok(Response::new(ModelMetadataResponse {
            name: metadata.name,
            versions: metadata.versions,
            platform: metadata.platform,
            inputs: tensors(metadata.inputs),
            outputs: tensors(metadata.outputs),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let caller = caller_of(&request)?;
        let request = request.into_inner();
        let model = self.served(&request.model_name, &request.model_version)?;
        let texts = texts_of(request.inputs, request.raw_input_contents, &request.outputs)
            .map_err(|e| status_of(&e))?;
        let outputs = run_all(&self.state, &caller, model, texts)
            .await
            .map_err(|e| status_of(&e))?;
        let (tensor, raw) = output_of(&outputs);
        Ok(Response::new(ModelInferResponse {
            model_name: request.model_name,
            model_version: String::new(),
            id: request.id,
            parameters: Default::default(),
            outputs: vec![tensor],
            raw_output_contents: vec![raw],
        }))
    }
}
