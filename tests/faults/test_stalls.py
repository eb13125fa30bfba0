"""Regression tests for issue #10: nothing stalls the daemon or crash-loops it. Each runs the real daemon (or
the CLI) against real files, the scripted server and a datagram socket in systemd's place, and each failed
on the code before its fix."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tests.support.daemon import (
    NO_DAC,
    PLAIN,
    DaemonProc,
    NotifySocket,
    body,
    id_png,
    ident_of,
    markdowns,
    status,
    text_for,
    text_of,
)
from tests.support.fakeopenai import wait_for
from tests.support.paths import cli_env


@pytest.fixture
def notify(tmp_path):
    n = NotifySocket(tmp_path / "notify.sock")
    yield n
    n.close()


@pytest.fixture
def config(tmp_path, inbox, server):
    def write(folder: dict | None = None, url: str | None = None, endpoint: dict | None = None, **top) -> Path:
        data = {
            "state_dir": str(tmp_path / "state"),
            "endpoints": [{"url": url or server.url, "max_concurrency": 4, "timeout_s": 20, **(endpoint or {})}],
            "defaults": {"settle_s": 0.2, "preprocess": PLAIN},
            "rescan_s": 600,
            "folders": [{"path": str(inbox), **(folder or {})}],
            **top,
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


@pytest.fixture
def daemon(tmp_path, notify):
    procs: list[DaemonProc] = []

    def start(cfg: Path, prefix: tuple[str, ...] = ()) -> DaemonProc:
        p = DaemonProc(cfg, tmp_path / "daemon.log", env=notify.env(), prefix=prefix)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()


def failed(cfg: Path) -> dict[str, str]:
    return {Path(f["path"]).name: f["reason"] for f in status(cfg)["failed"]}


def waiting(cfg: Path) -> dict[str, str]:
    return {Path(w["path"]).name: w["reason"] for w in status(cfg)["waiting"]}


def still_pinging(notify: NotifySocket, more: int = 2) -> None:
    n = notify.count("WATCHDOG=1")
    wait_for(lambda: notify.count("WATCHDOG=1") >= n + more, 30, what="more watchdog pings")


# --- 1. special files ------------------------------------------------------------------------------


def test_a_fifo_named_like_a_photo_neither_blocks_nor_keeps_the_daemon_from_stopping(inbox, config, daemon, notify):
    cfg = config()
    d = daemon(cfg)
    os.mkfifo(inbox / "x.jpg")
    id_png(inbox / "good.png", 1)
    wait_for(lambda: (inbox / "good.md").exists(), 30, what="good.md")
    wait_for(lambda: "x.jpg" in failed(cfg), 30, what="the FIFO failed with a reason")
    assert failed(cfg)["x.jpg"] == "not a regular file (a FIFO)"
    still_pinging(notify)
    assert d.stop() == 0


def test_a_fifo_named_handwatch_yaml_fails_the_files_under_it_and_every_restart_starts(inbox, config, daemon):
    (inbox / "sub").mkdir()
    os.mkfifo(inbox / "sub" / ".handwatch.yaml")
    id_png(inbox / "sub" / "a.png", 1)
    id_png(inbox / "good.png", 2)
    cfg = config()
    for _ in range(2):  # the catch-up scan at every start reads the rule file
        d = daemon(cfg)
        wait_for(lambda: (inbox / "good.md").exists() and "a.png" in failed(cfg), 30, what="good.md and a.png failed")
        assert ".handwatch.yaml: cannot read: is not a regular file (a FIFO)" in failed(cfg)["a.png"]
        assert d.stop() == 0


# --- 2. huge files, and deaths that are not the file's fault --------------------------------------


def test_a_huge_sparse_file_is_refused_without_being_read_and_the_pings_go_on(inbox, config, daemon, notify):
    cfg = config()
    d = daemon(cfg)
    with open(inbox / "big.jpg", "wb") as f:
        f.write(b"\xff\xd8\xff\xe0")
        f.truncate(40 << 30)  # 40 GB, nearly all of it a hole
    id_png(inbox / "good.png", 1)
    wait_for(lambda: "big.jpg" in failed(cfg) and (inbox / "good.md").exists(), 60, what="big.jpg refused")
    assert failed(cfg)["big.jpg"] == "file is 42.9 GB, over the 2.1 GB limit for a photo or scan"
    still_pinging(notify)
    assert d.stop() == 0


def test_kills_during_a_request_never_quarantine_the_file(inbox, config, daemon, server):
    release = threading.Event()
    server.default = lambda rec: {**text_for(rec), "hold": release}
    cfg = config()
    id_png(inbox / "a.png", 1)
    for n in range(1, 5):  # the watchdog, or an operator, kills the daemon while the model is working
        d = daemon(cfg)
        wait_for(lambda n=n: len(server.requests) >= n, 30, what=f"request {n}")
        d.kill()
    server.default = text_for
    release.set()
    d = daemon(cfg)
    wait_for(lambda: (inbox / "a.md").exists(), 30, what="a.md after four kills")
    assert body(inbox / "a.md") == text_of(1) and not failed(cfg)
    assert d.stop() == 0


# --- 3. rule files the YAML parser chokes on ----------------------------------------------------


@pytest.mark.parametrize("text", ["max_pages: " + "9" * 5000 + "\n", "[" * 5000 + "\n"])
def test_a_rule_file_the_parser_chokes_on_fails_its_files_and_never_the_daemon(inbox, config, daemon, text):
    (inbox / "sub").mkdir()
    (inbox / "sub" / ".handwatch.yaml").write_text(text)
    id_png(inbox / "sub" / "a.png", 1)
    cfg = config()
    for i in range(2):
        d = daemon(cfg)
        id_png(inbox / "good.png", 2 + i)
        wait_for(lambda: (inbox / "good.md").exists() and "a.png" in failed(cfg), 30, what="a.png failed")
        assert "sub/.handwatch.yaml: " in failed(cfg)["a.png"] and "invalid YAML" in failed(cfg)["a.png"]
        assert d.stop() == 0
        (inbox / "good.md").unlink()
        (inbox / "good.png").unlink()


# --- 4. a database locked by another process ----------------------------------------------------


def test_a_database_locked_for_35_seconds_delays_the_work_and_never_ends_it(tmp_path, inbox, config, daemon, notify):
    cfg = config()
    d = daemon(cfg)
    id_png(inbox / "before.png", 1)
    wait_for(lambda: (inbox / "before.md").exists(), 30, what="before.md")
    lock = sqlite3.connect(tmp_path / "state" / "state.sqlite3", isolation_level=None, timeout=30)
    lock.execute("BEGIN IMMEDIATE")
    try:
        id_png(inbox / "during.png", 2)
        threading.Event().wait(35)  # the other process holds the lock longer than SQLite's busy timeout
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    wait_for(lambda: (inbox / "during.md").exists(), 90, what="during.md after the lock was released")
    id_png(inbox / "after.png", 3)
    wait_for(lambda: (inbox / "after.md").exists(), 30, what="after.md")
    still_pinging(notify)
    assert d.stop() == 0


# --- 5. a file the server always fails on ----------------------------------------------------------


def test_a_poison_file_fails_with_the_servers_message_and_delays_no_one(inbox, config, daemon, server):
    def reply(rec):
        if ident_of(rec.image) == 66:
            return {"status": 500, "error": "CUDA error: an illegal memory access was encountered"}
        return text_for(rec)

    server.default = reply
    cfg = config()
    d = daemon(cfg)
    id_png(inbox / "poison.png", 66)
    for i in range(3):
        id_png(inbox / f"good{i}.png", i + 1)
    wait_for(lambda: "poison.png" in failed(cfg), 60, what="the poison file failed")
    assert failed(cfg)["poison.png"].endswith("CUDA error: an illegal memory access was encountered (3 tries)")
    assert all((inbox / f"good{i}.md").exists() for i in range(3))
    assert status(cfg)["endpoints"][0]["up"] is True
    assert d.stop() == 0


# --- 6. the server switches models ----------------------------------------------------------------


def test_when_the_server_loads_another_model_it_is_detected_again(inbox, config, daemon, server):
    server.models, server.strict_models = ["model-a"], True
    cfg = config()
    d = daemon(cfg)
    id_png(inbox / "a.png", 1)
    wait_for(lambda: (inbox / "a.md").exists(), 30, what="a.md")
    server.models = ["model-b"]  # LM Studio: another model loaded, the old name gone
    id_png(inbox / "b.png", 2)
    wait_for(lambda: (inbox / "b.md").exists(), 60, what="b.md with the new model")
    assert server.requests[-1].model == "model-b" and "model: model-b" in (inbox / "b.md").read_text()
    assert not failed(cfg)
    assert d.stop() == 0


# --- 7. an endpoint URL that points at the wrong thing --------------------------------------------


class _Wrong:
    """Not an OpenAI API: a web UI answering HTML with 200, or a server answering 404 for every path."""

    def __init__(self, status: int):
        code = status

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _reply(self):
                data = b"<!DOCTYPE html><html><body>Open WebUI</body></html>"
                self.send_response(code)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._reply()

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self._reply()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("code, says", [(200, "got an HTML page, not JSON"), (404, "HTTP 404")])
def test_an_endpoint_that_is_not_an_openai_api_is_down_with_a_hint_never_a_traceback(inbox, config, daemon, run_cli, code, says):
    wrong = _Wrong(code)
    try:
        cfg = config(url=wrong.url + "/ui", endpoint={"model": "qwen"})
        photo = id_png(inbox / "a.png", 1)
        for cmd in (("once", photo), ("check",)):
            res = run_cli(*cmd, "-c", cfg)
            assert res.returncode == 69, res.stderr
            out = res.stdout + res.stderr
            assert says in out and "does the URL end in /v1" in out and "Traceback" not in out, out
        d = daemon(cfg)
        wait_for(lambda: "a.png" in waiting(cfg), 30, what="a.png waiting for the endpoint")
        st = status(cfg)
        assert st["endpoints"][0]["up"] is False and says in st["endpoints"][0]["reason"]
        assert not st["failed"] and "Traceback" not in d.log()
        assert d.stop() == 0
    finally:
        wrong.stop()


# --- 8. a watched folder that goes away ----------------------------------------------------------


def test_a_watched_folder_removed_and_created_again_is_watched_again_at_once(inbox, config, daemon):
    cfg = config()
    d = daemon(cfg)
    shutil.rmtree(inbox)  # a share unmounted and mounted again, a sync client resetting the folder
    wait_for(lambda: "missing" in (status(cfg)["folders"][0]["state"] or ""), 30, what="the folder shown missing")
    inbox.mkdir()
    wait_for(lambda: len(d.events("watch.started")) >= 2, 30, what="the folder watched again")
    id_png(inbox / "a.png", 1)
    wait_for(lambda: (inbox / "a.md").exists(), 30, what="a.md (the rescan is 600 s away)")
    assert d.stop() == 0


def test_a_watched_folder_that_does_not_exist_is_waited_for_and_never_created(tmp_path, config, daemon):
    later = tmp_path / "later"
    cfg = config()
    data = yaml.safe_load(cfg.read_text())
    data["folders"][0]["path"] = str(later)
    cfg.write_text(yaml.safe_dump(data))
    d = daemon(cfg)
    wait_for(lambda: status(cfg)["folders"][0]["state"], 30, what="the folder's state")
    assert status(cfg)["folders"][0]["state"].startswith("missing: does not exist")
    assert not later.exists()
    later.mkdir()
    id_png(later / "a.png", 1)
    wait_for(lambda: (later / "a.md").exists(), 30, what="a.md once the folder appeared")
    assert d.stop() == 0


# --- 9. a file handwatch may not read yet ----------------------------------------------------------


def test_an_unreadable_file_is_shown_once_as_waiting_and_done_once_readable(inbox, config, daemon):
    cfg = config(rescan_s=5)
    photo = id_png(inbox / "a.png", 1)
    os.chmod(photo, 0)
    d = daemon(cfg, prefix=NO_DAC)  # as root, but bound by permission bits like any service user
    wait_for(lambda: "a.png" in waiting(cfg), 30, what="a.png waiting")
    assert "waiting for permission to read" in waiting(cfg)["a.png"]
    n = len(d.events("rescan.done"))
    wait_for(lambda: len(d.events("rescan.done")) >= n + 2, 30, what="two more rescans")
    assert len(d.events("file.parked")) == 1 and not d.events("file.unreadable")
    os.chmod(photo, 0o644)
    wait_for(lambda: (inbox / "a.md").exists(), 30, what="a.md once readable")
    assert body(inbox / "a.md") == text_of(1)
    assert d.stop() == 0


def test_the_cli_never_runs_the_daemon_twice_on_one_state_dir(inbox, config, daemon):
    cfg = config()
    daemon(cfg)
    res = subprocess.run(
        [sys.executable, "-m", "handwatch", "-c", str(cfg), "run"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 75 and "another handwatch daemon is running" in res.stderr
    assert markdowns(inbox) == []
