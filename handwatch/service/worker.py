"""Workers: run one claimed job through the pipeline and file the outcome in the queue; the gate that stops
them publishing once the daemon has handed their jobs back; a page pool that never holds up an exit."""

from __future__ import annotations

import errno
import os
import queue as stdqueue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import structlog

from handwatch import log, metrics, safefs
from handwatch.config.rules import Resolved
from handwatch.config.schema import Config, Rule
from handwatch.errors import ConfigError, EngineUnavailable, HandwatchError, NotADocument, NotReady, OutputConflict
from handwatch.intake.candidates import Candidates
from handwatch.intake.watch import WatchSpec
from handwatch.safefs import file_sig
from handwatch.service import prefetch
from handwatch.service.crashmarks import DecodeMarks
from handwatch.service.engines import Engines
from handwatch.service.pipeline import Outcome, Pipeline
from handwatch.store.jobs import Job, JobQueue
from handwatch.store.state import Health, StateDB
from handwatch.transcribe.http import FileRejected

STRIKES = 3  # a file the server fails on (while answering others) this many times is failed
STRIKE_DELAY_S = 2.0  # before the second try; doubled for each further one (a passing hiccup is retried soon)
DISK_FULL_RETRY_S = 30.0
ROUTE_BUSY_S = 2.0  # a job whose endpoints are all taken by jobs of their own waits this long, holding no worker


class Abandoned(Exception):
    """The daemon is stopping and has handed this job back to the queue: publish nothing."""


class Gate:
    """Publishing (writing the Markdown, moving the original, marking the job done) happens inside the
    gate. At shutdown the daemon closes it and waits for those inside to finish; a worker still busy
    with its request after that finds the gate closed and writes nothing, so the job it leaves behind
    is done exactly once, by the next start."""

    def __init__(self):
        self._cond = threading.Condition()
        self._inside = 0
        self._closed = False

    @contextmanager
    def passage(self) -> Iterator[None]:
        with self._cond:
            if self._closed:
                raise Abandoned
            self._inside += 1
        try:
            yield
        finally:
            with self._cond:
                self._inside -= 1
                self._cond.notify_all()

    def close(self, timeout: float) -> bool:
        """Refuse new passages; True once nobody is inside (False if `timeout` ran out first)."""
        with self._cond:
            self._closed = True
            return self._cond.wait_for(lambda: self._inside == 0, timeout)


class DaemonPool:
    """Page jobs on a fixed set of daemon threads. ThreadPoolExecutor's threads are joined when the
    interpreter exits, so one page still waiting for its reply would hold a stopping daemon up for
    the whole request timeout — and let its worker publish after the job was handed back."""

    def __init__(self, n: int, name: str = "page"):
        self._jobs: stdqueue.SimpleQueue = stdqueue.SimpleQueue()
        self._name, self._n = name, 0
        self.grow(n)

    def grow(self, n: int) -> None:
        """At least `n` threads (a reload that adds workers); idle extra threads cost nothing."""
        while self._n < n:
            threading.Thread(target=self._loop, name=f"{self._name}-{self._n}", daemon=True).start()
            self._n += 1

    def _loop(self) -> None:
        while True:
            fn, arg, fut = self._jobs.get()
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(arg))
            except BaseException as e:  # handed to the caller, who decides what it means
                fut.set_exception(e)

    def map(self, fn: Callable, items: Iterable) -> list:
        futures = []
        for item in items:
            fut: Future = Future()
            self._jobs.put((fn, item, fut))
            futures.append(fut)
        return [f.result() for f in futures]


