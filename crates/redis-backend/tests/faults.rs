//! The Redis path under the faults it must survive, each on a standalone redis-server and on
//! a 6-node cluster started by the test harness: stale dedupe entries, results that must not
//! be overwritten, acknowledgements that must not be split, leases, the drain, clocks, short
//! TTLs, departed consumers, and notices that must reach whichever gateway waits.

mod common;

use common::read_n;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use batchgate_protocol::api::TaskStatus;
use batchgate_protocol::task::Task;
use batchgate_protocol::Output;
use batchgate_queue::{Admitted, Intake, Queue};
use batchgate_redis::keys::default_partitions;
use batchgate_redis::{
    Keys, Notifier, RedisConfig, RedisConn, RedisIntake, RedisQueue, RedisQueueConfig,
    RedisResultStore,
};
use batchgate_store::{Completion, Outcome, ResultStore, TaskRecord, Watched};
use batchgate_testkit::{RedisCluster, RedisServer};
use tokio_util::sync::CancellationToken;

/// The Redis a scenario runs on, kept alive for its length.
enum Servers {
    Standalone(RedisServer),
    Cluster(RedisCluster),
}

struct Infra {
    servers: Servers,
    config: RedisConfig,
    keys: Keys,
}

impl Infra {
    async fn standalone() -> Self {
        let server = RedisServer::start().await;
        Self::new(vec![server.url()], false, Servers::Standalone(server))
    }

    async fn cluster() -> Self {
        let cluster = RedisCluster::start().await;
        Self::new(cluster.urls(), true, Servers::Cluster(cluster))
    }

    fn new(urls: Vec<String>, cluster: bool, servers: Servers) -> Self {
        let config = RedisConfig {
            urls,
            cluster,
            key_prefix: "ft".into(),
            op_timeout: Duration::from_secs(2),
            tls: Default::default(),
        };
        let keys = Keys::new(&config.key_prefix, default_partitions(cluster));
        Infra {
            servers,
            config,
            keys,
        }
    }

    async fn conn(&self) -> RedisConn {
        self.config.connect().await.expect("connect")
    }

    async fn queue(&self, consumer: &str, tune: impl FnOnce(&mut RedisQueueConfig)) -> RedisQueue {
        let mut config = RedisQueueConfig {
            capacity: 1_000,
            visibility_timeout: Duration::from_millis(600),
            ..RedisQueueConfig::default()
        };
        tune(&mut config);
        RedisQueue::new(
            self.conn().await,
            self.config.clone(),
            self.keys.clone(),
            config,
            consumer.into(),
        )
    }

    async fn intake(&self) -> RedisIntake {
        RedisIntake::new(
            self.conn().await,
            self.keys.clone(),
            1_000,
            Duration::from_secs(60),
            Duration::from_secs(60),
            self.config.op_timeout,
            self.config.cluster,
        )
    }

    /// A result store without a subscription (a batcher's).
    async fn store(&self, ttl: Duration) -> RedisResultStore {
        RedisResultStore::new(
            self.conn().await,
            self.keys.clone(),
            ttl,
            self.config.op_timeout,
            None,
            self.config.cluster,
        )
    }

    /// A gateway's store: subscribed to its notifications as `id`.
    async fn gateway(&self, id: &str, stop: &CancellationToken) -> Arc<RedisResultStore> {
        let notifier = Arc::new(Notifier::default());
        tokio::spawn(notifier.clone().run(
            self.config.clone(),
            self.keys.clone(),
            id.to_owned(),
            stop.clone(),
        ));
        Arc::new(RedisResultStore::new(
            self.conn().await,
            self.keys.clone(),
            Duration::from_secs(60),
            self.config.op_timeout,
            Some((notifier, id.to_owned())),
            self.config.cluster,
        ))
    }

    /// Closes every pub/sub connection of every node: the subscriptions go down.
    fn kill_subscriptions(&self) {
        let nodes: Vec<&RedisServer> = match &self.servers {
            Servers::Standalone(s) => vec![s],
            Servers::Cluster(c) => c.nodes.iter().collect(),
        };
        for node in nodes {
            node.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        }
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &mut redis::Cmd) -> T {
        cmd.query_async(&mut self.conn().await)
            .await
            .expect("query")
    }
}

/// Declares the scenario on a standalone Redis and on a cluster.
macro_rules! on_both {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn standalone() {
                super::$scenario(super::Infra::standalone().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster() {
                super::$scenario(super::Infra::cluster().await).await;
            }
        }
    };
}

fn task(id: &str, reply_to: Option<&str>) -> Task {
    Task {
        task_id: id.into(),
        input: format!("input of {id}"),
        enqueued_at: SystemTime::now(),
        reply_to: reply_to.map(str::to_owned),
        deadline: None,
        owner: None,
        trace_parent: None,
        zone: None,
    }
}

fn done(id: &str, outcome: Outcome, reply_to: Option<&str>) -> Completion {
    Completion {
        task_id: id.into(),
        outcome,
        completed_at: 42,
        reply_to: reply_to.map(str::to_owned),
    }
}

