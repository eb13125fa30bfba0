"""`handwatch scan`: waits for files still being written, accounts for every file it saw, and on a terminal
shows a progress bar that log lines never run through (checked on a real pseudo-terminal, rendered by a
terminal emulator); no bar when stderr is not a terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pyte

from tests.support.daemon import id_png, ident_of, markdowns
from tests.support.fakeopenai import wait_for
from tests.support.paths import cli_env


def test_scan_right_after_a_copy_waits_for_the_files_to_settle(inbox, fake_openai, write_config, run_cli):
    """It used to skip files younger than settle_s without a word and say "0 transcribed"."""
    for i in (1, 2):
        id_png(inbox / f"p{i}.png", i)
        later = time.time() + 3600  # as fresh as can be, whatever the clock says while the CLI starts
        os.utime(inbox / f"p{i}.png", (later, later))
    cfg = write_config({"endpoints": [{"url": fake_openai.url}], "defaults": {"settle_s": 2}, "folders": [{"path": str(inbox)}]})
    res = run_cli("scan", "-c", cfg)
    assert res.returncode == 0, res.stderr
    assert "scan: 2 transcribed (2 file(s) seen)" in res.stderr
    assert len(markdowns(inbox)) == 2


def test_the_summary_accounts_for_every_file_it_saw(inbox, fake_openai, write_config, run_cli):
    fake_openai.default = lambda req: "Buy [illegible] and sugar" if ident_of(req.image) == 1 else "Call grandma"
    cfg = write_config(
        {
            "endpoints": [{"url": fake_openai.url, "max_concurrency": 1}],
            "defaults": {"settle_s": 0, "preprocess": {"contrast": False, "deskew": False}},
            "folders": [{"path": str(inbox)}, {"path": str(inbox.parent / "not-mounted")}],
        }
    )
    id_png(inbox / "done.png", 5)
    assert run_cli("scan", "-c", cfg).returncode == 0
    id_png(inbox / "a.png", 1)
    shutil.copy(inbox / "a.png", inbox / "a-copy.png")  # the same bytes: the text is reused
    id_png(inbox / "b.png", 2)
    (inbox / "bad.png").write_bytes(b"not a picture")
    (inbox / "x.gif").write_bytes(b"GIF89a")
    (inbox / ".syncthing.c.png.tmp").write_bytes(b"partial")
    res = run_cli("scan", "-c", cfg)
    assert res.returncode == 1, res.stderr  # a file failed
    err = res.stderr
    assert "scan: 2 transcribed, 1 reused, 1 failed, 1 already done, 2 skipped (7 file(s) seen)" in err
    assert re.search(r"  skipped: 1 not a format handwatch reads \(it reads [^)]*\.jpg[^)]*\): x\.gif", err)
    assert "  skipped: 1 temporary or junk name (.syncthing.*.tmp): .syncthing.c.png.tmp" in err
    assert f"  failed: {inbox / 'bad.png'}: " in err
    assert f"Markdown: 3 file(s) written in {inbox}" in err
    assert "needs review (2 of 3):" in err
    assert f"folder {inbox.parent / 'not-mounted'} does not exist (yet): nothing was scanned there" in err
    for name in ("a.md", "a-copy.md"):
        assert f"  {inbox / name}: 1 uncertain word" in err
    assert len(fake_openai.requests) == 3  # done.png, then a (or its copy) and b: nothing read twice

    res = run_cli("scan", "-c", cfg)
    assert res.returncode == 0
    assert "scan: 4 already done, 1 failed before, 2 skipped (7 file(s) seen)" in res.stderr
    assert "1 failed before and are unchanged: `handwatch status` says why, `handwatch retry` tries them again" in res.stderr


class Terminal:
    """A pseudo-terminal with a process on it; what it prints is read as it comes and rendered by pyte."""

    def __init__(self, argv: list[str], cols: int = 160, rows: int = 80):
        self.cols, self.rows = cols, rows
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        env = cli_env({"TERM": "xterm-256color", "COLUMNS": str(cols), "LINES": str(rows)})
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
        os.close(slave)
        self.master = master
        self.data = bytearray()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # the process closed its end
                return
            if not chunk:
                return
            self.data += chunk

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")

    def wait(self, timeout: float = 120) -> int:
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        os.close(self.master)
        return code

    def screen(self) -> list[str]:
        screen = pyte.Screen(self.cols, self.rows)
        pyte.ByteStream(screen).feed(bytes(self.data))
        return [line.rstrip() for line in screen.display]


def test_on_a_terminal_log_lines_stay_above_the_bar(inbox, fake_openai, write_config):
    """The old bar was a `\\r` line that the next log line ran into: `[#####.....] 1/3 2026-… job.done`."""
    gates = [threading.Event() for _ in range(3)]
    fake_openai.reply(*({"content": f"page {i}", "hold": g} for i, g in enumerate(gates)))
    for i in range(3):
        id_png(inbox / f"p{i}.png", i + 1)
    cfg = write_config({"endpoints": [{"url": fake_openai.url}], "defaults": {"settle_s": 0}, "folders": [{"path": str(inbox)}]})
    term = Terminal([sys.executable, "-m", "handwatch", "-c", str(cfg), "scan"])
    try:
        wait_for(lambda: fake_openai.in_flight == 3, 60, what="three requests in flight")
        for k, gate in enumerate(gates, 1):
            gate.set()  # one file finishes: its log lines, then the bar moves on
            wait_for(lambda k=k: f"{k}/3" in term.text(), 60, what=f"the bar at {k}/3")
    finally:
        for gate in gates:
            gate.set()
    assert term.wait() == 0, term.text()
    screen = [line for line in term.screen() if line]
    logged = [i for i, line in enumerate(screen) if "[info" in line]
    assert sum("file.transcribed" in screen[i] for i in logged) == 3, screen
    for i in logged:  # each log line whole, starting with its timestamp: nothing of the bar in it
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", screen[i]), screen[i]
    bars = [i for i, line in enumerate(screen) if "━" in line]
    assert len(bars) == 1, screen  # drawn in place, not once per update
    bar = screen[bars[0]]
    assert "transcribing" in bar and "3/3" in bar and re.search(r"(s/file|files/s), \d+:\d\d left", bar), bar
    summary = next(i for i, line in enumerate(screen) if line.startswith("scan: 3 transcribed"))
    assert max(logged) < bars[0] < summary


def test_no_bar_when_stderr_is_not_a_terminal(inbox, fake_openai, write_config, run_cli):
    for i in range(2):
        id_png(inbox / f"p{i}.png", i + 1)
    cfg = write_config({"endpoints": [{"url": fake_openai.url}], "defaults": {"settle_s": 0}, "folders": [{"path": str(inbox)}]})
    res = run_cli("scan", "-c", cfg)
    assert res.returncode == 0
    assert "━" not in res.stderr and "\r" not in res.stderr and "\x1b[" not in res.stderr
    assert "scan: 2 transcribed (2 file(s) seen)" in res.stderr


def demo_folder(tmp_path: Path, port: int | None = None) -> tuple[Path, Path]:
    """`make demo`'s folder as it makes it: the generated photos and config/demo.yaml (on another port if given)."""
    from tests.support.paths import REPO

    inbox = tmp_path / "demo" / "inbox"
    subprocess.run([sys.executable, "-m", "bench.gen", "demo", str(inbox)], check=True, cwd=REPO, capture_output=True)
    text = (REPO / "config" / "demo.yaml").read_text()
    if port is not None:
        text = text.replace("listen: 127.0.0.1:8765", f"listen: 127.0.0.1:{port}")
    cfg = tmp_path / "demo" / "config.yaml"
    cfg.write_text(text)
    return inbox, cfg


