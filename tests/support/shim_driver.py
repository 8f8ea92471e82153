"""Runs the real Lambda shim in a separate interpreter (`python -I -S`, standard library only).

Reads one JSON command per stdin line: {"event": ..., "remaining_ms": N, "env": {...}, and
optionally "client_context": {...} (the ClientContext's custom fields)}; answers one
JSON line per command: {"result": ...} or {"error": "EnricherError", "message": ..., "elapsed_ms": N}.
The shim module stays loaded between commands, as in a warm Lambda container.
"""

import json
import os
import sys
import time

sys.path.insert(0, sys.argv[1])  # the folder holding lambda_shim.py
import lambda_shim


class FakeContext:
    """What the shim uses of the Lambda context object."""

    def __init__(self, remaining_ms, client_context=None):
        self.deadline = time.monotonic() + remaining_ms / 1000
        self.aws_request_id = "test-invocation"
        # Lambda's ClientContext: None unless the invoker sent one; `custom` a dict.
        self.client_context = (type("ClientContext", (), {"custom": client_context})()
                               if client_context is not None else None)

    def get_remaining_time_in_millis(self):
        return int((self.deadline - time.monotonic()) * 1000)


for line in sys.stdin:
    command = json.loads(line)
    os.environ.update(command.get("env", {}))
    started = time.monotonic()
    try:
        answer = {"result": lambda_shim.handler(command["event"],
                                                FakeContext(command["remaining_ms"],
                                                            command.get("client_context")))}
    except Exception as exc:  # report whatever the shim raised, as Lambda would
        answer = {"error": type(exc).__name__, "message": str(exc)}
    answer["elapsed_ms"] = int((time.monotonic() - started) * 1000)
    answer["modules_outside_stdlib"] = sorted(
        name for name, module in sys.modules.items()
        if getattr(module, "__file__", None) and "site-packages" in module.__file__
    )
    print(json.dumps(answer), flush=True)
