"""Quality check: does preprocessing help a reader? Tesseract's character error rate (CER) on generated
handwriting-font pages with camera-like damage, raw against preprocessed, in the same run.

Baseline ("raw"): the damaged image exactly as the camera would deliver it, at full size.
handwatch: preprocess.prepare with the default options for a photo (deskew, contrast), sized
for each engine: for Tesseract (2400 px, what `engine: tesseract` reads) and for a VLM (1288 px,
what the model receives; shown for information, since Tesseract is not the VLM's reader).

    python -m bench.legibility
"""

from __future__ import annotations

import io
import os
import re

import pytesseract
from PIL import Image

from bench import gen
from handwatch import preprocess
from handwatch.config import Preprocess

PAGES = [
    ["Dear Anna, thank you for the lovely", "recipe book. The apple cake was a",
     "great success on Sunday and everyone", "asked for a second slice. We will visit",
     "you in May when the garden is green."],
    ["Shopping: 2 kg potatoes, 6 eggs,", "butter, flour (500 g), fresh yeast,",
     "milk and a jar of honey. Call the", "plumber about the kitchen tap before",
     "Friday; ask about the price first!"],
    ["Meeting notes 14 March: budget is", "approved, the new printer arrives next",
     "week. Tom will write the report and", "Maria checks the numbers. Next meeting",
     "on the 28th at ten in the small room."],
    ["Lemon biscuits: cream 200 g soft", "butter with 100 g sugar, add the zest",
     "of two lemons and 300 g flour. Roll", "into a log, chill for an hour, slice",
     "and bake at 180 C for 12 minutes."],
    ["Grandma's remedy for a cold: hot", "water, a spoon of honey, half a lemon",
     "and a slice of ginger. Drink it before", "bed and keep your feet warm. Repeat",
     "for three days, and call the doctor."],
    ["To do this weekend: mow the lawn,", "fix the gate, return library books,",
     "buy stamps and birthday card for Ben,", "water the tomatoes twice, clean the",
     "car and phone Aunt Rose at 6 pm."],
    ["Dear Mr Wilson, I am writing about", "the invoice dated 3 June. The amount",
     "of 245 pounds was paid twice by", "mistake. Please return one payment to",
     "my account. Kind regards, J. Parker"],
    ["Trip notes: train leaves at 7:45 from", "platform 2, change at York. Hotel is",
     "near the station, room 14. Museum", "opens at nine; lunch by the river,",
     "back home on Tuesday evening."],
]


FONT_SIZES = (84, 64)  # each page at two sizes: 16 pages, 2854 characters


def jpeg_noise(im: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    gen.noise(im, sigma=14, seed=3).save(buf, "JPEG", quality=35)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


DAMAGE = {
    "clean": lambda im: im,
    "tilt 7°": lambda im: gen.tilt(im, 7),
    "tilt -12°": lambda im: gen.tilt(im, -12),
    "blur r=2.5": lambda im: gen.blur(im, 2.5),
    "shadow": lambda im: gen.shadow(im, 0.65),
    "low contrast": lambda im: gen.low_contrast(im, 0.3),
    "JPEG noise": jpeg_noise,
    "all of them": lambda im: jpeg_noise(gen.low_contrast(gen.shadow(gen.blur(gen.tilt(im, 5), 1.5), 0.5), 0.5)),
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


def read(im: Image.Image) -> str:
    if im.mode not in ("L", "RGB"):
        im = im.convert("RGB")  # prepare's RGBX
    return pytesseract.image_to_string(im, lang="eng", config="--psm 6")


def errors(truth: str, seen: str) -> tuple[int, int]:
    t = normalise(truth)
    return edit_distance(t, normalise(seen)), len(t)


def _score(task: tuple[str, int]) -> tuple[str, int, int, int, int]:
    """Errors of the raw, Tesseract-prepared and VLM-prepared image of one damaged page."""
    name, i = task
    truth, page = _PAGES[i]
    raw = DAMAGE[name](page)
    raw_err, n = errors(truth, read(raw))
    tess_err = errors(truth, read(preprocess.prepare(raw, _OPTS["tesseract"], photo=True)))[0]
    vlm_err = errors(truth, read(preprocess.prepare(raw, _OPTS["vlm"], photo=True)))[0]
    return name, raw_err, tess_err, vlm_err, n


_PAGES: list = []
_OPTS = {engine: preprocess.for_engine(Preprocess(), engine) for engine in ("tesseract", "vlm")}


def main() -> None:
    import multiprocessing as mp

    os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # Tesseract's OpenMP threads only spin on 2 cores
    _PAGES[:] = [(" ".join(lines), gen.page(lines, size=(2400, 1600), font="humor", font_size=size))
                 for size in FONT_SIZES for lines in PAGES]
    tasks = [(name, i) for name in DAMAGE for i in range(len(_PAGES))]
    with mp.get_context("fork").Pool(os.cpu_count()) as pool:  # one Tesseract per core
        results = pool.map(_score, tasks)
    sums = {name: [0, 0, 0, 0] for name in DAMAGE}
    pages = {name: [0, 0] for name in DAMAGE}  # pages read better / worse after preparing for Tesseract
    for name, *counts in results:
        sums[name] = [a + b for a, b in zip(sums[name], counts)]
        pages[name][0] += counts[1] < counts[0]
        pages[name][1] += counts[1] > counts[0]
    print("| damage | CER raw | CER preprocessed for Tesseract (2400 px) | verdict | pages better / worse |"
          " CER preprocessed for a VLM (1288 px) |")
    print("| --- | ---: | ---: | --- | ---: | ---: |")
    worse = 0
    for name in DAMAGE:
        raw_err, tess_err, vlm_err, total = sums[name]
        verdict = "better" if tess_err < raw_err else ("worse" if tess_err > raw_err else "same")
        worse += verdict == "worse"
        print(f"| {name} | {raw_err / total:.1%} | {tess_err / total:.1%} | {verdict} ({tess_err - raw_err:+d} chars) |"
              f" {pages[name][0]} / {pages[name][1]} | {vlm_err / total:.1%} |")
    chars = sum(len(normalise(" ".join(p))) for p in PAGES) * len(FONT_SIZES)
    print(f"\nTesseract {pytesseract.get_tesseract_version()} (--psm 6, eng) on {len(_PAGES)} pages of Humor Sans text"
          f" ({len(PAGES)} texts at {' and '.join(map(str, FONT_SIZES))} px, {chars} characters);"
          " CER = edit distance / characters, case and spacing folded."
          f" Damage kinds made worse: {worse}.")


if __name__ == "__main__":
    main()
