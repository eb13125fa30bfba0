"""Which files are inputs, by name: the extensions handwatch reads and the format each promises.

Kept apart from the decoders so that intake's settling, which only asks "is this name an input?", imports
no image library."""

from __future__ import annotations

from pathlib import Path

EXTENSIONS = {
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".jpe": "jpeg",
    ".mpo": "jpeg",  # a stereo camera's (Nintendo 3DS, Fujifilm W3) JPEG with a second frame: the first is read
    ".png": "png",
    ".webp": "webp",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".heic": "heif",
    ".heif": "heif",
    ".hif": "heif",
    ".pdf": "pdf",
}


PHOTO_FORMATS = {"jpeg", "heif", "webp"}  # camera output: uneven light (worth CLAHE), and often not a document


def readable(path: Path) -> bool:
    return path.suffix.lower() in EXTENSIONS


def camera_photo(path: Path) -> bool:
    """Is this name a camera's format? What `contrast: auto` and `documents_only: auto` turn on for; a file whose
    content is another format than its name says is refused before either matters (inputs.check_kind)."""
    return EXTENSIONS.get(path.suffix.lower()) in PHOTO_FORMATS
