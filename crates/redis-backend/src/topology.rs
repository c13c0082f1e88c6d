//! Which partitions live on the same Redis node, so that one script call can serve every
//! partition of a node: on a cluster, admission and settling are grouped per master, not per
//! partition (with 16 partitions on 3 masters, a gathered group of tasks would otherwise
//! become up to 16 calls of one or two tasks each).
//!
//! A script call declares one key, which routes it to its node, and takes the rest of its
//! keys as arguments. Redis runs a script without a `#!` line over keys of several slots as
//! long as they are all served by the node it runs on; a key served elsewhere fails its
//! command with an error naming a non-local key. The map comes from `CLUSTER SLOTS` and is
//! refreshed every [`REFRESH_EVERY`] and whenever a call meets such an error, so a slot that
//! moved costs the calls that met it (their tasks are answered `503` or redelivered), not
//! more. On a standalone Redis every partition is on the one node.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::Value;
use tracing::{debug, warn};

use crate::conn::{bounded, RedisConn};
use crate::keys::Keys;

/// Longest a slot map is used before it is read again.
pub(crate) const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// The node of each partition, as far as this process knows. Cloning is shallow.
#[derive(Clone)]
pub(crate) struct Topology {
    conn: RedisConn,
    keys: Keys,
    cluster: bool,
    op_timeout: Duration,
    map: Arc<Mutex<Map>>,
}

#[derive(Default)]
struct Map {
    /// `nodes[p]`: an index standing for partition `p`'s master; empty until read.
    nodes: Vec<usize>,
    /// When the map was read; `None`: read it at the next use.
    read_at: Option<Instant>,
    /// A read is under way (one at a time).
    reading: bool,
}

impl Topology {
    pub(crate) fn new(conn: RedisConn, keys: Keys, cluster: bool, op_timeout: Duration) -> Self {
        Topology {
            conn,
            keys,
            cluster,
            op_timeout,
            map: Arc::default(),
        }
    }

    /// What stands for the node of each of `partitions`: equal values share a node. On a
    /// standalone Redis, all share one; on a cluster whose map cannot be read, each partition
    /// stands alone (one call per partition, as safe as it is slow).
    pub(crate) async fn nodes(&self, partitions: &[usize]) -> Vec<usize> {
        if !self.cluster {
            return vec![0; partitions.len()];
        }
        self.refresh_if_due().await;
        let map = self.lock();
        partitions
            .iter()
            .map(|&p| match map.nodes.get(p) {
                Some(&node) => node,
                // Past every node index: a group of its own.
                None => usize::MAX - p,
            })
            .collect()
    }

    /// A call met a key that its node does not serve: read the map again before the next use.
    pub(crate) fn invalidate(&self) {
        if self.cluster {
            self.lock().read_at = None;
        }
    }

    /// Whether a Redis error says that a script touched a key of another node.
    pub(crate) fn is_misrouted(why: &str) -> bool {
        let why = why.to_ascii_lowercase();
        why.contains("non local key") || why.contains("moved") || why.contains("crossslot")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Map> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn refresh_if_due(&self) {
        {
            let mut map = self.lock();
            let due = map.read_at.is_none_or(|at| at.elapsed() >= REFRESH_EVERY);
            if !due || map.reading {
                return;
            }
            map.reading = true;
        }
        let read = self.read().await;
        let mut map = self.lock();
        map.reading = false;
        match read {
            Ok(nodes) => {
                debug!(?nodes, "cluster slot map read");
                map.nodes = nodes;
                map.read_at = Some(Instant::now());
            }
            Err(error) => {
                // Keep the last map; try again at the next use after a pause.
                warn!(%error, "cannot read the cluster's slot map; keeping the last one");
                map.read_at = Some(Instant::now() - REFRESH_EVERY + Duration::from_secs(1));
            }
        }
    }

    async fn read(&self) -> redis::RedisResult<Vec<usize>> {
        let mut conn = self.conn.clone();
        let ranges: Vec<Value> = bounded(
            self.op_timeout,
            redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn),
        )
        .await?;
        let masters = parse_slots(&ranges);
        let mut names: Vec<(String, u16)> = Vec::new();
        (0..self.keys.partitions())
            .map(|p| {
                let slot = self.keys.partition_slot(p);
                let (_, _, node) = masters
                    .iter()
                    .find(|(lo, hi, _)| (*lo..=*hi).contains(&slot))
                    .ok_or_else(|| {
                        redis::RedisError::from((
                            redis::ErrorKind::Client,
                            "cluster slot without a master",
                        ))
                    })?;
                Ok(match names.iter().position(|n| n == node) {
                    Some(i) => i,
                    None => {
                        names.push(node.clone());
                        names.len() - 1
                    }
                })
            })
            .collect()
    }
}

/// The slot ranges of a `CLUSTER SLOTS` reply and the master serving each:
/// `(first, last, (host, port))`.
pub(crate) fn parse_slots(ranges: &[Value]) -> Vec<(u16, u16, (String, u16))> {
    let int = |v: &Value| match v {
        Value::Int(i) => u16::try_from(*i).ok(),
        _ => None,
    };
    ranges
        .iter()
        .filter_map(|range| {
            let Value::Array(parts) = range else {
                return None;
            };
            let (lo, hi) = (int(parts.first()?)?, int(parts.get(1)?)?);
            let Value::Array(master) = parts.get(2)? else {
                return None;
            };
            let host = crate::value_text(master.first()?)?;
            let port = int(master.get(1)?)?;
            Some((lo, hi, (host, port)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misrouted_calls_are_recognised() {
        assert!(Topology::is_misrouted(
            "ERR Script attempted to access a non local key in a cluster node"
        ));
        assert!(Topology::is_misrouted("MOVED 3999 127.0.0.1:6381"));
        assert!(!Topology::is_misrouted("OOM command not allowed"));
    }
}
