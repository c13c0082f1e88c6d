//! The two load loops: open (a schedule of send times) and closed (clients in a send-wait loop).
//!
//! Both spawn their requests on a [`TaskTracker`] and return it closed: the caller waits on it
//! to drain what is still in flight. Both stop issuing at the end of the window, and every
//! request is bounded by its own timeout, so the drain is bounded too.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::args::{ArrivalKind, Config};
use crate::arrivals::Schedule;
use crate::client::Client;
use crate::inputs::Inputs;
use crate::outcome::Outcome;
use crate::record::Recorder;

/// In a catch-up burst (the scheduler behind its schedule), yield to the runtime after this
/// many requests without a sleep, so the requests it spawned get to run on a busy machine.
const BURST_BEFORE_YIELD: u32 = 64;

/// What both loops share. Cloning is shallow.
#[derive(Debug, Clone)]
pub(crate) struct Load {
    pub(crate) client: Arc<Client>,
    pub(crate) recorder: Arc<Recorder>,
    /// When the run began: time zero of the schedule.
    pub(crate) start: Instant,
    /// Requests due (open) or sent (closed) before this are warmup and are not recorded.
    pub(crate) measure_from: Instant,
    /// Nothing is issued at or after this.
    pub(crate) end: Instant,
}

impl Load {
    pub(crate) fn new(client: Client, recorder: Arc<Recorder>, config: &Config) -> Load {
        let start = Instant::now();
        let measure_from = start + config.warmup;
        Load {
            client: Arc::new(client),
            recorder,
            start,
            measure_from,
            end: measure_from + config.duration,
        }
    }
}

/// Open loop: sends each request at its intended time from the schedule, whatever the server
/// does. Latency counts from the intended time, so a stall (of the server or of this process)
/// shows in the latency instead of hiding as a lower send rate (coordinated omission). If the
/// loop falls behind it catches up in a burst; it never skips a request. At most
/// `max_connections` are in flight: a request due when none is free is `client_overloaded`.
///
/// Tokio's timer ticks in milliseconds, so above ~1,000/s requests leave in small bursts, each
/// up to a millisecond after its intended time; that lateness is in the latency, as it should.
pub(crate) async fn open_loop(
    load: &Load,
    config: &Config,
    rate: f64,
    arrivals: ArrivalKind,
    mut inputs: Inputs,
) -> TaskTracker {
    let tracker = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let mut schedule = Schedule::new(arrivals, rate, config.seed);
    let mut burst = 0;
    loop {
        let intended = load.start + ramped(schedule.next_offset(), config.warmup);
        if intended >= load.end {
            break;
        }
        if intended > Instant::now() {
            tokio::time::sleep_until(intended).await;
            burst = 0;
        } else {
            burst += 1;
            if burst % BURST_BEFORE_YIELD == 0 {
                tokio::task::yield_now().await;
            }
        }
        let measured = intended >= load.measure_from;
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            load.recorder
                .record(Outcome::ClientOverloaded, Duration::ZERO, measured);
            continue;
        };
        let input = inputs.next_input();
        let client = Arc::clone(&load.client);
        let recorder = Arc::clone(&load.recorder);
        recorder.sent(measured);
        tracker.spawn(async move {
            let outcome = client.call(&input).await;
            recorder.record(outcome, intended.elapsed(), measured);
            drop(permit);
        });
    }
    tracker.close();
    tracker
}

/// Maps an offset of the constant-rate schedule to the real schedule, in which the rate ramps
/// linearly from 0 to full over the warmup `w` and stays full after it.
///
/// Starting at full rate makes the client open hundreds of connections within milliseconds
/// (HTTP/1.1 needs one per request in flight); the server's accept queue overflows and the
/// dropped handshakes wait out 1 s SYN retransmits, so the run measures the kernel. A ramp
/// lets the pool grow as it would in service. With a ramp, requests sent by time `t < w` number
/// `R t² / 2w`, i.e. a constant-rate offset `u` is due at `sqrt(2 w u)` while `u < w/2`, and
/// `u + w/2` after.
fn ramped(offset: Duration, w: Duration) -> Duration {
    if w.is_zero() {
        return offset;
    }
    let half = w / 2;
    if offset >= half {
        offset + half
    } else {
        Duration::from_secs_f64((2.0 * w.as_secs_f64() * offset.as_secs_f64()).sqrt())
    }
}

/// Closed loop: `concurrency` clients, each sending its next request as soon as its last one
/// ended, until the end of the window. Latency counts from the actual send.
pub(crate) fn closed_loop(load: &Load, concurrency: usize, inputs: Inputs) -> TaskTracker {
    let tracker = TaskTracker::new();
    // Shared by the clients; the lock is held only to make one input (about a microsecond).
    let inputs = Arc::new(Mutex::new(inputs));
    for _ in 0..concurrency {
        let load = load.clone();
        let inputs = Arc::clone(&inputs);
        tracker.spawn(async move {
            loop {
                let sent_at = Instant::now();
                if sent_at >= load.end {
                    break;
                }
                let measured = sent_at >= load.measure_from;
                let input = inputs
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .next_input();
                load.recorder.sent(measured);
                let outcome = load.client.call(&input).await;
                load.recorder.record(outcome, sent_at.elapsed(), measured);
            }
        });
    }
    tracker.close();
    tracker
}

#[cfg(test)]
mod ramp_tests {
    use super::ramped;
    use std::time::Duration;

    #[test]
    fn ramp_is_continuous_and_full_rate_after_warmup() {
        let w = Duration::from_secs(2);
        assert_eq!(ramped(Duration::ZERO, w), Duration::ZERO);
        // Half the warmup's constant-rate requests fit in the ramp; the curve meets the line.
        assert_eq!(ramped(Duration::from_secs(1), w), Duration::from_secs(2));
        let just_before = ramped(Duration::from_millis(999), w);
        assert!(just_before < Duration::from_secs(2) && just_before > Duration::from_millis(1990));
        assert_eq!(ramped(Duration::from_secs(5), w), Duration::from_secs(6));
        // A quarter of the way through the ramp's requests is half way through its time.
        assert_eq!(
            ramped(Duration::from_millis(250), w),
            Duration::from_secs(1)
        );
        assert_eq!(
            ramped(Duration::from_secs(3), Duration::ZERO),
            Duration::from_secs(3)
        );
    }
}
