"""Pure: two readings of the same page, aligned word by word, as one text with its doubt.

The second reading (`second_opinion`) is written when it is itself more certain than the first (both readings
have word probabilities and its mean is higher); otherwise the first stands. Every word of the written text that
the other reading has differently carries that other reading (`Word.other`, "" for nothing): such a word is always
doubted. Words both read alike are more certain than either alone: taking the two readers' errors as independent,
the chance both are wrong is the product of their chances.

A reading without log-probabilities (LM Studio gives none) counts each of its words as right with probability
`PRIOR`: two such readers agreeing make a word 0.94, disagreeing 0.5 — disagreement is then the doubt signal."""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from handwatch.transcribe.doubt import MAX_ALIGN_WORDS, Word, spans

PRIOR = 0.75  # a word's chance of being right when its reader gave no probabilities
MIN_AGREEMENT = 0.3  # readings sharing fewer of their words are not two readings of one text (another language …)


@dataclass(frozen=True)
class Reading:
    text: str
    words: Sequence[Word] | None  # None: the engine gave no word probabilities


@dataclass(frozen=True)
class Combined:
    text: str  # the text written: the first reading's, or the second's when that is more certain
    words: list[Word]  # its words, agreements made surer, disagreements carrying the other reading
    second_written: bool  # the text is the second reading's
    disputed: int  # words of `text` the other reading has differently
    agreement: float  # the share of the two readings' words that match


def _norm(word: str) -> str:
    """Words compare as a reader would: the same letters in any case, ligatures and widths folded."""
    return unicodedata.normalize("NFKC", word).casefold()


def _mean(words: Sequence[Word] | None) -> float | None:
    return sum(w.p for w in words) / len(words) if words else None


def more_certain(second: Reading, first: Reading) -> bool:
    """The second reading is written only when both gave probabilities and its mean is higher."""
    a, b = _mean(second.words), _mean(first.words)
    return a is not None and b is not None and a > b


def _probs(r: Reading, where: list[tuple[int, int]]) -> list[float]:
    if r.words is None:
        return [PRIOR] * len(where)
    by_span = {(w.start, w.end): w.p for w in r.words}
    return [by_span.get(s, PRIOR) for s in where]


def _both_wrong(p: float, q: float) -> float:
    """A word both readers read alike is wrong only if both are: right with 1 - (1-p)(1-q)."""
    return 1.0 - (1.0 - p) * (1.0 - q)


def _one_right(p: float, q: float) -> float:
    """Two readers disagree, so at most one is right: the written one's share of the chance that one is."""
    a, b = p * (1.0 - q), q * (1.0 - p)
    return a / (a + b) if a + b > 0 else 0.5


def combine(first: Reading, second: Reading) -> Combined | None:
    """The two readings as one, or None when they share too few words to be readings of the same text (the
    second answered in another language, or read another page): then the first stands, in doubt."""
    base, alt = (second, first) if more_certain(second, first) else (first, second)
    b_spans, a_spans = spans(base.text), spans(alt.text)
    b_words = [_norm(base.text[s:e]) for s, e in b_spans]
    a_words = [_norm(alt.text[s:e]) for s, e in a_spans]
    if not b_words or not a_words or max(len(b_words), len(a_words)) > MAX_ALIGN_WORDS:
        return None
    matcher = difflib.SequenceMatcher(None, b_words, a_words, autojunk=False)
    agreement = 2.0 * sum(b.size for b in matcher.get_matching_blocks()) / (len(b_words) + len(a_words))
    if agreement < MIN_AGREEMENT:
        return None
    pb, pa = _probs(base, b_spans), _probs(alt, a_spans)
    words: list[Word | None] = [None] * len(b_spans)

    def phrase(j1: int, j2: int) -> str:
        return alt.text[a_spans[j1][0] : a_spans[j2 - 1][1]] if j2 > j1 else ""

    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            for k in range(i2 - i1):
                if words[i1 + k] is None:  # an insertion before the text's first word may have marked it
                    words[i1 + k] = Word(*b_spans[i1 + k], _both_wrong(pb[i1 + k], pa[j1 + k]))
        elif op == "replace" and i2 - i1 == j2 - j1:  # word for word
            for k in range(i2 - i1):
                other = alt.text[slice(*a_spans[j1 + k])]
                words[i1 + k] = Word(*b_spans[i1 + k], _one_right(pb[i1 + k], pa[j1 + k]), other)
        elif op in ("replace", "delete"):  # a run read as another run, or words the other reading has not
            other = phrase(j1, j2)
            q = sum(pa[j1:j2]) / (j2 - j1) if j2 > j1 else PRIOR
            for i in range(i1, i2):
                words[i] = Word(*b_spans[i], _one_right(pb[i], q), other)
        else:  # insert: words only the other reading has, shown on the written word before them (or after)
            at = i1 - 1 if i1 > 0 else i1
            if at >= len(b_spans):
                continue
            mine = base.text[slice(*b_spans[at])]
            other = f"{mine} {phrase(j1, j2)}" if at < i1 else f"{phrase(j1, j2)} {mine}"
            p = words[at].p if words[at] is not None else pb[at]  # type: ignore[union-attr]
            words[at] = Word(*b_spans[at], min(p, _one_right(pb[at], PRIOR)), other)
    done = [w if w is not None else Word(*b_spans[i], pb[i]) for i, w in enumerate(words)]
    return Combined(base.text, done, base is second, sum(w.other is not None for w in done), round(agreement, 3))
