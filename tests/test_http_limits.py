"""The HTTP layer's limits, on a real server on 127.0.0.1: the documented maximum GET is served, what
lies past the parser's limits is a 414 or 431 problem, what the parser refuses is a 400 problem,
and no answer names a version in `Server`.

Requests go through raw sockets: a client library would refuse (or fix) what is sent here. The
service is served as `serve` serves it (tests/support/service_test_server.py), and, at the end,
as a `serve` process, alone and with `--workers 2`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest
from aiohttp import http_parser

from service.runtime.settings import Settings
from service.web.app import create_app
from service.web.http_server import MAX_HEADER_FIELD_BYTES, MAX_HEADER_FIELDS, max_request_target_bytes
from tests.support.api import Api
from tests.support.catalogs import load_catalog, put_recommender
from tests.support.serve_process import ServeProcess, clean_env

ROOT = Path(__file__).resolve().parents[1]
CONTENT = "/v1/recommenders/movies/content"
PROBLEM_JSON = "application/problem+json"
# A failing exchange ends here rather than hanging the suite; a passing one takes milliseconds.
EXCHANGE_TIMEOUT = 30.0
# aiohttp's C parser holds the request target to the line limit; its pure-Python fallback
# (AIOHTTP_NO_EXTENSIONS) the whole line: `GET ` and ` HTTP/1.1` count too.
LINE_LIMIT_COUNTS = (len("GET  HTTP/1.1")
                     if http_parser.HttpRequestParser is http_parser.HttpRequestParserPy else 0)


@dataclasses.dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes
    closed: bool  # the server closed the connection after this answer

    def json(self):
        return orjson.loads(self.body)

    def problem(self, status: int) -> dict:
        """The problem+json body of an answer that must be one, with `status`."""
        assert self.status == status, (self.status, self.body[:500])
        assert self.headers["content-type"].startswith(PROBLEM_JSON), self.headers
        problem = self.json()
        assert problem["status"] == status
        assert problem["type"].startswith("urn:catalog-enricher:problem:")
        return problem


async def exchange(port: int, request: bytes, *, expect_close: bool = False) -> Answer:
    """Send `request` as is on a new connection and read one answer. With `expect_close`, also
    wait for the server to close the connection (a refused request's connection cannot go on)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await asyncio.wait_for(_exchange(reader, writer, request, expect_close),
                                      EXCHANGE_TIMEOUT)
    finally:
        writer.close()


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes,
                    expect_close: bool) -> Answer:
    writer.write(request)
    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
        await writer.drain()  # a refused request may be answered, and closed, before it is sent
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in filter(None, lines):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    closed = False
    if expect_close:
        try:
            closed = await reader.read(1) == b""
        except ConnectionResetError:  # closed with bytes of ours unread: a reset after the answer
            closed = True
    return Answer(int(status_line.split(" ")[1]), headers, body, closed)


def get(target: str, *headers: str) -> bytes:
    return "\r\n".join([f"GET {target} HTTP/1.1", "Host: 127.0.0.1", *headers, "", ""]).encode()


def post(target: str, body: bytes, *headers: str) -> bytes:
    return "\r\n".join([f"POST {target} HTTP/1.1", "Host: 127.0.0.1",
                        f"Content-Length: {len(body)}", *headers, "", ""]).encode() + body


def query_of(ids: list[str]) -> str:
    """`ids` repeated, each ID percent-encoded whole: the longest form a template can send."""
    return "&".join(f"ids={quote(one, safe='')}" for one in ids)


# The documented maximum, 50 IDs of 256 characters, in alphabets of 1, 2 and 4 bytes of UTF-8
# (3, 6 and 12 bytes a character once percent-encoded).
ALPHABETS = {
    "ascii": [chr(ord("0") + n) for n in range(10)] + [chr(ord("A") + n) for n in range(26)]
    + [chr(ord("a") + n) for n in range(14)],
    "two-byte": [chr(0xC0 + n) for n in range(50)],  # À, Á, ... : é is %C3%A9
    "four-byte": [chr(0x1F600 + n) for n in range(50)],  # 😀, 😁, ...
}
MAX_IDS = 50


