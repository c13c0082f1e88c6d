//! The policy driven directly with a fake clock: `t0 + offsets`.

use super::*;

const MS: Duration = Duration::from_millis(1);

fn policy() -> (WaitOrFull<u32>, Instant) {
    (WaitOrFull::new(Limits::default()), Instant::now())
}

#[test]
fn one_request_then_silence_flushes_exactly_at_max_wait() {
    let (mut p, t0) = policy();
    p.push(1, t0);
    assert_eq!(p.next_deadline(), Some(t0 + 50 * MS));
    assert!(p.take_ready(t0 + 49 * MS).is_none());
    assert!(p
        .take_ready(t0 + 50 * MS - Duration::from_nanos(1))
        .is_none());
    let batch = p.take_ready(t0 + 50 * MS).expect("ready at 50 ms");
    assert_eq!(batch.items, vec![1]);
    assert_eq!(batch.reason, FlushReason::Timer);
    assert_eq!(batch.opened_at, t0);
    assert!(p.is_empty());
    assert_eq!(p.next_deadline(), None);
}

#[test]
fn window_counts_from_the_first_task_not_the_last() {
    let (mut p, t0) = policy();
    p.push(1, t0);
    p.push(2, t0 + 30 * MS);
    p.push(3, t0 + 49 * MS);
    assert_eq!(p.next_deadline(), Some(t0 + 50 * MS));
    let batch = p.take_ready(t0 + 50 * MS).expect("ready");
    assert_eq!(batch.items, vec![1, 2, 3]);
}

#[test]
fn exactly_64_flushes_at_once_as_full() {
    let (mut p, t0) = policy();
    for i in 0..63 {
        p.push(i, t0);
        assert!(p.take_ready(t0).is_none(), "not full at {}", i + 1);
    }
    p.push(63, t0);
    assert_eq!(p.room(), 0);
    let batch = p.take_ready(t0).expect("full");
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
    let first = p.take_ready(t0 + 10 * MS).expect("full");
    assert_eq!(first.items.len(), 64);
    assert_eq!(first.reason, FlushReason::Full);
    assert!(p.take_ready(t0 + 10 * MS).is_none());
    // The 65th item arrived with the burst, so its window closes 50 ms after it.
    assert_eq!(p.next_deadline(), Some(t0 + 60 * MS));
    let second = p.take_ready(t0 + 60 * MS).expect("timer");
    assert_eq!(second.items, vec![64]);
    assert_eq!(second.reason, FlushReason::Timer);
}

#[test]
fn burst_of_128_gives_two_full_batches() {
    let (mut p, t0) = policy();
    for i in 0..128 {
        p.push(i, t0);
    }
    let a = p.take_ready(t0).expect("first");
    let b = p.take_ready(t0).expect("second");
    assert_eq!((a.items.len(), b.items.len()), (64, 64));
    assert_eq!((a.reason, b.reason), (FlushReason::Full, FlushReason::Full));
    assert_eq!(b.items[0], 64);
    assert!(p.take_ready(t0 + 1000 * MS).is_none());
}

#[test]
fn overdue_buffer_never_releases_more_than_max() {
    // The batcher was busy for seconds (no free worker slot) and comes back to 200 items.
    let (mut p, t0) = policy();
    for i in 0..200 {
        p.push(i, t0 + i * MS);
    }
    let later = t0 + 5000 * MS;
    let sizes: Vec<_> = std::iter::from_fn(|| p.take_ready(later))
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
    let mut p = WaitOrFull::new(Limits {
        max_batch_size: 1,
        max_wait: 50 * MS,
    });
    p.push("a", t0);
    assert_eq!(p.take_ready(t0).map(|b| b.reason), Some(FlushReason::Full));
}

#[test]
fn zero_max_batch_size_is_taken_as_one() {
    let p: WaitOrFull<u8> = WaitOrFull::new(Limits {
        max_batch_size: 0,
        max_wait: MS,
    });
    assert_eq!(p.limits().max_batch_size, 1);
}
