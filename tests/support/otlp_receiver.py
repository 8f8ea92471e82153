"""A local OTLP/HTTP trace receiver, for tests: what an OpenTelemetry Collector's `otlp` receiver
does with `POST /v1/traces` (protobuf `ExportTraceServiceRequest`, as the OTLP specification's
"OTLP/HTTP" section says), decoded with opentelemetry-proto's own messages and kept as plain
`Span`s. It runs on its own event loop in a thread, so that a test can point a `serve` subprocess
(or a test client in this process) at it and poll what arrived."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import threading
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

PROTOBUF = "application/x-protobuf"


@dataclasses.dataclass(frozen=True)
class Span:
    trace_id: str  # lowercase hex, as in logs and traceparent
    span_id: str
    parent_span_id: str  # "" for a root span
    name: str
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind
    attributes: dict[str, Any]
    service_name: str


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which) if which else None


def decode(body: bytes) -> list[Span]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(Span(
                    trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(), name=span.name, kind=span.kind,
                    attributes={kv.key: _value(kv.value) for kv in span.attributes},
                    service_name=resource.get("service.name", ""),
                ))
    return spans


class OtlpReceiver:
    """`with OtlpReceiver() as receiver:` listens on 127.0.0.1 at `receiver.endpoint` (what
    OTEL_EXPORTER_OTLP_ENDPOINT names: the exporter appends /v1/traces)."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.requests = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="otlp-receiver", daemon=True)
        self.endpoint = ""

    async def _traces(self, request: web.Request) -> web.Response:
        if request.content_type != PROTOBUF:
            return web.Response(status=415, text="OTLP/HTTP JSON is not spoken here")
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        spans = decode(body)
        with self._lock:
            self.spans.extend(spans)
            self.requests += 1
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type=PROTOBUF)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.endpoint = f"http://127.0.0.1:{port}"
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        if not self._ready.wait(30):
            raise AssertionError("the OTLP receiver did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)

    def received(self) -> list[Span]:
        with self._lock:
            return list(self.spans)

    def wait_for(self, check: Callable[[list[Span]], Any], what: str,
                 timeout: float = 30) -> Any:
        """Poll until `check(spans)` gives something truthy; that, or AssertionError."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = check(self.received())
            if found:
                return found
            time.sleep(0.05)
        names = sorted({s.name for s in self.received()})
        raise AssertionError(f"no {what} within {timeout} s; received spans: {names}")