/// Entries in every stream, and entries pending in the group.
async fn stream_totals(infra: &Infra) -> (usize, usize) {
    let mut len = 0;
    let mut pending = 0;
    for p in 0..infra.keys.partitions() {
        let stream = infra.keys.stream(p);
        len += infra.query::<usize>(redis::cmd("XLEN").arg(&stream)).await;
        // A partition never written to has no stream, hence no group to ask.
        let summary: redis::RedisResult<redis::Value> = redis::cmd("XPENDING")
            .arg(&stream)
            .arg("batchers")
            .query_async(&mut infra.conn().await)
            .await;
        if let Ok(redis::Value::Array(parts)) = summary {
            if let Some(redis::Value::Int(n)) = parts.first() {
                pending += *n as usize;
            }
        }
    }
    (len, pending)
}

// 1. A dedupe entry whose task failed is taken over by the next identical submission.
async fn a_stale_dedupe_entry_is_taken_over(infra: Infra) {
    let intake = infra.intake().await;
    let store = infra.store(Duration::from_secs(60)).await;
    let hash = format!("5a{}", "0".repeat(62));
    let admit = |id: &'static str| {
        let intake = intake.clone();
        let hash = hash.clone();
        async move {
            intake
                .admit(&task(id, None), 1, Some(&hash))
                .await
                .expect("admit")
        }
    };
    assert!(matches!(admit("5a-first").await, Admitted::Enqueued { .. }));
    assert_eq!(
        admit("5a-dup").await,
        Admitted::Duplicate("5a-first".into())
    );
    store
        .complete(vec![done(
            "5a-first",
            Outcome::Failed("worker error".into()),
            None,
        )])
        .await
        .expect("fail it");
    // The failed task's entry is stale: the next submission runs and owns the entry…
    assert!(matches!(
        admit("5a-second").await,
        Admitted::Enqueued { .. }
    ));
    // …so the one after shares it instead of running a third time.
    assert_eq!(
        admit("5a-third").await,
        Admitted::Duplicate("5a-second".into())
    );
}
on_both!(a_stale_dedupe_entry_is_taken_over);

// 2. A SUCCESS is never overwritten by a FAILED, even through a lost ack, redeliveries and
//    dead-lettering; a SUCCESS over a FAILED leaves no error behind.
async fn a_success_is_never_overwritten(infra: Infra) {
    let store = infra.store(Duration::from_secs(60)).await;
    store
        .complete(vec![done("6b-a", Outcome::Success("out".into()), None)])
        .await
        .expect("store");
    store
        .complete(vec![done(
            "6b-a",
            Outcome::Failed("late failure".into()),
            None,
        )])
        .await
        .expect("store");
    let a = store.get("6b-a").await.expect("get").expect("exists");
    assert_eq!(
        (a.status, a.output_text(), a.error.as_deref()),
        (TaskStatus::Success, Some("out"), None)
    );

    store
        .complete(vec![done(
            "6b-b",
            Outcome::Failed("transient".into()),
            None,
        )])
        .await
        .expect("store");
    store
        .complete(vec![done(
            "6b-b",
            Outcome::Success("got through".into()),
            None,
        )])
        .await
        .expect("store");
    let b = store.get("6b-b").await.expect("get").expect("exists");
    assert_eq!(b.status, TaskStatus::Success);
    assert_eq!(b.error, None, "no stale error next to a SUCCESS");

    // A delivered task's SUCCESS is stored but its ack is lost; its batcher dies; the next
    // batcher, allowed one delivery, dead-letters it. The SUCCESS stands.
    let first = infra.queue("first", |_| {}).await;
    first.enqueue(task("6b-c", None)).await.expect("enqueue");
    assert_eq!(read_n(&first, 1, Duration::from_secs(5)).await.len(), 1);
    store
        .complete(vec![done(
            "6b-c",
            Outcome::Success("delivered".into()),
            None,
        )])
        .await
        .expect("store, ack lost");
    drop(first);
    let second = infra.queue("second", |c| c.max_deliveries = 1).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while stream_totals(&infra).await != (0, 0) {
        assert!(read_n(&second, 1, Duration::from_millis(100))
            .await
            .is_empty());
        assert!(Instant::now() < deadline, "never dead-lettered");
    }
    let c = store.get("6b-c").await.expect("get").expect("exists");
    assert_eq!(
        (c.status, c.output_text()),
        (TaskStatus::Success, Some("delivered"))
    );

    // Stops the readers of `second`, which would otherwise share the next entries.
    drop(second);

    // A batcher settles what it read with the record head it knows from the task (one
    // command, no read first): a SUCCESS stored meanwhile by another delivery still stands
    // against its late FAILED, and a first result carries the task's owner and time.
    let reader = infra.queue("reader", |_| {}).await;
    let owned = Task {
        owner: Some("alice".into()),
        ..task("6b-e", None)
    };
    let created_at = batchgate_protocol::task::unix_ms(owned.enqueued_at);
    for t in [task("6b-d", None), owned, task("6b-f", None)] {
        reader.enqueue(t).await.expect("enqueue");
    }
    let got = read_n(&reader, 3, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 3);
    for id in ["6b-d", "6b-f"] {
        store
            .complete(vec![done(id, Outcome::Success("first".into()), None)])
            .await
            .expect("store");
    }
    let receipts: Vec<_> = got.iter().map(|d| d.receipt.clone()).collect();
    reader
        .settle(
            &store,
            vec![
                done("6b-d", Outcome::Failed("late".into()), None),
                done("6b-e", Outcome::Success("mine".into()), None),
                // Computed twice (a redelivery): the first SUCCESS stands.
                done("6b-f", Outcome::Success("second".into()), None),
            ],
            &receipts,
        )
        .await
        .expect("settle");
    let f = store.get("6b-f").await.expect("get").expect("exists");
    assert_eq!(
        (f.status, f.output_text()),
        (TaskStatus::Success, Some("first"))
    );
    let d = store.get("6b-d").await.expect("get").expect("exists");
    assert_eq!(
        (d.status, d.output_text(), d.error.as_deref()),
        (TaskStatus::Success, Some("first"), None)
    );
    let e = store.get("6b-e").await.expect("get").expect("exists");
    assert_eq!(
        (e.status, e.output_text(), e.owner.as_deref(), e.created_at),
        (TaskStatus::Success, Some("mine"), Some("alice"), created_at)
    );
}
on_both!(a_success_is_never_overwritten);

