//! The policy driven directly with a fake clock: `t0 + offsets`.

use super::*;

const MS: Duration = Duration::from_millis(1);

/// Any load: the fixed rule ignores it (the tests of the fixed rule pass a mid-range one).
const BUSY: Load = Load {
    idle_slots: 4,
    total_slots: 32,
};

fn policy() -> (Policy<u32>, Instant) {
    (Policy::fixed(Limits::default()), Instant::now())
}

#[test]
fn one_request_then_silence_flushes_exactly_at_max_wait() {
    let (mut p, t0) = policy();
    p.push(1, t0);
    assert_eq!(p.next_deadline(t0, BUSY), Some(t0 + 50 * MS));
    assert!(p.take_ready(t0 + 49 * MS, BUSY).is_none());
    assert!(p
        .take_ready(t0 + 50 * MS - Duration::from_nanos(1), BUSY)
        .is_none());
    let batch = p.take_ready(t0 + 50 * MS, BUSY).expect("ready at 50 ms");
    assert_eq!(batch.items, vec![1]);
    assert_eq!(batch.reason, FlushReason::Timer);
    assert_eq!(batch.opened_at, t0);
    assert!(p.is_empty());
    assert_eq!(p.next_deadline(t0, BUSY), None);
}

#[test]
fn an_item_that_waited_on_its_way_shortens_the_window_by_that_wait() {
    let (mut p, t0) = policy();
    p.push_waited(1, t0, 30 * MS);
    assert_eq!(p.next_deadline(t0, BUSY), Some(t0 + 20 * MS));
    assert!(p.take_ready(t0 + 19 * MS, BUSY).is_none());
    let batch = p
        .take_ready(t0 + 20 * MS, BUSY)
        .expect("ready 50 ms after it began to wait");
    assert_eq!(batch.reason, FlushReason::Timer);
    assert_eq!(batch.opened_at, t0 - 30 * MS);

    // Joining a batch opened later than it began to wait, it opens the batch earlier.
    p.push(2, t0 + 100 * MS);
    p.push_waited(3, t0 + 110 * MS, 40 * MS);
    assert_eq!(p.next_deadline(t0 + 110 * MS, BUSY), Some(t0 + 120 * MS));
    // One that waited less leaves the batch's opening as it was.
    p.push_waited(4, t0 + 111 * MS, 2 * MS);
    assert_eq!(p.next_deadline(t0 + 111 * MS, BUSY), Some(t0 + 120 * MS));
    let batch = p.take_ready(t0 + 120 * MS, BUSY).expect("ready");
    assert_eq!(batch.items, vec![2, 3, 4]);

    // A wait longer than the window: ready at once.
    p.push_waited(5, t0 + 200 * MS, 80 * MS);
    assert!(p.take_ready(t0 + 200 * MS, BUSY).is_some());
}

#[test]
fn window_counts_from_the_first_task_not_the_last() {
    let (mut p, t0) = policy();
    p.push(1, t0);
    p.push(2, t0 + 30 * MS);
    p.push(3, t0 + 49 * MS);
    assert_eq!(p.next_deadline(t0 + 49 * MS, BUSY), Some(t0 + 50 * MS));
    let batch = p.take_ready(t0 + 50 * MS, BUSY).expect("ready");
    assert_eq!(batch.items, vec![1, 2, 3]);
}

#[test]
fn exactly_64_flushes_at_once_as_full() {
    let (mut p, t0) = policy();
    for i in 0..63 {
        p.push(i, t0);
        assert!(p.take_ready(t0, BUSY).is_none(), "not full at {}", i + 1);
    }
    p.push(63, t0);
    assert_eq!(p.room(), 0);
    let batch = p.take_ready(t0, BUSY).expect("full");
    assert_eq!(batch.reason, FlushReason::Full);
    assert_eq!(batch.items, (0..64).collect::<Vec<_>>());
    assert!(p.is_empty());
}

