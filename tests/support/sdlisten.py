"""What systemd would receive: a datagram socket the test binds and hands to the daemon as NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass

_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass
class Datagram:
    t: float  # time.monotonic() on arrival
    pid: int  # the sender, as the kernel says (SO_PASSCRED), as systemd learns it
    lines: list[str]


class NotifyListener:
    """Binds `@handwatch-test-…` in the abstract namespace (no path-length limit, nothing to clean up)
    and keeps every datagram, in order, as the list of its `KEY=value` lines — and in `received`, with its
    arrival time and its sender's pid, so pings of a killed daemon and of its successor are told apart."""

    def __init__(self):
        self.address = f"@handwatch-test-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.address[1:])
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.datagrams: list[list[str]] = []
        self.received: list[Datagram] = []
        self.raw: list[bytes] = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while not self.closed:
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(65536, socket.CMSG_SPACE(_CRED.size))
            except OSError:
                return
            t, pid = time.monotonic(), 0
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = _CRED.unpack(cdata[: _CRED.size])[0]
            lines = data.decode("utf-8", errors="replace").split("\n")
            with self.lock:
                self.raw.append(data)
                self.datagrams.append(lines)
                self.received.append(Datagram(t, pid, lines))

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

    def of(self, pid: int, line: str) -> list[Datagram]:
        """The datagrams `pid` sent that hold `line` (READY=1, WATCHDOG=1), in order."""
        with self.lock:
            return [d for d in self.received if d.pid == pid and line in d.lines]

    def statuses(self) -> list[str]:
        return [x[len("STATUS=") :] for x in self.lines() if x.startswith("STATUS=")]

    def close(self) -> None:
        self.closed = True
        self.sock.close()
