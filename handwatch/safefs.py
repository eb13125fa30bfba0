"""File operations for folders other people and devices write into: regular files only, no blocking opens,
no path that leaves its root, and renames that never replace what is already there.

Everything below a watched folder is untrusted: a name may be a FIFO that blocks `open()` forever, a
symbolic link to anywhere, or a folder swapped for a link between a check and a use. These helpers work
on file descriptors so that what was checked is what gets used."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

READ_CHUNK = 1 << 20


class FileSig(NamedTuple):
    """One version of a file. Size and mtime alone miss a file renamed over another, or rewritten by
    a tool that keeps the old mtime; the inode and ctime (which no one can set) catch both."""

    size: int
    mtime_ns: int
    ino: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileSig:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def file_sig(path: Path | str) -> FileSig | None:
    try:
        return FileSig.of(os.stat(path))
    except (OSError, ValueError):
        return None


class Unsafe(OSError):
    """The path is not something handwatch may read or write: the message says why, in one line."""


def open_regular(path: Path | str, follow: bool = True, dir_fd: int | None = None) -> int:
    """A read-only descriptor for a regular file. Opened non-blocking, so a FIFO or a device cannot
    hang the caller, then checked on the handle itself (`fstat`), so a swap after a check is seen."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except OSError as e:
        if e.errno == errno.ELOOP and not follow:
            raise Unsafe(errno.ELOOP, "is a symbolic link") from None
        if e.errno in (errno.ENXIO, errno.EOPNOTSUPP):  # a socket, or a FIFO without a writer on some systems
            raise Unsafe(e.errno, "is not a regular file (a socket or device)") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise Unsafe(errno.EINVAL, f"is not a regular file ({kind_of(st.st_mode)})")
    os.set_blocking(fd, True)  # a regular file never blocks; reads should not fail with EAGAIN
    return fd


def kind_of(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def read_regular(path: Path | str, limit: int, follow: bool = True) -> bytes:
    """The whole file, refusing special files and anything larger than `limit` bytes."""
    fd = open_regular(path, follow)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise Unsafe(errno.EFBIG, f"is {size} bytes, over the {limit}-byte limit")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise Unsafe(errno.EFBIG, f"is over the {limit}-byte limit")
        return data
    finally:
        os.close(fd)


def inside(path: Path | str, root: Path | str) -> bool:
    """True when the real location (symlinks resolved) lies at or below the real root."""
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    return real == real_root or real.startswith(real_root.rstrip("/") + "/")


def relative_parts(path: Path, root: Path) -> tuple[str, ...]:
    """`path`'s components below `root`, refusing any that could climb out or alias the folder itself."""
    rel = os.path.relpath(os.path.normpath(path), os.path.normpath(root))
    parts = tuple(Path(rel).parts) if rel != "." else ()
    if any(p in ("", ".", "..") for p in parts) or Path(rel).is_absolute():
        raise Unsafe(errno.EACCES, f"{path} is not inside {root}")
    return parts


@contextmanager
def folder(root: Path, target_dir: Path, create: bool = True) -> Iterator[int]:
    """A descriptor for `target_dir`, which must lie inside `root` once every link is resolved.

    The real path is worked out first and then walked component by component from the real root with
    O_NOFOLLOW, creating missing folders on the way; a component swapped for a link in between makes
    the walk fail instead of leading outside. Yields the descriptor; closes it afterwards."""
    real_root = os.path.realpath(root)
    real_dir = os.path.realpath(target_dir)
    if not inside(real_dir, real_root):
        raise Unsafe(errno.EACCES, f"{target_dir} leads outside the watched folder {root}")
    parts = relative_parts(Path(real_dir), Path(real_root))
    fd = os.open(real_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            try:
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                made = True
                try:
                    os.mkdir(part, 0o700, dir_fd=fd)
                except FileExistsError:
                    made = False
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                if made:  # as open as the folder it is in, whatever the umask (a service runs with 0077);
                    # its setgid bit too, which chmod would clear: files made there keep the shared group
                    os.fchmod(nxt, stat.S_IMODE(os.fstat(fd).st_mode) & 0o3777)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise Unsafe(e.errno, f"{part} in {target_dir} changed into a link or a file; nothing written") from None
                raise
            os.close(fd)
            fd = nxt
        yield fd
    finally:
        os.close(fd)


def lstat_at(fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


# --- renames that never replace ---------------------------------------------------------------

_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
_renameat2 = None


def _libc_renameat2():
    global _renameat2
    if _renameat2 is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fn = libc.renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            fn.restype = ctypes.c_int
            _renameat2 = fn
        except (OSError, AttributeError):
            _renameat2 = False
    return _renameat2


def rename_noreplace(src: str, dst: str, src_dir_fd: int | None = None, dst_dir_fd: int | None = None) -> None:
    """Rename `src` to `dst`, raising FileExistsError if anything — even a dangling link — is at `dst`.

    Linux's renameat2(RENAME_NOREPLACE) does this atomically. Where the filesystem cannot (EINVAL, e.g.
    some network and FUSE mounts), a hard link plus unlink gives the same answer; where there are no
    hard links either (FAT, exFAT), a check just before a plain rename is the best there is."""
    fn = _libc_renameat2()
    sfd = _AT_FDCWD if src_dir_fd is None else src_dir_fd
    dfd = _AT_FDCWD if dst_dir_fd is None else dst_dir_fd
    if fn:
        if fn(sfd, os.fsencode(src), dfd, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(err, os.strerror(err), dst)
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), src)
    try:
        os.link(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError:
        try:
            os.stat(dst, dir_fd=dst_dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            os.rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
            return
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst) from None
    os.unlink(src, dir_fd=src_dir_fd)


def fsync_dir(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on folders; the data itself was synced
        pass


TMP_SUFFIX = ".handwatch-tmp"  # handwatch's own temporary files: `.NAME.RANDOM.handwatch-tmp`


def is_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(TMP_SUFFIX)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_fd(fd: int, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    while block := os.read(fd, chunk):
        h.update(block)
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    """Hash a regular file; a FIFO, socket or device raises `safefs.Unsafe` instead of blocking."""
    fd = open_regular(path)
    try:
        return hash_fd(fd)
    finally:
        os.close(fd)
