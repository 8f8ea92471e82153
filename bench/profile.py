"""Profiling the service under load with py-spy (optional: `pip install -e '.[bench]'`).

py-spy samples the server from outside (no code change, little overhead with --nonblocking) and
writes collapsed stacks; `summarise` turns them into the functions that hold the most samples, on
their own ("self"), and the service's functions with what they call ("total").
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?::\d+)?\)$")


def find_py_spy() -> str | None:
    beside_python = Path(sys.executable).with_name("py-spy")
    return str(beside_python) if beside_python.exists() else shutil.which("py-spy")


def start(py_spy: str, pid: int, seconds: int, output: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "200",
         "--nonblocking", "--format", "raw", "--output", str(output)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def _short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/service/", "/bench/", "/lib/python3"):
        if marker in path:
            path = (marker.strip("/") + "/" if marker in ("/service/", "/bench/") else "") + \
                path.split(marker, 1)[1]
            break
    return f"{match['function']} ({path})"


def summarise(collapsed: Path, top: int = 15) -> str:
    """The top functions by self and by total samples, as percentages of all samples."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_short(f) for f in stack.split(";")]
        # py-spy puts the thread (and process) first; the Python frames follow, outermost first.
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        n = int(count)
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    if not samples:
        return "py-spy recorded no samples"
    lines = [f"{samples} samples", f"top {top} by self time:"]
    lines += [f"  {100 * n / samples:5.1f}%  {name}" for name, n in own.most_common(top)]
    # By total, only the service's own functions: the event loop's frames above them are in
    # every sample and say nothing.
    ours = Counter({name: n for name, n in total.items() if "(service/" in name})
    lines.append(f"top {top} of the service's functions by total time (self + callees):")
    lines += [f"  {100 * n / samples:5.1f}%  {name}" for name, n in ours.most_common(top)]
    return "\n".join(lines)
