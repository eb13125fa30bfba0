"""The `preprocess` rule key's models: how a page image is cleaned up before a model or Tesseract reads it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from handwatch.config.base import Frozen


def doc_of(model: type[BaseModel], key: str) -> str:
    """The description `model` gives `key`: a model that mirrors another's keys says the same, written once."""
    return model.model_fields[key].description or ""


class Preprocess(Frozen):
    """Image clean-up options (rule key `preprocess`); each maps to one pure function in prepare/preprocess.py."""

    max_side: Annotated[int, Field(ge=64, le=10000)] | None = Field(
        default=None,
        description="Long side of the image sent, in pixels. Unset: the engine's own, 1288 for `vlm` (what olmOCR chose "
        "for document models) and 2400 for `tesseract`, which reads better with more pixels.",
    )
    max_pixels: Annotated[int, Field(ge=4096)] | None = Field(
        default=None,
        description="Cap on width × height of the image sent, kept even after a model rounds each side to its 28-px patch "
        "grid. Unset: 1,254,400 for `vlm` (at most 1,600 Qwen2.5-VL vision tokens); no cap for `tesseract`, or when only "
        "`max_side` is set.",
    )
    grayscale: bool = Field(default=False, description="`true` sends a grey image instead of a colour one.")
    contrast: bool | Literal["auto"] = Field(
        default="auto",
        description="Even out the light on the paper and pin its grain to white, then CLAHE, on luma only so blue ink stays "
        "blue: `true`, `false`, or `auto`, which is on for camera photos (JPEG, HEIC, WebP) and off for scans.",
    )
    sharpen: bool = Field(default=False, description="`true` applies an unsharp mask.")
    deskew: bool = Field(
        default=True,
        description="Straighten text tilted up to about 15 degrees; skipped when no angle clearly wins (blank pages, "
        "drawings), under half a degree, or where no paper is found.",
    )
    crop: bool | Literal["perspective"] = Field(
        default=False,
        description="`true` trims the dark table around a photographed sheet (its largest bright contour); `perspective` "
        "also squares the sheet up; `false` sends the whole picture.",
    )
    jpeg_quality: Annotated[int, Field(ge=30, le=100)] = Field(
        default=90, description="JPEG quality of the image sent: the request image is always JPEG, never PNG."
    )
    max_input_megapixels: Annotated[float, Field(gt=0, le=2000)] = Field(
        default=100.0,
        description="Largest input image, in megapixels: a larger one fails at its header, before a pixel is decoded, "
        "instead of exhausting memory.",
    )


class PreprocessOverride(Frozen):
    """The same keys as `Preprocess`, each optional, so rule files can change one and inherit the rest."""

    max_side: Annotated[int, Field(ge=64, le=10000)] | None = Field(default=None, description=doc_of(Preprocess, "max_side"))
    max_pixels: Annotated[int, Field(ge=4096)] | None = Field(default=None, description=doc_of(Preprocess, "max_pixels"))
    grayscale: bool | None = Field(default=None, description=doc_of(Preprocess, "grayscale"))
    contrast: bool | Literal["auto"] | None = Field(default=None, description=doc_of(Preprocess, "contrast"))
    sharpen: bool | None = Field(default=None, description=doc_of(Preprocess, "sharpen"))
    deskew: bool | None = Field(default=None, description=doc_of(Preprocess, "deskew"))
    crop: bool | Literal["perspective"] | None = Field(default=None, description=doc_of(Preprocess, "crop"))
    jpeg_quality: Annotated[int, Field(ge=30, le=100)] | None = Field(
        default=None, description=doc_of(Preprocess, "jpeg_quality")
    )
    max_input_megapixels: Annotated[float, Field(gt=0, le=2000)] | None = Field(
        default=None, description=doc_of(Preprocess, "max_input_megapixels")
    )
