//! `batchgate token`: mints a development token, signed with the HS256 shared secret.

use std::time::{Duration, SystemTime};

use clap::Args;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

/// Flags of `batchgate token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The subject: who the token speaks for (it owns the tasks it submits).
    #[arg(long)]
    pub sub: String,

    /// The gateway's --jwt-secret.
    #[arg(long, env = "BATCHGATE_JWT_SECRET", hide_env_values = true)]
    pub secret: String,

    /// Lifetime (e.g. `1h`, `15m`).
    #[arg(long, default_value = "1h", value_parser = batchgate_flags::parse_duration)]
    pub ttl: Duration,

    /// `iss` claim, if the gateway checks one (--jwt-issuer).
    #[arg(long)]
    pub issuer: Option<String>,

    /// `aud` claim, if the gateway checks one (--jwt-audience).
    #[arg(long)]
    pub audience: Option<String>,
}

/// The signed token.
pub fn mint(args: &TokenArgs) -> anyhow::Result<String> {
    if args.secret.len() < 32 {
        anyhow::bail!("--secret must be at least 32 bytes, as the gateway's --jwt-secret");
    }
    if args.sub.is_empty() || args.sub.len() > 256 {
        anyhow::bail!("--sub must be 1 to 256 bytes");
    }
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?;
    let mut claims = json!({
        "sub": args.sub,
        "iat": now.as_secs(),
        "exp": (now + args.ttl).as_secs(),
    });
    if let Some(iss) = &args.issuer {
        claims["iss"] = iss.clone().into();
    }
    if let Some(aud) = &args.audience {
        claims["aud"] = aud.clone().into();
    }
    Ok(encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(args.secret.as_bytes())?,
    )?)
}
