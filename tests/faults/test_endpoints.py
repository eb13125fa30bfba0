"""The endpoint matrix: every way a model server (or whatever answers at its URL) misbehaves, each against
its own daemon, server and folder, all run at once. A server that is down, busy or not an OpenAI API
makes files wait (nothing counted against them) and says why in `status`; one that fails on one file
fails that file alone; replies that cannot be used are retried and then kept, flagged for review. No
request outlives the endpoint's timeout_s, however the server stalls."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.harness import CASES, World
from tests.support.daemon import front, ident_of, text_for
from tests.support.fakeopenai import FakeOpenAI, Recorded, free_port, wait_for
from tests.support.paths import DATA

REPLIES = DATA / "replies"
STALL_TIMEOUT_S = 2.5  # timeout_s of the endpoints that stall: the per-request deadline under test
TIMEOUT_S = 10.0  # timeout_s of the others: well above a reply from 127.0.0.1 on a busy machine
RETRY_AFTER_S = 3
LONGEST: dict[Path, tuple[float, float]] = {}  # a case's folder: its longest request, and its timeout_s
MATRIX: list[str] = []  # the names of this module's cases


def matrix(name: str, title: str):
    """A case of the matrix: besides its own checks, no request it made outlived the endpoint's timeout_s."""

    def register(fn: Callable[[Path], list[str]]):
        def run(root: Path) -> list[str]:
            notes = fn(root)
            longest, limit = LONGEST.pop(root)
            return [*notes, f"longest request {longest:.1f} s (timeout_s {limit:g})"]

        CASES(name, "endpoint: " + title)(run)
        MATRIX.append(name)
        return fn

    return register


class Scene:
    """A server and a world with three photos on their way; closed whatever happens."""

    def __init__(self, root: Path, server: FakeOpenAI | None = None, url: str | None = None, photos: int = 3, **kw):
        self.server = server or FakeOpenAI().start()
        self.server.default = self.server.default if callable(self.server.default) else text_for
        self.timeout_s = kw.setdefault("timeout_s", TIMEOUT_S)
        self.root = root
        self.w = World(root, url or self.server.url, **kw)
        self.photos = photos

    def __enter__(self) -> Scene:
        self.w.start()
        for i in range(self.photos):
            self.w.photo(f"p{i}.png", i)
        return self

    def __exit__(self, kind, *exc) -> None:
        try:
            if kind is None:
                self.deadline_held()
        finally:
            self.w.close()
            self.server.stop()

    def deadline_held(self) -> None:
        """Every request the server got ended (answered, or hung up on by the daemon) within timeout_s of its
        start, measured at the server; a second of slack for the server's own bookkeeping."""
        reqs = self.server.requests
        wait_for(lambda: all(r.ended is not None for r in reqs), self.timeout_s + 5, interval=0.1, what="every request over")
        longest = max((r.ended - r.started for r in reqs), default=0.0)
        assert longest <= self.timeout_s + 1, f"a request lasted {longest:.1f} s, over timeout_s {self.timeout_s:g}"
        LONGEST[self.root] = (longest, self.timeout_s)

    def all_waiting(self, why: str) -> dict:
        """Every photo waiting with `why` in its reason, the endpoint down with it, nothing failed."""

        def ready():
            st = self.w.status()
            waiting = {x["path"]: x["reason"] or "" for x in st["waiting"]}
            ep = st["endpoints"][0]
            return (
                all(why in waiting.get(str(p), "") for p in self.w.good)
                and ep["up"] is False
                and why in (ep["reason"] or "")
                and st["counts"]["failed"] == 0
                and st
            )

        return wait_for(ready, 90, interval=0.2, what=f"every photo waiting: {why!r}")


def _down_then_back(
    root: Path, why: str, break_it: Callable[[FakeOpenAI], None], fix: Callable[[FakeOpenAI], None], **kw
) -> tuple[Scene, dict]:
    with Scene(root, **kw) as s:
        break_it(s.server)
        st = s.all_waiting(why)
        fix(s.server)
        s.w.check()
        assert s.server.in_flight == 0, "a request is still open"
        return s, st


def _every_path_answers(root: Path, page: dict, why: str) -> None:
    """Something other than an OpenAI API at the URL (a web UI, a wrong path): files wait, saying `why`."""
    _down_then_back(root, why, lambda srv: setattr(srv, "every_path", page), lambda srv: setattr(srv, "every_path", None))


# --- the server is down, busy, or not an OpenAI API: files wait ---------------------------------


@matrix("refused", "connection refused, then the server starts")
def refused(root: Path) -> list[str]:
    port = free_port()
    with Scene(root, url=f"http://127.0.0.1:{port}/v1") as s:
        s.all_waiting("cannot connect")
        s.server.stop()
        s.server = FakeOpenAI(port=port).start()
        s.server.default = text_for
        s.w.check()
    return ["files waited ('cannot connect'), none failed; done once the server was up"]


