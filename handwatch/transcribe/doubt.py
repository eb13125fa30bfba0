"""Pure: word confidences from log-probabilities or Tesseract, ink measures, the reasons a page needs review."""

from __future__ import annotations

import codecs
import difflib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from handwatch.prepare.pixels import luma, pixels, shrink_by
from handwatch.transcribe import script

# A word: letters and digits, joined by an apostrophe, hyphen, dot, comma, colon or slash when a letter or
# digit follows ("don't", "7:45", "1,5", "e.g", "1/2"). Markdown syntax and punctuation around it stay out,
# so marking a word never takes a list bullet, a heading's # or a sentence's full stop with it.
WORD = re.compile(r"[^\W_]+(?:['’.,:/-][^\W_]+)*")
MAX_ALIGN = 20_000  # characters difflib may align (a page is a few thousand); beyond, only the common beginning
MAX_ALIGN_WORDS = 4_000  # words likewise; beyond, only the common beginning and end
ILLEGIBLE = re.compile(r"\[illegible\]", re.I)
PLACEHOLDER = re.compile(r"^\s*\[no (?:text|transcription)\b", re.I)
MIN_LOGPROB = -50.0  # servers write -inf or -9999 for "impossible"; one such token must not swamp the arithmetic


@dataclass(frozen=True)
class Word:
    """A word of a page's text, as the character span [start, end), and the probability that it is right;
    `other`: what a second reading has in its place, where the two readings disagree ("" for nothing)."""

    start: int
    end: int
    p: float
    other: str | None = None

    def to_json(self) -> list:
        out: list = [self.start, self.end, round(self.p, 4)]
        return out if self.other is None else [*out, self.other]

    @staticmethod
    def from_json(item: Sequence) -> Word:
        other = item[3] if len(item) > 3 and isinstance(item[3], str) else None
        return Word(int(item[0]), int(item[1]), float(item[2]), other)


@dataclass(frozen=True)
class Token:
    """One generated token as the server reports it: its text, log-probability and (when given) its raw bytes."""

    text: str
    logprob: float
    raw: bytes | None = None


def spans(text: str) -> list[tuple[int, int]]:
    """Where the words of `text` are; the word inside an `[illegible]` marker is not one."""
    blocked = [(m.start(), m.end()) for m in ILLEGIBLE.finditer(text)]
    out, i = [], 0
    for m in WORD.finditer(text):  # both in order: one pointer through the markers, not a scan of all per word
        while i < len(blocked) and blocked[i][1] <= m.start():
            i += 1
        if i < len(blocked) and blocked[i][0] <= m.start() < blocked[i][1]:
            continue
        out.append((m.start(), m.end()))
    return out


# --- from token log-probabilities -----------------------------------------------------------------


def _token_text(tokens: Sequence[Token]) -> tuple[str, list[tuple[int, int]]]:
    """The text the tokens spell, and for each of its characters the first and last token it came from.
    Byte-level tokens may split one UTF-8 character between them; that character then belongs to both."""
    owner: list[int] = []
    for i, t in enumerate(tokens):
        raw = t.raw if t.raw is not None else t.text.encode("utf-8", "replace")  # a lone surrogate is no UTF-8
        owner += [i] * len(raw)
    data = b"".join(t.raw if t.raw is not None else t.text.encode("utf-8", "replace") for t in tokens)
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    chars: list[str] = []
    owners: list[tuple[int, int]] = []
    pending = 0  # the first byte of the character being decoded
    for i in range(len(data)):
        out = decoder.decode(data[i : i + 1])
        for ch in out:
            chars.append(ch)
            owners.append((owner[pending], owner[i]))
        if out:
            pending = i + 1
    for ch in decoder.decode(b"", final=True):
        chars.append(ch)
        owners.append((owner[pending], owner[-1]))
    return "".join(chars), owners


def token_words(content: str, tokens: Sequence[Token]) -> list[Word]:
    """A probability for each word of `content`: the product of the probabilities of every token that
    spells part of it. A word spans several tokens and may share one with a space or punctuation
    (" flour" or "our."); a shared token counts for each word it touches."""
    if not tokens:
        return []
    spelled, owners = _token_text(tokens)
    # Content chars → token ranges. Usually the tokens spell the content exactly; when a server trims or
    # re-encodes something, the characters that still match keep their tokens and the rest get none.
    char_tokens: list[tuple[int, int] | None]
    if spelled == content:
        char_tokens = list(owners)
    elif max(len(spelled), len(content)) > MAX_ALIGN:  # difflib over this many characters takes minutes
        char_tokens = [None] * len(content)
        for k, (x, y) in enumerate(zip(spelled, content, strict=False)):  # the common beginning keeps its tokens
            if x != y:
                break
            char_tokens[k] = owners[k]
    else:
        char_tokens = [None] * len(content)
        matcher = difflib.SequenceMatcher(None, spelled, content, autojunk=False)
        for a, b, n in matcher.get_matching_blocks():
            for k in range(n):
                char_tokens[b + k] = owners[a + k]
    logprobs = [max(MIN_LOGPROB, t.logprob) if not math.isnan(t.logprob) else MIN_LOGPROB for t in tokens]
    words = []
    for start, end in spans(content):
        seen: set[int] = set()
        for ct in char_tokens[start:end]:
            if ct is not None:
                seen.update(range(ct[0], ct[1] + 1))
        if seen:
            words.append(Word(start, end, math.exp(sum(logprobs[i] for i in seen))))
    return words


