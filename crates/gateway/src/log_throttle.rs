//! Log lines that clients can trigger, written at most once per interval with a count of
//! those left out, so no client can turn its requests into a flood of log lines.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// At most one line per `every`; the others are counted.
#[derive(Debug)]
pub struct LogThrottle {
    /// The shortest time between two lines.
    every: Duration,
    /// When the last line was written, in milliseconds since the process's first throttle
    /// check, plus one (0: never).
    last_ms: AtomicU64,
    /// Lines left out since the last one written.
    suppressed: AtomicU64,
}

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl LogThrottle {
    /// A throttle writing at most one line per `every`.
    pub const fn new(every: Duration) -> Self {
        LogThrottle {
            every,
            last_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines left out since the last one)` if a line may be written now; else the line
    /// is counted as left out and `None`.
    pub fn admit(&self) -> Option<u64> {
        let now = u64::try_from(origin().elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1);
        let last = self.last_ms.load(Ordering::Acquire);
        let every = u64::try_from(self.every.as_millis()).unwrap_or(u64::MAX);
        let due = last == 0 || now.saturating_sub(last) >= every;
        if due
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::AcqRel));
        }
        self.suppressed.fetch_add(1, Ordering::AcqRel);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_rest_are_counted() {
        let throttle = LogThrottle::new(Duration::from_secs(3600));
        assert_eq!(throttle.admit(), Some(0));
        for _ in 0..1000 {
            assert_eq!(throttle.admit(), None);
        }
        assert_eq!(throttle.suppressed.load(Ordering::Acquire), 1000);
        let often = LogThrottle::new(Duration::ZERO);
        assert_eq!(often.admit(), Some(0));
        assert_eq!(often.admit(), Some(0));
    }
}
