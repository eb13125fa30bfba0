"""A HEIC page made from libheif's YCbCr planes, shrunk before they become RGB (handwatch/prepare/heifplanes.py),
is the page pillow-heif's full-size RGB made: on real phone photos, and on every chroma layout, matrix and range
the encoder writes. What the planes do not handle (alpha, 10 bits, grey, a file libheif refuses) gives None,
and the page still comes, through pillow-heif, as before."""

import io

import cv2
import numpy as np
import pillow_heif
import pytest
from PIL import Image, ImageDraw

from handwatch.prepare import decode, heifplanes
from handwatch.prepare.pixels import fit_array
from tests.support.paths import DATA, REPO

REAL = [DATA / "photos" / "photo-pug-indoors-iphone13pro.heic", *sorted((REPO / "bench" / "data" / "gate").glob("*/*.heic"))]


def through_rgb(data: bytes, max_side: int) -> np.ndarray:
    """The page as handwatch made it before: pillow-heif's RGB at full size, then shrunk."""
    heif = pillow_heif.open_heif(io.BytesIO(data))
    return fit_array(np.asarray(heif[heif.primary_index]), max_side)


def assert_same_page(planes: np.ndarray | None, rgb: np.ndarray) -> None:
    """The grey levels, all the clean-up reads, within a level or two; the colour within a fraction of a level
    on average. Measured: grey means 0.00-0.17 levels, 99 % within 2 levels (real photos and drawings alike);
    colour means 0.00-0.58. What differs is where a colour edge falls between libheif's repeated chroma and
    the chroma shrunk smoothly: up to 18 levels at 1 % of a saturated drawing's values, 3 on the real photos."""
    assert planes is not None, "the planes were not used"
    assert planes.shape == rgb.shape and planes.dtype == np.uint8
    grey = np.abs(cv2.cvtColor(planes, cv2.COLOR_RGB2GRAY).astype(np.int16) - cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    assert grey.mean() <= 0.25
    assert np.percentile(grey, 99) <= 2
    assert np.abs(planes.astype(np.int16) - rgb).mean() <= 0.6


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.name)
def test_a_real_phone_heic_gives_the_page_pillow_heif_gave(path):
    data = path.read_bytes()
    planes, rgb = heifplanes.page(data, 1288), through_rgb(data, 1288)
    assert_same_page(planes, rgb)
    assert planes is not None and np.percentile(np.abs(planes.astype(np.int16) - rgb), 99) <= 3


def drawing(size=(961, 721)) -> Image.Image:
    """Colour everywhere a matrix or a range could get wrong: saturated blocks, a grey ramp, dark ink."""
    im = Image.new("RGB", size, (250, 248, 240))
    d = ImageDraw.Draw(im)
    for i, c in enumerate([(220, 20, 30), (20, 160, 40), (30, 40, 210), (240, 200, 10), (0, 0, 0), (255, 255, 255)]):
        d.rectangle((20 + 150 * i, 20, 150 + 150 * i, 200), fill=c)
    for x in range(size[0]):
        d.line((x, 240, x, 320), fill=(x * 255 // size[0],) * 3)
    for y in range(360, 700, 40):
        d.text((30, y), "Dear Anna, the apple cake 350 g flour", fill=(20, 30, 120), font_size=30)
    return im


@pytest.mark.parametrize(
    "options",
    [
        {"chroma": 420},
        {"chroma": 422},
        {"chroma": 444},
        {"chroma": 420, "matrix_coefficients": 1, "full_range_flag": 0},  # BT.709, video range
        {"chroma": 420, "matrix_coefficients": 1, "full_range_flag": 1},
        {"chroma": 420, "matrix_coefficients": 6, "full_range_flag": 0},
        {"chroma": 444, "matrix_coefficients": 9, "full_range_flag": 1},  # BT.2020
    ],
    ids=str,
)
@pytest.mark.parametrize("size", [(961, 721), (1600, 1201)], ids=str)  # odd sides: a chroma plane's last half pixel
@pytest.mark.parametrize("max_side", [1288, 480], ids=["kept whole or shrunk < 2x", "shrunk > 2x"])
def test_every_layout_matrix_and_range_converts_as_libheif_does(options, size, max_side):
    buf = io.BytesIO()
    pillow_heif.from_pillow(drawing(size)).save(buf, quality=90, **options)
    data = buf.getvalue()
    assert_same_page(heifplanes.page(data, max_side), through_rgb(data, max_side))


def test_a_dropped_heic_is_decoded_through_the_planes(tmp_path):
    path = tmp_path / "IMG_0001.HEIC"
    path.write_bytes((DATA / "photos" / "photo-pug-indoors-iphone13pro.heic").read_bytes())
    page = decode.page(path, "heif", 1, 640, 100)
    assert np.array_equal(page, heifplanes.page(path.read_bytes(), 640))


def heif_bytes(im: Image.Image | pillow_heif.HeifFile, **kw) -> bytes:
    buf = io.BytesIO()
    (im if isinstance(im, pillow_heif.HeifFile) else pillow_heif.from_pillow(im)).save(buf, quality=90, **kw)
    return buf.getvalue()


def with_alpha() -> bytes:
    im = drawing((960, 720)).convert("RGBA")
    im.putalpha(Image.linear_gradient("L").resize(im.size))
    return heif_bytes(im)


def ten_bits() -> bytes:
    deep = (np.asarray(drawing((960, 720))).astype(np.uint16) << 8) | 0x80
    return heif_bytes(pillow_heif.from_bytes("RGB;16", (960, 720), deep.tobytes()))


@pytest.mark.parametrize(
    "make",
    [with_alpha, ten_bits, lambda: heif_bytes(drawing((960, 720)).convert("L"))],
    ids=["alpha", "10 bits", "grey"],
)
def test_what_the_planes_do_not_handle_still_decodes_through_pillow_heif(tmp_path, make):
    data = make()
    assert heifplanes.page(data, 640) is None
    path = tmp_path / "page.heic"
    path.write_bytes(data)
    page = decode.page(path, "heif", 1, 640, 100)
    assert page.shape[:2] == (480, 640)
    assert page.mean() > 100  # the picture, not a black frame


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64,
        (DATA / "photos" / "photo-pug-indoors-iphone13pro.heic").read_bytes()[:4000],
    ],
    ids=["empty", "a header and nothing", "cut short"],
)
def test_a_file_libheif_refuses_gives_none_and_no_crash(data):
    assert heifplanes.page(data, 640) is None
