"""Straighten tilted text: estimate the angle from the text lines (projection profile) and turn
the page by it, shrinking to size in the same interpolation."""

from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image

from handwatch.prepare.pixels import fit_size, pixels, shrink_by, to_array, to_image

MAX_SKEW_DEG = 15.0
SKEW_CONFIDENCE = 0.47  # measured: noise <= 0.46 (40 draws), two short lines >= 0.49, full pages >= 0.79
MIN_ROTATION_DEG = 0.5  # below this, resampling the whole page costs more legibility than the tilt does


def _ink_mask(gray: np.ndarray) -> np.ndarray:
    blur = cv2.GaussianBlur(gray, (3, 3), 0)
    block = max(15, (min(gray.shape) // 30) | 1)
    return cv2.adaptiveThreshold(blur, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, block, 15)


def estimate_skew(gray: np.ndarray, max_deg: float = MAX_SKEW_DEG, work_px: int = 480, where=None) -> float | None:
    """Angle in degrees (counter-clockwise positive, as Pillow rotates) of the text lines, or None when unsure.
    With `where` (a `paper.Paper`), only ink on the paper counts: a card's text, not the wood grain around it.

    Projection profile: the ink mask is rotated through candidate angles, and the angle at which
    its row sums change most sharply (lines of ink alternating with clean gaps) wins. Unlike smearing
    letters into line blobs it does not need the words of a line to touch, which handwriting
    rarely does. It works on a ~600 px copy: skew is a global property, and this keeps it ~30 ms."""
    gray = shrink_by(gray, round(max(gray.shape) / work_px))
    mask = _ink_mask(gray)
    area = mask.size
    if where is not None:
        on_paper = where.at(mask.shape) >= 0.5
        mask[~on_paper] = 0
        area = max(int(on_paper.sum()), 1)
    ink = float(np.count_nonzero(mask)) / area
    if ink < 0.002 or ink > 0.35:
        return None  # a blank page, or a photo that is mostly dark: nothing to measure
    # Coarse search on a quarter-size mask (16x fewer pixels), then refine on the full work size.
    quarter = shrink_by(mask, 4)
    coarse_score, fine_score = _profile_scorer(quarter, max_deg), _profile_scorer(mask, max_deg)
    coarse = np.arange(-max_deg, max_deg + 1e-6, 1.0)
    best = float(coarse[int(np.argmax([coarse_score(a) for a in coarse]))])
    # Refine by halving steps (0.5, 0.25, 0.125 degrees: reaches +-0.875 around the coarse best,
    # whose step is 1 degree): 7 scores instead of 13 for a 0.1-degree grid, no less accurate.
    peak, step = fine_score(best), 0.5
    while step > 0.1:
        for candidate in (best - step, best + step):
            value = fine_score(candidate)
            if value > peak:
                best, peak = candidate, value
        step /= 2
    # Sure only if the best angle clearly beats angles well away from it, judged at full work size
    # (a quarter-size mask is too blurred to tell text lines from noise).
    away = [fine_score(best + d) for d in (-10.0, -7.0, -4.0, 4.0, 7.0, 10.0) if abs(best + d) <= max_deg]
    if peak <= 0 or (peak - float(np.median(away))) / peak < SKEW_CONFIDENCE:
        return None  # no angle stands out: noise, drawings, or no lines of text
    if abs(best) >= max_deg - 0.25:
        return None  # the best is at the edge of the search: the real tilt is probably larger
    return best


def _paper(arr: np.ndarray):
    """The colour for the corners a rotation uncovers: what lies along the picture's border (the
    paper of a page that fills the frame, the table around a card), brightish rather than ink."""
    c = 1 if arr.ndim == 2 else arr.shape[2]
    border = np.concatenate([arr[0].reshape(-1, c), arr[-1].reshape(-1, c), arr[:, 0].reshape(-1, c), arr[:, -1].reshape(-1, c)])
    fill = np.percentile(border, 75, axis=0)
    return float(fill[0]) if arr.ndim == 2 else tuple(float(v) for v in fill)


def _taper(n: int, fraction: float = 0.12) -> np.ndarray:
    """1 in the middle, falling smoothly (half a cosine) to 0 over `fraction` of each end."""
    ramp = max(1, int(n * fraction))
    w = np.ones(n, np.float32)
    edge = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, ramp, dtype=np.float32))
    w[:ramp], w[n - ramp :] = edge, edge[::-1]
    return w


