"""The alert rules (deploy/prometheus/rules.yaml) and the Grafana dashboard
(deploy/grafana/catalog-enricher.json), checked rather than hoped: every expression parses, by
Prometheus's own parser (`promtool`, Debian's `prometheus` package, which .ci/run installs) and by
promql-parser; every metric they name is on a live service's /metrics; the rules keep their
conventions (prefix, severity, annotations, a runbook section each); `promtool test rules` fires
and stays silent on synthetic series; the Kubernetes overlay carries exact copies of both."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import promql_parser
import pytest
import yaml

from tests.support.kubernetes_checks import render
from tests.support.observability_files import (
    DASHBOARD,
    OVERLAY,
    OVERLAY_DASHBOARD,
    RULES,
    RULES_TESTS,
    alerts,
    as_promql,
    dashboard,
    dashboard_expressions,
    prometheus_rule_text,
    rules,
)

OPERATIONS = Path(__file__).resolve().parents[1] / "docs" / "operations.md"
RUNBOOK_BASE = "https://docs.example.com/catalog-enricher/operations/#"
# Exposed only by `serve --workers N` (the supervisor counts into the files its workers share),
# never by one process alone: tests/test_supervised_workers.py reads it off a live /metrics after
# killing a worker.
ONLY_WITH_WORKERS = {"enricher_worker_exits_total"}


def promtool(*args: str) -> subprocess.CompletedProcess:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: `apt-get install prometheus` (Debian's package; "
                    ".ci/run installs it)")
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=60, check=False)


def metric_names(expression: str) -> set[str]:
    """The metric names an expression selects, from promql-parser's syntax tree."""
    names: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name)
        elif isinstance(node, promql_parser.MatrixSelector):
            walk(node.vector_selector)
        elif isinstance(node, promql_parser.BinaryExpr):
            walk(node.lhs)
            walk(node.rhs)
        elif isinstance(node, promql_parser.Call):
            for argument in node.args:
                walk(argument)
        elif isinstance(node, promql_parser.AggregateExpr):
            walk(node.expr)
            if node.param is not None:
                walk(node.param)
        elif isinstance(node, (promql_parser.ParenExpr, promql_parser.UnaryExpr,
                               promql_parser.SubqueryExpr)):
            walk(node.expr)

    walk(promql_parser.parse(expression))
    return names


def all_expressions() -> list[tuple[str, str]]:
    return ([(rule["alert"], rule["expr"]) for rule in alerts()]
            + [(title, as_promql(expr)) for title, expr in dashboard_expressions()])


def heading_anchors(markdown: str) -> set[str]:
    """The ids MkDocs gives headings (its toc extension's default slug)."""
    anchors = set()
    for line in markdown.splitlines():
        match = re.match(r"#{1,6} (.+)", line)
        if match:
            slug = re.sub(r"[^\w\s-]", "", match.group(1)).strip().lower()
            anchors.add(re.sub(r"[-\s]+", "-", slug))
    return anchors


# --- parsing -----------------------------------------------------------------------------------

def test_promtool_checks_the_rules():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_parses_every_dashboard_query(tmp_path):
    """Each dashboard query as a recording rule: `promtool check rules` parses it as Prometheus
    would."""
    recorded = [{"record": f"dashboard:query_{i}", "expr": expr}
                for i, (_, expr) in enumerate(all_expressions())]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_expression_is_caught(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"alert": "CatalogEnricherBroken", "expr": "sum by (job) (rate(enricher_x_total[5m])"}]}]}))
    assert promtool("check", "rules", str(path)).returncode != 0
    with pytest.raises(ValueError):  # noqa: PT011 - promql-parser raises a plain ValueError
        metric_names("sum by (job) (rate(enricher_x_total[5m])")


# --- every metric named is served --------------------------------------------------------------

def exposed_series_names(text: str) -> set[str]:
    """Every series name a /metrics text can hold, from its TYPE lines: a family with labels has
    no sample until a label set is used, but its TYPE line is there from the start."""
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
        else:
            names.add(name)
    return names


