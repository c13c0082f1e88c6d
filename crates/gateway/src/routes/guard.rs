//! What every API request (`/v1/…`, the KServe V2 `/v2/models/…`, and the gRPC methods that
//! name a model) passes as soon as its headers are read, before its body:
//! who calls (401), the caller's rate limit (429 `rate_limited`), the caller's share of the
//! gateway (429 `too_many_in_flight`), then the gateway-wide limit (503
//! `concurrency_limited`). A request refused here costs no body read and no handler work.

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use std::time::Duration;

use super::extract::authorization;
use crate::auth::ANONYMOUS;
use crate::error::ApiError;
use crate::fair_share::CallerSlot;
use crate::log_throttle::LogThrottle;
use crate::state::{AppState, RequestSlot};

/// The caller the guard identified, left in the request's extensions for the handler (by
/// the HTTP routes only with authentication: without, every caller is `anonymous`).
#[derive(Debug, Clone)]
pub(crate) struct Identity(pub(crate) String);

/// A failing limiter store is logged once a second at most, not once per request.
static LIMITER_DOWN: LogThrottle = LogThrottle::new(Duration::from_secs(1));

/// What a request that passed the guard holds until it is answered: its place under the
/// gateway-wide limit and, with authentication, in its caller's share.
pub(super) struct Admitted {
    _share: Option<CallerSlot>,
    _slot: RequestSlot,
}

/// The guard, run by the front service (`front.rs`) before the route: the authenticated
/// caller's identity goes into the request's extensions for the handler, or the refusal is
/// the answer. Health,
/// metrics, the status page and the admin API are not guarded (`None`), so operators can
/// still look at a saturated gateway.
pub(super) async fn admit(
    state: &AppState,
    request: &mut Request,
) -> Result<Option<Admitted>, Response> {
    let path = request.uri().path();
    if !(path.starts_with("/v1/") || path.starts_with("/v2/models/")) {
        return Ok(None);
    }
    let (admitted, caller) = check(state, request).await?;
    // Without authentication the caller is `anonymous` whatever the request says, and the
    // handler's `Caller` finds it so itself: no identity is made, nor left in the
    // extensions. (Their map holds three of axum's entries by then; a fourth grows it, and
    // the handler removes it again: ≈ 700 instructions a request.)
    if let Some(caller) = caller {
        request.extensions_mut().insert(Identity(caller));
    }
    Ok(Some(admitted))
}

/// The guard itself, whatever the path: what the KServe V2 gRPC door (`kserve_grpc`) runs
/// before the methods that name a model, as the HTTP routes do before `/v2/models/…`. The
/// caller's identity is left in the request's extensions, authenticated or not.
pub(super) async fn admit_caller(
    state: &AppState,
    request: &mut Request,
) -> Result<Admitted, Response> {
    let (admitted, caller) = check(state, request).await?;
    let caller = caller.unwrap_or_else(|| ANONYMOUS.to_owned());
    request.extensions_mut().insert(Identity(caller));
    Ok(admitted)
}

/// Identity, rate limit, the caller's share, the gateway's limit: what passed, and who, if
/// authenticated (without authentication every caller is [`ANONYMOUS`]).
async fn check(
    state: &AppState,
    request: &mut Request,
) -> Result<(Admitted, Option<String>), Response> {
    let header = authorization(request.headers()).map_err(IntoResponse::into_response)?;
    // Without authentication every caller is the same `anonymous`: there is no identity to
    // count against, so only the gateway-wide limit applies.
    let (share, caller) = if state.auth.enabled() {
        let caller = state
            .auth
            .identify_fresh(header)
            .await
            .map_err(|e| ApiError::Unauthenticated(e.to_string()).into_response())?;
        check_rate(state, &caller)
            .await
            .map_err(IntoResponse::into_response)?;
        let slots = state.caller_slots();
        match slots.try_enter(&caller) {
            Some(share) => (Some(share), Some(caller)),
            None => {
                return Err(ApiError::TooManyInFlight {
                    limit: slots.max_per_caller(),
                    retry_after_secs: state.config.retry_after_secs,
                }
                .into_response())
            }
        }
    } else {
        (None, None)
    };
    let Some(slot) = state.enter_request() else {
        return Err(ApiError::ConcurrencyLimited {
            retry_after_secs: state.config.retry_after_secs,
        }
        .into_response());
    };
    let admitted = Admitted {
        _share: share,
        _slot: slot,
    };
    Ok((admitted, caller))
}

