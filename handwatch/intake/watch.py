"""Watchdog observers (inotify, polling on network filesystems or when inotify fails) and the folder walk.

Handlers only hand paths on and never raise; deciding what a path means happens elsewhere."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from handwatch import log
from handwatch.intake.settle import ignored_dir

NETWORK_FS = {
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "fuse.sshfs",
    "sshfs",
    "9p",
    "afs",
    "ceph",
    "glusterfs",
    "fuse.glusterfs",
    "fuse.rclone",
    "davfs",
    "fuse.davfs2",
    "fuse.s3fs",
    "fuse.smbnetfs",
    "lustre",
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


class _OverflowHook(logging.Handler):
    """watchdog rebuilds its watches after the kernel's inotify queue overflows, but only logs it: the
    events are lost, so whoever owns the watcher must walk the folders again."""

    def __init__(self, on_overflow: Callable[[], None]):
        super().__init__(logging.WARNING)
        self.on_overflow = on_overflow

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if "overflow" in record.getMessage().lower():
                self.on_overflow()
        except Exception:  # a logging handler must never raise into watchdog's thread
            pass


@dataclass
class _Watch:
    observer: BaseObserver
    ident: tuple[int, int]
    mode: str
    spec: WatchSpec | None = None


class Watcher:
    """One observer per watched folder, kept right by `ensure()` (called every second or so): a folder
    that does not exist yet (a share not mounted) is waited for and never created; one removed and
    re-created (a remounted share, a sync client resetting it) is noticed by its new identity and
    watched again. `ensure` returns the folders it (re)started, for the caller to walk."""

    def __init__(
        self,
        specs: list[WatchSpec],
        on_file: Callable[[Path, bool], None],
        on_dir: Callable[[Path], None],
        on_overflow: Callable[[], None] | None = None,
    ):
        self.specs = specs
        self.handler = _Handler(on_file, on_dir)
        self._watches: dict[Path, _Watch] = {}
        self.states: dict[Path, str] = {}
        self.on_overflow = on_overflow
        self._hook: _OverflowHook | None = None
        self.log = log.get("watch")

    @property
    def modes(self) -> dict[Path, str]:
        return {p: w.mode for p, w in self._watches.items()}

    @property
    def observers(self) -> list:
        return [w.observer for w in self._watches.values()]

    def start(self) -> list[Path]:
        if self.on_overflow is not None and self._hook is None:
            self._hook = _OverflowHook(self.on_overflow)
            logging.getLogger("watchdog").addHandler(self._hook)
        return self.ensure()

    def ensure(self) -> list[Path]:
        started = []
        for spec in self.specs:
            try:
                st = os.stat(spec.path)
                ident = (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None
                why = None if ident else "is not a folder"
            except OSError as e:
                ident, why = None, f"does not exist ({e.strerror}); waiting for it (a share not mounted yet?)"
            w = self._watches.get(spec.path)
            if ident is None:
                if w is not None or self.states.get(spec.path) != f"missing: {why}":
                    self.log.warning("watch.missing", path=str(spec.path), reason=why)
                if w is not None:
                    self._stop(self._watches.pop(spec.path))
                self.states[spec.path] = f"missing: {why}"
                continue
            if w is not None and w.ident == ident and _alive(w.observer):
                continue
            if w is not None:
                self.log.warning("watch.lost", path=str(spec.path), reason="the folder was replaced; watching it again")
                self._stop(self._watches.pop(spec.path))
            try:
                self._watches[spec.path] = self._start(spec, ident)
            except OSError as e:
                self.states[spec.path] = f"missing: cannot watch ({e.strerror or e})"
                continue
            self.states[spec.path] = f"watching ({self._watches[spec.path].mode})"
            started.append(spec.path)
        return started

    def set_specs(self, specs: list[WatchSpec]) -> list[Path]:
        """A reloaded configuration: stop watching folders it no longer names, or names with other
        settings (`ensure` starts those again, and the new ones). Returns the folders no longer watched.
        Call it from the thread that calls `ensure`."""
        wanted = {s.path: s for s in specs}
        removed = []
        for path, w in list(self._watches.items()):
            if wanted.get(path) != w.spec:
                self._stop(self._watches.pop(path))
                if path not in wanted:
                    removed.append(path)
                    self.log.info("watch.stopped", path=str(path), reason="no longer in the configuration")
        for path in [p for p in self.states if p not in wanted]:
            del self.states[path]
        self.specs = list(specs)
        return removed

    def dead(self) -> int:
        """Observers whose thread has ended (`ensure` starts them again); safe from any thread."""
        return sum(1 for w in list(self._watches.values()) if not _alive(w.observer))

    def _start(self, spec: WatchSpec, ident: tuple[int, int]) -> _Watch:
        if not wants_polling(spec.path, spec.poll):
            obs = Observer()
            try:
                obs.schedule(self.handler, str(spec.path), recursive=spec.recursive)
                obs.start()
                self.log.info("watch.started", path=str(spec.path), mode="inotify")
                return _Watch(obs, ident, "inotify", spec)
            except OSError as e:  # inotify watch or instance limit reached: poll instead, never die
                self.log.warning(
                    "watch.inotify_failed",
                    path=str(spec.path),
                    error=str(e),
                    fallback="polling",
                    hint="raise fs.inotify.max_user_watches to use inotify",
                )
                self._stop(_Watch(obs, ident, "inotify"))
        obs = PollingObserver(timeout=spec.poll_interval_s)
        obs.schedule(self.handler, str(spec.path), recursive=spec.recursive)
        obs.start()
        self.log.info("watch.started", path=str(spec.path), mode="polling")
        return _Watch(obs, ident, "polling", spec)

    @staticmethod
    def _stop(w: _Watch) -> None:
        try:
            w.observer.stop()
            w.observer.join(timeout=5)
        except Exception:
            pass

    def alive(self) -> bool:
        return all(_alive(w.observer) for w in self._watches.values())

    def stop(self) -> None:
        for w in list(self._watches.values()):
            self._stop(w)
        self._watches.clear()
        if self._hook is not None:
            logging.getLogger("watchdog").removeHandler(self._hook)
            self._hook = None


def _alive(observer) -> bool:
    return bool(getattr(observer, "is_alive", lambda: False)())


def walk(
    root: Path, recursive: bool, skip_dirs: AbstractSet[Path] = frozenset(), skip_name: Callable[[str], bool] | None = None
) -> Iterator[Path]:
    """Every regular file below `root` (symlinked folders are not followed), junk folders pruned, and
    files whose name `skip_name` rejects left out before any work is spent on them."""
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
                elif (skip_name is None or not skip_name(entry.name)) and entry.is_file(follow_symlinks=True):
                    yield Path(entry.path)
            except OSError:
                continue
