"""Provoke flaky tests: run the timing-sensitive modules many times in a row while every core is
kept busy by a CPU burner, so that a test which guesses how long something takes fails in minutes
instead of once in twenty CI runs.

    python -m tests.stress [--runs 20] [--burners N] [--max-minutes M] [-- PYTEST ARGS...]

(`make test-stress` runs it with the defaults.) Each run is one pytest process over the modules
marked `timing` (they wait on real time, processes or servers), two test processes as `make test`
runs them; the burners are plain busy loops at normal priority, one per core unless told
otherwise, so the tests get about a third of the machine. Every run's output is kept in
`.stress/run-NN.log`; the summary lists each run's time and the tests that failed in it. The
exit status is non-zero if any run failed. The burners stop with the runner (and each stops by
itself if the runner dies), and the whole run stops after `--max-minutes`.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_PYTEST_ARGS = ["-m", "timing", "-n", "2", "--dist", "loadfile", "-q", "-p", "no:cacheprovider"]
LOG_FOLDER = Path(".stress")
_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)

# A busy loop that also watches its parent: if the runner is killed, the burner ends too.
_BURNER = """
import os, sys, time
parent = int(sys.argv[1])
while os.getppid() == parent:
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        pass
"""


def start_burners(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", _BURNER, str(os.getpid())])
            for _ in range(count)]


def stop_burners(burners: list[subprocess.Popen]) -> None:
    for burner in burners:
        burner.kill()
    for burner in burners:
        burner.wait()


def run_once(number: int, pytest_args: list[str], timeout: float) -> tuple[float, int, list[str]]:
    """One pytest run: (seconds, exit status, failed test IDs); its output goes to a log file."""
    log_path = LOG_FOLDER / f"run-{number:02d}.log"
    started = time.monotonic()
    with log_path.open("w") as log:
        try:
            status = subprocess.run([sys.executable, "-m", "pytest", *pytest_args], stdout=log,
                                    stderr=subprocess.STDOUT, timeout=timeout,
                                    check=False).returncode
        except subprocess.TimeoutExpired:
            status = -1
    seconds = time.monotonic() - started
    failed = _FAILED.findall(log_path.read_text(errors="replace"))
    if status == -1:
        failed.append(f"(the run passed its {timeout:.0f} s bound)")
    return seconds, status, failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.stress", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="runs in a row (default 20)")
    parser.add_argument("--burners", type=int, default=os.cpu_count() or 2,
                        help="busy-loop processes beside the tests (default: one per core)")
    parser.add_argument("--max-minutes", type=float, default=240,
                        help="stop starting runs after this long (default 240)")
    parser.add_argument("pytest_args", nargs="*",
                        help=f"pytest's arguments after `--` (default: {' '.join(DEFAULT_PYTEST_ARGS)})")
    args = parser.parse_args(argv)
    pytest_args = args.pytest_args or DEFAULT_PYTEST_ARGS
    LOG_FOLDER.mkdir(exist_ok=True)
    stop_at = time.monotonic() + args.max_minutes * 60
    results: list[tuple[int, float, int, list[str]]] = []
    burners = start_burners(args.burners)
    print(f"stress: {args.runs} runs of pytest {' '.join(pytest_args)} beside {args.burners} "
          f"CPU burners; logs in {LOG_FOLDER}/", flush=True)
    try:
        for number in range(1, args.runs + 1):
            left = stop_at - time.monotonic()
            if left <= 0:
                print(f"stress: --max-minutes reached after {number - 1} runs", flush=True)
                break
            seconds, status, failed = run_once(number, pytest_args, left)
            results.append((number, seconds, status, failed))
            verdict = "passed" if status == 0 else f"FAILED (exit {status}): {', '.join(failed)}"
            print(f"run {number:2d}: {seconds:6.1f} s  {verdict}", flush=True)
    finally:
        stop_burners(burners)
    bad = [r for r in results if r[2] != 0]
    total = sum(r[1] for r in results)
    print(f"stress: {len(results) - len(bad)} of {len(results)} runs passed in {total / 60:.1f} min")
    return 1 if bad or not results else 0


if __name__ == "__main__":
    sys.exit(main())
