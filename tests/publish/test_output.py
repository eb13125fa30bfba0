"""Markdown rendering, atomic writes, the clash rule and edit protection."""

import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from handwatch import safefs
from handwatch.errors import OutputConflict
from handwatch.publish import markdown, output
from handwatch.store.state import Ledger, StateDB
from tests.support.daemon import write_lock_taken

WHEN = datetime(2026, 11, 21, 16, 20, tzinfo=UTC)


def doc(source: Path, pages=("Hello",), **kw) -> markdown.Document:
    base = dict(
        source=source,
        source_sha256="ab" * 32,
        pages=list(pages),
        profile="notes",
        languages=("en",),
        engine="vlm",
        model="qwen2.5-vl-7b-instruct",
        transcribed=WHEN,
    )
    base.update(kw)
    return markdown.Document(**base)


@pytest.fixture
def ledger(tmp_path):
    return Ledger(StateDB(tmp_path / "state"))


def test_front_matter_is_exactly_the_contract(tmp_path):
    text = markdown.render(doc(tmp_path / "IMG_1234.jpg"))
    assert text == (
        "---\n"
        "source: IMG_1234.jpg\n"
        f"source_sha256: {'ab' * 32}\n"
        "pages: 1\n"
        "profile: notes\n"
        "languages: [en]\n"
        "engine: vlm\n"
        "model: qwen2.5-vl-7b-instruct\n"
        "transcribed: 2026-11-21T16:20:00Z\n"
        "handwatch: 0.1.0\n"
        "needs_review: false\n"
        "review_reasons: []\n"
        "---\n"
        "\n"
        "Hello\n"
    )


def test_multi_page_markers_and_review_fields(tmp_path):
    text = markdown.render(
        doc(
            tmp_path / "scan.pdf",
            pages=["one", "two"],
            languages=("de", "en"),
            needs_review=True,
            review_reasons=("page 2: truncated: hit max_tokens",),
        )
    )
    assert "pages: 2\n" in text and "languages: [de, en]\n" in text
    assert "needs_review: true\n" in text
    assert "review_reasons: ['page 2: truncated: hit max_tokens']\n" in text
    assert text.index("<!-- page 1 -->\n\none") < text.index("<!-- page 2 -->\n\ntwo")


def test_odd_source_names_stay_valid_yaml(tmp_path):
    import yaml

    text = markdown.render(doc(tmp_path / "no: yes #1.jpg"))
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["source"] == "no: yes #1.jpg"


def test_atomic_write_leaves_only_the_target(tmp_path, ledger):
    src = tmp_path / "a.jpg"
    target = output.write(tmp_path / "a.md", "text\n", ledger, src, "s1")
    assert target.read_text() == "text\n"
    assert sorted(os.listdir(tmp_path)) == ["a.md", "state"]


def test_never_overwrites_a_file_it_did_not_write(tmp_path, ledger):
    (tmp_path / "a.md").write_text("my own notes")
    with pytest.raises(OutputConflict, match="not written by handwatch"):
        output.write(tmp_path / "a.md", "text\n", ledger, tmp_path / "a.jpg", "s1")
    assert (tmp_path / "a.md").read_text() == "my own notes"


def test_replaces_its_own_unedited_file_but_not_an_edited_one(tmp_path, ledger):
    src = tmp_path / "a.jpg"
    output.write(tmp_path / "a.md", "v1\n", ledger, src, "s1")
    output.write(tmp_path / "a.md", "v2\n", ledger, src, "s2")  # the original changed: transcribed again
    assert (tmp_path / "a.md").read_text() == "v2\n"
    (tmp_path / "a.md").write_text("v2\nplus a person's correction\n")
    with pytest.raises(OutputConflict, match="edited"):
        output.write(tmp_path / "a.md", "v3\n", ledger, src, "s3")
    assert "correction" in (tmp_path / "a.md").read_text()


def test_crash_between_record_and_rename_is_not_a_conflict(tmp_path, ledger):
    src = tmp_path / "a.jpg"
    output.write(tmp_path / "a.md", "v1\n", ledger, src, "s1")
    # Simulate a crash after the intent was recorded and the rename happened, before the commit.
    ledger.intend(tmp_path / "a.md", safefs.sha256_bytes(b"v2\n"), src, "s2")
    (tmp_path / "a.md").write_text("v2\n")
    output.write(tmp_path / "a.md", "v3\n", ledger, src, "s3")
    assert (tmp_path / "a.md").read_text() == "v3\n"


