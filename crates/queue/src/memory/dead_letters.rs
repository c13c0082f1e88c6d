//! The in-process dead-letter queue: a bounded list, oldest dropped first.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::dead_letters::{DeadLetter, DeadLetters, Failure, Selection};
use crate::QueueError;

/// Dead letters kept in memory, at most `capacity`.
#[derive(Debug)]
pub struct MemoryDeadLetters {
    capacity: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    entries: VecDeque<DeadLetter>,
    /// The next entry's id.
    next_id: u64,
}

impl MemoryDeadLetters {
    /// An empty queue keeping at most `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> Self {
        MemoryDeadLetters {
            capacity: capacity.max(1),
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update leaves the list consistent, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl DeadLetters for MemoryDeadLetters {
    async fn add(&self, failures: Vec<Failure>) -> Result<(), QueueError> {
        let mut state = self.lock();
        for f in failures {
            state.next_id += 1;
            let id = state.next_id.to_string();
            if state.entries.len() >= self.capacity {
                state.entries.pop_front();
            }
            state.entries.push_back(DeadLetter {
                id,
                task_id: f.task.task_id,
                input: f.task.input,
                owner: f.task.owner,
                error: f.error,
                attempts: f.attempts,
                failed_at: f.failed_at,
            });
        }
        Ok(())
    }

    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        Ok(self.lock().entries.iter().take(limit).cloned().collect())
    }

    async fn count(&self) -> Result<usize, QueueError> {
        Ok(self.lock().entries.len())
    }

    async fn take(&self, selection: Selection) -> Result<Vec<DeadLetter>, QueueError> {
        let mut state = self.lock();
        Ok(match selection {
            Selection::Oldest(n) => {
                let n = n.min(state.entries.len());
                state.entries.drain(..n).collect()
            }
            Selection::Ids(ids) => {
                let (taken, kept) = std::mem::take(&mut state.entries)
                    .into_iter()
                    .partition(|e| ids.contains(&e.id));
                state.entries = kept;
                taken.into()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use batchgate_protocol::task::Task;

    use super::*;

    fn failure(n: u32) -> Failure {
        Failure {
            task: Task {
                task_id: format!("t{n}"),
                input: format!("in{n}"),
                enqueued_at: SystemTime::now(),
                reply_to: None,
                deadline: None,
                owner: None,
                trace_parent: None,
                zone: None,
            },
            error: "worker error: worker answered 500".into(),
            attempts: n,
            failed_at: 1,
        }
    }

    #[tokio::test]
    async fn keeps_the_newest_up_to_capacity_and_takes_by_id_or_age() {
        let dlq = MemoryDeadLetters::new(3);
        dlq.add((1..=4).map(failure).collect()).await.expect("add");
        assert_eq!(dlq.count().await.expect("count"), 3);
        let listed = dlq.list(10).await.expect("list");
        assert_eq!(
            listed
                .iter()
                .map(|e| e.task_id.as_str())
                .collect::<Vec<_>>(),
            ["t2", "t3", "t4"]
        );
        assert_eq!((listed[0].input.as_str(), listed[0].attempts), ("in2", 2));
        let by_id = dlq
            .take(Selection::Ids(vec![listed[1].id.clone(), "nope".into()]))
            .await
            .expect("take");
        assert_eq!(by_id.len(), 1);
        assert_eq!(by_id[0].task_id, "t3");
        let oldest = dlq.take(Selection::Oldest(5)).await.expect("take");
        assert_eq!(oldest.len(), 2);
        assert_eq!(dlq.count().await.expect("count"), 0);
    }
}
