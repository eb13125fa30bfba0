"""Two readings of one page as one text (`transcribe/agree.py`): which text is written, which words are disputed
and what the other reading has there, how sure each word is, and when the two are not readings of one text."""

from __future__ import annotations

import difflib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handwatch.transcribe import agree
from handwatch.transcribe.agree import MIN_AGREEMENT, PRIOR, Reading, combine
from handwatch.transcribe.doubt import Word, spans


def reading(text: str, probs: dict[str, float] | None = None, default: float | None = 0.99) -> Reading:
    """`text` with a probability for each of its words (`probs` by word, else `default`); default None: no
    probabilities at all, as from LM Studio."""
    if default is None:
        return Reading(text, None)
    probs = probs or {}
    return Reading(text, [Word(s, e, probs.get(text[s:e], default)) for s, e in spans(text)])


def by_word(c: agree.Combined) -> dict[str, Word]:
    return {c.text[w.start : w.end]: w for w in c.words}


def test_the_same_reading_twice_disputes_nothing_and_is_surer_than_either():
    first = reading("Buy flour and sugar", {"flour": 0.4})
    second = reading("Buy flour and sugar", {"flour": 0.7})
    c = combine(first, second)
    assert c is not None and c.text == "Buy flour and sugar" and c.disputed == 0 and c.agreement == 1.0
    assert all(w.other is None for w in c.words)
    assert by_word(c)["flour"].p == pytest.approx(1 - 0.6 * 0.3)  # both wrong only if each is
    assert by_word(c)["Buy"].p == pytest.approx(1 - 0.01 * 0.01)


def test_a_word_read_differently_is_disputed_and_carries_the_other_reading():
    c = combine(reading("Call grandma on Sunday", {"grandma": 0.6}), reading("Call grandpa on Sunday", default=0.5))
    assert c is not None and c.text == "Call grandma on Sunday" and not c.second_written  # the first is surer
    assert c.disputed == 1 and c.agreement == 0.75
    disputed = by_word(c)["grandma"]
    assert disputed.other == "grandpa"
    assert disputed.p == pytest.approx(0.6 * 0.5 / (0.6 * 0.5 + 0.5 * 0.4))  # at most one of two disagreeing readers is right
    assert [w.other for w in c.words if c.text[w.start : w.end] != "grandma"] == [None, None, None]


def test_the_second_reading_is_written_when_it_is_more_certain():
    c = combine(reading("Call grandma on Sunday", {"grandma": 0.3}), reading("Call grandpa on Sunday", {"grandpa": 0.6}))
    assert c is not None and c.second_written == 1 and c.text == "Call grandpa on Sunday"
    assert by_word(c)["grandpa"].p == pytest.approx(0.6 * 0.7 / (0.6 * 0.7 + 0.3 * 0.4))  # 0.78: still in dispute
    assert by_word(c)["grandpa"].other == "grandma" and c.disputed == 1


def test_a_dispute_the_probabilities_settle_is_written_and_not_marked():
    """A sure large model over an unsure small one: its word is written, and it is no longer in doubt."""
    c = combine(reading("Call grandma on Sunday", {"grandma": 0.3}), reading("Call grandpa on Sunday"))
    assert c is not None and c.second_written == 1 and c.text == "Call grandpa on Sunday"
    assert by_word(c)["grandpa"].p >= agree.SETTLED and by_word(c)["grandpa"].other is None and c.disputed == 0


def test_a_second_reading_without_probabilities_is_never_written():
    c = combine(reading("Call grandma on Sunday", {"grandma": 0.01}), reading("Call grandpa on Sunday", default=None))
    assert c is not None and not c.second_written and c.text == "Call grandma on Sunday"


def test_readers_without_probabilities_are_sure_where_they_agree_and_in_doubt_where_they_do_not():
    c = combine(reading("Call grandma on Sunday", default=None), reading("Call grandpa on Sunday", default=None))
    assert c is not None and c.text == "Call grandma on Sunday"
    words = by_word(c)
    assert words["Call"].p == pytest.approx(1 - (1 - PRIOR) ** 2) and words["Call"].p > 0.9
    assert words["grandma"].p == pytest.approx(0.5) and words["grandma"].other == "grandpa"


