"""The HTTP edge of the VLM engine: a real per-request deadline, replies checked before they are parsed,
and every way a server can fail sorted into "the server is down", "the server failed on this file" and
"the request itself was wrong".

The openai client's timeouts are per socket operation: a server (or a proxy in front of it) that sends
one byte every few seconds never times out. `deadline_client` gives the client a network backend whose
every connect, read and write is bounded by the time left until the request's own deadline."""

from __future__ import annotations

import contextvars
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx  # here, not in a request thread: openai's reply parsing looks httpx up and must never see it half-imported
import openai

from handwatch.errors import EngineResponseError, EngineUnavailable
from handwatch.transcribe import overflow

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("handwatch_deadline", default=None)
MIN_STEP_S = 0.001


def _bounded(timeout: float | None) -> float | None:
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = max(MIN_STEP_S, deadline - time.monotonic())
    return left if timeout is None else min(timeout, left)


class _DeadlineStream:
    def __init__(self, inner):
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout))

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, _bounded(timeout)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _DeadlineBackend:
    def __init__(self, inner):
        self._inner = inner

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        return _DeadlineStream(self._inner.connect_tcp(host, port, _bounded(timeout), local_address, socket_options))

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        return _DeadlineStream(self._inner.connect_unix_socket(path, _bounded(timeout), socket_options))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def deadline_client(timeout_s: float):
    """The openai package's own default HTTP client, its connection pool given the deadline backend.
    Returns (client, True), or (client, False) where this httpx version keeps its pool elsewhere —
    then only the per-operation timeouts apply."""
    client = openai.DefaultHttpxClient(timeout=timeout_s)
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if backend is None:
        return client, False
    pool._network_backend = _DeadlineBackend(backend)  # type: ignore[union-attr]  # found just above
    return client, True


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    token = _DEADLINE.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


class ServerFailed(Exception):
    """HTTP 5xx or no answer in time: the server may be down, or may fail only on this request.
    The engine tells which by probing the server with a tiny request."""

    def __init__(self, message: str):
        super().__init__(message)


class FileRejected(EngineResponseError):
    """The server answers other requests but fails on this file: count it against the file."""


NOT_LOADED = (
    "model not loaded",
    "no models loaded",
    "model is not loaded",
    "not loaded",
    "model_not_found",
    "does not exist",
    "no such model",
    "unknown model",
    "not found",
)
URL_HINT = "does the URL end in /v1 (LM Studio :1234/v1, vLLM :8000/v1, Ollama :11434/v1)?"


class ContextTooLong(EngineResponseError):
    """The request does not fit the model's context: the image (a smaller one may) or the reply budget on top
    of it (a smaller max_tokens will). `overflow` holds what the server's message said."""

    def __init__(self, message: str, over: overflow.Overflow | None = None):
        super().__init__(message)
        self.overflow = over or overflow.Overflow("prompt")


class ModelNotLoaded(EngineUnavailable):
    """The server is up but has no (or another) model loaded."""


def retry_after(headers) -> float | None:
    """Seconds from a Retry-After header (delta-seconds; an HTTP date is rare from model servers)."""
    value = (headers or {}).get("retry-after") if headers is not None else None
    try:
        return max(0.0, min(3600.0, float(value))) if value is not None else None
    except (TypeError, ValueError):
        return None


