"""Engines turn one prepared page image into text; `vlm` asks an OpenAI-compatible server, `tesseract` runs on the CPU."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image

from handwatch import metrics
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


def joined(results: list[PageText], rule: Rule, engine: Engine) -> dict:
    """The pages' texts as one transcription: reasons numbered by page, the first page's recipe fields, every
    page's languages, the translation when the rule asks for one. This dict is what the text cache keeps."""
    reasons: list[str] = []
    for i, r in enumerate(results, 1):
        reasons += [f"page {i}: {x}" if len(results) > 1 else x for x in r.review_reasons]
    extra: dict = {}
    for r in results:  # the first page names the recipe; languages are those of any page
        for k, v in r.extra.items():
            if isinstance(v, list) and isinstance(extra.get(k), list):
                extra[k] = list(dict.fromkeys(extra[k] + v))
            else:
                extra.setdefault(k, v)
    appendix = ""
    joined = "\n\n".join(r.text for r in results)
    if rule.translate_to and joined.strip():
        with metrics.cpu("request"):
            translation = engine.translate(joined, rule.translate_to)
        appendix = f"## Translation ({rule.translate_to})\n\n{translation}"
    sent = [r for r in results if r.model]  # blank pages were never sent
    return {
        "pages": [r.text for r in results],
        "model": sent[0].model if sent else "",
        "review_reasons": reasons,
        "extra": extra,
        "appendix": appendix,
        "words": [None if r.words is None else [w.to_json() for w in r.words] for r in results],
        "endpoint": next((r.endpoint for r in sent if r.endpoint), ""),
        "tokens": sum(r.tokens for r in results),
        "asked_model": next((r.asked_model for r in sent if r.asked_model), sent[0].model if sent else ""),
    }


BLANK = "blank page"


def is_blank(r: PageText) -> bool:
    return not r.model and not r.text and r.review_reasons == [BLANK]
