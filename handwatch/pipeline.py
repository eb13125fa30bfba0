"""One file, start to end: rule → pages → engine → cleaned text → Markdown; shared by `once`, `scan` and the daemon."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from handwatch import inputs, log, metrics, output, preprocess
from handwatch.config import Config, Rule, RuleOverride, expand_path
from handwatch.engines import Engine, PageText
from handwatch.errors import ConfigError, NotReady
from handwatch.index import SearchIndex
from handwatch.rules import RuleBook
from handwatch.state import Health, Ledger, StateDB, TextCache


@dataclass(frozen=True)
class Outcome:
    source: Path  # where the original is now (it moves with `after: move`)
    output: Path
    reused: bool  # the text came from the cache: the same bytes were transcribed before
    needs_review: bool


class Engines:
    """Engines are built on first use, so a tesseract-only setup never touches the network code."""

    def __init__(self, cfg: Config, health: Health | None = None):
        self.cfg = cfg
        self.health = health
        self._built: dict[str, Engine] = {}
        self._lock = threading.Lock()

    def get(self, name: str, endpoint: str | None = None) -> Engine:
        """`endpoint`: a VLM engine that uses only that configured endpoint (a person's retry asked for it)."""
        key = f"{name}@{endpoint}" if name == "vlm" and endpoint else name
        with self._lock:
            if key not in self._built:
                if name == "vlm":
                    from handwatch.engines.vlm import VLMEngine

                    on_health = (lambda url, up, reason: self.health.set(url, up, reason)) if self.health else None
                    endpoints = [ep for ep in self.cfg.endpoints if endpoint in (None, ep.url)]
                    if not endpoints:
                        raise ConfigError(self.cfg.source, [f"endpoints: engine vlm needs {endpoint or 'at least one endpoint'}"])
                    self._built[key] = VLMEngine(endpoints, on_health)
                else:
                    from handwatch.engines.tesseract import TesseractEngine

                    self._built[key] = TesseractEngine()
            return self._built[key]


class Pipeline:
    def __init__(self, cfg: Config, db: StateDB, engines: Engines | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 page_pool: Executor | None = None, image_slots: threading.BoundedSemaphore | None = None):
        self.cfg = cfg
        self.rules = RuleBook(cfg)
        self.ledger = Ledger(db)
        self.texts = TextCache(db)
        self.index = SearchIndex(db)
        self.engines = engines or Engines(cfg, Health(db))
        self.now = now
        self.page_pool = page_pool
        # Backpressure: at most this many decoded pages in memory across all workers.
        self.image_slots = image_slots
        self.log = log.get("pipeline")

    def rule_for(self, path: Path) -> Rule:
        return self.rules.resolve(path).rule

    def process(self, path: Path, sha: str | None = None, override: dict | None = None) -> Outcome:
        """`override`: a person's retry ({fresh, profile, endpoint}, see JobQueue.retry_with) on top of the rule."""
        started = time.monotonic()
        path = Path(os.path.abspath(path))
        resolved = self.rules.resolve(path)
        rule, endpoint = _overridden(resolved.rule, override or {})
        before = _stat(path)
        sha = sha or output.sha256_file(path)
        fingerprint = rule.fingerprint() + (f" endpoint={endpoint}" if endpoint else "")
        cached = None if (override or {}).get("fresh") else self.texts.get(sha, fingerprint)
        reused = cached is not None
        if cached is None:
            cached = self._transcribe(path, rule, endpoint)
            if _stat(path) != before:
                raise NotReady("file changed while it was being transcribed")
            self.texts.put(sha, fingerprint, cached)
        doc = output.Document(
            source=path, source_sha256=sha, pages=cached["pages"], profile=rule.profile,
            languages=tuple(rule.languages), engine=rule.engine, model=cached["model"], transcribed=self.now(),
            needs_review=bool(cached["review_reasons"]), review_reasons=tuple(cached["review_reasons"]),
            extra=cached.get("extra", {}), appendix=cached.get("appendix", ""),
        )
        target = output.choose_target(path, rule.output, self.ledger)
        text = output.render(doc)
        written = output.write(target, text, self.ledger, path, sha)
        self.index.update(written, text, path)
        source = self._after(path, rule, resolved.folder.path if resolved.folder else path.parent)
        self.log.info("file.transcribed", path=str(path), output=str(written), pages=len(doc.pages), reused=reused,
                      needs_review=doc.needs_review, duration_ms=int((time.monotonic() - started) * 1000))
        return Outcome(source, written, reused, doc.needs_review)

    def _transcribe(self, path: Path, rule: Rule, endpoint: str | None = None) -> dict:
        engine = self.engines.get(rule.engine, endpoint)
        opts = preprocess.for_engine(rule.preprocess, rule.engine)
        refs = inputs.open_pages(path, opts.max_side, opts.max_input_megapixels, rule.max_pages)

        def one(ref: inputs.PageRef) -> PageText:
            # Backpressure: a slot per decoded page, held until its request is answered.
            if self.image_slots:
                self.image_slots.acquire()
            try:
                page = ref.load()
                image = preprocess.prepare(page.image, opts, page.photo)
                page.image = None  # the decoded original is not needed once prepared
                text = engine.transcribe_page(image, rule)
                metrics.page_done(engine)
                return text
            finally:
                if self.image_slots:
                    self.image_slots.release()

        if self.page_pool is not None and len(refs) > 1:
            results = list(self.page_pool.map(one, refs))
        else:
            results = [one(r) for r in refs]
        reasons: list[str] = []
        for i, r in enumerate(results, 1):
            reasons += [f"page {i}: {x}" if len(results) > 1 else x for x in r.review_reasons]
        extra: dict = {}
        for r in results:  # the first page names the recipe; languages are those of any page
            for k, v in r.extra.items():
                if isinstance(v, list) and isinstance(extra.get(k), list):
                    extra[k] = list(dict.fromkeys(extra[k] + v))
                else:
                    extra.setdefault(k, v)
        appendix = ""
        if rule.translate_to:
            joined = "\n\n".join(r.text for r in results)
            translation = engine.translate(joined, rule.translate_to)
            appendix = f"## Translation ({rule.translate_to})\n\n{translation}"
        return {"pages": [r.text for r in results], "model": results[0].model, "review_reasons": reasons,
                "extra": extra, "appendix": appendix}

    def _after(self, path: Path, rule: Rule, root: Path) -> Path:
        if isinstance(rule.after, str):
            return path
        dest_dir = expand_path(rule.after.move, root)
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / path.name
        n = 1
        while dest.exists():
            dest = dest_dir / f"{path.stem}-{n}{path.suffix}"
            n += 1
        os.rename(path, dest)
        self.log.info("file.moved", path=str(path), to=str(dest))
        return dest


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_size, st.st_mtime_ns)


def _overridden(rule: Rule, override: dict) -> tuple[Rule, str | None]:
    """The rule with a person's chosen profile; the endpoint they chose (None: any)."""
    if override.get("profile"):
        rule = rule.merged(RuleOverride(profile=override["profile"]))
    return rule, override.get("endpoint")
