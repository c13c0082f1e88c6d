//! The KServe V2 / Open Inference Protocol over gRPC (`inference.GRPCInferenceService`,
//! `proto/grpc_predict_v2.proto`), on the API's own port: the port speaks HTTP/2 without TLS
//! (prior knowledge) and by ALPN over TLS, so gRPC clients reach it as they are. Its methods
//! are mounted on the router by path, `/inference.GRPCInferenceService/{method}`.
//!
//! Every call passes [`GrpcFront`], this door's counterpart of the HTTP front service
//! (`front.rs`), which answers in gRPC's terms:
//!
//! - a request that is not `application/grpc` gets the JSON `415 unsupported_media_type` (it
//!   came from an HTTP client);
//! - its request id (`x-request-id` metadata, kept if acceptable) and its span;
//! - the guard (`guard.rs`) before the methods that name a model (`ModelReady`,
//!   `ModelMetadata`, `ModelInfer`), as the HTTP routes under `/v2/models/`: the token in the
//!   `authorization` metadata, rate limit, the caller's share, the gateway's limit;
//! - the request timeout;
//! - every error as a gRPC status ([`status_of`]) whose code follows the HTTP status of the
//!   same error on the HTTP door, with batchgate's stable code in the `batchgate-error-code`
//!   metadata and `retry-after` where HTTP has it;
//! - the answer counted by method and gRPC status, and errors by stable code, in the same
//!   `batchgate_http_errors_total` as the other doors.
//!
//! Layout: [`service`] (the methods), [`tensor`] (tensors in and out).

mod service;
mod tensor;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use batchgate_protocol::kserve_grpc::grpc_inference_service_server::GrpcInferenceServiceServer;
use batchgate_protocol::kserve_grpc::SERVICE_NAME;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::{Code, Status};
use tower::Service;
use tracing::field::Empty;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{guard, request_id};
use crate::error::{ApiError, ErrorCode, ErrorMessage};
use crate::metrics::{CodeLabel, GrpcLabels, MethodLabel, ShedLabel};
use crate::state::AppState;

/// The metadata key of batchgate's stable error code on an error status.
pub(crate) const ERROR_CODE_KEY: &str = "batchgate-error-code";

/// The methods served; any other is `UNIMPLEMENTED` (counted as `unknown`).
const METHODS: [&str; 6] = [
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
    "ModelInfer",
];

/// The methods that name a model, and so pass the guard.
const GUARDED: [&str; 3] = ["ModelReady", "ModelMetadata", "ModelInfer"];

/// `router` with the gRPC service added under its path, around [`GrpcFront`].
pub(super) fn add_routes(router: Router<AppState>, state: &AppState) -> Router<AppState> {
    let service = GrpcInferenceServiceServer::new(service::Door {
        state: state.clone(),
    })
    .max_decoding_message_size(state.config.max_body_bytes());
    let front = GrpcFront {
        inner: service,
        state: state.clone(),
    };
    router.route_service(&format!("/{SERVICE_NAME}/{{*method}}"), front)
}

/// The service around the gRPC methods; see the module's documentation.
#[derive(Clone)]
struct GrpcFront {
    inner: GrpcInferenceServiceServer<service::Door>,
    state: AppState,
}

impl Service<Request> for GrpcFront {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The generated server is always ready; each call gets a clone of it.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let front = self.clone();
        Box::pin(async move { Ok(front.handle(request).await) })
    }
}

impl GrpcFront {
    /// One call, through everything the module's documentation lists.
    async fn handle(self, mut request: Request) -> Response {
        let request_id = request_id::ensure(request.headers_mut());
        let method = method_of(request.uri().path());
        let span = call_span(&request, request_id.as_ref(), method);
        let started = Instant::now();
        let mut response = self.guarded(method, request).instrument(span.clone()).await;
        let code = code_of(&response);
        let metrics = &self.state.metrics;
        metrics
            .grpc_requests
            .get_or_create(&GrpcLabels {
                method,
                code: code_name(code),
            })
            .inc();
        metrics
            .grpc_duration
            .get_or_create(&MethodLabel { method })
            .observe(started.elapsed().as_secs_f64());
        if let Some(error_code) = stable_code(&response, code) {
            metrics
                .errors
                .get_or_create(&CodeLabel { code: error_code })
                .inc();
            if matches!(error_code, "overloaded" | "deadline_unmeetable") {
                metrics
                    .shed
                    .get_or_create(&ShedLabel { reason: error_code })
                    .inc();
            }
        }
        if let Some(id) = request_id {
            response
                .headers_mut()
                .entry(request_id::HEADER)
                .or_insert(id);
        }
        if batchgate_telemetry::enabled() {
            span.record("rpc.grpc.status_code", code as i32);
        }
        tracing::debug!(parent: &span, grpc_status = code as i32,
            latency_ms = started.elapsed().as_secs_f64() * 1e3, "answered");
        response
    }

