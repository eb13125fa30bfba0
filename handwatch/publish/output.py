"""Write Markdown atomically and never over a file a person wrote or edited: name claims, writes, a person's saves."""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

from handwatch import safefs
from handwatch.errors import InputError, OutputConflict
from handwatch.publish.markdown import printable_name
from handwatch.store.state import Ledger, NameTaken

UNKNOWN_KIND = "unknown"  # `{kind}` of a file whose kind was not asked (Tesseract) or not understood
MAX_NUMBERED = 99  # scan-2.md … scan-99.md: a scanner that reuses one name with `after: move`


def candidate_names(source: Path, template: str, kind: str | None = None) -> list[Path]:
    """The names this original's Markdown may take, in order: the configured one, the clash
    alternative `{stem}.{ext}.md`, then `{stem}-2.md`, `{stem}-3.md` … for a name reused again and
    again. Each lies below the original's folder: a name whose parts would climb (`..` as a stem
    in `{stem}/x.md`) is refused rather than followed."""
    stem, ext = source.stem, source.suffix.lstrip(".")
    rel = template.format(stem=stem, ext=ext, name=source.name, kind=kind or UNKNOWN_KIND)
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts) or not parts[-1].endswith(".md"):
        raise InputError(
            f"the file name {printable_name(source.name)!r} makes the output path {printable_name(rel)!r}, "
            "which would leave the folder; rename the file"
        )
    primary = source.parent.joinpath(*parts)
    base = primary.name[: -len(".md")]
    names = [primary, primary.with_name(base + (f".{ext}" if ext else "") + ".md")]
    names += [primary.with_name(f"{base}-{n}.md") for n in range(2, MAX_NUMBERED + 1)]
    return list(dict.fromkeys(names))


def claim_target(source: Path, source_sha: str, template: str, ledger: Ledger, kind: str | None = None) -> Path:
    """Choose the Markdown name and claim it in the ledger in one transaction, so two originals with
    one stem finishing at the same moment can never both take `{stem}.md`."""
    try:
        return ledger.claim(source, source_sha, candidate_names(source, template, kind), os.path.lexists)
    except NameTaken as e:
        raise OutputConflict(str(e)) from None


def choose_target(source: Path, template: str, ledger: Ledger) -> Path:
    """The name `claim_target` would give, without claiming it (for previews such as `redo --dry-run`)."""
    names = candidate_names(source, template)
    held = {n: ledger.get(n) for n in names}
    for n in names:
        record = held[n]
        if record is not None and record.source == source:
            return n
    return next((n for n in names if held[n] is None), names[0])


MAX_MARKDOWN_BYTES = 64 << 20  # a 500-page scan's transcription is a few MB


def _hash_at(dfd: int, name: str) -> tuple[os.stat_result, str]:
    """The regular file `name` in the folder `dfd` (never through a link): its stat and its sha256."""
    fd = safefs.open_regular(name, follow=False, dir_fd=dfd)
    try:
        st = os.fstat(fd)
        if st.st_size > MAX_MARKDOWN_BYTES:  # not handwatch's, and hashing it could take minutes
            raise safefs.Unsafe(errno.EFBIG, f"is larger than any transcription ({st.st_size:,} bytes)")
        return st, safefs.hash_fd(fd)
    finally:
        os.close(fd)


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """What changes when anyone writes or replaces the file: an edit, a rename over it, a `touch`."""
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _check_ours(dfd: int, target: Path, ledger: Ledger, source: Path) -> tuple[str, tuple]:
    """Hash what is at `target` now and make sure handwatch may replace it; return (sha, identity)."""
    name = target.name
    try:
        st, sha = _hash_at(dfd, name)
    except safefs.Unsafe as e:
        raise OutputConflict(f"{name} {e.strerror}; left untouched") from None
    rec = ledger.get(target)
    if rec is None or (rec.sha256 is None and rec.pending_sha256 is None):
        raise OutputConflict(f"{name} exists and was not written by handwatch; left untouched")
    if rec.source != source:
        raise OutputConflict(f"{name} holds the transcription of {printable_name(rec.source.name)}; left untouched")
    if not rec.owns(sha):
        raise OutputConflict(f"{name} was edited since handwatch wrote it; left untouched")
    return sha, _identity(st)


