//! The Redis queue against a real redis-server: redelivery of unacknowledged entries, and the
//! dead-letter stream for entries that keep coming back.

mod common;

use common::read_n;

use std::time::{Duration, SystemTime};

use batchgate_protocol::api::TaskStatus;
use batchgate_protocol::task::Task;
use batchgate_queue::Queue;
use batchgate_redis::{Keys, RedisConfig, RedisQueue, RedisQueueConfig, RedisResultStore};
use batchgate_store::ResultStore;
use batchgate_testkit::RedisServer;

fn config(url: String) -> RedisConfig {
    RedisConfig {
        urls: vec![url],
        cluster: false,
        key_prefix: "qt".into(),
        op_timeout: Duration::from_secs(1),
        tls: Default::default(),
    }
}

async fn queue(redis: &RedisConfig, consumer: &str, max_deliveries: usize) -> RedisQueue {
    RedisQueue::new(
        redis.connect().await.expect("connect"),
        redis.clone(),
        Keys::new(&redis.key_prefix, 4),
        RedisQueueConfig {
            capacity: 100,
            // Renewed every third of it: a lease only lapses if its batcher stalls for a second.
            visibility_timeout: Duration::from_secs(1),
            max_deliveries,
            read_partitions: Vec::new(),
            result_ttl: Duration::from_secs(60),
            ..RedisQueueConfig::default()
        },
        consumer.into(),
    )
}

/// The result store the tests read records through: results live 60 s.
fn store(conn: batchgate_redis::RedisConn, keys: &Keys) -> RedisResultStore {
    RedisResultStore::new(
        conn,
        keys.clone(),
        Duration::from_secs(60),
        Duration::from_secs(1),
        None,
        false,
    )
}

fn task(id: &str) -> Task {
    Task {
        task_id: id.into(),
        input: format!("input of {id}"),
        enqueued_at: SystemTime::now(),
        reply_to: None,
        deadline: None,
        owner: None,
        trace_parent: None,
        zone: None,
    }
}

#[tokio::test]
async fn an_entry_its_reader_never_acked_is_delivered_to_another() {
    let server = RedisServer::start().await;
    let redis = config(server.url());
    let a = queue(&redis, "a", 5).await;
    a.enqueue(task("0a-task")).await.expect("enqueue");
    let first = read_n(&a, 1, Duration::from_secs(5)).await;
    assert_eq!(first.len(), 1);
    // `a` dies without acking (dropping it stops its readers and lease renewal).
    drop(a);

    let b = queue(&redis, "b", 5).await;
    let again = read_n(&b, 1, Duration::from_secs(10)).await;
    assert_eq!(again.len(), 1, "claimed after the visibility timeout");
    assert_eq!(again[0].task.task_id, "0a-task");
    b.ack(&[again[0].receipt.clone()]).await.expect("ack");
    assert_eq!(b.depth().await.expect("depth").iter().sum::<usize>(), 0);
}

#[tokio::test]
async fn a_live_readers_slow_batch_is_not_claimed_by_another() {
    let server = RedisServer::start().await;
    let redis = config(server.url());
    let a = queue(&redis, "a", 5).await;
    a.enqueue(task("1b-task")).await.expect("enqueue");
    let held = read_n(&a, 1, Duration::from_secs(5)).await;
    assert_eq!(held.len(), 1);
    let b = queue(&redis, "b", 5).await;
    // Three visibility timeouts pass while `a` still holds the entry and renews its lease.
    let stolen = read_n(&b, 1, Duration::from_secs(3)).await;
    assert!(stolen.is_empty(), "claimed from a live reader");
    a.ack(&[held[0].receipt.clone()]).await.expect("ack");
}

