"""Engines turn one prepared page image into text; `vlm` asks an OpenAI-compatible server, `tesseract` runs on the CPU."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image

from handwatch.config.schema import Rule
from handwatch.transcribe.doubt import Word


@dataclass
class PageText:
    text: str
    model: str
    review_reasons: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # front-matter additions (recipe title, detected languages)
    words: list[Word] | None = None  # each word's probability of being right; None: the engine gave none
    endpoint: str = ""  # which server answered (its label), for provenance
    asked_model: str = ""  # the model handwatch asked for (servers may report another name for it)
    tokens: int = 0  # tokens the server counted for the reply used (for the log)


@dataclass(frozen=True)
class EncodedPage:
    """A prepared page as the server receives it: the daemon keeps pages waiting for a free request
    slot in this form (a few hundred kB), never as decoded pixels (megabytes)."""

    jpeg: bytes
    size: tuple[int, int]

    def image(self) -> Image.Image:
        """Decoded again, for the rare retry that must send the page smaller."""
        import io

        im = Image.open(io.BytesIO(self.jpeg))
        im.load()
        return im


class Engine(Protocol):
    name: str

    def transcribe_page(self, image: Image.Image | EncodedPage, rule: Rule) -> PageText: ...

    def translate(self, text: str, target: str) -> str: ...