#[test]
fn burst_of_65_gives_a_full_batch_then_a_timed_one() {
    let (mut p, t0) = policy();
    for i in 0..65 {
        p.push(i, t0 + 10 * MS);
    }
    let first = p.take_ready(t0 + 10 * MS, BUSY).expect("full");
    assert_eq!(first.items.len(), 64);
    assert_eq!(first.reason, FlushReason::Full);
    assert!(p.take_ready(t0 + 10 * MS, BUSY).is_none());
    // The 65th item arrived with the burst, so its window closes 50 ms after it.
    assert_eq!(p.next_deadline(t0 + 10 * MS, BUSY), Some(t0 + 60 * MS));
    let second = p.take_ready(t0 + 60 * MS, BUSY).expect("timer");
    assert_eq!(second.items, vec![64]);
    assert_eq!(second.reason, FlushReason::Timer);
}

#[test]
fn burst_of_128_gives_two_full_batches() {
    let (mut p, t0) = policy();
    for i in 0..128 {
        p.push(i, t0);
    }
    let a = p.take_ready(t0, BUSY).expect("first");
    let b = p.take_ready(t0, BUSY).expect("second");
    assert_eq!((a.items.len(), b.items.len()), (64, 64));
    assert_eq!((a.reason, b.reason), (FlushReason::Full, FlushReason::Full));
    assert_eq!(b.items[0], 64);
    assert!(p.take_ready(t0 + 1000 * MS, BUSY).is_none());
}

#[test]
fn overdue_buffer_never_releases_more_than_max() {
    // The batcher was busy for seconds (no free worker slot) and comes back to 200 items.
    let (mut p, t0) = policy();
    for i in 0..200 {
        p.push(i, t0 + i * MS);
    }
    let later = t0 + 5000 * MS;
    let sizes: Vec<_> = std::iter::from_fn(|| p.take_ready(later, BUSY))
        .map(|b| b.items.len())
        .collect();
    assert_eq!(sizes, vec![64, 64, 64, 8]);
}

#[test]
fn drain_releases_everything_in_batches() {
    let (mut p, t0) = policy();
    for i in 0..70 {
        p.push(i, t0);
    }
    let a = p.drain().expect("first");
    let b = p.drain().expect("second");
    assert_eq!((a.items.len(), b.items.len()), (64, 6));
    assert_eq!(a.reason, FlushReason::Drain);
    assert!(p.drain().is_none());
}

#[test]
fn batch_size_of_one_flushes_every_item() {
    let t0 = Instant::now();
    let mut p = Policy::fixed(Limits {
        max_batch_size: 1,
        max_wait: 50 * MS,
    });
    p.push("a", t0);
    assert_eq!(
        p.take_ready(t0, BUSY).map(|b| b.reason),
        Some(FlushReason::Full)
    );
}

#[test]
fn zero_max_batch_size_is_taken_as_one() {
    let p: Policy<u8> = Policy::fixed(Limits {
        max_batch_size: 0,
        max_wait: MS,
    });
    assert_eq!(p.limits().max_batch_size, 1);
}

// The adaptive rule.

/// A worker with most of its 32 slots free.
const IDLE: Load = Load {
    idle_slots: 30,
    total_slots: 32,
};
/// A busy worker: 2 slots free besides this batch's, under the spare threshold of 16.
const NEARLY_FULL: Load = Load {
    idle_slots: 2,
    total_slots: 32,
};
/// This batch would take the worker's last free slot.
const LAST_SLOT: Load = Load {
    idle_slots: 0,
    total_slots: 32,
};

fn adaptive() -> (Policy<u32>, Instant) {
    (
        Policy::new(Limits::default(), Rule::Adaptive(Adaptive::default())),
        Instant::now(),
    )
}

/// Pushes `rate` items a second, evenly, over `secs`, starting at `t0`; returns the time of the
/// last push. Each batch that becomes full on the way is taken.
fn steady(p: &mut Policy<u32>, t0: Instant, rate: u32, secs: u32) -> Instant {
    let gap = Duration::from_secs(1) / rate;
    let mut last = t0;
    for i in 0..rate * secs {
        last = t0 + gap * i;
        p.push(i, last);
        while p.ready_reason(last, NEARLY_FULL) == Some(FlushReason::Full) {
            p.take_ready(last, NEARLY_FULL);
        }
    }
    last
}

