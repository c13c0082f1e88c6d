#!/usr/bin/env python3
"""Instructions redis-server spends per admitted task, counted with callgrind (repeatable,
unlike CPU time on a shared machine), for an admission script and the argument layout it
takes.

    scripts/redis-admit-instructions.py LAYOUT=SCRIPT [LAYOUT=SCRIPT ...] [--tasks 16] [--calls 100]

LAYOUT is how the script is called:
  per-task  ARGV: capacity, TTLs, then six per task (stream, record, dedupe key, task
            message, id, pending record); one XADD per task (the layout before groups)
  framed    the same six per task, the message framed by its 4-byte length (the script joins
            a partition's messages into one entry)
  stored    the messages of a partition stored first as one string (SET … PX), then ARGV:
            capacity, TTLs, then per partition its stream, that string's key, the task
            count and four per task (record, dedupe key, id, pending record): the layout of
            crates/redis-backend/src/lua/admit.lua until its pending records lost their TTL
  standalone  the same, but ARGV[2] is '1' (a standalone Redis: the script writes the
            pending records, without a TTL, in one MSET): the layout of
            crates/redis-backend/src/lua/admit.lua until entries carried their gathering wait
  waited    the same, with the wait (ms) after each partition's task count: the layout of
            crates/redis-backend/src/lua/admit.lua now

Each run starts a fresh redis-server under `valgrind --tool=callgrind` on a free loopback
port, makes CALLS calls of TASKS distinct 2,100-byte tasks (all new, dedupe on, one
partition), shuts the server down and reads the total instruction count; an idle server
(started, pinged, shut down) is subtracted. Needs valgrind and the Python `redis` package.

e.g. (the scripts of earlier commits, from git):
    git show 2c9ad1f:crates/redis-backend/src/lua/admit.lua > /tmp/admit-per-task.lua
    git show 4031a3c:crates/redis-backend/src/lua/admit.lua > /tmp/admit-framed.lua
    scripts/redis-admit-instructions.py per-task=/tmp/admit-per-task.lua \\
        framed=/tmp/admit-framed.lua stored=crates/redis-backend/src/lua/admit.lua
"""
import argparse
import random
import struct

from redis_callgrind import counted_redis


def run(layout, script, tasks, calls, messages):
    with counted_redis() as (r, total):
        if script:
            sha = r.script_load(open(script).read())
            n = 0
            for call in range(calls):
                head = [100_000, "1" if layout in ("standalone", "waited") else 600_000, 300_000]
                per, group = [], []
                for _ in range(tasks):
                    n += 1
                    tid = f"00-{n:08d}"
                    msg = messages[n % len(messages)]
                    framed = struct.pack(">I", len(msg)) + msg
                    rec, ded = f"bg:{{p00}}:rec:{tid}", f"bg:{{p00}}:dedupe:{n:064d}"
                    if layout == "per-task":
                        per += ["bg:{p00}:tasks", rec, ded, msg, tid, "P1;0;"]
                    elif layout == "framed":
                        per += ["bg:{p00}:tasks", rec, ded, framed, tid, "P1;0;"]
                    else:
                        group.append(framed)
                        per += [rec, ded, tid, "P1;0;"]
                if layout in ("stored", "standalone", "waited"):
                    key = f"bg:{{p00}}:g:{call}"
                    r.set(key, b"".join(group), px=600_000)
                    head += ["bg:{p00}:tasks", key, tasks]
                    if layout == "waited":
                        head.append(10)
                replies = r.evalsha(sha, 1, "bg:{p00}:tasks", *(head + per))
                # Tables of ["ok"] (earlier scripts), flat "o" strings, or (now) one string,
                # a line a task.
                if isinstance(replies, bytes):
                    replies = replies.split(b"\n")
                assert all(x == b"o" or (isinstance(x, list) and x[0] == b"ok") for x in replies), replies[:3]
    return total()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", metavar="LAYOUT=SCRIPT")
    ap.add_argument("--tasks", type=int, default=16)
    ap.add_argument("--calls", type=int, default=100)
    a = ap.parse_args()
    rng = random.Random(1)
    messages = [bytes(rng.getrandbits(8) for _ in range(2100)) for _ in range(64)]
    idle = run("idle", None, 0, 0, messages)
    for spec in a.runs:
        layout, script = spec.split("=", 1)
        if layout not in ("per-task", "framed", "stored", "standalone", "waited"):
            raise SystemExit(f"unknown layout {layout!r}")
        total = run(layout, script, a.tasks, a.calls, messages)
        per_task = (total - idle) / (a.tasks * a.calls)
        print(f"{layout:10s} {script}: {per_task:,.0f} instructions per task")


if __name__ == "__main__":
    main()
