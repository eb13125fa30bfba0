"""Benchmark: handwatch's image path against a naive baseline, per page, in the same run, on one core.

Inputs are generated (no downloads): a 4032x3024 phone-style JPEG of handwriting-font text with
a tilt, uneven light and noise; the same picture as HEIC, once as a phone stores it and once
carrying a 1600 px preview (which handwatch decodes instead); and a 3-page PDF.

Baseline ("naive"): open at full size (PDF rendered at pdf2image's default 200 dpi), grayscale,
ImageFilter.SHARPEN, cv2.equalizeHist, upscale to a 1024 short side if smaller, PNG, base64.
handwatch: inputs.open_pages → PageRef.load (JPEG DCT scaling, PDF rendered to size) →
preprocess.prepare (deskew, contrast, ...) → JPEG q90 → base64.

Columns: median CPU milliseconds per page (the process's own CPU time and its poppler children's,
so other load on the machine does not count), peak extra resident memory while doing one page,
bytes of base64 sent, and the vision tokens the image costs a Qwen2.5-VL model
(one per 28x28 pixels after its smart_resize rule).

    python -m bench.preprocess [--runs N]
"""

from __future__ import annotations

import argparse
import base64
import io
import math
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2
from PIL import Image, ImageFilter

from bench import gen
from handwatch.config.preprocess import Preprocess
from handwatch.prepare import alloc, inputs, preprocess

QWEN_FACTOR, QWEN_MIN_PIXELS, QWEN_MAX_PIXELS = 28, 56 * 56, 16384 * 28 * 28  # qwen-vl-utils defaults


