//! A request of N inputs (OpenAI `/v1/embeddings`, KServe V2 `infer`) takes N of its caller's
//! rate, all at once or not at all (429 `rate_limited` with `Retry-After`), and one of more
//! inputs than the caller's whole allowance is refused as such (413 `too_many_inputs`), not
//! left to wait for an allowance that never comes. In one gateway's memory and on Redis.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use batchgate::token::{mint, TokenArgs};
use batchgate_gateway::auth::KeySource;
use batchgate_gateway::AuthConfig;
use common::{client, fast_sim, serve_config, start_serve, start_worker, Backend, Infra};

const SECRET: &str = "a-rate-test-secret-of-32-bytes-or-more";

fn token(sub: &str) -> String {
    mint(&TokenArgs {
        sub: sub.into(),
        secret: SECRET.into(),
        ttl: Duration::from_secs(600),
        issuer: None,
        audience: None,
    })
    .expect("token")
}

/// Texts `from..to` of a request.
fn texts(from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| format!("text {i}")).collect()
}

async fn inputs_take_their_share(backend: Backend) {
    let worker = start_worker(fast_sim(4)).await;
    let infra = Infra::start(backend).await;
    let mut config = serve_config(&infra, &worker.url, 4);
    config.edge.auth = AuthConfig::Jwt {
        keys: KeySource::Secret(SECRET.as_bytes().to_vec()),
        issuer: None,
        audience: None,
    };
    // 10 an hour: nothing comes back within the test.
    config.edge.rate_limit = Some(batchgate::serve::RateLimitConfig {
        default: batchgate_queue::Rate {
            limit: 10,
            period: Duration::from_secs(3600),
        },
        overrides: HashMap::new(),
    });
    let serve = start_serve(config).await;
    let http = client();
    let alice = token("alice");
    let openai = |inputs: Vec<String>, bearer: String| {
        http.post(format!("{}/v1/embeddings", serve.url))
            .bearer_auth(bearer)
            .json(&serde_json::json!({ "model": "default", "input": inputs }))
            .send()
    };
    let kserve = |inputs: Vec<String>, bearer: String| {
        http.post(format!("{}/v2/models/default/infer", serve.url))
            .bearer_auth(bearer)
            .json(&serde_json::json!({ "inputs": [{
                "name": "input", "shape": [inputs.len()], "datatype": "BYTES", "data": inputs
            }]}))
            .send()
    };
    // 4 + 5 of alice's 10.
    let first = openai(texts(0, 4), alice.clone()).await.expect("send");
    assert_eq!(first.status(), 200);
    let second = kserve(texts(4, 9), alice.clone()).await.expect("send");
    assert_eq!(second.status(), 200);
    // 3 more do not fit in the 1 left: refused whole, with when to come back.
    let third = openai(texts(9, 12), alice.clone()).await.expect("send");
    assert_eq!(third.status(), 429);
    assert!(third.headers().contains_key("retry-after"));
    let body: serde_json::Value = third.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    // Nothing of the refused request ran: 9 inputs reached the worker.
    assert_eq!(worker.sim.stats().items, 9);
    // More inputs than a whole allowance can never pass: a clear error, not a 429 to retry.
    let bob = token("bob");
    let too_many = kserve(texts(0, 11), bob.clone()).await.expect("send");
    assert_eq!(too_many.status(), 413);
    let body: serde_json::Value = too_many.json().await.expect("json");
    assert_eq!(body["code"], "too_many_inputs", "{body}");
    let too_many = openai(texts(0, 11), bob.clone()).await.expect("send");
    assert_eq!(too_many.status(), 413);
    // Bob's allowance is his own: his two refused requests took one each, 8 inputs fit.
    let fits = openai(texts(20, 28), bob).await.expect("send");
    assert_eq!(fits.status(), 200);
    serve.shutdown().await;
    worker.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_of_n_inputs_takes_n_of_the_rate_memory() {
    inputs_take_their_share(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_of_n_inputs_takes_n_of_the_rate_redis() {
    inputs_take_their_share(Backend::Redis).await;
}
