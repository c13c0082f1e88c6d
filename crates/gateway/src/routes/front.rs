//! What every request of the API passes through, as one tower service around each route
//! (and around the submit handler, which is called without the router: `api.rs`):
//!
//! - its id: a client's `x-request-id` is kept if acceptable (`request_id.rs`), else replaced
//!   by a new UUID, before anything below sees it; the answer echoes it;
//! - its span (`span.rs`), which every log line about the request carries, entered while the
//!   request is handled (not while its answer's body is written: nothing logs then);
//! - the guard (`guard.rs`): identity, rate limit, the caller's share, the gateway's limit;
//! - the request timeout (408 `timeout`);
//! - the answer counted by route and status, with its duration (answers the route itself
//!   gave: not the guard's refusals or timeouts, which are counted by their error code);
//! - an error answer that is not JSON (one made below the routes, by the framework) put into
//!   our shape, and every error answer counted by its stable code (no line per failed
//!   request: a client must not be able to flood the log);
//! - an error on the OpenAI or KServe V2 routes put in that protocol's shape (`shape.rs`);
//! - every answer marked `nosniff`.
//!
//! One service, not a stack of `from_fn` middleware: each of those clones the services below
//! it and boxes a future on every request, and this path is every request's.

use std::convert::Infallible;
use std::future::Future;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use tower::{Layer, Service};
use tracing::Instrument;

use super::{guard, request_id, shape, span};
use crate::error::{ApiError, ErrorCode};
use crate::metrics::{route, CodeLabel, ShedLabel};
use crate::state::AppState;

/// Wraps each route (and the fallback) in [`Front`].
#[derive(Clone)]
pub(super) struct FrontLayer(pub(super) AppState);

impl<S> Layer<S> for FrontLayer {
    type Service = Front<S>;

    fn layer(&self, inner: S) -> Front<S> {
        Front {
            inner,
            state: self.0.clone(),
            route: None,
        }
    }
}

/// The service around one route; see the module's documentation.
#[derive(Clone)]
pub(super) struct Front<S> {
    inner: S,
    state: AppState,
    /// The route, when `inner` is one handler called without the router (which otherwise
    /// names the route it matched).
    route: Option<&'static str>,
}

impl<S> Front<S> {
    /// Around one route's handler, called directly rather than through the router.
    pub(super) fn around(inner: S, state: AppState, route: &'static str) -> Self {
        Front {
            inner,
            state,
            route: Some(route),
        }
    }
}

impl<S> Service<Request> for Front<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The inner service was made ready for this call: take it, leave a clone.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        let route = self.route;
        // The handling's own future, mapped: an `async` block around it would hold a second
        // copy of the request beside it.
        Box::pin(handle(state, inner, route, request).map(Ok))
    }
}

/// One request, through everything the module's documentation lists.
async fn handle<S>(
    state: AppState,
    inner: S,
    route: Option<&'static str>,
    mut request: Request,
) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let request_id = request_id::ensure(request.headers_mut());
    let door = shape::door_of(request.uri().path());
    let span = span::request_span(&request, request_id.as_ref());
    // The answer's latency is only in its debug line: no clock read when that is off.
    let started = span::answer_logged().then(Instant::now);
    // The span is read back from the instrumented future: no clone of it to count and drop.
    let mut routed = pin!(route_guarded(&state, inner, route, request).instrument(span));
    let mut response = routed.as_mut().await;
    let status = response.status();
    // A handler's own JSON answer (`/readyz`'s 503 says why it is not ready) is kept.
    if (status.is_client_error() || status.is_server_error())
        && response.extensions().get::<ErrorCode>().is_none()
        && !is_json(&response)
    {
        response = ApiError::Rejected(status).into_response();
    }
    // The OpenAI and KServe V2 routes answer errors in their protocols' shapes.
    let mut response = shape::reshape(door, response);
    if let Some(ErrorCode(code)) = response.extensions().get::<ErrorCode>() {
        state
            .metrics
            .errors
            .get_or_create(&CodeLabel { code })
            .inc();
        if matches!(*code, "overloaded" | "deadline_unmeetable") {
            state
                .metrics
                .shed
                .get_or_create(&ShedLabel { reason: code })
                .inc();
        }
    }
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Some(request_id) = request_id {
        headers.entry(request_id::HEADER).or_insert(request_id);
    }
    span::record_response(&response, started, routed.span());
    response
}

/// The guard, then the route within the request timeout; the route's own answers counted.
async fn route_guarded<S>(
    state: &AppState,
    mut inner: S,
    route: Option<&'static str>,
    mut request: Request,
) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let _admitted = match guard::admit(state, &mut request).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    // The route: the handler's own, or the one the router matched (the fallback has none,
    // and is not counted by route).
    let route = route.or_else(|| {
        let matched = request.extensions().get::<MatchedPath>()?.as_str();
        Some(
            route::ALL
                .into_iter()
                .find(|r| matched == *r)
                .unwrap_or(route::UNMATCHED),
        )
    });
    let is_submit = route == Some(route::INFERENCE) && request.uri().query().is_none();
    let started = Instant::now();
    let answered = tokio::time::timeout(state.config.request_timeout, inner.call(request)).await;
    let response = match answered {
        Ok(Ok(response)) => response,
        Ok(Err(never)) => match never {},
        Err(_) => return ApiError::Timeout.into_response(),
    };
    if let Some(route) = route {
        let took = started.elapsed().as_secs_f64();
        if is_submit {
            state.metrics.submit_latency.observe(took);
        }
        state
            .metrics
            .count_answer(route, response.status().as_u16(), took);
    }
    response
}

/// Whether `response` declares a JSON body.
fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}
