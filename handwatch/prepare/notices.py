"""Collect what decoders say while a page is decoded (Python warnings, libjpeg's recoverable
errors, poppler's stderr), per thread, so it goes into the file's log event and failure reason
instead of raw onto the terminal."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

_local = threading.local()
_install_lock = threading.Lock()
# Warnings raised in these modules are shown every time (not once per place in the code), so that
# every file that triggers one gets it in its own log event.
_ALWAYS = r"(PIL|pillow_heif|handwatch)(\..*)?$"


def _show(message, category, filename, lineno, file=None, line=None):
    sink = getattr(_local, "sink", None)
    if sink is not None:
        sink.append(f"{category.__name__}: {message}")
        return
    _previous(message, category, filename, lineno, file, line)


_previous = warnings.showwarning


def _ensure_installed() -> None:
    """`warnings.catch_warnings` swaps module globals and is not safe with threads; this hook is
    installed once and routes each warning to the collector of the thread that raised it. Checked
    on every use because a test framework may restore the originals between tests."""
    global _previous
    if warnings.showwarning is _show and _ours_first():
        return
    with _install_lock:
        if warnings.showwarning is not _show:
            _previous = warnings.showwarning
            warnings.showwarning = _show
        if not _ours_first():
            warnings.filterwarnings("always", category=Warning, module=_ALWAYS)


def _ours_first() -> bool:
    first = warnings.filters[0] if warnings.filters else None
    return first is not None and first[0] == "always" and getattr(first[3], "pattern", None) == _ALWAYS


@contextmanager
def collect(propagate: bool = True) -> Iterator[list[str]]:
    """Messages said on this thread inside the block, in order, each once; an enclosing
    collector gets them too unless `propagate` is false."""
    _ensure_installed()
    outer = getattr(_local, "sink", None)
    sink: list[str] = []
    _local.sink = sink
    try:
        yield sink
    finally:
        _local.sink = outer
        unique = list(dict.fromkeys(sink))
        sink[:] = unique
        if outer is not None and propagate:
            outer.extend(unique)


def say(message: str) -> None:
    """Record a message from a decoder that does not use Python warnings (libjpeg, poppler)."""
    sink = getattr(_local, "sink", None)
    if sink is not None:
        sink.append(message)


def summary(said: list[str], limit: int = 200) -> str:
    """One line for a reason: the messages joined, cut at `limit` characters."""
    text = "; ".join(m.replace("\n", " ").strip() for m in said if m.strip())
    return text if len(text) <= limit else text[: limit - 1] + "…"
