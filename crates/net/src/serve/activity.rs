//! What each connection is doing, watched from inside its I/O and its service: requests
//! under way, when the last one ended and when the next head began (`Activity`), read and
//! written through `Watched`, with every request counted by the `Tracked` service.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::BoxError;
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::App;
use crate::ConnectionLimits;

/// What a connection is doing, for its watchdog: requests under way, when the last one
/// finished, and when the head of the next one started to arrive.
pub(super) struct Activity {
    /// When the connection was accepted; the other times count from it, in milliseconds.
    pub(super) opened: Instant,
    /// Requests being answered now.
    pub(super) active: AtomicUsize,
    /// When the last request finished; `NEVER` before the first.
    pub(super) last_done_ms: AtomicU64,
    /// When the first byte arrived while no request was under way (a head is coming);
    /// stale if before `last_done_ms`. `NEVER`: no byte yet.
    pub(super) head_started_ms: AtomicU64,
    /// Whether the client speaks HTTP/2: its connection-level frames (pings, settings) are
    /// no request head, so only the idle bound applies between its requests.
    http2: AtomicBool,
    /// Set when the server shuts down: finish once the requests under way are answered.
    pub(super) close_requested: AtomicBool,
    /// The connection's task, woken when `close_requested` is set.
    pub(super) close_waker: AtomicWaker,
}

/// A time not yet reached.
pub(super) const NEVER: u64 = u64::MAX;

impl Activity {
    pub(super) fn new() -> Self {
        Activity {
            opened: Instant::now(),
            active: AtomicUsize::new(0),
            last_done_ms: AtomicU64::new(NEVER),
            head_started_ms: AtomicU64::new(NEVER),
            http2: AtomicBool::new(false),
            close_requested: AtomicBool::new(false),
            close_waker: AtomicWaker::new(),
        }
    }

    pub(super) fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(NEVER - 1)
    }

    /// When the connection has been quiet too long: `None` while requests are under way;
    /// the header-read timeout after a head started to arrive; else the idle timeout after
    /// the last request (or after the connection opened: clients open connections ahead of
    /// need, and such a connection is idle, not slow).
    pub(super) fn idle_deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        let at = |ms: u64| self.opened + Duration::from_millis(ms);
        let last_done = self.last_done_ms.load(Ordering::Acquire);
        let head_started = self.head_started_ms.load(Ordering::Acquire);
        let since_done = if last_done == NEVER { 0 } else { last_done };
        Some(if head_started != NEVER && head_started >= since_done {
            at(head_started) + limits.header_read_timeout
        } else if last_done == NEVER {
            self.opened + limits.idle_timeout
        } else {
            at(last_done) + limits.idle_timeout
        })
    }

    /// Notes bytes from the client: the first while no request is under way starts a head.
    pub(super) fn bytes_arrived(&self) {
        if self.http2.load(Ordering::Relaxed) || self.active.load(Ordering::Acquire) > 0 {
            return;
        }
        let head_started = self.head_started_ms.load(Ordering::Acquire);
        let last_done = self.last_done_ms.load(Ordering::Acquire);
        let fresh = head_started == NEVER || (last_done != NEVER && head_started < last_done);
        if fresh {
            self.head_started_ms.store(self.now_ms(), Ordering::Release);
        }
    }

    pub(super) fn begin(self: &Arc<Self>) -> Busy {
        self.active.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }
}

/// One request under way on a connection; dropping it (answered, or abandoned) ends it.
pub(super) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        // The time first, then the count: a watchdog that sees no request under way sees
        // when the last one ended.
        self.0
            .last_done_ms
            .store(self.0.now_ms(), Ordering::Release);
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}
/// The client's stream, telling the connection's [`Activity`] when bytes arrive.
pub(super) struct Watched<S> {
    pub(super) inner: S,
    pub(super) activity: Arc<Activity>,
    /// Whether the first bytes were read (and checked for the HTTP/2 preface).
    pub(super) sniffed: bool,
}

/// How an HTTP/2 client's first bytes begin (RFC 9113, 3.4).
pub(super) const H2_PREFACE_START: &[u8] = b"PRI * HTTP/2.0";

impl<S> Watched<S> {
    pub(super) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Watched {
            inner,
            activity,
            sniffed: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            if !this.sniffed {
                this.sniffed = true;
                let n = read.len().min(H2_PREFACE_START.len());
                if read[..n] == H2_PREFACE_START[..n] {
                    this.activity.http2.store(true, Ordering::Relaxed);
                }
            }
            this.activity.bytes_arrived();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The app, counting the requests under way on its connection.
#[derive(Clone)]
pub(super) struct Tracked<S> {
    pub(super) app: S,
    pub(super) activity: Arc<Activity>,
}

impl<S, B> tower::Service<axum::http::Request<B>> for Tracked<S>
where
    S: App,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = TrackedAnswer<S::Future>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // An app is always ready (`App`).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let busy = self.activity.begin();
        TrackedAnswer {
            answer: self.app.call(request.map(Body::new)),
            busy: Some(busy),
        }
    }
}

/// A request's answer, counted as under way on its connection until it is ready (or
/// dropped). Not boxed: it is the app's own future and the count.
pub(super) struct TrackedAnswer<F> {
    pub(super) answer: F,
    pub(super) busy: Option<Busy>,
}

impl<F> Future for TrackedAnswer<F>
where
    F: Future<Output = Result<axum::response::Response, Infallible>> + Unpin,
{
    type Output = Result<axum::response::Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let answer = Pin::new(&mut this.answer).poll(cx);
        if answer.is_ready() {
            this.busy = None;
        }
        answer
    }
}