def _retry_after(root: Path, code: int, why: str) -> list[str]:
    """Answer `code` with Retry-After until two requests got it; requests then must keep the distance."""
    refusals: list[Recorded] = []
    fixed = threading.Event()

    def reply(rec: Recorded):
        if fixed.is_set():
            return text_for(rec)
        refusals.append(rec)
        return {"status": code, "error": "the model is loading", "headers": {"Retry-After": str(RETRY_AFTER_S)}}

    with Scene(root, concurrency=1) as s:
        s.server.default = reply
        wait_for(lambda: len(refusals) >= 2, 60, interval=0.1, what=f"two {code} replies")
        s.all_waiting(why)
        fixed.set()
        s.w.check()
        gaps = [b.started - a.started for a, b in zip(refusals, refusals[1:], strict=False)]
        assert min(gaps) >= RETRY_AFTER_S - 0.25, f"Retry-After {RETRY_AFTER_S} s not honoured: {gaps}"
    return [f"files waited ('{why}'), asked again no sooner than Retry-After ({len(refusals)} refusals); done after"]


@matrix("503", "503 with Retry-After")
def http_503(root: Path) -> list[str]:
    return _retry_after(root, 503, "HTTP 503 unavailable")


@matrix("429", "429 with Retry-After")
def http_429(root: Path) -> list[str]:
    return _retry_after(root, 429, "HTTP 429 busy")


def _stall(root: Path, item: dict) -> list[str]:
    stalled: list[Recorded] = []

    def stall(rec: Recorded) -> dict:
        stalled.append(rec)
        return item

    s, _ = _down_then_back(
        root,
        f"no answer within {STALL_TIMEOUT_S:g} s",
        lambda srv: setattr(srv, "default", stall),
        lambda srv: setattr(srv, "default", text_for),
        timeout_s=STALL_TIMEOUT_S,
    )
    assert stalled and all(r.client_gone for r in stalled), "the daemon did not hang up on a stalled request"
    return [
        f"{len(stalled)} stalled requests (the probes' too) each abandoned by the daemon at its "
        f"{STALL_TIMEOUT_S:g} s deadline; files waited, then done"
    ]


@matrix("hang", "accept and never answer")
def hang(root: Path) -> list[str]:
    return _stall(root, {"hang": 120})


@matrix("trickle", "a byte every 1.5 s (each read well inside the timeout)")
def trickle(root: Path) -> list[str]:
    return _stall(root, {"trickle": 1.5, "content": "never complete"})


@matrix("html", "HTML page with 200 (a web UI at the URL)")
def html_200(root: Path) -> list[str]:
    page = {"raw": "<!DOCTYPE html><html><head><title>Open WebUI</title></head><body></body></html>"}
    _every_path_answers(root, page, "got an HTML page, not JSON: does the URL end in /v1")
    return ["endpoint down: 'got an HTML page, not JSON: does the URL end in /v1 …?'; files waited, no traceback"]


@matrix("404", "404 on every path (a wrong path)")
def http_404(root: Path) -> list[str]:
    page = {"status": 404, "raw": "<html><body>404 page not found</body></html>"}
    _every_path_answers(root, page, "HTTP 404 for the OpenAI API path: does the URL end in /v1")
    return ["endpoint down: 'HTTP 404 for the OpenAI API path: does the URL end in /v1 …?'; files waited"]


@matrix("model", "400 'model not loaded': the server switched models")
def model_switch(root: Path) -> list[str]:
    server = FakeOpenAI(models=("model-a",)).start()

    def reply(rec: Recorded):
        if rec.model not in server.models:
            return {"status": 400, "error": f'Model "{rec.model}" is not loaded'}
        return text_for(rec)

    server.default = reply
    with Scene(root, server=server, model=None, photos=1) as s:  # the model is detected from /v1/models
        s.w.wait_settled()
        server.models = ["model-b"]  # LM Studio loaded another model
        later = [s.w.photo(f"later{i}.png", 10 + i) for i in range(2)]
        s.w.check()
        models = {p.name: front(p.with_suffix(".md"))["model"] for p in [s.w.inbox / "p0.png", *later]}
        assert models == {"p0.png": "model-a", "later0.png": "model-b", "later1.png": "model-b"}, models
    return ["the new model was detected again after 'not loaded'; later files transcribed with it"]


# --- the server fails on one file: that file alone ------------------------------------------------


@matrix("context", "400 context length")
def context_length(root: Path) -> list[str]:
    seen: dict[int, int] = {}

    def reply(rec: Recorded):
        ident = ident_of(rec.image)
        seen[ident] = seen.get(ident, 0) + 1
        if ident == 0 or (ident == 1 and seen[ident] == 1):  # 0 never fits, 1 fits once smaller
            return {
                "status": 400,
                "error": "This model's maximum context length is 4096 tokens. However, you requested 9000 tokens.",
            }
        return text_for(rec)

    server = FakeOpenAI().start()
    server.default = reply
    with Scene(root, server=server, photos=0) as s:
        s.w.expect_failed(s.w.image("never.png", 0, (1200, 900)), "maximum context length")
        fits = s.w.photo("fits.png", 1, (1200, 900))
        s.w.check()
        assert (
            "context: image too large for the model's context; sent smaller" in front(fits.with_suffix(".md"))["review_reasons"]
        )
        sizes = [r.image_size for r in server.requests if r.image and ident_of(r.image) == 1]
        assert sizes[1][0] < sizes[0][0], sizes
    return ["sent smaller after a context error (Markdown flagged); a page that never fits failed with the server's message"]


