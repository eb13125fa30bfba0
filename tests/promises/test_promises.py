"""Regression tests for the promises of issue #9: no transcription lost, no edit overwritten, originals moved
only where the user said, nothing written outside the watched folders. Each runs the real daemon or the
real CLI against real files and the scripted server, and each failed on the code before its fix."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from tests.support.daemon import (
    PLAIN,
    DaemonProc,
    body,
    front,
    id_png,
    markdowns,
    status,
    temps,
    text_for,
    text_of,
    tree,
)
from tests.support.fakeopenai import FakeOpenAI, wait_for
from tests.support.paths import cli_env


@pytest.fixture
def config(tmp_path, inbox, server):
    def write(folder: dict | None = None, **top) -> Path:
        data = {
            "state_dir": str(tmp_path / "state"),
            "endpoints": [{"url": server.url, "max_concurrency": 4, "timeout_s": 60}],
            "defaults": {"settle_s": 0.2, "preprocess": PLAIN},
            "rescan_s": 600,
            "folders": [{"path": str(inbox), **(folder or {})}],
            **top,
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


@pytest.fixture
def daemon(tmp_path):
    procs: list[DaemonProc] = []

    def start(cfg: Path) -> DaemonProc:
        p = DaemonProc(cfg, tmp_path / "daemon.log")
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()


def held(server: FakeOpenAI) -> threading.Event:
    """Every request waits until the returned event is set, then gets its image's own text."""
    release = threading.Event()
    server.default = lambda rec: {**text_for(rec), "hold": release}
    return release


def job_states(cfg: Path) -> dict[str, str]:
    st = status(cfg)
    return {Path(f["path"]).name: f["reason"] for f in st["failed"]}


# --- 1. two originals with one stem finishing together ------------------------------------------


def test_two_originals_with_one_stem_finishing_together_each_keep_their_text(inbox, server, config, daemon, run_cli):
    release = held(server)
    cfg = config()
    d = daemon(cfg)
    id_png(inbox / "IMG_0.png", 1)
    id_png(inbox / "IMG_0.jpg", 2)
    wait_for(lambda: server.in_flight == 2, 30, what="both requests in flight")
    release.set()  # both replies arrive at the same moment
    wait_for(lambda: status(cfg)["counts"]["done"] + status(cfg)["counts"]["failed"] == 2, 30, what="both finished")
    assert status(cfg)["counts"]["failed"] == 0, job_states(cfg)
    mds = {front(m)["source"]: m for m in markdowns(inbox)}
    assert sorted(m.name for m in mds.values()) == ["IMG_0.jpg.md", "IMG_0.md"] or sorted(m.name for m in mds.values()) == [
        "IMG_0.md",
        "IMG_0.png.md",
    ]
    assert body(mds["IMG_0.png"]) == text_of(1) and body(mds["IMG_0.jpg"]) == text_of(2)
    # A retry of both keeps each text where it was: no ledger row changed owner.
    server.default = text_for
    assert run_cli("retry", "-c", cfg, inbox / "IMG_0.png", inbox / "IMG_0.jpg").returncode == 0
    wait_for(lambda: len(d.events("file.transcribed")) == 4 and status(cfg)["counts"]["done"] == 2, 30, what="both retried")
    mds2 = {front(m)["source"]: m for m in markdowns(inbox)}
    assert mds2 == mds
    assert body(mds["IMG_0.png"]) == text_of(1) and body(mds["IMG_0.jpg"]) == text_of(2)
    assert d.stop() == 0


# --- 2. `after: move` with a name the scanner reuses ---------------------------------------------


