"""Reading an app's Prometheus metrics, as /metrics would show them."""

from __future__ import annotations

from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from service.web.app_keys import METRICS


def sample(app: web.Application, name: str, **labels: str) -> float:
    """The current value of one sample (0 when it has not been recorded yet)."""
    value = app[METRICS].registry.get_sample_value(name, labels)
    return value or 0.0


def item_queries(app: web.Application) -> float:
    """Item queries this app has sent to Postgres, answered or failed."""
    return (sample(app, "enricher_db_queries_total", outcome="ok")
            + sample(app, "enricher_db_queries_total", outcome="error"))


def exposed_sample(text: str, name: str, **labels: str) -> float | None:
    """One sample's value in an exposition text (a served /metrics), None when it is absent."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return found.value
    return None
