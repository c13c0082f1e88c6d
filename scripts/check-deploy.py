#!/usr/bin/env python3
"""Checks the deployment files against the Kubernetes schemas and against the binary.

Usage: check-deploy.py BATCHGATE_BINARY KUBERNETES_VALIDATE

1. Every manifest of deploy/k8s validates offline (`kubernetes-validate --strict`). Kinds
   without a schema there (CRDs: Kustomization, KEDA's ScaledObject, the Prometheus Operator's
   ServiceMonitor) are skipped by the validator and checked here for what they point at.
2. No drift: every `BATCHGATE_*` variable and every `--flag` that a container of the
   manifests or of deploy/compose/compose.yaml gives to batchgate appears in
   `batchgate <subcommand> --help` of the subcommand that container runs.
3. Shutdown fits: each pod's terminationGracePeriodSeconds exceeds its preStop sleep + the
   shutdown delay + the drain bound + the 4 s HTTP close.
4. The Grafana dashboard is what deploy/grafana/generate.py writes, and every query in it
   filters on the deployment, job and instance variables.

Needs PyYAML (a dependency of kubernetes-validate). Prints one line per failure and a
summary; exits 1 on any failure.
"""
import glob
import json
import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CRDS = {"Kustomization", "ScaledObject", "ServiceMonitor"}
HTTP_CLOSE_SECS = 4
failures = []
checks = 0


def check(ok, message):
    global checks
    checks += 1
    if not ok:
        failures.append(message)
        print("FAIL", message)


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def help_text(binary, sub, cache={}):
    if sub not in cache:
        out = subprocess.run([binary, sub, "--help"], capture_output=True, text=True)
        check(out.returncode == 0, f"`batchgate {sub} --help` failed: {out.stderr.strip()}")
        cache[sub] = out.stdout
    return cache[sub]


def uses(where, sub, env_names, args, binary):
    """Every variable and flag a container gives to `batchgate sub` exists there."""
    text = help_text(binary, sub)
    for name in env_names:
        if name.startswith("BATCHGATE_"):
            check(re.search(r"\[env: " + re.escape(name) + r"[=\]]", text) is not None,
                  f"{where}: {name} is not a variable of `batchgate {sub}`")
    for arg in args:
        if arg.startswith("--"):
            flag = arg.split("=", 1)[0]
            check(re.search(re.escape(flag) + r"\b", text) is not None,
                  f"{where}: {flag} is not a flag of `batchgate {sub}`")


def validate_schemas(validator):
    files = sorted(glob.glob(os.path.join(ROOT, "deploy/k8s/*.yaml")))
    check(len(files) > 5, "deploy/k8s has too few manifests")
    out = subprocess.run([validator, "--strict", *files], capture_output=True, text=True)
    lines = (out.stdout + out.stderr).splitlines()
    passed = [l for l in lines if " passed for resource " in l]
    print(f"kubernetes-validate: {len(passed)} resources passed")
    check(out.returncode == 0, "kubernetes-validate failed:\n" + "\n".join(
        l for l in lines if "passed for resource" not in l))
    for line in lines:
        m = re.search(r"Couldn't find schema for kind (\w+)", line)
        if m:
            check(m.group(1) in CRDS, f"no schema for kind {m.group(1)} (a typo in apiVersion?): {line}")
    expected = sum(1 for f in files for d in load_all(f) if d.get("kind") not in CRDS)
    check(len(passed) == expected, f"{expected} resources to validate, {len(passed)} passed")


