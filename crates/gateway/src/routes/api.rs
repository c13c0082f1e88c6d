//! The API as the one service a server runs: `POST /v1/inference`, nearly every request of a
//! busy gateway, goes straight to its handler (in the front service, as every route is);
//! every other request goes through the router.
//!
//! The router's way costs each request its path matched, entries in the request's extensions
//! (the matched path, the path's parameters, the body limit: a map made for them), and the
//! boxed services and futures that wrap each route in its layers (three boxes and three
//! boxed futures): ≈ 3,000 instructions and eight allocations a request, spent on a path
//! known from its first bytes. The straight way is the same front service around the same
//! handler, whose body extractor keeps the body limit itself (`extract::read_body`); the
//! route is named to it instead of matched.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::handler::future::IntoServiceFuture;
use axum::handler::Handler;
use axum::http::Method;
use axum::response::Response;
use axum::routing::future::RouteFuture;
use axum::Router;
use tower::Service;

use super::front::Front;
use super::inference;
use crate::metrics::route;
use crate::state::AppState;

/// The whole API; see the module's documentation. Cloned for each connection.
#[derive(Clone)]
pub struct Api {
    /// `POST /v1/inference`, in its front service.
    submit: Front<Submit>,
    /// Everything else, each route in its front service.
    routes: Router,
}

impl Api {
    pub(super) fn new(state: AppState, routes: Router) -> Self {
        let submit = Submit {
            state: state.clone(),
        };
        Api {
            submit: Front::around(submit, state, route::INFERENCE),
            routes,
        }
    }
}

impl Service<Request> for Api {
    type Response = Response;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both ways are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Answer {
        // The router matches paths exactly as given: no other spelling reaches this route.
        if request.method() == Method::POST && request.uri().path() == route::INFERENCE {
            Answer::Submit(self.submit.call(request))
        } else {
            Answer::Routed(self.routes.call(request))
        }
    }
}

/// The answer of either way. Held inline by the connection (not boxed again), so the
/// router's larger future is not boxed to even the two out.
#[allow(clippy::large_enum_variant)]
pub enum Answer {
    /// The submit route's front service's (boxed) future.
    Submit(Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>),
    /// The router's.
    Routed(RouteFuture<Infallible>),
}

impl Future for Answer {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Answer::Submit(answer) => answer.as_mut().poll(cx),
            Answer::Routed(answer) => Pin::new(answer).poll(cx),
        }
    }
}

/// The submit handler as a service.
#[derive(Clone)]
pub(super) struct Submit {
    state: AppState,
}

impl Service<Request> for Submit {
    type Response = Response;
    type Error = Infallible;
    type Future = IntoServiceFuture<Pin<Box<dyn Future<Output = Response> + Send>>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        inference::submit
            .with_state(self.state.clone())
            .call(request)
    }
}
