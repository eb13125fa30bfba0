"""Quality check: does preprocessing help a reader? Tesseract's character error rate (CER) on generated
handwriting-font pages with camera damage, drawn (tilt, blur, ...) and made from real effects
(perspective, a hard shadow edge, a curled page, ruled and squared paper, coloured paper and ink,
JPEG at quality 60, a phone-sized HEIC decoded by handwatch itself), in the same run:

- raw: the damaged image exactly as delivered, at full size;
- plain resize (the baseline): resized to the 2400 px that `engine: tesseract` reads, nothing else;
- prepared: preprocess.prepare with the defaults for a photo (deskew, contrast), sized for Tesseract.

Noise: every page is also read as a "twin", its plain resize moved by one pixel: as legible, yet
Tesseract reads it a little differently. The spread of (twin - resize) character errors per page
is the reader's noise sigma (per case, floored by the spread pooled over all readable pages); a
case is worse than the baseline only if prepared - resize exceeds 2 sigma sqrt(pages)
characters, and the same rule calls it better.

    python -m bench.legibility [--cases drawn|real|all|NAME]
"""

from __future__ import annotations

import argparse
import io
import math
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytesseract
from PIL import Image

from bench import gen
from handwatch.config.preprocess import Preprocess
from handwatch.prepare import inputs, pixels, preprocess

PAGES = [
    [
        "Dear Anna, thank you for the lovely",
        "recipe book. The apple cake was a",
        "great success on Sunday and everyone",
        "asked for a second slice. We will visit",
        "you in May when the garden is green.",
    ],
    [
        "Shopping: 2 kg potatoes, 6 eggs,",
        "butter, flour (500 g), fresh yeast,",
        "milk and a jar of honey. Call the",
        "plumber about the kitchen tap before",
        "Friday; ask about the price first!",
    ],
    [
        "Meeting notes 14 March: budget is",
        "approved, the new printer arrives next",
        "week. Tom will write the report and",
        "Maria checks the numbers. Next meeting",
        "on the 28th at ten in the small room.",
    ],
    [
        "Lemon biscuits: cream 200 g soft",
        "butter with 100 g sugar, add the zest",
        "of two lemons and 300 g flour. Roll",
        "into a log, chill for an hour, slice",
        "and bake at 180 C for 12 minutes.",
    ],
    [
        "Grandma's remedy for a cold: hot",
        "water, a spoon of honey, half a lemon",
        "and a slice of ginger. Drink it before",
        "bed and keep your feet warm. Repeat",
        "for three days, and call the doctor.",
    ],
    [
        "To do this weekend: mow the lawn,",
        "fix the gate, return library books,",
        "buy stamps and birthday card for Ben,",
        "water the tomatoes twice, clean the",
        "car and phone Aunt Rose at 6 pm.",
    ],
    [
        "Dear Mr Wilson, I am writing about",
        "the invoice dated 3 June. The amount",
        "of 245 pounds was paid twice by",
        "mistake. Please return one payment to",
        "my account. Kind regards, J. Parker",
    ],
    [
        "Trip notes: train leaves at 7:45 from",
        "platform 2, change at York. Hotel is",
        "near the station, room 14. Museum",
        "opens at nine; lunch by the river,",
        "back home on Tuesday evening.",
    ],
]


FONT_SIZES = (84, 64)  # each page at two sizes: 16 pages, 2854 characters
SIZE = (2400, 1600)
READ_TIMEOUT_S = 20  # a legible page takes 1-3 s; a page of noise took minutes and reads as nothing anyway


