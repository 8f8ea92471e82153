"""The soak's clients, each logging every request and answer to the history:

- `braze`: Connected Content renders, GETs of the content route (and the user route) with the key
  as Basic auth's password, a 2 s timeout, and `:retry`: up to 5 tries on a 5xx or a timeout.
- `shim`: Pinpoint batches of 50 endpoints through the Lambda shim's real code (a warm container:
  one interpreter kept alive), with its budget and its one retry; Pinpoint itself tries a batch
  up to 3 times.
- `writer`: price and availability changes (PATCH), one at a time; each write's price is its
  version, so an answer names the write it shows.
- `revoker`: makes a key, uses it on every instance, revokes it, and probes every instance (and
  HAProxy) with it for a few seconds after.
- `sampler`: memory and open files of every service process, Postgres and Redis connections.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import orjson
import psutil
from multidict import CIMultiDict

from bench.soak.deployment import CATALOG, RECOMMENDER, Deployment, item_id
from bench.soak.history import History, price_of, version_shown
from tests.support.shim_process import Shim

CONTENT = f"/v1/recommenders/{RECOMMENDER}/content"
USER_CONTENT = f"/v1/recommenders/{RECOMMENDER}/users/{{user}}/content"
TRANSFORM = f"/v1/recommenders/{RECOMMENDER}/transform"
BRAZE_TIMEOUT = 2.0
BRAZE_TRIES = 5
PINPOINT_TRIES = 3
SHIM_REMAINING_MS = 6000


@dataclass
class Answer:
    status: int | None
    headers: Mapping[str, str]  # case-insensitive (a CIMultiDict)
    body: bytes
    error: str | None


async def send(session: aiohttp.ClientSession, method: str, url: str, *, timeout: float,
               headers: dict[str, str], body: Any = None) -> Answer:
    data = None if body is None else orjson.dumps(body)
    try:
        async with session.request(method, url, data=data, headers=headers,
                                   timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            payload = await response.read()
            return Answer(response.status, response.headers.copy(), payload, None)
    except TimeoutError:
        return Answer(None, CIMultiDict(), b"", "timeout")
    except (aiohttp.ClientError, OSError) as exc:
        return Answer(None, CIMultiDict(), b"", type(exc).__name__)


def described(answer: Answer) -> dict[str, Any]:
    """What the checker needs of an answer."""
    record: dict[str, Any] = {"status": answer.status, "error": answer.error,
                              "content_type": answer.headers.get("Content-Type"),
                              "degraded": answer.headers.get("X-Degraded"),
                              "request_id": answer.headers.get("X-Request-Id")}
    if answer.status is not None and answer.status >= 400:
        try:
            record["problem_type"] = orjson.loads(answer.body).get("type")
        except (orjson.JSONDecodeError, AttributeError):
            record["problem_type"] = None
            record["body_head"] = answer.body[:200].decode(errors="replace")
    return record


def shown_versions(body: bytes) -> dict[str, Any]:
    """{item ID: the version its price shows, or "missing"} of a content answer."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    shown: dict[str, Any] = {i: "missing" for i in answer.get("missing", [])}
    for item in answer.get("items", []):
        price = item.get("Price")
        shown[item["id"]] = version_shown(price) if isinstance(price, str) else None
    return shown


