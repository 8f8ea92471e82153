"""One warm Lambda container running the real shim in a loop (standard library only).

Run as `python -I -S shim_invoker.py SHIM_DIR EVENTS_FILE INDEX STRIDE SECONDS [INTERVAL]` with
ENRICHER_URL and ENRICHER_API_KEY set. It calls `lambda_shim.handler(event, context)` for its share
of the events, back to back as a container Pinpoint keeps busy would, or paced (the loop, its
arguments and its output: bench/invoker_loop.py).
"""

import json
import os
import sys
import time

sys.path.insert(0, sys.argv[1])  # the folder holding lambda_shim.py
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # invoker_loop.py
import invoker_loop
import lambda_shim

LAMBDA_TIMEOUT_MS = 10_000  # the function timeout the README advises


class FakeContext:
    """What the shim uses of the Lambda context object."""

    def __init__(self, request_id):
        self.deadline = time.monotonic() + LAMBDA_TIMEOUT_MS / 1000
        self.aws_request_id = request_id

    def get_remaining_time_in_millis(self):
        return int((self.deadline - time.monotonic()) * 1000)


def invoke(event, count):
    lambda_shim.handler(event, FakeContext(f"bench-{sys.argv[3]}-{count}"))


invoker_loop.run(json.loads, invoke)
