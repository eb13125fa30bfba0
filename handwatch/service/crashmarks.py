"""Which jobs this process is decoding right now, kept where the next start can read it if this process dies.

A file that crashes the decoder (a libjpeg, libheif or poppler bug, or an image that exhausts memory) would
crash-loop the service; after three such deaths it is quarantined. But a death is the file's fault only if
it happened while the file was being decoded: a watchdog kill during a slow request, a SIGKILL from an
operator, or a power cut while waiting for the model says nothing about the file. So each decode is marked
in a small per-process file: one 8-byte slot per thread, written with pwrite and never synced — the page
cache outlives the process, which is the only death this needs to survive."""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

PREFIX = "decoding."
SLOT = struct.Struct("<q")


class DecodeMarks:
    def __init__(self, state_dir: Path, owner: str):
        self.path = state_dir / f"{PREFIX}{owner}"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        self._slots: dict[int, int] = {}
        self._lock = threading.Lock()

    def _slot(self) -> int:
        ident = threading.get_ident()
        with self._lock:
            if ident not in self._slots:
                self._slots[ident] = len(self._slots)
            return self._slots[ident]

    @contextmanager
    def decoding(self, job_id: int) -> Iterator[None]:
        offset = self._slot() * SLOT.size
        os.pwrite(self._fd, SLOT.pack(job_id), offset)
        try:
            yield
        finally:
            os.pwrite(self._fd, SLOT.pack(0), offset)

    def close(self) -> None:
        """A clean exit: nothing was being decoded, and nobody needs to read this file."""
        os.close(self._fd)
        self.path.unlink(missing_ok=True)


def collect(state_dir: Path, alive: Callable[[str | None], bool]) -> set[int]:
    """Job ids that dead processes were decoding when they died; their mark files are removed."""
    out: set[int] = set()
    for f in state_dir.glob(PREFIX + "*"):
        owner = f.name[len(PREFIX) :]
        if alive(owner):
            continue
        try:
            data = f.read_bytes()
        except OSError:
            continue
        for (job_id,) in SLOT.iter_unpack(data[: len(data) - len(data) % SLOT.size]):
            if job_id:
                out.add(job_id)
        f.unlink(missing_ok=True)
    return out