def test_a_reading_that_leaves_words_out_never_erases_them():
    """The first reading is the frame: a surer second reading that drops words only disputes them (a page that
    talks the second model into reading less must not take text out of the Markdown)."""
    c = combine(reading("Buy flour and brown sugar", {"flour": 0.5}), reading("Buy flour and sugar", default=0.99))
    assert c is not None and c.text == "Buy flour and brown sugar" and not c.second_written
    assert c.disputed == 1 and by_word(c)["brown"].other == ""  # the second reading has nothing there
    c = combine(reading("Buy flour and sugar", {"flour": 0.5}), reading("Buy flour and brown sugar", default=0.99))
    assert c is not None and c.text == "Buy flour and sugar"  # nor is anything only the second has added
    assert c.disputed == 1 and by_word(c)["and"].other == "and brown"  # the word before what the other has more


def test_words_only_the_other_reading_has_before_the_first_word_mark_the_first_word():
    c = combine(reading("flour and sugar"), reading("Buy flour and sugar", default=0.5))
    assert c is not None and c.text == "flour and sugar" and c.disputed == 1
    assert by_word(c)["flour"].other == "Buy flour"


def test_case_ligatures_and_widths_are_not_disagreements():
    c = combine(reading("Buy ﬂour and SUGAR"), reading("buy flour and sugar"))
    assert c is not None and c.disputed == 0 and c.agreement == 1.0


@pytest.mark.parametrize(
    "first, second",
    [
        ("Buy flour and sugar", "Купить муку и сахар"),  # another language
        ("Buy flour and sugar today", "Meet Tom at the station"),  # another page
        ("Buy flour and sugar", ""),
        ("", "Buy flour and sugar"),
        ("Buy flour and sugar please", "Bring flour but honey instead"),  # one word each of five shared: 0.2
    ],
)
def test_readings_that_share_too_few_words_are_not_combined(first, second):
    assert combine(reading(first), reading(second)) is None


def test_readings_that_share_just_enough_words_are_combined():
    c = combine(reading("Buy flour and sugar please now"), reading("Bring flour and honey instead later"))
    assert c is not None and c.agreement == pytest.approx(4 / 12, abs=1e-3) and c.agreement >= MIN_AGREEMENT


def test_other_readings_survive_the_text_store():
    c = combine(reading("Buy flour and brown sugar", default=0.6), reading("Buy flower and sugar", default=0.5))
    assert c is not None
    assert [Word.from_json(w.to_json()) for w in c.words] == [Word(w.start, w.end, round(w.p, 4), w.other) for w in c.words]
    assert {w.other for w in c.words} == {None, "flower", ""}


def test_a_run_read_as_a_run_of_another_length_carries_only_the_start_of_it_on_each_word():
    """Each of the 400 words of a run the second reading has as 399 others is disputed; each carried the whole other
    run before (a page's copy on every word: megabytes of front matter and text store)."""
    common = [f"common{i}" for i in range(500)]
    theirs = " ".join(f"second{i}" for i in range(399))
    c = combine(reading(" ".join(common + [f"first{i}" for i in range(400)])), reading(" ".join(common) + " " + theirs))
    assert c is not None and c.disputed == 400
    others = {w.other for w in c.words if w.other is not None}
    assert len(others) == 1
    [other] = others
    assert other.endswith("…") and theirs.startswith(other[:-1]), other[:200]
    assert len(other) <= agree.OTHER_MAX


def test_pages_longer_than_max_words_are_not_aligned():
    """Aligning costs more than linear time: a hostile page of thousands of words took 30-50 s of CPU. Past
    MAX_WORDS words the first reading stands, whatever the second."""
    long_page = " ".join(f"word{i}" for i in range(1500))  # a page a hand does not write
    assert combine(reading(long_page), reading(long_page)) is None
    at_most = " ".join(f"word{i}" for i in range(agree.MAX_WORDS))
    assert combine(reading(at_most), reading(at_most)) is not None
    longer = at_most + " more"
    assert combine(reading(longer), reading(longer)) is None
    assert combine(reading(at_most), reading(longer)) is None


