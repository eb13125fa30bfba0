"""Prepare page images for a model: crop, fit, contrast, sharpen, JPEG, and `prepare`, which runs them with deskew (`skew.py`) — pure functions of image and options."""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image, ImageFilter

from handwatch.config.preprocess import Preprocess
from handwatch.prepare import paper
from handwatch.prepare.pixels import fit_array, luma, pixels, shrink_by, to_image
from handwatch.prepare.skew import MIN_ROTATION_DEG, estimate_skew, rotate_fit_array

ENGINE_SIZES = {"vlm": (1288, 1_254_400), "tesseract": (2400, None)}  # (max_side, max_pixels)


def grayscale(im: Image.Image) -> Image.Image:
    return im.convert("L")


def contrast(im: Image.Image) -> Image.Image:
    """Even out light and stretch contrast: divide by the blurred background (shadows, vignetting), then CLAHE."""
    return to_image(contrast_array(pixels(im)))


def contrast_array(arr: np.ndarray, where: paper.Paper | None = None) -> np.ndarray:
    """`contrast` on a grey, RGB or RGBX array; the answer has as many channels as the question.
    Only the paper changes (`where`, found here when not given): a dark table around a card stays
    dark, and a picture with no page in it is returned as it is."""
    where = where or paper.find(luma(arr))
    if where is None:
        return arr
    if arr.ndim == 2:
        return _even_light(arr, where)
    # Correct only the luma and keep the chroma, so blue ink stays blue. YCrCb rather than LAB:
    # the same effect here, measured at 1.9 ms for the round trip against LAB's 13.7 ms.
    ycc = cv2.cvtColor(arr, cv2.COLOR_RGB2YCrCb)  # reads the first three of four channels too
    ycc[:, :, 0] = _even_light(cv2.extractChannel(ycc, 0), where)
    return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB, dstCn=arr.shape[2])


def _even_light(lum: np.ndarray, where: paper.Paper) -> np.ndarray:
    everywhere = float(where.weight.min()) > 0.99
    weight = None if everywhere else where.at(lum.shape)
    out = _even_light_all(lum, None if weight is None else (weight >= 0.5).astype(np.uint8))
    if weight is None:
        return out
    # Blend back to the picture as it was, off the paper (feathered at its edge). OpenCV blends
    # 8-bit images itself (rounding): measured 2.1 ms against 11.4 ms through float32 copies.
    return cv2.blendLinear(out, lum, weight, 1 - weight)