def classify(url: str, e: Exception, timeout_s: float) -> Exception:
    """An openai exception as what it means for handwatch."""
    if isinstance(e, openai.APITimeoutError):
        return ServerFailed(f"{url}: no answer within {timeout_s:g} s")
    if isinstance(e, openai.APIConnectionError):
        return EngineUnavailable(f"{url}: cannot connect ({e.__cause__ or e})", url)
    if isinstance(e, openai.APIStatusError):
        msg, kind = status_message(e)
        low = msg.lower()
        code = e.status_code
        over = overflow.overflow(msg, kind) if code not in (429, 503) else None  # "too many tokens" per minute is busy
        if over is not None:
            return ContextTooLong(f"{url}: {msg}", over)
        if code in (400, 404) and "model" in low and any(s in low for s in NOT_LOADED):
            return ModelNotLoaded(f"{url}: model not loaded ({msg})", url)
        if code in (429, 503):
            busy = EngineUnavailable(f"{url}: HTTP {code} {'busy' if code == 429 else 'unavailable'} ({msg})", url)
            busy.retry_after = retry_after(getattr(e.response, "headers", None))  # type: ignore[attr-defined]
            return busy
        if code in (401, 403):
            return EngineUnavailable(f"{url}: HTTP {code} {msg}: check api_key_env", url)
        if code in (404, 405):
            return EngineUnavailable(f"{url}: HTTP {code} for the OpenAI API path: {URL_HINT}", url)
        if code >= 500 or code == 408:
            return ServerFailed(f"{url}: HTTP {code} {msg}")
        err = EngineResponseError(f"{url}: HTTP {code} {msg}")
        err.status = code  # type: ignore[attr-defined]  # the caller may know a remedy (logprobs refused)
        return err
    return e


def status_message(e: openai.APIStatusError) -> tuple[str, str]:
    """(message, error type) from the reply itself, not from what this openai version made of it: from
    1.x to 3.x the client keeps only a dict's `error.message`, so LM Studio's {"error": "<string>"} became
    "Error code: 400"; and Ollama nests llama-server's whole error JSON as a string in `error.message`."""
    try:
        text = e.response.text
    except Exception:  # a streamed body, or none
        text = ""
    if "<html" in text[:500].lower():
        return "an HTML page", ""
    fallback = str(e.message or e.body or "")
    message, kind = overflow.error_message(text, fallback)
    return " ".join(str(message).split())[:300], kind


def parsed(url: str, raw) -> Any:
    """The typed reply from a raw openai response, if it really is JSON from an OpenAI-style API."""
    ctype = (raw.headers.get("content-type") or "").lower()
    if "json" not in ctype:
        head = raw.text[:200].lstrip().lower()
        what = "an HTML page" if head.startswith(("<!doctype", "<html")) or "html" in ctype else f"{ctype or 'no content type'}"
        raise EngineUnavailable(f"{url}: got {what}, not JSON: {URL_HINT}", url)
    try:
        return raw.parse()
    except Exception as e:  # JSON of some other API: the same mistake, one level down
        raise EngineUnavailable(f"{url}: the reply is not an OpenAI API answer ({type(e).__name__}): {URL_HINT}", url) from None


def call(url: str, timeout_s: float, fn: Callable[[], Any]) -> Any:
    """Run one raw request under its deadline and return the parsed reply, or raise what it means."""
    try:
        with deadline(timeout_s):
            raw = fn()
    except openai.OpenAIError as e:
        raise classify(url, e, timeout_s) from None
    return parsed(url, raw)


NATIVE_MAX_BYTES = 4 << 20  # a model list or a server's properties; a longer answer is not one


def native_fetcher(ep) -> Callable[[str, str, dict | None], Any]:
    """GET/POST a server's native API beside its /v1 (Ollama's /api/ps, llama.cpp's /props, LM Studio's
    /api/v1/models), with the endpoint's key; anything but a JSON answer raises."""
    headers = {"Authorization": f"Bearer {ep.api_key()}"}

    def fetch(method: str, url: str, body: dict | None):
        with (
            httpx.Client(timeout=min(ep.timeout_s, 10.0), headers=headers, follow_redirects=False) as client,
            client.stream(method, url, json=body) as r,
        ):
            r.raise_for_status()
            data = b""
            for chunk in r.iter_bytes():
                data += chunk
                if len(data) > NATIVE_MAX_BYTES:
                    raise ValueError(f"{url}: more than {NATIVE_MAX_BYTES} bytes")
        return json.loads(data)

    return fetch
