"""One warm Lambda container running the real shim in a loop (standard library only).

Run as `python -I -S shim_invoker.py SHIM_DIR EVENTS_FILE INDEX STRIDE SECONDS [INTERVAL]` with
ENRICHER_URL and ENRICHER_API_KEY set. It parses its share of the events (every STRIDE-th line from
INDEX), prints "ready", waits for a line on stdin (so all invokers start together), then calls
`lambda_shim.handler(event, context)` for SECONDS — back to back, as a container Pinpoint keeps
busy would, or, with INTERVAL, one invocation every INTERVAL seconds (staggered by INDEX; a late
one starts at once) — and prints one JSON line: each invocation's latency in ms, the errors it
raised, and the seconds it ran.
"""

import json
import sys
import time

sys.path.insert(0, sys.argv[1])  # the folder holding lambda_shim.py
import lambda_shim

LAMBDA_TIMEOUT_MS = 10_000  # the function timeout the README advises


class FakeContext:
    """What the shim uses of the Lambda context object."""

    def __init__(self, request_id):
        self.deadline = time.monotonic() + LAMBDA_TIMEOUT_MS / 1000
        self.aws_request_id = request_id

    def get_remaining_time_in_millis(self):
        return int((self.deadline - time.monotonic()) * 1000)


def main():
    events_file, index, stride, seconds = sys.argv[2:6]  # argv[1] went on sys.path above
    index, stride, seconds = int(index), int(stride), float(seconds)
    interval = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    with open(events_file, encoding="utf-8") as lines:
        events = [json.loads(line) for n, line in enumerate(lines) if n % stride == index % stride]
    print("ready", flush=True)
    sys.stdin.readline()
    latencies, errors = [], []
    began = time.monotonic()
    stop = began + seconds
    count = 0
    next_start = began + interval * index / stride  # paced invokers start staggered
    while time.monotonic() < stop:
        if interval:
            wait = next_start - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            next_start += interval
        event = events[count % len(events)]
        count += 1
        started = time.perf_counter()
        try:
            lambda_shim.handler(event, FakeContext(f"bench-{index}-{count}"))
        except Exception as exc:  # what Lambda would report as the invocation's error
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
        latencies.append((time.perf_counter() - started) * 1000)
    print(json.dumps({"latencies_ms": latencies, "errors": errors,
                      "elapsed_s": time.monotonic() - began}), flush=True)


main()