// 3. Settling acknowledges and deletes in one step: nothing acked stays in a stream, and a
//    full partition has its room back.
async fn ack_and_delete_are_one_step(infra: Infra) {
    let q = infra
        .queue("acker", |c| c.capacity = 2 * infra.keys.partitions())
        .await;
    let store = infra.store(Duration::from_secs(60)).await;
    // Two tasks fill partition 0 (ids starting 00 land there whatever the count).
    for id in ["00-a", "00-b"] {
        q.enqueue(task(id, None)).await.expect("room");
    }
    assert!(
        q.enqueue(task("00-c", None)).await.is_err(),
        "partition full"
    );
    let got = read_n(&q, 2, Duration::from_secs(5)).await;
    let completions = got
        .iter()
        .map(|d| done(&d.task.task_id, Outcome::Success("o".into()), None))
        .collect();
    let receipts: Vec<_> = got.iter().map(|d| d.receipt.clone()).collect();
    q.settle(&store, completions, &receipts)
        .await
        .expect("settle");
    assert_eq!(stream_totals(&infra).await, (0, 0));
    for id in ["00-c", "00-d"] {
        q.enqueue(task(id, None)).await.expect("room again");
    }
}
on_both!(ack_and_delete_are_one_step);

// 4. A live batcher's entries are never claimed by another, however slow its batch.
async fn a_live_batchers_entries_are_not_claimed(infra: Infra) {
    let a = infra.queue("live", |_| {}).await;
    for id in ["1a-x", "2b-y", "3c-z"] {
        a.enqueue(task(id, None)).await.expect("enqueue");
    }
    let held = read_n(&a, 3, Duration::from_secs(5)).await;
    assert_eq!(held.len(), 3);
    let b = infra.queue("other", |_| {}).await;
    // Five visibility timeouts while `a` holds them.
    let stolen = read_n(&b, 1, Duration::from_secs(3)).await;
    assert!(stolen.is_empty(), "claimed from a live batcher: {stolen:?}");
    let receipts: Vec<_> = held.iter().map(|d| d.receipt.clone()).collect();
    a.ack(&receipts).await.expect("ack");
    assert_eq!(stream_totals(&infra).await, (0, 0));
}
on_both!(a_live_batchers_entries_are_not_claimed);

// 5. Entries Redis delivered to a read the drain cut short are handed out by the drain, not
//    left for the visibility timeout.
async fn the_drain_reads_back_entries_it_never_saw(infra: Infra) {
    let q = infra
        .queue("drainer", |c| {
            c.visibility_timeout = Duration::from_secs(60)
        })
        .await;
    // Start the readers, then deliver an entry to this consumer behind their back, as a read
    // whose reply never arrived would.
    assert!(q
        .read(1, Duration::from_millis(50))
        .await
        .expect("read")
        .is_empty());
    let raw = infra.queue("raw", |_| {}).await;
    raw.enqueue(task("7d-unseen", None)).await.expect("enqueue");
    q.close_reads().await;
    // The readers are stopped; the entry is still undelivered: deliver it to `drainer` by hand.
    let p = infra.keys.partition_of("7d-unseen");
    let _: redis::Value = infra
        .query(
            redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg("batchers")
                .arg("drainer")
                .arg("STREAMS")
                .arg(infra.keys.stream(p))
                .arg(">"),
        )
        .await;
    // A second close (as the drain's own) reads back what is pending for this consumer.
    q.close_reads().await;
    let got = q.read(10, Duration::ZERO).await.expect("read");
    assert_eq!(got.len(), 1, "the unseen entry is handed out by the drain");
    assert_eq!(got[0].task.task_id, "7d-unseen");
}
on_both!(the_drain_reads_back_entries_it_never_saw);

// 6. Queue age is read from the stream entry (Redis's clock), not the admitting gateway's.
async fn queue_age_uses_redis_time(infra: Infra) {
    let q = infra.queue("clock", |_| {}).await;
    let mut skewed = task("8e-skewed", None);
    // The gateway's clock is an hour behind.
    skewed.enqueued_at = SystemTime::now() - Duration::from_secs(3600);
    q.enqueue(skewed).await.expect("enqueue");
    let got = read_n(&q, 1, Duration::from_secs(5)).await;
    let age = SystemTime::now()
        .duration_since(got[0].queued_at)
        .unwrap_or_default();
    assert!(
        age < Duration::from_secs(5),
        "age {age:?} from the gateway's clock"
    );
}
on_both!(queue_age_uses_redis_time);

