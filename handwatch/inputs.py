"""Decode what phones and scanners make (JPEG, PNG, WebP, TIFF, HEIC, PDF) into page images, safely and cheaply."""

from __future__ import annotations

import mmap
import os
import resource
import subprocess
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from handwatch.errors import InputError, NotReady
from handwatch.pixels import fit_array, pixels

EXTENSIONS = {
    ".jpg": "jpeg", ".jpeg": "jpeg", ".jpe": "jpeg",
    ".png": "png", ".webp": "webp", ".tif": "tiff", ".tiff": "tiff",
    ".heic": "heif", ".heif": "heif", ".hif": "heif",
    ".pdf": "pdf",
}
PHOTO_FORMATS = {"jpeg", "heif", "webp"}  # camera output: uneven light, worth CLAHE by default
HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"heif"}
PDFTOPPM_MEMORY = 2 << 30
PDF_TIMEOUT_S = 120

_heif_lock = threading.Lock()
_heif_ready = False


@dataclass
class Page:
    # H x W x 3 (RGB) or H x W (grey) uint8, orientation applied, already reduced toward the target
    # size. An array rather than a Pillow image: every crossing between the two copies the pixels.
    image: np.ndarray | None
    number: int
    photo: bool  # camera-made: the contrast default depends on it


@dataclass(frozen=True)
class PageRef:
    """One page, checked but not yet decoded: decoding waits until a worker has room for the pixels."""

    path: Path
    kind: str
    number: int
    max_side: int
    photo: bool

    def load(self) -> Page:
        st = os.stat(self.path)
        try:
            if self.kind == "pdf":
                with tempfile.TemporaryDirectory(prefix="handwatch-pdf-") as tmp:
                    image = render_pdf_page(self.path, self.number, self.max_side, Path(tmp))
            else:
                image = decode_image_page(self.path, self.kind, self.number, self.max_side)
        except (InputError, NotReady):
            raise
        except Exception as e:
            if _still_growing(self.path, st):
                raise NotReady("file is still being written") from None
            raise InputError(f"corrupt or truncated {self.kind.upper()}: {_one_line(e)}") from None
        return Page(image, self.number, self.photo)


def readable(path: Path) -> bool:
    return path.suffix.lower() in EXTENSIONS


