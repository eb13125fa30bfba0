"""Skipped files in the job store, under random interleavings (hypothesis): a skipped file is not looked at again
until it changes or a person asks; a rescan of the same bytes changes nothing; `retry` without `--anyway` never
touches skipped files; once a person said "anyway", every later claim of that file carries it, through changes of
its content; a skipped file is never counted as failed."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from handwatch.safefs import FileSig
from handwatch.store.jobs import DONE, FAILED, PENDING, SKIPPED, JobQueue
from handwatch.store.state import StateDB

PATHS = [Path("/camera/IMG_1.jpg"), Path("/camera/IMG_2.heic"), Path("/camera/scan.pdf")]


class Clock:
    t = 1000.0

    def __call__(self) -> float:
        return self.t


class SkippedFiles(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.q = JobQueue(StateDB(Path(self.tmp.name) / "state"), Clock())
        self.version = {p: 0 for p in PATHS}  # the model: each file's content version
        self.state: dict[Path, str] = {}  # the state the store should hold
        self.anyway: set[Path] = set()

    def teardown(self):
        self.q.db.close()
        self.tmp.cleanup()

    def _sig(self, p: Path) -> FileSig:
        return FileSig(100 + self.version[p], 1000 + self.version[p], 7, 1)

    def _sha(self, p: Path) -> str:
        return f"{p.name}-{self.version[p]}"

    @rule(p=st.sampled_from(PATHS), changed=st.booleans())
    def arrive(self, p, changed):
        """The watcher or a rescan sees the file: a new version of it, or the same bytes again."""
        if changed or p not in self.state:
            self.version[p] += 1 if p in self.state else 0
            new = self.q.enqueue(p, self._sha(p), self._sig(p))
            assert new
            self.state[p] = PENDING
        else:
            assert not self.q.enqueue(p, self._sha(p), self._sig(p))  # a rescan of the same bytes: nothing new

    @rule(outcome=st.sampled_from(["skip", "done", "fail"]))
    def work(self, outcome):
        job = self.q.claim("me:1", 3600)
        due = [p for p, s in self.state.items() if s == PENDING]
        if job is None:
            assert not due
            return
        assert job.path in due, "only pending files are claimed: never a skipped, done or failed one"
        assert job.anyway == (job.path in self.anyway)
        assert bool((job.override or {}).get("anyway")) == (job.path in self.anyway)
        if outcome == "skip" and not job.anyway:  # the pipeline never skips a file a person said to transcribe
            assert self.q.skip(job, "photo", "not a document (photo)")
            self.state[job.path] = SKIPPED
        elif outcome == "fail":
            assert self.q.fail(job, "corrupt")
            self.state[job.path] = FAILED
        else:
            assert self.q.complete(job, job.path.with_suffix(".md"))
            self.state[job.path] = DONE

    @rule(anyway=st.booleans())
    def retry_all(self, anyway):
        self.q.retry(None, anyway)
        for p, s in self.state.items():
            if s == FAILED or (anyway and s == SKIPPED):
                self.state[p] = PENDING
                if anyway and s == SKIPPED:  # a failed file was never judged: its check stays as it was
                    self.anyway.add(p)

    @rule(p=st.sampled_from(PATHS), anyway=st.booleans())
    def retry_one(self, p, anyway):
        self.q.retry([p], anyway)
        if p in self.state:
            self.state[p] = PENDING
            if anyway:
                self.anyway.add(p)

    @invariant()
    def the_store_agrees(self):
        for p, s in self.state.items():
            got = self.q.state_of(p)
            assert got is not None and got["state"] == s, (p, got, s)
            assert got["anyway"] == (p in self.anyway)
            if s == SKIPPED:
                assert got["kind"] == "photo" and got["reason"] == "not a document (photo)"
        counts = self.q.counts()
        assert counts[SKIPPED] == sum(s == SKIPPED for s in self.state.values())
        assert counts[FAILED] == sum(s == FAILED for s in self.state.values())


SkippedFiles.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_skipped_files_under_random_interleavings = SkippedFiles.TestCase
