"""The search index, front matter edits, a person's saved edit and the schema migration, on real files and SQLite."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from handwatch import safefs
from handwatch.errors import OutputConflict
from handwatch.publish import markdown, output
from handwatch.publish.index import SearchIndex, fts_query, terms
from handwatch.store.state import Ledger, StateDB
from tests.support.daemon import write_lock_taken


def doc(source: Path, pages: list[str], **kw) -> markdown.Document:
    return markdown.Document(
        source=source,
        source_sha256="ab" * 32,
        pages=pages,
        profile=kw.pop("profile", "notes"),
        languages=("en",),
        engine="vlm",
        model="m",
        transcribed=datetime(2026, 1, 2, tzinfo=UTC),
        **kw,
    )


def write_md(tmp_path: Path, ledger: Ledger, name: str, pages: list[str], **kw) -> tuple[Path, Path, str]:
    src = tmp_path / f"{name}.jpg"
    src.write_bytes(b"jpeg")
    text = markdown.render(doc(src, pages, **kw))
    target = output.write(tmp_path / f"{name}.md", text, ledger, src, "ab" * 32)
    return src, target, text


def test_front_matter_fields_are_changed_in_place_and_new_ones_appended():
    text = markdown.render(
        doc(
            Path("/x/a.jpg"),
            ["Line one\n==Cardamon== pods"],
            needs_review=True,
            review_reasons=("truncated: cut",),
            extra={"tags": ["recipe"]},
        )
    )
    new = markdown.with_fields(text, {"needs_review": False, "reviewed": "2026-01-03T10:00:00Z"})
    assert "needs_review: false\n" in new and "needs_review: true" not in new
    assert new.index("reviewed: '2026-01-03T10:00:00Z'") < new.index("\n---\n", 4)  # inside the front matter
    assert markdown.fields(new)["tags"] == ["recipe"] and markdown.fields(new)["reviewed"] == "2026-01-03T10:00:00Z"
    assert markdown.body(new) == markdown.body(text) == "Line one\n==Cardamon== pods\n"
    # every line other than the changed one is byte for byte the same
    assert [ln for ln in new.splitlines() if not ln.startswith(("needs_review", "reviewed"))] == [
        ln for ln in text.splitlines() if not ln.startswith("needs_review")
    ]


def test_a_block_style_value_is_replaced_whole():
    text = "---\nsource: a.jpg\nreview_reasons:\n  - one\n  - two\nneeds_review: true\n---\n\nbody\n"
    new = markdown.with_fields(text, {"review_reasons": []})
    assert new == "---\nsource: a.jpg\nreview_reasons: []\nneeds_review: true\n---\n\nbody\n"


def test_body_from_a_textarea_keeps_the_front_matter_and_uses_unix_newlines():
    text = "---\nsource: a.jpg\n---\n\nold\n"
    assert markdown.with_body(text, "new line\r\nsecond\r\n\r\n") == "---\nsource: a.jpg\n---\n\nnew line\nsecond\n"
    assert markdown.with_body("no front matter\n", "x") == "x\n"


def test_doubtful_words_are_cut_out_of_the_text():
    assert markdown.doubt_spans("add ==cardamon== and ==two words== == not ==") == [
        ("add ", False),
        ("cardamon", True),
        (" and ", False),
        ("two words", True),
        (" == not ==", False),
    ]


def test_words_become_a_safe_fts_query():
    assert terms("the recipe with cardamom") == ["recipe", "cardamom"]
    assert terms('"apple pie" OR NEAR(x') == ["apple pie", "near", "x"]
    assert terms("the with") == ["the", "with"]  # only stop words: keep them rather than find nothing
    assert fts_query(['say "hi"']) == '"say ""hi"""'
    assert fts_query(["a", "b"], any_word=True) == '"a" OR "b"'


