//! The HTTP accept loop of every batchgate server: HTTP/1.1, and HTTP/2 (with prior knowledge
//! in plain text, by ALPN over TLS), with a graceful drain.

use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::ServerTls;

/// Concurrent HTTP/2 streams one client connection may open. hyper's default (200) caps a
/// multiplexing client at about 1,000 requests/s when each waits ~200 ms for its batch.
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 16_384;
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
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Serves `router` on `listener` — over TLS if `tls` is given — until `shutdown` is
/// cancelled; then stops accepting and waits for the requests under way (long polls
/// included) to finish. The caller bounds that wait.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<ServerTls>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http2()
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .initial_connection_window_size(H2_CONNECTION_WINDOW_BYTES)
        .initial_stream_window_size(H2_STREAM_WINDOW_BYTES);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(router.clone());
        match &tls {
            None => {
                let connection = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                });
            }
            Some(tls) => {
                // The handshake runs in the connection's own task, so a slow client holds up
                // nobody else.
                let acceptor = tls.acceptor();
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
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
                    let connection = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    if let Err(error) = watcher.watch(connection).await {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
