"""The benchmark: catalog-enricher against a minimal aiohttp "floor" server, side by side, in one run.

`python -m bench` (or `make bench`) builds a generated catalog in a database of its own, writes one
pool of Pinpoint events that both servers get, drives each server in turn with wrk (and the real Lambda
shim), and prints one table: events/s, latency, errors, the ratio to the floor, SQL statements per event
and the service's peak memory. See the README's "Performance" section.
"""
