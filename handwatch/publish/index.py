"""The search and review index: every Markdown handwatch wrote, in SQLite FTS5 inside the state database."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from handwatch import log, safefs
from handwatch.publish import markdown
from handwatch.store.state import StateDB, decode, encode, within
from handwatch.transcribe import gate

# Words a person types around what they look for ("the recipe with cardamom"); dropped unless nothing else is left.
STOP_WORDS = frozenset(
    "a an and any at by for from in into is it my of on or our that the this to with without "
    "der die das den dem des ein eine einen einem und mit von zu im in für le la les un une et avec de du".split()
)
MARK_ON, MARK_OFF = "\x02", "\x03"
MAX_INDEXED = 1 << 20  # a Markdown file larger than this is not a transcription: index its first MiB only


@dataclass(frozen=True)
class Hit:
    doc_id: int
    output: Path
    source: Path
    title: str
    line: list[tuple[str, bool]]  # the matching line as (piece, matched) pieces
    needs_review: bool


def terms(text: str) -> list[str]:
    """A person's words: "quoted phrases" kept whole, stop words dropped unless nothing else is left."""
    phrases = [" ".join(re.findall(r"\w+", p)) for p in re.findall(r'"([^"]+)"', text)]
    words = [w.lower() for w in re.findall(r"\w+", re.sub(r'"[^"]*"?', " ", text))]
    kept = [w for w in words if w not in STOP_WORDS] or words
    return [t for t in dict.fromkeys(phrases + kept) if t]


def fts_query(words: list[str], any_word: bool = False) -> str:
    """Each term quoted, so nothing a person types is FTS5 syntax; all terms required, or any with `any_word`."""
    return (" OR " if any_word else " ").join('"' + t.replace('"', '""') + '"' for t in words)


