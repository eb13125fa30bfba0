"""The bench's generated pages (bench/gen.py, as bench.legibility damages them, and phone photos as
bench.throughput saves them) that the same-pixels check prepares: each case names the engine whose page size
it is prepared for, and a function drawing the page. A photo saved as a file goes through handwatch's decoder
as a dropped file would. `python -m bench.samepixels --baseline REF` prepares them with the handwatch of
commit REF and with this one, side by side; with `--save`, it keeps REF's pages as the references
`tests/prepare/test_same_pixels.py` compares against."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFont

from bench import gen
from handwatch.config.preprocess import Preprocess
from handwatch.prepare import inputs, pixels, preprocess

TEXT = [
    "Dear Anna, thank you for the lovely",
    "recipe book. The apple cake was a",
    "great success at the party on",
    "Sunday, everyone asked for more.",
]


# Pillow's BASIC layout engine, always there: libraqm (the default where Pillow finds libfribidi) places the
# glyphs a little differently, enough to move a page's SSIM against the references to 0.93.
LAYOUT = ImageFont.Layout.BASIC


def _page(**kw) -> Image.Image:
    return gen.page(TEXT, size=(2400, 1600), font="humor", font_size=84, layout=LAYOUT, **kw)


def _jpeg_q60() -> Image.Image:
    """bench.legibility's "JPEG q60": a shadow, sensor noise, then saved at quality 60."""
    return gen.jpeg(gen.noise(gen.shadow(_page(), 0.4), 6, 1), 60)


# name -> (engine, page). Chosen to go through every step of the clean-up: turning (and shrinking by more than
# 2x, from the tilted canvas and from 12 MP), the paper map around a table, light (shadows, a curl), thin printed
# lines that a heavier denoise would erase, and sensor noise that CLAHE would amplify without one.
CASES: dict[str, tuple[str, Callable[[], Image.Image]]] = {
    "tilt-7": ("vlm", lambda: gen.tilt(_page(), 7)),
    "shadow": ("vlm", lambda: gen.shadow(_page(), 0.65)),
    "perspective": ("vlm", lambda: gen.perspective(_page())),
    "curled": ("vlm", lambda: gen.curl(_page())),
    "squared-paper": ("vlm", lambda: _page(rules="squared")),
    "jpeg-q60": ("vlm", _jpeg_q60),
    "phone-12mp": ("vlm", lambda: gen.phone_photo(layout=LAYOUT)),
    "jpeg-q60-tesseract": ("tesseract", _jpeg_q60),
}


def _jpeg(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=88)  # as bench.throughput saves its photos
    return buf.getvalue()


def _recipe_12mp() -> bytes:
    return _jpeg(gen.phone_photo(gen.RECIPE, degrees=5.0, layout=LAYOUT))


# name -> (engine, file bytes): decoded by handwatch (a 1600 px JPEG at 7/8, a 12 MP one at 3/8 or 5/8).
FILES: dict[str, tuple[str, Callable[[], bytes]]] = {
    "photo-1600": ("vlm", lambda: _jpeg(gen.phone_photo(gen.NOTE, size=(1600, 1200), degrees=3.0, layout=LAYOUT))),
    "photo-12mp": ("vlm", _recipe_12mp),
    "photo-12mp-tesseract": ("tesseract", _recipe_12mp),
}

NAMES = sorted([*CASES, *FILES])


def drawn(name: str) -> np.ndarray:
    return np.asarray(CASES[name][1]().convert("RGB"))


def prepared(name: str, folder: Path) -> np.ndarray:
    """The grey levels of the page `name` as this handwatch prepares it (a file case is written to `folder`)."""
    return prepare(name, folder)[0]


def prepare(name: str, folder: Path) -> tuple[np.ndarray, int, float]:
    """The page `name` as this handwatch prepares it: its grey levels, the bytes of the JPEG sent to a server,
    and this thread's CPU seconds for decoding (a file case) and preparing it."""
    engine = (CASES.get(name) or FILES[name])[0]
    opts = preprocess.for_engine(Preprocess(), engine)
    if name in CASES:
        arr = drawn(name)
        start = time.thread_time()
        out = preprocess.prepare(arr, opts, photo=True)
    else:
        path = folder / f"{name}.jpg"
        path.write_bytes(FILES[name][1]())
        start = time.thread_time()
        page = inputs.open_pages(path, opts.max_side, opts.max_input_megapixels, 1)[0].load()
        out = preprocess.prepare(page.image, opts, page.photo)
    spent = time.thread_time() - start
    return pixels.luma(np.asarray(out.convert("RGB"))), len(preprocess.encode_jpeg(out, opts.jpeg_quality)), spent
