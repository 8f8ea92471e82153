"""AWS Lambda shim: forwards an Amazon Pinpoint recommender event, or an Amazon Connect outbound
campaign's custom action batch, to catalog-enricher.

Deploy this one file (`catalog-enricher shim-zip shim.zip`), handler `lambda_shim.handler`. It uses
the Python standard library only and imports nothing from the service, so it can be zipped alone.

Environment:
    ENRICHER_URL         the transform URL, e.g. https://enricher.example.com/v1/recommenders/movies/transform
    ENRICHER_CONNECT_URL the connect URL, e.g. https://enricher.example.com/v1/recommenders/movies/connect;
                         unset, it is ENRICHER_URL with its last `/transform` made `/connect`
    ENRICHER_API_KEY     a key with the `transform` scope, or instead one of:
    ENRICHER_API_KEY_SECRET_ARN   a Secrets Manager secret holding the key (the string itself,
                                  or JSON {"api_key": "..."})
    ENRICHER_API_KEY_PARAMETER    an SSM parameter (SecureString) holding the key
                         these two are read once per cold start with the boto3 that the Lambda
                         Python runtime ships (imported only then, so the shim stays stdlib-only
                         wherever they are unset)
    ENRICHER_MARGIN_MS   time kept back from the Lambda's remaining time (default 300)

Which hook: an event with `Items.CustomerProfiles` is Connect's, any other Pinpoint's.

Traces: the W3C `traceparent` (and `tracestate`) the invocation is given is sent on, so that the
service's spans join the caller's trace: from the client context's custom fields (an invocation
made with ClientContext {"custom": {"traceparent": ...}}), else from the X-Ray trace header Lambda
sets with active tracing (`_X_AMZN_TRACE_ID`, written as a traceparent: the same IDs). A malformed
one is not sent.

Behaviour: one keep-alive connection per warm container, reused across invocations (reopened once,
without counting as a retry, when the server closed it while idle). Each call's timeout is the
Lambda's remaining time, but at most what the caller waits (Pinpoint 15 s, Connect 30 s), minus
the margin; that budget is sent as `X-Deadline-Ms` so the service answers within it. A failed
attempt (network error, timeout, 5xx, 429) is retried once if time is left. Then, for Pinpoint,
the shim raises EnricherError naming the URL and the cause, so that Pinpoint retries the batch (it
tries up to 3 times). For Connect it never raises (an exception fails every profile of the batch):
every profile is answered `{"send": false, "reason": ...}` instead, and the cause is logged. It
also answers every profile of a Connect batch exactly once, in order, whatever came back, and a
ResultData over Connect's 32 KB as `send: false`. The API key never appears in an error, an
answer or a log line.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import re
import select
import socket
import ssl
import time
import urllib.parse

DEFAULT_MARGIN_MS = 300
PINPOINT_WAIT_MS = 15_000  # Pinpoint waits at most 15 s for the function
CONNECT_WAIT_MS = 30_000  # Connect outbound campaigns, 30 s
RESULT_DATA_LIMIT = 32_000  # Connect's 32 KB per profile, however a KB is counted
MIN_ATTEMPT_MS = 50  # below this, an attempt cannot succeed: do not start one
RETRYABLE_STATUSES = frozenset((408, 425, 429, 500, 502, 503, 504))
USER_AGENT = "catalog-enricher-lambda-shim/1"
STALE_CONNECTION_ERRORS = (
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
    ConnectionResetError,
    BrokenPipeError,
    ConnectionAbortedError,
)


log = logging.getLogger("lambda_shim")


class EnricherError(Exception):
    """The event could not be enriched; Pinpoint will retry the batch."""


# Module scope on purpose: Lambda keeps it between invocations of a warm container.
_connection: http.client.HTTPConnection | None = None
_connection_target: tuple[str, str] | None = None
_stored_key: tuple[str, str] | None = None  # (where it was read from, the key), per cold start
KEY_SOURCES = ("ENRICHER_API_KEY", "ENRICHER_API_KEY_SECRET_ARN", "ENRICHER_API_KEY_PARAMETER")
# W3C Trace Context, version 00; X-Ray's trace header (Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;...).
TRACEPARENT = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
TRACESTATE = re.compile(r"[\x20-\x7e]{1,512}")
XRAY_ROOT = re.compile(r"(?:^|;)Root=1-([0-9a-f]{8})-([0-9a-f]{24})(?:;|$)")
XRAY_PARENT = re.compile(r"(?:^|;)Parent=([0-9a-f]{16})(?:;|$)")
XRAY_SAMPLED = re.compile(r"(?:^|;)Sampled=1(?:;|$)")


def handler(event, context):
    """Lambda entry point. A Pinpoint event: the enriched endpoint map, or EnricherError. A
    Connect batch: one result per profile, always (never an exception)."""
    if _is_connect_event(event):
        return _connect(event, context)
    url = os.environ.get("ENRICHER_URL", "").strip()
    if not url:
        raise EnricherError("ENRICHER_URL is not set")
    api_key = _api_key(url)
    target = _target(url, "ENRICHER_URL")
    return _forward(url, target, api_key, event, _deadline(context, PINPOINT_WAIT_MS),
                    getattr(context, "aws_request_id", None), _trace_headers(context))


def _is_connect_event(event):
    items = event.get("Items") if isinstance(event, dict) else None
    return isinstance(items, dict) and "CustomerProfiles" in items


def _connect(event, context):
    """Forward a Connect batch; on any failure, every profile `send: false` with the cause."""
    profile_ids = _profile_ids(event)
    try:
        url = _connect_url()
        api_key = _api_key(url)
        target = _target(url, "ENRICHER_CONNECT_URL")
        answer = _forward(url, target, api_key, event, _deadline(context, CONNECT_WAIT_MS),
                          getattr(context, "aws_request_id", None), _trace_headers(context))
        return _every_profile(profile_ids, answer)
    except Exception as exc:  # anything at all: an exception would fail the whole batch
        reason = str(exc) if isinstance(exc, EnricherError) else f"{type(exc).__name__}: {exc}"
        log.error("catalog-enricher could not answer the batch; every profile is answered "
                  "send: false: %s", reason)
        return _every_profile(profile_ids, None, reason)


def _profile_ids(event):
    """The batch's ProfileIds in order (an entry without one cannot be answered: skipped)."""
    entries = event["Items"]["CustomerProfiles"]
    if not isinstance(entries, list):
        return []
    return [entry["ProfileId"] for entry in entries
            if isinstance(entry, dict) and isinstance(entry.get("ProfileId"), str)]