def _line(marked: str, width: int = 160) -> list[tuple[str, bool]]:
    """The first line with a match, trimmed around it, as pieces; the first text line when only the title matched."""
    lines = [ln for ln in marked.splitlines() if ln.strip() and not ln.startswith("<!-- page")]
    line = next((ln for ln in lines if MARK_ON in ln), lines[0] if lines else "")
    start = line.find(MARK_ON)
    if len(line) > width and start > width // 3:
        line = "…" + line[start - width // 3 :]
    if len(line) > width:
        line = line[:width] + "…"
    pieces: list[tuple[str, bool]] = []
    for i, part in enumerate(re.split(f"[{MARK_ON}{MARK_OFF}]", line)):
        if part:
            pieces.append((part, i % 2 == 1))
    return pieces


class SearchIndex:
    def __init__(self, db: StateDB):
        self.db = db

    def update(self, output: Path, text: str, source: Path, stat: os.stat_result | None = None) -> None:
        """Index one Markdown file's text (called when handwatch writes it and when a person saves it)."""
        fm = markdown.fields(text)
        body = markdown.body(text)[:MAX_INDEXED]
        listed = fm.get("review_reasons")
        reasons = listed if isinstance(listed, list) else []
        title = fm.get("title") or next((ln.lstrip("# ").strip() for ln in body.splitlines() if ln.startswith("# ")), "")
        meta_parts = [Path(str(fm.get("source") or source.name)).stem, fm.get("profile")]
        for key in ("tags", "languages", "detected_languages"):
            if isinstance(fm.get(key), list):
                meta_parts += fm[key]
        meta = " ".join(str(p) for p in meta_parts if p)
        confidence = fm.get("confidence") if isinstance(fm.get("confidence"), (int, float)) else None
        uncertain = fm.get("uncertain_words") if isinstance(fm.get("uncertain_words"), int) else None
        if stat is None:
            try:
                stat = os.stat(output)
            except OSError:
                stat = None
        reviewed = fm.get("reviewed")
        kind = fm.get("kind") if fm.get("kind") in gate.KINDS else None  # a person may write anything there
        self.db.connect().execute(
            """INSERT INTO docs(output, source, needs_review, reasons, reviewed, confidence, uncertain_words, title, meta,
                                body, size, mtime_ns, updated, kind)
               VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)
               ON CONFLICT(output) DO UPDATE SET source=excluded.source, needs_review=excluded.needs_review,
                   reasons=excluded.reasons, reviewed=excluded.reviewed, confidence=excluded.confidence,
                   uncertain_words=excluded.uncertain_words, title=excluded.title, meta=excluded.meta, body=excluded.body,
                   size=excluded.size, mtime_ns=excluded.mtime_ns, updated=excluded.updated, kind=excluded.kind""",
            (
                encode(output),
                encode(source),
                int(fm.get("needs_review") is True),
                json.dumps([str(r) for r in reasons]),
                str(reviewed) if reviewed else None,
                confidence,
                uncertain,
                str(title),
                meta,
                body,
                stat.st_size if stat else None,
                stat.st_mtime_ns if stat else None,
                time.time(),
                kind,
            ),
        )

    def update_file(self, output: Path, source: Path) -> bool:
        """Read the file from disk and index it; forget it when it is gone. False when it could not be read, or
        is not a regular file any more (a FIFO would block the reader, a link may lead anywhere)."""
        try:
            fd = safefs.open_regular(output, follow=False)
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read(MAX_INDEXED + 4096)
        except FileNotFoundError:
            self.remove(output)
            return False
        except OSError:
            return False
        self.update(output, data.decode("utf-8", "replace"), source, st)
        return True

    def remove(self, output: Path) -> None:
        self.db.connect().execute("DELETE FROM docs WHERE output=?", (encode(output),))

    def refresh(self, allowed: Callable[[Path], bool] = lambda p: True, full: bool = False) -> tuple[int, int]:
        """Bring the index up to date with the ledger: new outputs, files edited outside handwatch (by size and
        mtime), files that are gone. `full` re-reads every file. Returns (indexed, removed)."""
        db = self.db.connect()
        known = {bytes(r["output"]): (r["size"], r["mtime_ns"]) for r in db.execute("SELECT output, size, mtime_ns FROM docs")}
        outputs = db.execute("SELECT path, source FROM outputs WHERE sha256 IS NOT NULL OR edited IS NOT NULL").fetchall()
        indexed = removed = 0
        seen: set[bytes] = set()
        for row in outputs:
            blob, out = bytes(row["path"]), decode(row["path"])
            seen.add(blob)
            if not allowed(out):
                continue
            try:
                st = os.stat(out)
            except OSError:
                if blob in known:
                    self.remove(out)
                    removed += 1
                continue
            if full or known.get(blob) != (st.st_size, st.st_mtime_ns):
                try:
                    indexed += self.update_file(out, decode(row["source"]))
                except Exception as e:  # one file another device mangled never keeps the others from search
                    log.get("index").warning("index.file_failed", path=str(out), error=f"{type(e).__name__}: {e}"[:300])
        for blob in set(known) - seen:  # no longer in the ledger
            db.execute("DELETE FROM docs WHERE output=?", (blob,))
            removed += 1
        return indexed, removed

    def rebuild(self, allowed: Callable[[Path], bool] = lambda p: True) -> tuple[int, int]:
        """`handwatch reindex`: every file read again, and the FTS5 index rebuilt from the stored texts."""
        result = self.refresh(allowed, full=True)
        self.db.connect().execute("INSERT INTO docs_fts(docs_fts) VALUES('rebuild')")
        return result

    def search(self, text: str, limit: int = 20, folders: Sequence[Path] | None = None) -> list[Hit]:
        """Best matches first (bm25, the title weighing most); when no file has every word, files with any.
        With `folders`, only Markdown below one of them (the review page passes the watched folders)."""
        words = terms(text)
        if not words:
            return []
        hits = self._run(fts_query(words), limit, folders)
        if not hits and len(words) > 1:
            hits = self._run(fts_query(words, any_word=True), limit, folders)
        return hits

    def _run(self, query: str, limit: int, folders: Sequence[Path] | None) -> list[Hit]:
        """Rank first, then highlight only the rows shown: highlight() on every match of a common word is what
        would cost time, not the ranking."""
        db = self.db.connect()
        where, args = within("d.output", folders) if folders is not None else ("", [])
        ids = [
            r[0]
            for r in db.execute(
                f"""SELECT docs_fts.rowid FROM docs_fts JOIN docs d ON d.id = docs_fts.rowid
                WHERE docs_fts MATCH ?{where} ORDER BY bm25(docs_fts, 10.0, 2.0, 1.0) LIMIT ?""",
                (query, *args, limit),
            )
        ]
        if not ids:
            return []
        rows = db.execute(
            f"""SELECT d.id, d.output, d.source, d.title, d.needs_review, highlight(docs_fts, 2, ?, ?) AS marked
                FROM docs_fts JOIN docs d ON d.id = docs_fts.rowid
                WHERE docs_fts MATCH ? AND docs_fts.rowid IN ({",".join("?" * len(ids))})""",
            (MARK_ON, MARK_OFF, query, *ids),
        ).fetchall()
        by_id = {r["id"]: r for r in rows}
        return [
            Hit(r["id"], decode(r["output"]), decode(r["source"]), r["title"], _line(r["marked"]), bool(r["needs_review"]))
            for r in (by_id[i] for i in ids if i in by_id)
        ]