// 7. A TTL under a second is kept in milliseconds, not turned into `EXPIRE 0`.
async fn short_ttls_are_not_zero(infra: Infra) {
    let store = infra.store(Duration::from_millis(800)).await;
    store
        .complete(vec![done("9f-short", Outcome::Success("o".into()), None)])
        .await
        .expect("store");
    let record = store.get("9f-short").await.expect("get");
    assert!(record.is_some(), "stored with a short TTL, not deleted");
    let ttl: i64 = infra
        .query(redis::cmd("PTTL").arg(infra.keys.result("9f-short")))
        .await;
    assert!((1..=800).contains(&ttl), "PTTL {ttl}");
}
on_both!(short_ttls_are_not_zero);

/// Every consumer of the group, over all partitions.
async fn consumers(infra: &Infra) -> Vec<String> {
    let mut names = Vec::new();
    for p in 0..infra.keys.partitions() {
        let list: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(infra.keys.stream(p))
            .arg("batchers")
            .query_async(&mut infra.conn().await)
            .await
            .unwrap_or_default();
        for c in list {
            if let Some(redis::Value::BulkString(n)) = c.get("name") {
                names.push(String::from_utf8_lossy(n).into_owned());
            }
        }
    }
    names
}

// 8. The consumer of a batcher that is gone leaves the group.
async fn departed_consumers_are_removed(infra: Infra) {
    let gone = infra.queue("gone", |_| {}).await;
    gone.enqueue(task("a0-t", None)).await.expect("enqueue");
    let got = read_n(&gone, 1, Duration::from_secs(5)).await;
    gone.ack(&[got[0].receipt.clone()]).await.expect("ack");
    drop(gone);
    let survivor = infra
        .queue("survivor", |c| {
            c.consumer_idle_limit = Duration::from_millis(500)
        })
        .await;
    // The survivor holds a task of its own: a live consumer stays.
    survivor.enqueue(task("b0-t", None)).await.expect("enqueue");
    assert_eq!(read_n(&survivor, 1, Duration::from_secs(5)).await.len(), 1);
    assert!(consumers(&infra).await.contains(&"gone".to_owned()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while consumers(&infra).await.contains(&"gone".to_owned()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(Instant::now() < deadline, "the departed consumer stayed");
    }
    let left = consumers(&infra).await;
    assert!(left.contains(&"survivor".to_owned()), "{left:?}");
}
on_both!(departed_consumers_are_removed);

// A long poll on a gateway other than the one that admitted the task is woken by a notice
// within 100 ms of the result being stored.
async fn a_wait_on_another_gateway_wakes_at_once(infra: Infra) {
    let stop = CancellationToken::new();
    let _admitting = infra.gateway("gw-one", &stop).await;
    let other = infra.gateway("gw-two", &stop).await;
    let intake = infra.intake().await;
    intake
        .admit(&task("b1-cross", Some("gw-one")), 1, None)
        .await
        .expect("admit");
    let Watched::Pending(_, expectation) = other.clone().watch("b1-cross").await.expect("watch")
    else {
        panic!("not pending");
    };
    // Long polls again from the same gateway list it once: the record does not grow.
    for _ in 0..3 {
        other.clone().watch("b1-cross").await.expect("watch again");
    }
    let raw: String = infra
        .query(redis::cmd("GET").arg(infra.keys.result("b1-cross")))
        .await;
    assert_eq!(raw.matches(";gw-two").count(), 1, "watchers in {raw:?}");
    let waiter = tokio::spawn(async move {
        let record = expectation.wait(Duration::from_secs(10)).await;
        (record, Instant::now())
    });
    let batcher = infra.queue("b", |_| {}).await;
    let got = read_n(&batcher, 1, Duration::from_secs(5)).await;
    let store = infra.store(Duration::from_secs(60)).await;
    batcher
        .settle(
            &store,
            vec![done(
                "b1-cross",
                Outcome::Success("out".into()),
                Some("gw-one"),
            )],
            &[got[0].receipt.clone()],
        )
        .await
        .expect("settle");
    let stored = Instant::now();
    let (record, woken) = waiter.await.expect("join");
    let record: TaskRecord = record.expect("wait").expect("exists");
    assert_eq!(record.status, TaskStatus::Success);
    let late = woken.saturating_duration_since(stored);
    assert!(
        late < Duration::from_millis(100),
        "woken {late:?} after the result was stored"
    );
    stop.cancel();
}
on_both!(a_wait_on_another_gateway_wakes_at_once);

// A notice published while the subscription is down is not waited for in vain: the
// re-subscription wakes every waiter to read the store once.
async fn a_notice_lost_while_unsubscribed_is_recovered(infra: Infra) {
    let stop = CancellationToken::new();
    let gateway = infra.gateway("gw-lost", &stop).await;
    let intake = infra.intake().await;
    let expectation = gateway.clone().expect("c2-lost", 1, None);
    intake
        .admit(&task("c2-lost", Some("gw-lost")), 1, None)
        .await
        .expect("admit");
    let waiter = tokio::spawn(expectation.wait(Duration::from_secs(30)));
    // Let the subscription come up, then take it down and publish into the gap.
    tokio::time::sleep(Duration::from_millis(300)).await;
    infra.kill_subscriptions();
    let store = infra.store(Duration::from_secs(60)).await;
    store
        .complete(vec![done(
            "c2-lost",
            Outcome::Success("out".into()),
            Some("gw-lost"),
        )])
        .await
        .expect("store");
    let started = Instant::now();
    let record = waiter.await.expect("join").expect("wait").expect("exists");
    assert_eq!(record.status, TaskStatus::Success);
    assert_eq!(record.output_text(), Some("out"));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "recovered only after {:?}",
        started.elapsed()
    );
    stop.cancel();
}
on_both!(a_notice_lost_while_unsubscribed_is_recovered);

// A process that is gateway and batcher at once (`serve` on Redis) wakes its own waiters when
// it has stored their results, without publishing their notices to Redis and reading them
// back: here its subscription never runs, so only the direct hand-over can wake them. A task
// that was a SUCCESS already keeps that first result, and its waiter is handed that one; a
// result for another gateway is still published. (A cluster settles through the script,
// which publishes every notice.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateways_own_results_are_handed_over_without_a_notice_through_redis() {
    let infra = Infra::standalone().await;
    let notifier = Arc::new(Notifier::default());
    let gateway = Arc::new(RedisResultStore::new(
        infra.conn().await,
        infra.keys.clone(),
        Duration::from_secs(60),
        infra.config.op_timeout,
        Some((notifier.clone(), "gw-here".to_owned())),
        false,
    ));
    let queue = infra
        .queue("here", |_| {})
        .await
        .with_local_gateway(notifier, "gw-here".to_owned());
    let fresh = gateway.clone().expect("e5-fresh", 1, None);
    let again = gateway.clone().expect("e5-again", 1, None);
    let intake = infra.intake().await;
    for (id, reply_to) in [
        ("e5-fresh", "gw-here"),
        ("e5-again", "gw-here"),
        ("e5-far", "gw-far"),
    ] {
        intake
            .admit(&task(id, Some(reply_to)), 1, None)
            .await
            .expect("admit");
    }
    // A SUCCESS stored before (a task computed twice) by a store of no gateway: its notice is
    // published to nobody listening.
    let other = infra.store(Duration::from_secs(60)).await;
    other
        .complete(vec![done(
            "e5-again",
            Outcome::Success("first".into()),
            Some("gw-here"),
        )])
        .await
        .expect("first result");
    let got = read_n(&queue, 3, Duration::from_secs(5)).await;
    reset_stats(&infra);
    let receipts: Vec<_> = got.iter().map(|d| d.receipt.clone()).collect();
    queue
        .settle(
            &other,
            vec![
                done("e5-fresh", Outcome::Success("out".into()), Some("gw-here")),
                done(
                    "e5-again",
                    Outcome::Success("second".into()),
                    Some("gw-here"),
                ),
                done("e5-far", Outcome::Success("far".into()), Some("gw-far")),
            ],
            &receipts,
        )
        .await
        .expect("settle");
    let fresh = fresh.wait(Duration::from_secs(5)).await.expect("wait");
    let fresh = fresh.expect("exists");
    assert_eq!(fresh.status, TaskStatus::Success);
    assert_eq!(fresh.output_text(), Some("out"));
    let again = again.wait(Duration::from_secs(5)).await.expect("wait");
    assert_eq!(again.expect("exists").output_text(), Some("first"));
    assert_eq!(calls(&infra, &["publish"]), 1, "one PUBLISH, gw-far's");
}

