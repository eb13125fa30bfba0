"""Helpers for tests that run the daemon or the CLI as real subprocesses against real files.

Images that carry an identity: `id_png` paints a solid colour that survives resizing and JPEG
encoding, and `text_for` (a reply function for the fake server) reads it back, so a test can check
that each Markdown holds the text of its own original and not another's."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from tests.support.fakeopenai import Recorded, wait_for
from tests.support.paths import cli_env


class DaemonProc:
    def __init__(self, cfg: Path, log: Path, env: dict | None = None, prefix: tuple[str, ...] | list[str] = ()):
        """`prefix`: a command that runs the daemon (tests/support/sandbox.py and its unit file, say)."""
        self.cfg, self.log_path = cfg, log
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "handwatch", "-c", str(cfg), "run"],
            stdout=subprocess.DEVNULL,
            stderr=open(log, "ab"),
            env=cli_env(env),
            stdin=subprocess.DEVNULL,
        )
        start = len(self.events("daemon.ready"))
        wait_for(lambda: len(self.events("daemon.ready")) > start or self.proc.poll() is not None, 60, what="daemon ready")
        assert self.proc.poll() is None, self.log()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self, name: str) -> list[dict]:
        out = []
        for line in self.log().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("event") == name:
                out.append(rec)
        return out

    def stop(self, sig=signal.SIGTERM, timeout=60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def markdowns(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*.md"))


def status(cfg: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "handwatch", "-c", str(cfg), "status", "--json"],
        capture_output=True,
        text=True,
        env=cli_env(),
        check=True,
    )
    return json.loads(out.stdout)


def inked(size: tuple[int, int], bg=(255, 255, 255)) -> Image.Image:
    """A small page with a stroke of ink on it: a page without ink is blank and never sent to the model.
    The ink is black on light paper and white on dark paper, so it always stands out."""
    im = Image.new("RGB", size, bg)
    light = 0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2] > 128
    ImageDraw.Draw(im).rectangle(
        (size[0] // 4, size[1] // 2 - 2, size[0] * 3 // 4, size[1] // 2 + 1), fill=(0, 0, 0) if light else (255, 255, 255)
    )
    return im


def tiny_png(path: Path, i: int) -> Path:
    inked((48, 32), (255 - i % 64, 255 - (i // 64) % 64, 200 + (i // 4096) % 56)).save(path)
    return path


# --- images that carry an identity -------------------------------------------------------------

STEP = 32  # 8 levels per channel: 512 identities, each far from the next after JPEG and resizing


def id_colour(ident: int) -> tuple[int, int, int]:
    assert 0 <= ident < 512
    return ((ident // 64) * STEP + 16, ((ident // 8) % 8) * STEP + 16, (ident % 8) * STEP + 16)


def id_image(ident: int, size=(64, 48)) -> Image.Image:
    """The identity's colour as paper, with a stroke of ink (a page without ink is never sent)."""
    return inked(size, id_colour(ident))


def id_png(path: Path, ident: int, size=(64, 48), fmt: str | None = None) -> Path:
    """PNG uncompressed, so every identity of one size has the same byte size (tests of same-size swaps)."""
    fmt = fmt or {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF"}[path.suffix.lower()]
    kwargs = {"compress_level": 0} if fmt == "PNG" else {"quality": 95} if fmt == "JPEG" else {}
    id_image(ident, size).save(path, fmt, **kwargs)
    return path


def ident_of(image: Image.Image) -> int:
    """The paper's colour: the median of each channel, so the stroke of ink does not count."""
    import numpy as np

    r, g, b = np.median(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)
    return (int(r) // STEP) * 64 + (int(g) // STEP) * 8 + (int(b) // STEP)


def text_of(ident: int) -> str:
    return f"transcription of original {ident}"


def text_for(rec: Recorded) -> dict:
    """A reply function for FakeOpenAI: the text names the identity painted into the image."""
    return {"content": text_of(ident_of(rec.image))}


# Images must reach the server as painted: no contrast stretch (it would whiten a flat colour).
PLAIN = {"contrast": False, "deskew": False}


def body(md: Path) -> str:
    return md.read_text().split("---\n", 2)[2].strip()


def front(md: Path) -> dict:
    import yaml

    return yaml.safe_load(md.read_text().split("---\n", 2)[1])


def temps(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".handwatch-tmp")]


def tree(root: Path) -> set[str]:
    """Every entry below `root` (links not followed), as relative paths: to prove nothing appeared."""
    out = set()
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            out.add(os.path.relpath(os.path.join(dirpath, name), root))
    return out


# --- systemd's side of sd_notify ---------------------------------------------------------------


class NotifySocket:
    """A datagram socket in NOTIFY_SOCKET's place: what the daemon tells systemd, with arrival times."""

    def __init__(self, path: Path):
        import socket
        import threading
        import time

        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[tuple[float, str]] = []
        self._time = time.monotonic

        def recv():
            while True:
                try:
                    data = self.sock.recv(65536)
                except OSError:
                    return
                self.messages.append((self._time(), data.decode("utf-8", "replace")))

        threading.Thread(target=recv, daemon=True).start()

    def env(self, watchdog_s: float = 2.0) -> dict:
        return {"NOTIFY_SOCKET": str(self.path), "WATCHDOG_USEC": str(int(watchdog_s * 1e6))}

    def count(self, line: str) -> int:
        return sum(1 for _, m in self.messages if line in m.split("\n"))

    def close(self) -> None:
        self.sock.close()


def write_lock_taken(db_path: Path) -> bool:
    """Another connection holds the state database's write lock right now (a probe that never waits)."""
    probe = sqlite3.connect(db_path, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        probe.close()


# As root, but bound by permission bits like any service user: drop the capabilities that bypass them.
NO_DAC = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search", "--")
