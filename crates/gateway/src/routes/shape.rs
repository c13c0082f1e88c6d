//! Error answers in the shape of the front door that was called: batchgate's own
//! `{"error": {"code", "message"}}`, OpenAI's `{"error": {"message", "type", "param",
//! "code"}}` on its routes, KServe V2's `{"error": "…"}` (with batchgate's `code` beside it)
//! on `/v2…`. Every error is made once, as an [`ApiError`](crate::error::ApiError), wherever it
//! happens (the guard, an extractor, a handler, the framework); the edge re-renders it here
//! from the code and message it carries, so the status, headers and metrics stay the same.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use batchgate_protocol::front::kserve::KserveErrorBody;
use batchgate_protocol::front::openai::{OpenAiError, OpenAiErrorBody};

use crate::error::{ErrorCode, ErrorMessage};

/// Which protocol a request spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Door {
    /// batchgate's own API (and everything else it serves).
    Own,
    /// The OpenAI-compatible routes.
    OpenAi,
    /// The KServe V2 routes.
    Kserve,
}

/// The front door of a request path.
pub(crate) fn door_of(path: &str) -> Door {
    if path == "/v1/embeddings" || path == "/v1/models" || path.starts_with("/v1/models/") {
        Door::OpenAi
    } else if path == "/v2" || path.starts_with("/v2/") {
        Door::Kserve
    } else {
        Door::Own
    }
}

/// The error answer `response` (one made from an `ApiError`) in `door`'s shape; any other
/// answer as it is.
pub(crate) fn reshape(door: Door, response: Response) -> Response {
    if door == Door::Own {
        return response;
    }
    let (Some(&ErrorCode(code)), Some(ErrorMessage(message))) = (
        response.extensions().get::<ErrorCode>(),
        response.extensions().get::<ErrorMessage>(),
    ) else {
        return response;
    };
    let body = match door {
        Door::OpenAi => serde_json::to_vec(&OpenAiErrorBody {
            error: OpenAiError {
                message: message.clone(),
                kind: openai_type(response.status()).to_owned(),
                param: (code == "model_not_found").then(|| "model".to_owned()),
                code: code.to_owned(),
            },
        }),
        Door::Kserve | Door::Own => serde_json::to_vec(&KserveErrorBody {
            error: message.clone(),
            code: code.to_owned(),
        }),
    }
    .expect("an error body always serialises. This is a bug.");
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body))
}

/// OpenAI's `type` of an error with this status.
fn openai_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        408 | 504 => "timeout_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    }
}

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse;

    use super::*;
    use crate::error::ApiError;

    async fn json(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        serde_json::from_slice(&bytes).expect("json")
    }

    #[tokio::test]
    async fn each_door_has_its_shape_and_the_status_and_headers_stay() {
        let error = || {
            ApiError::Overloaded {
                retry_after_secs: 3,
            }
            .into_response()
        };
        let openai = reshape(door_of("/v1/embeddings"), error());
        assert_eq!(openai.status(), 503);
        assert_eq!(openai.headers()[header::RETRY_AFTER], "3");
        let body = json(openai).await;
        assert_eq!(body["error"]["type"], "server_error");
        assert_eq!(body["error"]["code"], "overloaded");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        let kserve = reshape(door_of("/v2/models/m/infer"), error());
        let body = json(kserve).await;
        assert_eq!(body["code"], "overloaded");
        assert!(body["error"].is_string());
        let own = json(reshape(door_of("/v1/inference"), error())).await;
        assert_eq!(own["error"]["code"], "overloaded");
        let missing = reshape(
            Door::OpenAi,
            ApiError::ModelNotFound("x".into()).into_response(),
        );
        assert_eq!(json(missing).await["error"]["param"], "model");
    }
}
