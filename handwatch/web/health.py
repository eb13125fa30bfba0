"""`/healthz` (can the daemon make progress?) and the gauges `/metrics` reads from the state database at each scrape."""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Callable

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from handwatch.config.schema import Config
from handwatch.store.jobs import JobQueue
from handwatch.store.state import Health, StateDB

STALL_S = 60.0  # the daemon's main loop turns at least twice a second; a minute without a turn is a stall


def uses_vlm(cfg: Config) -> bool:
    return cfg.base_rule().engine == "vlm" or any(cfg.folder_rule(f).engine == "vlm" for f in cfg.folders)


def daemon_running(cfg: Config) -> bool:
    """Another process holds the daemon's lock on this state directory."""
    try:
        fd = os.open(cfg.state_dir / "daemon.lock", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a shared lock we may have got
    return False


class Progress:
    """Whether files can move: the database answers, the daemon's loop turns, and some endpoint is up.
    `beat` (inside the daemon) gives the seconds since its main loop last turned, or None while it stops;
    without it (`handwatch web` alone) the daemon must hold its lock on the state directory."""

    def __init__(self, cfg: Config, db: StateDB, beat: Callable[[], float | None] | None = None):
        self.cfg, self.db, self.beat = cfg, db, beat

    def check(self) -> tuple[bool, dict[str, str]]:
        checks: dict[str, str] = {}
        try:
            self.db.connect().execute("SELECT COUNT(*) FROM jobs WHERE state='pending'").fetchone()
            checks["database"] = "ok"
        except sqlite3.Error as e:
            checks["database"] = f"error: {e}"
        if self.beat is not None:
            age = self.beat()
            checks["daemon"] = "stopping" if age is None else f"main loop stalled for {age:.0f} s" if age > STALL_S else "ok"
        else:
            checks["daemon"] = "ok" if daemon_running(self.cfg) else f"no daemon is running with state_dir {self.cfg.state_dir}"
        if uses_vlm(self.cfg) and self.cfg.endpoints and checks["database"] == "ok":
            health = Health(self.db).all()
            down = [ep.url for ep in self.cfg.endpoints if health.get(ep.url, {}).get("up") is False]
            checks["endpoints"] = "every endpoint is down: " + ", ".join(down) if len(down) == len(self.cfg.endpoints) else "ok"
        return all(v == "ok" for v in checks.values()), checks


class StateCollector(Collector):
    """Gauges that are facts in the database, read when Prometheus scrapes (any process may have changed them)."""

    def __init__(self, cfg: Config, db: StateDB, progress: Progress):
        self.cfg, self.db, self.progress = cfg, db, progress

    def collect(self):
        files = GaugeMetricFamily("handwatch_files", "Files in the queue by state", labels=["state"])
        for state, n in JobQueue(self.db).counts().items():
            files.add_metric([state], n)
        yield files
        (n,) = self.db.connect().execute("SELECT COUNT(*) FROM docs WHERE needs_review = 1").fetchone()
        yield GaugeMetricFamily("handwatch_needs_review", "Transcriptions flagged for review and not yet accepted", value=n)
        up = GaugeMetricFamily(
            "handwatch_endpoint_up",
            "1 when the endpoint answered its last request, 0 when it is down (absent until a request was made)",
            labels=["endpoint"],
        )
        health = Health(self.db).all()
        for ep in self.cfg.endpoints:
            if ep.url in health:
                up.add_metric([ep.url], 1 if health[ep.url]["up"] else 0)
        yield up
        ok, _ = self.progress.check()
        yield GaugeMetricFamily("handwatch_healthy", "1 while the daemon can make progress (as /healthz)", value=int(ok))