def sniff(head: bytes) -> str | None:
    """The format the bytes really are, from their magic number."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS:
        return "heif"
    if head.lstrip()[:5] == b"%PDF-":
        return "pdf"
    return None


def _ensure_heif() -> None:
    global _heif_ready
    with _heif_lock:
        if not _heif_ready:
            import pillow_heif

            pillow_heif.register_heif_opener()
            _heif_ready = True


def check_kind(path: Path, head: bytes) -> str:
    expected = EXTENSIONS.get(path.suffix.lower())
    if expected is None:
        raise InputError(f"unsupported file type {path.suffix or '(no extension)'}")
    actual = sniff(head)
    if actual is None:
        raise InputError(f"not a {expected.upper()} file: its content is not any image or PDF format handwatch reads")
    if actual != expected:
        raise InputError(f"content is {actual.upper()} but the name says {path.suffix}; rename it to match")
    return actual


def open_pages(path: Path, max_side: int, max_megapixels: float, max_pages: int) -> list[PageRef]:
    """Check the file (readable, not empty, content matches the name, within the pixel and page
    limits, not encrypted) and return its pages, undecoded."""
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            head = f.read(32)
    except FileNotFoundError:
        raise InputError("file no longer exists") from None
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror or e}") from None
    if st.st_size == 0:
        raise InputError("empty file (0 bytes)")
    kind = check_kind(path, head)
    try:
        count = pdf_page_count(path, max_pages) if kind == "pdf" else image_frame_count(path, kind, max_megapixels, max_pages)
    except (InputError, NotReady):
        raise
    except Exception as e:
        if _still_growing(path, st):
            raise NotReady("file is still being written") from None
        raise InputError(f"corrupt or truncated {kind.upper()}: {_one_line(e)}") from None
    return [PageRef(path, kind, n, max_side, kind in PHOTO_FORMATS) for n in range(1, count + 1)]


def load(path: Path, max_side: int, max_megapixels: float, max_pages: int) -> list[Page]:
    """Every page decoded at once: for callers that need them all (benchmarks, tests)."""
    return [ref.load() for ref in open_pages(path, max_side, max_megapixels, max_pages)]


def _one_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:200]


def _still_growing(path: Path, before: os.stat_result) -> bool:
    try:
        after = os.stat(path)
    except OSError:
        return False
    return (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns)


def _check_pixels(w: int, h: int, max_megapixels: float, what: str = "image") -> None:
    if w * h > max_megapixels * 1_000_000:
        raise InputError(f"{what} is {w}x{h} = {w * h / 1e6:.0f} megapixels, over the {max_megapixels:g} MP limit")


PILLOW_CEILING = 2_000_000_000  # the config's maximum: our own header check decides below it


def _open(path: Path, kind: str) -> Image.Image:
    if kind == "heif":
        _ensure_heif()
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < PILLOW_CEILING // 2:
        Image.MAX_IMAGE_PIXELS = PILLOW_CEILING // 2  # Pillow errors at twice this, warns above it
    try:
        return Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InputError(f"image too large: {_one_line(e)}") from None
    except UnidentifiedImageError:
        raise InputError(f"corrupt or truncated {kind.upper()}: the image data cannot be read") from None


JPEG_JUNK_LIMIT = 1 << 20  # bytes of non-marker junk tolerated before a JPEG's image data (cameras leave a few)
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_reaches_image_data(path: Path) -> bool:
    """Walk a JPEG's marker segments to its frame header, skipping junk at C speed. Pillow skips junk one
    byte at a time in Python: a 1.9 GB `photo.jpg` of zeros after its first marker held a worker for
    minutes. False when more than JPEG_JUNK_LIMIT bytes of junk come before the frame header."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        pos, junk = 2, 0
        while pos + 4 <= len(m):
            if m[pos] != 0xFF:
                nxt = m.find(b"\xff", pos, pos + JPEG_JUNK_LIMIT - junk + 1)
                if nxt < 0:
                    return False
                junk, pos = junk + nxt - pos, nxt
                continue
            marker = m[pos + 1]
            if marker in _SOF or marker == 0xDA:
                return True
            if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD8:  # fill byte or a marker with no length
                pos += 1 if marker == 0xFF else 2
            else:
                pos += 2 + int.from_bytes(m[pos + 2 : pos + 4], "big")
        return True  # cut short: the decoder says what is wrong with it


