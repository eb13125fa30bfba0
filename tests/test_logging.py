"""Logs as an operator reads them: JSON lines on stdout under journald, one line per success, --log-level,
and never an API key or password — not even one a server echoes back."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import structlog

from tests.support.daemon import inked, tiny_png
from tests.support.fakeopenai import free_port, wait_for
from tests.support.paths import cli_env

KEY = "sk-test-4f9a0c1d2e3b5a67"
PASSWORD = "pw-secret-91827364"


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_the_daemon_writes_json_lines_to_stdout_under_journald_one_per_success(tmp_path, fake_openai, write_config):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = write_config(
        {"endpoints": [{"url": fake_openai.url}], "defaults": {"settle_s": 0.2}, "folders": [{"path": str(inbox)}]}
    )
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with open(out, "wb") as o, open(err, "wb") as e:
        st = os.fstat(o.fileno())  # what systemd puts in JOURNAL_STREAM: the stream it gave us, dev:inode
        proc = subprocess.Popen(
            [sys.executable, "-m", "handwatch", "-c", str(cfg), "run"],
            stdout=o,
            stderr=e,
            stdin=subprocess.DEVNULL,
            env=cli_env({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}),
        )
    try:
        wait_for(lambda: '"daemon.ready"' in out.read_text(), 60, what="daemon.ready on stdout")
        tiny_png(inbox / "one.png", 1)
        wait_for(
            lambda: (inbox / "one.md").exists() and '"file.transcribed"' in out.read_text(), 30, what="one.md and its log line"
        )
        proc.terminate()
        assert proc.wait(60) == 0
    finally:
        proc.kill()
        proc.wait()
    events = json_lines(out.read_text())  # every line is JSON
    assert err.read_text() == ""
    assert all({"event", "level", "timestamp"} <= e.keys() for e in events)
    about = [
        e
        for e in events
        if e.get("path") == str(inbox / "one.png")
        and e["level"] == "info"
        and e["event"] in ("file.transcribed", "job.done", "file.settled")
    ]
    assert [e["event"] for e in about] == ["file.settled", "file.transcribed"]  # settled, then done: once
    done = about[-1]
    assert done["pages"] == 1 and done["tokens"] == 20 and done["endpoint"] == fake_openai.url.split("/")[2]
    assert isinstance(done["job"], int) and isinstance(done["duration_ms"], int)
    assert [e["event"] for e in events][-1] == "daemon.stopped"


def test_other_commands_keep_stdout_for_results_even_under_journald(tmp_path, fake_openai, write_config):
    inked((64, 48)).save(tmp_path / "a.jpg", "JPEG")
    cfg = write_config({"endpoints": [{"url": fake_openai.url}]})
    out = tmp_path / "stdout"
    with open(out, "wb") as o:
        st = os.fstat(o.fileno())
        res = subprocess.run(
            [sys.executable, "-m", "handwatch", "-c", str(cfg), "once", str(tmp_path / "a.jpg")],
            stdout=o,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            env=cli_env({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}),
        )
    assert res.returncode == 0
    assert out.read_text() == f"{tmp_path / 'a.md'}\n"  # only the output path
    assert [e["event"] for e in json_lines(res.stderr)] == ["dialect.detected", "confidence.unsupported", "file.transcribed"]


def test_log_level_on_the_command_line_wins_over_the_config(tmp_path, fake_openai, write_config, run_cli):
    inked((64, 48)).save(tmp_path / "a.jpg", "JPEG")
    inked((64, 48)).save(tmp_path / "b.jpg", "JPEG")
    cfg = write_config({"endpoints": [{"url": fake_openai.url}], "log_level": "info"})
    quiet = run_cli("once", "-c", cfg, "--log-level", "warning", tmp_path / "a.jpg")
    assert quiet.returncode == 0 and quiet.stderr == ""
    loud = run_cli("--log-level", "debug", "once", "-c", cfg, tmp_path / "b.jpg")
    assert loud.returncode == 0 and "file.transcribed" in loud.stderr
    bad = run_cli("once", "-c", cfg, "--log-level", "chatty", tmp_path / "a.jpg")
    assert bad.returncode == 2


def test_no_api_key_or_password_in_any_log_line_or_in_check_output(tmp_path, fake_openai, write_config, run_cli):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    host = fake_openai.url.split("//", 1)[1]
    url = f"http://reader:{PASSWORD}@{host}"
    cfg = write_config(
        {
            "endpoints": [{"url": url, "api_key_env": "HANDWATCH_API_KEY", "timeout_s": 10}],
            "defaults": {"settle_s": 0.2},
            "folders": [{"path": str(inbox)}],
        }
    )
    env = {"HANDWATCH_API_KEY": KEY}
    # A server that repeats the key back, in a reply and in an error message.
    fake_openai.reply(f"I cannot see images. Your key {KEY} is fine.")
    check = run_cli("check", "-c", cfg, env=env)
    assert check.returncode == 69
    assert "does not read images" in check.stdout and "[redacted]" in check.stdout
    fake_openai.reply({"status": 400, "error": f"invalid request for key {KEY} at {url}"})
    log = tmp_path / "daemon.log"
    with open(log, "wb") as e:
        proc = subprocess.Popen(
            [sys.executable, "-m", "handwatch", "-c", str(cfg), "run"],
            stdout=subprocess.DEVNULL,
            stderr=e,
            stdin=subprocess.DEVNULL,
            env=cli_env(env),
        )
    try:
        tiny_png(inbox / "x.png", 1)
        wait_for(
            lambda: "job.failed" in log.read_text() or "job.server_failed" in log.read_text(),
            60,
            what="the server's error in the log",
        )
        proc.terminate()
        proc.wait(60)
    finally:
        proc.kill()
        proc.wait()
    status = run_cli("status", "-c", cfg, env=env)
    everything = check.stdout + check.stderr + log.read_text() + status.stdout + status.stderr
    assert "[redacted]" in log.read_text()
    assert KEY not in everything and PASSWORD not in everything


class Writes:
    """A text stream that keeps each write() call apart, to see how a line is handed over."""

    def __init__(self):
        self.calls: list[str] = []

    def write(self, s: str) -> int:
        self.calls.append(s)
        return len(s)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def test_each_log_line_and_each_progress_line_is_one_write(monkeypatch):
    """Worker threads log while `redo` prints its progress on the same stderr: a line handed over in two
    writes (text, then newline) let the other thread's line land in between — `{event}[2/4] redone …`."""
    from handwatch import log as hwlog
    from handwatch.cli import console

    stream = Writes()
    hwlog.setup(json=True, stream=stream)
    try:
        hwlog.get("test").info("file.transcribed", path="/inbox/a.png")
        hwlog.get("test").warning("endpoint.down", url="http://127.0.0.1:1/v1")
    finally:
        structlog.reset_defaults()  # other in-process tests log where structlog logs by default
    assert len(stream.calls) == 2 and all(c.endswith("\n") and c.count("\n") == 1 for c in stream.calls)
    assert [json.loads(c)["event"] for c in stream.calls] == ["file.transcribed", "endpoint.down"]

    err = Writes()
    monkeypatch.setattr(sys, "stderr", err)
    console.err("cannot read x")
    assert err.calls == ["handwatch: cannot read x\n"]


