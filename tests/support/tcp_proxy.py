"""A TCP proxy for tests: counts connections and Postgres statements, and can stall or cut.

Sits between a client and a real server on 127.0.0.1. For Postgres it reads the frontend protocol
(client to server) to count statements: each simple Query ('Q') and each Execute ('E') is one
statement run (except on a connection that sent a LISTEN: the invalidation listener's pings are
no request's work), and notes those connections, so that they alone can be stalled (a half-open
connection: open, silent, while new connections go through). Connect to Postgres through
it with `sslmode=disable`, so the stream is readable.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Iterator


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int | None = None, *,
                 upstream_unix: str | None = None) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.upstream_unix = upstream_unix
        self.connections = 0
        self.statements = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._links: list[_Link] = []
        self.port = 0

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server:
            self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def stall(self) -> None:
        """Stop forwarding bytes (both ways) until `resume`: a frozen server, seen from outside."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()
        for link in self._links:
            link.flowing.set()

    @contextlib.contextmanager
    def stalled(self) -> Iterator[None]:
        """`stall` for the block, then `resume`, whatever the block raised."""
        self.stall()
        try:
            yield
        finally:
            self.resume()

    def stall_listening(self) -> int:
        """Stop forwarding on the connections that sent a LISTEN (only those, and for good: the
        peers see a silent, open connection); new connections flow. Returns how many."""
        stalled = [link for link in self._links if link.parser.listened]
        for link in stalled:
            link.flowing.clear()
        return len(stalled)

    def cut(self) -> None:
        """Close every open connection at once."""
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.upstream_unix:
                up_reader, up_writer = await asyncio.open_unix_connection(self.upstream_unix)
            else:
                up_reader, up_writer = await asyncio.open_connection(
                    self.upstream_host, self.upstream_port
                )
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        link = _Link()
        self._links.append(link)
        upstream = asyncio.ensure_future(self._pipe(reader, up_writer, link, count=True))
        downstream = asyncio.ensure_future(self._pipe(up_reader, writer, link, count=False))
        self._tasks.update((upstream, downstream))
        await asyncio.wait((upstream, downstream), return_when=asyncio.FIRST_COMPLETED)
        for task in (upstream, downstream):
            task.cancel()
            self._tasks.discard(task)
        for w in (writer, up_writer):
            self._writers.discard(w)
            with contextlib.suppress(Exception):
                w.transport.abort()
        self._links.remove(link)

    async def _pipe(self, reader, writer, link: _Link, *, count: bool) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            await self._flowing.wait()
            await link.flowing.wait()
            if count:
                found = link.parser.feed(data)
                # The LISTEN connection's own statements (its pings) are no request's work.
                self.statements += 0 if link.parser.listened else found
            writer.write(data)
            await writer.drain()


class _Link:
    """One proxied connection: whether it flows, and what its client sent."""

    def __init__(self) -> None:
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.parser = _FrontendParser()


class _FrontendParser:
    """Counts Query and Execute messages in the client-to-server Postgres stream."""

    def __init__(self) -> None:
        self.buffer = b""
        self.started = False
        self.listened = False

    def feed(self, data: bytes) -> int:
        self.buffer += data
        found = 0
        while True:
            if not self.started:
                if len(self.buffer) < 4:
                    return found
                (length,) = struct.unpack("!I", self.buffer[:4])
                if len(self.buffer) < length:
                    return found
                self.buffer = self.buffer[length:]
                self.started = True
                continue
            if len(self.buffer) < 5:
                return found
            kind = self.buffer[:1]
            (length,) = struct.unpack("!I", self.buffer[1:5])
            if len(self.buffer) < 1 + length:
                return found
            message, self.buffer = self.buffer[5:1 + length], self.buffer[1 + length:]
            if kind in (b"Q", b"E"):
                found += 1
            if kind == b"P":  # Parse: a statement name, then the query text
                message = message.split(b"\0", 1)[-1]
            if kind in (b"Q", b"P") and message.lstrip()[:6].upper() == b"LISTEN":
                self.listened = True


async def proxy_to_database(database_url: str) -> TcpProxy:
    """A started proxy in front of the Postgres of `database_url` (TCP or the embedded socket)."""
    from urllib.parse import urlsplit

    parts = urlsplit(database_url)
    if parts.hostname:
        proxy = TcpProxy(parts.hostname, parts.port or 5432)
    else:  # the embedded Postgres listens on a Unix socket
        socket_dir = dict(p.split("=", 1) for p in parts.query.split("&"))["host"]
        proxy = TcpProxy("", upstream_unix=f"{socket_dir}/.s.PGSQL.5432")
    return await proxy.start()


def url_through(database_url: str, proxy: TcpProxy) -> str:
    """`database_url` rerouted through `proxy`, unencrypted so statements can be counted."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(database_url)
    user = parts.username or "postgres"
    return urlunsplit(("postgresql", f"{user}@127.0.0.1:{proxy.port}", parts.path,
                       "sslmode=disable", ""))
