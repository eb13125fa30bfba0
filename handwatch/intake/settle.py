"""Decide when a file is completely written: quiet time, stable size and mtime, and names that are never inputs.

Pure: the caller passes the time and the file's (size, mtime) signature; nothing here sleeps or stats."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePath

from handwatch.prepare.formats import EXTENSIONS, readable
from handwatch.safefs import is_temp

Signature = tuple  # safefs.FileSig (size, mtime_ns, inode, ctime_ns), or anything compared for equality

# Names sync tools, browsers and desktops write while a file is in flight, or leave lying about.
TEMP_PATTERNS = (
    ".syncthing.*.tmp",
    "~syncthing~*.tmp",  # Syncthing
    ".*.~*",  # Nextcloud / ownCloud: .NAME.~hex
    "*.part",
    "*.partial",
    "*.crdownload",
    "*.download",
    "*.tmp",
    "*.temp",
    "*.swp",
    ".~*",
    "~$*",
    "._*",
    ".DS_Store",
    "Thumbs.db",
    "desktop.ini",
    ".handwatch.yaml",
)
NOT_READ = f"not a format handwatch reads (it reads {' '.join(sorted(EXTENSIONS))})"
JUNK_DIRS = (".stfolder", ".stversions", "@eaDir", ".Trash*", "__MACOSX", ".git", "#recycle", "#snapshot", ".sync")


def ignored_dir(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in JUNK_DIRS)


def ignored_reason(rel: PurePath) -> str | None:
    """Why a path (relative to its watched folder) is never an input, or None if it may be one."""
    name = rel.name
    for part in rel.parts[:-1]:
        if ignored_dir(part):
            return f"inside {part}"
    if is_temp(name):
        return "handwatch temporary file"
    for pat in TEMP_PATTERNS:
        if fnmatch.fnmatchcase(name, pat):
            return f"temporary or junk name ({pat})"
    if not readable(Path(name)):
        return NOT_READ
    return None


@dataclass
class _Entry:
    last_event: float
    sig: Signature | None
    settle_s: float  # looked up once, when the path is first seen: resolving a rule is not free


class Settler:
    """Tracks files that had events; reports each once it has been quiet for its settle time and its
    size and mtime did not change across that time. A later event starts the wait again."""

    def __init__(self, settle_for: Callable[[Path], float]):
        self._settle_for = settle_for
        self._entries: dict[Path, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: Path) -> bool:
        return path in self._entries

    def event(self, path: Path, now: float, sig: Signature | None) -> None:
        entry = self._entries.get(path)
        if entry is None:
            self._entries[path] = _Entry(now, sig, self._settle_for(path))
        else:
            entry.last_event, entry.sig = now, sig

    def forget(self, path: Path) -> None:
        self._entries.pop(path, None)

    def next_due(self) -> float | None:
        if not self._entries:
            return None
        return min(e.last_event + e.settle_s for e in self._entries.values())

    def ready(self, now: float, stat: Callable[[Path], Signature | None]) -> list[Path]:
        """Files whose quiet time is over and whose signature held still; `stat` returns None for a
        vanished file. A changed signature counts as a fresh event (the writer is still at it)."""
        done: list[Path] = []
        for path, entry in list(self._entries.items()):
            if now - entry.last_event < entry.settle_s:
                continue
            sig = stat(path)
            if sig is None:
                del self._entries[path]
            elif sig != entry.sig:
                entry.last_event, entry.sig = now, sig  # still changing: wait again
            else:
                del self._entries[path]
                done.append(path)
        return done
