"""Real photos from other projects' test folders (tests/data/photos, with PROVENANCE.md), and a classification rule
for the scripted server that tells them apart the way a model would see them: by what the thumbnail shows."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from tests.support.fakeopenai import Recorded, kind_reply
from tests.support.paths import DATA

PHOTOS = DATA / "photos"


def labelled() -> dict[Path, str]:
    """Each committed photo and its label: document or photo."""
    with open(PHOTOS / "labels.csv", newline="") as f:
        return {PHOTOS / row["file"]: row["label"] for row in csv.DictReader(f)}


def signature(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB").resize((12, 12), Image.BOX), dtype=np.float32)


def _upright(path: Path) -> Image.Image:
    from PIL import ImageOps

    from handwatch.prepare import decode

    decode.ensure_heif()
    with Image.open(path) as im:
        return ImageOps.exif_transpose(im).convert("RGB")


def by_picture(files: dict[Path, str]):
    """A rule for FakeOpenAI.classify: the label of the file whose picture the thumbnail is (nearest by a 12x12
    colour signature), answered as a model with structured output would: a document is a `note`."""
    known = [(signature(_upright(p)), label) for p, label in files.items()]

    def rule(rec: Recorded) -> str:
        assert rec.image is not None
        sig = signature(rec.image)
        label = min(known, key=lambda k: float(np.abs(k[0] - sig).mean()))[1]
        return kind_reply("note" if label == "document" else label)

    return rule
