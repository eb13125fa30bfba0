"""The VLM engine: OpenAI-compatible chat completions to one or more local servers, with validated, retried replies."""

from __future__ import annotations

import base64
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import openai
from PIL import Image

from handwatch import doubt, log, profiles
from handwatch.config import Endpoint, Rule
from handwatch.engines import PageText
from handwatch.errors import ConfigError, EngineResponseError, EngineUnavailable
from handwatch.pixels import fit
from handwatch.preprocess import encode_jpeg

NOT_LOADED = ("model not loaded", "no models loaded", "model is not loaded", "not loaded", "model_not_found", "does not exist")
CONTEXT = ("maximum context length", "context length", "context_length_exceeded", "too many tokens", "exceeds the context")
BACKOFF_START_S, BACKOFF_CAP_S = 2.0, 240.0


class ContextTooLong(EngineResponseError):
    """The image (plus prompt) does not fit the model's context: a smaller image may."""


@dataclass(frozen=True)
class Reply:
    content: str
    finish_reason: str | None
    model: str
    tokens: list[doubt.Token] | None = None  # with log-probabilities, when asked for and given
    endpoint: str = ""  # the answering endpoint's label
    asked: str = ""  # the model that was asked for

    def words(self, text: str) -> list[doubt.Word] | None:
        """Word probabilities for `text`, a cleaned or rendered form of this reply; None without tokens."""
        if self.tokens is None:
            return None
        return doubt.transfer(doubt.token_words(self.content, self.tokens), self.content, text)


def data_url(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def image_messages(prompt: str, jpeg: bytes) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url(jpeg)}},
                {"type": "text", "text": prompt},
            ],
        }
    ]


def backoff(failures: int, rng: Callable[[], float] = random.random) -> float:
    """Exponential with full jitter's gentler cousin: between half and all of the capped step."""
    step = min(BACKOFF_CAP_S, BACKOFF_START_S * (2 ** max(0, failures - 1)))
    return step * (0.5 + 0.5 * rng())


