"""The document check and the page's kind: is this file a document at all (a camera roll is mostly holiday
photos), and what kind of document is it (which decides the profile under `profile: auto`)?

Two steps, cheapest first. The local look measures a small preview and may only say "there is nothing on
this image at all" — the one answer it cannot get wrong. Everything else is one small request to the
folder's model: a thumbnail, a reply of a few tokens, `{"kind": K}`. When in doubt, transcribe: an answer
that cannot be read, or a request that fails for this file, counts as a document."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from handwatch import log
from handwatch.errors import EngineResponseError, NotADocument
from handwatch.prepare.inputs import Page, PageRef
from handwatch.prepare.pixels import fit_array, luma, pixels, to_image
from handwatch.prepare.preprocess import encode_jpeg

KINDS = ("note", "recipe", "letter", "list", "form", "printed", "drawing", "photo", "blank")
NOT_DOCUMENTS = ("photo", "blank")
LOOK_SIDE = 448  # a 12 MP JPEG's 1/8 DCT-scaled decode is ~500 px: the preview costs a fraction of a page
LEAST_SIDE = 256  # a preview the file carries is used from this size: a phone's HEIC thumbnail (320 px) is enough
EXIF_LEAST = 160  # a JPEG's EXIF thumbnail (160x120 from most phones) answers "a document or not?"; not which kind
THUMB_SIDE = 512  # the most the classification request sends
CLASSIFY_TOKENS = 48  # `{"kind": "recipe", "language": "de"}` is ~15 tokens; room for a server's spacing
# The local look: a pixel "differs" when it is this many grey levels from its neighbourhood's median (the
# lighting of a blank sheet or wall varies slowly, so it does not count). An image is empty when fewer than
# this share of its pixels differ — a few pixels of a 448 px preview. A blank sheet photographed under a lamp
# measures 0; a "7" alone on it 0.019 %, one light pencil word 0.014 % (tests/transcribe/test_gate.py, and the
# real photos in bench/gate.py).
EMPTY_CONTRAST = 12
EMPTY_SHARE = 0.00002
TESSERACT_WORDS, TESSERACT_P = 2, 0.6
REPLY_CAP = 4000  # characters of a plain reply that are looked at for a kind

PROMPT = (
    "What is this image? Answer with JSON only: "
    '{"kind": K, "language": L}. K is one of: '
    "note (handwritten notes or a notebook page), recipe, letter, list (a to-do or shopping list), form, "
    "printed (a printed page or document), drawing (a sketch or diagram), "
    "photo (a photograph of people, animals, places or things that is not a document), "
    "blank (an empty page or nothing written). "
    "L is the ISO 639-1 code of the main language of any writing, or an empty string."
)
KIND_SCHEMA = {
    "type": "object",
    "properties": {"kind": {"type": "string", "enum": list(KINDS)}, "language": {"type": "string", "maxLength": 12}},
    "required": ["kind", "language"],
    "additionalProperties": False,
}
KIND_FORMAT = {"type": "json_schema", "json_schema": {"name": "page_kind", "schema": KIND_SCHEMA, "strict": True}}
_OBJECT = re.compile(r"\{[^{}]{0,400}\}")  # no nesting, bounded: linear on any reply
_LANG = re.compile(r"^[a-z]{2,3}$")


@dataclass(frozen=True)
class Kind:
    """The model's answer: `kind` is None when it could not be read (then: transcribe)."""

    kind: str | None
    language: str = ""
    tokens: int = 0
    why: str = ""  # why there is no kind
    asked: bool = False  # a classification request was made (its answer, readable or not, is recorded)

    @property
    def skips(self) -> bool:
        return self.kind in NOT_DOCUMENTS


def applies(documents_only: bool | Literal["auto"], photo: bool) -> bool:
    """Is the document check on for this file? `auto`: for camera photos (the same test `contrast: auto` uses)."""
    return photo if documents_only == "auto" else bool(documents_only)


def skippable(documents_only: bool | Literal["auto"], refs: list[PageRef], anyway: bool) -> bool:
    """May the check skip this file? Where the rule says so, unless a person overruled it — and only a file of one
    page: a PDF or TIFF is never judged by its first page (a blank cover sheet, a photo on a booklet's cover);
    it is skipped only when every page is blank."""
    return applies(documents_only, refs[0].photo) and not anyway and len(refs) == 1


def wants_kind(profile: str, output: str) -> bool:
    """Is the kind needed even where every file is a document: to choose the profile, or to name the Markdown?"""
    return profile == "auto" or "{kind}" in output


def differing_share(image: np.ndarray) -> float:
    """The share of a preview's pixels that stand out from their neighbourhood: ink, edges, texture."""
    g = luma(fit_array(image, LOOK_SIDE))
    if g.size == 0:
        return 0.0
    background = cv2.medianBlur(g, 21)
    return float(np.count_nonzero(cv2.absdiff(g, background) > EMPTY_CONTRAST)) / g.size


def empty(image: np.ndarray) -> bool:
    """The local look: True only for an image with essentially nothing on it (a blank sheet, a covered lens)."""
    return differing_share(image) < EMPTY_SHARE


