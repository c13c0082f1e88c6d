//! The authenticator against tokens made here: HS256 with a secret, ES256 with keys generated
//! for the test (rcgen), hand-made `alg: none` and algorithm-confusion tokens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;

use super::*;

const SECRET: &[u8] = b"a-test-secret-of-at-least-32-bytes!!";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn hs256(claims: &serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET).expect("key"),
    )
    .expect("sign")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn secret_auth(issuer: Option<&str>, audience: Option<&str>) -> Authenticator {
    Authenticator::new(AuthConfig::Jwt {
        keys: KeySource::Secret(SECRET.to_vec()),
        issuer: issuer.map(str::to_owned),
        audience: audience.map(str::to_owned),
    })
    .expect("config")
}

fn invalid(auth: &Authenticator, token: &str) -> String {
    match auth.identify(Some(&bearer(token))) {
        Err(AuthError::Invalid(why)) => why,
        other => panic!("expected an invalid token, got {other:?}"),
    }
}

#[test]
fn a_valid_token_names_its_subject() {
    let auth = secret_auth(None, None);
    let token = hs256(&json!({ "sub": "alice", "exp": now() + 60 }));
    assert_eq!(auth.identify(Some(&bearer(&token))), Ok("alice".into()));
}

#[test]
fn missing_and_garbled_tokens_are_refused() {
    let auth = secret_auth(None, None);
    assert_eq!(auth.identify(None), Err(AuthError::Missing));
    assert_eq!(
        auth.identify(Some("Basic YWxpY2U6cHc=")),
        Err(AuthError::Missing)
    );
    assert_eq!(auth.identify(Some("Bearer ")), Err(AuthError::Missing));
    assert!(invalid(&auth, "not.a.token").contains("malformed"));
    assert!(invalid(&auth, "garbage").contains("malformed"));
    // A valid token with one signature character changed. Not the last one:
    // its low bits are padding, so changing it may leave the bytes equal.
    let token = hs256(&json!({ "sub": "alice", "exp": now() + 60 }));
    let at = token.len() - 5;
    let old = &token[at..=at];
    let token = format!(
        "{}{}{}",
        &token[..at],
        if old == "A" { "B" } else { "A" },
        &token[at + 1..]
    );
    assert!(invalid(&auth, &token).contains("signature"), "{token}");
}

#[test]
fn expiry_and_not_before_are_checked_with_a_small_leeway() {
    let auth = secret_auth(None, None);
    let expired = hs256(&json!({ "sub": "alice", "exp": now() - LEEWAY_SECS - 60 }));
    assert_eq!(invalid(&auth, &expired), "expired");
    let within_leeway = hs256(&json!({ "sub": "alice", "exp": now() - 5 }));
    assert_eq!(
        auth.identify(Some(&bearer(&within_leeway))),
        Ok("alice".into())
    );
    let early = hs256(&json!({ "sub": "alice", "exp": now() + 600, "nbf": now() + 300 }));
    assert_eq!(invalid(&auth, &early), "not valid yet (nbf)");
    let no_exp = hs256(&json!({ "sub": "alice" }));
    assert_eq!(invalid(&auth, &no_exp), "missing claim `exp`");
    let no_sub = hs256(&json!({ "exp": now() + 60 }));
    assert_eq!(invalid(&auth, &no_sub), "missing claim `sub`");
}

#[test]
fn issuer_and_audience_must_match_when_configured() {
    let auth = secret_auth(Some("https://issuer.example"), Some("batchgate"));
    let good = hs256(&json!({
        "sub": "alice", "exp": now() + 60,
        "iss": "https://issuer.example", "aud": "batchgate"
    }));
    assert_eq!(auth.identify(Some(&bearer(&good))), Ok("alice".into()));
    let wrong_iss = hs256(&json!({
        "sub": "alice", "exp": now() + 60, "iss": "https://evil.example", "aud": "batchgate"
    }));
    assert_eq!(invalid(&auth, &wrong_iss), "wrong issuer");
    let wrong_aud = hs256(&json!({
        "sub": "alice", "exp": now() + 60, "iss": "https://issuer.example", "aud": "other"
    }));
    assert_eq!(invalid(&auth, &wrong_aud), "wrong audience");
}

#[test]
fn alg_none_is_refused() {
    let auth = secret_auth(None, None);
    let part = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let token = format!(
        "{}.{}.",
        part(json!({ "alg": "none", "typ": "JWT" })),
        part(json!({ "sub": "mallory", "exp": now() + 60 }))
    );
    assert!(auth.identify(Some(&bearer(&token))).is_err());
}

