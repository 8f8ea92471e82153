"""The loop shared by the bench's invoker processes (shim_invoker.py, paced_invoker.py): standard
library only, imported by path (they run as `python -I -S`).

Each reads its share of the events (every STRIDE-th line from INDEX), prints "ready", waits for a
line on stdin (so all invokers start together), then calls `call(item, count)` for SECONDS — back
to back or, with INTERVAL, one call every INTERVAL seconds (staggered by INDEX; a late one starts at
once) — and prints one JSON line: each call's latency in ms, the errors, and the seconds it ran.
"""

import json
import sys
import time


def run(parse, call):
    """`parse(line)` makes an item of an events line; `call(item, count)` does one invocation and
    returns an error message or None (an exception raised counts as an error too)."""
    events_file, index, stride, seconds = sys.argv[2:6]
    index, stride, seconds = int(index), int(stride), float(seconds)
    interval = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    with open(events_file, "rb") as lines:
        items = [parse(line) for n, line in enumerate(lines) if n % stride == index % stride]
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
        item = items[count % len(items)]
        count += 1
        started = time.perf_counter()
        try:
            problem = call(item, count)
        except Exception as exc:  # what Lambda would report as the invocation's error
            problem = f"{type(exc).__name__}: {exc}"
        if problem:
            errors.append(problem[:300])
        latencies.append((time.perf_counter() - started) * 1000)
    print(json.dumps({"latencies_ms": latencies, "errors": errors,
                      "elapsed_s": time.monotonic() - began}), flush=True)
