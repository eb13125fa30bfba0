"""Does doubt point at the errors? Generated handwriting-font pages with known text, read by

  1. the real Tesseract engine (its own word confidences), and
  2. the VLM engine over real HTTP against the scripted server replaying log-probabilities from a
     stated model of a VLM's errors (see `simulate`), or, with --endpoint, a real model server;
  3. two readers (issue #26): a small and a large simulated VLM, each its own scripted server, the
     second reading the pages the first leaves in doubt as the daemon's `second_opinion` does
     (`second.due`, `second._combined`, `agree.combine`), with and without log-probabilities.

Of the words that are wrong, what share was marked (recall); of the marked words, what share was
wrong (precision); and of the pages with any error, what share was flagged needs_review (and the
reverse); with two readers also the requests per page. Baseline: handwatch before doubt, which
marked nothing and flagged no page for this; for two readers, one reader.

    python -m bench.doubt                      # all three, ~4 minutes on 2 cores
    python -m bench.doubt --two-readers        # only 3, under a minute (--confident 0 / 0.6: another share)
    python -m bench.doubt --endpoint http://gpubox:8000/v1 --model Qwen/Qwen2.5-VL-7B-Instruct
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import math
import os
import random
from dataclasses import dataclass, field, replace
from typing import Literal

from bench import gen
from bench.legibility import PAGES
from handwatch.config.endpoint import Endpoint
from handwatch.config.preprocess import Preprocess
from handwatch.config.schema import Rule, SecondOpinion
from handwatch.prepare import preprocess
from handwatch.transcribe import agree, doubt

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


def simulate(
    truth_lines: list[str],
    damage: str,
    confident: float,
    rng: random.Random,
    rates: dict[str, float] = ERROR_RATE,
    hesitant: float = 0.06,
) -> tuple[str, list]:
    """What the scripted server replays: the page's text with some words misread, and a log-probability
    per token. The model of a VLM's doubt (an assumption, stated, not a measurement):
    - a word is misread with `rates[damage]` (ERROR_RATE);
    - a word read right is sure (p = 0.97–1) but a `hesitant` share (6%) of the time unsure (p = 0.4–0.95):
      ambiguous writing the model resolved correctly;
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
            if core and any(ch.isalpha() for ch in core) and rng.random() < rates[damage]:
                core = misread(core, rng)
                p = rng.uniform(0.9, 1.0) if rng.random() < confident else rng.uniform(0.1, 0.7)
            else:
                p = rng.uniform(0.4, 0.95) if rng.random() < hesitant else rng.uniform(0.97, 1.0)
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


def scripted(spec, confident: float, rng: random.Random, rates: dict[str, float] = ERROR_RATE, hesitant: float = 0.06) -> dict:
    """The scripted server's reply to one page: `simulate`'s text and log-probabilities, 30% of them wrapped."""
    content, logprobs = simulate(spec[0], spec[3], confident, rng, rates, hesitant)
    if rng.random() < 0.3:  # some models wrap the page: cleaning must keep the words' doubt
        content = "Here is the transcription:\n```markdown\n" + content + "\n```"
        logprobs = [("Here is the transcription:\n```markdown\n", 0.0)] + logprobs + [("\n```", 0.0)]
    return {"content": content, "logprobs": logprobs}


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
            server.reply(scripted(spec, confident, rng))
            page = engine.transcribe_page(preprocess.prepare(render(spec), opts, photo=True), Rule())
            out.append(Reading(" ".join(spec[0]), page.text, page.words or []))
        return out
    finally:
        server.stop()


# --- 3. Two readers (issue #26) ------------------------------------------------------------------


@dataclass(frozen=True)
class Reader:
    """A simulated VLM for `simulate`: how often it misreads a word, by damage, and how often it is unsure of a
    word it reads right. Its errors are its own (its own random stream): the two readers err independently."""

    name: str
    rates: dict[str, float]
    hesitant: float
    seed: int


# The small reader is the one-reader replay's model with its seed: its readings are that table's at 30% confident.
# The large one misreads half as often and hesitates half as often. Both are sure of 30% of their errors.
SMALL = Reader("small", ERROR_RATE, 0.06, 7)
LARGE = Reader("large", {k: v / 2 for k, v in ERROR_RATE.items()}, 0.03, 11)
BOTH_CONFIDENT = 0.3


