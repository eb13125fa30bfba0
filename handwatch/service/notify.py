"""Batched notifications through apprise: files that need review, files that failed, endpoints that went down —
at most one message per `notify.every`, each with a link to the review page, no transcription unless asked."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from handwatch import log
from handwatch.config.schema import Config
from handwatch.publish import markdown
from handwatch.publish.markdown import one_line, printable_name
from handwatch.store.state import StateDB, decode
from handwatch.transcribe import profiles

POLL_S = 5.0
OVERLAP_S = 30.0  # rows committed slightly out of order are still seen; `seen` drops the repeats
MAX_LINES = 10  # per kind, then "and N more"
MAX_PENDING = 1000


@dataclass(frozen=True)
class Event:
    kind: str  # needs_review | failed | endpoint_down
    key: str  # the same event seen twice is sent once
    what: str  # a file name or an endpoint URL
    detail: str = ""
    link: str | None = None
    excerpt: str | None = None


class Batch:
    """Pure: collects events and says when a message is due. The first event after a quiet spell goes out at
    once; later ones wait until `every` has passed since the last message, and then go out together."""

    def __init__(self, every: float, clock: Callable[[], float] = time.monotonic):
        self.every, self.clock = every, clock
        self.pending: list[Event] = []
        self.last_sent: float | None = None

    def add(self, events: list[Event]) -> None:
        keys = {e.key for e in self.pending}
        for e in events:
            if e.key not in keys:
                self.pending.append(e)
                keys.add(e.key)
        del self.pending[:-MAX_PENDING]

    def due(self) -> bool:
        return bool(self.pending) and (self.last_sent is None or self.clock() - self.last_sent >= self.every)

    def take(self) -> list[Event]:
        out, self.pending = self.pending, []
        self.last_sent = self.clock()
        return out

    def put_back(self, events: list[Event]) -> None:
        """Sending failed: keep them for the next message (newer ones win when there are too many)."""
        self.pending = (events + self.pending)[-MAX_PENDING:]


def _unquoted(reason: str) -> str:
    """A review reason without the model's words in it: "narration: The image shows …" is "narration", and
    "page 2: narration: …" is "page 2: narration"."""
    page = PAGE_PREFIX.match(reason)
    prefix, rest = (page.group(0), reason[page.end() :]) if page else ("", reason)
    name = rest.split(":", 1)[0].strip()
    return prefix + name if name in profiles.QUOTING else reason


PAGE_PREFIX = re.compile(r"page \d{1,6}: ")


def shown_name(name: str) -> str:
    """A file name as a message may show it: valid UTF-8, and every control character escaped, so a name
    holding a newline cannot forge a line of the message ("- fake.jpg: all clear")."""
    return one_line(printable_name(name)[:300])


TITLES = {
    "needs_review": ("file needs review", "files need review"),
    "failed": ("file failed", "files failed"),
    "endpoint_down": ("endpoint is down", "endpoints are down"),
}


def compose(events: list[Event], base_url: str | None) -> tuple[str, str]:
    """(title, body): a summary line, then each kind's files with the reason and a link."""
    by_kind: dict[str, list[Event]] = {}
    for e in events:
        by_kind.setdefault(e.kind, []).append(e)
    parts = []
    for kind in ("needs_review", "failed", "endpoint_down"):
        n = len(by_kind.get(kind, []))
        if n:
            parts.append(f"{n} {TITLES[kind][n != 1]}")
    title = "handwatch: " + ", ".join(parts)
    lines: list[str] = []
    for kind in ("needs_review", "failed", "endpoint_down"):
        group = by_kind.get(kind, [])
        if not group:
            continue
        lines.append(TITLES[kind][1].capitalize() + ":" if len(group) > 1 else TITLES[kind][0].capitalize() + ":")
        for e in group[:MAX_LINES]:
            lines.append(f"- {one_line(e.what)}" + (f": {one_line(e.detail)}" if e.detail else ""))
            if e.excerpt:
                lines.append("  " + one_line(e.excerpt))
            if e.link:
                lines.append(f"  {e.link}")
        if len(group) > MAX_LINES:
            lines.append(f"- and {len(group) - MAX_LINES} more")
        lines.append("")
    if base_url:
        lines.append(f"Review page: {base_url}/")
    return title, "\n".join(lines).strip() + "\n"


