"""Wiring: watchers feed settle, settle feeds the queue, workers drain it; signals, systemd notifications, `scan`."""

from __future__ import annotations

import fcntl
import os
import queue as stdqueue
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sdnotify

from handwatch import log, output, rules
from handwatch.config import Config, Rule
from handwatch.errors import (
    EX_OK, EX_SOMEFAILED, EX_UNAVAILABLE, ConfigError, EngineResponseError, EngineUnavailable, HandwatchError,
    InputError, NotReady, OutputConflict,
)
from handwatch.pipeline import Engines, Pipeline
from handwatch.queue import Job, JobQueue, this_owner
from handwatch.settle import Settler, ignored_reason
from handwatch.state import Health, StateDB
from handwatch.watch import WatchSpec, Watcher, inside, walk

LEASE_S = 6 * 3600  # a claim outlives any request; dead owners are found by pid at start, not by lease
STOP_GRACE_S = 30.0
MAX_ATTEMPTS = 3


class Candidates:
    """Which paths are inputs, and under which rule: the one place that says so for daemon and scan."""

    def __init__(self, cfg: Config, book: rules.RuleBook):
        self.cfg, self.book = cfg, book

    def rule(self, path: Path) -> tuple[Rule | None, str | None]:
        """(rule, None) for an input; (None, reason) for a path that is not one. A broken rule file
        still yields the path (with the base rule) so the job fails with the rule file's reason."""
        folder = rules.owning_folder(self.cfg, path)
        if folder is None:
            return None, "outside the watched folders"
        rel = path.relative_to(folder.path)
        why = ignored_reason(rel)
        if why:
            return None, why
        try:
            rule = self.book.resolve(path).rule
        except ConfigError:
            rule = self.cfg.folder_rule(folder)
        for d in rules.managed_dirs(folder, rule):
            if path == d or d in path.parents:
                return None, "inside a folder handwatch writes to"
        if not rules.matches(rule, rel):
            return None, "excluded by include/exclude"
        if not inside(path, folder.path):
            return None, "a link to a file outside the watched folder"
        return rule, None

    def specs(self) -> list[WatchSpec]:
        out = []
        for f in self.cfg.folders:
            r = self.cfg.folder_rule(f)
            out.append(WatchSpec(f.path, r.recursive, r.poll, poll_interval_s=max(1.0, min(5.0, r.settle_s))))
        return out

    def walk(self):
        for f in self.cfg.folders:
            r = self.cfg.folder_rule(f)
            yield from walk(f.path, r.recursive, set(rules.managed_dirs(f, r)))


