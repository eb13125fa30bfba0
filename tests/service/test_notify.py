"""Notifications: the pure batching rule with an injected clock; apprise posting to a real HTTP receiver on
127.0.0.1 from state the real worker made; and the daemon (a real subprocess) serving the page and notifying."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from handwatch.config import loader
from handwatch.service.notify import Batch, Event, Notifier, compose
from handwatch.store.state import StateDB
from tests.support.fakeopenai import free_port, wait_for
from tests.support.pages import draw_page
from tests.support.paths import cli_env
from tests.support.receiver import Receiver
from tests.support.webworld import FLAGGED, make_world


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def ev(kind: str, n: int) -> Event:
    return Event(kind, f"{kind}:{n}", f"IMG_{n}.jpg", "why", f"http://h/file/{n}")


def test_the_first_event_goes_at_once_then_at_most_one_message_per_every():
    now = [1000.0]
    b = Batch(600, clock=lambda: now[0])
    assert not b.due()
    b.add([ev("failed", 1)])
    assert b.due() and [e.key for e in b.take()] == ["failed:1"]
    b.add([ev("failed", 2), ev("needs_review", 3), ev("failed", 2)])
    now[0] += 599
    assert not b.due()
    now[0] += 1
    assert b.due() and [e.key for e in b.take()] == ["failed:2", "needs_review:3"]
    now[0] += 10_000
    assert not b.due()  # nothing new: no message
    b.add([ev("failed", 4)])
    assert b.due()
    sent = b.take()
    b.put_back(sent)  # sending failed
    assert [e.key for e in b.pending] == ["failed:4"]


def test_a_message_summarises_and_links_each_file():
    events = [ev("needs_review", i) for i in range(12)] + [
        ev("failed", 99),
        Event("endpoint_down", "d", "http://gpu:1234/v1", "cannot connect"),
    ]
    title, body = compose(events, "http://nas.lan:8765")
    assert title == "handwatch: 12 files need review, 1 file failed, 1 endpoint is down"
    assert "- IMG_0.jpg: why\n  http://h/file/0" in body and "- and 2 more" in body and "IMG_11.jpg" not in body
    assert "File failed:\n- IMG_99.jpg: why" in body and "http://gpu:1234/v1: cannot connect" in body
    assert body.rstrip().endswith("Review page: http://nas.lan:8765/")


def test_notifications_from_the_database_through_apprise(tmp_path, fake_openai, receiver):
    w = make_world(
        tmp_path,
        fake_openai,
        web={"public_url": "http://nas.lan:8765"},
        extra={"notify": {"urls": [receiver.url], "every": "10m"}},
    )
    # make_world ran the worker before the notifier existed: what happened then is not news
    cfg = loader.load(w.cfg_path)
    db = StateDB(cfg.state_dir)
    clock = [0.0]  # the database's own timestamps are real time; the notifier's cursor starts before them
    n = Notifier(cfg, db, clock=lambda: clock[0])
    assert n.tick()
    msg = receiver.messages[-1]
    assert msg["title"] == "handwatch: 1 file needs review, 1 file failed, 1 endpoint is down"
    jid = w.job_id("recipe")
    assert f"- apple-cake.jpg: truncated: the reply hit max_tokens\n  http://nas.lan:8765/file/{jid}" in msg["message"]
    assert "corrupt or truncated JPEG" in msg["message"] and "HTTP 503 unavailable (model is loading)" in msg["message"]
    assert "cardamon" not in msg["message"] and "apples" not in msg["message"]  # never the transcription, unless asked
    assert not n.tick() and len(receiver.messages) == 1  # seen once, sent once


def test_the_transcription_only_when_the_rule_says_so(tmp_path, fake_openai, receiver):
    w = make_world(
        tmp_path, fake_openai, extra={"notify": {"urls": [receiver.url], "on": ["needs_review"], "include_text": True}}
    )
    cfg = loader.load(w.cfg_path)
    assert Notifier(cfg, StateDB(cfg.state_dir), clock=lambda: 0.0).tick()
    msg = receiver.messages[-1]
    assert msg["title"] == "handwatch: 1 file needs review"
    assert "# Apple cake - 500 g apples - 2 pods of cardamon, crushed" in msg["message"]  # marks dropped, one line
    assert "/file/" not in msg["message"]  # no web: configured, so no link to give


def test_notify_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("notify:\n  urls: ['nosuchservice://x']\n  on: [needs_review, lunch]\n  every: soon\n")
    with pytest.raises(loader.ConfigError) as e:
        loader.load(bad)
    lines = "\n".join(e.value.lines())
    assert "notify.urls: not a notification URL apprise knows: [0] nosuchservice://" in lines
    assert "notify.on[1]: Input should be 'needs_review', 'failed' or 'endpoint_down'" in lines
    assert "notify.every: not a duration: 'soon'" in lines


def test_the_daemon_serves_the_page_and_notifies(tmp_path, fake_openai, receiver):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    port = free_port()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "state_dir": str(tmp_path / "state"),
                "endpoints": [{"url": fake_openai.url, "timeout_s": 30}],
                "defaults": {"settle_s": 0.3},
                "folders": [{"path": str(inbox)}],
                "web": {"listen": f"127.0.0.1:{port}"},
                "notify": {"urls": [receiver.url], "every": 3600},
            }
        )
    )
    log = tmp_path / "daemon.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "handwatch", "-c", str(cfg), "run"],
        stdout=subprocess.DEVNULL,
        stderr=open(log, "ab"),
        env=cli_env(),
        stdin=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: "daemon.ready" in log.read_text() or proc.poll() is not None, 30, what="daemon ready")
        assert proc.poll() is None, log.read_text()
        with httpx.Client(base_url=base, timeout=30) as c:
            assert c.get("/healthz").json() == {"ok": True, "checks": {"database": "ok", "daemon": "ok", "endpoints": "ok"}}
            fake_openai.reply({"content": FLAGGED, "finish_reason": "length"}, {"content": FLAGGED, "finish_reason": "length"})
            draw_page(["Apple cake"]).save(inbox / "cake.jpg", quality=90)
            wait_for(lambda: (inbox / "cake.md").exists(), 30, what="cake.md")
            wait_for(lambda: receiver.messages, 30, what="a notification")
            assert receiver.messages[0]["title"] == "handwatch: 1 file needs review"
            assert f"{base}/file/1" in receiver.messages[0]["message"]
            assert "cake.jpg" in c.get("/").text
            metrics = c.get("/metrics").text
            assert f'handwatch_pages_total{{endpoint="{fake_openai.url}"}} 1.0' in metrics
            assert "handwatch_needs_review 1.0" in metrics and "handwatch_healthy 1.0" in metrics
            assert c.get("/healthz").json()["checks"] == {"database": "ok", "daemon": "ok", "endpoints": "ok"}
    finally:
        proc.terminate()
        assert proc.wait(60) == 0, log.read_text()
    with pytest.raises(httpx.ConnectError):
        httpx.get(base + "/healthz", timeout=5)
    assert Path(log).read_text().count("web.listening") == 1
