"""Routes share the daemon's workers: a backlog for a busy endpoint must not hold every worker while another
folder's endpoint has free slots (issue #26). The real Worker and JobQueue on SQLite, two scripted servers."""

from __future__ import annotations

import threading

from handwatch.config import loader
from handwatch.safefs import file_sig, sha256_file
from handwatch.service.worker import Worker, build, worker_count
from handwatch.store.jobs import this_owner
from tests.support.fakeopenai import FakeOpenAI, wait_for
from tests.support.pages import draw_page


def test_a_busy_route_leaves_workers_for_the_other_routes_free_endpoint(tmp_path, write_config):
    small, big = FakeOpenAI(models=("small-vl",)).start(), FakeOpenAI(models=("big-vl",)).start()
    release = threading.Event()  # big sits on every request until the test lets it go
    big.default = {"content": "Call grandma on Sunday", "hold": release, "hold_timeout": 60}
    small.default = "Buy milk"
    small.logprobs_mode = big.logprobs_mode = "ignore"
    letters, shopping = tmp_path / "letters", tmp_path / "shopping"
    cfg = loader.load(
        write_config(
            {
                "state_dir": str(tmp_path / "state"),
                "endpoints": [
                    {"url": small.url, "name": "small", "max_concurrency": 2},
                    {"url": big.url, "name": "big", "max_concurrency": 1},
                ],
                "defaults": {"settle_s": 0},
                "folders": [{"path": str(letters), "endpoint": "big"}, {"path": str(shopping), "endpoint": "small"}],
            }
        )
    )
    db, queue, pipeline, candidates, _ = build(cfg)
    worker = Worker(queue, pipeline, candidates)
    letters.mkdir()
    shopping.mkdir()
    files = [letters / f"letter{i}.png" for i in range(12)] + [shopping / "list.png"]
    for i, p in enumerate(files):
        draw_page([f"Note {i}"]).save(p)
        queue.enqueue(p, sha256_file(p), file_sig(p))  # the letters first: they are claimed first
    stop = threading.Event()
    outcomes: list[str] = []

    def loop() -> None:
        while not stop.is_set():
            job = queue.claim(this_owner(), 600)
            if job is None:
                stop.wait(0.05)  # deferred letters come due again
                continue
            outcomes.append(worker.handle(job))

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(worker_count(cfg))]
    try:
        for t in threads:
            t.start()
        # Every letter waits for big's one slot; the shopping list must not wait behind them for a worker.
        wait_for(lambda: (shopping / "list.md").exists(), 30, what="the shopping list read by small while big is busy")
        assert len(big.requests) == 1 and not (letters / "letter0.md").exists()
        waiting = [w["reason"] for w in queue.waiting()]
        assert any(r.startswith("waiting for a free slot on big") for r in waiting), waiting
        release.set()
        wait_for(lambda: all(p.with_suffix(".md").exists() for p in files), 60, what="every letter read in the end")
    finally:
        stop.set()
        release.set()
        for t in threads:
            t.join(10)
        small.stop()
        big.stop()
        db.close()
    assert queue.counts()["done"] == len(files) and "failed" not in outcomes
