//! What the partitions' streams hold, counted in tasks: the queue's depth (for capacity and
//! the status page) and the consumer group's backlog (taken vs still queued, from which
//! gateways estimate a new task's wait). An entry holds a group of tasks, so entries are
//! turned into tasks with each stream's task count (`<stream>:n`).

use std::collections::HashMap;
use std::time::Duration;

use batchgate_queue::Backlog;
use redis::Value;

use crate::conn::{bounded, RedisConn};
use crate::keys::{Keys, GROUP};

/// Entries and tasks in partition `p`'s stream (an entry holds at least one task; an empty
/// stream holds none, whatever its count says).
async fn size(
    conn: &RedisConn,
    keys: &Keys,
    op_timeout: Duration,
    p: usize,
) -> redis::RedisResult<(usize, usize)> {
    let mut pipe = redis::pipe();
    pipe.cmd("XLEN")
        .arg(keys.stream(p))
        .cmd("GET")
        .arg(keys.task_count(p));
    let mut conn = conn.clone();
    let (entries, count): (usize, Option<usize>) =
        bounded(op_timeout, pipe.query_async(&mut conn)).await?;
    Ok((entries, tasks(entries, count)))
}

/// Tasks in a stream of `entries` entries whose count says `count`: an empty stream holds
/// none whatever its count says, and no fewer than one per entry.
fn tasks(entries: usize, count: Option<usize>) -> usize {
    if entries == 0 {
        0
    } else {
        count.unwrap_or(entries).max(entries)
    }
}

/// Tasks in each partition's stream.
pub(crate) async fn depth(
    conn: &RedisConn,
    keys: &Keys,
    op_timeout: Duration,
) -> redis::RedisResult<Vec<usize>> {
    let sizes = (0..keys.partitions()).map(|p| size(conn, keys, op_timeout, p));
    futures_util::future::join_all(sizes)
        .await
        .into_iter()
        .map(|r| r.map(|(_, tasks)| tasks))
        .collect()
}

/// From `XINFO GROUPS` of each partition, summed: taken = `entries-read` (entries delivered
/// to batchers), queued = `lag` (entries not delivered yet), each in tasks at the
/// partition's tasks per entry (its task count over its length: entries hold groups).
/// `None` while Redis cannot count exactly (a group without a valid lag, e.g. right after
/// entries past its position were deleted). Readers take at most about a batch ahead of
/// their batcher, so what they hold is not hidden from `queued` for long.
pub(crate) async fn backlog(
    conn: &RedisConn,
    keys: &Keys,
    op_timeout: Duration,
) -> redis::RedisResult<Option<Backlog>> {
    let infos = (0..keys.partitions()).map(|p| {
        // One round trip per partition (its keys share a slot).
        let stream = keys.stream(p);
        let mut pipe = redis::pipe();
        pipe.cmd("XINFO")
            .arg("GROUPS")
            .arg(&stream)
            .cmd("XLEN")
            .arg(&stream)
            .cmd("GET")
            .arg(keys.task_count(p));
        let mut conn = conn.clone();
        async move {
            let (groups, entries, count): (Vec<HashMap<String, Value>>, usize, Option<usize>) =
                bounded(op_timeout, pipe.query_async(&mut conn)).await?;
            Ok::<_, redis::RedisError>((groups, (entries, tasks(entries, count))))
        }
    });
    let mut total = Backlog {
        taken: 0,
        queued: 0,
    };
    for info in futures_util::future::join_all(infos).await {
        let (groups, (entries, tasks)) = info?;
        let Some(group) = groups.iter().find(
            |g| matches!(g.get("name"), Some(v) if crate::value_text(v).as_deref() == Some(GROUP)),
        ) else {
            // No group yet: nothing was ever read from this partition.
            continue;
        };
        let per_entry = if entries == 0 {
            1.0
        } else {
            tasks as f64 / entries as f64
        };
        let number = |field: &str| group.get(field).and_then(value_number);
        match (number("entries-read"), number("lag")) {
            (Some(read), Some(lag)) => {
                total.taken += (read as f64 * per_entry).round() as u64;
                total.queued += (lag as f64 * per_entry).round() as u64;
            }
            _ => return Ok(None),
        }
    }
    Ok(Some(total))
}

/// A reply field as a non-negative number; `None` for nil.
fn value_number(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => crate::value_text(other)?.parse().ok(),
    }
}