def test_after_move_with_a_reused_name_never_replaces_the_first_markdown(inbox, server, config, daemon):
    cfg = config({"after": {"move": "done"}})
    d = daemon(cfg)
    id_png(inbox / "scan.png", 1)
    wait_for(lambda: (inbox / "done" / "scan.png").exists(), 30, what="first scan moved")
    first = (inbox / "scan.md").read_text()
    id_png(inbox / "scan.png", 2)  # the scanner writes the same name again
    wait_for(lambda: len(list((inbox / "done").glob("scan*.png"))) == 2, 30, what="second scan moved")
    wait_for(lambda: status(cfg)["counts"]["pending"] + status(cfg)["counts"]["running"] == 0, 30, what="idle")
    assert (inbox / "scan.md").read_text() == first and body(inbox / "scan.md") == text_of(1)
    others = [m for m in markdowns(inbox) if m.name != "scan.md"]
    assert [body(m) for m in others] == [text_of(2)], [m.name for m in markdowns(inbox)]
    assert d.stop() == 0


# --- 3. an edit made while a write is in progress ------------------------------------------------


def test_an_edit_made_while_the_database_delays_the_write_is_kept(tmp_path, inbox, config, run_cli):
    cfg = config()
    photo = id_png(inbox / "a.png", 3)
    assert run_cli("once", "-c", cfg, photo).returncode == 0
    md = inbox / "a.md"
    # The second run reuses the stored text, so its Markdown differs from the first only in the stamp, to the
    # second: within the same second it would be the same bytes, with nothing to replace and nothing to test.
    stamp = front(md)["transcribed"]
    wait_for(lambda: datetime.now(UTC).replace(microsecond=0) > stamp, 5, what="the clock past the first stamp")
    # Another process holds the database's write lock: the second write is delayed inside handwatch.
    lock = sqlite3.connect(tmp_path / "state" / "state.sqlite3", isolation_level=None, timeout=30)
    lock.execute("BEGIN IMMEDIATE")
    proc = subprocess.Popen(
        [sys.executable, "-m", "handwatch", "-c", str(cfg), "once", str(photo)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        # The new text is on disk in its temporary file: handwatch has checked a.md and is about to replace it.
        wait_for(lambda: temps(inbox) or proc.poll() is not None, 60, what="the temporary output")
        md.write_text(md.read_text() + "\na person's correction\n")
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    out, err = proc.communicate(timeout=60)
    assert "a person's correction" in md.read_text()
    assert proc.returncode == 1 and "edited" in err, (out, err)
    assert not temps(inbox)


def test_once_with_the_database_locked_past_the_busy_timeout_says_so_in_one_line(tmp_path, inbox, config, run_cli):
    """Another process holds the state database's write lock for longer than handwatch waits for it (30 s):
    `once` ends with one line saying so and exit 75 (temporary: try again), not a traceback, and leaves
    no temporary file and no Markdown behind."""
    cfg = config()
    assert run_cli("once", "-c", cfg, id_png(inbox / "a.png", 1)).returncode == 0
    lock = sqlite3.connect(tmp_path / "state" / "state.sqlite3", isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        res = run_cli("once", "-c", cfg, id_png(inbox / "b.png", 2))
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert res.returncode == 75, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    said = [line for line in res.stderr.splitlines() if line.startswith("handwatch: ")]
    assert len(said) == 1 and "state database" in said[0] and "try again" in said[0], res.stderr
    assert not (inbox / "b.md").exists() and not temps(inbox)


# --- 4. same size and mtime, new content ---------------------------------------------------------


def test_new_content_with_the_same_size_and_mtime_renamed_over_a_done_file_is_transcribed(
    inbox, server, config, daemon, tmp_path
):
    cfg = config()
    d = daemon(cfg)
    a = id_png(inbox / "a.png", 1)
    wait_for(lambda: (inbox / "a.md").exists() and status(cfg)["counts"]["done"] == 1, 30, what="a.md")
    st = os.stat(a)
    new = id_png(inbox / ".syncthing.a.png.tmp", 2, fmt="PNG")  # same size: uncompressed PNG of the same dimensions
    assert new.stat().st_size == st.st_size
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))  # a tool that preserves mtimes
    os.rename(new, a)
    wait_for(lambda: body(inbox / "a.md") == text_of(2), 30, what="a.md holding the new content's text")
    assert d.stop() == 0


# --- 5. `once` with several files and `after: move` ----------------------------------------------


def test_once_with_several_files_and_after_move_does_all_of_them(inbox, config, run_cli):
    cfg = config({"after": {"move": "done"}})
    a, b = id_png(inbox / "a.png", 1), id_png(inbox / "b.png", 2)
    res = run_cli("once", "-c", cfg, a, b)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert res.stdout.split() == [str(inbox / "a.md"), str(inbox / "b.md")]
    assert sorted(p.name for p in (inbox / "done").iterdir()) == ["a.png", "b.png"]
    assert body(inbox / "b.md") == text_of(2)


# --- 6. a move folder named in a sub-folder's rule file is never an input ------------------------


def test_move_folder_of_a_sub_folder_rule_is_not_watched_as_input(inbox, server, config, daemon, run_cli):
    sub = inbox / "sub"
    sub.mkdir()
    (sub / ".handwatch.yaml").write_text("after: {move: done}\n")
    cfg = config()
    d = daemon(cfg)
    id_png(sub / "a.png", 1)
    wait_for(lambda: not (sub / "a.png").exists() and status(cfg)["counts"]["pending"] == 0, 30, what="a.png moved")
    assert d.stop() == 0
    res = run_cli("scan", "-c", cfg)  # everything without a transcription: the moved original is not an input
    assert res.returncode == 0, res.stderr
    assert len(server.requests) == 1
    assert [m.relative_to(inbox).as_posix() for m in markdowns(inbox)] == ["sub/a.md"]
    assert (sub / "done" / "a.png").exists()  # relative to the rule file's own folder


# --- 7. stopping, and moving an original -------------------------------------------------------


def two_page_pdf(path: Path, first: int, second: int) -> Path:
    from tests.support.daemon import id_image

    id_image(first, (300, 400)).save(path, "PDF", save_all=True, append_images=[id_image(second, (300, 400))], resolution=50)
    return path


def test_a_worker_that_outlives_the_stop_grace_never_writes_after_its_job_was_released(tmp_path, inbox, server, config, daemon):
    """Two PDFs in flight at SIGTERM. The stop grace runs out and both jobs go back to the queue. Then A's
    replies arrive while B's are still held: B's page thread keeps the process from exiting, which gave
    A's worker all the time it needed to write A's Markdown after its job was released — and the next
    start wrote it again. Now nothing is published once the jobs are handed back, and the page threads
    never hold up the exit."""
    from tests.support.daemon import ident_of

    release_a, release_b = threading.Event(), threading.Event()
    server.default = lambda rec: {**text_for(rec), "hold": release_a if ident_of(rec.image) in (1, 2) else release_b}
    cfg = config(stop_grace_s=1)
    d = daemon(cfg)
    two_page_pdf(inbox / "a.pdf", 1, 2)
    two_page_pdf(inbox / "b.pdf", 3, 4)
    wait_for(lambda: server.in_flight == 4, 30, what="every page of both PDFs in flight")
    d.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: d.events("daemon.stopped"), 30, what="the jobs released after the grace time")
    release_a.set()  # A's late replies arrive after its job went back to the queue
    try:
        wait_for(lambda: (inbox / "a.md").exists() or d.proc.poll() is not None, 30, what="A written or the exit")
    finally:
        release_b.set()
    assert d.proc.wait(timeout=60) == 0
    server.default = text_for
    d2 = daemon(cfg)
    wait_for(lambda: status(cfg)["counts"]["done"] == 2, 30, what="both PDFs done after the restart")
    assert d2.stop() == 0
    writes = [e for e in d2.events("file.transcribed") if e["path"].endswith("a.pdf")]
    assert len(writes) == 1, "a.md was written by the stopped daemon after its job was released, and again"
    assert body(inbox / "a.md") == f"<!-- page 1 -->\n\n{text_of(1)}\n\n<!-- page 2 -->\n\n{text_of(2)}"


