"""A Postgres and a Redis that one test starts, owns and may stop, freeze or restart.

Fault tests never touch the machine's shared servers: each runs its own on a free port of
127.0.0.1 with its data in a temporary folder, and stops it at the end. Postgres runs as the
`postgres` user when the tests run as root (Postgres refuses to run as root).
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
                await asyncio.sleep(0.05)
                continue
            await conn.close()
            return


class OwnedRedis:
    """A redis-server without persistence on 127.0.0.1:`port`; stop and start it at will."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        # Popen returns at once (the server is waited for below, without blocking the loop).
        self.process = subprocess.Popen(  # noqa: ASYNC220
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis_client.Redis(host="127.0.0.1", port=self.port)
        try:
            async with asyncio.timeout(10):
                while True:
                    try:
                        await client.ping()
                        return
                    except (OSError, redis_client.RedisError):
                        await asyncio.sleep(0.02)
        finally:
            await client.aclose()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None
