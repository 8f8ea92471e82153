"""The soak's deployment, all on 127.0.0.1 and all its own: Postgres primary + streaming standby
(each behind a TCP proxy, so a fault can stall or cut it, and so a failover only retargets a
proxy), Redis master + replica + three sentinels, the fake Personalize runtime, N instances of
`serve --workers 2`, and HAProxy in front of them.

The instances reach Postgres as production would: `DATABASE_URL` names both proxies with
`target_session_attrs=read-write` (it follows a failover), `DATABASE_READ_URL` the same two with
`prefer-standby`; Redis through the sentinels. Every blocking step (pg_ctl, pg_basebackup) runs in
a thread, so the clients on the event loop keep their pace while a fault is injected.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.support.fake_personalize import ACCESS_KEY, REGION, SECRET_KEY, FakePersonalize
from tests.support.owned_servers import (
    SENTINEL_SERVICE,
    OwnedPostgres,
    OwnedRedis,
    OwnedSentinel,
    free_port,
)
from tests.support.tcp_proxy import TcpProxy

ROOT = Path(__file__).resolve().parents[2]
CATALOG = "shop"
RECOMMENDER = "shop"
TENANT = "soak"
# Per worker: the documented bound is 120 MiB + 1.1 x ENRICHER_CACHE_MAX_BYTES (docs/kubernetes.md).
CACHE_MAX_BYTES = 32 * 1024 * 1024
WORKER_MEMORY_BOUND = 120 * 1024 * 1024 + int(1.1 * CACHE_MAX_BYTES)
SUPERVISOR_MEMORY_BOUND = 120 * 1024 * 1024
POOL_MAX = 6  # ENRICHER_DB_POOL_MAX: 3 instances x 2 workers x 2 pools stay well inside 100


def run_cli(env: dict[str, str], *args: str, stdin: bytes | None = None) -> str:
    """`python -m service ARGS`: its stdout (a new key is printed there); fails loudly."""
    done = subprocess.run([sys.executable, "-m", "service", *args], env=env, cwd=ROOT,
                          input=stdin, capture_output=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"catalog-enricher {' '.join(args)} failed:\n"
                           f"{done.stderr.decode(errors='replace')[-3000:]}")
    return done.stdout.decode()


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ENRICHER_", "PROMETHEUS_", "AWS_"))
           and k not in ("DATABASE_URL", "DATABASE_READ_URL", "REDIS_URL")}
    return {**env, **extra}


class Instance:
    """`serve --workers 2` on a port of its own, kept across restarts (HAProxy names it)."""

    def __init__(self, name: str, env: dict[str, str], folder: Path) -> None:
        self.name = name
        self.env = env
        self.port = free_port()
        self.folder = folder
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        log = (self.folder / f"{self.name}.log").open("ab")
        # A session of its own: a kill of the instance reaches the supervisor and its workers.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port",
             str(self.port), "--workers", "2"], env=self.env, cwd=ROOT, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def ready(self) -> bool:
        try:
            # An http:// URL of our own making, never a file: one.
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as answer:  # noqa: S310
                return answer.status == 200
        except OSError:
            return False

    async def wait_ready(self, within: float = 90) -> None:
        deadline = time.monotonic() + within
        while not await asyncio.to_thread(self.ready):
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"instance {self.name} exited; see {self.folder}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"instance {self.name} not ready within {within} s")
            await asyncio.sleep(0.1)  # paces the poll: nothing to wait on but the port

    def supervisor(self) -> psutil.Process | None:
        if self.process is None or self.process.poll() is not None:
            return None
        with contextlib.suppress(psutil.Error):
            return psutil.Process(self.process.pid)
        return None

    def workers(self) -> list[psutil.Process]:
        supervisor = self.supervisor()
        if supervisor is None:
            return []
        with contextlib.suppress(psutil.Error):
            return [c for c in supervisor.children() if c.status() != psutil.STATUS_ZOMBIE]
        return []

    def kill(self) -> None:
        """SIGKILL to the supervisor and every worker at once (an OOM kill of the pod)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    async def stop(self, grace: float = 40) -> None:
        """SIGTERM, as a rolling deploy sends it; the instance drains and exits."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                break
            await asyncio.sleep(0.05)  # paces the poll of its exit


HAPROXY_CONFIG = """\
global
    maxconn 4096
    stats socket {socket} mode 600 level admin

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout check 2s
    # A refused connection (an instance restarting) or a connection closed before any answer
    # (a worker killed mid-request) is tried again, on another server.
    retries 3
    retry-on conn-failure empty-response
    option redispatch 1

frontend soak
    bind 127.0.0.1:{port}
    default_backend enrichers

