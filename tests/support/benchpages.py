"""The bench's generated pages (bench/gen.py, as bench.legibility damages them) that the same-pixels check
prepares: each case names the engine whose page size it is prepared for, and a function drawing the page.
`tests/data/prepared/make_references.py` prepares the same pages with an older handwatch, for the check to
compare against."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from bench import gen

TEXT = [
    "Dear Anna, thank you for the lovely",
    "recipe book. The apple cake was a",
    "great success at the party on",
    "Sunday, everyone asked for more.",
]


def _page(**kw) -> Image.Image:
    return gen.page(TEXT, size=(2400, 1600), font="humor", font_size=84, **kw)


# name -> (engine, page). Chosen to go through every step of the clean-up: turning (and shrinking by more than
# 2x, from the tilted canvas and from 12 MP), the paper map around a table, light (shadows, a curl), thin printed
# lines that a heavier denoise would erase, and sensor noise that CLAHE would amplify without one.
CASES: dict[str, tuple[str, Callable[[], Image.Image]]] = {
    "tilt-7": ("vlm", lambda: gen.tilt(_page(), 7)),
    "shadow": ("vlm", lambda: gen.shadow(_page(), 0.65)),
    "perspective": ("vlm", lambda: gen.perspective(_page())),
    "curled": ("vlm", lambda: gen.curl(_page())),
    "squared-paper": ("vlm", lambda: _page(rules="squared")),
    "jpeg-q60": ("vlm", lambda: gen.jpeg(gen.noise(gen.shadow(_page(), 0.4), 6, 1), 60)),
    "phone-12mp": ("vlm", lambda: gen.phone_photo()),
    "jpeg-q60-tesseract": ("tesseract", lambda: gen.jpeg(gen.noise(gen.shadow(_page(), 0.4), 6, 1), 60)),
}


def drawn(name: str) -> np.ndarray:
    return np.asarray(CASES[name][1]().convert("RGB"))
