"""What the fake Braze and the fake Iterable share: a real aiohttp server on 127.0.0.1 holding user
profiles, with the faults a sync must survive.

- `limit` requests per `window` seconds (a fixed window), over it a 429. With `rate_headers`
  (Braze) every answer carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
  `X-RateLimit-Reset` (the UTC epoch second the window resets); `advertise=False` keeps them to
  the 429s (a limit shared with other integrations, which no answer foretells). Without
  `rate_headers` (Iterable) a 429 names no reset.
- `fail_burst`: the next N requests answer 503.
- `throttle_burst`: the next N requests answer 429 (with `rate_headers`, a reset in the next
  second): the window used up by the workspace's other integrations, whatever our own pace.
- `delay`: seconds before each answer (a slow platform).
- `refuse`: user keys the platform refuses inside a successful answer (a partial failure).
- `hold_after`: once that many requests were applied, later ones wait without being applied
  (until the client goes away): a sync killed then has lost nothing the platform applied.
- The key is checked (401 otherwise); `max_batch` is the platform's limit (400 over it), and
  `max_body_bytes` its limit on a request's body (4 MB for both; 413 over it).

A profile update is applied, and counted in `writes`, only when the answer is about to go out.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web


@dataclass
class FakeProfilePlatform:
    api_key: str
    max_batch: int
    limit: int | None = None
    rate_headers: bool = True
    advertise: bool = True
    window: float = 1.0
    fail_burst: int = 0
    throttle_burst: int = 0
    max_body_bytes: int = 4_000_000
    largest_body: int = 0
    delay: float = 0.0
    refuse: set[str] = field(default_factory=set)
    hold_after: int | None = None
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    writes: Counter = field(default_factory=Counter)
    changed_rewrites: list[str] = field(default_factory=list)  # users written again, differently
    applied: int = 0  # requests whose updates were applied
    statuses: Counter = field(default_factory=Counter)
    request_times: list[float] = field(default_factory=list)  # monotonic, every request
    port: int = 0
    _window_start: float = 0.0
    _window_count: int = 0
    _runner: web.AppRunner | None = None

    path = "/"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeProfilePlatform:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(self.path, self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def users_written_twice(self) -> list[str]:
        return [user for user, times in self.writes.items() if times > 1]

    # -- the protocol's parts, per platform ----------------------------------------------------

    def authorized(self, request: web.Request) -> bool:
        raise NotImplementedError

    def updates(self, body: Any) -> list[tuple[str, dict[str, Any]]] | None:
        """(user, fields) per update, or None when the body is not this platform's."""
        raise NotImplementedError

    def answer(self, refused: list[tuple[int, str]], applied: int) -> tuple[int, dict[str, Any]]:
        raise NotImplementedError

    # -- the server ---------------------------------------------------------------------------

    def _rate_headers(self, now: float, throttled: bool = False) -> dict[str, str]:
        if self.limit is None or not self.rate_headers or not (throttled or self.advertise):
            return {}
        reset = math.ceil(time.time() + (self._window_start + self.window - now))
        return {"X-RateLimit-Limit": str(self.limit),
                "X-RateLimit-Remaining": str(max(0, self.limit - self._window_count)),
                "X-RateLimit-Reset": str(reset)}

    async def _handle(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        self.request_times.append(now)
        if not self.authorized(request):
            return self._status(401, {"message": "Invalid API key"})
        if self.limit is not None:
            if now >= self._window_start + self.window:
                self._window_start, self._window_count = now, 0
            self._window_count += 1
            if self._window_count > self.limit:
                return self._status(429, {"message": "rate limited"},
                                    self._rate_headers(now, throttled=True))
        if self.throttle_burst > 0:
            self.throttle_burst -= 1
            reset = {"X-RateLimit-Reset": str(math.ceil(time.time()) + 1)} \
                if self.rate_headers else {}
            return self._status(429, {"message": "rate limited"}, reset)
        if self.fail_burst > 0:
            self.fail_burst -= 1
            return self._status(503, {"message": "unavailable"}, self._rate_headers(now))
        try:
            body = await request.read()
            self.largest_body = max(self.largest_body, len(body))
            if len(body) > self.max_body_bytes:
                return self._status(413, {"message": "Request Entity Too Large"})
            updates = self.updates(orjson.loads(body))
        except orjson.JSONDecodeError:
            updates = None
        if updates is None:
            return self._status(400, {"message": "malformed body"})
        if len(updates) > self.max_batch:
            return self._status(400, {"message": f"at most {self.max_batch} users a request"})
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.hold_after is not None and self.applied >= self.hold_after:
            await asyncio.Event().wait()  # until the client goes away (the handler is cancelled)
        refused = []
        for index, (user, fields) in enumerate(updates):
            if user in self.refuse:
                refused.append((index, user))
                continue
            profile = self.profiles.setdefault(user, {})
            if user in self.writes and any(profile.get(k) != v for k, v in fields.items()):
                self.changed_rewrites.append(user)
            profile.update(fields)
            self.writes[user] += 1
        self.applied += 1
        status, body = self.answer(refused, len(updates) - len(refused))
        return self._status(status, body, self._rate_headers(now))

    def _status(self, status: int, body: dict[str, Any],
                headers: dict[str, str] | None = None) -> web.Response:
        self.statuses[status] += 1
        return web.json_response(body, status=status, headers=headers)
