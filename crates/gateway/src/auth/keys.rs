//! Verification keys from their sources: an HS256 secret, a PEM public key, a JWKS document
//! (a file here; a URL through `remote`).

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};

use super::error::{JwksError, KeyError, UnsupportedKey};
use super::{Key, KeySource};

pub(super) fn load_keys(source: &KeySource) -> Result<Vec<Key>, KeyError> {
    match source {
        KeySource::Secret(secret) => {
            if secret.len() < 32 {
                return Err(KeyError::ShortSecret);
            }
            Ok(vec![Key {
                kid: None,
                key: DecodingKey::from_secret(secret).map_err(KeyError::Secret)?,
                algorithm: Algorithm::HS256,
            }])
        }
        KeySource::PublicKeyPem(path) => {
            let pem = std::fs::read(path).map_err(|error| KeyError::Read {
                flag: "--jwt-public-key",
                path: path.clone(),
                error,
            })?;
            if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                return Ok(vec![Key {
                    kid: None,
                    key,
                    algorithm: Algorithm::RS256,
                }]);
            }
            if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
                // ES256 needs a P-256 key; another curve would refuse every token, so it is
                // refused now, with a message that says why.
                if !pem_names_p256(&pem) {
                    return Err(KeyError::PemCurve { path: path.clone() });
                }
                return Ok(vec![Key {
                    kid: None,
                    key,
                    algorithm: Algorithm::ES256,
                }]);
            }
            Err(KeyError::PemKind { path: path.clone() })
        }
        KeySource::Jwks(path) => {
            let text = std::fs::read_to_string(path).map_err(|error| KeyError::Read {
                flag: "--jwks",
                path: path.clone(),
                error,
            })?;
            Ok(jwks_keys(&text, &path.display().to_string())?)
        }
        KeySource::JwksUrl(remote) => Err(KeyError::Fetched {
            url: remote.url.clone(),
        }),
    }
}

/// The verification keys of a JWKS document; `origin` names it (a file or a URL) in messages.
pub(super) fn jwks_keys(text: &str, origin: &str) -> Result<Vec<Key>, JwksError> {
    let set: JwkSet = serde_json::from_str(text).map_err(|error| JwksError::NotJwks {
        origin: origin.to_owned(),
        error,
    })?;
    let mut keys = Vec::new();
    for (index, jwk) in set.keys.iter().enumerate() {
        let Some(algorithm) = jwks_algorithm(jwk).map_err(|why| JwksError::Unsupported {
            origin: origin.to_owned(),
            key: key_name(jwk, index),
            why,
        })?
        else {
            tracing::info!(
                origin,
                key = %key_name(jwk, index),
                "JWKS key not for verifying signatures (`use` or `key_ops`); skipped"
            );
            continue;
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|error| JwksError::Unusable {
            origin: origin.to_owned(),
            error,
        })?;
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            key,
            algorithm,
        });
    }
    if keys.is_empty() {
        return Err(JwksError::NoKeys {
            origin: origin.to_owned(),
        });
    }
    Ok(keys)
}

/// A JWKS key's name in messages: its `kid`, else its place in the set.
fn key_name(jwk: &jsonwebtoken::jwk::Jwk, index: usize) -> String {
    match &jwk.common.key_id {
        Some(kid) => format!("{kid:?}"),
        None => format!("#{index}"),
    }
}

/// The one algorithm a JWKS key verifies: `Ok(None)` for a key not meant for verifying
/// signatures (`use` other than `sig`, `key_ops` without `verify`, a symmetric key), skipped;
/// `Err` for a signing key batchgate cannot use (another curve or algorithm), refused so that
/// the set is not accepted only to refuse every token signed with that key.
fn jwks_algorithm(jwk: &jsonwebtoken::jwk::Jwk) -> Result<Option<Algorithm>, UnsupportedKey> {
    use jsonwebtoken::jwk::{
        AlgorithmParameters, EllipticCurve, KeyAlgorithm, KeyOperations, PublicKeyUse,
    };
    let for_signatures = matches!(
        jwk.common.public_key_use,
        None | Some(PublicKeyUse::Signature)
    );
    let verifies = jwk
        .common
        .key_operations
        .as_ref()
        .is_none_or(|ops| ops.contains(&KeyOperations::Verify));
    if !for_signatures || !verifies {
        return Ok(None);
    }
    let stated = jwk.common.key_algorithm;
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => match stated {
            None | Some(KeyAlgorithm::RS256) => Ok(Some(Algorithm::RS256)),
            Some(other) => Err(UnsupportedKey::RsaAlgorithm(other)),
        },
        AlgorithmParameters::EllipticCurve(ec) => match (&ec.curve, stated) {
            (EllipticCurve::P256, None | Some(KeyAlgorithm::ES256)) => Ok(Some(Algorithm::ES256)),
            (EllipticCurve::P256, Some(other)) => Err(UnsupportedKey::EcAlgorithm(other)),
            (curve, _) => Err(UnsupportedKey::Curve(curve.clone())),
        },
        // Symmetric keys have no place in a public key set.
        AlgorithmParameters::OctetKey(_) => Ok(None),
        AlgorithmParameters::OctetKeyPair(_) => Err(UnsupportedKey::Okp),
        _ => Err(UnsupportedKey::Unknown),
    }
}

/// Whether a PEM EC public key names the P-256 curve (its OID, 1.2.840.10045.3.1.7, in the
/// DER the PEM wraps).
fn pem_names_p256(pem: &[u8]) -> bool {
    use base64::Engine;
    const P256_OID: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let text = String::from_utf8_lossy(pem);
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .is_ok_and(|der| der.windows(P256_OID.len()).any(|w| w == P256_OID))
}
