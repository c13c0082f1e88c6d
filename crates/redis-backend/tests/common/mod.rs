//! Helpers shared by the Redis backend's test files.

use std::time::Duration;

use batchgate_queue::{Delivery, Queue};
use batchgate_redis::RedisQueue;

/// Reads until `n` deliveries arrived or `limit` passed.
pub(crate) async fn read_n(q: &RedisQueue, n: usize, limit: Duration) -> Vec<Delivery> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut got = Vec::new();
    while got.len() < n && tokio::time::Instant::now() < deadline {
        got.extend(
            q.read(n - got.len(), Duration::from_millis(100))
                .await
                .expect("read"),
        );
    }
    got
}
