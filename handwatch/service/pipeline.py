"""One file, start to end, shared by `once`, `scan` and the daemon's workers. `Pipeline` reads as the stages in order:

1. rule     which rule applies (defaults ◀ folder ◀ rule files; a person's retry on top)   config.rules
2. pages    the file's pages, opened lazily (format, pixel and page limits)               prepare.inputs
3. gate     a document? what kind? a local look at a preview, then one small request       transcribe.gate
4. prepare  decode, straighten, even the light, size for the model                       prepare.preprocess
5. check    is anything on the page? a page the ink measure calls blank is asked about     transcribe.doubt
6. engine   the model (or Tesseract) reads each page                                      transcribe.engine
7. doubt    which words and pages to doubt, under the rule's thresholds                   transcribe.doubt
8. publish  one call: claim the name, write the Markdown, move the original, index, record  publish.publisher

Stages 1-6 are `transcribe` (slow: the text of the same bytes under the same rule is reused), 7-8 `publish`
(quick, and run by the worker that records the job's outcome). A file the gate judges not a document, or
whose every page is blank, raises NotADocument: the worker records it as skipped."""

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
from handwatch.errors import EngineUnavailable, InputError, NotADocument, NotReady
from handwatch.prepare import inputs, preprocess
from handwatch.prepare.formats import camera_photo
from handwatch.publish import markdown, provenance
from handwatch.publish.publisher import Publisher
from handwatch.safefs import FileSig, file_sig
from handwatch.service import second
from handwatch.service.engines import Engines
from handwatch.service.prefetch import KEEP_SIDE, Flow, Kept
from handwatch.store.state import Health, StateDB, TextCache
from handwatch.transcribe import doubt, gate
from handwatch.transcribe.engine import BLANK, Engine, PageText, is_blank, joined


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
        self.texts = TextCache(db)
        self.publisher = Publisher(db)
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
        """A file start to end, now (`once`): the first reading published, then its second opinion if the rule
        asks for one (a second endpoint that is down leaves the first reading, as the daemon would)."""
        t = self.transcribe(path, sha, before, override)
        if not self.wants_second(t):
            return self.publish(t)
        self.publish(t, final=False)
        try:
            t = self.transcribe(path, t.sha, t.sig, {**(override or {}), "second": True})
        except EngineUnavailable as e:
            self.log.warning("second.unavailable", path=str(path), reason=str(e))  # the first reading is the last
        return self.publish(t)

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
        resolved, endpoint = _overridden(self.rules.resolve(path), override or {})  # 1. rule
        st = _stat(path)
        if st is None:
            raise InputError("file no longer exists")
        before = before or FileSig.of(st)
        sha = sha or safefs.sha256_file(path)
        fingerprint = resolved.rule.fingerprint() + (f" endpoint={endpoint}" if endpoint else "")
        fresh, anyway = (override or {}).get("fresh"), bool((override or {}).get("anyway"))
        cached = None if fresh else self.texts.get(sha, fingerprint)
        reused, tokens = cached is not None, 0
        if cached is not None and not cached.get("gated") and self._needs_gate(path, resolved.rule, anyway):
            # Text read before this file was checked (an earlier handwatch, or the kind not wanted then): the
            # text stays, the check and the kind are made now.
            kind = self._gate(path, resolved.rule, endpoint, decoding, anyway)
            cached = {**cached, "gated": True, "kind": kind.kind or ""}
            tokens = kind.tokens
            self.texts.put(sha, fingerprint, cached)
        if cached is None:
            # The same bytes at two paths, taken by two workers at once: the second waits and reuses.
            with self._same_bytes(sha + fingerprint):
                cached = None if fresh else self.texts.get(sha, fingerprint)
                reused = cached is not None
                if cached is None:
                    cached = self._read(path, resolved.rule, endpoint, decoding, anyway)  # 2-6
                    tokens = cached.pop("tokens", 0)  # what this run cost, not part of the text kept for reuse
                    if file_sig(path) != before:
                        raise NotReady("file changed while it was being transcribed")
                    self.texts.put(sha, fingerprint, cached)
        if resolved.rule.second_opinion is not None and cached.get("pages"):  # 6b. the second opinion
            cached = self._second(
                path, sha, before, fingerprint, resolved.rule, cached, reused and (override or {}).get("second"), decoding
            )
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

    def _second(self, path, sha, before, fingerprint, rule: Rule, first: dict, now, decoding) -> dict:
        """The first reading `first` with its second opinion, when one is stored for exactly this first reading
        under this rule's second opinion (a key of its own: another rule's, or none, never sees it); made `now`
        (the job's second pass, with the first reading published from the cache) when not. Else `first`."""
        key = fingerprint + second.key(rule)
        stored = self.texts.get(sha, key)
        if second.made_from(stored, first):
            return stored  # type: ignore[return-value]
        if not now or not self._wants_second(first, rule):
            return first
        with self._same_bytes(sha + key):
            stored = self.texts.get(sha, key)
            if second.made_from(stored, first):
                return stored  # type: ignore[return-value]
            combined = second.read(self, path, rule, first, decoding)
            if file_sig(path) != before:
                raise NotReady("file changed while it was being read a second time")
            self.texts.put(sha, key, combined)
            return combined

    def settle_original(self, t: Transcript) -> Path:
        """A refinement that is not written (a person's edit stands): the original still goes where `after: move`
        says, as it would have with the reading. Where it is now."""
        return self.publisher.move_original(t.path, t.resolved.root(t.path), t.resolved.move_to)

    def wants_second(self, t: Transcript) -> bool:
        return self._wants_second(t.result, t.resolved.rule)

    def _wants_second(self, result: dict, rule: Rule) -> bool:
        """The rule asks for a second opinion from an endpoint that did not make the first reading, and this text
        has pages in doubt that had none yet."""
        engine = self.engines.second(rule)
        if engine is None or not second.due(result, rule):
            return False
        return result.get("endpoint") != engine.clients[0].ep.label()  # the same reader twice settles nothing

    def publish(self, t: Transcript, final: bool = True) -> Outcome:
        """The quick part: judge the doubt (7) and publish (8): claim, write, move the original, index, record.
        `final`: False for a first reading a second opinion will refine: the original is moved (`after: move`)
        only with the last one."""
        rule, path = t.resolved.rule, t.path
        parts = provenance.parts(rule, self.cfg) | ({provenance.GATE: "on"} if t.result.get("gated") else {})
        doc = markdown.Document(  # 7. doubt: how far to trust the text, under the rule's current thresholds
            source=path,
            source_sha256=t.sha,
            pages=t.result["pages"],
            profile=t.result.get("profile") or rule.profile,
            languages=tuple(rule.languages),
            engine=rule.engine,
            model=t.result["model"],
            second_model=(t.result.get("second") or {}).get("model") or None,
            transcribed=self.now(),
            extra=t.result.get("extra", {}),
            appendix=t.result.get("appendix", ""),
            kind=t.result.get("kind") or None,
            **self._trust(t.result, rule, parts),
        )
        root = t.resolved.root(path)
        asked = t.result.get("asked_model", t.result["model"])
        move_to = t.resolved.move_to if final else None
        placed = self.publisher.publish(doc, rule.output, root, t.mode, move_to, parts, asked)  # 8. publish
        self.log.info(
            "file.transcribed",
            path=str(path),
            output=str(placed.output),
            pages=len(doc.pages),
            reused=t.reused,
            needs_review=doc.needs_review,
            duration_ms=int((time.monotonic() - t.started) * 1000),
            tokens=t.tokens,
            engine=rule.engine,
            endpoint=doc.endpoint,
        )
        return Outcome(placed.source, placed.output, t.reused, doc.needs_review)

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
            "other_readings": tuple(
                {"page": i + 1, "word": cached["pages"][i][w.start : w.end], "other": w.other}
                for i, page in enumerate(words)
                for w in page or ()
                if w.other is not None
            ),
            "endpoint": cached.get("endpoint") or None,
            "fingerprint": provenance.fingerprint(parts),
        }

    def _read(
        self, path: Path, rule: Rule, endpoint: str | None, decoding: Callable[[], AbstractContextManager], anyway: bool = False
    ) -> dict:
        """Stages 2-6 for every page, side by side where the daemon gives a pool; then the pages joined."""
        engine = self.engines.for_rule(rule, endpoint)
        opts = preprocess.for_engine(rule.preprocess, rule.engine)
        refs = self.open_pages(path, opts, rule, decoding)  # 2. pages
        gating = gate.skippable(rule.documents_only, refs, anyway)
        # The first page, when the check has to decode it anyway (and it is no larger than a VLM's).
        kept = Kept(self.flow, (opts.max_side or 0) <= KEEP_SIDE)
        try:
            return self._pages(refs, rule, engine, opts, decoding, gating, anyway, kept)
        finally:
            kept.take()  # not a document, or a failure: the pixels go

    def _pages(self, refs, rule: Rule, engine: Engine, opts, decoding, gating: bool, anyway: bool, kept: Kept) -> dict:
        kind = self._look(refs[0], rule, engine, decoding, gating, kept)  # 3. gate
        asked = rule.profile
        if rule.profile == "auto":
            rule = rule.model_copy(update={"profile": gate.profile_for(kind.kind, kind.language, rule.languages)})
        encode = getattr(engine, "encode", None)  # a VLM sends JPEG: pages wait for a slot encoded
        flow = self.flow
        # The person said "transcribe it", or the model already called this one-page file a document: no more questions.
        said_document = anyway or (kind.kind is not None and not kind.skips and len(refs) == 1)
        spent = [kind.tokens]

        def one(ref: inputs.PageRef) -> PageText:
            with flow.page():
                first = ref is refs[0]
                image, ink = flow.run(
                    lambda: self._prepare(ref, opts, rule, encode, decoding, kept.take() if first else None)
                )  # 4.
                if ink.blank:  # 5. check: the ink measure alone never drops a page; the model (or Tesseract) agrees
                    with metrics.cpu("gate", ref.kind):
                        if not said_document and gate.agrees_blank(image, engine, spent):
                            return PageText("", "", [BLANK])
                    if encode is not None:
                        with metrics.cpu("encode", ref.kind):
                            image = encode(image, rule)
                with flow.encoded.held() if encode else flow.decoded.held(), metrics.cpu("request", ref.kind):
                    result = engine.transcribe_page(image, rule)  # 6. engine (Tesseract reads the pixels)
                del image
            metrics.page_done(engine)
            if ink.blank and engine.name != "vlm" and not result.words:
                return PageText("", "", [BLANK])  # Tesseract found nothing on a page with no ink either
            result.review_reasons += doubt.page_reasons(result.text, ink, rule.languages, result.extra.get("detected_languages"))
            return result

        if self.page_pool is not None and len(refs) > 1:
            results = list(self.page_pool.map(one, refs))
        else:
            results = [one(r) for r in refs]
        if not anyway and all(is_blank(r) for r in results):
            raise NotADocument("blank", "blank: every page is blank" if len(results) > 1 else "not a document (blank)")
        if (
            gating
            and engine.name != "vlm"
            and not gate.tesseract_found_text([r.words for r in results], [r.text for r in results])
        ):
            raise NotADocument("photo", "not a document (photo: Tesseract found no words on it)")
        text = joined(results, rule, engine)
        text["tokens"] += sum(spent)
        # gated: the check had its say (or a person overruled it): `redo` need not look at this file again for it.
        text.update(gated=gating or kind.asked or anyway, kind=kind.kind or "", profile=rule.profile if asked == "auto" else "")
        return text

    @staticmethod
    def open_pages(path: Path, opts, rule: Rule, decoding: Callable[[], AbstractContextManager]) -> list:
        """Stage 2: the file's pages at the size `opts` prepares them to (the first reading's, or a second's)."""
        with decoding():
            return inputs.open_pages(
                path, opts.max_side or preprocess.ENGINE_SIZES["vlm"][0], opts.max_input_megapixels, rule.max_pages
            )

    def _needs_gate(self, path: Path, rule: Rule, anyway: bool) -> bool:
        """Would the gate have anything to decide for this file (the check is on, or the kind is wanted)?"""
        return (gate.applies(rule.documents_only, camera_photo(path)) and not anyway) or (
            rule.engine == "vlm" and gate.wants_kind(rule.profile, rule.output)
        )

    def _gate(
        self, path: Path, rule: Rule, endpoint: str | None, decoding: Callable[[], AbstractContextManager], anyway: bool
    ) -> gate.Kind:
        """Stage 3 alone, for a file whose text is already known."""
        engine = self.engines.for_rule(rule, endpoint)
        with decoding():
            refs = inputs.open_pages(path, gate.LOOK_SIDE, rule.preprocess.max_input_megapixels, rule.max_pages)
        return self._look(refs[0], rule, engine, decoding, gate.skippable(rule.documents_only, refs, anyway))

    def _look(
        self,
        ref: inputs.PageRef,
        rule: Rule,
        engine: Engine,
        decoding: Callable[[], AbstractContextManager],
        gating: bool,
        kept: Kept | None = None,
    ) -> gate.Kind:
        """Stage 3: a document? what kind? The local look at the first page's preview may only skip an image
        with nothing on it; anything else is the model's call (one small request). Raises NotADocument.
        With `kept`, a page that has no thumbnail to show is decoded once, at the page's size: the look gets a
        reduced copy and `kept` the page, for its preparation. A 12 MP JPEG's preview alone (1/8 scale) costs
        43 ms and its page (3/8) 68 ms: a document saves 43 ms, a photo the check skips spends 25 ms more. HEVC
        has no reduced decode: a HEIC document without a thumbnail saves ~1.3 s, and its photo costs the same."""
        wanted = engine.name == "vlm" and gate.wants_kind(rule.profile, rule.output)
        if not gating and not wanted:
            return gate.Kind(None, why="not asked")

        def load() -> inputs.Page:
            with decoding(), self.flow.decoded.held():
                with metrics.cpu("gate", ref.kind):
                    # Whether it is a document at all shows on a camera's 160 px EXIF thumbnail; which kind needs more.
                    carried = ref.carried(gate.LOOK_SIDE, gate.LEAST_SIDE, None if wanted else gate.EXIF_LEAST)
                    if carried is not None:
                        return carried
                    if kept is None or not kept.reserve():
                        return replace(ref, max_side=gate.LOOK_SIDE).load()  # a preview decode of its own
                with metrics.cpu("decode", ref.kind):
                    page = ref.load()
                kept.put(page)
                with metrics.cpu("gate", ref.kind):
                    return page.reduced(gate.LOOK_SIDE)

        with self.flow.page():  # decoded on a preparer thread, within the bound on pages in memory, as pages are
            page = self.flow.run(load)
        with metrics.cpu("gate", ref.kind):
            return gate.judge(page, engine, gating, str(ref.path))

    def _prepare(
        self,
        ref: inputs.PageRef,
        opts,
        rule: Rule,
        encode: Callable | None,
        decoding: Callable[[], AbstractContextManager],
        decoded: inputs.Page | None = None,
    ):
        """Stage 4 and the measure stage 5 needs: the page decoded (unless the check already did: `decoded`),
        prepared and measured for ink; encoded for the server unless it is blank (or the engine reads pixels).
        Runs on the flow's preparer threads."""
        kind = ref.kind
        with decoding(), self.flow.decoded.held():
            with metrics.cpu("decode", kind):
                page = decoded or ref.load()
            assert page.image is not None  # load() decodes; only prepare() lets it go
            with metrics.cpu("prepare", kind):
                image, prepared = preprocess.prepare_page(page.image, opts, page.photo)
            page.image = None  # the decoded original is not needed once prepared
            with metrics.cpu("ink", kind):
                ink = doubt.measure_ink(prepared)
            if ink.blank or encode is None:
                return image, ink
            with metrics.cpu("encode", kind):
                return encode(image, rule), ink


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