def read_twice(specs=SPECS, confident: float = BOTH_CONFIDENT) -> tuple[list[str], dict[tuple[str, bool], list]]:
    """Every page read by both readers, each from a scripted server that sends log-probabilities and from one
    that ignores the request (as LM Studio does), through the real VLM engine over HTTP. Both readers' replies
    are made for every page, so what a policy asks for does not change what either reader says."""
    from handwatch.transcribe.vlm import VLMEngine
    from tests.support.fakeopenai import FakeOpenAI

    servers, engines = {}, {}
    try:
        for r in (SMALL, LARGE):
            for lp in (True, False):
                fake = FakeOpenAI(models=(f"{r.name}-vlm",)).start()
                fake.logprobs_mode = "honour" if lp else "ignore"
                servers[r.name, lp] = fake
                engines[r.name, lp] = VLMEngine([Endpoint(url=fake.url, model=f"{r.name}-vlm", name=r.name)])
        rngs = {r.name: random.Random(r.seed) for r in (SMALL, LARGE)}
        read: dict[tuple[str, bool], list] = {k: [] for k in engines}
        opts = preprocess.for_engine(Preprocess(), "vlm")
        for spec in specs:
            image = preprocess.prepare(render(spec), opts, photo=True)
            for r in (SMALL, LARGE):
                item = scripted(spec, confident, rngs[r.name], r.rates, r.hesitant)
                for lp in (True, False):
                    servers[r.name, lp].reply(item)
                    read[r.name, lp].append(engines[r.name, lp].transcribe_page(image, Rule()))
    finally:
        for fake in servers.values():
            fake.stop()
    return [" ".join(spec[0]) for spec in specs], read


@dataclass
class Tally(Score):
    """A `Score` of the text written (wrong: its wrong words, tp: of them marked, err_pages: pages with a wrong or
    missing word, flagged: pages needs_review, which still need a person), and what two readers cost and did."""

    requests: int = 0
    # Why: the pages not read again and the wrong words they keep; the second reading written; marked words that
    # the two readings dispute, right and wrong.
    unread: int = 0
    unread_wrong: int = 0
    second_written: int = 0
    disputed_right: int = 0
    disputed_wrong: int = 0
    # Every word of the text: (the probability the merge gave it, whether the readings dispute it, whether it is wrong).
    scored: list[tuple[float, bool, bool]] = field(default_factory=list)

    def add(self, truth: str, text: str, words: list | None, marks, flagged: bool, read_again: bool) -> None:
        wrong, missed = wrong_words(truth, text)
        marked = set(marks)
        err = bool(wrong or missed)
        self.pages += 1
        self.wrong += len(wrong)
        self.tp += len(marked & wrong)
        self.marked += len(marked)
        self.err_pages += err
        self.flagged += flagged
        self.flagged_err += flagged and err
        self.requests += 1 + read_again
        self.unread += not read_again
        self.unread_wrong += 0 if read_again else len(wrong)
        disputed = {(w[0], w[1]) for w in words or () if len(w) > 3} & marked
        spans = {(w[0], w[1]): (w[2], len(w) > 3) for w in words or ()}
        self.scored += [(*spans.get(s, (1.0, False)), s in wrong) for s in doubt.spans(text)]
        self.disputed_wrong += len(disputed & wrong)
        self.disputed_right += len(disputed - wrong)

    @property
    def recall(self) -> float:
        return self.tp / self.wrong if self.wrong else 1.0

    @property
    def precision(self) -> float:
        return self.tp / self.marked if self.marked else 1.0


