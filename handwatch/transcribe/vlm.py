"""The VLM engine: OpenAI-compatible chat completions to one or more local servers, with validated, retried replies."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from PIL import Image

from handwatch import log
from handwatch.config.endpoint import Endpoint
from handwatch.config.schema import Rule
from handwatch.errors import ConfigError, EngineResponseError, EngineUnavailable
from handwatch.prepare.pixels import fit
from handwatch.prepare.preprocess import encode_jpeg
from handwatch.transcribe import dialect, doubt, profiles
from handwatch.transcribe.client import BACKOFF_START_S, EndpointClient, Reply, backoff, image_messages
from handwatch.transcribe.engine import EncodedPage, PageText
from handwatch.transcribe.http import ContextTooLong, FileRejected, ServerFailed

__all__ = ["ContextTooLong", "EndpointClient", "FileRejected", "Reply", "Slots", "VLMEngine", "backoff", "image_messages"]


def _jpeg(image: Image.Image | EncodedPage, quality: int) -> bytes:
    return image.jpeg if isinstance(image, EncodedPage) else encode_jpeg(image, quality)


def _page(text: str, reply: Reply | None, reasons: list[str], extra: dict | None = None) -> PageText:
    if reply is None:
        return PageText(text, "", reasons, extra or {})
    return PageText(text, reply.model, reasons, extra or {}, reply.words(text), reply.endpoint, reply.asked, reply.usage)


class Slots:
    """The configured endpoints' clients, once per daemon: every engine (a folder's route, a second opinion, a
    person's retry on one endpoint) counts its requests in flight and the endpoints' health here."""

    def __init__(
        self,
        endpoints: list[Endpoint],
        on_health: Callable[[str, bool, str | None], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.clients = [EndpointClient(ep, clock) for ep in endpoints]
        self.on_health = on_health or (lambda url, up, reason: None)
        self.cond = threading.Condition()


class VLMEngine:
    name = "vlm"

    def __init__(
        self,
        endpoints: list[Endpoint],
        on_health: Callable[[str, bool, str | None], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        slots: Slots | None = None,
        route: tuple[int, ...] | None = None,
        ordered: bool = False,
    ):
        """`slots`: the endpoints' clients shared with every other engine of the daemon (one in-flight count and
        one health per endpoint, whichever folder's pages it serves); `route`: the indexes of `endpoints` this
        engine may use; `ordered`: take the first of them with a free slot (a rule's order of preference), not
        the least busy."""
        if not endpoints:
            raise ConfigError("handwatch", ["endpoints: engine vlm needs at least one endpoint"])
        self.slots = slots or Slots(endpoints, on_health, clock)
        self.clients = [self.slots.clients[i] for i in (route if route is not None else range(len(endpoints)))]
        if not self.clients:
            raise ConfigError("handwatch", ["endpoints: engine vlm needs at least one endpoint"])
        self.ordered = ordered
        self.room: int | None = None  # jobs this engine's route may hold at once (None: no bound; see admit)
        self.jobs = 0
        self.clock = clock
        self._cond = self.slots.cond
        self._answered = threading.local()
        self.schema_refused = False  # a server refused the classification's JSON schema: ask it plainly from then on
        self.log = log.get("vlm")

    def answered_by(self) -> str:
        """The endpoint that answered this thread's last request (for the pages-per-endpoint metric)."""
        return getattr(self._answered, "url", "unknown")

    # --- choosing an endpoint ------------------------------------------------------------------

    def admit(self) -> bool:
        """Take one of the route's places for a job, or say there is none: a worker waiting here for a busy
        endpoint is a worker another route's free endpoint cannot use, so a route holds at most `room` jobs."""
        with self._cond:
            if self.room is not None and self.jobs >= self.room:
                return False
            self.jobs += 1
            return True

    def leave(self) -> None:
        with self._cond:
            self.jobs -= 1

    def retry_after(self) -> float:
        now = self.clock()
        waits = [c.down_until - now for c in self.clients]
        return max(0.5, min(waits)) if waits else BACKOFF_START_S

    def _acquire(self, structured: bool = False) -> EndpointClient:
        """The up endpoint with the most room relative to its max_concurrency (or, `ordered`, the first up one with
        room); wait while all are busy."""
        with self._cond:
            while True:
                now = self.clock()
                up = [c for c in self.clients if c.down_until <= now and (c.ep.structured_output or not structured)]
                if not up:
                    reasons = "; ".join(c.down_reason or c.url for c in self.clients)
                    raise EngineUnavailable(f"every endpoint is down: {reasons}")
                free = [c for c in up if c.in_flight < c.ep.max_concurrency]
                if free:
                    best = free[0] if self.ordered else min(free, key=lambda c: c.in_flight / c.ep.max_concurrency)
                    best.in_flight += 1
                    return best
                self._cond.wait(timeout=1.0)

    def _release(self, c: EndpointClient, error: EngineUnavailable | None) -> None:
        with self._cond:
            c.in_flight -= 1
            now = self.clock()
            if error is not None:
                if c.down_until <= now:  # a burst of failures from one outage counts once, not N times
                    c.failures += 1
                wait = getattr(error, "retry_after", None)
                c.down_until = now + (wait if wait is not None else backoff(c.failures))
                c.down_reason = str(error)
            elif c.failures or c.down_reason:
                c.failures, c.down_reason = 0, None
            self._cond.notify_all()
            health = (error is None, str(error) if error else None)
            changed = health != c.reported
            c.reported = health
        if error is not None:
            self.log.warning("endpoint.down", url=c.url, reason=str(error), retry_in_s=round(c.down_until - self.clock(), 1))
        if changed:  # one database write per change of health, not one per request
            self.slots.on_health(c.url, *health)

    def call(
        self,
        messages: list[dict],
        max_tokens: int | None = None,
        temperature: float = 0.0,
        response_format: dict | None = None,
        confidence: bool = False,
        think: bool | None = None,
    ) -> Reply:
        """One request, moved to another endpoint if the chosen one turns out to be down.

        HTTP 5xx or no answer in time is either the server's fault or this request's: the server is
        probed with a tiny picture, and if it answers that, the failure is the file's (FileRejected,
        counted against the file) and the endpoint stays up for everyone else."""
        last: EngineUnavailable | None = None
        for _ in range(len(self.clients)):
            try:
                c = self._acquire(structured=response_format is not None)
            except EngineUnavailable as e:  # it names each endpoint's reason: the file's waiting reason shows it
                raise last or e from None
            try:
                reply = c.chat(messages, max_tokens or c.ep.max_tokens, temperature, response_format, confidence, think=think)
            except ServerFailed as e:
                if c.probe():
                    self._release(c, None)
                    raise FileRejected(str(e)) from None
                down = EngineUnavailable(f"{e} (and a test picture failed too)", c.url)
                self._release(c, down)
                last = down
                continue
            except EngineUnavailable as e:
                self._release(c, e)
                last = e
                continue
            except BaseException:
                self._release(c, None)
                raise
            self._release(c, None)
            self._answered.url = c.url
            return reply
        raise last or EngineUnavailable("every endpoint is down")

    def max_tokens(self) -> int:
        return max(c.ep.max_tokens for c in self.clients)

    # --- transcribing ----------------------------------------------------------------------------

    def encode(self, image: Image.Image, rule: Rule) -> EncodedPage:
        """The page as it is sent: done ahead of a free request slot, so the slot never waits for it."""
        return EncodedPage(encode_jpeg(image, rule.preprocess.jpeg_quality), image.size)

    def transcribe_page(self, image: Image.Image | EncodedPage, rule: Rule) -> PageText:
        """The profile decides the route: recipes try structured JSON first; every route ends in
        validated Markdown, flagged for review when it could not be made trustworthy."""
        fallback: str | None = None
        if rule.profile == "recipe" and any(c.ep.structured_output for c in self.clients):
            page, fallback = self._recipe_json(image, rule)
            if page is not None:
                return page
        page = self._markdown(image, rule)
        if rule.profile == "recipe":
            page.extra = {"title": profiles.markdown_title(page.text) or "", "tags": ["recipe"]}
            if fallback:
                page.review_reasons.insert(0, fallback)
        elif rule.profile == "multilingual":
            text, langs = profiles.split_languages(page.text)
            if page.words is not None:
                page.words = doubt.transfer(page.words, page.text, text)
            page.text, page.extra = text, {"detected_languages": langs}
        return page

    def _recipe_json(self, image: Image.Image | EncodedPage, rule: Rule) -> tuple[PageText | None, str | None]:
        prompt = profiles.prompt_for("recipe", rule.languages, rule.prompt, structured=True)
        jpeg = _jpeg(image, rule.preprocess.jpeg_quality)
        try:
            reply = self.call(image_messages(prompt, jpeg), self.max_tokens(), 0.0, profiles.RECIPE_FORMAT, confidence=True)
        except EngineUnavailable:
            raise
        except EngineResponseError as e:
            self.log.info("reply.fallback", profile="recipe", reason=str(e))
            return None, f"structured output rejected by the server ({e}); used the Markdown recipe prompt"
        recipe, why = profiles.parse_recipe(reply.content)
        if recipe is None:
            self.log.info("reply.fallback", profile="recipe", reason=why)
            return None, f"recipe JSON did not validate: {why}; used the Markdown recipe prompt"
        text = profiles.render_recipe(recipe)
        return _page(text, reply, [], {"title": recipe.title, "tags": ["recipe"]}), None

    def _markdown(self, image: Image.Image | EncodedPage, rule: Rule) -> PageText:
        """Ask, judge the reply, and retry with a remedy fitted to what went wrong; when retries run
        out the best text is kept and flagged for review, never silently written as if it were fine."""
        base_prompt = profiles.prompt_for(rule.profile, rule.languages, rule.prompt)
        quality = rule.preprocess.jpeg_quality
        jpeg = _jpeg(image, quality)
        max_tokens, temperature, strict, think = self.max_tokens(), 0.0, False, None
        seen: list[str] = []
        best, grown, shrunk, thought = "", False, False, False
        best_reply: Reply | None = None
        reply: Reply | None = None
        for _attempt in range(4):
            prompt = base_prompt + (profiles.STRICT_SUFFIX if strict else "")
            try:
                reply = self.call(image_messages(prompt, jpeg), max_tokens, temperature, confidence=True, think=think)
            except ContextTooLong as e:
                if grown and best:  # a larger budget than the context holds: the cut-off reply stands
                    seen.append("context: a longer reply does not fit the server's context")
                    break
                if shrunk:
                    advice = getattr(e, "advice", "")
                    raise ContextTooLong(f"{e}; {advice}" if advice else str(e), e.overflow) from None
                shrunk = True
                seen.append("context: image too large for the model's context; sent smaller")
                if isinstance(image, EncodedPage):
                    image = image.image()
                image = fit(image, max(256, int(max(image.size) * 0.6)))
                jpeg = encode_jpeg(image, quality)
                self.log.info("reply.retry", problem="context", detail=str(e))
                continue
            seen.extend(reply.warnings)
            if dialect.only_thinking(reply.content, reply.finish_reason, reply.reasoning, reply.thinking_opened):
                seen.append("thinking: the reply was only the model's thinking, no transcription")
                self.log.info("reply.retry", problem="thinking", detail=reply.finish_reason)
                if best:  # an earlier reply was a real (cut-off) reading: it stands, flagged
                    break
                if reply.can_stop_thinking and not thought:
                    thought, think = True, False
                    continue
                return PageText("", reply.model, list(dict.fromkeys(seen)), {}, None, reply.endpoint, reply.asked, reply.usage)
            text = profiles.clean(reply.content)
            verdict = profiles.judge(text, reply.finish_reason)
            if verdict.ok:
                return _page(text, reply, [s for s in dict.fromkeys(seen) if s.startswith("context") or s in reply.warnings])
            seen.append(f"{verdict.problem}: {verdict.detail}")
            self.log.info("reply.retry", problem=verdict.problem, detail=verdict.detail)
            if text and verdict.problem in ("truncated", "loop"):
                best, best_reply = text, reply  # a real attempt at the page; narration and refusals never become the text
            if verdict.problem == "narration":
                strict = True
            elif verdict.problem == "refusal" and sum(s.startswith("refusal") for s in seen) >= 2:
                break
            elif verdict.problem == "truncated":
                if grown or reply.capped:  # capped: the server's context leaves no more room for a reply
                    break
                max_tokens, grown = max(max_tokens, reply.budget) * 2, True
            elif verdict.problem == "loop":
                temperature = min(0.8, temperature + 0.2)
        if profiles.repetition(best):
            best = profiles.cut_loop(best)
            seen.append("loop: repetition cut")
        if not best.strip():
            last = seen[-1].split(":")[0] if seen else "no reply"
            best = f"[no transcription: the model's replies were not usable ({last})]"
            best_reply = None
        page = _page(best, best_reply or reply, list(dict.fromkeys(seen)))
        if best_reply is None:
            page.words = None  # a placeholder is handwatch's text, not the model's reading
        return page

    def translate(self, text: str, target: str) -> str:
        name = profiles.language_names([target])
        prompt = f"Translate this transcription into {name}. Keep the Markdown structure. Output only the translation.\n\n{text}"
        reply = self.call([{"role": "user", "content": prompt}], self.max_tokens(), 0.0)
        return profiles.clean(reply.content)