@matrix("500", "500 on one file only")
def poison(root: Path) -> list[str]:
    def reply(rec: Recorded):
        if rec.image is not None and ident_of(rec.image) == 0:
            return {"status": 500, "error": "CUDA error: an illegal memory access was encountered"}
        return text_for(rec)

    server = FakeOpenAI().start()
    server.default = reply
    with Scene(root, server=server, photos=0) as s:
        poisoned = s.w.expect_failed(s.w.image("poison.png", 0), "CUDA error: an illegal memory access")
        others = [s.w.photo(f"p{i}.png", i) for i in range(1, 4)]
        wait_for(lambda: all(p.with_suffix(".md").exists() for p in others), 60, what="the other photos")
        s.w.check()
        assert s.w.status()["endpoints"][0]["up"] is True
        assert not s.w.events("endpoint.down"), "the endpoint was marked down for one file's 500s"
        reason = next(f["reason"] for f in s.w.status()["failed"] if f["path"] == str(poisoned))
        assert reason.endswith("(3 tries)"), reason
        tries = [r for r in server.requests if r.image is not None and ident_of(r.image) == 0]
        assert len(tries) == 3, f"{len(tries)} requests for the poisoned file"
    return ["the others done, the endpoint never marked down; the file failed after 3 tries with the server's message"]


# --- replies that cannot be used: retried, then kept and flagged --------------------------------


def _bad_reply(root: Path, item: dict, reason: str) -> tuple[Path, dict, FakeOpenAI]:
    """Photo 0 always gets `item`; the Markdown it ends with is flagged with `reason`."""
    server = FakeOpenAI().start()
    server.default = lambda rec: item if ident_of(rec.image) == 0 else text_for(rec)
    with Scene(root, server=server, photos=0) as s:
        victim = s.w.image("victim.png", 0)
        s.w.expect_good(victim)
        for i in range(1, 3):
            s.w.photo(f"p{i}.png", i)
        s.w.check()
        md = victim.with_suffix(".md")
        fm = front(md)
        assert fm["needs_review"] is True and any(reason in r for r in fm["review_reasons"]), fm
        return md, fm, server


@matrix("empty", "200 with empty content")
def empty(root: Path) -> list[str]:
    md, _, _ = _bad_reply(root, {"content": ""}, "empty: the reply was empty")
    assert "[no transcription: the model's replies were not usable (empty)]" in md.read_text()
    return ["retried, then a placeholder Markdown flagged 'empty'; the others done"]


@matrix("reasoning", "200 with only reasoning")
def only_reasoning(root: Path) -> list[str]:
    thought = "The user wants a transcription. I believe it says milk and honey."
    md, _, server = _bad_reply(
        root, {"content": "", "reasoning_content": thought}, "thinking: the reply was only the model's thinking"
    )
    body = md.read_text().split("\n---\n", 1)[1]
    assert "milk" not in body and "transcription" not in body
    asked = [r for r in server.requests if r.image is not None and ident_of(r.image) == 0]
    assert len(asked) == 2, f"{len(asked)} requests: one retry with thinking off, then no more"
    return ["the reasoning never became the text: asked once more, then an empty page flagged 'thinking'"]


@matrix("loop", "200 with a repetition loop")
def loop(root: Path) -> list[str]:
    md, _, server = _bad_reply(root, {"content": (REPLIES / "loop_lines.txt").read_text()}, "loop: repetition cut")
    assert md.read_text().count("1 cup sugar") == 2
    temps = [r.params["temperature"] for r in server.requests if r.image and ident_of(r.image) == 0]
    assert temps[:2] == [0, 0.2], temps
    return ["retried warmer, then the loop cut to two lines and flagged"]


@matrix("length", "200 with finish_reason 'length'")
def length(root: Path) -> list[str]:
    md, _, server = _bad_reply(
        root, {"content": "Dear Anna, thank", "finish_reason": "length"}, "truncated: the reply hit max_tokens"
    )
    asked = [r.params["max_tokens"] for r in server.requests if r.image and ident_of(r.image) == 0]
    assert asked[1] == 2 * asked[0], asked
    return ["retried with twice the max_tokens, then kept and flagged 'truncated'"]


# --- running them all at once (and beside test_races.py's cases) ---------------------------------


@pytest.mark.parametrize("name", MATRIX)
def test_endpoint_matrix(side_by_side, name, fault):
    CASES.report(side_by_side, name, fault)
