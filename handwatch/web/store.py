"""What the review page reads: the review list, the skipped files, one file's record by id, the kind of each
Markdown, and which paths may ever be served."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from handwatch.config.schema import Config
from handwatch.publish.markdown import printable_name
from handwatch.safefs import inside
from handwatch.store.jobs import FAILED, PENDING, SKIPPED
from handwatch.store.state import Ledger, StateDB, decode, encode, within
from handwatch.transcribe import gate

SHOWS = ("review", "failed", "waiting")  # what the list's `show` picks: why a file needs a person
# The kinds a page may be classified as: the only values `?kind=` takes and the only `kind:` values shown, since a
# person may write anything into the front matter.
DOC_KINDS = gate.KINDS
LIST_LIMIT = 500
MAX_ID = (1 << 63) - 1  # SQLite's largest INTEGER: a larger id in a URL is not even asked about


def folder_index(value: str | None) -> str | None:
    """A watched folder's index from the request as the pages pass it on, or None: ASCII digits only ("²" is a
    digit to str.isdigit() and an error to int())."""
    if value and value.isascii() and value.isdigit() and len(value) <= 6:
        return value
    return None


@dataclass(frozen=True)
class Item:
    """One row of the review list."""

    status: str  # review | failed | waiting
    url: str
    name: str  # relative to its watched folder
    folder: str
    reasons: list[str]
    when: float
    kind: str | None = None  # the Markdown's `kind:` (one of DOC_KINDS), when it has one


@dataclass(frozen=True)
class Skip:
    """One row of the skipped view."""

    job_id: int
    name: str
    folder: str
    kind: str  # photo | blank, or "" when the store did not say
    reason: str
    when: float


@dataclass
class Record:
    """Everything known about one file, found by job id (or, for a transcription without a job, by its index id)."""

    url: str
    job_id: int | None = None
    doc_id: int | None = None
    source: Path | None = None
    output: Path | None = None
    state: str | None = None
    reason: str | None = None
    override: dict = field(default_factory=dict)
    doc: dict = field(default_factory=dict)  # the index row: needs_review, reasons, reviewed, confidence, uncertain_words
    edited: bool = False


def display(path: Path, folders: list[Path]) -> tuple[str, str]:
    """(name relative to its watched folder, the folder) as text a page can show."""
    for f in folders:
        if inside(path, f):
            return printable_name(str(path.relative_to(f))), printable_name(str(f))
    return printable_name(path.name), printable_name(str(path.parent))


class Store:
    def __init__(self, cfg: Config, db: StateDB):
        self.cfg, self.db = cfg, db
        self.folders = [f.path for f in cfg.folders]
        self.ledger = Ledger(db)

    def scope(self, index: str | None) -> list[Path]:
        """The folders a page looks in: one, by its index in the config's folders (never a path from the request),
        else every watched folder. Nothing outside them is listed or searched, even if the database knows it
        (a folder dropped from the config)."""
        index = folder_index(index)
        if index is None or int(index) >= len(self.folders):
            return self.folders
        return [self.folders[int(index)]]

    def review_items(self, folders: list[Path], shows: tuple[str, ...] = SHOWS, kind: str | None = None) -> list[Item]:
        """What needs a person, newest first. With `kind`, only flagged transcriptions whose front matter says so
        (a failed or waiting file has no Markdown, so no kind)."""
        items = self._flagged(folders, kind) if "review" in shows else []
        db = self.db.connect()
        in_jobs, args_jobs = within("path", folders)
        for status, state, extra in (("failed", FAILED, ""), ("waiting", PENDING, " AND reason IS NOT NULL")):
            if status not in shows or kind is not None:
                continue
            rows = db.execute(
                f"""SELECT id, path, reason, updated FROM jobs WHERE state = ?{extra}{in_jobs}
                    ORDER BY updated DESC LIMIT ?""",
                (state, *args_jobs, LIST_LIMIT),
            ).fetchall()
            items += [self._item(status, f"/file/{r['id']}", decode(r["path"]), [r["reason"] or ""], r["updated"]) for r in rows]
        items.sort(key=lambda i: i.when, reverse=True)
        return items[:LIST_LIMIT]

    def doc_kinds(self, folders: list[Path]) -> list[str]:
        """The kinds among the flagged transcriptions in these folders, in DOC_KINDS' order: what the filter offers."""
        in_docs, args = within("output", folders)
        rows = self.db.connect().execute(f"SELECT DISTINCT kind FROM docs WHERE needs_review = 1{in_docs}", args).fetchall()
        present = {r["kind"] for r in rows}
        return [k for k in DOC_KINDS if k in present]

    def _flagged(self, folders: list[Path], kind: str | None = None) -> list[Item]:
        in_docs, args_docs = within("d.output", folders)
        if kind is not None:
            in_docs, args_docs = in_docs + " AND d.kind = ?", [*args_docs, kind]
        rows = (
            self.db.connect()
            .execute(
                # When handwatch wrote it, not when it was last indexed: a person's save must not reorder the list.
                f"""SELECT d.id, d.source, d.reasons, d.kind, COALESCE(o.written, d.updated) AS written,
                           (SELECT j.id FROM jobs j WHERE j.output = d.output ORDER BY j.updated DESC LIMIT 1) AS job
                    FROM docs d LEFT JOIN outputs o ON o.path = d.output
                    WHERE d.needs_review = 1{in_docs} ORDER BY written DESC LIMIT ?""",
                (*args_docs, LIST_LIMIT),
            )
            .fetchall()
        )
        items = []
        for r in rows:
            url = f"/file/{r['job']}" if r["job"] is not None else f"/doc/{r['id']}"
            shown = r["kind"] if r["kind"] in DOC_KINDS else None
            items.append(self._item("review", url, decode(r["source"]), json.loads(r["reasons"]), r["written"], shown))
        return items

    def _item(self, status: str, url: str, path: Path, reasons: list[str], when: float, kind: str | None = None) -> Item:
        name, folder = display(path, self.folders)
        return Item(status, url, name, folder, reasons, when, kind)

    def skipped(self, folders: list[Path], limit: int) -> tuple[list[Skip], int]:
        """The latest `limit` skipped files in these folders, and how many there are in all. Queried here rather
        than through JobQueue.skipped, which knows nothing of the watched folders: a folder dropped from the config
        shows nothing, and its rows must not take the places of those shown."""
        db = self.db.connect()
        where, args = within("path", folders)
        (total,) = db.execute(f"SELECT COUNT(*) FROM jobs WHERE state = ?{where}", (SKIPPED, *args)).fetchone()
        rows = db.execute(
            f"""SELECT id, path, kind, reason, updated FROM jobs WHERE state = ?{where}
                ORDER BY updated DESC, id DESC LIMIT ?""",
            (SKIPPED, *args, limit),
        ).fetchall()
        out = []
        for r in rows:
            name, folder = display(decode(r["path"]), self.folders)
            out.append(Skip(r["id"], name, folder, r["kind"] or "", r["reason"] or "", r["updated"]))
        return out, total

    def job_in_folders(self, job_id: int) -> tuple[Path, str] | None:
        """A job's original and state, if its path lies in a watched folder (as the lists decide it)."""
        where, args = within("path", self.folders)
        row = self.db.connect().execute(f"SELECT path, state FROM jobs WHERE id = ?{where}", (job_id, *args)).fetchone()
        return (decode(row["path"]), row["state"]) if row else None

    def url_for_doc(self, doc_id: int, output: Path) -> str:
        """A transcription's page is its job's, when it has one."""
        row = (
            self.db.connect()
            .execute("SELECT id FROM jobs WHERE output = ? ORDER BY updated DESC LIMIT 1", (encode(output),))
            .fetchone()
        )
        return f"/file/{row['id']}" if row else f"/doc/{doc_id}"

    def by_job(self, job_id: int) -> Record | None:
        db = self.db.connect()
        row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        source = decode(row["path"])
        out = decode(row["output"]) if row["output"] else None
        if out is None:
            prev = self.ledger.for_source(source)
            out = prev.path if prev else None
        rec = Record(f"/file/{job_id}", job_id=job_id, source=source, output=out, state=row["state"], reason=row["reason"])
        try:
            rec.override = {k: v for k, v in json.loads(row["override"] or "{}").items() if k in ("profile", "endpoint")}
        except ValueError:
            pass
        return self._with_doc(rec)

    def by_doc(self, doc_id: int) -> Record | None:
        row = self.db.connect().execute("SELECT output, source FROM docs WHERE id = ?", (doc_id,)).fetchone()
        if row is None:
            return None
        return self._with_doc(Record(f"/doc/{doc_id}", doc_id=doc_id, source=decode(row["source"]), output=decode(row["output"])))

    def _with_doc(self, rec: Record) -> Record:
        if rec.output is not None:
            row = self.db.connect().execute("SELECT * FROM docs WHERE output = ?", (encode(rec.output),)).fetchone()
            if row is not None:
                rec.doc_id = row["id"]
                rec.doc = {k: row[k] for k in ("needs_review", "reviewed", "confidence", "uncertain_words")}
                rec.doc["reasons"] = json.loads(row["reasons"])
            led = self.ledger.get(rec.output)
            rec.edited = bool(led and led.edited)
        return rec

    def root_of(self, path: Path) -> Path | None:
        """The watched folder a path really lies in."""
        return next((f for f in self.folders if inside(path, f)), None)

    def servable(self, path: Path | None) -> Path | None:
        """The path, if it may be served: its real location inside a watched folder, and a regular file.
        Paths come from the state database only, but that database may be older than the config."""
        if path is None:
            return None
        try:
            real = Path(os.path.realpath(path))
            st = os.stat(real)
        except (OSError, ValueError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        if not any(inside(real, Path(os.path.realpath(f))) for f in self.folders):
            return None
        return real
