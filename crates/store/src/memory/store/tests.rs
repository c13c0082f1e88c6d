use std::sync::Arc;

use batchgate_protocol::api::TaskStatus;

use super::table::{Ring, CHUNK};
use super::*;

fn done(id: &str, out: &str) -> Completion {
    Completion {
        task_id: id.into(),
        outcome: Outcome::Success(out.into()),
        completed_at: 7,
        reply_to: None,
    }
}

fn failed(id: &str, why: &str) -> Completion {
    Completion {
        outcome: Outcome::Failed(why.into()),
        ..done(id, "")
    }
}

/// A canonical UUID-form task id, as the gateway makes them (stored packed).
fn uuid(n: u32) -> String {
    format!("{n:08x}-abcd-4000-8000-00000000000f")
}

#[tokio::test]
async fn lifecycle_pending_then_success() {
    for id in [uuid(1), "a".to_owned()] {
        let s = MemoryResultStore::new(10, Duration::from_secs(600));
        s.create(&id, 1, Some("alice")).await.expect("create");
        let r = s.get(&id).await.expect("get").expect("exists");
        assert_eq!(r.status, TaskStatus::Pending);
        assert_eq!(r.owner.as_deref(), Some("alice"));
        s.complete(vec![done(&id, "out")]).await.expect("complete");
        let r = s.get(&id).await.expect("get").expect("exists");
        assert_eq!(r.status, TaskStatus::Success);
        assert_eq!(r.output_text(), Some("out"));
        assert_eq!(r.error, None);
        assert_eq!(r.owner.as_deref(), Some("alice"));
        assert_eq!((r.created_at, r.completed_at), (1, Some(7)));
        assert!(s.get("nope").await.expect("get").is_none());
        // The same id in capitals is another id (kept as text, not packed).
        assert!(s.get(&id.to_uppercase()).await.expect("get").is_none());
        assert_eq!(s.count().await.expect("count"), 1);
    }
}

#[tokio::test]
async fn success_is_final_and_failed_gives_way_only_to_success() {
    let s = MemoryResultStore::new(10, Duration::from_secs(600));
    let id = uuid(2);
    s.create(&id, 1, None).await.expect("create");
    s.complete(vec![failed(&id, "worker error: boom")])
        .await
        .expect("complete");
    s.complete(vec![failed(&id, "worker error: again")])
        .await
        .expect("complete");
    let r = s.get(&id).await.expect("get").expect("exists");
    assert_eq!(r.error.as_deref(), Some("worker error: boom"));
    s.complete(vec![done(&id, "out")]).await.expect("complete");
    s.complete(vec![done(&id, "other")])
        .await
        .expect("complete");
    let r = s.get(&id).await.expect("get").expect("exists");
    assert_eq!((r.output_text(), r.error.as_deref()), (Some("out"), None));
    // A result for a task never created here is stored all the same.
    s.complete(vec![done("unknown", "x")])
        .await
        .expect("complete");
    assert_eq!(s.count().await.expect("count"), 2);
}

#[tokio::test(start_paused = true)]
async fn records_expire_after_ttl_and_sweep_frees_them() {
    let s = MemoryResultStore::new(10, Duration::from_secs(600));
    s.create("a", 1, None).await.expect("create");
    s.create(&uuid(1), 1, Some("bob")).await.expect("create");
    tokio::time::advance(Duration::from_secs(300)).await;
    s.complete(vec![done("a", "out")]).await.expect("complete");
    // The pending one expires 600 s after its creation.
    tokio::time::advance(Duration::from_secs(300)).await;
    assert!(s.get(&uuid(1)).await.expect("get").is_none());
    assert_eq!(s.sweep(Instant::now()), 1);
    // The TTL of the other restarted at completion: 599 s later it is still there.
    tokio::time::advance(Duration::from_secs(299)).await;
    assert!(s.get("a").await.expect("get").is_some());
    assert_eq!(s.sweep(Instant::now()), 0);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(s.get("a").await.expect("get").is_none());
    assert_eq!(s.sweep(Instant::now()), 1);
    assert_eq!(s.count().await.expect("count"), 0);
    assert_eq!(s.evicted(), 0, "expiry is not eviction");
}

