#!/usr/bin/env python3
"""Markdown tables of scripts/bench-shapes.sh runs.

    scripts/bench-shapes-summary.py OUT*            (files; a bare OUT prefix also works)

Reads the `METRICS {json}` line of every OUT-SHAPE-RATE-N.txt given (other files are skipped)
and prints, per shape and rate, the median of the runs and the spread (min-max):
  1. cost and latency: ok/s, errors, p50, p99, p99.9, CPU µs/request of batchgate (serve, or
     gateways + batchers), of the simulated worker (split and cluster; in embedded and redis it
     runs inside serve and is in batchgate), of redis-server (all nodes) and of the bench;
     then the same servers' CPU per µs of the bench's CPU in the same run: for two builds of
     one shape the bench's work per request is the same, so this ratio takes out a machine
     whose speed drifts between runs (compare builds by it when their µs/req spreads overlap;
     not shapes: the bench's own CPU per request differs between shapes, e.g. by how its
     answers bunch);
  2. Redis per request: round trips (total_reads_processed), commands (INFO commandstats) split
     into top-level (EVAL/EVALSHA/FCALL + commands sent directly) and script-internal (from the
     MONITOR sample; "-" without one), total_commands_processed (which, in Redis 7.0, counts
     script-internal calls too), and for the cluster what the replicas applied;
  3. Redis's time in commands per request, by command name (INFO commandstats usec; a
     script's or an EXEC's includes the commands it ran), and the commands per request by
     command name (medians).
For the cluster, Redis per-request counts are the masters' (what clients sent).
"""
import glob
import json
import os
import statistics
import sys

SHAPES = ["embedded", "embedded-worker", "redis", "redis-worker", "split", "cluster"]


def load(args):
    files = []
    for a in args:
        if os.path.isfile(a):
            files.append(a)
        else:
            files.extend(sorted(glob.glob(a + "*.txt")))
    runs = []
    for f in files:
        if not f.endswith(".txt"):
            continue
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("METRICS "):
                    m = json.loads(line[len("METRICS "):])
                    m["_file"] = f
                    per_bench(m)
                    runs.append(m)
    return runs


def per_bench(m):
    """Adds each server's CPU per µs of the bench's CPU in the run, under `per_bench`."""
    cpu = m.get("us_per_req") or {}
    bench = cpu.get("bench")
    if not bench:
        return
    m["per_bench"] = {
        name: cpu[name] / bench
        for name in ("batchgate", "batchgate_and_worker", "redis")
        if cpu.get(name) is not None
    }


def get(m, path):
    for key in path.split("."):
        if m is None:
            return None
        m = m.get(key)
    return m


def by_name(ms, path):
    """The values of the dict at `path` in each run's metrics, by key."""
    values = {}
    for m in ms:
        for name, v in (get(m, path) or {}).items():
            values.setdefault(name, []).append(v)
    return values


def medians(values, runs):
    """(name, median) largest first, a run without the name counting as 0."""
    meds = [(name, statistics.median(vs + [0.0] * (runs - len(vs)))) for name, vs in values.items()]
    return sorted(meds, key=lambda nm: -nm[1])


def cell(values, digits):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1 or min(values) == max(values):
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def table(title, columns, groups):
    print(f"### {title}\n")
    print("| shape | rate/s | runs | " + " | ".join(name for name, _, _ in columns) + " |")
    print("|---|---:|---:|" + "---:|" * len(columns))
    for (shape, rate), ms in groups:
        cells = [cell([get(m, path) for m in ms], digits) for _, path, digits in columns]
        missing = sum(1 for m in ms if not m.get("window"))
        runs = f"{len(ms)}" + (f" ({missing} without window)" if missing else "")
        print(f"| {shape} | {rate:g} | {runs} | " + " | ".join(cells) + " |")
    print()


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    runs = load(sys.argv[1:])
    if not runs:
        sys.exit("no bench-shapes runs (OUT-SHAPE-RATE-N.txt with a METRICS line) in the arguments")
    by = {}
    for m in runs:
        by.setdefault((m["shape"], m["rate"]), []).append(m)
    order = lambda k: (SHAPES.index(k[0]) if k[0] in SHAPES else len(SHAPES), k[0], k[1])
    groups = [(k, by[k]) for k in sorted(by, key=order)]
    print("Median of the runs, (min–max) when they differ. CPU in µs per request sent in the "
          "measured window.\n")
    table("Throughput, latency, CPU per request", [
        ("ok/s", "ok_per_s", 0),
        ("errors", "errors", 0),
        ("p50 ms", "p50_ms", 1),
        ("p99 ms", "p99_ms", 1),
        ("p99.9 ms", "p999_ms", 1),
        ("batchgate µs/req", "us_per_req.batchgate", 1),
        ("worker µs/req", "us_per_req.worker", 1),
        ("redis µs/req", "us_per_req.redis", 1),
        ("bench µs/req", "us_per_req.bench", 1),
    ], groups)
    table("CPU per µs of the bench's CPU in the same run (the drift taken out: compare builds, "
          "not shapes)", [
        ("batchgate", "per_bench.batchgate", 3),
        ("batchgate and worker", "per_bench.batchgate_and_worker", 3),
        ("redis", "per_bench.redis", 3),
    ], groups)
    redis_groups = [(k, ms) for k, ms in groups if any(m.get("redis") for m in ms)]
    if not redis_groups:
        return
    columns = [
        ("round trips/req", "redis.round_trips_per_req", 2),
        ("commands/req", "redis.commandstats_per_req", 2),
        ("top-level/req", "redis.top_level_per_req", 2),
        ("script-internal/req", "redis.script_internal_per_req", 2),
        ("scripts run/req", "redis.script_invocations_per_req", 2),
        ("total_commands_processed/req", "redis.commands_processed_per_req", 2),
    ]
    if any(get(m, "redis.replica_commands_per_req") is not None for _, ms in redis_groups for m in ms):
        columns += [("redis masters µs/req", "us_per_req.redis_master", 1),
                    ("redis replicas µs/req", "us_per_req.redis_replica", 1),
                    ("replica-applied commands/req", "redis.replica_commands_per_req", 2)]
    table("Redis per request (cluster: the masters; replicas apart)", columns, redis_groups)
    print("### Redis time in commands, µs per request (median of the runs)\n")
    print("Redis's own per-command timer (INFO commandstats usec): a script's or an EXEC's time")
    print("includes the commands it ran, which are also counted under their own names; the rest")
    print("of Redis's CPU is reading, parsing and answering.\n")
    for (shape, rate), ms in redis_groups:
        times = by_name(ms, "redis.per_command_usec_per_req")
        parts = [f"{name} {med:.2f}" for name, med in medians(times, len(ms)) if med >= 0.01]
        if parts:
            print(f"- **{shape} {rate:.0f}/s**: " + ", ".join(parts))
    print()
    print("### Redis commands per request, by command (median of the runs)\n")
    for (shape, rate), ms in redis_groups:
        names = by_name(ms, "redis.per_command_per_req")
        internal = by_name(ms, "redis.per_command_internal_per_req")
        parts = []
        for name, med in medians(names, len(ms)):
            if med < 0.001:
                continue
            s = f"{name} {med:.3f}"
            if name in internal:
                s += f" ({statistics.median(internal[name]):.3f} from scripts)"
            parts.append(s)
        print(f"- **{shape} {rate:g}/s**: " + ", ".join(parts))
    print()


if __name__ == "__main__":
    main()