// Typed outputs go through the settle script, the stored record and the notice as they are:
// a vector comes back as the same floats, bytes as the same bytes (not JSON text).
async fn typed_outputs_come_back_through_the_record_and_the_notice(infra: Infra) {
    let stop = CancellationToken::new();
    let gateway = infra.gateway("gw-typed", &stop).await;
    let intake = infra.intake().await;
    let vector = Output::Vector(vec![0.25, -1.5, 3.0e-3, f32::MAX]);
    let expectation = gateway.clone().expect("d3-vec", 1, None);
    intake
        .admit(&task("d3-vec", Some("gw-typed")), 1, None)
        .await
        .expect("admit");
    let waiter = tokio::spawn(expectation.wait(Duration::from_secs(30)));
    let store = infra.store(Duration::from_secs(60)).await;
    let bytes = Output::Bytes(vec![0xFF, b';', 0, b'S']);
    store
        .complete(vec![
            done("d3-vec", Outcome::Success(vector.clone()), Some("gw-typed")),
            done("d3-bin", Outcome::Success(bytes.clone()), None),
        ])
        .await
        .expect("store");
    let noticed = waiter.await.expect("join").expect("wait").expect("exists");
    assert_eq!(noticed.output.as_ref(), Some(&vector), "through the notice");
    let read = store.get("d3-vec").await.expect("get").expect("exists");
    assert_eq!(read.output.as_ref(), Some(&vector), "through the record");
    let read = store.get("d3-bin").await.expect("get").expect("exists");
    assert_eq!(read.output.as_ref(), Some(&bytes));
    stop.cancel();
}
on_both!(typed_outputs_come_back_through_the_record_and_the_notice);