def jpeg_noise(im: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    gen.noise(im, sigma=14, seed=3).save(buf, "JPEG", quality=35)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def drawn(effect):
    return lambda lines, size, seed: effect(gen.page(lines, size=SIZE, font="humor", font_size=size))


def on_paper(effect=lambda im, seed: im, **page):
    return lambda lines, size, seed: effect(gen.page(lines, size=SIZE, font="humor", font_size=size, **page), seed)


def phone_heic(lines, size, seed) -> np.ndarray:
    """A 12 MP phone photo of the page (tilted 3 degrees, uneven light, the little noise a phone leaves), saved as HEIC
    the way phones do and decoded by handwatch's own decoder at full size."""
    scale = 4032 / SIZE[0]
    im = gen.page(lines, size=(4032, 3024), font="humor", font_size=round(size * scale))
    im = gen.noise(gen.shadow(gen.tilt(im, 3).resize((4032, 3024), Image.Resampling.BILINEAR), 0.4), 2, seed)
    inputs._ensure_heif()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "photo.heic"
        im.save(path, quality=60, enc_params={"preset": "ultrafast"})  # the default preset takes 45 s a page
        [page] = inputs.load(path, 10_000, 100, 1)
    return page.image


DRAWN = {
    "clean": drawn(lambda im: im),
    "tilt 7°": drawn(lambda im: gen.tilt(im, 7)),
    "tilt -12°": drawn(lambda im: gen.tilt(im, -12)),
    "blur r=2.5": drawn(lambda im: gen.blur(im, 2.5)),
    "shadow": drawn(lambda im: gen.shadow(im, 0.65)),
    "low contrast": drawn(lambda im: gen.low_contrast(im, 0.3)),
    "JPEG noise": drawn(jpeg_noise),
    "all of them": drawn(lambda im: jpeg_noise(gen.low_contrast(gen.shadow(gen.blur(gen.tilt(im, 5), 1.5), 0.5), 0.5))),
}
REAL = {
    "perspective": on_paper(lambda im, seed: gen.perspective(im)),
    "hard shadow edge": on_paper(lambda im, seed: gen.hard_shadow(im, seed=seed)),
    "curled page": on_paper(lambda im, seed: gen.curl(im)),
    "ruled paper": on_paper(rules="ruled"),
    "squared paper": on_paper(rules="squared"),
    "coloured paper and ink": on_paper(paper=(250, 228, 150), ink=(30, 60, 170)),
    "JPEG q60": on_paper(lambda im, seed: gen.jpeg(gen.noise(gen.shadow(im, 0.4), 6, seed), 60)),
    "phone HEIC 12 MP": phone_heic,
}


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.upper()).strip()


def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def cer(truth: str, seen: str) -> float:
    t, s = normalise(truth), normalise(seen)
    return edit_distance(t, s) / max(1, len(t))


def read(im: Image.Image | np.ndarray) -> str:
    if isinstance(im, np.ndarray):
        im = Image.fromarray(im)
    if im.mode not in ("L", "RGB"):
        im = im.convert("RGB")  # prepare's RGBX
    try:
        return pytesseract.image_to_string(im, lang="eng", config="--psm 6", timeout=READ_TIMEOUT_S)
    except RuntimeError:  # Tesseract's timeout: it was reading noise as pages of text
        return ""


def errors(truth: str, seen: str) -> int:
    return edit_distance(normalise(truth), normalise(seen))


def _score(task: tuple[str, int]) -> tuple[str, int, int, int, int, int, float]:
    """Errors of the raw, resized, prepared and twin image of one damaged page, its length, and
    the CPU seconds it took (Tesseract included)."""
    name, i = task
    before = os.times()
    lines, size = _PAGES[i]
    truth = " ".join(lines)
    raw = np.asarray(CASES[name](lines, size, seed=i + 1))
    resized = pixels.fit_array(raw, _OPTS.max_side)
    twin = cv2.warpAffine(resized, np.float32([[1, 0, 1], [0, 1, 1]]), resized.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)
    resize_err = errors(truth, read(resized))
    raw_err = resize_err if raw.shape == resized.shape else errors(truth, read(raw))
    prepared_err = errors(truth, read(preprocess.prepare(raw, _OPTS, photo=True)))
    twin_err = errors(truth, read(twin))
    after = os.times()  # this process and its Tesseract children
    cpu = sum(after[:4]) - sum(before[:4])
    return name, raw_err, resize_err, prepared_err, twin_err, len(normalise(truth)), cpu