def k8s(binary):
    docs = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "deploy/k8s/*.yaml"))):
        for d in load_all(path):
            docs[(d["kind"], d["metadata"]["name"] if "metadata" in d else "")] = (path, d)
    kustomization = load_all(os.path.join(ROOT, "deploy/k8s/kustomization.yaml"))[0]
    listed = set(kustomization["resources"])
    on_disk = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "deploy/k8s/*.yaml"))}
    check(listed == on_disk - {"kustomization.yaml"},
          f"kustomization.yaml lists {sorted(listed)}, the directory has {sorted(on_disk)}")
    maps = {(k, n): d.get("data", d.get("stringData", {}))
            for (k, n), (_, d) in docs.items() if k in ("ConfigMap", "Secret")}
    deployments = {n: d for (k, n), (_, d) in docs.items() if k == "Deployment"}
    for name, d in deployments.items():
        spec = d["spec"]["template"]["spec"]
        for c in spec["containers"]:
            if c.get("image") != "batchgate":
                continue
            sub = c["args"][0]
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            for source in c.get("envFrom", []):
                ref = source.get("configMapRef") or source.get("secretRef")
                kind = "ConfigMap" if "configMapRef" in source else "Secret"
                check((kind, ref["name"]) in maps, f"deployment/{name}: no {kind} {ref['name']}")
                env.update(maps.get((kind, ref["name"]), {}))
            uses(f"deployment/{name}", sub, env, c["args"][1:], binary)
            if sub in ("gateway", "batcher", "serve"):
                pre = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
                delay = int(env.get("BATCHGATE_SHUTDOWN_DELAY_MS", "5000")) / 1000
                drain = int(env.get("BATCHGATE_GRACE_PERIOD_SECS", "20"))
                need = pre + delay + drain + HTTP_CLOSE_SECS
                grace = spec.get("terminationGracePeriodSeconds", 30)
                check(grace > need, f"deployment/{name}: terminationGracePeriodSeconds {grace} "
                      f"is not above preStop {pre} + delay {delay} + drain {drain} + close {HTTP_CLOSE_SECS}")
                ports = [p["containerPort"] for p in c.get("ports", [])]
                listen = env.get("BATCHGATE_LISTEN", "")
                check(listen.startswith("0.0.0.0:") and int(listen.split(":")[1]) in ports,
                      f"deployment/{name}: BATCHGATE_LISTEN {listen!r} is not all interfaces on a container port")
            sc = c.get("securityContext", {})
            check(sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False,
                  f"deployment/{name}: root filesystem not read-only or privilege escalation allowed")
            check(spec.get("securityContext", {}).get("runAsNonRoot") is True,
                  f"deployment/{name}: not runAsNonRoot")
    # The CRDs the validator skips: what they point at exists.
    for (kind, name), (path, d) in docs.items():
        if kind == "ScaledObject":
            target = d["spec"]["scaleTargetRef"]["name"]
            check(target in deployments, f"scaledobject/{name}: no deployment {target}")
            for t in d["spec"]["triggers"]:
                md = t["metadata"]
                check(t["type"] == "redis-streams", f"scaledobject/{name}: trigger {t['type']}")
                check(re.fullmatch(r"batchgate:\{p\d\d(-\d+)?\}:tasks", md["stream"]) is not None,
                      f"scaledobject/{name}: {md['stream']} is not a partition stream")
                check(md.get("consumerGroup") == "batchers", f"scaledobject/{name}: consumer group")
        if kind == "ServiceMonitor":
            sel = d["spec"]["selector"]["matchLabels"]
            services = [s for (k, _), (_, s) in docs.items() if k == "Service"
                        and all(s["metadata"].get("labels", {}).get(a) == b for a, b in sel.items())]
            check(len(services) >= 3, f"servicemonitor/{name} selects {len(services)} services")
            for s in services:
                check(any(p.get("name") == d["spec"]["endpoints"][0]["port"] for p in s["spec"]["ports"]),
                      f"servicemonitor/{name}: service {s['metadata']['name']} has no port named http")


def compose(binary):
    path = os.path.join(ROOT, "deploy/compose/compose.yaml")
    services = load_all(path)[0]["services"]
    count = {"gateway": 0, "batcher": 0, "worker": 0}
    for name, s in services.items():
        if s.get("image", "").rsplit("/", 1)[-1].split(":")[0] != "batchgate":
            continue
        sub = s["command"][0]
        count[sub] = count.get(sub, 0) + 1
        uses(f"compose service {name}", sub, s.get("environment", {}), s["command"][1:], binary)
    check(count["gateway"] == 2 and count["batcher"] == 2 and count["worker"] == 1,
          f"compose: {count}")
    redis = " ".join(services["redis"]["command"])
    check("--appendonly yes" in redis, "compose: Redis without AOF")
    prometheus = yaml.safe_load(open(os.path.join(ROOT, "deploy/compose/prometheus.yml")))
    targets = {t.split(":")[0] for job in prometheus["scrape_configs"]
               for sc in job["static_configs"] for t in sc["targets"]}
    wanted = {n for n, s in services.items() if "batchgate" in s.get("image", "")}
    check(targets == wanted, f"compose Prometheus scrapes {sorted(targets)}, the stack runs {sorted(wanted)}")


def dashboard():
    path = os.path.join(ROOT, "deploy/grafana/batchgate.json")
    generated = subprocess.run([sys.executable, os.path.join(ROOT, "deploy/grafana/generate.py")],
                               capture_output=True, text=True, check=True).stdout
    check(generated == open(path).read(), "deploy/grafana/batchgate.json is not what generate.py writes")
    dash = json.loads(generated)
    names = {v["name"] for v in dash["templating"]["list"]}
    check({"deployment", "job", "instance"} <= names, f"dashboard variables: {sorted(names)}")
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            for selector in re.findall(r"batchgate_\w+(\{[^}]*\})?", target["expr"]):
                check('deployment=~"$deployment"' in selector and 'instance=~"$instance"' in selector,
                      f"dashboard panel {panel['title']!r}: {target['expr']} ignores the variables")


def main():
    binary, validator = sys.argv[1], sys.argv[2]
    validate_schemas(validator)
    k8s(binary)
    compose(binary)
    dashboard()
    print(f"deploy checks: {checks - len(failures)} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
