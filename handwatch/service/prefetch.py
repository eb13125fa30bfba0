"""Pages prepared ahead of free request slots, with the memory they may take bounded.

A GPU server batching C requests frees a slot every 0.5 s / C or so; a page takes 50–200 ms of CPU to
decode, clean up and encode. If the worker that gets a reply only then starts on its next page, the
slot idles for that long every time. So there are more workers than request slots (`depth` more),
and the pages they prepare wait for a slot already encoded (a JPEG of a few hundred kB), never as
decoded pixels (a 12 MP photo is 36 MB):

- decoding, cleaning up and encoding run on `preparers` threads (one per core), so at most that
  many pages are ever decoded at once, however many workers or PDF pages wait; the image buffers
  also stay in those threads' malloc arenas instead of one per worker;
- `ahead` bounds every page between the start of its decoding and its reply (request slots plus
  the prefetch depth plus one), so a 200-page PDF cannot prepare all its pages ahead either.

A few first pages wait as pixels: when a file carries no thumbnail for the camera roll's check to look
at, its first page is decoded once, the check looks at a reduced copy while the model is asked about
it, and the page is prepared from the same decode if it is a document. At most KEEP_PAGES wait so;
beyond that the check decodes its own preview, as it did before.

`Flow` counts both, with their peaks, for the log and the tests."""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


# First pages kept as pixels while the check asks about them: a page decodes to its prepared size (1288 px for a
# VLM: 1288x966 RGB, 3.7 MB), so at most ~45 MB; the rest decode a preview and their page again. A page larger
# than KEEP_SIDE (Tesseract's 2400 px, 13 MB; a rule's own max_side) is never kept.
KEEP_PAGES = 12
KEEP_SIDE = 1600


def depth(requests: int) -> int:
    """Pages prepared ahead: enough to ride out a slow page (a HEIC, a PDF page) while slots free up."""
    return max(4, min(16, math.ceil(requests / 4)))


def preparers() -> int:
    return max(1, os.cpu_count() or 1)


class Gauge:
    """How many are held now and at most so far (thread-safe)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.now = self.peak = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.now += n
            self.peak = max(self.peak, self.now)

    @contextmanager
    def held(self) -> Iterator[None]:
        self.add(1)
        try:
            yield
        finally:
            self.add(-1)


class Flow:
    """The bounds on pages in memory, shared by every worker of one daemon (kept across reloads that
    keep the worker count). `run` is where a page is decoded: on a preparer thread."""

    def __init__(self, ahead: int, pool=None):
        self.ahead = threading.BoundedSemaphore(ahead)
        self.limit = ahead
        self.pool = pool  # a DaemonPool of `preparers()` threads; None: prepare on the caller's thread
        self.decoded = Gauge()  # pages being decoded, prepared and encoded (on a preparer thread)
        self.keeping = threading.BoundedSemaphore(KEEP_PAGES)
        self.kept = Gauge()  # first pages decoded for the check, waiting for its answer (Kept)
        self.encoded = Gauge()  # pages encoded and not yet answered (waiting for a slot, or in flight)

    @contextmanager
    def page(self) -> Iterator[None]:
        """Held from the start of a page's decoding until its reply: bounds the pages ahead."""
        with self.ahead:
            yield

    def run(self, fn: Callable[[], T]) -> T:
        if self.pool is None:
            return fn()
        return self.pool.map(lambda _: fn(), [None])[0]


class Kept:
    """A file's first page decoded for the camera roll's check and kept for its preparation: one of at most
    KEEP_PAGES (`Flow.keeping`), counted in `Flow.kept` until it is taken, by its preparation or by whoever
    drops it (the check skipped the file, or it failed)."""

    def __init__(self, flow: Flow, allowed: bool = True):
        self._flow = flow
        self._allowed = allowed
        self._page = None
        self._reserved = False
        self._lock = threading.Lock()

    def reserve(self) -> bool:
        """Room to keep a page? If not, the check decodes its own small preview and the page is decoded later."""
        with self._lock:
            assert not self._reserved
            self._reserved = self._allowed and self._flow.keeping.acquire(blocking=False)
            return self._reserved

    def put(self, page) -> None:
        with self._lock:
            assert self._reserved and self._page is None
            self._page = page
        self._flow.kept.add(1)

    def take(self):
        with self._lock:
            page, self._page = self._page, None
            reserved, self._reserved = self._reserved, False
        if page is not None:
            self._flow.kept.add(-1)
        if reserved:
            self._flow.keeping.release()
        return page
