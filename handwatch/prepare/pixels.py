"""Pixels and sizes shared by the image steps: the patch-aligned size budget, fast shrinking, and
the one place arrays and Pillow images cross."""

from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image

# One thread per call. OpenCV's own pool (a thread per core, spinning briefly for work) would split
# each filter across the cores the preparer threads already fill, one page each. Two threads preparing
# 12 MP JPEGs side by side spent 184 ms of CPU a page with it and 171 ms without; and in the daemon
# its threads' CPU belonged to no stage of bench.throughput's split. Every module calling OpenCV imports this one.
cv2.setNumThreads(1)

PATCH = 28  # Qwen2.5-VL's (and Qwen3-VL's 32 is close) patch grid: a budget in pixels is a budget in tokens


def fit_size(w: int, h: int, max_side: int, max_pixels: int | None = None) -> tuple[int, int]:
    """The size to shrink to (never enlarge): long side <= max_side and, with max_pixels, an area
    that stays within budget even after a model rounds each side to its 28-pixel patch grid."""
    scale = min(1.0, max_side / max(w, h))
    if max_pixels:
        scale = min(scale, math.sqrt(max_pixels / (w * h)))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if max_pixels:
        budget = max_pixels // (PATCH * PATCH)
        while (
            size[0] > PATCH
            and size[1] > PATCH
            and (size[0] * size[1] > max_pixels or round(size[0] / PATCH) * round(size[1] / PATCH) > budget)
        ):
            scale *= 0.99
            size = (max(1, int(w * scale)), max(1, int(h * scale)))
    return size