#[tokio::test]
async fn an_entry_delivered_too_often_is_dead_lettered_and_failed() {
    let server = RedisServer::start().await;
    let redis = config(server.url());
    let keys = Keys::new(&redis.key_prefix, 4);
    let store = store(redis.connect().await.expect("connect"), &keys);
    store.create("2c-task", 1, None).await.expect("create");
    let a = queue(&redis, "a", 1).await;
    a.enqueue(task("2c-task")).await.expect("enqueue");
    assert_eq!(read_n(&a, 1, Duration::from_secs(5)).await.len(), 1);
    drop(a);

    // With one delivery allowed, the next reader dead-letters it instead of running it again.
    let b = queue(&redis, "b", 1).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let record = loop {
        assert!(
            read_n(&b, 1, Duration::from_millis(200)).await.is_empty(),
            "delivered again"
        );
        let record = store.get("2c-task").await.expect("get").expect("exists");
        if record.status == TaskStatus::Failed || tokio::time::Instant::now() > deadline {
            break record;
        }
    };
    assert_eq!(record.status, TaskStatus::Failed);
    assert_eq!(
        record.error.as_deref(),
        Some("dead-lettered: delivered 1 times without completing")
    );
    let dlq = server.cli(&["XLEN", &keys.dead_letter()]).expect("XLEN");
    assert_eq!(dlq.trim(), "1");
    assert_eq!(b.depth().await.expect("depth").iter().sum::<usize>(), 0);
}

#[tokio::test]
async fn a_full_partition_refuses_instead_of_growing() {
    let server = RedisServer::start().await;
    let redis = config(server.url());
    let q = queue(&redis, "a", 5).await;
    // Capacity 100 over 4 partitions: 25 per partition; these ids all map to partition 0.
    for i in 0..25 {
        q.enqueue(task(&format!("00-{i}"))).await.expect("room");
    }
    let refused = q.enqueue(task("00-overflow")).await;
    assert!(
        matches!(refused, Err(batchgate_queue::QueueError::Full { .. })),
        "{refused:?}"
    );
    // Another partition still has room.
    q.enqueue(task("01-fine")).await.expect("room elsewhere");
}

#[tokio::test]
async fn admission_deduplicates_and_refuses_a_full_partition_in_one_script() {
    use batchgate_queue::{Admitted, Intake, QueueError};
    let server = RedisServer::start().await;
    let redis = config(server.url());
    let keys = Keys::new(&redis.key_prefix, 4);
    let conn = redis.connect().await.expect("connect");
    let intake = batchgate_redis::RedisIntake::new(
        conn.clone(),
        keys.clone(),
        8, // 2 per partition
        Duration::from_secs(60),
        Duration::from_secs(60),
        Duration::from_secs(1),
        false,
    );
    let store = store(conn, &keys);
    // Ids start with their input hash's byte, as the gateway makes them.
    let hash = |c: char| format!("0{c}{}", "0".repeat(62));
    let first = task("00-first");
    assert_eq!(
        intake
            .admit(&first, 5, Some(&hash('0')))
            .await
            .expect("admit"),
        Admitted::Enqueued {
            dedupe_bypassed: false
        }
    );
    let record = store
        .get("00-first")
        .await
        .expect("get")
        .expect("recorded as pending");
    assert_eq!((record.status, record.created_at), (TaskStatus::Pending, 5));
    assert_eq!(
        intake
            .admit(&task("00-dup"), 6, Some(&hash('0')))
            .await
            .expect("admit"),
        Admitted::Duplicate("00-first".into())
    );
    assert!(
        store.get("00-dup").await.expect("get").is_none(),
        "a duplicate leaves no record"
    );
    intake
        .admit(&task("04-second"), 7, Some(&hash('4')))
        .await
        .expect("admit");
    // Partition 0 holds its 2: the third is refused and leaves neither record nor dedupe entry.
    let refused = intake.admit(&task("08-third"), 8, Some(&hash('8'))).await;
    assert!(
        matches!(
            refused,
            Err(batchgate_queue::AdmitError::Queue(QueueError::Full { .. }))
        ),
        "{refused:?}"
    );
    assert!(store.get("08-third").await.expect("get").is_none());
    let mut raw = redis.connect().await.expect("connect");
    let claimed: bool = redis::cmd("EXISTS")
        .arg(Keys::new(&redis.key_prefix, 4).dedupe(&hash('8')))
        .query_async(&mut raw)
        .await
        .expect("exists");
    assert!(!claimed, "a refused task gives its dedupe claim back");
    assert_eq!(
        intake
            .admit(&task("0c-again"), 9, None)
            .await
            .err()
            .map(|e| e.to_string()),
        Some("queue is full (8 tasks)".into())
    );
}