_PAGES: list = []
CASES: dict = {}
_OPTS = preprocess.for_engine(Preprocess(), "tesseract")


def main() -> None:
    import multiprocessing as mp

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="all", help="drawn, real, all, or one case by name (e.g. 'curled page')")
    args = ap.parse_args()
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # Tesseract's OpenMP threads only spin on 2 cores
    cv2.setNumThreads(1)
    every = {**DRAWN, **REAL}
    groups = {"drawn": DRAWN, "real": REAL, "all": every}
    if args.cases not in groups and args.cases not in every:
        ap.error(f"--cases: drawn, real, all or one of {', '.join(every)}")
    CASES.update(groups.get(args.cases) or {args.cases: every[args.cases]})
    _PAGES[:] = [(lines, size) for size in FONT_SIZES for lines in PAGES]
    started = time.monotonic()
    tasks = [(name, i) for name in CASES for i in range(len(_PAGES))]
    with mp.get_context("fork").Pool(os.cpu_count()) as pool:  # one Tesseract per core
        results = []
        for n, result in enumerate(pool.imap_unordered(_score, tasks), 1):
            results.append(result)
            if n % 32 == 0 or n == len(tasks):
                print(f"{n}/{len(tasks)} pages read, {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    # The reader's noise, per case: how far a page's errors move when it is read again moved by one
    # pixel. Floored by the same spread pooled over every page the baseline reads (CER < 50%), so
    # a case whose 16 twins happened to read alike does not get a band of zero.
    readable = [r[4] - r[2] for r in results if r[2] < 0.5 * r[5]]
    pooled = statistics.pstdev(readable) if len(readable) > 1 else 0.0
    print(
        "| damage | CER raw | CER plain resize (baseline) | CER prepared | prepared − resize | noise band | pages better / worse | verdict |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    worse = 0
    for name in CASES:
        rows = [r for r in results if r[0] == name]
        chars = sum(r[5] for r in rows)
        raw, resize, prepared = (sum(r[k] for r in rows) for k in (1, 2, 3))
        delta = prepared - resize
        sigma = max(statistics.pstdev([r[4] - r[2] for r in rows]), pooled)
        band = 2 * sigma * math.sqrt(len(rows))
        verdict = "worse" if delta > band else "better" if delta < -band else "same (within noise)"
        worse += verdict == "worse"
        better_pages = sum(r[3] < r[2] for r in rows)
        worse_pages = sum(r[3] > r[2] for r in rows)
        print(
            f"| {name} | {raw / chars:.1%} | {resize / chars:.1%} | {prepared / chars:.1%} | {delta:+d} chars |"
            f" ±{band:.0f} | {better_pages} / {worse_pages} | {verdict} |"
        )
    chars = sum(len(normalise(" ".join(p))) for p in PAGES) * len(FONT_SIZES)
    print(
        f"\nTesseract {pytesseract.get_tesseract_version()} (--psm 6, eng) on {len(_PAGES)} pages per case"
        f" ({len(PAGES)} texts in Humor Sans at {' and '.join(map(str, FONT_SIZES))} px, {chars} characters);"
        " CER = edit distance / characters, case and spacing folded."
    )
    moved = sum(r[4] != r[2] for r in results)
    print(
        f"Noise band: 2 sigma sqrt(pages), sigma = the spread of (twin - resize) errors per page in that case,"
        f" at least {pooled:.1f} characters (pooled over the {len(readable)} pages the baseline reads;"
        f" {moved} of {len(results)} twins read differently at all). Cases worse than a plain resize: {worse}."
        f" {time.monotonic() - started:.0f} s on {os.cpu_count()} cores, {sum(r[6] for r in results):.0f} s of CPU."
    )


if __name__ == "__main__":
    main()
