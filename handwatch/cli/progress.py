"""The progress bar of `scan` on a terminal (rich): log lines go above it, never through it; no bar elsewhere."""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import TaskID

from handwatch import log


class NoBar:
    """What `scan` talks to when nobody watches a terminal: it says nothing."""

    def start(self, total: int, settling: int) -> None: ...

    def settled(self, ready: int, left: int) -> None: ...

    def grow(self, n: int) -> None: ...

    def advance(self, outcome: str) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None: ...


class Bar(NoBar):
    """rich's progress display on stderr with the rate and the time left. While it shows, structlog writes
    through rich's console, which prints each finished line above the bar and redraws the bar below."""

    def __init__(self, log_level: str = "info", stream=None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.stream = stream or sys.stderr
        self.log_level = log_level
        self.console = Console(file=self.stream)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _Pace(),
            TimeElapsedColumn(),
            console=self.console,
            redirect_stdout=False,
            redirect_stderr=True,
            transient=False,
        )
        self.task: TaskID | None = None
        self.settling = 0
        self.lock = threading.Lock()

    def __enter__(self):
        from rich.file_proxy import FileProxy

        self.progress.start()
        log.setup(self.log_level, json=False, stream=FileProxy(self.console, self.stream))
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()
        log.setup(self.log_level, stream=self.stream)

    def _describe(self) -> str:
        if self.settling:
            return f"transcribing; waiting for {self.settling} file(s) still being written"
        return "transcribing"

    def start(self, total: int, settling: int) -> None:
        with self.lock:
            self.settling = settling
            self.task = self.progress.add_task(self._describe(), total=total + settling)

    def settled(self, ready: int, left: int) -> None:
        """`ready` files stopped changing and are queued; `left` are still being written."""
        with self.lock:
            self.settling = left
            if self.task is not None:
                self.progress.update(self.task, description=self._describe())

    def grow(self, n: int) -> None:
        """The total changes: a file given up on while it was still being written (-1)."""
        with self.lock:
            if self.task is not None:
                total = self.progress.tasks[self.task].total or 0
                self.progress.update(self.task, total=max(0, total + n))

    def advance(self, outcome: str) -> None:
        with self.lock:
            if self.task is not None:
                self.progress.advance(self.task)


def _Pace():
    from rich.progress import ProgressColumn
    from rich.text import Text

    class Pace(ProgressColumn):
        """The rate since the start (files finish in bursts when workers run side by side, so rich's
        recent-samples speed jumps about) and the time left at that rate."""

        def render(self, task) -> Text:
            elapsed = task.elapsed or 0.0
            if not task.completed or elapsed <= 0:
                return Text("-- s/file, time left unknown")
            rate = task.completed / elapsed
            left = max(0.0, (task.total or 0) - task.completed) / rate
            pace = f"{rate:.1f} files/s" if rate >= 1 else f"{1 / rate:.1f} s/file"
            return Text(f"{pace}, {int(left) // 60}:{int(left) % 60:02d} left")

    return Pace()


def bar_for(enabled: bool, log_level: str) -> NoBar:
    return Bar(log_level) if enabled else NoBar()
