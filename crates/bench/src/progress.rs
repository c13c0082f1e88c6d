//! The once-a-second progress line on stderr (stdout carries only the report).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::record::{Live, Recorder};

/// How often the line is written.
const INTERVAL: Duration = Duration::from_secs(1);

/// Writes the progress line every second until `stop` is cancelled. On a terminal the line
/// rewrites itself (`\r`); otherwise (a log file, CI) each is a line of its own.
pub(crate) fn spawn(
    recorder: Arc<Recorder>,
    start: Instant,
    warmup: Duration,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let terminal = std::io::stderr().is_terminal();
        let mut ticks = tokio::time::interval_at(start + INTERVAL, INTERVAL);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut wrote = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticks.tick() => {}
            }
            let elapsed = start.elapsed();
            let line = line(elapsed, elapsed < warmup, &recorder.live());
            let mut stderr = std::io::stderr().lock();
            // A closed stderr must not stop the run: the report goes to stdout.
            let _ = if terminal {
                write!(stderr, "\r{line}\x1b[K")
            } else {
                writeln!(stderr, "{line}")
            };
            let _ = stderr.flush();
            wrote = true;
        }
        if terminal && wrote {
            let _ = writeln!(std::io::stderr());
        }
    })
}

fn line(elapsed: Duration, warming_up: bool, live: &Live) -> String {
    let p99 = match live.p99 {
        Some(p99) => format!("{:.1} ms", p99.as_secs_f64() * 1000.0),
        None => "-".to_owned(),
    };
    let overloaded = match live.overloaded {
        0 => String::new(),
        n => format!("  not sent (overloaded) {n}"),
    };
    format!(
        "[{:>6.1}s{}] sent {}  ok {}  errors {}  in flight {}  p99 {}{}",
        elapsed.as_secs_f64(),
        if warming_up { " warmup" } else { "" },
        live.sent,
        live.ok,
        live.errors,
        live.in_flight,
        p99,
        overloaded
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shows_the_live_numbers() {
        let live = Live {
            sent: 120,
            ok: 100,
            errors: 3,
            overloaded: 0,
            in_flight: 17,
            p99: Some(Duration::from_micros(12_345)),
        };
        assert_eq!(
            line(Duration::from_millis(3000), false, &live),
            "[   3.0s] sent 120  ok 100  errors 3  in flight 17  p99 12.3 ms"
        );
        let idle = Live { p99: None, ..live };
        assert!(line(Duration::from_secs(1), true, &idle).contains("s warmup] "));
        assert!(line(Duration::from_secs(1), true, &idle).ends_with("p99 -"));
        let overloaded = Live {
            overloaded: 5,
            ..live
        };
        assert!(line(Duration::from_secs(1), false, &overloaded).ends_with("(overloaded) 5"));
    }
}
