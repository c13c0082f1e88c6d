//! Every error the API answers with, mapped to an HTTP status and a stable code in one place.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use batchgate_protocol::api::{ErrorBody, ErrorDetail};
use batchgate_queue::{AdmitError, QueueError};
use batchgate_store::StoreError;
use std::time::Duration;

use crate::log_throttle::LogThrottle;

/// Backend failures are logged once a second at most (each request would log one).
static QUEUE_DOWN: LogThrottle = LogThrottle::new(Duration::from_secs(1));
static STORE_DOWN: LogThrottle = LogThrottle::new(Duration::from_secs(1));

/// The code of an answer refused below the routes, by its status.
fn rejected_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}

/// An error answer of the API. `Display` is the message clients see: it never carries
/// internals (backend errors are logged, not returned).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not valid JSON.
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    /// The body is not UTF-8.
    #[error("request body is not valid UTF-8")]
    InvalidUtf8,
    /// The body is JSON but not the expected shape (missing or mistyped fields).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The body is not declared as JSON.
    #[error("expected a request with `Content-Type: application/json`")]
    UnsupportedMediaType,
    /// The `input` field is longer than allowed.
    #[error("input is {got} bytes; the limit is {max}")]
    InputTooLarge {
        /// The input's length.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// The body is longer than allowed (before it was even parsed).
    #[error("request body exceeds the limit of {max} bytes")]
    BodyTooLarge {
        /// The limit.
        max: usize,
    },
    /// A query parameter could not be parsed.
    #[error("invalid query string: {0}")]
    InvalidQuery(String),
    /// No such task, or it expired.
    #[error("no task with this id (unknown or expired)")]
    TaskNotFound,
    /// No such route.
    #[error("no such endpoint")]
    RouteNotFound,
    /// Known route, wrong method.
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    /// The queue or the result store is at capacity: shed.
    #[error("the service is at capacity; retry later")]
    Overloaded {
        /// Seconds for `Retry-After`.
        retry_after_secs: u64,
    },
    /// The gateway is serving its most requests at once (`max_concurrent_requests`).
    #[error("this gateway is serving its most requests at once; retry later")]
    ConcurrencyLimited {
        /// Seconds for `Retry-After`.
        retry_after_secs: u64,
    },
    /// This caller has its most requests in flight already (`max_requests_per_caller`).
    #[error("this caller has {limit} requests in flight already; retry when one is answered")]
    TooManyInFlight {
        /// The caller's limit.
        limit: usize,
        /// Seconds for `Retry-After`.
        retry_after_secs: u64,
    },
    /// This caller sent more than its rate allows.
    #[error("too many requests from this caller; retry later")]
    RateLimited {
        /// Seconds for `Retry-After`.
        retry_after_secs: u64,
        /// Requests allowed per period (`RateLimit-Limit`).
        limit: u64,
        /// Seconds until the allowance is whole again (`RateLimit-Reset`).
        reset_secs: u64,
    },
    /// A request holds more inputs than the caller's rate limit allows in a whole period:
    /// it could never pass, so it is refused as too large rather than as too early.
    #[error("this request holds {inputs} inputs; the rate limit allows at most {limit} at once")]
    TooManyInputs {
        /// Inputs in the request.
        inputs: u64,
        /// The caller's limit per period.
        limit: u64,
    },
    /// The queue's estimated wait is longer than the client's `timeout_ms`.
    #[error("the estimated wait ({estimate_ms} ms) exceeds timeout_ms; retry later")]
    DeadlineUnmeetable {
        /// The estimated wait.
        estimate_ms: u64,
        /// Seconds for `Retry-After`.
        retry_after_secs: u64,
    },
    /// The caller has no valid bearer token.
    #[error("{0}")]
    Unauthenticated(String),
    /// The body's `client_id` is not the token's subject.
    #[error("client_id does not match the authenticated identity")]
    ClientIdMismatch,
    /// The admin API is called without the right token.
    #[error("missing or wrong admin token")]
    Unauthorized,
    /// The admin API is not configured.
    #[error("the admin API is disabled; start the gateway with --admin-token")]
    AdminDisabled,
    /// The service is draining for shutdown.
    #[error("the service is shutting down; retry on another instance")]
    ShuttingDown {
        /// Seconds for `Retry-After`.
        retry_after_secs: u64,
    },
    /// A backend failed; details are in the logs.
    #[error("a backend is unavailable; retry later")]
    Unavailable {
        /// Seconds for `Retry-After`.
        retry_after_secs: u64,
    },
    /// The request took longer than the gateway allows.
    #[error("request timed out")]
    Timeout,
    /// Refused by a layer below the routes (the HTTP stack or a framework extractor) with
    /// this status; the answer is put in our shape.
    #[error("the request was refused ({0})")]
    Rejected(StatusCode),
    /// The request names a model this deployment does not serve.
    #[error("no model named {0:?} is served here")]
    ModelNotFound(String),
    /// The request asks for something the front door does not offer (e.g. `dimensions`).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// An input of a front-door request failed at the worker: the request has no answer.
    #[error("input {index} failed: {reason}")]
    InferenceFailed {
        /// Which input (its position in the request).
        index: usize,
        /// Why, as the task's result says.
        reason: String,
    },
    /// The results of a front-door request did not come within the wait allowed.
    #[error("the results did not come within {wait_ms} ms")]
    ResultTimeout {
        /// The wait, in milliseconds.
        wait_ms: u64,
    },
}

