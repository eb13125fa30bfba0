"""The SQLite state database: schema, a connection per thread, the output ledger, reusable texts, endpoint health."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from handwatch.errors import StateFailing, StateUnusable

BUSY_TIMEOUT_S = 30  # how long a statement waits for another process's lock before `database is locked`

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs(
    id INTEGER PRIMARY KEY,
    path BLOB NOT NULL UNIQUE,          -- os.fsencode(path): any bytes, newlines and non-UTF-8 included
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL DEFAULT 0,     -- with ctime_ns: a file renamed over this one, or rewritten with
    ctime_ns INTEGER NOT NULL DEFAULT 0, -- its old size and mtime kept, is a different file version
    state TEXT NOT NULL,                -- pending | running | done | failed | skipped
    attempts INTEGER NOT NULL DEFAULT 0, -- times the process died while decoding it (crashmarks.py)
    strikes INTEGER NOT NULL DEFAULT 0, -- times the server failed on it while answering others
    not_before REAL NOT NULL DEFAULT 0,
    lease_until REAL,
    owner TEXT,
    reason TEXT,
    output BLOB,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_claim ON jobs(state, not_before);
CREATE TABLE IF NOT EXISTS outputs(
    path BLOB PRIMARY KEY,
    sha256 TEXT,                        -- what handwatch last wrote there
    pending_sha256 TEXT,                -- what it is about to write: a crash mid-rename is not a conflict
    source BLOB NOT NULL,               -- the original this name belongs to; it follows the original
    source_sha256 TEXT NOT NULL,        -- when `after: move` moves it, and never passes to another one
    written REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outputs_source ON outputs(source);
CREATE TABLE IF NOT EXISTS texts(
    source_sha256 TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    result TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY(source_sha256, fingerprint)
);
CREATE TABLE IF NOT EXISTS folders(     -- how the running daemon sees each watched folder, for `status`
    path BLOB PRIMARY KEY,
    state TEXT NOT NULL,                -- "watching (inotify)", "missing: does not exist …"
    checked REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS endpoints(
    url TEXT PRIMARY KEY,
    up INTEGER NOT NULL,
    reason TEXT,
    models TEXT,
    checked REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS docs(        -- the Markdown handwatch wrote, as the review list and search see it
    id INTEGER PRIMARY KEY,
    output BLOB NOT NULL UNIQUE,
    source BLOB NOT NULL,
    needs_review INTEGER NOT NULL DEFAULT 0,
    reasons TEXT NOT NULL DEFAULT '[]', -- JSON list, from the front matter's review_reasons
    reviewed TEXT,                      -- the front matter's `reviewed:` stamp once a person accepted it
    confidence REAL,
    uncertain_words INTEGER,
    title TEXT NOT NULL DEFAULT '',
    meta TEXT NOT NULL DEFAULT '',      -- searchable words that are not the text: file name, profile, tags, languages
    body TEXT NOT NULL DEFAULT '',
    size INTEGER,                       -- of the Markdown when indexed: a refresh re-reads only files that changed
    mtime_ns INTEGER,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS docs_review ON docs(needs_review, updated);
CREATE INDEX IF NOT EXISTS jobs_output ON jobs(output);
CREATE VIRTUAL TABLE IF NOT EXISTS docs_fts USING fts5(
    title, meta, body, content='docs', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS docs_ai AFTER INSERT ON docs BEGIN
    INSERT INTO docs_fts(rowid, title, meta, body) VALUES (new.id, new.title, new.meta, new.body);
END;
CREATE TRIGGER IF NOT EXISTS docs_ad AFTER DELETE ON docs BEGIN
    INSERT INTO docs_fts(docs_fts, rowid, title, meta, body) VALUES ('delete', old.id, old.title, old.meta, old.body);
END;
CREATE TRIGGER IF NOT EXISTS docs_au AFTER UPDATE OF title, meta, body ON docs BEGIN
    INSERT INTO docs_fts(docs_fts, rowid, title, meta, body) VALUES ('delete', old.id, old.title, old.meta, old.body);
    INSERT INTO docs_fts(rowid, title, meta, body) VALUES (new.id, new.title, new.meta, new.body);
END;
"""