def current_umask() -> int:
    """Read without changing it: os.umask() sets it too, which races with other threads creating files."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def write(
    target: Path, text: str, ledger: Ledger, source: Path, source_sha: str, root: Path | None = None, mode: int | None = None
) -> Path:
    """Atomic and edit-safe. The new text goes to a temporary file in the same folder and is synced;
    its hash is recorded in the ledger *before* the rename (a crash in between is then not an
    'edit'); and the file being replaced is checked again immediately before the rename, so an edit
    made while the database kept handwatch waiting is kept. The folder must lie inside `root` with
    every link resolved, and the file gets `mode` (the original's permission bits) before it appears."""
    root = root or target.parent
    try:
        with safefs.folder(root, target.parent) as dfd:
            return _write_at(dfd, target, text.encode("utf-8"), ledger, source, source_sha, mode)
    except safefs.Unsafe as e:
        raise OutputConflict(f"{target.name}: {e.strerror}; nothing written") from None


def _temp_file(dfd: int, name: str, data: bytes, mode: int) -> str:
    """`data` in a new temporary file beside `name`, with `mode`, synced to disk; its name. Nothing is left
    behind if this fails."""
    tmp = f".{name}.{secrets.token_hex(4)}{safefs.TMP_SUFFIX}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        _discard(dfd, tmp)
        raise
    return tmp


def _discard(dfd: int, tmp: str) -> None:
    try:
        os.unlink(tmp, dir_fd=dfd)
    except FileNotFoundError:
        pass


def _write_at(dfd: int, target: Path, data: bytes, ledger: Ledger, source: Path, source_sha: str, mode: int | None) -> Path:
    name, new_sha = target.name, safefs.sha256_bytes(data)
    existing = safefs.lstat_at(dfd, name)
    checked = None
    if existing is not None:
        sha, checked = _check_ours(dfd, target, ledger, source)
        if sha == new_sha:  # already exactly these bytes (a run again within the same second)
            rec = ledger.get(target)
            if rec is None or rec.sha256 != new_sha or rec.pending_sha256 is not None or rec.source_sha256 != source_sha:
                ledger.intend(target, new_sha, source, source_sha)  # only a pending record needs settling:
                ledger.commit(target, new_sha)  # a needless write would wait out a busy database for nothing
            return target
    tmp = _temp_file(dfd, name, data, (0o666 & ~current_umask()) if mode is None else mode & 0o666)
    intended = False
    try:
        if not ledger.intend(target, new_sha, source, source_sha):
            raise OutputConflict(f"{name} belongs to the transcription of another original; left untouched")
        intended = True
        for _attempt in range(3):
            now = safefs.lstat_at(dfd, name)  # what changed since the first look is hashed here, not under the lock
            if now is not None and (checked is None or _identity(now) != checked):
                _, checked = _check_ours(dfd, target, ledger, source)
            expected = None if now is None else checked
            with ledger.replacing():  # a person's save waits for this rename, or this sees the saved file
                last = safefs.lstat_at(dfd, name)  # the last look before the rename: only an lstat under the lock
                if (None if last is None else _identity(last)) != expected:
                    continue  # changed in between: look again (and hash) outside the lock
                if last is None:
                    try:
                        safefs.rename_noreplace(tmp, name, dfd, dfd)  # never over a file a person just created
                    except FileExistsError:
                        raise OutputConflict(f"{name} appeared while transcribing; left untouched") from None
                else:
                    os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
                break
        else:
            raise OutputConflict(f"{name} kept changing while handwatch wrote it; left untouched")
        safefs.fsync_dir(dfd)
    except BaseException:
        _discard(dfd, tmp)
        if intended:
            ledger.abandon(target)
        raise
    ledger.commit(target, new_sha)
    return target


def retract(target: Path, source: Path, ledger: Ledger, root: Path) -> None:
    """Remove a Markdown handwatch wrote for `source` and nobody edited since (its original is now judged not
    a document), through the folder's descriptor, never through a link. It is hashed outside the ledger's turn;
    under it only an lstat says the file is still the one hashed, so a person's save (from the review page, or an
    editor's rename) between the two is seen and the file left alone. Raises OutputConflict otherwise."""
    name = target.name
    with safefs.folder(root, target.parent, create=False) as dfd:
        if safefs.lstat_at(dfd, name) is None:
            ledger.forget(target, source)
            return
        _, checked = _check_ours(dfd, target, ledger, source)
        with ledger.replacing():
            last = safefs.lstat_at(dfd, name)
            if last is not None and _identity(last) != checked:
                raise OutputConflict(f"{name} changed while handwatch was taking it back; left untouched")
            if last is not None:
                os.unlink(name, dir_fd=dfd)
            ledger.forget(target, source)
        safefs.fsync_dir(dfd)


def remove_stale_temps(root: Path) -> int:
    """Temporary outputs left by a killed process; their real targets were never replaced."""
    n = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if safefs.is_temp(name):
                try:
                    os.unlink(os.path.join(dirpath, name))
                    n += 1
                except OSError:
                    pass
    return n


def save_edit(target: Path, text: str, ledger: Ledger, expected_sha: str, root: Path | None = None) -> str:
    """A person's edit from the review page: atomic like `write` (temporary file in the same folder, fsync,
    rename, inside `root` with every link resolved), and recorded in the ledger as the person's in the rename's own
    transaction, so handwatch never overwrites it (a crash between the rename and the commit leaves bytes the ledger
    does not know, which count as an edit too), and a save refused late marks nothing. `expected_sha` is the
    file as the person loaded it: a file that changed since (another edit, a new transcription) is left alone."""
    rec = ledger.get(target)
    if rec is None or (rec.sha256 is None and rec.pending_sha256 is None and rec.edited is None):
        raise OutputConflict(f"{target.name} was not written by handwatch; edit it with your own editor")
    data = text.encode("utf-8")
    new_sha, name = safefs.sha256_bytes(data), target.name
    changed = OutputConflict(f"{name} changed since you opened it; reload to see the new text")
    try:
        with safefs.folder(root or target.parent, target.parent, create=False) as dfd:
            try:
                st, current = _hash_at(dfd, name)
            except FileNotFoundError:
                raise OutputConflict(f"{name} no longer exists") from None
            if current != expected_sha:
                raise changed
            tmp = _temp_file(dfd, name, data, stat.S_IMODE(st.st_mode))
            try:
                with ledger.replacing():  # handwatch's own write waits for this rename, or this sees its file
                    now = safefs.lstat_at(dfd, name)  # the last look before the rename
                    if now is None or _identity(now) != _identity(st):
                        raise changed  # and the rollback leaves the file handwatch's, as it still is
                    ledger.mark_edited(target, new_sha)  # committed with the rename, or not at all
                    os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
                safefs.fsync_dir(dfd)
            except BaseException:
                _discard(dfd, tmp)
                raise
    except safefs.Unsafe as e:
        raise OutputConflict(f"{name}: {e.strerror}; nothing written") from None
    return new_sha
