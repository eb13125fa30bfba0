"""Pure: two readings of the same page, aligned word by word, as one text with its doubt.

The first reading is the text's frame: every word of it stays, and nothing only the second has is added (a
reading that leaves words out can never erase them). Where the two read one word each differently, the
second's word is written when it is itself more certain of it than the first (it must give probabilities).
Such a word is disputed unless the probabilities settle it (the written word's combined probability at least
SETTLED); a word only one reading has always is. A disputed word carries what the other reading has there
(`Word.other`, "" for nothing, cut at OTHER_MAX characters) and is always doubted. Words both read alike are
more certain than either alone: taking the two readers' errors as independent, the chance both are wrong is the
product of their chances.

A reading without log-probabilities (LM Studio gives none) counts each of its words as right with probability
`PRIOR`: two such readers agreeing make a word 0.94, disagreeing 0.5, which no probability settles — so
disagreement is then the doubt signal, and the first reading's word is written."""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from handwatch.transcribe.doubt import Word, spans

PRIOR = 0.75  # a word's chance of being right when its reader gave no probabilities
MIN_AGREEMENT = 0.3  # readings sharing fewer of their words are not two readings of one text (another language …)
MAX_WORDS = 1000  # a handwritten page is a few hundred words; past this, a hostile page could cost seconds (1.4 s)
OTHER_MAX = 60  # characters of the other reading kept on a disputed word
# A word two readers read as different words is disputed unless the written one's combined probability is at least
# this: a sure large model over an unsure small one settles it. Chosen with bench/doubt.py (docs: Benchmarks).
SETTLED = 0.9


@dataclass(frozen=True)
class Reading:
    text: str
    words: Sequence[Word] | None  # None: the engine gave no word probabilities


@dataclass(frozen=True)
class Combined:
    text: str  # the first reading, with the second's word where it was the more certain of a word both read
    words: list[Word]  # its words, agreements made surer, disagreements carrying the other reading
    second_written: int  # words of `text` that are the second reading's
    disputed: int  # words of `text` the other reading has differently
    agreement: float  # the share of the two readings' words that match


def _norm(word: str) -> str:
    """Words compare as a reader would: the same letters in any case, ligatures and widths folded."""
    return unicodedata.normalize("NFKC", word).casefold()


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


def _cut(text: str) -> str:
    return text if len(text) <= OTHER_MAX else text[: OTHER_MAX - 1].rstrip() + "…"


def combine(first: Reading, second: Reading) -> Combined | None:
    """The two readings as one, or None when they are too long to align or share too few words to be readings
    of the same text (the second answered in another language, or read another page): then the first stands."""
    f_spans, s_spans = spans(first.text), spans(second.text)
    f_words = [_norm(first.text[a:b]) for a, b in f_spans]
    s_words = [_norm(second.text[a:b]) for a, b in s_spans]
    if not f_words or not s_words or max(len(f_words), len(s_words)) > MAX_WORDS:
        return None
    matcher = difflib.SequenceMatcher(None, f_words, s_words, autojunk=False)
    if matcher.real_quick_ratio() < MIN_AGREEMENT or matcher.quick_ratio() < MIN_AGREEMENT:  # bounds, in linear time
        return None
    agreement = matcher.ratio()
    if agreement < MIN_AGREEMENT:
        return None
    pf, ps = _probs(first, f_spans), _probs(second, s_spans)
    # Per word of the first reading: (its probability, the other reading there or None, the second's word to write)
    verdict: list[tuple[float, str | None, str | None]] = [(p, None, None) for p in pf]

    def phrase(j1: int, j2: int) -> str:
        return _cut(second.text[s_spans[j1][0] : s_spans[j2 - 1][1]]) if j2 > j1 else ""

    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            for k in range(i2 - i1):
                if verdict[i1 + k][1] is None:  # an insertion before the text's first word may have marked it
                    verdict[i1 + k] = (_both_wrong(pf[i1 + k], ps[j1 + k]), None, None)
        elif op == "replace" and i2 - i1 == j2 - j1:  # word for word: the more certain reader's word is written
            for k in range(i2 - i1):
                i, j = i1 + k, j1 + k
                mine, theirs = first.text[slice(*f_spans[i])], second.text[slice(*s_spans[j])]
                if second.words is not None and ps[j] > pf[i]:  # only a reader that says how sure it is
                    p, other, write = _one_right(ps[j], pf[i]), _cut(mine), theirs
                else:
                    p, other, write = _one_right(pf[i], ps[j]), _cut(theirs), None
                verdict[i] = (p, other if p < SETTLED else None, write)  # a dispute the probabilities settle is none
        elif op in ("replace", "delete"):  # a run read as another run, or words the second has not: the first stays
            other = phrase(j1, j2)
            q = sum(ps[j1:j2]) / (j2 - j1) if j2 > j1 else PRIOR
            for i in range(i1, i2):
                verdict[i] = (_one_right(pf[i], q), other, None)
        else:  # insert: words only the second has, shown on the written word before them (or after)
            at = i1 - 1 if i1 > 0 else i1
            if at >= len(f_spans):
                continue
            mine = first.text[slice(*f_spans[at])]
            other = _cut(f"{mine} {phrase(j1, j2)}" if at < i1 else f"{phrase(j1, j2)} {mine}")
            verdict[at] = (min(verdict[at][0], _one_right(pf[at], PRIOR)), other, None)
    out, words, pos, shift = [], [], 0, 0
    for (a, b), (p, disputed, write) in zip(f_spans, verdict, strict=True):
        out.append(first.text[pos:a])
        word = write if write is not None else first.text[a:b]
        out.append(word)
        words.append(Word(a + shift, a + shift + len(word), p, disputed))
        shift += len(word) - (b - a)
        pos = b
    out.append(first.text[pos:])
    written = sum(v[2] is not None for v in verdict)
    return Combined("".join(out), words, written, sum(w.other is not None for w in words), round(agreement, 3))
