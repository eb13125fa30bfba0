"""One model server as the VLM engine sees it: its openai client, the dialect it speaks, its context, its
model, its load and its health. Every request is fitted to the server's context before it is sent, and
every reply is checked for what a server may do quietly (drop the image, think instead of answer)."""

from __future__ import annotations

import base64
import io
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import openai
from PIL import Image

from handwatch import log, metrics
from handwatch.config.endpoint import Endpoint
from handwatch.errors import ConfigError, EngineResponseError, EngineUnavailable
from handwatch.prepare.preprocess import encode_jpeg, probe_image
from handwatch.transcribe import budget, dialect, doubt, http, overflow
from handwatch.transcribe.http import ContextTooLong

BACKOFF_START_S, BACKOFF_CAP_S = 2.0, 240.0
PROBE_TTL_S = 10.0  # one probe answers for every failure of the same endpoint within this time
CONTEXT_TTL_S = 60.0  # a context the server did not say yet (Ollama before it loads the model) is asked again after this
LEAST_REPLY = 16  # a budget smaller than this is no transcription: the image must shrink instead
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_REPLY_CHARS = 200_000  # far above any real page (a dense page is ~20,000 characters)
HEADER_B64 = 65536  # base64 characters holding a JPEG's header (its size) many times over: 48 kB of a page
DROPPED = "context: the server's context was full, so the image may have been dropped"


@dataclass(frozen=True)
class Reply:
    content: str
    finish_reason: str | None
    model: str
    tokens: list[doubt.Token] | None = None  # with log-probabilities, when asked for and given
    endpoint: str = ""  # the answering endpoint's label
    asked: str = ""  # the model that was asked for
    usage: int = 0  # tokens the server counted for this request (prompt and completion)
    budget: int = 0  # the max_tokens sent
    capped: bool = False  # that budget is all the server's context leaves: asking for more cannot help
    warnings: tuple[str, ...] = ()  # what the server did quietly (a full context), as review reasons
    reasoning: str = ""  # the model's thinking, when the server sent it apart (never the transcription)
    can_stop_thinking: bool = False  # this server can be asked to turn thinking off
    thinking_opened: bool = False  # thinking was left on, or a server that cannot turn it off serves a thinking model

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


def _request_shape(messages: list[dict]) -> tuple[tuple[int, int] | None, str]:
    """The image's size (read from its JPEG header) and the text of a request, for its token estimate."""
    size: tuple[int, int] | None = None
    text = ""
    for msg in messages:
        content = msg.get("content")
        parts: list[dict] = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
        for part in parts:
            if part.get("type") == "text":
                text += part.get("text") or ""
            elif part.get("type") == "image_url" and size is None:
                url = part["image_url"]["url"]
                try:
                    head = base64.b64decode(url.split(",", 1)[1][:HEADER_B64])  # the header, not the whole picture
                    with Image.open(io.BytesIO(head)) as im:
                        size = im.size
                except Exception:  # not ours to judge here: the server will say
                    size = None
    return size, text


def _bounded(content: str) -> tuple[str, tuple[str, ...]]:
    """A reply as handwatch may keep it: at most MAX_REPLY_CHARS (a page is a few thousand words; a reply past
    this is a loop or an attack), and only what UTF-8 can hold — a lone surrogate (`"\ud800"` in the JSON)
    can be neither written nor stored, so it becomes U+FFFD."""
    why: tuple[str, ...] = ()
    if len(content) > MAX_REPLY_CHARS:
        content = content[:MAX_REPLY_CHARS]
        why = (f"truncated: the reply was longer than {MAX_REPLY_CHARS:,} characters and was cut there",)
    return LONE_SURROGATE.sub("\ufffd", content), why


def backoff(failures: int, rng: Callable[[], float] = random.random) -> float:
    """Exponential with full jitter's gentler cousin: between half and all of the capped step."""
    step = min(BACKOFF_CAP_S, BACKOFF_START_S * (2 ** max(0, failures - 1)))
    return step * (0.5 + 0.5 * rng())