# Columns added after a release: (table, column, declaration). `CREATE TABLE IF NOT EXISTS` leaves an
# existing database's tables as they were, so each is added by ALTER TABLE when it is missing.
MIGRATIONS = (
    ("jobs", "ino", "INTEGER NOT NULL DEFAULT 0"),
    ("jobs", "ctime_ns", "INTEGER NOT NULL DEFAULT 0"),
    ("jobs", "strikes", "INTEGER NOT NULL DEFAULT 0"),
    ("outputs", "edited", "REAL"),  # when a person last saved this Markdown (the review page): never overwritten
    ("outputs", "edited_sha256", "TEXT"),  # what the person saved
    ("jobs", "override", "TEXT"),  # JSON {sha256, profile, endpoint}: a person's retry with another profile or endpoint
    ("jobs", "anyway", "INTEGER NOT NULL DEFAULT 0"),  # 1: transcribe whatever the document check says (a person's choice)
    ("jobs", "kind", "TEXT"),  # a skipped file's kind (photo | blank)
    ("docs", "kind", "TEXT"),  # the front matter's `kind:` (one of transcribe/gate.py's KINDS), for the review list's filter
)


def migrate(conn: sqlite3.Connection) -> None:
    for table, column, decl in MIGRATIONS:
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            try:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
            except sqlite3.OperationalError as e:  # another process added it first
                if "duplicate column" not in str(e):
                    raise


def encode(path: Path | str) -> bytes:
    return os.fsencode(path)


def within(column: str, folders: Sequence[Path]) -> tuple[str, list]:
    """An SQL condition (` AND (…)`) and its arguments: the path in `column` lies below one of `folders`."""
    if not folders:
        return " AND 0", []
    prefixes = [encode(f).rstrip(b"/") + b"/" for f in folders]
    where = " OR ".join(f"substr({column}, 1, ?) = ?" for _ in prefixes)
    return f" AND ({where})", [x for p in prefixes for x in (len(p), p)]


