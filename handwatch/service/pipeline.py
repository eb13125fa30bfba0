"""One file, start to end: rule → pages → engine → cleaned text → Markdown; shared by `once`, `scan` and the daemon."""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from handwatch import log, metrics, safefs
from handwatch.config.rules import Resolved, RuleBook
from handwatch.config.schema import Config, Rule, RuleOverride
from handwatch.errors import ConfigError, InputError, NotReady
from handwatch.prepare import inputs, preprocess
from handwatch.publish import output, provenance
from handwatch.publish.index import SearchIndex
from handwatch.safefs import FileSig, file_sig
from handwatch.service.prefetch import Flow
from handwatch.store.state import Health, Ledger, StateDB, TextCache
from handwatch.transcribe import doubt
from handwatch.transcribe.engine import Engine, PageText


@dataclass(frozen=True)
class Outcome:
    source: Path  # where the original is now (it moves with `after: move`)
    output: Path
    reused: bool  # the text came from the cache: the same bytes were transcribed before
    needs_review: bool


@dataclass(frozen=True)
class Transcript:
    """A file's text, ready to publish: everything the slow part found out, nothing written yet."""

    path: Path
    sha: str
    sig: FileSig
    mode: int  # the original's permission bits: its Markdown gets no more
    resolved: Resolved
    result: dict
    reused: bool
    started: float
    tokens: int = 0  # spent on this transcription (0 when the text was reused)


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
                    from handwatch.transcribe.vlm import VLMEngine

                    on_health = self.health.set if self.health is not None else None
                    endpoints = [ep for ep in self.cfg.endpoints if endpoint in (None, ep.url)]
                    if not endpoints:
                        raise ConfigError(self.cfg.source, [f"endpoints: engine vlm needs {endpoint or 'at least one endpoint'}"])
                    self._built[key] = VLMEngine(endpoints, on_health)
                else:
                    from handwatch.transcribe.tesseract import TesseractEngine

                    self._built[key] = TesseractEngine()
            return self._built[key]


class PagePool(Protocol):
    """Runs a document's pages side by side: a ThreadPoolExecutor, or the daemon's DaemonPool."""

    def map(self, fn: Callable, items: Iterable) -> Iterable: ...