def qwen_tokens(width: int, height: int) -> int:
    """Qwen2.5-VL's smart_resize, then one token per 28x28 patch (2x2 merged 14-px patches)."""
    f = QWEN_FACTOR
    h, w = round(height / f) * f, round(width / f) * f
    if h * w > QWEN_MAX_PIXELS:
        beta = math.sqrt(height * width / QWEN_MAX_PIXELS)
        h, w = math.floor(height / beta / f) * f, math.floor(width / beta / f) * f
    elif h * w < QWEN_MIN_PIXELS:
        beta = math.sqrt(QWEN_MIN_PIXELS / (height * width))
        h, w = math.ceil(height * beta / f) * f, math.ceil(width * beta / f) * f
    return (h // f) * (w // f)


def naive(path: Path, page: int) -> tuple[str, tuple[int, int]]:
    if path.suffix == ".pdf":
        from pdf2image import convert_from_path

        im = convert_from_path(str(path), first_page=page, last_page=page)[0]
    else:
        if path.suffix == ".heic":
            inputs._ensure_heif()
        im = Image.open(path)
        im.load()
    im = im.convert("L").filter(ImageFilter.SHARPEN)
    import numpy as np

    im = Image.fromarray(cv2.equalizeHist(np.asarray(im)))
    short = min(im.size)
    if short < 1024:
        s = 1024 / short
        im = im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode(), im.size


def handwatch_path(path: Path, page: int, laps: list[float] | None = None) -> tuple[str, tuple[int, int]]:
    """handwatch's path; `laps` gets the process's CPU time at its start and after each of STEPS."""
    lap = laps.append if laps is not None else lambda t: None
    lap(cpu_s())
    opts = preprocess.for_engine(Preprocess(), "vlm")
    ref = inputs.open_pages(path, opts.max_side, opts.max_input_megapixels, 50)[page - 1]
    p = ref.load()
    lap(cpu_s())
    im = preprocess.prepare(p.image, opts, p.photo)
    lap(cpu_s())
    sent = base64.b64encode(preprocess.encode_jpeg(im, opts.jpeg_quality)).decode()
    lap(cpu_s())
    return sent, im.size


RGB_FIRST = "handwatch, RGB first"  # the HEIC decode before #25's planes (heifplanes): pillow-heif's full-size RGB
PATHS = {"naive": naive, "handwatch": handwatch_path, "naive+alloc": naive, RGB_FIRST: handwatch_path}


def cpu_s() -> float:
    """CPU seconds of this process (all its threads) and of the children it has waited for
    (pdftoppm): other load on the machine does not count, unlike wall time."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # os.times() counts in 10 ms ticks
    return time.process_time() + children.ru_utime + children.ru_stime


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _setup(kind: str) -> None:
    """What each path's process does before its first page: one core for OpenCV, and for handwatch
    the allocator setting its CLI makes (`handwatch.prepare.alloc`); "naive+alloc" is the baseline given
    that same setting, to show how much of the gap it accounts for."""
    cv2.setNumThreads(1)
    if kind != "naive":
        alloc.keep_image_buffers()
    if kind == RGB_FIRST:
        from handwatch.prepare import heifplanes

        heifplanes.page = lambda *a, **k: None  # every HEIC through pillow-heif's RGB


def _memory_main(kind: str, path: str, page: int) -> None:
    """Run in a fresh interpreter (a fork would inherit the parent's freed heap and hide the
    allocations): the rise of the peak resident set over where it stood after the imports."""
    _setup(kind)
    inputs._ensure_heif()
    from pdf2image import convert_from_path  # noqa: F401

    base = _status_kb("VmRSS")
    PATHS[kind](Path(path), page)
    print((_status_kb("VmHWM") - base) / 1024)


def memory(kind: str, path: Path, page: int) -> float:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "bench.preprocess", "--memory", kind, str(path), str(page)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip())


def _child(kind: str, path: str, page: int, runs: int, out) -> None:
    _setup(kind)
    fn = PATHS[kind]
    data, size = fn(Path(path), page)
    times = []
    for _ in range(runs):
        t = cpu_s()
        fn(Path(path), page)
        times.append((cpu_s() - t) * 1000)
    out.send((statistics.median(times), len(data), qwen_tokens(*size), size))


def _fork(target, *args):
    recv, send = mp.Pipe(duplex=False)
    proc = mp.get_context("fork").Process(target=_pinned, args=(target, *args, send))
    proc.start()
    result = recv.recv()
    proc.join()
    return result


def measure(kind: str, path: Path, page: int, runs: int):
    """Each measurement in a fresh forked process pinned to one core, so memory and time are its own."""
    mem = memory(kind, path, page)
    ms, sent, tokens, size = _fork(_child, kind, str(path), page, runs)
    return ms, mem, sent, tokens, size


def _pinned(target, *args):
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    except OSError:
        pass
    target(*args)


def make_inputs(folder: Path) -> dict[str, tuple[Path, int]]:
    from pdf2image import convert_from_path  # noqa: F401  (imported before forking, like heif below)

    photo = gen.phone_photo(sigma=4)
    jpg = folder / "phone.jpg"
    photo.save(jpg, quality=92)
    grainy = folder / "grainy.jpg"
    gen.phone_photo(sigma=8).save(grainy, quality=92)
    inputs._ensure_heif()
    heic = folder / "phone.heic"
    photo.save(heic, quality=85, tile_size=512)  # as an iPhone stores it: a grid of 512 px HEVC tiles
    preview = folder / "preview.heic"
    photo.save(preview, quality=85, tile_size=512, thumbnails=[1600])
    pdf = folder / "scan.pdf"
    pages = [gen.page(gen.NOTE if i % 2 == 0 else gen.RECIPE, size=(1654, 2339), font="dkg", font_size=80) for i in range(3)]
    pages[0].save(pdf, save_all=True, append_images=pages[1:], resolution=200)

    def kb(p: Path) -> str:
        return f"{p.stat().st_size / 1e6:.1f} MB"

    return {
        f"JPEG 12 MP, noise σ4, {kb(jpg)}": (jpg, 1),
        f"JPEG 12 MP, noise σ8, {kb(grainy)}": (grainy, 1),
        f"HEIC 12 MP, 512 px tiles, {kb(heic)}": (heic, 1),
        f"HEIC 12 MP with a 1600 px preview, {kb(preview)}": (preview, 1),
        "PDF page 1 of 3": (pdf, 1),
        "PDF page 2 of 3": (pdf, 2),
    }


STEPS = ("decode", "prepare", "JPEG + base64")


def _steps_child(path: str, runs: int, out) -> None:
    """handwatch's path cut into its steps, CPU milliseconds each (median over the runs)."""
    _setup("handwatch")
    spent: dict[str, list[float]] = {step: [] for step in STEPS}
    for _ in range(runs + 1):
        laps: list[float] = []
        handwatch_path(Path(path), 1, laps)
        for step, start, end in zip(STEPS, laps, laps[1:], strict=False):
            spent[step].append((end - start) * 1000)
    out.send({step: statistics.median(v[1:]) for step, v in spent.items()})


def _heic_wall(path: str, threads: int, runs: int, out) -> None:
    import pillow_heif

    cv2.setNumThreads(1)
    pillow_heif.options.DECODE_THREADS = threads
    times, cpu = [], []
    for _ in range(runs + 1):
        t, c = time.perf_counter(), time.process_time()
        handwatch_path(Path(path), 1)
        times.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    out.send((statistics.median(times[1:]), statistics.median(cpu[1:])))


def heic_threads(path: Path, runs: int) -> list[tuple[int, float, float]]:
    """libheif decodes a grid's tiles in parallel: the same page with 1 and with 4 decode threads,
    not pinned (all cores), wall and CPU time; each in a fresh forked process."""
    rows = []
    for threads in (1, 4):
        recv, send = mp.Pipe(duplex=False)
        proc = mp.get_context("fork").Process(target=_heic_wall, args=(str(path), threads, runs, send))
        proc.start()
        rows.append((threads, *recv.recv()))
        proc.join()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--memory", nargs=3, metavar=("PATH_KIND", "FILE", "PAGE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory:
        return _memory_main(args.memory[0], args.memory[1], int(args.memory[2]))
    with tempfile.TemporaryDirectory() as tmp:
        cases = make_inputs(Path(tmp))
        rows = []
        for name, (path, page) in cases.items():
            kinds = ("naive", "naive+alloc", "handwatch") if name.startswith("JPEG") else ("naive", "handwatch")
            if "tiles" in name:
                kinds = ("naive", RGB_FIRST, "handwatch")
            for kind in kinds:
                ms, mem, sent, tokens, size = measure(kind, path, page, args.runs)
                rows.append((name, kind, ms, mem, sent, tokens, size))
        heic = next(name for name in cases if name.startswith("HEIC"))
        threads = heic_threads(cases[heic][0], args.runs)
        steps = {name: _fork(_steps_child, str(path), args.runs) for name, (path, _) in cases.items() if "12 MP" in name}
    print("| input | path | median CPU ms | peak MB | bytes sent | Qwen2.5-VL tokens | image sent | time vs naive |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- | ---: |")
    base_ms = {}
    for name, kind, ms, mem, sent, tokens, size in rows:
        if kind == "naive":
            base_ms[name] = ms
        ratio = "1" if kind == "naive" else f"1/{base_ms[name] / ms:.1f}"
        print(f"| {name} | {kind} | {ms:.0f} | {mem:.0f} | {sent / 1000:.0f} KB | {tokens} | {size[0]}x{size[1]} | {ratio} |")
    first = {name: (ms, mem) for name, kind, ms, mem, *_ in rows if kind == RGB_FIRST}
    for name, kind, ms, mem, *_ in rows:
        if kind == "handwatch" and name in first:
            print(
                f"\n{name}: from the YCbCr planes, {ms:.0f} against {first[name][0]:.0f} ms and {mem:.0f} against {first[name][1]:.0f} MB RGB first.",
                end="",
            )
    kept = {name: ms for name, kind, ms, *_ in rows if kind == "naive+alloc"}
    for name, kind, ms, *_ in rows:
        if kind == "handwatch" and name in kept:
            print(
                f"\n{name}: against the baseline given the same allocator setting, handwatch takes 1/{kept[name] / ms:.1f}.",
                end="",
            )
    print()
    print(
        f"\n{args.runs} runs each, one core (sched_setaffinity, cv2.setNumThreads(1)), CPU time of the process"
        " and its children; peak MB is the rise in resident memory while processing one page."
    )
    print("\n| 12 MP input, handwatch path | " + " | ".join(f"{step}: CPU ms" for step in STEPS) + " | whole page |")
    print("| --- |" + " ---: |" * (len(STEPS) + 1))
    for name, took in steps.items():
        print(f"| {name} | " + " | ".join(f"{took[step]:.0f}" for step in STEPS) + f" | {sum(took.values()):.0f} |")
    print(f"\n| {heic}, handwatch path, all {os.cpu_count()} cores | libheif decode threads | median wall ms | median CPU ms |")
    print("| --- | ---: | ---: | ---: |")
    for n, wall, cpu in threads:
        print(f"| | {n} | {wall:.0f} | {cpu:.0f} |")


if __name__ == "__main__":
    main()
