"""Does doubt point at the errors? Generated handwriting-font pages with known text, read by

  1. the real Tesseract engine (its own word confidences), and
  2. the VLM engine over real HTTP against the scripted server replaying log-probabilities from a
     stated model of a VLM's errors (see `simulate`), or, with --endpoint, a real model server.

Of the words that are wrong, what share was marked (recall); of the marked words, what share was
wrong (precision); and of the pages with any error, what share was flagged needs_review (and the
reverse). Baseline: handwatch before doubt, which marked nothing and flagged no page for this.

    python -m bench.doubt                      # Tesseract + scripted replay, ~3 minutes on 2 cores
    python -m bench.doubt --endpoint http://gpubox:8000/v1 --model Qwen/Qwen2.5-VL-7B-Instruct
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import random
from dataclasses import dataclass

from bench import gen
from bench.legibility import PAGES
from handwatch.config.endpoint import Endpoint
from handwatch.config.preprocess import Preprocess
from handwatch.config.schema import Rule
from handwatch.prepare import preprocess
from handwatch.transcribe import doubt

FONTS = (("humor", 60), ("dkg", 60), ("print", 44), ("print", 30))  # two handwriting fonts, and print
DAMAGE = {
    "clean": lambda im: im,
    "blur": lambda im: gen.blur(im, 2.0),
    "noisy, faint": lambda im: gen.noise(gen.low_contrast(im, 0.45), 10),
}
WORD_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9)
PAGE_GRID = (0.7, 0.8, 0.85, 0.9)
COUNT_GRID = (1, 2, 3, 5)


@dataclass
class Reading:
    truth: str
    text: str
    words: list[doubt.Word]


SPECS = [(lines, font, size, damage) for lines in PAGES for font, size in FONTS for damage in DAMAGE]


def render(spec) -> object:
    """A page is drawn when it is needed: 96 pages of 2400x1600 held at once would be 1.1 GB."""
    lines, font, size, damage = spec
    return DAMAGE[damage](gen.page(lines, size=(2400, 1600), font=font, font_size=size))


# --- scoring ------------------------------------------------------------------------------------


def wrong_words(truth: str, text: str) -> tuple[set[tuple[int, int]], int]:
    """Spans of `text`'s words that are not the truth's words (case folded: Humor Sans has no lower
    case to tell apart), and how many of the truth's words are missing altogether."""
    t = [truth[a:b].lower() for a, b in doubt.spans(truth)]
    spans = doubt.spans(text)
    o = [text[a:b].lower() for a, b in spans]
    wrong: set[tuple[int, int]] = set(spans)
    missed = 0
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, t, o, autojunk=False).get_opcodes():
        if tag == "equal":
            wrong -= set(spans[j1:j2])
        elif tag in ("delete", "replace"):
            missed += max(0, (i2 - i1) - (j2 - j1))
    return wrong, missed


@dataclass
class Score:
    tp: int = 0
    marked: int = 0
    wrong: int = 0
    flagged_err: int = 0
    flagged: int = 0
    err_pages: int = 0
    pages: int = 0

    def row(self) -> tuple[str, str, str, str]:
        def pct(a, b):
            return f"{a / b:.0%}" if b else "–"

        return (
            pct(self.tp, self.wrong),
            pct(self.tp, self.marked),
            pct(self.flagged_err, self.err_pages),
            pct(self.flagged_err, self.flagged),
        )

    def f(self, beta: float, pages: bool) -> float:
        tp, found, real = (self.flagged_err, self.flagged, self.err_pages) if pages else (self.tp, self.marked, self.wrong)
        if not tp:
            return 0.0
        p, r = tp / found, tp / real
        return (1 + beta**2) * p * r / (beta**2 * p + r)


def score(readings: list[Reading], t: doubt.Thresholds) -> Score:
    s = Score()
    for r in readings:
        wrong, missed = wrong_words(r.truth, r.text)
        a = doubt.assess([r.text], [r.words], t)
        marked = set(a.marks[0])
        s.tp += len(marked & wrong)
        s.marked += len(marked)
        s.wrong += len(wrong)
        err = bool(wrong or missed)
        s.pages += 1
        s.err_pages += err
        s.flagged += bool(a.reasons)
        s.flagged_err += bool(a.reasons) and err
    return s


