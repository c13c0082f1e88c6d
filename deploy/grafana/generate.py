"""Writes the Grafana dashboard deploy/grafana/batchgate.json from the panel list below.

Usage: python3 deploy/grafana/generate.py > deploy/grafana/batchgate.json
"""
import json
import re
DS = {"type": "prometheus", "uid": "${datasource}"}
# Every query keeps to the deployment, kinds of process (job) and processes (instance) picked
# in the dashboard's variables, so it works for any number of instances.
SEL = 'deployment=~"$deployment", job=~"$job", instance=~"$instance"'
def scoped(expr):
    def add(m):
        inner = m.group(2)
        return m.group(1) + "{" + SEL + (", " + inner if inner else "") + "}"
    return re.sub(r"(batchgate_\w+)(?:\{([^}]*)\})?", add, expr)
panels = []
y = 0
def row(title):
    global y
    panels.append({"type": "row", "title": title, "collapsed": False, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "id": len(panels) + 1, "panels": []})
    y += 1
def ts(title, targets, unit="short", x=0, w=12, h=8, desc="", max_=None, stack=False):
    global y
    p = {
        "type": "timeseries", "title": title, "description": desc, "datasource": DS,
        "id": len(panels) + 1,
        "gridPos": {"h": h, "w": w, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit, "custom": {"lineWidth": 1, "fillOpacity": 10, "stacking": {"mode": "normal" if stack else "none"}}}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [{"refId": chr(65 + i), "expr": scoped(e), "legendFormat": l, "datasource": DS} for i, (e, l) in enumerate(targets)],
    }
    if max_ is not None:
        p["fieldConfig"]["defaults"]["max"] = max_
        p["fieldConfig"]["defaults"]["min"] = 0
    panels.append(p)
    if x + w >= 24:
        y += h
def bars(title, expr, x=0, w=12, h=8, desc=""):
    global y
    panels.append({
        "type": "bargauge", "title": title, "description": desc, "datasource": DS, "id": len(panels) + 1,
        "gridPos": {"h": h, "w": w, "x": x, "y": y},
        "options": {"orientation": "vertical", "displayMode": "basic", "reduceOptions": {"calcs": ["lastNotNull"]}},
        "fieldConfig": {"defaults": {"unit": "short"}, "overrides": []},
        "targets": [{"refId": "A", "expr": scoped(expr), "legendFormat": "≤ {{le}}", "format": "heatmap", "datasource": DS}],
    })
    if x + w >= 24:
        y += h