def parse(content: str) -> Kind:
    """A kind from the reply: the JSON object asked for, inside code fences or prose if need be; else a reply that
    is one kind word and nothing more. Prose is never read for a kind: "not a photo", "a photo of my notes" and
    "the page is not blank" all name a kind that would skip a document. Anything else is unreadable."""
    text = content[:REPLY_CAP]
    for m in _OBJECT.finditer(text):
        try:
            data = json.loads(m.group(0))
        except ValueError:
            continue
        if isinstance(data, dict) and isinstance(data.get("kind"), str):
            kind = data["kind"].strip().lower()
            lang = data.get("language")
            lang = lang.strip().lower() if isinstance(lang, str) and _LANG.match(lang.strip().lower()) else ""
            if kind in KINDS:
                return Kind(kind, lang)
            return Kind(None, why=f"the model named no known kind ({kind[:40]!r})")
    word = text.strip().strip("`'\".!*").strip().lower()  # a reply of one word: `photo`, "Blank.", **note**
    if word in KINDS:
        return Kind(word)
    shown = " ".join(text.split())[:60]
    return Kind(None, why=f"the reply names no single kind ({shown!r})" if shown else "the reply was empty")


def profile_for(kind: str | None, language: str, languages: tuple[str, ...]) -> str:
    """`profile: auto`: a recipe card is a recipe; a letter in a language other than the folder's first is
    multilingual; everything else (and an unknown kind) is notes."""
    if kind == "recipe":
        return "recipe"
    if kind == "letter" and language and language != languages[0].split("-")[0]:
        return "multilingual"
    return "notes"


def judge(preview: Page, engine, gating: bool, name: str) -> Kind:
    """The check on a file's preview: the local look may only skip an image with nothing on it, and only from a
    decode of the picture itself, large enough to show a "7" (a thumbnail the file carries may be stale or forged,
    and a 160 px one hides a small note); anything else is the model's call. Raises NotADocument where `gating`.
    With Tesseract there is no model to ask: it decides after reading (`tesseract_found_text`)."""
    image = preview.image
    assert image is not None
    if gating and not preview.embedded and max(image.shape[:2]) >= LEAST_SIDE and empty(image):
        raise NotADocument("blank", "not a document (blank: nothing on it)")
    if engine.name != "vlm":
        return Kind(None, why="Tesseract decides after reading")
    kind = classify(engine, thumbnail(image))
    if kind.kind is None:
        log.get("gate").info("kind.unreadable", path=name, reason=kind.why)
    elif gating and kind.skips:
        raise NotADocument(kind.kind, f"not a document ({kind.kind})")
    return Kind(kind.kind, kind.language, kind.tokens, kind.why, asked=True)


def agrees_blank(image, engine, spent: list[int]) -> bool:
    """A page the ink measure calls blank: does the model agree? The ink measure alone never drops a page.
    Tesseract is asked by reading it (the pipeline's check of its words)."""
    if engine.name != "vlm":
        return False
    kind = classify(engine, thumbnail(image))
    spent.append(kind.tokens)
    return kind.kind == "blank"


def thumbnail(image) -> bytes:
    """What the classification request sends: at most THUMB_SIDE on the long side, as JPEG."""
    arr = image if isinstance(image, np.ndarray) else pixels(image)
    return encode_jpeg(to_image(fit_array(arr, THUMB_SIDE)), 85)


def classify(engine, jpeg: bytes) -> Kind:
    """One small request: the thumbnail, the fixed kinds, a few tokens, thinking off whatever the endpoint says.
    JSON through `response_format` where an endpoint does structured output; a plain reply, parsed
    tolerantly, where none does or the server refuses the schema. EngineUnavailable passes through (the file
    waits, as for transcription); any other failure is a Kind without a kind (the file is transcribed)."""
    from handwatch.transcribe.client import image_messages
    from handwatch.transcribe.http import FileRejected

    messages = image_messages(PROMPT, jpeg)
    structured = any(c.ep.structured_output for c in engine.clients) and not engine.schema_refused
    for fmt in (KIND_FORMAT, None) if structured else (None,):
        try:
            reply = engine.call(messages, CLASSIFY_TOKENS, 0.0, fmt, think=False)  # a few tokens: no room to think
        except (EngineResponseError, FileRejected) as e:
            log.get("gate").info("kind.failed", structured=fmt is not None, reason=str(e)[:200])
            if fmt is not None:
                engine.schema_refused = True  # each file would cost a refusal, a probe and a second request
                continue
            return Kind(None, why=f"the classification request failed ({str(e)[:120]})")
        kind = parse(reply.content)
        return Kind(kind.kind, kind.language, reply.usage, kind.why)
    return Kind(None, why="no classification")


def tesseract_found_text(words: list, texts: list[str]) -> bool:
    """With the Tesseract engine there is no model to ask: a file is a document when Tesseract reads at least
    TESSERACT_WORDS words of three or more letters or digits, each at TESSERACT_P or better. On a photo it
    finds specks and texture, read as short, unsure fragments."""
    found = 0
    for page_words, text in zip(words, texts, strict=True):
        for w in page_words or ():
            if w.p >= TESSERACT_P and sum(ch.isalnum() for ch in text[w.start : w.end]) >= 3:
                found += 1
                if found >= TESSERACT_WORDS:
                    return True
    return False