/// An EC P-256 key pair: (private PKCS#8 PEM, public SPKI PEM, raw public point).
fn ec_key() -> (String, String, Vec<u8>) {
    let pair = rcgen::KeyPair::generate().expect("key");
    (
        pair.serialize_pem(),
        pair.public_key_pem(),
        pair.public_key_raw().to_vec(),
    )
}

fn es256(private_pem: &str, kid: Option<&str>, claims: &serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(str::to_owned);
    encode(
        &header,
        claims,
        &EncodingKey::from_ec_pem(private_pem.as_bytes()).expect("EC key"),
    )
    .expect("sign")
}

#[test]
fn public_key_tokens_verify_and_hs256_signed_with_the_public_key_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (private, public, _) = ec_key();
    let path = dir.path().join("public.pem");
    std::fs::write(&path, &public).expect("write");
    let auth = Authenticator::new(AuthConfig::Jwt {
        keys: KeySource::PublicKeyPem(path),
        issuer: None,
        audience: None,
    })
    .expect("config");
    let token = es256(&private, None, &json!({ "sub": "bob", "exp": now() + 60 }));
    assert_eq!(auth.identify(Some(&bearer(&token))), Ok("bob".into()));
    // Algorithm confusion: HS256 with the (public) PEM as the HMAC secret.
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &json!({ "sub": "mallory", "exp": now() + 60 }),
        &EncodingKey::from_secret(public.as_bytes()).expect("key"),
    )
    .expect("sign");
    assert!(invalid(&auth, &forged).contains("no key for algorithm HS256"));
    // Another key pair's token.
    let (other, _, _) = ec_key();
    let stranger = es256(
        &other,
        None,
        &json!({ "sub": "mallory", "exp": now() + 60 }),
    );
    assert_eq!(invalid(&auth, &stranger), "bad signature");
}

fn jwks(keys: &[(&str, &[u8])]) -> String {
    let keys: Vec<_> = keys
        .iter()
        .map(|(kid, point)| {
            // Uncompressed P-256 point: 0x04 ‖ X (32 bytes) ‖ Y (32 bytes).
            json!({
                "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
            })
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

#[test]
fn jwks_keys_are_chosen_by_kid_and_reloaded_when_the_file_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jwks.json");
    let (old_private, _, old_point) = ec_key();
    std::fs::write(&path, jwks(&[("old", &old_point)])).expect("write");
    let auth = Authenticator::new(AuthConfig::Jwt {
        keys: KeySource::Jwks(path.clone()),
        issuer: None,
        audience: None,
    })
    .expect("config");
    let old = es256(
        &old_private,
        Some("old"),
        &json!({ "sub": "carol", "exp": now() + 60 }),
    );
    assert_eq!(auth.identify(Some(&bearer(&old))), Ok("carol".into()));

    // Rotation: the file now holds only a new key.
    let (new_private, _, new_point) = ec_key();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&path, jwks(&[("new", &new_point)])).expect("write");
    let file = std::fs::File::options()
        .write(true)
        .open(&path)
        .expect("open");
    file.set_modified(SystemTime::now() + Duration::from_secs(1))
        .expect("touch");
    auth.reload_if_changed();
    let new = es256(
        &new_private,
        Some("new"),
        &json!({ "sub": "carol", "exp": now() + 60 }),
    );
    assert_eq!(auth.identify(Some(&bearer(&new))), Ok("carol".into()));
    assert!(
        auth.identify(Some(&bearer(&old))).is_err(),
        "the old key is gone"
    );

    // A broken file keeps the keys in force.
    std::fs::write(&path, "{ not json").expect("write");
    file.set_modified(SystemTime::now() + Duration::from_secs(2))
        .expect("touch");
    auth.reload_if_changed();
    assert_eq!(auth.identify(Some(&bearer(&new))), Ok("carol".into()));
}

#[test]
fn weak_secrets_and_unreadable_keys_are_refused_at_start() {
    let short = Authenticator::new(AuthConfig::Jwt {
        keys: KeySource::Secret(b"short".to_vec()),
        issuer: None,
        audience: None,
    });
    assert!(short.is_err_and(|e| e.to_string().contains("at least 32 bytes")));
    let missing = Authenticator::new(AuthConfig::Jwt {
        keys: KeySource::Jwks("/nonexistent/jwks.json".into()),
        issuer: None,
        audience: None,
    });
    assert!(missing.is_err_and(|e| e.to_string().contains("cannot read --jwks")));
}

#[test]
fn without_auth_everyone_is_anonymous() {
    let auth = Authenticator::new(AuthConfig::Disabled).expect("config");
    assert!(!auth.enabled());
    assert_eq!(auth.identify(None), Ok(ANONYMOUS.into()));
}

#[test]
fn a_configured_issuer_or_audience_is_required_not_only_checked_when_present() {
    let auth = secret_auth(Some("https://issuer.example"), Some("batchgate"));
    let no_aud = hs256(&json!({
        "sub": "alice", "exp": now() + 60, "iss": "https://issuer.example"
    }));
    assert_eq!(invalid(&auth, &no_aud), "missing claim `aud`");
    let no_iss = hs256(&json!({ "sub": "alice", "exp": now() + 60, "aud": "batchgate" }));
    assert_eq!(invalid(&auth, &no_iss), "missing claim `iss`");
    // The same with a public key (ES256).
    let dir = tempfile::tempdir().expect("tempdir");
    let (private, public, _) = ec_key();
    let path = dir.path().join("public.pem");
    std::fs::write(&path, &public).expect("write");
    let auth = Authenticator::new(AuthConfig::Jwt {
        keys: KeySource::PublicKeyPem(path),
        issuer: Some("https://issuer.example".into()),
        audience: Some("batchgate".into()),
    })
    .expect("config");
    let bare = es256(&private, None, &json!({ "sub": "bob", "exp": now() + 60 }));
    assert!(invalid(&auth, &bare).starts_with("missing claim"));
    let whole = es256(
        &private,
        None,
        &json!({ "sub": "bob", "exp": now() + 60, "iss": "https://issuer.example", "aud": "batchgate" }),
    );
    assert_eq!(auth.identify(Some(&bearer(&whole))), Ok("bob".into()));
}

/// A JWKS entry for an EC point with the given extra members (`use`, `alg`, `crv`…).
fn ec_jwk(kid: &str, point: &[u8], extra: &serde_json::Value) -> serde_json::Value {
    let half = (point.len() - 1) / 2;
    let mut jwk = json!({
        "kty": "EC", "crv": "P-256", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(&point[1..=half]),
        "y": URL_SAFE_NO_PAD.encode(&point[half + 1..]),
    });
    for (k, v) in extra.as_object().expect("an object") {
        jwk[k] = v.clone();
    }
    jwk
}

fn jwks_auth(
    dir: &tempfile::TempDir,
    keys: &[serde_json::Value],
) -> Result<Authenticator, KeyError> {
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, json!({ "keys": keys }).to_string()).expect("write");
    Authenticator::new(AuthConfig::Jwt {
        keys: KeySource::Jwks(path),
        issuer: None,
        audience: None,
    })
}