#[tokio::test]
async fn processes_that_disagree_on_the_partition_count_are_stopped() {
    let server = RedisServer::start().await;
    let redis = config(server.url());
    let keys = Keys::new(&redis.key_prefix, 4);
    let mut conn = redis.connect().await.expect("connect");
    let limit = Duration::from_secs(1);
    batchgate_redis::conn::check_layout(&mut conn, &keys.layout(), Some(4), 1, limit)
        .await
        .expect("first sets it");
    batchgate_redis::conn::check_layout(&mut conn, &keys.layout(), Some(4), 1, limit)
        .await
        .expect("same count");
    let err = batchgate_redis::conn::check_layout(&mut conn, &keys.layout(), Some(8), 1, limit)
        .await
        .expect_err("different count");
    let message = err.to_string();
    assert!(message.contains("--partitions 4"), "{message}");
}

#[tokio::test]
async fn backlog_counts_taken_and_queued_tasks() {
    let server = RedisServer::start().await;
    let redis = config(server.url());
    let q = queue(&redis, "a", 5).await;
    for i in 0..10 {
        // Spread over partitions: the first hex byte of the id picks it.
        q.enqueue(task(&format!("{:02x}-backlog-{i}", i * 17)))
            .await
            .expect("enqueue");
    }
    let got = read_n(&q, 10, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 10);
    let backlog = q.backlog().await.expect("backlog").expect("countable");
    assert_eq!((backlog.taken, backlog.queued), (10, 0));
}

