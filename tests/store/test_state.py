"""The state database's own failures: which are temporary (another process's lock) and which are not."""

import ctypes
import sqlite3
import threading
from pathlib import Path

import pytest

from handwatch.errors import StateUnusable
from handwatch.store import state


def test_a_database_another_process_holds_locked_is_temporary_not_unusable(tmp_path, monkeypatch):
    """Opening may have to write (a fresh schema, a migration). If another process holds the lock past the
    busy timeout, that is SQLite's `database is locked` (exit 75, systemd retries), not StateUnusable (exit 78,
    which the unit never restarts)."""
    monkeypatch.setattr(state, "BUSY_TIMEOUT_S", 0.2)  # the wait itself is not under test
    path = tmp_path / "state.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("CREATE TABLE other(x)")
    try:
        with pytest.raises(sqlite3.OperationalError) as caught:
            state.StateDB(tmp_path)
        assert state.is_busy(caught.value), caught.value
    finally:
        holder.rollback()
        holder.close()
    state.StateDB(tmp_path)  # and once the lock is gone, it opens


def test_a_file_that_is_not_a_database_is_unusable(tmp_path):
    (tmp_path / "state.sqlite3").write_bytes(b"not a database, but much longer than a header\n" * 100)
    with pytest.raises(StateUnusable, match="file is not a database"):
        state.StateDB(tmp_path)


def test_failures_that_may_pass_are_not_configuration_errors():
    """A disk I/O error or a full disk as the database opens may pass: exit 75 (systemd restarts), not 78
    (the unit never restarts, and the service stays down for good). What a restart cannot mend stays 78."""

    def failure(code: int) -> sqlite3.Error:
        e = sqlite3.OperationalError("as SQLite says it")
        e.sqlite_errorcode = code  # type: ignore[attr-defined]
        return e

    for code in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_IOERR_READ, sqlite3.SQLITE_FULL, sqlite3.SQLITE_PROTOCOL):
        assert not state.lasting(failure(code)), code
    for code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY):
        assert state.lasting(failure(code)), code


def _sqlite_memory_used() -> int:
    """SQLite's own count of the memory it holds (sqlite3_status64), from the library this Python's
    sqlite3 module uses; skipped where that library is built in rather than shared, or does not count."""
    maps = Path("/proc/self/maps")
    libs = {line.split()[-1] for line in maps.read_text().splitlines() if "libsqlite3" in line} if maps.exists() else set()
    if len(libs) != 1:
        pytest.skip("the sqlite3 module does not use one shared libsqlite3 here")
    lib = ctypes.CDLL(libs.pop())
    cur, high = ctypes.c_int64(), ctypes.c_int64()
    if lib.sqlite3_status64(0, ctypes.byref(cur), ctypes.byref(high), 0) != 0 or not cur.value:  # SQLITE_STATUS_MEMORY_USED
        pytest.skip("this libsqlite3 keeps no memory statistics")
    return cur.value


def test_shrink_hands_back_the_page_cache_a_walk_filled(tmp_path):
    """A rescan's lookups fill its thread's page cache (up to 2 MB) with pages nothing reads until the next
    walk; shrink() hands them back, the connection still answers, and a thread without one opens none."""
    db = state.StateDB(tmp_path)
    conn = db.connect()
    with db.transaction():
        conn.execute("CREATE TABLE big(x TEXT)")
        conn.executemany("INSERT INTO big VALUES(?)", ((f"{i:0100d}",) for i in range(30_000)))
    conn.execute("SELECT count(*) FROM big WHERE x LIKE '%7'").fetchone()  # every page read: the cache is full
    full = _sqlite_memory_used()
    db.shrink()
    assert full - _sqlite_memory_used() > 1 << 20
    assert conn.execute("SELECT count(*) FROM big").fetchone()[0] == 30_000

    opened = []
    worker = threading.Thread(target=lambda: (db.shrink(), opened.append(getattr(db._local, "conn", None))))
    worker.start()
    worker.join()
    assert opened == [None]