    /// The content type, the guard, then the method within the request timeout.
    async fn guarded(&self, method: &'static str, mut request: Request) -> Response {
        if !is_grpc(request.headers()) {
            return ApiError::UnsupportedMediaType.into_response();
        }
        let _admitted = if GUARDED.contains(&method) {
            match guard::admit_caller(&self.state, &mut request).await {
                Ok(admitted) => Some(admitted),
                Err(refused) => return refusal(&refused),
            }
        } else {
            None
        };
        let mut inner = self.inner.clone();
        let timeout = self.state.config.request_timeout;
        match tokio::time::timeout(timeout, inner.call(request)).await {
            Ok(Ok(response)) => response.map(Body::new),
            Ok(Err(never)) => match never {},
            Err(_) => answer(status_of(&ApiError::Timeout)),
        }
    }
}

/// An error as a gRPC status: the code that matches its HTTP status, its message, its stable
/// code in [`ERROR_CODE_KEY`], and `retry-after` where the HTTP answer has it.
pub(crate) fn status_of(error: &ApiError) -> Status {
    let (http, code) = error.status_and_code();
    status_from(
        http,
        code,
        error.to_string(),
        error.retry_after().map(HeaderValue::from),
    )
}

fn status_from(
    http: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<HeaderValue>,
) -> Status {
    let mut status = Status::new(grpc_code(http), message);
    let metadata = status.metadata_mut();
    metadata.insert(
        MetadataKey::from_static(ERROR_CODE_KEY),
        MetadataValue::from_static(code),
    );
    if let Some(secs) = retry_after.and_then(|v| MetadataValue::try_from(v.as_bytes()).ok()) {
        metadata.insert(MetadataKey::from_static("retry-after"), secs);
    }
    status
}

/// The gRPC code of an error answered over HTTP with `status`: the one table of them.
fn grpc_code(status: StatusCode) -> Code {
    match status.as_u16() {
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        405 => Code::Unimplemented,
        408 | 504 => Code::DeadlineExceeded,
        429 => Code::ResourceExhausted,
        503 => Code::Unavailable,
        s if s >= 500 => Code::Internal,
        _ => Code::InvalidArgument,
    }
}

/// A refusal of the guard (an HTTP answer made from an [`ApiError`]) as a gRPC answer.
fn refusal(refused: &Response) -> Response {
    let code = refused
        .extensions()
        .get::<ErrorCode>()
        .map_or("internal", |c| c.0);
    let message = refused
        .extensions()
        .get::<ErrorMessage>()
        .map_or_else(|| "refused".to_owned(), |m| m.0.clone());
    let retry_after = refused.headers().get(header::RETRY_AFTER).cloned();
    answer(status_from(refused.status(), code, message, retry_after))
}

/// A status as a whole answer (its "trailers-only" form: the status in the headers).
fn answer(status: Status) -> Response {
    status.into_http::<Body>()
}

/// Whether the request declares gRPC (`application/grpc`, `application/grpc+proto`).
fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The method a path names, one of [`METHODS`], or `unknown`.
fn method_of(path: &str) -> &'static str {
    let name = path
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(SERVICE_NAME))
        .and_then(|p| p.strip_prefix('/'))
        .unwrap_or("");
    METHODS
        .into_iter()
        .find(|m| *m == name)
        .unwrap_or("unknown")
}

/// The status of an answer: in its headers when it is an error (trailers-only), else `OK`
/// (a unary answer with a message; its `grpc-status` follows in the trailers); for the
/// JSON answer to an HTTP client, the code of its HTTP status.
fn code_of(response: &Response) -> Code {
    if response.status() != StatusCode::OK {
        return grpc_code(response.status());
    }
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(Code::Ok, Code::from_i32)
}

