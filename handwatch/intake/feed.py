"""Events in, jobs out: settle each path, hash it in a small pool, and enqueue it — off the main thread.

The main thread only talks to systemd. Everything here touches the watched folders (stat, rule files,
reading whole files to hash them) and the database, any of which can be slow: a 40 GB sparse file, a
hung network share, a database another process holds locked. So it runs on its own threads, reports
that it is alive through `heartbeat`, and survives any single path going wrong."""

from __future__ import annotations

import os
import queue as stdqueue
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from handwatch import log, metrics, safefs
from handwatch.errors import ConfigError
from handwatch.intake.candidates import LINK_OUT, Candidates
from handwatch.intake.settle import NOT_READ, Settler
from handwatch.intake.watch import walk
from handwatch.safefs import file_sig
from handwatch.store.jobs import JobQueue

MAX_INPUT_BYTES = 2 << 30  # no photo or scan is this large; hashing one would only waste the disk's time
HASH_THREADS = 2
BATCH = 500  # events handled between two heartbeats
OFFER_BATCH = 500  # paths looked up in one query by a walk
DB_RETRY_S = 2.0
# Why a file is not taken that its owner would want to know; the rest (temporaries, junk, excluded names) is noise.
WORTH_SAYING = (NOT_READ, LINK_OUT)
MAX_SAID = 100_000


def markdown(name: str) -> bool:
    """Outputs always end in .md (config/schema.py), and no input does: a walk need not look at them."""
    return name.endswith(".md")


