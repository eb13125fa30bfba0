"""Wiring: watchers feed the intake, the intake feeds the queue, workers drain it; signals and systemd.

Threads and what each may block on:
- main: signals and systemd notifications only. It never touches a file or the database, so a hung share,
  a huge file or a locked database can never stop the watchdog pings by accident — only on purpose, when
  `_healthy()` says work cannot progress.
- intake (+ hashers): events, settling, rule files, hashing, enqueueing (intake.py).
- rescan: walks the folders at start, every `rescan_s`, and after an inotify overflow.
- monitor: keeps folders watched, replaces dead workers, releases their jobs, computes the status line.
- workers: claim a job, run it (worker.py); an error is logged and backed off, never fatal."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import threading
import time
from pathlib import Path

import sdnotify

from handwatch import __version__, crashmarks, log, output
from handwatch.config import Config
from handwatch.errors import EX_OK, HandwatchError, StateBusy
from handwatch.intake import Intake, settle_for
from handwatch.queue import owner_alive, this_owner
from handwatch.scan import LEASE_S, MAX_ATTEMPTS
from handwatch.state import FolderStates
from handwatch.watch import Watcher, walk
from handwatch.worker import Gate, Worker, build

PUBLISH_GRACE_S = 10.0  # after the stop grace: time for workers already writing their Markdown to finish
MONITOR_EVERY_S = 1.0
WORKER_BACKOFF_CAP_S = 60.0


class Daemon:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.log = log.get("daemon")
        self.stopping = threading.Event()
        self.rescan_now = threading.Event()
        self.wake = threading.Condition()
        self.notifier = sdnotify.SystemdNotifier()
        self.status_line = "starting"
        self.monitor_beat = time.monotonic()
        self.current: dict[int, int] = {}  # worker slot -> id of the job it holds
        self.orphans: set[int] = set()  # jobs whose worker failed before it could hand them back
        self.workers: list[threading.Thread] = []
        self.started = time.time()

    # --- start and stop -----------------------------------------------------------------------------

    def _lock(self) -> None:
        self.cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Opened without truncating: a second daemon must not wipe the first one's name before it fails to lock.
        self._lockfile = os.fdopen(os.open(self.cfg.state_dir / "daemon.lock", os.O_RDWR | os.O_CREAT, 0o600), "r+")
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateBusy(f"another handwatch daemon is running with state_dir {self.cfg.state_dir}") from None
        self._lockfile.truncate(0)  # who holds it, for `handwatch status`
        self._lockfile.write(json.dumps({"pid": os.getpid(), "version": __version__, "since": time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started))}))
        self._lockfile.flush()

    def run(self) -> int:
        self._lock()
        self.db, self.queue, self.pipeline, self.candidates, self.n = build(self.cfg)
        self.owner = this_owner()
        died = crashmarks.collect(self.cfg.state_dir, owner_alive)
        requeued = self.queue.recover(died_decoding=died)
        self.marks = crashmarks.DecodeMarks(self.cfg.state_dir, self.owner)
        self.gate = Gate()
        self.worker = Worker(self.queue, self.pipeline, self.candidates, self.gate, self.marks)
        self.intake = Intake(self.queue, self.candidates, self.stopping, self._wake_workers,
                             settle_for(self.candidates, self.cfg.base_rule().settle_s))
        self.extras = self._start_extras()
        self.log.info("daemon.starting", workers=self.n, requeued=requeued, died_decoding=len(died),
                      folders=[str(f.path) for f in self.cfg.folders])
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        self.watcher = Watcher(self.candidates.specs(),
                               lambda p, moved: self.intake.put("moved" if moved else "event", p),
                               lambda d: self.intake.put("dir", d), on_overflow=self._overflow)
        self.watcher.start()
        self.intake.start()
        for target, name in ((self._rescan_loop, "rescan"), (self._monitor_loop, "monitor")):
            threading.Thread(target=target, name=name, daemon=True).start()
        for slot in range(self.n):
            self.workers.append(self._start_worker(slot))
        self.notifier.notify("READY=1")
        self.log.info("daemon.ready", modes={str(k): v for k, v in self.watcher.modes.items()})
        try:
            self._notify_loop()
        finally:
            self._stop()
        return EX_OK

    def _stop(self) -> None:
        self.stopping.set()
        self.notifier.notify("STOPPING=1")
        grace = self.cfg.stop_grace_s
        self.log.info("daemon.stopping", grace_s=grace)
        self.watcher.stop()
        for extra in self.extras:
            extra.stop()
        self._wake_workers(everyone=True)
        deadline = time.monotonic() + grace
        for t in self.workers:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        # Workers still waiting for a reply publish nothing from here on; those already writing finish.
        self.gate.close(PUBLISH_GRACE_S)
        left = 0
        try:
            left = self.queue.release(self.owner)
        except Exception as e:  # a locked database: the next start requeues them (this pid will be gone)
            self.log.error("daemon.release_failed", error=str(e))
        self.marks.close()
        self.log.info("daemon.stopped", left_queued=left)

    def _start_extras(self) -> list:
        """The review page and notifications, each on its own thread so neither can hold up the main loop.
        A missing password is a configuration error (nothing starts); a port in use only costs the page."""
        extras: list = []
        if self.cfg.web is not None:
            from handwatch.web.server import WebServer

            web = WebServer(self.cfg, self.db, beat=self._beat_age)
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

    def _beat_age(self) -> float | None:
        """Seconds since the intake and the monitor last showed life, for /healthz (None while stopping)."""
        if self.stopping.is_set() or not hasattr(self, "intake"):
            return None
        if not self.intake.alive():
            return float("inf")
        return time.monotonic() - min(self.intake.heartbeat, self.monitor_beat)

    # --- the main thread: systemd only ----------------------------------------------------------------

    def _notify_loop(self) -> None:
        every = int(os.environ.get("WATCHDOG_USEC", "0")) / 2e6
        stale_after = max(30.0, 2 * every)
        last_ping = 0.0
        while not self.stopping.is_set():
            now = time.monotonic()
            if every and now - last_ping >= every:
                why = self._unhealthy(now, stale_after)
                if why is None:
                    self.notifier.notify(f"WATCHDOG=1\nSTATUS={self.status_line}")
                    last_ping = now
                else:
                    self.log.error("daemon.unhealthy", reason=why)
            self.stopping.wait(min(every / 2, 1.0) if every else 1.0)

    def _unhealthy(self, now: float, stale_after: float) -> str | None:
        """Why work cannot progress (then systemd should restart us), or None."""
        if not self.intake.alive() or now - self.intake.heartbeat > stale_after:
            return "the intake thread stopped"
        if now - self.monitor_beat > stale_after:
            return "the monitor thread stopped"
        return None

    # --- monitor: folders, workers, status --------------------------------------------------------------

    def _monitor_loop(self) -> None:
        status_every, last_status = 5.0, 0.0
        folders = FolderStates(self.db)
        shown: dict = {}
        while not self.stopping.is_set():
            self.monitor_beat = time.monotonic()
            try:
                for path in self.watcher.ensure():
                    self.intake.put("dir", path)  # (re)watched: walk it for what arrived meanwhile
                if self.watcher.states != shown:
                    folders.set(self.watcher.states)
                    shown = dict(self.watcher.states)
                self._replace_dead_workers()
                if self.orphans:
                    for job_id in list(self.orphans):
                        self.queue.release_job(job_id, self.owner)
                        self.orphans.discard(job_id)
                if time.monotonic() - last_status >= status_every:
                    self.status_line = self._status_line()
                    last_status = time.monotonic()
            except Exception as e:
                self.log.error("monitor.error", error=f"{type(e).__name__}: {e}")
            self.stopping.wait(MONITOR_EVERY_S)

    def _status_line(self) -> str:
        c = self.queue.counts()
        folders = sum(1 for s in self.watcher.states.values() if s.startswith("watching"))
        return (f"watching {folders}/{len(self.cfg.folders)} folders; pending {c['pending']}, running {c['running']}, "
                f"done {c['done']}, failed {c['failed']}")

    def _replace_dead_workers(self) -> None:
        for slot, t in enumerate(self.workers):
            if not t.is_alive() and not self.stopping.is_set():
                job_id = self.current.pop(slot, None)
                if job_id is not None:
                    self.orphans.add(job_id)
                self.log.error("worker.died", slot=slot, job=job_id)
                self.workers[slot] = self._start_worker(slot)

    # --- rescans --------------------------------------------------------------------------------------

    def _overflow(self) -> None:
        self.log.warning("watch.overflow", action="walking every folder again: the kernel dropped events")
        self.rescan_now.set()

    def _rescan_loop(self) -> None:
        """Catch-up at start, then every rescan_s, and at once after an inotify overflow: a safety net for
        events that were lost. The first walk also removes temporaries a killed process left behind."""
        first = True
        while not self.stopping.is_set():
            n = removed = 0
            for f in self.cfg.folders:
                r = self.cfg.folder_rule(f)
                for path in walk(f.path, r.recursive):
                    if self.stopping.is_set():
                        return
                    if output.is_temp(path.name):
                        removed += first and _remove_stale(path, self.started)
                        continue
                    self.intake.put("scan", path)
                    n += 1
            self.log.info("rescan.done", files=n, stale_temps_removed=removed)
            first = False
            self.rescan_now.wait(self.cfg.rescan_s)
            self.rescan_now.clear()

    # --- workers --------------------------------------------------------------------------------------

    def _start_worker(self, slot: int) -> threading.Thread:
        t = threading.Thread(target=self._work_loop, args=(slot,), name=f"worker-{slot}", daemon=True)
        t.start()
        return t

    def _wake_workers(self, everyone: bool = False) -> None:
        with self.wake:
            self.wake.notify_all() if everyone else self.wake.notify()

    def _work_loop(self, slot: int) -> None:
        """Claim, work, repeat. Any error (a database locked by another process for longer than its busy
        timeout, say) is logged and backed off; the job in hand goes back to the queue."""
        failures = 0
        while not self.stopping.is_set():
            job = None
            try:
                job = self.queue.claim(self.owner, LEASE_S, MAX_ATTEMPTS)
                if job is None:
                    due = self.queue.next_due()
                    wait = 1.0 if due is None else min(1.0, max(0.05, due - time.time()))
                    with self.wake:
                        self.wake.wait(timeout=wait)
                    continue
                self.current[slot] = job.id
                self.worker.handle(job)
                failures = 0
            except Exception as e:
                failures += 1
                delay = min(WORKER_BACKOFF_CAP_S, 2.0 ** min(failures, 6))
                self.log.error("worker.error", slot=slot, error=f"{type(e).__name__}: {e}", retry_in_s=delay)
                if job is not None:
                    self.orphans.add(job.id)
                self.stopping.wait(delay)
            finally:
                self.current.pop(slot, None)


def _remove_stale(path: Path, started: float) -> int:
    """A temporary output older than this process was left by a killed one; its target was never replaced."""
    try:
        if os.lstat(path).st_mtime < started:
            os.unlink(path)
            return 1
    except OSError:
        pass
    return 0