async def test_every_metric_named_is_on_a_live_metrics(client):
    async with client.get("/metrics") as response:
        assert response.status == 200
        served = exposed_series_names(await response.text())
    assert "enricher_http_requests_total" in served
    missing = {}
    for where, expression in all_expressions():
        for name in metric_names(expression) - served - ONLY_WITH_WORKERS:
            missing.setdefault(name, []).append(where)
    assert missing == {}, "named but not on /metrics"


def test_the_metric_names_are_read_from_the_expressions():
    assert metric_names(
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{le="1"}[5m]))) / on (job) -b '
        "and max_over_time(c[1h:1m]) > count(d)"
    ) == {"a_bucket", "b", "c", "d"}


# --- the rules' conventions and their unit tests -----------------------------------------------

def test_every_alert_is_named_labelled_and_annotated():
    names = [rule["alert"] for rule in alerts()]
    assert len(names) >= 8
    assert len(set(names)) == len(names)
    anchors = heading_anchors(OPERATIONS.read_text())
    for rule in alerts():
        name = rule["alert"]
        assert re.fullmatch(r"CatalogEnricher[A-Z]\w+", name), name
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(annotations), name
        assert annotations["runbook_url"] == RUNBOOK_BASE + name.lower(), name
        assert name.lower() in anchors, f"docs/operations.md has no runbook section for {name}"
    assert all(group["rules"] for group in rules()["groups"])


def test_promtool_unit_tests_pass():
    result = promtool("test", "rules", str(RULES_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_alert_has_a_firing_and_a_silent_case():
    cases: dict[str, set[str]] = {}
    for group in yaml.safe_load(RULES_TESTS.read_text())["tests"]:
        for case in group.get("alert_rule_test", []):
            outcome = "fires" if case.get("exp_alerts") else "silent"
            cases.setdefault(case["alertname"], set()).add(outcome)
    assert {rule["alert"]: {"fires", "silent"} for rule in alerts()} == cases


def test_a_wrong_expectation_fails_promtool(tmp_path):
    """The unit tests can fail: a firing case turned silent is reported."""
    tests = yaml.safe_load(RULES_TESTS.read_text())
    tests["rule_files"] = [str(RULES)]
    first = next(case for case in tests["tests"][0]["alert_rule_test"] if case["exp_alerts"])
    first["exp_alerts"] = []
    path = tmp_path / "wrong-test.yaml"
    path.write_text(yaml.safe_dump(tests))
    result = promtool("test", "rules", str(path))
    assert result.returncode != 0
    assert first["alertname"] in result.stdout + result.stderr


# --- the dashboard -----------------------------------------------------------------------------

def test_the_dashboard_covers_what_an_operator_watches():
    board = dashboard()
    assert board["uid"] == "catalog-enricher"
    expressions = " ".join(expr for _, expr in dashboard_expressions())
    for metric in ("enricher_http_requests_total", "enricher_http_request_duration_seconds_bucket",
                   "enricher_degraded_responses_total", "enricher_cache_lookups_total",
                   "enricher_db_queries_total", "enricher_replica_lag_seconds",
                   "enricher_personalize_calls_total", "enricher_throttled_requests_total",
                   "enricher_event_loop_lag_seconds_bucket", "enricher_worker_exits_total"):
        assert metric in expressions, metric
    ids = [panel["id"] for panel in board["panels"]]
    assert len(set(ids)) == len(ids)
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]


# --- the Kubernetes overlay --------------------------------------------------------------------

def test_the_overlay_carries_the_rules_and_the_dashboard():
    _, objects = render(OVERLAY)
    (rule,) = [o for o in objects if o["kind"] == "PrometheusRule"]
    assert rule["spec"] == rules()
    (config_map,) = [o for o in objects if o["kind"] == "ConfigMap"
                     and o["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    (text,) = config_map["data"].values()
    assert text == DASHBOARD.read_text()
    assert (OVERLAY / "prometheusrule.yaml").read_text() == prometheus_rule_text(), \
        "run `python -m tests.support.observability_files` after editing deploy/prometheus/rules.yaml"
    assert OVERLAY_DASHBOARD.read_text() == DASHBOARD.read_text(), \
        "run `python -m tests.support.observability_files` after editing the dashboard"
