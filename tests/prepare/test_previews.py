"""Cheap previews for the document check: a camera's own thumbnail when it is trustworthy, else a scaled decode —
on real phone photos (tests/data/photos) and on files made to carry a thumbnail that lies."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from handwatch.prepare import decode, inputs
from handwatch.transcribe import gate
from tests.support.photos import PHOTOS, labelled

STICKY = PHOTOS / "document-sticky-note-iphone6.jpg"  # iPhone 6 JPEG, EXIF orientation 6, its 160x120 thumbnail


def _ref(path):
    return inputs.open_pages(path, 1288, 100, 50)[0]


def test_a_phone_jpegs_exif_thumbnail_is_used_upright():
    full = _ref(STICKY).load().image
    thumb = _ref(STICKY).preview(gate.LOOK_SIDE, gate.LEAST_SIDE, gate.EXIF_LEAST).image
    assert thumb.shape[:2] == (160, 120)  # stored 160x120 landscape; orientation 6 turns it, as the page is turned
    assert full.shape[0] > full.shape[1]


def test_without_exif_least_the_jpeg_is_decoded_scaled():
    arr = _ref(STICKY).preview(gate.LOOK_SIDE, gate.LEAST_SIDE).image
    assert max(arr.shape[:2]) == gate.LOOK_SIDE


def test_a_thumbnail_of_another_shape_is_not_trusted(tmp_path):
    """An editor cropped the picture and left the camera's thumbnail: the thumbnail shows something else."""
    with Image.open(STICKY) as im:
        exif = im.info["exif"]
        cropped = im.crop((0, 0, 600, 600))
        cropped.load()
    path = tmp_path / "cropped.jpg"
    cropped.save(path, quality=90, exif=exif)
    assert decode.exif_thumbnail(path, 120) is None
    assert _ref(path).preview(gate.LOOK_SIDE, gate.LEAST_SIDE, gate.EXIF_LEAST).image.shape[:2] == (448, 448)


def test_a_jpeg_without_a_thumbnail_or_with_a_broken_one_falls_back_to_decoding(tmp_path):
    plain = tmp_path / "plain.jpg"
    Image.new("RGB", (900, 600), (200, 120, 40)).save(plain, quality=90)
    assert decode.exif_thumbnail(plain, 120) is None
    with Image.open(STICKY) as im:
        exif = bytearray(im.info["exif"])
    at = exif.find(b"\xff\xd8\xff", 6)
    exif[at + 20 : at + 400] = b"\x00" * 380  # the thumbnail's own JPEG mangled
    broken = tmp_path / "broken.jpg"
    Image.new("RGB", (800, 600), "white").save(broken, quality=90, exif=bytes(exif))
    arr = _ref(broken).preview(gate.LOOK_SIDE, gate.LEAST_SIDE, gate.EXIF_LEAST).image
    assert arr.shape[:2] in ((160, 120), (448, 336))  # a thumbnail that still decodes, or the page itself


def test_a_heics_own_thumbnail_is_used_and_the_pixel_limit_still_holds(tmp_path):
    decode.ensure_heif()
    im = Image.fromarray(np.random.default_rng(1).integers(0, 255, (750, 1000, 3), dtype=np.uint8))
    with_thumb, without = tmp_path / "phone.heic", tmp_path / "edited.heic"
    im.save(with_thumb, quality=30, thumbnails=[320])
    im.save(without, quality=30, thumbnails=[])
    assert _ref(with_thumb).preview(gate.LOOK_SIDE, gate.LEAST_SIDE).image.shape[:2] == (240, 320)
    assert _ref(without).preview(gate.LOOK_SIDE, gate.LEAST_SIDE).image.shape[:2] == (336, 448)
    with pytest.raises(Exception, match="megapixels"):
        inputs.PageRef(with_thumb, "heif", 1, 1288, True, max_megapixels=0.5).preview(gate.LOOK_SIDE, gate.LEAST_SIDE)


def test_no_real_photo_looks_empty():
    """The local look skips only what has nothing on it: none of the real documents and photos, at any preview."""
    for path in labelled():
        for exif in (None, gate.EXIF_LEAST):
            preview = _ref(path).preview(gate.LOOK_SIDE, gate.LEAST_SIDE, exif).image
            assert gate.differing_share(preview) > 100 * gate.EMPTY_SHARE, path.name


def test_the_exif_thumbnail_needs_only_the_headers(tmp_path):
    """Found through IFD1's offset in the APP1 segment: no pixel of the picture is decoded for it, so a file whose
    picture data is cut short still gives it (and its decode would fail)."""
    data = STICKY.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    assert decode.exif_thumbnail(cut, gate.EXIF_LEAST).shape[:2] == (160, 120)


def test_an_exif_thumbnail_that_declares_gigapixels_is_never_decoded(tmp_path):
    """Regression (review of #22): under 7 kB whose EXIF thumbnail decodes to 0.9 gigapixels. Under a 1 GB address
    space limit the preview must come back from decoding the small picture itself, never from the thumbnail."""
    import subprocess
    import sys

    from tests.faults.hostile import exif_thumbnail_bomb
    from tests.support.paths import cli_env

    path = exif_thumbnail_bomb(tmp_path / "bomb.jpg")
    code = f"""
import resource
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from pathlib import Path
from handwatch.prepare import decode, inputs
decode.Image.MAX_IMAGE_PIXELS = 2_000_000_000  # as handwatch sets it: our own checks decide
assert decode.exif_thumbnail(Path({str(path)!r}), 160) is None
ref = inputs.open_pages(Path({str(path)!r}), 1288, 100, 50)[0]
print(ref.preview(448, 256, 160).image.shape)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "(336, 448, 3)"
