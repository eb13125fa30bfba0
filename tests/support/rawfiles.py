"""Files written byte by byte, for the inputs the usual libraries will not write: big-endian
BigTIFF, TIFF tags pointing past the end, 12-bit JPEG."""

from __future__ import annotations

import struct

import numpy as np

# TIFF field types: (type number, struct format)
SHORT, LONG, LONG8, ASCII = (3, "H"), (4, "L"), (16, "Q"), (2, "B")


def tiff(
    pages: list[np.ndarray], order: str = "<", big: bool = True, orientation: int = 1, extra: list[tuple[int, int, int, int]] = ()
) -> bytes:
    """An uncompressed TIFF of grey or RGB uint8 pages. `extra` entries are (tag, type, count,
    raw offset-or-value) written as they are, to make broken files."""
    e = order
    head = (b"II" if e == "<" else b"MM") + struct.pack(e + "H", 43 if big else 42)
    head += struct.pack(e + "HHQ", 8, 0, 16) if big else struct.pack(e + "L", 8)
    out = bytearray(head)
    field = 8 if big else 4
    for i, arr in enumerate(pages):
        h, w = arr.shape[:2]
        spp = 1 if arr.ndim == 2 else arr.shape[2]
        data = np.ascontiguousarray(arr, np.uint8).tobytes()
        entries = [
            (256, LONG, [w]),
            (257, LONG, [h]),
            (258, SHORT, [8] * spp),
            (259, SHORT, [1]),
            (262, SHORT, [1 if spp == 1 else 2]),
            (273, LONG8 if big else LONG, [0]),
            (274, SHORT, [orientation]),
            (277, SHORT, [spp]),
            (278, LONG, [h]),
            (279, LONG8 if big else LONG, [len(data)]),
            (284, SHORT, [1]),
        ]
        n = len(entries) + len(extra)
        ifd_size = (8 + n * 20 + 8) if big else (2 + n * 12 + 4)
        # Values too long for the entry's field go after the IFD, then the pixels.
        overflow = [struct.pack(e + fmt * len(v), *v) for _, (_, fmt), v in entries]
        overflow = [b for b in overflow if len(b) > field]
        data_at = len(out) + ifd_size + sum(len(b) for b in overflow)
        spill, spill_at = bytearray(), len(out) + ifd_size
        ifd = struct.pack(e + ("Q" if big else "H"), n)
        rows = []
        for tag, (typ, fmt), values in entries:
            if tag == 273:
                values = [data_at]
            value = struct.pack(e + fmt * len(values), *values)
            if len(value) > field:
                spill += value
                value = struct.pack(e + ("Q" if big else "L"), spill_at + len(spill) - len(value))
            rows.append(
                (
                    tag,
                    struct.pack(e + "HH", tag, typ)
                    + struct.pack(e + ("Q" if big else "L"), len(values))
                    + value.ljust(field, b"\0"),
                )
            )
        for tag, typ, count, raw in extra:
            rows.append((tag, struct.pack(e + "HH", tag, typ) + struct.pack(e + ("QQ" if big else "LL"), count, raw)))
        ifd += b"".join(row for _, row in sorted(rows))
        following = data_at + len(data) if i + 1 < len(pages) else 0
        ifd += struct.pack(e + ("Q" if big else "L"), following)
        out += ifd + spill + data
    return bytes(out)


def jpeg_12bit(blocks_w: int = 2, blocks_h: int = 2) -> bytes:
    """A real 12-bit (SOF1, extended sequential) greyscale JPEG of flat mid-grey 8x8 blocks: each
    block's DC difference is 0 and its AC coefficients end at once, so two one-code Huffman tables
    encode it."""

    def segment(marker: int, body: bytes) -> bytes:
        return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body

    dqt = segment(0xDB, bytes([0x10]) + struct.pack(">64H", *([1] * 64)))  # 16-bit table 0
    sof = segment(0xC1, bytes([12]) + struct.pack(">HH", blocks_h * 8, blocks_w * 8) + bytes([1, 1, 0x11, 0]))
    one_code = bytes([1] + [0] * 15) + bytes([0])  # one code of length 1, for symbol 0
    dht = segment(0xC4, bytes([0x00]) + one_code + bytes([0x10]) + one_code)  # DC table 0, AC table 0
    sos = segment(0xDA, bytes([1, 1, 0x00, 0, 63, 0]))
    bits = "00" * (blocks_w * blocks_h)  # per block: DC category 0, then end-of-block
    bits += "1" * (-len(bits) % 8)
    scan = bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)).replace(b"\xff", b"\xff\x00")
    return b"\xff\xd8" + dqt + sof + dht + sos + scan + b"\xff\xd9"
