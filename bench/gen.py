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


def page(
    lines: list[str],
    size=(2400, 1800),
    font="humor",
    font_size=96,
    paper=(250, 248, 240),
    ink=(20, 20, 60),
    rules: str | None = None,
    layout: ImageFont.Layout | None = None,
) -> Image.Image:
    """Text on a page; `rules` draws ruled ("ruled": lines under the text and a margin) or squared
    paper in light blue, as exercise books have. `layout`: Pillow's text layout engine (None: libraqm
    where Pillow finds it, which places glyphs a little differently from BASIC, always there)."""
    im = Image.new("RGB", size, paper)
    d = ImageDraw.Draw(im)
    f = ImageFont.truetype(FONTS[font], font_size, layout_engine=layout)
    top, pitch = size[1] // 10, int(font_size * 1.7)
    if rules:
        rule = (150, 180, 225) if rules == "ruled" else (200, 214, 238)  # squared paper: fainter, denser
        step = pitch if rules == "ruled" else pitch // 3
        first = top + int(font_size * 1.05) - (0 if rules == "ruled" else 3 * step)
        for y in range(first % step if rules == "squared" else first, size[1], step):
            d.line((0, y, size[0], y), fill=rule, width=max(2, font_size // 30))
        if rules == "squared":
            for x in range(size[0] // 12 % step, size[0], step):
                d.line((x, 0, x, size[1]), fill=rule, width=max(2, font_size // 30))
        else:
            d.line((size[0] // 12 - 20, 0, size[0] // 12 - 20, size[1]), fill=(220, 120, 120), width=3)
    y = top
    for line in lines:
        d.text((size[0] // 12, y), line, font=f, fill=ink)
        y += pitch
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


def phone_photo(lines=NOTE, size=(4032, 3024), degrees=6.0, font="dkg", sigma: float = 8.0, layout=None) -> Image.Image:
    """A 12 MP phone-style photo: handwriting font, tilt, uneven light and sensor noise (σ in grey levels)."""
    im = page(lines, size=size, font=font, font_size=size[0] // 24, layout=layout)
    im = tilt(im, degrees).resize(size, Image.Resampling.BILINEAR)
    return noise(shadow(im), sigma=sigma)


# --- damage as a camera makes it -----------------------------------------------------------------


def perspective(im: Image.Image, strength: float = 0.12, table=(70, 55, 45)) -> Image.Image:
    """The page shot at an angle: the far edge narrower than the near one, on a table."""
    import cv2

    w, h = im.size
    margin = int(0.06 * w)
    out_w, out_h = w + 2 * margin, h + 2 * margin
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    inset = strength * w
    dst = np.float32(
        [
            [margin + inset, margin],
            [margin + w - inset * 0.7, margin + 0.03 * h],
            [margin + w, margin + h],
            [margin, margin + h * 0.98],
        ]
    )
    m = cv2.getPerspectiveTransform(src, dst)
    return Image.fromarray(cv2.warpPerspective(np.asarray(im), m, (out_w, out_h), flags=cv2.INTER_LINEAR, borderValue=table))


def hard_shadow(im: Image.Image, light: float = 0.45, seed: int = 1) -> Image.Image:
    """A hard-edged shadow (the phone, a hand) across part of the page, with a narrow penumbra."""
    import cv2

    rng = _rng(seed)
    w, h = im.size
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    slope = rng.uniform(0.3, 0.8)
    edge = (xx * slope + yy) - w * rng.uniform(0.25, 0.35)  # across the lines of text
    shade = 1.0 - (1.0 - light) * np.clip(edge / (0.004 * w) + 0.5, 0, 1)
    shade = cv2.GaussianBlur(shade, (0, 0), 2)
    return Image.fromarray(np.clip(np.asarray(im).astype(np.float32) * shade[..., None], 0, 255).astype(np.uint8))


def curl(im: Image.Image, lift: float = 0.06, table=(70, 55, 45)) -> Image.Image:
    """A curled page: its right part rises off the table, so lines bend and the curl is shaded."""
    import cv2

    w, h = im.size
    xs = np.arange(w, dtype=np.float32) / w
    bend = np.clip((xs - 0.3) / 0.7, 0, 1) ** 2  # flat on the left, curling up to the right
    pad = int(lift * h) + 10
    map_x = np.tile(xs * w, (h + 2 * pad, 1)).astype(np.float32)
    map_y = (np.arange(h + 2 * pad, dtype=np.float32)[:, None] - pad + lift * h * bend[None, :]).astype(np.float32)
    arr = cv2.remap(np.asarray(im), map_x, map_y, cv2.INTER_LINEAR, borderValue=table).astype(np.float32)
    arr *= (1.0 - 0.35 * bend)[None, :, None]  # turned away from the light
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def jpeg(im: Image.Image, quality: int = 60) -> Image.Image:
    import io

    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


# --- photos that are not (only) documents -----------------------------------------------------


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _smooth_noise(rng, shape, scale: float) -> np.ndarray:
    """Noise varying over about `scale` pixels, zero mean, unit spread."""
    import cv2

    small = rng.normal(0, 1, (max(2, int(shape[0] / scale)), max(2, int(shape[1] / scale)))).astype(np.float32)
    big = cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return (big - big.mean()) / (big.std() + 1e-6)


def wood(size=(1600, 1200), seed: int = 1) -> Image.Image:
    """A dark wooden table top: brown, with long wavy grain lines running across."""
    rng = _rng(seed)
    w, h = size
    y = np.arange(h, dtype=np.float32)[:, None] + 25 * _smooth_noise(rng, (h, w), 300)
    grain = np.sin(y / 7.0 + 3 * _smooth_noise(rng, (h, w), 120)) * 0.5 + 0.5
    tone = 0.55 + 0.25 * grain + 0.08 * _smooth_noise(rng, (h, w), 40)
    base = np.array([92, 60, 38], np.float32)
    arr = base[None, None, :] * tone[..., None] + rng.normal(0, 3, (h, w, 1))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def card_on_table(size=(1600, 1200), seed: int = 1, degrees: float = 4.0) -> Image.Image:
    """A handwritten card, about a fifth of the frame, photographed on a dark wooden table."""
    table = wood(size, seed)
    card = page(["Happy birthday Ben!", "Love from Anna", "and the kids"], size=(620, 400), font="dkg", font_size=56)
    card = card.convert("RGBA").rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True)
    table.paste(card, ((size[0] - card.width) // 2, (size[1] - card.height) // 2), card)
    return noise(table, 4, seed)


def garden(size=(1600, 1200), seed: int = 2) -> Image.Image:
    """A garden photo without a word on it: a pale sky, a hedge, and a lawn of slanted blades."""
    import cv2

    rng = _rng(seed)
    w, h = size
    arr = np.zeros((h, w, 3), np.float32)
    sky = np.linspace(0, 1, h // 3, dtype=np.float32)[:, None, None]
    arr[: h // 3] = (150 + 60 * sky) * np.array([0.75, 0.85, 1.0])
    hedge = 0.5 + 0.5 * _smooth_noise(rng, (h, w), 12)
    arr[h // 3 : h // 2] = np.array([40, 80, 35]) * (0.6 + 0.6 * hedge[h // 3 : h // 2, :, None])
    lawn = np.full((h - h // 2, w, 3), (70, 120, 50), np.float32)
    blades = np.zeros(lawn.shape[:2], np.uint8)
    for _ in range(2500):  # grass blades leaning ~10 degrees one way: oriented texture, no lines of text
        x, y = rng.integers(0, w), rng.integers(0, lawn.shape[0])
        length = rng.integers(15, 45)
        angle = np.radians(80 + rng.normal(0, 6))
        cv2.line(
            blades,
            (int(x), int(y)),
            (int(x + length * np.cos(angle)), int(y - length * np.sin(angle))),
            int(rng.integers(120, 255)),
            2,
        )
    lawn *= 0.7 + 0.6 * (blades[..., None] / 255.0)
    arr[h // 2 :] = lawn
    for _ in range(40):  # flowers
        cx, cy = int(rng.integers(0, w)), int(rng.integers(h // 2, h))
        cv2.circle(
            arr,
            (cx, cy),
            int(rng.integers(6, 14)),
            tuple(float(c) for c in rng.choice([(230, 60, 80), (240, 220, 60), (250, 250, 250)])),
            -1,
        )
    arr += rng.normal(0, 4, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def whiteboard(size=(1600, 1200), seed: int = 3) -> Image.Image:
    """A whiteboard on a coloured wall, lit from one side, with marker writing in three colours."""
    w, h = size
    im = Image.new("RGB", size, (180, 150, 110))  # a warm wall
    d = ImageDraw.Draw(im)
    x0, y0, x1, y1 = int(w * 0.1), int(h * 0.12), int(w * 0.9), int(h * 0.85)
    d.rectangle((x0 - 12, y0 - 12, x1 + 12, y1 + 12), fill=(170, 170, 175))  # aluminium frame
    d.rectangle((x0, y0, x1, y1), fill=(238, 240, 236))
    f = ImageFont.truetype(FONTS["humor"], 64)
    for i, (line, colour) in enumerate(
        [
            ("Sprint goals", (20, 40, 160)),
            ("- ship the importer", (20, 20, 20)),
            ("- fix login bug", (20, 20, 20)),
            ("Demo on Friday!", (190, 30, 30)),
        ]
    ):
        d.text((x0 + 60, y0 + 50 + i * 110), line, font=f, fill=colour)
    im = shadow(im, 0.35)
    return noise(im, 3, seed)


def jar_label(size=(1600, 1200), seed: int = 4) -> Image.Image:
    """A jar of jam on a kitchen counter: dark red glass, a curved paper label with two lines."""
    import cv2

    rng = _rng(seed)
    w, h = size
    arr = np.zeros((h, w, 3), np.float32)
    arr[:] = (110, 120, 130)  # tiles
    arr[int(h * 0.75) :] = (150, 120, 90)  # counter
    arr *= (0.85 + 0.15 * _smooth_noise(rng, (h, w), 60))[..., None]
    jx0, jx1, jy0, jy1 = int(w * 0.3), int(w * 0.7), int(h * 0.15), int(h * 0.85)
    cv2.rectangle(arr, (jx0, jy0), (jx1, jy1), (110, 20, 30), -1)  # the jam
    cv2.rectangle(arr, (jx0 + 20, jy0 - 60), (jx1 - 20, jy0), (200, 180, 60), -1)  # the lid
    label = np.asarray(page(["Plum jam", "Sept 2024"], size=(jx1 - jx0 - 40, 300), font="dkg", font_size=80)).astype(np.float32)
    lh, lw = label.shape[:2]
    xs = np.linspace(-1, 1, lw, dtype=np.float32)  # a cylinder: the label bends away at its sides
    map_x = ((np.arcsin(np.clip(xs * 0.95, -1, 1)) / np.arcsin(0.95) + 1) / 2 * (lw - 1))[None, :].repeat(lh, 0)
    map_y = (np.arange(lh, dtype=np.float32)[:, None] - 18 * (1 - xs[None, :] ** 2) + 18).astype(np.float32)
    bent = cv2.remap(label, map_x.astype(np.float32), map_y, cv2.INTER_LINEAR, borderValue=(110, 20, 30))
    bent *= (0.75 + 0.25 * np.cos(xs * 1.2))[None, :, None]  # darker towards the curved edges
    ly = int(h * 0.4)
    arr[ly : ly + lh, jx0 + 20 : jx0 + 20 + lw] = bent
    arr += rng.normal(0, 3, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


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