/// Counts the inputs of a request of `inputs` inputs (`/v1/embeddings`, KServe V2 `infer`)
/// beyond the one the guard counted when its headers arrived, so that it takes as much of
/// the caller's rate as that many single requests: all at once, or 429 `rate_limited` with
/// nothing taken. More inputs than the caller's whole allowance could never pass: 413
/// `too_many_inputs`.
pub(crate) async fn charge_inputs(
    state: &AppState,
    caller: &str,
    inputs: usize,
) -> Result<(), ApiError> {
    let Some(limits) = state.rate_limits.as_ref() else {
        return Ok(());
    };
    if !state.auth.enabled() || inputs <= 1 {
        return Ok(());
    }
    let inputs = inputs as u64;
    let limit = limits.rate_of(caller).limit;
    if inputs > limit {
        return Err(ApiError::TooManyInputs { inputs, limit });
    }
    check_rate_cost(state, caller, inputs - 1).await
}

/// Counts one request of `caller` against its rate; `Err` with the 429 when over it.
async fn check_rate(state: &AppState, caller: &str) -> Result<(), ApiError> {
    check_rate_cost(state, caller, 1).await
}

/// Counts `cost` requests of `caller` against its rate at once; `Err` with the 429 when they
/// do not all fit.
async fn check_rate_cost(state: &AppState, caller: &str, cost: u64) -> Result<(), ApiError> {
    let Some(limits) = state.rate_limits.as_ref() else {
        return Ok(());
    };
    let rate = limits.rate_of(caller);
    match limits.limiter.check_cost(caller, rate, cost).await {
        Ok(decision) if !decision.allowed => {
            state.metrics.rate_limited.inc();
            Err(ApiError::RateLimited {
                retry_after_secs: decision.retry_after.as_secs_f64().ceil().max(1.0) as u64,
                limit: decision.limit,
                reset_secs: decision.reset.as_secs_f64().ceil() as u64,
            })
        }
        Ok(_) => Ok(()),
        // The limiter's store failed: let the request through rather than refuse everyone.
        Err(error) => {
            if let Some(suppressed) = LIMITER_DOWN.admit() {
                tracing::warn!(%error, suppressed, "rate limiter unavailable; not limiting");
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::extract::FromRequestParts;
    use batchgate_queue::memory::MemoryConfig;

    use super::*;
    use crate::routes::extract::Caller;
    use crate::{EdgeConfig, GatewayConfig, ShedBound, StateBuilder};

    fn open_state() -> AppState {
        let backends = batchgate_queue::memory::build(&MemoryConfig {
            partitions: Some(1),
            queue_capacity: 10,
            max_results: 100,
            result_ttl: Duration::from_secs(60),
            dedupe_ttl: None,
        });
        let edge = EdgeConfig {
            shed: ShedBound::Off,
            ..EdgeConfig::default()
        };
        StateBuilder::new(GatewayConfig::default(), edge)
            .build(&backends)
            .expect("a gateway on memory backends builds")
    }

    fn request(path: &str) -> Request {
        Request::builder()
            .uri(path)
            .body(Body::empty())
            .expect("a request")
    }

    #[tokio::test]
    async fn without_authentication_the_handler_finds_the_anonymous_caller_itself() {
        let state = open_state();
        let mut request = request("/v1/inference");
        let admitted = admit(&state, &mut request).await.expect("admitted");
        assert!(admitted.is_some());
        assert!(request.extensions().get::<Identity>().is_none());
        let (mut parts, _) = request.into_parts();
        let Ok(Caller(caller)) = Caller::from_request_parts(&mut parts, &state).await else {
            panic!("no caller");
        };
        assert_eq!(caller, ANONYMOUS);
    }

    #[tokio::test]
    async fn the_grpc_door_is_left_the_identity_without_authentication_too() {
        let state = open_state();
        let mut request = request("/inference.GRPCInferenceService/ModelInfer");
        let _admitted = admit_caller(&state, &mut request).await.expect("admitted");
        let identity = request.extensions().get::<Identity>();
        assert_eq!(identity.map(|Identity(c)| c.as_str()), Some(ANONYMOUS));
    }
}
