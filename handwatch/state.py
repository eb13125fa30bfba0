"""The SQLite state database: schema, a connection per thread, the output ledger, reusable texts, endpoint health."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs(
    id INTEGER PRIMARY KEY,
    path BLOB NOT NULL UNIQUE,          -- os.fsencode(path): any bytes, newlines and non-UTF-8 included
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    state TEXT NOT NULL,                -- pending | running | done | failed
    attempts INTEGER NOT NULL DEFAULT 0,
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
    source BLOB NOT NULL,
    source_sha256 TEXT NOT NULL,
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
    ("outputs", "edited", "REAL"),          # when a person last saved this Markdown (the review page): never overwritten
    ("outputs", "edited_sha256", "TEXT"),   # what the person saved
    ("jobs", "override", "TEXT"),           # JSON {sha256, profile, endpoint}: a person's retry with another profile or endpoint
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


def decode(blob: bytes) -> Path:
    return Path(os.fsdecode(blob))


class StateDB:
    """One file under `state_dir`; each thread gets its own connection (sqlite3 objects are not shareable)."""

    def __init__(self, state_dir: Path):
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "state.sqlite3"
        self._local = threading.local()
        with self.connect() as db:
            db.executescript(SCHEMA)
            migrate(db)

    def connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


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


class Ledger:
    """Which Markdown files handwatch wrote, and their exact bytes' sha256: the edit-protection rule's memory."""

    def __init__(self, db: StateDB):
        self.db = db

    @staticmethod
    def _rec(row) -> OutputRecord:
        return OutputRecord(decode(row["path"]), row["sha256"], row["pending_sha256"], decode(row["source"]), row["source_sha256"],
                            row["edited"])

    def get(self, path: Path) -> OutputRecord | None:
        row = self.db.connect().execute("SELECT * FROM outputs WHERE path=?", (encode(path),)).fetchone()
        return self._rec(row) if row else None

    def for_source(self, source: Path) -> OutputRecord | None:
        row = self.db.connect().execute(
            "SELECT * FROM outputs WHERE source=? ORDER BY written DESC LIMIT 1", (encode(source),)
        ).fetchone()
        return self._rec(row) if row else None

    def intend(self, path: Path, sha: str, source: Path, source_sha: str) -> None:
        self.db.connect().execute(
            """INSERT INTO outputs(path, sha256, pending_sha256, source, source_sha256, written)
               VALUES(?, NULL, ?, ?, ?, ?)
               ON CONFLICT(path) DO UPDATE SET pending_sha256=excluded.pending_sha256,
                   source=excluded.source, source_sha256=excluded.source_sha256""",
            (encode(path), sha, encode(source), source_sha, time.time()),
        )

    def commit(self, path: Path, sha: str) -> None:
        self.db.connect().execute(
            "UPDATE outputs SET sha256=?, pending_sha256=NULL, written=? WHERE path=?", (sha, time.time(), encode(path))
        )

    def mark_edited(self, path: Path, sha: str) -> None:
        """A person's edit: from now on the file is theirs, whatever its bytes (see OutputRecord.owns)."""
        self.db.connect().execute(
            "UPDATE outputs SET edited=?, edited_sha256=? WHERE path=?", (time.time(), sha, encode(path))
        )


class TextCache:
    """Transcriptions by (content sha256, rule fingerprint): the same photo at two paths is transcribed once."""

    def __init__(self, db: StateDB):
        self.db = db

    def get(self, sha: str, fingerprint: str) -> dict | None:
        row = self.db.connect().execute(
            "SELECT result FROM texts WHERE source_sha256=? AND fingerprint=?", (sha, fingerprint)
        ).fetchone()
        return json.loads(row["result"]) if row else None

    def put(self, sha: str, fingerprint: str, result: dict) -> None:
        self.db.connect().execute(
            "INSERT OR REPLACE INTO texts(source_sha256, fingerprint, result, created) VALUES(?,?,?,?)",
            (sha, fingerprint, json.dumps(result), time.time()),
        )


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
