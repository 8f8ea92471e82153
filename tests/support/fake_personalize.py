"""A fake Amazon Personalize runtime: a real aiohttp server on 127.0.0.1 speaking its protocol.

`POST /recommendations` as botocore's personalize-runtime service model (rest-json, 2018-05-22)
describes GetRecommendations: a JSON body with `campaignArn` or `recommenderArn`, `userId`,
`numResults`, `context`, `filterArn`, `filterValues`; the answer `{"itemList": [{"itemId",
"score"}], "recommendationId"}`; errors as `x-amzn-ErrorType` plus `{"message"}` (how botocore's
rest-json parser reads them). It records every request (headers, body, whether its SigV4
signature verifies against the credentials it knows) and can be made slow, throttling, failing,
refusing the credentials, or closing connections; `stop` takes it down (connection refused).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ACCESS_KEY = "AKIDFAKEPERSONALIZE1"
SECRET_KEY = "fake-secret-key-for-the-tests-only-0000000"
REGION = "us-east-1"


@dataclass
class Recorded:
    headers: dict[str, str]
    body: dict[str, Any]
    signature_valid: bool


@dataclass
class FakePersonalize:
    """Answers `users[userId]` ([(item ID, score)]), or `popular` for a user it does not know."""

    users: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    popular: list[tuple[str, float]] = field(default_factory=list)
    mode: str = "ok"  # ok | slow | hold | throttle | fail | deny | close
    delay: float = 4.0  # seconds, in `slow` mode
    requests: list[Recorded] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # a request came in
    release: asyncio.Event = field(default_factory=asyncio.Event)  # `hold` mode answers then
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> FakePersonalize:
        app = web.Application()
        app.router.add_post("/recommendations", self._recommendations)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port or self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            self.release.set()
            await self._runner.cleanup()
            self._runner = None

    async def _recommendations(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = orjson.loads(raw) if raw else {}
        self.requests.append(Recorded(dict(request.headers), body, _signed(request, raw)))
        self.arrived.set()
        if self.mode == "slow":
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.release.wait(), self.delay)
        elif self.mode == "hold":
            await self.release.wait()
        elif self.mode == "throttle":
            return _error(400, "ThrottlingException", "Rate exceeded")
        elif self.mode == "fail":
            return _error(500, "InternalServerError", "Internal failure")
        elif self.mode == "deny":
            return _error(403, "UnrecognizedClientException",
                          "The security token included in the request is invalid.")
        elif self.mode == "close":
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        if not _signed(request, raw):
            return _error(403, "InvalidSignatureException", "The request signature we "
                          "calculated does not match the signature you provided.")
        arn = body.get("campaignArn") or body.get("recommenderArn")
        if not arn or not body.get("userId"):
            return _error(400, "InvalidInputException", "campaignArn and userId are required")
        entries = self.users.get(body["userId"], self.popular)[: body.get("numResults", 25)]
        answer = {"itemList": [{"itemId": i, "score": s} for i, s in entries],
                  "recommendationId": f"RID-{body['userId']}"}
        return web.Response(body=orjson.dumps(answer), content_type="application/json")


def _error(status: int, code: str, message: str) -> web.Response:
    return web.Response(status=status, body=orjson.dumps({"message": message}),
                        content_type="application/json",
                        headers={"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/"})


def _signed(request: web.Request, raw: bytes) -> bool:
    """Does the request's SigV4 signature verify against the fake's credentials?"""
    authorization = request.headers.get("Authorization", "")
    algorithm, _, fields = authorization.partition(" ")
    parts = dict(p.strip().split("=", 1) for p in fields.split(",") if "=" in p)
    if algorithm != "AWS4-HMAC-SHA256" or not {"Credential", "SignedHeaders", "Signature"} <= set(parts):
        return False
    access_key, date, region, service, _ = parts["Credential"].split("/")
    if (access_key, region, service) != (ACCESS_KEY, REGION, "personalize"):
        return False
    names = parts["SignedHeaders"].split(";")
    headers = {name: request.headers[name] for name in names if name in request.headers}
    signed = AWSRequest(method=request.method, url=f"http://{request.host}{request.path_qs}",
                        data=raw, headers=headers)
    signed.context["timestamp"] = request.headers.get("X-Amz-Date", "")
    auth = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "personalize", REGION)
    expected = auth.signature(auth.string_to_sign(signed, auth.canonical_request(signed)), signed)
    return date == signed.context["timestamp"][:8] and expected == parts["Signature"]
