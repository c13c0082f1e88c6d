#!/usr/bin/env python3
"""Median and spread (min-max) of `batchgate bench --json` reports.

    scripts/bench-summary.py results/10k-*.json
"""
import json
import statistics
import sys


def row(name, values, fmt="{:.1f}"):
    values = [v for v in values if v is not None]
    if not values:
        return f"| {name} | n/a | n/a |"
    med = statistics.median(values)
    return f"| {name} | {fmt.format(med)} | {fmt.format(min(values))} – {fmt.format(max(values))} |"


def main(paths):
    reports = [json.load(open(p)) for p in paths]
    lat = [r.get("latency_ms") or {} for r in reports]
    srv = [r.get("server") or {} for r in reports]
    print(f"runs: {len(reports)} ({', '.join(paths)})")
    print("| figure | median | spread (min – max) |")
    print("|---|---|---|")
    print(row("achieved ok/s", [r["achieved_rate"] for r in reports]))
    print(row("errors", [r["errors"] for r in reports], "{:.0f}"))
    for p in ("p50", "p90", "p99", "p999", "max"):
        print(row(f"latency {p} (ms)", [l.get(p) for l in lat]))
    print(row("mean batch size", [s.get("mean_batch_size") for s in srv], "{:.2f}"))
    busy = [s.get("worker_busy_fraction") for s in srv]
    print(row("worker (GPU) busy %", [b * 100 if b is not None else None for b in busy]))
    kinds = sorted({k for r in reports for k in r.get("outcomes", {}) if k != "ok"})
    for k in kinds:
        print(row(f"outcome {k}", [r.get("outcomes", {}).get(k, 0) for r in reports], "{:.0f}"))
    rss = [s.get("resident_memory_bytes") for s in srv]
    print(row("server RSS (MiB)", [v / 2**20 if v else None for v in rss]))
    flushes = {}
    for s in srv:
        for k, v in (s.get("flushes") or {}).items():
            flushes.setdefault(k, []).append(v)
    for k, v in sorted(flushes.items()):
        print(row(f"flushes: {k}", v, "{:.0f}"))


if __name__ == "__main__":
    main(sys.argv[1:])