def signature(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


class Worker:
    """Runs one claimed job through the pipeline and files the outcome in the queue."""

    def __init__(self, queue: JobQueue, pipeline: Pipeline, candidates: Candidates):
        self.queue, self.pipeline, self.candidates = queue, pipeline, candidates
        self.log = log.get("worker")
        self.unavailable = threading.Event()  # set when a job had to wait for an endpoint

    def handle(self, job: Job) -> str:
        path = job.path
        sig = signature(path)
        if sig is None:
            self.queue.drop(job)
            return "gone"
        rule, why = self.candidates.rule(path)
        if rule is None:
            self.queue.drop(job)
            self.log.info("job.dropped", path=str(path), reason=why)
            return "gone"
        started = time.monotonic()
        try:
            sha = output.sha256_file(path)
            if sha != job.sha256:  # changed since it was queued: the newer content is the job now
                self.queue.enqueue(path, sha, *sig)
                return "changed"
            outcome = self.pipeline.process(path, sha, job.override)
        except NotReady as e:
            self.queue.defer(job, max(1.0, rule.settle_s), str(e))
            return "waiting"
        except EngineUnavailable as e:
            engine = self.pipeline.engines.get(rule.engine)
            delay = engine.retry_after() if hasattr(engine, "retry_after") else 30.0
            self.queue.defer(job, delay, f"waiting for endpoint: {e}")
            self.unavailable.set()
            return "waiting"
        except ConfigError as e:
            self.queue.fail(job, "; ".join(e.lines()))
        except (InputError, OutputConflict, EngineResponseError) as e:
            self.queue.fail(job, str(e))
        except HandwatchError as e:
            self.queue.fail(job, str(e))
        except Exception as e:
            self.log.exception("job.crashed", path=str(path))
            self.queue.fail(job, f"internal error: {type(e).__name__}: {e}")
        else:
            if outcome.source != path:
                self.queue.drop(job)  # moved by `after: move`: the moved file is not a new input
            else:
                self.queue.complete(job, outcome.output)
            self.log.info("job.done", path=str(path), output=str(outcome.output),
                          duration_ms=int((time.monotonic() - started) * 1000))
            return "done"
        state = self.queue.state_of(path) or {}
        self.log.warning("job.failed", path=str(path), reason=state.get("reason"))
        return "failed"


def worker_count(cfg: Config) -> int:
    uses_tesseract = cfg.base_rule().engine == "tesseract" or any(cfg.folder_rule(f).engine == "tesseract" for f in cfg.folders)
    n = sum(ep.max_concurrency for ep in cfg.endpoints)
    if uses_tesseract:
        n += os.cpu_count() or 1
    return max(1, min(64, n))


def build(cfg: Config):
    db = StateDB(cfg.state_dir)
    n = worker_count(cfg)
    pages = ThreadPoolExecutor(max_workers=n, thread_name_prefix="page")
    slots = threading.BoundedSemaphore(n + 1)
    pipeline = Pipeline(cfg, db, Engines(cfg, Health(db)), page_pool=pages, image_slots=slots)
    queue = JobQueue(db)
    candidates = Candidates(cfg, pipeline.rules)
    return db, queue, pipeline, candidates, n


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
        self.worker = Worker(self.queue, self.pipeline, self.candidates)
        self.owner = this_owner()
        self.beat = time.monotonic()
        extras = self._start_extras()
        requeued = self.queue.recover()
        removed = sum(output.remove_stale_temps(f.path) for f in self.cfg.folders if f.path.is_dir())
        self.log.info("daemon.starting", workers=n, requeued=requeued, stale_temps_removed=removed,
                      folders=[str(f.path) for f in self.cfg.folders])
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        watcher = Watcher(self.candidates.specs(), lambda p: self.events.put(("event", p)),
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
            self.log.info("daemon.stopping", grace_s=STOP_GRACE_S)
            watcher.stop()
            for extra in extras:
                extra.stop()
            with self.wake:
                self.wake.notify_all()
            deadline = time.monotonic() + STOP_GRACE_S
            for t in threads:
                t.join(timeout=max(0.0, deadline - time.monotonic()))
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
            for path in settler.ready(now, signature):
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
            sig = signature(path)
            if sig is None:
                settler.forget(path)
                continue
            if self.queue.known(path, *sig) and path not in settler:
                continue
            settler.event(path, now, sig)

    def _enqueue(self, path: Path) -> None:
        sig = signature(path)
        if sig is None:
            return
        try:
            sha = output.sha256_file(path)
        except OSError as e:
            self.log.warning("file.unreadable", path=str(path), error=str(e))
            return
        if self.queue.enqueue(path, sha, *sig):
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


def scan(cfg: Config, progress: bool = False) -> int:
    """Everything in the watched folders without a current transcription, processed now; then exit."""
    db, queue, pipeline, candidates, n = build(cfg)
    worker = Worker(queue, pipeline, candidates)
    queue.recover()
    now = time.time()
    for path in candidates.walk():
        rule, _ = candidates.rule(path)
        sig = signature(path)
        if rule is None or sig is None or queue.known(path, *sig):
            continue
        if now - sig[1] / 1e9 < rule.settle_s:
            continue  # still being written: the daemon or the next scan takes it
        try:
            queue.enqueue(path, output.sha256_file(path), *sig)
        except OSError:
            continue
    total = queue.counts()["pending"]
    owner = this_owner()
    results: dict[str, int] = {}
    lock = threading.Lock()

    def loop():
        while not worker.unavailable.is_set():
            job = queue.claim(owner, LEASE_S, MAX_ATTEMPTS)
            if job is None:
                return
            outcome = worker.handle(job)
            with lock:
                results[outcome] = results.get(outcome, 0) + 1
                if progress:
                    _bar(sum(results.values()), total)

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if progress:
        print(file=sys.stderr)
    done, failed = results.get("done", 0), results.get("failed", 0)
    print(f"scan: {done} transcribed, {failed} failed, {results.get('waiting', 0)} waiting", file=sys.stderr)
    if worker.unavailable.is_set():
        return EX_UNAVAILABLE
    return EX_SOMEFAILED if failed else EX_OK


def _bar(done: int, total: int, width: int = 30) -> None:
    total = max(total, done, 1)
    filled = int(width * done / total)
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end="", file=sys.stderr, flush=True)