class Worker:
    """Runs one claimed job through the pipeline and files the outcome in the queue."""

    def __init__(
        self,
        queue: JobQueue,
        pipeline: Pipeline,
        candidates: Candidates,
        gate: Gate | None = None,
        marks: DecodeMarks | None = None,
        on_done: Callable[[Job, Outcome], None] | None = None,
        on_skipped: Callable[[Job, NotADocument], None] | None = None,
    ):
        self.queue, self.pipeline, self.candidates = queue, pipeline, candidates
        self.on_done = on_done  # `scan` counts reused texts and names the Markdown it wrote
        self.on_skipped = on_skipped  # `redo` takes back the Markdown of a file now judged not a document
        self.gate = gate or Gate()
        self.marks = marks
        self.log = log.get("worker")
        self.unavailable = threading.Event()  # set when a job had to wait for an endpoint

    def handle(self, job: Job) -> str:
        with structlog.contextvars.bound_contextvars(job=job.id), metrics.cpu("intake"):  # every line logged names the job
            resolved, why = self.candidates.resolve(job.path)  # once: the route and the job both need it
            engine = self._engine(job, resolved)
            if engine is not None and not engine.admit():  # its endpoints are busy with as many jobs as they can use
                names = ", ".join(c.ep.label() for c in engine.clients)
                self.queue.defer(job, ROUTE_BUSY_S, f"waiting for a free slot on {names}")
                return "waiting"
            try:
                return self._handle(job, resolved, why)
            finally:
                if engine is not None:
                    engine.leave()

    def _engine(self, job: Job, resolved: Resolved | None):
        """The VLM engine the job will wait for, if it can be told before the job starts."""
        if resolved is None or (resolved.rule.engine != "vlm" and not (job.override or {}).get("second")):
            return None
        try:
            engine = self.pipeline.engines.of_job(resolved.rule, job.override)
        except ConfigError:
            return None
        return engine if hasattr(engine, "admit") else None

    def _handle(self, job: Job, resolved: Resolved | None, why: str | None) -> str:
        path = job.path
        sig = file_sig(path)
        if sig is None:
            self.queue.drop(job)
            return "gone"
        if resolved is None:
            self.queue.drop(job)
            self.log.info("job.dropped", path=str(path), reason=why)
            return "gone"
        rule = resolved.rule
        try:
            sha = safefs.sha256_file(path)
            if sha != job.sha256:  # changed since it was queued: the newer content is the job now
                self.queue.enqueue(path, sha, sig)
                return "changed"
            decoding = partial(self.marks.decoding, job.id) if self.marks is not None else nullcontext
            transcript = self.pipeline.transcribe(path, sha, sig, job.override, decoding)
            later = self.pipeline.wants_second(transcript)  # published now, refined by a second opinion next
            late = bool((job.override or {}).get("second") and transcript.result.get("second"))  # that refinement
            with self.gate.passage(), metrics.cpu("publish"):
                try:
                    if late and self._gone(path):
                        raise OutputConflict("the Markdown of the first reading was moved or deleted since")
                    outcome = self.pipeline.publish(transcript, final=not later)
                except OutputConflict as e:
                    if not late:
                        raise
                    self.log.info("second.dropped", path=str(path), reason=str(e))  # a person's text stands
                    moved = self.pipeline.settle_original(transcript)  # `after: move` waited for this reading
                    if moved != path:
                        self.queue.drop(job)
                    else:
                        self.queue.complete(job, (self.queue.state_of(path) or {}).get("output"))
                    return "done"
                if outcome.source != path:
                    self.queue.drop(job)  # moved by `after: move`: the moved file is not a new input
                elif later:
                    self.queue.again(
                        job, outcome.output, f"waiting for a second reading by {second_name(transcript.resolved.rule)}"
                    )
                    return "again"
                else:
                    self.queue.complete(job, outcome.output)
        except NotADocument as e:
            if not self.queue.skip(job, e.kind, str(e)):
                return "changed"  # the file changed, or the job was handed back, meanwhile: that version is the job
            self.log.info("job.skipped", path=str(path), kind=e.kind, reason=str(e))
            if self.on_skipped is not None:
                self.on_skipped(job, e)
            return "skipped"
        except Abandoned:
            self.log.info("job.abandoned", path=str(path), reason="the daemon is stopping; the job stays queued")
            return "abandoned"
        except NotReady as e:
            self.queue.defer(job, max(1.0, rule.settle_s), str(e))
            return "waiting"
        except FileRejected as e:
            if not self.queue.strike(job, str(e), STRIKES, STRIKE_DELAY_S * 2 ** max(0, self.queue.strikes(job))):
                self.log.warning("job.server_failed", path=str(path), reason=str(e))
                return "waiting"
        except EngineUnavailable as e:
            engine = self.pipeline.engines.of_job(rule, job.override) or self.pipeline.engines.for_rule(rule)
            delay = engine.retry_after() if hasattr(engine, "retry_after") else 30.0
            waits = (
                f"waiting for a second reading by {second_name(rule)}: " if (job.override or {}).get("second") else "waiting for "
            )
            self.queue.defer(job, delay, f"{waits}endpoint: {e}")
            self.unavailable.set()
            return "waiting"
        except ConfigError as e:
            self.queue.fail(job, "; ".join(e.lines()))
        except HandwatchError as e:
            self.queue.fail(job, str(e))
        except safefs.Unsafe as e:
            self.queue.fail(job, str(e.strerror))
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):  # the disk's fault, not the file's; nothing was written
                self.queue.defer(job, DISK_FULL_RETRY_S, f"waiting for disk space to write the Markdown ({e.strerror})")
                self.log.warning("job.disk_full", path=str(path), error=e.strerror, retry_in_s=DISK_FULL_RETRY_S)
                return "waiting"
            self.queue.fail(job, f"cannot read: {e.strerror or e}")
        except Exception as e:
            self.log.exception("job.crashed", path=str(path))
            self.queue.fail(job, f"internal error: {type(e).__name__}: {e}")
        else:
            if self.on_done is not None:
                self.on_done(job, outcome)
            return "done"  # the pipeline logged file.transcribed: one line per success
        state = self.queue.state_of(path) or {}
        self.log.warning("job.failed", path=str(path), reason=state.get("reason"))
        return "failed"

    def _gone(self, path: Path) -> bool:
        """The Markdown the first reading wrote is not where it was (a person renamed or deleted it)."""
        out = (self.queue.state_of(path) or {}).get("output")
        return out is not None and not os.path.lexists(out)


