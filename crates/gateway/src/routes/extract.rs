//! Extractors whose rejections are our [`ApiError`]s, so every bad request gets our JSON shape.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use batchgate_protocol::api::WaitQuery;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;
use std::borrow::Cow;
use std::pin::pin;
use std::time::Duration;

use super::guard::Identity;
use crate::auth::ANONYMOUS;
use crate::config::MAX_WAIT_MS;
use crate::error::ApiError;
use crate::state::AppState;

/// A JSON body: declared as JSON, within the body limit, UTF-8, then parsed.
pub(crate) struct JsonBody<T>(pub(crate) T);

fn declares_json(request: &Request) -> bool {
    let Some(value) = request.headers().get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    // Compared without regard to ASCII case, as bytes (no lowercase copy per request).
    let mime = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .as_bytes();
    let starts = |prefix: &[u8]| {
        mime.get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    };
    let ends = |suffix: &[u8]| {
        mime.len() >= suffix.len() && mime[mime.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    };
    mime.eq_ignore_ascii_case(b"application/json") || (starts(b"application/") && ends(b"+json"))
}

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        if !declares_json(&request) {
            return Err(ApiError::UnsupportedMediaType);
        }
        read_json(request, state).await.map(JsonBody)
    }
}

/// A JSON body whatever its declared type (KServe V2 clients may declare none), read like
/// [`JsonBody`]'s.
pub(crate) struct AnyJsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequest<AppState> for AnyJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        read_json(request, state).await.map(AnyJsonBody)
    }
}

/// Reads a body within its bounds and decodes it.
async fn read_json<T: DeserializeOwned>(request: Request, state: &AppState) -> Result<T, ApiError> {
    let max = state.config.max_body_bytes();
    // The body must arrive within its own bound: a client that trickles it holds a
    // request slot, a connection and the bytes so far.
    let read = read_body(request.into_body(), max);
    let bytes = tokio::time::timeout(state.config.body_read_timeout, read)
        .await
        .map_err(|_| ApiError::Timeout)??;
    decode(&bytes)
}

/// A body's bytes, at most `max` of them (413 `body_too_large` past that, whatever the
/// router's body limit). A body that comes as one frame, as a small one nearly always does,
/// is taken as it came: no buffer to collect it in, no copy (axum's `Bytes` extractor boxes
/// the body and collects every body in a queue of frames).
async fn read_body(body: Body, max: usize) -> Result<Bytes, ApiError> {
    let mut body = pin!(Limited::new(body, max));
    let mut first = Bytes::new();
    let mut more: Option<Vec<u8>> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            if e.is::<LengthLimitError>() {
                ApiError::BodyTooLarge { max }
            } else {
                ApiError::InvalidRequest(format!("failed to read the request body: {e}"))
            }
        })?;
        // Trailers, if any, are not part of the body.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match &mut more {
            Some(all) => all.extend_from_slice(&data),
            None if first.is_empty() => first = data,
            None => more = Some([&first[..], &data[..]].concat()),
        }
    }
    Ok(more.map_or(first, Bytes::from))
}

/// A body's bytes as `T`: UTF-8, a JSON object, the right shape; each failure its own
/// [`ApiError`]. Total over any bytes (fuzzed in the tests).
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ApiError::InvalidUtf8)?;
    // Every body of this API is an object; serde would also take a struct as an array.
    if !text.trim_start().starts_with('{') {
        return Err(match serde_json::from_str::<serde_json::Value>(text) {
            Ok(_) => ApiError::InvalidRequest("the body must be a JSON object".into()),
            Err(e) => ApiError::InvalidJson(e.to_string()),
        });
    }
    serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            ApiError::InvalidRequest(e.to_string())
        } else {
            ApiError::InvalidJson(e.to_string())
        }
    })
}

