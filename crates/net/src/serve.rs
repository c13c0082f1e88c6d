//! The HTTP accept loop of every batchgate server: HTTP/1.1, and HTTP/2 (with prior knowledge
//! in plain text, by ALPN over TLS), with a graceful drain, under [`ConnectionLimits`]: a cap
//! on open connections, a header-read timeout, an idle timeout, and bounded request heads.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use axum::response::Response;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulConnection;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod activity;

use crate::limits::MIN_HEADER_BYTES;
use crate::{ConnectionLimits, ServerTls};
use activity::{Activity, Tracked, Watched};

/// HTTP/2 flow-control window of a whole client connection. With the 64 KiB default, a
/// client multiplexing thousands of 2 KiB bodies gets its DATA split into small frames
/// whenever the server falls behind, and h2 closes the connection (`ENHANCE_YOUR_CALM`,
/// "too_many_data_frames") once such frames pile up: seen at 13,000 requests/s here. A large
/// window keeps frames whole (and sizes h2's small-frame budget, half the window).
pub const H2_CONNECTION_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
/// HTTP/2 flow-control window of one stream: more than any accepted request body.
pub const H2_STREAM_WINDOW_BYTES: u32 = 1024 * 1024;
/// Longest a client may take over its TLS handshake; a client that stalls it (to hold a
/// connection open cheaply) is dropped after this.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again: the
/// loop never spins on an error that the next call would repeat.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// Failed accepts are logged at most this often (with how many there were), so a flood of
/// them cannot flood the log.
const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(5);
/// After an idle connection is asked to close, how long it may take before it is dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What a server serves: an axum [`Router`](axum::Router), or a service like one — answers
/// every request (infallible), always ready (`poll_ready` is not called), cloned for each
/// connection, its future not pinned in place (`Unpin`, as a router's is).
pub trait App:
    tower::Service<
        Request<Body>,
        Response = Response,
        Error = Infallible,
        Future: Future<Output = Result<Response, Infallible>> + Send + Unpin + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> App for S where
    S: tower::Service<
            Request<Body>,
            Response = Response,
            Error = Infallible,
            Future: Future<Output = Result<Response, Infallible>> + Send + Unpin + 'static,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// Serves `app` on `listener` with the default [`ConnectionLimits`]; see [`serve_with`].
pub async fn serve(
    listener: TcpListener,
    app: impl App,
    tls: Option<ServerTls>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, app, tls, ConnectionLimits::default(), shutdown).await
}

/// Serves `app` on `listener` — over TLS if `tls` is given — under `limits`, until
/// `shutdown` is cancelled; then stops accepting, asks every connection to close once its
/// requests under way (long polls included) are answered, and waits for them. The caller
/// bounds that wait.
pub async fn serve_with(
    listener: TcpListener,
    app: impl App,
    tls: Option<ServerTls>,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let builder = builder(&limits);
    let max_connections = limits.effective_max_connections();
    if max_connections < limits.max_connections {
        tracing::warn!(
            max_connections,
            configured = limits.max_connections,
            "connection cap lowered to fit the process's open-file limit"
        );
    }
    // One permit per open connection: at the cap the loop waits here, without accepting.
    let slots = Arc::new(Semaphore::new(max_connections));
    let connections = TaskTracker::new();
    let open = Arc::new(OpenConnections::default());
    let mut accept_errors = AcceptErrors::default();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => {
                permit.expect("the connection semaphore is never closed. This is a bug.")
            }
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_errors.note(&error);
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let activity = Arc::new(Activity::new());
        // Registered before the task starts, so the shutdown below reaches it.
        let registered = open.register(activity.clone());
        let service = TowerToHyperService::new(Tracked {
            app: app.clone(),
            activity: activity.clone(),
        });
        let builder = builder.clone();
        match &tls {
            None => {
                connections.spawn(async move {
                    let _permit = permit;
                    let _registered = registered;
                    let stream = Watched::new(stream, activity.clone());
                    let connection = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    drive(connection, &activity, &limits).await;
                });
            }
            Some(tls) => {
                // The handshake runs in the connection's own task, so a slow client holds up
                // nobody else.
                let acceptor = tls.acceptor();
                connections.spawn(async move {
                    let _permit = permit;
                    let _registered = registered;
                    let stream =
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    let stream = Watched::new(stream, activity.clone());
                    let connection = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    drive(connection, &activity, &limits).await;
                });
            }
        }
    }
    drop(listener);
    open.close_all();
    connections.close();
    connections.wait().await;
    Ok(())
}

