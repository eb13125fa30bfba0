"""Decode one image page (JPEG, PNG, WebP, TIFF, HEIC) into an array no larger than needed: each
orientation applied exactly once, deep samples scaled to 8 bits, square pixels, and what the
decoder complained about collected (`notices`) rather than printed."""

from __future__ import annotations

import io
import mmap
import os
import threading
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from handwatch.errors import InputError
from handwatch.prepare import heifplanes, notices, tiff
from handwatch.prepare.pixels import HIGH_DEPTH_MODES, fit_size, pixels, resize, to_8bit, workable

PILLOW_CEILING = 2_000_000_000  # the config's maximum: our own header check decides below it
ORIENTATION = 0x0112
UPRIGHT = {  # EXIF orientation → what makes the picture upright, on an array
    2: lambda a: cv2.flip(a, 1),
    3: lambda a: cv2.rotate(a, cv2.ROTATE_180),
    4: lambda a: cv2.flip(a, 0),
    5: lambda a: cv2.transpose(a),
    6: lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE),
    7: lambda a: cv2.rotate(cv2.transpose(a), cv2.ROTATE_180),
    8: lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE),
}
TRANSPOSING = {5, 6, 7, 8}

_heif_lock = threading.Lock()
_heif_ready = False


def ensure_heif() -> None:
    global _heif_ready
    with _heif_lock:
        if not _heif_ready:
            import pillow_heif

            pillow_heif.register_heif_opener()
            _heif_ready = True


def _open(path: Path, kind: str) -> Image.Image:
    if kind == "heif":
        ensure_heif()
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < PILLOW_CEILING:
        Image.MAX_IMAGE_PIXELS = PILLOW_CEILING  # Pillow warns above this, errors at twice it
    try:
        return Image.open(path)
    except Image.DecompressionBombError as e:
        raise InputError(f"image too large: {one_line(e)}") from None


def one_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:200]


def check_pixels(w: int, h: int, max_megapixels: float, what: str = "image") -> None:
    if w * h > max_megapixels * 1_000_000:
        raise InputError(f"{what} is {w}x{h} = {w * h / 1e6:.0f} megapixels, over the {max_megapixels:g} MP limit")


class _Unopened(Exception):
    pass


def _open_or_explain(path: Path, kind: str) -> Image.Image:
    """Pillow's image, or `_Unopened` for a TIFF it cannot open (its complaints then dropped:
    they are about Pillow's parser, not the file) or an InputError saying why."""
    said: list[str] = []
    try:
        with notices.collect(propagate=False) as said:
            return _open(path, kind)
    except InputError:
        raise
    except Exception as e:
        if kind == "tiff" and tiff.is_tiff(path):
            said.clear()
            raise _Unopened() from None
        if kind == "jpeg":
            why = jpeg_unsupported(path)
            if why:
                raise InputError(why) from None
        if isinstance(e, UnidentifiedImageError):
            raise InputError(f"corrupt or truncated {kind.upper()}: the image data cannot be read") from None
        raise
    finally:
        for m in said:
            notices.say(m)


def frame_count(path: Path, kind: str, max_megapixels: float, max_pages: int) -> int:
    """Header only: the pixel limit is checked before a single pixel is decoded."""
    if kind == "jpeg" and not jpeg_reaches_image_data(path):
        raise InputError(f"corrupt or truncated JPEG: junk where its headers should be (over {JPEG_JUNK_LIMIT >> 20} MB)")
    try:
        im = _open_or_explain(path, kind)
    except _Unopened:
        return len(_unopened(path, max_megapixels, max_pages))
    with im:
        n = getattr(im, "n_frames", 1) if kind == "tiff" else 1
        if n > max_pages:
            raise InputError(f"{n} pages, over the max_pages limit of {max_pages}")
        for i in range(n):
            im.seek(i)
            check_pixels(*im.size, max_megapixels)
        return n