#[test]
fn adaptive_one_request_then_silence_goes_after_min_wait_when_the_worker_is_idle() {
    let (mut p, t0) = adaptive();
    p.push(1, t0);
    assert_eq!(p.next_deadline(t0, IDLE), Some(t0 + 5 * MS));
    assert!(p.take_ready(t0 + 4 * MS, IDLE).is_none());
    let batch = p.take_ready(t0 + 5 * MS, IDLE).expect("early");
    assert_eq!(batch.reason, FlushReason::Early);
    assert_eq!(batch.items, vec![1]);
    assert_eq!(p.next_deadline(t0, IDLE), None);
}

#[test]
fn adaptive_waits_like_fixed_when_the_worker_is_busy() {
    let (mut p, t0) = adaptive();
    p.push(1, t0);
    assert!(p.take_ready(t0, NEARLY_FULL).is_none());
    assert_eq!(p.next_deadline(t0, NEARLY_FULL), Some(t0 + 50 * MS));
    assert!(p.take_ready(t0 + 49 * MS, NEARLY_FULL).is_none());
    let batch = p.take_ready(t0 + 50 * MS, NEARLY_FULL).expect("timer");
    assert_eq!(batch.reason, FlushReason::Timer);
}

#[test]
fn adaptive_holds_up_to_max_hold_for_the_last_slot() {
    let (mut p, t0) = adaptive();
    p.push(1, t0);
    assert_eq!(p.next_deadline(t0, LAST_SLOT), Some(t0 + 100 * MS));
    assert!(p.take_ready(t0 + 99 * MS, LAST_SLOT).is_none());
    // A slot frees meanwhile: the ordinary 50 ms bound applies again, and has passed.
    assert_eq!(
        p.ready_reason(t0 + 60 * MS, NEARLY_FULL),
        Some(FlushReason::Timer)
    );
    let batch = p.take_ready(t0 + 100 * MS, LAST_SLOT).expect("hold ends");
    assert_eq!(batch.reason, FlushReason::Timer);
}

#[test]
fn adaptive_high_rate_fills_batches_instead_of_flushing_early() {
    let (mut p, t0) = adaptive();
    // 8,000/s for a second: the rate estimate is high, so 64 arrive well within 50 ms.
    let last = steady(&mut p, t0, 8000, 1);
    assert!(p.arrival_rate(last) > 5000.0);
    p.take_ready(last, IDLE);
    assert!(p.is_empty() || p.len() < 64);
    let start = last + MS;
    p.push(0, start);
    assert!(
        p.take_ready(start, IDLE).is_none(),
        "no early flush at 8,000/s"
    );
    for i in 1..64 {
        p.push(i, start + Duration::from_micros(125) * i);
    }
    let batch = p.take_ready(start + 8 * MS, IDLE).expect("full");
    assert_eq!(batch.reason, FlushReason::Full);
    assert_eq!(batch.items.len(), 64);
}

#[test]
fn adaptive_flushes_early_once_the_rest_cannot_arrive_in_time() {
    let (mut p, t0) = adaptive();
    // 2,000/s for 2 s brings the estimate to 2,000 × (1 − e^−2) ≈ 1,730/s, then 50 ms of
    // silence decays it by 5 %.
    let last = steady(&mut p, t0, 2000, 2);
    while p.take_ready(last + 50 * MS, NEARLY_FULL).is_some() {}
    let start = last + 50 * MS;
    let rate = p.arrival_rate(start);
    assert!((1600.0..1700.0).contains(&rate), "rate {rate}");
    p.push(0, start);
    // 63 more need 63 / rate ≈ 38 ms of the 50: not yet; from 12 ms on, yes.
    assert!(p.take_ready(start, IDLE).is_none());
    let early = p.next_deadline(start, IDLE).expect("a deadline");
    assert!(
        early > start + 10 * MS && early < start + 25 * MS,
        "{early:?}"
    );
    assert!(p.take_ready(early - MS, IDLE).is_none());
    let batch = p.take_ready(early, IDLE).expect("early flush");
    assert_eq!(batch.reason, FlushReason::Early);
}