def test_writing_the_bytes_already_there_needs_no_database_write(tmp_path, ledger):
    """`once` run again within the second of the last run renders the very same bytes. That used to
    record them in the ledger again, a write, so with another process holding the database's write
    lock it waited out the 30 s busy timeout and died with `database is locked` before anything
    else happened. The file is already exactly what the ledger says: there is nothing to record."""
    src = tmp_path / "a.jpg"
    output.write(tmp_path / "a.md", "v1\n", ledger, src, "s1")
    ledger.db.connect().execute("PRAGMA busy_timeout=200")  # a write under the lock fails in 0.2 s, not 30
    lock = sqlite3.connect(ledger.db.path, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        assert output.write(tmp_path / "a.md", "v1\n", ledger, src, "s1") == tmp_path / "a.md"
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    rec = ledger.get(tmp_path / "a.md")
    assert rec is not None and rec.sha256 == safefs.sha256_bytes(b"v1\n") and rec.pending_sha256 is None
    # A pending record of those bytes (a crash between the rename and the commit) is still committed.
    ledger.intend(tmp_path / "a.md", safefs.sha256_bytes(b"v2\n"), src, "s2")
    (tmp_path / "a.md").write_text("v2\n")
    output.write(tmp_path / "a.md", "v2\n", ledger, src, "s2")
    rec = ledger.get(tmp_path / "a.md")
    assert rec is not None and rec.sha256 == safefs.sha256_bytes(b"v2\n") and rec.pending_sha256 is None


def test_nothing_is_read_while_the_database_write_lock_is_held(tmp_path, ledger, monkeypatch):
    """The write lock is held from the last look to the rename, and every other writer (queue, intake, the
    review page) waits for it. A file that changed after the first look is hashed again, and what is there
    may be huge or on a slow share: that read happens before the lock, never under it."""
    from handwatch import safefs

    target, src = tmp_path / "a.md", tmp_path / "a.jpg"
    output.write(target, "v1\n", ledger, src, "s1")
    real_lstat_at, real_hash_at = safefs.lstat_at, output._hash_at
    hashed_under_lock: list[bool] = []
    looks = {"n": 0}

    def lstat_at(fd, name):
        looks["n"] += 1
        if looks["n"] == 2:  # after the first look and hash, something touches the file (same bytes, new identity)
            os.utime(target, ns=(1, 1))
        return real_lstat_at(fd, name)

    def hash_at(fd, name):
        hashed_under_lock.append(write_lock_taken(ledger.db.path))
        return real_hash_at(fd, name)

    monkeypatch.setattr(safefs, "lstat_at", lstat_at)
    monkeypatch.setattr(output, "_hash_at", hash_at)
    output.write(target, "v2\n", ledger, src, "s2")
    assert target.read_text() == "v2\n"
    assert hashed_under_lock == [False, False]  # the first look's hash, and the touched file's: neither locked


def test_a_huge_file_in_a_markdowns_place_is_not_read(tmp_path, ledger):
    """No transcription is 64 MB; what is that big was put there by someone else, and hashing it could take minutes."""
    target, src = tmp_path / "a.md", tmp_path / "a.jpg"
    output.write(target, "v1\n", ledger, src, "s1")
    with open(target, "r+b") as f:
        f.truncate(1 << 40)  # sparse: a terabyte that costs no disk
    with pytest.raises(OutputConflict, match="larger than any transcription"):
        output.write(target, "v2\n", ledger, src, "s2")
    assert os.path.getsize(target) == 1 << 40


def test_clash_rule_gives_the_second_original_stem_ext_md(tmp_path, ledger):
    jpg, heic = tmp_path / "IMG_1.jpg", tmp_path / "IMG_1.heic"
    first = output.claim_target(jpg, "s1", "{stem}.md", ledger)
    second = output.claim_target(heic, "s2", "{stem}.md", ledger)  # claimed before the first was even written
    assert (first.name, second.name) == ("IMG_1.md", "IMG_1.heic.md")
    output.write(second, "heic text\n", ledger, heic, "s2")
    output.write(first, "jpg text\n", ledger, jpg, "s1")
    # Each keeps its own name on later runs, and a third original with the stem gets one of its own.
    assert output.claim_target(jpg, "s1", "{stem}.md", ledger) == first
    assert output.claim_target(heic, "s2", "{stem}.md", ledger) == second
    png = tmp_path / "IMG_1.png"
    assert output.claim_target(png, "s3", "{stem}.md", ledger).name == "IMG_1.png.md"
    # The same name reused after `after: move` moved the first original away: numbered names.
    ledger.follow(png, tmp_path / "done" / "IMG_1.png")
    assert output.claim_target(png, "s4", "{stem}.md", ledger).name == "IMG_1-2.md"


def test_writing_a_name_another_original_holds_is_refused(tmp_path, ledger):
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    output.write(tmp_path / "x.md", "a text\n", ledger, a, "s1")
    with pytest.raises(OutputConflict, match="transcription of a.jpg"):
        output.write(tmp_path / "x.md", "b text\n", ledger, b, "s2")
    assert (tmp_path / "x.md").read_text() == "a text\n" and ledger.get(tmp_path / "x.md").source == a


@pytest.mark.parametrize(
    "name, template", [("...png", "{stem}/{stem}/x{stem}.md"), ("..png", "{stem}/x.md"), ("a.png", "{name}/../x.md")]
)
def test_names_that_would_climb_out_are_refused(tmp_path, name, template):
    from handwatch.errors import InputError

    with pytest.raises(InputError, match="leave the folder"):
        output.candidate_names(tmp_path / name, template)


def test_special_files_and_links_at_the_target_are_never_read_or_replaced(tmp_path, ledger):
    os.mkfifo(tmp_path / "f.md")
    with pytest.raises(OutputConflict, match="FIFO"):
        output.write(tmp_path / "f.md", "x\n", ledger, tmp_path / "f.jpg", "s1")
    (tmp_path / "outside.txt").write_text("keep")
    (tmp_path / "l.md").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(OutputConflict, match="symbolic link"):
        output.write(tmp_path / "l.md", "x\n", ledger, tmp_path / "l.jpg", "s1")
    assert (tmp_path / "outside.txt").read_text() == "keep"


def test_stale_temp_files_are_removed(tmp_path):
    (tmp_path / "sub").mkdir()
    stale = tmp_path / "sub" / f".a.md.1234{safefs.TMP_SUFFIX}"
    stale.write_text("partial")
    (tmp_path / "keep.md").write_text("x")
    assert output.remove_stale_temps(tmp_path) == 1
    assert not stale.exists() and (tmp_path / "keep.md").exists()


def test_confidence_provenance_and_marks_extend_the_front_matter_in_the_contracts_order(tmp_path):
    text = markdown.render(
        doc(
            tmp_path / "IMG_1234.jpg",
            pages=("Buy flour and sugar",),
            needs_review=True,
            review_reasons=("2 uncertain words (review from 2)",),
            confidence=0.71,
            uncertain_words=2,
            marks=(((4, 9), (14, 19)),),
            endpoint="gpubox",
            fingerprint="0e1234567890",
            extra={"title": "Shopping"},
        )
    )
    head, body = text.split("---\n")[1:3]
    assert head.endswith(
        "needs_review: true\n"
        "review_reasons: [2 uncertain words (review from 2)]\n"
        "confidence: 0.71\n"
        "uncertain_words: 2\n"
        "endpoint: gpubox\n"
        "fingerprint: '0e1234567890'\n"  # a YAML 1.2 reader would take it bare for the number 0
        "title: Shopping\n"
    )
    assert body == "\nBuy ==flour== and ==sugar==\n"


def test_a_second_opinion_is_named_and_number_like_words_are_quoted_inside_its_readings(tmp_path):
    """`second_model` follows `model`; `other_readings` follows the doubt fields, and a word such as `1e5` or `0x1f`
    inside it is quoted as a top-level value is, or a YAML 1.2 reader (Obsidian) takes it for a number."""
    text = markdown.render(
        doc(
            tmp_path / "IMG_1234.jpg",
            pages=("Mix 1e5 g",),
            second_model="big-vl",
            confidence=0.5,
            uncertain_words=1,
            other_readings=({"page": 1, "word": "1e5", "other": "0x1f"},),
            extra={"detected_languages": ["de", "0e12"]},
        )
    )
    head = text.split("---\n")[1]
    assert "model: " in head and head.index("second_model: big-vl\n") > head.index("model: ")
    assert "other_readings: [{page: 1, word: '1e5', other: '0x1f'}]\n" in head
    assert "detected_languages: [de, '0e12']\n" in head
    assert markdown.fields(text)["other_readings"] == [{"page": 1, "word": "1e5", "other": "0x1f"}]