def test_the_demo_says_where_the_markdown_went_and_which_files_need_review(tmp_path, run_cli):
    """`make demo`'s scan, as it runs it: the Tesseract engine on the generated photos, no GPU, no server."""
    inbox, cfg = demo_folder(tmp_path)
    res = run_cli("scan", "-c", cfg)
    assert res.returncode == 0, res.stderr
    assert "scan: 2 transcribed (2 file(s) seen)" in res.stderr
    assert f"Markdown: 2 file(s) written in {inbox}" in res.stderr
    # Tesseract misreads the handwriting font; its own word confidences say so.
    listed = re.findall(rf"^  ({re.escape(str(inbox))}/\w+\.md): .*\d+ uncertain words?$", res.stderr, re.M)
    # Which pages Tesseract is unsure of depends on what it misreads (since the contrast step's
    # knee, it reads pancakes.jpg with one error fewer and is sure of the rest); the count said and
    # the files listed agree, and the todo list it always misreads is among them.
    said = re.search(r"^needs review \((\d) of 2\):$", res.stderr, re.M)
    assert said and int(said.group(1)) == len(listed) >= 1 and str(inbox / "todo.md") in listed, res.stderr
    assert "needs_review: true" in (inbox / "todo.md").read_text()


def test_the_demo_serves_the_review_page_it_names_listing_what_needs_review(tmp_path, run_cli):
    """After its scan, `make demo` runs the daemon with config/demo.yaml, which serves the review page on
    127.0.0.1, and prints that page's address: the page answers there and lists the todo list for review."""
    import urllib.request

    from tests.support.daemon import DaemonProc
    from tests.support.fakeopenai import free_port, wait_for
    from tests.support.paths import REPO

    demo = (REPO / "config" / "demo.yaml").read_text()
    recipe = (REPO / "Makefile").read_text().split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    listen = re.search(r"^  listen: (127\.0\.0\.1:\d+)$", demo, re.M)
    assert listen and f"Review page: http://{listen.group(1)}/" in recipe  # the URL printed is the one served
    port = free_port()
    inbox, cfg = demo_folder(tmp_path, port)
    assert run_cli("scan", "-c", cfg).returncode == 0
    daemon = DaemonProc(cfg, tmp_path / "daemon.log")
    try:
        wait_for(lambda: daemon.events("web.listening"), 30, what="the review page listening")
        assert daemon.events("web.listening")[0]["url"].rstrip("/") == f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
            page = r.read().decode()
        assert r.status == 200 and "todo" in page
    finally:
        assert daemon.stop() == 0


def test_with_the_endpoint_down_everything_waits_and_scan_exits_69(tmp_path, inbox, write_config, run_cli):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    s.close()
    id_png(inbox / "old.png", 1)
    id_png(inbox / "fresh.png", 2)
    later = time.time() + 3600
    os.utime(inbox / "fresh.png", (later, later))
    cfg = write_config(
        {"endpoints": [{"url": url, "model": "m"}], "defaults": {"settle_s": 20}, "folders": [{"path": str(inbox)}]}
    )
    os.utime(inbox / "old.png", (time.time() - 60, time.time() - 60))
    res = run_cli("scan", "-c", cfg)
    assert res.returncode == 69, res.stderr
    assert "scan: 2 waiting (2 file(s) seen)" in res.stderr
    assert f"  waiting: {inbox / 'old.png'}: waiting for endpoint: " in res.stderr
    assert f"  waiting: {inbox / 'fresh.png'}: " in res.stderr
