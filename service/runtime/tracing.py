"""OpenTelemetry traces: off unless the standard OTEL_* variables ask for them.

Traces are on when an exporter is named: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, or `OTEL_TRACES_EXPORTER` is `otlp` or `console`;
`OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` keeps them off whatever else is set.
Everything else is the SDK's to read from the environment as the specification says
(`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER(_ARG)`, `OTEL_PROPAGATORS`,
`OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_*`): no ENRICHER_* setting of ours.

Off, `tracer` stays None and nothing of OpenTelemetry is imported: every instrumented place tests
that one module attribute (`if tracing.tracer is not None`), and the warm paths (an L1 hit, the
warm transform) have no instrumented place at all. On, each serving process (each worker of
`--workers N`, after the fork: the exporter's thread and connection are its own) calls
`start()`, which builds the SDK's TracerProvider with a batching OTLP exporter and turns on the
maintained instrumentations of asyncpg (a span per statement, its SQL text with `$1` placeholders,
never the parameters) and redis-py (the command with its arguments replaced by `?`). The spans of
our own (a request's server span, the resolver's tiers, Personalize calls) are made where they
happen, with `span()`.

The SDK and the instrumentations are the optional extra `otel` (`pip install
'catalog-enricher[otel]'`); asked for traces without it, the service logs why and serves untraced.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

# The tracer of this process while traces are on; None while off (the default).
tracer: Any = None
_provider: Any = None

# OTLP over HTTP/protobuf: the Python SDK's exporter for it needs no gRPC runtime.
DEFAULT_PROTOCOL = "http/protobuf"
# What the SDK reads by itself (docs/configuration.md lists them); the "traces on" log line names
# those that are set, never their values (OTEL_EXPORTER_OTLP_HEADERS may hold a token).
READ_BY_THE_SDK = (
    "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG", "OTEL_PROPAGATORS", "OTEL_EXPORTER_OTLP_*", "OTEL_BSP_*",
)


def wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the OTEL_* variables ask for traces."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(exporter or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def start(service_version: str | None = None) -> bool:
    """Turn traces on in this process if the environment asks for them (once; a no-op when they
    are on already or not asked for). Returns whether they are on."""
    global tracer, _provider
    if tracer is not None:
        return True
    if not wanted():
        return False
    try:
        provider = _make_provider(service_version)
    except ImportError as exc:
        log.warning("OTEL_* variables ask for traces, but OpenTelemetry is not installed "
                    "(pip install 'catalog-enricher[otel]'); serving without traces",
                    extra={"missing": exc.name})
        return False
    _instrument_libraries(provider)
    _api.load()
    _provider = provider
    tracer = provider.get_tracer("catalog-enricher", service_version)
    prefixes = tuple(name.rstrip("*") for name in READ_BY_THE_SDK)
    log.info("traces on", extra={"exporter": os.environ.get("OTEL_TRACES_EXPORTER") or "otlp",
                                 "configured": sorted(n for n in os.environ
                                                      if n.startswith(prefixes))})
    return True


def stop() -> None:
    """Export what is left and turn traces off (the end of a serving process)."""
    global tracer, _provider
    provider, _provider, tracer = _provider, None, None
    if provider is not None:
        _uninstrument_libraries()
        provider.shutdown()


def _make_provider(service_version: str | None) -> Any:
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {SERVICE_VERSION: service_version} if service_version else {}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes[SERVICE_NAME] = "catalog-enricher"
    # Resource.create reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME (which wins over ours);
    # TracerProvider reads OTEL_TRACES_SAMPLER(_ARG) (parent-based, always on, by default).
    provider = TracerProvider(resource=Resource.create(attributes))
    for name in _exporter_names():
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    return provider


KNOWN_EXPORTERS = ("otlp", "console")


def _exporter_names() -> list[str]:
    names = [n.strip().lower() for n in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    unknown = [n for n in names if n and n != "none" and n not in KNOWN_EXPORTERS]
    if unknown:
        # Not a reason to stop serving (each worker would die in turn): said, and left out.
        log.warning("OTEL_TRACES_EXPORTER names exporters this service does not have; left out",
                    extra={"unknown": unknown, "known": list(KNOWN_EXPORTERS)})
    return [n for n in names if n in KNOWN_EXPORTERS]


def _exporter(name: str) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter
        return ConsoleSpanExporter()
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or DEFAULT_PROTOCOL).strip()
    if protocol == "grpc":
        # Needs opentelemetry-exporter-otlp-proto-grpc (and grpcio), which the extra leaves out.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter()  # endpoint, headers, timeout, compression: OTEL_EXPORTER_OTLP_*


def _instrument_libraries(provider: Any) -> None:
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    # capture_parameters stays False: a statement's parameters are item IDs and keys' hashes.
    AsyncPGInstrumentor(capture_parameters=False).instrument(tracer_provider=provider)
    # redis-py's instrumentation writes each command with its arguments as `?` (cache keys hold
    # item IDs).
    RedisInstrumentor().instrument(tracer_provider=provider)


def _uninstrument_libraries() -> None:
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    AsyncPGInstrumentor().uninstrument()
    RedisInstrumentor().uninstrument()


def span(name: str, attributes: Mapping[str, Any] | None = None) -> Any:
    """A span of ours, child of the current one, made current while the `with` block runs; off,
    a context that does nothing. Callers on a hot path test `tracer is not None` first, so that
    off costs not even this call."""
    if tracer is None:
        return contextlib.nullcontext()
    return tracer.start_as_current_span(name, attributes=attributes)


def server_span(name: str, headers: Mapping[str, str], attributes: Mapping[str, Any]) -> Any:
    """The server span of an incoming request, continuing its `traceparent` if it has one (W3C
    Trace Context, or what OTEL_PROPAGATORS names): a context manager making it current."""
    return tracer.start_as_current_span(name, context=_api.extract(headers),
                                        kind=_api.server_kind, attributes=attributes)


def log_fields() -> dict[str, str]:
    """`trace_id` and `span_id` of the current span, lowercase hex as the OpenTelemetry spec
    asks of non-OTLP log formats; empty when traces are off or no span is current."""
    if tracer is None:
        return {}
    context = _api.current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


class _Api:
    """The OpenTelemetry API functions used per request, imported once when traces start (an
    import statement in a function costs a lookup at every call)."""

    def load(self) -> None:
        from opentelemetry import propagate, trace

        self.extract = propagate.extract
        self.server_kind = trace.SpanKind.SERVER
        self.current_span = trace.get_current_span


_api = _Api()


def set_error(current: Any, exc: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    current.set_status(Status(StatusCode.ERROR, type(exc).__name__))