def policy(
    truths: list[str],
    first: list,
    again: list | None,
    when: Literal["needs_review", "always"] = "needs_review",
    settled: float | None = None,
) -> Tally:
    """What the daemon writes for each page: the first reading as `engine.joined` stores it; with a second
    reader, the pages `second.due` picks read again and combined by `second._combined`; then `Pipeline._trust`
    judges doubt (marks, needs_review) from the stored text as the published Markdown would have it.
    `settled`: another `agree.SETTLED` tried, in place of handwatch's."""
    from unittest import mock

    from handwatch.service import second
    from handwatch.service.pipeline import Pipeline
    from handwatch.transcribe.engine import joined

    rule = Rule(second_opinion=SecondOpinion(endpoint=LARGE.name, when=when)) if again is not None else Rule()
    tally = Tally()
    with contextlib.ExitStack() as trial:
        if settled is not None:
            trial.enter_context(mock.patch.object(agree, "SETTLED", settled))
        for k, page in enumerate(first):
            out = joined([page], rule, None)  # type: ignore[arg-type]  # the engine only translates; no rule here does
            which = second.due(out, rule) if again is not None else []
            out = {**out, "pages": list(out["pages"]), "words": list(out["words"])}
            done = {"endpoint": LARGE.name, "model": "", "read": [i + 1 for i in which], "written": [], "disputed": 0}
            for i in which:  # as second.read does, less the image's ink measures (no check here uses them)
                assert again is not None
                reply = again[k]
                extra = doubt.page_reasons(reply.text, None, rule.languages, reply.extra.get("detected_languages"))
                out = second._combined(out, i, replace(reply, review_reasons=reply.review_reasons + extra), LARGE.name, done)
            trust = Pipeline._trust(out, rule, {})
            marks = trust["marks"][0] if trust["marks"] else ()
            tally.add(truths[k], out["pages"][0], out["words"][0], marks, trust["needs_review"], bool(which))
            tally.second_written += bool(done["written"])
    return tally


def ceiling(t: Tally) -> tuple[float, float, int, int]:
    """What any rule that marks words by the signals two readings carry could reach on this text: words ranked by
    the merge's probability, disputed words first (or disputes ranked among the rest by probability: whichever
    does better), every cut tried, the best chosen knowing the answers. (the best precision at a recall of at
    least 90%, the best recall at a precision of at least 50%, and the words with neither signal — agreed on or
    read once, at p ≥ 0.9 —, wrong and right: a rule can tell those apart by nothing the readings say)."""
    best_p, best_r = 0.0, 0.0
    wrong = sum(w for _, _, w in t.scored)
    for key in (lambda s: (not s[1], s[0]), lambda s: s[0]):
        tp = marked = 0
        for _, _, is_wrong in sorted(t.scored, key=key):
            marked += 1
            tp += is_wrong
            r, p = tp / max(wrong, 1), tp / marked
            best_p = max(best_p, p) if r >= 0.9 else best_p
            best_r = max(best_r, r) if p >= 0.5 else best_r
    silent = [w for p, d, w in t.scored if not d and p >= 0.9]
    return best_p, best_r, sum(silent), len(silent) - sum(silent)