# --- properties over random readings --------------------------------------------------------------

VOCAB = ["buy", "flour", "and", "sugar", "Sugar", "eggs", "milk", "call", "Tom", "on", "sunday", "7:45", "don't"]


@st.composite
def readings(draw) -> Reading:
    words = draw(st.lists(st.sampled_from(VOCAB), min_size=0, max_size=14))
    text = " ".join(words)
    if draw(st.booleans()):
        return Reading(text, None)
    ps = draw(st.lists(st.floats(0.01, 0.999), min_size=len(words), max_size=len(words)))
    return Reading(text, [Word(s, e, p) for (s, e), p in zip(spans(text), ps, strict=True)])


def norm(text: str) -> list[str]:
    return [text[s:e].casefold() for s, e in spans(text)]


def aligned(base: str, alt: str) -> difflib.SequenceMatcher:
    return difflib.SequenceMatcher(None, norm(base), norm(alt), autojunk=False)


@settings(max_examples=300, deadline=None)
@given(readings(), readings())
def test_combining_any_two_readings(first, second):
    c = combine(first, second)
    if not norm(first.text) or not norm(second.text):
        assert c is None
        return
    m = aligned(first.text, second.text)
    shared = 2.0 * sum(b.size for b in m.get_matching_blocks()) / (len(norm(first.text)) + len(norm(second.text)))
    if shared < MIN_AGREEMENT:
        assert c is None, f"readings sharing {shared:.2f} of their words were combined"
        return
    assert c is not None and c.agreement == round(shared, 3)
    assert [(w.start, w.end) for w in c.words] == spans(c.text)  # every word of the text, in order, inside it
    assert len(c.words) == len(spans(first.text)), "the first reading's words are the frame: none lost, none added"
    assert all(0.0 <= w.p <= 1.0 for w in c.words)
    written = [i for i, (a, b) in enumerate(spans(first.text)) if first.text[a:b] != c.text[slice(*spans(c.text)[i])]]
    assert c.second_written == len(written)
    if second.words is None:
        assert c.text == first.text, "a reader that gives no probabilities never overrides the first"
    differ: set[int] = set()  # read as other words, or only in the first
    always: set[int] = set()  # only in the first, or in a run read as a run of another length: no probability settles it
    anchors: set[int] = set()  # the written word beside words only the other reading has
    for op, i1, i2, j1, j2 in m.get_opcodes():
        if op in ("replace", "delete"):
            differ.update(range(i1, i2))
            if op == "delete" or i2 - i1 != j2 - j1:
                always.update(range(i1, i2))
        elif op == "insert":
            anchors.add(max(0, i1 - 1))
    assert set(written) <= differ - always, "a word the readings agree on, or one only the first has, was rewritten"
    disputed = {i for i, w in enumerate(c.words) if w.other is not None}
    assert always <= disputed, "a word only one reading has is not disputed"
    for i in differ - always:  # word for word: disputed exactly when the probabilities do not settle it
        assert (i in disputed) == (c.words[i].p < agree.SETTLED) or i in anchors
    assert disputed <= differ | anchors, "a word both readings have alike is disputed"
    assert c.disputed == len(disputed)
    assert all(len(w.other) <= agree.OTHER_MAX for w in c.words if w.other is not None)


@settings(max_examples=200, deadline=None)
@given(readings())
def test_a_reading_combined_with_itself(r):
    c = combine(r, r)
    if not spans(r.text):
        assert c is None
        return
    assert c is not None and c.text == r.text and c.disputed == 0 and c.agreement == 1.0
    mine = [PRIOR] * len(c.words) if r.words is None else [w.p for w in r.words]
    assert all(w.other is None for w in c.words)
    assert all(w.p >= p for w, p in zip(c.words, mine, strict=True)), "agreeing made a word less certain"