def _connect_url():
    url = os.environ.get("ENRICHER_CONNECT_URL", "").strip()
    if url:
        return url
    base = os.environ.get("ENRICHER_URL", "").strip()
    if not base:
        raise EnricherError("ENRICHER_CONNECT_URL is not set (nor ENRICHER_URL to make it from)")
    parts = urllib.parse.urlsplit(base)
    route = re.fullmatch(r"(.*/v1/recommenders/[^/]+)/transform/?", parts.path)
    if route is None:
        raise EnricherError("ENRICHER_CONNECT_URL is not set, and ENRICHER_URL does not end in "
                            "/v1/recommenders/NAME/transform to make it from")
    return urllib.parse.urlunsplit(parts._replace(path=route.group(1) + "/connect"))


def _every_profile(profile_ids, answer, reason=None):
    """One result per ProfileId, in order: the service's where it gave a usable one."""
    given = {}
    entries = answer.get("Items", {}).get("CustomerProfiles") if isinstance(answer, dict) else None
    for entry in entries if isinstance(entries, list) else ():
        if isinstance(entry, dict) and isinstance(entry.get("Id"), str):
            given.setdefault(entry["Id"], []).append(entry.get("ResultData"))
    results = []
    for profile_id in profile_ids:
        answered = given.get(profile_id)
        data = answered.pop(0) if answered else None
        if not isinstance(data, dict):
            data = {"send": False, "reason": reason or "catalog-enricher gave no result for "
                    "this profile"}
        elif len(json.dumps(data)) > RESULT_DATA_LIMIT:
            data = {"send": False, "reason": f"the result is over {RESULT_DATA_LIMIT} bytes"}
        results.append({"Id": profile_id, "ResultData": data})
    return {"Items": {"CustomerProfiles": results}}


