"""Shared fixtures: the fake OpenAI server, generated handwriting images, config files, the CLI as a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.daemon import DaemonProc
from tests.support.fakeopenai import FakeOpenAI
from tests.support.pages import draw_page, font  # noqa: F401
from tests.support.paths import REPO, cli_env  # noqa: F401  (REPO: fixtures' cwd)


@pytest.fixture
def daemons():
    """Daemon subprocesses a test starts (tests/support/daemon.py), killed at its end whatever happened."""
    procs: list[DaemonProc] = []
    yield procs
    for p in procs:
        p.kill()


@pytest.fixture
def fake_openai():
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture
def write_config(tmp_path):
    def write(data: dict, name: str = "config.yaml") -> Path:
        data = {"state_dir": str(tmp_path / "state"), **data}
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


@pytest.fixture
def run_cli():
    """`python -m handwatch ...` as a real subprocess: what a user or systemd runs."""

    def run(*args, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "handwatch", *map(str, args)],
            capture_output=True,
            text=True,
            env=cli_env(env),
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    return run


@pytest.fixture
def inbox(tmp_path):
    """An empty folder to watch or scan."""
    d = tmp_path / "inbox"
    d.mkdir()
    return d


@pytest.fixture
def server():
    """The scripted server answering each page with the text its identity stands for (tests/support/daemon.py)."""
    from tests.support.daemon import text_for

    s = FakeOpenAI().start()
    s.default = text_for
    yield s
    s.stop()