/// Waits (bounded) until `q` holds `n` tasks read ahead; returns what it holds then.
async fn holding(q: &RedisQueue, n: usize) -> usize {
    for _ in 0..100 {
        if q.held() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    q.held()
}

#[tokio::test]
async fn the_readers_hold_no_more_than_the_batcher_asks_for() {
    let server = RedisServer::start().await;
    let redis = config(server.url());
    let q = queue(&redis, "a", 5).await;
    // 100 tasks, 25 per partition (the first hex byte of the id picks it).
    for i in 0..100 {
        q.enqueue(task(&format!("{i:02x}-ahead")))
            .await
            .expect("enqueue");
    }
    // A batcher with no slot to spare asks for one batch (of 16, here).
    q.read_ahead(16);
    let first = read_n(&q, 1, Duration::from_secs(5)).await;
    assert_eq!(first.len(), 1);
    let held = holding(&q, 12).await;
    assert!((12..=16).contains(&held), "held {held} for a limit of 16");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(q.held() <= 16, "held {} for a limit of 16", q.held());
    // Slots free: it may read further ahead, and does, without a read from the batcher.
    q.read_ahead(256);
    assert_eq!(holding(&q, 99).await, 99, "the rest read ahead");
    // To Redis all of them are taken.
    let backlog = q.backlog().await.expect("backlog").expect("countable");
    assert_eq!((backlog.taken, backlog.queued), (100, 0));
    let rest = read_n(&q, 99, Duration::from_secs(5)).await;
    assert_eq!(rest.len(), 99);
    assert_eq!(q.held(), 0, "all handed out");
}

#[tokio::test]
async fn every_gateway_reads_the_batchers_load_reports_combined() {
    use batchgate_queue::{LoadBoard, WorkerLoad};
    use batchgate_redis::RedisLoadBoard;
    let server = RedisServer::start().await;
    let redis = config(server.url());
    let keys = Keys::new(&redis.key_prefix, 1);
    let limit = Duration::from_secs(1);
    let board = |conn| RedisLoadBoard::new(conn, &keys, limit);
    let batcher_a = board(redis.connect().await.expect("connect"));
    let batcher_b = board(redis.connect().await.expect("connect"));
    let gateway = board(redis.connect().await.expect("connect"));
    assert_eq!(gateway.read().await.expect("read"), None, "no batcher yet");
    let load = |busy, capacity| WorkerLoad {
        busy,
        capacity,
        call_ms: 200.0,
    };
    batcher_a
        .publish("a", load(1.0, 600.0))
        .await
        .expect("publish");
    batcher_b
        .publish("b", load(0.0, 200.0))
        .await
        .expect("publish");
    let seen = gateway.read().await.expect("read").expect("reports");
    assert_eq!(seen.capacity, 800.0);
    assert!((seen.busy - 0.75).abs() < 1e-9, "{seen:?}");
    // A batcher that stopped reporting long ago no longer counts, and is removed.
    let mut raw = redis.connect().await.expect("connect");
    let old = format!("{};1000", load(1.0, 10_000.0).encode());
    redis::cmd("HSET")
        .arg(keys.workers())
        .arg("gone")
        .arg(old)
        .exec_async(&mut raw)
        .await
        .expect("hset");
    let seen = gateway.read().await.expect("read").expect("reports");
    assert_eq!(seen.capacity, 800.0, "the stale report is not counted");
    let left: Option<String> = redis::cmd("HGET")
        .arg(keys.workers())
        .arg("gone")
        .query_async(&mut raw)
        .await
        .expect("hget");
    assert_eq!(left, None, "and is removed");
}

/// Admits `ids` together (one gathered group: on the test's single-threaded runtime the
/// gatherer runs only once all of them are queued), without dedupe.
async fn admit_together(intake: &batchgate_redis::RedisIntake, ids: &[&str]) {
    use batchgate_queue::Intake;
    let tasks: Vec<Task> = ids.iter().map(|id| task(id)).collect();
    let admitted =
        futures_util::future::join_all(tasks.iter().map(|t| intake.admit(t, 1, None))).await;
    for a in admitted {
        a.expect("admitted");
    }
}

fn intake(
    conn: batchgate_redis::RedisConn,
    keys: &Keys,
    capacity: usize,
) -> batchgate_redis::RedisIntake {
    batchgate_redis::RedisIntake::new(
        conn,
        keys.clone(),
        capacity,
        Duration::from_secs(60),
        Duration::from_secs(60),
        Duration::from_secs(1),
        false,
    )
}

#[tokio::test(flavor = "current_thread")]
async fn a_group_is_one_entry_acknowledged_with_its_last_task() {
    let server = RedisServer::start().await;
    let redis = config(server.url());
    let keys = Keys::new(&redis.key_prefix, 4);
    let intake = intake(redis.connect().await.expect("connect"), &keys, 100);
    // All three in partition 0 (their first byte, modulo 4).
    admit_together(&intake, &["00-g1", "04-g2", "08-g3"]).await;
    let stream = keys.stream(0);
    let xlen = |server: &RedisServer| server.cli(&["XLEN", &stream]).expect("XLEN");
    assert_eq!(xlen(&server).trim(), "1", "one entry for the group");
    let count = server.cli(&["GET", &keys.task_count(0)]).expect("GET");
    assert_eq!(count.trim(), "3", "counted in tasks");
    let group_keys = |server: &RedisServer| {
        let keys = server.cli(&["KEYS", "qt:*:g:*"]).expect("KEYS");
        keys.lines().filter(|l| !l.trim().is_empty()).count()
    };
    assert_eq!(
        group_keys(&server),
        1,
        "the group's messages, stored beside the entry"
    );
    let q = queue(&redis, "a", 5).await;
    assert_eq!(q.depth().await.expect("depth"), vec![3, 0, 0, 0]);

    let got = read_n(&q, 3, Duration::from_secs(5)).await;
    let mut ids: Vec<&str> = got.iter().map(|d| d.task.task_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["00-g1", "04-g2", "08-g3"]);
    assert!(got.iter().all(|d| d.receipt == got[0].receipt), "one entry");
    // Two of three done: the entry stays, pending, for the third.
    q.ack(&[got[0].receipt.clone(), got[1].receipt.clone()])
        .await
        .expect("ack");
    assert_eq!(
        xlen(&server).trim(),
        "1",
        "not acknowledged while a task is out"
    );
    q.ack(&[got[2].receipt.clone()]).await.expect("ack");
    assert_eq!(
        xlen(&server).trim(),
        "0",
        "acknowledged and deleted with its last task"
    );
    assert_eq!(group_keys(&server), 0, "its messages deleted with it");
    assert_eq!(q.depth().await.expect("depth"), vec![0, 0, 0, 0]);
    let count = server.cli(&["GET", &keys.task_count(0)]).expect("GET");
    assert_eq!(count.trim(), "0");
}

// A group's entry says how long its oldest task waited to be written, so that the batcher's
// window does not make a lone request wait the admission's gathering on top of it.
#[tokio::test(flavor = "current_thread")]
async fn a_group_entry_carries_its_gathering_wait_to_the_reader() {
    let server = RedisServer::start().await;
    let redis = config(server.url());
    let keys = Keys::new(&redis.key_prefix, 4);
    let intake = intake(redis.connect().await.expect("connect"), &keys, 100);
    let started = std::time::Instant::now();
    admit_together(&intake, &["00-w1"]).await;
    let written = started.elapsed();
    let q = queue(&redis, "a", 5).await;
    let got = read_n(&q, 1, Duration::from_secs(5)).await;
    // A lone admission waits the whole window for company; the entry is written after it.
    assert!(
        got[0].waited >= batchgate_redis::intake::GATHER_WINDOW,
        "waited {:?}",
        got[0].waited
    );
    assert!(
        got[0].waited <= written,
        "waited {:?}, admitted in {written:?}",
        got[0].waited
    );
    let entry = server
        .cli(&["XRANGE", &keys.stream(0), "-", "+"])
        .expect("XRANGE");
    assert!(entry.lines().any(|l| l.trim() == "w"), "field w in {entry}");
    q.ack(&[got[0].receipt.clone()]).await.expect("ack");
}

// Two identical inputs in one gathered group: the second shares the first, although on a
// standalone Redis the group's pending records are written only once its entry exists.
#[tokio::test(flavor = "current_thread")]
async fn identical_inputs_in_one_group_run_once() {
    use batchgate_queue::{Admitted, Intake};
    let server = RedisServer::start().await;
    let redis = config(server.url());
    let keys = Keys::new(&redis.key_prefix, 4);
    let intake = intake(redis.connect().await.expect("connect"), &keys, 100);
    let hash = format!("0c{}", "0".repeat(62));
    let (first, second) = (task("0c-first"), task("0c-second"));
    let (a, b) = futures_util::future::join(
        intake.admit(&first, 1, Some(&hash)),
        intake.admit(&second, 1, Some(&hash)),
    )
    .await;
    assert_eq!(
        a.expect("admit"),
        Admitted::Enqueued {
            dedupe_bypassed: false
        }
    );
    assert_eq!(b.expect("admit"), Admitted::Duplicate("0c-first".into()));
    let xlen = server.cli(&["XLEN", &keys.stream(0)]).expect("XLEN");
    assert_eq!(xlen.trim(), "1", "one entry");
    let count = server.cli(&["GET", &keys.task_count(0)]).expect("GET");
    assert_eq!(count.trim(), "1", "one task queued");
}

// The admission script answers a whole gathered group at once, a line a task: each task
// gets its own answer, in its place, whatever the others got.
#[tokio::test(flavor = "current_thread")]
async fn each_task_of_a_group_gets_its_own_answer() {
    use batchgate_queue::{AdmitError, Admitted, Intake, QueueError};
    let server = RedisServer::start().await;
    let redis = config(server.url());
    let keys = Keys::new(&redis.key_prefix, 4);
    let intake = intake(redis.connect().await.expect("connect"), &keys, 100);
    let (shared, poisoned) = (
        format!("0c{}", "1".repeat(62)),
        format!("0c{}", "2".repeat(62)),
    );
    // Something that is not a dedupe entry sits at the second input's key: its claim fails.
    server
        .cli(&["HSET", &keys.dedupe(&poisoned), "not", "a dedupe entry"])
        .expect("HSET");
    let tasks = [
        (task("0c-first"), Some(&shared)),
        (task("0c-poisoned"), Some(&poisoned)),
        (task("0c-same"), Some(&shared)),
        (task("0c-plain"), None),
    ];
    let answers = futures_util::future::join_all(
        tasks
            .iter()
            .map(|(t, hash)| intake.admit(t, 1, hash.map(String::as_str))),
    )
    .await;
    let enqueued = Admitted::Enqueued {
        dedupe_bypassed: false,
    };
    assert_eq!(answers[0].as_ref().expect("first"), &enqueued);
    match &answers[1] {
        Err(AdmitError::Queue(QueueError::Unavailable(why))) => {
            assert!(why.contains("WRONGTYPE"), "{why}")
        }
        other => panic!("the poisoned task fails alone: {other:?}"),
    }
    assert_eq!(
        answers[2].as_ref().expect("same"),
        &Admitted::Duplicate("0c-first".into())
    );
    assert_eq!(answers[3].as_ref().expect("plain"), &enqueued);
    let xlen = server.cli(&["XLEN", &keys.stream(0)]).expect("XLEN");
    assert_eq!(xlen.trim(), "1", "one call, one entry");
    let q = queue(&redis, "a", 5).await;
    let got = read_n(&q, 3, Duration::from_secs(2)).await;
    let mut ids: Vec<&str> = got.iter().map(|d| d.task.task_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["0c-first", "0c-plain"], "only the admitted are read");
}

// A process that is gateway and batcher keeps the tasks it admits whole for its own reader;
// a task that turns out to be a duplicate is not read, and its admission hands it back whole
// (the caller admits it again if the first task cannot be shared).
#[tokio::test(flavor = "current_thread")]
async fn a_duplicate_kept_for_the_own_reader_is_handed_back_whole() {
    use batchgate_queue::{AdmittedOwned, Intake};
    let server = RedisServer::start().await;
    let redis = config(server.url());
    let keys = Keys::new(&redis.key_prefix, 4);
    let intake = intake(redis.connect().await.expect("connect"), &keys, 100);
    let queue = queue(&redis, "own", 3)
        .await
        .with_local_groups(intake.local_groups());
    // The reads start, and with them the intake keeps the tasks it admits.
    let none = queue
        .read(1, Duration::from_millis(10))
        .await
        .expect("read");
    assert!(none.is_empty());
    let hash = format!("0c{}", "0".repeat(62));
    // Whole milliseconds: a message carries its times to the millisecond.
    let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    let whole = |id: &str| Task {
        enqueued_at: at,
        deadline: Some(at + Duration::from_secs(5)),
        reply_to: Some("gateway-1".into()),
        owner: Some("alice".into()),
        ..task(id)
    };
    let (a, b) = futures_util::future::join(
        intake.admit_owned(whole("0c-first"), 1, Some(&hash)),
        intake.admit_owned(whole("0c-second"), 1, Some(&hash)),
    )
    .await;
    assert!(
        matches!(a.expect("admit"), AdmittedOwned::Enqueued { .. }),
        "the first is queued"
    );
    match b.expect("admit") {
        AdmittedOwned::Duplicate { existing, task } => {
            assert_eq!(existing, "0c-first");
            assert_eq!(task, whole("0c-second"), "the duplicate's task, whole");
        }
        other => panic!("the second is a duplicate: {other:?}"),
    }
    let got = read_n(&queue, 2, Duration::from_secs(2)).await;
    assert_eq!(got.len(), 1, "only the first is read");
    assert_eq!(got[0].task, whole("0c-first"), "read as it was admitted");
}

// Pending records carry no TTL (the entry's life bounds theirs), so a task whose group
// messages are gone must still end: the entry names its admitted tasks, and dead-lettering it
// fails them instead of leaving them pending for good.
#[tokio::test(flavor = "current_thread")]
async fn a_group_whose_messages_are_gone_fails_its_tasks() {
    let server = RedisServer::start().await;
    let redis = config(server.url());
    let keys = Keys::new(&redis.key_prefix, 4);
    let store = store(redis.connect().await.expect("connect"), &keys);
    let intake = intake(redis.connect().await.expect("connect"), &keys, 100);
    admit_together(&intake, &["00-lost1", "04-lost2"]).await;
    for id in ["00-lost1", "04-lost2"] {
        let record = store.get(id).await.expect("get").expect("pending");
        assert_eq!(record.status, TaskStatus::Pending, "{id}");
        let ttl = server.cli(&["PTTL", &keys.result(id)]).expect("PTTL");
        assert_eq!(ttl.trim(), "-1", "a pending record has no TTL of its own");
    }
    // The group's messages vanish (an operator, an eviction) before any batcher reads them.
    let groups = server.cli(&["KEYS", "qt:*:g:*"]).expect("KEYS");
    for key in groups.lines().filter(|l| !l.trim().is_empty()) {
        server.cli(&["DEL", key.trim()]).expect("DEL");
    }
    // One delivery allowed: the first read yields nothing, the claimer dead-letters it.
    let q = queue(&redis, "a", 1).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            read_n(&q, 1, Duration::from_millis(200)).await.is_empty(),
            "a task without its message was delivered"
        );
        let done = store.get("04-lost2").await.expect("get").expect("exists");
        if done.status == TaskStatus::Failed {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {:?} after 20 s",
            done.status
        );
    }
    for id in ["00-lost1", "04-lost2"] {
        let record = store.get(id).await.expect("get").expect("final");
        assert_eq!(record.status, TaskStatus::Failed, "{id}");
        let error = record.error.unwrap_or_default();
        assert!(error.ends_with("its message was gone"), "{id}: {error}");
        let ttl: i64 = server
            .cli(&["PTTL", &keys.result(id)])
            .expect("PTTL")
            .trim()
            .parse()
            .expect("a number");
        assert!(ttl > 0, "{id}: the final record expires (PTTL {ttl})");
    }
    assert_eq!(q.depth().await.expect("depth"), vec![0, 0, 0, 0]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_group_whose_batcher_died_comes_back_whole() {
    let server = RedisServer::start().await;
    let redis = config(server.url());
    let keys = Keys::new(&redis.key_prefix, 4);
    let intake = intake(redis.connect().await.expect("connect"), &keys, 100);
    admit_together(&intake, &["01-h1", "05-h2", "09-h3"]).await;
    let a = queue(&redis, "a", 5).await;
    let got = read_n(&a, 3, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 3);
    // One task finished, two still out when its batcher dies.
    a.ack(&[got[0].receipt.clone()]).await.expect("ack");
    drop(a);
    let b = queue(&redis, "b", 5).await;
    let again = read_n(&b, 3, Duration::from_secs(10)).await;
    let mut ids: Vec<&str> = again.iter().map(|d| d.task.task_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["01-h1", "05-h2", "09-h3"], "the whole entry, claimed");
    let receipts: Vec<_> = again.iter().map(|d| d.receipt.clone()).collect();
    b.ack(&receipts).await.expect("ack");
    assert_eq!(b.depth().await.expect("depth").iter().sum::<usize>(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn capacity_counts_tasks_not_entries() {
    use batchgate_queue::{AdmitError, Intake, QueueError};
    let server = RedisServer::start().await;
    let redis = config(server.url());
    let keys = Keys::new(&redis.key_prefix, 4);
    // 3 per partition: a group of 3 fills partition 2 in one entry.
    let intake = intake(redis.connect().await.expect("connect"), &keys, 12);
    admit_together(&intake, &["02-c1", "06-c2", "0a-c3"]).await;
    let refused = intake.admit(&task("0e-c4"), 1, None).await;
    assert!(
        matches!(refused, Err(AdmitError::Queue(QueueError::Full { .. }))),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_task_refused_inside_a_group_is_never_delivered() {
    use batchgate_queue::{AdmitError, Intake, QueueError};
    let server = RedisServer::start().await;
    let redis = config(server.url());
    let keys = Keys::new(&redis.key_prefix, 4);
    // 2 per partition: of three gathered for partition 3, the third is refused.
    let intake = intake(redis.connect().await.expect("connect"), &keys, 8);
    let tasks = [task("03-r1"), task("07-r2"), task("0b-r3")];
    let answers =
        futures_util::future::join_all(tasks.iter().map(|t| intake.admit(t, 1, None))).await;
    assert!(answers[0].is_ok() && answers[1].is_ok(), "{answers:?}");
    assert!(
        matches!(answers[2], Err(AdmitError::Queue(QueueError::Full { .. }))),
        "{answers:?}"
    );
    assert_eq!(
        server.cli(&["XLEN", &keys.stream(3)]).expect("XLEN").trim(),
        "1",
        "one entry, the refused task's message in it but marked"
    );
    let q = queue(&redis, "a", 5).await;
    let got = read_n(&q, 3, Duration::from_secs(2)).await;
    let mut ids: Vec<&str> = got.iter().map(|d| d.task.task_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["03-r1", "07-r2"], "the refused task is skipped");
    let receipts: Vec<_> = got.iter().map(|d| d.receipt.clone()).collect();
    q.ack(&receipts).await.expect("ack");
    assert_eq!(q.depth().await.expect("depth"), vec![0, 0, 0, 0]);
}