def _primary_code(e: sqlite3.Error) -> int | None:
    """SQLite's primary result code (an extended code's low byte), when Python passed it on."""
    code = getattr(e, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def is_busy(e: sqlite3.Error) -> bool:
    """SQLite gave up waiting for another process's lock (SQLITE_BUSY or SQLITE_LOCKED)."""
    code = _primary_code(e)
    if code is not None:
        return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "database is locked" in str(e) or "database table is locked" in str(e)


# What a restart cannot mend: not a database, a damaged one, one this user may not open or write.
LASTING = {
    sqlite3.SQLITE_NOTADB,
    sqlite3.SQLITE_CORRUPT,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_PERM,
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_AUTH,
}


def lasting(e: sqlite3.Error) -> bool:
    """A failure a person must mend (exit 78), as opposed to one that may pass (an I/O error, a full disk)."""
    code = _primary_code(e)
    return code is None or code in LASTING


def decode(blob: bytes) -> Path:
    return Path(os.fsdecode(blob))


class StateDB:
    """One file under `state_dir`; each thread gets its own connection (sqlite3 objects are not shareable).

    The folder is 0700 and the database 0600: it holds every transcription and every path."""

    def __init__(self, state_dir: Path):
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            if os.stat(state_dir).st_uid == os.geteuid():
                os.chmod(state_dir, 0o700)
        except OSError:
            pass
        self.path = state_dir / "state.sqlite3"
        try:  # SQLite gives its -wal and -shm files the database file's own permissions
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
            if os.stat(self.path).st_uid == os.geteuid():
                os.chmod(self.path, 0o600)
        except OSError:
            pass
        self._local = threading.local()
        try:
            with self.connect() as db:
                db.executescript(SCHEMA)
                migrate(db)
        except sqlite3.DatabaseError as e:
            if is_busy(e):  # another process held the lock past the timeout: temporary, not a configuration error
                raise
            if lasting(e):
                raise StateUnusable(f"state database {self.path} cannot be used: {e}") from None
            raise StateFailing(f"state database {self.path} failed as it opened: {e}; try again later") from None

    def connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
        return conn

    def shrink(self) -> None:
        """Hand back the page cache of this thread's connection (up to SQLite's 2 MB each): a rescan's
        lookups fill the rescan thread's with the jobs index, which nothing reads until the next walk."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.execute("PRAGMA shrink_memory")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT: one writer at a time, decided before anything is read."""
        db = self.connect()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


@dataclass(frozen=True)
class OutputRecord:
    path: Path
    sha256: str | None
    pending_sha256: str | None
    source: Path
    source_sha256: str
    edited: float | None = None  # a person saved it on the review page: never handwatch's to replace again

    def owns(self, current_sha: str) -> bool:
        """True when the file on disk is exactly what handwatch wrote (or was about to): safe to replace."""
        return self.edited is None and current_sha in (self.sha256, self.pending_sha256)


class NameTaken(Exception):
    """Every name the rules allow for this original is held by another original or a person's file."""


class Ledger:
    """Which Markdown files handwatch wrote, for which original, and their exact bytes' sha256.

    A row is the promise behind edit protection and the clash rule: a name, once claimed for an
    original, stays that original's (it follows the original when `after: move` moves it), so the
    transcription of one original can never replace another's."""

    def __init__(self, db: StateDB):
        self.db = db

    @staticmethod
    def _rec(row) -> OutputRecord:
        return OutputRecord(
            decode(row["path"]), row["sha256"], row["pending_sha256"], decode(row["source"]), row["source_sha256"], row["edited"]
        )

    def get(self, path: Path) -> OutputRecord | None:
        row = self.db.connect().execute("SELECT * FROM outputs WHERE path=?", (encode(path),)).fetchone()
        return self._rec(row) if row else None

    def for_source(self, source: Path) -> OutputRecord | None:
        row = (
            self.db.connect()
            .execute("SELECT * FROM outputs WHERE source=? ORDER BY written DESC LIMIT 1", (encode(source),))
            .fetchone()
        )
        return self._rec(row) if row else None

    def claim(self, source: Path, source_sha: str, names: list[Path], taken: Callable[[Path], bool]) -> Path:
        """The Markdown name for `source`, chosen and recorded in one transaction: the name it already
        has if it is among `names`, else the first name no other original holds. `taken(path)` says
        whether something that is not in the ledger (a person's file) is on disk there; such a name is
        skipped only if it is not the first choice, which stays a conflict for the caller to report."""
        mine = {r.path for r in self._owned(source)}
        for name in names:  # no write needed when the name is already ours: the common, contended case
            if name in mine:
                return name
        with self.db.transaction() as db:
            rows = {
                decode(r["path"]): decode(r["source"])
                for r in db.execute(
                    f"SELECT path, source FROM outputs WHERE path IN ({','.join('?' * len(names))})", [encode(n) for n in names]
                )
            }
            for i, name in enumerate(names):
                owner = rows.get(name)
                if owner == source:
                    return name
                if owner is not None:
                    continue
                if taken(name) and i > 0:
                    continue
                db.execute(
                    "INSERT INTO outputs(path, sha256, pending_sha256, source, source_sha256, written) "
                    "VALUES(?, NULL, NULL, ?, ?, ?)",
                    (encode(name), encode(source), source_sha, time.time()),
                )
                return name
        raise NameTaken(f"every Markdown name for {source.name} is taken by other originals")

    def owned(self, source: Path) -> list[OutputRecord]:
        """Every Markdown name this original holds."""
        return self._owned(source)

    def _owned(self, source: Path) -> list[OutputRecord]:
        rows = self.db.connect().execute("SELECT * FROM outputs WHERE source=?", (encode(source),)).fetchall()
        return [self._rec(r) for r in rows]

    def intend(self, path: Path, sha: str, source: Path, source_sha: str) -> bool:
        """Record what is about to be written, before it is: a crash mid-rename is then not an 'edit'.
        False (nothing recorded) if the name belongs to another original: its owner never changes."""
        cur = self.db.connect().execute(
            """INSERT INTO outputs(path, sha256, pending_sha256, source, source_sha256, written)
               VALUES(?, NULL, ?, ?, ?, ?)
               ON CONFLICT(path) DO UPDATE SET pending_sha256=excluded.pending_sha256,
                   source_sha256=excluded.source_sha256 WHERE outputs.source=excluded.source""",
            (encode(path), sha, encode(source), source_sha, time.time()),
        )
        return cur.rowcount == 1

    def commit(self, path: Path, sha: str) -> None:
        self.db.connect().execute(
            "UPDATE outputs SET sha256=?, pending_sha256=NULL, written=? WHERE path=?", (sha, time.time(), encode(path))
        )

    def abandon(self, path: Path) -> None:
        """The intended write did not happen: forget the pending hash, keep the name's owner."""
        self.db.connect().execute("UPDATE outputs SET pending_sha256=NULL WHERE path=?", (encode(path),))

    def follow(self, old_source: Path, new_source: Path) -> None:
        """The original moved (`after: move`): its Markdown names go with it, so a new file at the old
        path is a different original and gets a name of its own."""
        self.db.connect().execute("UPDATE outputs SET source=? WHERE source=?", (encode(new_source), encode(old_source)))

    def forget(self, path: Path, source: Path) -> None:
        """`source`'s Markdown at `path` was removed by handwatch (the original turned out not to be a document)."""
        self.db.connect().execute("DELETE FROM outputs WHERE path=? AND source=?", (encode(path), encode(source)))

    @contextmanager
    def replacing(self) -> Iterator[None]:
        """Held from a writer's last look at a Markdown file to its rename. handwatch's writes and a person's saves
        (another thread, or `handwatch web`'s own process) take turns here, so neither can rename between the
        other's last look and rename: the second sees the first's file and refuses."""
        with self.db.transaction():
            yield

    def mark_edited(self, path: Path, sha: str) -> None:
        """A person's edit: from now on the file is theirs, whatever its bytes (see OutputRecord.owns)."""
        self.db.connect().execute("UPDATE outputs SET edited=?, edited_sha256=? WHERE path=?", (time.time(), sha, encode(path)))


class TextCache:
    """Transcriptions by (content sha256, rule fingerprint): the same photo at two paths is transcribed once."""

    def __init__(self, db: StateDB):
        self.db = db

    def get(self, sha: str, fingerprint: str) -> dict | None:
        row = (
            self.db.connect()
            .execute("SELECT result FROM texts WHERE source_sha256=? AND fingerprint=?", (sha, fingerprint))
            .fetchone()
        )
        return json.loads(row["result"]) if row else None

    def put(self, sha: str, fingerprint: str, result: dict) -> None:
        self.db.connect().execute(
            "INSERT OR REPLACE INTO texts(source_sha256, fingerprint, result, created) VALUES(?,?,?,?)",
            (sha, fingerprint, json.dumps(result), time.time()),
        )


class FolderStates:
    """What the daemon's watcher last said of each watched folder (written when it changes)."""

    def __init__(self, db: StateDB):
        self.db = db

    def set(self, states: dict[Path, str]) -> None:
        with self.db.transaction() as db:
            db.execute("DELETE FROM folders")
            db.executemany(
                "INSERT INTO folders(path, state, checked) VALUES(?,?,?)",
                [(encode(p), s, time.time()) for p, s in states.items()],
            )

    def all(self) -> dict[str, str]:
        return {os.fsdecode(r["path"]): r["state"] for r in self.db.connect().execute("SELECT * FROM folders")}


class Health:
    """Endpoint up/down as last seen by any process, so `status` can tell without probing."""

    def __init__(self, db: StateDB):
        self.db = db

    def set(self, url: str, up: bool, reason: str | None = None, models: list[str] | None = None) -> None:
        self.db.connect().execute(
            """INSERT INTO endpoints(url, up, reason, models, checked) VALUES(?,?,?,?,?)
               ON CONFLICT(url) DO UPDATE SET up=excluded.up, reason=excluded.reason,
                   models=COALESCE(excluded.models, endpoints.models), checked=excluded.checked""",
            (url, int(up), reason, json.dumps(models) if models is not None else None, time.time()),
        )

    def all(self) -> dict[str, dict]:
        rows = self.db.connect().execute("SELECT * FROM endpoints").fetchall()
        return {r["url"]: {"url": r["url"], "up": bool(r["up"]), "reason": r["reason"], "checked": r["checked"]} for r in rows}
