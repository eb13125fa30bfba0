"""What systemd would receive: a datagram socket the test binds and hands to the daemon as NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
import threading
import uuid


class NotifyListener:
    """Binds `@handwatch-test-…` in the abstract namespace (no path-length limit, nothing to clean up)
    and keeps every datagram, in order, as the list of its `KEY=value` lines."""

    def __init__(self):
        self.address = f"@handwatch-test-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.address[1:])
        self.datagrams: list[list[str]] = []
        self.raw: list[bytes] = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while not self.closed:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            with self.lock:
                self.raw.append(data)
                self.datagrams.append(data.decode("utf-8", errors="replace").split("\n"))

    def env(self, watchdog_usec: int | None = None) -> dict:
        env = {"NOTIFY_SOCKET": self.address}
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        return env

    def lines(self) -> list[str]:
        """Every line of every datagram, in the order they came."""
        with self.lock:
            return [line for d in self.datagrams for line in d]

    def index(self, line: str, after: int = -1) -> int:
        """Position of the first `line` after position `after` in lines(), or -1."""
        for i, x in enumerate(self.lines()):
            if i > after and x == line:
                return i
        return -1

    def statuses(self) -> list[str]:
        return [x[len("STATUS="):] for x in self.lines() if x.startswith("STATUS=")]

    def close(self) -> None:
        self.closed = True
        self.sock.close()