def _deadline(context, caller_waits_ms):
    """When the service's answer must be in: the Lambda's remaining time, at most what the caller
    waits, less the margin."""
    margin_ms = _int_env("ENRICHER_MARGIN_MS", DEFAULT_MARGIN_MS)
    budget_ms = min(context.get_remaining_time_in_millis(), caller_waits_ms) - margin_ms
    return time.monotonic() + budget_ms / 1000


def _target(url, variable):
    target = urllib.parse.urlsplit(url)
    if target.scheme not in ("http", "https") or not target.hostname:
        raise EnricherError(f"{variable} must be an http(s) URL, got {url!r}")
    return target


def _trace_headers(context):
    """`traceparent` (and `tracestate`) to send on: the client context's, else X-Ray's."""
    custom = getattr(getattr(context, "client_context", None), "custom", None)
    given = custom if isinstance(custom, dict) else {}
    traceparent = given.get("traceparent")
    if isinstance(traceparent, str) and TRACEPARENT.fullmatch(traceparent):
        headers = {"traceparent": traceparent}
        tracestate = given.get("tracestate")
        if isinstance(tracestate, str) and TRACESTATE.fullmatch(tracestate):
            headers["tracestate"] = tracestate
        return headers
    xray = os.environ.get("_X_AMZN_TRACE_ID", "")
    root, parent = XRAY_ROOT.search(xray), XRAY_PARENT.search(xray)
    if root is None or parent is None:
        return {}
    flags = "01" if XRAY_SAMPLED.search(xray) else "00"
    traceparent = f"00-{root.group(1)}{root.group(2)}-{parent.group(1)}-{flags}"
    return {"traceparent": traceparent} if TRACEPARENT.fullmatch(traceparent) else {}


def _forward(url, target, api_key, event, deadline, request_id, trace_headers=None):
    """POST the event; the parsed answer, or EnricherError naming the URL and the cause."""
    body = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    failures = []
    for attempt in (1, 2):
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        if remaining_ms < MIN_ATTEMPT_MS:
            failures.append(f"attempt {attempt}: no time left ({max(remaining_ms, 0)} ms)")
            break
        try:
            status, data = _post(target, api_key, body, deadline, request_id, trace_headers)
        except (OSError, http.client.HTTPException) as exc:
            _close()
            failures.append(f"attempt {attempt}: {_describe(exc)}")
            continue
        if status == 200:
            try:
                return json.loads(data)
            except ValueError as exc:
                raise EnricherError(f"catalog-enricher at {url} answered invalid JSON: {exc}") from exc
        cause = f"HTTP {status}: {_problem_detail(data)}"
        if status not in RETRYABLE_STATUSES:
            raise EnricherError(f"catalog-enricher at {url} refused the event: {cause}")
        failures.append(f"attempt {attempt}: {cause}")
    raise EnricherError(f"catalog-enricher at {url} failed: " + "; ".join(failures))


