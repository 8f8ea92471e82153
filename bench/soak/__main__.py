"""python -m bench.soak --minutes M --seed S: a soak run and its report; exit status 1 when a
promise was violated."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from bench.soak.checker import render
from bench.soak.faults import KINDS
from bench.soak.runner import BREAKS, SoakConfig, soak


async def stoppable(config: SoakConfig):
    """The run, which SIGTERM (and SIGINT, even where a shell started it in the background with
    SIGINT ignored) cuts short: everything it started is stopped, and what was seen is checked."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    stopping: list[int] = []

    def stop() -> None:  # once: a second signal must not cut the stopping short
        if not stopping:
            stopping.append(1)
            task.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    return await soak(config, log=lambda m: print(m, file=sys.stderr))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--items", type=int, default=200_000, help="catalog size")
    parser.add_argument("--hot", type=int, default=200,
                        help="items the writer changes and every client asks for")
    parser.add_argument("--fault-every", type=float, default=20.0, help="seconds")
    parser.add_argument("--faults", default="",
                        help=f"comma-separated kinds, each once, spread over the run (of "
                             f"{', '.join(KINDS)}); default: the seed's schedule of all")
    parser.add_argument("--break", dest="breaks", action="append", default=[],
                        choices=sorted(BREAKS), metavar="WHAT",
                        help="sabotage, to see the checker report it: " + "; ".join(
                            f"{k}: {v}" for k, v in BREAKS.items()))
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for history.jsonl and the report (default: a temp folder)")
    args = parser.parse_args(argv)
    kinds = tuple(k for k in args.faults.split(",") if k) or None
    unknown = set(kinds or ()) - set(KINDS)
    if unknown:
        parser.error(f"unknown fault kinds: {', '.join(sorted(unknown))}")
    config = SoakConfig(minutes=args.minutes, seed=args.seed, instances=args.instances,
                        items=args.items, hot=args.hot, fault_every=args.fault_every,
                        kinds=kinds, out=args.out, breaks=frozenset(args.breaks))
    summary, promises = asyncio.run(stoppable(config))
    print(render(summary))
    return 1 if any(p.violations for p in promises) else 0


if __name__ == "__main__":
    sys.exit(main())
