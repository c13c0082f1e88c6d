//! What one client connection may hold, and for how long: the bounds that keep slow, idle or
//! greedy connections from taking a server's memory, file descriptors or request slots.

use std::time::Duration;

/// Default bound on reading a request's head (HTTP/1.1), from its first byte.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on an open connection with no request under way.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default most open client connections; more wait in the kernel's backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default largest request head (HTTP/1.1: request line and headers; HTTP/2: the decoded
/// header list), in bytes.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Default concurrent HTTP/2 streams one connection may open: a quarter of the gateway-wide
/// request limit (16,384), so one connection cannot hold every slot, yet enough for one
/// multiplexing client at 10,000 requests/s: each waits ~200 ms for its batch, so ~2,000 are
/// open at once, and a client at the limit waits for a stream (1,024 would cap one
/// connection near 5,000 requests/s).
pub const DEFAULT_H2_MAX_STREAMS: u32 = 4096;
/// hyper's smallest read buffer: a head limit below it is raised to it.
pub const MIN_HEADER_BYTES: usize = 8 * 1024;
/// File descriptors kept free of client connections (listeners, Redis and worker
/// connections, files) when the cap is lowered to fit the process's descriptor limit.
const FD_RESERVE: usize = 256;

/// The bounds of every client connection of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// An HTTP/1.1 request's head must arrive whole within this, counted from its first
    /// byte: a client dribbling its headers is cut off.
    pub header_read_timeout: Duration,
    /// A connection with no request under way and no head arriving is closed after this,
    /// counted from its last answer (or from when it was opened): HTTP/1.1 keep-alive and
    /// HTTP/2 alike. Keep it longer than the idle timeout of a load balancer in front, so the
    /// balancer, not the gateway, closes pooled connections.
    pub idle_timeout: Duration,
    /// Most connections open at once. At the cap the server stops accepting until one
    /// closes: new clients wait in the kernel's backlog, and the accept loop sleeps rather
    /// than spins.
    pub max_connections: usize,
    /// Largest request head, in bytes (HTTP/1.1 read buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub h2_max_streams: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            h2_max_streams: DEFAULT_H2_MAX_STREAMS,
        }
    }
}

/// A connection limit out of its range; the message names the flag at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// A timeout of zero would close every connection at once.
    #[error("--header-read-timeout-ms and --idle-timeout-ms must be at least 1")]
    ZeroTimeout,
    /// No connection or no stream could ever be served.
    #[error("--max-connections and --h2-max-streams must be at least 1")]
    ZeroCount,
    /// Too small for the request heads ordinary clients send.
    #[error("--max-header-bytes must be at least {MIN_HEADER_BYTES}")]
    HeaderBytes,
}

impl ConnectionLimits {
    /// Checks the limits.
    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.header_read_timeout.is_zero() || self.idle_timeout.is_zero() {
            return Err(LimitsError::ZeroTimeout);
        }
        if self.max_connections == 0 || self.h2_max_streams == 0 {
            return Err(LimitsError::ZeroCount);
        }
        if self.max_header_bytes < MIN_HEADER_BYTES {
            return Err(LimitsError::HeaderBytes);
        }
        Ok(())
    }

    /// The connection cap, lowered to fit the process's open-file limit (less a reserve for
    /// everything else the process opens), so the cap is reached before `accept` fails.
    pub fn effective_max_connections(&self) -> usize {
        match open_file_limit() {
            Some(limit) => self
                .max_connections
                .min(limit.saturating_sub(FD_RESERVE).max(1)),
            None => self.max_connections,
        }
    }
}

/// The soft limit on open files of this process, from `/proc/self/limits` (Linux); `None`
/// where it cannot be read or is unlimited.
fn open_file_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_fits_the_descriptor_limit_and_bad_limits_are_refused() {
        let limits = ConnectionLimits {
            max_connections: usize::MAX,
            ..Default::default()
        };
        let cap = limits.effective_max_connections();
        if let Some(fds) = open_file_limit() {
            assert!(cap < fds, "cap {cap} must leave descriptors free of {fds}");
        }
        assert!(ConnectionLimits::default().validate().is_ok());
        let small = ConnectionLimits {
            max_header_bytes: 100,
            ..Default::default()
        };
        assert!(small.validate().is_err());
    }
}
