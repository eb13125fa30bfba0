"""What scanners, fax software and phones really write: every orientation of every format, deep
samples, BigTIFF, PDFs with bytes before the header, and reasons that say what the decoder said."""

import io
import subprocess

import numpy as np
import pytest
import structlog
from PIL import Image

from handwatch.errors import InputError
from handwatch.prepare import inputs, pdf
from tests.support import rawfiles
from tests.support.paths import DATA

T = Image.Transpose
# What turns the upright page into what a camera stores under each EXIF orientation (the inverse
# of what a viewer does to show it).
STORED = {
    1: None,
    2: T.FLIP_LEFT_RIGHT,
    3: T.ROTATE_180,
    4: T.FLIP_TOP_BOTTOM,
    5: T.TRANSPOSE,
    6: T.ROTATE_90,
    7: T.TRANSVERSE,
    8: T.ROTATE_270,
}


def load(path, max_side=4000, mp=100.0, pages=50):
    return inputs.load(path, max_side, mp, pages)


def upright_page(mode="RGB") -> Image.Image:
    """No two of the eight orientations look alike: a wide block in one corner, a small one in the opposite."""
    im = Image.new("RGB", (160, 96), "white")
    im.paste((220, 0, 0), (0, 0, 48, 32))
    im.paste((0, 0, 200), (136, 80, 160, 96))
    return im.convert(mode, dither=Image.Dither.NONE) if mode == "1" else im.convert(mode)


def assert_upright(arr: np.ndarray, mode="RGB"):
    want = np.asarray(upright_page(mode).convert("L")).astype(int)  # mode "1" compares as black and white
    got = arr if arr.ndim == 2 else np.asarray(Image.fromarray(arr).convert("L"))
    assert got.shape == want.shape, (got.shape, want.shape)
    wrong = (np.abs(got.astype(int) - want) > 64).mean()
    assert wrong < 0.02, f"{wrong:.1%} of pixels differ from the upright page"


def stored(n: int, mode="RGB") -> Image.Image:
    im = upright_page(mode)
    return im.transpose(STORED[n]) if STORED[n] is not None else im


def exif(n: int) -> Image.Exif:
    ex = Image.Exif()
    ex[0x0112] = n
    return ex


SAVE = {  # name: (suffix, mode, how to save)
    "jpeg": (".jpg", "RGB", lambda im, p, n: im.save(p, exif=exif(n), quality=95)),
    "jpeg grey": (".jpg", "L", lambda im, p, n: im.save(p, exif=exif(n), quality=95)),
    "jpeg cmyk": (".jpg", "CMYK", lambda im, p, n: im.save(p, exif=exif(n), quality=95)),
    "png eXIf": (".png", "RGB", lambda im, p, n: im.save(p, exif=exif(n))),
    "webp EXIF": (".webp", "RGB", lambda im, p, n: im.save(p, exif=exif(n), lossless=True)),
    "tiff": (".tif", "RGB", lambda im, p, n: im.save(p, exif=exif(n))),
    "tiff lzw": (".tif", "RGB", lambda im, p, n: im.save(p, exif=exif(n), compression="tiff_lzw")),
    "tiff fax g4": (".tif", "1", lambda im, p, n: im.save(p, exif=exif(n), compression="group4")),
    "bigtiff big-endian": (".tif", "L", lambda im, p, n: p.write_bytes(rawfiles.tiff([np.asarray(im)], ">", orientation=n))),
}


@pytest.mark.parametrize("n", range(1, 9))
@pytest.mark.parametrize("fmt", SAVE)
def test_every_orientation_of_every_format_is_applied_exactly_once(tmp_path, fmt, n):
    suffix, mode, save = SAVE[fmt]
    p = tmp_path / f"o{suffix}"
    save(stored(n, mode), p, n)
    [page] = load(p)
    assert_upright(page.image, mode)


