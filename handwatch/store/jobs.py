"""The durable job store: enqueue idempotently, claim under a lease, complete, defer, fail, recover after a crash."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from handwatch.safefs import FileSig
from handwatch.store.state import StateDB, decode, encode

PENDING, RUNNING, DONE, FAILED, SKIPPED = "pending", "running", "done", "failed", "skipped"
LEASE_S = 6 * 3600  # a claimed job not completed in this long is taken to be orphaned and claimed again
MAX_ATTEMPTS = 3  # claims of one job before it is failed: a file that kills its worker each time is not tried forever
UNHASHED = "-"  # the sha256 of a parked file: it could not be read, so its content is unknown
PARKED = 1e15  # not_before of a parked pending job: never due; a new version of the file replaces it
# A job that ends, or is asked for again, has no second opinion pending (JobQueue.again); nor an override of only that.
DONE_SECOND = """, override=CASE WHEN json_valid(override)
    THEN NULLIF(json_remove(override, '$.second'), json_object('sha256', sha256)) ELSE override END"""


@dataclass(frozen=True)
class Job:
    id: int
    path: Path
    sha256: str
    size: int
    mtime_ns: int
    attempts: int  # times the process died while decoding this file
    owner: str | None = None
    override: dict | None = None  # a person's retry with another profile or endpoint (see JobQueue.retry_with)
    anyway: bool = False  # a person chose to have it transcribed whatever the document check says


def this_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_alive(owner: str | None) -> bool:
    """A job's owner is alive if it is a process on this host that still exists."""
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return True  # another host shares the state dir: trust its lease, not our process table
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