class Intake:
    def __init__(self, queue: JobQueue, candidates: Candidates, stopping: threading.Event, on_new_job: Callable[[], None]):
        # `candidates` is replaced whole when the daemon reloads its configuration: read it afresh each time.
        self.queue, self.candidates, self.stopping = queue, candidates, stopping
        self.on_new_job = on_new_job
        self.events: stdqueue.SimpleQueue = stdqueue.SimpleQueue()
        self.settler = Settler(self._settle_s)
        self.wake = threading.Event()
        self.to_hash: stdqueue.Queue = stdqueue.Queue()
        self.hashing: set[Path] = set()
        self.lock = threading.Lock()
        self.heartbeat = time.monotonic()
        self.log = log.get("intake")
        self.threads: list[threading.Thread] = []
        self.said: dict[Path, safefs.FileSig] = {}  # files not taken, and the version that was logged

    # --- fed by the watchers and the rescan -----------------------------------------------------

    def put(self, kind: str, path: Path) -> None:
        """kind: 'event' (created/modified), 'moved' (renamed into place), 'scan' (found by a walk), 'dir'."""
        self.events.put((kind, path))
        self.wake.set()

    def offer(self, found: Iterable[Path], beat: bool = False) -> int:
        """Files a walk found. A version that already has a job (same size, mtime, inode and ctime) is
        passed over right here: a stat each and one database query per batch, no rule lookup, no
        hashing, nothing read. Markdown and temporary names are never inputs and go by unlooked-at.
        The rest become 'scan' events. Returns how many did. `beat`: the intake's own thread walks
        (a folder moved in or watched again), and says it is alive at each file, however slow the disk."""
        batch: list[tuple[Path, safefs.FileSig]] = []
        n = 0

        for path in found:
            if beat:
                self.heartbeat = time.monotonic()
            name = path.name
            if markdown(name) or safefs.is_temp(name):
                continue
            sig = file_sig(path)
            if sig is None:
                continue
            batch.append((path, sig))
            if len(batch) >= OFFER_BATCH:
                n += self._flush(batch)
        return n + self._flush(batch)

    def _flush(self, batch: list[tuple[Path, safefs.FileSig]]) -> int:
        known = self.queue.known_many(batch)
        for path, _ in batch:
            if path not in known:
                self.put("scan", path)
        n = len(batch) - len(known)
        batch.clear()
        return n

    def _settle_s(self, path: Path) -> float:
        candidates = self.candidates
        try:
            return candidates.book.resolve(path).rule.settle_s
        except ConfigError:  # a broken rule file: its files fail with its reason once they settle
            return candidates.cfg.base_rule().settle_s

    def start(self) -> None:
        self.threads = [threading.Thread(target=self._guarded, args=(self._settle_loop,), name="intake", daemon=True)]
        self.threads += [
            threading.Thread(target=self._guarded, args=(self._hash_loop,), name=f"hash-{i}", daemon=True)
            for i in range(HASH_THREADS)
        ]
        for t in self.threads:
            t.start()

    def alive(self) -> bool:
        return all(t.is_alive() for t in self.threads)

    def _guarded(self, loop: Callable[[], None]) -> None:
        """A loop that raises is logged and restarted: no single path may stop the intake for good."""
        while not self.stopping.is_set():
            try:
                loop()
                return
            except Exception:
                self.log.exception("intake.crashed")
                self.stopping.wait(1.0)

    # --- settling --------------------------------------------------------------------------------

    def _settle_loop(self) -> None:
        while not self.stopping.is_set():
            self.heartbeat = time.monotonic()
            self._drain()
            now = time.monotonic()
            for path in self.settler.ready(now, file_sig):
                with self.lock:
                    if path in self.hashing:
                        self.settler.event(path, now, file_sig(path))  # still hashing the last version
                        continue
                    self.hashing.add(path)
                self.to_hash.put(path)
            due = self.settler.next_due()
            self.wake.clear()
            if self.events.empty():  # settle on the event itself, not on the next tick of a poll
                self.wake.wait(0.5 if due is None else min(0.5, max(0.0, due - time.monotonic())))

    def _drain(self) -> None:
        for _ in range(BATCH):
            try:
                kind, path = self.events.get_nowait()
            except stdqueue.Empty:
                return
            try:
                with metrics.cpu("intake"):
                    self._one(kind, path)
            except sqlite3.OperationalError as e:  # "database is locked": look at it again shortly
                self.log.warning("intake.db_busy", path=str(path), error=str(e))
                if kind == "dir":  # the walk again shortly, not the folder as if it were a file to settle
                    retry = threading.Timer(DB_RETRY_S, self.put, (kind, path))
                    retry.daemon = True
                    retry.start()
                else:
                    self.settler.event(Path(os.path.abspath(path)), time.monotonic() + DB_RETRY_S, None)
            except Exception:
                self.log.exception("intake.path_failed", path=str(path))

    def _one(self, kind: str, path: Path) -> None:
        if kind == "dir":
            self.offer(walk(path, True, skip_name=markdown), beat=True)
            return
        path = Path(os.path.abspath(path))
        rule, why = self.candidates.rule(path)
        if rule is None:
            self._ignored(path, why)
            return
        sig = file_sig(path)
        if sig is None:
            self.settler.forget(path)
            return
        # A known version is skipped without hashing, unless something was renamed onto the path:
        # a rename can bring other bytes with the same size and mtime.
        if kind != "moved" and path not in self.settler and self.queue.known(path, sig):
            return
        self.settler.event(path, time.monotonic(), sig)

    def _ignored(self, path: Path, why: str | None) -> None:
        """A file someone may have expected handwatch to take (a .gif, a link out of the folder) is said
        once per version at info; temporaries, junk, Markdown and excluded names go by without a word."""
        if why not in WORTH_SAYING or path.name.endswith(".md"):
            return
        sig = file_sig(path)
        if sig is None or self.said.get(path) == sig:
            return
        if len(self.said) >= MAX_SAID:
            self.said.clear()  # bounded memory; at worst a file is mentioned once more
        self.said[path] = sig
        self.log.info("file.ignored", path=str(path), reason=why)

    # --- hashing -------------------------------------------------------------------------------

    def _hash_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                path = self.to_hash.get(timeout=0.5)
            except stdqueue.Empty:
                continue
            try:
                with metrics.cpu("intake"):
                    self._enqueue(path)
            except sqlite3.OperationalError as e:
                self.log.warning("intake.db_busy", path=str(path), error=str(e))
                self.put("scan", path)
                self.stopping.wait(DB_RETRY_S)
            except Exception:
                self.log.exception("intake.path_failed", path=str(path))
            finally:
                with self.lock:
                    self.hashing.discard(path)

    def _enqueue(self, path: Path) -> None:
        try:
            st = os.stat(path)
        except OSError:
            return
        sig = safefs.FileSig.of(st)
        if not stat.S_ISREG(st.st_mode):
            self._park(path, sig, f"not a regular file ({safefs.kind_of(st.st_mode)})", failed=True)
            return
        if st.st_size > MAX_INPUT_BYTES:
            self._park(
                path,
                sig,
                f"file is {st.st_size / 1e9:.1f} GB, over the {MAX_INPUT_BYTES / 1e9:.1f} GB limit for a photo or scan",
                failed=True,
            )
            return
        try:
            sha = safefs.sha256_file(path)
        except PermissionError as e:
            self._park(path, sig, f"waiting for permission to read ({e.strerror}); it is picked up once readable", failed=False)
            return
        except safefs.Unsafe as e:
            self._park(path, sig, str(e.strerror), failed=True)
            return
        except OSError as e:
            self.log.warning("file.unreadable", path=str(path), error=str(e.strerror or e))
            return
        if self.queue.enqueue(path, sha, sig):
            self.log.info("file.settled", path=str(path), size=sig.size)
            self.on_new_job()

    def _park(self, path: Path, sig: safefs.FileSig, reason: str, failed: bool) -> None:
        if self.queue.park(path, sig, reason, failed):
            (self.log.warning if failed else self.log.info)("file.parked", path=str(path), reason=reason)