/// The request's one `Authorization` header, if any. Several are refused (401) rather than
/// one of them chosen: a proxy and the server could each pick a different one.
pub(crate) fn authorization(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::Unauthenticated(
            "more than one Authorization header".into(),
        ));
    }
    Ok(first.and_then(|v| v.to_str().ok()))
}

/// The caller's identity: the subject of its bearer token (or `anonymous` with
/// authentication off, not copied), as the guard found it when the headers arrived. A
/// missing or invalid token is a 401.
pub(crate) struct Caller(pub(crate) Cow<'static, str>);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(Identity(caller)) = parts.extensions.remove::<Identity>() {
            return Ok(Caller(Cow::Owned(caller)));
        }
        let authorization = authorization(&parts.headers)?;
        if !state.auth.enabled() {
            return Ok(Caller(Cow::Borrowed(ANONYMOUS)));
        }
        state
            .auth
            .identify_fresh(authorization)
            .await
            .map(|caller| Caller(Cow::Owned(caller)))
            .map_err(|e| ApiError::Unauthenticated(e.to_string()))
    }
}

/// The `{task_id}` of a path. One that is not even UTF-8 (`%ff%fe`) names no task: 404 in
/// our shape, like any other unknown id.
pub(crate) struct TaskIdPath(pub(crate) String);

impl FromRequestParts<AppState> for TaskIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::TaskNotFound)?;
        Ok(TaskIdPath(id))
    }
}

/// A query string as `T`; a bad one is a 400 `invalid_query` in our shape.
pub(crate) struct QueryOf<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequestParts<AppState> for QueryOf<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Query(q) = Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::InvalidQuery(e.body_text()))?;
        Ok(QueryOf(q))
    }
}

/// `?wait_ms=N`, capped at [`MAX_WAIT_MS`]; absent means do not wait.
pub(crate) struct Wait(pub(crate) Duration);

impl FromRequestParts<AppState> for Wait {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ms = match parts.uri.query().and_then(plain_wait_ms) {
            Some(ms) => ms,
            None => {
                let Query(q) = Query::<WaitQuery>::from_request_parts(parts, state)
                    .await
                    .map_err(|e| ApiError::InvalidQuery(e.body_text()))?;
                q.wait_ms.unwrap_or(0)
            }
        };
        Ok(Wait(Duration::from_millis(ms.min(MAX_WAIT_MS))))
    }
}