def test_moving_an_original_never_replaces_what_is_at_the_destination(inbox, config, daemon):
    done = inbox / "done"
    done.mkdir()
    (done / "a.png").symlink_to("/nonexistent/target")  # someone's entry: a link that leads nowhere
    cfg = config({"after": {"move": "done"}})
    d = daemon(cfg)
    id_png(inbox / "a.png", 1)
    wait_for(lambda: not (inbox / "a.png").exists() and status(cfg)["counts"]["pending"] == 0, 30, what="a.png moved")
    assert os.path.islink(done / "a.png") and os.readlink(done / "a.png") == "/nonexistent/target"
    assert (done / "a-1.png").is_file()
    assert d.stop() == 0


# --- 8, 9. nothing written outside the watched folder --------------------------------------------


def test_an_output_template_cannot_climb_out_with_a_dot_dot_stem(tmp_path, inbox, server, config, daemon):
    outside = tree(tmp_path.parent)
    (inbox / ".handwatch.yaml").write_text("output: '{stem}/{stem}/x{stem}.md'\n")
    cfg = config()
    d = daemon(cfg)
    id_png(inbox / "...png", 1)  # stem '..'
    id_png(inbox / "fine.png", 2)
    wait_for(lambda: status(cfg)["counts"]["done"] + status(cfg)["counts"]["failed"] == 2, 30, what="both handled")
    assert d.stop() == 0
    reasons = job_states(cfg)
    assert "...png" in reasons and "name" in reasons["...png"]
    assert (inbox / "fine" / "fine" / "xfine.md").is_file()
    appeared = {p for p in tree(tmp_path.parent) - outside if not p.startswith(tmp_path.name + "/")}
    assert not appeared, appeared


