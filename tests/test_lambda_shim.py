"""The Lambda shim, run as Lambda would run it (its own interpreter, standard library only),
against the real service on a real port: Pinpoint events, and Connect batches (made by the local
Connect of tests/support/fake_connect.py), which it never answers with an exception."""

from __future__ import annotations

import contextlib
import socket
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from service.cli import write_shim_zip
from service.web.app import create_app
from tests.support.api import Api
from tests.support.catalogs import load_catalog, put_recommender
from tests.support.fake_connect import FakeConnect
from tests.support.shim_process import SERVICE_DIR, Shim
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.timing

EVENT = {"Endpoints": {"e1": {"ChannelType": "EMAIL", "RecommendationItems": ["1", "2"]}}}


@pytest.fixture
async def shim():
    shim = await Shim.start()
    yield shim
    await shim.stop()


@pytest.fixture
async def served(settings, admin: Api, make_key):
    """The real service on a real port, behind a proxy that counts TCP connections."""
    await load_catalog(admin, "movies", [{"id": "1", "title": "One"}, {"id": "2", "title": "Two"}])
    await put_recommender(admin, "movies", "movies", ("Title", "title"),
                          connect={"ids_from": "Attributes.recommended_items"})
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    proxy = await TcpProxy("127.0.0.1", port).start()
    key = await make_key("acme", "transform")
    env = {"ENRICHER_URL": f"http://127.0.0.1:{proxy.port}/v1/recommenders/movies/transform",
           "ENRICHER_API_KEY": key}
    yield proxy, env
    await proxy.stop()
    await runner.cleanup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TestWarmContainer:
    """Warm invocations reuse one keep-alive connection."""

    async def test_second_call_reuses_the_connection(self, shim: Shim, served):
        proxy, env = served
        first = await shim.invoke(EVENT, **env)
        second = await shim.invoke(EVENT, **env)
        assert first["result"]["e1"]["Recommendations"] == {"Title": ["One", "Two"]}
        assert second["result"] == first["result"]
        assert proxy.connections == 1
        assert first["modules_outside_stdlib"] == []

    async def test_reopens_once_when_the_server_closed_it(self, shim: Shim, served):
        proxy, env = served
        assert "result" in await shim.invoke(EVENT, **env)
        proxy.cut()  # the server side drops the idle keep-alive connection
        answer = await shim.invoke(EVENT, **env)
        assert "result" in answer, answer
        assert proxy.connections == 2


class TestFailures:
    """Failures raise an error naming the URL and the cause, before the Lambda's time runs out."""

    async def test_stopped_service(self, shim: Shim):
        url = f"http://127.0.0.1:{free_port()}/v1/recommenders/movies/transform"
        answer = await shim.invoke(EVENT, 3000, ENRICHER_URL=url, ENRICHER_API_KEY="ce_x")
        assert answer["error"] == "EnricherError"
        assert url in answer["message"] and "connection refused" in answer["message"]
        assert answer["elapsed_ms"] < 3000

    async def test_stalled_service_gives_up_before_the_deadline(self, shim: Shim, served):
        proxy, env = served
        proxy.stall()
        answer = await shim.invoke(EVENT, 1500, **env)
        proxy.resume()
        assert answer["error"] == "EnricherError"
        assert env["ENRICHER_URL"] in answer["message"] and "timed out" in answer["message"]
        assert answer["elapsed_ms"] < 1500

    async def test_refused_event_is_not_retried_and_hides_the_key(self, shim: Shim, served):
        _, env = served
        bad_key = "ce_" + "Z" * 43
        answer = await shim.invoke(EVENT, **{**env, "ENRICHER_API_KEY": bad_key})
        assert "HTTP 401" in answer["message"] and bad_key not in answer["message"]

    async def test_missing_configuration(self, shim: Shim):
        answer = await shim.invoke(EVENT, ENRICHER_URL="", ENRICHER_API_KEY="")
        assert "ENRICHER_URL is not set" in answer["message"]


