"""The world changing under the daemon: the original replaced or deleted while its request is in flight, the
state database locked by another process for 35 s, sparse files of many GB, and the disk filling up while
the Markdown is written. Each runs beside the others, against its own daemon."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.faults.harness import CASES, World
from tests.support.daemon import ident_of, temps, text_for, text_of
from tests.support.fakeopenai import FakeOpenAI, Recorded, wait_for

RACES: list[str] = []
LOCK_S = 35


def race(name: str, title: str):
    RACES.append(name)
    return CASES(name, title)


# Another process (a backup tool, an sqlite3 shell) holding the database's write lock.
LOCKER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("ROLLBACK")
"""


@race("in-flight", "source replaced, and another deleted, while its request is in flight")
def replaced_or_deleted(root: Path) -> list[str]:
    release = threading.Event()
    server = FakeOpenAI().start()
    server.default = lambda rec: {**text_for(rec), "hold": release} if ident_of(rec.image) in (0, 1) else text_for(rec)
    w = World(root, server.url)
    try:
        w.start()
        replaced, deleted = w.image("replaced.png", 0), w.image("deleted.png", 1)
        wait_for(lambda: server.in_flight >= 2, 60, what="both requests in flight")
        fresh = w.image("incoming.tmp", 2, fmt="PNG")  # a sync tool renames the new version into place
        os.rename(fresh, replaced)
        w.expect_good(replaced, text_of(2))
        os.unlink(deleted)
        release.set()
        w.check()
    finally:
        w.close()
        server.stop()
    return ["the replaced original's Markdown holds its new text; the deleted one left no Markdown, no failure"]


@race("locked", f"state database locked by another process for {LOCK_S} s")
def database_locked(root: Path) -> list[str]:
    server = FakeOpenAI().start()
    server.default = text_for
    w = World(root, server.url)
    locker = None
    try:
        w.start()
        for i in range(3):
            w.photo(f"before{i}.png", i)
        w.wait_settled()
        locker = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(root / "state" / "state.sqlite3"), str(LOCK_S)], stdout=subprocess.PIPE, text=True
        )
        assert locker.stdout.readline().strip() == "locked"
        for i in range(3, 8):
            w.photo(f"during{i}.png", i)
        assert w.status()["counts"]["done"] == 3  # `status` answers while the lock is held
        assert locker.wait(timeout=LOCK_S + 30) == 0
        w.check()
        died = len(w.events("worker.died"))
    finally:
        if locker and locker.poll() is None:
            locker.kill()
        w.close()
        server.stop()
    return [
        f"`status` answered during the lock; photos written during it done after it, pings kept coming; workers replaced: {died}"
    ]


@race("sparse", "sparse files of 40 GB and 1.9 GB named .jpg")
def sparse(root: Path) -> list[str]:
    server = FakeOpenAI().start()
    server.default = text_for
    w = World(root, server.url)
    try:
        w.start()
        huge, large = w.inbox / "huge.jpg", w.inbox / "large.jpg"
        with open(huge, "wb") as f:
            f.truncate(40 << 30)
        with open(large, "wb") as f:  # under the size limit: hashed (1.9 GB read) in the pool, then decoded
            f.write(b"\xff\xd8\xff\xe0")
            f.truncate(1_900_000_000)
        w.expect_failed(huge, "file is 42.9 GB, over the 2.1 GB limit")
        w.expect_failed(large, "corrupt or truncated JPEG: junk where its headers should be")
        for i in range(5):
            w.photo(f"p{i}.png", i)
        w.check()
    finally:
        w.close()
        server.stop()
    return [
        "40 GB: failed unread with its size; 1.9 GB: hashed off the main thread, failed as corrupt; "
        "photos done meanwhile; pings kept coming"
    ]


@race("disk-full", "disk full while writing the Markdown (a 1 MB tmpfs as the watched folder)")
def disk_full(root: Path) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    inbox = root / "inbox"
    inbox.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(inbox)], capture_output=True, text=True
    )
    if mount.returncode != 0:  # not root, or a container without CAP_SYS_ADMIN: no filesystem of our own to fill
        pytest.skip(
            f"cannot mount a 1 MB tmpfs to fill (mount exited {mount.returncode}: "
            f"{mount.stderr.strip() or 'no message'}); CI and this machine run the tests as root"
        )
    server = FakeOpenAI().start()
    requests: list[Recorded] = []
    server.default = lambda rec: (requests.append(rec), text_for(rec))[1]
    w = World(root, server.url, inbox=inbox)
    try:
        photo = w.photo("full.png", 0)
        filler = inbox / "filler.bin"
        _fill(filler)
        w.start()
        st = wait_for(
            lambda: [x for x in w.status()["waiting"] if x["path"] == str(photo) and "No space left" in (x["reason"] or "")],
            60,
            interval=0.2,
            what="the photo waiting for disk space",
        )
        assert not list(inbox.glob("*.md")) and temps(inbox) == [], "a partial Markdown was left"
        assert w.status()["counts"]["failed"] == 0
        filler.unlink()
        w.check()
        assert len(requests) == 2, "the text was asked for again instead of reused"  # the photo and `check`'s
    finally:
        w.close()
        server.stop()
        subprocess.run(["umount", "-l", str(inbox)], check=False)
    return [
        f"nothing written while full ({st[0]['reason'][:60]}…), no temporary file; written once space was "
        "freed, from the stored text (no second request)"
    ]


def _fill(path: Path) -> None:
    """Take every free block: big writes first, then single bytes until the filesystem says no."""
    with open(path, "wb", buffering=0) as f:
        for chunk in (b"\0" * 65536, b"\0" * 4096, b"\0"):
            try:
                while True:
                    f.write(chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e


@pytest.mark.parametrize("name", RACES)
def test_races(side_by_side, name, fault):
    CASES.report(side_by_side, name, fault)
