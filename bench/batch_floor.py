"""The floor of enrich-batch: the least a batch enricher can do, to measure it against.

One process: each line parsed with orjson, its IDs looked up in a Python dict of the whole catalog
(tuples of the answered texts), an answer of the content route's shape built (items with scores,
Recommendations capped at 5, missing) and serialised with orjson. No validation, no database, no
cache, no chunks, no checkpoint. Prints {"lines", "seconds", "cpu_seconds"} (the loop alone, not
the dict's building) as JSON.

    python -m bench.batch_floor --items 1000000 IN OUT
"""

from __future__ import annotations

import argparse
import sys
import time

import orjson

from bench.catalog import floor_items

CAP = 5  # the bench recommender's recommendations_per_message (the default)
NAMES = ("Title", "Genre", "Price")


def answer(line: dict, items: dict[str, tuple]) -> dict:
    output = line["output"]
    ids = output["recommendedItems"]
    scores = output.get("scores") or [None] * len(ids)
    shown, rows, missing = [], [], []
    for item_id, score in zip(ids, scores, strict=True):
        row = items.get(item_id)
        if row is None:
            missing.append(item_id)
            continue
        rows.append(row)
        shown.append({"id": item_id, **dict(zip(NAMES, row, strict=False)), "score": score})
    return {"recommender": "bench", "locale": "en_US", "send": bool(rows), "items": shown,
            "Recommendations": {name: [r[n] for r in rows[:CAP]] for n, name in enumerate(NAMES)},
            "missing": missing, "userId": line["input"]["userId"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("input")
    parser.add_argument("output")
    args = parser.parse_args()
    items = floor_items(args.items)
    started, cpu_started = time.perf_counter(), time.process_time()
    lines = 0
    loads, dumps = orjson.loads, orjson.dumps
    with open(args.input, "rb") as source, open(args.output, "wb") as out:
        for raw in source:
            out.write(dumps(answer(loads(raw), items)) + b"\n")
            lines += 1
    print(orjson.dumps({"lines": lines, "seconds": time.perf_counter() - started,
                        "cpu_seconds": time.process_time() - cpu_started}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
