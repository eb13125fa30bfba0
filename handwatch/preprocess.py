"""Prepare page images for a model: crop, deskew, fit, contrast, sharpen, JPEG — pure functions of image and options."""

from __future__ import annotations

import io
import math

import cv2
import numpy as np
from PIL import Image, ImageFilter

from handwatch.config import Preprocess

MAX_SKEW_DEG = 15.0
SKEW_CONFIDENCE = 0.3


def fit(im: Image.Image, max_side: int, max_pixels: int | None = None) -> Image.Image:
    """Shrink (never enlarge) so the long side is at most `max_side` and the area at most `max_pixels`."""
    w, h = im.size
    scale = min(1.0, max_side / max(w, h))
    if max_pixels:
        scale = min(scale, math.sqrt(max_pixels / (w * h)))
    if scale >= 1.0:
        return im
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if max_pixels and size[0] * size[1] > max_pixels:
        size = (max(1, int(w * scale)), max(1, int(h * scale)))  # rounding up may cross the cap
    return im.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)


def to_array(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("L") if im.mode != "L" else im)


def grayscale(im: Image.Image) -> Image.Image:
    return im.convert("L")


def contrast(im: Image.Image) -> Image.Image:
    """Even out light and stretch contrast: divide by the blurred background (shadows, vignetting), then CLAHE."""
    if im.mode == "L":
        return Image.fromarray(_even_light(np.asarray(im)))
    lab = cv2.cvtColor(np.asarray(im.convert("RGB")), cv2.COLOR_RGB2LAB)
    lab[:, :, 0] = _even_light(lab[:, :, 0])
    return Image.fromarray(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB))