def resize(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Shrink fast without aliasing. By less than 2x: bilinear (each output pixel's footprint is covered).
    By 2x or more: halve by averaging 2x2 blocks while the picture is still at least twice the size, then
    blur away what is finer than the output's pixels and finish bilinear. OpenCV averages exact 2x2 blocks on
    a fast path and any other factor on a slow one: a 12 MP photo to 1288 px took 84 ms by area averaging,
    and takes 16 ms this way; 1265 to 448 px 9 against 1.9 ms (one core, the same run). Area averaging stays
    for a picture shrunk 2x or more along one side only (a fax's tall pixels)."""
    halved = False
    while size[0] * 2 <= arr.shape[1] and size[1] * 2 <= arr.shape[0]:
        arr, halved = _halve(arr), True
    h, w = arr.shape[:2]
    if (w, h) == size:
        return arr
    if size[0] < w / 2 or size[1] < h / 2:
        return cv2.resize(arr, size, interpolation=cv2.INTER_AREA)
    if halved:
        # Bilinear reads 2x2 input pixels an output pixel: stripes finer than the output's pixels (a 3 px
        # pattern on a 12 MP page) would alias into bands. A Gaussian of (factor - 1) first keeps them grey.
        sigma = max(w / size[0], h / size[1]) - 1
        if sigma >= 0.1:
            arr = cv2.GaussianBlur(arr, (0, 0), sigma)
    return cv2.resize(arr, size, interpolation=cv2.INTER_LINEAR)


def _halve(arr: np.ndarray) -> np.ndarray:
    """Half the size, each pixel the average of a 2x2 block; an odd last row or column is repeated to fill
    its block, so no edge of the page is dropped."""
    h, w = arr.shape[:2]
    if h % 2 or w % 2:
        arr = cv2.copyMakeBorder(arr, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)
    return cv2.resize(arr, (arr.shape[1] // 2, arr.shape[0] // 2), interpolation=cv2.INTER_AREA)


def shrink_by(arr: np.ndarray, factor: int) -> np.ndarray:
    """Shrink by a whole factor, trimming the few edge pixels that do not fill a block: area
    averaging with an exact integer factor takes OpenCV's fast path."""
    if factor <= 1:
        return arr
    h, w = arr.shape[:2]
    h, w = h - h % factor, w - w % factor
    return cv2.resize(arr[:h, :w], (w // factor, h // factor), interpolation=cv2.INTER_AREA)


def fit(im: Image.Image, max_side: int, max_pixels: int | None = None) -> Image.Image:
    """Shrink (never enlarge) to `fit_size`."""
    size = fit_size(im.width, im.height, max_side, max_pixels)
    if size == im.size:
        return im
    return to_image(resize(pixels(im), size))


def fit_array(arr: np.ndarray, max_side: int, max_pixels: int | None = None) -> np.ndarray:
    size = fit_size(arr.shape[1], arr.shape[0], max_side, max_pixels)
    return arr if size == (arr.shape[1], arr.shape[0]) else resize(arr, size)


def to_array(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("L") if im.mode != "L" else im)


HIGH_DEPTH_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}  # 16- and 32-bit grey, 32-bit float


def pixels(im: Image.Image) -> np.ndarray:
    """A grey, RGB or RGBX array of a Pillow image; transparent areas become white paper, not black,
    and grey deeper than 8 bits is scaled by its range (`convert` would clip it to white)."""
    if im.mode in HIGH_DEPTH_MODES:
        return to_8bit(workable(np.asarray(im)))
    if im.mode not in ("RGB", "L", "RGBX"):
        if im.mode in ("RGBA", "LA", "P", "PA") or "A" in im.getbands():
            bg = Image.new("RGB", im.size, "white")
            rgba = im.convert("RGBA")
            bg.paste(rgba, mask=rgba.getchannel("A"))
            im = bg
        else:
            im = im.convert("RGB")
    return np.asarray(im)


def workable(arr: np.ndarray) -> np.ndarray:
    """Deep samples in a form OpenCV can resize: native byte order (a big-endian TIFF's 16-bit
    samples arrive swapped), and 32-bit integers or 16-bit floats as 32-bit floats."""
    if arr.dtype.byteorder == (">" if np.little_endian else "<"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if (arr.dtype.kind in "iu" and arr.dtype.itemsize >= 4) or arr.dtype == np.float16 or arr.dtype == np.int8:
        arr = arr.astype(np.float32)
    return arr


def to_8bit(arr: np.ndarray) -> np.ndarray:
    """8-bit samples scaled by the image's actual range, darkest to 0 and brightest to 255.

    Not by the type's nominal range: a 12-bit scanner's samples stored in 16 bits would come out
    nearly black, and a float image has no nominal range at all. Non-finite floats count as the
    darkest value; an image of one value keeps its level on the nominal scale (0..1 for floats)."""
    if arr.dtype == np.uint8:
        return arr
    a = arr
    if a.dtype.kind == "f":
        finite = np.isfinite(a)
        if not finite.all():
            if not finite.any():
                return np.zeros(a.shape, np.uint8)
            a = np.where(finite, a, a[finite].min())
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        top = 1.0 if a.dtype.kind == "f" else float(np.iinfo(a.dtype).max)
        return np.full(a.shape, round(float(np.clip(lo / top, 0, 1)) * 255), np.uint8)
    scale = 255.0 / (hi - lo)
    return cv2.convertScaleAbs(a, alpha=scale, beta=-lo * scale)


def luma(arr: np.ndarray) -> np.ndarray:
    """Grey levels of a grey, RGB or RGBX array (the same ITU-R 601 weights as Pillow's "L")."""
    if arr.ndim == 2:
        return arr
    return cv2.cvtColor(arr, cv2.COLOR_RGB2GRAY if arr.shape[2] == 3 else cv2.COLOR_RGBA2GRAY)


def to_image(arr: np.ndarray) -> Image.Image:
    """The Pillow image of an array: RGBX (RGB padded to four bytes, as Pillow stores RGB anyway)
    is handed over without a copy, and JPEG encodes it as RGB."""
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = np.ascontiguousarray(arr)
        return Image.frombuffer("RGBX", (arr.shape[1], arr.shape[0]), arr, "raw", "RGBX", 0, 1)
    return Image.fromarray(arr)