class Clients:
    def __init__(self, deployment: Deployment, history: History, seed: int, *,
                 braze_concurrency: int, pace: float, breaks: frozenset[str] = frozenset()) -> None:
        self.d = deployment
        self.history = history
        self.rng = random.Random(seed)
        self.stop = asyncio.Event()
        self.braze_concurrency = braze_concurrency
        self.pace = pace  # seconds between a client's operations
        # Sabotage, to show the checker catches it (docs/soak.md): `retries` takes the
        # platforms' retries away, `lose-writes` logs every tenth write as acknowledged unsent.
        self.braze_tries = 1 if "retries" in breaks else BRAZE_TRIES
        self.pinpoint_tries = 1 if "retries" in breaks else PINPOINT_TRIES
        self.lose_writes = "lose-writes" in breaks
        self.ops = 0
        self.version = 0

    def next_op(self) -> int:
        self.ops += 1
        return self.ops

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=connector) as session:
            tasks = [asyncio.ensure_future(self.braze(session)) for _ in
                     range(self.braze_concurrency)]
            tasks += [asyncio.ensure_future(self.shim()),
                      asyncio.ensure_future(self.writer(session)),
                      asyncio.ensure_future(self.revoker(session)),
                      asyncio.ensure_future(self.sampler())]
            await self.stop.wait()
            await asyncio.gather(*tasks)

    async def pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)  # pacing, cut short by the stop

    # --- Braze ------------------------------------------------------------------------------

    async def braze(self, session: aiohttp.ClientSession) -> None:
        auth = "Basic " + base64.b64encode(f"braze:{self.d.braze_key}".encode()).decode()
        rng = random.Random(self.rng.random())
        while not self.stop.is_set():
            op = self.next_op()
            if rng.random() < 0.2:
                route, path = "user", USER_CONTENT.format(user=f"user-{rng.randrange(1000)}")
            else:
                ids = rng.sample(self.d.hot_ids, 3) + [
                    item_id(rng.randrange(self.d.item_count)) for _ in range(2)]
                route, path = "content", f"{CONTENT}?ids={','.join(ids)}&locale=en_US"
            started, ok, degraded = time.time(), False, None
            for attempt in range(1, self.braze_tries + 1):
                start = time.time()
                answer = await send(session, "GET", self.d.haproxy.url + path,
                                    timeout=BRAZE_TIMEOUT, headers={"Authorization": auth})
                record = described(answer)
                if answer.status == 200:
                    record["shown"] = shown_versions(answer.body)
                self.history.log("attempt", client="braze", route=route, op=op, attempt=attempt,
                                 start=start, end=time.time(), **record)
                if answer.status == 200:
                    ok, degraded = True, answer.headers.get("X-Degraded")
                    break
                if answer.status is not None and answer.status < 500:
                    break  # Braze's :retry retries 5xx and timeouts only
                await asyncio.sleep(0.05)  # Braze's retries follow each other closely
            self.history.log("op", client="braze", op=op, start=started, end=time.time(),
                             ok=ok, tries=attempt, degraded=degraded)
            await self.pause(self.pace)

    # --- the Lambda shim --------------------------------------------------------------------

    async def shim(self) -> None:
        container = await Shim.start()
        env = {"ENRICHER_URL": self.d.haproxy.url + TRANSFORM,
               "ENRICHER_API_KEY": self.d.braze_key}
        rng = random.Random(self.rng.random())
        try:
            while not self.stop.is_set():
                op = self.next_op()
                event = {"Endpoints": {f"ep{n}": {"RecommendationItems": rng.sample(
                    self.d.hot_ids, 3)} for n in range(50)}}
                started, ok = time.time(), False
                for attempt in range(1, self.pinpoint_tries + 1):
                    start = time.time()
                    answer = await container.invoke(event, remaining_ms=SHIM_REMAINING_MS, **env)
                    # The enriched endpoints (one left out when none of its items can be shown),
                    # or the shim's EnricherError, on which Pinpoint retries the batch.
                    ok = isinstance(answer.get("result"), dict)
                    self.history.log("attempt", client="shim", op=op, attempt=attempt,
                                     start=start, end=time.time(), status=200 if ok else None,
                                     endpoints=len(answer["result"]) if ok else None,
                                     error=None if ok else f"{answer.get('error')}: "
                                                           f"{answer.get('message')}"[:500])
                    if ok:
                        break
                self.history.log("op", client="shim", op=op, start=started, end=time.time(),
                                 ok=ok, tries=attempt, degraded=None)
                await self.pause(self.pace * 4)
        finally:
            await container.stop()

    # --- the catalog writer -----------------------------------------------------------------

    async def writer(self, session: aiohttp.ClientSession) -> None:
        headers = {"Authorization": f"Bearer {self.d.admin_key}",
                   "Content-Type": "application/json"}
        rng = random.Random(self.rng.random())
        while not self.stop.is_set():
            self.version += 1
            version = self.version
            item = rng.choice(self.d.hot_ids)
            available = version % 4 != 0  # a quarter of the writes take the item off sale
            start = time.time()
            if self.lose_writes and version % 10 == 0:
                self.history.log("write", client="writer", version=version, item=item,
                                 available=available, start=start, end=start, status=200,
                                 error=None, content_type="application/json", degraded=None)
                continue
            answer = await send(
                session, "PATCH", f"{self.d.haproxy.url}/v1/catalogs/{CATALOG}/items/{item}",
                timeout=10, headers=headers,
                body={"price": {"amount": price_of(version), "currency": "USD"},
                      "available": available})
            self.history.log("write", client="writer", version=version, item=item,
                             available=available, start=start, end=time.time(),
                             **described(answer))
            await self.pause(self.pace)

    # --- key revocations --------------------------------------------------------------------

    async def revoker(self, session: aiohttp.ClientSession) -> None:
        admin = {"Authorization": f"Bearer {self.d.admin_key}",
                 "Content-Type": "application/json"}
        rng = random.Random(self.rng.random())
        while not self.stop.is_set():
            start = time.time()
            made = await send(session, "POST", f"{self.d.haproxy.url}/v1/keys", timeout=10,
                              headers=admin, body={"scopes": ["transform"], "label": "revoked"})
            self.history.log("attempt", client="revoker", op=self.next_op(), attempt=1,
                             start=start, end=time.time(), **described(made))
            if made.status != 201 and made.status != 200:
                await self.pause(1)
                continue
            key = orjson.loads(made.body)
            secret, prefix = key["key"], key["prefix"]
            # Used first on every instance, so that each holds it in its key cache.
            for instance in self.d.instances * 3:
                await self.probe(session, instance.url, secret, prefix, "before")
            start = time.time()
            revoked = await send(session, "DELETE", f"{self.d.haproxy.url}/v1/keys/{prefix}",
                                 timeout=10, headers=admin)
            self.history.log("revoke", client="revoker", prefix=prefix, start=start,
                             end=time.time(), **described(revoked))
            if revoked.status == 204:
                until = time.time() + 2.5
                while time.time() < until and not self.stop.is_set():
                    target = rng.choice([*(i.url for i in self.d.instances),
                                         self.d.haproxy.url])
                    await self.probe(session, target, secret, prefix, "after")
                    await asyncio.sleep(0.05)  # paces the probes
            await self.pause(self.pace * 10)

    async def probe(self, session, base: str, secret: str, prefix: str, when: str) -> None:
        start = time.time()
        answer = await send(session, "GET", f"{base}{CONTENT}?ids={self.d.hot_ids[0]}",
                            timeout=2, headers={"Authorization": f"Bearer {secret}"})
        self.history.log("attempt", client="probe", op=0, attempt=1, key=prefix, when=when,
                         target=base, start=start, end=time.time(), **described(answer))

    # --- resources --------------------------------------------------------------------------

    async def sampler(self) -> None:
        while not self.stop.is_set():
            await self.sample()
            await self.pause(5)

    async def sample(self, label: str = "during") -> None:
        self.history.log("resources", label=label, time=time.time(),
                         processes=processes_of(self.d),
                         postgres=await postgres_connections(self.d),
                         redis=await redis_clients(self.d))


def processes_of(d: Deployment) -> list[dict[str, Any]]:
    found = []
    for instance in d.instances:
        supervisor = instance.supervisor()
        if supervisor is None:
            continue
        for role, process in (("supervisor", supervisor),
                              *(("worker", w) for w in instance.workers())):
            with contextlib.suppress(psutil.Error):
                found.append({"instance": instance.name, "role": role, "pid": process.pid,
                              "rss": process.memory_info().rss,
                              "fds": process.num_fds(),
                              "started": process.create_time()})
    return found


async def postgres_connections(d: Deployment) -> int | None:
    """Client connections of the service on the current primary (ours and replication excluded)."""
    try:
        conn = await asyncpg.connect(d.databases.primary.url, timeout=2)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return None
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
            " AND pid <> pg_backend_pid()", timeout=2)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return None
    finally:
        with contextlib.suppress(Exception):
            await conn.close(timeout=1)


async def redis_clients(d: Deployment) -> int | None:
    client = d.redis.master.client()
    try:
        return int((await client.info("clients"))["connected_clients"])
    except Exception:
        return None
    finally:
        await client.aclose()
