//! What can go wrong serving a batch, and how each protocol says it: one status and one
//! stable code per error, in one place.

use axum::extract::rejection::JsonRejection;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use batchgate_protocol::api::{ErrorBody, ErrorDetail};
use batchgate_worker::WorkerError;

use super::OVERLOAD_RETRY_AFTER_SECS;

/// Why a call got no outputs.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// A call with no inputs.
    #[error("batch has no inputs")]
    Empty,
    /// More inputs than the model takes (checked by the server for models other than the
    /// simulator, which checks and counts it itself).
    #[error("batch of {got} inputs exceeds the limit of {max}")]
    TooLarge { got: usize, max: usize },
    /// The model refused or failed the batch.
    #[error("{}", model_message(.0))]
    Model(WorkerError),
    /// The request was not what the protocol expects.
    #[error("{0}")]
    BadRequest(String, StatusCode),
    /// No model of that name here.
    #[error("unknown model {0:?}")]
    UnknownModel(String),
}

/// The model's own words when it gave a status, else the kind of failure.
fn model_message(error: &WorkerError) -> String {
    match error {
        WorkerError::Status { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

impl ApiError {
    /// A request body the JSON extractor refused.
    pub(crate) fn from_rejection(rejection: &JsonRejection) -> ApiError {
        ApiError::BadRequest(rejection.body_text(), rejection.status())
    }

    /// The HTTP status of this error.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::Empty => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Model(WorkerError::Status { status, .. }) => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            ApiError::Model(WorkerError::Timeout) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Model(WorkerError::Unreachable(_)) => StatusCode::BAD_GATEWAY,
            ApiError::Model(
                WorkerError::InvalidResponse(_) | WorkerError::RetryBudgetExhausted(_),
            ) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::BadRequest(_, status) => *status,
            ApiError::UnknownModel(_) => StatusCode::NOT_FOUND,
        }
    }

    /// The stable code of this error.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            ApiError::Empty => "empty_batch",
            ApiError::TooLarge { .. } => "batch_too_large",
            ApiError::BadRequest(..) => "invalid_request",
            ApiError::UnknownModel(_) => "model_not_found",
            ApiError::Model(_) => match self.status().as_u16() {
                413 => "batch_too_large",
                429 => "worker_overloaded",
                503 => "worker_unavailable",
                504 => "model_timeout",
                400..=499 => "invalid_request",
                _ => "model_failed",
            },
        }
    }

    /// The answer in the given protocol's error shape; 429 carries `Retry-After`.
    pub(crate) fn render(&self, shape: Shape) -> Response {
        let status = self.status();
        let body = match shape {
            Shape::BatchApi => Json(ErrorBody {
                error: ErrorDetail {
                    code: self.code().into(),
                    message: self.to_string(),
                },
            })
            .into_response(),
            Shape::KserveV2 => Json(batchgate_protocol::kserve_v2::ErrorResponse {
                error: self.to_string(),
            })
            .into_response(),
            Shape::OpenAi => Json(serde_json::json!({"error": {
                "message": self.to_string(),
                "type": if status.is_server_error() { "server_error" } else { "invalid_request_error" },
                "code": self.code(),
            }}))
            .into_response(),
        };
        let mut response = (status, body).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(OVERLOAD_RETRY_AFTER_SECS));
        }
        response
    }

    /// The gRPC status of this error.
    pub(crate) fn grpc_status(&self) -> tonic::Status {
        use tonic::Code;
        let code = match self.status().as_u16() {
            429 => Code::ResourceExhausted,
            503 => Code::Unavailable,
            504 => Code::DeadlineExceeded,
            404 => Code::NotFound,
            400..=499 => Code::InvalidArgument,
            _ => Code::Internal,
        };
        tonic::Status::new(code, self.to_string())
    }
}

/// Which protocol's error body to answer with.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shape {
    /// `{"error": {"code", "message"}}`.
    BatchApi,
    /// `{"error": "message"}`.
    KserveV2,
    /// `{"error": {"message", "type", "code"}}`.
    OpenAi,
}
