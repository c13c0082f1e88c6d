//! Every Redis key and channel batchgate uses, built in one place.
//!
//! `{prefix}:{pNN}:tasks`        stream of partition NN (an entry holds one task or a group)
//! `{prefix}:{pNN}:zone:{z}:tasks` the same for the tasks that entered in zone z (`--zone`):
//!                               each zone has its own streams (and their `:n` counts);
//!                               records, dedupe entries and notices are shared
//! `{prefix}:{pNN}:tasks:n`      tasks in that stream (entries hold several): the capacity
//!                               bound and the depth; the scripts that add and remove
//!                               entries keep it, and reset it whenever the stream is empty
//! `{prefix}:{pNN}:g:{name}`     the task messages of a group entry of partition NN (one
//!                               string; the entry names it, and goes with it)
//! `{prefix}:{pNN}:rec:{id}`     record of a task of partition NN (one string, see `record`)
//! `{prefix}:{pNN}:dedupe:{sha}` dedupe entry of an input whose hash starts with partition NN
//! `{prefix}:dlq`                dead-letter stream
//! `{prefix}:notify:{gateway}`   pub/sub channel of one gateway (standalone Redis)
//! `{prefix}:{pNN}:notify:{gw}`  sharded pub/sub channel of one gateway for partition NN
//!                               (Redis Cluster: `SPUBLISH` stays on the partition's node)
//! `{prefix}:alive:{consumer}`   a live batcher's heartbeat, renewed with its leases
//! `{prefix}:workers`            the batchers' reports of their workers' load (a hash)
//!
//! A task's partition is read from its id (its first byte), so any process can find a result
//! key from the id alone; with dedupe on, that byte is the input hash's, which puts the task's
//! result and dedupe entry on one slot. Its stream entry is on the same node, in the stream of
//! one of that node's partitions (`crate::intake`). A zone's streams carry the same hash tags,
//! so a zone changes no slot.

use batchgate_protocol::zone::Zone;

/// The consumer group every batcher joins.
pub const GROUP: &str = "batchers";

/// Partitions of a deployment on a Redis Cluster: enough to spread over its masters.
pub const DEFAULT_CLUSTER_PARTITIONS: usize = 16;
/// Partitions of a deployment on one standalone Redis: one stream serves every batcher (the
/// consumer group shares it out), and each batch's results are one script call.
pub const DEFAULT_STANDALONE_PARTITIONS: usize = 1;

/// The partition count that suits a topology.
pub fn default_partitions(cluster: bool) -> usize {
    if cluster {
        DEFAULT_CLUSTER_PARTITIONS
    } else {
        DEFAULT_STANDALONE_PARTITIONS
    }
}

/// Key names of one deployment, as one process sees them: its zone picks the streams it
/// writes and reads.
#[derive(Debug, Clone)]
pub struct Keys {
    /// Namespace, so several deployments can share one Redis.
    prefix: String,
    /// Hash tag of each partition, chosen for an even spread over the slot space.
    tags: Vec<String>,
    /// The zone whose streams this process uses; `None`: the streams without a zone.
    zone: Option<Zone>,
}

impl Keys {
    /// Keys under `prefix` for `partitions` partitions (at least 1).
    pub fn new(prefix: &str, partitions: usize) -> Self {
        let partitions = partitions.max(1);
        Keys {
            prefix: prefix.to_owned(),
            tags: (0..partitions)
                .map(|p| balanced_tag(p, partitions))
                .collect(),
            zone: None,
        }
    }

    /// The same keys for a process of `zone`: its streams are that zone's.
    pub fn in_zone(mut self, zone: Option<Zone>) -> Self {
        self.zone = zone;
        self
    }

    /// The zone whose streams these are.
    pub fn zone(&self) -> Option<&Zone> {
        self.zone.as_ref()
    }

    /// How many partitions there are.
    pub fn partitions(&self) -> usize {
        self.tags.len()
    }