def longest_ids(alphabet: str) -> list[str]:
    return [character * 256 for character in ALPHABETS[alphabet]]


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, db_pool_min=1, db_pool_max=5, max_content_ids=MAX_IDS)


@pytest.fixture
async def key(admin: Api, make_key) -> str:
    """A transform key of a tenant with a recommender `movies` over a catalog holding 1815."""
    await load_catalog(admin, "movies", [{"id": "1815", "title": "Fleabag"}])
    await put_recommender(admin, "movies", "movies", ("Title", "title"))
    return await make_key("acme", "transform")


@pytest.fixture
async def longest_items(admin: Api, key: str) -> None:
    """Every other ID of each alphabet in the catalog (one import)."""
    lines = [orjson.dumps({"id": one, "title": f"Item {n}"}) for alphabet in ALPHABETS
             for n, one in enumerate(longest_ids(alphabet)) if n % 2 == 0]
    status, body, _ = await admin.call(
        "POST", "/v1/catalogs/movies/items:import", raw=b"\n".join(lines),
        headers={"Content-Type": "application/x-ndjson"})
    assert status == 200 and body["inserted"] == len(lines), body


@pytest.fixture
def port(client) -> int:
    return client.server.port


def bearer(key: str) -> str:
    return f"Authorization: Bearer {key}"


class TestTheDocumentedMaximumAsAGet:
    """50 IDs of 256 characters in the query are served, as the same IDs in a POST are."""

    @pytest.mark.parametrize("alphabet", list(ALPHABETS))
    @pytest.mark.usefixtures("longest_items")
    async def test_answered_as_the_post_of_the_same_ids(self, port: int, key: str, alphabet: str):
        ids = longest_ids(alphabet)
        target = f"{CONTENT}?{query_of(ids)}&locale=de_DE"
        by_get = await exchange(port, get(target, bearer(key)))
        by_post = await exchange(port, post(
            CONTENT, orjson.dumps({"ids": ids, "locale": "de_DE"}), bearer(key),
            "Content-Type: application/json"))
        assert by_get.status == 200, by_get.body[:500]
        assert by_post.status == 200, by_post.body[:500]
        assert by_get.body == by_post.body
        assert by_get.headers["etag"] == by_post.headers["etag"]
        answer = by_get.json()
        assert [item["id"] for item in answer["items"]] == ids[::2]
        assert answer["missing"] == ids[1::2]
        if alphabet == "four-byte":  # the widest: 153,600 bytes of IDs alone
            assert len(target) > MAX_IDS * 256 * 12

    @pytest.mark.usefixtures("longest_items")
    async def test_the_limit_follows_the_setting_for_ids(self, aiohttp_client, settings: Settings,
                                                         key: str):
        """Raising ENRICHER_MAX_CONTENT_IDS raises the line limit with it."""
        doubled = dataclasses.replace(settings, max_content_ids=2 * MAX_IDS)
        client = await aiohttp_client(create_app(doubled))
        ids = longest_ids("four-byte") * 2
        target = f"{CONTENT}?{query_of(ids)}"
        answer = await exchange(client.server.port, get(target, bearer(key)))
        assert answer.status == 200, answer.body[:500]
        assert len(answer.json()["items"]) == len(ids) // 2  # every other ID is in the catalog
        assert len(target) > max_request_target_bytes(settings)  # past the default's limit


