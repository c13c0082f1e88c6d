//! Traces over OTLP: the real `batchgate` binary exports to an OTLP/gRPC receiver served by
//! the test (opentelemetry-proto's `TraceService`), embedded and across the Redis queue.
//! Checked: the spans of one request, their parentage, the client's `traceparent` continued,
//! and the batch span linking to every request it carries.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use batchgate_protocol::api::{TaskStatus, TaskView};
use batchgate_testkit::RedisServer;
use common::{fast_sim, start_worker, Proc};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// One received span, flattened.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    /// `(trace_id, span_id)` of each link.
    links: Vec<(String, String)>,
    attributes: HashMap<String, String>,
}

/// What the receiver has been sent.
#[derive(Default)]
struct Received {
    spans: Mutex<Vec<Span>>,
    arrived: Notify,
    /// The `authorization` header of each export.
    authorization: Mutex<Vec<String>>,
}

/// The OTLP/gRPC trace endpoint.
struct Receiver(Arc<Received>);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[async_trait::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if let Some(value) = request.metadata().get("authorization") {
            let value = value.to_str().unwrap_or("<not text>").to_owned();
            self.0.authorization.lock().expect("lock").push(value);
        }
        let mut got = Vec::new();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(any_value::Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                got.push(Span {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    links: span
                        .links
                        .iter()
                        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                        .collect(),
                    attributes: span
                        .attributes
                        .iter()
                        .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                            any_value::Value::StringValue(s) => Some((kv.key.clone(), s.clone())),
                            any_value::Value::IntValue(i) => Some((kv.key.clone(), i.to_string())),
                            _ => None,
                        })
                        .collect(),
                });
            }
        }
        self.0.spans.lock().expect("spans lock").extend(got);
        self.0.arrived.notify_waiters();
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Serves the receiver on a free loopback port; returns its URL.
async fn start_receiver(stop: CancellationToken) -> (String, Arc<Received>) {
    start_receiver_with(stop, None).await
}

/// [`start_receiver`], over TLS with this certificate and key (PEM) when given.
async fn start_receiver_with(
    stop: CancellationToken,
    tls: Option<(String, String)>,
) -> (String, Arc<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", listener.local_addr().expect("addr"));
    let received = Arc::new(Received::default());
    let service = TraceServiceServer::new(Receiver(received.clone()));
    let mut server = tonic::transport::Server::builder();
    if let Some((cert, key)) = tls {
        server = server
            .tls_config(
                tonic::transport::ServerTlsConfig::new()
                    .identity(tonic::transport::Identity::from_pem(cert, key)),
            )
            .expect("receiver TLS");
    }
    tokio::spawn(async move {
        server
            .add_service(service)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                stop.cancelled_owned(),
            )
            .await
            .expect("OTLP receiver failed");
    });
    (url, received)
}

/// Waits until `done` holds for the spans received, up to 30 s; returns them.
async fn wait_for(received: &Received, what: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let arrived = received.arrived.notified();
        {
            let spans = received.spans.lock().expect("spans lock");
            if done(&spans) {
                return spans.clone();
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "timed out waiting for {what}: got {:#?}",
            received.spans.lock().expect("lock")
        );
        let _ = tokio::time::timeout(left.min(Duration::from_millis(500)), arrived).await;
    }
}

/// A W3C traceparent of a made-up client span.
fn client_traceparent(n: u8) -> (String, String, String) {
    let trace_id = format!(
        "{:032x}",
        0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4700_u128 + u128::from(n)
    );
    let span_id = format!("{:016x}", 0x00f0_67aa_0ba9_0200_u64 + u64::from(n));
    (format!("00-{trace_id}-{span_id}-01"), trace_id, span_id)
}

async fn submit(http: &reqwest::Client, base: &str, input: &str, traceparent: &str) -> TaskView {
    let answer = http
        .post(format!("{base}/v1/inference?wait_ms=20000"))
        .header("traceparent", traceparent)
        .json(&serde_json::json!({ "input": input }))
        .send()
        .await
        .expect("send");
    assert_eq!(answer.status(), 200);
    answer.json().await.expect("a task view")
}

