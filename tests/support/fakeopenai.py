"""A real HTTP server on 127.0.0.1 speaking the OpenAI API (/v1/models, /v1/chat/completions) with scripted replies.

It stands in for LM Studio / vLLM at the network boundary: the openai client in handwatch talks to it
over a socket exactly as it would to a GPU server. Every request is recorded, with its image decoded."""

from __future__ import annotations

import base64
import functools
import io
import json
import math
import re
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

from tests.support.dialects import Speaker


@dataclass
class Recorded:
    model: str
    prompt: str
    params: dict
    image_size: tuple[int, int] | None
    image_format: str | None
    image_bytes: int
    image: Image.Image | None = field(repr=False, default=None)
    started: float = 0.0  # time.monotonic() when the request arrived
    ended: float | None = None  # when the server was done with it (reply sent, or the client gone)
    client_gone: bool = False  # the client hung up before the whole reply was sent (a deadline, a kill)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        """A client that hung up (a deadline, a killed daemon) is part of the script, not an error to print."""
        import sys

        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class FakeOpenAI:
    def __init__(self, models=("fake-vl-7b",), port: int = 0):
        self.models = list(models)
        self.script: deque = deque()
        self.default: Any = {"content": "default transcription"}
        self.requests: list[Recorded] = []
        # What the server does with a request for log-probabilities: "honour" (a reply's scripted
        # `logprobs` are sent), "ignore" (never sent, like LM Studio or Ollama before 0.12.11) or
        # "reject" (HTTP 400 naming logprobs).
        self.logprobs_mode = "honour"
        # Set to an item (see `reply`) to answer every request on every path with it — what a web UI or a
        # wrong path at the configured URL does — instead of speaking the OpenAI API.
        self.every_path: dict | None = None
        # What the server says about itself: vLLM adds max_model_len to each /v1/models entry; Ollama,
        # LM Studio and llama.cpp answer their native APIs ({(method, path): JSON body or a callable
        # taking the request's JSON}); any other path is a 404 as before.
        self.max_model_len: int | None = None
        self.native: dict[tuple[str, str], Any] = {}
        self.native_requests: list[tuple[str, str, Any]] = []
        # True: a request for a model not in `models` gets 404 model_not_found, as LM Studio answers
        # once another model has been loaded in its place.
        self.strict_models = False
        # The document check's classification requests (handwatch.transcribe.gate) are answered by this rule, not
        # from the script, and recorded in `classifications`, not `requests`: a str (the reply's content, e.g. a
        # kind as JSON), a dict as in `reply`, or a callable taking the Recorded request and returning either.
        self.classify: Any = kind_reply("note")
        self.classifications: list[Recorded] = []
        # What the server does with `response_format`: "honour" (the content is what the rule says) or "reject":
        # what llama.cpp's server answered a json_schema before it learnt them (ggml-org/llama.cpp PR #9527), and
        # ik_llama.cpp still did in 2025 — HTTP 500, type server_error, as logged in ikawrakow/ik_llama.cpp issue
        # #778 (the throw is in examples/server/utils.hpp's oaicompat_completion_params_parse).
        self.response_format_mode = "honour"
        # A real server's manner (tests/support/dialects.py): its token counts, context, errors, listings, native
        # APIs and thinking. None: the OpenAI API as documented, with every request fitting.
        self.dialect: Speaker | None = None
        self.lock = threading.Lock()
        self.in_flight = 0
        self.server = _Server(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/v1"

    def start(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reply(self, *items) -> None:
        """Queue replies: a str (content), a dict (content/finish_reason/status/error/hold/reasoning_content/
        logprobs), or a callable taking the Recorded request and returning one of those. `logprobs` is a list
        of (token, logprob) pairs or of {"token", "logprob", "bytes"} dicts, sent only when the request asks.
        Faults at the HTTP level: `headers` (extra headers, e.g. {"Retry-After": "5"}); `raw` with
        `content_type` (that body instead of JSON, e.g. an HTML page, with `status` or 200); `hang` (seconds:
        accept and never answer, until the client hangs up or the time is over); `trickle` (seconds: the
        reply sent one byte at a time, this far apart, until it is complete or the client hangs up)."""
        with self.lock:
            self.script.extend(items)

    def _next(self, rec: Recorded):
        with self.lock:
            item = self.script.popleft() if self.script else self.default
        if callable(item):
            item = item(rec)
        if isinstance(item, str):
            item = {"content": item}
        return item

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def _send(
                self, status: int, body: dict | bytes, item: dict | None = None, content_type: str = "application/json"
            ) -> None:
                item = item or {}
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                head = [
                    f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}",
                    f"Content-Type: {content_type}",
                    f"Content-Length: {len(data)}",
                    *(f"{k}: {v}" for k, v in item.get("headers", {}).items()),
                ]
                self.log_request(status)
                message = ("\r\n".join(head) + "\r\n\r\n").encode() + data
                if item.get("trickle"):
                    for i in range(len(message)):
                        if fake._client_gone(self.connection, item["trickle"]):
                            raise ConnectionResetError("the client hung up")
                        self.wfile.write(message[i : i + 1])
                        self.wfile.flush()
                else:
                    self.wfile.write(message)

            def _fault(self, item: dict) -> bool:
                """Answer with `raw` (any status and content type) if the item says so."""
                if "raw" not in item:
                    return False
                raw = item["raw"]
                self._send(
                    item.get("status", 200),
                    raw.encode() if isinstance(raw, str) else raw,
                    item,
                    item.get("content_type", "text/html; charset=utf-8"),
                )
                return True

            def _native(self, method: str, body) -> bool:
                answer = fake.native.get((method, self.path))
                if answer is None and fake.dialect is not None:
                    spoken = fake.dialect.native(method, self.path, body, fake.models)
                    if spoken is not None:
                        fake.native_requests.append((method, self.path, body))
                        self._send(200, spoken)
                        return True
                if answer is None:
                    return False
                fake.native_requests.append((method, self.path, body))
                self._send(200, answer(body) if callable(answer) else answer)
                return True

            def do_GET(self):
                if fake.every_path is not None and self._fault(fake.every_path):
                    return
                if self._native("GET", None):
                    return
                if self.path.rstrip("/").endswith("/models") and fake.dialect is not None:
                    self._send(200, fake.dialect.models(fake.models))
                elif self.path.rstrip("/").endswith("/models"):
                    extra = {"max_model_len": fake.max_model_len} if fake.max_model_len is not None else {}
                    self._send(
                        200,
                        {
                            "object": "list",
                            "data": [{"id": m, "object": "model", "owned_by": "fake", **extra} for m in fake.models],
                        },
                    )
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                raw_body = self.rfile.read(length)
                if fake.every_path is not None and self._fault(fake.every_path):
                    return
                body = json.loads(raw_body or b"{}")
                if self._native("POST", body):
                    return
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": "not found"}})
                rec = fake._record(body)
                if CLASSIFY_MARK in rec.prompt:
                    with fake.lock:
                        fake.requests.remove(rec)
                        fake.classifications.append(rec)
                    if body.get("response_format") and fake.response_format_mode == "reject":
                        kind = body["response_format"].get("type")
                        message = f'response_format type must be one of "text" or "json_object", but got: {kind}'
                        return self._send(500, {"error": {"code": 500, "message": message, "type": "server_error"}})
                    rule = fake.classify(rec) if callable(fake.classify) else fake.classify
                    item = {"content": rule} if isinstance(rule, str) else rule
                    if item.get("status"):
                        return self._send(item["status"], {"error": {"message": item.get("error", "error"), "type": "error"}})
                    message = {"role": "assistant", "content": item.get("content", "")}
                    choice = {"index": 0, "message": message, "finish_reason": item.get("finish_reason", "stop")}
                    usage = {"prompt_tokens": 300, "completion_tokens": 12, "total_tokens": 312}
                    rec.ended = time.monotonic()
                    return self._send(
                        200,
                        {
                            "id": "chatcmpl-kind",
                            "object": "chat.completion",
                            "created": int(time.time()),
                            "model": body.get("model", ""),
                            "choices": [choice],
                            "usage": usage,
                        },
                    )
                if fake.strict_models and body.get("model") not in fake.models:
                    return self._send(
                        404,
                        {
                            "error": {
                                "message": f"model '{body.get('model')}' not found",
                                "type": "invalid_request_error",
                                "code": "model_not_found",
                            }
                        },
                    )
                try:
                    self._answer(rec, body)
                except OSError:
                    rec.client_gone = True
                    raise
                finally:
                    rec.ended = time.monotonic()

            def _answer(self, rec: Recorded, body: dict) -> None:
                if body.get("logprobs") and fake.logprobs_mode == "reject":  # refused before any script is used
                    return self._send(
                        400, {"error": {"message": "logprobs is not supported for this model", "type": "invalid_request_error"}}
                    )
                item = fake._next(rec)
                hold = item.get("hold")
                with fake.lock:
                    fake.in_flight += 1
                try:
                    if hold is not None:
                        hold.wait(timeout=item.get("hold_timeout", 60))
                    if item.get("hang"):
                        rec.client_gone = fake._client_gone(self.connection, item["hang"])
                        self.close_connection = True
                        return
                    if self._fault(item):
                        return
                    if item.get("status"):
                        return self._send(
                            item["status"], {"error": {"message": item.get("error", "error"), "type": "error"}}, item
                        )
                    if fake.dialect is not None:
                        status, reply = fake.dialect.chat(rec, body, item, fake.models)
                        return self._send(status, reply, item)
                    message = {"role": "assistant", "content": item.get("content", "")}
                    if "reasoning_content" in item:
                        message["reasoning_content"] = item["reasoning_content"]
                    choice = {"index": 0, "message": message, "finish_reason": item.get("finish_reason", "stop")}
                    if body.get("logprobs") and fake.logprobs_mode == "honour" and item.get("logprobs") is not None:
                        choice["logprobs"] = {"content": [_token_entry(t) for t in item["logprobs"]]}
                    self._send(
                        200,
                        {
                            "id": "chatcmpl-fake",
                            "object": "chat.completion",
                            "created": int(time.time()),
                            "model": body.get("model", ""),
                            "choices": [choice],
                            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
                        },
                        item,
                    )
                finally:
                    with fake.lock:
                        fake.in_flight -= 1

        return Handler

    def _client_gone(self, conn, seconds: float) -> bool:
        """Wait up to `seconds`; True as soon as the client closes its side of the connection."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            readable, _, _ = select.select([conn], [], [], min(left, 0.5))
            if readable:
                try:
                    if not conn.recv(1, 0x40):  # MSG_DONTWAIT: b"" is the client's end of stream
                        return True
                except BlockingIOError:
                    continue
                except OSError:
                    return True
        return False

    def _record(self, body: dict) -> Recorded:
        prompt, size, fmt, nbytes, image = "", None, None, 0, None
        for msg in body.get("messages", []):
            content = msg.get("content")
            parts = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
            for part in parts:
                if part.get("type") == "text":
                    prompt += part["text"]
                elif part.get("type") == "image_url":
                    url = part["image_url"]["url"]
                    header, b64 = url.split(",", 1)
                    fmt = header
                    raw = base64.b64decode(b64)
                    nbytes = len(raw)
                    image = Image.open(io.BytesIO(raw))
                    image.load()
                    size = image.size
        params = {k: v for k, v in body.items() if k != "messages"}
        rec = Recorded(body.get("model", ""), prompt, params, size, fmt, nbytes, image, time.monotonic())
        with self.lock:
            self.requests.append(rec)
        return rec


CLASSIFY_MARK = '{"kind": K'  # in the document check's prompt (handwatch.transcribe.gate.PROMPT)


def kind_reply(kind: str, language: str = "") -> str:
    """A classification reply as a server with structured output sends it: the JSON object as the content."""
    return json.dumps({"kind": kind, "language": language})


def _token_entry(t) -> dict:
    if isinstance(t, dict):
        token, logprob = t["token"], t["logprob"]
        raw = t.get("bytes", list(token.encode("utf-8")))
    else:
        token, logprob = t
        raw = list(token.encode("utf-8"))
    return {
        "token": token,
        "logprob": logprob,
        "bytes": raw,
        "top_logprobs": [{"token": token, "logprob": logprob, "bytes": raw}],
    }


TOKEN_PIECE = re.compile(r"\s*[^\W_]{1,4}|\s*[^\w\s]|\s+", re.S)


def tokens(text: str, probs: dict[str, float] | None = None, default: float = 0.999) -> list[tuple[str, float]]:
    """`text` cut into BPE-like tokens (a leading space joins the next piece; words longer than four letters
    become several tokens; punctuation is its own), each with a log-probability: `default`, or for the
    first token of a word named in `probs`, that word's probability (later tokens of it stay certain)."""
    probs = probs or {}
    out: list[tuple[str, float]] = []
    word_at: dict[int, str] = {m.start(): m.group() for m in re.finditer(r"[^\W_]+", text)}
    for m in TOKEN_PIECE.finditer(text):
        piece = m.group()
        start = m.start() + (len(piece) - len(piece.lstrip()))
        word = word_at.get(start)
        p = probs.get(word, default) if word is not None else default
        out.append((piece, math.log(p)))
    return out


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.02, what: str = "condition"):
    """Poll until `condition()` is truthy; fail after `timeout`. Tests never sleep a fixed time."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def reads_digits(req):
    """A "vision model" that really reads the picture it is sent: each dark piece of the decoded request image,
    left to right, is the digit whose glyph it matches best, in the typeface `check` draws its numbers in
    (Pillow's default font at 72 px; `handwatch.prepare.preprocess.probe_image`). Tesseract did this before and
    misread 4 to 18 of check's 4,096 possible numbers depending on how the picture was fed to it (7755 as 7795,
    7777 as 7177), and check draws them at random, so it failed a CI run now and then; this reads all 4,096
    right (and a picture with another font, size or number of pieces not at all)."""
    import cv2
    import numpy as np

    ink = (np.asarray(req.image.convert("L")) < 128).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    pieces = sorted((s for s in stats[1:n] if s[cv2.CC_STAT_AREA] >= 20), key=lambda s: s[cv2.CC_STAT_LEFT])
    return "".join(_nearest_digit(ink[y : y + h, x : x + w]) for x, y, w, h, _ in pieces)


def _nearest_digit(piece) -> str:
    import cv2
    import numpy as np

    def mismatch(glyph) -> float:
        if abs(glyph.shape[0] - piece.shape[0]) > 4 or abs(glyph.shape[1] - piece.shape[1]) > 6:
            return math.inf
        resized = cv2.resize(piece, (glyph.shape[1], glyph.shape[0]), interpolation=cv2.INTER_NEAREST)
        return float(np.count_nonzero(resized != glyph)) / glyph.size

    score, digit = min((mismatch(glyph), d) for d, glyph in _glyphs().items())
    return digit if score < 0.2 else "?"


@functools.cache
def _glyphs() -> dict:
    """Each digit as `check` draws it (`probe_image`: Pillow's default font at 72 px), cropped to its ink. Cached
    once, whole: the server's request threads may ask at the same time."""
    import numpy as np
    from PIL import ImageDraw, ImageFont

    glyphs = {}
    for d in "0123456789":
        im = Image.new("L", (120, 120), 255)
        ImageDraw.Draw(im).text((60, 60), d, fill=0, font=ImageFont.load_default(size=72), anchor="mm")
        ink = np.asarray(im) < 128
        ys, xs = np.nonzero(ink)
        glyphs[d] = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.uint8)
    return glyphs
