"""SIGKILL at random moments over a 100-file run: while files settle, while one is decoded, while a request
is in flight, while a Markdown is being written — ten kills, each followed by a restart. The phases and
delays are drawn from a seeded random generator, so every run kills in the same phases in the same order."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import threading
from pathlib import Path

from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

from handwatch.safefs import TMP_SUFFIX
from handwatch.store.state import encode
from tests.faults.harness import World
from tests.support.daemon import id_image, ident_of, temps, text_for, text_of
from tests.support.fakeopenai import FakeOpenAI, wait_for

SEED = 10
PHASES = ["settle"] * 2 + ["decode"] * 2 + ["request"] * 3 + ["write"] * 3
BATCH = 10  # files per round: 10 rounds make the 100-file run
SETTLE_S = 0.5


class _KillOnTemp(FileSystemEventHandler):
    """The test's own inotify watch: SIGKILL the daemon the moment it creates a temporary Markdown."""

    def __init__(self, w: World):
        self.w, self.armed = w, threading.Event()

    def on_created(self, event) -> None:
        if self.armed.is_set() and str(event.src_path).endswith(TMP_SUFFIX):
            self.armed.clear()
            os.kill(self.w.pid, signal.SIGKILL)


def _db(w: World) -> sqlite3.Connection:
    return sqlite3.connect(w.root / "state" / "state.sqlite3")


def _queued(w: World, paths: list[Path]) -> int:
    with _db(w) as db:
        return sum(db.execute("SELECT COUNT(*) FROM jobs WHERE path=?", (encode(p),)).fetchone()[0] for p in paths)


def _running(w: World, path: Path) -> bool:
    with _db(w) as db:
        return db.execute("SELECT 1 FROM jobs WHERE path=? AND state='running'", (encode(path),)).fetchone() is not None


def _batch(w: World, n: int, big: bool) -> list[Path]:
    """Ten photos written in place (not renamed); with `big`, the first is large enough to take a while to
    decode (12 MP)."""
    out = []
    for ident in range(n * BATCH, (n + 1) * BATCH):
        path = w.inbox / f"k{ident:03}.png"
        if big and ident % BATCH == 0:
            id_image(ident, (4000, 3000)).save(path, "PNG", compress_level=1)
            w.expect_good(path, text_of(ident))
        else:
            w.photo(path.name, ident)
        out.append(path)
    return out


def test_sigkill_at_random_moments_over_a_hundred_file_run(tmp_path, fault):
    fault.case = "SIGKILL ×10 at seeded random moments (settle, decode, in-flight request, Markdown write) over 100 files"
    rng = random.Random(SEED)
    phases = PHASES[:]
    rng.shuffle(phases)
    server = FakeOpenAI().start()
    request_kill = threading.Event()
    asked: set[int] = set()

    def reply(rec):
        if request_kill.is_set():
            request_kill.clear()
            os.kill(w.pid, signal.SIGKILL)  # while this request is in flight
        asked.add(ident_of(rec.image))
        return text_for(rec)

    server.default = reply
    w = World(tmp_path / "w", server.url, settle_s=SETTLE_S)
    on_temp = _KillOnTemp(w)
    watcher = Observer()
    watcher.schedule(on_temp, str(w.inbox))
    watcher.start()
    hits: dict[str, int] = {}
    try:
        w.start()
        for n, phase in enumerate(phases):
            paths = _batch(w, n, big=phase == "decode")
            if phase == "settle":  # the batch was just written: it cannot have settled yet
                threading.Event().wait(rng.uniform(0, SETTLE_S * 0.8))
                w.kill()
                hit = _queued(w, paths) < len(paths)
            elif phase == "decode":  # the large photo claimed, its request not sent yet: hashed, decoded, prepared
                big, ident = paths[0], n * BATCH
                wait_for(
                    lambda big=big, ident=ident: _running(w, big) and ident not in asked, 60, interval=0.001, what="a decode"
                )
                w.kill()
                hit = ident not in asked
            elif phase == "request":
                request_kill.set()
                wait_for(lambda: w.daemon.proc.poll() is not None, 60, what="a kill during a request")
                w.kill()
                hit = True
            else:
                on_temp.armed.set()
                wait_for(lambda: w.daemon.proc.poll() is not None, 60, what="a kill during a write")
                w.kill()
                hit = bool(temps(w.inbox))  # the kill came before the rename: a temporary file is left
            hits[phase] = hits.get(phase, 0) + hit
            w.start()
            if phase == "decode":
                # The large photo is decoded again first thing after the restart: let it finish, or the next
                # kills would land in its decode again, and a death while decoding counts against the file by
                # design (crashmarks.py). The other kills come while the restart is still redoing what the
                # last one interrupted.
                w.wait_settled()
        w.check()
        restarts = w.events("daemon.starting")
        fault.note(
            f"{len(phases)} kills, {len(w.good)} Markdown each with its own text, none failed; kills that "
            f"landed in their phase: "
            + ", ".join(f"{p} {hits[p]}/{phases.count(p)}" for p in sorted(hits))
            + f"; deaths counted while decoding: {sum(r.get('died_decoding', 0) for r in restarts)}"
        )
    finally:
        watcher.stop()
        watcher.join()
        w.close()
        server.stop()
