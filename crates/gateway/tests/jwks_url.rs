//! Keys from an identity provider's JWKS URL: a real HTTPS server in this process (axum over
//! rustls, with a throwaway CA), which rotates its keys, goes down, and is flooded with
//! tokens naming unknown `kid`s.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::State;
use axum::routing::get;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use batchgate_gateway::auth::{AuthConfig, AuthError, Authenticator, KeySource, RemoteJwks};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// The identity provider: its key set, and how many times it was asked for it.
struct Provider {
    jwks: RwLock<String>,
    fetches: AtomicUsize,
    base: String,
}

struct Running {
    provider: Arc<Provider>,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    ca: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Running {
    /// Stops the server and waits until it no longer accepts connections.
    async fn go_down(self) -> (Arc<Provider>, std::path::PathBuf, tempfile::TempDir) {
        self.stop.cancel();
        self.server.await.expect("join").expect("serve");
        (self.provider, self.ca, self._dir)
    }
}

async fn start_provider(keys: &[Key]) -> Running {
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
    .expect("server tls");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let provider = Arc::new(Provider {
        jwks: RwLock::new(jwks(keys)),
        fetches: AtomicUsize::new(0),
        base,
    });
    let router = axum::Router::new()
        .route(
            "/jwks.json",
            get(|State(p): State<Arc<Provider>>| async move {
                p.fetches.fetch_add(1, Ordering::SeqCst);
                p.jwks.read().expect("jwks").clone()
            }),
        )
        .route(
            "/.well-known/openid-configuration",
            get(|State(p): State<Arc<Provider>>| async move {
                json!({ "issuer": p.base, "jwks_uri": format!("{}/jwks.json", p.base) }).to_string()
            }),
        )
        .with_state(provider.clone());
    let stop = CancellationToken::new();
    let server = tokio::spawn(batchgate_net::serve(
        listener,
        router,
        Some(tls),
        stop.clone(),
    ));
    Running {
        provider,
        stop,
        server,
        ca: files.ca_cert,
        _dir: dir,
    }
}

/// A P-256 signing key with its `kid`.
#[derive(Clone)]
struct Key {
    kid: String,
    private_pem: String,
    point: Vec<u8>,
}

fn key(kid: &str) -> Key {
    let pair = rcgen::KeyPair::generate().expect("key");
    Key {
        kid: kid.into(),
        private_pem: pair.serialize_pem(),
        point: pair.public_key_raw().to_vec(),
    }
}

fn jwks(keys: &[Key]) -> String {
    let keys: Vec<_> = keys
        .iter()
        .map(|k| {
            json!({
                "kty": "EC", "crv": "P-256", "kid": k.kid, "use": "sig", "alg": "ES256",
                "x": URL_SAFE_NO_PAD.encode(&k.point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&k.point[33..65]),
            })
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// `Bearer <token>` for `sub`, signed with `key` and naming `kid`.
fn bearer(key: &Key, kid: &str, sub: &str) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    let token = encode(
        &header,
        &json!({ "sub": sub, "exp": now() + 600 }),
        &EncodingKey::from_ec_pem(key.private_pem.as_bytes()).expect("EC key"),
    )
    .expect("sign");
    format!("Bearer {token}")
}

async fn authenticator(
    running: &Running,
    discover: bool,
    refresh: Duration,
    min_interval: Duration,
) -> Arc<Authenticator> {
    let url = if discover {
        running.provider.base.clone()
    } else {
        format!("{}/jwks.json", running.provider.base)
    };
    let auth = Authenticator::new(AuthConfig::Jwt {
        keys: KeySource::JwksUrl(RemoteJwks {
            url,
            discover,
            ca: Some(running.ca.clone()),
            refresh,
            min_interval,
        }),
        issuer: None,
        audience: None,
    })
    .expect("config");
    auth.load_remote().await.expect("first fetch");
    Arc::new(auth)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_accepted_without_a_restart() {
    let (old, new) = (key("2026-old"), key("2026-new"));
    let running = start_provider(std::slice::from_ref(&old)).await;
    // Through OpenID discovery: the issuer's document names the key set.
    let auth = authenticator(&running, true, Duration::from_secs(3600), Duration::ZERO).await;
    assert_eq!(
        auth.identify_fresh(Some(&bearer(&old, &old.kid, "alice")))
            .await,
        Ok("alice".into())
    );
    // Signed with the new key before the provider publishes it: refused.
    let early = auth
        .identify_fresh(Some(&bearer(&new, &new.kid, "bob")))
        .await;
    assert!(matches!(early, Err(AuthError::Invalid(_))), "{early:?}");
    // The provider rotates: the new key in, the old one out.
    *running.provider.jwks.write().expect("jwks") = jwks(std::slice::from_ref(&new));
    assert_eq!(
        auth.identify_fresh(Some(&bearer(&new, &new.kid, "bob")))
            .await,
        Ok("bob".into()),
        "the new key is fetched when a token names it"
    );
    let retired = auth
        .identify_fresh(Some(&bearer(&old, &old.kid, "alice")))
        .await;
    assert!(
        retired.is_err(),
        "a key the provider retired still verifies"
    );
    // The first fetch, the refused early token's, the rotated key's, the retired key's.
    assert_eq!(running.provider.fetches.load(Ordering::SeqCst), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_good_keys_outlive_the_provider_going_down() {
    let good = key("good");
    let running = start_provider(std::slice::from_ref(&good)).await;
    // Scheduled fetches every second, and fetches for unknown kids at once.
    let auth = authenticator(&running, false, Duration::from_secs(1), Duration::ZERO).await;
    let stop = CancellationToken::new();
    tokio::spawn(auth.clone().watch(stop.clone()));
    let (provider, _ca, _dir) = running.go_down().await;
    assert_eq!(provider.fetches.load(Ordering::SeqCst), 1);
    // A token naming an unknown kid makes a fetch, which fails…
    let stranger = key("stranger");
    let refused = auth
        .identify_fresh(Some(&bearer(&stranger, "stranger", "mallory")))
        .await;
    assert!(refused.is_err());
    assert_eq!(auth.jwks_fetches(), 2);
    // …and so do scheduled fetches; the keys stay.
    let deadline = Instant::now() + Duration::from_secs(20);
    while auth.jwks_fetches() < 4 {
        assert!(Instant::now() < deadline, "no scheduled fetch");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        auth.identify_fresh(Some(&bearer(&good, "good", "alice")))
            .await,
        Ok("alice".into())
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_kids_makes_a_bounded_number_of_fetches() {
    let good = key("good");
    let running = start_provider(std::slice::from_ref(&good)).await;
    let min_interval = Duration::from_millis(500);
    let auth = authenticator(&running, false, Duration::from_secs(3600), min_interval).await;
    // 2,000 tokens with kids never seen, 100 at a time, for at most 3 s.
    let stranger = key("stranger");
    let started = Instant::now();
    let mut sent = 0;
    while sent < 2000 && started.elapsed() < Duration::from_secs(3) {
        let mut wave = tokio::task::JoinSet::new();
        for i in 0..100 {
            let auth = auth.clone();
            let token = bearer(&stranger, &format!("kid-{sent}-{i}"), "mallory");
            wave.spawn(async move { auth.identify_fresh(Some(&token)).await });
        }
        for outcome in wave.join_all().await {
            assert!(outcome.is_err());
        }
        sent += 100;
    }
    let elapsed = started.elapsed();
    let fetches = running.provider.fetches.load(Ordering::SeqCst);
    // The first fetch, then at most one per interval of the flood (and one at its start).
    let bound = 2 + (elapsed.as_millis() / min_interval.as_millis()) as usize;
    assert!(
        fetches <= bound,
        "{fetches} fetches for {sent} tokens in {elapsed:?} (bound {bound})"
    );
    assert!(sent >= 100);
    // The good key still verifies.
    assert_eq!(
        auth.identify_fresh(Some(&bearer(&good, "good", "alice")))
            .await,
        Ok("alice".into())
    );
}