#[tokio::test]
async fn past_its_bound_the_store_evicts_the_oldest_finished_record_first() {
    let s = MemoryResultStore::with_shards(3, Duration::from_secs(600), 1);
    let ids: Vec<String> = (0..6).map(uuid).collect();
    // Finished in the order 1, 0, 2: 1 is the oldest result.
    for id in &ids[..3] {
        s.create(id, 1, Some("alice")).await.expect("create");
    }
    for i in [1, 0, 2] {
        s.complete(vec![done(&ids[i], "out")])
            .await
            .expect("complete");
    }
    // Full: each new task evicts the oldest result, counted.
    s.create(&ids[3], 1, None).await.expect("create evicts");
    assert_eq!(s.evicted(), 1);
    assert!(s.get(&ids[1]).await.expect("get").is_none());
    s.create(&ids[4], 1, None).await.expect("create evicts");
    assert!(s.get(&ids[0]).await.expect("get").is_none());
    assert_eq!(s.evicted(), 2);
    // Only pending records left besides 2: 2 goes, then the pending ones, oldest first.
    s.create(&ids[5], 1, None).await.expect("create evicts");
    assert!(s.get(&ids[2]).await.expect("get").is_none());
    s.create("text-id", 1, None).await.expect("create evicts");
    assert!(s.get(&ids[3]).await.expect("get").is_none());
    assert_eq!(s.evicted(), 4);
    for id in [&ids[4], &ids[5], &"text-id".to_owned()] {
        assert!(s.get(id).await.expect("get").is_some(), "{id}");
    }
    assert_eq!(s.count().await.expect("count"), 3);
    // A result for an evicted task is stored all the same, evicting the next oldest.
    s.complete(vec![done(&ids[0], "late")])
        .await
        .expect("complete");
    assert_eq!(s.evicted(), 5);
    assert_eq!(s.count().await.expect("count"), 3);
}