def page(path: Path, kind: str, number: int, max_side: int, max_megapixels: float) -> np.ndarray:
    """Page `number` (from 1), upright, its long side reduced toward `max_side`."""
    if kind == "heif":
        return _heif_page(path, max_side, max_megapixels)
    try:
        im = _open_or_explain(path, kind)
    except _Unopened:
        dirs = _unopened(path, max_megapixels, number, count_all=False)
        if len(dirs) < number:
            raise InputError(f"TIFF has no page {number}") from None
        return _libtiff_page(path, number, dirs[number - 1], max_side)
    with im:
        if number > 1:
            im.seek(number - 1)
        check_pixels(*im.size, max_megapixels)  # again: the file may have been replaced since
        return _decode_frame(im, path, kind, max_side)


def _unopened(path: Path, max_megapixels: float, max_pages: int, count_all: bool = True) -> list[tiff.Directory]:
    """A TIFF Pillow cannot open, read from its own header (libtiff decodes what Pillow does not:
    big-endian BigTIFF, 64-bit float)."""
    try:
        dirs = tiff.directories(path, max_pages + 1 if count_all else max_pages)
    except (ValueError, OSError) as e:
        raise InputError(f"corrupt or truncated TIFF: {one_line(e)}") from None
    if not dirs:
        raise InputError("corrupt or truncated TIFF: no pages")
    if len(dirs) > max_pages:
        raise InputError(f"{len(dirs)}+ pages, over the max_pages limit of {max_pages}")
    for d in dirs:
        check_pixels(d.width, d.height, max_megapixels)
    return dirs


def _libtiff_page(path: Path, number: int, d: tiff.Directory, max_side: int) -> np.ndarray:
    arr = tiff.decode(path, number)
    if arr is None:
        raise InputError(f"TIFF with {d.describe()} cannot be decoded")
    alpha = None
    if arr.ndim == 3 and arr.shape[2] in (2, 4):
        arr, alpha = arr[..., :-1], arr[..., -1]
        arr = arr[..., 0] if arr.shape[2] == 1 else arr
    x_res, y_res = (d.y_res, d.x_res) if d.orientation in TRANSPOSING else (d.x_res, d.y_res)
    arr = to_8bit(_fit(workable(arr), max_side, x_res, y_res))
    if alpha is not None:
        opaque = 1.0 if alpha.dtype.kind == "f" else float(np.iinfo(alpha.dtype).max)
        a = _fit(workable(alpha), max_side, x_res, y_res).astype(np.float32) / opaque
        a = np.clip(a[..., None] if arr.ndim == 3 else a, 0, 1)
        arr = (arr * a + 255 * (1 - a)).astype(np.uint8)  # transparent areas become white paper
    # libtiff (OpenCV) turns the page upright itself, whatever the flags say: measured for all
    # eight orientations. Should a version not, the transposed sizes tell, and it is done here.
    turned = d.orientation in TRANSPOSING and d.width != d.height and arr.shape[0] == d.width
    return arr if d.orientation not in TRANSPOSING or turned else _upright(arr, d.orientation)


def _decode_frame(frame: Image.Image, path: Path, kind: str, max_side: int) -> np.ndarray:
    """Decode no more pixels than needed (JPEG's DCT scaling gives M/8 size almost for free),
    shrink, and only then turn the picture upright: transposing at full size costs a copy.

    Orientation: the tag is applied only if the decoder left it. Pillow itself turns a TIFF
    upright while loading it and drops the tag; pillow-heif applies HEIC's irot/imir and resets
    the EXIF tag (HEIF readers must ignore it); JPEG, PNG and WebP keep theirs for us."""
    tag = frame.getexif().get(ORIENTATION, 1)
    arr = _decode_jpeg(frame, path, max_side) if kind == "jpeg" else None
    if arr is not None:
        return _upright(arr, tag)
    if kind == "jpeg":
        w, h = frame.size
        scale = max(w, h) / max_side
        if scale >= 2:
            frame.draft("RGB", (max(1, int(w / scale)), max(1, int(h / scale))))
    frame.load()
    left = frame.getexif().get(ORIENTATION, 1)
    x_res, y_res = frame.info.get("dpi", (0, 0)) if kind == "tiff" else (0, 0)
    if tag in TRANSPOSING and left != tag:  # the decoder turned it: its resolution turned too
        x_res, y_res = y_res, x_res
    if frame.mode in HIGH_DEPTH_MODES:
        arr = to_8bit(_fit(workable(np.asarray(frame)), max_side, x_res, y_res))
    else:
        arr = _fit(pixels(frame), max_side, x_res, y_res)
    return _upright(arr, left)