@pytest.mark.parametrize("n", range(1, 9))
def test_heic_irot_and_imir_are_applied_once_and_its_exif_tag_ignored(tmp_path, n):
    """An iPhone's HEIC has the turn in irot/imir boxes and the same turn again in its EXIF tag;
    HEIF readers apply the boxes and ignore the tag."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    p = tmp_path / "o.heic"
    stored(n).save(p, exif=exif(n).tobytes(), quality=95)
    data = p.read_bytes()
    if n != 1:
        assert b"irot" in data or b"imir" in data  # the generator really wrote HEIF transforms
    assert b"Exif" in data  # and kept the EXIF tag, as phones do
    [page] = load(p)
    assert_upright(page.image)


def test_each_page_of_a_tiff_keeps_its_own_orientation(tmp_path):
    p = tmp_path / "scan.tif"
    frames = [stored(n) for n in (1, 6, 3, 8)]
    for im, n in zip(frames, (1, 6, 3, 8), strict=True):
        im.encoderinfo = {"exif": exif(n)}
    frames[0].save(p, save_all=True, append_images=frames[1:], exif=exif(1))
    ims = load(p)
    assert len(ims) == 4
    with Image.open(p) as check:  # the file does say a different orientation per page
        said = []
        for i in range(4):
            check.seek(i)
            said.append(check.tag_v2.get(0x0112, 1))
    for page, n in zip(ims, said, strict=True):
        stored_shape = np.asarray(stored(n)).shape[:2]
        assert page.image.shape[:2] == (stored_shape if n in (1, 3) else stored_shape[::-1])
        assert_upright(page.image)


# --- deep samples -----------------------------------------------------------------------------


def deep_page(paper: float, ink: float, dtype) -> np.ndarray:
    a = np.full((120, 200), paper, dtype)
    a[40:80, 30:170] = ink
    return a


@pytest.mark.parametrize(
    "name, arr, ext",
    [
        ("16-bit PNG", deep_page(60000, 8000, np.uint16), ".png"),
        ("12 bits in a 16-bit PNG", deep_page(3900, 500, np.uint16), ".png"),
        ("16-bit TIFF", deep_page(60000, 8000, np.uint16), ".tif"),
        ("16-bit big-endian TIFF", deep_page(60000, 8000, np.uint16).astype(">u2"), ".tif"),
        ("32-bit integer TIFF", deep_page(3_000_000, 100_000, np.int32), ".tif"),
        ("32-bit float TIFF", deep_page(0.92, 0.08, np.float32), ".tif"),
        (
            "float TIFF with NaN",
            np.where(np.eye(120, 200, dtype=bool), np.nan, deep_page(0.92, 0.08, np.float32)).astype(np.float32),
            ".tif",
        ),
    ],
)
def test_deep_grey_is_scaled_by_its_range_not_clipped_to_white(tmp_path, name, arr, ext):
    p = tmp_path / f"deep{ext}"
    im = Image.fromarray(arr)
    im.save(p)
    with Image.open(p) as check:
        assert check.mode in ("I;16", "I;16B", "I", "F"), check.mode
    [page] = load(p)
    out = page.image
    assert out.dtype == np.uint8 and out.shape[:2] == arr.shape
    assert np.median(out[:30]) >= 240, name  # paper is white
    assert np.median(out[45:75, 40:160]) <= 15, name  # the ink is not clipped away


def test_a_page_of_one_deep_level_keeps_it():
    from handwatch.prepare.pixels import to_8bit

    assert to_8bit(np.full((4, 4), 65535, np.uint16)).min() == 255
    assert to_8bit(np.full((4, 4), 0.5, np.float32)).max() == 128


def test_64_bit_float_tiff_is_read_by_libtiff_when_pillow_cannot(tmp_path):
    """Pillow does not open 64-bit float TIFFs; OpenCV's libtiff does."""
    p = tmp_path / "f64.tif"
    arr = deep_page(0.9, 0.1, np.float64)
    import cv2

    assert cv2.imwrite(str(p), arr)  # OpenCV writes float64 TIFF itself
    with pytest.raises(Exception):
        Image.open(p)
    [page] = load(p)
    assert np.median(page.image[:30]) >= 240 and np.median(page.image[45:75, 40:160]) <= 15


