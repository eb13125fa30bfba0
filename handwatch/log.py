"""structlog setup: JSON lines under systemd and in pipes, a readable console on a terminal; secrets masked.

Under journald (`JOURNAL_STREAM` names our stdout) the daemon writes its JSON lines to stdout, one
event each with `event`, `level`, `timestamp` and its fields. Other commands keep stdout for their
results (`once` prints output paths there) and log to stderr."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable

import structlog

MASK = "[redacted]"
MIN_SECRET = 8  # shorter values ("ollama", "none") are placeholders, and masking them would garble paths
# The password of any URL (`scheme://user:PASSWORD@host`; the last `@` before the path ends it, as urlsplit
# reads it): masked whatever its length and whether or not the config names it, so `admin:admin@` and a
# URL quoted in a config error are hidden too.
URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:]*:)[^\s/?#]*@")


class Redactor:
    """Replaces every known secret (API keys, passwords) wherever it appears in a string, and the password
    of every URL: a server that echoes the key in an error message must not put it into the journal or
    onto a terminal."""

    def __init__(self, secrets: Iterable[str] = ()):
        self.secrets = sorted({s for s in secrets if s and len(s) >= MIN_SECRET}, key=len, reverse=True)

    def text(self, s: str) -> str:
        for secret in self.secrets:
            if secret in s:
                s = s.replace(secret, MASK)
        return URL_PASSWORD.sub(rf"\1{MASK}@", s) if "://" in s else s

    def value(self, v):
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, dict):
            return {k: self.value(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return type(v)(self.value(x) for x in v)
        if isinstance(v, (int, float, bool)) or v is None:
            return v
        return self.text(str(v))  # paths, exceptions: rendered as text anyway

    def __call__(self, _logger, _name, event_dict: dict) -> dict:
        return self.value(event_dict)


class RedactingStream:
    """A text stream that masks secrets in everything written to it (what `check` and the other commands
    print). Each `write` is masked on its own: print() hands over a message whole."""

    def __init__(self, stream, redactor: Redactor):
        self._stream, self._redactor = stream, redactor

    def write(self, s: str) -> int:
        self._stream.write(self._redactor.text(s))
        return len(s)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def setup(level: str = "info", json: bool | None = None, stream=None, daemon: bool = False, secrets: Iterable[str] = ()) -> None:
    """Configure once per process. `daemon`: the daemon under journald logs to stdout; everything
    else logs to stderr. `json=None` decides from whether the stream is a terminal."""
    if stream is None:
        stream = sys.stdout if daemon and journal_stream(_fd(sys.stdout)) else sys.stderr
    if json is None:
        json = not stream.isatty()
    processors: list = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        Redactor(secrets),
    ]
    if json:
        processors += [structlog.processors.JSONRenderer()]
    else:
        processors += [structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        # WriteLogger hands each line over in one write (PrintLogger's print() makes two), so a line from
        # another thread — `redo`'s progress, say — can never land between an event and its newline.
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def _fd(stream) -> int:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return -1


def get(name: str | None = None):
    return structlog.get_logger(name) if name else structlog.get_logger()


def journal_stream(fd: int, environ=None) -> bool:
    """Is this file descriptor connected to the journal? systemd sets JOURNAL_STREAM to the
    `device:inode` of the stream it connected stdout/stderr to (systemd.exec(5))."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    try:
        st = os.fstat(fd)
        return (int(dev), int(ino)) == (st.st_dev, st.st_ino)
    except (OSError, ValueError):
        return False
