"""`handwatch scan`: process everything in the watched folders that has no current transcription, then exit.

Files still being written (younger than their `settle_s`, or still changing) are waited for as the
daemon would, and the summary accounts for every file the walk saw: transcribed, reused, failed,
waiting, already done, skipped (and why)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from handwatch import safefs
from handwatch.cli.progress import NoBar
from handwatch.config.schema import Config
from handwatch.errors import EX_OK, EX_SOMEFAILED, EX_UNAVAILABLE
from handwatch.intake.settle import Settler
from handwatch.safefs import Unsafe, file_sig
from handwatch.service.worker import Worker, build
from handwatch.store.jobs import DONE, FAILED, LEASE_S, MAX_ATTEMPTS, PENDING, RUNNING, SKIPPED, Job, this_owner

SETTLE_PATIENCE_S = 60.0  # how long past its settle time a file that is still being written is waited for
LIST_MOST = 20  # files needing review named in the summary; `status` names them all
QUIET_NAMES = (".md", ".handwatch.yaml")  # Markdown (what handwatch writes) and rule files: not worth a mention


@dataclass
class Summary:
    seen: int = 0
    transcribed: list[tuple[Path, Path]] = field(default_factory=list)  # (original, Markdown)
    reused: list[tuple[Path, Path]] = field(default_factory=list)  # the text of the same bytes, done before
    failed: list[tuple[Path, str]] = field(default_factory=list)
    waiting: list[tuple[Path, str]] = field(default_factory=list)
    done_before: int = 0  # already transcribed, unchanged
    failed_before: list[tuple[Path, str]] = field(default_factory=list)  # failed earlier, unchanged: `retry`
    skipped: dict[str, list[Path]] = field(default_factory=dict)  # reason -> paths
    unavailable: bool = False
    missing: list[Path] = field(default_factory=list)  # watched folders that are not there

    def skip(self, path: Path, why: str) -> None:
        self.skipped.setdefault(why, []).append(path)

    def outputs(self) -> list[Path]:
        return [md for _, md in self.transcribed + self.reused]

    def lines(self, review: list[dict]) -> list[str]:
        """The summary for a person; `review`: the outputs of this scan that need review (status.needs_review)."""
        counts = [
            (len(self.transcribed), "transcribed"),
            (len(self.reused), "reused"),
            (len(self.failed), "failed"),
            (len(self.waiting), "waiting"),
            (self.done_before, "already done"),
            (len(self.failed_before), "failed before"),
            (sum(map(len, self.skipped.values())), "skipped"),
        ]
        said = ", ".join(f"{k} {what}" for k, what in counts if k) or "nothing to do"
        out = [f"scan: {said} ({self.seen} file(s) seen)"]
        out += [f"  skipped: {line}" for line in reasons(self.skipped)]
        out += [f"  failed: {path}: {reason}" for path, reason in self.failed]
        out += [f"  waiting: {path}: {reason}" for path, reason in self.waiting]
        if self.failed_before:
            out.append(
                f"  {len(self.failed_before)} failed before and are unchanged: `handwatch status` says why, "
                "`handwatch retry` tries them again"
            )
        folders = Counter(md.parent for md in self.outputs())
        out += [f"Markdown: {k} file(s) written in {folder}" for folder, k in sorted(folders.items())]
        if review:
            out.append(f"needs review ({len(review)} of {len(self.outputs())}):")
            out += [f"  {r['path']}: {'; '.join(r['reasons']) or 'flagged'}" for r in review[:LIST_MOST]]
            if len(review) > LIST_MOST:
                out.append(f"  … and {len(review) - LIST_MOST} more: `handwatch status` lists them all")
        out += [f"folder {path} does not exist (yet): nothing was scanned there" for path in self.missing]
        return out

    def exit_code(self) -> int:
        if self.failed:
            return EX_SOMEFAILED
        return EX_UNAVAILABLE if self.unavailable else EX_OK


def scan(cfg: Config, bar: NoBar | None = None, clock: Callable[[], float] = time.time) -> Summary:
    bar = bar or NoBar()
    db, queue, pipeline, candidates, n = build(cfg)
    summary = Summary()
    lock = threading.Lock()
    outcomes: dict[Path, Path] = {}
    reused: set[Path] = set()

    def on_done(job: Job, outcome) -> None:
        with lock:
            outcomes[job.path] = outcome.output
            if outcome.reused:
                reused.add(job.path)

    worker = Worker(queue, pipeline, candidates, on_done=on_done)
    queue.recover()
    settler = Settler(lambda p: (candidates.rule(p)[0] or cfg.base_rule()).settle_s)
    settling: set[Path] = set()
    expected: set[Path] = set()  # the files this scan means to process

    def enqueue(path: Path) -> None:
        sig = file_sig(path)
        if sig is None:
            summary.skip(path, "vanished before it could be read")
            return
        try:
            new = queue.enqueue(path, safefs.sha256_file(path), sig)
        except Unsafe as e:
            summary.skip(path, str(e.strerror))
            return
        except OSError as e:
            summary.skip(path, f"cannot be read ({e.strerror or e})")
            return
        if new:
            with lock:
                expected.add(path)
        else:
            classify(path)

    def classify(path: Path) -> None:
        """A file whose current version the queue already knows."""
        state = queue.state_of(path) or {}
        if state.get("state") == DONE:
            summary.done_before += 1
        elif state.get("state") == FAILED:
            summary.failed_before.append((path, state.get("reason") or "failed"))
        elif state.get("state") == SKIPPED:
            summary.skip(path, state.get("reason") or "not a document")
        elif state.get("state") == PENDING and queue.is_due(path):
            with lock:
                expected.add(path)  # queued before, due now: this scan does it
        else:
            summary.waiting.append((path, why_waiting(state)))

    now = clock()
    longest = 0.0
    summary.missing = [f.path for f in cfg.folders if not f.path.is_dir()]
    for path in candidates.walk():
        if path.name.endswith(QUIET_NAMES) or safefs.is_temp(path.name):
            continue
        summary.seen += 1
        rule, why = candidates.rule(path)
        sig = file_sig(path)
        if rule is None or sig is None:
            summary.skip(path, why or "vanished before it could be read")
        elif queue.known(path, sig):
            classify(path)
        elif now - sig.mtime_ns / 1e9 < rule.settle_s:
            settler.event(path, min(now, sig.mtime_ns / 1e9), sig)  # quiet since it was last written
            settling.add(path)
            longest = max(longest, rule.settle_s)
        else:
            enqueue(path)
    intake_done = threading.Event()
    owner = this_owner()
    finished: set[Path] = set()
    wake = threading.Event()

    def loop() -> None:
        while not worker.unavailable.is_set():
            job = queue.claim(owner, LEASE_S, MAX_ATTEMPTS)
            if job is None:
                if intake_done.is_set():
                    return
                wake.wait(0.2)
                wake.clear()
                continue
            outcome = worker.handle(job)
            if outcome not in ("done", "failed", "gone", "skipped"):
                continue  # changed (queued again with its new content) or waiting: reported at the end if still so
            reason = (queue.state_of(job.path) or {}).get("reason") if outcome in ("failed", "skipped") else None
            with lock:
                finished.add(job.path)
                if outcome == "done":
                    where = outcomes.get(job.path, job.path)
                    (summary.reused if job.path in reused else summary.transcribed).append((job.path, where))
                elif outcome == "failed":
                    summary.failed.append((job.path, reason or "failed"))
                elif outcome == "skipped":
                    summary.skip(job.path, reason or "not a document")
                else:
                    summary.skip(job.path, "vanished or stopped being an input before its turn")
                if job.path in expected:
                    bar.advance(outcome)

    with bar:
        bar.start(len(expected), len(settling))
        threads = [threading.Thread(target=loop, name=f"scan-{i}", daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        _settle(settler, settling, enqueue, summary, bar, clock, now + longest + SETTLE_PATIENCE_S, wake, worker.unavailable)
        intake_done.set()
        for t in threads:
            t.join()
    summary.unavailable = worker.unavailable.is_set()
    for path in sorted(expected - finished):  # the endpoint went away, or another process has it
        summary.waiting.append((path, why_waiting(queue.state_of(path) or {})))
    return summary


def why_waiting(state: dict) -> str:
    if state.get("state") == RUNNING:
        return "being transcribed by another handwatch process (the daemon?)"
    return state.get("reason") or "left in the queue"


def _settle(
    settler: Settler,
    settling: set[Path],
    enqueue,
    summary: Summary,
    bar: NoBar,
    clock: Callable[[], float],
    deadline: float,
    wake: threading.Event,
    down: threading.Event,
) -> None:
    """Queue each file once it has been quiet for its settle time with its size and mtime unchanged,
    as the daemon does; a file still changing at `deadline` is left for the daemon or the next scan,
    and so is every file still settling once the endpoint is `down`."""
    while settling:
        if down.is_set():
            summary.waiting += [
                (p, "the endpoint is unavailable; the daemon or the next scan takes it") for p in sorted(settling)
            ]
            return
        now = clock()
        ready = settler.ready(now, file_sig)
        for path in ready:
            settling.discard(path)
            enqueue(path)
        for path in [p for p in settling if p not in settler]:  # vanished while it was being written
            settling.discard(path)
            summary.skip(path, "vanished while it was being written")
            bar.grow(-1)
        if ready:
            wake.set()
            bar.settled(len(ready), len(settling))
        if not settling:
            return
        if now >= deadline:
            for path in sorted(settling):
                summary.waiting.append(
                    (path, "still being written when the scan gave up waiting; the daemon or the next scan takes it")
                )
                bar.grow(-1)
            bar.settled(0, 0)
            return
        due = settler.next_due() or now
        time.sleep(min(1.0, max(0.05, due - now)))


def reasons(skipped: dict[str, list[Path]]) -> list[str]:
    """ "2 not a format handwatch reads (…): a.gif, b.txt", the most common reasons first."""
    counts = Counter({why: len(paths) for why, paths in skipped.items()})
    out = []
    for why, k in counts.most_common():
        names = ", ".join(p.name for p in skipped[why][:3]) + (", …" if k > 3 else "")
        out.append(f"{k} {why}: {names}")
    return out