/// Script calls (`EVALSHA`, `EVAL`) every node ran since its counters were reset.
fn script_calls(infra: &Infra) -> u64 {
    calls(infra, &["evalsha", "eval"])
}

/// Calls of the commands `names` every node ran since its counters were reset.
fn calls(infra: &Infra, names: &[&str]) -> u64 {
    let nodes: Vec<&RedisServer> = match &infra.servers {
        Servers::Standalone(s) => vec![s],
        Servers::Cluster(c) => c.nodes.iter().collect(),
    };
    let calls = |stats: &str, name: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0)
    };
    nodes
        .iter()
        .map(|n| {
            let stats = n.cli(&["INFO", "commandstats"]).unwrap_or_default();
            names.iter().map(|name| calls(&stats, name)).sum::<u64>()
        })
        .sum()
}

fn reset_stats(infra: &Infra) {
    let nodes: Vec<&RedisServer> = match &infra.servers {
        Servers::Standalone(s) => vec![s],
        Servers::Cluster(c) => c.nodes.iter().collect(),
    };
    for node in nodes {
        node.cli(&["CONFIG", "RESETSTAT"]);
    }
}

/// How many nodes serve partitions: 1 standalone, the masters of a cluster.
fn masters(infra: &Infra) -> u64 {
    match &infra.servers {
        Servers::Standalone(_) => 1,
        Servers::Cluster(c) => (c.nodes.len() / 2) as u64,
    }
}

// Settling (and admission, which groups by the same map) is paid per node, not per partition:
// a batch spread over every partition is settled with one script call per node.
async fn one_call_per_node_admits_and_settles(infra: Infra) {
    let intake = infra.intake().await;
    let q = infra.queue("per-node", |_| {}).await;
    let store = infra.store(Duration::from_secs(60)).await;
    let ids = |round: &str| -> Vec<String> {
        (0..32u32)
            .map(|i| format!("{:02x}-{round}-{i}", i % 16))
            .collect()
    };
    let admit_all = |ids: Vec<String>| {
        let intake = intake.clone();
        async move {
            let admits = ids.iter().map(|id| {
                let intake = intake.clone();
                let t = task(id, None);
                async move { intake.admit(&t, 1, None).await }
            });
            for admitted in futures_util::future::join_all(admits).await {
                assert!(
                    matches!(admitted, Ok(Admitted::Enqueued { .. })),
                    "{admitted:?}"
                );
            }
        }
    };
    let settle_all = |n: usize| {
        let (q, store) = (&q, &store);
        async move {
            let got = read_n(q, n, Duration::from_secs(10)).await;
            assert_eq!(got.len(), n);
            let completions = got
                .iter()
                .map(|d| done(&d.task.task_id, Outcome::Success("o".into()), None))
                .collect();
            let receipts: Vec<_> = got.iter().map(|d| d.receipt.clone()).collect();
            q.settle(store, completions, &receipts)
                .await
                .expect("settle");
        }
    };
    // Warm up: every node learns the scripts.
    admit_all(ids("warm")).await;
    settle_all(32).await;
    // How many groups the 32 admissions form depends on timing (a 2 ms gathering window), so
    // the count is taken where it does not: one settle of all 32, which groups by node with
    // the same map as admission.
    admit_all(ids("measured")).await;
    reset_stats(&infra);
    settle_all(32).await;
    let settled = script_calls(&infra);
    assert!(
        (1..=masters(&infra)).contains(&settled),
        "{settled} settle calls for 32 tasks"
    );
    assert_eq!(stream_totals(&infra).await, (0, 0));
    for id in ids("measured") {
        let r = store.get(&id).await.expect("get").expect("stored");
        assert_eq!(r.status, TaskStatus::Success, "{id}");
    }
}
on_both!(one_call_per_node_admits_and_settles);

// A process that is gateway and batcher reads the groups its own intake admitted from the
// copy the intake kept, without fetching their messages back from Redis; a group another
// intake admitted is fetched (one `GET`). Each phase admits one task into an empty stream,
// so the admission script reads nothing, and every `GET` counted is a fetch.
async fn own_groups_are_read_without_fetching_their_messages(infra: Infra) {
    let own = infra.intake().await;
    let queue = infra
        .queue("own", |_| {})
        .await
        .with_local_groups(own.local_groups());
    // The reads start, and with them the intake keeps what it admits.
    let none = queue
        .read(1, Duration::from_millis(10))
        .await
        .expect("read");
    assert!(none.is_empty());
    let other = infra.intake().await;
    for (intake, id, fetches) in [(&own, "6c-own", 0), (&other, "6c-other", 1)] {
        reset_stats(&infra);
        intake.admit(&task(id, None), 1, None).await.expect("admit");
        let got = read_n(&queue, 1, Duration::from_secs(5)).await;
        assert_eq!(got.len(), 1, "{id} read");
        assert_eq!(got[0].task.task_id, id);
        assert_eq!(got[0].task.input, format!("input of {id}"));
        assert_eq!(calls(&infra, &["get"]), fetches, "fetches for {id}");
        // Acknowledged and deleted: the next phase's stream is empty again.
        queue.ack(&[got[0].receipt.clone()]).await.expect("ack");
        assert_eq!(stream_totals(&infra).await, (0, 0));
    }
}
on_both!(own_groups_are_read_without_fetching_their_messages);