# --- BigTIFF ----------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["<", ">"])
def test_bigtiff_in_either_byte_order_is_read_page_by_page(tmp_path, order):
    pages = [deep_page(230, 20, np.uint8), np.dstack([deep_page(200, 10, np.uint8)] * 3)[:, :150]]
    p = tmp_path / "big.tif"
    p.write_bytes(rawfiles.tiff(pages, order, big=True))
    assert p.read_bytes()[:4] == (b"II+\x00" if order == "<" else b"MM\x00+")
    got = load(p)
    assert [g.image.shape[:2] for g in got] == [(120, 200), (120, 150)]
    assert got[0].image[0, 0] == 230 and got[0].image[60, 100] == 20
    assert tuple(np.ravel(got[1].image[60, 100])[:1]) == (10,)


def test_bigtiff_page_limit_and_pixel_limit_hold(tmp_path):
    p = tmp_path / "big.tif"
    p.write_bytes(rawfiles.tiff([deep_page(230, 20, np.uint8)] * 3, ">"))
    with pytest.raises(InputError, match="over the max_pages limit of 2"):
        load(p, pages=2)
    with pytest.raises(InputError, match="over the 0.01 MP limit"):
        load(p, mp=0.01)


def test_fax_pixels_are_made_square(tmp_path):
    """A 'normal' fax is 204x98 dpi: each pixel twice as tall as wide. Sent as stored, the page
    would arrive squashed to half its height."""
    p = tmp_path / "fax.tif"
    Image.new("1", (1728, 1100), 1).save(p, compression="group3", dpi=(204, 98))
    [page] = load(p, max_side=4000)
    h, w = page.image.shape[:2]
    assert w == 1728 and abs(h - round(1100 * 204 / 98)) <= 1


# --- PDF header -------------------------------------------------------------------------------


def pdf_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (300, 400), "white").save(buf, "PDF")
    return buf.getvalue()


def test_pdf_with_bytes_before_its_header_is_read(tmp_path):
    p = tmp_path / "gateway.pdf"
    p.write_bytes(b"X-Mailer: scanner\r\n" * 40 + pdf_bytes())  # 760 bytes before %PDF-
    [page] = load(p, max_side=400)
    assert page.image.shape[:2] == (400, 300)


def test_pdf_header_further_than_1024_bytes_is_not_a_pdf(tmp_path):
    p = tmp_path / "late.pdf"
    p.write_bytes(b"x" * 1100 + pdf_bytes())
    with pytest.raises(InputError, match="^not a PDF file"):
        load(p)


# --- reasons that say what happened ------------------------------------------------------------


def test_12_bit_jpeg_says_so(tmp_path):
    p = tmp_path / "ct.jpg"
    p.write_bytes(rawfiles.jpeg_12bit())
    with pytest.raises(InputError) as err:
        load(p)
    assert str(err.value).startswith("12-bit JPEG (extended): only 8-bit JPEGs can be read")


def test_broken_pdf_reason_says_what_poppler_said(tmp_path):
    p = tmp_path / "bad.pdf"
    p.write_bytes(b"%PDF-1.4\n garbage garbage\n")
    with pytest.raises(InputError) as err:
        load(p)
    reason = str(err.value)
    assert reason.startswith("corrupt PDF: ") and "xref" in reason and "\n" not in reason


def test_libjpeg_complaint_goes_to_the_log_not_the_terminal(tmp_path, capfd):
    buf = io.BytesIO()
    Image.effect_noise((400, 300), 50).convert("RGB").save(buf, "JPEG")
    data = buf.getvalue()
    p = tmp_path / "extra.jpg"
    p.write_bytes(data[:-2] + b"garbage" + data[-2:])  # bytes between the scan and its end marker
    with structlog.testing.capture_logs() as logs:
        [page] = load(p)
    assert page.image.shape == (300, 400, 3)
    assert any("Corrupt JPEG data" in m for m in page.said)
    [event] = [e for e in logs if e["event"] == "decoder.warned"]
    assert event["path"] == str(p) and any("extraneous bytes" in m for m in event["said"])
    assert capfd.readouterr().err == ""  # nothing raw on the terminal (OpenCV's libjpeg printed it)