fn one<'a>(spans: &'a [Span], what: &str, pred: impl Fn(&Span) -> bool) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| pred(s)).collect();
    assert_eq!(found.len(), 1, "one {what}, got {found:#?}");
    found[0]
}

/// Exports quickly, so the test does not wait out the SDK's 5 s batching delay.
const FAST_EXPORT: [(&str, &str); 1] = [("OTEL_BSP_SCHEDULE_DELAY", "50")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_makes_its_spans_with_parentage_and_the_batch_links_to_it() {
    let stop = CancellationToken::new();
    let (otlp, received) = start_receiver(stop.clone()).await;
    let serve = Proc::start_with_env(
        &[
            "serve",
            "--insecure-no-auth",
            "--listen",
            "127.0.0.1:0",
            "--otlp-endpoint",
            &otlp,
            "--sim-base-ms",
            "5",
            "--sim-per-item-ms",
            "0",
        ],
        &FAST_EXPORT,
    );
    let http = common::client();
    let (traceparent, client_trace, client_span) = client_traceparent(1);
    let view = submit(&http, &serve.url, "traced", &traceparent).await;
    assert_eq!(view.status, TaskStatus::Success);

    let names = [
        "POST /v1/inference",
        "enqueue",
        "batch.wait",
        "batch",
        "worker.call",
        "results.write",
    ];
    let spans = wait_for(&received, "the request's and the batch's spans", |spans| {
        names.iter().all(|n| spans.iter().any(|s| s.name == *n))
    })
    .await;
    let request = one(&spans, "request span", |s| s.name == "POST /v1/inference");
    // The client's trace goes on: same trace id, the client's span is the parent.
    assert_eq!(request.trace_id, client_trace);
    assert_eq!(request.parent_span_id, client_span);
    assert_eq!(request.service, "batchgate");
    assert_eq!(
        request.attributes.get("request_id").map(String::len),
        Some(36)
    );
    assert_eq!(request.attributes.get("task_id"), Some(&view.task_id));
    let enqueue = one(&spans, "enqueue span", |s| s.name == "enqueue");
    assert_eq!(
        (&enqueue.trace_id, &enqueue.parent_span_id),
        (&client_trace, &request.span_id)
    );
    let wait = one(&spans, "wait span", |s| s.name == "batch.wait");
    assert_eq!(
        (&wait.trace_id, &wait.parent_span_id),
        (&client_trace, &enqueue.span_id)
    );
    assert_eq!(wait.attributes.get("task_id"), Some(&view.task_id));
    // The batch has a trace of its own and links to the request it carried.
    let batch = one(&spans, "batch span", |s| s.name == "batch");
    assert_ne!(batch.trace_id, client_trace);
    assert!(batch.parent_span_id.is_empty(), "a batch span is a root");
    assert_eq!(
        batch.links,
        vec![(client_trace.clone(), enqueue.span_id.clone())]
    );
    for name in ["worker.call", "results.write"] {
        let child = one(&spans, name, |s| s.name == name);
        assert_eq!(
            (&child.trace_id, &child.parent_span_id),
            (&batch.trace_id, &batch.span_id),
            "{name}"
        );
    }
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_the_redis_queue_a_batch_span_links_to_every_request_it_carries() {
    let stop = CancellationToken::new();
    let (otlp, received) = start_receiver(stop.clone()).await;
    let redis = RedisServer::start().await;
    let redis_url = redis.url();
    let worker = start_worker(fast_sim(4)).await;
    // Batches of three, and a window long enough that three concurrent requests fill one.
    let batcher = Proc::start_with_env(
        &[
            "batcher",
            "--redis",
            &redis_url,
            "--worker-url",
            &worker.url,
            "--listen",
            "127.0.0.1:0",
            "--max-batch-size",
            "3",
            "--max-wait-ms",
            "5000",
            "--otlp-endpoint",
            &otlp,
        ],
        &FAST_EXPORT,
    );
    let gateway = Proc::start_with_env(
        &[
            "gateway",
            "--insecure-no-auth",
            "--redis",
            &redis_url,
            "--listen",
            "127.0.0.1:0",
            "--otlp-endpoint",
            &otlp,
        ],
        &FAST_EXPORT,
    );
    let http = common::client();
    let clients: Vec<_> = (1..=3).map(client_traceparent).collect();
    let views = futures::future::join_all(clients.iter().enumerate().map(|(i, (tp, _, _))| {
        let (http, url) = (&http, &gateway.url);
        async move { submit(http, url, &format!("over redis {i}"), tp).await }
    }))
    .await;
    assert!(views.iter().all(|v| v.status == TaskStatus::Success));

    // The request spans end after their answers, so they may be exported after the batch's:
    // wait for them too rather than race them.
    let spans = wait_for(
        &received,
        "three request and enqueue spans and a batch linking to them",
        |spans| {
            spans.iter().filter(|s| s.name == "enqueue").count() == 3
                && spans.iter().any(|s| s.name == "batch")
                && spans.iter().filter(|s| s.name == "batch.wait").count() == 3
                && spans
                    .iter()
                    .filter(|s| s.name == "POST /v1/inference")
                    .count()
                    == 3
        },
    )
    .await;
    let batch = one(&spans, "batch span", |s| s.name == "batch");
    assert_eq!(batch.service, "batchgate-batcher");
    let mut linked = batch.links.clone();
    linked.sort();
    let mut enqueued: Vec<(String, String)> = Vec::new();
    for (_, trace_id, client_span) in &clients {
        let request = one(&spans, "request span", |s| {
            s.name == "POST /v1/inference" && &s.trace_id == trace_id
        });
        assert_eq!(
            (&request.parent_span_id, request.service.as_str()),
            (client_span, "batchgate-gateway")
        );
        let enqueue = one(&spans, "enqueue span", |s| {
            s.name == "enqueue" && &s.trace_id == trace_id
        });
        assert_eq!(enqueue.parent_span_id, request.span_id);
        // The batcher's wait span continues the trace that came through Redis.
        let wait = one(&spans, "wait span", |s| {
            s.name == "batch.wait" && &s.trace_id == trace_id
        });
        assert_eq!(
            (&wait.parent_span_id, wait.service.as_str()),
            (&enqueue.span_id, "batchgate-batcher")
        );
        enqueued.push((trace_id.clone(), enqueue.span_id.clone()));
    }
    enqueued.sort();
    assert_eq!(
        linked, enqueued,
        "the batch links to each request's enqueue span"
    );
    drop(gateway);
    drop(batcher);
    worker.stop.cancel();
    stop.cancel();
}

/// A collector behind TLS that wants an auth header: an `https://` endpoint, its CA given
/// with `--otlp-ca`, the header from the standard `OTEL_EXPORTER_OTLP_HEADERS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_tls_collector_with_the_headers_of_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = batchgate_net::DevCerts::generate(&[], "client").expect("certs");
    let files = certs.write(dir.path()).expect("write certs");
    let stop = CancellationToken::new();
    let (otlp, received) =
        start_receiver_with(stop.clone(), Some((certs.server_cert, certs.server_key))).await;
    let ca = files.ca_cert.display().to_string();
    let serve = Proc::start_with_env(
        &[
            "serve",
            "--insecure-no-auth",
            "--listen",
            "127.0.0.1:0",
            "--otlp-endpoint",
            &otlp,
            "--otlp-ca",
            &ca,
            "--sim-base-ms",
            "5",
        ],
        &[
            FAST_EXPORT[0],
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer%20collector-token",
            ),
        ],
    );
    let http = common::client();
    let (traceparent, client_trace, _) = client_traceparent(7);
    let view = submit(&http, &serve.url, "over tls", &traceparent).await;
    assert_eq!(view.status, TaskStatus::Success);
    let spans = wait_for(&received, "the request's span", |spans| {
        spans.iter().any(|s| s.name == "POST /v1/inference")
    })
    .await;
    let request = one(&spans, "request span", |s| s.name == "POST /v1/inference");
    assert_eq!(request.trace_id, client_trace);
    let headers = received.authorization.lock().expect("lock").clone();
    assert!(!headers.is_empty(), "no export carried the header");
    assert!(
        headers.iter().all(|h| h == "Bearer collector-token"),
        "{headers:?}"
    );
    stop.cancel();
}