def test_search_finds_the_recipe_with_cardamom_and_shows_the_line(tmp_path):
    db = StateDB(tmp_path / "state")
    ledger, index = Ledger(db), SearchIndex(db)
    for name, pages, kw in [
        (
            "cake",
            ["# Apfelkuchen\n\n- 500 g Äpfel\n- 2 pods of cardamom, crushed\n- sugar"],
            {"profile": "recipe", "extra": {"title": "Apfelkuchen", "tags": ["recipe"]}},
        ),
        ("note", ["Buy cardamom at the market"], {}),
        ("bread", ["# Bread\n\nflour, water, salt"], {"profile": "recipe", "extra": {"tags": ["recipe"]}}),
    ]:
        src, target, text = write_md(tmp_path, ledger, name, pages, **kw)
        index.update(target, text, src)
    hits = index.search("the recipe with cardamom")
    assert [h.output.name for h in hits] == ["cake.md"]
    assert hits[0].title == "Apfelkuchen"
    assert hits[0].line == [("- 2 pods of ", False), ("cardamom", True), (", crushed", False)]
    assert {h.output.name for h in index.search("cardamoms")} == {"cake.md", "note.md"}  # stemmed
    assert [h.output.name for h in index.search("apfel")] == ["cake.md"]  # Äpfel, typed without the umlaut
    assert {h.output.name for h in index.search("bread cardamom")} == {
        "bread.md",
        "cake.md",
        "note.md",
    }  # any word, when none has all
    assert index.search('"') == [] and index.search("NEAR(") == []  # never an FTS5 syntax error
    assert [h.output.name for h in index.search("cardamom", folders=[tmp_path / "elsewhere"])] == []


def test_refresh_follows_the_ledger_and_files_edited_outside(tmp_path):
    db = StateDB(tmp_path / "state")
    ledger, index = Ledger(db), SearchIndex(db)
    _, a, _ = write_md(tmp_path, ledger, "a", ["first text"])
    _, b, _ = write_md(tmp_path, ledger, "b", ["second text"])
    assert index.refresh() == (2, 0)
    assert index.refresh() == (0, 0)  # nothing changed: nothing read
    a.write_text(a.read_text().replace("first", "zebra"))
    b.unlink()
    assert index.refresh() == (1, 1)
    assert [h.output for h in index.search("zebra")] == [a] and index.search("second") == []
    assert index.rebuild() == (1, 0) and [h.output for h in index.search("zebra")] == [a]


def test_a_saved_edit_is_atomic_recorded_and_never_overwritten(tmp_path):
    db = StateDB(tmp_path / "state")
    ledger = Ledger(db)
    src, target, text = write_md(tmp_path, ledger, "n", ["a ==wrod== here"], needs_review=True)
    sha = safefs.sha256_file(target)
    edited = markdown.with_body(text, "a word here")
    new_sha = output.save_edit(target, edited, ledger, sha)
    assert target.read_text() == edited and safefs.sha256_file(target) == new_sha
    assert ledger.get(target).edited is not None
    assert not [p for p in tmp_path.iterdir() if safefs.is_temp(p.name)]
    # handwatch's next write, even of the very bytes the person saved, is refused
    with pytest.raises(OutputConflict, match="edited since handwatch wrote it"):
        output.write(target, edited, ledger, src, "ab" * 32)
    with pytest.raises(OutputConflict, match="edited since handwatch wrote it"):
        output.write(target, text, ledger, src, "ab" * 32)
    assert target.read_text() == edited
    # a second save against the text as first loaded is refused: someone changed it meanwhile
    with pytest.raises(OutputConflict, match="changed since you opened it"):
        output.save_edit(target, text, ledger, sha)
    assert target.read_text() == edited


def test_a_file_handwatch_did_not_write_cannot_be_saved_through_it(tmp_path):
    ledger = Ledger(StateDB(tmp_path / "state"))
    mine = tmp_path / "mine.md"
    mine.write_text("my notes\n")
    with pytest.raises(OutputConflict, match="not written by handwatch"):
        output.save_edit(mine, "x\n", ledger, safefs.sha256_file(mine))
    assert mine.read_text() == "my notes\n"