def test_python_warnings_go_to_the_log_without_file_paths(tmp_path, capfd):
    """A tag claiming more data than the file holds: Pillow warns (a UserWarning line naming its
    own source file) and reads the page anyway."""
    p = tmp_path / "scan.tif"
    p.write_bytes(rawfiles.tiff([deep_page(230, 20, np.uint8)], "<", big=False, extra=[(270, 2, 10**6, 8)]))
    with structlog.testing.capture_logs() as logs:
        [page] = load(p)
    assert page.image[0, 0] == 230
    events = [e for e in logs if e["event"] == "decoder.warned"]
    said = [m for e in events for m in e["said"]]
    assert said and all(m.startswith("UserWarning: ") and ".py" not in m for m in said), said
    assert capfd.readouterr().err == ""


def test_a_failure_carries_the_decoders_own_words(tmp_path):
    buf = io.BytesIO()
    Image.effect_noise((400, 300), 50).convert("RGB").save(buf, "JPEG")
    p = tmp_path / "cut.jpg"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(InputError) as err:
        load(p)
    assert str(err.value) == "corrupt or truncated JPEG: Premature end of JPEG file"


# --- poppler's memory limit, set without preexec_fn (issue #10, item 10) -------------------------


def test_poppler_runs_under_prlimit_not_preexec_fn(tmp_path, monkeypatch):
    """preexec_fn runs Python between fork and exec, which can deadlock the child when other
    threads exist; the limit is set by prlimit, which then execs poppler."""
    started = []
    real = subprocess.Popen

    class Spy(real):
        def __init__(self, args, *a, **kw):
            started.append((list(args), kw.get("preexec_fn")))
            super().__init__(args, *a, **kw)

    monkeypatch.setattr(subprocess, "Popen", Spy)
    p = tmp_path / "doc.pdf"
    p.write_bytes(pdf_bytes())
    [page] = load(p, max_side=400)
    assert page.image.shape[:2] == (400, 300)
    assert [args[0] for args, _ in started] == ["prlimit", "prlimit"]  # pdfinfo, then pdftoppm
    assert [args[3] for args, _ in started] == ["pdfinfo", "pdftoppm"]
    assert all(fn is None for _, fn in started)


def test_the_child_really_runs_under_the_memory_limit(tmp_path):
    proc = pdf.run(["sh", "-c", "ulimit -v"], memory=pdf.MEMORY)
    assert int(proc.stdout) * 1024 == pdf.MEMORY
    # And poppler itself is held to it: the same 5000 px page (50 MB of pixels) renders under
    # 256 MiB and not under 48 MiB.
    p = tmp_path / "doc.pdf"
    p.write_bytes(pdf_bytes())
    assert pdf.render_page(p, 1, 5000, tmp_path, memory=256 << 20).shape == (5000, 3750, 3)
    with pytest.raises(InputError, match="^PDF page 1 (cannot be rendered|rendered to 1x1 px)"):
        pdf.render_page(p, 1, 5000, tmp_path, memory=48 << 20)


# --- HEIC previews ----------------------------------------------------------------------------


