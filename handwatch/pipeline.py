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

from handwatch import doubt, inputs, log, output, preprocess, provenance
from handwatch.config import Config, Rule, expand_path
from handwatch.engines import Engine, PageText
from handwatch.errors import ConfigError, NotReady
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

    def get(self, name: str) -> Engine:
        with self._lock:
            if name not in self._built:
                if name == "vlm":
                    from handwatch.engines.vlm import VLMEngine

                    on_health = (lambda url, up, reason: self.health.set(url, up, reason)) if self.health else None
                    if not self.cfg.endpoints:
                        raise ConfigError(self.cfg.source, ["endpoints: engine vlm needs at least one endpoint"])
                    self._built[name] = VLMEngine(list(self.cfg.endpoints), on_health)
                else:
                    from handwatch.engines.tesseract import TesseractEngine

                    self._built[name] = TesseractEngine()
            return self._built[name]


class Pipeline:
    def __init__(self, cfg: Config, db: StateDB, engines: Engines | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 page_pool: Executor | None = None, image_slots: threading.BoundedSemaphore | None = None):
        self.cfg = cfg
        self.rules = RuleBook(cfg)
        self.ledger = Ledger(db)
        self.texts = TextCache(db)
        self.provenance = provenance.Provenance(db)
        self.engines = engines or Engines(cfg, Health(db))
        self.now = now
        self.page_pool = page_pool
        # Backpressure: at most this many decoded pages in memory across all workers.
        self.image_slots = image_slots
        self.log = log.get("pipeline")

    def rule_for(self, path: Path) -> Rule:
        return self.rules.resolve(path).rule

    def process(self, path: Path, sha: str | None = None) -> Outcome:
        started = time.monotonic()
        path = Path(os.path.abspath(path))
        resolved = self.rules.resolve(path)
        rule = resolved.rule
        before = _stat(path)
        sha = sha or output.sha256_file(path)
        fingerprint = rule.fingerprint()
        cached = self.texts.get(sha, fingerprint)
        reused = cached is not None
        if cached is None:
            cached = self._transcribe(path, rule)
            if _stat(path) != before:
                raise NotReady("file changed while it was being transcribed")
            self.texts.put(sha, fingerprint, cached)
        parts = provenance.parts(rule, self.cfg)
        trust = self._trust(cached, rule, parts)
        doc = output.Document(
            source=path, source_sha256=sha, pages=cached["pages"], profile=rule.profile,
            languages=tuple(rule.languages), engine=rule.engine, model=cached["model"], transcribed=self.now(),
            extra=cached.get("extra", {}), appendix=cached.get("appendix", ""), **trust,
        )
        target = output.choose_target(path, rule.output, self.ledger)
        written = output.write(target, output.render(doc), self.ledger, path, sha)
        source = self._after(path, rule, resolved.folder.path if resolved.folder else path.parent)
        self._record(source, written, sha, doc, parts, cached)
        self.log.info("file.transcribed", path=str(path), output=str(written), pages=len(doc.pages), reused=reused,
                      needs_review=doc.needs_review, duration_ms=int((time.monotonic() - started) * 1000))
        return Outcome(source, written, reused, doc.needs_review)

    @staticmethod
    def _trust(cached: dict, rule: Rule, parts: dict[str, str]) -> dict:
        """The Document fields that say how far to trust the text: review reasons (the engine's, then
        confidence's), confidence, uncertain words and their marks, and provenance. Doubt is judged from
        the stored word probabilities under the rule's current thresholds, so new thresholds need no model."""
        words = [None if w is None else [doubt.Word.from_json(x) for x in w]
                 for w in cached.get("words", [None] * len(cached["pages"]))]
        t = doubt.thresholds(rule.engine, rule.uncertain_below, rule.review_below, rule.review_uncertain_words)
        judged = doubt.assess(cached["pages"], words, t)
        reasons = tuple(cached["review_reasons"]) + tuple(judged.reasons)
        return {"needs_review": bool(reasons), "review_reasons": reasons, "confidence": judged.confidence,
                "uncertain_words": judged.uncertain_words,
                "marks": tuple(map(tuple, judged.marks)) if rule.mark_uncertain else (),
                "endpoint": cached.get("endpoint") or None,
                "fingerprint": provenance.fingerprint(parts)}

    def _record(self, source: Path, written: Path, sha: str, doc: output.Document, parts: dict, cached: dict) -> None:
        self.provenance.record(provenance.Record(
            source, written, sha, doc.fingerprint or "", parts, cached.get("asked_model", cached["model"]),
            doc.endpoint, doc.needs_review, doc.confidence, doc.uncertain_words))

    def _transcribe(self, path: Path, rule: Rule) -> dict:
        engine = self.engines.get(rule.engine)
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
                ink = doubt.measure_ink(image)
                if ink.blank:  # nothing to read: a model asked anyway tends to invent a page
                    return PageText("", "", ["blank page"])
                result = engine.transcribe_page(image, rule)
                result.review_reasons += doubt.page_reasons(result.text, ink, rule.languages,
                                                            result.extra.get("detected_languages"))
                return result
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
        joined = "\n\n".join(r.text for r in results)
        if rule.translate_to and joined.strip():
            translation = engine.translate(joined, rule.translate_to)
            appendix = f"## Translation ({rule.translate_to})\n\n{translation}"
        sent = [r for r in results if r.model]  # blank pages were never sent
        return {"pages": [r.text for r in results], "model": sent[0].model if sent else "", "review_reasons": reasons,
                "extra": extra, "appendix": appendix,
                "words": [None if r.words is None else [w.to_json() for w in r.words] for r in results],
                "endpoint": next((r.endpoint for r in sent if r.endpoint), ""),
                "asked_model": next((r.asked_model for r in sent if r.asked_model), sent[0].model if sent else "")}

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