class Notifier:
    """Reads what happened from the state database (whichever process did it) and sends it on its own thread."""

    def __init__(self, cfg: Config, db: StateDB, clock: Callable[[], float] = time.time, poll_s: float = POLL_S):
        assert cfg.notify is not None
        self.cfg, self.db, self.rule = cfg, db, cfg.notify
        self.clock, self.poll_s = clock, poll_s
        self.base_url = cfg.web.base_url() if cfg.web else None
        self.redactor = log.Redactor(cfg.secrets())  # the logs' masking: no key or URL password leaves in a message
        self.batch = Batch(self.rule.every, time.monotonic)
        self.cursor = clock()  # what happened before the daemon started was either sent then, or is in the list
        self.seen: dict[str, float] = {}
        self.endpoint_up: dict[str, bool] = {}
        self.log = log.get("notify")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        import apprise

        self.apprise = apprise.Apprise()
        for url in self.rule.urls:
            self.apprise.add(url)

    def _link(self, job_id: int) -> str | None:
        return f"{self.base_url}/file/{job_id}" if self.base_url else None

    def collect(self) -> list[Event]:
        db = self.db.connect()
        since = self.cursor - OVERLAP_S
        events: list[Event] = []
        newest = self.cursor
        if "needs_review" in self.rule.on:
            rows = db.execute(
                """SELECT j.id, j.path, j.updated, d.reasons, d.body FROM jobs j JOIN docs d ON d.output = j.output
                   WHERE j.state = 'done' AND d.needs_review = 1 AND j.updated > ?""",
                (since,),
            ).fetchall()
            for r in rows:
                excerpt = None
                if self.rule.include_text:
                    text = "".join(p for p, _ in markdown.doubt_spans(r["body"]))
                    excerpt = " ".join(text.split())[:200]
                reasons = json.loads(r["reasons"])
                if not self.rule.include_text:  # a reason may quote the model ("narration: The image shows …")
                    reasons = [_unquoted(str(x)) for x in reasons]
                events.append(
                    Event(
                        "needs_review",
                        f"review:{r['id']}:{r['updated']}",
                        shown_name(decode(r["path"]).name),
                        "; ".join(reasons)[:200],
                        self._link(r["id"]),
                        excerpt,
                    )
                )
                newest = max(newest, r["updated"])
        if "failed" in self.rule.on:
            rows = db.execute(
                "SELECT id, path, reason, updated FROM jobs WHERE state = 'failed' AND updated > ?", (since,)
            ).fetchall()
            for r in rows:
                events.append(
                    Event(
                        "failed",
                        f"failed:{r['id']}:{r['updated']}",
                        shown_name(decode(r["path"]).name),
                        (r["reason"] or "")[:200],
                        self._link(r["id"]),
                    )
                )
                newest = max(newest, r["updated"])
        if "endpoint_down" in self.rule.on:
            for r in db.execute("SELECT url, up, reason, checked FROM endpoints").fetchall():
                was = self.endpoint_up.get(r["url"], True)
                self.endpoint_up[r["url"]] = bool(r["up"])
                if was and not r["up"]:
                    events.append(Event("endpoint_down", f"down:{r['url']}:{r['checked']}", r["url"], (r["reason"] or "")[:200]))
        fresh = [e for e in events if e.key not in self.seen]
        now = self.clock()
        for e in fresh:
            self.seen[e.key] = now
        self.seen = {k: t for k, t in self.seen.items() if now - t < 10 * OVERLAP_S + self.rule.every}
        self.cursor = newest
        return fresh

    def tick(self) -> bool:
        """One round: look for news, send if a message is due. True when a message went out."""
        self.batch.add(self.collect())
        if not self.batch.due():
            return False
        events = self.batch.take()
        title, body = (self.redactor.text(t) for t in compose(events, self.base_url))
        if self.apprise.notify(title=title, body=body):
            self.log.info("notify.sent", events=len(events))
            return True
        self.log.warning("notify.failed", events=len(events), hint="check notify.urls; the events are kept for the next message")
        self.batch.put_back(events)
        return False

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.tick()
            except Exception as e:  # a notification problem must never reach the daemon
                self.log.warning("notify.error", error=f"{type(e).__name__}: {e}")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="notify", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