class JobQueue:
    def __init__(self, db: StateDB, clock: Callable[[], float] = time.time):
        self.db = db
        self.clock = clock

    def _job(self, row) -> Job:
        return Job(
            row["id"],
            decode(row["path"]),
            row["sha256"],
            row["size"],
            row["mtime_ns"],
            row["attempts"],
            row["owner"],
            _override(row["override"], row["sha256"], bool(row["anyway"])),
            bool(row["anyway"]),
        )

    def known(self, path: Path, sig: FileSig) -> bool:
        """True when this exact file version already has a job: rescans need not hash it again."""
        row = (
            self.db.connect()
            .execute(
                "SELECT 1 FROM jobs WHERE path=? AND size=? AND mtime_ns=? AND ino=? AND ctime_ns=?",
                (encode(path), sig.size, sig.mtime_ns, sig.ino, sig.ctime_ns),
            )
            .fetchone()
        )
        return row is not None

    def known_many(self, found: Iterable[tuple[Path, FileSig]]) -> set[Path]:
        """Which of these exact file versions already have a job: one query for the lot (a rescan asks
        for a few hundred paths at a time, not one round trip each)."""
        wanted = {encode(path): (path, tuple(sig)) for path, sig in found}
        if not wanted:
            return set()
        marks = ",".join("?" * len(wanted))
        rows = (
            self.db.connect()
            .execute(f"SELECT path, size, mtime_ns, ino, ctime_ns FROM jobs WHERE path IN ({marks})", list(wanted))
            .fetchall()
        )
        known = set()
        for r in rows:
            path, sig = wanted[bytes(r["path"])]
            if sig == (r["size"], r["mtime_ns"], r["ino"], r["ctime_ns"]):
                known.add(path)
        return known

    def enqueue(self, path: Path, sha: str, sig: FileSig) -> bool:
        """Idempotent per (path, content): returns True only when this is new work."""
        now = self.clock()
        db = self.db.connect()
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT id, sha256 FROM jobs WHERE path=?", (encode(path),)).fetchone()
            if row is None:
                db.execute(
                    """INSERT INTO jobs(path, sha256, size, mtime_ns, ino, ctime_ns, state, created, updated)
                       VALUES(?,?,?,?,?,?,?,?,?)""",
                    (encode(path), sha, *sig, PENDING, now, now),
                )
                new = True
            elif row["sha256"] == sha:
                db.execute("UPDATE jobs SET size=?, mtime_ns=?, ino=?, ctime_ns=? WHERE id=?", (*sig, row["id"]))
                new = False
            else:  # the original changed: a new job replaces whatever state the old content had
                db.execute(
                    """UPDATE jobs SET sha256=?, size=?, mtime_ns=?, ino=?, ctime_ns=?, state=?, attempts=0, strikes=0,
                       not_before=0, reason=NULL, lease_until=NULL, owner=NULL, updated=? WHERE id=?""",
                    (sha, *sig, PENDING, now, row["id"]),
                )
                new = True
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return new

    def record(
        self,
        path: Path,
        sha: str,
        sig: FileSig,
        state: str,
        output: Path | None = None,
        reason: str | None = None,
        kind: str | None = None,
        anyway: bool = False,
    ) -> None:
        """Note work done outside the queue (`once`), so the daemon does not do the same file again. `anyway`:
        the person asked for this file to be transcribed whatever the document check says; it sticks."""
        now = self.clock()
        self.db.connect().execute(
            """INSERT INTO jobs(path, sha256, size, mtime_ns, ino, ctime_ns, state, output, reason, kind, anyway, created,
                   updated)
               VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)
               ON CONFLICT(path) DO UPDATE SET sha256=excluded.sha256, size=excluded.size, mtime_ns=excluded.mtime_ns,
                   ino=excluded.ino, ctime_ns=excluded.ctime_ns, state=excluded.state, output=excluded.output,
                   reason=excluded.reason, kind=excluded.kind, anyway=MAX(anyway, excluded.anyway), attempts=0,
                   not_before=0, lease_until=NULL, owner=NULL, updated=excluded.updated""",
            (encode(path), sha, *sig, state, encode(output) if output else None, reason, kind, int(anyway), now, now),
        )

    def claim(self, owner: str, lease_s: float, max_deaths: int = 3) -> Job | None:
        """Take the next due job. A file that killed the process `max_deaths` times while it was being
        decoded is quarantined here instead of crash-looping the service (see crashmarks.py)."""
        now = self.clock()
        with self.db.transaction() as db:
            db.execute(
                """UPDATE jobs SET state=?, reason=?, updated=? WHERE state=? AND attempts>=?""",
                (FAILED, f"quarantined: the process died {max_deaths} times while decoding this file", now, PENDING, max_deaths),
            )
            row = db.execute(
                "SELECT * FROM jobs WHERE state=? AND not_before<=? ORDER BY not_before, id LIMIT 1", (PENDING, now)
            ).fetchone()
            if row is not None:
                db.execute(
                    "UPDATE jobs SET state=?, lease_until=?, owner=?, updated=? WHERE id=?",
                    (RUNNING, now + lease_s, owner, now, row["id"]),
                )
        if row is None:
            return None
        job = self._job(row)
        return replace(job, owner=owner)

    def _finish(self, job: Job, sql: str, args: tuple) -> bool:
        """Only the claim that is still current may finish a job (the original may have changed meanwhile)."""
        cur = self.db.connect().execute(sql + " WHERE id=? AND sha256=? AND state=?", args + (job.id, job.sha256, RUNNING))
        return cur.rowcount == 1

    def complete(self, job: Job, output: Path | None) -> bool:
        return self._finish(
            job,
            "UPDATE jobs SET state=?, output=?, reason=NULL, strikes=0, lease_until=NULL, updated=?" + DONE_SECOND,
            (DONE, encode(output) if output else None, self.clock()),
        )

    def again(self, job: Job, output: Path, reason: str) -> bool:
        """Published, and a second opinion due before new files: its Markdown noted, `second` added to any override."""
        return self._finish(
            job,
            """UPDATE jobs SET state=?, output=?, reason=?, not_before=0, strikes=0, lease_until=NULL, updated=?, override=json_set(
               CASE WHEN json_valid(override) AND json_extract(override, '$.sha256')=sha256 THEN override ELSE '{}' END,
               '$.second', json('true'), '$.sha256', sha256)""",
            (PENDING, encode(output), reason, self.clock()),
        )

    def skip(self, job: Job, kind: str, reason: str) -> bool:
        """Not a document (a photo, a blank frame): no Markdown, nothing failed; not looked at again until it changes."""
        return self._finish(
            job,
            "UPDATE jobs SET state=?, kind=?, reason=?, output=NULL, strikes=0, lease_until=NULL, updated=?" + DONE_SECOND,
            (SKIPPED, kind, reason, self.clock()),
        )

    def fail(self, job: Job, reason: str) -> bool:
        return self._finish(
            job, "UPDATE jobs SET state=?, reason=?, lease_until=NULL, updated=?" + DONE_SECOND, (FAILED, reason, self.clock())
        )

    def defer(self, job: Job, delay_s: float, reason: str) -> bool:
        """Not the file's fault (endpoint down, file still growing): wait, counting nothing against it."""
        return self._finish(
            job,
            "UPDATE jobs SET state=?, not_before=?, reason=?, lease_until=NULL, updated=?",
            (PENDING, self.clock() + delay_s, reason, self.clock()),
        )

    def strike(self, job: Job, reason: str, limit: int, delay_s: float, what: str = "the server failed on this file") -> bool:
        """The server failed on this file while it answers others (or, `what` says, something else went
        wrong that only this file causes): count it against the file, try again later, and fail the file
        with the reason once it has failed `limit` times. True when the file is now failed."""
        now = self.clock()
        with self.db.transaction() as db:
            row = db.execute(
                "SELECT strikes FROM jobs WHERE id=? AND sha256=? AND state=?", (job.id, job.sha256, RUNNING)
            ).fetchone()
            if row is None:
                return False
            n = row["strikes"] + 1
            if n >= limit:
                db.execute(
                    "UPDATE jobs SET state=?, strikes=?, reason=?, lease_until=NULL, updated=? WHERE id=?",
                    (FAILED, n, f"{reason} ({n} tries)", now, job.id),
                )
                return True
            db.execute(
                "UPDATE jobs SET state=?, strikes=?, not_before=?, reason=?, lease_until=NULL, updated=? WHERE id=?",
                (PENDING, n, now + delay_s, f"{what} ({n} of {limit}): {reason}", now, job.id),
            )
        return False

    def strikes(self, job: Job) -> int:
        row = self.db.connect().execute("SELECT strikes FROM jobs WHERE id=?", (job.id,)).fetchone()
        return row["strikes"] if row else 0

    def park(self, path: Path, sig: FileSig, reason: str, failed: bool) -> bool:
        """A file that cannot even be hashed (not readable yet, not a regular file, too large): recorded
        once for this version, so `status` shows it and rescans skip it until the file changes. A
        parked pending job is never claimed; a new version of the file replaces it. True if new."""
        now = self.clock()
        state, not_before = (FAILED, 0.0) if failed else (PENDING, PARKED)
        with self.db.transaction() as db:
            row = db.execute("SELECT sha256, size, mtime_ns, ino, ctime_ns FROM jobs WHERE path=?", (encode(path),)).fetchone()
            if row is not None and row["sha256"] == UNHASHED and tuple(row)[1:] == tuple(sig):
                return False
            db.execute(
                """INSERT INTO jobs(path, sha256, size, mtime_ns, ino, ctime_ns, state, reason, not_before, created, updated)
                   VALUES(?,?,?,?,?,?,?,?,?,?,?)
                   ON CONFLICT(path) DO UPDATE SET sha256=excluded.sha256, size=excluded.size,
                       mtime_ns=excluded.mtime_ns, ino=excluded.ino, ctime_ns=excluded.ctime_ns, state=excluded.state,
                       reason=excluded.reason, not_before=excluded.not_before, attempts=0, strikes=0,
                       lease_until=NULL, owner=NULL, updated=excluded.updated""",
                (encode(path), UNHASHED, *sig, state, reason, not_before, now, now),
            )
        return True

    def drop(self, job: Job) -> None:
        """The file vanished before its turn: nothing to transcribe, nothing to report."""
        self.db.connect().execute("DELETE FROM jobs WHERE id=? AND sha256=?", (job.id, job.sha256))

    def recover(self, alive: Callable[[str | None], bool] = owner_alive, died_decoding: Iterable[int] = ()) -> int:
        """Requeue jobs left running by a process that died, or whose lease ran out. Only a death while
        the job was being decoded (`died_decoding`) counts against it: a kill by the watchdog or an
        operator during a request says nothing about the file."""
        now = self.clock()
        died = set(died_decoding)
        n = 0
        with self.db.transaction() as db:
            rows = db.execute("SELECT id, owner, lease_until FROM jobs WHERE state=?", (RUNNING,)).fetchall()
            for r in rows:
                if not alive(r["owner"]) or (r["lease_until"] or 0) < now:
                    db.execute(
                        "UPDATE jobs SET state=?, attempts=attempts+?, lease_until=NULL, owner=NULL, updated=? "
                        "WHERE id=? AND state=?",
                        (PENDING, int(r["id"] in died), now, r["id"], RUNNING),
                    )
                    n += 1
        return n

    def release(self, owner: str, keep: Iterable[int] = ()) -> int:
        """Jobs this process holds but no worker is working on (stopping, or a worker that died) go back
        to pending, nothing counted."""
        keep = set(keep)
        db = self.db.connect()
        rows = db.execute("SELECT id FROM jobs WHERE state=? AND owner=?", (RUNNING, owner)).fetchall()
        ids = [r["id"] for r in rows if r["id"] not in keep]
        for i in ids:
            db.execute(
                "UPDATE jobs SET state=?, owner=NULL, lease_until=NULL, updated=? WHERE id=? AND state=?",
                (PENDING, self.clock(), i, RUNNING),
            )
        return len(ids)

    def release_job(self, job_id: int, owner: str) -> bool:
        cur = self.db.connect().execute(
            "UPDATE jobs SET state=?, owner=NULL, lease_until=NULL, updated=? WHERE id=? AND state=? AND owner=?",
            (PENDING, self.clock(), job_id, RUNNING, owner),
        )
        return cur.rowcount == 1

    def retry(self, paths: Iterable[Path] | None = None, anyway: bool = False) -> int:
        """Failed files back to pending; named paths are redone whatever their state (except running).
        `anyway`: skipped files too, each from now on transcribed whatever the document check says (the choice
        sticks for the file, through later changes): every skipped file, or each named file. A failed file was
        never judged, so `retry --anyway` alone leaves its check as it was. Without `anyway`, a named skipped
        file is checked again (another model may judge it otherwise)."""
        db = self.db.connect()
        now = self.clock()
        states = (FAILED, SKIPPED) if anyway else (FAILED,)
        if paths is None:
            marks = ",".join("?" * len(states))
            cur = db.execute(
                f"""UPDATE jobs SET state=?, attempts=0, strikes=0, not_before=0, reason=NULL,
                        anyway=MAX(anyway, state=?), updated=?{DONE_SECOND} WHERE state IN ({marks})""",
                (PENDING, SKIPPED, now, *states),
            )
            return cur.rowcount
        n = 0
        for p in paths:
            cur = db.execute(
                f"""UPDATE jobs SET state=?, attempts=0, strikes=0, not_before=0, reason=NULL, anyway=MAX(anyway, ?), updated=?
                   {DONE_SECOND} WHERE path=? AND state!=?""",
                (PENDING, int(anyway), now, encode(p), RUNNING),
            )
            n += cur.rowcount
        return n

    def retry_with(self, job_id: int, profile: str | None = None, endpoint: str | None = None) -> bool:
        """A person's retry from the review page: back to pending, transcribed afresh (the stored text is not
        reused), with this profile and/or only on this endpoint if given. The override is stored with the job and
        holds for this content only (its sha256): when the original changes, the folder's rule applies again.
        False when the job is running or unknown."""
        db = self.db.connect()
        override = {k: v for k, v in (("profile", profile), ("endpoint", endpoint)) if v}
        cur = db.execute(
            """UPDATE jobs SET state=?, attempts=0, strikes=0, not_before=0, reason=NULL, updated=?,
                   override=json_set(?, '$.sha256', sha256) WHERE id=? AND state!=?""",
            (PENDING, self.clock(), json.dumps(override), job_id, RUNNING),
        )
        return cur.rowcount == 1

    def state_of(self, path: Path) -> dict | None:
        row = self.db.connect().execute("SELECT * FROM jobs WHERE path=?", (encode(path),)).fetchone()
        if row is None:
            return None
        out = decode(row["output"]) if row["output"] else None
        return {
            "state": row["state"],
            "sha256": row["sha256"],
            "reason": row["reason"],
            "attempts": row["attempts"],
            "output": out,
            "kind": row["kind"],
            "anyway": bool(row["anyway"]),
        }

    def is_due(self, path: Path) -> bool:
        """A pending job that may be claimed now (not waiting out a delay, not parked)."""
        row = (
            self.db.connect()
            .execute("SELECT 1 FROM jobs WHERE path=? AND state=? AND not_before<=?", (encode(path), PENDING, self.clock()))
            .fetchone()
        )
        return row is not None

    def source_of(self, output: Path) -> Path | None:
        """The original whose Markdown this is, for a person who names the Markdown instead."""
        row = self.db.connect().execute("SELECT path FROM jobs WHERE output=?", (encode(output),)).fetchone()
        return decode(row["path"]) if row else None

    def paths_and_states(self) -> list[tuple[Path, str]]:
        return [(decode(r["path"]), r["state"]) for r in self.db.connect().execute("SELECT path, state FROM jobs")]

    def counts(self) -> dict[str, int]:
        rows = self.db.connect().execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state").fetchall()
        counts = {PENDING: 0, RUNNING: 0, DONE: 0, FAILED: 0, SKIPPED: 0}
        counts.update({r["state"]: r["n"] for r in rows})
        return counts

    def failed(self) -> list[dict]:
        rows = self.db.connect().execute("SELECT path, reason FROM jobs WHERE state=? ORDER BY updated", (FAILED,)).fetchall()
        return [{"path": os.fsdecode(r["path"]), "reason": r["reason"]} for r in rows]

    def skipped(self, limit: int | None = None) -> list[dict]:
        """Skipped files, the latest first: id, path, kind, reason, when."""
        sql = "SELECT id, path, kind, reason, updated FROM jobs WHERE state=? ORDER BY updated DESC, id DESC"
        rows = self.db.connect().execute(sql + (f" LIMIT {int(limit)}" if limit else ""), (SKIPPED,)).fetchall()
        return [
            {"id": r["id"], "path": os.fsdecode(r["path"]), "kind": r["kind"], "reason": r["reason"], "updated": r["updated"]}
            for r in rows
        ]

    def waiting(self) -> list[dict]:
        """Pending jobs held back by a reason (endpoint down, file still growing), for `status`."""
        rows = (
            self.db.connect()
            .execute(
                "SELECT path, reason, not_before FROM jobs WHERE state=? AND reason IS NOT NULL ORDER BY not_before", (PENDING,)
            )
            .fetchall()
        )
        return [{"path": os.fsdecode(r["path"]), "reason": r["reason"], "not_before": r["not_before"]} for r in rows]

    def next_due(self) -> float | None:
        row = (
            self.db.connect()
            .execute("SELECT MIN(not_before) AS t FROM jobs WHERE state=? AND not_before<?", (PENDING, PARKED))
            .fetchone()
        )
        return row["t"] if row and row["t"] is not None else None


def _override(text: str | None, sha: str, anyway: bool = False) -> dict | None:
    """The stored override, if it was made for this content; `anyway` holds for the file whatever its content."""
    made = _made_for(text, sha)
    return {**(made or {}), "anyway": True} if anyway else made


def _made_for(text: str | None, sha: str) -> dict | None:
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("sha256") != sha:
        return None
    kept = {k: data[k] for k in ("profile", "endpoint") if data.get(k)}  # `second`: the first reading is out, now its
    # second opinion. Else a person asked for a new transcription: the stored text of this content is not reused.
    return {"second": True, **kept} if data.get("second") else {"fresh": True, **kept}
