"""structlog setup: JSON lines when stderr is not a terminal (systemd, pipes), a readable console when it is."""

from __future__ import annotations

import logging
import sys

import structlog


def setup(level: str = "info", json: bool | None = None, stream=None) -> None:
    """Configure once per process; `json=None` decides from whether the stream is a TTY."""
    stream = stream or sys.stderr
    if json is None:
        json = not stream.isatty()
    processors: list = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        processors += [structlog.dev.ConsoleRenderer(colors=False)]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def get(name: str | None = None):
    return structlog.get_logger(name) if name else structlog.get_logger()
