"""Shared fixtures: the fake OpenAI server, generated handwriting images, config files, the CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image, ImageDraw, ImageFont

from tests.fakeopenai import FakeOpenAI

FONTS = {
    "humor": "/usr/share/fonts/truetype/humor-sans/Humor-Sans.ttf",
    "dkg": "/usr/share/fonts/truetype/fifthhorseman/dkg.ttf",
}
REPO = Path(__file__).resolve().parent.parent


def font(name: str = "humor", size: int = 64) -> ImageFont.FreeTypeFont:
    path = FONTS[name]
    if not os.path.exists(path):
        pytest.fail(f"font {path} missing: install fonts-humor-sans and fonts-dkg-handwriting (.ci/run does)")
    return ImageFont.truetype(path, size)


def draw_page(lines: list[str], size=(1800, 900), font_name="humor", font_size=64, bg="white") -> Image.Image:
    im = Image.new("RGB", size, bg)
    d = ImageDraw.Draw(im)
    f = font(font_name, font_size)
    y = 80
    for line in lines:
        d.text((80, y), line, font=f, fill="black")
        y += int(font_size * 1.8)
    return im


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


def cli_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDWATCH")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


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
