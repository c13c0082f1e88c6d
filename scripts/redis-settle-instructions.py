#!/usr/bin/env python3
"""Instructions redis-server spends per settled task, counted with callgrind (repeatable,
unlike CPU time on a shared machine), for a settle script and the argument layout it takes.

    scripts/redis-settle-instructions.py LAYOUT=SCRIPT [LAYOUT=SCRIPT ...] [--tasks 16] [--calls 100]

LAYOUT is how the script is called:
  notice   seven per completion: record key, status, output, completed_at, gateway, the
           notice as JSON, the record's head (the layout before the final record was built
           by the batcher)
  record   four per completion: record key, the final record whole (the head known),
           the head's length, gateway: every result through the script (how a cluster
           settles, and how a standalone Redis did before the transaction)
  transaction  what crates/redis-backend/src/settle.rs sends a standalone Redis: one
           MULTI/EXEC of a `SET key record GET PX` per success, the notices packed by the
           client (one PUBLISH per gateway), and SCRIPT with no completions, which
           acknowledges and deletes the entry

Each run starts a fresh redis-server under `valgrind --tool=callgrind` on a free loopback
port, and for each of CALLS batches of TASKS tasks stores their pending records and one
stream entry (as admission does), reads the entry with XREADGROUP, then settles the batch
(SUCCESS with a 64-byte output, one gateway to notify, the entry acknowledged and deleted);
a run that does all of it but the settle is subtracted. Needs valgrind and the Python
`redis` package.

e.g. (the script of an earlier commit, from git):
    git show 0eee576:crates/redis-backend/src/lua/settle.lua > /tmp/settle-notice.lua
    scripts/redis-settle-instructions.py notice=/tmp/settle-notice.lua \\
        record=crates/redis-backend/src/lua/settle.lua
"""
import argparse
import json
import struct

from redis_callgrind import counted_redis

HEAD = "1700000000000;5;alice"
COMPLETED = 1700000000123
STREAM = "bg:{p00}:tasks"


def completion(layout, tid, output):
    key = f"bg:{{p00}}:rec:{tid}"
    if layout == "notice":
        notice = json.dumps({"task_id": tid, "status": "SUCCESS", "output": output,
                             "completed_at": COMPLETED})
        return [key, "S", output, COMPLETED, "gw1", notice, HEAD]
    return [key, f"S{HEAD};{COMPLETED};{output}", len(HEAD), "gw1"]


def pack(items):
    """MessagePack array of strings, as the batcher packs a notice (notify.rs)."""
    out = bytearray([0x90 | len(items)] if len(items) < 16 else [0xdc, *struct.pack(">H", len(items))])
    for item in items:
        n = len(item)
        out += bytes([0xa0 | n]) if n < 32 else (bytes([0xd9, n]) if n < 256 else bytes([0xda]) + struct.pack(">H", n))
        out += item
    return bytes(out)


def run(layout, script, tasks, calls, settle):
    with counted_redis() as (r, total):
        sha = r.script_load(open(script).read())
        r.xgroup_create(STREAM, "batchers", id="0", mkstream=True)
        n = 0
        for call in range(calls):
            pipe = r.pipeline(transaction=False)
            ids = []
            for _ in range(tasks):
                n += 1
                tid = f"00-{n:032x}"
                ids.append(tid)
                pipe.set(f"bg:{{p00}}:rec:{tid}", "P" + HEAD, px=600_000)
            group = f"bg:{{p00}}:g:{call}"
            pipe.set(group, b"x" * 100, px=600_000)
            pipe.xadd(STREAM, {"b": group, "n": tasks})
            pipe.execute()
            entry = r.xreadgroup("batchers", "c1", {STREAM: ">"}, count=1)[0][1][0][0]
            if not settle:
                continue
            if layout == "transaction":
                pipe = r.pipeline(transaction=True)
                items = []
                for tid in ids:
                    key, record = completion("record", tid, f"{n:064x}")[:2]
                    pipe.execute_command("SET", key, record, "GET", "PX", 600_000)
                    items += [key.encode(), record.encode()]
                pipe.execute_command("PUBLISH", "bg:notify:gw1", pack(items))
                pipe.evalsha(sha, 1, STREAM, 600_000, "PUBLISH", "bg:notify:", "batchers", 0,
                             STREAM, 1, tasks, 1, entry, group)
                pipe.execute()
                continue
            args = [600_000, "PUBLISH", "bg:notify:", "batchers", tasks]
            for tid in ids:
                args += completion(layout, tid, f"{n:064x}")
            args += [STREAM, 1, tasks, 1, entry, group]
            r.evalsha(sha, 1, STREAM, *args)
    return total()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", metavar="LAYOUT=SCRIPT")
    ap.add_argument("--tasks", type=int, default=16)
    ap.add_argument("--calls", type=int, default=100)
    a = ap.parse_args()
    for spec in a.runs:
        layout, script = spec.split("=", 1)
        if layout not in ("notice", "record", "transaction"):
            raise SystemExit(f"unknown layout {layout!r}")
        without = run(layout, script, a.tasks, a.calls, settle=False)
        total = run(layout, script, a.tasks, a.calls, settle=True)
        per_task = (total - without) / (a.tasks * a.calls)
        print(f"{layout:7s} {script}: {per_task:,.0f} instructions per settled task")


if __name__ == "__main__":
    main()