def transfer(words: Sequence[Word], old: str, new: str) -> list[Word]:
    """The same words' probabilities on a text derived from `old` (cleaned, trailer cut, recipe rendered):
    by offset when `new` is a piece of `old`, else by aligning the two word sequences. Words of `new`
    that `old` never had (headings handwatch adds) get no probability: they are not the model's reading."""
    if not words:
        return []
    if new == old:
        return list(words)
    # Where `new` sits in `old`: a trailer or loop cut leaves a prefix; cleaning drops thinking and a
    # preamble before the text (thinking may quote the same words) and a fence after it: the last one.
    if not new:
        return []
    at = 0 if old.startswith(new) else old.rfind(new)
    if at >= 0:
        end = at + len(new)
        return [Word(w.start - at, w.end - at, w.p) for w in words if w.start >= at and w.end <= end]
    by_span = {(w.start, w.end): w.p for w in words}
    old_spans, new_spans = spans(old), spans(new)
    old_words, new_words = [old[a:b] for a, b in old_spans], [new[a:b] for a, b in new_spans]
    if max(len(old_words), len(new_words)) > MAX_ALIGN_WORDS:  # difflib is quadratic: the common ends only
        head = next(
            (k for k, (x, y) in enumerate(zip(old_words, new_words, strict=False)) if x != y), min(len(old_words), len(new_words))
        )
        tail = next(
            (k for k, (x, y) in enumerate(zip(reversed(old_words[head:]), reversed(new_words[head:]), strict=False)) if x != y),
            min(len(old_words), len(new_words)) - head,
        )
        blocks = [(0, 0, head), (len(old_words) - tail, len(new_words) - tail, tail)]
    else:
        blocks = [
            (b.a, b.b, b.size) for b in difflib.SequenceMatcher(None, old_words, new_words, autojunk=False).get_matching_blocks()
        ]
    out = []
    for a, b, n in blocks:
        for k in range(n):
            p = by_span.get(old_spans[a + k])
            if p is not None:
                out.append(Word(*new_spans[b + k], p))
    return out


def _field(obj, key: str):
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def parse_logprobs(logprobs) -> list[Token] | None:
    """Tokens from a chat completion's `logprobs`, in the OpenAI shape (`content: [{token, logprob, bytes}]`)
    or the legacy completions shape some servers send in chat replies (`tokens` + `token_logprobs`).
    None when there are none: the server ignored the request."""
    if logprobs is None:
        return None
    content = _field(logprobs, "content")
    if content is not None:
        out = []
        for item in content:
            raw, lp = _field(item, "bytes"), _field(item, "logprob")
            out.append(
                Token(
                    _field(item, "token") or "",
                    float(lp) if lp is not None else MIN_LOGPROB,
                    bytes(raw) if raw is not None else None,
                )
            )
        return out
    extra = logprobs if isinstance(logprobs, dict) else (getattr(logprobs, "model_extra", None) or {})
    toks, lps = extra.get("tokens"), extra.get("token_logprobs")
    if toks is not None and lps is not None and len(toks) == len(lps):
        return [Token(t, float(lp) if lp is not None else 0.0) for t, lp in zip(toks, lps, strict=True)]
    return None


# --- from Tesseract -------------------------------------------------------------------------------


def tesseract_page(data: dict) -> tuple[str, list[Word]]:
    """Text and word confidences from pytesseract's `image_to_data` dictionary: words joined by spaces,
    lines by newlines, paragraphs and blocks by a blank line; a word's confidence (0–100) over 100."""
    text, words = "", []
    last: tuple | None = None
    for i, raw in enumerate(data.get("text", [])):
        word = (raw or "").strip()
        try:
            conf = float(data["conf"][i])
        except (TypeError, ValueError):
            conf = -1.0
        if not word or conf < 0:
            continue
        key = (data["page_num"][i], data["block_num"][i], data["par_num"][i], data["line_num"][i])
        if last is not None:
            text += " " if key == last else ("\n" if key[:3] == last[:3] else "\n\n")
        last = key
        start = len(text)
        text += word
        # Tesseract's "word" is a blank-separated token ("flour," or "(500"): its confidence goes to
        # each word inside it.
        for a, b in spans(word):
            words.append(Word(start + a, start + b, max(0.0, min(1.0, conf / 100.0))))
    return text, words