class TestPastTheLimits:
    """One byte past a limit is a 414 or 431 problem naming it; at the limit, served."""

    @pytest.mark.parametrize("max_ids", [5, MAX_IDS])
    async def test_a_target_one_byte_past_the_limit_is_a_414(self, aiohttp_client,
                                                             settings: Settings, key: str,
                                                             max_ids: int):
        chosen = dataclasses.replace(settings, max_content_ids=max_ids)
        port = (await aiohttp_client(create_app(chosen))).server.port
        limit = max_request_target_bytes(chosen)
        start = f"{CONTENT}?ids=1815&pad="  # unknown parameters are ignored
        at_limit = start + "x" * (limit - LINE_LIMIT_COUNTS - len(start))

        served = await exchange(port, get(at_limit, bearer(key)))
        assert served.status == 200, served.body[:500]
        assert served.json()["items"] == [{"id": "1815", "Title": "Fleabag"}]

        refused = await exchange(port, get(at_limit + "x", bearer(key)), expect_close=True)
        problem = refused.problem(414)
        assert problem["field"] == "url"
        assert str(limit) in problem["detail"]
        assert "POST" in problem["detail"]
        assert refused.closed

    async def test_a_20_kb_header_is_a_431(self, port: int, key: str):
        answer = await exchange(port, get(f"{CONTENT}?ids=1815", bearer(key),
                                          "X-Padding: " + "p" * 20_000), expect_close=True)
        problem = answer.problem(431)
        assert problem["field"] == "headers"
        assert str(MAX_HEADER_FIELD_BYTES) in problem["detail"]
        assert answer.closed

    async def test_a_header_just_under_the_limit_is_served(self, port: int, key: str):
        # (Just under: aiohttp's C parser counts a field's value, its Python parser the whole
        # line, name and `: ` included.)
        padding = "X-Padding: " + "p" * (MAX_HEADER_FIELD_BYTES - len("X-Padding: "))
        served = await exchange(port, get(f"{CONTENT}?ids=1815", bearer(key), padding))
        assert served.status == 200, served.body[:500]

    async def test_too_many_header_fields_is_a_431(self, port: int, key: str):
        extra = [f"X-Field-{n}: {n}" for n in range(MAX_HEADER_FIELDS)]
        answer = await exchange(port, get(f"{CONTENT}?ids=1815", bearer(key), *extra))
        problem = answer.problem(431)
        assert str(MAX_HEADER_FIELDS) in problem["detail"]