    /// The partition a task id belongs to.
    pub fn partition_of(&self, task_id: &str) -> usize {
        let byte = task_id
            .get(..2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or_else(|| task_id.bytes().fold(0u8, |a, b| a.wrapping_add(b)));
        usize::from(byte) % self.tags.len()
    }

    /// The stream of partition `p` (of this process's zone).
    pub fn stream(&self, p: usize) -> String {
        match &self.zone {
            None => format!("{}:{{{}}}:tasks", self.prefix, self.tags[p]),
            Some(zone) => format!("{}:{{{}}}:zone:{zone}:tasks", self.prefix, self.tags[p]),
        }
    }

    /// The count of tasks in partition `p`'s stream. The scripts derive it from the stream's
    /// key (that key, then `:n`), so it shares the stream's slot.
    pub fn task_count(&self, p: usize) -> String {
        format!("{}:n", self.stream(p))
    }

    /// The messages of a group entry of partition `p`, under a name its writer chose.
    pub fn group(&self, p: usize, name: &str) -> String {
        self.tagged(p, "g", name)
    }

    /// The record of a task (its state and result).
    pub fn result(&self, task_id: &str) -> String {
        self.tagged(self.partition_of(task_id), "rec", task_id)
    }

    /// `{prefix}:{tag of p}:{kind}:{name}`, the pieces joined without the formatting
    /// machinery (records and dedupe entries are named a few times a task).
    fn tagged(&self, p: usize, kind: &str, name: &str) -> String {
        let tag = &self.tags[p];
        let mut key =
            String::with_capacity(self.prefix.len() + tag.len() + kind.len() + name.len() + 5);
        for piece in [&self.prefix, ":{", tag, "}:", kind, ":", name] {
            key.push_str(piece);
        }
        key
    }

    /// The task id at the end of a key [`Keys::result`] made; `None` for another key.
    pub(crate) fn task_of_result(key: &[u8]) -> Option<String> {
        let at = key.windows(6).rposition(|w| w == b"}:rec:")?;
        let id = std::str::from_utf8(&key[at + 6..]).ok()?;
        (!id.is_empty()).then(|| id.to_owned())
    }

    /// The dedupe entry of an input hash, in the partition its first byte names (the
    /// partition of the task that runs it, whose id starts with that byte).
    pub fn dedupe(&self, input_sha256: &str) -> String {
        self.tagged(self.partition_of(input_sha256), "dedupe", input_sha256)
    }

    /// Records the deployment's partition count, shared by every process of it.
    pub fn layout(&self) -> String {
        format!("{}:layout:partitions", self.prefix)
    }

    /// The dead-letter stream.
    pub fn dead_letter(&self) -> String {
        format!("{}:dlq", self.prefix)
    }

    /// The notification channel of one gateway on a standalone Redis.
    pub fn notify_channel(&self, gateway_id: &str) -> String {
        format!("{}{gateway_id}", self.notify_prefix(None))
    }

    /// What a gateway's notification channel starts with (its id follows): one channel per
    /// gateway on a standalone Redis (`None`), one per gateway and partition on a cluster,
    /// tagged like the partition, so that a batch's script publishes on its own slot.
    pub fn notify_prefix(&self, partition: Option<usize>) -> String {
        match partition {
            None => format!("{}:notify:", self.prefix),
            Some(p) => format!("{}:{{{}}}:notify:", self.prefix, self.tags[p]),
        }
    }

    /// A batcher's heartbeat: while it exists, the batcher lives and its entries are not
    /// claimed by others.
    pub fn alive(&self, consumer: &str) -> String {
        format!("{}:alive:{consumer}", self.prefix)
    }

    /// The batchers' load reports: one field per batcher.
    pub fn workers(&self) -> String {
        format!("{}:workers", self.prefix)
    }

    /// The cluster slot of partition `p`'s keys.
    pub fn partition_slot(&self, p: usize) -> u16 {
        slot(self.tags[p].as_bytes())
    }
}

/// A task's record or an input's dedupe entry as one argument of a command, written straight
/// into it: the name [`Keys::result`] or [`Keys::dedupe`] makes, without a `String` of its
/// own (admission writes two a task).
pub(crate) enum KeyArg<'a> {
    /// The record of this task id.
    Result(&'a Keys, &'a str),
    /// The dedupe entry of this input hash.
    Dedupe(&'a Keys, &'a str),
}