backend enrichers
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 500ms fall 2 rise 2
{servers}
"""


class HAProxy:
    def __init__(self, folder: Path, instances: list[Instance], *, checked: bool = True) -> None:
        self.folder = folder
        self.checked = checked
        self.port = free_port()
        self.instances = instances
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        check = " check" if self.checked else ""
        servers = "\n".join(f"    server {i.name} 127.0.0.1:{i.port}{check}"
                            for i in self.instances)
        text = HAPROXY_CONFIG.format(port=self.port, servers=servers,
                                     socket=self.folder / "haproxy.sock")
        if not self.checked:  # sabotage: no health checks, no retries (docs/soak.md)
            text = text.replace("    retry-on conn-failure empty-response\n", "    retries 0\n")
        config = self.folder / "haproxy.cfg"
        config.write_text(text)
        log = (self.folder / "haproxy.log").open("ab")
        self.process = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=log,
                                        stderr=subprocess.STDOUT)
        log.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    async def servers_up(self) -> set[str]:
        """The servers HAProxy's health checks find up now (its stats, on the admin socket)."""
        try:
            reader, writer = await asyncio.open_unix_connection(str(self.folder / "haproxy.sock"))
        except OSError:
            return set()
        writer.write(b"show stat\n")
        await writer.drain()
        text = (await reader.read()).decode()
        writer.close()
        lines = [line.split(",") for line in text.splitlines() if line and line[0] != "#"]
        return {row[1] for row in lines if len(row) > 17 and row[0] == "enrichers"
                and (row[17].startswith("UP") or (not self.checked and row[17] == "no check"))}

    async def wait_up(self, name: str, within: float = 30) -> None:
        deadline = time.monotonic() + within
        while name not in await self.servers_up():
            if time.monotonic() > deadline:
                raise RuntimeError(f"HAProxy did not see {name} up within {within} s")
            await asyncio.sleep(0.1)  # paces the poll of HAProxy's view


@dataclass
class Databases:
    """The primary and the standby, each reached through a proxy of its own."""

    primary: OwnedPostgres
    standby: OwnedPostgres | None
    to_primary: TcpProxy
    to_standby: TcpProxy
    retired: list[OwnedPostgres] = field(default_factory=list)

    def urls(self) -> tuple[str, str]:
        hosts = f"127.0.0.1:{self.to_primary.port},127.0.0.1:{self.to_standby.port}"
        write = f"postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write&sslmode=disable"
        read = f"postgresql://postgres@{hosts}/postgres?target_session_attrs=prefer-standby&sslmode=disable"
        return write, read

    def proxy_of_primary(self) -> TcpProxy:
        return (self.to_primary if self.to_primary.upstream_port == self.primary.port
                else self.to_standby)


@dataclass
class RedisSet:
    master: OwnedRedis
    replicas: list[OwnedRedis]
    sentinels: list[OwnedSentinel]
    retired: list[OwnedRedis] = field(default_factory=list)

    def url(self) -> str:
        return ("redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
                + f"/{SENTINEL_SERVICE}/0")


@dataclass
class Deployment:
    folder: Path
    databases: Databases
    redis: RedisSet
    personalize: FakePersonalize
    instances: list[Instance]
    haproxy: HAProxy
    admin_key: str
    braze_key: str
    hot_ids: list[str]
    item_count: int

    async def stop(self) -> None:
        self.haproxy.stop()
        await asyncio.gather(*(i.stop(grace=20) for i in self.instances),
                             return_exceptions=True)
        await self.personalize.stop()
        for server in (*self.redis.sentinels, *self.redis.replicas, self.redis.master,
                       *self.redis.retired):
            with contextlib.suppress(Exception):
                server.stop()
        await self.databases.to_primary.stop()
        await self.databases.to_standby.stop()
        for cluster in (self.databases.standby, self.databases.primary,
                        *self.databases.retired):
            if cluster is not None:
                await asyncio.to_thread(cluster.stop, "immediate")


def item_id(n: int) -> str:
    return f"p{n:06d}"


def catalog_lines(count: int) -> bytes:
    """NDJSON of `count` items, each at version 0: price 0.00 USD, available."""
    return b"".join(
        b'{"id":"%s","title":"Product %d","price":{"amount":"0.00","currency":"USD"},'
        b'"available":true}\n' % (item_id(n).encode(), n) for n in range(count))


async def start_deployment(folder: Path, *, instances: int, items: int, hot: int,
                           log: callable = print, lb_checks: bool = True,
                           redis_apart: bool = False) -> Deployment:
    """Start everything; on a failure, stop what started and raise. `redis_apart` (sabotage)
    gives each instance a Redis prefix of its own: nothing one publishes reaches another."""
    started: list[callable] = []
    try:
        return await _start(folder, instances=instances, items=items, hot=hot, log=log,
                            started=started, lb_checks=lb_checks, redis_apart=redis_apart)
    except BaseException:
        for stop in reversed(started):
            with contextlib.suppress(Exception):
                result = stop()
                if asyncio.iscoroutine(result):
                    await result
        raise


