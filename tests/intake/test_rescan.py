"""Rescans read nothing they have already done: a file whose size, mtime, inode and ctime are those of
its job is passed over on a stat, however often the folders are walked."""

from __future__ import annotations

import hashlib
import os

from handwatch.safefs import file_sig
from handwatch.store.jobs import JobQueue
from handwatch.store.state import StateDB
from tests.support.daemon import NO_DAC, DaemonProc
from tests.support.fakeopenai import wait_for


def test_rescans_read_no_file_whose_version_is_done(tmp_path, write_config, fake_openai):
    """The done files cannot be read at all (mode 000, and the daemon runs without root's right to
    read anyway): any attempt would park them as "waiting for permission to read". Only the one file
    whose mtime changed since its job is read, and found unreadable."""
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    cfg = write_config(
        {
            "endpoints": [{"url": fake_openai.url, "max_concurrency": 2}],
            "rescan_s": 5,
            "defaults": {"settle_s": 0.2},
            "folders": [{"path": str(inbox)}],
        }
    )
    db = StateDB(tmp_path / "state")
    queue = JobQueue(db)
    done = [inbox / f"IMG_{i:03d}.jpg" for i in range(30)] + [inbox / "sub" / f"s{i}.jpg" for i in range(30)]
    changed = inbox / "changed.jpg"
    for p in [*done, changed]:
        data = b"\xff\xd8\xff" + p.name.encode() * 40
        p.write_bytes(data)
        os.chmod(p, 0)
        (p.parent / (p.stem + ".md")).write_text("---\n---\ntext\n")
        queue.record(p, hashlib.sha256(data).hexdigest(), file_sig(p), "done", p.parent / (p.stem + ".md"))
    st = os.stat(changed)
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new version, same size
    d = DaemonProc(cfg, tmp_path / "daemon.log", prefix=NO_DAC)
    try:
        wait_for(lambda: d.events("file.parked"), 30, what="the changed file looked at")
        n = len(d.events("rescan.done"))
        wait_for(lambda: len(d.events("rescan.done")) >= n + 2, 30, what="two more rescans")
        parked = d.events("file.parked")
        assert [e["path"] for e in parked] == [str(changed)]
        assert "waiting for permission to read" in parked[0]["reason"]
        assert not d.events("file.unreadable") and not d.events("file.settled")
        assert {r["state"] for r in db.connect().execute("SELECT state FROM jobs WHERE path != ?", (os.fsencode(changed),))} == {
            "done"
        }
        assert all(e["files"] >= len(done) + 1 and e["queued"] == 0 for e in d.events("rescan.done")[n:])
    finally:
        assert d.stop() == 0