def _heif_page(path: Path, max_side: int, max_megapixels: float) -> np.ndarray:
    """HEIC straight from libheif's buffer into the resize: HEVC has no reduced-size decode, so
    all 12 MP are decoded (~0.9 s of libde265 on one core, the bulk of a page); its YCbCr planes are
    shrunk before they become RGB (`heifplanes`), and only what that does not handle goes through
    pillow-heif's full-size RGB. libheif applies irot/imir itself, and its
    threads decode an iPhone's 512 px tiles in parallel (pillow-heif's DECODE_THREADS). A preview
    the file carries that is at least the size wanted is decoded instead (`heif_preview`).
    The file is read once (pillow-heif reads it whole either way): the preview comes from the
    bytes whose image passed the pixel limit, not from whatever the name holds a moment later."""
    import pillow_heif

    ensure_heif()
    data = path.read_bytes()
    heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True)
    image = heif[heif.primary_index]
    check_pixels(*image.size, max_megapixels)
    preview = heif_preview(io.BytesIO(data), max_side)
    if preview is not None:
        return _fit(preview, max_side)
    planes = heifplanes.page(data, max_side, pillow_heif.options.DECODE_THREADS)
    if planes is not None:
        return planes
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 4:  # transparent areas become white paper
        return _fit(pixels(Image.fromarray(arr, "RGBA")), max_side)
    return _fit(arr, max_side)


def heif_preview(source: Path | BinaryIO, max_side: int) -> np.ndarray | None:
    """The smallest embedded thumbnail ("preview") of a HEIC that still reaches the size a page is
    shrunk to, or None. Decoding it costs a fraction of the 12 MP image; pillow-heif's `draft` takes
    only a scaled copy of the primary image (same aspect ratio, mode and irot/imir). A phone's own
    thumbnail (320-512 px) is far too small to read a page from, so mostly there is none."""
    with Image.open(source) as im:
        wanted = fit_size(*im.size, max_side)
        if wanted == im.size or not im.info.get("thumbnails") or im.draft(None, wanted) is None:
            return None
        return pixels(im)


EXIF_THUMB_MAX = 1024  # cameras write 160-640 px; a thumbnail declaring more is not a camera's (a bomb is)
EXIF_MAX_BYTES = 65533  # all of an APP1 segment: the thumbnail lies inside one


