"""Hostile inputs, generated: hand-written PDF bytes, a pixel bomb, a TIFF of many pages, a HEIC without an
image, special files. Nothing is downloaded; the only committed file used is tests/data/encrypted.pdf."""

from __future__ import annotations

import io
import os
import socket
import struct
import tempfile
from pathlib import Path

from PIL import Image

from tests.support.daemon import id_image
from tests.support.paths import DATA


def pdf(pages: int = 1, size: tuple[float, float] = (595, 842)) -> bytes:
    """A valid PDF of `pages` pages of `size` points, each drawing one shared content stream: a thick
    line of ink across the middle (a page without ink is blank and never sent)."""
    w, h = size
    content = f"{max(2.0, h * 0.02):.0f} w 0 0 0 RG {w * 0.2:.0f} {h / 2:.0f} m {w * 0.8:.0f} {h / 2:.0f} l S".encode()
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"", b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream"]
    objs += [f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {w:g} {h:g}] /Contents 3 0 R >>".encode()] * pages
    kids = " ".join(f"{4 + i} 0 R" for i in range(pages))
    objs[1] = f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode()
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def pixel_bomb(path: Path, size=(20000, 10000)) -> Path:
    """A real PNG of 200 megapixels that takes a few dozen KB: one bit per pixel, all zero."""
    Image.new("1", size).save(path, "PNG", optimize=True)
    return path


def exif_thumbnail_bomb(path: Path, thumb=(30000, 30000), main=(640, 480)) -> Path:
    """A small, valid JPEG whose EXIF thumbnail (IFD1) is a progressive JPEG of only AC scans with end-of-band
    runs: under 2 kB that declare `thumb` pixels, gigabytes once decoded (found by the review of issue #22)."""

    def seg(marker: int, payload: bytes) -> bytes:
        return struct.pack(">HH", marker, len(payload) + 2) + payload

    w, h = thumb
    runs = -(-(((w + 7) // 8) * ((h + 7) // 8)) // 32767)  # EOBRUN of 32767 blocks each: 15 bits per run
    bits = ([0] + [1] * 14) * runs
    data = bytearray()
    for k in range(0, len(bits), 8):
        chunk = bits[k : k + 8]
        byte = int("".join(map(str, chunk)).ljust(8, "1"), 2)
        data += bytes([byte, 0]) if byte == 0xFF else bytes([byte])
    sof = struct.pack(">BHHB", 8, h, w, 1) + bytes([1, 0x11, 0])
    bomb = b"\xff\xd8" + seg(0xFFDB, bytes([0]) + bytes([1]) * 64) + seg(0xFFC2, sof)
    bomb += (
        seg(0xFFC4, bytes([0x10, 1] + [0] * 15 + [0xE0])) + seg(0xFFDA, bytes([1, 1, 0, 1, 63, 0])) + bytes(data) + b"\xff\xd9"
    )
    buf = io.BytesIO()
    Image.new("RGB", main, (235, 230, 220)).save(buf, "JPEG")
    return jpeg_with_exif_thumbnail(path, buf.getvalue(), bomb)


def jpeg_with_exif_thumbnail(path: Path, picture: bytes, thumbnail: bytes) -> Path:
    """The JPEG `picture` with an EXIF block (Orientation 1) whose IFD1 thumbnail is `thumbnail`, whatever it shows."""

    ifd0 = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, 1, 0)  # Orientation 1
    ifd1_at = 8 + len(ifd0) + 4
    ifd0 += struct.pack("<I", ifd1_at)
    thumb_at = ifd1_at + 2 + 2 * 12 + 4
    ifd1 = (
        struct.pack("<H", 2) + struct.pack("<HHII", 0x0201, 4, 1, thumb_at) + struct.pack("<HHII", 0x0202, 4, 1, len(thumbnail))
    )
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd0 + ifd1 + struct.pack("<I", 0) + thumbnail
    app1 = b"Exif\x00\x00" + tiff
    path.write_bytes(picture[:2] + struct.pack(">HH", 0xFFE1, len(app1) + 2) + app1 + picture[2:])
    return path


def truncated_jpeg(path: Path) -> Path:
    buf = io.BytesIO()
    id_image(7, (800, 600)).save(buf, "JPEG", quality=90)
    path.write_bytes(buf.getvalue()[: buf.tell() // 2])
    return path


def tiff_pages(path: Path, n: int) -> Path:
    frames = [Image.new("L", (16, 16), i % 256) for i in range(n)]
    frames[0].save(path, "TIFF", save_all=True, append_images=frames[1:])
    return path


def heic_without_image(path: Path) -> Path:
    """An ISO-BMFF file that says it is HEIC (ftyp heic/mif1) and has a meta box with no items."""

    def box(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", 8 + len(payload)) + kind + payload

    hdlr = box(b"hdlr", b"\0" * 8 + b"pict" + b"\0" * 13)
    path.write_bytes(box(b"ftyp", b"heic\0\0\0\0mif1heic") + box(b"meta", b"\0" * 4 + hdlr))
    return path


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def unix_socket(path: Path) -> socket.socket:
    """A listening socket at `path` (bound in a short folder and renamed into place: a socket's path must
    stay under 108 bytes); the caller keeps it open for as long as it should exist."""
    short = tempfile.mkdtemp(prefix="hw-sock-")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(os.path.join(short, "s"))
    s.listen(1)
    os.rename(os.path.join(short, "s"), path)
    os.rmdir(short)
    return s


def encrypted_pdf(path: Path) -> Path:
    path.write_bytes((DATA / "encrypted.pdf").read_bytes())
    return path