class EndpointClient:
    """One server: its openai client, its model, its load and its health."""

    def __init__(self, ep: Endpoint, clock: Callable[[], float] = time.monotonic):
        self.ep = ep
        self.url = ep.url
        self.client = openai.OpenAI(base_url=ep.url, api_key=ep.api_key(), timeout=ep.timeout_s, max_retries=0)
        self._model = ep.model
        self.clock = clock
        self.in_flight = 0
        self.failures = 0
        self.down_until = 0.0
        self.down_reason: str | None = None
        self.logprobs_ok: bool | None = None  # None: not known yet; False: rejected or ignored, stop asking
        self.log = log.get("vlm")

    def _map(self, e: Exception) -> Exception:
        if isinstance(e, openai.APITimeoutError):
            return EngineUnavailable(f"{self.url}: no answer within {self.ep.timeout_s:g} s", self.url)
        if isinstance(e, openai.APIConnectionError):
            return EngineUnavailable(f"{self.url}: cannot connect ({e.__cause__ or e})", self.url)
        if isinstance(e, openai.APIStatusError):
            msg = _message(e)
            low = msg.lower()
            if any(s in low for s in CONTEXT):
                return ContextTooLong(f"{self.url}: {msg}")
            if e.status_code in (404, 400) and "model" in low and any(s in low for s in NOT_LOADED):
                return EngineUnavailable(f"{self.url}: model not loaded ({msg})", self.url)
            if e.status_code >= 500 or e.status_code in (408, 429):
                return EngineUnavailable(f"{self.url}: HTTP {e.status_code} {msg}", self.url)
            return EngineResponseError(f"{self.url}: HTTP {e.status_code} {msg}")
        return e

    def models(self) -> list[str]:
        try:
            return [m.id for m in self.client.models.list()]
        except openai.OpenAIError as e:
            raise self._map(e) from None

    def model(self) -> str:
        """The configured model, or the only one the server lists."""
        if self._model:
            return self._model
        listed = self.models()
        if len(listed) == 1:
            self._model = listed[0]
            return self._model
        if not listed:
            raise EngineUnavailable(f"{self.url}: the server lists no models (none loaded)", self.url)
        raise ConfigError(self.url, [f"model: the server lists several models ({', '.join(listed)}); set model: to one of them"])

    def wants_logprobs(self, confidence: bool) -> bool:
        if not confidence or self.ep.confidence == "off":
            return False
        return self.ep.confidence == "on" or self.logprobs_ok is not False

    def _no_logprobs(self, why: str) -> None:
        """`auto` stops asking a server that rejects or ignores log-probabilities (said once per process)."""
        if self.ep.confidence == "auto" and self.logprobs_ok is not False:
            self.logprobs_ok = False
            self.log.info("confidence.unsupported", url=self.url, reason=why)
        elif self.ep.confidence == "on" and self.logprobs_ok is None:
            self.logprobs_ok = True  # keep asking, as configured, but say it only once
            self.log.warning("confidence.missing", url=self.url, reason=why)

    def chat(self, messages: list[dict], max_tokens: int, temperature: float, response_format: dict | None = None,
             confidence: bool = False) -> Reply:
        model = self.model()
        kwargs: dict = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        if response_format is not None:
            kwargs["response_format"] = response_format
        if not self.ep.thinking:
            kwargs["extra_body"] = {"chat_template_kwargs": {"enable_thinking": False}}
        asked = self.wants_logprobs(confidence)
        if asked:
            # top_logprobs too: some vLLM releases refuse logprobs without it.
            kwargs.update(logprobs=True, top_logprobs=1)
        try:
            resp = self.client.chat.completions.create(**kwargs)
        except openai.APIStatusError as e:
            if not (asked and e.status_code in (400, 422) and "logprob" in _message(e).lower()):
                raise self._map(e) from None
            if self.ep.confidence == "on":
                raise ConfigError(self.url, [f"confidence: on, but the server rejects log-probabilities ({_message(e)}); "
                                             "set confidence: auto or off"]) from None
            self._no_logprobs(f"rejected: {_message(e)}")
            return self.chat(messages, max_tokens, temperature, response_format, confidence=False)
        except openai.OpenAIError as e:
            raise self._map(e) from None
        if not resp.choices:
            raise EngineResponseError(f"{self.url}: reply without choices")
        choice = resp.choices[0]
        tokens = doubt.parse_logprobs(getattr(choice, "logprobs", None)) if asked else None
        if asked and tokens is None:
            self._no_logprobs("the reply carried no log-probabilities")
        elif tokens is not None:
            self.logprobs_ok = True
        # reasoning / reasoning_content fields are thinking, never transcription: only `content` is read.
        return Reply(choice.message.content or "", choice.finish_reason, resp.model or model, tokens,
                     self.ep.label(), model)


def _page(text: str, reply: Reply | None, reasons: list[str], extra: dict | None = None) -> PageText:
    if reply is None:
        return PageText(text, "", reasons, extra or {})
    return PageText(text, reply.model, reasons, extra or {}, reply.words(text), reply.endpoint, reply.asked)


def _message(e: openai.APIStatusError) -> str:
    body = e.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return str(inner.get("message") or inner)[:300]
        return str(inner)[:300]
    return (str(e.message) or str(body))[:300]