# --- where doubt goes -----------------------------------------------------------------------------


# A list item's number and a task box's tick are Markdown syntax as well as a reading: `==1==. Buy` is no
# list item and `- [==x==]` no task, so they are counted when uncertain but never wrapped.
LIST_SYNTAX = re.compile(r"^[ \t]*(?:>[ \t]*)*(?:(\d{1,9})[.)]|[-*+])(?:[ \t]+\[([xX])\])?(?=[ \t]|$)", re.M)


def syntax_spans(text: str) -> set[tuple[int, int]]:
    """Where a list item's number or a task box's `x` is: words that a mark would turn into plain text."""
    return {m.span(g) for m in LIST_SYNTAX.finditer(text) for g in (1, 2) if m.group(g) is not None}


def mark(text: str, uncertain: Iterable[tuple[int, int]]) -> str:
    """Wrap each uncertain word in `==…==` (Obsidian's highlight); the characters of the text stay as they were.
    A list number or a task's tick is left unwrapped: the mark would break the list or the task."""
    out, pos = [], 0
    syntax = syntax_spans(text)
    for start, end in sorted(set(uncertain)):
        if start < pos or end > len(text) or start >= end or (start, end) in syntax:
            continue
        out += [text[pos:start], "==", text[start:end], "=="]
        pos = end
    out.append(text[pos:])
    return "".join(out)


@dataclass(frozen=True)
class Thresholds:
    word: float  # a word whose probability is below this is uncertain: marked and counted
    page: float  # a page whose confidence (the mean of its words') is below this needs review
    words: int  # a page with this many uncertain words (or `[illegible]` markers) or more needs review


# Chosen with bench/doubt.py (docs/develop/benchmarks.md has its tables): the word threshold with the best F1 of marked
# against wrong words, the page rule with the best F2 (missing a page with errors costs more than
# flagging one without). Tesseract's word confidences and a VLM's token probabilities are different
# scales, so each engine has its own. The VLM's rest on a stated model of a VLM's errors, not on a
# real model's log-probabilities: `python -m bench.doubt --endpoint URL` measures those.
DEFAULTS = {
    "vlm": Thresholds(word=0.6, page=0.9, words=1),
    "tesseract": Thresholds(word=0.8, page=0.9, words=1),
}


def thresholds(engine: str, word: float | None = None, page: float | None = None, words: int | None = None) -> Thresholds:
    base = DEFAULTS.get(engine, DEFAULTS["vlm"])
    return Thresholds(
        base.word if word is None else word, base.page if page is None else page, base.words if words is None else words
    )


@dataclass(frozen=True)
class Assessment:
    reasons: list[str]
    confidence: float | None  # mean word probability over every page that has them; None: no confidences
    uncertain_words: int | None  # words under the threshold plus `[illegible]` markers; None when confidence is
    marks: list[list[tuple[int, int]]]  # per page, the spans to mark


def assess(pages: Sequence[str], words: Sequence[Sequence[Word] | None], t: Thresholds) -> Assessment:
    """Doubt for a whole document. Pages with word confidences add up to one `confidence`; every page,
    with or without them, counts its `[illegible]` markers as uncertain words."""
    reasons: list[str] = []
    marks: list[list[tuple[int, int]]] = []
    all_p: list[float] = []
    total_uncertain = 0
    for i, text in enumerate(pages):
        page_words = words[i] if i < len(words) else None
        prefix = f"page {i + 1}: " if len(pages) > 1 else ""
        low = [w for w in page_words or () if w.p < t.word or w.other is not None]  # two readers disagree: doubt
        marks.append([(w.start, w.end) for w in low])
        disputed = sum(w.other is not None for w in low)
        uncertain = len(low) + len(ILLEGIBLE.findall(text))
        total_uncertain += uncertain
        if page_words:
            ps = [w.p for w in page_words]
            all_p += ps
            conf = sum(ps) / len(ps)
            if conf < t.page:
                reasons.append(f"{prefix}confidence {conf:.2f} is under {t.page:g}")
        if uncertain >= t.words:
            said = f"{uncertain} uncertain word{'s' if uncertain != 1 else ''}"
            said += f", {disputed} of them read differently by the second reading" if disputed else ""
            reasons.append(prefix + said + (f" (review from {t.words})" if t.words > 1 else ""))
    confidence = round(sum(all_p) / len(all_p), 2) if all_p else None
    return Assessment(reasons, confidence, total_uncertain if all_p else None, marks)


# --- ink ------------------------------------------------------------------------------------------