/// The query of nearly every long poll, `wait_ms=` and digits alone, read without the general
/// parser (which decodes, allocates and matches field names: a measurable share of a
/// request's CPU); anything else is left to it, so both read the same queries alike.
fn plain_wait_ms(query: &str) -> Option<u64> {
    let digits = query.strip_prefix("wait_ms=")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use batchgate_protocol::api::InferenceRequest;
    use proptest::prelude::*;

    use super::*;
    use axum::http::StatusCode;

    fn client_error(e: &ApiError) -> bool {
        let (status, _) = e.status_and_code();
        status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY
    }

    /// A body in several frames is joined in order; one past the limit, in one frame or
    /// spread over several, is refused as too large.
    #[tokio::test]
    async fn a_body_is_read_whole_within_its_limit() {
        let frames = |parts: &[&'static str]| {
            let parts: Vec<Result<Bytes, std::io::Error>> = parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p.as_bytes())))
                .collect();
            Body::from_stream(futures_util::stream::iter(parts))
        };
        for (parts, want) in [
            (&["{\"input\":\"x\"}"][..], "{\"input\":\"x\"}"),
            (&["{\"in", "put\":", "\"x\"}"][..], "{\"input\":\"x\"}"),
            (&["", "ab", "", "c"][..], "abc"),
            (&[][..], ""),
        ] {
            let read = read_body(frames(parts), 16)
                .await
                .expect("within the limit");
            assert_eq!(&read[..], want.as_bytes(), "{parts:?}");
        }
        for parts in [&["xxxxxxxxxxxxxxxxx"][..], &["12345678", "123456789"]] {
            let refused = read_body(frames(parts), 16).await;
            assert!(
                matches!(refused, Err(ApiError::BodyTooLarge { max: 16 })),
                "{parts:?}: {refused:?}"
            );
        }
    }

    #[test]
    fn a_plain_wait_reads_as_the_general_parser_reads_it() {
        for query in [
            "wait_ms=0",
            "wait_ms=1000",
            "wait_ms=00042",
            "wait_ms=18446744073709551615",
        ] {
            let uri: axum::http::Uri = format!("/v1/inference?{query}").parse().expect("uri");
            let Query(general) = Query::<WaitQuery>::try_from_uri(&uri).expect(query);
            assert_eq!(plain_wait_ms(query), general.wait_ms, "{query}");
        }
        // Left to the general parser: overflow, signs, encodings, other fields.
        for query in [
            "wait_ms=",
            "wait_ms=18446744073709551616",
            "wait_ms=+1",
            "wait_ms=-1",
            "wait%5Fms=1",
            "wait_ms=1&x=2",
            "x=1",
        ] {
            assert_eq!(plain_wait_ms(query), None, "{query}");
        }
    }

    /// The rule as it was written first, on a lowercase copy: the reference.
    fn declares_json_lowercased(value: &str) -> bool {
        let mime = value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
    }

    fn with_content_type(value: &str) -> Request {
        Request::builder()
            .header(header::CONTENT_TYPE, value)
            .body(axum::body::Body::empty())
            .expect("request")
    }

    #[test]
    fn json_content_types_are_recognised_in_any_case() {
        for (value, json) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("  application/json  ;x=y", true),
            ("application/vnd.api+json", true),
            ("APPLICATION/PROBLEM+JSON", true),
            ("application/+json", true),
            ("application/jsonx", false),
            ("text/json", false),
            ("application/json+xml", false),
            ("+json", false),
            ("application/", false),
            ("", false),
        ] {
            assert_eq!(declares_json(&with_content_type(value)), json, "{value}");
            assert_eq!(declares_json_lowercased(value), json, "{value}");
        }
        let none = Request::builder()
            .body(axum::body::Body::empty())
            .expect("request");
        assert!(!declares_json(&none));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Any header text: the same answer as the lowercase copy gives.
        #[test]
        fn content_types_read_as_the_lowercase_copy_reads_them(
            value in r"[ -~]{0,40}(application/|APPLICATION/)?[ -~]{0,10}(\+json|\+JSON|json)?[ ;a-z=]{0,8}"
        ) {
            if let Ok(request) = Request::builder()
                .header(header::CONTENT_TYPE, value.as_str())
                .body(axum::body::Body::empty())
            {
                prop_assert_eq!(declares_json(&request), declares_json_lowercased(&value), "{}", value);
            }
        }

        /// Any bytes: a request or a client error (400/422), never a panic or a 5xx.
        #[test]
        fn any_bytes_decode_or_are_a_client_error(
            bytes in proptest::collection::vec(any::<u8>(), 0..256)
        ) {
            if let Err(e) = decode::<InferenceRequest>(&bytes) {
                prop_assert!(client_error(&e), "{e:?}");
            }
        }

        /// JSON-looking objects with the API's field names and values of every type: the same,
        /// and a decoded request always came from text naming `input`.
        #[test]
        fn json_like_objects_decode_or_are_a_client_error(
            text in r#"\{( *"(input|client_id|timeout_ms|x)" *: *("[^"\\]{0,8}"|-?[0-9]{1,22}|null|true|\[\]|\{\}) *,?){0,4}\}"#
        ) {
            match decode::<InferenceRequest>(text.as_bytes()) {
                Ok(_) => prop_assert!(text.contains("\"input\""), "{text}"),
                Err(e) => prop_assert!(client_error(&e), "{e:?} for {text}"),
            }
        }
    }
}
