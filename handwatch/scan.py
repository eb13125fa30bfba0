"""`handwatch scan`: process everything in the watched folders that has no current transcription, then exit."""

from __future__ import annotations

import sys
import threading
import time

from handwatch import output
from handwatch.config import Config
from handwatch.errors import EX_OK, EX_SOMEFAILED, EX_UNAVAILABLE
from handwatch.queue import this_owner
from handwatch.safefs import file_sig
from handwatch.worker import Worker, build

LEASE_S = 6 * 3600
MAX_ATTEMPTS = 3


def scan(cfg: Config, progress: bool = False) -> int:
    db, queue, pipeline, candidates, n = build(cfg)
    worker = Worker(queue, pipeline, candidates)
    queue.recover()
    now = time.time()
    for path in candidates.walk():
        rule, _ = candidates.rule(path)
        sig = file_sig(path)
        if rule is None or sig is None or queue.known(path, sig):
            continue
        if now - sig.mtime_ns / 1e9 < rule.settle_s:
            continue  # still being written: the daemon or the next scan takes it
        try:
            queue.enqueue(path, output.sha256_file(path), sig)
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
