"""One client of the fairness scenario's tenant B: paced POSTs on one keep-alive connection
(standard library only), no retries, so every non-2xx answer counts as an error.

Run as `python -I -S paced_invoker.py UNUSED EVENTS_FILE INDEX STRIDE SECONDS [INTERVAL]` with
ENRICHER_URL and ENRICHER_API_KEY set (the argument layout of shim_invoker.py, so
bench/shim_load.py drives both; the loop and its output: bench/invoker_loop.py).
"""

import http.client
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # invoker_loop.py
import invoker_loop

target = urllib.parse.urlsplit(os.environ["ENRICHER_URL"])
headers = {"Content-Type": "application/json",
           "Authorization": f"Bearer {os.environ['ENRICHER_API_KEY']}"}
connection = http.client.HTTPConnection(target.hostname, target.port, timeout=10)


def post(body, _count):
    global connection
    try:
        connection.request("POST", target.path, body=body, headers=headers)
        answer = connection.getresponse()
        data = answer.read()
    except (OSError, http.client.HTTPException) as exc:
        connection.close()
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
        return f"{type(exc).__name__}: {exc}"
    return None if answer.status == 200 else f"HTTP {answer.status}: {data[:200]!r}"


invoker_loop.run(bytes.strip, post)