def heic_with_previews(p, boxes, n=1, scale=5):
    """A HEIC of the upright page stored under orientation `n` (irot/imir and the EXIF tag, as a
    phone writes it), `scale` times larger, carrying thumbnails of the given long sides."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    im = stored(n)
    im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    im.save(p, exif=exif(n).tobytes(), quality=95, thumbnails=boxes, enc_params={"preset": "ultrafast"})
    with Image.open(p) as check:  # the generator really wrote them
        assert sorted(check.info["thumbnails"]) == sorted(boxes)


@pytest.mark.parametrize("n", range(1, 9))
def test_heic_preview_at_least_the_page_size_is_decoded_instead_of_all_its_pixels(tmp_path, n):
    """HEVC has no reduced-size decode: all 12 MP of a phone photo are decoded for a 1288 px page.
    A preview the file carries that is as large as the page is decoded instead, turned as the
    image is; the smallest that is large enough wins."""
    from handwatch.prepare import decode

    p = tmp_path / "o.heic"
    heic_with_previews(p, [640, 520, 128], n)  # the image is 800x480 (or 480x800 stored turned)
    preview = decode.heif_preview(p, 500)
    assert preview is not None and max(preview.shape[:2]) == 520  # the preview's pixels, not the image's
    [page] = load(p, max_side=500)
    assert max(page.image.shape[:2]) == 500
    assert_upright(np.asarray(Image.fromarray(page.image).resize(upright_page().size, Image.Resampling.BOX)))


def test_heic_preview_smaller_than_the_page_is_not_used(tmp_path):
    """A phone's own thumbnail (a few hundred pixels) is far below a page: the image is decoded."""
    from handwatch.prepare import decode

    p = tmp_path / "photo.heic"
    heic_with_previews(p, [320])
    assert decode.heif_preview(p, 500) is None
    assert decode.heif_preview(p, 4000) is None  # nothing to shrink: the image itself is wanted
    [page] = load(p, max_side=500)
    assert max(page.image.shape[:2]) == 500
    assert_upright(np.asarray(Image.fromarray(page.image).resize(upright_page().size, Image.Resampling.BOX)))


def _with_junk(where: str) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((400, 300), 50).convert("RGB").save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    if where == "before a marker":  # 5 bytes of junk before the quantisation table (0xFFDB), as cameras write
        i = data.find(b"\xff\xdb")
        return data[:i] + b"\x00\x01\x02\x03\x04" + data[i:]
    return data[:2] + b"\xff\xee\x00\x0eAdobe\x00" + data[2:]  # an APP14 segment shorter than its length says


@pytest.mark.parametrize("where", ["before a marker", "a truncated APP14"])
def test_a_jpeg_pillow_reads_is_never_refused_by_the_fast_decoder(tmp_path, where):
    # libjpeg-turbo refuses these even leniently ("Corrupt JPEG data: 5 extraneous bytes before marker 0xdb");
    # Pillow reads them, and so did handwatch before the fast decoder.
    p = tmp_path / "junk.jpg"
    p.write_bytes(_with_junk(where))
    with Image.open(p) as im:
        im.load()  # the premise: Pillow reads it
    [page] = load(p)
    assert page.image.shape[:2] == (300, 400)
    assert any("decoded by Pillow instead" in m for m in page.said)


# Real files from Pillow's test images (tests/data/jpeg/PROVENANCE.md), each with libjpeg-turbo's complaint.
REFUSED_JPEGS = {
    "jpeg-junk-before-marker-pillow.jpg": "Corrupt JPEG data: 5 extraneous bytes before marker 0xdb",
    "jpeg-truncated-app14-pillow.jpg": "Corrupt JPEG data: 1 extraneous bytes before marker 0xdb",
    "jpeg-short-app13-pillow.jpg": "Corrupt JPEG data: 16 extraneous bytes before marker 0xe1",
    "jpeg-bad-icc-marker-pillow.jpg": "Corrupt JPEG data: bad ICC marker",
}


@pytest.mark.parametrize("name", REFUSED_JPEGS)
def test_real_jpegs_the_fast_decoder_refuses_are_read_as_pillow_reads_them(name):
    # Before 4f7099b handwatch failed each as "corrupt JPEG: <the complaint>", though Pillow reads them all.
    p = DATA / "jpeg" / name
    with Image.open(p) as im:
        want = np.asarray(im.convert("L" if im.mode == "L" else "RGB"), dtype=np.int16)
    [page] = load(p)
    assert page.image.shape == want.shape
    assert np.abs(page.image.astype(np.int16) - want).mean() < 1.0
    assert any(REFUSED_JPEGS[name] in m for m in page.said), page.said