def exif_thumbnail(path: Path, least: int) -> np.ndarray | None:
    """A camera JPEG's own EXIF thumbnail (IFD1; phones write 160x120, some 320x240), upright, if it is at least
    `least` px long and has the picture's shape: reading it costs under a millisecond, against ~50 ms of
    entropy decoding that even a 1/8-scaled decode of 12 MP needs. A thumbnail of another shape is stale (an
    editor cropped or turned the picture and left it) or letterboxed: None, and the caller decodes. So is one
    that is larger than a camera makes, not smaller than the picture, or progressive: a few hundred bytes of
    progressive JPEG can declare 30000x30000 pixels, and none of it is decoded."""
    try:
        with Image.open(path, formats=["JPEG"]) as im:
            raw = im.info.get("exif") or b""
            exif = im.getexif()
            w, h = im.size
            ifd1 = exif.get_ifd(ExifTags.IFD.IFD1) if exif else {}
    except Exception:  # whatever is wrong with the file, the decode that follows says it
        return None
    start, length = ifd1.get(0x0201), ifd1.get(0x0202)  # JPEGInterchangeFormat(Length), from the TIFF header
    if not isinstance(start, int) or not isinstance(length, int) or not raw.startswith(b"Exif\x00\x00"):
        return None
    blob = raw[6 + start : 6 + start + min(length, EXIF_MAX_BYTES)]
    try:
        with Image.open(io.BytesIO(blob), formats=["JPEG"]) as th:
            tw, th_h = th.size
            if not least <= max(tw, th_h) <= EXIF_THUMB_MAX or tw >= w or th_h >= h or th.info.get("progressive"):
                return None
            if abs(tw / th_h - w / h) > 0.05 * (w / h):
                return None
            arr = pixels(th.convert("RGB"))
    except Exception:  # a thumbnail that does not decode: the picture itself is decoded, and says what is wrong
        return None
    return _upright(arr, exif.get(ORIENTATION, 1))


def heif_look(path: Path, max_side: int, least: int, max_megapixels: float) -> np.ndarray | None:
    """A HEIC's own thumbnail for a quick look, if it has one at least `least` px long (a phone embeds 320 px):
    a fraction of the ~1 s that decoding 12 MP of HEVC costs. None when there is none. The file is read once:
    the thumbnail comes from the bytes whose picture passed the pixel limit."""
    ensure_heif()
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        check_pixels(*im.size, max_megapixels)
    try:
        arr = heif_preview(io.BytesIO(data), least)
    except Exception:  # a thumbnail that does not decode: the page itself is decoded, and says what is wrong
        return None
    return None if arr is None else _fit(arr, max_side)


def _upright(arr: np.ndarray, orientation: int) -> np.ndarray:
    return UPRIGHT[orientation](arr) if orientation in UPRIGHT else arr


def _fit(arr: np.ndarray, max_side: int, x_res: float = 0, y_res: float = 0) -> np.ndarray:
    """Shrink toward `max_side`, and make the pixels square in the same resize: a fax at
    204x98 dpi has pixels twice as tall as wide, and would otherwise arrive squashed."""
    h, w = arr.shape[:2]
    x_res, y_res = float(x_res or 0), float(y_res or 0)
    if x_res > 0 and y_res > 0 and abs(x_res / y_res - 1) > 0.05:
        w, h = (w, round(h * x_res / y_res)) if x_res > y_res else (round(w * y_res / x_res), h)
    size = fit_size(w, h, max_side)
    if size == (arr.shape[1], arr.shape[0]):
        return arr
    if size[0] > arr.shape[1] or size[1] > arr.shape[0]:
        return cv2.resize(arr, size, interpolation=cv2.INTER_LINEAR)
    return resize(arr, size)