def image_frame_count(path: Path, kind: str, max_megapixels: float, max_pages: int) -> int:
    """Header only: the pixel limit is checked before a single pixel is decoded."""
    if kind == "jpeg" and not _jpeg_reaches_image_data(path):
        raise InputError(f"corrupt or truncated JPEG: junk where its headers should be (over {JPEG_JUNK_LIMIT >> 20} MB)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with _open(path, kind) as im:
            n = getattr(im, "n_frames", 1) if kind == "tiff" else 1
            if n > max_pages:
                raise InputError(f"{n} pages, over the max_pages limit of {max_pages}")
            for i in range(n):
                im.seek(i)
                _check_pixels(*im.size, max_megapixels)
            return n


def decode_image_page(path: Path, kind: str, number: int, max_side: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with _open(path, kind) as im:
            if number > 1:
                im.seek(number - 1)
            return _decode_frame(im, kind, max_side)


ORIENTATION = 0x0112
UPRIGHT = {  # EXIF orientation → what makes the picture upright, on an array
    2: lambda a: cv2.flip(a, 1), 3: lambda a: cv2.rotate(a, cv2.ROTATE_180), 4: lambda a: cv2.flip(a, 0),
    5: lambda a: cv2.transpose(a), 6: lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE),
    7: lambda a: cv2.rotate(cv2.transpose(a), cv2.ROTATE_180), 8: lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


def _decode_frame(frame: Image.Image, kind: str, max_side: int) -> np.ndarray:
    """Decode no more pixels than needed (JPEG's DCT scaling gives 1/2, 1/4, 1/8 size almost for
    free), shrink, and only then turn the picture upright: transposing at full size costs a copy."""
    orientation = frame.getexif().get(ORIENTATION, 1)
    arr = _decode_jpeg(frame, max_side) if kind == "jpeg" else None
    if arr is None:
        if kind == "jpeg":
            w, h = frame.size
            scale = max(w, h) / max_side
            if scale >= 2:
                frame.draft("RGB", (max(1, int(w / scale)), max(1, int(h / scale))))
        frame.load()
        arr = fit_array(pixels(frame), max_side)
    if orientation in UPRIGHT:
        arr = UPRIGHT[orientation](arr)
    return arr


def _decode_jpeg(frame: Image.Image, max_side: int) -> np.ndarray | None:
    """The common case, a colour or grey JPEG, decoded by OpenCV straight into an array at the
    reduced size: the same libjpeg-turbo DCT scaling as Pillow's draft and the same pixels, but
    without Pillow's copy into an array (measured 39 against 44 ms for a 12 MP photo). None for
    anything else, and for any file OpenCV cannot read: Pillow then decodes it, or says why not."""
    if frame.mode not in ("RGB", "L") or not frame.filename:
        return None
    w, h = frame.size
    reduce = next((f for f in (8, 4, 2) if max(w, h) / f >= max_side), 1)
    flags = {1: 0, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
             8: cv2.IMREAD_REDUCED_GRAYSCALE_8}[reduce] | cv2.IMREAD_IGNORE_ORIENTATION
    flags |= cv2.IMREAD_COLOR_RGB if frame.mode == "RGB" else cv2.IMREAD_GRAYSCALE
    arr = cv2.imdecode(np.fromfile(frame.filename, np.uint8), flags)
    if arr is None or arr.shape[:2] != (-(-h // reduce), -(-w // reduce)):
        return None
    return fit_array(arr, max_side)


def pdf_info(path: Path) -> dict:
    from pdf2image import pdfinfo_from_path
    from pdf2image.exceptions import PDFInfoNotInstalledError, PDFPageCountError, PDFPopplerTimeoutError

    try:
        return pdfinfo_from_path(str(path), timeout=PDF_TIMEOUT_S)
    except PDFInfoNotInstalledError:
        raise InputError("cannot read PDFs: poppler-utils (pdfinfo, pdftoppm) is not installed") from None
    except PDFPopplerTimeoutError:
        raise InputError(f"PDF: pdfinfo took longer than {PDF_TIMEOUT_S} s") from None
    except PDFPageCountError as e:
        msg = str(e)
        if "Incorrect password" in msg or "encrypted" in msg.lower():
            raise InputError("encrypted PDF: save an unprotected copy to transcribe it") from None
        raise InputError(f"corrupt PDF: {_one_line(e).removeprefix('Unable to get page count.').strip()}") from None


def _limit_memory() -> None:  # runs in the pdftoppm child only
    resource.setrlimit(resource.RLIMIT_AS, (PDFTOPPM_MEMORY, PDFTOPPM_MEMORY))


def pdf_page_count(path: Path, max_pages: int) -> int:
    info = pdf_info(path)  # a PDF that needs a password to open fails here; owner-only restrictions do not
    count = int(info.get("Pages", 0))
    if count < 1:
        raise InputError("PDF has no pages")
    if count > max_pages:
        raise InputError(f"PDF has {count} pages, over the max_pages limit of {max_pages}")
    return count


def render_pdf_page(path: Path, n: int, max_side: int, tmp: Path) -> np.ndarray:
    """Render straight to the target size (`-scale-to`), not a fixed DPI, under a time and memory limit."""
    prefix = tmp / f"p{n}"
    # PPM, not PNG: uncompressed output is written and read in ~40 ms a page against ~115 ms.
    cmd = ["pdftoppm", "-f", str(n), "-l", str(n), "-scale-to", str(max_side), "-singlefile", str(path), str(prefix)]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=PDF_TIMEOUT_S, preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired:
        raise InputError(f"PDF page {n}: rendering took longer than {PDF_TIMEOUT_S} s") from None
    except FileNotFoundError:
        raise InputError("cannot read PDFs: poppler-utils (pdftoppm) is not installed") from None
    out = prefix.with_suffix(".ppm")
    if proc.returncode != 0 or not out.exists():
        why = (proc.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise InputError(f"PDF page {n} cannot be rendered: {why[:200]}")
    page = cv2.imread(str(out), cv2.IMREAD_COLOR_RGB)
    if page is None:
        raise InputError(f"PDF page {n}: pdftoppm wrote an unreadable image")
    # pdftoppm can exit 0 with a 1x1 image when a page is absurdly large or broken.
    if min(page.shape[:2]) < 16:
        raise InputError(f"PDF page {n} rendered to {page.shape[1]}x{page.shape[0]} px: the page is broken or absurdly large")
    return page
