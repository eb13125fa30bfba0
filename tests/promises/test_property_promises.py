"""The promises under random interleavings (hypothesis), against the real daemon, real files and the scripted server.

Each example is a random schedule of: originals with colliding stems and reused names created (written in
place or renamed into place), replaced, renamed (also over each other) and deleted; Markdown files edited by
a person; the daemon killed with SIGKILL and restarted; replies held and released in random order; short
pauses that let the daemon get between the steps. When the schedule ends every reply is released and the
daemon left to finish; then, for every example:

- every original present has exactly one current Markdown (its own name, its current sha256) holding the
  text of its own bytes — unless a person's edit is in the way, and then its job says so;
- no Markdown a person edited changed;
- nothing was written outside the watched folder;
- no temporary file remains.

HANDWATCH_PROPERTY_EXAMPLES sets how many schedules run (default 12; CI runs the default). The schedules are
derandomized (the same every run); a failure is reported as is, because shrinking one costs a minute per try:
HANDWATCH_PROPERTY_SHRINK=1 shrinks it to the smallest schedule that still fails."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import tempfile
import threading
from pathlib import Path

import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.support.daemon import PLAIN, DaemonProc, front, id_png, temps, text_for, text_of, tree
from tests.support.fakeopenai import FakeOpenAI, wait_for

NAMES = ["IMG_0.png", "IMG_0.jpg", "IMG_0.jpeg", "IMG_1.png", "scan.png", "sub/IMG_0.png", "sub/IMG_0.jpg"]
EXAMPLES = int(os.environ.get("HANDWATCH_PROPERTY_EXAMPLES", "12"))
PHASES = [Phase.explicit, Phase.reuse, Phase.generate] + ([Phase.shrink] if os.environ.get("HANDWATCH_PROPERTY_SHRINK") else [])
KIND = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}

step = st.one_of(
    st.tuples(st.just("create"), st.sampled_from(NAMES), st.booleans()),
    st.tuples(st.just("rename"), st.sampled_from(NAMES), st.sampled_from(NAMES)),
    st.tuples(st.just("delete"), st.sampled_from(NAMES)),
    st.tuples(st.just("edit"), st.integers(0, 30)),
    st.tuples(st.just("release"), st.integers(0, 30)),
    st.tuples(st.just("pause"), st.integers(0, 400)),
    st.tuples(st.just("kill")),
)
# Three kills during one file's work would quarantine it ("the process died 3 times"), a failure by design.
schedules = st.lists(step, min_size=3, max_size=24).filter(lambda s: sum(x[0] == "kill" for x in s) <= 2)


class World:
    """The test's side: what it created (sha256 → identity), what a person edited, and the daemon."""

    def __init__(self, root: Path, server: FakeOpenAI):
        self.root, self.server = root, server
        self.inbox, self.staging = root / "inbox", root / "staging"
        for d in (self.inbox / "sub", self.staging, root / "outside"):
            d.mkdir(parents=True)
        (root / "outside" / "keep.txt").write_text("not handwatch's")
        self.ident: dict[str, int] = {}  # sha256 of an original's bytes -> its identity
        self.kind: dict[str, str] = {}  # … -> the format it was written in
        self.next = 1
        self.edited: dict[Path, bytes] = {}
        self.held: list[threading.Event] = []
        self.lock = threading.Lock()
        server.default = self._held_reply
        self.cfg = root / "config.yaml"
        self.cfg.write_text(
            yaml.safe_dump(
                {
                    "state_dir": str(root / "state"),
                    "rescan_s": 600,
                    "stop_grace_s": 2,
                    "endpoints": [{"url": server.url, "max_concurrency": 4, "timeout_s": 120}],
                    "defaults": {"settle_s": 0.2, "preprocess": PLAIN},
                    "folders": [{"path": str(self.inbox)}],
                }
            )
        )
        self.before = self.outside()
        self.daemon = DaemonProc(self.cfg, root / "daemon.log")

    def _held_reply(self, rec):
        ev = threading.Event()
        with self.lock:
            self.held.append(ev)
        return {**text_for(rec), "hold": ev, "hold_timeout": 120}

    def outside(self) -> set[str]:
        return {p for p in tree(self.root) if not p.startswith(("inbox", "state", "staging")) and p not in ("daemon.log",)}

    # --- steps ------------------------------------------------------------------------------------

    def create(self, name: str, in_place: bool) -> None:
        ident, self.next = self.next, self.next + 1
        target = self.inbox / name
        src = target if in_place else self.staging / f"{ident}{target.suffix}"
        id_png(src, ident)
        sha = hashlib.sha256(src.read_bytes()).hexdigest()
        self.ident[sha], self.kind[sha] = ident, KIND[target.suffix]
        if not in_place:
            os.rename(src, target)

    def rename(self, a: str, b: str) -> None:
        if a != b and (self.inbox / a).exists():
            os.rename(self.inbox / a, self.inbox / b)

    def delete(self, name: str) -> None:
        (self.inbox / name).unlink(missing_ok=True)

    def edit(self, k: int) -> None:
        mds = sorted(p for p in self.inbox.rglob("*.md"))
        if mds:
            md = mds[k % len(mds)]
            data = md.read_bytes() + f"\nA person's note {k}.\n".encode()
            md.write_bytes(data)
            self.edited[md] = data

    def release(self, k: int) -> None:
        with self.lock:
            waiting = [e for e in self.held if not e.is_set()]
        if waiting:
            waiting[k % len(waiting)].set()

    def pause(self, ms: int) -> None:
        threading.Event().wait(ms / 1000)  # part of the schedule: lets the daemon get between two steps

    def kill(self) -> None:
        self.daemon.kill()
        self.daemon = DaemonProc(self.cfg, self.root / "daemon.log")

    def release_all(self) -> None:
        self.server.default = text_for
        with self.lock:
            for e in self.held:
                e.set()

    # --- the promises ------------------------------------------------------------------------------

    def jobs(self) -> dict[str, dict]:
        db = sqlite3.connect(self.root / "state" / "state.sqlite3", timeout=30)
        db.row_factory = sqlite3.Row
        try:
            return {os.fsdecode(r["path"]): dict(r) for r in db.execute("SELECT path, state, reason, sha256 FROM jobs")}
        finally:
            db.close()

    def violations(self) -> list[str]:
        out = []
        jobs = self.jobs()
        mds = {p: front(p) for p in self.inbox.rglob("*.md") if p not in self.edited}
        for p in sorted(self.inbox.rglob("*")):
            if p.suffix not in KIND or not p.is_file():
                continue
            sha = hashlib.sha256(p.read_bytes()).hexdigest()
            if self.kind[sha] != KIND[p.suffix]:  # renamed across formats: bad input, failed with its reason
                job = jobs.get(str(p)) or {}
                if not (
                    job.get("state") == "failed"
                    and job.get("sha256") == sha
                    and f"content is {self.kind[sha]}" in (job.get("reason") or "")
                ):
                    out.append(f"{p.name}: {self.kind[sha]} content, yet job {job.get('state')} {job.get('reason')}")
                continue
            current = [
                m
                for m, meta in mds.items()
                if m.parent == p.parent and meta.get("source") == p.name and meta.get("source_sha256") == sha
            ]
            if len(current) > 1:
                out.append(f"{p.name}: {len(current)} current Markdown files {[m.name for m in current]}")
            elif current:
                body = current[0].read_text().split("---\n", 2)[2].strip()
                if body != text_of(self.ident[sha]):
                    out.append(f"{p.name}: {current[0].name} holds {body!r}, not its own text")
            else:
                job = jobs.get(str(p)) or {}
                blocked = (
                    job.get("state") == "failed"
                    and job.get("sha256") == sha
                    and any(w in (job.get("reason") or "") for w in ("edited", "not written by handwatch"))
                )
                overwritten = any(m.parent == p.parent and front(m).get("source") == p.name for m in self.edited)
                if not (blocked or (overwritten and job.get("state") in ("done", "failed"))):
                    out.append(f"{p.name}: no current Markdown (job: {job.get('state')} {job.get('reason')})")
        for md, data in self.edited.items():
            if not md.exists() or md.read_bytes() != data:
                out.append(f"{md.name}: a person's edit was changed or removed")
        if self.outside() != self.before:
            out.append(f"written outside the watched folder: {sorted(self.outside() ^ self.before)}")
        return out


@settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, phases=PHASES, database=None
)
@given(schedules)
def test_every_promise_holds_under_random_interleavings(schedule):
    root = Path(tempfile.mkdtemp(prefix="handwatch-property-"))
    server = FakeOpenAI().start()
    world = None
    try:
        world = World(root, server)
        for name, *args in schedule:
            getattr(world, name)(*args)
        world.release_all()
        last: list[str] = []

        def settled() -> bool:
            nonlocal last
            last = world.violations()
            return not last and not temps(world.inbox)

        try:
            wait_for(settled, 60, interval=0.2, what="every promise to hold once the daemon has caught up")
        except AssertionError:
            raise AssertionError(f"schedule {schedule}: {last}") from None
        assert world.daemon.stop(signal.SIGTERM) == 0
        assert world.violations() == [] and temps(world.inbox) == []
    finally:
        if world is not None:
            world.daemon.kill()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
