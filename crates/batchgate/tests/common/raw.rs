//! Raw HTTP/1.1 over TCP, for tests that play a misbehaving client: heads sent by hand,
//! bodies never finished, answers and closes awaited with deadlines.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// The `host:port` of an `http://host:port` URL.
pub fn addr_of(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

/// Sends `head` (a request's head, and maybe the start of its body) on a new connection and
/// leaves the connection open.
pub async fn raw(addr: &str, head: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write");
    stream
}

/// The status code of the first answer on `stream`, if one comes within `limit`.
pub async fn status_within(stream: &mut TcpStream, limit: Duration) -> Option<u16> {
    let mut buf = vec![0u8; 4096];
    let mut got = 0;
    let read = timeout(limit, async {
        while got < 12 {
            match stream.read(&mut buf[got..]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    if read.is_err() || got < 12 {
        return None;
    }
    std::str::from_utf8(&buf[9..12]).ok()?.parse().ok()
}

/// Whether the server closes `stream` within `limit` (reads end, or fail).
pub async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}
