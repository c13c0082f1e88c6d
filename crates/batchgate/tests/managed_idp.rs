//! A gateway process taking its keys from an identity provider's JWKS URL: a real HTTPS
//! provider in this process (axum over rustls, a throwaway CA), which rotates its key while
//! the gateway runs.

mod common;

use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::routing::get;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use common::{client, run_to_exit, Proc};

/// A P-256 key: its `kid`, private PEM and public JWK.
struct Key {
    kid: &'static str,
    private_pem: String,
    jwk: serde_json::Value,
}

fn key(kid: &'static str) -> Key {
    let pair = rcgen::KeyPair::generate().expect("key");
    let point = pair.public_key_raw().to_vec();
    Key {
        kid,
        private_pem: pair.serialize_pem(),
        jwk: json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }),
    }
}

fn token(key: &Key, sub: &str) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key.kid.into());
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        + 600;
    encode(
        &header,
        &json!({ "sub": sub, "exp": exp, "iss": "https://idp.test" }),
        &EncodingKey::from_ec_pem(key.private_pem.as_bytes()).expect("EC key"),
    )
    .expect("sign")
}

async fn status_with(base: &str, token: &str) -> u16 {
    client()
        .post(format!("{base}/v1/inference?wait_ms=10000"))
        .bearer_auth(token)
        .json(&json!({ "input": format!("for {token:.12}") }))
        .send()
        .await
        .expect("send")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_follows_the_providers_key_rotation_without_a_restart() {
    batchgate_net::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let files = batchgate_net::DevCerts::generate(&[], "client")
        .expect("certs")
        .write(dir.path())
        .expect("write certs");
    let tls = batchgate_net::ServerTls::load(batchgate_net::TlsFiles {
        cert: files.server_cert.clone(),
        key: files.server_key.clone(),
        client_ca: None,
    })
    .expect("tls");
    let (old, new) = (key("old"), key("new"));
    let jwks = Arc::new(RwLock::new(json!({ "keys": [old.jwk] }).to_string()));
    let router =
        axum::Router::new()
            .route(
                "/jwks.json",
                get(|State(j): State<Arc<RwLock<String>>>| async move {
                    j.read().expect("jwks").clone()
                }),
            )
            .with_state(jwks.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "https://127.0.0.1:{}/jwks.json",
        listener.local_addr().expect("addr").port()
    );
    let stop = CancellationToken::new();
    tokio::spawn(batchgate_net::serve(
        listener,
        router,
        Some(tls),
        stop.clone(),
    ));
    let ca = files.ca_cert.display().to_string();

    let gateway = Proc::start(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--sim-base-ms",
        "5",
        "--jwks",
        &url,
        "--jwks-ca",
        &ca,
        "--jwt-issuer",
        "https://idp.test",
        "--jwks-min-refresh-secs",
        "0",
    ]);
    assert_eq!(status_with(&gateway.url, &token(&old, "alice")).await, 200);
    assert_eq!(status_with(&gateway.url, &token(&new, "bob")).await, 401);
    *jwks.write().expect("jwks") = json!({ "keys": [new.jwk] }).to_string();
    assert_eq!(
        status_with(&gateway.url, &token(&new, "bob")).await,
        200,
        "the rotated key is fetched and accepted"
    );
    assert_eq!(status_with(&gateway.url, &token(&old, "alice")).await, 401);

    // Refused at start: plain HTTP, a CA without a URL, discovery without an issuer, and a
    // provider that cannot be reached.
    let cases: [(&[&str], &str); 4] = [
        (&["--jwks", "http://127.0.0.1:1/jwks.json"], "https://"),
        (
            &["--jwks", "/etc/jwks.json", "--jwks-ca", &ca],
            "JWKS URL only",
        ),
        (&["--jwks-from-issuer"], "needs --jwt-issuer"),
        (&["--jwks", "https://127.0.0.1:1/jwks.json"], "cannot fetch"),
    ];
    for (flags, expected) in cases {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        args.extend(flags);
        let (status, log) = run_to_exit(&args, &[]);
        assert!(!status.success(), "{flags:?} started");
        assert!(log.contains(expected), "{flags:?}: {log}");
    }
    stop.cancel();
}
