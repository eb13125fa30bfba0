"""`markdown.doubt_pieces`: a Markdown body's doubtful words, each with its other reading from the front matter's
`other_readings`. The file is a person's (anything in a watched folder is untrusted): entries that match nothing
are passed over only within `LOOK_AHEAD` of where the last match left off, so a planted list costs little and
changes nothing of the text."""

from __future__ import annotations

from handwatch.publish import markdown
from handwatch.publish.markdown import doubt_pieces


def doubtful(body: str, others) -> list[tuple[str, str | None]]:
    return [(piece, other) for piece, d, other in doubt_pieces(body, others) if d]


def entry(word: str, other: str) -> dict:
    return {"page": 1, "word": word, "other": other}


def test_an_entry_is_found_past_others_a_person_left_behind_within_the_look_ahead():
    """A person removed the marks of some words: their entries are skipped over."""
    others = [entry("a", "1"), entry("b", "2"), entry("c", "3")]
    assert doubtful("==a== b ==c==", others) == [("a", "1"), ("c", "3")]
    skipped = [entry("b", "x")] * (markdown.LOOK_AHEAD - 1)
    assert doubtful("==a== ==c==", [entry("a", "1"), *skipped, entry("c", "3")]) == [("a", "1"), ("c", "3")]


def test_an_entry_further_than_the_look_ahead_is_not_matched():
    """Counted from the entry after the last match: LOOK_AHEAD entries in between are too many."""
    assert doubtful("==a==", [*[entry("b", "x")] * 1000, entry("a", "found")]) == [("a", None)]
    n = markdown.LOOK_AHEAD
    assert doubtful("==a==", [*[entry("b", "x")] * n, entry("a", "found")]) == [("a", None)]
    assert doubtful("==a== ==c==", [entry("a", "1"), *[entry("b", "x")] * n, entry("c", "3")]) == [("a", "1"), ("c", None)]


def test_a_word_with_no_entry_does_not_move_the_look_ahead_on():
    assert doubtful("==z== ==a==", [entry("a", "1")]) == [("z", None), ("a", "1")]


def test_many_entries_that_match_nothing_leave_the_text_and_its_marks_as_they_are():
    """A planted front matter: thousands of entries for no word of the body, then one for each doubtful word.
    Every doubtful word is still one piece, the text between them untouched, and no entry that far on is taken."""
    marked = [f"w{i}" for i in range(300)]
    body = " and ".join(f"==a{w}==" for w in marked) + "."
    others = [entry("nothing", "x")] * 20_000 + [entry(f"a{w}", "late") for w in marked]
    pieces = doubt_pieces(body, others)
    assert "".join(p for p, _, _ in pieces) == body.replace("==", "")
    assert [(p, o) for p, d, o in pieces if d] == [(f"a{w}", None) for w in marked]
    assert [p for p, d, _ in pieces if not d] == [" and "] * 299 + ["."]
    assert markdown.doubt_spans(body) == [(p, d) for p, d, _ in pieces]
