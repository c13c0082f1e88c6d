//! The HTTP gateway: accepts single inference requests, enqueues them, and serves results.
//!
//! It holds no state of its own beyond handles to the queue and the result store, so any
//! number of gateways can stand behind a load balancer.
//!
//! Layout:
//! - [`auth`]: [`Authenticator`], JWT verification; the token's subject owns the tasks.
//! - [`config`]: [`GatewayConfig`], the limits the gateway enforces.
//! - [`state`]: [`AppState`], the shared handle every route gets, and [`Admission`], the gate
//!   that shutdown closes.
//! - [`error`]: [`ApiError`], every error the API can answer, mapped to status and code in one
//!   place.
//! - [`routes`]: one file per endpoint group; [`router`] wires them with the middleware.
//! - [`metrics`]: [`GatewayMetrics`] and the `/metrics` rendering.
//! - [`shed`]: load shedding — the system-wide wait estimate.
//! - [`rate_limit`]: [`MemoryRateLimiter`], per-caller GCRA limits in this gateway's memory
//!   (the backends may bring a shared one instead: Redis's).
//! - [`fair_share`]: [`CallerSlots`], each caller's requests in flight, so one caller cannot
//!   take every slot.
//! - [`log_throttle`]: [`LogThrottle`], log lines clients can trigger, at most one a second.
//! - [`readiness`]: [`Readiness`], what `/readyz` answers (draining, queue errors, workers).
//! - [`ops`]: [`Ops`], what the operator routes read; all a batcher-only process builds.
//! - [`compose`]: [`StateBuilder`], the one way to build an [`AppState`] from a config and
//!   the process's backends.
//! - [`run`](mod@run): [`run()`], serving until shutdown and draining in order.

pub mod auth;
pub mod compose;
pub mod config;
pub mod error;
pub mod fair_share;
pub mod log_throttle;
pub mod metrics;
pub mod ops;
pub mod rate_limit;
pub mod readiness;
pub mod routes;
pub mod run;
pub mod shed;
pub mod state;

pub use auth::{AuthConfig, Authenticator};
pub use compose::{BuildError, StateBuilder};
pub use config::{DedupeScope, EdgeConfig, GatewayConfig, RateLimitConfig};
pub use error::ApiError;
pub use fair_share::CallerSlots;
pub use log_throttle::LogThrottle;
pub use metrics::GatewayMetrics;
pub use ops::Ops;
pub use rate_limit::MemoryRateLimiter;
pub use readiness::Readiness;
pub use routes::{ops_router, router};
pub use run::{run, serve, Front, Outcome, ServerConfig, HTTP_CLOSE_GRACE};
pub use shed::{ShedBound, Shedder};
pub use state::{Admission, AppState, ModelBackends, RateLimits, Shared};
