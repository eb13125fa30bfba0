"""Wiring: watchers feed settle, settle feeds the queue, workers drain it; signals and systemd notifications."""

from __future__ import annotations

import fcntl
import os
import queue as stdqueue
import signal
import sys
import threading
import time
from pathlib import Path

import sdnotify

from handwatch import log, output
from handwatch.config import Config
from handwatch.errors import EX_OK, ConfigError, HandwatchError
from handwatch.queue import this_owner
from handwatch.safefs import file_sig
from handwatch.scan import LEASE_S, MAX_ATTEMPTS
from handwatch.settle import Settler
from handwatch.watch import Watcher, walk
from handwatch.worker import Gate, Worker, build

PUBLISH_GRACE_S = 10.0  # after the stop grace: time for workers already writing their Markdown to finish


class Daemon:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.log = log.get("daemon")
        self.stopping = threading.Event()
        self.events: stdqueue.SimpleQueue = stdqueue.SimpleQueue()
        self.wake = threading.Condition()
        self.notifier = sdnotify.SystemdNotifier()

    def _lock(self) -> None:
        self.cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self._lockfile = open(self.cfg.state_dir / "daemon.lock", "w")
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise HandwatchError(f"another handwatch daemon is running with state_dir {self.cfg.state_dir}") from None

    def run(self) -> int:
        self._lock()
        self.db, self.queue, self.pipeline, self.candidates, n = build(self.cfg)
        self.gate = Gate()
        self.worker = Worker(self.queue, self.pipeline, self.candidates, self.gate)
        self.owner = this_owner()
        self.beat = time.monotonic()
        extras = self._start_extras()
        requeued = self.queue.recover()
        removed = sum(output.remove_stale_temps(f.path) for f in self.cfg.folders if f.path.is_dir())
        self.log.info("daemon.starting", workers=n, requeued=requeued, stale_temps_removed=removed,
                      folders=[str(f.path) for f in self.cfg.folders])
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        watcher = Watcher(self.candidates.specs(), lambda p, moved: self.events.put(("moved" if moved else "event", p)),
                          lambda d: self.events.put(("dir", d)))
        watcher.start()
        threading.Thread(target=self._rescan_loop, name="rescan", daemon=True).start()
        threads = [threading.Thread(target=self._work_loop, name=f"worker-{i}", daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        self.notifier.notify("READY=1")
        self.log.info("daemon.ready", modes={str(k): v for k, v in watcher.modes.items()})
        try:
            self._settle_loop()
        finally:
            self.notifier.notify("STOPPING=1")
            grace = self.cfg.stop_grace_s
            self.log.info("daemon.stopping", grace_s=grace)
            watcher.stop()
            for extra in extras:
                extra.stop()
            with self.wake:
                self.wake.notify_all()
            deadline = time.monotonic() + grace
            for t in threads:
                t.join(timeout=max(0.0, deadline - time.monotonic()))
            # Workers still waiting for a reply publish nothing from here on; those already writing finish.
            self.gate.close(PUBLISH_GRACE_S)
            left = self._release_mine()
            self.log.info("daemon.stopped", left_queued=left)
        return EX_OK

    def _start_extras(self) -> list:
        """The review page and notifications, each on its own thread so neither can hold up the main loop.
        A missing password is a configuration error (nothing starts); a port in use only costs the page."""
        extras: list = []
        if self.cfg.web is not None:
            from handwatch.web.server import WebServer

            web = WebServer(self.cfg, self.db, beat=lambda: None if self.stopping.is_set() else time.monotonic() - self.beat)
            try:
                web.start()
                extras.append(web)
            except HandwatchError as e:
                self.log.error("web.failed", reason=str(e))
        if self.cfg.notify is not None:
            from handwatch.notify import Notifier

            extras.append(Notifier(self.cfg, self.db))
            extras[-1].start()
        return extras

    def _release_mine(self) -> int:
        """Jobs still in flight after the grace time go back to pending, no attempt counted."""
        rows = self.db.connect().execute("SELECT id FROM jobs WHERE state='running' AND owner=?", (self.owner,)).fetchall()
        self.db.connect().execute(
            "UPDATE jobs SET state='pending', attempts=MAX(0, attempts-1), owner=NULL, lease_until=NULL WHERE state='running' AND owner=?",
            (self.owner,))
        return len(rows)

    def _settle_loop(self) -> None:
        settler = Settler(lambda p: self._settle_s(p))
        watchdog_every = int(os.environ.get("WATCHDOG_USEC", "0")) / 2e6
        last_ping = 0.0
        while not self.stopping.is_set():
            now = self.beat = time.monotonic()
            self._drain_events(settler, now)
            for path in settler.ready(now, file_sig):
                self._enqueue(path)
            if watchdog_every and now - last_ping >= watchdog_every:
                counts = self.queue.counts()
                self.notifier.notify(f"WATCHDOG=1\nSTATUS=pending {counts['pending']}, running {counts['running']}, "
                                     f"done {counts['done']}, failed {counts['failed']}")
                last_ping = now
            due = settler.next_due()
            wait = 0.5 if due is None else min(0.5, max(0.02, due - time.monotonic()))
            self.stopping.wait(wait)

    def _settle_s(self, path: Path) -> float:
        try:
            return self.pipeline.rules.resolve(path).rule.settle_s
        except ConfigError:
            return self.cfg.base_rule().settle_s

    def _drain_events(self, settler: Settler, now: float) -> None:
        while True:
            try:
                kind, path = self.events.get_nowait()
            except stdqueue.Empty:
                return
            if kind == "dir":
                for f in walk(path, True):
                    self.events.put(("scan", f))
                continue
            path = Path(os.path.abspath(path))
            rule, _why = self.candidates.rule(path)
            if rule is None:
                continue
            sig = file_sig(path)
            if sig is None:
                settler.forget(path)
                continue
            # A known version is skipped without hashing, unless something was renamed onto the path:
            # a rename can bring other bytes with the same size and mtime.
            if kind != "moved" and path not in settler and self.queue.known(path, sig):
                continue
            settler.event(path, now, sig)

    def _enqueue(self, path: Path) -> None:
        sig = file_sig(path)
        if sig is None:
            return
        try:
            sha = output.sha256_file(path)
        except OSError as e:
            self.log.warning("file.unreadable", path=str(path), error=str(e.strerror or e))
            return
        if self.queue.enqueue(path, sha, sig):
            self.log.info("file.settled", path=str(path), size=sig[0])
            with self.wake:
                self.wake.notify()

    def _rescan_loop(self) -> None:
        """Catch-up at start, then every rescan_s: a safety net for events that were lost."""
        while not self.stopping.is_set():
            n = 0
            for path in self.candidates.walk():
                if self.stopping.is_set():
                    return
                self.events.put(("scan", path))
                n += 1
            self.log.info("rescan.done", files=n)
            self.stopping.wait(self.cfg.rescan_s)

    def _work_loop(self) -> None:
        while not self.stopping.is_set():
            job = self.queue.claim(self.owner, LEASE_S, MAX_ATTEMPTS)
            if job is None:
                due = self.queue.next_due()
                wait = 1.0 if due is None else min(1.0, max(0.05, due - time.time()))
                with self.wake:
                    self.wake.wait(timeout=wait)
                continue
            self.worker.handle(job)
