#!/usr/bin/env python3
"""What redis-server's CPU costs per task for the keys the Redis path keeps, without batchgate:
the commands of N tasks written straight into a fresh redis-server with `redis-cli --pipe`
(one long pipeline, so no round trip is paid), redis-server's CPU (utime + stime from
/proc) divided by N.

    scripts/redis-floor.py [--tasks 152000] [--group 38] [--runs 3] [VARIANT ...]

Per group of GROUP tasks, every variant stores the group's messages as one string (GROUP ×
2,052 bytes, `SET … PX`), adds one stream entry naming it (`XADD`) and deletes the string once
settled (`DEL`); per task it writes the final record (`SET <record> … PX`, 600 s). The
variants add, cumulatively, what the design keeps besides:

  plain     nothing more
  records   the pending record of each admitted task (one `MSET` a group) and the settle's
            `GET` of the record it replaces (`SET … GET PX`), which keeps a first SUCCESS
  dedupe    the dedupe entry of each input (`SET <sha-256 key> <id> NX GET PX`, 300 s): the
            whole data model, as plain commands
  script    the same admission through crates/redis-backend/src/lua/admit.lua (one
            `EVALSHA` a group, as the gateway calls it on a standalone Redis), the settle's
            `SET … GET PX` as plain commands, as the batcher sends them

and one that is not cumulative, a data model the design does not use (for comparison):

  claimed   `records` with each pending record written by its own `SET <record> … NX GET`
            instead of the group's `MSET`: what admission would cost if a task's record were
            also its dedupe entry (a task named after its input), with no second key a task

The variants run in turn, RUNS rounds; each run has a fresh redis-server on a free loopback
port (--save "" --appendonly no), so the key count grows from zero to about 2 × TASKS, as in
a bench run. Prints each run, then the median (min–max) µs per task of each variant. Needs
redis-server and redis-cli.
"""
import argparse
import hashlib
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time

VARIANTS = ("plain", "records", "dedupe", "script", "claimed")
ADMIT_LUA = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "crates", "redis-backend", "src", "lua", "admit.lua"
)
MESSAGE = 2048  # bytes of a task's message, framed by 4 more


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, int):
            a = str(a)
        if isinstance(a, str):
            a = a.encode()
        out += [b"$%d\r\n" % len(a), a, b"\r\n"]
    return b"".join(out)


def commands(variant, tasks, group, sha):
    """The RESP bytes of `tasks` tasks in groups of `group`."""
    rnd = random.Random(1)
    created = 1_765_000_000_000
    stream = "bf:{p00}:tasks"
    blob = b"x" * ((MESSAGE + 4) * group)
    parts = []
    for g in range(tasks // group):
        ids = [f"{rnd.randrange(256):02x}-{rnd.getrandbits(120):030x}" for _ in range(group)]
        record = {i: f"bf:{{p00}}:rec:{i}" for i in ids}
        dedupe = {i: f"bf:{{p00}}:dedupe:{hashlib.sha256(i.encode()).hexdigest()}" for i in ids}
        pending = f"P{created};7;gateway"
        key = f"bf:{{p00}}:g:{g}"
        parts.append(resp("SET", key, blob, "PX", 600_000))
        if variant == "script":
            args = ["EVALSHA", sha, 1, stream, 100_000_000, "1", 300_000, stream, key, group, 10]
            for i in ids:
                args += [record[i], dedupe[i], i, pending]
            parts.append(resp(*args))
        else:
            if variant == "dedupe":
                for i in ids:
                    parts.append(resp("SET", dedupe[i], i, "NX", "GET", "PX", 300_000))
            parts.append(resp("XADD", stream, "*", "b", key, "n", group, "i", ",".join(ids)))
            if variant == "claimed":
                for i in ids:
                    parts.append(resp("SET", record[i], pending, "NX", "GET"))
            if variant in ("records", "dedupe"):
                mset = ["MSET"]
                for i in ids:
                    mset += [record[i], pending]
                parts.append(resp(*mset))
        for i in ids:
            final = f"S{created};7;gateway;{hashlib.sha256(i.encode()).hexdigest()}"
            if variant == "plain":
                parts.append(resp("SET", record[i], final, "PX", 600_000))
            else:
                parts.append(resp("SET", record[i], final, "GET", "PX", 600_000))
        parts.append(resp("DEL", key))
    return b"".join(parts)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(variant, path, tasks, workdir):
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        cli = ["redis-cli", "-p", str(port)]
        for _ in range(100):
            if subprocess.run(cli + ["PING"], capture_output=True, timeout=5).stdout.strip() == b"PONG":
                break
            time.sleep(0.05)
        else:
            raise SystemExit("redis-server did not answer")
        subprocess.run(cli + ["XGROUP", "CREATE", "bf:{p00}:tasks", "g", "$", "MKSTREAM"],
                       check=True, capture_output=True, timeout=5)
        with open(ADMIT_LUA, "rb") as script:
            subprocess.run(cli + ["-x", "SCRIPT", "LOAD"], stdin=script, check=True, capture_output=True,
                           timeout=5)
        before = cpu_secs(server.pid)
        with open(path, "rb") as f:
            piped = subprocess.run(cli + ["--pipe"], stdin=f, capture_output=True, timeout=600)
        after = cpu_secs(server.pid)
        if b"errors: 0" not in piped.stdout:
            raise SystemExit(f"{variant}: {piped.stdout.decode(errors='replace')[-300:]}")
        return (after - before) * 1e6 / tasks
    finally:
        server.terminate()
        server.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="*", default=list(VARIANTS), metavar="VARIANT")
    ap.add_argument("--tasks", type=int, default=152_000)
    ap.add_argument("--group", type=int, default=38)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    for v in a.variants:
        if v not in VARIANTS:
            raise SystemExit(f"unknown variant {v!r} (one of {', '.join(VARIANTS)})")
    with open(ADMIT_LUA, "rb") as f:
        sha = hashlib.sha1(f.read()).hexdigest()
    tasks = a.tasks // a.group * a.group
    results = {v: [] for v in a.variants}
    with tempfile.TemporaryDirectory(prefix="redis-floor-") as workdir:
        files = {}
        for v in a.variants:
            files[v] = os.path.join(workdir, f"{v}.resp")
            with open(files[v], "wb") as f:
                f.write(commands(v, tasks, a.group, sha))
        for r in range(a.runs):
            for v in a.variants:
                us = run(v, files[v], tasks, workdir)
                results[v].append(us)
                print(f"run {r + 1} {v:8s} {us:6.2f} µs a task", flush=True)
    print(f"\n{tasks} tasks in groups of {a.group}, median (min–max) of {a.runs} runs:")
    for v in a.variants:
        xs = results[v]
        print(f"  {v:8s} {statistics.median(xs):6.2f} µs a task ({min(xs):.2f}–{max(xs):.2f})")


if __name__ == "__main__":
    sys.exit(main())
