//! The tasks of the admission groups this process wrote, kept whole for its own stream
//! readers.
//!
//! A process that is gateway and batcher (`serve --redis`) stores each admission group's
//! messages in Redis (see `crate::entry`), and its own reader usually reads the entry a few
//! milliseconds later and would fetch the same bytes back (a `GET` of ≈ 2 KB a task, a second
//! round trip after the `XREADGROUP`) and decode every task again. Once this process reads
//! streams, its intake also keeps each group's tasks here as they were admitted (moved, not
//! copied, once their messages are written into the command; copied only on a cluster's first
//! attempt, whose tasks a moved slot may send round again), under the key it stores the
//! messages at, and a read that meets one of its own groups takes the tasks from here: no
//! fetch, no decode.
//!
//! Redis's copy stays what recovery works from: another batcher that reads or claims the
//! entry fetches it, and so do this process's claimer and drain. The stored string never
//! changes under its key (each key names one group, written once, deleted by the settle that
//! acknowledges the entry), and it is the tasks kept here encoded, so either copy gives the
//! same tasks. A group is kept until it is taken, for at most [`MAX_AGE`], within
//! [`MAX_BYTES`] in all (the oldest go first): groups another process reads are never taken
//! here, and go by age.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use batchgate_protocol::task::Task;

/// Longest a group is kept untaken.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(30);
/// Most bytes of tasks kept, by their inputs and ids (≈ 32,000 tasks of 2 KB).
pub(crate) const MAX_BYTES: usize = 64 << 20;

/// Shared by a process's intake (which keeps groups) and its queue (whose reads take them).
/// Cloning is shallow. Keeps nothing until [`LocalGroups::start`]: a process that never reads
/// streams (a gateway alone) has no use for the copies.
#[derive(Clone, Default)]
pub struct LocalGroups(Arc<Shared>);

#[derive(Default)]
struct Shared {
    /// Set once this process's readers start.
    reading: AtomicBool,
    kept: Mutex<Kept>,
}

/// A group's tasks, in the order stored (the positions an entry's `s` field names).
pub(crate) type Tasks = Vec<Task>;

/// The bytes a group's tasks hold, by their inputs and ids (what dominates).
fn size(tasks: &Tasks) -> usize {
    tasks.iter().map(|t| t.input.len() + t.task_id.len()).sum()
}

#[derive(Default)]
struct Kept {
    by_key: HashMap<String, Tasks>,
    /// Keys in the order kept, with when; a key already taken is skipped when it comes up.
    order: VecDeque<(Instant, String)>,
    bytes: usize,
}

impl LocalGroups {
    /// This process reads streams from now on: keep the groups its intake writes.
    pub(crate) fn start(&self) {
        self.0.reading.store(true, Ordering::Relaxed);
    }

    /// Whether groups are kept (see [`LocalGroups::start`]).
    pub(crate) fn keeping(&self) -> bool {
        self.0.reading.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Kept> {
        self.0.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps a group's tasks, whose messages are stored under `key`, dropping what is past its
    /// age or over the byte bound, oldest first.
    pub(crate) fn keep(&self, key: &str, tasks: Tasks) {
        self.keep_at(key, tasks, Instant::now());
    }

    fn keep_at(&self, key: &str, tasks: Tasks, now: Instant) {
        let mut kept = self.lock();
        kept.bytes += size(&tasks);
        if let Some(old) = kept.by_key.insert(key.to_owned(), tasks) {
            kept.bytes -= size(&old);
        }
        kept.order.push_back((now, key.to_owned()));
        while let Some((at, oldest)) = kept.order.front() {
            let expired = now.duration_since(*at) > MAX_AGE;
            if !expired && kept.bytes <= MAX_BYTES {
                break;
            }
            let oldest = oldest.clone();
            kept.order.pop_front();
            if let Some(dropped) = kept.by_key.remove(&oldest) {
                kept.bytes -= size(&dropped);
            }
        }
    }

    /// The tasks of the group stored under `key`, if it is kept here; it is kept no longer.
    pub(crate) fn take(&self, key: &str) -> Option<Tasks> {
        let mut kept = self.lock();
        let tasks = kept.by_key.remove(key)?;
        kept.bytes -= size(&tasks);
        if kept.by_key.is_empty() {
            // Nothing left to find: the order's keys all came up taken.
            kept.order.clear();
        }
        Some(tasks)
    }

    /// Drops the group under `key` (its admission failed: no entry names it).
    pub(crate) fn forget(&self, key: &str) {
        let _ = self.take(key);
    }

    /// Groups kept, and their bytes.
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let kept = self.lock();
        (kept.by_key.len(), kept.bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    /// A group of tasks with inputs of these lengths (ids of one byte).
    fn group(lengths: &[usize]) -> Tasks {
        lengths
            .iter()
            .map(|&n| Task {
                task_id: "t".into(),
                input: "x".repeat(n),
                enqueued_at: SystemTime::UNIX_EPOCH,
                reply_to: None,
                deadline: None,
                owner: None,
                trace_parent: None,
                zone: None,
            })
            .collect()
    }

    #[test]
    fn a_group_is_taken_once() {
        let local = LocalGroups::default();
        local.keep("g1", group(&[2, 1]));
        assert_eq!(local.held(), (1, 5));
        assert_eq!(local.take("g1"), Some(group(&[2, 1])));
        assert_eq!(local.take("g1"), None);
        assert_eq!(local.held(), (0, 0));
    }

    #[test]
    fn groups_past_their_age_go_when_another_is_kept() {
        let local = LocalGroups::default();
        let start = Instant::now();
        local.keep_at("old", group(&[10]), start);
        local.keep_at("young", group(&[10]), start + MAX_AGE / 2);
        local.keep_at(
            "new",
            group(&[10]),
            start + MAX_AGE + Duration::from_millis(1),
        );
        assert_eq!(local.take("old"), None);
        assert!(local.take("young").is_some());
        assert!(local.take("new").is_some());
    }

    #[test]
    fn the_oldest_go_first_past_the_byte_bound() {
        let local = LocalGroups::default();
        let now = Instant::now();
        let third = MAX_BYTES / 3;
        local.keep_at("a", group(&[third]), now);
        local.keep_at("b", group(&[third]), now);
        local.keep_at("c", group(&[third]), now);
        assert_eq!(local.held(), (2, 2 * (third + 1)));
        assert_eq!(local.take("a"), None);
        assert!(local.take("b").is_some() && local.take("c").is_some());
    }

    #[test]
    fn a_taken_group_leaves_no_bytes_counted() {
        let local = LocalGroups::default();
        let now = Instant::now();
        local.keep_at("a", group(&[99]), now);
        local.keep_at("b", group(&[49]), now);
        local.forget("a");
        assert_eq!(local.held(), (1, 50));
    }
}
