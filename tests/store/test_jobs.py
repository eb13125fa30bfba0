"""The durable queue on real SQLite: idempotent enqueue, claims, deferral, quarantine, crash recovery."""

import os
from pathlib import Path

import pytest

from handwatch.safefs import FileSig
from handwatch.store.jobs import JobQueue
from handwatch.store.state import StateDB


def sig(size: int, mtime_ns: int, ino: int = 7, ctime_ns: int = 1) -> FileSig:
    return FileSig(size, mtime_ns, ino, ctime_ns)


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture
def q(tmp_path):
    return JobQueue(StateDB(tmp_path / "state"), Clock())


def test_enqueue_is_idempotent_per_path_and_content(q):
    p = Path("/w/a.jpg")
    assert q.enqueue(p, "s1", sig(10, 1)) is True
    assert q.enqueue(p, "s1", sig(10, 1)) is False
    assert q.counts()["pending"] == 1
    assert q.known(p, sig(10, 1)) and not q.known(p, sig(10, 2))
    # Same size and mtime but another inode (renamed over it) or ctime (rewritten, mtime kept): not known.
    assert not q.known(p, sig(10, 1, ino=8)) and not q.known(p, sig(10, 1, ctime_ns=2))


def test_changed_original_is_a_new_job_even_after_done(q):
    p = Path("/w/a.jpg")
    q.enqueue(p, "s1", sig(10, 1))
    job = q.claim("me", 60)
    assert q.complete(job, Path("/w/a.md"))
    assert q.enqueue(p, "s2", sig(11, 2)) is True
    assert q.counts() == {"pending": 1, "running": 0, "done": 0, "failed": 0, "skipped": 0}


def test_stale_claim_cannot_finish_a_changed_job(q):
    p = Path("/w/a.jpg")
    q.enqueue(p, "s1", sig(10, 1))
    job = q.claim("me", 60)
    q.enqueue(p, "s2", sig(11, 2))  # the file changed while it was being transcribed
    assert q.complete(job, None) is False
    assert q.state_of(p)["state"] == "pending" and q.state_of(p)["sha256"] == "s2"


def test_defer_waits_and_counts_nothing(q):
    p = Path("/w/a.jpg")
    q.enqueue(p, "s1", sig(10, 1))
    job = q.claim("me", 60)
    assert job.attempts == 0
    q.defer(job, 30, "waiting for endpoint")
    assert q.claim("me", 60) is None  # not due yet
    q.clock.t += 31
    again = q.claim("me", 60)
    assert again.attempts == 0  # the endpoint's outage was not counted against the file


def test_only_deaths_while_decoding_count_and_three_quarantine_the_file(q):
    p = Path("/w/poison.jpg")
    q.enqueue(p, "s1", sig(10, 1))
    for _ in range(5):  # killed during requests (watchdog, operator): never the file's fault
        job = q.claim("dead:1", 60)
        q.recover(alive=lambda owner: False)
    assert q.state_of(p)["attempts"] == 0 and q.counts()["pending"] == 1
    for _ in range(3):
        job = q.claim("dead:1", 60)
        q.recover(alive=lambda owner: False, died_decoding={job.id})
    assert q.claim("me", 60) is None
    assert q.failed() == [{"path": "/w/poison.jpg", "reason": "quarantined: the process died 3 times while decoding this file"}]


def test_strikes_fail_a_file_the_server_keeps_failing_on(q):
    p = Path("/w/poison.jpg")
    q.enqueue(p, "s1", sig(10, 1))
    assert q.strike(q.claim("me", 60), "HTTP 500 boom", limit=3, delay_s=10) is False
    assert q.waiting()[0]["reason"] == "the server failed on this file (1 of 3): HTTP 500 boom"
    q.clock.t += 11
    assert q.strike(q.claim("me", 60), "HTTP 500 boom", limit=3, delay_s=10) is False
    q.clock.t += 11
    assert q.strike(q.claim("me", 60), "HTTP 500 boom", limit=3, delay_s=10) is True
    assert q.failed() == [{"path": "/w/poison.jpg", "reason": "HTTP 500 boom (3 tries)"}]


def test_a_parked_file_is_shown_once_never_claimed_and_replaced_by_its_next_version(q):
    p = Path("/w/locked.jpg")
    assert q.park(p, sig(10, 1), "waiting for permission to read", failed=False) is True
    assert q.park(p, sig(10, 1), "waiting for permission to read", failed=False) is False  # rescans: once
    assert q.known(p, sig(10, 1)) and q.claim("me", 60) is None
    assert q.waiting()[0]["reason"] == "waiting for permission to read"
    assert q.enqueue(p, "s1", sig(10, 1, ctime_ns=2)) is True  # chmod changed its ctime: now readable
    assert q.claim("me", 60).sha256 == "s1"


def test_recover_requeues_only_dead_owners_or_expired_leases(q):
    a, b = Path("/w/a.jpg"), Path("/w/b.jpg")
    q.enqueue(a, "s1", sig(1, 1))
    q.enqueue(b, "s2", sig(1, 1))
    q.claim("alive", 60)
    q.claim("dead", 60)
    assert q.recover(alive=lambda o: o == "alive") == 1
    assert q.release("alive") == 1 and q.counts()["running"] == 0
    q.claim("alive", 60)
    assert q.counts()["running"] == 1
    q.clock.t += 61
    assert q.recover(alive=lambda o: True) == 1


def test_paths_that_are_not_utf8_or_contain_newlines_round_trip(q):
    weird = [Path(os.fsdecode(b"/w/caf\xe9.jpg")), Path("/w/two\nlines.jpg")]
    for i, p in enumerate(weird):
        q.enqueue(p, f"s{i}", sig(1, 1))
    claimed = {q.claim("me", 60).path for _ in weird}
    assert claimed == set(weird)


def test_retry_puts_failed_back_and_named_paths_in_any_state(q):
    a, b = Path("/w/a.jpg"), Path("/w/b.jpg")
    q.enqueue(a, "s1", sig(1, 1))
    q.enqueue(b, "s2", sig(1, 1))
    q.fail(q.claim("me", 60), "corrupt")
    q.complete(q.claim("me", 60), None)
    assert q.retry() == 1 and q.counts()["pending"] == 1
    assert q.retry([b]) == 1 and q.counts()["pending"] == 2