def _even_light(lum: np.ndarray) -> np.ndarray:
    # Denoise first, keeping edges: CLAHE would otherwise amplify sensor noise into texture that
    # costs JPEG bytes (measured: 167 KB -> 442 KB on the bench photo; 194 KB with this filter).
    lum = cv2.bilateralFilter(lum, 5, 30, 5)
    k = max(15, (min(lum.shape) // 12) | 1)
    background = cv2.morphologyEx(lum, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k // 3 | 1, k // 3 | 1)))
    background = cv2.GaussianBlur(background, (k, k), 0)
    flat = cv2.divide(lum, np.maximum(background, 1), scale=255)
    return cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(flat)


def sharpen(im: Image.Image) -> Image.Image:
    return im.filter(ImageFilter.UnsharpMask(radius=1.5, percent=80, threshold=2))


def _ink_mask(gray: np.ndarray) -> np.ndarray:
    blur = cv2.GaussianBlur(gray, (3, 3), 0)
    block = max(15, (min(gray.shape) // 30) | 1)
    return cv2.adaptiveThreshold(blur, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, block, 15)


def estimate_skew(gray: np.ndarray, max_deg: float = MAX_SKEW_DEG, work_px: int = 600) -> float | None:
    """Angle in degrees (counter-clockwise positive, as Pillow rotates) of the text lines, or None when unsure.

    Projection profile: the ink mask is rotated through candidate angles, and the angle at which
    its row sums vary most (lines of ink alternating with clean gaps) wins. Unlike smearing
    letters into line blobs it does not need the words of a line to touch, which handwriting
    rarely does. It works on a ~600 px copy: skew is a global property, and this keeps it ~30 ms."""
    h, w = gray.shape
    scale = work_px / max(h, w)
    if scale < 1:
        gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    mask = _ink_mask(gray)
    ink = float((mask > 0).mean())
    if ink < 0.002 or ink > 0.35:
        return None  # a blank page, or a photo that is mostly dark: nothing to measure
    sh, sw = mask.shape
    centre = (sw / 2, sh / 2)
    # Only a central window that stays inside the picture at every angle tried: the empty corners
    # a rotation creates would otherwise raise the row variance at large angles by themselves.
    half_w = int(sw * 0.35)
    half_h = int(sh / 2 - half_w * math.tan(math.radians(max_deg)) - 2)
    if half_h < 20:
        return None
    cols = slice(int(centre[0]) - half_w, int(centre[0]) + half_w)
    rows_ = slice(int(centre[1]) - half_h, int(centre[1]) + half_h)

    def score(angle: float) -> float:
        m = cv2.getRotationMatrix2D(centre, -angle, 1.0)
        turned = cv2.warpAffine(mask, m, (sw, sh), flags=cv2.INTER_NEAREST)
        return float(np.var(turned[rows_, cols].sum(axis=1, dtype=np.float64)))

    coarse = np.arange(-max_deg, max_deg + 1e-6, 0.5)
    scores = np.array([score(a) for a in coarse])
    peak = float(scores.max())
    if peak <= 0 or (peak - float(np.median(scores))) / peak < SKEW_CONFIDENCE:
        return None  # no angle stands out: noise, drawings, or no lines of text
    best = float(coarse[int(scores.argmax())])
    fine = np.arange(best - 0.5, best + 0.5 + 1e-6, 0.1)
    best = float(fine[int(np.argmax([score(a) for a in fine]))])
    if abs(best) >= max_deg - 0.25:
        return None  # the best is at the edge of the search: the real tilt is probably larger
    return best


def rotate(im: Image.Image, angle: float) -> Image.Image:
    """Rotate counter-clockwise by `angle`, filling the new corners with the paper's colour."""
    if abs(angle) < 0.05:
        return im
    arr = np.asarray(im)
    fill = tuple(int(v) for v in np.percentile(arr.reshape(-1, 1 if arr.ndim == 2 else arr.shape[2]), 90, axis=0))
    return im.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=fill[0] if im.mode == "L" else fill)


def deskew(im: Image.Image) -> tuple[Image.Image, float | None]:
    angle = estimate_skew(to_array(im))
    return (rotate(im, -angle), angle) if angle is not None else (im, None)


def find_page(gray: np.ndarray) -> np.ndarray | None:
    """The four corners of a bright sheet on a darker background, or None when there is no clear one."""
    h, w = gray.shape
    blur = cv2.GaussianBlur(gray, (5, 5), 0)
    _, bright = cv2.threshold(blur, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    bright = cv2.morphologyEx(bright, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (15, 15)))
    contours, _ = cv2.findContours(bright, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    page = max(contours, key=cv2.contourArea)
    area = cv2.contourArea(page)
    if area < 0.2 * w * h or area > 0.97 * w * h:
        return None  # no sheet found, or the sheet already fills the frame
    quad = cv2.approxPolyDP(page, 0.02 * cv2.arcLength(page, True), True)
    if len(quad) != 4:
        x, y, bw, bh = cv2.boundingRect(page)
        quad = np.array([[x, y], [x + bw, y], [x + bw, y + bh], [x, y + bh]])
    return _order_corners(quad.reshape(4, 2).astype(np.float32))


def _order_corners(pts: np.ndarray) -> np.ndarray:
    s, d = pts.sum(axis=1), np.diff(pts, axis=1).ravel()
    return np.array([pts[np.argmin(s)], pts[np.argmin(d)], pts[np.argmax(s)], pts[np.argmax(d)]], dtype=np.float32)


def crop(im: Image.Image, perspective: bool = False) -> Image.Image:
    """Trim the table around a photographed sheet; with `perspective`, also square the sheet up."""
    quad = find_page(to_array(im))
    if quad is None:
        return im
    if not perspective:
        x0, y0 = np.floor(quad.min(axis=0)).astype(int)
        x1, y1 = np.ceil(quad.max(axis=0)).astype(int)
        return im.crop((max(0, x0), max(0, y0), min(im.width, x1), min(im.height, y1)))
    tl, tr, br, bl = quad
    width = int(max(np.linalg.norm(tr - tl), np.linalg.norm(br - bl)))
    height = int(max(np.linalg.norm(bl - tl), np.linalg.norm(br - tr)))
    dst = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(quad, dst)
    warped = cv2.warpPerspective(np.asarray(im), matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return Image.fromarray(warped)


def probe_image(digits: str) -> Image.Image:
    """A tiny picture of a number, for `check` to ask a model to read back."""
    from PIL import ImageDraw, ImageFont

    im = Image.new("RGB", (320, 120), "white")
    draw = ImageDraw.Draw(im)
    draw.text((160, 60), digits, fill="black", font=ImageFont.load_default(size=72), anchor="mm")
    return im


def encode_jpeg(im: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def prepare(im: Image.Image, opts: Preprocess, photo: bool) -> Image.Image:
    """The whole clean-up, cheapest first: everything after `fit` works on the reduced image."""
    im = fit(im, opts.max_side, opts.max_pixels)
    if opts.crop:
        im = crop(im, perspective=opts.crop == "perspective")
    if opts.deskew:
        im, _ = deskew(im)
        im = fit(im, opts.max_side, opts.max_pixels)  # rotating with expand grows the canvas a little
    if opts.grayscale:
        im = grayscale(im)
    if opts.contrast is True or (opts.contrast == "auto" and photo):
        im = contrast(im)
    if opts.sharpen:
        im = sharpen(im)
    return im