/// The masters serving slots, from `CLUSTER NODES`: `(node id, slot ranges)`.
fn cluster_masters(node: &RedisServer) -> Vec<(String, Vec<(u16, u16)>)> {
    let nodes = node.cli(&["CLUSTER", "NODES"]).unwrap_or_default();
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if !fields.get(2)?.contains("master") {
                return None;
            }
            let ranges = fields[8..]
                .iter()
                .filter_map(|r| {
                    let (lo, hi) = r.split_once('-').unwrap_or((r, r));
                    Some((lo.parse().ok()?, hi.parse().ok()?))
                })
                .collect();
            Some((fields[0].to_owned(), ranges))
        })
        // A node that has just joined as a replica may still show as a master without slots.
        .filter(|(_, ranges): &(String, Vec<(u16, u16)>)| !ranges.is_empty())
        .collect()
}

/// Admits a task for each of `ids` at once (one gathered group, as timing allows) and checks
/// that each is enqueued.
async fn admit_together(intake: &RedisIntake, ids: &[String]) {
    let admits = ids.iter().map(|id| {
        let intake = intake.clone();
        let t = task(id, None);
        async move { intake.admit(&t, 1, None).await }
    });
    for (id, admitted) in ids.iter().zip(futures_util::future::join_all(admits).await) {
        assert!(
            matches!(admitted, Ok(Admitted::Enqueued { .. })),
            "{id}: {admitted:?}"
        );
    }
}

/// Whether `ranges` hold `slot`.
fn owns(ranges: &[(u16, u16)], slot: u16) -> bool {
    ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&slot))
}