def _even_light_all(lum: np.ndarray, on_paper: np.ndarray | None) -> np.ndarray:
    # Denoise first, keeping edges: CLAHE would otherwise amplify sensor noise into texture that
    # costs JPEG bytes (measured: 167 KB -> 442 KB on the bench photo; 194 KB with this filter).
    lum = _denoise(lum)
    # The paper's brightness varies slowly: estimate it at a quarter of the size (16x less work),
    # closing away the ink strokes, then blur and bring it back to full size.
    h, w = lum.shape
    small = shrink_by(lum, 4)
    k = max(5, (min(small.shape) // 12) | 1)
    background = cv2.morphologyEx(small, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k // 3 | 1, k // 3 | 1)))
    background = cv2.GaussianBlur(background, (k, k), 0)
    background = cv2.resize(background, (w, h), interpolation=cv2.INTER_LINEAR)
    # Paper lands near PAPER_LEVEL, leaving headroom to see how its grain spreads.
    flat = cv2.divide(lum, np.maximum(background, 1), scale=PAPER_LEVEL)
    level, grain = _paper_and_grain(flat, on_paper)
    if level < 64:
        return flat  # mostly dark: not a page of paper, leave it alone
    # White point: everything as bright as the paper's grain becomes plain white. CLAHE alone
    # spreads that grain into visible texture (on the benchmark's combined damage, Tesseract's
    # error rate was 21% with it against 2% without); pinned at 255 it has nothing left to spread.
    flat = cv2.LUT(flat, _white_point(level, grain))
    # CLAHE's clip limit bounds how much it amplifies local contrast, grain included: the
    # grainier the page, the less it may (2.0 on clean paper, 1.0, i.e. hardly any, from 3 levels).
    clip = float(np.clip(2.0 - grain / 3, 1.0, 2.0))
    return cv2.createCLAHE(clipLimit=clip, tileGridSize=(8, 8)).apply(flat)


PAPER_LEVEL = 224
GRAIN_SIGMAS = 2.0
WHITE_MARGIN = 4.0  # at least this far below the paper is white: flat-fielding leaves a few levels of residue (a curled page)
KNEE = 2.0  # the steeper ramp to white starts this many margins below the white point


def _white_point(level: float, grain: float) -> np.ndarray:
    """The LUT that makes everything as bright as the paper's grain plain white. Tones darker
    than a knee (KNEE margins below the white point) are scaled as if the paper itself were the
    white point, and only the band between knee and white point is stretched more steeply.
    Scaling the whole range by 255/white (what this did before) brightened every tone of a soft,
    blurred stroke as well: with the 4-level floor, blur r=2.5 read 10 characters worse than a
    plain resize (band ±9); with the knee the strokes keep their tones and the curled page's
    residue still turns white (bench.legibility, blur +3, curled -3, clean -4 over 16 pages)."""
    white = float(np.clip(level - max(GRAIN_SIGMAS * grain, WHITE_MARGIN), 0.85 * level, level))
    x = np.arange(256, dtype=np.float64)
    knee = max(white - KNEE * (level - white), 1.0)
    below = x * (255.0 / level)
    at_knee = knee * 255.0 / level
    ramp = at_knee + (x - knee) * (255.0 - at_knee) / max(white - knee, 1e-6)
    return np.clip(np.where(x <= knee, below, ramp), 0, 255).astype(np.uint8)


def _paper_and_grain(flat: np.ndarray, on_paper: np.ndarray | None = None) -> tuple[float, float]:
    """The paper's level and the standard deviation of its grain, read off the histogram (of the
    paper alone, when there is more in the picture). The median is paper (ink covers far less
    than half a page) and the spread above it is grain alone (ink only ever darkens), so dense
    writing does not make the grain look larger than it is."""
    cdf = np.cumsum(cv2.calcHist([flat], [0], on_paper, [256], [0, 256]).ravel())
    cdf = cdf / cdf[-1]
    median, upper = float(np.searchsorted(cdf, 0.5)), float(np.searchsorted(cdf, 0.75))
    return median, (upper - median) / 0.674


def _denoise(lum: np.ndarray) -> np.ndarray:
    return cv2.bilateralFilter(lum, 5, 30, 5)


def sharpen(im: Image.Image) -> Image.Image:
    return im.filter(ImageFilter.UnsharpMask(radius=1.5, percent=80, threshold=2))


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
    arr = np.asarray(im)
    out = crop_array(arr, perspective)
    return im if out is arr else Image.fromarray(out, im.mode)


def crop_array(arr: np.ndarray, perspective: bool = False) -> np.ndarray:
    quad = find_page(luma(arr))
    if quad is None:
        return arr
    if not perspective:
        x0, y0 = np.floor(quad.min(axis=0)).astype(int)
        x1, y1 = np.ceil(quad.max(axis=0)).astype(int)
        return np.ascontiguousarray(arr[max(0, y0) : y1, max(0, x0) : x1])
    tl, tr, br, bl = quad
    width = int(max(np.linalg.norm(tr - tl), np.linalg.norm(br - bl)))
    height = int(max(np.linalg.norm(bl - tl), np.linalg.norm(br - tr)))
    dst = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(quad, dst)
    return cv2.warpPerspective(arr, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def probe_image(digits: str) -> Image.Image:
    """A tiny picture of a number, for `check` to ask a model to read back."""
    from PIL import ImageDraw, ImageFont

    im = Image.new("RGB", (320, 120), "white")
    draw = ImageDraw.Draw(im)
    draw.text((160, 60), digits, fill="black", font=ImageFont.load_default(size=72), anchor="mm")
    return im


def encode_jpeg(im: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)  # optimize=True saves ~12% of bytes for ~2x the encode time
    return buf.getvalue()


def for_engine(opts: Preprocess, engine: str) -> Preprocess:
    """Fill in the sizes the rule left to the engine: a VLM's budget is tokens, Tesseract's is legibility."""
    side, pixels = ENGINE_SIZES.get(engine, ENGINE_SIZES["vlm"])
    return opts.model_copy(
        update={"max_side": opts.max_side or side, "max_pixels": opts.max_pixels if opts.max_side or opts.max_pixels else pixels}
    )


def prepare(image: Image.Image | np.ndarray, opts: Preprocess, photo: bool) -> Image.Image:
    return prepare_page(image, opts, photo)[0]


def prepare_page(image: Image.Image | np.ndarray, opts: Preprocess, photo: bool) -> tuple[Image.Image, np.ndarray]:
    """`prepare`'s page, and its pixels as an array for the measures that follow (the ink measure reads
    them without copying the image back out of Pillow: 4.8 against 6.9 ms at 1288 px)."""
    arr = _prepared(image, opts, photo)
    out = to_image(arr)
    if opts.sharpen:
        out = sharpen(out)
        arr = pixels(out)
    return out, arr


def _prepared(image: Image.Image | np.ndarray, opts: Preprocess, photo: bool) -> np.ndarray:
    """The whole clean-up, cheapest first: everything after the first shrink works on the reduced
    image, deskew and the final size are one interpolation, and the pixels stay in NumPy arrays
    until the end (each crossing between Pillow and NumPy copies them: ~0.7 ms at 1288 px).
    The answer is a grey, RGB or RGBX array (RGBX only when the picture came as RGBX)."""
    if opts.max_side is None:
        opts = for_engine(opts, "vlm")
    max_side = opts.max_side or ENGINE_SIZES["vlm"][0]  # for_engine has set it
    arr = image if isinstance(image, np.ndarray) else pixels(image)
    arr = fit_array(arr, max_side)  # decoding already got close; this makes sure
    if opts.crop:
        arr = crop_array(arr, perspective=opts.crop == "perspective")
    wants_contrast = opts.contrast is True or (opts.contrast == "auto" and photo)
    # No paper with ink on it (a garden, a face, a blank sheet): nothing to straighten or clean,
    # and the picture is only resized.
    grey = luma(arr) if opts.deskew or wants_contrast else None
    sheet = paper.find(grey) if grey is not None else None
    angle = estimate_skew(grey, where=sheet) if grey is not None and opts.deskew and sheet is not None else None
    if angle is not None and sheet is not None and abs(angle) >= MIN_ROTATION_DEG:
        arr = rotate_fit_array(arr, -angle, max_side, opts.max_pixels)
        sheet = sheet.turned(-angle)  # the paper turned with the picture
    else:
        arr = fit_array(arr, max_side, opts.max_pixels)
    if opts.grayscale:
        arr = luma(arr)
    if wants_contrast and sheet is not None:
        arr = contrast_array(arr, sheet)
    return arr
