"""The daemon's worker threads: as many as the configuration asks for, a dead one replaced, unless they keep dying.

A worker thread only ends on its own when something escapes every handler (a `SystemExit` raised
deep in a library, an exception injected into the thread): a bug. One such death is logged and the
slot filled again at the monitor's next turn, and the job it held is counted against its file (three
such deaths fail the file, so one poisonous file cannot kill workers for ever). When workers keep
dying — `DEATH_LIMIT` deaths within `DEATH_WINDOW_S` — the pool stops replacing them and says so in
`trouble`: the daemon then stops pinging the systemd watchdog, and systemd restarts the process."""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from collections.abc import Callable

from handwatch import log, metrics
from handwatch.service.worker import STRIKE_DELAY_S, STRIKES, Runtime
from handwatch.store.jobs import LEASE_S, MAX_ATTEMPTS, Job, JobQueue

DEATH_LIMIT = 5
DEATH_WINDOW_S = 600.0
BACKOFF_CAP_S = 60.0
POLL_S = 1.0
IDLE_S = 30.0


class WorkerPool:
    def __init__(
        self,
        queue: JobQueue,
        owner: str,
        stopping: threading.Event,
        runtime: Callable[[], Runtime],
        clock: Callable[[], float] = time.monotonic,
    ):
        self.queue, self.owner, self.stopping, self.runtime = queue, owner, stopping, runtime
        self.clock = clock
        self.threads: dict[int, threading.Thread] = {}  # changed by the monitor thread only
        self.current: dict[int, Job] = {}  # slot -> the job its worker holds
        self.orphans: deque[tuple[Job, str | None]] = deque()  # (job, why its worker died, or None)
        self.deaths: deque[float] = deque()
        self.trouble: str | None = None
        self.last: tuple[str, str] | None = None  # (file name, outcome) of the latest job to finish
        self.wake = threading.Condition()
        self.polling = False  # an idle worker is already looking for jobs every POLL_S
        self.log = log.get("worker")

    # --- the monitor thread --------------------------------------------------------------------------

    def keep(self, n: int) -> None:
        """Fill slots 0..n-1 with live threads; forget ended ones above n (a reload that shrank the pool)."""
        now = self.clock()
        while self.deaths and now - self.deaths[0] > DEATH_WINDOW_S:
            self.deaths.popleft()
        for slot in [s for s, t in self.threads.items() if s >= n and not t.is_alive()]:
            del self.threads[slot]
        trouble = None
        for slot in range(n):
            t = self.threads.get(slot)
            if t is not None and t.is_alive():
                continue
            if len(self.deaths) >= DEATH_LIMIT:
                trouble = (
                    f"worker threads keep dying ({len(self.deaths)} in the last {DEATH_WINDOW_S:.0f} s); "
                    "not replacing them, so systemd restarts the process"
                )
                break
            try:
                self.threads[slot] = self._start(slot)
            except RuntimeError as e:  # "can't start new thread": out of threads or memory
                trouble = f"cannot start a worker thread: {e}"
                break
        if trouble != self.trouble:
            self.trouble = trouble
            if trouble:
                self.log.error("worker.pool_broken", reason=trouble)

    def settle_orphans(self) -> None:
        """Jobs whose worker could not hand them back: after an error, back to the queue as they were;
        after the worker died, counted against the file."""
        while self.orphans:
            job, died = self.orphans.popleft()
            if died is None:
                self.queue.release_job(job.id, self.owner)
            elif self.queue.strike(
                job,
                f"internal error: the worker handling this file died ({died})",
                STRIKES,
                STRIKE_DELAY_S,
                what="a worker died while handling this file",
            ):
                self.log.warning("job.failed", path=str(job.path), reason=f"a worker died {STRIKES} times on it")

    # --- any thread ----------------------------------------------------------------------------------

    def dead(self, n: int) -> int:
        """Slots below n without a live thread right now (no I/O: the main thread asks)."""
        threads = dict(self.threads)
        return sum(1 for slot in range(n) if not (slot in threads and threads[slot].is_alive()))

    def wake_one(self, everyone: bool = False) -> None:
        with self.wake:
            self.wake.notify_all() if everyone else self.wake.notify()

    def join(self, deadline: float) -> None:
        for t in list(self.threads.values()):
            t.join(timeout=max(0.0, deadline - time.monotonic()))

    # --- the workers ---------------------------------------------------------------------------------

    def _start(self, slot: int) -> threading.Thread:
        t = threading.Thread(target=self._run, args=(slot,), name=f"worker-{slot}", daemon=True)
        t.start()
        return t

    def _run(self, slot: int) -> None:
        try:
            self._loop(slot)
        except BaseException as e:  # noqa: BLE001 - the thread ends here either way; say why and whose job
            why = f"{type(e).__name__}: {e}"
            self.deaths.append(self.clock())
            job = self.current.pop(slot, None)
            if job is not None:
                self.orphans.append((job, why))
            self.log.error(
                "worker.died", slot=slot, job=job.id if job else None, error=why, exception="".join(traceback.format_exception(e))
            )

    def _loop(self, slot: int) -> None:
        """Claim, work, repeat, while this slot is wanted. Any error (a database locked by another process
        for longer than its busy timeout, say) is logged and backed off; the job in hand goes back."""
        failures = 0
        while not self.stopping.is_set() and slot < self.runtime().n:
            job = None
            try:
                with metrics.cpu("intake"):
                    job = self.queue.claim(self.owner, LEASE_S, MAX_ATTEMPTS)
                if job is None:
                    # Idle: one worker looks every second for jobs another process queued (`retry`);
                    # the others sleep until woken, so fifty idle workers cost no more than one.
                    due = self.queue.next_due()
                    with self.wake:
                        polls = not self.polling
                        self.polling = self.polling or polls
                        poll = POLL_S if polls else IDLE_S
                        try:
                            self.wake.wait(timeout=poll if due is None else min(poll, max(0.05, due - time.time())))
                        finally:
                            if polls:
                                self.polling = False
                    continue
                self.wake_one()  # there may be more: the next idle worker looks (and wakes the next)
                self.current[slot] = job
                outcome = self.runtime().worker.handle(job)
                self.current.pop(slot, None)
                self.last = (job.path.name, outcome)
                failures = 0
            except Exception as e:
                self.current.pop(slot, None)
                failures += 1
                delay = min(BACKOFF_CAP_S, 2.0 ** min(failures, 6))
                self.log.error("worker.error", slot=slot, error=f"{type(e).__name__}: {e}", retry_in_s=delay)
                if job is not None:
                    self.orphans.append((job, None))
                self.stopping.wait(delay)
            # Anything else (BaseException) ends the thread with the job still in `current`: see _run.
