"""What the review page reads: the review list, one file's record by id, and which paths may ever be served."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from handwatch.config.schema import Config
from handwatch.publish.markdown import printable_name
from handwatch.safefs import inside
from handwatch.store.jobs import FAILED, PENDING
from handwatch.store.state import Ledger, StateDB, decode, encode, within

KINDS = ("review", "failed", "waiting")
LIST_LIMIT = 500


@dataclass(frozen=True)
class Item:
    """One row of the review list."""

    kind: str  # review | failed | waiting
    url: str
    name: str  # relative to its watched folder
    folder: str
    reasons: list[str]
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
        if index is None or not index.isdigit() or int(index) >= len(self.folders):
            return self.folders
        return [self.folders[int(index)]]

    def review_items(self, folders: list[Path], kinds: tuple[str, ...] = KINDS) -> list[Item]:
        db = self.db.connect()
        in_docs, args_docs = within("d.output", folders)
        in_jobs, args_jobs = within("path", folders)
        items: list[Item] = []
        if "review" in kinds:
            rows = db.execute(
                # When handwatch wrote it, not when it was last indexed: a person's save must not reorder the list.
                f"""SELECT d.id, d.source, d.reasons, COALESCE(o.written, d.updated) AS written,
                           (SELECT j.id FROM jobs j WHERE j.output = d.output ORDER BY j.updated DESC LIMIT 1) AS job
                    FROM docs d LEFT JOIN outputs o ON o.path = d.output
                    WHERE d.needs_review = 1{in_docs} ORDER BY written DESC LIMIT ?""",
                (*args_docs, LIST_LIMIT),
            ).fetchall()
            for r in rows:
                url = f"/file/{r['job']}" if r["job"] is not None else f"/doc/{r['id']}"
                items.append(self._item("review", url, decode(r["source"]), json.loads(r["reasons"]), r["written"]))
        for kind, state, extra in (("failed", FAILED, ""), ("waiting", PENDING, " AND reason IS NOT NULL")):
            if kind not in kinds:
                continue
            rows = db.execute(
                f"""SELECT id, path, reason, updated FROM jobs WHERE state = ?{extra}{in_jobs}
                    ORDER BY updated DESC LIMIT ?""",
                (state, *args_jobs, LIST_LIMIT),
            ).fetchall()
            items += [self._item(kind, f"/file/{r['id']}", decode(r["path"]), [r["reason"] or ""], r["updated"]) for r in rows]
        items.sort(key=lambda i: i.when, reverse=True)
        return items[:LIST_LIMIT]

    def _item(self, kind: str, url: str, path: Path, reasons: list[str], when: float) -> Item:
        name, folder = display(path, self.folders)
        return Item(kind, url, name, folder, reasons, when)

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