#[tokio::test(start_paused = true)]
async fn wait_is_woken_by_completion_not_by_its_timeout() {
    let s = Arc::new(MemoryResultStore::new(10, Duration::from_secs(600)));
    s.create("a", 1, None).await.expect("create");
    let start = Instant::now();
    let waiter = tokio::spawn({
        let s = s.clone();
        async move { s.wait("a", Duration::from_secs(30)).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.complete(vec![done("a", "out")]).await.expect("complete");
    let r = waiter.await.expect("join").expect("wait").expect("exists");
    assert_eq!(r.status, TaskStatus::Success);
    assert_eq!(start.elapsed(), Duration::from_millis(20));
}

#[tokio::test(start_paused = true)]
async fn wait_times_out_pending_and_returns_none_for_unknown() {
    let s = MemoryResultStore::new(10, Duration::from_secs(600));
    s.create("a", 1, None).await.expect("create");
    let r = s
        .wait("a", Duration::from_millis(100))
        .await
        .expect("wait")
        .expect("exists");
    assert_eq!(r.status, TaskStatus::Pending);
    assert!(s
        .wait("zzz", Duration::from_secs(1))
        .await
        .expect("wait")
        .is_none());
    // The timed-out wait left nothing behind once swept.
    s.sweep(Instant::now());
    assert!(s.lock(0).waiters.is_empty());
}

/// `expect` registers its waiter before the task exists, and `watch` while it reads a pending
/// record: the completion wakes either at once; a task that has finished by the time it is
/// watched is not waited for. Time is paused: a wait that is not woken would run its whole
/// 30 s, and the elapsed time would show it.
#[tokio::test(start_paused = true)]
async fn expectations_are_woken_by_the_completion_and_a_finished_task_is_not_waited_for() {
    let s = Arc::new(MemoryResultStore::new(100, Duration::from_secs(600)));
    let wait = Duration::from_secs(30);
    for id in [uuid(7), "text-id".to_owned()] {
        let expected = s.clone().expect(&id, 1, None);
        s.create(&id, 1, None).await.expect("create");
        let waiting = tokio::spawn(expected.wait(wait));
        tokio::task::yield_now().await;
        let started = Instant::now();
        s.complete(vec![done(&id, "out")]).await.expect("complete");
        let record = waiting.await.expect("join").expect("wait").expect("stored");
        assert_eq!(record.status, TaskStatus::Success);
        assert_eq!(record.output_text(), Some("out"));
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "{id}: woken by the completion"
        );

        // Watched while pending: woken by the completion too.
        let again = if id == "text-id" {
            "text-id-again".to_owned()
        } else {
            uuid(17)
        };
        s.create(&again, 1, None).await.expect("create");
        let Watched::Pending(_, watching) = s.clone().watch(&again).await.expect("watch") else {
            panic!("{again}: a pending task is watched as pending");
        };
        let waiting = tokio::spawn(watching.wait(wait));
        tokio::task::yield_now().await;
        let started = Instant::now();
        s.complete(vec![done(&again, "out")])
            .await
            .expect("complete");
        let record = waiting.await.expect("join").expect("wait").expect("stored");
        assert_eq!(record.status, TaskStatus::Success);
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "{again}: woken by the completion"
        );

        // Finished before it is watched: read as it is, nothing to wait for.
        match s.clone().watch(&id).await.expect("watch") {
            Watched::Done(record) => assert_eq!(record.status, TaskStatus::Success),
            _ => panic!("{id}: a finished task is watched as done"),
        }
    }
    // An expectation of a task that never came, dropped, leaves nothing after a sweep.
    drop(s.clone().expect(&uuid(8), 1, None));
    s.sweep(Instant::now());
    assert!(s
        .shards
        .iter()
        .all(|shard| shard.lock().expect("not poisoned").waiters.is_empty()));
}

/// A waiter is handed the record as the store keeps it (its creation time and owner from the
/// pending record), without reading it again; a completion that is not stored (a FAILED
/// after a SUCCESS) wakes its waiters at once to read the record that stands.
#[tokio::test(start_paused = true)]
async fn a_waiter_is_handed_the_record_as_stored() {
    let s = Arc::new(MemoryResultStore::new(100, Duration::from_secs(600)));
    let wait = Duration::from_secs(30);
    for id in [uuid(21), "text-21".to_owned()] {
        let expected = s.clone().expect(&id, 3, Some("alice"));
        s.create_new(&id, 3, Some("alice")).await.expect("create");
        let waiting = tokio::spawn(expected.wait(wait));
        tokio::task::yield_now().await;
        s.complete(vec![done(&id, "out")]).await.expect("complete");
        let handed = waiting.await.expect("join").expect("wait").expect("stored");
        let read = s.get(&id).await.expect("get").expect("exists");
        assert_eq!(handed, read, "{id}");
        assert_eq!((handed.created_at, handed.completed_at), (3, Some(7)));
        assert_eq!(handed.owner.as_deref(), Some("alice"));

        // Waiting again on the finished task: a late FAILED is not stored, and the waiter
        // reads the SUCCESS that stands.
        let late = s.clone().expect(&id, 3, Some("alice"));
        let waiting = tokio::spawn(late.wait(wait));
        tokio::task::yield_now().await;
        let started = Instant::now();
        s.complete(vec![failed(&id, "worker error: late")])
            .await
            .expect("complete");
        let record = waiting.await.expect("join").expect("wait").expect("stored");
        assert_eq!(started.elapsed(), Duration::ZERO, "{id}: woken at once");
        assert_eq!(record.status, TaskStatus::Success, "{id}");
        assert_eq!(record.output_text(), Some("out"));
    }
    assert_eq!(s.count().await.expect("count"), 2);
}

/// A task recorded again (a dead letter replayed) is pending, then finished, with one record
/// and one entry in the index of finished records: recording it took its old result away, so
/// its completion need not look for one.
#[tokio::test]
async fn a_task_recorded_again_finishes_with_one_record() {
    let s = MemoryResultStore::with_shards(100, Duration::from_secs(600), 1);
    let id = uuid(22);
    s.create_new(&id, 1, None).await.expect("create");
    s.complete(vec![failed(&id, "worker error: boom")])
        .await
        .expect("complete");
    s.create(&id, 2, None).await.expect("create again");
    let r = s.get(&id).await.expect("get").expect("exists");
    assert_eq!((r.status, r.created_at), (TaskStatus::Pending, 2));
    s.complete(vec![done(&id, "out")]).await.expect("complete");
    let r = s.get(&id).await.expect("get").expect("exists");
    assert_eq!(
        (r.status, r.output_text(), r.error.as_deref()),
        (TaskStatus::Success, Some("out"), None)
    );
    assert_eq!(s.count().await.expect("count"), 1);
    let shard = s.shards[0].lock().expect("not poisoned");
    assert_eq!((shard.uuids.index.len(), shard.uuids.pending.len()), (1, 0));
}

/// Several waits for one task (a submission's expectation, long polls of its result) are all
/// woken by its completion, whichever way each registered; those that gave up are dropped by a
/// sweep, and the others kept.
#[tokio::test(start_paused = true)]
async fn every_waiter_of_a_task_is_woken_by_its_completion() {
    let s = Arc::new(MemoryResultStore::new(100, Duration::from_secs(600)));
    let wait = Duration::from_secs(30);
    let id = uuid(9);
    let expected = s.clone().expect(&id, 1, None);
    s.create(&id, 1, None).await.expect("create");
    let mut waiting = vec![tokio::spawn(expected.wait(wait))];
    for _ in 0..2 {
        let s = s.clone();
        let id = id.clone();
        waiting.push(tokio::spawn(async move { s.wait(&id, wait).await }));
    }
    tokio::task::yield_now().await;
    // A fourth gives up before the completion: swept, and the three others still wait.
    let _ = s.wait(&id, Duration::from_millis(1)).await.expect("wait");
    s.sweep(Instant::now());
    let kept = |s: &MemoryResultStore| {
        s.shards
            .iter()
            .map(|shard| {
                match shard
                    .lock()
                    .expect("not poisoned")
                    .waiters
                    .get(&TaskId::new(&id))
                {
                    Some(Waiters::One(_)) => 1,
                    Some(Waiters::Many(all)) => all.len(),
                    None => 0,
                }
            })
            .sum::<usize>()
    };
    assert_eq!(kept(&s), 3);
    let started = Instant::now();
    s.complete(vec![done(&id, "out")]).await.expect("complete");
    for waiter in waiting {
        let record = waiter.await.expect("join").expect("wait").expect("stored");
        assert_eq!(record.status, TaskStatus::Success);
    }
    assert_eq!(started.elapsed(), Duration::ZERO, "woken by the completion");
    assert_eq!(kept(&s), 0);
}

/// The ring of finished records spans many chunks: slots keep their order through pushes and
/// pops across chunk boundaries, and an emptied chunk is reused.
#[test]
fn the_ring_keeps_order_across_chunks() {
    let mut ring = Ring::default();
    let mut front = 0;
    let mut next = 0;
    for round in 0..4 {
        for _ in 0..(CHUNK * 2 + 17) {
            ring.push_back(next);
            next += 1;
        }
        for _ in 0..(CHUNK + 5 * round) {
            assert_eq!(ring.pop_front(), Some(Some(front)));
            front += 1;
        }
        assert_eq!(ring.len(), next - front);
        for i in [0, 1, CHUNK - 1, CHUNK, ring.len() - 1] {
            assert_eq!(
                ring.get(i),
                Some(&Some(front + i)),
                "round {round}, slot {i}"
            );
        }
        assert_eq!(ring.get(ring.len()), None);
    }
    while ring.pop_front().is_some() {}
    assert_eq!(ring.len(), 0);
    assert!(ring.chunks.len() <= 1, "emptied chunks are let go");
}

/// Thousands of records in one shard, so the ring spans many chunks and the index grows
/// (rehashing through the records): every record is found, eviction takes the oldest in
/// order, a SUCCESS over a FAILED moves to the back and is still found, and expiry empties it.
#[tokio::test(start_paused = true)]
async fn a_large_shard_finds_evicts_and_expires_in_order() {
    let n = 3000;
    let s = MemoryResultStore::with_shards(n, Duration::from_secs(60), 1);
    let ids: Vec<String> = (0..n as u32 + 700).map(uuid).collect();
    for id in &ids[..n] {
        s.create(id, 1, Some("alice")).await.expect("create");
        s.complete(vec![failed(id, "first")])
            .await
            .expect("complete");
    }
    // The oldest record becomes a SUCCESS: it leaves the front for the back.
    s.complete(vec![done(&ids[0], "again")])
        .await
        .expect("complete");
    for id in &ids[..n] {
        assert!(s.get(id).await.expect("get").is_some(), "{id} is held");
    }
    for id in &ids[n..n + 700] {
        s.create(id, 1, None).await.expect("create evicts");
    }
    assert_eq!(s.evicted(), 700);
    // Evicted oldest first: ids 1..=700 (id 0 moved to the back).
    for id in &ids[1..=700] {
        assert!(s.get(id).await.expect("get").is_none(), "{id} was evicted");
    }
    let first = s
        .get(&ids[0])
        .await
        .expect("get")
        .expect("moved to the back");
    assert_eq!(first.output_text(), Some("again"));
    for id in &ids[701..] {
        assert!(s.get(id).await.expect("get").is_some(), "{id} is held");
    }
    s.remove(&ids[1500]).await.expect("remove");
    assert!(s.get(&ids[1500]).await.expect("get").is_none());
    assert_eq!(s.count().await.expect("count"), n - 1);
    tokio::time::advance(Duration::from_secs(62)).await;
    assert_eq!(s.sweep(Instant::now()), n - 1);
    assert_eq!(s.count().await.expect("count"), 0);
}

#[tokio::test]
async fn typed_outputs_come_back_as_the_worker_gave_them() {
    use batchgate_protocol::Output;
    let s = MemoryResultStore::new(10, Duration::from_secs(600));
    let outputs = [
        Output::Vector(vec![0.25, -1.5, 3.0]),
        Output::Bytes(vec![0, 0xFF, 7]),
        Output::Text("[1,2]".into()),
    ];
    for (n, output) in outputs.iter().enumerate() {
        let id = uuid(100 + n as u32);
        s.create(&id, 1, None).await.expect("create");
        s.complete(vec![Completion {
            outcome: Outcome::Success(output.clone()),
            ..done(&id, "")
        }])
        .await
        .expect("complete");
        let r = s.get(&id).await.expect("get").expect("exists");
        assert_eq!(r.output.as_ref(), Some(output));
    }
}
