"""The intake in-process, on a real state database: what it does when the database fails a folder walk."""

from __future__ import annotations

import threading

from handwatch.config import loader
from handwatch.config.rules import RuleBook
from handwatch.intake.candidates import Candidates
from handwatch.intake.feed import Intake
from handwatch.store.jobs import JobQueue
from handwatch.store.state import StateDB
from tests.support.daemon import tiny_png
from tests.support.fakeopenai import wait_for


def test_a_folder_walk_the_database_fails_is_walked_again_not_settled_as_a_file(tmp_path, write_config):
    """A folder moved in (or watched again) is walked with one database query per batch of files. When that
    query failed, the folder itself went to the settler as if it were a photo, and once settled it was recorded
    as a failed job ("not a regular file"), the rest of its walk dropped until the next rescan."""
    inbox = tmp_path / "inbox"
    (inbox / "moved-in").mkdir(parents=True)
    tiny_png(inbox / "moved-in" / "a.png", 1)
    cfg = loader.load(write_config({"endpoints": [{"url": "http://127.0.0.1:9/v1"}], "folders": [{"path": str(inbox)}]}))
    db = StateDB(cfg.state_dir)
    intake = Intake(JobQueue(db), Candidates(cfg, RuleBook(cfg)), threading.Event(), lambda: None)
    db.connect().execute("DROP TABLE jobs")  # every query about jobs now fails: sqlite3.OperationalError

    intake.put("dir", inbox / "moved-in")
    intake._drain()
    assert inbox / "moved-in" not in intake.settler  # not a file to settle
    wait_for(lambda: not intake.events.empty(), 30, what="the walk queued again")
    assert intake.events.get_nowait() == ("dir", inbox / "moved-in")