def _api_key(url):
    """The key from ENRICHER_API_KEY, or from Secrets Manager / SSM (read once per cold start)."""
    global _stored_key
    sources = [name for name in KEY_SOURCES if os.environ.get(name, "").strip()]
    if not sources:
        raise EnricherError(f"ENRICHER_API_KEY is not set (needed to call {url}); set it, "
                            "ENRICHER_API_KEY_SECRET_ARN or ENRICHER_API_KEY_PARAMETER")
    if len(sources) > 1:
        raise EnricherError("set only one of " + ", ".join(sources) + " (they name one key)")
    source = sources[0]
    where = os.environ[source].strip()
    if source == "ENRICHER_API_KEY":
        return where
    if _stored_key is not None and _stored_key[0] == where:
        return _stored_key[1]
    try:
        # Imported only here: the Lambda runtime ships boto3, and nothing else in the shim needs it.
        import boto3

        in_secret = source == "ENRICHER_API_KEY_SECRET_ARN"
        client = boto3.client("secretsmanager" if in_secret else "ssm")
        try:  # read once per cold start: no client is kept around
            if in_secret:
                value = _key_in_secret(client.get_secret_value(SecretId=where)["SecretString"])
            else:
                value = client.get_parameter(Name=where, WithDecryption=True)["Parameter"]["Value"]
        finally:
            client.close()
    except Exception as exc:  # ImportError, botocore's ClientError, network errors, missing keys
        raise EnricherError(f"cannot read the API key from {source}={where}: "
                            f"{type(exc).__name__}: {exc}") from exc
    value = (value or "").strip()
    if not value:
        raise EnricherError(f"{source}={where} holds no API key")
    _stored_key = (where, value)
    return value


def _key_in_secret(secret):
    """A secret is the key itself, or a JSON object with an `api_key` field (as the console
    writes key/value secrets)."""
    if secret.lstrip().startswith("{"):
        try:
            return json.loads(secret).get("api_key", "")
        except (ValueError, AttributeError):
            return ""
    return secret


def _post(target, api_key, body, deadline, request_id, trace_headers=None):
    path = (target.path or "/") + (f"?{target.query}" if target.query else "")
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {api_key}",
        "User-Agent": USER_AGENT,
    }
    if request_id:
        headers["X-Request-Id"] = str(request_id)
    if trace_headers:
        headers.update(trace_headers)
    connection, reused = _open(target, deadline)
    try:
        return _exchange(connection, path, headers, body, deadline)
    except STALE_CONNECTION_ERRORS:
        if not reused:
            raise
    # The server closed the idle keep-alive connection as we sent: open a new one, once.
    _close()
    connection, _ = _open(target, deadline)
    return _exchange(connection, path, headers, body, deadline)


def _exchange(connection, path, headers, body, deadline):
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("no time left before the deadline")
    connection.sock.settimeout(remaining)
    headers = {**headers, "X-Deadline-Ms": str(max(1, int(remaining * 1000)))}
    connection.request("POST", path, body=body, headers=headers)
    response = connection.getresponse()
    data = response.read()
    if response.will_close:
        _close()
    return response.status, data


def _open(target, deadline):
    """The warm connection if it is still usable, else a new one. Returns (connection, reused)."""
    global _connection, _connection_target
    key = (target.scheme, target.netloc)
    if _connection is not None and _connection_target == key and _connection.sock is not None:
        if not _closed_by_peer(_connection.sock):
            return _connection, True
        _close()
    _close()
    timeout = max(deadline - time.monotonic(), 0.001)
    if target.scheme == "https":
        connection = http.client.HTTPSConnection(
            target.hostname, target.port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=timeout)
    connection.connect()
    connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _connection, _connection_target = connection, key
    return connection, False


def _closed_by_peer(sock):
    """An idle keep-alive socket that is readable has been closed (or broken) by the server."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _close():
    global _connection, _connection_target
    if _connection is not None:
        with contextlib.suppress(OSError):
            _connection.close()
    _connection, _connection_target = None, None


def _describe(exc):
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out before the deadline"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the service running?)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host ({exc})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error ({exc.reason or exc})"
    return f"{type(exc).__name__}: {exc}"


def _problem_detail(data):
    try:
        problem = json.loads(data)
        detail = problem.get("detail") or problem.get("title")
        return str(detail)[:500] if detail else data[:200].decode("utf-8", "replace")
    except (ValueError, AttributeError):
        return data[:200].decode("utf-8", "replace")


def _int_env(name, default):
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default