def table(name: str, readings: list[Reading]) -> doubt.Thresholds:
    words = sum(len(doubt.spans(r.text)) for r in readings)
    wrong = sum(len(wrong_words(r.truth, r.text)[0]) for r in readings)
    err = sum(bool(w or m) for w, m in (wrong_words(r.truth, r.text) for r in readings))
    print(f"\n### {name}: {len(readings)} pages, {words} words read, {wrong} wrong; {err} pages with an error\n")
    print("| words marked below | wrong words marked (recall) | marked words wrong (precision) |")
    print("| ---: | ---: | ---: |")
    best_word = max(WORD_GRID, key=lambda w: (score(readings, doubt.Thresholds(w, 0, 10**6)).f(1, False), -w))
    for w in WORD_GRID:
        rec, prec, _, _ = score(readings, doubt.Thresholds(w, 0, 10**6)).row()
        print(f"| {w:g}{' ←' if w == best_word else ''} | {rec} | {prec} |")
    grid = [(p, n) for p in PAGE_GRID for n in COUNT_GRID]
    scored = {g: score(readings, doubt.Thresholds(best_word, *g)) for g in grid}
    # Ties go to the more cautious rule (higher page threshold, fewer words): it flags more on unseen pages.
    best = max(grid, key=lambda g: (round(scored[g].f(2, True), 4), round(scored[g].f(1, True), 4), g[0], -g[1]))
    print(
        f"\n| a page needs review when (words below {best_word:g} are uncertain) | pages with errors flagged |"
        " flagged pages with errors |"
    )
    print("| --- | ---: | ---: |")
    rows = [(f"page confidence < {p:g}", doubt.Thresholds(best_word, p, 10**6)) for p in PAGE_GRID]
    rows += [(f"≥ {n} uncertain word{'s' if n > 1 else ''}", doubt.Thresholds(best_word, 0, n)) for n in COUNT_GRID]
    rows.append((f"**confidence < {best[0]:g} or ≥ {best[1]} uncertain (chosen)**", doubt.Thresholds(best_word, *best)))
    for label, t in rows:
        _, _, found, right = score(readings, t).row()
        print(f"| {label} | {found} | {right} |")
    print("| baseline: handwatch before doubt | 0% | – |")
    chosen = doubt.Thresholds(best_word, *best)
    print(
        f"\nChosen: words below {best_word:g} (best F1); pages by the best F2 (recall weighted twice) over "
        f"confidence {'/'.join(map(str, PAGE_GRID))} × count {'/'.join(map(str, COUNT_GRID))}."
    )
    return chosen


# --- 1. Tesseract -------------------------------------------------------------------------------


def _tesseract(spec) -> Reading:
    from handwatch.transcribe.tesseract import TesseractEngine

    prepared = preprocess.prepare(render(spec), preprocess.for_engine(Preprocess(), "tesseract"), photo=True)
    page = TesseractEngine().transcribe_page(prepared, Rule())
    return Reading(" ".join(spec[0]), page.text, page.words or [])


# --- 2. A VLM, simulated or real -----------------------------------------------------------------

LOOKALIKE = {
    "a": "o",
    "o": "a",
    "e": "c",
    "c": "e",
    "n": "r",
    "r": "n",
    "u": "v",
    "v": "u",
    "i": "l",
    "l": "i",
    "m": "n",
    "h": "b",
    "b": "h",
    "t": "f",
    "f": "t",
    "g": "q",
    "y": "g",
    "s": "e",
    "d": "cl",
    "w": "vv",
}
ERROR_RATE = {"clean": 0.02, "blur": 0.05, "noisy, faint": 0.08}  # share of words a VLM misreads, by damage
CONFIDENT_SHARE = (0.0, 0.3, 0.6)  # share of errors the model is sure of (hallucination-like)


def misread(word: str, rng: random.Random) -> str:
    """A plausible misreading: one or two letters swapped for ones that look alike in handwriting."""
    chars = list(word)
    spots = [i for i, c in enumerate(chars) if c.lower() in LOOKALIKE] or [0]
    for i in rng.sample(spots, min(len(spots), rng.choice((1, 1, 2)))):
        sub = LOOKALIKE.get(chars[i].lower(), "x")
        chars[i] = sub.upper() if chars[i].isupper() else sub
    out = "".join(chars)
    return out if out != word else word + "e"