# What the parser refuses: case -> (the raw request, the field its problem names).
REFUSED = {
    "malformed request line": (b"GET /healthz HTTP/1.1 extra\r\nHost: x\r\n\r\n",
                               "request-line"),
    "not HTTP at all": (b"hello there\r\n\r\n", "method"),
    "invalid method": (b"G@T /healthz HTTP/1.1\r\nHost: x\r\n\r\n", "method"),
    "space in a header name": (b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n",
                               "headers"),
    "broken chunk size": (b"POST " + CONTENT.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Type: application/json\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", "body"),
    "chunk longer than its size": (b"POST " + CONTENT.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n"
                                   b"2\r\n{\"ids\"}\r\n0\r\n\r\n", "body"),
    "both Content-Length and chunked": (b"POST " + CONTENT.encode() + b" HTTP/1.1\r\n"
                                        b"Host: x\r\nContent-Length: 2\r\n"
                                        b"Transfer-Encoding: chunked\r\n\r\n{}", "headers"),
}


class TestWhatTheParserRefuses:
    """Each is a 400 problem naming what is wrong, without quoting the request; the connection is
    closed, and the next connection is served."""

    @pytest.mark.parametrize("case", list(REFUSED))
    async def test_a_400_problem_then_the_next_connection_is_served(self, port: int, key: str,
                                                                    case: str):
        raw, field = REFUSED[case]
        answer = await exchange(port, raw, expect_close=True)
        problem = answer.problem(400)
        assert problem["field"] == field, problem
        assert answer.headers["x-request-id"] in problem["instance"]
        assert b"b'" not in answer.body  # the parser's quote of the bytes is not repeated
        assert answer.closed
        after = await exchange(port, get(f"{CONTENT}?ids=1815", bearer(key)))
        assert after.status == 200

    async def test_a_secret_in_a_malformed_header_is_not_repeated(self, port: int, key: str):
        raw = get(f"{CONTENT}?ids=1815", f"Authorization: Bearer {key}\x01")
        answer = await exchange(port, raw, expect_close=True)
        answer.problem(400)
        assert key.encode() not in answer.body
        assert key[3:14].encode() not in answer.body

    async def test_a_body_that_does_not_inflate_is_a_400(self, port: int, key: str):
        body = gzip.compress(b'{"ids": ["1815"]}')[:12] + b"not deflate data"
        answer = await exchange(port, post(CONTENT, body, bearer(key),
                                           "Content-Type: application/json",
                                           "Content-Encoding: gzip"))
        assert answer.problem(400)["field"] == "Content-Encoding"

    async def test_a_body_over_the_size_limit_is_a_413(self, port: int, key: str,
                                                       settings: Settings):
        body = orjson.dumps({"ids": ["1815"], "pad": "x" * settings.max_body_bytes})
        answer = await exchange(port, post(CONTENT, body, bearer(key),
                                           "Content-Type: application/json"))
        assert answer.problem(413)["field"] == "body"


class TestServerHeader:
    """Every answer says `Server: catalog-enricher`, and nothing more."""

    async def test_on_answers_of_every_kind(self, port: int, key: str):
        first = await exchange(port, get(f"{CONTENT}?ids=1815", bearer(key)))
        answers = {
            "200": first,
            "304": await exchange(port, get(f"{CONTENT}?ids=1815", bearer(key),
                                            f"If-None-Match: {first.headers['etag']}")),
            "401": await exchange(port, get(f"{CONTENT}?ids=1815")),
            "404": await exchange(port, get("/nothing-here")),
            "400 of the parser": await exchange(port, b"hello\r\n\r\n"),
            "414": await exchange(port, get("/" + "x" * (max_request_target_bytes(Settings())))),
            "431": await exchange(port, get("/healthz", "X-Padding: " + "p" * 20_000)),
        }
        assert [answer.status for answer in answers.values()] == [200, 304, 401, 404, 400, 414,
                                                                   431]
        assert {name: answer.headers.get("server") for name, answer in answers.items()} == \
            dict.fromkeys(answers, "catalog-enricher")


@pytest.fixture(params=[(), ("--workers", "2")], ids=["serve", "serve --workers 2"])
def serving(request, database_url: str) -> Iterator[ServeProcess]:
    """`catalog-enricher serve --demo` as its own process, alone or with two workers."""
    server = ServeProcess(*request.param, env=clean_env(DATABASE_URL=database_url))
    try:
        if request.param:
            server.wait_serving(2)
        yield server
    finally:
        server.close()


class TestAServeProcess:
    """The same limits and answers in each way the service runs."""

    async def test_limits_and_refusals(self, serving: ServeProcess):
        port, auth = serving.port, bearer(serving.key)
        content = "/v1/recommenders/demo-movies/content"
        ids = longest_ids("four-byte")
        widest = await exchange(port, get(f"{content}?{query_of(ids)}", auth))
        assert widest.status == 200, widest.body[:500]
        assert widest.json()["missing"] == ids

        limit = max_request_target_bytes(Settings())
        start = f"{content}?ids=1&pad="
        at_limit = start + "x" * (limit - LINE_LIMIT_COUNTS - len(start))
        assert (await exchange(port, get(at_limit, auth))).status == 200
        past = await exchange(port, get(at_limit + "x", auth), expect_close=True)
        assert past.problem(414)["field"] == "url"

        header = await exchange(port, get("/healthz", "X-Padding: " + "p" * 20_000))
        header.problem(431)
        malformed = await exchange(port, b"GET /healthz HTTP/1.1 extra\r\n\r\n", expect_close=True)
        malformed.problem(400)
        assert malformed.closed

        served = await exchange(port, get("/healthz"))
        assert served.status == 200
        for answer in (widest, past, header, malformed, served):
            assert answer.headers["server"] == "catalog-enricher"
        assert serving.process.poll() is None


class TestTheDocumentedLimits:
    """The HTTP API page and the OpenAPI document give the limits the server holds."""

    @pytest.mark.parametrize("document", ["docs/http-api.md", "service/web/openapi.json"])
    def test_state_the_served_numbers(self, document: str):
        text = (ROOT / document).read_text(encoding="utf-8")
        for number in (max_request_target_bytes(Settings()), MAX_HEADER_FIELD_BYTES):
            assert f"{number:,}" in text, f"{document} does not state {number:,}"
        assert f"{MAX_HEADER_FIELDS} of them" in text
