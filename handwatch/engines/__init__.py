"""Engines turn one prepared page image into text; `vlm` asks an OpenAI-compatible server, `tesseract` runs on the CPU."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image

from handwatch.config import Rule


@dataclass
class PageText:
    text: str
    model: str
    review_reasons: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # front-matter additions (recipe title, detected languages)


class Engine(Protocol):
    name: str

    def transcribe_page(self, image: Image.Image, rule: Rule) -> PageText: ...

    def translate(self, text: str, target: str) -> str: ...
