"""The soak: a whole deployment on 127.0.0.1 under seeded faults, and a checker of its history.

`python -m bench.soak --minutes M --seed S` starts N `serve --workers 2` instances behind HAProxy,
a Postgres primary and its streaming standby (behind TCP proxies that can stall or cut them),
Redis with a replica and three sentinels, and the fake Personalize runtime; runs send-time,
batch, writer and revocation clients that log every request and answer; injects faults from a
schedule drawn from the seed; then checks the promises of docs/soak.md against the history and
prints the report. Everything it starts is its own and is stopped at the end.

The helpers that own servers (Postgres, Redis, sentinels, the TCP proxy, the fake Personalize,
the Lambda shim's driver) are the test suite's, imported from tests.support: one copy of each,
which the fault tests keep honest.
"""