def _profile_scorer(mask: np.ndarray, max_deg: float, strip: int = 4):
    """score(angle): how sharply the row sums of `mask`, turned by -angle, change from row to row
    (sum of squared differences). Aligned text lines give sharp ink/gap edges at every line;
    the page's outline contributes only two edges.

    The mask is never rotated: it is cut into columns `strip` pixels wide, each summed along its
    rows once, and for each angle every column's profile is moved to where a rotation would put it
    and added in with linear interpolation. That is 1/strip of the pixels per angle, measured 3x
    faster than warping the mask (0.23 against 0.71 ms) for the same scores, and nothing is ever
    rotated out of view wherever it lies on the page."""
    h, w = mask.shape
    cols = w // strip
    strips = mask[:, : cols * strip].reshape(h, cols, strip).sum(axis=2, dtype=np.float32)
    # Pre-smooth the rows (the strips already average across): at 0 degrees every column lands
    # exactly on a row while any other angle spreads it over two, which alone would make pixel
    # noise look sharpest at 0 degrees.
    strips = cv2.GaussianBlur(strips, (1, 0), sigmaX=0.1, sigmaY=1.5)
    # Zero-mean: evenly spread "ink" (noise, texture) then has no envelope for the taper to shape.
    # Fade out towards the picture's border: its rectangular outline would otherwise be a
    # perfectly sharp edge at 0 degrees, pulling every estimate (and pure noise) towards "straight".
    weighted = (strips - strips.mean()) * np.outer(_taper(h), _taper(cols))
    values = weighted.T.astype(np.float64).ravel()
    xs = np.arange(cols) * strip + (strip - 1) / 2 - w / 2
    ys = np.arange(h) - h / 2
    bins = int(math.ceil(math.hypot(h, w))) + 4

    def score(angle: float) -> float:
        a = math.radians(angle)
        rows = np.add.outer(xs * math.sin(a) + bins / 2, ys * math.cos(a)).ravel()
        low = rows.astype(np.intp)  # rows > 0: floor
        upper = values * (rows - low)  # each value's share for the row below it, and the rest for its own
        profile = np.bincount(low, values - upper, bins + 1)
        profile[1:] += np.bincount(low, upper, bins)
        return float(np.sum(np.diff(profile) ** 2))

    return score


def rotate_fit(im: Image.Image, angle: float, max_side: int, max_pixels: int | None = None) -> Image.Image:
    """Rotate counter-clockwise by `angle` onto a canvas grown to hold the corners (filled with the
    paper's colour) and shrink to fit — one interpolation instead of two."""
    out = rotate_fit_array(pixels(im), angle, max_side, max_pixels)
    return to_image(out if out.ndim == 2 or out.shape[2] == 3 else cv2.cvtColor(out, cv2.COLOR_RGBA2RGB))


def rotate_fit_array(arr: np.ndarray, angle: float, max_side: int, max_pixels: int | None = None) -> np.ndarray:
    h, w = arr.shape[:2]
    rad = math.radians(angle)
    cw = abs(w * math.cos(rad)) + abs(h * math.sin(rad))
    ch = abs(w * math.sin(rad)) + abs(h * math.cos(rad))
    out_w, out_h = fit_size(round(cw), round(ch), max_side, max_pixels)
    scale = min(out_w / cw, out_h / ch)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    m[0, 2] += out_w / 2 - w / 2
    m[1, 2] += out_h / 2 - h / 2
    interp = cv2.INTER_AREA if scale < 0.7 else cv2.INTER_LINEAR
    # Three channels are warped as they are: with OpenCV 5.1, 5.4 ms for a 1288 px photo against 9.7 ms
    # padded to RGBX (whose vector path was the quicker in OpenCV 4.9), for the same pixels (issue #25).
    return cv2.warpAffine(arr, m, (out_w, out_h), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=_paper(arr))


def rotate(im: Image.Image, angle: float) -> Image.Image:
    """Rotate counter-clockwise by `angle`, growing the canvas and filling it with the paper's colour."""
    if abs(angle) < 0.05:
        return im
    return rotate_fit(im, angle, 1 << 30)


def deskew(im: Image.Image) -> tuple[Image.Image, float | None]:
    angle = estimate_skew(to_array(im))
    return (rotate(im, -angle), angle) if angle is not None else (im, None)
