"""The faults, and the seeded schedule they come from.

Each fault is injected while the clients run and logged with its start, its end (when the
deployment is whole again: the instance serves, the new standby streams, the new Redis replica
is known to the sentinels) and what it did.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable

from bench.soak.deployment import Deployment
from bench.soak.history import History
from tests.support.owned_servers import OwnedRedis

KINDS = ("worker_kill", "instance_kill", "pg_failover", "redis_failover", "pg_stall",
         "pg_cut", "rolling_restart")


def schedule(seed: int, count: int) -> list[str]:
    """`count` faults: every kind once in a seeded order, then again, and so on, so that a run
    long enough has each kind and no kind twice before every other came once."""
    rng = random.Random(seed)
    kinds: list[str] = []
    while len(kinds) < count:
        batch = list(KINDS)
        rng.shuffle(batch)
        kinds.extend(batch)
    return kinds[:count]


class Faults:
    def __init__(self, deployment: Deployment, history: History, seed: int) -> None:
        self.d = deployment
        self.history = history
        self.rng = random.Random(seed + 1)
        self.generation = 0

    async def inject(self, kind: str) -> None:
        start = time.time()
        action: Callable[[], Awaitable[str]] = getattr(self, kind)
        try:
            detail = await action()
            error = None
        except Exception as exc:
            detail, error = "", f"{type(exc).__name__}: {exc}"
        self.history.log("fault", name=kind, start=start, end=time.time(), detail=detail,
                         error=error)
        self.history.flush()

    async def worker_kill(self) -> str:
        candidates = [(i, w) for i in self.d.instances for w in i.workers()]
        instance, worker = self.rng.choice(candidates)
        os.kill(worker.pid, signal.SIGKILL)
        return f"SIGKILL worker {worker.pid} of {instance.name}"

    async def instance_kill(self) -> str:
        instance = self.rng.choice(self.d.instances)
        await asyncio.to_thread(instance.kill)
        instance.start()
        await instance.wait_ready()
        await self.d.haproxy.wait_up(instance.name)
        return f"SIGKILL {instance.name} (supervisor and workers), started again"

    async def pg_failover(self) -> str:
        """Stop the primary (a clean shutdown: its last WAL reaches the standby), promote the
        standby, then rebuild a standby from the new primary where the old one was."""
        dbs = self.d.databases
        old, new = dbs.primary, dbs.standby
        if new is None:
            return "skipped: no standby"
        old_proxy = dbs.proxy_of_primary()
        await asyncio.to_thread(old.stop, "fast")
        await asyncio.to_thread(new.promote)
        promoted = time.time()
        dbs.primary, dbs.standby = new, None
        dbs.retired.append(old)
        self.generation += 1
        rebuilt = await asyncio.to_thread(
            new.standby, self.d.folder / f"pg-standby-{self.generation}")
        await asyncio.to_thread(rebuilt.start)
        old_proxy.upstream_port = rebuilt.port  # where the old primary was, now the standby
        old_proxy.cut()
        dbs.standby = rebuilt
        return (f"stopped the primary :{old.port}, promoted :{new.port} "
                f"(+{promoted:.3f}), standby rebuilt on :{rebuilt.port}")

    async def redis_failover(self) -> str:
        """Stop the master; the sentinels promote the replica; a new replica follows it."""
        redis = self.d.redis
        old = redis.master
        old.stop()
        redis.retired.append(old)
        sentinel = redis.sentinels[0]
        deadline = time.monotonic() + 30
        while (port := await sentinel.master_port()) == old.port:
            if time.monotonic() > deadline:
                raise RuntimeError("the sentinels did not fail over within 30 s")
            await asyncio.sleep(0.1)  # paces the poll of the sentinels' view
        switched = time.time()
        new = next(r for r in redis.replicas if r.port == port)
        redis.replicas.remove(new)
        redis.master = new
        self.generation += 1
        replica = OwnedRedis(self.d.folder / f"redis-r{self.generation}", replica_of=new)
        await replica.start()
        redis.replicas.append(replica)
        for each in redis.sentinels:
            await each.wait_knows_replicas(1, within=30)
        return f"stopped master :{old.port}; :{port} master at +{switched:.3f}; replica :{replica.port}"

    async def pg_stall(self) -> str:
        proxy = self.d.databases.proxy_of_primary()
        with proxy.stalled():
            await asyncio.sleep(3)  # the fault: the primary silent for 3 s
        return f"primary's proxy :{proxy.port} stalled 3 s"

    async def pg_cut(self) -> str:
        dbs = self.d.databases
        dbs.to_primary.cut()
        dbs.to_standby.cut()
        return "every Postgres connection cut"

    async def rolling_restart(self) -> str:
        for instance in self.d.instances:
            await instance.stop()
            instance.start()
            await instance.wait_ready()
            # As a rolling deploy does: the next goes once the load balancer sends to this one.
            await self.d.haproxy.wait_up(instance.name)
        return "SIGTERM and start, one instance at a time: " + ", ".join(
            i.name for i in self.d.instances)
