//! `GET /openapi.json`: the API described for clients and tools, generated from the routes'
//! `#[utoipa::path]` annotations and the types they name, so it cannot drift from the code.
//! Tests check that every route the router serves is described (`tests/openapi.rs`) and run
//! a property-based client (schemathesis) against a live server from this description.

use std::fmt::Write;
use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{admin, health, inference, kserve, metrics, openai, result, status};
use crate::error::ApiError;

/// The description: paths from the handlers' annotations, schemas from the types they name.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "batchgate",
        description = "Dynamic batching in front of a fixed batch-inference API: submit single \
inputs, read their results. With authentication on, `/v1/…` calls carry a JWT bearer token \
whose subject owns the tasks; the admin API carries the admin token."
    ),
    paths(
        inference::submit,
        result::get_result,
        health::healthz,
        health::readyz,
        metrics::render_api,
        status::page,
        status::snapshot_api,
        spec,
        admin::list,
        admin::replay,
        admin::purge,
        openai::embeddings,
        openai::models,
        kserve::server_metadata,
        kserve::live,
        kserve::ready,
        kserve::model_metadata,
        kserve::model_ready,
        kserve::infer,
    ),
    modifiers(&Security, &ErrorCodes),
    tags(
        (name = "inference", description = "Submit inputs and read results."),
        (name = "operations", description = "Health, readiness, metrics, status, this description."),
        (name = "admin", description = "The dead-letter queue, behind the admin token."),
        (name = "openai", description = "OpenAI-compatible embeddings: errors in OpenAI's shape, `{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`, with the same codes."),
        (name = "kserve-v2", description = "The KServe V2 / Open Inference Protocol over HTTP: errors are `{\"error\": …, \"code\": …}`, with the same codes."),
    )
)]
struct ApiDoc;

/// The two bearer schemes: a caller's JWT, and the admin token.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut jwt = Http::new(HttpAuthScheme::Bearer);
        jwt.bearer_format = Some("JWT".into());
        jwt.description = Some(
            "A JWT whose `sub` names the caller (required unless the gateway runs with \
             `--insecure-no-auth`)."
                .into(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(jwt));
        let mut admin = Http::new(HttpAuthScheme::Bearer);
        admin.description = Some("The gateway's `--admin-token`.".into());
        components.add_security_scheme("admin", SecurityScheme::Http(admin));
    }
}

/// Appends the table of every error code, made from [`ApiError::samples`], to the
/// description: each error answer is `{"error": {"code", "message"}}` with one of these.
struct ErrorCodes;

impl Modify for ErrorCodes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut table = String::from(
            "\n\nEvery error answer is `{\"error\": {\"code\": …, \"message\": …}}`; the codes are \
             stable:\n\n| status | code | Retry-After | meaning |\n|---|---|---|---|\n",
        );
        for error in ApiError::samples() {
            let (status, code) = error.status_and_code();
            let retry = if error.has_retry_after() { "yes" } else { "" };
            let _ = writeln!(
                table,
                "| {} | `{code}` | {retry} | {error} |",
                status.as_u16()
            );
        }
        let description = openapi.info.description.get_or_insert_with(String::new);
        description.push_str(&table);
    }
}

/// The document as served, made once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    document()
        .to_pretty_json()
        .expect("the OpenAPI document serializes. This is a bug.")
});

/// The OpenAPI document of the API.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 description of this API.",
        content_type = "application/json", body = Object))
)]
pub(crate) async fn spec() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}