def simulate(truth_lines: list[str], damage: str, confident: float, rng: random.Random) -> tuple[str, list]:
    """What the scripted server replays: the page's text with some words misread, and a log-probability
    per token. The model of a VLM's doubt (an assumption, stated, not a measurement):
    - a word is misread with ERROR_RATE[damage];
    - a word read right is sure (p = 0.97–1) but 6% of the time hesitant (p = 0.4–0.95): ambiguous
      writing the model resolved correctly;
    - a misread word is torn (p = 0.1–0.7) — except a `confident` share that is sure of the wrong
      reading (p = 0.9–1), as VLMs are of text their language model prefers;
    - the word's doubt sits on its first token; later tokens of the word and spaces are near-certain."""
    pieces: list[tuple[str, float]] = []
    text_lines = []
    for line in truth_lines:
        out_words = []
        for k, word in enumerate(line.split(" ")):
            core = word.rstrip(".,;:!?")
            tail = word[len(core) :]
            if core and any(ch.isalpha() for ch in core) and rng.random() < ERROR_RATE[damage]:
                core = misread(core, rng)
                p = rng.uniform(0.9, 1.0) if rng.random() < confident else rng.uniform(0.1, 0.7)
            else:
                p = rng.uniform(0.4, 0.95) if rng.random() < 0.06 else rng.uniform(0.97, 1.0)
            lead = " " if k else ""
            chunks = [core[i : i + 4] for i in range(0, len(core), 4)] or [""]
            pieces.append((lead + chunks[0], math.log(p)))
            pieces += [(c, math.log(0.999)) for c in chunks[1:]]
            if tail:
                pieces.append((tail, math.log(0.999)))
            out_words.append(core + tail)
        text_lines.append(" ".join(out_words))
        pieces.append(("\n", math.log(0.999)))
    pieces.pop()
    return "\n".join(text_lines), pieces


def replay(confident: float, seed: int = 7) -> list[Reading]:
    """Each simulated reply goes through the real VLM engine over HTTP: cleaning, token-to-word alignment."""
    from handwatch.transcribe.vlm import VLMEngine
    from tests.support.fakeopenai import FakeOpenAI

    rng = random.Random(seed)
    server = FakeOpenAI().start()
    try:
        engine = VLMEngine([Endpoint(url=server.url, model="simulated-vlm")])
        out = []
        opts = preprocess.for_engine(Preprocess(), "vlm")
        for spec in SPECS:
            content, logprobs = simulate(spec[0], spec[3], confident, rng)
            if rng.random() < 0.3:  # some models wrap the page: cleaning must keep the words' doubt
                content = "Here is the transcription:\n```markdown\n" + content + "\n```"
                logprobs = [("Here is the transcription:\n```markdown\n", 0.0)] + logprobs + [("\n```", 0.0)]
            server.reply({"content": content, "logprobs": logprobs})
            page = engine.transcribe_page(preprocess.prepare(render(spec), opts, photo=True), Rule())
            out.append(Reading(" ".join(spec[0]), page.text, page.words or []))
        return out
    finally:
        server.stop()


def live(url: str, model: str | None) -> list[Reading]:
    from handwatch.transcribe.vlm import VLMEngine

    engine = VLMEngine([Endpoint(url=url, model=model, confidence="on", allow_remote=True, timeout_s=600)])
    opts = preprocess.for_engine(Preprocess(), "vlm")
    out = []
    for spec in SPECS:
        page = engine.transcribe_page(preprocess.prepare(render(spec), opts, photo=True), Rule())
        out.append(Reading(" ".join(spec[0]), page.text, page.words or []))
    return out


def main() -> None:
    import multiprocessing as mp

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoint", help="a real OpenAI-compatible server to measure instead of the scripted replay")
    ap.add_argument("--model")
    args = ap.parse_args()
    if args.endpoint:
        table(f"VLM {args.model or ''} at {args.endpoint}", live(args.endpoint, args.model))
        return
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # one Tesseract per core
    with mp.get_context("fork").Pool(os.cpu_count()) as pool:
        tess = pool.map(_tesseract, SPECS)
    import pytesseract

    print(
        f"{len(SPECS)} pages: {len(PAGES)} texts × {len(FONTS)} font/size × {len(DAMAGE)} damage "
        f"({', '.join(DAMAGE)}); words compared case-folded, punctuation aside."
    )
    chosen = table(f"Tesseract {pytesseract.get_tesseract_version()} (its own word confidences)", tess)
    print(f"\nTesseract defaults in handwatch: {doubt.DEFAULTS['tesseract']}; this run's choice: {chosen}")
    for confident in CONFIDENT_SHARE:
        chosen = table(f"Scripted VLM replay, {confident:.0%} of errors confident", replay(confident))
    print(f"\nVLM defaults in handwatch: {doubt.DEFAULTS['vlm']}")


if __name__ == "__main__":
    main()
