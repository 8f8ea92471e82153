"""OpenTelemetry traces, against a real OTLP/HTTP receiver (tests/support/otlp_receiver.py): a
`serve` process configured only by OTEL_* variables sends the spans of a content GET that carries
a `traceparent`: one trace, server span → resolve → Postgres statement (L1 cold), named by route
template, with tenant and recommender, and no item ID or key in any attribute. Its JSON log line
names the trace and the span; with traces off, a line names neither. With `--workers 2` each
worker exports its own spans (its exporter set up after the fork). In this process: a transform,
and a user route call whose Personalize call (a fake Personalize) is a span of its trace, with
neither the user's ID nor an item ID in any span; a content GET with Redis as L2, its Redis
commands under `l2 lookup` with every argument masked."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from service.runtime import tracing
from service.web.app import create_app
from tests.support.api import Api
from tests.support.catalogs import load_catalog, put_recommender
from tests.support.fake_personalize import FakePersonalize
from tests.support.otlp_receiver import OtlpReceiver, Span
from tests.support.serve_process import ServeProcess, clean_env, request, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timing]

# IDs of the demo catalog (service/demo.py); one that is not in it.
IDS = ("1815", "2009", "no-such-item")
CONTENT = "/v1/recommenders/demo-movies/content?" + "&".join(f"ids={i}" for i in IDS)
SERVER = 2  # opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_SERVER


def traced_env(receiver: OtlpReceiver, database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in clean_env().items() if not k.startswith("OTEL_")}
    return {**env, "DATABASE_URL": database_url,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_SERVICE_NAME": "enricher-under-test",
            # Spans leave in batches every 50 ms, not every 5 s: the test waits less.
            "OTEL_BSP_SCHEDULE_DELAY": "50", **extra}


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as found:
        yield found


def new_traceparent() -> tuple[str, str, str]:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{parent_id}-01", trace_id, parent_id


def get_content(serve: ServeProcess, traceparent: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {serve.key}"}
    if traceparent:
        headers["traceparent"] = traceparent
    status, answer_headers, body = request(serve.port, "GET", CONTENT, headers=headers)
    assert status == 200, body
    return answer_headers


def one_trace(spans: list[Span], trace_id: str) -> dict[str, Span] | None:
    """The trace's spans by name, once its server span (the last to end) and its Postgres
    statement have arrived (they may come in different batches)."""
    found = {s.name: s for s in spans if s.trace_id == trace_id}
    complete = (any(s.kind == SERVER for s in found.values())
                and any(s.attributes.get("db.system") == "postgresql" for s in found.values()))
    return found if complete else None


def leaks(spans: list[Span], key: str) -> list[str]:
    """Attribute values holding an item ID we asked for, or any part of the key."""
    found = []
    for span in spans:
        for name, value in span.attributes.items():
            text = json.dumps(value)
            if any(i in text for i in IDS) or key[:12] in text or key[-12:] in text:
                found.append(f"{span.name}: {name}={text}")
    return found


def assert_the_tree(trace: dict[str, Span], parent_id: str, key: str) -> Span:
    server = trace["GET /v1/recommenders/{recommender}/content"]
    assert server.kind == SERVER
    assert server.parent_span_id == parent_id  # the caller's span continued
    assert server.attributes["http.route"] == "/v1/recommenders/{recommender}/content"
    assert server.attributes["enricher.recommender"] == "demo-movies"
    assert server.attributes["enricher.tenant"] == "demo"
    assert server.attributes["http.response.status_code"] == 200
    assert server.service_name == "enricher-under-test"
    resolve = trace["resolve"]
    assert resolve.parent_span_id == server.span_id
    assert resolve.attributes["enricher.ids"] == len(IDS)
    lookup = trace["postgres lookup"]
    assert lookup.parent_span_id == resolve.span_id
    (statement,) = [s for s in trace.values() if s.attributes.get("db.system") == "postgresql"]
    assert statement.parent_span_id == lookup.span_id
    assert "$1" in str(statement.attributes.get("db.statement", "$1"))
    assert leaks(list(trace.values()), key) == []
    return server


def test_traces_are_off_without_otel_variables():
    assert not tracing.wanted({})
    assert not tracing.wanted({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"})
    assert not tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_TRACES_EXPORTER": "none"})


def test_a_content_get_is_traced_from_the_caller_to_postgres(receiver, database_url):
    serve = ServeProcess(env=traced_env(receiver, database_url))
    try:
        traceparent, trace_id, parent_id = new_traceparent()
        get_content(serve, traceparent)
        trace = receiver.wait_for(lambda spans: one_trace(spans, trace_id),
                                  "trace with its Postgres statement")
        server = assert_the_tree(trace, parent_id, serve.key)
        # The request's log line names its trace and its server span.
        line = wait_until(lambda: next((e for e in serve.logs() if e.get("msg") == "request"
                                        and e.get("route") == "get_content"), None),
                          30, "the request's log line", serve.tail)
        assert line["trace_id"] == trace_id
        assert line["span_id"] == server.span_id
        # No key in any span the process sent (a transform's or the demo's included).
        assert leaks(receiver.received(), serve.key) == []
    finally:
        serve.close()


def test_untraced_the_log_line_names_no_trace(database_url):
    env = {k: v for k, v in clean_env(DATABASE_URL=database_url).items()
           if not k.startswith("OTEL_")}
    serve = ServeProcess(env=env)
    try:
        traceparent, _, _ = new_traceparent()
        get_content(serve, traceparent)
        line = wait_until(lambda: next((e for e in serve.logs() if e.get("msg") == "request"
                                        and e.get("route") == "get_content"), None),
                          30, "the request's log line", serve.tail)
        assert "trace_id" not in line
        assert "span_id" not in line
    finally:
        serve.close()


def test_with_two_workers_each_exports_after_the_fork(receiver, database_url, tmp_path: Path):
    serve = ServeProcess("--workers", "2", env=traced_env(
        receiver, database_url, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics")))
    try:
        serve.wait_serving(2)
        answered_by: set[str] = set()
        for _ in range(40):  # fresh connections until both workers have answered one
            traceparent, trace_id, parent_id = new_traceparent()
            headers = get_content(serve, traceparent)
            worker = headers["X-Request-Id"][:16]
            if worker in answered_by:
                continue
            answered_by.add(worker)
            trace = receiver.wait_for(lambda spans, t=trace_id: {
                s.name: s for s in spans if s.trace_id == t and s.kind == SERVER},
                "server span")
            (server,) = trace.values()
            assert server.parent_span_id == parent_id
            if len(answered_by) == 2:
                break
        # Had the exporter been set up before the fork, its thread would not run in a worker.
        assert len(answered_by) == 2, "both workers answered, and each exported its spans"
    finally:
        serve.close()


# --- in this process: the transform and the user route with a fake Personalize ------------------

USER_ID = "user-5e8a1c07"
SKUS = ("sku-48151623", "sku-42108", "sku-missing-777")
USER_ROUTE = "GET /v1/recommenders/{recommender}/users/{user_id}/content"


@pytest.fixture
def traced(receiver: OtlpReceiver, monkeypatch) -> Iterator[None]:
    """Traces on in this process (before any app is made: its middleware depends on it)."""
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    assert tracing.start()
    try:
        yield
    finally:
        tracing.stop()


@pytest.fixture
async def personalize(aws_env) -> AsyncIterator[FakePersonalize]:
    fake = FakePersonalize(users={USER_ID: [(SKUS[0], 0.9), (SKUS[2], 0.5), (SKUS[1], 0.1)]})
    await fake.start()
    yield fake
    await fake.stop()


async def test_a_transform_and_a_user_route_call(traced, receiver, personalize, aiohttp_client,
                                                 settings, make_key):
    app = create_app(dataclasses.replace(settings, personalize_endpoint_url=personalize.url,
                                         content_deadline_ms=60_000))
    key = await make_key("acme", "admin")
    api = Api(await aiohttp_client(app), key)
    await load_catalog(api, "shop", [{"id": SKUS[0], "title": "One"},
                                     {"id": SKUS[1], "title": "Two"}])
    await put_recommender(api, "shop", "shop", ("Title", "title"), personalize={
        "campaign_arn": "arn:aws:personalize:us-east-1:123456789012:campaign/shop",
        "num_results": 3, "fallback_ids": [SKUS[1]]})

    traceparent, trace_id, parent_id = new_traceparent()
    status, _, _ = await api.post("/v1/recommenders/shop/transform", {"Endpoints": {
        "e1": {"RecommendationItems": list(SKUS)}}}, headers={"traceparent": traceparent})
    assert status == 200
    transform = receiver.wait_for(lambda spans: {
        s.name: s for s in spans if s.trace_id == trace_id and s.kind == SERVER}, "transform")
    (server,) = transform.values()
    assert server.name == "POST /v1/recommenders/{recommender}/transform"
    assert server.parent_span_id == parent_id

    traceparent, trace_id, parent_id = new_traceparent()
    status, answer, _ = await api.get(f"/v1/recommenders/shop/users/{USER_ID}/content",
                                      headers={"traceparent": traceparent})
    assert status == 200, answer

    def user_trace(spans: list[Span]) -> dict[str, Span] | None:
        found = {s.name: s for s in spans if s.trace_id == trace_id}
        return found if USER_ROUTE in found and "Personalize.GetRecommendations" in found \
            else None

    trace = receiver.wait_for(user_trace, "the user route's trace with its Personalize call")
    server = trace[USER_ROUTE]
    assert server.parent_span_id == parent_id
    assert server.attributes["http.route"] == "/v1/recommenders/{recommender}/users/{user_id}/content"
    call = trace["Personalize.GetRecommendations"]
    assert call.attributes["rpc.method"] == "GetRecommendations"
    ancestors, span = set(), call
    by_id = {s.span_id: s for s in trace.values()}
    while span.parent_span_id in by_id:
        span = by_id[span.parent_span_id]
        ancestors.add(span.name)
    assert USER_ROUTE in ancestors
    # Neither the user's ID nor any item ID nor the key, in any span received.
    for span in receiver.received():
        text = json.dumps(span.attributes) + span.name
        assert USER_ID not in text and not any(sku in text for sku in SKUS), span
        assert key[:12] not in text and key[-12:] not in text, span


async def test_redis_calls_are_spans_with_their_arguments_masked(traced, receiver, aiohttp_client,
                                                                redis_settings, make_key):
    """A content GET, L1 cold, with Redis as L2: server → resolve → l2 lookup → Redis commands,
    whose statements show `?` for every argument (the cache keys hold item IDs)."""
    api = Api(await aiohttp_client(create_app(redis_settings)), await make_key("acme", "admin"))
    await load_catalog(api, "shop", [{"id": SKUS[0], "title": "One"}])
    await put_recommender(api, "shop", "shop", ("Title", "title"))
    traceparent, trace_id, _ = new_traceparent()
    status, _, _ = await api.get("/v1/recommenders/shop/content?ids=" + ",".join(SKUS[:2]),
                                 headers={"traceparent": traceparent})
    assert status == 200

    def with_redis(spans: list[Span]) -> list[Span] | None:
        found = [s for s in spans if s.trace_id == trace_id]
        complete = any(s.kind == SERVER for s in found) and \
            any(s.attributes.get("db.system") == "redis" for s in found)
        return found if complete else None

    trace = receiver.wait_for(with_redis, "the trace with its Redis calls")
    by_id = {s.span_id: s for s in trace}
    (lookup,) = [s for s in trace if s.name == "l2 lookup"]
    assert by_id[lookup.parent_span_id].name == "resolve"
    commands = [s for s in trace if s.attributes.get("db.system") == "redis"]
    assert any(s.parent_span_id == lookup.span_id for s in commands)
    for command in commands:
        words = str(command.attributes["db.statement"]).split()
        assert all(word == "?" for word in words[1:]), command
    for span in trace:
        text = json.dumps(span.attributes)
        assert not any(sku in text for sku in SKUS), span
