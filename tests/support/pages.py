"""Generated handwriting pages: a page of lines drawn in a handwriting font, for tests that need ink."""

from __future__ import annotations

import os

import pytest
from PIL import Image, ImageDraw, ImageFont

FONTS = {
    "humor": "/usr/share/fonts/truetype/humor-sans/Humor-Sans.ttf",
    "dkg": "/usr/share/fonts/truetype/fifthhorseman/dkg.ttf",
}


def font(name: str = "humor", size: int = 64) -> ImageFont.FreeTypeFont:
    path = FONTS[name]
    if not os.path.exists(path):
        pytest.fail(f"font {path} missing: install fonts-humor-sans and fonts-dkg-handwriting (.ci/run does)")
    return ImageFont.truetype(path, size)


def draw_page(lines: list[str], size=(1800, 900), font_name="humor", font_size=64, bg="white") -> Image.Image:
    im = Image.new("RGB", size, bg)
    d = ImageDraw.Draw(im)
    f = font(font_name, font_size)
    y = 80
    for line in lines:
        d.text((80, y), line, font=f, fill="black")
        y += int(font_size * 1.8)
    return im