def _rows(cases: dict[str, Tally]) -> None:
    def pct(a: int, b: int) -> str:
        return f"{a / b:.0%}" if b else "–"

    print(
        "| case | wrong words in the text | wrong words marked (recall) | marked words wrong (precision) "
        "| wrong words left unmarked | pages with an error | pages flagged: still need a person "
        "| flagged pages with an error | pages with an error not flagged | requests per page |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, t in cases.items():
        print(
            f"| {label} | {t.wrong} | {pct(t.tp, t.wrong)} | {pct(t.tp, t.marked)} | {t.wrong - t.tp} | {t.err_pages} "
            f"| {t.flagged} | {pct(t.flagged_err, t.flagged)} | {t.err_pages - t.flagged_err} | {t.requests / t.pages:.2f} |"
        )


def two_table(truths: list[str], read: dict[tuple[str, bool], list], confident: float = BOTH_CONFIDENT) -> dict[str, Tally]:
    """The two-reader table, the changes tried, and whether the targets of issue #26 are met."""
    s, b = SMALL.name, LARGE.name
    one = f"one reader ({s}), with log-probabilities"
    cases: dict[str, Tally] = {
        one: policy(truths, read[s, True], None),
        f"one reader ({s}), without": policy(truths, read[s, False], None),
        f"one reader ({b}) on every page, with, for reference": policy(truths, read[b, True], None),
        "**two readers, with log-probabilities**": policy(truths, read[s, True], read[b, True]),
        "two readers, with, `when: always`": policy(truths, read[s, True], read[b, True], "always"),
        "**two readers, without**": policy(truths, read[s, False], read[b, False]),
        "two readers, without, `when: always`": policy(truths, read[s, False], read[b, False], "always"),
    }
    print(
        f"\n### Two readers (issue #26): {len(truths)} pages, the first read by a {s} model, the pages it leaves in "
        f"doubt by a {b} one\n\nBoth scripted, {confident:.0%} of either's errors confident; {s}: misreads "
        f"{'/'.join(f'{v:.0%}' for v in SMALL.rates.values())} of the words by damage and is unsure of "
        f"{SMALL.hesitant:.0%} of the right ones (the one-reader replay); {b}: "
        f"{'/'.join(f'{v:.1%}' for v in LARGE.rates.values())} and {LARGE.hesitant:.0%}. *Without*: the servers "
        "ignore `logprobs` (LM Studio). Text, marks and needs_review as the published Markdown has them, under "
        f"the VLM defaults ({doubt.DEFAULTS['vlm']}); **bold**: `second_opinion`'s default, `when: needs_review`.\n"
    )
    _rows(cases)
    d = cases["**two readers, with log-probabilities**"]
    print(
        f"\nWith log-probabilities, the {s} reader left {d.pages - d.unread} pages in doubt and the {b} reading was "
        f"written (whole or in part) on {d.second_written} of them; the {d.unread} pages not read again keep {d.unread_wrong} of the "
        f"text's {d.wrong} wrong words. Of the marks on words the readings dispute, {d.disputed_wrong} are on wrong "
        f"words and {d.disputed_right} on right ones."
    )
    tried: dict[str, Tally] = {}
    policies: tuple[tuple[Literal["needs_review", "always"], str], ...] = (("needs_review", ""), ("always", ", `when: always`"))
    for when, said in policies:
        for settled in (0.8, 0.95, 1.01):
            name = "every dispute marked" if settled > 1 else f"a dispute settled from p = {settled:g}"
            tried[f"{name}{said}"] = policy(truths, read[s, True], read[b, True], when, settled)
    print(f"\nOther thresholds tried in the bench only (handwatch's `agree.SETTLED` is {agree.SETTLED:g}):\n")
    _rows(tried)
    base = cases[one]
    print(
        f"\nTargets with two readers: recall ≥ 90% at precision ≥ 50%, and flagged pages ≤ half of one reader's "
        f"({base.flagged} → ≤ {base.flagged // 2}), with no more pages with an error left unflagged than one "
        f"reader's {base.err_pages - base.flagged_err}:"
    )
    print(
        "\nThe ceiling: the best any rule marking words by these signals (the merge's probability, and whether the "
        "readings dispute a word) could do on this text, each cut tried and the best chosen knowing the answers:\n\n"
        "| case | wrong words | best precision at recall ≥ 90% | best recall at precision ≥ 50% "
        "| words with no signal (agreed on or read once, p ≥ 0.9): wrong | right |\n| --- | ---: | ---: | ---: | ---: | ---: |"
    )
    for label, t in cases.items():
        if "two readers" in label:
            best_p, best_r, silent, alike = ceiling(t)
            print(f"| {label} | {t.wrong} | {best_p:.0%} | {best_r:.0%} | {silent} | {alike} |")
    print()
    for label, t in {**cases, **tried}.items():
        if label.startswith("one reader"):
            continue
        words = t.recall >= 0.9 and t.precision >= 0.5
        missed = t.err_pages - t.flagged_err
        pages = t.flagged <= base.flagged / 2 and missed <= base.err_pages - base.flagged_err
        precision = f"{t.tp / t.marked:.0%}" if t.marked else "–"
        print(
            f"- {label.replace('**', '')}: words {'met' if words else 'not met'} ({t.recall:.0%} at {precision}), "
            f"pages {'met' if pages else 'not met'} ({t.flagged} flagged, {missed} with an error not)"
        )
    return {**cases, **tried}


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
    ap.add_argument("--two-readers", action="store_true", help="only the two-reader tables (issue #26), under a minute")
    ap.add_argument(
        "--confident",
        type=float,
        default=BOTH_CONFIDENT,
        help="with --two-readers: the share of either reader's errors it is sure of",
    )
    args = ap.parse_args()
    if args.two_readers:
        two_table(*read_twice(confident=args.confident), args.confident)
        return
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
    two_table(*read_twice())


if __name__ == "__main__":
    main()