def test_a_url_password_of_any_length_never_shows_not_even_in_a_config_error(tmp_path, write_config, run_cli):
    """Known secrets are masked only from 8 characters on (masking `ollama` everywhere would garble
    paths), so a short password in an endpoint URL (`admin:admin@`) must be hidden as a URL's password;
    and a config error, printed before any secret is known, must not quote one either."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    url = f"http://admin:pw42@127.0.0.1:{free_port()}/v1"  # nothing listens: check and `once` name the endpoint
    cfg = write_config({"endpoints": [{"url": url, "timeout_s": 5}], "folders": [{"path": str(inbox)}]})
    check = run_cli("check", "-c", cfg)
    assert check.returncode == 69 and "ERROR endpoint http://admin:[redacted]@127.0.0.1:" in check.stdout
    status = run_cli("status", "-c", cfg)
    inked((64, 48)).save(inbox / "a.jpg", "JPEG")
    once = run_cli("once", "-c", cfg, inbox / "a.jpg")
    assert once.returncode != 0 and "admin:[redacted]@127.0.0.1" in once.stderr
    for res in (check, status, once):
        assert "pw42" not in res.stdout + res.stderr

    bad = write_config({"endpoints": [{"url": "ftp://bob:hunter2hunter2@127.0.0.1:9/v1"}]}, name="bad.yaml")
    res = run_cli("check", "-c", bad)
    assert res.returncode == 78
    assert res.stderr == f"config error: {bad}: endpoints[0].url: not an http(s) URL: 'ftp://bob:[redacted]@127.0.0.1:9/v1'\n"
