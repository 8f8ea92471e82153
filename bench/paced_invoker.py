"""One client of the fairness scenario's tenant B: paced POSTs on one keep-alive connection
(standard library only), no retries, so every non-2xx answer counts as an error.

Run as `python -I -S paced_invoker.py UNUSED EVENTS_FILE INDEX STRIDE SECONDS [INTERVAL]` with
ENRICHER_URL and ENRICHER_API_KEY set (the argument layout of shim_invoker.py, so
bench/shim_load.py drives both). It prints "ready", waits for a line on stdin, sends its share of
the events (every STRIDE-th line from INDEX) one every INTERVAL seconds (staggered by INDEX; a
late one goes at once) for SECONDS, and prints one JSON line: latencies in ms, errors, seconds.
"""

import http.client
import json
import os
import sys
import time
import urllib.parse


def main():
    events_file, index, stride, seconds = sys.argv[2:6]
    index, stride, seconds = int(index), int(stride), float(seconds)
    interval = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    target = urllib.parse.urlsplit(os.environ["ENRICHER_URL"])
    headers = {"Content-Type": "application/json",
               "Authorization": f"Bearer {os.environ['ENRICHER_API_KEY']}"}
    with open(events_file, "rb") as lines:
        bodies = [line.strip() for n, line in enumerate(lines) if n % stride == index % stride]
    connection = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
    print("ready", flush=True)
    sys.stdin.readline()
    latencies, errors = [], []
    began = time.monotonic()
    stop = began + seconds
    count = 0
    next_start = began + interval * index / stride
    while time.monotonic() < stop:
        if interval:
            wait = next_start - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            next_start += interval
        body = bodies[count % len(bodies)]
        count += 1
        started = time.perf_counter()
        try:
            connection.request("POST", target.path, body=body, headers=headers)
            answer = connection.getresponse()
            data = answer.read()
            if answer.status != 200:
                errors.append(f"HTTP {answer.status}: {data[:200]!r}")
        except (OSError, http.client.HTTPException) as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
            connection.close()
            connection = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
        latencies.append((time.perf_counter() - started) * 1000)
    print(json.dumps({"latencies_ms": latencies, "errors": errors,
                      "elapsed_s": time.monotonic() - began}), flush=True)


main()
