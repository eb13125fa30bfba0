"""Decoding every input a phone or scanner makes, and a clear one-line reason for each kind of bad file."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from handwatch.errors import InputError
from handwatch.prepare import inputs
from tests.support.paths import DATA


def load(path, max_side=1288, mp=100.0, pages=50):
    return inputs.load(path, max_side, mp, pages)


def test_jpeg_is_decoded_reduced_to_the_target_size(tmp_path):
    p = tmp_path / "big.jpg"
    Image.new("RGB", (4032, 3024), (200, 190, 180)).save(p, quality=85)
    [page] = load(p)
    assert page.image.shape == (966, 1288, 3) and page.photo


@pytest.mark.parametrize(("size", "decoded"), [((1600, 1200), (1050, 1400, 3)), ((4032, 3024), (1134, 1512, 3))])
def test_a_jpeg_is_decoded_at_the_scale_chosen_for_it(tmp_path, monkeypatch, size, decoded):
    """What libjpeg-turbo is asked for: the smallest eighth that reaches the page (7/8 for 1600 px, 3/8 for 12 MP),
    whose pixels the paper search was tuned on; a whole decode of a 2048 px notebook page lost its paper."""
    import simplejpeg

    seen = []
    real = simplejpeg.decode_jpeg

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append(out.shape)
        return out

    monkeypatch.setattr(simplejpeg, "decode_jpeg", spy)
    p = tmp_path / "photo.jpg"
    Image.new("RGB", size, (200, 190, 180)).save(p, quality=85)
    [page] = load(p)
    assert seen == [decoded] and max(page.image.shape) == 1288


def test_exif_orientation_is_applied(tmp_path):
    p = tmp_path / "rot.jpg"
    im = Image.new("RGB", (400, 200), "white")
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    im.save(p, exif=exif)
    [page] = load(p)
    assert page.image.shape[:2] == (400, 200)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("ext", ["jpg", "png"])  # OpenCV decodes the JPEG, Pillow the PNG
def test_every_exif_orientation_matches_pillows_exif_transpose(tmp_path, orientation, ext):
    from PIL import ImageOps

    im = Image.new("RGB", (160, 96), "white")
    im.paste((255, 0, 0), (0, 0, 40, 24))  # a red block in one corner, a blue one in another
    im.paste((0, 0, 255), (120, 72, 160, 96))
    exif = im.getexif()
    exif[0x0112] = orientation
    p = tmp_path / f"o.{ext}"
    im.save(p, exif=exif, **({"quality": 95} if ext == "jpg" else {}))
    [page] = load(p)
    with Image.open(p) as ref:
        expected = np.asarray(ImageOps.exif_transpose(ref).convert("RGB")).astype(int)
    assert page.image.shape == expected.shape
    assert np.abs(page.image.astype(int) - expected).max() < 40  # JPEG's own error only


@pytest.mark.parametrize("mode, shape, pixel", [("L", (600, 800), 90), ("CMYK", (600, 800, 3), (255, 0, 0))])
def test_grey_and_cmyk_jpegs(tmp_path, mode, shape, pixel):
    """Grey JPEGs (scanners) stay grey; CMYK ones (print workflows) are left to Pillow and come out RGB."""
    p = tmp_path / f"{mode}.jpg"
    colour = 90 if mode == "L" else (0, 255, 255, 0)  # CMYK red
    Image.new(mode, (800, 600), colour).save(p, quality=95)
    [page] = load(p)
    assert page.image.shape == shape
    assert np.abs(page.image[300, 400].astype(int) - np.array(pixel)).max() < 8


def test_png_with_transparency_gets_a_white_background(tmp_path):
    p = tmp_path / "t.png"
    Image.new("RGBA", (50, 40), (0, 0, 0, 0)).save(p)
    [page] = load(p)
    assert page.image.shape == (40, 50, 3) and tuple(page.image[10, 10]) == (255, 255, 255) and not page.photo


def test_webp_and_heic(tmp_path):
    import pillow_heif

    pillow_heif.register_heif_opener()
    for name in ("a.webp", "a.heic"):
        Image.new("RGB", (640, 480), (10, 200, 30)).save(tmp_path / name, quality=90)
        [page] = load(tmp_path / name)
        assert page.image.shape[:2] == (480, 640) and page.photo


def test_every_page_of_a_multipage_tiff(tmp_path):
    p = tmp_path / "scan.tiff"
    frames = [Image.new("RGB", (300 + i, 200), (i * 60, 0, 0)) for i in range(3)]
    frames[0].save(p, save_all=True, append_images=frames[1:])
    pages = load(p)
    assert [pg.number for pg in pages] == [1, 2, 3] and [pg.image.shape[1] for pg in pages] == [300, 301, 302]


def test_pdf_pages_are_rendered_to_the_target_size_not_a_dpi(tmp_path):
    p = tmp_path / "doc.pdf"
    pages = [Image.new("RGB", (595, 842), "white"), Image.new("RGB", (842, 595), "white"), Image.new("RGB", (595, 842), "white")]
    pages[0].save(p, save_all=True, append_images=pages[1:], resolution=72)
    out = load(p, max_side=1000)
    assert len(out) == 3
    assert [max(pg.image.shape[:2]) for pg in out] == [1000, 1000, 1000]
    assert out[1].image.shape[1] > out[1].image.shape[0]  # landscape page stays landscape


@pytest.mark.parametrize(
    "setup, reason",
    [
        (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
        (lambda p: p.write_text("hello, not a picture"), "not a JPEG file"),
        (lambda p: Image.new("RGB", (10, 10)).save(p, "PNG"), "content is PNG but the name says .jpg"),
    ],
)
def test_bad_files_fail_with_their_own_reason(tmp_path, setup, reason):
    p = tmp_path / "x.jpg"
    setup(p)
    with pytest.raises(InputError) as err:
        load(p)
    assert str(err.value).startswith(reason)
    assert "\n" not in str(err.value)


def test_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    Image.effect_noise((400, 300), 50).convert("RGB").save(buf, "JPEG")
    p = tmp_path / "cut.jpg"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(InputError, match="^corrupt or truncated JPEG"):
        load(p)


def test_still_growing_is_detected(tmp_path):
    p = tmp_path / "g.jpg"
    p.write_bytes(b"\xff\xd8\xff" + b"0" * 100)
    before = os.stat(p)
    assert not inputs._still_growing(p, before)
    with open(p, "ab") as f:
        f.write(b"more")
    assert inputs._still_growing(p, before)


def test_pixel_limit_fails_before_decoding(tmp_path):
    p = tmp_path / "huge.png"
    Image.new("L", (3000, 2000)).save(p)
    with pytest.raises(InputError, match=r"3000x2000 = 6 megapixels, over the 5 MP limit"):
        load(p, mp=5)


def test_decompression_bomb_is_a_clear_failure(tmp_path):
    p = tmp_path / "bomb.png"
    Image.new("1", (20000, 10000)).save(p)  # 200 MP of one bit: a tiny file, a huge image
    assert p.stat().st_size < 100_000
    with pytest.raises(InputError, match=r"20000x10000 = 200 megapixels, over the 100 MP limit"):
        load(p)


def test_page_limit(tmp_path):
    p = tmp_path / "long.pdf"
    ims = [Image.new("RGB", (100, 100), "white") for _ in range(3)]
    ims[0].save(p, save_all=True, append_images=ims[1:])
    with pytest.raises(InputError, match="PDF has 3 pages, over the max_pages limit of 2"):
        load(p, pages=2)


def test_encrypted_pdf(tmp_path):
    with pytest.raises(InputError, match="^encrypted PDF"):
        load(DATA / "encrypted.pdf")


def test_corrupt_pdf(tmp_path):
    p = tmp_path / "bad.pdf"
    p.write_bytes(b"%PDF-1.4\n garbage garbage\n")
    with pytest.raises(InputError, match="^corrupt PDF"):
        load(p)


def test_unsupported_extension(tmp_path):
    p = tmp_path / "x.gif"
    Image.new("RGB", (5, 5)).save(p)
    with pytest.raises(InputError, match="unsupported file type .gif"):
        load(p)