def test_an_output_folder_that_is_a_symlink_to_outside_is_refused(tmp_path, inbox, config, run_cli):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (inbox / "notes").symlink_to(elsewhere)
    (inbox / ".handwatch.yaml").write_text("output: notes/{stem}.md\n")
    res = run_cli("once", "-c", config(), id_png(inbox / "a.png", 1))
    assert res.returncode == 1 and "outside" in res.stderr, res.stderr
    assert list(elsewhere.iterdir()) == []


def test_a_rule_file_cannot_move_originals_out_of_the_watched_folder(tmp_path, inbox, config, run_cli):
    (inbox / ".handwatch.yaml").write_text("after: {move: ../../x/$USER}\n")
    photo = id_png(inbox / "a.png", 1)
    cfg = config()
    before = tree(tmp_path.parent)
    res = run_cli("once", "-c", cfg, photo)
    assert res.returncode == 78 and "after.move" in res.stderr, res.stderr
    state = os.path.join(tmp_path.name, "state")
    assert photo.exists() and {p for p in tree(tmp_path.parent) if not p.startswith(state)} == before


# --- 10. permissions ------------------------------------------------------------------------------


def test_markdown_takes_the_originals_permissions_and_the_state_is_private(tmp_path, inbox, config, run_cli):
    photo = id_png(inbox / "a.png", 1)
    os.chmod(photo, 0o600)
    res = run_cli("once", "-c", config(), photo)
    assert res.returncode == 0, res.stderr
    assert stat.S_IMODE(os.stat(inbox / "a.md").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o700
    for f in (tmp_path / "state").iterdir():
        if f.name.startswith("state.sqlite3"):
            assert stat.S_IMODE(os.stat(f).st_mode) & 0o077 == 0, f


# --- 12. rule files and duplicate keys -------------------------------------------------------------


def test_recursive_and_poll_in_a_rule_file_are_refused_with_a_reason(inbox, config, run_cli):
    (inbox / ".handwatch.yaml").write_text("recursive: false\n")
    res = run_cli("once", "-c", config(), id_png(inbox / "a.png", 1))
    assert res.returncode == 78 and ".handwatch.yaml: recursive:" in res.stderr, res.stderr


def test_a_duplicate_key_in_the_config_is_an_error(tmp_path, inbox, run_cli):
    cfg = tmp_path / "dup.yaml"
    cfg.write_text(
        f"state_dir: {tmp_path / 'state'}\nfolders:\n  - path: {inbox}\n"
        f"defaults: {{engine: tesseract}}\nfolders:\n  - path: {tmp_path}\n"
    )
    res = run_cli("check", "-c", cfg)
    assert res.returncode == 78 and "folders: duplicate key" in res.stderr, res.stderr
