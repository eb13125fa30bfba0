"""A HEIC page from libheif's own YCbCr planes: each plane shrunk to the page's size, and only then turned into RGB.

pillow-heif asks libheif for RGB, and libheif converts all 12 MP of an iPhone photo with a plain C loop
(`Op_YCbCr420_to_RGB24`, libheif/color-conversion/yuv2rgb.cc): about a third of the decode's CPU, for
pixels a VLM's 1288 px page then throws nine tenths of away. Here libheif hands over its planes as HEVC
decoded them, the luma plane is shrunk as any picture is (`pixels.resize`), the half-size chroma planes
straight to the page's size, and OpenCV turns the small page into RGB with libheif's own coefficients
(`get_YCbCr_to_RGB_coefficients`, libheif/nclx.cc) in one vector pass.

libheif is the copy pillow-heif loaded (its wheel's `pillow_heif.libs`), called through ctypes, which lets
go of the GIL for each call as pillow-heif does. Anything this does not handle the same way libheif would
(alpha, more than 8 bits, monochrome, a matrix libheif does not turn linearly, no libheif found)
gives None, and the caller decodes through pillow-heif as before."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from pathlib import Path

import cv2
import numpy as np

from handwatch.prepare.pixels import fit_size, resize

YCBCR, CHROMA_UNDEFINED = 0, 99  # heif_colorspace_YCbCr; heif_chroma_undefined: as the file holds it
CHROMA_420, CHROMA_422, CHROMA_444 = 1, 2, 3
CHANNEL_Y, CHANNEL_CB, CHANNEL_CR = 0, 1, 2
# matrix_coefficients (ITU-T H.273) -> (Kr, Kb), as libheif's get_Kr_Kb reads them (libheif/nclx.cc); 2
# (unspecified) and a missing profile take libheif's defaults, BT.601.
BT601 = (0.299, 0.114)
KR_KB = {1: (0.2126, 0.0722), 2: BT601, 4: (0.30, 0.11), 5: BT601, 6: BT601, 7: (0.212, 0.087), 9: (0.2627, 0.0593)}
# Limited range (Y 16-235, chroma 16-240) is stretched to full by these factors (libheif's, in yuv2rgb.cc).
LIMITED_Y, LIMITED_C = 1.1689, 1.1429


class _Error(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("subcode", ctypes.c_int), ("message", ctypes.c_char_p)]


class _Nclx(ctypes.Structure):  # heif_color_profile_nclx, version 1 fields (libheif/api/libheif/heif_color.h)
    _fields_ = [
        ("version", ctypes.c_uint8),
        ("color_primaries", ctypes.c_int),
        ("transfer_characteristics", ctypes.c_int),
        ("matrix_coefficients", ctypes.c_int),
        ("full_range_flag", ctypes.c_uint8),
    ]


def _library_path() -> str | None:
    """The libheif that pillow-heif's wheel carries (already loaded by it), else the system's."""
    try:
        import pillow_heif
    except ImportError:
        return None
    bundled = sorted((Path(pillow_heif.__file__).parent.parent / "pillow_heif.libs").glob("libheif*.so*"))
    return str(bundled[0]) if bundled else ctypes.util.find_library("heif")


@functools.cache
def _lib() -> ctypes.CDLL | None:
    path = _library_path()
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(path)
        p, i, err = ctypes.c_void_p, ctypes.c_int, _Error
        for name, res, args in (
            ("heif_context_alloc", p, []),
            ("heif_context_free", None, [p]),
            ("heif_context_set_max_decoding_threads", None, [p, i]),
            ("heif_context_read_from_memory_without_copy", err, [p, ctypes.c_char_p, ctypes.c_size_t, p]),
            ("heif_context_get_primary_image_handle", err, [p, ctypes.POINTER(p)]),
            ("heif_image_handle_release", None, [p]),
            ("heif_image_handle_has_alpha_channel", i, [p]),
            ("heif_image_handle_get_luma_bits_per_pixel", i, [p]),
            ("heif_image_handle_get_chroma_bits_per_pixel", i, [p]),
            ("heif_decode_image", err, [p, ctypes.POINTER(p), i, i, p]),
            ("heif_image_release", None, [p]),
            ("heif_image_get_colorspace", i, [p]),
            ("heif_image_get_chroma_format", i, [p]),
            ("heif_image_get_width", i, [p, i]),
            ("heif_image_get_height", i, [p, i]),
            ("heif_image_get_bits_per_pixel_range", i, [p, i]),
            ("heif_image_get_plane_readonly", ctypes.POINTER(ctypes.c_uint8), [p, i, ctypes.POINTER(i)]),
            ("heif_image_get_nclx_color_profile", err, [p, ctypes.POINTER(ctypes.POINTER(_Nclx))]),
            ("heif_nclx_color_profile_free", None, [ctypes.POINTER(_Nclx)]),
        ):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
    except (OSError, AttributeError):  # no such library, or one too old for these calls
        return None
    return lib


def page(data: bytes, max_side: int, threads: int = 4) -> np.ndarray | None:
    """The primary image of the HEIF in `data`, upright (libheif applies irot/imir/clap), as RGB no longer
    than `max_side`; None when it is not an 8-bit YCbCr image without alpha that this converts as libheif
    would, or libheif complains (the caller's pillow-heif decode then says what is wrong)."""
    lib = _lib()
    if lib is None:
        return None
    ctx = lib.heif_context_alloc()
    handle, image = ctypes.c_void_p(), ctypes.c_void_p()
    try:
        lib.heif_context_set_max_decoding_threads(ctx, threads)
        if lib.heif_context_read_from_memory_without_copy(ctx, data, len(data), None).code:
            return None
        if lib.heif_context_get_primary_image_handle(ctx, ctypes.byref(handle)).code:
            return None
        if (
            lib.heif_image_handle_has_alpha_channel(handle)
            or lib.heif_image_handle_get_luma_bits_per_pixel(handle) != 8
            or lib.heif_image_handle_get_chroma_bits_per_pixel(handle) != 8
        ):
            return None
        if lib.heif_decode_image(handle, ctypes.byref(image), YCBCR, CHROMA_UNDEFINED, None).code:
            return None
        return _to_rgb(lib, image, max_side)
    finally:
        if image:
            lib.heif_image_release(image)
        if handle:
            lib.heif_image_handle_release(handle)
        lib.heif_context_free(ctx)


def _to_rgb(lib: ctypes.CDLL, image: ctypes.c_void_p, max_side: int) -> np.ndarray | None:
    if lib.heif_image_get_colorspace(image) != YCBCR or lib.heif_image_get_chroma_format(image) not in (
        CHROMA_420,
        CHROMA_422,
        CHROMA_444,
    ):
        return None
    matrix = _matrix(lib, image)
    if matrix is None:
        return None
    planes = [_plane(lib, image, c) for c in (CHANNEL_Y, CHANNEL_CB, CHANNEL_CR)]
    if any(p is None for p in planes):
        return None
    y, cb, cr = planes
    assert y is not None and cb is not None and cr is not None
    size = fit_size(y.shape[1], y.shape[0], max_side)
    # Each plane to the page's size, the chroma from its own (half) size: resizing is linear, so shrinking
    # before the conversion gives the page that converting first would, at a tenth of the pixels.
    whole = (y.shape[1], y.shape[0])
    ycc = cv2.merge([_sized(p, size, whole) for p in (y, cb, cr)])
    return cv2.transform(ycc, matrix)


def _sized(plane: np.ndarray, size: tuple[int, int], whole: tuple[int, int]) -> np.ndarray:
    """`plane` at `size`; `whole` is the luma plane's size, which the chroma planes are half of (or equal to)."""
    h, w = plane.shape
    if (w, h) == size:
        return np.ascontiguousarray(plane)
    if size == whole:
        # The chroma of a page kept at its full size: each sample repeated, as libheif does (x / 2), so the page
        # is the one libheif's RGB gave (a smooth stretch differed by up to 76 levels at colour edges).
        fx, fy = -(-whole[0] // w), -(-whole[1] // h)
        return cv2.resize(plane, (w * fx, h * fy), interpolation=cv2.INTER_NEAREST)[: whole[1], : whole[0]]
    if size[0] > w or size[1] > h:
        return cv2.resize(plane, size, interpolation=cv2.INTER_LINEAR)  # half-size chroma of a page shrunk less than 2x
    return resize(np.ascontiguousarray(plane), size)


def _plane(lib: ctypes.CDLL, image: ctypes.c_void_p, channel: int) -> np.ndarray | None:
    """A view of one plane (valid while `image` lives; `_sized` copies it)."""
    if lib.heif_image_get_bits_per_pixel_range(image, channel) != 8:
        return None
    stride = ctypes.c_int()
    ptr = lib.heif_image_get_plane_readonly(image, channel, ctypes.byref(stride))
    w, h = lib.heif_image_get_width(image, channel), lib.heif_image_get_height(image, channel)
    if not ptr or w <= 0 or h <= 0 or stride.value < w:
        return None
    buf = np.ctypeslib.as_array(ptr, shape=(h * stride.value,))
    return buf.reshape(h, stride.value)[:, :w]


def _matrix(lib: ctypes.CDLL, image: ctypes.c_void_p) -> np.ndarray | None:
    """The 3x4 matrix taking (Y, Cb, Cr, 1) to (R, G, B), as libheif's YCbCr-to-RGB conversion computes it;
    None for a matrix it reads differently (H.273's 0, identity, or 12/13, derived from the primaries)."""
    profile = ctypes.POINTER(_Nclx)()
    if lib.heif_image_get_nclx_color_profile(image, ctypes.byref(profile)).code or not profile:
        coefficients, full = 2, True  # no profile: libheif's defaults
    else:
        coefficients, full = profile.contents.matrix_coefficients, bool(profile.contents.full_range_flag)
        lib.heif_nclx_color_profile_free(profile)
    if coefficients not in KR_KB:
        return None
    kr, kb = KR_KB[coefficients]
    r_cr, b_cb = 2 * (1 - kr), 2 * (1 - kb)
    g_cb, g_cr = 2 * kb * (1 - kb) / (kb + kr - 1), 2 * kr * (1 - kr) / (kb + kr - 1)
    ys, cs, y0 = (1.0, 1.0, 0.0) if full else (LIMITED_Y, LIMITED_C, 16.0)
    rows = [(ys, 0.0, r_cr * cs), (ys, g_cb * cs, g_cr * cs), (ys, b_cb * cs, 0.0)]
    return np.array([[a, b, c, -a * y0 - 128 * (b + c)] for a, b, c in rows], dtype=np.float32)
