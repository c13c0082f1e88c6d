#!/usr/bin/env bash
# One measured bursts run (the profile of scripts/bench-policies.sh) with what the machine did
# meanwhile: a fresh `batchgate serve --sim-slots 40 --shed-wait-ms 0 --policy POLICY`, the
# bench with its per-second report, and every 100 ms the CPU time of both processes, the
# machine's busy time, the other work's runnable threads (nice-weighted as the kernel's fair
# scheduler weighs them: nice 0 is 1), for `batchgate simulate --host-other-threads`, and the
# other scheduling groups with runnable threads (with /proc/sys/kernel/sched_autogroup_enabled
# the kernel shares the cores between sessions first, then between a session's threads).
#
#   scripts/bench-bursts-cpu.sh OUT POLICY SEED
#
# Writes OUT.json (the bench's report), OUT.svg (its charts: p50/p99 and ok/s per second),
# OUT.progress, OUT.uptime (load average before and after) and OUT.cpu (time, serve CPU s,
# bench CPU s, machine total and idle s, other runnable threads, own runnable threads, other
# groups with runnable threads), and prints per second the cores serve and bench used and the
# other work's threads and groups.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1 policy=$2 seed=$3
bin=${BIN:-target/release/batchgate}
[ -x "$bin" ] || { echo "no batchgate binary at $bin (cargo build --release -p batchgate)" >&2; exit 1; }
# shellcheck source=scripts/serve-lib.sh
. scripts/serve-lib.sh
mkdir -p "$(dirname "$out")"
log=$(mktemp)
uptime >"$out.uptime"
start_serve "$log" --insecure-no-auth --sim-slots 40 --shed-wait-ms 0 --policy "$policy"
serve_pid=$pid
"$bin" bench --url "$url" --http2 --worker-slots 40 --warmup 3s --duration 30s \
  --rate 500 --burst-rate 15000 --burst-secs 2 --burst-every 10 --seed "$seed" \
  --json --report "$out.svg" >"$out.json" 2>"$out.progress" &
bench_pid=$!
python3 - "$serve_pid" "$bench_pid" "$out.cpu" <<'PY' &
import glob, os, sys, time
serve, bench, path = sys.argv[1:4]
me = str(os.getpid())
tck = os.sysconf("SC_CLK_TCK")
def cpu(pid):
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / tck
    except OSError:
        return None
def machine():
    v = list(map(int, open("/proc/stat").readline().split()[1:]))
    return sum(v) / tck, (v[3] + v[4]) / tck
def autogroup(pid):
    try:
        return open(f"/proc/{pid}/autogroup").read().split()[0]
    except (OSError, IndexError):  # the process has ended
        return None
ours = autogroup(serve)
def runnable():
    other, own, groups = 0.0, 0, set()
    for stat in glob.glob("/proc/[0-9]*/task/[0-9]*/stat"):
        pid = stat.split("/")[2]
        try:
            f = open(stat).read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # the thread has ended
            continue
        if f[0] != "R":
            continue
        if pid in (serve, bench):
            own += 1
        elif pid != me:
            other += 1.25 ** -int(f[16])  # the kernel's weight of a nice value, nice 0 = 1
            group = autogroup(pid)
            if group is not None and group != ours:
                groups.add(group)
    return other, own, len(groups)
t0 = time.time()
with open(path, "w") as out:
    while (b := cpu(bench)) is not None:
        s = cpu(serve)
        total, idle = machine()
        other, own, groups = runnable()
        out.write(f"{time.time() - t0:.3f} {s} {b} {total} {idle} {other:.3f} {own} {groups}\n")
        out.flush()
        time.sleep(0.1)
PY
sampler=$!
wait "$bench_pid" || true
wait "$sampler" || true
uptime >>"$out.uptime"
kill -TERM "$serve_pid"
wait "$serve_pid" || true
rm -f "$log"
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
rows = [[float(x) if x != "None" else 0.0 for x in line.split()] for line in open(out + ".cpu")]
rows = [r for r in rows if len(r) == 8]
prev, others, groups = rows[0], [], []
for r in rows[1:]:
    others.append(r[5])
    groups.append(r[7])
    if r[0] - prev[0] >= 0.95:
        dt = r[0] - prev[0]
        busy = (r[3] - prev[3]) - (r[4] - prev[4])
        print(f"{r[0]:6.1f} s  serve {(r[1] - prev[1]) / dt:4.2f}  bench {(r[2] - prev[2]) / dt:4.2f}  "
              f"machine {busy / dt:4.2f} cores  other runnable threads {sum(others) / len(others):5.2f}  "
              f"groups {sum(groups) / len(groups):4.2f}")
        prev, others, groups = r, [], []
r = json.load(open(out + ".json"))
l = r.get("latency_ms") or {}
mean_other = sum(row[5] for row in rows) / len(rows)
mean_groups = sum(row[7] for row in rows) / len(rows)
print(f"{out}: ok/s {r['achieved_rate']:.0f}  p50 {l.get('p50')}  p99 {l.get('p99')}  "
      f"mean batch {r['server'].get('mean_batch_size')}  outcomes {r['outcomes']}  "
      f"other runnable threads {mean_other:.2f}  other groups {mean_groups:.2f}  "
      f"({open(out + '.uptime').read().strip()})")
PY
