"""A Postgres and a Redis that one test starts, owns and may stop, freeze or restart; a hot
standby of that Postgres, and a Redis replica watched by sentinels.

Fault tests never touch the machine's shared servers: each runs its own on a free port of
127.0.0.1 with its data in a temporary folder, and stops it at the end. Postgres runs as the
`postgres` user when the tests run as root (Postgres refuses to run as root).

A standby is made from a running primary with `pg_basebackup -R` (it streams from the primary
over 127.0.0.1) and applies each commit `apply_delay_ms` late (`recovery_min_apply_delay`), so
its lag is known. A Redis replica follows its master (`--replicaof`); sentinels watch the master
and are told to fail over (`SENTINEL FAILOVER`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import redis.asyncio as redis_client

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def scratch_folder(prefix: str) -> Iterator[Path]:
    """A folder the `postgres` user can reach too (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def pg_available() -> bool:
    return (PG_BIN / "initdb").exists()


def _as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _give_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")
        for child in path.rglob("*"):
            shutil.chown(child, "postgres", "postgres")


class OwnedPostgres:
    """A Postgres cluster in `folder`, listening on 127.0.0.1:`port`, trust auth."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        _give_to_postgres(self.folder)
        self._run(PG_BIN / "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                  "--no-sync", "-E", "UTF8")

    def copy_to(self, folder: Path) -> OwnedPostgres:
        """A stopped copy of this (stopped) cluster, with a port of its own."""
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self.data, folder / "data", symlinks=True)
        _give_to_postgres(folder)
        return OwnedPostgres(folder)

    def standby(self, folder: Path, apply_delay_ms: int = 0) -> OwnedPostgres:
        """A hot standby of this (running) cluster, in `folder`, not started yet."""
        folder.mkdir(parents=True, exist_ok=True)
        _give_to_postgres(folder)
        standby = OwnedPostgres(folder)
        self._run(PG_BIN / "pg_basebackup", "-h", "127.0.0.1", "-p", str(self.port),
                  "-U", "postgres", "-D", str(standby.data), "-R", "-X", "stream",
                  "-c", "fast", "--no-sync")
        if apply_delay_ms:
            with (standby.data / "postgresql.auto.conf").open("a") as conf:
                conf.write(f"recovery_min_apply_delay = '{apply_delay_ms}ms'\n")
        return standby

    def promote(self) -> None:
        """End recovery: a standby becomes a primary of its own."""
        self._run(PG_BIN / "pg_ctl", "-D", str(self.data), "-w", "-t", "30", "promote")

    def log_text(self) -> str:
        path = self.folder / "log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def fetchval(self, sql: str, *args: object) -> object:
        """One value from `sql`, on a connection of its own (test setup and checks)."""
        conn = await asyncpg.connect(self.url, timeout=5)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    async def execute(self, sql: str) -> None:
        conn = await asyncpg.connect(self.url, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def start(self) -> None:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 "
                   f"-c unix_socket_directories={self.folder} -c fsync=off")
        self._run(PG_BIN / "pg_ctl", "-D", str(self.data), "-o", options, "-w", "-t", "30",
                  "-l", str(self.folder / "log"), "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(PG_BIN / "pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _pids(self) -> list[int]:
        """The postmaster and every process it started."""
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():  # stopped
            return []
        postmaster = int(pid_file.read_text().split()[0])
        children = []
        for status in Path("/proc").glob("[0-9]*/status"):
            with contextlib.suppress(OSError):
                fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines()
                              if ":\t" in line)
                if int(fields.get("PPid", "0").strip()) == postmaster:
                    children.append(int(status.parent.name))
        return [postmaster, *children]

    def freeze(self) -> None:
        for pid in self._pids():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self._pids():
            os.kill(pid, signal.SIGCONT)

    def _run(self, *args: object, check: bool = True) -> None:
        subprocess.run([*_as_postgres(), *map(str, args)], check=check, capture_output=True,
                       timeout=60)


async def wait_for_postgres(url: str, within: float = 10) -> None:
    async with asyncio.timeout(within):
        while True:
            try:
                conn = await asyncpg.connect(url, timeout=1)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                await asyncio.sleep(0.05)  # paces the poll: still starting
                continue
            await conn.close()
            return


def migrated(cluster: OwnedPostgres) -> Iterator[OwnedPostgres]:
    """Initialise `cluster`, apply the migrations, stop it, and yield it: a template for tests to
    copy (`copy_to`), so initdb and the migrations run once per module, not per test."""
    from service.runtime.settings import Settings
    from service.storage.db import connect
    from service.storage.migrations import apply_migrations

    cluster.init()
    cluster.start()
    try:
        async def migrate() -> None:
            conn = await connect(Settings(database_url=cluster.url))
            try:
                await apply_migrations(conn)
            finally:
                await conn.close()

        asyncio.run(migrate())
    finally:
        cluster.stop()
    yield cluster


class OwnedRedis:
    """A redis-server without persistence on 127.0.0.1:`port`; stop and start it at will. With
    `replica_of`, a replica of that server."""

    def __init__(self, folder: Path, replica_of: OwnedRedis | None = None) -> None:
        self.folder = folder
        self.port = free_port()
        self.replica_of = replica_of
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis_client.Redis:
        return redis_client.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    async def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        follow = [] if self.replica_of is None else [
            "--replicaof", "127.0.0.1", str(self.replica_of.port)]
        # Popen returns at once (the server is waited for below, without blocking the loop).
        self.process = subprocess.Popen(  # noqa: ASYNC220
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder), *follow],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        await _answers(self.client(), within=10)
        if self.replica_of is not None:
            await self.wait_in_sync()

    async def wait_in_sync(self, within: float = 10) -> None:
        """Until this replica's link to its master is up."""
        client = self.client()
        try:
            async with asyncio.timeout(within):
                while True:  # a server's state: polled, nothing to wait on
                    if (await client.info("replication")).get("master_link_status") == "up":
                        return
                    await asyncio.sleep(0.05)  # paces the poll
        finally:
            await client.aclose()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


async def _answers(client: redis_client.Redis, within: float) -> None:
    try:
        async with asyncio.timeout(within):
            while True:
                try:
                    await client.ping()
                    return
                except (OSError, redis_client.RedisError):
                    await asyncio.sleep(0.02)  # paces the poll: still starting
    finally:
        await client.aclose()


SENTINEL_SERVICE = "mymaster"


class OwnedSentinel:
    """A Redis Sentinel watching `master` as SENTINEL_SERVICE (quorum 2, down after 1 s)."""

    def __init__(self, folder: Path, master: OwnedRedis) -> None:
        self.folder = folder
        self.master = master
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def client(self) -> redis_client.Redis:
        return redis_client.Redis(host="127.0.0.1", port=self.port, socket_timeout=5,
                                  decode_responses=True)

    async def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        conf = self.folder / "sentinel.conf"  # the sentinel rewrites it: a file of its own
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.folder}\n"
            f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {self.master.port} 2\n"
            f"sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n"
            f"sentinel failover-timeout {SENTINEL_SERVICE} 5000\n"
        )
        self.process = subprocess.Popen(  # noqa: ASYNC220
            [shutil.which("redis-server") or "redis-server", str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        await _answers(self.client(), within=10)

    async def master_port(self) -> int | None:
        client = self.client()
        try:
            address = await client.execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE)
        finally:
            await client.aclose()
        return int(address[1]) if address else None

    async def wait_knows_replicas(self, count: int, within: float = 15) -> None:
        """Until this sentinel has found `count` replicas of the master (a failover needs one)."""
        client = self.client()
        try:
            async with asyncio.timeout(within):
                while True:
                    found = await client.execute_command("SENTINEL", "REPLICAS", SENTINEL_SERVICE)
                    if len(found) >= count:
                        return
                    await asyncio.sleep(0.1)  # paces the poll
        finally:
            await client.aclose()

    async def failover(self) -> None:
        """Promote a replica now, without waiting for the master to be seen down."""
        client = self.client()
        try:
            await client.execute_command("SENTINEL", "FAILOVER", SENTINEL_SERVICE)
        finally:
            await client.aclose()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@contextlib.contextmanager
def primary_and_standby(template: OwnedPostgres,
                        apply_delay_ms: int = 0) -> Iterator[tuple[OwnedPostgres, OwnedPostgres]]:
    """A running copy of `template` (a `migrated` cluster) and its hot standby, `apply_delay_ms`
    behind; both stopped at the end."""
    with scratch_folder("ce-pg-") as folder:
        primary = template.copy_to(folder / "primary")
        primary.start()
        standby = None
        try:
            standby = primary.standby(folder / "standby", apply_delay_ms=apply_delay_ms)
            standby.start()
            yield primary, standby
        finally:
            if standby is not None:
                standby.stop("immediate")
            primary.stop("immediate")
