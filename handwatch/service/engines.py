"""The engines a pipeline reads with, built on first use: a tesseract-only setup never touches the network code."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from handwatch.config import routing
from handwatch.config.schema import Config, Rule
from handwatch.errors import ConfigError
from handwatch.service import prefetch
from handwatch.store.state import Health
from handwatch.transcribe.engine import Engine

if TYPE_CHECKING:
    from handwatch.transcribe.vlm import Slots, VLMEngine


class Engines:
    """Engines are built on first use, so a tesseract-only setup never touches the network code. Every VLM engine
    (one per route: the endpoints a rule names, a second opinion's, a person's chosen one) shares one client per
    endpoint, so an endpoint's `max_concurrency` holds across all folders."""

    def __init__(self, cfg: Config, health: Health | None = None):
        self.cfg = cfg
        self.health = health
        self._built: dict[tuple, Engine] = {}
        self._slots: Slots | None = None
        self._lock = threading.Lock()

    def get(self, name: str, endpoint: str | None = None, route: tuple[int, ...] | None = None, ordered: bool = False) -> Any:
        """`endpoint`: only that configured endpoint's URL (a person's retry asked for it); `route`: only these
        endpoints (indexes into the config's), `ordered` in that order of preference."""
        if name == "vlm" and endpoint:
            route, ordered = tuple(i for i, ep in enumerate(self.cfg.endpoints) if ep.url == endpoint), False
        key = (name, route, ordered) if name == "vlm" else (name,)
        with self._lock:
            if key not in self._built:
                if name == "vlm":
                    from handwatch.transcribe.vlm import Slots, VLMEngine

                    if route == () or not self.cfg.endpoints:
                        raise ConfigError(self.cfg.source, [f"endpoints: engine vlm needs {endpoint or 'at least one endpoint'}"])
                    if self._slots is None:
                        self._slots = Slots(self.cfg.endpoints, self.health.set if self.health is not None else None)
                    engine = VLMEngine(self.cfg.endpoints, slots=self._slots, route=route, ordered=ordered)
                    slots = sum(c.ep.max_concurrency for c in engine.clients)
                    engine.room = slots + prefetch.depth(slots)  # as many as all workers when one route has every slot
                    self._built[key] = engine
                else:
                    from handwatch.transcribe.tesseract import TesseractEngine

                    self._built[key] = TesseractEngine()
            return self._built[key]

    def for_rule(self, rule: Rule, endpoint: str | None = None) -> Engine:
        """The engine of a rule's first reading: on the endpoints it names (or every one but its second opinion's)."""
        if rule.engine != "vlm" or endpoint:
            return self.get(rule.engine, endpoint)
        route = routing.first_route(rule, self.cfg.endpoints)
        every = not rule.endpoint and len(route) == len(self.cfg.endpoints)  # the same engine as before routes existed
        return self.get("vlm", None, None if every else route, bool(rule.endpoint))

    def of_job(self, rule: Rule, override: dict | None) -> Any:
        """The engine whose endpoints a job will wait for: its second opinion's on the second pass, else its rule's
        (a person's chosen endpoint included)."""
        override = override or {}
        if override.get("second"):
            return self.second(rule)
        return self.for_rule(rule, override.get("endpoint"))

    def second(self, rule: Rule) -> VLMEngine | None:
        """The engine of the rule's second opinion (None: the rule has none)."""
        route = routing.second_route(rule, self.cfg.endpoints)
        return self.get("vlm", None, route) if route else None
