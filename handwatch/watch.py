"""Watchdog observers (inotify, polling on network filesystems or when inotify fails) and the folder walk.

Handlers only hand paths on and never raise; deciding what a path means happens elsewhere."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from handwatch import log
from handwatch.safefs import inside  # noqa: F401  (callers import it from here)
from handwatch.settle import ignored_dir

NETWORK_FS = {
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "sshfs", "9p", "afs", "ceph", "glusterfs",
    "fuse.glusterfs", "fuse.rclone", "davfs", "fuse.davfs2", "fuse.s3fs", "fuse.smbnetfs", "lustre",
}


def parse_mountinfo(text: str) -> list[tuple[str, str]]:
    """(mount point, filesystem type) pairs from /proc/self/mountinfo."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        if len(fields) < 5:
            continue
        point = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
        mounts.append((point, right.split()[0]))
    return mounts


def mount_type(path: Path, mountinfo: str | None = None) -> str | None:
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return None
    best, fstype = "", None
    p = os.path.realpath(path)
    for point, kind in parse_mountinfo(mountinfo):
        if (p == point or p.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, fstype = point, kind
    return fstype


def wants_polling(path: Path, poll: bool | str, mountinfo: str | None = None) -> bool:
    if poll in (True, False):
        return bool(poll)
    return (mount_type(path, mountinfo) or "") in NETWORK_FS


@dataclass(frozen=True)
class WatchSpec:
    path: Path
    recursive: bool
    poll: bool | str
    poll_interval_s: float = 5.0


class _Handler(FileSystemEventHandler):
    def __init__(self, on_file: Callable[[Path, bool], None], on_dir: Callable[[Path], None]):
        self.on_file, self.on_dir = on_file, on_dir
        self.log = log.get("watch")

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            if event.event_type in ("deleted", "opened", "closed_no_write"):
                return
            target = getattr(event, "dest_path", "") or event.src_path
            if event.event_type == "moved":
                target = event.dest_path  # a file renamed into place: Syncthing, Nextcloud, browsers
            if isinstance(target, bytes):
                target = os.fsdecode(target)
            if event.is_directory:
                if event.event_type in ("created", "moved"):
                    self.on_dir(Path(target))  # a folder moved in brings files no event will announce
                return
            self.on_file(Path(target), event.event_type == "moved")
        except Exception as e:  # a handler that raises kills the observer thread: never let it
            self.log.error("watch.handler_failed", error=repr(e))


class Watcher:
    def __init__(self, specs: list[WatchSpec], on_file: Callable[[Path, bool], None], on_dir: Callable[[Path], None]):
        self.specs = specs
        self.handler = _Handler(on_file, on_dir)
        self.observers: list = []
        self.modes: dict[Path, str] = {}
        self.log = log.get("watch")

    def start(self) -> None:
        for spec in self.specs:
            spec.path.mkdir(parents=True, exist_ok=True)
            polling = wants_polling(spec.path, spec.poll)
            if not polling:
                obs = Observer()
                try:
                    obs.schedule(self.handler, str(spec.path), recursive=spec.recursive)
                    obs.start()
                    self.observers.append(obs)
                    self.modes[spec.path] = "inotify"
                    self.log.info("watch.started", path=str(spec.path), mode="inotify")
                    continue
                except OSError as e:  # inotify watch or instance limit reached: poll instead, never die
                    self.log.warning("watch.inotify_failed", path=str(spec.path), error=str(e), fallback="polling",
                                     hint="raise fs.inotify.max_user_watches to use inotify")
                    try:
                        obs.stop()
                    except Exception:
                        pass
            obs = PollingObserver(timeout=spec.poll_interval_s)
            obs.schedule(self.handler, str(spec.path), recursive=spec.recursive)
            obs.start()
            self.observers.append(obs)
            self.modes[spec.path] = "polling"
            self.log.info("watch.started", path=str(spec.path), mode="polling")

    def stop(self) -> None:
        for obs in self.observers:
            try:
                obs.stop()
            except Exception:
                pass
        for obs in self.observers:
            obs.join(timeout=5)
        self.observers = []


def walk(root: Path, recursive: bool, skip_dirs: set[Path] = frozenset()) -> Iterator[Path]:
    """Every regular file below `root` (symlinked folders are not followed), junk folders pruned."""
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    p = Path(entry.path)
                    if recursive and not ignored_dir(entry.name) and p not in skip_dirs:
                        stack.append(p)
                elif entry.is_file(follow_symlinks=True):
                    yield Path(entry.path)
            except OSError:
                continue


