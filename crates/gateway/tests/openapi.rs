//! The generated OpenAPI description against the router: every route it serves is described
//! with its methods (and nothing else is), and every error code the API answers with is
//! described with its status.

mod support;

use axum::body::Body;
use axum::http::Request;
use batchgate_gateway::metrics::route;
use batchgate_gateway::ApiError;
use serde_json::Value;
use support::*;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];

/// The description, as the server serves it.
async fn served_document(gw: &Gateway) -> Value {
    let answer = gw.get("/openapi.json", None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.header("content-type"), Some("application/json"));
    answer.body
}

#[tokio::test]
async fn every_route_the_router_serves_is_described_and_nothing_else() {
    let gw = gateway(edge_with_admin());
    let doc = served_document(&gw).await;
    assert!(doc["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.1")));
    let paths = doc["paths"].as_object().expect("paths");
    let mut templates: Vec<&str> = route::ALL.to_vec();
    for described in paths.keys() {
        if !templates.contains(&described.as_str()) {
            templates.push(described);
        }
    }
    for template in templates {
        let concrete = template
            .replace("{task_id}", "some-task")
            .replace("{name}", "some-model");
        for method in METHODS {
            let request = Request::builder()
                .method(method)
                .uri(&concrete)
                .body(Body::empty())
                .expect("request");
            let answer = gw.call(request).await;
            let served = !matches!(answer.code(), "not_found" | "method_not_allowed");
            let described = paths
                .get(template)
                .is_some_and(|item| item.get(method.to_lowercase()).is_some());
            assert_eq!(
                served, described,
                "{method} {template}: served {served} ({answer:?}), described {described}"
            );
        }
    }
}

/// Codes not tied to one operation: refusals of unknown routes and methods, and of the HTTP
/// stack below the routes. They are in the description's table of codes.
const ANY_ROUTE: [&str; 5] = [
    "not_found",
    "method_not_allowed",
    "headers_too_large",
    "internal",
    "bad_request",
];

/// The error shapes: batchgate's own, OpenAI's and KServe V2's.
const ERROR_SCHEMAS: [&str; 3] = [
    "#/components/schemas/ErrorBody",
    "#/components/schemas/OpenAiErrorBody",
    "#/components/schemas/KserveErrorBody",
];

#[tokio::test]
async fn every_error_code_is_described_with_its_status() {
    let gw = gateway(open_edge());
    let doc = served_document(&gw).await;
    let table = doc["info"]["description"].as_str().expect("a description");
    let responses: Vec<(&str, &Value)> = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .flat_map(|item| item.as_object().expect("path item").values())
        .flat_map(|op| op["responses"].as_object().expect("responses"))
        .map(|(status, response)| (status.as_str(), response))
        .collect();
    for error in ApiError::samples() {
        assert!(error.kind_listed());
        let (status, code) = error.status_and_code();
        let status = status.as_u16().to_string();
        let quoted = format!("`{code}`");
        assert!(
            table.contains(&format!("| {status} | {quoted} |")),
            "{code} ({status}) is not in the table of codes"
        );
        if ANY_ROUTE.contains(&code) {
            continue;
        }
        let described: Vec<&Value> = responses
            .iter()
            .filter(|(s, r)| {
                *s == status
                    && r["description"]
                        .as_str()
                        .is_some_and(|d| d.contains(&quoted))
            })
            .map(|(_, r)| *r)
            .collect();
        assert!(
            !described.is_empty(),
            "no operation describes {code} as a {status} answer"
        );
        for response in described {
            // batchgate's own shape, or the shape of the front door the operation belongs to.
            let schema = &response["content"]["application/json"]["schema"]["$ref"];
            assert!(
                ERROR_SCHEMAS.iter().any(|s| schema == s),
                "{code}: {response}"
            );
            // What the server really sends: Retry-After exactly on the errors that carry it.
            let documents_retry = response["headers"].get("retry-after").is_some();
            assert_eq!(
                documents_retry,
                error.has_retry_after(),
                "{code} ({status}): Retry-After documented {documents_retry}"
            );
        }
    }
}

#[tokio::test]
async fn the_served_document_is_the_generated_one() {
    let gw = gateway(open_edge());
    let served = served_document(&gw).await;
    let generated =
        serde_json::to_value(batchgate_gateway::routes::openapi::document()).expect("json");
    assert_eq!(served, generated);
    for scheme in ["bearer", "admin"] {
        assert_eq!(
            served["components"]["securitySchemes"][scheme]["scheme"], "bearer",
            "{scheme}"
        );
    }
}
