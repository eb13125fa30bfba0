"""Benchmark: starting poppler under a memory limit, from a process with threads.

Baseline "preexec_fn" (what handwatch did): `subprocess.run(..., preexec_fn=setrlimit)`, which
makes Python fork and run Python code in the child before exec. handwatch: `prlimit --as=N --
cmd`, which sets the limit on itself and execs the command (vfork/posix_spawn path, no Python in
the child). "no limit" is the floor. Each starts `pdfinfo` on a one-page PDF, from 1 and from
4 threads at once, with a parent holding 300 MB (fork copies its page tables; vfork does not).

    python -m bench.spawn [--runs N]
"""

from __future__ import annotations

import argparse
import io
import resource
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

from handwatch.prepare import pdf

LIMIT = pdf.MEMORY


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


WAYS = {
    "preexec_fn (baseline)": lambda cmd: subprocess.run(cmd, capture_output=True, preexec_fn=_limit),
    "prlimit (handwatch)": lambda cmd: subprocess.run(pdf.limited(cmd), capture_output=True),
    "no limit (floor)": lambda cmd: subprocess.run(cmd, capture_output=True),
}


def timed(way, cmd, runs: int, threads: int) -> float:
    """Median milliseconds per start, `threads` starting at once."""
    times: list[float] = []

    def worker():
        for _ in range(runs):
            t = time.perf_counter()
            WAYS[way](cmd)
            times.append((time.perf_counter() - t) * 1000)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40)
    args = ap.parse_args()
    ballast = bytearray(300 << 20)  # a daemon's resident memory: fork must copy its page tables
    ballast[::4096] = b"x" * len(ballast[::4096])
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "one.pdf"
        buf = io.BytesIO()
        Image.new("RGB", (200, 300), "white").save(buf, "PDF")
        p.write_bytes(buf.getvalue())
        cmd = ["pdfinfo", str(p)]
        print("| way | 1 thread: median ms per start | 4 threads at once: median ms per start |")
        print("| --- | ---: | ---: |")
        for way in WAYS:
            one, four = timed(way, cmd, args.runs, 1), timed(way, cmd, args.runs, 4)
            print(f"| {way} | {one:.1f} | {four:.1f} |")
    print(f"\n{args.runs} starts per thread of `pdfinfo` on a one-page PDF; parent holding 300 MB.")


if __name__ == "__main__":
    main()
