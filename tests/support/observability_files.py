"""The alert rules and the Grafana dashboard, and their copies in the Kubernetes overlay.

deploy/prometheus/rules.yaml and deploy/grafana/catalog-enricher.json are the sources. kustomize
reads no file outside the overlay's folder (symlinks included), so the overlay holds a copy of
each: a PrometheusRule whose `spec` is the rules file, and the dashboard beside a
configMapGenerator. tests/test_alerts_and_dashboard.py fails when a copy drifts;
`python -m tests.support.observability_files` writes them again.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yaml"
RULES_TESTS = ROOT / "deploy" / "prometheus" / "rules-test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "catalog-enricher.json"
OVERLAY = ROOT / "deploy" / "kubernetes" / "overlays" / "production"
OVERLAY_RULE = OVERLAY / "prometheusrule.yaml"
OVERLAY_DASHBOARD = OVERLAY / "grafana-dashboard-catalog-enricher.json"

PROMETHEUS_RULE_HEAD = """\
# Written by `python -m tests.support.observability_files` from deploy/prometheus/rules.yaml (the
# source: edit that, then run it; the suite fails when the two differ). For the Prometheus
# Operator; its `release` label may have to match your Prometheus's ruleSelector.
"""


def rules() -> dict[str, Any]:
    return yaml.safe_load(RULES.read_text())


def alerts() -> list[dict[str, Any]]:
    return [rule for group in rules()["groups"] for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of the dashboard, its template variables included."""
    found = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            found.append((panel["title"], target["expr"]))
    for variable in dashboard()["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            match = re.fullmatch(r"label_values\((\w+),\s*\w+\)", query["query"])
            assert match, f"unexpected variable query {query['query']!r}"
            found.append((f"variable {variable['name']}", match.group(1)))
    return found


def as_promql(grafana_expression: str) -> str:
    """A Grafana query as Prometheus would receive it: its variables given typical values."""
    return (grafana_expression.replace("$__rate_interval", "5m")
            .replace('=~"$job"', '=~"catalog-enricher"'))


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the expressions) as `|` blocks, as in the source, not escaped."""


_BlockDumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def prometheus_rule_text() -> str:
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "catalog-enricher", "labels": {"release": "prometheus"}},
        "spec": rules(),
    }
    return PROMETHEUS_RULE_HEAD + yaml.dump(rule, Dumper=_BlockDumper, sort_keys=False, width=100)


def write_copies() -> None:
    OVERLAY_RULE.write_text(prometheus_rule_text())
    OVERLAY_DASHBOARD.write_text(DASHBOARD.read_text())


if __name__ == "__main__":
    write_copies()
