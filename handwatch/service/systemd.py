"""Talking to systemd: sd_notify messages, the watchdog interval, whether stdout is the journal.

Messages go out through the `sdnotify` package, but not as it would encode them: it encodes every
message as Latin-1 and drops the whole message silently when a character does not fit (a file named
`日記.jpg` in the status line would cost the watchdog ping sent with it). We hand it the message's
UTF-8 bytes spelled as Latin-1 text, which its encoding turns back into exactly those bytes."""

from __future__ import annotations

import os
import socket
import time

import sdnotify

from handwatch.publish import markdown

STATUS_MAX = 400  # characters: `systemctl status` shows one line; systemd keeps more, nobody reads it


def clean_status(text: str) -> str:
    """One line of printable text, safe inside an sd_notify message.

    A message is `KEY=value` lines, so a newline in a file name (`x\\nSTOPPING=1.jpg`) would add a
    message of its own: every control or line-breaking character is shown as an escape instead
    (`\\n`, `\\x1b`, `\\u2028`). Bytes that were not UTF-8 in a name (surrogate escapes) are shown as
    `\\xe9`; everything else — accents, CJK, emoji — stays as it is."""
    line = markdown.one_line(text)
    return line if len(line) <= STATUS_MAX else line[: STATUS_MAX - 1] + "…"


class Notifier:
    """sd_notify over $NOTIFY_SOCKET (a path, or `@name` in the abstract namespace). Without the
    variable every call does nothing; a send that fails is counted, never raised: systemd going away
    must not take the daemon down with it."""

    def __init__(self, address: str | None = None):
        address = os.environ.get("NOTIFY_SOCKET") if address is None else address
        self.address = None
        if address:
            self.address = "\0" + address[1:] if address.startswith("@") else address
        self.link: _Link | None = None
        self.failures = 0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str, status: str | None = None) -> bool:
        """`fields` are `KEY=value` assignments systemd defines (READY=1, WATCHDOG=1, ...); `status`
        is free text and is cleaned first. One datagram, so systemd applies them together."""
        if self.address is None:
            return False
        lines = list(fields)
        if status is not None:
            lines.append("STATUS=" + clean_status(status))
        try:
            if self.link is None:
                self.link = _Link(self.address)
            self.link.notify("\n".join(lines).encode("utf-8").decode("latin-1"))  # sent as these UTF-8 bytes
            return True
        except OSError:
            # Connect again next time: a connected socket stays tied to the listener it reached, and a new
            # one at the same address (systemd re-executed, a proxy restarted) would never hear from us.
            if self.link is not None:
                self.link.socket.close()
                self.link = None
            self.failures += 1
            return False

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", status=status)

    def reloading(self, status: str | None = None) -> bool:
        # MONOTONIC_USEC lets systemd ≥ 253 tie this reload to the request that caused it.
        return self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}", status=status)

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", status=status)

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.send(status=text)


class _Link(sdnotify.SystemdNotifier):
    """sdnotify's notifier on a socket we connect: to the address given (tests pass their own), with
    close-on-exec so a Tesseract or poppler child does not inherit it, and errors raised to be counted."""

    def __init__(self, address: str):
        self.debug = True
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self.socket.connect(address)
        except OSError:
            self.socket.close()
            raise


def watchdog_interval_s(environ=None) -> float:
    """How often to ping: half of WATCHDOG_USEC, as sd_watchdog_enabled(3) advises; 0 when systemd
    asks for no pings, or asks another process (WATCHDOG_PID names a different pid)."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return 0.0
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid.strip() != str(os.getpid())):
        return 0.0
    return usec / 2e6