impl redis::ToRedisArgs for KeyArg<'_> {
    fn write_redis_args<W>(&self, out: &mut W)
    where
        W: ?Sized + redis::RedisWrite,
    {
        use std::io::Write;
        let (keys, kind, name) = match *self {
            KeyArg::Result(keys, id) => (keys, "rec", id),
            KeyArg::Dedupe(keys, hash) => (keys, "dedupe", hash),
        };
        let p = keys.partition_of(name);
        let mut arg = out.writer_for_next_arg();
        for piece in [&keys.prefix, ":{", &keys.tags[p], "}:", kind, ":", name] {
            // Writing into the command's buffer cannot fail.
            let _ = arg.write_all(piece.as_bytes());
        }
    }
}

/// A tag `pNN` or `pNN-k` whose cluster slot lies near the middle of the `p`-th of `n` equal
/// stripes of the slot space: the plain `{p00}`…`{p15}` land 4/5/7 on three masters, these
/// land as evenly as the masters' slot ranges allow, whatever their number.
fn balanced_tag(p: usize, n: usize) -> String {
    let stripe = 16384 / n;
    let middle = p * 16384 / n + stripe / 2;
    let lo = middle - stripe / 8;
    let hi = middle + stripe / 8 + 1;
    let plain = format!("p{p:02}");
    if (lo..hi).contains(&usize::from(slot(plain.as_bytes()))) {
        return plain;
    }
    (0..)
        .map(|k| format!("p{p:02}-{k}"))
        .find(|tag| (lo..hi).contains(&usize::from(slot(tag.as_bytes()))))
        .expect("some suffix lands in every stripe. This is a bug.")
}

/// Redis Cluster's key slot: CRC16/XMODEM modulo 16384.
pub fn slot(key: &[u8]) -> u16 {
    crc16(key) % 16384
}

fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_arguments_are_the_names_keys_make() {
        let keys = Keys::new("bg", 16);
        let hash = format!("7f{}", "0".repeat(62));
        let mut cmd = redis::cmd("X");
        cmd.arg(KeyArg::Result(&keys, "3c-task"))
            .arg(KeyArg::Dedupe(&keys, &hash));
        let args: Vec<Vec<u8>> = cmd
            .args_iter()
            .skip(1)
            .map(|a| match a {
                redis::Arg::Simple(bytes) => bytes.to_vec(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(
            args,
            vec![
                keys.result("3c-task").into_bytes(),
                keys.dedupe(&hash).into_bytes()
            ]
        );
    }

    #[test]
    fn crc16_matches_redis_reference_values() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"p00"), slot(b"p00"));
    }

    #[test]
    fn partitions_spread_evenly_over_three_masters() {
        let keys = Keys::new("bg", 16);
        let mut per_master = [0; 3];
        for tag in &keys.tags {
            let s = usize::from(slot(tag.as_bytes()));
            // redis-cli's default split of 16384 slots over 3 masters.
            per_master[if s <= 5460 {
                0
            } else if s <= 10922 {
                1
            } else {
                2
            }] += 1;
        }
        assert!(
            per_master.iter().all(|&n| (5..=6).contains(&n)),
            "{per_master:?}"
        );
    }

    #[test]
    fn a_result_shares_its_partition_stream_slot() {
        let keys = Keys::new("bg", 16);
        let id = "a3f0c2d1-0000-4000-8000-000000000000";
        let p = keys.partition_of(id);
        assert_eq!(p, 0xa3 % 16);
        let tag = |k: &str| k[k.find('{').expect("tag")..=k.find('}').expect("tag")].to_owned();
        assert_eq!(tag(&keys.result(id)), tag(&keys.stream(p)));
        let zoned = keys.clone().in_zone(Some("n".parse().expect("zone")));
        assert_eq!(tag(&zoned.stream(p)), tag(&keys.stream(p)), "same slot");
        assert_ne!(zoned.stream(p), keys.stream(p));
        assert_ne!(
            zoned.stream(p),
            keys.task_count(p),
            "a zone named n is not a count"
        );
        assert_ne!(zoned.task_count(p), keys.task_count(p));
    }
}
