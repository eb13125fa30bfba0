"""Wiring: watchers feed the intake, the intake feeds the queue, workers drain it; signals, reloads and systemd.

Threads and what each may block on:
- main: signals and systemd notifications only. It never touches a file, the database or the log, so
  a hung share, a huge file, a locked database or a stuck journal can never stop the watchdog pings by
  accident — only on purpose, when `_unhealthy()` says work cannot progress.
- intake (+ hashers): events, settling, rule files, hashing, enqueueing (intake/feed.py).
- rescan: walks the folders at start, every `rescan_s`, and after an inotify overflow.
- monitor: applies a reloaded configuration to the watchers and the pool, keeps folders watched,
  replaces dead workers (workpool.py), computes the status line.
- reload (while one runs): reads and checks the new configuration and builds what it needs.
- workers: claim a job, run it with the current runtime (worker.py); an error is logged and backed off."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import threading
import time
from pathlib import Path

from handwatch import __version__, log, safefs
from handwatch.config import loader
from handwatch.config.schema import Config
from handwatch.errors import EX_OK, ConfigError, HandwatchError, StateBusy
from handwatch.intake.feed import Intake, markdown
from handwatch.intake.watch import Watcher, walk
from handwatch.prepare import alloc
from handwatch.service import crashmarks, prefetch, preflight, systemd
from handwatch.service.worker import DaemonPool, Gate, Runtime, build_runtime
from handwatch.service.workpool import WorkerPool
from handwatch.store.jobs import JobQueue, owner_alive, this_owner
from handwatch.store.state import FolderStates, Health, StateDB

PUBLISH_GRACE_S = 10.0  # after the stop grace: time for workers already writing their Markdown to finish
MONITOR_EVERY_S = 1.0
STATUS_EVERY_S = 2.0
DEAD_GRACE_S = 5.0  # a dead worker or observer is replaced within a monitor turn; longer means it is not
APPLY_TIMEOUT_S = 60.0
RESCAN_RETRY_S = 30.0  # after a rescan the database or the disk failed


class Daemon:
    def __init__(self, cfg: Config, log_level: str | None = None):
        self.rt: Runtime  # built by run(), before any thread that reads it; swapped whole by a reload, read afresh where used
        self.cfg = cfg  # as started: the state directory, the review page and notifications stay with it
        self.log_level = log_level  # --log-level: wins over the configuration's, also after a reload
        self.log = log.get("daemon")
        self.stopping = threading.Event()
        self.tick = threading.Event()  # wakes the main loop: a signal, a finished reload
        self.rescan_now = threading.Event()
        self.reload_asked = threading.Event()
        self.reload_done = threading.Event()
        self.applied = threading.Condition()
        self.applied_rt: Runtime | None = None
        self.reloading: threading.Thread | None = None
        self.notifier = systemd.Notifier()
        self.status_line = "starting"
        self.monitor_beat = time.monotonic()
        self.started = time.time()
        self.dead_since: float | None = None
        self.health: str | None = None  # why work cannot progress, as the main thread last found
        self.reload_failed = False

    # --- start and stop -----------------------------------------------------------------------------

    def _lock(self) -> None:
        try:
            self.cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Opened without truncating: a second daemon must not wipe the first one's name before it fails to lock.
            self._lockfile = os.fdopen(os.open(self.cfg.state_dir / "daemon.lock", os.O_RDWR | os.O_CREAT, 0o600), "r+")
        except OSError as e:
            raise ConfigError(self.cfg.source, [f"state_dir: cannot use {self.cfg.state_dir}: {e.strerror or e}"]) from None
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateBusy(f"another handwatch daemon is running with state_dir {self.cfg.state_dir}") from None
        self._lockfile.truncate(0)  # who holds it, for `handwatch status`
        self._lockfile.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "version": __version__,
                    "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
                }
            )
        )
        self._lockfile.flush()

    def run(self) -> int:
        preflight.check(self.cfg)  # what would fail every file later is a configuration error now
        self._lock()
        self.db = StateDB(self.cfg.state_dir)
        self.queue = JobQueue(self.db)
        self.owner = this_owner()
        died = crashmarks.collect(self.cfg.state_dir, owner_alive)
        requeued = self.queue.recover(died_decoding=died)
        self.marks = crashmarks.DecodeMarks(self.cfg.state_dir, self.owner)
        self.gate = Gate()
        self.page_pool = DaemonPool(0)
        self.preparers = DaemonPool(prefetch.preparers(), "prepare")
        self.rt = build_runtime(self.cfg, self.db, self.queue, self.gate, self.marks, self.page_pool, preparers=self.preparers)
        self.applied_rt = self.rt
        self.pool = WorkerPool(self.queue, self.owner, self.stopping, lambda: self.rt)
        self.intake = Intake(self.queue, self.rt.candidates, self.stopping, self.pool.wake_one)
        self.extras = self._start_extras()
        self.log.info(
            "daemon.starting",
            workers=self.rt.n,
            requeued=requeued,
            died_decoding=len(died),
            folders=[str(f.path) for f in self.cfg.folders],
        )
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        self.watcher = Watcher(
            list(self.rt.specs),
            lambda p, moved: self.intake.put("moved" if moved else "event", p),
            lambda d: self.intake.put("dir", d),
            on_overflow=self._overflow,
        )
        self.watcher.start()
        self.intake.start()
        self.pool.keep(self.rt.n)
        for target, name in ((self._rescan_loop, "rescan"), (self._monitor_loop, "monitor")):
            threading.Thread(target=target, name=name, daemon=True).start()
        self.status_line = self._status_line(self.rt)
        self.log.info("daemon.ready", modes={str(k): v for k, v in self.watcher.modes.items()})
        # Ready: the database is open, the observers run, the start-up walk is under way on its thread.
        self.notifier.ready(status=self.status_line)
        try:
            self._notify_loop()
        finally:
            self._stop()
        return EX_OK

    def _on_stop(self, *_) -> None:
        self.stopping.set()
        self.tick.set()

    def _on_hup(self, *_) -> None:
        self.reload_asked.set()
        self.tick.set()

    def _stop(self) -> None:
        self.stopping.set()
        with self.applied:
            self.applied.notify_all()  # a reload waiting for the monitor gives up
        self.notifier.stopping(status="stopping: finishing the requests in flight")
        grace = self.cfg.stop_grace_s
        self.log.info("daemon.stopping", grace_s=grace)
        self.watcher.stop()
        for extra in self.extras:
            extra.stop()
        self.pool.wake_one(everyone=True)
        self.pool.join(time.monotonic() + grace)
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
            from handwatch.service.notify import Notifier

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
        every = systemd.watchdog_interval_s()
        stale_after = max(30.0, 2 * every)
        last_ping, sent = 0.0, self.status_line
        while not self.stopping.is_set():
            now = time.monotonic()
            if self.reload_asked.is_set() and self.reloading is None:
                self.reload_asked.clear()
                self.reload_done.clear()
                self.notifier.reloading(status="reloading the configuration")
                sent = "reloading the configuration"
                self.reloading = threading.Thread(target=self._reload, name="reload", daemon=True)
                self.reloading.start()
            if self.reloading is not None and self.reload_done.is_set():
                self.reloading = None
                self.notifier.ready(status=self.status_line)
                sent = self.status_line
            why = self.health = self._unhealthy(now, stale_after)
            status = self.status_line if why is None else f"unhealthy: {why}"
            if status != sent and self.reloading is None:
                self.notifier.status(status)
                sent = status
            if every and now - last_ping >= every:
                if why is None:
                    self.notifier.watchdog()
                else:  # said again at every missed ping, so it is on screen whenever systemd acts
                    self.notifier.status(status)
                last_ping = now
            self.tick.wait(min(every / 2, 1.0) if every else 1.0)
            self.tick.clear()

    def _unhealthy(self, now: float, stale_after: float) -> str | None:
        """Why work cannot progress (then systemd should restart us), or None. No I/O: threads and clocks."""
        if not self.intake.alive() or now - self.intake.heartbeat > stale_after:
            return "the intake thread stopped"
        if now - self.monitor_beat > stale_after:
            return "the monitor thread stopped"
        if self.pool.trouble:
            return self.pool.trouble
        dead_workers, dead_observers = self.pool.dead(self.rt.n), self.watcher.dead()
        if not (dead_workers or dead_observers):
            self.dead_since = None
            return None
        self.dead_since = self.dead_since or now
        if now - self.dead_since > DEAD_GRACE_S:
            return (
                f"{dead_workers} worker thread(s) and {dead_observers} folder observer(s) dead for {now - self.dead_since:.0f} s"
            )
        return None

    # --- reload: SIGHUP -----------------------------------------------------------------------------

    def _reload(self) -> None:
        """Read and check the configuration again and build what it needs; then let the monitor apply it.
        A bad configuration is logged and the running one stays; the queue is never touched."""
        old = self.rt
        try:
            cfg = loader.load(old.cfg.source)
            preflight.check(cfg)
            cfg = self._keep_started(cfg)
            log.setup(self.log_level or cfg.log_level, daemon=True, secrets=cfg.secrets())
            rt = build_runtime(
                cfg, self.db, self.queue, self.gate, self.marks, self.page_pool, previous=old, preparers=self.preparers
            )
        except ConfigError as e:
            self.reload_failed = True
            self.log.error("config.reload_failed", problems=e.lines(), action="kept the running configuration")
        except Exception as e:
            self.reload_failed = True
            self.log.exception("config.reload_failed", error=f"{type(e).__name__}: {e}", action="kept the running configuration")
        else:
            self.reload_failed = False
            self.rt = rt
            self.intake.candidates = rt.candidates
            self.pool.wake_one(everyone=True)  # slots above a smaller pool end; the rest claim with the new runtime
            with self.applied:
                applied = self.applied.wait_for(lambda: self.applied_rt is rt or self.stopping.is_set(), APPLY_TIMEOUT_S)
            before, after = {f.path for f in old.cfg.folders}, {f.path for f in cfg.folders}
            self.log.info(
                "config.reloaded",
                applied=applied,
                workers=rt.n,
                folders_added=sorted(map(str, after - before)),
                folders_removed=sorted(map(str, before - after)),
                endpoints_changed=old.cfg.endpoints != cfg.endpoints,
            )
        finally:
            try:
                self.status_line = self._status_line(self.rt)
            except Exception:  # a locked database: the monitor writes the line at its next turn
                pass
            self.reload_done.set()
            self.tick.set()

    def _keep_started(self, cfg: Config) -> Config:
        """What a reload cannot change in a running process keeps its started value, with a warning."""
        fixed = {
            "state_dir": "the state database stays open",
            "web": "the review page keeps running as started",
            "notify": "notifications keep running as started",
        }
        changed = [k for k in fixed if getattr(cfg, k) != getattr(self.cfg, k)]
        if changed:
            self.log.warning(
                "config.needs_restart",
                keys=changed,
                reason="; ".join(fixed[k] for k in changed),
                action="restart the service for these",
            )
        return cfg.model_copy(update={k: getattr(self.cfg, k) for k in changed})

    # --- monitor: reloads, folders, workers, status --------------------------------------------------------

    def _monitor_loop(self) -> None:
        last_status, said, trimmed = 0.0, None, True
        folders = FolderStates(self.db)
        shown: dict = {}
        while not self.stopping.is_set():
            self.monitor_beat = time.monotonic()
            try:
                rt = self.rt
                if rt is not self.applied_rt:
                    self._apply(rt)
                for path in self.watcher.ensure():
                    self.intake.put("dir", path)  # (re)watched: walk it for what arrived meanwhile
                if self.watcher.states != shown:
                    folders.set(self.watcher.states)
                    shown = dict(self.watcher.states)
                self.pool.keep(rt.n)
                self.pool.settle_orphans()
                idle = not self.pool.current
                if idle and not trimmed:
                    alloc.give_back()  # the burst is over: its page buffers need not stay resident
                trimmed = idle
                if time.monotonic() - last_status >= STATUS_EVERY_S:
                    self.status_line = self._status_line(rt)
                    last_status = time.monotonic()
                    self.tick.set()
                why = self.health
                if why != said:  # the main thread decides and never logs: say it here, once per change
                    if why:
                        self.log.error("daemon.unhealthy", reason=why, action="no watchdog pings: systemd restarts us")
                    elif said:
                        self.log.info("daemon.healthy")
                    said = why
            except Exception as e:
                self.log.error("monitor.error", error=f"{type(e).__name__}: {e}")
            self.stopping.wait(MONITOR_EVERY_S)

    def _apply(self, rt: Runtime) -> None:
        """A reloaded runtime: watch what it names (new folders are walked once watched), stop the rest."""
        self.watcher.set_specs(list(rt.specs))
        with self.applied:
            self.applied_rt = rt
            self.applied.notify_all()

    def _status_line(self, rt: Runtime) -> str:
        c = self.queue.counts()
        folders = sum(1 for s in self.watcher.states.values() if s.startswith("watching"))
        line = (
            f"watching {folders}/{len(rt.cfg.folders)} folders; queued {c['pending']}, running {c['running']}, "
            f"failed {c['failed']}, done {c['done']}"
        )
        if rt.cfg.endpoints:
            health = Health(self.db).all()
            up = sum(1 for ep in rt.cfg.endpoints if health.get(ep.url, {}).get("up"))
            line += f"; endpoints up {up}/{len(rt.cfg.endpoints)}"
        if self.pool.last:
            name, outcome = self.pool.last
            line += f"; last: {name} ({outcome})"
        if self.reload_failed:
            line += "; reload failed: running the previous configuration (see the log)"
        return line

    # --- rescans --------------------------------------------------------------------------------------

    def _overflow(self) -> None:
        self.log.warning("watch.overflow", action="walking every folder again: the kernel dropped events")
        self.rescan_now.set()

    def _rescan_loop(self) -> None:
        """Catch-up at start, then every rescan_s, and at once after an inotify overflow: a safety net for
        events that were lost. The first walk also removes temporaries a killed process left behind."""
        first = True
        while not self.stopping.is_set():
            started, seen, removed = time.monotonic(), 0, 0

            def found(cfg=self.rt.cfg, first=first):
                nonlocal seen, removed
                for f in cfg.folders:
                    for path in walk(f.path, cfg.folder_rule(f).recursive, skip_name=markdown):
                        if self.stopping.is_set():
                            return
                        seen += 1
                        if first and safefs.is_temp(path.name):
                            removed += _remove_stale(path, self.started)
                        yield path

            try:
                queued = self.intake.offer(found())
            except Exception as e:  # the database (or the disk) failed this pass: the next one tries again
                self.log.error("rescan.failed", error=f"{type(e).__name__}: {e}", retry_in_s=RESCAN_RETRY_S)
                self.rescan_now.wait(RESCAN_RETRY_S)
                self.rescan_now.clear()
                continue
            if self.stopping.is_set():
                return
            self.log.info(
                "rescan.done",
                files=seen,
                queued=queued,
                stale_temps_removed=removed,
                duration_ms=int((time.monotonic() - started) * 1000),
            )
            first = False
            # The walk's leftovers (its page cache, the free heap) would stay resident until the next walk.
            self.db.shrink()
            if not self.pool.current:  # in a burst the workers reuse the free heap: give_back() follows it
                alloc.give_back()
            self.rescan_now.wait(self.rt.cfg.rescan_s)
            self.rescan_now.clear()


def _remove_stale(path: Path, started: float) -> int:
    """A temporary output older than this process was left by a killed one; its target was never replaced."""
    try:
        if os.lstat(path).st_mtime < started:
            os.unlink(path)
            return 1
    except OSError:
        pass
    return 0
