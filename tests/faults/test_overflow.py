"""inotify overflow: the daemon is stopped (SIGSTOP) while 5,000 files arrive, so the kernel's event queue
overflows and the events of the last ones are dropped; once resumed, the daemon must walk its folders
again at once instead of waiting for the next periodic rescan (set to an hour here)."""

from __future__ import annotations

from pathlib import Path

from tests.faults.harness import World
from tests.support.daemon import text_for
from tests.support.fakeopenai import FakeOpenAI

FILES = 5000
PHOTOS = 400  # written last, after the queue is full: only a rescan can find them


def _queue_limit() -> int:
    return int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())


def test_inotify_overflow_while_stopped_is_caught_up_at_once(tmp_path, fault):
    fault.case = "inotify overflow: SIGSTOP, 5,000 files created, SIGCONT"
    server = FakeOpenAI().start()
    server.default = text_for
    w = World(tmp_path / "w", server.url, settle_s=0.5, rescan_s=3600)
    # Each note costs four events (create, open, modify, close-write): enough of them overflow the queue.
    notes = max(FILES - PHOTOS, _queue_limit() // 4 + 500)
    try:
        w.start()
        w.pause()
        for i in range(notes):
            (w.inbox / f"note-{i:05}.txt").write_text("not a photo")
        for i in range(PHOTOS):
            w.photo(f"late-{i:03}.png", i)
        w.resume()
        w.check()
        assert w.events("watch.overflow"), "the queue did not overflow: the case proved nothing"
        assert len(w.events("rescan.done")) >= 2  # the start's, and the one the overflow asked for
        fault.note(
            f"{notes + PHOTOS:,} files ({PHOTOS} photos last); overflow noticed, folders walked again at "
            f"once (periodic rescan 1 h); {len(w.good)} Markdown"
        )
    finally:
        w.close()
        server.stop()
