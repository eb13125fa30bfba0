"""Check what phones, scanners and fax software make (JPEG, PNG, WebP, TIFF, HEIC, PDF) and hand
out its pages, decoded safely and cheaply (`decode.py` for images, `pdf.py` for PDFs)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from handwatch import log
from handwatch.errors import InputError, NotReady
from handwatch.prepare import decode, notices, pdf
from handwatch.prepare.formats import EXTENSIONS, PHOTO_FORMATS
from handwatch.prepare.pixels import fit_array

HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"heif"}
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic TIFF and BigTIFF, both byte orders
HEAD_BYTES = pdf.HEADER_WITHIN + 5


@dataclass
class Page:
    # H x W x 3 (RGB) or H x W (grey) uint8, orientation applied, already reduced toward the target
    # size. An array rather than a Pillow image: every crossing between the two copies the pixels.
    image: np.ndarray | None
    number: int
    photo: bool  # camera-made: the contrast default depends on it
    said: tuple[str, ...] = ()  # what the decoder complained about, though it could decode the page
    embedded: bool = False  # a thumbnail the file carries, not a decode of its picture (it may show something else)

    def reduced(self, max_side: int) -> Page:
        """A smaller copy of this decoded page (a preview of a page decoded anyway); the page keeps its pixels."""
        assert self.image is not None
        return replace(self, image=fit_array(self.image, max_side))


@dataclass(frozen=True)
class PageRef:
    """One page, checked but not yet decoded: decoding waits until a worker has room for the pixels."""

    path: Path
    kind: str
    number: int
    max_side: int
    photo: bool
    max_megapixels: float = 100.0

    def load(self) -> Page:
        st = os.stat(self.path)
        with _reasons(self.path, st, self.kind, self.number) as said:
            if self.kind == "pdf":
                with tempfile.TemporaryDirectory(prefix="handwatch-pdf-") as tmp:
                    image = pdf.render_page(self.path, self.number, self.max_side, Path(tmp))
            else:
                image = decode.page(self.path, self.kind, self.number, self.max_side, self.max_megapixels)
        return Page(image, self.number, self.photo, tuple(said))

    def preview(self, max_side: int, least: int, exif_least: int | None = None) -> Page:
        """The page small and cheap, for a look at what it is: the thumbnail the file carries (`carried`),
        else the page decoded at `max_side` (a JPEG's DCT scaling makes that a fraction of a full decode)."""
        return self.carried(max_side, least, exif_least) or replace(self, max_side=max_side).load()

    def carried(self, max_side: int, least: int, exif_least: int | None = None) -> Page | None:
        """The first page's own thumbnail, when the file carries one fit to look at: a HEIC's at least `least`
        px long; with `exif_least`, a JPEG's EXIF thumbnail at least that long. None: the picture must be decoded."""
        if self.number == 1 and (self.kind == "heif" or (self.kind == "jpeg" and exif_least)):
            st = os.stat(self.path)
            with _reasons(self.path, st, self.kind, self.number) as said:
                if self.kind == "heif":
                    arr = decode.heif_look(self.path, max_side, least, self.max_megapixels)
                else:
                    arr = decode.exif_thumbnail(self.path, exif_least or least)
            if arr is not None:
                return Page(arr, self.number, self.photo, tuple(said), embedded=True)
        return None


class _reasons:
    """Around a decoder: what it says goes into the failure's one-line reason, or (when the page
    decodes anyway) into a `decoder.warned` log event — never raw onto the terminal. A failure
    while the file is still changing is not ready yet, not corrupt."""

    def __init__(self, path: Path, st: os.stat_result, kind: str, number: int | None = None):
        self.path, self.st, self.kind, self.number = path, st, kind, number
        self._collect = notices.collect()

    def __enter__(self) -> list[str]:
        self.said = self._collect.__enter__()
        return self.said

    def __exit__(self, typ, e, tb) -> Literal[False]:
        self._collect.__exit__(None, None, None)
        if e is None:
            if self.said:
                log.get("inputs").warning("decoder.warned", path=str(self.path), page=self.number, said=list(self.said))
            return False
        if isinstance(e, NotReady) or not isinstance(e, Exception):
            return False
        if _still_growing(self.path, self.st):
            raise NotReady("file is still being written") from None
        reason = str(e) if isinstance(e, InputError) else f"corrupt or truncated {self.kind.upper()}: {decode.one_line(e)}"
        extra = [m for m in self.said if m.split(": ", 1)[-1] not in reason]
        if extra:
            reason += f" (decoder said: {notices.summary(extra)})"
        raise InputError(reason.replace("\n", " ")) from None


def sniff(head: bytes) -> str | None:
    """The format the bytes really are, from their magic number."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in TIFF_MAGIC:
        return "tiff"
    if head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS:
        return "heif"
    if pdf.header_offset(head) is not None:
        return "pdf"
    return None


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
            head = f.read(HEAD_BYTES)
    except FileNotFoundError:
        raise InputError("file no longer exists") from None
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror or e}") from None
    if st.st_size == 0:
        raise InputError("empty file (0 bytes)")
    kind = check_kind(path, head)
    with _reasons(path, st, kind):
        if kind == "pdf":
            count = pdf.page_count(path, max_pages)
        else:
            count = decode.frame_count(path, kind, max_megapixels, max_pages)
    return [PageRef(path, kind, n, max_side, kind in PHOTO_FORMATS, max_megapixels) for n in range(1, count + 1)]


def load(path: Path, max_side: int, max_megapixels: float, max_pages: int) -> list[Page]:
    """Every page decoded at once: for callers that need them all (benchmarks, tests)."""
    return [ref.load() for ref in open_pages(path, max_side, max_megapixels, max_pages)]


def _ensure_heif() -> None:
    decode.ensure_heif()


def _still_growing(path: Path, before: os.stat_result) -> bool:
    try:
        after = os.stat(path)
    except OSError:
        return False
    return (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns)