/// The stable code of an error answer: batchgate's, or for a status tonic made itself
/// (a message that does not decode, or is too large; an unknown method) the nearest one.
fn stable_code(response: &Response, code: Code) -> Option<&'static str> {
    if let Some(ErrorCode(code)) = response.extensions().get::<ErrorCode>() {
        return Some(code); // the JSON 415
    }
    if code == Code::Ok {
        return None;
    }
    let ours = response
        .headers()
        .get(ERROR_CODE_KEY)
        .and_then(|v| v.to_str().ok());
    Some(match ours {
        Some(text) => known_codes()
            .iter()
            .copied()
            .find(|c| *c == text)
            .unwrap_or("internal"),
        None => match code {
            Code::Unimplemented => "not_found",
            Code::OutOfRange | Code::ResourceExhausted => "body_too_large",
            _ => "invalid_request",
        },
    })
}

/// Every stable code, as `'static` labels for the error counter.
fn known_codes() -> &'static [&'static str] {
    static CODES: OnceLock<Vec<&'static str>> = OnceLock::new();
    CODES.get_or_init(|| {
        ApiError::samples()
            .iter()
            .map(|e| e.status_and_code().1)
            .collect()
    })
}

/// The canonical name of a gRPC status code (`NOT_FOUND`), the metrics' label.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The call's span: what its log lines carry (`request_id`, as `request_id::ensure` gave
/// it, then `task_id`), and with
/// tracing on the root of its trace (continuing the client's `traceparent` metadata), named
/// as OpenTelemetry names RPC spans. With tracing off it is a debug span, as an HTTP
/// request's is (`routes/span.rs`): no line is written about one call at the default level.
fn call_span(request: &Request, request_id: Option<&HeaderValue>, method: &'static str) -> Span {
    let request_id = request_id.and_then(|v| v.to_str().ok()).unwrap_or("");
    if !batchgate_telemetry::enabled() {
        return tracing::debug_span!("grpc.request", request_id = request_id, task_id = Empty);
    }
    let span = tracing::info_span!(
        "grpc.request",
        otel.name = %format_args!("{SERVICE_NAME}/{method}"),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = SERVICE_NAME,
        rpc.method = method,
        rpc.grpc.status_code = Empty,
        request_id = request_id,
        task_id = Empty,
    );
    if let Some(parent) = batchgate_telemetry::http_parent(request.headers()) {
        // Fails only when no OpenTelemetry layer is installed, and then `http_parent` is None.
        let _ = span.set_parent(parent);
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_a_grpc_code_that_fits_its_kind() {
        for error in ApiError::samples() {
            let (http, code) = error.status_and_code();
            let status = status_of(&error);
            let expected = match code {
                "model_not_found" | "task_not_found" | "not_found" | "admin_disabled" => {
                    Code::NotFound
                }
                "unauthenticated" | "unauthorized" => Code::Unauthenticated,
                "overloaded"
                | "concurrency_limited"
                | "deadline_unmeetable"
                | "shutting_down"
                | "unavailable" => Code::Unavailable,
                "rate_limited" | "too_many_in_flight" => Code::ResourceExhausted,
                "timeout" | "result_timeout" => Code::DeadlineExceeded,
                _ if http.is_client_error() && http != StatusCode::METHOD_NOT_ALLOWED => {
                    if code == "client_id_mismatch" {
                        Code::PermissionDenied
                    } else {
                        Code::InvalidArgument
                    }
                }
                _ if http == StatusCode::METHOD_NOT_ALLOWED => Code::Unimplemented,
                _ => Code::Internal,
            };
            assert_eq!(status.code(), expected, "{code}");
            assert_eq!(
                status.metadata().get(ERROR_CODE_KEY).map(|v| v.as_bytes()),
                Some(code.as_bytes())
            );
            assert_eq!(
                status.metadata().get("retry-after").is_some(),
                error.has_retry_after(),
                "{code}"
            );
            assert!(known_codes().contains(&code));
        }
    }

    #[test]
    fn methods_are_named_by_their_path() {
        assert_eq!(
            method_of("/inference.GRPCInferenceService/ModelInfer"),
            "ModelInfer"
        );
        assert_eq!(
            method_of("/inference.GRPCInferenceService/ModelStreamInfer"),
            "unknown"
        );
        assert_eq!(method_of("/other.Service/ModelInfer"), "unknown");
    }
}
