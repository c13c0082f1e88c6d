//! A gateway on memory backends, built the way the binary builds one ([`StateBuilder`]), and
//! requests sent through its router with `oneshot`: no socket.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use batchgate_gateway::auth::KeySource;
use batchgate_gateway::{AppState, AuthConfig, EdgeConfig, GatewayConfig, ShedBound, StateBuilder};
use batchgate_protocol::task::unix_ms;
use batchgate_queue::memory::MemoryConfig;
use batchgate_queue::{DeadLetters, Queue};
use batchgate_store::memory::MemoryResultStore;
use batchgate_store::{Completion, Outcome, ResultStore};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// The HS256 secret of the tests' tokens.
pub const SECRET: &[u8] = b"a-test-secret-of-at-least-32-bytes!!";
/// The admin token of [`edge_with_admin`].
pub const ADMIN_TOKEN: &str = "admin-secret-token";

/// A gateway's state and the memory backends under it, to look at and to act as a batcher
/// (cloning is shallow).
#[derive(Clone)]
pub struct Gateway {
    /// What the router serves.
    pub state: AppState,
    /// The queue the gateway admits into.
    pub queue: Arc<dyn Queue>,
    /// The store results are read from.
    pub results: Arc<MemoryResultStore>,
    /// The dead letters of the admin API.
    pub dead_letters: Arc<dyn DeadLetters>,
}

/// Protections off (no auth, no shedding), admin API off.
pub fn open_edge() -> EdgeConfig {
    EdgeConfig {
        shed: ShedBound::Off,
        ..EdgeConfig::default()
    }
}

/// JWT auth with [`SECRET`], no shedding.
pub fn jwt_edge() -> EdgeConfig {
    EdgeConfig {
        auth: AuthConfig::Jwt {
            keys: KeySource::Secret(SECRET.to_vec()),
            issuer: None,
            audience: None,
        },
        ..open_edge()
    }
}

/// No auth, the admin API behind [`ADMIN_TOKEN`].
pub fn edge_with_admin() -> EdgeConfig {
    EdgeConfig {
        admin_token: Some(ADMIN_TOKEN.into()),
        ..open_edge()
    }
}

/// A gateway with `config` and `edge` on memory backends, built as the binary builds them,
/// whose queue (one partition) holds `queue_capacity`.
pub fn gateway_with(config: GatewayConfig, edge: EdgeConfig, queue_capacity: usize) -> Gateway {
    let backends = batchgate_queue::memory::build(&MemoryConfig {
        partitions: Some(1),
        queue_capacity,
        max_results: 10_000,
        result_ttl: Duration::from_secs(60),
        dedupe_ttl: Some(Duration::from_secs(60)),
    });
    let state = StateBuilder::new(config, edge)
        .build(&backends)
        .expect("a gateway on memory backends builds");
    Gateway {
        state,
        queue: backends.queue.clone(),
        results: backends
            .memory
            .as_ref()
            .expect("memory backends")
            .results
            .clone(),
        dead_letters: backends.dead_letters.clone(),
    }
}

/// Default limits, `edge`, a roomy queue.
pub fn gateway(edge: EdgeConfig) -> Gateway {
    gateway_with(GatewayConfig::default(), edge, 1000)
}

/// An answer, its body parsed as JSON (`Value::Null` if it is not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    /// The stable error code of an error answer.
    pub fn code(&self) -> &str {
        // batchgate's and OpenAI's shapes nest the code in `error`; KServe V2's has it beside.
        self.body["error"]["code"]
            .as_str()
            .or_else(|| self.body["code"].as_str())
            .unwrap_or("<no error code>")
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an error answer of our shape: status, code, a message, and `Retry-After`
    /// exactly when the status asks the client to come back (429, 503).
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(self.code(), code, "{self:?}");
        assert!(
            self.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{self:?}"
        );
        let retry = matches!(status, 429 | 503);
        assert_eq!(self.header("retry-after").is_some(), retry, "{self:?}");
    }
}

impl Gateway {
    /// Sends `request` through a fresh router over this state.
    pub async fn call(&self, request: Request<Body>) -> Answer {
        let response = batchgate_gateway::router(self.state.clone())
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
            text,
        }
    }

    /// `GET path`, with a bearer token if given.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.call(request("GET", path, token, None)).await
    }

    /// `POST path` with a JSON body, with a bearer token if given.
    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Answer {
        self.call(request("POST", path, token, Some(body.to_string())))
            .await
    }

    /// Submits `input` anonymously and returns the new task's id.
    pub async fn submit(&self, input: &str) -> String {
        let answer = self
            .post(
                "/v1/inference",
                None,
                &serde_json::json!({ "input": input }),
            )
            .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
        answer.body["task_id"]
            .as_str()
            .expect("a task id")
            .to_owned()
    }

    /// Stores `output` as the result of `task_id`, as a batcher would.
    pub async fn complete(&self, task_id: &str, output: &str) {
        self.finish(task_id, Outcome::Success(output.into())).await;
    }

    /// Stores `outcome` as the result of `task_id`, as a batcher would.
    pub async fn finish(&self, task_id: &str, outcome: Outcome) {
        self.results
            .complete(vec![Completion {
                task_id: task_id.to_owned(),
                outcome,
                completed_at: unix_ms(SystemTime::now()),
                reply_to: None,
            }])
            .await
            .expect("the memory store stores");
    }

    /// Tasks waiting in the queue.
    pub async fn queued(&self) -> usize {
        self.queue.depth().await.expect("depth").iter().sum()
    }
}

/// A request; `body`, if any, is declared JSON.
pub fn request(
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = match body {
        Some(body) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Body::from(body)
        }
        None => Body::empty(),
    };
    builder.body(body).expect("a valid request")
}

/// An HS256 token for `subject`, valid for a minute.
pub fn token(subject: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        + 60;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({ "sub": subject, "exp": exp }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET).expect("key"),
    )
    .expect("sign")
}
