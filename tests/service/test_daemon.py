"""The daemon as a real subprocess, with real observers and files, talking HTTP to the fake OpenAI server."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from tests.support.daemon import DaemonProc, inked, markdowns, status, tiny_png
from tests.support.fakeopenai import FakeOpenAI, free_port, wait_for


@pytest.fixture
def start(tmp_path, write_config):
    procs: list[DaemonProc] = []

    def run(url: str, inbox: Path, **folder) -> DaemonProc:
        cfg = write_config(
            {
                "endpoints": [{"url": url, "max_concurrency": 4, "timeout_s": 60}],
                "defaults": {"settle_s": 0.5},
                "rescan_s": 600,
                "folders": [{"path": str(inbox), **folder}],
            }
        )
        p = DaemonProc(cfg, tmp_path / f"daemon{len(procs)}.log")  # one log each: a restart's events are its own
        procs.append(p)
        return p

    yield run
    for p in procs:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()


def test_syncthing_temp_then_rename_with_old_mtime(inbox, fake_openai, start):
    d = start(fake_openai.url, inbox)
    tmp = inbox / ".syncthing.IMG_7.jpg.tmp"
    inked((64, 48)).save(tmp, "JPEG")
    os.utime(tmp, (1_500_000_000, 1_500_000_000))
    os.rename(tmp, inbox / "IMG_7.jpg")
    wait_for(lambda: (inbox / "IMG_7.md").exists(), 30, what="IMG_7.md")
    assert markdowns(inbox) == [inbox / "IMG_7.md"] and len(fake_openai.requests) == 1
    assert d.stop() == 0


def test_file_written_in_chunks_gets_one_job_after_the_last_chunk(inbox, fake_openai, start, tmp_path):
    d = start(fake_openai.url, inbox)
    src = tmp_path / "big.jpg"
    page = Image.effect_noise((800, 600), 20).point(lambda v: min(255, v + 120)).convert("RGB")  # grainy paper: a big file
    ImageDraw.Draw(page).text((40, 250), "a slow writer " * 4, fill=(0, 0, 0), font_size=40)  # and ink, or it is blank
    page.save(src, "JPEG", quality=95)
    data = src.read_bytes()
    target = inbox / "slow.jpg"
    pause = threading.Event()
    with open(target, "wb") as f:  # a slow writer: pauses shorter than settle_s between chunks
        for i in range(0, len(data), len(data) // 5 + 1):
            f.write(data[i : i + len(data) // 5 + 1])
            f.flush()
            pause.wait(0.15)
    wait_for(lambda: (inbox / "slow.md").exists(), 30, what="slow.md")
    assert len(d.events("file.settled")) == 1 and len(fake_openai.requests) == 1
    from handwatch.safefs import sha256_file

    assert f"source_sha256: {sha256_file(target)}" in (inbox / "slow.md").read_text()


def test_a_thousand_files_dropped_at_once_each_get_one_markdown(inbox, fake_openai, start, tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    for i in range(1000):
        tiny_png(staging / f"p{i:04d}.png", i)
    d = start(fake_openai.url, inbox)
    for f in staging.iterdir():
        os.rename(f, inbox / f.name)
    wait_for(
        lambda: len(markdowns(inbox)) >= 1000 and status(d.cfg)["counts"]["done"] == 1000,
        240,
        interval=0.5,
        what="1000 markdowns",
    )
    assert len(markdowns(inbox)) == 1000
    assert len(fake_openai.requests) == 1000  # each file exactly once
    assert d.stop() == 0


def test_sigkill_mid_request_then_restart_finishes_exactly_once(inbox, tmp_path, start):
    server = FakeOpenAI().start()
    try:
        release = threading.Event()
        server.reply({"hold": release, "content": "held reply"})
        for i in range(3):
            tiny_png(inbox / f"k{i}.png", i)
        d = start(server.url, inbox)
        wait_for(lambda: server.in_flight >= 1, 30, what="a request in flight")
        d.proc.kill()  # SIGKILL: no cleanup at all
        d.proc.wait()
        release.set()
        left = status(d.cfg)["counts"]
        assert left["running"] >= 1, (left, d.log()[-4000:])  # the claim of the job in flight outlived the process
        d2 = start(server.url, inbox)
        wait_for(lambda: len(markdowns(inbox)) == 3 and status(d2.cfg)["counts"]["done"] == 3, 60, what="3 markdowns")
        assert d2.events("daemon.starting")[-1]["requeued"] == left["running"], (left, d2.log()[-4000:])
        names = sorted(p.name for p in inbox.iterdir())
        assert names == ["k0.md", "k0.png", "k1.md", "k1.png", "k2.md", "k2.png"]  # no partial or temp file
        assert d2.stop() == 0
    finally:
        server.stop()


def test_endpoint_down_for_a_while_then_back(inbox, start):
    port = free_port()
    d = start(f"http://127.0.0.1:{port}/v1", inbox)
    tiny_png(inbox / "wait.png", 1)
    wait_for(
        lambda: any("waiting for endpoint" in (w["reason"] or "") for w in status(d.cfg)["waiting"]),
        30,
        what="job waiting for the endpoint",
    )
    st = status(d.cfg)
    assert st["counts"]["failed"] == 0 and st["endpoints"][0]["up"] is False
    server = FakeOpenAI(port=port).start()
    try:
        wait_for(lambda: (inbox / "wait.md").exists(), 120, interval=0.2, what="wait.md after the endpoint came back")
        st = status(d.cfg)
        assert st["counts"]["done"] == 1 and st["endpoints"][0]["up"] is True
    finally:
        d.stop()
        server.stop()


def test_name_that_is_not_utf8(inbox, fake_openai, start):
    start(fake_openai.url, inbox)
    raw = os.path.join(os.fsencode(inbox), b"caf\xe9 men\xfc.png")
    inked((40, 40)).save(open(raw, "wb"), "PNG")
    md = os.path.join(os.fsencode(inbox), b"caf\xe9 men\xfc.md")
    wait_for(lambda: os.path.exists(md), 30, what="markdown for the non-UTF-8 name")
    text = open(md, encoding="utf-8").read()
    assert "source: caf\ufffd men\ufffd.png" in text


def test_symlink_to_a_file_outside_is_not_read(inbox, fake_openai, start, tmp_path):
    secret = tiny_png(tmp_path / "secret.png", 9)
    start(fake_openai.url, inbox)
    (inbox / "link.png").symlink_to(secret)
    tiny_png(inbox / "real.png", 1)
    wait_for(lambda: (inbox / "real.md").exists(), 30, what="real.md")
    assert not (inbox / "link.md").exists() and len(fake_openai.requests) == 1


def test_bad_file_fails_with_reason_and_retry_requeues_it(inbox, fake_openai, start, run_cli):
    d = start(fake_openai.url, inbox)
    (inbox / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 10)
    (inbox / "empty.png").write_bytes(b"")
    wait_for(lambda: status(d.cfg)["counts"]["failed"] == 2, 30, what="two failures")
    reasons = {Path(f["path"]).name: f["reason"] for f in status(d.cfg)["failed"]}
    assert reasons["empty.png"] == "empty file (0 bytes)"
    assert reasons["broken.jpg"].startswith("corrupt or truncated JPEG")
    text = run_cli("status", "-c", d.cfg).stdout
    assert "failed 2" in text and "empty.png: empty file (0 bytes)" in text
    res = run_cli("retry", "-c", d.cfg, inbox / "empty.png")
    assert res.returncode == 0 and "1 file(s)" in res.stdout
    wait_for(
        lambda: status(d.cfg)["counts"]["failed"] == 2 and not status(d.cfg)["counts"]["pending"],
        30,
        what="retried file failing again",
    )
    assert d.proc.poll() is None  # bad input never stops the daemon


def test_files_present_at_start_and_after_move(inbox, fake_openai, start):
    for i in range(3):
        tiny_png(inbox / f"old{i}.png", i)
    d = start(fake_openai.url, inbox, after={"move": "done"})
    wait_for(
        lambda: len(list((inbox / "done").glob("*.png"))) == 3 if (inbox / "done").exists() else False, 30, what="originals moved"
    )
    assert sorted(p.name for p in markdowns(inbox)) == ["old0.md", "old1.md", "old2.md"]
    assert not list(inbox.glob("*.png"))
    assert len(fake_openai.requests) == 3  # the moved originals are not inputs again
    assert d.stop() == 0


def test_sigterm_gives_in_flight_work_its_grace_then_leaves_the_rest_queued(inbox, tmp_path, start):
    server = FakeOpenAI().start()
    try:
        release = threading.Event()
        server.default = {"hold": release, "content": "late"}
        for i in range(2):
            tiny_png(inbox / f"t{i}.png", i)
        d = start(server.url, inbox)
        wait_for(lambda: server.in_flight >= 1, 30, what="request in flight")
        d.proc.send_signal(signal.SIGTERM)
        release.set()  # the in-flight requests finish within the grace time
        assert d.proc.wait(timeout=60) == 0
        st = status(d.cfg)
        assert st["counts"]["running"] == 0 and st["counts"]["failed"] == 0
        assert st["counts"]["done"] + st["counts"]["pending"] == 2
    finally:
        server.stop()


def test_scan_processes_everything_without_a_transcription(inbox, fake_openai, write_config, run_cli):
    for i in range(4):
        tiny_png(inbox / f"s{i}.png", i)
    (inbox / "bad.png").write_bytes(b"nope")
    cfg = write_config({"endpoints": [{"url": fake_openai.url}], "defaults": {"settle_s": 0}, "folders": [{"path": str(inbox)}]})
    res = run_cli("scan", "-c", cfg)
    assert res.returncode == 1  # one file failed
    assert len(markdowns(inbox)) == 4 and "4 transcribed, 1 failed" in res.stderr
    res = run_cli("scan", "-c", cfg)
    assert res.returncode == 0 and len(fake_openai.requests) == 4  # nothing done twice
