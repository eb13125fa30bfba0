"""A small world for the review page's tests: real images, the real worker and pipeline against the fake OpenAI
server, and the real web server (uvicorn) on a free 127.0.0.1 port."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from handwatch.config import loader, schema
from handwatch.config.web import Web
from handwatch.safefs import file_sig
from handwatch.service.worker import Worker, build
from handwatch.store.jobs import this_owner
from handwatch.web.server import WebServer
from tests.support.fakeopenai import FakeOpenAI, free_port
from tests.support.pages import draw_page


@dataclass
class World:
    cfg_path: Path
    cfg: schema.Config
    inbox: Path
    files: dict[str, Path] = field(default_factory=dict)
    server: WebServer | None = None
    base: str = ""

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=30, **kw)

    def job_id(self, name: str) -> int:
        db = self.server.db if self.server else build(self.cfg)[0]
        row = db.connect().execute("SELECT id FROM jobs WHERE path = ?", (str(self.files[name]).encode(),)).fetchone()
        return row["id"]

    def stop(self) -> None:
        if self.server:
            self.server.stop()


FLAGGED = "# Apple cake\n\n- 500 g apples\n- 2 pods of ==cardamon==, crushed\n- 100 g ==suger==\n\nBake at 180 °C."


def pdf_bytes(lines_per_page: list[list[str]]) -> bytes:
    pages = [draw_page(lines, size=(1240, 1754), font_size=56) for lines in lines_per_page]
    buf = io.BytesIO()
    pages[0].save(buf, "PDF", save_all=True, append_images=pages[1:], resolution=150)
    return buf.getvalue()


def make_world(tmp_path: Path, fake: FakeOpenAI, web: dict | None = None, extra: dict | None = None) -> World:
    """Four originals through the real worker: a flagged recipe (truncated twice: kept and flagged, with two
    doubtful words), a clean note, a two-page PDF letter, a file that fails, and one left waiting for the endpoint."""
    inbox = tmp_path / "inbox"
    (inbox / "kitchen").mkdir(parents=True)
    data = {
        "state_dir": str(tmp_path / "state"),
        "endpoints": [{"url": fake.url, "timeout_s": 30}],
        "defaults": {"settle_s": 0},
        "folders": [{"path": str(inbox)}],
        **(extra or {}),
    }
    if web is not None:
        data["web"] = web
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(data, sort_keys=False))
    cfg = loader.load(cfg_path)
    w = World(cfg_path, cfg, inbox)
    w.files["recipe"] = inbox / "kitchen" / "apple-cake.jpg"
    draw_page(["Apple cake", "500 g apples", "2 pods of cardamom", "100 g sugar"], font_name="dkg").save(
        w.files["recipe"], quality=90
    )
    w.files["note"] = inbox / "note.png"
    draw_page(["Call grandma on Sunday"]).save(w.files["note"])
    w.files["letter"] = inbox / "letter.pdf"
    w.files["letter"].write_bytes(pdf_bytes([["Dear Anna,", "thank you"], ["Love,", "Ben"]]))
    w.files["broken"] = inbox / "broken.jpg"
    w.files["broken"].write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)
    w.files["later"] = inbox / "later.jpg"
    draw_page(["Later"]).save(w.files["later"], quality=90)

    db, queue, pipeline, candidates, _ = build(cfg)
    worker = Worker(queue, pipeline, candidates)
    fake.reply(
        {"content": FLAGGED, "finish_reason": "length"},
        {"content": FLAGGED, "finish_reason": "length"},
        "Call grandma on Sunday",
        "Dear Anna,\nthank you",
        "Love,\nBen",
        {"status": 503, "error": "model is loading"},
    )
    from handwatch.safefs import sha256_file

    for name in ("recipe", "note", "letter", "broken", "later"):
        p = w.files[name]
        queue.enqueue(p, sha256_file(p), file_sig(p))
        job = queue.claim(this_owner(), 600)
        assert job is not None and job.path == p
        worker.handle(job)
    db.close()
    return w


def serve(w: World, beat=None) -> World:
    w.cfg = loader.load(w.cfg_path)
    host_port = free_port()
    web = (w.cfg.web or Web()).model_copy(update={"listen": f"127.0.0.1:{host_port}"})
    w.cfg = w.cfg.model_copy(update={"web": web})
    w.server = WebServer(w.cfg, beat=beat)
    w.server.start()
    w.base = f"http://127.0.0.1:{host_port}"
    return w


def form_of(html: str, form_id: str) -> dict[str, str]:
    block = re.search(rf'<form[^>]*id="{form_id}".*?</form>', html, re.S).group(0)
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', block))
    m = re.search(r"<textarea[^>]*>\n?(.*?)</textarea>", block, re.S)
    if m:
        import html as html_mod

        fields["body"] = html_mod.unescape(m.group(1))
    return fields
