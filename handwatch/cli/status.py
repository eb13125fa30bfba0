"""What `handwatch status` reports, read from the state directory: whether a daemon runs (and which),
queue counts overall and per folder, endpoint health, files waiting, failed, or needing review."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from handwatch.config.schema import Config
from handwatch.store.jobs import DONE, FAILED, PENDING, RUNNING, SKIPPED, JobQueue
from handwatch.store.state import FolderStates, Health, StateDB, decode

LOCK_NAME = "daemon.lock"
SKIPPED_SHOWN = 10  # the latest skipped files listed (the counts say how many there are in all)
ELSEWHERE = "elsewhere"


def daemon(state_dir: Path) -> dict:
    """{"running": bool, "pid", "since", "version"}: the daemon holds an exclusive lock on daemon.lock and
    writes who it is into it. The probe takes a shared lock for an instant, as /healthz does."""
    info: dict = {"running": False, "pid": None, "since": None, "version": None}
    try:
        fd = os.open(state_dir / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return info
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            info["running"] = True
            try:
                written = json.loads(os.read(fd, 4096) or b"{}")
            except ValueError:  # a daemon from before it wrote its name, or one caught mid-write
                written = {}
            if isinstance(written, dict):
                info.update({k: written.get(k) for k in ("pid", "since", "version")})
    finally:
        os.close(fd)  # closing drops a shared lock we may have got
    return info


def folders(cfg: Config, db: StateDB, queue: JobQueue) -> list[dict]:
    """Each watched folder in config order: how the running daemon last saw it (`state`, None before one
    has) and its jobs by state, each job under the deepest folder that holds it; files elsewhere (`once`)
    last, under the path "elsewhere"."""
    seen = FolderStates(db).all()
    roots = sorted((f.path for f in cfg.folders), key=lambda p: len(p.parts), reverse=True)
    counts: dict[str, dict[str, int]] = {str(f.path): _zero() for f in cfg.folders}
    for path, state in queue.paths_and_states():
        home = next((str(r) for r in roots if path == r or r in path.parents), ELSEWHERE)
        c = counts.setdefault(home, _zero())
        c[state] = c.get(state, 0) + 1
    return [{"path": k, "state": seen.get(k), "counts": v} for k, v in counts.items()]


def _zero() -> dict[str, int]:
    return {PENDING: 0, RUNNING: 0, DONE: 0, FAILED: 0, SKIPPED: 0}


def needs_review(db: StateDB, outputs: list[Path] | None = None) -> list[dict]:
    """Transcriptions whose Markdown says needs_review: true and that nobody accepted yet, newest first
    (only those in `outputs`, when given); files deleted since are left out."""
    rows = (
        db.connect().execute("SELECT output, source, reasons FROM docs WHERE needs_review = 1 ORDER BY updated DESC").fetchall()
    )
    wanted = {os.fsencode(p) for p in outputs} if outputs is not None else None
    out = []
    for r in rows:
        if wanted is not None and bytes(r["output"]) not in wanted:
            continue
        path = decode(r["output"])
        if not path.exists():
            continue
        try:
            reasons = [str(x) for x in json.loads(r["reasons"] or "[]")]
        except ValueError:
            reasons = []
        out.append({"path": str(path), "source": str(decode(r["source"])), "reasons": reasons})
    return out


def gather(cfg: Config) -> dict:
    db = StateDB(cfg.state_dir)
    queue = JobQueue(db)
    health = Health(db).all()
    endpoints = [
        {"url": ep.url, "up": health.get(ep.url, {}).get("up"), "reason": health.get(ep.url, {}).get("reason")}
        for ep in cfg.endpoints
    ]
    return {
        "daemon": daemon(cfg.state_dir),
        "counts": queue.counts(),
        "folders": folders(cfg, db, queue),
        "failed": queue.failed(),
        "waiting": queue.waiting(),
        "skipped": [{k: s[k] for k in ("path", "kind", "reason")} for s in queue.skipped(SKIPPED_SHOWN)],
        "endpoints": endpoints,
        "needs_review": needs_review(db),
    }


def lines(data: dict) -> list[str]:
    """`gather`'s answer for a person."""
    d = data["daemon"]
    if d["running"]:
        who = ", ".join(
            x
            for x in (
                f"pid {d['pid']}" if d["pid"] else "",
                f"since {d['since']}" if d["since"] else "",
                f"handwatch {d['version']}" if d["version"] else "",
            )
            if x
        )
        out = ["daemon: running" + (f" ({who})" if who else "")]
    else:
        out = ["daemon: not running (start it with `handwatch run`, or `systemctl start handwatch`)"]
    c = data["counts"]
    skipped = f"  skipped {c['skipped']}" if c["skipped"] else ""  # only once documents_only has skipped anything
    out.append(f"pending {c['pending']}  running {c['running']}  done {c['done']}  failed {c['failed']}{skipped}")
    for e in data["endpoints"]:
        state = {True: "up", False: "down", None: "not contacted yet"}[e["up"]]
        out.append(f"endpoint {e['url']}: {state}" + (f" ({e['reason']})" if e["reason"] and e["up"] is False else ""))
    for f in data["folders"]:
        files = ", ".join(f"{k} {v}" for k, v in f["counts"].items() if v) or "no files yet"
        if f["path"] == ELSEWHERE:
            out.append(f"files outside the watched folders: {files}")
        else:
            out.append(f"folder {f['path']}: {f['state'] or 'not watched by a running daemon yet'}; {files}")
    out += listing("needs review", [(r["path"], "; ".join(r["reasons"]) or "flagged") for r in data["needs_review"]])
    out += listing("waiting", [(w["path"], w["reason"]) for w in data["waiting"]])
    out += listing("failed", [(f["path"], f["reason"]) for f in data["failed"]])
    if data["skipped"]:
        shown = len(data["skipped"])
        title = f"skipped, not documents ({c['skipped']}" + (f", the latest {shown}" if shown < c["skipped"] else "") + ")"
        out += [f"{title}:"] + [f"  {s['path']}: {s['reason']}" for s in data["skipped"]]
        out.append("  `handwatch retry --anyway PATH` transcribes one regardless")
    return out


def listing(title: str, rows: list[tuple[str, str]]) -> list[str]:
    return [f"{title} ({len(rows)}):"] + [f"  {path}: {reason}" for path, reason in rows] if rows else []