impl ApiError {
    /// Status and stable snake_case code of each error: the one table of them.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            ApiError::InvalidUtf8 => (StatusCode::BAD_REQUEST, "invalid_utf8"),
            ApiError::InvalidRequest(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::InputTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "input_too_large"),
            ApiError::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            ApiError::InvalidQuery(_) => (StatusCode::BAD_REQUEST, "invalid_query"),
            ApiError::TaskNotFound => (StatusCode::NOT_FOUND, "task_not_found"),
            ApiError::RouteNotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::TooManyInputs { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_many_inputs"),
            ApiError::ConcurrencyLimited { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "concurrency_limited")
            }
            ApiError::DeadlineUnmeetable { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "deadline_unmeetable")
            }
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            ApiError::ClientIdMismatch => (StatusCode::FORBIDDEN, "client_id_mismatch"),
            ApiError::AdminDisabled => (StatusCode::NOT_FOUND, "admin_disabled"),
            ApiError::ShuttingDown { .. } => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            ApiError::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Timeout => (StatusCode::REQUEST_TIMEOUT, "timeout"),
            ApiError::TooManyInFlight { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_in_flight")
            }
            ApiError::Rejected(status) => (*status, rejected_code(*status)),
            ApiError::ModelNotFound(_) => (StatusCode::NOT_FOUND, "model_not_found"),
            ApiError::Unsupported(_) => (StatusCode::BAD_REQUEST, "unsupported_parameter"),
            ApiError::InferenceFailed { .. } => (StatusCode::BAD_GATEWAY, "inference_failed"),
            ApiError::ResultTimeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "result_timeout"),
        }
    }

    /// Seconds for `Retry-After`, on the errors that carry it.
    pub(crate) fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::Overloaded { retry_after_secs }
            | ApiError::ConcurrencyLimited { retry_after_secs }
            | ApiError::TooManyInFlight {
                retry_after_secs, ..
            }
            | ApiError::RateLimited {
                retry_after_secs, ..
            }
            | ApiError::DeadlineUnmeetable {
                retry_after_secs, ..
            }
            | ApiError::ShuttingDown { retry_after_secs }
            | ApiError::Unavailable { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        }
    }

    /// Maps a queue failure, logging what the client will not see.
    pub fn from_queue(error: &QueueError, retry_after_secs: u64) -> Self {
        match error {
            QueueError::Full { .. } => ApiError::Overloaded { retry_after_secs },
            QueueError::Unavailable(detail) => {
                if let Some(suppressed) = QUEUE_DOWN.admit() {
                    tracing::error!(%detail, suppressed, "queue unavailable");
                }
                ApiError::Unavailable { retry_after_secs }
            }
        }
    }

    /// Maps an admission failure, logging what the client will not see.
    pub fn from_admit(error: &AdmitError, retry_after_secs: u64) -> Self {
        match error {
            AdmitError::Queue(e) => Self::from_queue(e, retry_after_secs),
            AdmitError::Store(e) => Self::from_store(e, retry_after_secs),
        }
    }

    /// Maps a result-store failure, logging what the client will not see.
    pub fn from_store(error: &StoreError, retry_after_secs: u64) -> Self {
        match error {
            StoreError::Full { .. } => ApiError::Overloaded { retry_after_secs },
            StoreError::Unavailable(detail) => {
                if let Some(suppressed) = STORE_DOWN.admit() {
                    tracing::error!(%detail, suppressed, "result store unavailable");
                }
                ApiError::Unavailable { retry_after_secs }
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = self.to_string();
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message: message.clone(),
            },
        };
        let mut response = (status, Json(body)).into_response();
        // The front doors that speak other protocols re-render the error in their own shape
        // from these (`routes/shape.rs`).
        response.extensions_mut().insert(ErrorMessage(message));
        if let Some(secs) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let ApiError::RateLimited {
            limit, reset_secs, ..
        } = &self
        {
            // draft-ietf-httpapi-ratelimit-headers: none left now; whole again in `reset`.
            let headers = response.headers_mut();
            headers.insert("ratelimit-limit", HeaderValue::from(*limit));
            headers.insert("ratelimit-remaining", HeaderValue::from(0u64));
            headers.insert("ratelimit-reset", HeaderValue::from(*reset_secs));
        }
        if matches!(self, ApiError::Unauthenticated(_)) {
            // RFC 6750: which scheme, and that the token (if any) was not accepted.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        // The code travels with the response so the metrics layer can count it by code.
        response.extensions_mut().insert(ErrorCode(code));
        response
    }
}