def test_an_existing_database_gains_the_new_columns(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    old = sqlite3.connect(state / "state.sqlite3")
    old.executescript("""
        CREATE TABLE jobs(id INTEGER PRIMARY KEY, path BLOB NOT NULL UNIQUE, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, not_before REAL NOT NULL DEFAULT 0,
            lease_until REAL, owner TEXT, reason TEXT, output BLOB, created REAL NOT NULL, updated REAL NOT NULL);
        CREATE TABLE outputs(path BLOB PRIMARY KEY, sha256 TEXT, pending_sha256 TEXT, source BLOB NOT NULL,
            source_sha256 TEXT NOT NULL, written REAL NOT NULL);
        INSERT INTO outputs VALUES(X'2f612e6d64', 'aa', NULL, X'2f612e6a7067', 'bb', 1.0);
    """)
    old.close()
    db = StateDB(state)
    rec = Ledger(db).get(Path("/a.md"))
    assert rec.sha256 == "aa" and rec.edited is None and rec.owns("aa")
    assert "override" in {r[1] for r in db.connect().execute("PRAGMA table_info(jobs)")}
    StateDB(state)  # a second open finds them there


def test_a_person_saving_the_text_unchanged_still_makes_it_theirs(tmp_path):
    """The bytes are exactly what handwatch wrote, so only the ledger's record of the edit protects them."""
    db = StateDB(tmp_path / "state")
    ledger = Ledger(db)
    src, target, text = write_md(tmp_path, ledger, "n", ["kept as it is"])
    output.save_edit(target, text, ledger, safefs.sha256_file(target))
    with pytest.raises(OutputConflict, match="edited since handwatch wrote it"):
        output.write(target, text.replace("kept", "replaced"), ledger, src, "ab" * 32)
    assert target.read_text() == text


@pytest.mark.parametrize("first", ["daemon", "person"])
def test_a_save_racing_a_daemon_write_never_loses_either_silently(tmp_path, monkeypatch, first):
    """The other writer starts exactly at one writer's last look before its rename (the review page saves on
    its own thread, or in `handwatch web`'s own process). Whoever renames second must see the first's file:
    never both told "written" with one text gone, and never the person's saved text replaced."""
    import threading

    from handwatch import safefs
    from tests.support.fakeopenai import wait_for

    db = StateDB(tmp_path / "state")
    ledger = Ledger(db)
    src, target, text = write_md(tmp_path, ledger, "n", ["a ==wrod== here"], needs_review=True)
    loaded = safefs.sha256_file(target)
    mine, theirs = markdown.with_body(text, "a word here"), markdown.render(doc(src, ["a word, transcribed again"]))
    outcome: dict[str, object] = {}

    def daemon():
        try:
            output.write(target, theirs, Ledger(db), src, "cd" * 32)
            outcome["daemon"] = "written"
        except OutputConflict as e:
            outcome["daemon"] = e

    def person():
        try:
            output.save_edit(target, mine, Ledger(db), loaded)
            outcome["person"] = "written"
        except OutputConflict as e:
            outcome["person"] = e

    first_fn, second_fn = (daemon, person) if first == "daemon" else (person, daemon)
    looks = {"n": 0}
    last_look = (
        3 if first == "daemon" else 1
    )  # write(): a first look, one to hash what changed, then the last (under the lock); save_edit(): the last only
    real_lstat_at = safefs.lstat_at
    other = threading.Thread(target=second_fn)

    def lstat_at(fd, name):
        st = real_lstat_at(fd, name)
        if threading.current_thread() is threading.main_thread() and name == target.name:
            looks["n"] += 1
            if looks["n"] == last_look:
                other.start()  # the other one does all it can before this one renames
                wait_for(lambda: not other.is_alive() or write_lock_taken(db.path), 30, what="the other writer")
        return st

    monkeypatch.setattr(safefs, "lstat_at", lstat_at)
    first_fn()
    other.join(60)
    assert not other.is_alive()
    on_disk = target.read_text()
    assert list(outcome.values()).count("written") == 1, outcome
    if outcome["person"] == "written":
        assert on_disk == mine and isinstance(outcome["daemon"], OutputConflict)
        assert ledger.get(target).edited is not None
    else:  # told so, with the newer text to look at: the page opened before it was written
        assert on_disk == theirs and "changed since you opened it" in str(outcome["person"])
        assert ledger.get(target).edited is None  # a refused save marks nothing: the file is still handwatch's