def second_name(rule: Rule) -> str:
    opinion = rule.second_opinion
    return repr(opinion.endpoint) if opinion is not None else "another endpoint"


def worker_count(cfg: Config) -> int:
    """A worker per request slot, `prefetch.depth` more to prepare pages ahead of free slots, and one
    per core for Tesseract."""
    uses_tesseract = cfg.base_rule().engine == "tesseract" or any(cfg.folder_rule(f).engine == "tesseract" for f in cfg.folders)
    requests = sum(ep.max_concurrency for ep in cfg.endpoints)
    n = requests + prefetch.depth(requests) if requests else 0
    if uses_tesseract:
        n += os.cpu_count() or 1
    return max(1, min(80, n))


@dataclass(frozen=True)
class Runtime:
    """Everything one configuration builds: workers read it afresh for each job, so a reload swaps it
    whole while jobs already running finish with the one they started with."""

    cfg: Config
    candidates: Candidates
    pipeline: Pipeline
    worker: Worker
    n: int  # worker threads
    specs: tuple[WatchSpec, ...]  # what to watch


def build_runtime(
    cfg: Config,
    db: StateDB,
    queue: JobQueue,
    gate: Gate | None = None,
    marks: DecodeMarks | None = None,
    pool: DaemonPool | None = None,
    previous: Runtime | None = None,
    preparers: DaemonPool | None = None,
) -> Runtime:
    """`previous`: the runtime a reload replaces. Its engines are kept when the endpoints did not change
    (their health and back-off carry on), and so are its page bounds when the worker count did not.
    `pool` runs a document's pages side by side; `preparers` decodes them (prefetch.py)."""
    n = worker_count(cfg)
    if pool is None:
        pool = DaemonPool(n)
    pool.grow(n)
    same_endpoints = previous is not None and previous.cfg.endpoints == cfg.endpoints
    engines = previous.pipeline.engines if previous is not None and same_endpoints else Engines(cfg, Health(db))
    flow = previous.pipeline.flow if previous is not None and previous.n == n else None
    if flow is None:
        flow = prefetch.Flow(n + 1, preparers or DaemonPool(prefetch.preparers(), "prepare"))
    pipeline = Pipeline(cfg, db, engines, page_pool=pool, flow=flow)
    candidates = Candidates(cfg, pipeline.rules)
    return Runtime(cfg, candidates, pipeline, Worker(queue, pipeline, candidates, gate, marks), n, tuple(candidates.specs()))


def build(cfg: Config) -> tuple[StateDB, JobQueue, Pipeline, Candidates, int]:
    db = StateDB(cfg.state_dir)
    queue = JobQueue(db)
    rt = build_runtime(cfg, db, queue)
    return db, queue, rt.pipeline, rt.candidates, rt.n
