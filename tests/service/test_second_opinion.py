"""Named endpoints and the second opinion (#26) end to end, against two scripted servers over real HTTP: which pages
reach which server, one max_concurrency across folders, which pages are read again, what the Markdown says when
the readings agree or not, a second server that is down or answers badly, and a person's edit kept.

The worker tests run the real Worker, JobQueue and Pipeline on real SQLite and files; the routing under load and
the server that comes back run the daemon as a subprocess."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from handwatch.cli.status import gather
from handwatch.config import loader
from handwatch.safefs import file_sig, sha256_file
from handwatch.service.worker import Worker, build
from handwatch.store.jobs import this_owner
from handwatch.store.state import encode
from handwatch.transcribe import agree
from tests.support.daemon import PLAIN, DaemonProc, body, front, id_colour, ident_of, status
from tests.support.fakeopenai import FakeOpenAI, free_port, tokens, wait_for
from tests.support.pages import draw_page

FIRST = "Call grandma on Sunday"


@pytest.fixture
def small():
    s = FakeOpenAI(models=("small-vl",)).start()
    yield s
    s.stop()


@pytest.fixture
def big():
    s = FakeOpenAI(models=("big-vl",)).start()
    yield s
    s.stop()


def said(text: str, probs: dict[str, float] | None = None) -> dict:
    """A reply with its log-probabilities: every word sure but those in `probs`."""
    return {"content": text, "logprobs": tokens(text, probs)}


def paper(n: int) -> int:
    """Page `n`'s identity (tests/support/daemon.py): a light paper colour, so the ink on it counts as ink."""
    return 7 * 64 + (4 + n // 4) * 8 + 4 + n % 4


PAPERS = {paper(n): n for n in range(16)}


def number(rec) -> int:
    """The page a request is for, told by its paper's colour (PLAIN preprocessing keeps it)."""
    return PAPERS[ident_of(rec.image)]


def by_page(replies: dict[int, dict | str]) -> Callable:
    """A reply rule: the reply for each page."""
    return lambda rec: replies[number(rec)]


def numbers(server: FakeOpenAI) -> list[int]:
    return [number(r) for r in server.requests]


def page(path: Path, n: int, lines=(FIRST,)) -> Path:
    """Handwriting on page `n`'s paper."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_page(list(lines), bg=id_colour(paper(n))).save(path)
    return path


def scan(path: Path, *pages_: tuple[int, str]) -> Path:
    """A multi-page TIFF, a page per (number, line)."""
    images = [draw_page([line], bg=id_colour(paper(n))) for n, line in pages_]
    images[0].save(path, save_all=True, append_images=images[1:])
    return path


class World:
    """A config with named endpoints, and the real worker over its queue: `settle` runs a file's jobs until none is
    due (a first reading's second opinion is due at once)."""

    def __init__(self, cfg_path: Path, inbox: Path):
        self.cfg_path, self.inbox = cfg_path, inbox
        self.cfg = loader.load(cfg_path)
        self.db, self.queue, self.pipeline, self.candidates, _ = build(self.cfg)
        self.worker = Worker(self.queue, self.pipeline, self.candidates)

    def enqueue(self, path: Path) -> None:
        self.queue.enqueue(path, sha256_file(path), file_sig(path))

    def next(self):
        return self.queue.claim(this_owner(), 600)

    def settle(self, path: Path) -> list[str]:
        self.enqueue(path)
        return self.run()

    def run(self) -> list[str]:
        """Every job due, until none is (a retry's, a second opinion's)."""
        outcomes = []
        while (job := self.next()) is not None:
            outcomes.append(self.worker.handle(job))
        return outcomes

    def state(self, path: Path) -> dict:
        return self.queue.state_of(path) or {}

    def row(self, path: Path):
        return self.db.connect().execute("SELECT id, override FROM jobs WHERE path=?", (encode(path),)).fetchone()

    def override(self, path: Path) -> dict:
        """The job's stored override column, as JSON ({} for none)."""
        return json.loads(self.row(path)["override"] or "{}")


@pytest.fixture
def world(tmp_path, write_config, small, big):
    """`world(folder keys, *more folders)`: endpoints `small` and `big` (in that order), an `inbox` folder."""
    made: list[World] = []

    def make(rule: dict | None = None, *more: dict, endpoints: list[dict] | None = None) -> World:
        inbox = tmp_path / "inbox"
        inbox.mkdir(exist_ok=True)
        w = World(
            write_config(
                {
                    "endpoints": endpoints
                    or [{"name": "small", "url": small.url, "timeout_s": 30}, {"name": "big", "url": big.url, "timeout_s": 30}],
                    "defaults": {"settle_s": 0, "preprocess": PLAIN},
                    "folders": [{"path": str(inbox), **(rule or {})}, *more],
                }
            ),
            inbox,
        )
        made.append(w)
        return w

    yield make
    for w in made:
        w.db.close()


SECOND = {"endpoint": "small", "second_opinion": "big"}


# --- a. routing -------------------------------------------------------------------------------------------------


def test_each_folder_and_rule_file_reaches_only_the_endpoints_it_names(tmp_path, world, small, big):
    """Endpoints listed big first, so a page free to go anywhere would go to big (the least busy, first of equals)."""
    small.default = big.default = said(FIRST)
    w = world(
        {"endpoint": ["small", "big"]},  # small while it has room; its rule files may choose among the two
        {"path": str(tmp_path / "b"), "endpoint": "big"},
        {"path": str(tmp_path / "c"), "second_opinion": "big"},  # no endpoint: every one but the second opinion's
        endpoints=[{"name": "big", "url": big.url}, {"name": "small", "url": small.url}],
    )
    (w.inbox / "sub").mkdir()
    (w.inbox / "sub" / ".handwatch.yaml").write_text("endpoint: big\n")
    where = {
        1: page(w.inbox / "a.png", 1),
        2: page(w.inbox / "sub" / "deeper" / "b.png", 2),
        3: page(tmp_path / "b" / "c.png", 3),
        4: page(tmp_path / "c" / "d.png", 4),
    }
    for path in where.values():
        assert w.settle(path) == ["done"]
    assert sorted(numbers(small)) == [1, 4] and sorted(numbers(big)) == [2, 3]
    assert {i: front(p.with_suffix(".md"))["endpoint"] for i, p in where.items()} == {1: "small", 2: "big", 3: "big", 4: "small"}


def drop(staging: Path, folder: Path, name: str, n: int) -> Path:
    """Page `n` written elsewhere and renamed in, as a sync tool does: whole the moment it appears."""
    os.rename(page(staging / name, n), folder / name)
    return folder / name


def names_its_page(rec) -> dict:
    return said(f"Page {number(rec)} of the notes")


def test_one_max_concurrency_across_folders_and_the_order_of_preference(tmp_path, write_config, small, big, daemons):
    """big takes one request at a time, small two. `solo` is served by big alone, `either` by big then small, `pref`
    by small then big: three routes, three engines, one count of requests per endpoint."""
    solo, either, pref, staging = (tmp_path / n for n in ("solo", "either", "pref", "staging"))
    for d in (solo, either, pref, staging):
        d.mkdir()
    cfg = write_config(
        {
            "endpoints": [
                {"name": "small", "url": small.url, "max_concurrency": 2},
                {"name": "big", "url": big.url, "max_concurrency": 1},
            ],
            "defaults": {"settle_s": 0, "preprocess": PLAIN},
            "rescan_s": 600,
            "folders": [
                {"path": str(solo), "endpoint": "big"},
                {"path": str(either), "endpoint": ["big", "small"]},
                {"path": str(pref), "endpoint": ["small", "big"]},
            ],
        }
    )
    big_free, small_free = threading.Event(), threading.Event()
    big.reply(lambda rec: {"hold": big_free, **names_its_page(rec)})
    small.reply(lambda rec: {"hold": small_free, **names_its_page(rec)})
    big.default = small.default = names_its_page
    d = DaemonProc(cfg, tmp_path / "daemon.log")
    daemons.append(d)

    def asked() -> int:
        return len(big.requests) + len(small.requests)

    try:
        drop(staging, solo, "a.png", 1)
        wait_for(lambda: big.in_flight == 1, 30, what="solo's page held at big")
        # either's engine must count solo's request: big is full, so its page goes to small, its second choice
        drop(staging, either, "b.png", 2)
        wait_for(lambda: asked() == 2, 30, what="either's page sent")
        assert numbers(big) == [1] and numbers(small) == [2] and big.in_flight == 1
        big_free.set()
        wait_for(lambda: (solo / "a.md").exists(), 30, what="solo's page once big answered")
        # big is idle and small half busy: the least busy would be big, but pref names small first, which has room
        drop(staging, pref, "c.png", 3)
        wait_for(lambda: asked() == 3, 30, what="pref's page sent")
        assert numbers(small) == [2, 3] and numbers(big) == [1]
    finally:
        big_free.set()
        small_free.set()
    wait_for(lambda: (either / "b.md").exists() and (pref / "c.md").exists(), 30, what="every page written")
    assert [body(solo / "a.md"), body(either / "b.md"), body(pref / "c.md")] == [
        "Page 1 of the notes",
        "Page 2 of the notes",
        "Page 3 of the notes",
    ]
    assert d.stop() == 0


def test_a_down_endpoint_passes_the_page_to_the_next_named_and_never_to_one_not_named(tmp_path, world, small):
    down = {"name": "big", "url": f"http://127.0.0.1:{free_port()}/v1"}
    w = world(
        {"endpoint": ["big", "small"]},
        {"path": str(tmp_path / "only"), "endpoint": "big"},
        endpoints=[down, {"name": "small", "url": small.url}],
    )
    small.default = said(FIRST)
    assert w.settle(page(w.inbox / "a.png", 1)) == ["done"]
    assert numbers(small) == [1] and front(w.inbox / "a.md")["endpoint"] == "small"
    only = page(tmp_path / "only" / "b.png", 2)
    assert w.settle(only) == ["waiting"]  # for big, the only endpoint it may use
    assert numbers(small) == [1] and not only.with_suffix(".md").exists()
    assert "127.0.0.1" in w.state(only)["reason"] and w.state(only)["state"] == "pending"


# --- c. which pages are read again ------------------------------------------------------------------------------


def test_a_confident_page_is_not_read_again(world, small, big):
    w = world(SECOND)
    small.reply(said(FIRST))
    p = page(w.inbox / "sure.png", 1)
    assert w.settle(p) == ["done"]  # no second job at all
    assert len(small.requests) == 1 and not big.requests
    meta = front(p.with_suffix(".md"))
    assert "second_model" not in meta and meta["needs_review"] is False


def test_only_the_pages_in_doubt_are_sent_to_the_second_endpoint(world, small, big):
    w = world(SECOND)
    small.default = by_page({1: said(FIRST), 2: said("Buy flour and sugar", {"flour": 0.2})})
    big.default = by_page({2: said("Buy flower and sugar", {"flower": 0.4})})  # surer than 0.2, not sure
    doc = scan(w.inbox / "scan.tiff", (1, FIRST), (2, "Buy flour and sugar"))
    assert w.settle(doc) == ["again", "done"]
    assert sorted(numbers(small)) == [1, 2] and numbers(big) == [2]
    md = doc.with_suffix(".md")
    meta = front(md)
    assert meta["second_model"] == "big-vl"
    assert meta["other_readings"] == [{"page": 2, "word": "flower", "other": "flour"}]
    assert meta["review_reasons"] == ["page 2: 1 uncertain word, 1 of them read differently by the second reading"]
    assert body(md) == f"<!-- page 1 -->\n\n{FIRST}\n\n<!-- page 2 -->\n\nBuy ==flower== and sugar"


def test_when_always_every_page_is_read_again(world, small, big):
    w = world({**SECOND, "second_opinion": {"endpoint": "big", "when": "always"}})
    small.default = big.default = by_page({1: said(FIRST), 2: said("Buy flour and sugar")})
    doc = scan(w.inbox / "scan.tiff", (1, FIRST), (2, "Buy flour and sugar"))
    assert w.settle(doc) == ["again", "done"]
    assert sorted(numbers(big)) == [1, 2]
    assert front(doc.with_suffix(".md"))["second_model"] == "big-vl"


# --- d. what the Markdown says ----------------------------------------------------------------------------------


def test_the_first_reading_is_published_at_once_and_the_disagreement_marked_after_the_second(world, small, big):
    w = world(SECOND)
    small.reply(said(FIRST, {"grandma": 0.3}))
    big.reply(said("Call grandpa on Sunday", {"grandpa": 0.6}))  # surer than 0.3, not sure enough to settle it
    p = page(w.inbox / "note.png", 1)
    md = p.with_suffix(".md")
    w.enqueue(p)
    assert w.worker.handle(w.next()) == "again"
    meta = front(md)
    assert body(md) == "Call ==grandma== on Sunday" and "second_model" not in meta and meta["needs_review"] is True
    assert not big.requests and w.state(p)["state"] == "pending"
    assert w.worker.handle(w.next()) == "done" and w.next() is None
    meta = front(md)
    assert body(md) == "Call ==grandpa== on Sunday"  # the surer word is written; the other is kept beside it
    assert (meta["model"], meta["second_model"]) == ("small-vl", "big-vl")
    assert meta["other_readings"] == [{"page": 1, "word": "grandpa", "other": "grandma"}]
    assert meta["needs_review"] is True and meta["uncertain_words"] == 1
    assert meta["review_reasons"] == ["1 uncertain word, 1 of them read differently by the second reading"]
    assert w.state(p)["state"] == "done"


def test_readings_that_agree_clear_the_doubt(world, small, big):
    w = world(SECOND)
    small.reply(said(FIRST, {"grandma": 0.3}))
    big.reply(said(FIRST))
    p = page(w.inbox / "note.png", 1)
    assert w.settle(p) == ["again", "done"]
    meta, md = front(p.with_suffix(".md")), p.with_suffix(".md")
    assert body(md) == FIRST and "==" not in md.read_text()
    assert meta["second_model"] == "big-vl" and "other_readings" not in meta
    assert meta["needs_review"] is False and meta["review_reasons"] == [] and meta["uncertain_words"] == 0


def test_a_sure_second_reading_settles_an_unsure_word_without_a_mark(world, small, big):
    """A large model sure of a word the small one doubted: its word is written, and nobody need check it."""
    w = world(SECOND)
    small.reply(said(FIRST, {"grandma": 0.3}))
    big.reply(said("Call grandpa on Sunday"))
    p = page(w.inbox / "note.png", 1)
    assert w.settle(p) == ["again", "done"]
    meta, md = front(p.with_suffix(".md")), p.with_suffix(".md")
    assert body(md) == "Call grandpa on Sunday" and meta["second_model"] == "big-vl" and "other_readings" not in meta
    assert meta["needs_review"] is False and meta["uncertain_words"] == 0


def test_without_log_probabilities_disagreement_alone_marks_words(world, small, big):
    """LM Studio gives no log-probabilities: no word of a first reading is doubted by them, so every such page is
    read again (no `when: always` needed); the two readers agreeing on a word leave it alone, and the one word
    they read differently is marked."""
    small.logprobs_mode = big.logprobs_mode = "ignore"
    w = world(SECOND)
    small.reply(said("Call grandma on Sunday at noon"))
    big.reply(said("Call grandpa on Sunday at noon"))
    p = page(w.inbox / "note.png", 1, ["Call grandma on Sunday at noon"])
    assert w.settle(p) == ["again", "done"]
    meta, md = front(p.with_suffix(".md")), p.with_suffix(".md")
    assert body(md) == "Call ==grandma== on Sunday at noon"  # neither is surer: the first reading is written
    assert meta["other_readings"] == [{"page": 1, "word": "grandma", "other": "grandpa"}]
    assert meta["needs_review"] is True and meta["uncertain_words"] == 1
    assert "1 uncertain word, 1 of them read differently by the second reading" in meta["review_reasons"]


def test_the_original_is_moved_only_with_the_last_reading(world, small, big):
    w = world({**SECOND, "after": {"move": "done"}})
    small.reply(said(FIRST, {"grandma": 0.3}))
    big.reply(said(FIRST))
    p = page(w.inbox / "note.png", 1)
    w.enqueue(p)
    assert w.worker.handle(w.next()) == "again"
    assert p.exists() and p.with_suffix(".md").exists()  # the second reading needs the original where it is
    assert w.worker.handle(w.next()) == "done"
    assert not p.exists() and (w.inbox / "done" / "note.png").exists()
    assert front(p.with_suffix(".md"))["second_model"] == "big-vl"


def test_the_same_bytes_at_another_path_reuse_both_readings(world, small, big):
    w = world(SECOND)
    small.reply(said(FIRST, {"grandma": 0.3}))
    big.reply(said("Call grandpa on Sunday", {"grandpa": 0.6}))
    p = page(w.inbox / "note.png", 1)
    assert w.settle(p) == ["again", "done"]
    copy = w.inbox / "copy.png"
    copy.write_bytes(p.read_bytes())
    assert w.settle(copy) == ["done"]
    assert len(small.requests) == 1 and len(big.requests) == 1
    assert body(copy.with_suffix(".md")) == body(p.with_suffix(".md")) == "Call ==grandpa== on Sunday"
    assert front(copy.with_suffix(".md"))["other_readings"] == [{"page": 1, "word": "grandpa", "other": "grandma"}]


def test_a_first_reading_that_failed_is_replaced_by_the_second(world, small, big):
    w = world(SECOND)
    small.default = ""  # every retry empty: the first reading is a placeholder, in doubt
    big.reply(said(FIRST))
    p = page(w.inbox / "note.png", 1)
    assert w.settle(p) == ["again", "done"]
    md = p.with_suffix(".md")
    meta = front(md)
    assert body(md) == FIRST and meta["second_model"] == "big-vl"
    assert meta["review_reasons"] == ["the first reading failed; the text is the second reading's (big)"]


# --- e. the second endpoint down --------------------------------------------------------------------------------


def test_a_second_endpoint_that_is_down_leaves_the_first_reading_until_it_is_back(tmp_path, inbox, write_config, small, daemons):
    port = free_port()
    cfg = write_config(
        {
            "endpoints": [
                {"name": "small", "url": small.url},
                {"name": "big", "url": f"http://127.0.0.1:{port}/v1", "timeout_s": 30},
            ],
            "defaults": {"settle_s": 0},
            "rescan_s": 600,
            "folders": [{"path": str(inbox), **SECOND}],
        }
    )
    small.default = said("Buy flour and sugar", {"flour": 0.2})
    d = DaemonProc(cfg, tmp_path / "daemon.log")
    daemons.append(d)
    staging = tmp_path / "staging"
    staging.mkdir()
    draw_page(["Buy flour and sugar"]).save(staging / "note.png")
    os.rename(staging / "note.png", inbox / "note.png")
    md = inbox / "note.md"
    wait_for(lambda: d.events("endpoint.down"), 30, what="the second endpoint found down")
    meta = front(md)
    assert body(md) == "Buy ==flour== and sugar" and "second_model" not in meta and meta["needs_review"] is True
    st = wait_for(
        lambda: (s := status(cfg))["waiting"] and s,
        30,
        interval=0.1,
        what="the job waiting for the second endpoint",
    )
    assert [w["path"] for w in st["waiting"]] == [str(inbox / "note.png")]
    assert f"127.0.0.1:{port}" in st["waiting"][0]["reason"]
    assert st["counts"]["failed"] == 0 and st["counts"]["done"] == 0 and st["endpoints"][1]["up"] is False
    assert [r["path"] for r in st["needs_review"]] == [str(md)]
    back = FakeOpenAI(models=("big-vl",), port=port).start()
    try:
        back.default = said("Buy flower and sugar", {"flower": 0.4})
        wait_for(lambda: "second_model" in md.read_text(), 120, interval=0.2, what="the Markdown refined")
        meta = front(md)
        assert body(md) == "Buy ==flower== and sugar" and meta["second_model"] == "big-vl"
        assert meta["other_readings"] == [{"page": 1, "word": "flower", "other": "flour"}]
        wait_for(lambda: status(cfg)["counts"]["done"] == 1, 30, interval=0.2, what="the job done")
        assert len(small.requests) == 1 and len(back.requests) == 1  # the first reading was not made again
        assert d.stop() == 0
    finally:
        back.stop()


def test_status_says_a_file_waits_for_its_second_reading_while_that_endpoint_is_down(world, small):
    """The Markdown exists, so "waiting for endpoint: …" alone reads as if the file had no transcription yet."""
    port = free_port()
    w = world(SECOND, endpoints=[{"name": "small", "url": small.url}, {"name": "big", "url": f"http://127.0.0.1:{port}/v1"}])
    small.reply(said("Buy flour and sugar", {"flour": 0.2}))
    p = page(w.inbox / "note.png", 1, ["Buy flour and sugar"])
    assert w.settle(p) == ["again", "waiting"]
    assert p.with_suffix(".md").exists() and w.state(p)["state"] == "pending"
    [waiting] = gather(w.cfg)["waiting"]
    assert waiting["path"] == str(p) and f"127.0.0.1:{port}" in waiting["reason"]
    assert "second reading" in waiting["reason"], waiting["reason"]


# --- f. a person's edit -----------------------------------------------------------------------------------------


def test_a_persons_edit_made_while_the_second_reading_is_under_way_is_kept(world, small, big):
    w = world(SECOND)
    small.reply(said(FIRST, {"grandma": 0.3}))
    release = threading.Event()
    big.reply({"hold": release, **said("Call grandpa on Sunday")})
    p = page(w.inbox / "note.png", 1)
    md = p.with_suffix(".md")
    w.enqueue(p)
    assert w.worker.handle(w.next()) == "again"
    second = w.next()
    outcome: list[str] = []
    t = threading.Thread(target=lambda: outcome.append(w.worker.handle(second)))
    t.start()
    try:
        wait_for(lambda: big.in_flight == 1, 30, what="the second reading under way")
        edited = md.read_bytes().replace(b"Call ==grandma== on Sunday", b"Call grandma on Sunday at five")
        md.write_bytes(edited)
    finally:
        release.set()
    t.join(60)
    assert not t.is_alive() and outcome == ["done"]
    assert md.read_bytes() == edited
    assert w.state(p)["state"] == "done" and w.next() is None


# --- g. a second reply that cannot stand beside the first -------------------------------------------------------


@pytest.mark.parametrize(
    "reply, why",
    [
        ("", "second reading (big): the reply was empty; the first reading stands"),
        (
            {"content": "Call grandpa on", "finish_reason": "length"},
            "second reading (big): truncated: ",
        ),
        (
            "Позвонить бабушке в воскресенье",
            "second reading (big): script: 100% of the letters are Cyrillic, which languages [en] are not written in",
        ),
        ("Meet Tom at the station", "second reading (big): it shares too few words with the first"),
    ],
    ids=["empty", "cut off", "another script", "another text"],
)
def test_a_second_reply_that_is_no_reading_of_the_page_leaves_the_first(world, small, big, reply, why):
    w = world(SECOND)
    small.reply(said(FIRST, {"grandma": 0.3}))
    big.default = reply
    p = page(w.inbox / "note.png", 1)
    assert w.settle(p) == ["again", "done"]
    md = p.with_suffix(".md")
    meta = front(md)
    assert body(md) == "Call ==grandma== on Sunday" and "other_readings" not in meta
    assert meta["needs_review"] is True
    assert [r for r in meta["review_reasons"] if r.startswith(why)], meta["review_reasons"]
    assert any(r.endswith("the first reading stands") for r in meta["review_reasons"])
    assert "1 uncertain word" in meta["review_reasons"]  # the first reading's own doubt stays
    assert w.state(p)["state"] == "done" and big.requests


# --- h. `handwatch once` ----------------------------------------------------------------------------------------


@pytest.fixture
def photo(inbox) -> Path:
    path = inbox / "IMG_0001.png"
    draw_page([FIRST]).save(path)
    return path


def test_once_writes_the_first_reading_while_the_second_endpoint_is_down_and_both_combined_once_it_is_up(
    photo, write_config, run_cli, small
):
    port = free_port()
    cfg = write_config(
        {
            "endpoints": [{"name": "small", "url": small.url}, {"name": "big", "url": f"http://127.0.0.1:{port}/v1"}],
            "folders": [{"path": str(photo.parent), **SECOND}],
        }
    )
    md = photo.with_suffix(".md")
    small.reply(said(FIRST, {"grandma": 0.3}))
    res = run_cli("once", "-c", cfg, photo)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(md) and body(md) == "Call ==grandma== on Sunday"
    assert "second_model" not in front(md) and front(md)["needs_review"] is True
    big = FakeOpenAI(models=("big-vl",), port=port).start()
    try:
        big.reply(said("Call grandpa on Sunday", {"grandpa": 0.6}))
        res = run_cli("once", "-c", cfg, photo)
        assert res.returncode == 0, res.stderr
    finally:
        big.stop()
    meta = front(md)
    assert res.stdout.strip() == str(md) and body(md) == "Call ==grandpa== on Sunday" and meta["second_model"] == "big-vl"
    assert meta["other_readings"] == [{"page": 1, "word": "grandpa", "other": "grandma"}]
    assert len(small.requests) == 1 and len(big.requests) == 1  # the first reading was kept, not made again


# --- i. the holes an attacker's review found (1c31806) ---------------------------------------------------------


@pytest.fixture
def huge():
    s = FakeOpenAI(models=("huge-vl",)).start()
    yield s
    s.stop()


def test_a_second_reading_is_reused_only_under_the_rule_that_asked_for_it(tmp_path, world, small, big, huge):
    """The same bytes in three folders share one first reading; the second opinion is each rule's own: A's is big
    (pages in doubt), B has none, C's is huge (every page). Before 1c31806, A's combined reading was the cached text of
    those bytes, so B and C showed big's reading and huge was never asked."""
    small.default = said(FIRST, {"grandma": 0.3})
    big.default = said("Call grandpa on Sunday", {"grandpa": 0.6})
    huge.default = said("Call granny on Sunday", {"granny": 0.6})
    for d in "BC":
        (tmp_path / d).mkdir()
    w = world(
        SECOND,
        {"path": str(tmp_path / "B"), "endpoint": "small"},
        {"path": str(tmp_path / "C"), "endpoint": "small", "second_opinion": {"endpoint": "huge", "when": "always"}},
        endpoints=[
            {"name": "small", "url": small.url, "timeout_s": 30},
            {"name": "big", "url": big.url, "timeout_s": 30},
            {"name": "huge", "url": huge.url, "timeout_s": 30},
        ],
    )
    a = page(w.inbox / "note.png", 1)
    b, c = tmp_path / "B" / "note.png", tmp_path / "C" / "note.png"
    b.write_bytes(a.read_bytes())
    c.write_bytes(a.read_bytes())
    assert w.settle(a) == ["again", "done"]
    meta = front(a.with_suffix(".md"))
    assert body(a.with_suffix(".md")) == "Call ==grandpa== on Sunday" and meta["second_model"] == "big-vl"
    assert meta["other_readings"] == [{"page": 1, "word": "grandpa", "other": "grandma"}]
    assert w.settle(b) == ["done"]
    meta = front(b.with_suffix(".md"))
    assert "second_model" not in meta and "other_readings" not in meta, meta  # B asks for no second opinion
    assert body(b.with_suffix(".md")) == "Call ==grandma== on Sunday"
    assert w.settle(c) == ["again", "done"]  # C's own second opinion is asked
    meta = front(c.with_suffix(".md"))
    assert body(c.with_suffix(".md")) == "Call ==granny== on Sunday" and meta["second_model"] == "huge-vl"
    assert meta["other_readings"] == [{"page": 1, "word": "granny", "other": "grandma"}]
    assert (len(small.requests), len(big.requests), len(huge.requests)) == (1, 1, 1)  # one first reading, shared


def test_the_second_flag_of_the_override_ends_with_the_second_reading(world, small, big):
    """Before 1c31806, `second: true` stayed on the job's override after the second reading was done."""
    w = world(SECOND)
    small.default = said(FIRST, {"grandma": 0.3})
    big.default = said("Call grandpa on Sunday", {"grandpa": 0.6})
    p = page(w.inbox / "note.png", 1)
    w.enqueue(p)
    assert w.worker.handle(w.next()) == "again"
    assert w.override(p).get("second") is True  # pending: the second opinion is next
    assert w.worker.handle(w.next()) == "done"
    assert "second" not in w.override(p), w.override(p)  # none is pending any more
    assert w.state(p)["state"] == "done" and w.next() is None


def test_a_retry_after_the_second_reading_fails_on_a_persons_edit_and_is_not_done(world, small, big):
    """A later `redo` (its stored text forgotten, the job retried) of the same content after a person edited the
    Markdown fails, saying so. Before 1c31806, the lingering `second` flag read the page twice, found the edit in the way
    and ended `done` with no reason — as if the Markdown were handwatch's reading."""
    w = world(SECOND)
    small.default = said(FIRST, {"grandma": 0.3})
    big.default = said("Call grandpa on Sunday", {"grandpa": 0.6})
    p = page(w.inbox / "note.png", 1)
    assert w.settle(p) == ["again", "done"]
    md = p.with_suffix(".md")
    md.write_text(md.read_text() + "\nmy own line\n")
    edited = md.read_bytes()
    # What `handwatch redo` does with a file (cli/redo.py run): its stored texts forgotten, the job retried.
    w.db.connect().execute("DELETE FROM texts WHERE source_sha256=?", (sha256_file(p),))
    assert w.queue.retry([p]) == 1
    assert w.run() == ["failed"]
    st = w.state(p)
    assert st["state"] == "failed" and "edited since handwatch wrote it" in (st["reason"] or ""), st
    assert md.read_bytes() == edited and "second" not in w.override(p)


def test_a_late_reading_dropped_for_a_persons_edit_still_moves_the_original(world, small, big):
    """`after: move` waits for the second reading; a person's edit drops that reading, and the original goes into
    the move folder all the same. Before 1c31806, it stayed in the inbox for good, its job done."""
    w = world({**SECOND, "after": {"move": "done"}})
    small.reply(said(FIRST, {"grandma": 0.3}))
    big.reply(said("Call grandpa on Sunday", {"grandpa": 0.6}))
    p = page(w.inbox / "note.png", 1)
    original = p.read_bytes()
    md = p.with_suffix(".md")
    w.enqueue(p)
    assert w.worker.handle(w.next()) == "again"
    edited = md.read_bytes().replace(b"Call ==grandma== on Sunday", b"Call grandma (edited by me) on Sunday")
    assert edited != md.read_bytes()
    md.write_bytes(edited)
    assert w.worker.handle(w.next()) == "done"
    assert len(big.requests) == 1 and md.read_bytes() == edited  # the reading was made, and dropped
    moved = w.inbox / "done" / "note.png"
    assert not p.exists() and moved.read_bytes() == original
    assert w.next() is None and w.state(p) == {} and w.state(moved) == {}  # the job does not come back


@pytest.mark.parametrize("person", ["renames", "deletes"])
def test_a_late_reading_does_not_bring_back_a_markdown_a_person_renamed_or_deleted(world, small, big, person):
    """Before 1c31806, the second reading wrote note.md again: a duplicate beside the renamed note, or a deleted one back."""
    w = world(SECOND)
    small.reply(said(FIRST, {"grandma": 0.3}))
    big.reply(said("Call grandpa on Sunday", {"grandpa": 0.6}))
    p = page(w.inbox / "note.png", 1)
    md = p.with_suffix(".md")
    w.enqueue(p)
    assert w.worker.handle(w.next()) == "again"
    first = md.read_bytes()
    if person == "renames":
        md.rename(w.inbox / "Call grandma.md")  # filed under a title
    else:
        md.unlink()
    assert w.worker.handle(w.next()) == "done"
    assert len(big.requests) == 1
    assert sorted(x.name for x in w.inbox.glob("*.md")) == (["Call grandma.md"] if person == "renames" else [])
    if person == "renames":
        assert (w.inbox / "Call grandma.md").read_bytes() == first
    assert w.state(p)["state"] == "done" and w.next() is None


def test_a_persons_retry_on_the_second_opinions_endpoint_is_not_read_again_by_it(world, small, big):
    """A review page retry "on endpoint big" where big is the second opinion: big's fresh reading is published as
    it is. Before 1c31806, big read the page a second time, its two identical readings "agreed" and cleared the doubt."""
    w = world({"second_opinion": "big"})  # no `endpoint`: every endpoint but big makes first readings
    small.default = said(FIRST, {"grandma": 0.3})
    big.default = said("Call grandpa on Sunday", {"grandpa": 0.45})
    p = page(w.inbox / "note.png", 1)
    md = p.with_suffix(".md")
    assert w.settle(p) == ["again", "done"]
    assert front(md)["endpoint"] == "small" and len(big.requests) == 1
    assert w.queue.retry_with(w.row(p)["id"], endpoint=big.url)  # what the review page's retry stores
    assert w.run() == ["done"]
    assert len(big.requests) == 2  # the retry's reading, and no second one of it
    meta = front(md)
    assert (meta["model"], meta["endpoint"]) == ("big-vl", "big") and "second_model" not in meta
    assert body(md) == "Call ==grandpa== on Sunday" and "other_readings" not in meta
    assert meta["needs_review"] is True and "1 uncertain word" in meta["review_reasons"]


def test_a_surer_second_reading_that_leaves_lines_out_never_removes_them_from_the_markdown(world, small, big):
    """A second reading that stopped after the first line, sure of every word it gave. Before 1c31806, it won on its
    page mean and the Markdown kept only that line (the rest was one word's `other` in the front matter)."""
    w = world(SECOND)
    full = "Buy flour and sugar. Call grandma on Sunday. Pay the rent on Friday. Pick up Tom at five."
    small.reply(said(full, {"grandma": 0.4}))
    big.reply(said("Buy flour and sugar."))  # stops early, without finish_reason=length
    p = page(w.inbox / "note.png", 1, ["Buy flour and sugar.", "Call grandma on Sunday."])
    assert w.settle(p) == ["again", "done"]
    md = p.with_suffix(".md")
    meta = front(md)
    assert meta["second_model"] == "big-vl"
    assert body(md).replace("==", "") == full  # every word of the first reading, in its place
    left_out = full.split("sugar. ")[1].replace(".", "").split()
    assert [(o["word"], o["other"]) for o in meta["other_readings"]] == [(x, "") for x in left_out]
    assert meta["needs_review"] is True


def _words(prefix: str, n: int) -> list[str]:
    """`n` distinct words of letters only: prefix + the index in base 26."""
    out = []
    for i in range(n):
        s = ""
        while True:
            i, r = divmod(i, 26)
            s = chr(97 + r) + s
            if not i:
                break
        out.append(prefix + s)
    return out


def test_a_long_run_read_differently_keeps_the_markdown_small(world, small, big):
    """A 900-word page whose second reading reads a 400-word run as another run of 399 words: each of the 400
    words is disputed, and each carried the whole other run before (1.1 MB of front matter for a 6 kB page)."""
    w = world({**SECOND, "second_opinion": {"endpoint": "big", "when": "always"}})
    common = _words("lorem", 500)
    first = " ".join(common + _words("first", 400))
    second_ = " ".join(common + _words("second", 399))
    assert len(first.split()) == 900  # within agree.MAX_WORDS: aligned
    small.reply(said(first))
    big.reply(said(second_))
    p = page(w.inbox / "note.png", 1, ["A long page", "of many words"])
    assert w.settle(p) == ["again", "done"]
    md = p.with_suffix(".md")
    size = len(md.read_bytes())
    assert size < 64_000, f"the Markdown of a {len(first)}-character page is {size:,} bytes"
    meta = front(md)
    assert meta["second_model"] == "big-vl" and len(meta["other_readings"]) == 400
    assert all(len(o["other"]) <= agree.OTHER_MAX for o in meta["other_readings"])
    assert all(o["other"].startswith("seconda secondb") for o in meta["other_readings"])
    assert body(md).replace("==", "") == first


def test_a_written_second_word_has_its_translation_made_again(world, small, big):
    """`translate_to`: the appendix was the first reading's translation; when the second reading's word is
    written, the second endpoint translates the text as written. Before 1c31806, the appendix was dropped."""
    w = world({**SECOND, "languages": ["de"], "translate_to": "en"})

    def reads(text: str, probs: dict[str, float] | None, translation: str) -> Callable:
        return lambda rec: said(text, probs) if rec.image is not None else translation  # a translation: text only

    small.default = reads("Ruf Oma am Sonntag an", {"Oma": 0.3}, "Call grandma on Sunday")
    big.default = reads("Ruf Opa am Sonntag an", None, "Call grandpa on Sunday")  # sure of Opa: it is written
    p = page(w.inbox / "note.png", 1, ["Ruf Oma am Sonntag an"])
    md = p.with_suffix(".md")
    w.enqueue(p)
    assert w.worker.handle(w.next()) == "again"
    assert body(md) == "Ruf ==Oma== am Sonntag an\n\n## Translation (en)\n\nCall grandma on Sunday"
    assert w.worker.handle(w.next()) == "done"
    translations = [r for r in big.requests if r.image is None]
    assert len(translations) == 1 and "Ruf Opa am Sonntag an" in translations[0].prompt
    assert body(md) == "Ruf Opa am Sonntag an\n\n## Translation (en)\n\nCall grandpa on Sunday"
    assert front(md)["second_model"] == "big-vl"


def test_a_page_too_long_to_align_is_not_said_to_be_another_page(world, small, big):
    """BUG (found writing these tests, not fixed): past agree.MAX_WORDS words `combine` gives up, and second.py's
    _combined tells the person the two readings share too few words ("another language, or another page?") —
    here they are the very same 1001 words."""
    w = world(SECOND)
    text = " ".join(_words("lorem", agree.MAX_WORDS + 1))
    small.reply(said(text, {"loremb": 0.3}))
    big.reply(said(text))
    p = page(w.inbox / "note.png", 1)
    assert w.settle(p) == ["again", "done"]
    reasons = front(p.with_suffix(".md"))["review_reasons"]
    assert any(r.startswith("second reading (big): ") and r.endswith("the first reading stands") for r in reasons), reasons
    assert not [r for r in reasons if "shares too few words" in r], reasons
