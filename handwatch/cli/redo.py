"""`handwatch redo`: transcriptions another prompt, preprocessing, rule or model made, done again — never over an edit."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from handwatch import log, safefs
from handwatch.config import routing
from handwatch.config.schema import Config, Rule
from handwatch.errors import HandwatchError
from handwatch.prepare.formats import camera_photo
from handwatch.publish import provenance
from handwatch.safefs import FileSig
from handwatch.store.jobs import SKIPPED
from handwatch.store.state import Ledger, StateDB, decode, encode
from handwatch.transcribe import gate

REDO, CONFLICT, SKIP = "redo", "conflict", "skip"
GONE = "the original is gone"
UNCHECKED = "documents_only is on here and it was never checked: looked at again, its Markdown removed if it is not a document"
RECHECK = "skipped as not a document, and documents_only is off here now: transcribed"


@dataclass(frozen=True)
class Item:
    source: Path
    output: Path
    action: str  # redo | conflict | skip
    why: str
    retranscribe: bool = True  # False: only the review thresholds changed, the stored text is rendered again
    remove: bool = False  # the original is skipped (not a document): its Markdown is taken back, nothing is asked
    recheck: bool = False  # skipped where the check is off now: transcribed (it has no Markdown to take back)


@dataclass
class Plan:
    items: list[Item] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def of(self, action: str) -> list[Item]:
        return [i for i in self.items if i.action == action]


class Models:
    """The models the current config would use, per engine; asked of each server at most once. A server
    that cannot be asked leaves its model unknown, and then model changes are not judged (with a note)."""

    def __init__(self, cfg: Config, list_vlm: Callable | None = None, tesseract_version: Callable[[], str] | None = None):
        self.cfg = cfg
        self._list_vlm = list_vlm or _vlm_model
        self._tesseract = tesseract_version or _tesseract_version
        self._cache: dict[tuple, tuple[set[str], list[str]]] = {}

    def for_engine(self, engine: str, route: tuple[int, ...] | None = None) -> tuple[set[str], list[str]]:
        """(models, notes): models is empty when any of them is unknown. `route`: only these endpoints (the ones a
        rule's `endpoint` names)."""
        key = (engine, route if engine == "vlm" else None)
        if key not in self._cache:
            models, notes = set(), []
            if engine == "tesseract":
                try:
                    models.add(self._tesseract())
                except HandwatchError as e:
                    notes.append(f"tesseract: {e}; model changes not checked")
            else:
                for i, ep in enumerate(self.cfg.endpoints):
                    if route is not None and i not in route:
                        continue
                    try:
                        models.add(ep.model or self._list_vlm(ep))
                    except HandwatchError as e:
                        notes.append(f"cannot tell which model {ep.url} serves ({e}); model changes not checked")
                if notes:
                    models = set()
            self._cache[key] = (models, notes)
        return self._cache[key]


def _vlm_model(ep) -> str:
    from handwatch.transcribe.client import EndpointClient

    return EndpointClient(ep).model()


def _tesseract_version() -> str:
    from handwatch.transcribe.tesseract import TesseractEngine

    return TesseractEngine().version()


def inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def edited(out: Path, ledger: Ledger) -> str | None:
    """Why handwatch may not write `out` again, or None. A missing Markdown holds no one's edit."""
    try:
        sha = safefs.sha256_file(out)
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"{out.name} cannot be read ({e.strerror or e}); left untouched"
    rec = ledger.get(out)
    if rec is None:
        return f"{out.name} was not written by handwatch; left untouched"
    if not rec.owns(sha):
        return f"{out.name} was edited since handwatch wrote it; left untouched"
    return None


def plan(cfg: Config, db: StateDB, folder: Path | None = None, needs_review: bool = False, models: Models | None = None) -> Plan:
    """What `redo` would do with every transcription handwatch recorded, and why. Pure of side effects:
    it reads the state database, the config and the files' hashes, and may list a server's models."""
    from handwatch.config.rules import RuleBook
    from handwatch.intake.candidates import Candidates

    models = models or Models(cfg)
    candidates = Candidates(cfg, RuleBook(cfg))
    ledger = Ledger(db)
    result = Plan()
    records = provenance.Provenance(db).all()
    known = {r.source for r in records}
    for r in records:
        if folder is not None and not inside(r.source, folder):
            continue
        if needs_review and not r.needs_review:
            continue
        if not r.source.is_file():
            result.items.append(Item(r.source, r.output, SKIP, GONE))
            continue
        rule, why = candidates.rule(r.source)
        if rule is None:
            result.items.append(Item(r.source, r.output, SKIP, why or "not an input"))
            continue
        job = _job(db, r.source)
        skipped = (job["reason"] or "not a document") if job is not None and job["state"] == SKIPPED else None
        if skipped is not None:  # judged not a document since its Markdown was written (its content changed)
            problem = edited(r.output, ledger)
            if problem:
                result.items.append(Item(r.source, r.output, CONFLICT, problem))
            elif r.output.exists():
                result.items.append(Item(r.source, r.output, REDO, skipped, retranscribe=False, remove=True))
            continue
        reasons, retranscribe = _reasons(r, rule, cfg, models, result.notes, bool(job and job["anyway"]))
        if not reasons:
            continue
        problem = edited(r.output, ledger)
        if problem:
            result.items.append(Item(r.source, r.output, CONFLICT, problem))
        else:
            result.items.append(Item(r.source, r.output, REDO, "; ".join(reasons), retranscribe))
    for path in _skipped_paths(db):  # skipped where the check is off now: a rule changed, so they are transcribed
        if (folder is not None and not inside(path, folder)) or needs_review or path in known or not path.is_file():
            continue
        rule, _ = candidates.rule(path)
        job = _job(db, path)
        if (
            rule is not None
            and job is not None
            and job["kind"] != "blank"
            and not gate.applies(rule.documents_only, camera_photo(path))
        ):
            result.items.append(Item(path, path, REDO, RECHECK, retranscribe=False, recheck=True))
    older = [p for p in _done_paths(db) if p not in known and (folder is None or inside(p, folder))]
    if older and not needs_review:
        result.notes.append(
            f"{len(older)} transcription(s) were written before handwatch recorded what made them; "
            "`handwatch retry PATH` transcribes one again"
        )
    result.notes = list(dict.fromkeys(result.notes))
    return result


def _reasons(
    r: provenance.Record, rule: Rule, cfg: Config, models: Models, notes: list[str], anyway: bool = False
) -> tuple[list[str], bool]:
    now = provenance.parts(rule, cfg)
    changed = [k for k in provenance.PART_NAMES if r.parts.get(k) != now.get(k)]
    reasons = provenance.changes(r.parts, now)
    retranscribe = any(k in provenance.TRANSCRIBING for k in changed)
    if r.parts.get(provenance.GATE) != "on" and not anyway and gate.applies(rule.documents_only, camera_photo(r.source)):
        reasons.append(UNCHECKED)  # its text is kept unless the check says it is not a document
    if r.model:  # '' when every page was blank: no model read anything
        current, model_notes = models.for_engine(rule.engine, routing.first_route(rule, cfg.endpoints) if rule.endpoint else None)
        notes += model_notes
        if current and r.model not in current:
            reasons.append(f"model {r.model} → {', '.join(sorted(current))}")
            retranscribe = True
    return reasons, retranscribe


def forget_gone(db: StateDB, items: list[Item]) -> None:
    """A gone original is reported once: its record goes, so later runs do not list it again."""
    store = provenance.Provenance(db)
    for item in items:
        if item.action == SKIP and item.why == GONE and not item.source.exists():
            store.forget(item.source)


def _job(db: StateDB, source: Path):
    return db.connect().execute("SELECT state, reason, kind, anyway FROM jobs WHERE path=?", (encode(source),)).fetchone()


def _skipped_paths(db: StateDB) -> list[Path]:
    return [decode(r["path"]) for r in db.connect().execute("SELECT path FROM jobs WHERE state=?", (SKIPPED,))]


def _done_paths(db: StateDB) -> list[Path]:
    rows = db.connect().execute("SELECT path FROM jobs WHERE state='done'").fetchall()
    return [decode(row["path"]) for row in rows]


@dataclass
class Summary:
    redone: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    waiting: list[tuple[Path, str]] = field(default_factory=list)
    busy: list[Path] = field(default_factory=list)  # being transcribed by another process right now
    removed: list[tuple[Path, str]] = field(default_factory=list)  # Markdown taken back: its original is not a document
    kept: list[tuple[Path, str]] = field(default_factory=list)  # Markdown of a skipped original left alone, and why
    unavailable: bool = False  # an endpoint went away: the rest waits in the queue


def run(cfg: Config, items: list[Item], progress: Callable[[int, int, Item, str, str | None], None] | None = None) -> Summary:
    """Put each item back in the queue and work it off, as `scan` does; `progress(k, n, item, outcome, reason)`
    after each. A text stored for the file is forgotten first unless only the review thresholds changed,
    so the model is asked again rather than the old reading rendered anew."""
    from handwatch.service.worker import Worker, build
    from handwatch.store.jobs import LEASE_S, MAX_ATTEMPTS, RUNNING, this_owner

    db, queue, pipeline, candidates, n = build(cfg)
    wanted: dict[Path, Item] = {}
    summary = Summary()

    def take_back(item: Item, why: str) -> None:
        """An original judged not a document: its Markdown is taken back, unless a person edited it."""
        resolved, _ = candidates.resolve(item.source)
        root = resolved.root(item.source) if resolved is not None else item.source.parent
        try:
            pipeline.publisher.retract(item.output, item.source, root)
        except (HandwatchError, OSError) as e:
            summary.kept.append((item.output, str(getattr(e, "strerror", None) or e)))
        else:
            summary.removed.append((item.output, why))

    def on_skipped(job, why) -> None:
        item = wanted.get(job.path)
        if item is not None and not item.recheck:  # a recheck had no Markdown to take back
            take_back(item, str(why))

    worker = Worker(queue, pipeline, candidates, on_skipped=on_skipped)
    queue.recover()
    conn = db.connect()
    for item in [i for i in items if i.remove]:  # already judged: nothing to ask, only the Markdown to take back
        if (queue.state_of(item.source) or {}).get("state") == RUNNING:
            summary.busy.append(item.source)  # being looked at again right now (it changed): not behind its back
            continue
        take_back(item, item.why)
    for item in [i for i in items if not i.remove]:
        try:
            st = os.stat(item.source)
            sha = safefs.sha256_file(item.source)
        except OSError as e:
            summary.failed.append((item.source, f"cannot be read: {e.strerror or e}"))
            continue
        state = queue.state_of(item.source)
        if state is not None and state["state"] == RUNNING:
            summary.busy.append(item.source)
            continue
        if item.retranscribe:
            # The text cache is keyed by content and rule, not by model or prompt wording: drop this
            # content's stored texts so the model reads the page again.
            conn.execute("DELETE FROM texts WHERE source_sha256=?", (sha,))
        if state is None or state["sha256"] != sha:
            queue.enqueue(item.source, sha, FileSig.of(st))
        queue.retry([item.source])
        wanted[item.source] = item
    total = len(wanted)
    owner = this_owner()
    lock = threading.Lock()
    finished: set[Path] = set()
    logger = log.get("redo")

    def loop() -> None:
        while not worker.unavailable.is_set():
            job = queue.claim(owner, LEASE_S, MAX_ATTEMPTS)
            if job is None:
                return
            outcome = worker.handle(job)
            item = wanted.get(job.path)
            if item is None or outcome in ("changed", "again"):  # again: its second opinion is queued
                continue
            reason = (queue.state_of(job.path) or {}).get("reason") if outcome != "done" else None
            with lock:
                finished.add(job.path)
                if outcome == "done":
                    summary.redone += 1
                elif outcome == "skipped":
                    pass  # on_skipped said what became of its Markdown
                elif outcome == "waiting":
                    summary.waiting.append((job.path, reason or "waiting"))
                else:
                    summary.failed.append((job.path, reason or outcome))
                if progress:
                    progress(len(finished), total, item, outcome, reason)
            logger.info("redo.done", path=str(job.path), outcome=outcome)

    threads = [threading.Thread(target=loop, name=f"redo-{i}", daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    summary.unavailable = worker.unavailable.is_set()
    for path in wanted:
        if path not in finished:  # another process (a running daemon) took it, or the endpoint went away
            summary.waiting.append((path, (queue.state_of(path) or {}).get("reason") or "left in the queue"))
    return summary