class VLMEngine:
    name = "vlm"

    def __init__(self, endpoints: list[Endpoint], on_health: Callable[[str, bool, str | None], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if not endpoints:
            raise ConfigError("handwatch", ["endpoints: engine vlm needs at least one endpoint"])
        self.clients = [EndpointClient(ep, clock) for ep in endpoints]
        self.clock = clock
        self.on_health = on_health or (lambda url, up, reason: None)
        self._cond = threading.Condition()
        self.log = log.get("vlm")

    # --- choosing an endpoint ------------------------------------------------------------------

    def retry_after(self) -> float:
        now = self.clock()
        waits = [c.down_until - now for c in self.clients]
        return max(0.5, min(waits)) if waits else BACKOFF_START_S

    def _acquire(self, structured: bool = False) -> EndpointClient:
        """The up endpoint with the most room relative to its max_concurrency; wait while all are busy."""
        with self._cond:
            while True:
                now = self.clock()
                up = [c for c in self.clients if c.down_until <= now and (c.ep.structured_output or not structured)]
                if not up:
                    reasons = "; ".join(c.down_reason or c.url for c in self.clients)
                    raise EngineUnavailable(f"every endpoint is down: {reasons}")
                free = [c for c in up if c.in_flight < c.ep.max_concurrency]
                if free:
                    best = min(free, key=lambda c: c.in_flight / c.ep.max_concurrency)
                    best.in_flight += 1
                    return best
                self._cond.wait(timeout=1.0)

    def _release(self, c: EndpointClient, error: EngineUnavailable | None) -> None:
        with self._cond:
            c.in_flight -= 1
            if error is not None:
                c.failures += 1
                c.down_until = self.clock() + backoff(c.failures)
                c.down_reason = str(error)
            elif c.failures or c.down_reason:
                c.failures, c.down_reason = 0, None
            self._cond.notify_all()
        if error is not None:
            self.log.warning("endpoint.down", url=c.url, reason=str(error), retry_in_s=round(c.down_until - self.clock(), 1))
        self.on_health(c.url, error is None, str(error) if error else None)

    def call(self, messages: list[dict], max_tokens: int | None = None, temperature: float = 0.0,
             response_format: dict | None = None, confidence: bool = False) -> Reply:
        """One request, moved to another endpoint if the chosen one turns out to be down."""
        last: EngineUnavailable | None = None
        for _ in range(len(self.clients)):
            try:
                c = self._acquire(structured=response_format is not None)
            except EngineUnavailable:
                raise last or EngineUnavailable("every endpoint is down") from None
            try:
                reply = c.chat(messages, max_tokens or c.ep.max_tokens, temperature, response_format, confidence)
            except EngineUnavailable as e:
                self._release(c, e)
                last = e
                continue
            except BaseException:
                self._release(c, None)
                raise
            self._release(c, None)
            return reply
        raise last or EngineUnavailable("every endpoint is down")

    def max_tokens(self) -> int:
        return max(c.ep.max_tokens for c in self.clients)

    # --- transcribing ----------------------------------------------------------------------------

    def transcribe_page(self, image: Image.Image, rule: Rule) -> PageText:
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

    def _recipe_json(self, image: Image.Image, rule: Rule) -> tuple[PageText | None, str | None]:
        prompt = profiles.prompt_for("recipe", rule.languages, rule.prompt, structured=True)
        jpeg = encode_jpeg(image, rule.preprocess.jpeg_quality)
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

    def _markdown(self, image: Image.Image, rule: Rule) -> PageText:
        """Ask, judge the reply, and retry with a remedy fitted to what went wrong; when retries run
        out the best text is kept and flagged for review, never silently written as if it were fine."""
        base_prompt = profiles.prompt_for(rule.profile, rule.languages, rule.prompt)
        quality = rule.preprocess.jpeg_quality
        jpeg = encode_jpeg(image, quality)
        max_tokens, temperature, strict = self.max_tokens(), 0.0, False
        seen: list[str] = []
        best, grown, shrunk = "", False, False
        best_reply: Reply | None = None
        reply: Reply | None = None
        for _attempt in range(4):
            prompt = base_prompt + (profiles.STRICT_SUFFIX if strict else "")
            try:
                reply = self.call(image_messages(prompt, jpeg), max_tokens, temperature, confidence=True)
            except ContextTooLong as e:
                if shrunk:
                    raise
                shrunk = True
                seen.append("context: image too large for the model's context; sent smaller")
                image = fit(image, max(256, int(max(image.size) * 0.6)))
                jpeg = encode_jpeg(image, quality)
                self.log.info("reply.retry", problem="context", detail=str(e))
                continue
            text = profiles.clean(reply.content)
            verdict = profiles.judge(text, reply.finish_reason)
            if verdict.ok:
                return _page(text, reply, [s for s in seen if s.startswith("context")])
            seen.append(f"{verdict.problem}: {verdict.detail}")
            self.log.info("reply.retry", problem=verdict.problem, detail=verdict.detail)
            if text and verdict.problem in ("truncated", "loop"):
                best, best_reply = text, reply  # a real attempt at the page; narration and refusals never become the text
            if verdict.problem == "narration":
                strict = True
            elif verdict.problem == "refusal" and sum(s.startswith("refusal") for s in seen) >= 2:
                break
            elif verdict.problem == "truncated":
                if grown:
                    break
                max_tokens, grown = max_tokens * 2, True
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
        prompt = (f"Translate this transcription into {name}. Keep the Markdown structure. "
                  f"Output only the translation.\n\n{text}")
        reply = self.call([{"role": "user", "content": prompt}], self.max_tokens(), 0.0)
        return profiles.clean(reply.content)