#[test]
fn adaptive_bursts_of_64_65_and_128() {
    for (burst, sizes) in [
        (64, vec![(64, FlushReason::Full)]),
        // The 65th waits: 65 arrivals in an instant put the recent rate at 65 / 50 ms =
        // 1,300/s, at which 63 more would come within the window.
        (65, vec![(64, FlushReason::Full)]),
        (128, vec![(64, FlushReason::Full), (64, FlushReason::Full)]),
    ] {
        let (mut p, t0) = adaptive();
        for i in 0..burst {
            p.push(i, t0);
        }
        let got: Vec<_> = std::iter::from_fn(|| p.take_ready(t0, IDLE))
            .map(|b| (b.items.len(), b.reason))
            .collect();
        assert_eq!(got, sizes, "burst of {burst}");
        if burst == 65 {
            // …until the burst is clearly over: the recent rate decays, and the lone task
            // leaves early, well before its 50 ms.
            let at = p.next_deadline(t0, IDLE).expect("a deadline");
            assert!(at > t0 && at < t0 + 50 * MS, "{at:?}");
            assert_eq!(
                p.take_ready(at, IDLE).map(|b| b.reason),
                Some(FlushReason::Early)
            );
        }
    }
}

#[test]
fn adaptive_sees_a_burst_begin_within_milliseconds() {
    let (mut p, t0) = adaptive();
    // A quiet minute at 50/s: the long-window rate settles near 50/s.
    let quiet = steady(&mut p, t0, 50, 60);
    while p.take_ready(quiet + 50 * MS, IDLE).is_some() {}
    let start = quiet + 100 * MS;
    // Then 15,000/s: the first 64 arrive within the 5 ms minimum wait and leave full.
    let gap = Duration::from_secs(1) / 15_000;
    let mut early = 0;
    for i in 0..75u32 {
        let t = start + gap * i;
        p.push(i, t);
        if let Some(b) = p.take_ready(t, IDLE) {
            early += usize::from(b.reason == FlushReason::Early);
        }
    }
    let now = start + gap * 75;
    assert!(p.arrival_rate(now) > 1000.0, "{}", p.arrival_rate(now));
    assert!(p.take_ready(now, IDLE).is_none() || p.room() == 0);
    assert_eq!(early, 0, "early flushes at the start of the burst");
}

#[test]
fn adaptive_after_the_worker_was_busy_for_seconds_releases_full_batches() {
    let (mut p, t0) = adaptive();
    for i in 0..200 {
        p.push(i, t0 + i * MS);
    }
    let later = t0 + 5000 * MS;
    let got: Vec<_> = std::iter::from_fn(|| p.take_ready(later, LAST_SLOT))
        .map(|b| (b.items.len(), b.reason))
        .collect();
    assert_eq!(
        got,
        vec![
            (64, FlushReason::Full),
            (64, FlushReason::Full),
            (64, FlushReason::Full),
            (8, FlushReason::Timer)
        ]
    );
}

#[test]
fn rule_parses_from_its_name_and_max_hold_is_at_least_max_wait() {
    assert_eq!("fixed".parse::<Rule>(), Ok(Rule::Fixed));
    assert_eq!(
        "adaptive".parse::<Rule>(),
        Ok(Rule::Adaptive(Adaptive::default()))
    );
    let err = "eager".parse::<Rule>().expect_err("unknown").to_string();
    assert!(err.contains("fixed") && err.contains("adaptive"), "{err}");
    let p: Policy<u8> = Policy::new(
        Limits::default(),
        Rule::Adaptive(Adaptive {
            max_hold: MS,
            min_wait: 80 * MS,
            ..Adaptive::default()
        }),
    );
    assert_eq!(
        p.rule(),
        Rule::Adaptive(Adaptive {
            max_hold: 50 * MS,
            min_wait: 50 * MS,
            ..Adaptive::default()
        })
    );
}
