//! Authentication end to end: tokens at the edge, results scoped to their owner, dedupe per
//! owner, the body's client_id checked against the token.

mod common;

use std::time::Duration;

use batchgate::token::{mint, TokenArgs};
use batchgate_gateway::auth::KeySource;
use batchgate_gateway::AuthConfig;
use batchgate_protocol::api::{TaskStatus, TaskView};
use common::{client, fast_sim, serve_config, start_serve, Backend, Infra};

const SECRET: &str = "an-e2e-test-secret-of-32-bytes-or-more";

fn token(sub: &str) -> String {
    mint(&TokenArgs {
        sub: sub.into(),
        secret: SECRET.into(),
        ttl: Duration::from_secs(300),
        issuer: None,
        audience: None,
    })
    .expect("token")
}

/// The test deployment with HS256 tokens signed with [`SECRET`].
fn jwt_config(infra: &Infra, worker_url: &str) -> batchgate::serve::ServeConfig {
    let mut config = serve_config(infra, worker_url, 2);
    config.edge.auth = AuthConfig::Jwt {
        keys: KeySource::Secret(SECRET.as_bytes().to_vec()),
        issuer: None,
        audience: None,
    };
    config
}

async fn scoped_run(backend: Backend) {
    let infra = Infra::start(backend).await;
    let worker = common::start_faulty_worker(fast_sim(2), batchgate_sim::Faults::default()).await;
    let config = jwt_config(&infra, &worker.url);
    let serve = start_serve(config).await;
    let http = client();
    let submit = |who: Option<&str>, body: serde_json::Value| {
        let mut request = http
            .post(format!("{}/v1/inference?wait_ms=10000", serve.url))
            .json(&body);
        if let Some(who) = who {
            request = request.bearer_auth(token(who));
        }
        request.send()
    };
    let read = |who: &str, id: &str| {
        http.get(format!("{}/v1/result/{id}", serve.url))
            .bearer_auth(token(who))
            .send()
    };

    // No token: 401 with a challenge.
    let anonymous = submit(None, serde_json::json!({ "input": "x" }))
        .await
        .expect("send");
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers().contains_key("www-authenticate"));
    let garbled = http
        .post(format!("{}/v1/inference", serve.url))
        .bearer_auth("not-a-token")
        .json(&serde_json::json!({ "input": "x" }))
        .send()
        .await
        .expect("send");
    assert_eq!(garbled.status(), 401);

    // Alice's task is hers alone.
    let alice: TaskView = submit(Some("alice"), serde_json::json!({ "input": "same input" }))
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(alice.status, TaskStatus::Success);
    let by_alice = read("alice", &alice.task_id).await.expect("send");
    assert_eq!(by_alice.status(), 200);
    let by_bob = read("bob", &alice.task_id).await.expect("send");
    assert_eq!(
        by_bob.status(),
        404,
        "someone else's task is not confirmed to exist"
    );

    // Bob's identical input is his own task: dedupe is per owner.
    let bob: TaskView = submit(Some("bob"), serde_json::json!({ "input": "same input" }))
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_ne!(bob.task_id, alice.task_id);
    let again: TaskView = submit(Some("alice"), serde_json::json!({ "input": "same input" }))
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(
        again.task_id, alice.task_id,
        "alice's own duplicate shares her task"
    );

    // A body that claims to be someone else is refused.
    let lying = submit(
        Some("alice"),
        serde_json::json!({ "input": "y", "client_id": "bob" }),
    )
    .await
    .expect("send");
    assert_eq!(lying.status(), 403);
    let honest = submit(
        Some("alice"),
        serde_json::json!({ "input": "y", "client_id": "alice" }),
    )
    .await
    .expect("send");
    assert_eq!(honest.status(), 200);

    serve.shutdown().await;
    worker.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_scoped_to_their_owner_memory() {
    scoped_run(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_scoped_to_their_owner_redis() {
    scoped_run(Backend::Redis).await;
}

/// `--dedupe-scope global`: identical inputs of different callers share one task (one worker
/// call), which belongs to no one: both callers, and anyone else holding the id, can read it.
async fn global_dedupe_run(backend: Backend) {
    let infra = Infra::start(backend).await;
    let worker = common::start_faulty_worker(fast_sim(2), batchgate_sim::Faults::default()).await;
    let mut config = jwt_config(&infra, &worker.url);
    if let Some(gateway) = config.gateway.as_mut() {
        gateway.dedupe_scope = batchgate_gateway::DedupeScope::Global;
    }
    let serve = start_serve(config).await;
    let http = client();
    let submit = |who: &str| {
        http.post(format!("{}/v1/inference?wait_ms=10000", serve.url))
            .bearer_auth(token(who))
            .json(&serde_json::json!({ "input": "shared input" }))
            .send()
    };
    let alice: TaskView = submit("alice")
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(alice.status, TaskStatus::Success);
    let bob: TaskView = submit("bob")
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(bob.task_id, alice.task_id, "global scope shares the task");
    assert_eq!(bob.output, alice.output);
    let by_carol = http
        .get(format!("{}/v1/result/{}", serve.url, alice.task_id))
        .bearer_auth(token("carol"))
        .send()
        .await
        .expect("send");
    assert_eq!(by_carol.status(), 200, "a shared task belongs to no one");
    assert_eq!(worker.sim.stats().items, 1, "the input ran once");
    serve.shutdown().await;
    worker.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_dedupe_shares_tasks_across_callers_memory() {
    global_dedupe_run(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_dedupe_shares_tasks_across_callers_redis() {
    global_dedupe_run(Backend::Redis).await;
}

/// Without authentication every caller is the same anonymous one, so dedupe is scoped by
/// the body's `client_id`: two clients sending the same input get tasks of their own (the
/// worker runs it twice), while one client's resubmission is answered with its first task.
/// With dedupe off (`--dedupe-ttl-secs 0`), even that runs again.
async fn client_id_scope_run(backend: Backend) {
    let infra = Infra::start(backend).await;
    let worker = common::start_faulty_worker(fast_sim(2), batchgate_sim::Faults::default()).await;
    let serve = start_serve(serve_config(&infra, &worker.url, 2)).await;
    let http = client();
    let submit = |base: String, client_id: &'static str| {
        http.post(format!("{base}/v1/inference?wait_ms=10000"))
            .json(&serde_json::json!({ "input": "same input", "client_id": client_id }))
            .send()
    };
    let mut views = Vec::new();
    for client_id in ["client-a", "client-b", "client-a"] {
        let view: TaskView = submit(serve.url.clone(), client_id)
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert_eq!(view.status, TaskStatus::Success, "{client_id}: {view:?}");
        views.push(view);
    }
    assert_ne!(
        views[0].task_id, views[1].task_id,
        "two client_ids do not share a task"
    );
    assert_eq!(
        views[2].task_id, views[0].task_id,
        "one client's resubmission does"
    );
    assert_eq!(worker.sim.stats().items, 2, "the input ran once per client");
    serve.shutdown().await;

    let mut config = serve_config(&infra, &worker.url, 2);
    config.store.dedupe_ttl = None;
    let serve = start_serve(config).await;
    let first: TaskView = submit(serve.url.clone(), "client-c")
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let again: TaskView = submit(serve.url.clone(), "client-c")
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_ne!(
        first.task_id, again.task_id,
        "dedupe off: every request runs"
    );
    assert_eq!(worker.sim.stats().items, 4);
    serve.shutdown().await;
    worker.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auth_dedupe_is_per_client_id_memory() {
    client_id_scope_run(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auth_dedupe_is_per_client_id_redis() {
    client_id_scope_run(Backend::Redis).await;
}

/// The same through the binary's own flags: `batchgate serve --insecure-no-auth` (default
/// flags otherwise, its built-in simulated worker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_insecure_no_auth_scopes_dedupe_by_client_id() {
    let serve = common::Proc::start(&["serve", "--insecure-no-auth", "--listen", "127.0.0.1:0"]);
    let http = client();
    let mut ids = Vec::new();
    for client_id in ["client-a", "client-b", "client-a"] {
        let view: TaskView = http
            .post(format!("{}/v1/inference?wait_ms=10000", serve.url))
            .json(&serde_json::json!({ "input": "same input", "client_id": client_id }))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert_eq!(view.status, TaskStatus::Success, "{client_id}: {view:?}");
        ids.push(view.task_id);
    }
    assert_ne!(ids[0], ids[1], "two client_ids do not share a task");
    assert_eq!(ids[2], ids[0], "one client's resubmission does");
}