/// The HTTP/1.1 and HTTP/2 settings of every connection.
fn builder(limits: &ConnectionLimits) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    // hyper's own header-read timer also runs while a keep-alive connection waits for its
    // next request, which would make the idle bound of HTTP/1.1 as short as the header bound
    // (and race clients reusing pooled connections). The connection's watchdog (`drive`)
    // times heads from their first byte instead.
    builder
        .http1()
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(MIN_HEADER_BYTES));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .initial_connection_window_size(H2_CONNECTION_WINDOW_BYTES)
        .initial_stream_window_size(H2_STREAM_WINDOW_BYTES);
    builder
}

/// The connections open now, so that a shutdown can ask each to finish. Touched once when a
/// connection opens and once when it ends, never per request.
#[derive(Default)]
struct OpenConnections {
    next_id: AtomicU64,
    by_id: Mutex<HashMap<u64, Arc<Activity>>>,
}

impl OpenConnections {
    fn register(self: &Arc<Self>, activity: Arc<Activity>) -> Registered {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, activity);
        Registered {
            open: self.clone(),
            id,
        }
    }

    /// Asks every open connection to finish once its requests under way are answered.
    fn close_all(&self) {
        for activity in self.lock().values() {
            activity.close_requested.store(true, Ordering::Release);
            activity.close_waker.wake();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A connection's place in [`OpenConnections`]; dropping it (the connection ended) frees it.
struct Registered {
    open: Arc<OpenConnections>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.open.lock().remove(&self.id);
    }
}

/// Runs one connection to its end: closes it when it has been idle too long (or never sent
/// a request in time), and asks it to finish when the server shuts down.
///
/// Requests never touch a timer or wake this task: they only note times in the connection's
/// [`Activity`]. One watchdog timer per connection reads them when it fires and arms itself
/// again, at the connection's deadline or one bound (the shorter of the header and idle
/// bounds) later, whichever comes first. Any deadline that a later request end or head start
/// sets is at least one bound after it, so the watchdog is never late for it.
async fn drive<C>(connection: C, activity: &Activity, limits: &ConnectionLimits)
where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    let period = limits.header_read_timeout.min(limits.idle_timeout);
    let mut connection = pin!(connection);
    let mut watchdog = pin!(tokio::time::sleep_until(activity.opened + period));
    let mut watching = true;
    // Asked to finish: by the server's shutdown, or for idling (then `give_up` is set).
    let mut closing = false;
    let mut give_up = false;
    std::future::poll_fn(|cx| loop {
        if let Poll::Ready(result) = connection.as_mut().poll(cx) {
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
            return Poll::Ready(());
        }
        if !closing {
            activity.close_waker.register(cx.waker());
            if activity.close_requested.load(Ordering::Acquire) {
                connection.as_mut().graceful_shutdown();
                closing = true;
                // The server's shutdown waits for requests under way, however long.
                watching = false;
                continue;
            }
        }
        if !watching || watchdog.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        if give_up {
            tracing::debug!("an idle connection did not close in time; dropping it");
            return Poll::Ready(());
        }
        let now = Instant::now();
        match activity.idle_deadline(limits) {
            Some(deadline) if deadline <= now => {
                tracing::debug!("closing an idle connection");
                connection.as_mut().graceful_shutdown();
                closing = true;
                give_up = true;
                watchdog.as_mut().reset(now + IDLE_CLOSE_GRACE);
            }
            Some(deadline) => watchdog.as_mut().reset(deadline.min(now + period)),
            None => watchdog.as_mut().reset(now + period),
        }
        // Poll again: the connection may act on the shutdown, and the timer must see the
        // waker.
    })
    .await;
}

/// Failed accepts, logged at most once per [`ACCEPT_ERROR_LOG_EVERY`].
#[derive(Default)]
struct AcceptErrors {
    /// When the last line was written.
    logged_at: Option<Instant>,
    /// Failures since then.
    unlogged: u64,
}

impl AcceptErrors {
    fn note(&mut self, error: &std::io::Error) {
        self.unlogged += 1;
        let due = self
            .logged_at
            .is_none_or(|at| at.elapsed() >= ACCEPT_ERROR_LOG_EVERY);
        if due {
            tracing::warn!(%error, failures = self.unlogged, "accept failed; pausing before the next");
            self.logged_at = Some(Instant::now());
            self.unlogged = 0;
        }
    }
}
