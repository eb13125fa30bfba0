"""Generated test pages (no downloads): handwriting-font text, and camera damage like tilt, shadow, blur and noise.

`python -m bench.gen demo DIR` writes a few sample photos for `make demo`."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONTS = {
    "humor": "/usr/share/fonts/truetype/humor-sans/Humor-Sans.ttf",
    "dkg": "/usr/share/fonts/truetype/fifthhorseman/dkg.ttf",
    "print": "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",  # a printed page, as a scanner drops them
}

RECIPE = ["Pancakes", "250 g flour", "2 eggs", "500 ml milk", "1 pinch salt", "Whisk and rest ten minutes"]
NOTE = ["Call grandma on Sunday", "Buy flour and sugar", "Return library books", "Fix the garden gate"]


def page(lines: list[str], size=(2400, 1800), font="humor", font_size=96) -> Image.Image:
    im = Image.new("RGB", size, (250, 248, 240))
    d = ImageDraw.Draw(im)
    f = ImageFont.truetype(FONTS[font], font_size)
    y = size[1] // 10
    for line in lines:
        d.text((size[0] // 12, y), line, font=f, fill=(20, 20, 60))
        y += int(font_size * 1.7)
    return im


def tilt(im: Image.Image, degrees: float) -> Image.Image:
    return im.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(250, 248, 240))


def shadow(im: Image.Image, strength: float = 0.55) -> Image.Image:
    """Uneven light: a gradient from one corner, as from a lamp beside the table."""
    w, h = im.size
    x = np.linspace(0, 1, w)[None, :]
    y = np.linspace(0, 1, h)[:, None]
    light = 1.0 - strength * np.clip((x + y) / 2, 0, 1)
    arr = np.asarray(im).astype(np.float32) * light[..., None]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def low_contrast(im: Image.Image, factor: float = 0.35) -> Image.Image:
    arr = np.asarray(im).astype(np.float32)
    return Image.fromarray(np.clip(160 + (arr - 160) * factor, 0, 255).astype(np.uint8))


def blur(im: Image.Image, radius: float = 2.0) -> Image.Image:
    return im.filter(ImageFilter.GaussianBlur(radius))


def noise(im: Image.Image, sigma: float = 12.0, seed: int = 1) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = np.asarray(im).astype(np.float32) + rng.normal(0, sigma, (im.size[1], im.size[0], 1))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def on_table(im: Image.Image, margin: float = 0.15, table=(70, 55, 45)) -> Image.Image:
    """The sheet photographed on a dark table, with a border of table around it."""
    w, h = im.size
    canvas = Image.new("RGB", (int(w * (1 + 2 * margin)), int(h * (1 + 2 * margin))), table)
    canvas.paste(im, (int(w * margin), int(h * margin)))
    return canvas


def phone_photo(lines=NOTE, size=(4032, 3024), degrees=6.0, font="dkg", sigma: float = 8.0) -> Image.Image:
    """A 12 MP phone-style photo: handwriting font, tilt, uneven light and sensor noise (σ in grey levels)."""
    im = page(lines, size=size, font=font, font_size=size[0] // 24)
    im = tilt(im, degrees).resize(size, Image.Resampling.BILINEAR)
    return noise(shadow(im), sigma=sigma)


def demo(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    page(NOTE).save(folder / "todo.jpg", quality=90)
    shadow(tilt(page(RECIPE), 4)).save(folder / "pancakes.jpg", quality=88)
    print(f"demo images written to {folder}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "demo":
        demo(Path(sys.argv[2]))
    else:
        print("usage: python -m bench.gen demo DIR", file=sys.stderr)
        raise SystemExit(2)