async def _start(folder: Path, *, instances: int, items: int, hot: int, log, started,
                 lb_checks: bool, redis_apart: bool) -> Deployment:
    log(f"soak: Postgres primary in {folder}")
    primary = OwnedPostgres(folder / "pg-a")
    await asyncio.to_thread(primary.init)
    await asyncio.to_thread(primary.start)
    started.append(lambda: primary.stop("immediate"))
    direct = base_env(DATABASE_URL=primary.url)
    await asyncio.to_thread(run_cli, direct, "migrate")
    await asyncio.to_thread(run_cli, direct, "tenants", "create", TENANT)
    admin_key = (await asyncio.to_thread(run_cli, direct, "keys", "create", "--tenant", TENANT,
                                         "--scope", "admin", "--label", "soak-admin")).strip()
    braze_key = (await asyncio.to_thread(run_cli, direct, "keys", "create", "--tenant", TENANT,
                                         "--scope", "transform", "--label", "braze")).strip()
    log(f"soak: importing {items} items")
    catalog_file = folder / "catalog.ndjson"
    catalog_file.write_bytes(catalog_lines(items))
    await asyncio.to_thread(run_cli, direct, "import", "--tenant", TENANT, "--catalog", CATALOG,
                            "--create-catalog", "--no-progress", str(catalog_file))
    log("soak: standby (pg_basebackup)")
    standby = await asyncio.to_thread(primary.standby, folder / "pg-b")
    await asyncio.to_thread(standby.start)
    started.append(lambda: standby.stop("immediate"))
    to_primary = await TcpProxy("127.0.0.1", primary.port).start()
    to_standby = await TcpProxy("127.0.0.1", standby.port).start()
    started.extend((to_primary.stop, to_standby.stop))
    databases = Databases(primary, standby, to_primary, to_standby)

    log("soak: Redis master, replica, 3 sentinels")
    master = OwnedRedis(folder / "redis-0")
    await master.start()
    started.append(master.stop)
    replica = OwnedRedis(folder / "redis-1", replica_of=master)
    await replica.start()
    started.append(replica.stop)
    sentinels = [OwnedSentinel(folder / f"sentinel-{n}", master) for n in range(3)]
    for sentinel in sentinels:
        await sentinel.start()
        started.append(sentinel.stop)
    for sentinel in sentinels:
        await sentinel.wait_knows_replicas(1)
    redis_set = RedisSet(master, [replica], sentinels)

    hot_ids = [item_id(n) for n in range(min(hot, items))]
    personalize = FakePersonalize(popular=[(i, 1.0 - n / 100) for n, i in
                                           enumerate(hot_ids[:10])])
    await personalize.start()
    started.append(personalize.stop)

    write_url, read_url = databases.urls()
    env = base_env(
        DATABASE_URL=write_url, DATABASE_READ_URL=read_url, REDIS_URL=redis_set.url(),
        ENRICHER_DB_POOL_MAX=str(POOL_MAX), ENRICHER_DB_CONNECT_TIMEOUT="2",
        ENRICHER_DB_COMMAND_TIMEOUT="5", ENRICHER_DB_ACQUIRE_TIMEOUT="3",
        ENRICHER_CACHE_MAX_BYTES=str(CACHE_MAX_BYTES), ENRICHER_REDIS_TIMEOUT_MS="100",
        ENRICHER_MIGRATE_ON_START="false", ENRICHER_SHUTDOWN_TIMEOUT="10",
        ENRICHER_LOG_LEVEL=os.environ.get("SOAK_LOG_LEVEL", "WARNING"),
        ENRICHER_ACCESS_LOG=os.environ.get("SOAK_ACCESS_LOG", "false"),
        ENRICHER_TENANT_MAX_IN_FLIGHT="0",
        ENRICHER_PERSONALIZE_ENDPOINT_URL=personalize.url, AWS_DEFAULT_REGION=REGION,
        AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
    )
    members = [Instance(f"i{n}", {**env, "ENRICHER_REDIS_PREFIX": f"ce-i{n}"} if redis_apart
                        else env, folder) for n in range(instances)]
    for instance in members:
        instance.start()
        started.append(instance.kill)
    for instance in members:
        await instance.wait_ready()
    haproxy = HAProxy(folder, members, checked=lb_checks)
    haproxy.start()
    started.append(haproxy.stop)
    for instance in members:
        await haproxy.wait_up(instance.name)
    return Deployment(folder, databases, redis_set, personalize, members, haproxy, admin_key,
                      braze_key, hot_ids, items)
