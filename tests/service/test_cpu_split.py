"""Where the CPU goes: `metrics.cpu` charges each stage its own thread CPU (an inner stage's time is not its
outer's), and a real file through the pipeline charges decode, prepare, ink, encode and request by kind —
the counter `bench/throughput.py` reads off /metrics to split a burst's CPU per page."""

from __future__ import annotations

import threading
import time

from prometheus_client import REGISTRY

from handwatch import metrics
from handwatch.config import loader
from handwatch.service.pipeline import Pipeline
from handwatch.store.state import StateDB
from tests.support.pages import draw_page


def charged(stage: str, kind: str = "") -> float:
    return REGISTRY.get_sample_value("handwatch_cpu_seconds_total", {"stage": stage, "kind": kind}) or 0.0


def spin(cpu_s: float) -> None:
    """Burn this thread's CPU for `cpu_s` seconds of its own CPU time (not wall time)."""
    until = time.thread_time() + cpu_s
    while time.thread_time() < until:
        pass


def test_a_stage_inside_another_keeps_its_own_cpu_and_the_outer_gets_the_rest():
    outer0, inner0 = charged("t-outer"), charged("t-inner", "jpeg")
    with metrics.cpu("t-outer"):
        spin(0.03)
        with metrics.cpu("t-inner", "jpeg"):
            spin(0.05)
        spin(0.02)
    outer, inner = charged("t-outer") - outer0, charged("t-inner", "jpeg") - inner0
    assert 0.05 <= inner < 0.07
    assert 0.05 <= outer < 0.07  # 0.03 + 0.02: not the inner 0.05 as well


def test_another_threads_cpu_is_not_charged_to_this_threads_stage():
    before = charged("t-quiet")
    busy = threading.Thread(target=spin, args=(0.1,))
    with metrics.cpu("t-quiet"):
        busy.start()
        busy.join()  # this thread only waits
    assert charged("t-quiet") - before < 0.05


def test_a_page_through_the_pipeline_is_charged_stage_by_stage_under_its_kind(tmp_path, fake_openai, write_config):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = loader.load(write_config({"endpoints": [{"url": fake_openai.url}], "folders": [{"path": str(inbox)}]}))
    fake_openai.reply({"content": "Buy flour and sugar"})
    page = inbox / "note.jpg"
    draw_page(["Buy flour and sugar", "and eggs"]).convert("RGB").save(page, quality=90)
    stages = ("decode", "prepare", "ink", "encode", "request")
    before = {s: charged(s, "jpeg") for s in stages}
    Pipeline(cfg, StateDB(cfg.state_dir)).process(page)
    spent = {s: charged(s, "jpeg") - before[s] for s in stages}
    assert all(v > 0 for v in spent.values()), spent