def _decode_jpeg(frame: Image.Image, path: Path, max_side: int) -> np.ndarray | None:
    """A colour or grey JPEG, decoded by libjpeg-turbo (simplejpeg) straight into an array at the
    smallest M/8 scale still at least `max_side` long (6/8 and 7/8 are plain C in libjpeg-turbo and slower
    than a whole decode, but their smoother pixels are what the paper search was tuned on: see
    docs/develop/benchmarks.md). libjpeg's recoverable complaints ("Corrupt JPEG data: 3 extraneous bytes before marker") come back
    as text, not printed to the terminal (OpenCV's decoder prints them): the page is decoded anyway and
    the complaint goes to the log.
    None for CMYK and other modes, and for a file libjpeg-turbo will not decode even leniently: Pillow
    decodes those, and fails the file only if it cannot either."""
    import simplejpeg

    if frame.mode not in ("RGB", "L"):
        return None
    data = path.read_bytes()
    w, h = frame.size
    wanted = {} if max(w, h) <= max_side else {"min_width": max_side} if w >= h else {"min_height": max_side}
    space = "RGB" if frame.mode == "RGB" else "GRAY"
    try:
        arr = simplejpeg.decode_jpeg(data, space, **wanted)
    except ValueError as e:
        said = str(e)
        if "Premature end" in said or "Unsupported" in said:
            raise InputError(f"corrupt or truncated JPEG: {said}") from None
        try:
            arr = simplejpeg.decode_jpeg(data, space, strict=False, **wanted)
        except ValueError:
            # libjpeg-turbo stops at bytes Pillow's own libjpeg reads past (junk before a marker, a short APP14
            # segment): cameras write such files. Pillow decodes it; only what Pillow refuses too is corrupt.
            notices.say(f"libjpeg: {said}; decoded by Pillow instead")
            return None
        notices.say(f"libjpeg: {said}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    return _fit(arr, max_side)


SOF = {
    0xC0: "baseline",
    0xC1: "extended",
    0xC2: "progressive",
    0xC3: "lossless",
    0xC5: "differential",
    0xC6: "differential progressive",
    0xC7: "differential lossless",
    0xC9: "arithmetic",
    0xCA: "arithmetic progressive",
    0xCB: "arithmetic lossless",
    0xCD: "differential arithmetic",
    0xCE: "differential arithmetic progressive",
    0xCF: "differential arithmetic lossless",
}


def jpeg_unsupported(path: Path) -> str | None:
    """Why a JPEG that Pillow will not open cannot be read, from its frame header: 12- and
    16-bit samples (medical and scientific cameras) and lossless coding are outside libjpeg's
    8-bit decoder. None when the header looks readable (then it is damaged)."""
    with open(path, "rb") as f:
        if f.read(2) != b"\xff\xd8":
            return None
        for _ in range(256):  # segments before the frame header: APPn, DQT, DHT, COM
            marker = f.read(2)
            while marker[:1] == b"\xff" and marker[1:] == b"\xff":  # fill bytes
                marker = marker[1:] + f.read(1)
            if len(marker) < 2 or marker[0] != 0xFF:
                return None
            length = int.from_bytes(f.read(2), "big")
            if marker[1] in SOF:
                precision = f.read(1)
                bits = precision[0] if precision else 8
                if bits != 8:
                    return f"{bits}-bit JPEG ({SOF[marker[1]]}): only 8-bit JPEGs can be read; save it as PNG or TIFF"
                if "lossless" in SOF[marker[1]]:
                    return f"{SOF[marker[1]]} JPEG: not supported; save it as PNG or TIFF"
                return None
            if marker[1] == 0xDA or length < 2:
                return None
            f.seek(length - 2, 1)
    return None


JPEG_JUNK_LIMIT = 1 << 20  # bytes of non-marker junk tolerated before a JPEG's image data (cameras leave a few)


def jpeg_reaches_image_data(path: Path) -> bool:
    """Walk a JPEG's marker segments to its frame header, skipping junk at C speed. Pillow skips junk one
    byte at a time in Python: a 1.9 GB `photo.jpg` of zeros after its first marker held a worker for
    minutes. False when more than JPEG_JUNK_LIMIT bytes of junk come before the frame header."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size < 4:  # nothing to map: the decoder says what is wrong with it
            return True
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return _walk_markers(m)


def _walk_markers(m: mmap.mmap) -> bool:
    pos, junk = 2, 0
    while pos + 4 <= len(m):
        if m[pos] != 0xFF:
            nxt = m.find(b"\xff", pos, pos + JPEG_JUNK_LIMIT - junk + 1)
            if nxt < 0:
                return False
            junk, pos = junk + nxt - pos, nxt
            continue
        marker = m[pos + 1]
        if marker in SOF or marker == 0xDA:
            return True
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD8:  # fill byte or a marker with no length
            pos += 1 if marker == 0xFF else 2
        else:
            pos += 2 + int.from_bytes(m[pos + 2 : pos + 4], "big")
    return True  # cut short: the decoder says what is wrong with it
