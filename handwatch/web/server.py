"""Serve the review page with uvicorn: in the foreground (`handwatch web`) or on its own thread inside the daemon."""

from __future__ import annotations

import threading
from collections.abc import Callable

import uvicorn

from handwatch import log
from handwatch.config.schema import Config
from handwatch.config.web import Web
from handwatch.errors import HandwatchError
from handwatch.publish.index import SearchIndex
from handwatch.safefs import inside
from handwatch.store.state import StateDB
from handwatch.web.app import create_app
from handwatch.web.security import allowed_hosts, password_for

START_TIMEOUT_S = 30.0


class WebServer:
    """Building one checks the password (ConfigError when `web:` needs one it does not have): nothing listens then."""

    def __init__(self, cfg: Config, db: StateDB | None = None, beat: Callable[[], float | None] | None = None):
        self.cfg = cfg
        self.web = cfg.web or Web()
        password = password_for(self.web, cfg.source)
        self.db = db or StateDB(cfg.state_dir)
        self.app = create_app(cfg, self.db, password=password, hosts=allowed_hosts(self.web), beat=beat)
        host, port = self.web.address()
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host=host,
                port=port,
                log_config=None,
                access_log=False,
                lifespan="off",
                server_header=False,
                timeout_graceful_shutdown=5,
            )
        )
        self.log = log.get("web")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _refresh_loop(self) -> None:
        """Markdown a person edited in their own editor reaches the search index without a reindex."""
        index = SearchIndex(self.db)
        folders = [f.path for f in self.cfg.folders]
        while not self._stop.is_set():
            try:
                indexed, removed = index.refresh(lambda p: any(inside(p, f) for f in folders))
                if indexed or removed:
                    self.log.info("index.refreshed", indexed=indexed, removed=removed)
            except Exception as e:  # never let the refresher take the page down
                self.log.warning("index.refresh_failed", error=str(e))
            self._stop.wait(self.cfg.rescan_s)

    def _serve(self) -> None:
        threading.Thread(target=self._refresh_loop, name="web-index", daemon=True).start()
        try:
            self.server.run()
        except SystemExit:  # uvicorn exits when it cannot bind; `started` stays False and the caller reports it
            pass

    def run(self) -> None:
        """Foreground until Ctrl-C or SIGTERM (uvicorn handles both on the main thread)."""
        self.log.info("web.listening", url=self.web.base_url())
        self._serve()
        self._stop.set()
        if not self.server.started:
            raise HandwatchError(
                f"the review page cannot listen on {self.web.listen} (in use, or not an address of this machine)"
            )

    def start(self) -> None:
        """On its own thread, for the daemon: returns once it listens; raises if it cannot."""
        self._thread = threading.Thread(target=self._serve, name="web", daemon=True)
        self._thread.start()
        while not self.server.started and self._thread.is_alive():
            self._thread.join(0.05)
        if not self.server.started:
            self._stop.set()
            raise HandwatchError(
                f"the review page cannot listen on {self.web.listen} (in use, or not an address of this machine)"
            )
        self.log.info("web.listening", url=self.web.base_url())

    def stop(self) -> None:
        self._stop.set()
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(START_TIMEOUT_S)