class TestRetry:
    """A 5xx is retried once within the budget, with the remaining budget as X-Deadline-Ms."""

    async def test_retries_once_after_a_server_error(self, shim: Shim):
        seen: list[int] = []

        async def flaky(request: web.Request) -> web.Response:
            seen.append(int(request.headers["X-Deadline-Ms"]))
            if len(seen) == 1:
                return web.json_response({"detail": "warming up"}, status=503)
            return web.json_response({"e1": {"Recommendations": {"T": ["ok"]}}})

        async with serving(flaky) as url:
            answer = await shim.invoke(EVENT, 4000, ENRICHER_URL=f"{url}/t",
                                       ENRICHER_API_KEY="ce_k", ENRICHER_MARGIN_MS="300")
        assert answer["result"] == {"e1": {"Recommendations": {"T": ["ok"]}}}
        assert len(seen) == 2
        assert seen[0] <= 3700 and seen[1] <= seen[0]


@contextlib.asynccontextmanager
async def serving(answer: Callable[[web.Request], Awaitable[web.Response]]
                  ) -> AsyncIterator[str]:
    """A stand-in for the service on a real port, answering every POST with `answer`; its URL."""
    app = web.Application()
    app.router.add_post("/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    finally:
        await runner.cleanup()


def not_sent(answer: dict, connect: FakeConnect, event: dict) -> list[str]:
    """The reasons of a shim's answer where every profile is send: false (it never raised)."""
    assert "error" not in answer, answer
    results = connect.check(event, answer["result"])
    assert all(r["send"] is False for r in results), results
    return [r["reason"] for r in results]


@pytest.fixture
def connect() -> FakeConnect:
    return FakeConnect(seed=11)


class TestConnect:
    """A Connect batch goes to the connect route; whatever fails, every profile is answered
    (send: false and why) within Connect's 30 s, and the shim never raises."""

    async def test_a_batch_through_the_shim(self, shim: Shim, served, connect: FakeConnect,
                                            admin: Api):
        proxy, env = served
        data = [connect.customer_data(ids=["1", "2"]), connect.customer_data(),
                connect.customer_data(ids=["2"], notes="ß" * 40_000), "{broken"]
        event = connect.event([connect.profile(data[n % 4]) for n in range(100)])
        answer = await shim.invoke(event, 10_000, **env)  # ENRICHER_URL's /transform → /connect
        assert answer["modules_outside_stdlib"] == []
        results = connect.check(event, answer["result"])
        assert [r["send"] for r in results[:4]] == [True, False, True, False], results[:4]
        assert results[0]["Recommendations"] == {"Title": ["One", "Two"]}
        assert "no item IDs at Attributes.recommended_items" in results[1]["reason"]
        assert "CustomerData is not valid JSON" in results[3]["reason"]
        # Connect retries the batch after the item changed: the same answers.
        assert (await admin.patch("/v1/catalogs/movies/items/1", {"title": "Uno"}))[0] == 200
        again = await shim.invoke(connect.retry(event), 10_000, **env)
        assert again["result"] == answer["result"]
        assert proxy.connections == 1

    async def test_a_connect_url_of_its_own(self, shim: Shim, served, connect: FakeConnect):
        _, env = served
        base = env["ENRICHER_URL"].removesuffix("/v1/recommenders/movies/transform")
        event = connect.event([connect.profile(connect.customer_data(ids=["2"]))])
        answer = await shim.invoke(event, **{**env, "ENRICHER_URL": base + "/v1/transform",
                                             "ENRICHER_CONNECT_URL":
                                                 base + "/v1/recommenders/movies/connect"})
        [result] = connect.check(event, answer["result"])
        assert result["Recommendations"] == {"Title": ["Two"]}

    async def test_no_connect_url_to_be_had(self, shim: Shim, served, connect: FakeConnect):
        _, env = served
        event = connect.event([connect.profile(), connect.profile()])
        base = env["ENRICHER_URL"].removesuffix("/v1/recommenders/movies/transform")
        answer = await shim.invoke(event, **{**env, "ENRICHER_URL": base + "/v1/transform"})
        assert all("ENRICHER_CONNECT_URL is not set" in r for r in not_sent(answer, connect, event))
        answer = await shim.invoke(event, ENRICHER_URL="", ENRICHER_API_KEY="")
        assert all("is not set" in r for r in not_sent(answer, connect, event))

    async def test_service_down(self, shim: Shim, connect: FakeConnect):
        url = f"http://127.0.0.1:{free_port()}/v1/recommenders/movies/connect"
        event = connect.event([connect.profile() for _ in range(100)])
        answer = await shim.invoke(event, 3000, ENRICHER_CONNECT_URL=url, ENRICHER_API_KEY="ce_x")
        assert all("connection refused" in r for r in not_sent(answer, connect, event))
        assert answer["elapsed_ms"] < 3000

    async def test_stalled_service_past_the_budget(self, shim: Shim, served,
                                                   connect: FakeConnect):
        proxy, env = served
        proxy.stall()
        event = connect.event([connect.profile() for _ in range(10)])
        answer = await shim.invoke(event, 1500, **env)
        proxy.resume()
        assert all("timed out" in r for r in not_sent(answer, connect, event))
        assert answer["elapsed_ms"] < 1500

    async def test_a_refused_key_is_named_and_hidden(self, shim: Shim, served,
                                                     connect: FakeConnect):
        _, env = served
        bad_key = "ce_" + "Z" * 43
        event = connect.event([connect.profile()])
        answer = await shim.invoke(event, **{**env, "ENRICHER_API_KEY": bad_key})
        [reason] = not_sent(answer, connect, event)
        assert "HTTP 401" in reason and bad_key not in reason

    async def test_budgets_are_at_most_what_each_caller_waits(self, shim: Shim,
                                                              connect: FakeConnect):
        seen: list[int] = []

        async def record(request: web.Request) -> web.Response:
            seen.append(int(request.headers["X-Deadline-Ms"]))
            return web.json_response({"Items": {"CustomerProfiles": []}})

        async with serving(record) as url:
            env = {"ENRICHER_URL": url + "/v1/recommenders/m/transform",
                   "ENRICHER_API_KEY": "ce_k", "ENRICHER_MARGIN_MS": "300"}
            await shim.invoke(connect.event([]), 60_000, **env)
            await shim.invoke(EVENT, 60_000, **env)
        connect_budget, pinpoint_budget = seen
        assert 25_000 < connect_budget <= 30_000 - 300
        assert 10_000 < pinpoint_budget <= 15_000 - 300

    async def test_whatever_the_service_answers_every_profile_is_answered(
            self, shim: Shim, connect: FakeConnect):
        event = connect.event([connect.profile() for _ in range(3)])
        first, second, third = (p["ProfileId"] for p in event["Items"]["CustomerProfiles"])
        answers = [
            {"Items": {"CustomerProfiles": [
                {"Id": "stranger", "ResultData": {"send": True}},
                {"Id": third, "ResultData": {"send": True, "big": "x" * 40_000}},
                {"Id": second, "ResultData": "not an object"},
                {"Id": first, "ResultData": {"send": True, "ok": 1}}]}},
            ["not", "the", "shape"],
        ]

        async def answer(request: web.Request) -> web.Response:
            return web.json_response(answers.pop(0))

        async with serving(answer) as url:
            env = {"ENRICHER_CONNECT_URL": url + "/c", "ENRICHER_API_KEY": "ce_k"}
            out_of_order = await shim.invoke(event, **env)
            wrong_shape = await shim.invoke(event, **env)
            invalid = await shim.invoke(event, **{**env, "ENRICHER_CONNECT_URL": "ftp://x"})
        results = connect.check(event, out_of_order["result"])
        assert results[0] == {"send": True, "ok": 1}
        assert results[1] == {"send": False, "reason": "catalog-enricher gave no result for "
                                                       "this profile"}
        assert results[2] == {"send": False, "reason": "the result is over 32000 bytes"}
        assert len(not_sent(wrong_shape, connect, event)) == 3
        assert all("http(s) URL" in r for r in not_sent(invalid, connect, event))

    async def test_a_malformed_batch_gets_what_can_be_answered(self, shim: Shim, served):
        _, env = served
        event = {"Items": {"CustomerProfiles": [{"ProfileId": "a"}, {"no": "id"}, 5]}}
        answer = await shim.invoke(event, **env)
        [result] = answer["result"]["Items"]["CustomerProfiles"]
        assert result["Id"] == "a" and "HTTP 422" in result["ResultData"]["reason"]
        answer = await shim.invoke({"Items": {"CustomerProfiles": "x"}}, **env)
        assert answer["result"] == {"Items": {"CustomerProfiles": []}}


def test_zip_holds_only_the_shim(tmp_path: Path):
    out = tmp_path / "shim.zip"
    assert write_shim_zip(out) == 0
    with zipfile.ZipFile(out) as archive:
        assert archive.namelist() == ["lambda_shim.py"]
        assert archive.read("lambda_shim.py") == (SERVICE_DIR / "lambda_shim.py").read_bytes()


@pytest.fixture
async def recording(settings, admin: Api, make_key):
    """The real service on a real port, noting the trace headers of each request it answers."""
    await load_catalog(admin, "movies", [{"id": "1", "title": "One"}, {"id": "2", "title": "Two"}])
    await put_recommender(admin, "movies", "movies", ("Title", "title"),
                          connect={"ids_from": "Attributes.recommended_items"})
    app = create_app(settings)
    seen: list[tuple[str | None, str | None]] = []

    async def note(request: web.Request, response: web.StreamResponse) -> None:
        seen.append((request.headers.get("traceparent"), request.headers.get("tracestate")))

    app.on_response_prepare.append(note)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    key = await make_key("acme", "transform")
    env = {"ENRICHER_URL": f"http://127.0.0.1:{port}/v1/recommenders/movies/transform",
           "ENRICHER_API_KEY": key, "_X_AMZN_TRACE_ID": ""}
    yield seen, env
    await runner.cleanup()


class TestTraceContext:
    """The shim sends on the trace context its invocation was given, so that the service's spans
    join the caller's trace (docs/observability.md)."""

    TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    async def test_the_client_contexts_traceparent_is_forwarded(self, shim: Shim, recording):
        seen, env = recording
        answer = await shim.invoke(EVENT, client_context={
            "traceparent": self.TRACEPARENT, "tracestate": "vendor=abc"}, **env)
        assert "result" in answer, answer
        assert seen == [(self.TRACEPARENT, "vendor=abc")]

    async def test_a_connect_batch_forwards_it_too(self, shim: Shim, recording,
                                                   connect: FakeConnect):
        seen, env = recording
        event = connect.event([connect.profile(connect.customer_data(ids=["1"]))])
        answer = await shim.invoke(event, client_context={"traceparent": self.TRACEPARENT}, **env)
        assert connect.check(event, answer["result"])[0]["send"] is True
        assert seen == [(self.TRACEPARENT, None)]

    async def test_xray_trace_header_is_written_as_a_traceparent(self, shim: Shim, recording):
        seen, env = recording
        env["_X_AMZN_TRACE_ID"] = ("Root=1-5759e988-bd862e3fe1be46a994272793;"
                                   "Parent=53995c3f42cd8ad8;Sampled=1")
        await shim.invoke(EVENT, **env)
        assert seen == [("00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01", None)]

    async def test_none_given_or_malformed_none_sent(self, shim: Shim, recording):
        seen, env = recording
        await shim.invoke(EVENT, **env)
        await shim.invoke(EVENT, client_context={"traceparent": "00-xyz-01"}, **env)
        await shim.invoke(EVENT, client_context={
            "traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"}, **env)
        assert seen == [(None, None)] * 3
