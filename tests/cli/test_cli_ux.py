"""The first hour's dead ends, each with its exact message and exit code: status (daemon, folders, review),
output into a closed pipe, retry of an unknown path, once on a folder, --help, files not taken."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

from handwatch import __version__
from handwatch.cli.parser import build as build_parser
from handwatch.store.state import StateDB
from tests.support.daemon import DaemonProc, id_png, ident_of, markdowns
from tests.support.fakeopenai import wait_for
from tests.support.paths import cli_env


def test_status_says_whether_a_daemon_runs_and_which(tmp_path, inbox, fake_openai, write_config, run_cli):
    cfg = write_config({"endpoints": [{"url": fake_openai.url}], "folders": [{"path": str(inbox)}]})
    res = run_cli("status", "-c", cfg)
    assert res.returncode == 0
    assert res.stdout.splitlines()[0] == "daemon: not running (start it with `handwatch run`, or `systemctl start handwatch`)"
    d = DaemonProc(cfg, tmp_path / "daemon.log")
    try:
        res = run_cli("status", "-c", cfg)
        first = res.stdout.splitlines()[0]
        assert re.fullmatch(
            rf"daemon: running \(pid {d.proc.pid}, since \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ, "
            rf"handwatch {re.escape(__version__)}\)",
            first,
        ), first
        data = json.loads(run_cli("status", "--json", "-c", cfg).stdout)
        assert data["daemon"]["running"] is True and data["daemon"]["pid"] == d.proc.pid
        # A second daemon is refused and does not wipe the first one's name from the lock file.
        second = run_cli("run", "-c", cfg)
        assert second.returncode == 75
        assert json.loads(run_cli("status", "--json", "-c", cfg).stdout)["daemon"]["pid"] == d.proc.pid
    finally:
        assert d.stop() == 0
    assert run_cli("status", "-c", cfg).stdout.startswith("daemon: not running")


def test_status_counts_per_folder_and_lists_the_files_needing_review(tmp_path, fake_openai, write_config, run_cli):
    notes, letters = tmp_path / "notes", tmp_path / "letters"
    notes.mkdir(), letters.mkdir()
    id_png(notes / "a.png", 1)
    id_png(notes / "b.png", 2)
    id_png(letters / "c.png", 3)
    (letters / "bad.png").write_bytes(b"not a picture")
    fake_openai.default = lambda req: "Dear [illegible]," if ident_of(req.image) == 3 else "Call grandma"
    cfg = write_config(
        {
            "endpoints": [{"url": fake_openai.url}],
            "defaults": {"settle_s": 0, "preprocess": {"contrast": False, "deskew": False}},
            "folders": [{"path": str(notes)}, {"path": str(letters)}],
        }
    )
    assert run_cli("scan", "-c", cfg).returncode == 1
    out = run_cli("status", "-c", cfg).stdout.splitlines()
    assert "pending 0  running 0  done 3  failed 1" in out
    assert f"folder {notes}: not watched by a running daemon yet; done 2" in out
    assert f"folder {letters}: not watched by a running daemon yet; done 1, failed 1" in out
    review = out.index("needs review (1):")
    assert out[review + 1] == f"  {letters / 'c.md'}: 1 uncertain word"
    assert out[out.index("failed (1):") + 1].startswith(f"  {letters / 'bad.png'}: ")
    data = json.loads(run_cli("status", "--json", "-c", cfg).stdout)
    assert data["needs_review"] == [
        {"path": str(letters / "c.md"), "source": str(letters / "c.png"), "reasons": ["1 uncertain word"]}
    ]
    assert {f["path"]: f["counts"]["done"] for f in data["folders"]} == {str(notes): 2, str(letters): 1}


def test_output_into_a_closed_pipe_is_no_traceback(tmp_path, write_config):
    """`status | head` used to end in a BrokenPipeError traceback."""
    cfg = write_config({"defaults": {"engine": "tesseract"}, "folders": [{"path": str(tmp_path)}]})
    db = StateDB(tmp_path / "state").connect()
    db.executemany(
        "INSERT INTO jobs(path, sha256, size, mtime_ns, state, reason, created, updated) VALUES(?,?,?,?,?,?,?,?)",
        [
            (
                str(tmp_path / f"IMG_{i:05}.jpg").encode(),
                "-",
                1,
                1,
                "failed",
                "corrupt or truncated JPEG: " + "x" * 200,
                time.time(),
                time.time(),
            )
            for i in range(3000)
        ],
    )  # ~700 KB of output: far more than a pipe holds
    for command in ("status", "status --json", "check"):
        err = tmp_path / "stderr.txt"
        shell = f"{sys.executable} -m handwatch -c {cfg} {command} 2>{err} | head -n 1"
        res = subprocess.run(["sh", "-c", shell], capture_output=True, text=True, env=cli_env(), timeout=120)
        assert res.stdout.strip(), command
        assert err.read_text() == "", (command, err.read_text())


def test_retry_of_a_path_handwatch_does_not_know_says_so_and_exits_65(tmp_path, inbox, fake_openai, write_config, run_cli):
    cfg = write_config({"endpoints": [{"url": fake_openai.url}], "defaults": {"settle_s": 0}, "folders": [{"path": str(inbox)}]})
    id_png(inbox / "seen.png", 1)
    assert run_cli("scan", "-c", cfg).returncode == 0
    id_png(inbox / "new.png", 2)
    res = run_cli("retry", "-c", cfg, tmp_path / "nowhere.jpg", inbox / "new.png", inbox / "seen.md")
    assert res.returncode == 65
    assert f"handwatch: {tmp_path / 'nowhere.jpg'}: handwatch has no record of this file (no such file)" in res.stderr
    assert (
        f"handwatch: {inbox / 'new.png'}: handwatch has no record of this file (not seen yet; `handwatch scan` "
        f"takes it, or `handwatch once {inbox / 'new.png'}` now)"
    ) in res.stderr
    assert res.stdout.strip() == "1 file(s) back in the queue"  # seen.md named its original, seen.png
    data = json.loads(run_cli("status", "--json", "-c", cfg).stdout)
    assert data["counts"]["pending"] == 1


def test_once_on_a_folder_says_to_scan(inbox, fake_openai, write_config, run_cli):
    cfg = write_config({"endpoints": [{"url": fake_openai.url}], "folders": [{"path": str(inbox)}]})
    res = run_cli("once", "-c", cfg, inbox)
    assert res.returncode == 65
    assert f"handwatch: {inbox}: is a folder: use `handwatch scan` for the watched folders, or list the files" in res.stderr


def test_every_command_has_a_description_and_an_example(run_cli):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) == {"run", "once", "scan", "check", "status", "retry", "web", "reindex", "redo", "unit"}
    for name, sub in commands.items():
        text = sub.format_help()
        assert sub.description and len(sub.description) > 40, name
        examples = text.split("examples:\n", 1)[1].splitlines()
        assert examples and all(line.strip().startswith(("handwatch ", "systemctl ", "sudo ")) for line in examples if line)
        assert any("handwatch" in line and name in line for line in examples), (name, examples)
    res = run_cli("scan", "--help")
    assert res.returncode == 0 and "still being written" in " ".join(res.stdout.split())
    assert "examples:\n  handwatch -c /etc/handwatch/config.yaml scan" in res.stdout


def test_a_file_handwatch_will_not_take_is_logged_once_with_the_reason(tmp_path, inbox, fake_openai, write_config):
    """A .gif dropped in a watched folder used to vanish without a word."""
    cfg = write_config(
        {"endpoints": [{"url": fake_openai.url}], "defaults": {"settle_s": 0.2}, "rescan_s": 5, "folders": [{"path": str(inbox)}]}
    )
    d = DaemonProc(cfg, tmp_path / "daemon.log")
    try:
        (inbox / "cat.gif").write_bytes(b"GIF89a" + b"\0" * 100)
        (inbox / ".DS_Store").write_bytes(b"junk")
        id_png(inbox / "note.png", 1)

        def said():
            return [e for e in d.events("file.ignored") if e["path"] == str(inbox / "cat.gif")]

        wait_for(lambda: said() and (inbox / "note.md").exists(), 30, what="cat.gif logged, note.md written")
        (e,) = said()
        assert e["level"] == "info" and e["reason"].startswith("not a format handwatch reads (it reads ")
        rescans = len(d.events("rescan.done"))
        wait_for(lambda: len(d.events("rescan.done")) >= rescans + 2, 60, what="two more rescans")
        assert len(said()) == 1  # once per version, not at every rescan
        assert not [e for e in d.events("file.ignored") if e["path"] != str(inbox / "cat.gif")]  # no noise
        (inbox / "cat.gif").write_bytes(b"GIF89a" + b"\1" * 200)  # a new version is said again
        wait_for(lambda: len(said()) == 2, 30, what="the new version logged")
    finally:
        assert d.stop() == 0
    assert markdowns(inbox) == [inbox / "note.md"]
    assert Path(inbox / "cat.gif").exists()