class Pipeline:
    def __init__(
        self,
        cfg: Config,
        db: StateDB,
        engines: Engines | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        page_pool: PagePool | None = None,
        flow: Flow | None = None,
    ):
        self.cfg = cfg
        self.rules = RuleBook(cfg)
        self.ledger = Ledger(db)
        self.texts = TextCache(db)
        self.index = SearchIndex(db)
        self.provenance = provenance.Provenance(db)
        self.engines = engines or Engines(cfg, Health(db))
        self.now = now
        self.page_pool = page_pool
        # Backpressure: pages decoded on a few preparer threads, and a bound on pages ahead of their reply.
        self.flow = flow or Flow(1 << 20)
        self._busy: dict[str, list] = {}  # content being transcribed: [lock, waiters]
        self._busy_lock = threading.Lock()
        self.log = log.get("pipeline")

    def rule_for(self, path: Path) -> Rule:
        return self.rules.resolve(path).rule

    def process(self, path: Path, sha: str | None = None, before: FileSig | None = None, override: dict | None = None) -> Outcome:
        return self.publish(self.transcribe(path, sha, before, override))

    def transcribe(
        self,
        path: Path,
        sha: str | None = None,
        before: FileSig | None = None,
        override: dict | None = None,
        decoding: Callable[[], AbstractContextManager] = nullcontext,
    ) -> Transcript:
        """The slow part: rule, pages, engine, cleaned text (or the cached text of the same bytes).
        `before` is the file version `sha` was taken from; if the file is not that version any more
        when the text is back, the text may be of other bytes, so it is thrown away (NotReady).
        `override`: a person's retry ({fresh, profile, endpoint}, see JobQueue.retry_with) on top of the rule.
        Every decode of the file's bytes runs inside `decoding()` (the daemon marks it, so a process
        death there is counted against the file and no other death is)."""
        started = time.monotonic()
        path = Path(os.path.abspath(path))
        resolved = self.rules.resolve(path)
        resolved, endpoint = _overridden(resolved, override or {})
        st = _stat(path)
        if st is None:
            raise InputError("file no longer exists")
        before = before or FileSig.of(st)
        sha = sha or safefs.sha256_file(path)
        fingerprint = resolved.rule.fingerprint() + (f" endpoint={endpoint}" if endpoint else "")
        fresh = (override or {}).get("fresh")
        cached = None if fresh else self.texts.get(sha, fingerprint)
        reused, tokens = cached is not None, 0
        if cached is None:
            # The same bytes at two paths, taken by two workers at once: the second waits and reuses.
            with self._same_bytes(sha + fingerprint):
                cached = None if fresh else self.texts.get(sha, fingerprint)
                reused = cached is not None
                if cached is None:
                    cached = self._transcribe(path, resolved.rule, endpoint, decoding)
                    tokens = cached.pop("tokens", 0)  # what this run cost, not part of the text kept for reuse
                    if file_sig(path) != before:
                        raise NotReady("file changed while it was being transcribed")
                    self.texts.put(sha, fingerprint, cached)
        return Transcript(path, sha, before, stat.S_IMODE(st.st_mode), resolved, cached, reused, started, tokens)

    @contextmanager
    def _same_bytes(self, key: str) -> Iterator[None]:
        """One transcription at a time per content and rule fingerprint."""
        with self._busy_lock:
            entry = self._busy.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._busy_lock:
                entry[1] -= 1
                if not entry[1]:
                    del self._busy[key]

    def publish(self, t: Transcript) -> Outcome:
        """The quick part: claim the Markdown name, write it, move the original if the rule says so."""
        rule, path = t.resolved.rule, t.path
        root = t.resolved.folder.path if t.resolved.folder else path.parent
        cached = t.result
        parts = provenance.parts(rule, self.cfg)
        trust = self._trust(cached, rule, parts)
        doc = output.Document(
            source=path,
            source_sha256=t.sha,
            pages=cached["pages"],
            profile=rule.profile,
            languages=tuple(rule.languages),
            engine=rule.engine,
            model=cached["model"],
            transcribed=self.now(),
            extra=cached.get("extra", {}),
            appendix=cached.get("appendix", ""),
            **trust,
        )
        target = output.claim_target(path, t.sha, rule.output, self.ledger)
        text = output.render(doc)
        written = output.write(target, text, self.ledger, path, t.sha, root=root, mode=t.mode)
        source = self._after(path, t.resolved, root)
        self.index.update(written, text, source)
        self._record(source, written, t.sha, doc, parts, cached)
        self.log.info(
            "file.transcribed",
            path=str(path),
            output=str(written),
            pages=len(doc.pages),
            reused=t.reused,
            needs_review=doc.needs_review,
            duration_ms=int((time.monotonic() - t.started) * 1000),
            tokens=t.tokens,
            engine=rule.engine,
            endpoint=doc.endpoint,
        )
        return Outcome(source, written, t.reused, doc.needs_review)

    @staticmethod
    def _trust(cached: dict, rule: Rule, parts: dict[str, str]) -> dict:
        """The Document fields that say how far to trust the text: review reasons (the engine's, then
        confidence's), confidence, uncertain words and their marks, and provenance. Doubt is judged from
        the stored word probabilities under the rule's current thresholds, so new thresholds need no model."""
        words = [
            None if w is None else [doubt.Word.from_json(x) for x in w]
            for w in cached.get("words", [None] * len(cached["pages"]))
        ]
        t = doubt.thresholds(rule.engine, rule.uncertain_below, rule.review_below, rule.review_uncertain_words)
        judged = doubt.assess(cached["pages"], words, t)
        reasons = tuple(cached["review_reasons"]) + tuple(judged.reasons)
        return {
            "needs_review": bool(reasons),
            "review_reasons": reasons,
            "confidence": judged.confidence,
            "uncertain_words": judged.uncertain_words,
            "marks": tuple(map(tuple, judged.marks)) if rule.mark_uncertain else (),
            "endpoint": cached.get("endpoint") or None,
            "fingerprint": provenance.fingerprint(parts),
        }

    def _record(self, source: Path, written: Path, sha: str, doc: output.Document, parts: dict, cached: dict) -> None:
        self.provenance.record(
            provenance.Record(
                source,
                written,
                sha,
                doc.fingerprint or "",
                parts,
                cached.get("asked_model", cached["model"]),
                doc.endpoint,
                doc.needs_review,
                doc.confidence,
                doc.uncertain_words,
            )
        )

    def _transcribe(
        self, path: Path, rule: Rule, endpoint: str | None = None, decoding: Callable[[], AbstractContextManager] = nullcontext
    ) -> dict:
        engine = self.engines.get(rule.engine, endpoint)
        opts = preprocess.for_engine(rule.preprocess, rule.engine)
        with decoding():
            refs = inputs.open_pages(
                path, opts.max_side or preprocess.ENGINE_SIZES["vlm"][0], opts.max_input_megapixels, rule.max_pages
            )

        encode = getattr(engine, "encode", None)  # a VLM sends JPEG: pages wait for a slot encoded
        flow = self.flow

        def prepared(ref: inputs.PageRef):
            with decoding(), flow.decoded.held():
                page = ref.load()
                assert page.image is not None  # load() decodes; only prepare() lets it go
                image = preprocess.prepare(page.image, opts, page.photo)
                page.image = None  # the decoded original is not needed once prepared
                ink = doubt.measure_ink(image)
                if ink.blank or encode is None:
                    return image, ink
                return encode(image, rule), ink

        def one(ref: inputs.PageRef) -> PageText:
            with flow.page():
                image, ink = flow.run(lambda: prepared(ref))
                if ink.blank:  # nothing to read: a model asked anyway tends to invent a page
                    return PageText("", "", ["blank page"])
                with flow.encoded.held() if encode else flow.decoded.held():  # Tesseract reads the pixels
                    result = engine.transcribe_page(image, rule)
                del image
            metrics.page_done(engine)
            result.review_reasons += doubt.page_reasons(result.text, ink, rule.languages, result.extra.get("detected_languages"))
            return result

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
        return {
            "pages": [r.text for r in results],
            "model": sent[0].model if sent else "",
            "review_reasons": reasons,
            "extra": extra,
            "appendix": appendix,
            "words": [None if r.words is None else [w.to_json() for w in r.words] for r in results],
            "endpoint": next((r.endpoint for r in sent if r.endpoint), ""),
            "tokens": sum(r.tokens for r in results),
            "asked_model": next((r.asked_model for r in sent if r.asked_model), sent[0].model if sent else ""),
        }

    def _after(self, path: Path, resolved: Resolved, root: Path) -> Path:
        """`after: move`: into the move folder, under a name nothing holds yet (`scan-1.png`, …), never
        over anything that is there, links included. The ledger follows the original first, so a new
        file at the old path is a new original with a Markdown of its own."""
        if resolved.move_to is None:
            return path
        try:
            with safefs.folder(root, path.parent, create=False) as sfd, safefs.folder(root, resolved.move_to) as dfd:
                current = path
                for n in range(1000):
                    name = path.name if n == 0 else f"{path.stem}-{n}{path.suffix}"
                    if safefs.lstat_at(dfd, name) is not None:
                        continue
                    dest = resolved.move_to / name
                    self.ledger.follow(current, dest)
                    current = dest
                    try:
                        safefs.rename_noreplace(path.name, name, sfd, dfd)
                    except FileExistsError:
                        continue
                    self.log.info("file.moved", path=str(path), to=str(dest))
                    return dest
                self.ledger.follow(current, path)
        except safefs.Unsafe as e:
            self.log.warning("file.not_moved", path=str(path), reason=e.strerror)
            return path
        self.log.warning("file.not_moved", path=str(path), reason="no free name in the move folder")
        return path


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _overridden(resolved: Resolved, override: dict) -> tuple[Resolved, str | None]:
    """The rule with a person's chosen profile; the endpoint they chose (None: any)."""
    if override.get("profile"):
        resolved = replace(resolved, rule=resolved.rule.merged(RuleOverride(profile=override["profile"])))
    return resolved, override.get("endpoint")
