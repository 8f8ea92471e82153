"""The real Lambda shim in an interpreter of its own (`python -I -S`, standard library only), kept
alive across invocations as a warm Lambda container is (tests/support/shim_driver.py runs it)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

SERVICE_DIR = Path(__file__).resolve().parents[2] / "service"
DRIVER = Path(__file__).with_name("shim_driver.py")


class Shim:
    """A warm shim container: one interpreter kept alive across invocations."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls) -> Shim:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-S", str(DRIVER), str(SERVICE_DIR),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,  # one answer line holds a whole batch's results
        )
        return cls(process)

    async def invoke(self, event, remaining_ms: int = 5000, client_context: dict | None = None,
                     **env: str) -> dict:
        """What the shim's handler returned (`result`) or raised (`error`, `message`), with
        `elapsed_ms` and the modules it loaded from outside the standard library.
        `client_context`: the custom fields of the invocation's ClientContext."""
        command = {"event": event, "remaining_ms": remaining_ms, "env": env,
                   "client_context": client_context}
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        await self.process.stdin.drain()
        line = await asyncio.wait_for(self.process.stdout.readline(), remaining_ms / 1000 + 10)
        return json.loads(line)

    async def stop(self) -> None:
        self.process.stdin.close()
        await self.process.wait()