#[test]
fn jwks_keys_not_for_signatures_do_not_verify_and_keys_for_other_algorithms_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sig_private, _, sig_point) = ec_key();
    let (enc_private, _, enc_point) = ec_key();
    let (ops_private, _, ops_point) = ec_key();
    let auth = jwks_auth(
        &dir,
        &[
            ec_jwk("sig", &sig_point, &json!({ "use": "sig" })),
            ec_jwk("enc", &enc_point, &json!({ "use": "enc" })),
            ec_jwk("wrap", &ops_point, &json!({ "key_ops": ["wrapKey"] })),
        ],
    )
    .expect("a set with one signing key is usable");
    let claims = json!({ "sub": "dave", "exp": now() + 60 });
    let good = es256(&sig_private, Some("sig"), &claims);
    assert_eq!(auth.identify(Some(&bearer(&good))), Ok("dave".into()));
    let by_enc = es256(&enc_private, Some("enc"), &claims);
    assert!(
        invalid(&auth, &by_enc).contains("no key"),
        "an encryption key verified"
    );
    let by_wrap = es256(&ops_private, Some("wrap"), &claims);
    assert!(
        invalid(&auth, &by_wrap).contains("no key"),
        "a wrapping key verified"
    );
    // A key stated for another algorithm: refused at start, naming it.
    let refused = jwks_auth(
        &dir,
        &[ec_jwk("odd", &sig_point, &json!({ "alg": "ES384" }))],
    );
    let message = refused
        .expect_err("a key for ES384 cannot verify ES256")
        .to_string();
    assert!(
        message.contains("\"odd\"") && message.contains("ES384"),
        "{message}"
    );
}

#[test]
fn p384_keys_are_refused_at_start_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("P-384 key");
    let point = pair.public_key_raw().to_vec();
    let message = jwks_auth(&dir, &[ec_jwk("big", &point, &json!({ "crv": "P-384" }))])
        .expect_err("a P-384 JWKS key is refused")
        .to_string();
    assert!(
        message.contains("P384") && message.contains("only P-256"),
        "{message}"
    );
    let path = dir.path().join("p384.pem");
    std::fs::write(&path, pair.public_key_pem()).expect("write");
    let message = Authenticator::new(AuthConfig::Jwt {
        keys: KeySource::PublicKeyPem(path),
        issuer: None,
        audience: None,
    })
    .expect_err("a P-384 PEM key is refused")
    .to_string();
    assert!(message.contains("only P-256"), "{message}");
}