/// Moves `slot` to another master as a resharding does: importing and migrating, its keys
/// moved with `MIGRATE`, then the new owner first (it takes a new config epoch), the old one,
/// then the rest; returns once every node agrees. Returns the ids of the old and new owners.
async fn move_slot(cluster: &RedisCluster, slot: u16) -> (String, String) {
    let masters = cluster_masters(&cluster.nodes[0]);
    let (source, _) = masters
        .iter()
        .find(|(_, r)| owns(r, slot))
        .expect("the slot's master")
        .clone();
    let (target, _) = masters
        .iter()
        .find(|(id, _)| *id != source)
        .expect("another master")
        .clone();
    let id_of = |n: &RedisServer| {
        n.cli(&["CLUSTER", "MYID"])
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let mut order: Vec<&RedisServer> = cluster.nodes.iter().collect();
    order.sort_by_key(|n| {
        let id = id_of(n);
        if id == target {
            0
        } else if id == source {
            1
        } else {
            2
        }
    });
    let slot_arg = slot.to_string();
    order[0].cli(&["CLUSTER", "SETSLOT", &slot_arg, "IMPORTING", &source]);
    order[1].cli(&["CLUSTER", "SETSLOT", &slot_arg, "MIGRATING", &target]);
    let keys = order[1]
        .cli(&["CLUSTER", "GETKEYSINSLOT", &slot_arg, "1000"])
        .unwrap_or_default();
    let keys: Vec<&str> = keys
        .lines()
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .collect();
    if !keys.is_empty() {
        let url = order[0].url();
        let port = url.rsplit(':').next().expect("a port").to_owned();
        let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
        args.extend(keys.iter().copied());
        let migrated = order[1].cli(&args).unwrap_or_default();
        assert!(migrated.contains("OK"), "MIGRATE answered {migrated:?}");
    }
    for (i, node) in order.into_iter().enumerate() {
        node.cli(&["CLUSTER", "SETSLOT", &slot_arg, "NODE", &target]);
        if i == 0 {
            // Its claim must win over the old owner's in the gossip.
            node.cli(&["CLUSTER", "BUMPEPOCH"]);
        }
    }
    // Until every node agrees (gossip), as a resharding tool waits.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cluster.nodes.iter().all(|n| {
        cluster_masters(n)
            .iter()
            .any(|(id, r)| *id == target && owns(r, slot))
    }) {
        assert!(
            Instant::now() < deadline,
            "the cluster never agreed on the move of slot {slot} from {source} to {target}: {:?}",
            cluster
                .nodes
                .iter()
                .map(|n| n.cli(&["CLUSTER", "NODES"]))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (source, target)
}

// A partition's slot moves to another master while an intake still holds the old map: the
// tasks of the group that met a key of another node are written again by the new map, and
// none is refused; the next settle finds the results' new node too.
async fn a_slot_that_moved_refuses_no_admission(infra: Infra) {
    let Servers::Cluster(cluster) = &infra.servers else {
        unreachable!("cluster only");
    };
    let intake = infra.intake().await;
    let q = infra.queue("after-move", |_| {}).await;
    let store = infra.store(Duration::from_secs(60)).await;
    // The intake reads the map with its first group.
    assert!(matches!(
        intake.admit(&task("00-warm", None), 1, None).await,
        Ok(Admitted::Enqueued { .. })
    ));
    // Move partition 5's (empty) slot to another master.
    let moved = 5;
    let slot = infra.keys.partition_slot(moved);
    let masters = cluster_masters(&cluster.nodes[0]);
    let (source, _) = move_slot(cluster, slot).await;
    // Tasks of the moved partition and of the partitions still on its old master, in one group.
    let stay: Vec<usize> = (0..infra.keys.partitions())
        .filter(|&p| {
            p != moved
                && masters
                    .iter()
                    .any(|(id, r)| *id == source && owns(r, infra.keys.partition_slot(p)))
        })
        .collect();
    assert!(!stay.is_empty());
    let ids: Vec<String> = [moved, stay[0], moved, stay[stay.len() - 1]]
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{p:02x}-moved-{i}"))
        .collect();
    admit_together(&intake, &ids).await;
    // The settle may meet the move once (its entries stay pending), then finds the new node.
    let got = read_n(&q, 5, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 5);
    let completions: Vec<Completion> = got
        .iter()
        .map(|d| done(&d.task.task_id, Outcome::Success("o".into()), None))
        .collect();
    let receipts: Vec<_> = got.iter().map(|d| d.receipt.clone()).collect();
    if q.settle(&store, completions.clone(), &receipts)
        .await
        .is_err()
    {
        q.settle(&store, completions, &receipts)
            .await
            .expect("settled by the map read again");
    }
    for id in &ids {
        let r = store.get(id).await.expect("get").expect("stored");
        assert_eq!(r.status, TaskStatus::Success, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_that_moved_refuses_no_admission_on_a_cluster() {
    a_slot_that_moved_refuses_no_admission(Infra::cluster().await).await;
}

// One admission call puts the tasks of several partitions of a node in one stream entry.
// When the slot of one of their records moves to another master before the settle, the
// results are written before, and apart from, the acknowledgement: a result the new owner
// refuses leaves the entry pending, to be delivered again, never acknowledged without it.
async fn an_entry_waits_for_its_results_on_a_moved_slot(infra: Infra) {
    let Servers::Cluster(cluster) = &infra.servers else {
        unreachable!("cluster only");
    };
    let intake = infra.intake().await;
    let q = infra.queue("apart", |_| {}).await;
    let store = infra.store(Duration::from_secs(60)).await;
    // Two partitions of one master.
    let masters = cluster_masters(&cluster.nodes[0]);
    let master_of = |p: usize| {
        let slot = infra.keys.partition_slot(p);
        masters.iter().position(|(_, r)| owns(r, slot))
    };
    let p1 = 0;
    let p2 = (1..infra.keys.partitions())
        .find(|&p| master_of(p) == master_of(p1))
        .expect("two partitions on one master");
    // Admitted together: one call, hence one entry.
    let ids: Vec<String> = (0..16)
        .map(|i| format!("{:02x}-apart-{i}", if i % 2 == 0 { p1 } else { p2 }))
        .collect();
    admit_together(&intake, &ids).await;
    let got = read_n(&q, ids.len(), Duration::from_secs(10)).await;
    assert_eq!(got.len(), ids.len());
    let crossing = got
        .iter()
        .find(|d| d.receipt.partition != infra.keys.partition_of(&d.task.task_id))
        .expect("an entry holding tasks of two partitions");
    let mut entries: Vec<_> = got.iter().map(|d| d.receipt.clone()).collect();
    entries.sort_by(|a, b| (a.partition, &a.entry_id).cmp(&(b.partition, &b.entry_id)));
    entries.dedup();
    // Its record's slot moves, record and all, to a master that then refuses writes (it has
    // one replica; two are asked for).
    let record_slot = infra
        .keys
        .partition_slot(infra.keys.partition_of(&crossing.task.task_id));
    let (_, target) = move_slot(cluster, record_slot).await;
    let new_owner = cluster
        .nodes
        .iter()
        .find(|n| n.cli(&["CLUSTER", "MYID"]).unwrap_or_default().trim() == target)
        .expect("the new owner");
    new_owner.cli(&["CONFIG", "SET", "min-replicas-to-write", "2"]);
    let completions: Vec<Completion> = got
        .iter()
        .map(|d| done(&d.task.task_id, Outcome::Success("o".into()), None))
        .collect();
    let receipts: Vec<_> = got.iter().map(|d| d.receipt.clone()).collect();
    let settled = q.settle(&store, completions.clone(), &receipts).await;
    assert!(
        settled.is_err(),
        "a settle whose result was refused succeeded"
    );
    assert_eq!(
        stream_totals(&infra).await.1,
        entries.len(),
        "an entry was acknowledged while a result of it was not written"
    );
    let moved = store
        .get(&crossing.task.task_id)
        .await
        .expect("get")
        .expect("pending");
    assert_eq!(moved.status, TaskStatus::Pending);
    // Once the node takes writes again, the results are written; the entries, given up by
    // the failed settle, stay pending for a claimer, which runs them again.
    new_owner.cli(&["CONFIG", "SET", "min-replicas-to-write", "0"]);
    q.settle(&store, completions, &receipts)
        .await
        .expect("settled once the node takes writes");
    for id in &ids {
        let r = store.get(id).await.expect("get").expect("stored");
        assert_eq!(r.status, TaskStatus::Success, "{id}");
    }
    assert_eq!(stream_totals(&infra).await.1, entries.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_waits_for_its_results_on_a_moved_slot_on_a_cluster() {
    an_entry_waits_for_its_results_on_a_moved_slot(Infra::cluster().await).await;
}