W = "[$__rate_interval]"
row("Requests")
ts("Submissions by status", [(f'sum by (status) (rate(batchgate_http_requests_total{{route="/v1/inference"}}{W}))', "{{status}}")], "reqps", 0, 12)
ts("Tasks completed by outcome", [(f"sum by (outcome) (rate(batchgate_tasks_completed_total{W}))", "{{outcome}}")], "ops", 12, 12, stack=True)
ts("End-to-end latency (accepted → result stored)", [(f"histogram_quantile({q}, sum by (le) (rate(batchgate_task_latency_seconds_bucket{W})))", f"p{int(q*100)}") for q in (0.5, 0.95, 0.99)], "s", 0, 12, desc="SLO: p99 < 500 ms at 10,000 requests/s")
ts("HTTP answer time by route (p99)", [(f"histogram_quantile(0.99, sum by (le, route) (rate(batchgate_http_request_duration_seconds_bucket{W})))", "{{route}}")], "s", 12, 12, desc="Long polls (?wait_ms) included")
ts("Turned away", [(f"sum by (reason) (rate(batchgate_shed_total{W}))", "shed {{reason}}"), (f"sum(rate(batchgate_rate_limited_total{W}))", "rate limited"), (f"sum by (code) (rate(batchgate_http_errors_total{W}))", "error {{code}}")], "reqps", 0, 12)
ts("Dedupe and collapsing", [(f"sum(rate(batchgate_dedupe_hits_total{W}))", "dedupe hits"), (f"sum(rate(batchgate_collapsed_inputs_total{W}))", "inputs collapsed in a batch")], "ops", 12, 12)
row("Batching")
ts("Batches by flush reason", [(f"sum by (reason) (rate(batchgate_batches_total{W}))", "{{reason}}")], "ops", 0, 8, stack=True, desc="full: 64 tasks; timer: max wait; early: adaptive policy; drain: shutdown")
ts("Mean batch size", [(f"sum(rate(batchgate_batch_size_sum{W})) / sum(rate(batchgate_batch_size_count{W}))", "mean inputs per worker call")], "short", 8, 8)
bars("Batch size distribution (window)", f"sum by (le) (increase(batchgate_batch_size_bucket[$__range]))", 16, 8)
ts("Wait before the worker (accepted → batch leaves)", [(f"histogram_quantile({q}, sum by (le) (rate(batchgate_task_wait_seconds_bucket{W})))", f"p{int(q*100)}") for q in (0.5, 0.99)] + [(f"histogram_quantile(0.99, sum by (le) (rate(batchgate_batch_wait_seconds_bucket{W})))", "first task in buffer, p99")], "s", 0, 12)
ts("Queue depth by partition", [("max by (partition) (batchgate_queue_depth)", "p{{partition}}")], "short", 12, 12, stack=True, desc="Read at scrape; every process exports the shared queue's depth, hence max")
row("Worker")
ts("Worker call latency", [(f"histogram_quantile({q}, sum by (le) (rate(batchgate_worker_call_duration_seconds_bucket{W})))", f"p{int(q*100)}") for q in (0.5, 0.99)], "s", 0, 8)
ts("Worker busy fraction", [(f"sum(rate(batchgate_worker_call_duration_seconds_sum{W})) / sum(batchgate_inflight_batches_max)", "batcher view (slot time in calls)"), (f"sum(rate(batchgate_worker_busy_seconds_total{W})) / sum(batchgate_worker_slots)", "worker view (simulated GPUs)")], "percentunit", 8, 8, max_=1)
ts("In-flight batches", [("sum(batchgate_inflight_batches)", "in flight"), ("sum(batchgate_inflight_limit)", "limit (backpressure)"), ("sum(batchgate_inflight_batches_max)", "max")], "short", 16, 8)
ts("Worker trouble", [(f"sum(rate(batchgate_worker_retries_total{W}))", "retries"), (f"sum(rate(batchgate_worker_errors_total{W}))", "failed calls"), (f"sum(rate(batchgate_worker_overloads_total{W}))", "429/503 answers"), (f"sum(rate(batchgate_bisections_total{W}))", "bisections"), (f"sum(rate(batchgate_requeued_tasks_total{W}))", "requeued tasks")], "ops", 0, 12)
ts("Dead letters", [("max(batchgate_dead_letter_queue_tasks)", "in the DLQ"), (f"sum(rate(batchgate_dead_letters_total{W}))", "added /s")], "short", 12, 12)
row("Storage and processes")
ts("Result store records", [("max(batchgate_result_store_records)", "records")], "short", 0, 12, desc="In process: records held; on Redis: DBSIZE")
ts("Resident memory", [("batchgate_process_resident_memory_bytes", "{{job}} {{instance}}")], "bytes", 12, 12)

def variable(name, query, label):
    return {
        "name": name, "label": label, "type": "query", "datasource": DS,
        "query": {"query": query, "refId": name}, "definition": query,
        "refresh": 2, "multi": True, "includeAll": True, "allValue": ".*",
        "current": {"selected": True, "text": "All", "value": "$__all"}, "hide": 0, "sort": 1,
    }

dash = {
    "title": "batchgate",
    "uid": "batchgate",
    "description": "Dynamic batching in front of a fixed GPU batch API (docs/observability.md)",
    "tags": ["batchgate"],
    "schemaVersion": 39,
    "version": 1,
    "editable": True,
    "refresh": "10s",
    "time": {"from": "now-30m", "to": "now"},
    "timezone": "",
    "templating": {"list": [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus", "current": {}, "hide": 0},
        # The `deployment` label is set by the scrape configuration (compose: `compose`;
        # Kubernetes: the namespace, by the ServiceMonitor); `.*` also matches series without it.
        variable("deployment", 'label_values(up{job=~"batchgate-.*"}, deployment)', "Deployment"),
        variable("job", 'label_values(up{job=~"batchgate-.*", deployment=~"$deployment"}, job)', "Process kind"),
        variable("instance", 'label_values(up{job=~"$job", deployment=~"$deployment"}, instance)', "Instance"),
    ]},
    "annotations": {"list": []},
    "panels": panels,
}
# Usage: python3 deploy/grafana/generate.py > deploy/grafana/batchgate.json
print(json.dumps(dash, indent=2, ensure_ascii=False))
