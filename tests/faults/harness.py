"""A world for one fault case: a watched folder, the daemon as a real subprocess under a stand-in for
systemd's notify socket (tests/support/sdlisten.py), what each file should end as, and the checks every case ends with.

The checks are the issue's: every good file ends with exactly one Markdown holding its own text, every
bad one is failed with its own reason, no temporary file is left, no original changed, the daemon still
answers (`status`, a fresh file still transcribed) and it pinged its watchdog within WATCHDOG_USEC all
along — the test is systemd here: it binds the datagram socket the daemon's sd_notify talks to."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.support.daemon import PLAIN, DaemonProc, body, front, id_png, status, temps, text_of
from tests.support.fakeopenai import wait_for
from tests.support.sdlisten import NotifyListener

WATCHDOG_S = 8.0  # WATCHDOG_USEC given to the daemon: it pings every half of it
# Run as root (here and in CI), the daemon would read any file whatever its permission bits; without
# these two capabilities it is held to them, as a service running as its own user is.
NO_DAC = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps", "-dac_override,-dac_read_search")


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _content(path: Path) -> str:
    size = os.stat(path).st_size
    return sha256(path) if size < 64 << 20 else f"{size} bytes"


@dataclass
class Life:
    """One daemon process: when it said READY, when it ended, and when the test had it stopped."""

    proc: DaemonProc
    ended: float | None = None
    paused: list[list[float]] = field(default_factory=list)  # [SIGSTOP time, SIGCONT time]


@dataclass
class Good:
    sha: str
    text: str | None  # the Markdown's body, when the test knows it


class World:
    def __init__(
        self,
        root: Path,
        url: str,
        *,
        settle_s: float = 0.5,
        timeout_s: float = 30.0,
        model: str | None = "fake-vl-7b",
        concurrency: int = 4,
        rescan_s: float = 600.0,
        no_dac: bool = False,
        inbox: Path | None = None,
    ):
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.inbox = inbox or root / "inbox"
        self.inbox.mkdir(exist_ok=True)
        endpoint = {"url": url, "max_concurrency": concurrency, "timeout_s": timeout_s}
        if model:
            endpoint["model"] = model
        data = {
            "state_dir": str(root / "state"),
            "endpoints": [endpoint],
            "defaults": {"settle_s": settle_s, "preprocess": PLAIN},
            "rescan_s": rescan_s,
            "stop_grace_s": 5,
            "folders": [{"path": str(self.inbox)}],
        }
        self.cfg = root / "config.yaml"
        self.cfg.write_text(yaml.safe_dump(data, sort_keys=False))
        self.log = root / "daemon.log"
        self.notify = NotifyListener()
        self.prefix = NO_DAC if no_dac and os.geteuid() == 0 else ()
        self.lives: list[Life] = []
        self.good: dict[Path, Good] = {}
        self.bad: dict[Path, str] = {}
        self.originals: dict[Path, tuple[str, int]] = {}
        self._probe = 500  # identities from here on are the fresh files `check` drops in

    # --- the daemon ---------------------------------------------------------------------------

    def start(self) -> DaemonProc:
        env = self.notify.env(watchdog_usec=int(WATCHDOG_S * 1e6))
        self.lives.append(Life(DaemonProc(self.cfg, self.log, env, self.prefix)))
        return self.daemon

    @property
    def daemon(self) -> DaemonProc:
        return self.lives[-1].proc

    @property
    def pid(self) -> int:
        return self.daemon.proc.pid

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind."""
        life = self.lives[-1]
        if life.proc.proc.poll() is None:
            os.kill(life.proc.proc.pid, signal.SIGKILL)
        life.proc.proc.wait()
        life.ended = life.ended or time.monotonic()

    def stop(self) -> int:
        """SIGTERM, as systemd stops it; the exit code."""
        life = self.lives[-1]
        life.ended = time.monotonic()
        return life.proc.stop()

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        self.lives[-1].paused.append([time.monotonic(), float("inf")])

    def resume(self) -> None:
        self.lives[-1].paused[-1][1] = time.monotonic()
        os.kill(self.pid, signal.SIGCONT)

    def close(self) -> None:
        for life in self.lives:
            if life.proc.proc.poll() is None:
                life.proc.proc.send_signal(signal.SIGCONT)
                life.proc.kill()
        self.notify.close()

    def events(self, name: str) -> list[dict]:
        return self.daemon.events(name)

    # --- what each file should end as ---------------------------------------------------------

    def original(self, path: Path) -> Path:
        """Remember a file's bytes and mtime: handwatch must never change them. (Of a file of many GB, its
        size and mtime: reading it would take the test longer than the daemon.)"""
        self.originals[path] = (_content(path), os.stat(path).st_mtime_ns)
        return path

    def expect_good(self, path: Path, text: str | None = None) -> Path:
        self.good[path] = Good(sha256(path), text)
        return self.original(path)

    def expect_failed(self, path: Path, reason: str) -> Path:
        """Failed, with `reason` in its one-line reason."""
        self.bad[path] = reason
        if path.is_file() and not path.is_symlink():
            self.original(path)
        return path

    def image(self, name: str | Path, ident: int, size=(64, 48), fmt: str | None = None) -> Path:
        """A photo painted with its identity (see tests/support/daemon.py), no expectation recorded."""
        path = self.inbox / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return id_png(path, ident, size, fmt)

    def photo(self, name: str | Path, ident: int, size=(64, 48), fmt: str | None = None) -> Path:
        """A photo whose text the scripted server knows (`text_for`), expected to get that Markdown."""
        return self.expect_good(self.image(name, ident, size, fmt), text_of(ident))

    # --- waiting and checking -----------------------------------------------------------------

    def status(self) -> dict:
        return status(self.cfg)

    def settled(self) -> bool:
        c = self.status()["counts"]
        return c["done"] >= len(self.good) and c["failed"] >= len(self.bad) and c["pending"] == 0 and c["running"] == 0

    def wait_settled(self, timeout: float = 120.0) -> None:
        wait_for(self.settled, timeout, interval=0.3, what=f"{len(self.good)} done and {len(self.bad)} failed")

    def check(self, fresh: bool = True) -> dict:
        """Every promise of the fault suite, on the world as it is now. `fresh`: also drop a new photo
        in and see it transcribed (the daemon is not only alive but still working)."""
        assert self.daemon.proc.poll() is None, "the daemon died:\n" + self.daemon.log()[-3000:]
        if fresh:
            self.photo(f"fresh-{self._probe}.png", self._probe)
            self._probe += 1
        self.wait_settled()
        st = self.status()  # the CLI still answers
        self._check_markdown()
        failed = {os.fsencode(f["path"]): f["reason"] for f in st["failed"]}
        for path, why in self.bad.items():
            got = failed.pop(os.fsencode(path), None)
            assert got is not None and why in got, f"{path}: expected failed with {why!r}, got {got!r}"
        assert not failed, f"files failed that should not have: {failed}"
        c = st["counts"]
        assert c["done"] == len(self.good) and c["failed"] == len(self.bad), c
        assert temps(self.inbox) == [], "temporary files left behind"
        for path, (sha, mtime) in self.originals.items():
            if os.path.lexists(path):
                assert (_content(path), os.stat(path).st_mtime_ns) == (sha, mtime), f"{path} was changed"
        self.check_watchdog()
        return st

    def _check_markdown(self) -> None:
        found: dict[tuple[Path, str], list[Path]] = defaultdict(list)
        for md in self.inbox.rglob("*.md"):
            if md.is_file():
                found[(md.parent, front(md)["source_sha256"])].append(md)
        for path, good in self.good.items():
            mds = found.pop((path.parent, good.sha), [])
            assert len(mds) == 1, f"{path}: {len(mds)} Markdown files ({mds})"
            if good.text is not None:
                assert body(mds[0]) == good.text, f"{mds[0]} holds {body(mds[0])!r}, not {good.text!r}"
        assert not found, f"Markdown of no good original: {dict(found)}"

    def check_watchdog(self, more: int = 1) -> None:
        """The running daemon pings again (`more` new pings), and no daemon ever let WATCHDOG_USEC pass
        without a ping while it was running and not stopped by the test: systemd would have killed it. (The
        gap since the last ping counts too, up to now: one new ping is enough to show it goes on.)"""
        pid, since = self.pid, time.monotonic()
        wait_for(
            lambda: len([m for m in self.notify.of(pid, "WATCHDOG=1") if m.t > since]) >= more,
            WATCHDOG_S * (more + 1),
            interval=0.1,
            what="watchdog pings after the fault",
        )
        for life in self.lives:
            longest, where = self.longest_gap(life)
            assert longest <= WATCHDOG_S, f"pid {life.proc.proc.pid} went {longest:.1f} s without a ping ({where})"

    def longest_gap(self, life: Life) -> tuple[float, str]:
        pid = life.proc.proc.pid
        ready = self.notify.of(pid, "READY=1")
        assert ready, f"pid {pid} never said READY=1"
        assert life.ended or life.proc.proc.poll() is None, f"pid {pid} ended without the test ending it"
        end = life.ended or time.monotonic()
        times = [ready[0].t] + [m.t for m in self.notify.of(pid, "WATCHDOG=1") if m.t <= end] + [end]
        longest, where = 0.0, ""
        for a, b in zip(times, times[1:], strict=False):
            stopped = sum(max(0.0, min(b, t1) - max(a, t0)) for t0, t1 in life.paused)
            if b - a - stopped > longest:
                longest, where = b - a - stopped, f"{a - ready[0].t:.1f} s to {b - ready[0].t:.1f} s after READY"
        return longest, where

    def pings(self) -> int:
        return sum(len(self.notify.of(life.proc.proc.pid, "WATCHDOG=1")) for life in self.lives)


class Cases:
    """Fault cases that spend most of their time waiting for a daemon, run side by side: each registered
    scenario gets its own folder, daemon and server, and runs on its own thread. Every module registers in
    the one table (`CASES`); the fixture `side_by_side` (conftest.py) starts a module's selected ones at once."""

    def __init__(self):
        self.table: dict[str, tuple[str, Callable[[Path], list[str]]]] = {}

    def __call__(self, name: str, title: str):
        def register(fn):
            assert name not in self.table, f"two fault cases named {name!r}"
            self.table[name] = (title, fn)
            return fn

        return register

    def start(self, names: list[str], pool: ThreadPoolExecutor, folder: Callable[[str], Path]) -> dict:
        return {name: pool.submit(self.table[name][1], folder(name)) for name in names}

    def report(self, running: dict, name: str, fault) -> None:
        """Wait for the case, re-raising its failure; its notes go into the summary table."""
        fault.case = self.table[name][0]
        for note in running[name].result(timeout=900):
            fault.note(note)


CASES = Cases()
