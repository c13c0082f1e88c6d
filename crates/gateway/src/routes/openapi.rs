//! `GET /openapi.json`: the API described for clients and tools.

use axum::http::header;
use axum::response::IntoResponse;

/// The OpenAPI 3.1 document, kept beside the code it describes.
const SPEC: &str = include_str!("../openapi.json");

/// Serves the document as is.
pub(crate) async fn spec() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], SPEC)
}
