"""Prometheus counters and histograms the engines record as they work (served at /metrics by the review page)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "handwatch_requests", "Requests sent to each endpoint, by outcome (ok, unavailable, error)", ["endpoint", "outcome"]
)
PAGES = Counter("handwatch_pages", "Pages transcribed, by the endpoint that answered (or tesseract)", ["endpoint"])
LATENCY = Histogram(
    "handwatch_request_seconds",
    "Time for one chat-completions request, by endpoint",
    ["endpoint"],
    buckets=(0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
)
TOKENS = Histogram(
    "handwatch_request_tokens",
    "Tokens per request as the endpoint reported them (prompt, completion)",
    ["endpoint", "kind"],
    buckets=(16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768),
)


def request_done(endpoint: str, outcome: str, seconds: float, usage=None) -> None:
    REQUESTS.labels(endpoint, outcome).inc()
    LATENCY.labels(endpoint).observe(seconds)
    for kind in ("prompt", "completion"):
        n = getattr(usage, f"{kind}_tokens", None)
        if isinstance(n, int):
            TOKENS.labels(endpoint, kind).observe(n)


def page_done(engine) -> None:
    """`engine.answered_by()` names the endpoint a VLM page went to on this thread; Tesseract has no endpoint."""
    answered = getattr(engine, "answered_by", None)
    PAGES.labels(answered() if answered else engine.name).inc()


CPU = Counter(
    "handwatch_cpu_seconds",
    "CPU seconds the daemon's threads spent in each stage of a file's way (intake, gate, decode, prepare, ink, "
    "encode, request, publish), by input kind for the stages of a page (jpeg, heif, pdf, ...; empty for a file's)",
    ["stage", "kind"],
)
_on_thread = threading.local()


@contextmanager
def cpu(stage: str, kind: str = "") -> Iterator[None]:
    """Charge this thread's CPU time (`time.thread_time`) to `stage` while inside. A stage entered
    inside another keeps its own time: the outer one is charged only for what is not in an inner one.
    A poppler child's CPU is not a thread's and is not counted here (the process's children's times)."""
    stack = _on_thread.__dict__.setdefault("stack", [])
    now = time.thread_time()
    if stack:
        _charge(stack[-1], now)
    stack.append([stage, kind, now])
    try:
        yield
    finally:
        now = time.thread_time()
        _charge(stack.pop(), now)
        if stack:
            stack[-1][2] = now


def _charge(entry: list, now: float) -> None:
    stage, kind, since = entry
    if now > since:
        CPU.labels(stage, kind).inc(now - since)
