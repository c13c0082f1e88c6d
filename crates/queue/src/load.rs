//! What the batchers tell the gateways about their workers, so that the gateways shed load
//! only when the workers are the bottleneck: a batcher whose worker slots are all taken, and
//! how much work those slots get through. A machine that is merely busy (its CPU, not its
//! workers, the limit) leaves free slots, and nothing is shed for it.
//!
//! Each batcher publishes its [`WorkerLoad`] to a [`LoadBoard`] a few times a second; a
//! gateway reads the board's sum of the fresh reports. In process the board is shared memory
//! ([`MemoryLoadBoard`]); in the distributed deployment it is one Redis hash.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::QueueError;

/// A report older than this is not counted: its batcher is gone or cut off.
pub const LOAD_REPORT_TTL: Duration = Duration::from_secs(3);

/// One batcher's workers, or several batchers' together.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WorkerLoad {
    /// Share of the recent past in which every worker slot was taken (0 to 1).
    pub busy: f64,
    /// Tasks a second the slots get through when they are all taken: slots × the recent
    /// mean batch size ÷ the recent mean call time. 0 while no batch has completed.
    pub capacity: f64,
    /// Recent mean time of one worker call, in milliseconds.
    pub call_ms: f64,
}

impl WorkerLoad {
    /// Several batchers' reports as one: capacities add up; busy and call time are averaged,
    /// weighted by capacity (an idle batcher with free slots takes work from the shared queue,
    /// so the workers are the bottleneck only as far as most of the capacity is busy).
    pub fn combine(loads: impl IntoIterator<Item = WorkerLoad>) -> Option<WorkerLoad> {
        let loads: Vec<WorkerLoad> = loads.into_iter().collect();
        if loads.is_empty() {
            return None;
        }
        let capacity: f64 = loads.iter().map(|l| l.capacity).sum();
        // Weighed by capacity; evenly while nothing has completed anywhere.
        let weight = |l: &WorkerLoad| {
            if capacity > 0.0 {
                l.capacity / capacity
            } else {
                1.0 / loads.len() as f64
            }
        };
        Some(WorkerLoad {
            busy: loads.iter().map(|l| l.busy * weight(l)).sum(),
            capacity,
            call_ms: loads.iter().map(|l| l.call_ms * weight(l)).sum(),
        })
    }

    /// The report as text: `busy;capacity;call_ms`.
    pub fn encode(&self) -> String {
        format!("{:.3};{:.1};{:.1}", self.busy, self.capacity, self.call_ms)
    }

    /// Reads [`WorkerLoad::encode`]'s text; `None` for anything else.
    pub fn decode(text: &str) -> Option<WorkerLoad> {
        let mut parts = text.split(';').map(|p| p.parse::<f64>().ok());
        let load = WorkerLoad {
            busy: parts.next()??,
            capacity: parts.next()??,
            call_ms: parts.next()??,
        };
        let finite = load.busy.is_finite() && load.capacity.is_finite() && load.call_ms.is_finite();
        (finite && parts.next().is_none()).then_some(load)
    }
}

/// Where batchers report their workers' load and gateways read it.
#[async_trait]
pub trait LoadBoard: Send + Sync {
    /// Records the latest report of batcher `who`.
    async fn publish(&self, who: &str, load: WorkerLoad) -> Result<(), QueueError>;

    /// The fresh reports (younger than [`LOAD_REPORT_TTL`]) combined; `None` when there are
    /// none.
    async fn read(&self) -> Result<Option<WorkerLoad>, QueueError>;
}

/// The board of an embedded deployment: batchers and gateway share the process.
#[derive(Debug, Default)]
pub struct MemoryLoadBoard {
    reports: Mutex<HashMap<String, (WorkerLoad, Instant)>>,
}

#[async_trait]
impl LoadBoard for MemoryLoadBoard {
    async fn publish(&self, who: &str, load: WorkerLoad) -> Result<(), QueueError> {
        let mut reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        reports.retain(|_, (_, at)| now.duration_since(*at) < LOAD_REPORT_TTL);
        reports.insert(who.to_owned(), (load, now));
        Ok(())
    }

    async fn read(&self) -> Result<Option<WorkerLoad>, QueueError> {
        let reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        Ok(WorkerLoad::combine(
            reports
                .values()
                .filter(|(_, at)| now.duration_since(*at) < LOAD_REPORT_TTL)
                .map(|(l, _)| *l),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(busy: f64, capacity: f64, call_ms: f64) -> WorkerLoad {
        WorkerLoad {
            busy,
            capacity,
            call_ms,
        }
    }

    #[test]
    fn reports_combine_weighted_by_capacity() {
        let both = WorkerLoad::combine([load(1.0, 600.0, 200.0), load(0.0, 200.0, 100.0)])
            .expect("two reports");
        assert_eq!(both.capacity, 800.0);
        assert!((both.busy - 0.75).abs() < 1e-9, "{both:?}");
        assert!((both.call_ms - 175.0).abs() < 1e-9, "{both:?}");
        assert_eq!(WorkerLoad::combine([]), None);
        // Nothing completed yet anywhere: no capacity, nothing to weigh by.
        assert_eq!(
            WorkerLoad::combine([load(1.0, 0.0, 0.0)]),
            Some(load(1.0, 0.0, 0.0))
        );
    }

    #[test]
    fn reports_read_back_from_text() {
        let l = load(0.5, 640.0, 201.5);
        assert_eq!(WorkerLoad::decode(&l.encode()), Some(l));
        for bad in ["", "1;2", "1;2;3;4", "a;b;c", "NaN;1;1", "1;inf;1"] {
            assert_eq!(WorkerLoad::decode(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn the_memory_board_combines_fresh_reports() {
        let board = MemoryLoadBoard::default();
        assert_eq!(board.read().await.expect("read"), None);
        board
            .publish("a", load(1.0, 100.0, 10.0))
            .await
            .expect("publish");
        board
            .publish("b", load(1.0, 300.0, 10.0))
            .await
            .expect("publish");
        board
            .publish("a", load(1.0, 200.0, 10.0))
            .await
            .expect("publish");
        let read = board.read().await.expect("read").expect("reports");
        assert_eq!(read.capacity, 500.0, "the latest report of each batcher");
    }
}