/// The stable code of an error response, left in the response's extensions for middleware.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

/// The message of an error response, left in the response's extensions for middleware.
#[derive(Debug, Clone)]
pub struct ErrorMessage(pub String);

impl ApiError {
    /// One error of each kind, and each status a refusal below the routes is mapped from: the
    /// OpenAPI document's table of codes is made from these, and tests check each is
    /// described. [`ApiError::kind_listed`] makes a new variant a compile error until it is
    /// listed here.
    pub fn samples() -> Vec<ApiError> {
        let retry_after_secs = 1;
        let mut samples = vec![
            ApiError::InvalidJson("…".into()),
            ApiError::InvalidUtf8,
            ApiError::InvalidRequest("…".into()),
            ApiError::UnsupportedMediaType,
            ApiError::InputTooLarge { got: 2, max: 1 },
            ApiError::BodyTooLarge { max: 1 },
            ApiError::InvalidQuery("…".into()),
            ApiError::TaskNotFound,
            ApiError::RouteNotFound,
            ApiError::MethodNotAllowed,
            ApiError::Overloaded { retry_after_secs },
            ApiError::ConcurrencyLimited { retry_after_secs },
            ApiError::TooManyInFlight {
                limit: 1,
                retry_after_secs,
            },
            ApiError::RateLimited {
                retry_after_secs,
                limit: 1,
                reset_secs: 1,
            },
            ApiError::TooManyInputs {
                inputs: 2,
                limit: 1,
            },
            ApiError::DeadlineUnmeetable {
                estimate_ms: 1,
                retry_after_secs,
            },
            ApiError::Unauthenticated("…".into()),
            ApiError::ClientIdMismatch,
            ApiError::Unauthorized,
            ApiError::AdminDisabled,
            ApiError::ShuttingDown { retry_after_secs },
            ApiError::Unavailable { retry_after_secs },
            ApiError::Timeout,
            ApiError::ModelNotFound("…".into()),
            ApiError::Unsupported("…".into()),
            ApiError::InferenceFailed {
                index: 0,
                reason: "…".into(),
            },
            ApiError::ResultTimeout { wait_ms: 1 },
        ];
        samples.extend(
            [
                StatusCode::BAD_REQUEST,
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                StatusCode::INTERNAL_SERVER_ERROR,
            ]
            .map(ApiError::Rejected),
        );
        samples
    }

    /// Names every variant without a wildcard, so that adding one fails to compile until it
    /// is in [`ApiError::samples`] too.
    #[doc(hidden)]
    pub fn kind_listed(&self) -> bool {
        match self {
            ApiError::InvalidJson(_)
            | ApiError::InvalidUtf8
            | ApiError::InvalidRequest(_)
            | ApiError::UnsupportedMediaType
            | ApiError::InputTooLarge { .. }
            | ApiError::BodyTooLarge { .. }
            | ApiError::InvalidQuery(_)
            | ApiError::TaskNotFound
            | ApiError::RouteNotFound
            | ApiError::MethodNotAllowed
            | ApiError::Overloaded { .. }
            | ApiError::ConcurrencyLimited { .. }
            | ApiError::TooManyInFlight { .. }
            | ApiError::RateLimited { .. }
            | ApiError::TooManyInputs { .. }
            | ApiError::DeadlineUnmeetable { .. }
            | ApiError::Unauthenticated(_)
            | ApiError::ClientIdMismatch
            | ApiError::Unauthorized
            | ApiError::AdminDisabled
            | ApiError::ShuttingDown { .. }
            | ApiError::Unavailable { .. }
            | ApiError::Timeout
            | ApiError::Rejected(_)
            | ApiError::ModelNotFound(_)
            | ApiError::Unsupported(_)
            | ApiError::InferenceFailed { .. }
            | ApiError::ResultTimeout { .. } => true,
        }
    }

    /// Whether the answer carries `Retry-After`.
    pub fn has_retry_after(&self) -> bool {
        self.retry_after().is_some()
    }
}