MEASURE_SIDE = 1000  # areas are counted as if the page's long side were this many pixels
INK_CONTRAST = 32  # grey levels from the paper before a pixel is ink (and at least 4 sigma of the paper's grain)
SPECK_PX = 6  # marks smaller than this (at MEASURE_SIDE) are dust and noise, not ink
LETTER_PX = 20  # marks at least this large could be a letter or a word
PX_PER_LETTER_MIN = 8  # no handwriting writes a letter with less ink than this (at MEASURE_SIDE)
LETTERS_PER_MARK_MAX = 15  # joined-up writing: one mark of ink may be a whole word, but not a sentence
FULL_MARKS = 60  # a page with this many letter-sized marks is full of writing
MARKS_PER_WORD_MAX = 12  # …and should read as at least one word for every this many marks


@dataclass(frozen=True)
class Ink:
    px: float  # ink pixels, as if the page's long side were MEASURE_SIDE
    marks: int  # letter-sized marks (connected pieces of ink)

    @property
    def blank(self) -> bool:
        """Not a single mark larger than a speck: a small "7" alone on a page is not blank (measured: 23 px)."""
        return self.px == 0

    def capacity(self) -> float:
        """The most letters this ink could write: by its amount, and by its pieces (dot-grid paper has ink
        but no letter-sized marks)."""
        return min(self.px / PX_PER_LETTER_MIN, self.marks * LETTERS_PER_MARK_MAX)


def measure_ink(image: Image.Image | np.ndarray) -> Ink:
    """How much ink a prepared page carries. Ink is whatever differs from the paper (the median grey) by
    more than INK_CONTRAST and four times the paper's grain — darker or lighter, so chalk on a board
    counts — in pieces larger than a speck of dust."""
    lum = luma(pixels(image) if isinstance(image, Image.Image) else image)
    if lum.size == 0:
        return Ink(0.0, 0)
    # Tesseract's 2400-px pages are halved: the pieces of ink stay, and labelling them costs a quarter
    # (~11 ms at 1288 px on one core). Not further: at half a VLM page's size faint pencil loses its
    # contrast and neighbouring letters merge into one piece.
    lum = shrink_by(lum, max(1, round(max(lum.shape) / 1300)))
    paper = _median(lum)
    dev = cv2.absdiff(lum, np.full_like(lum, paper))
    grain = 1.4826 * _median(dev)
    mask = (dev > max(INK_CONTRAST, 4 * grain)).astype(np.uint8)
    # Only the pieces' areas are needed: counting the labels costs half of what OpenCV's statistics do (they
    # also find every piece's bounding box), for the same areas; and only the ink's own labels are counted
    # (the paper's, label 0, is most of the page and never wanted): 2.6 -> 1.2 ms at 1288 px.
    n, labels = cv2.connectedComponents(mask, connectivity=8)
    scale = (MEASURE_SIDE / max(lum.shape)) ** 2  # mask pixels → pixels at MEASURE_SIDE
    areas = np.bincount(labels[mask.view(bool)], minlength=n)[1:].astype(np.float64) * scale
    kept = areas[areas >= SPECK_PX]
    return Ink(float(kept.sum()), int((kept >= LETTER_PX).sum()))


def _median(gray: np.ndarray) -> int:
    """The median grey level, read off every other pixel of every other row: a page's paper level and grain
    are properties of the whole page, and a quarter of its pixels tell them as well (OpenCV's histogram
    costs ~2 ms for all of a 1288 px page, on one core)."""
    if min(gray.shape) >= 64:
        gray = gray[::2, ::2]
    cdf = np.cumsum(cv2.calcHist([gray], [0], None, [256], [0, 256]).ravel())
    return int(np.searchsorted(cdf, cdf[-1] / 2))


def letters(text: str) -> int:
    return sum(ch.isalnum() for ch in text)


def ink_reasons(ink: Ink, text: str) -> list[str]:
    """Text the ink cannot account for, or ink the text cannot."""
    if PLACEHOLDER.match(text):
        return []
    n = letters(ILLEGIBLE.sub("", text))
    capacity = ink.capacity()
    if n > max(3.0, capacity):
        return [f"text on a nearly blank page: {n} letters from ink for about {int(capacity)}"]
    n_words = len(spans(text)) + len(ILLEGIBLE.findall(text))
    if ink.marks >= FULL_MARKS and n_words and n_words * MARKS_PER_WORD_MAX < ink.marks:
        return [f"suspiciously short: {n_words} word{'s' if n_words != 1 else ''} from a page with {ink.marks} marks of ink"]
    return []


def page_reasons(text: str, ink: Ink | None, languages: Sequence[str], detected: Sequence[str] | None = None) -> list[str]:
    """Everything about one transcribed page that a person should look at, besides the engine's own reasons."""
    out = ink_reasons(ink, text) if ink is not None else []
    return out + script.script_reasons(text, languages) + script.language_reasons(detected, languages)