class EndpointClient:
    """One server: its openai client, its dialect and context, its model, its load and its health."""

    def __init__(self, ep: Endpoint, clock: Callable[[], float] = time.monotonic):
        self.ep = ep
        self.url = ep.url
        http_client, self.bounded = http.deadline_client(ep.timeout_s)
        self.client = openai.OpenAI(
            base_url=ep.url, api_key=ep.api_key(), timeout=ep.timeout_s, max_retries=0, http_client=http_client
        )
        self._model = ep.model
        self.clock = clock
        self.in_flight = 0
        self.failures = 0
        self.down_until = 0.0
        self.down_reason: str | None = None
        self.reported: tuple[bool, str | None] | None = None  # the health last written to the database
        self.probed: tuple[float, bool] = (-1e9, False)
        self.logprobs_ok: bool | None = None  # None: not known yet; False: rejected or ignored, stop asking
        self._server: dialect.Server | None = None
        self.context = dialect.Context(None, "not read yet")
        self._context_read = -1e9
        self._read_after_reply = False
        self._lock = threading.Lock()
        self._detecting = threading.Lock()  # one detection at a time: the others wait for its answer
        self.log = log.get("vlm")

    # --- what the server is ----------------------------------------------------------------------------

    def listing(self) -> list[dict]:
        """/v1/models as the server sends it: beside `id`, servers add what they know (vLLM: max_model_len)."""
        page = http.call(self.url, min(self.ep.timeout_s, 30.0), self.client.models.with_raw_response.list)
        return [m.model_dump() for m in getattr(page, "data", None) or []]

    def models(self) -> list[str]:
        return [str(m.get("id")) for m in self.listing()]

    def server(self, listing: list[dict] | None = None) -> dialect.Server:
        """The dialect, detected once (or configured); a server that cannot be asked now is generic for now."""
        if self._server is not None:
            return self._server
        with self._detecting:
            if self._server is not None:
                return self._server
            fetch = http.native_fetcher(self.ep)
            try:
                found = dialect.detect(self.url, self.listing() if listing is None else listing, fetch, self.ep.dialect)
            except Exception as e:  # down: the request itself will say so; detect again next time
                self.log.debug("dialect.unknown", url=self.url, reason=str(e))
                return dialect.Server(dialect.DIALECTS.get(self.ep.dialect, dialect.GENERIC), "not detected yet")
            self._server = found
        self.log.info("dialect.detected", url=self.url, server=found.dialect.title, how=found.how)
        return found

    def read_context(self, model: str, listing: list[dict] | None = None, force: bool = False) -> dialect.Context:
        """The context one request gets, as the server says it; asked again while it is unknown."""
        now = self.clock()
        if not force and (self.context.tokens is not None or now - self._context_read < CONTEXT_TTL_S):
            return self.context
        self._context_read = now
        server = self.server(listing)
        try:
            got = dialect.context(
                server, self.url, model, self.listing() if listing is None else listing, http.native_fetcher(self.ep)
            )
        except Exception as e:
            self.log.debug("context.unknown", url=self.url, reason=str(e))
            return self.context
        with self._lock:
            if got.tokens is None and self.context.tokens is not None:
                return self.context  # a server that stops saying it has not lost it (another thread learnt it)
            if got.tokens != self.context.tokens:
                self.log.info("context.read", url=self.url, tokens=got.tokens, source=got.source)
            self.context = got
        return got

    def forget(self) -> None:
        """The server changed its model: what was learnt about the old one (its context, LM Studio's list) goes."""
        with self._lock:
            self._server = None
            self.context = dialect.Context(None, "not read yet")
            self._context_read = -1e9
            self._read_after_reply = False

    def model(self) -> str:
        """The configured model, or the only one the server offers — detected again after the server says
        it no longer has it (LM Studio loaded another model and the old name is gone). LM Studio with JIT
        loading lists every downloaded model: the loaded one, or else the only vision model, is the one."""
        if self._model:
            return self._model
        listing = self.listing()
        listed = [str(m.get("id")) for m in listing]
        if len(listed) == 1:
            self._model = listed[0]
            return self._model
        server = self.server(listing)
        if server.dialect.name == "lmstudio":  # what is loaded now, not when the server was first seen
            fresh = dialect.lmstudio_catalog(dialect.root_of(self.url), http.native_fetcher(self.ep))
            server = dialect.Server(server.dialect, server.how, server.version, fresh or server.catalog)
        if server.catalog:
            loaded = [m.key for m in server.catalog if m.loaded and m.key in listed]
            vision = [m.key for m in server.catalog if m.vision and m.key in listed]
            if len(loaded) == 1 or (not loaded and len(vision) == 1):
                self._model = (loaded or vision)[0]
                return self._model
            if vision:
                raise ConfigError(
                    self.url,
                    [
                        f"model: {server.dialect.title} lists {len(listed)} models (with JIT loading, every one downloaded); "
                        f"set model: to one of its vision models: {', '.join(vision)}"
                    ],
                )
        if not listed:
            raise EngineUnavailable(f"{self.url}: the server lists no models (none loaded)", self.url)
        raise ConfigError(self.url, [f"model: the server lists several models ({', '.join(listed)}); set model: to one of them"])

    # --- log-probabilities --------------------------------------------------------------------------------

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

    # --- fitting a request to the context -----------------------------------------------------------------

    def estimate(self, model: str, size: tuple[int, int] | None, text: str) -> tuple[int, int]:
        """(the request's prompt tokens, of which the image) as the model family costs them."""
        family = budget.family_of(model) or budget.FALLBACK
        image = budget.page_tokens(family, *size) if size else 0
        return image + budget.prompt_tokens(text), image

    def fit(self, max_tokens: int, prompt: int) -> tuple[int, bool]:
        """(the budget to send, whether the context capped it): never more than the context leaves."""
        ctx = self.context.tokens
        if not ctx:
            return max_tokens, False
        room = ctx - prompt - max(16, prompt // 50)  # the estimate is rough: leave a little over
        if room >= max_tokens:
            return max_tokens, False
        return max(LEAST_REPLY, room), True

    def _more_context(self, server: dialect.Server) -> str:
        size = f"of {self.context.tokens:,} tokens " if self.context.tokens else ""
        return (
            f"the page does not fit {server.dialect.title}'s context {size}even sent smaller: "
            f"{server.dialect.more_context}, or lower preprocess.max_pixels"
        )

    def _quiet_loss(self, model: str, usage, estimate: tuple[int, int]) -> tuple[str, ...]:
        """What a reply's usage shows the server did without saying: a context shifted past its size
        (Ollama before 0.33), or a prompt counted smaller than its image alone (the image cut away)."""
        total = getattr(usage, "total_tokens", None)
        prompt = getattr(usage, "prompt_tokens", None)
        ctx = self.context.tokens
        out = []
        if ctx and isinstance(total, int) and total > ctx:
            out.append(f"{DROPPED} ({total:,} tokens used of a context of {ctx:,})")
        elif (f := budget.family_of(model)) and f.fixed is None and isinstance(prompt, int) and 0 < prompt < estimate[1] // 2:
            out.append(f"{DROPPED} (the server counted {prompt:,} prompt tokens; the image alone costs about {estimate[1]:,})")
        return tuple(out)

    # --- one request --------------------------------------------------------------------------------------

    def chat(
        self,
        messages: list[dict],
        max_tokens: int,
        temperature: float,
        response_format: dict | None = None,
        confidence: bool = False,
        timeout_s: float | None = None,
        think: bool | None = None,
    ) -> Reply:
        """`think`: None follows the endpoint's `thinking`; False asks the server to skip it whatever that says.
        `max_tokens` is fitted to what the server's context leaves after this request's image and text."""
        model = self.model()
        server = self.server()
        self.read_context(model)
        size, text = _request_shape(messages)
        estimate = self.estimate(model, size, text)
        budget_, capped = self.fit(max_tokens, estimate[0])
        thinking = self.ep.thinking if think is None else think
        try:
            return self._send(
                model, server, messages, budget_, capped, temperature, response_format, confidence, timeout_s, thinking, estimate
            )
        except ContextTooLong as e:
            over = e.overflow
            self.read_context(model, force=True)  # the server's own API first: an error message is not the last word
            if over.context and self.context.tokens is None:
                self.context = dialect.Context(
                    over.context, f"{server.dialect.title}'s own error message", self.context.vision, server.dialect.title
                )
            if over.part != "budget":
                e.advice = self._more_context(server)  # type: ignore[attr-defined]
                raise
            # The prompt fits; the budget on top does not. The server's own numbers say how much does.
            room = (over.context - over.prompt - 1) if over.context and over.prompt is not None else None
            if room is None:
                room = self.fit(budget_, estimate[0] + max(64, estimate[0] // 4))[0] if self.context.tokens else budget_ // 2
            if room < LEAST_REPLY or room >= budget_:
                err = ContextTooLong(str(e), overflow.Overflow("prompt", over.context, over.prompt))
                err.advice = self._more_context(server)  # type: ignore[attr-defined]
                raise err from None
            self.log.info("reply.budget", url=self.url, asked=budget_, fits=room, reason=str(e))
            return self._send(
                model, server, messages, room, True, temperature, response_format, confidence, timeout_s, thinking, estimate
            )

    def _send(
        self, model, server, messages, max_tokens, capped, temperature, response_format, confidence, timeout_s, thinking, estimate
    ) -> Reply:
        # The messages (a page's base64 JPEG) go in `extra_body`, which the SDK merges into the same JSON body after
        # its request transform: that walk of a page's request cost ~1.5 ms of CPU with the GIL held, to change nothing.
        kwargs: dict = {"model": model, "messages": [], "max_tokens": max_tokens, "temperature": temperature}
        kwargs["extra_body"] = {"messages": messages}
        if response_format is not None:
            kwargs["response_format"] = response_format
        if not thinking and server.dialect.thinking_off:
            kwargs["extra_body"].update(server.dialect.thinking_off)
        asked = self.wants_logprobs(confidence)
        if asked:
            # top_logprobs too: some vLLM releases refuse logprobs without it.
            kwargs.update(logprobs=True, top_logprobs=1)
        started = time.monotonic()
        try:
            resp = http.call(
                self.url, timeout_s or self.ep.timeout_s, lambda: self.client.chat.completions.with_raw_response.create(**kwargs)
            )
        except EngineResponseError as e:
            metrics.request_done(self.url, "error", time.monotonic() - started)
            if not (asked and getattr(e, "status", None) in (400, 422) and "logprob" in str(e).lower()):
                raise
            if self.ep.confidence == "on":
                raise ConfigError(
                    self.url, [f"confidence: on, but the server rejects log-probabilities ({e}); set confidence: auto or off"]
                ) from None
            self._no_logprobs(f"rejected: {e}")
            return self._send(
                model, server, messages, max_tokens, capped, temperature, response_format, False, timeout_s, thinking, estimate
            )
        except Exception as e:
            outcome = "unavailable" if isinstance(e, (EngineUnavailable, http.ServerFailed)) else "error"
            metrics.request_done(self.url, outcome, time.monotonic() - started)
            if isinstance(e, http.ModelNotLoaded):
                self.forget()
                if not self.ep.model:
                    self._model = None  # detect the model again next time
            raise
        usage = getattr(resp, "usage", None)
        metrics.request_done(self.url, "ok", time.monotonic() - started, usage)
        if not getattr(resp, "choices", None):
            raise EngineResponseError(f"{self.url}: reply without choices")
        choice = resp.choices[0]
        tokens = doubt.parse_logprobs(getattr(choice, "logprobs", None)) if asked else None
        if asked and tokens is None:
            self._no_logprobs("the reply carried no log-probabilities")
        elif tokens is not None:
            self.logprobs_ok = True
        if self.context.tokens is None and not self._read_after_reply:
            self._read_after_reply = True  # Ollama says it once the model is loaded: by this reply, at the latest
            self.read_context(model, force=True)
        # Thinking arrives apart as reasoning_content (llama.cpp, vLLM, LM Studio) or reasoning (Ollama,
        # newer vLLM): it is kept only to tell a reply that was all thinking, never as transcription.
        extra = getattr(choice.message, "model_extra", None) or {}
        reasoning = next((v for k in ("reasoning_content", "reasoning") if isinstance(v := extra.get(k), str) and v), "")
        used = getattr(usage, "total_tokens", None)
        content, warnings = _bounded(choice.message.content or "")
        if len(content) < len(choice.message.content or ""):
            tokens = None  # they spell what was cut away: aligning them with what is left would take minutes
        return Reply(
            content,
            choice.finish_reason,
            resp.model or model,
            tokens,
            self.ep.label(),
            model,
            used if isinstance(used, int) else 0,
            max_tokens,
            capped,
            warnings + self._quiet_loss(model, usage, estimate),
            reasoning,
            server.dialect.thinking_off is not None,
            thinking or (server.dialect.thinking_off is None and self._reasons(server, model)),
        )

    @staticmethod
    def _reasons(server: dialect.Server, model: str) -> bool:
        return any(m.key == model and m.reasons for m in server.catalog)

    def probe(self) -> bool:
        """Does the server answer a tiny picture right now? Tells "down" from "fails on that file"."""
        if self.clock() - self.probed[0] < PROBE_TTL_S:
            return self.probed[1]
        try:
            self.chat(
                image_messages("What number is written here? Answer with the digits only.", encode_jpeg(probe_image("42"))),
                16,
                0.0,
                timeout_s=min(self.ep.timeout_s, 60.0),
            )
            ok = True
        except Exception:
            ok = False
        self.probed = (self.clock(), ok)
        return ok
