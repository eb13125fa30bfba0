"""TIFF headers read directly (classic and BigTIFF, either byte order), and libtiff (through
OpenCV) for the TIFFs Pillow cannot open: big-endian BigTIFF, 64-bit float or 32-bit unsigned samples."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}
TYPE_FORMATS = {1: "B", 3: "H", 4: "L", 6: "b", 8: "h", 9: "l", 13: "L", 16: "Q", 17: "q", 18: "Q"}
WIDTH, HEIGHT, BITS, COMPRESSION, ORIENTATION, SAMPLES, X_RES, Y_RES, SAMPLE_FORMAT = 256, 257, 258, 259, 274, 277, 282, 283, 339
SAMPLE_KINDS = {1: "unsigned integer", 2: "signed integer", 3: "floating-point", 4: "undefined"}
MAX_TAGS = 4096


@dataclass(frozen=True)
class Directory:
    """What one page's IFD says, in the stored (not yet oriented) axes."""

    width: int
    height: int
    bits: int = 1
    samples: int = 1
    sample_format: int = 1
    compression: int = 1
    orientation: int = 1
    x_res: float = 0.0
    y_res: float = 0.0

    def describe(self) -> str:
        return f"{self.samples} x {self.bits}-bit {SAMPLE_KINDS.get(self.sample_format, 'unknown')} samples, compression {self.compression}"


def is_tiff(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) in MAGIC


def directories(path: Path, limit: int) -> list[Directory]:
    """Every page's IFD, up to `limit` of them (a cycle of offsets ends the walk)."""
    with open(path, "rb") as f:
        head = f.read(16)
        if head[:4] not in MAGIC:
            raise ValueError("not a TIFF header")
        e = "<" if head[:2] == b"II" else ">"
        big = head[2:4] in (b"+\x00", b"\x00+")
        offset = struct.unpack(e + "Q", head[8:16])[0] if big else struct.unpack(e + "L", head[4:8])[0]
        pages: list[Directory] = []
        seen: set[int] = set()
        while offset and offset not in seen and len(pages) < limit:
            seen.add(offset)
            tags, offset = _read_ifd(f, e, big, offset)
            if WIDTH not in tags or HEIGHT not in tags:
                raise ValueError("a page without width or height")
            pages.append(
                Directory(
                    width=int(tags[WIDTH]),
                    height=int(tags[HEIGHT]),
                    bits=int(tags.get(BITS, 1)),
                    samples=int(tags.get(SAMPLES, 1)),
                    sample_format=int(tags.get(SAMPLE_FORMAT, 1)),
                    compression=int(tags.get(COMPRESSION, 1)),
                    orientation=int(tags.get(ORIENTATION, 1)),
                    x_res=float(tags.get(X_RES, 0.0)),
                    y_res=float(tags.get(Y_RES, 0.0)),
                )
            )
        return pages


def _read_ifd(f, e: str, big: bool, offset: int) -> tuple[dict[int, float], int]:
    f.seek(offset)
    count_size, entry_size, next_fmt = (8, 20, "Q") if big else (2, 12, "L")
    (count,) = struct.unpack(e + ("Q" if big else "H"), _exactly(f, count_size))
    if count > MAX_TAGS:
        raise ValueError(f"an IFD with {count} entries")
    raw = _exactly(f, count * entry_size + (8 if big else 4))
    tags: dict[int, float] = {}
    for i in range(count):
        entry = raw[i * entry_size : (i + 1) * entry_size]
        tag, typ = struct.unpack(e + "HH", entry[:4])
        n = struct.unpack(e + ("Q" if big else "L"), entry[4 : 4 + (8 if big else 4)])[0]
        field = entry[12:] if big else entry[8:]
        if tag not in (WIDTH, HEIGHT, BITS, COMPRESSION, ORIENTATION, SAMPLES, X_RES, Y_RES, SAMPLE_FORMAT) or n < 1:
            continue
        size = TYPE_SIZES.get(typ, 0)
        if size == 0:
            continue
        if size > len(field):  # a value stored elsewhere: only rationals (resolution) need it
            pointer = struct.unpack(e + ("Q" if big else "L"), field)[0]
            here = f.tell()
            f.seek(pointer)
            field = _exactly(f, size)
            f.seek(here)
        if typ in (5, 10):
            num, den = struct.unpack(e + ("LL" if typ == 5 else "ll"), field[:8])
            tags[tag] = num / den if den else 0.0
        elif typ in TYPE_FORMATS:
            tags[tag] = struct.unpack(e + TYPE_FORMATS[typ], field[: struct.calcsize(e + TYPE_FORMATS[typ])])[0]
    (following,) = struct.unpack(e + next_fmt, raw[count * entry_size :])
    return tags, following


def _exactly(f, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ValueError("the file ends inside a TIFF directory")
    return data


def decode(path: Path, number: int) -> np.ndarray | None:
    """One page through OpenCV's libtiff, at its own depth, RGB(A) order; None when it cannot."""
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # its log lines would go raw to stderr
    ok, frames = cv2.imreadmulti(str(path), start=number - 1, count=1, flags=cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if not ok or not frames:
        return None
    arr = frames[0]
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA)
    return arr
