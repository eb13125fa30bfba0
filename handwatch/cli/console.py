"""What the commands print for people: one line per write, and a reader that went away ends the output quietly."""

from __future__ import annotations

import os
import sys


def err(msg: str) -> None:
    err_line(f"handwatch: {msg}")


def err_line(text: str) -> None:
    """One line to stderr in one write, so log lines from worker threads cannot split it."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def out(*args, **kwargs) -> None:
    """print(), but a reader that went away (`status | head`) ends the output, not the command."""
    try:
        print(*args, **kwargs)
    except BrokenPipeError:
        silence(kwargs.get("file") or sys.stdout)


def silence(stream) -> None:
    """Point a closed pipe's descriptor at /dev/null, so later writes and the flush at exit are no error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
