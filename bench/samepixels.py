"""Same pixels: does a cheaper preparation still make the pages it made?

    python -m bench.samepixels --baseline ce98ca4                  # the table, against commit ce98ca4
    python -m bench.samepixels --baseline ce98ca4 --save tests/data/prepared   # and keep its pages as references

Prepares the bench's generated pages (bench/pages.py: bench.legibility's damage at a VLM's and Tesseract's page
size, and two phone photos decoded from JPEG files) with the handwatch of commit REF — the baseline — and with
this one, in the same run, each in a child process of its own on one core. Prints, per page: the SSIM of this
handwatch's page against the baseline's (scikit-image, on grey levels), the bytes of the JPEG each sends to a
server, and each one's CPU for decoding and preparing the page (the least of `--repeat` runs in each of
`--rounds` children, the baseline's and this code's taking turns).

`tests/prepare/test_same_pixels.py` holds the current code to SSIM >= 0.99 against the pages saved by `--save`;
why that floor is in docs/develop/benchmarks.md ("Same pixels").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from bench.throughput import checkout

ROOT = Path(__file__).resolve().parent.parent


def _child(out: Path, repeat: int) -> None:
    """In the child: prepare every page with whichever handwatch is first on sys.path; pages to `out`."""
    import handwatch
    from bench import pages
    from handwatch.prepare import alloc

    alloc.keep_image_buffers()
    report = {"handwatch": str(Path(handwatch.__file__).parent), "pages": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in pages.NAMES:
            runs = [pages.prepare(name, Path(tmp)) for _ in range(repeat)]
            grey, size = runs[0][0], runs[0][1]
            np.save(out / f"{name}.npy", grey)
            report["pages"][name] = {"bytes": size, "cpu_s": min(r[2] for r in runs)}
    (out / "report.json").write_text(json.dumps(report))


def _run(code: Path | None, out: Path, repeat: int) -> dict:
    """A child process preparing every page with the handwatch in `code` (None: this checkout's), pinned to one core."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(code)] if code else []) + os.pathsep + str(ROOT))
    # -P: the working directory does not come first on sys.path, so PYTHONPATH's handwatch is the one imported.
    cmd = [sys.executable, "-P", "-m", "bench.samepixels", "--child", str(out), "--repeat", str(repeat)]
    if hasattr(os, "sched_getaffinity"):
        cmd = ["taskset", "-c", str(min(os.sched_getaffinity(0))), *cmd]
    subprocess.run(cmd, env=env, cwd=ROOT, check=True)
    return json.loads((out / "report.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="ce98ca4", help="the commit whose preparation is the baseline")
    ap.add_argument("--save", type=Path, help="keep the baseline's pages here, as the test's references (PNG)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each page in a child")
    ap.add_argument("--rounds", type=int, default=3, help="children each, baseline and this code taking turns")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child, args.repeat)
        return
    from skimage.metrics import structural_similarity

    with tempfile.TemporaryDirectory() as tmp:
        before_dir, after_dir = Path(tmp, "before"), Path(tmp, "after")
        before_dir.mkdir()
        after_dir.mkdir()
        # Baseline and this code take turns, so a machine that slows down or speeds up meanwhile
        # (other jobs, the CPU's clock) weighs on both alike; each page keeps its least CPU.
        code = checkout(args.baseline)
        before, after = _run(code, before_dir, args.repeat), _run(None, after_dir, args.repeat)
        for _ in range(args.rounds - 1):
            for report, again in ((before, _run(code, before_dir, args.repeat)), (after, _run(None, after_dir, args.repeat))):
                for name, page in again["pages"].items():
                    report["pages"][name]["cpu_s"] = min(report["pages"][name]["cpu_s"], page["cpu_s"])
        print(f"# baseline {args.baseline}: {before['handwatch']}; now: {after['handwatch']}\n")
        print("| page | engine | SSIM against the baseline | JPEG KB, baseline | JPEG KB, now | CPU ms, baseline | CPU ms, now |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
        from bench import pages

        worst = 1.0
        for name in pages.NAMES:
            a, b = np.load(before_dir / f"{name}.npy"), np.load(after_dir / f"{name}.npy")
            ssim = structural_similarity(a, b, data_range=255) if a.shape == b.shape else float("nan")
            worst = min(worst, ssim) if a.shape == b.shape else worst
            engine = (pages.CASES.get(name) or pages.FILES[name])[0]
            x, y = before["pages"][name], after["pages"][name]
            shape = "" if a.shape == b.shape else f" (size {a.shape} -> {b.shape})"
            print(
                f"| {name} | {engine} | {ssim:.4f}{shape} | {x['bytes'] / 1000:.0f} | {y['bytes'] / 1000:.0f} "
                f"| {x['cpu_s'] * 1000:.0f} | {y['cpu_s'] * 1000:.0f} |"
            )
        total = [sum(r["pages"][n]["cpu_s"] for n in pages.NAMES) * 1000 for r in (before, after)]
        print(f"\nlowest SSIM {worst:.4f}; CPU for all {len(pages.NAMES)} pages: {total[0]:.0f} -> {total[1]:.0f} ms")
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            for name in pages.NAMES:
                Image.fromarray(np.load(before_dir / f"{name}.npy")).save(args.save / f"{name}.png", optimize=True)
            print(f"saved the baseline's pages to {args.save}")


if __name__ == "__main__":
    main()
