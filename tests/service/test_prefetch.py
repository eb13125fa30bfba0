"""Pages are prepared ahead of free request slots, and what waits is bounded and encoded (prefetch.py).

The fake server holds every reply until the test lets go, so whatever the daemon would pile up
while the GPU is busy does pile up here, and the test looks at it while it is there."""

from __future__ import annotations

import io
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from handwatch.config import loader
from handwatch.errors import EngineUnavailable, NotADocument
from handwatch.prepare import decode
from handwatch.safefs import file_sig, sha256_file
from handwatch.service import prefetch
from handwatch.service.worker import build_runtime
from handwatch.service.workpool import WorkerPool
from handwatch.store.jobs import JobQueue
from handwatch.store.state import StateDB
from handwatch.transcribe import gate
from tests.support.daemon import inked
from tests.support.fakeopenai import kind_reply, wait_for

SLOTS = 3


def held_replies(fake):
    """Every reply waits for `release`; `peak` is the most requests the server had at once."""
    release = threading.Event()
    state = {"now": 0, "peak": 0}
    lock = threading.Lock()

    def reply(rec):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        release.wait(120)
        with lock:
            state["now"] -= 1
        return {"content": "Buy milk and eggs"}

    fake.default = reply
    return release, state


def runtime(write_config, fake, folder, **rule):
    cfg = loader.load(
        write_config(
            {
                "endpoints": [{"url": fake.url, "max_concurrency": SLOTS, "confidence": "off", "timeout_s": 120}],
                "defaults": {"settle_s": 0, **rule},
                "folders": [{"path": str(folder)}],
            }
        )
    )
    db = StateDB(cfg.state_dir)
    queue = JobQueue(db)
    return build_runtime(cfg, db, queue), queue


def counted_decodes(monkeypatch, folder: Path) -> list[tuple[str, int]]:
    """(name, size decoded at) of every page decode of a file in `folder`: a spy, every decode still happens."""
    decodes: list[tuple[str, int]] = []
    real_page = decode.page

    def counted(path, kind, number, max_side, *rest):
        if Path(path).parent == folder:
            decodes.append((Path(path).name, max_side))
        return real_page(path, kind, number, max_side, *rest)

    monkeypatch.setattr(decode, "page", counted)
    return decodes


@contextmanager
def workers(rt, queue, release):
    """The daemon's worker pool over `queue`, stopped (and the server let go) however the test ends."""
    stopping = threading.Event()
    pool = WorkerPool(queue, "test-owner", stopping, lambda: rt)
    pool.keep(rt.n)
    try:
        yield
    finally:
        release.set()
        stopping.set()
        pool.wake_one(everyone=True)


def test_a_long_pdf_holds_only_a_few_decoded_pages(tmp_path, write_config, fake_openai):
    """A 200-page PDF while the server sits on its replies: pages are decoded by the preparer threads
    only (one per core), and no more pages get ahead of their replies than the bound."""
    folder = tmp_path / "in"
    folder.mkdir()
    pages = [inked((320, 420), (255, 255 - i % 50, 255)) for i in range(200)]
    pdf = folder / "long.pdf"
    pages[0].save(pdf, "PDF", save_all=True, append_images=pages[1:], resolution=72)
    release, server = held_replies(fake_openai)
    rt, _ = runtime(write_config, fake_openai, folder, max_pages=250)
    flow = rt.pipeline.flow
    done: dict = {}
    t = threading.Thread(target=lambda: done.setdefault("t", rt.pipeline.transcribe(pdf)), daemon=True)
    t.start()
    # Every page thread has its page ready: SLOTS at the server, the rest encoded and waiting.
    wait_for(lambda: server["now"] == SLOTS and flow.encoded.now == rt.n, 120, what="the prefetch to fill")
    assert flow.decoded.now == 0  # what waits for a slot is encoded, never pixels
    assert len(fake_openai.requests) == SLOTS
    release.set()
    t.join(300)
    assert len(done["t"].result["pages"]) == 200
    assert server["peak"] == SLOTS
    assert 1 <= flow.decoded.peak <= prefetch.preparers()
    assert flow.kept.peak == 0  # a PDF is never skipped by the check, and its kind is not wanted here: nothing kept
    assert flow.encoded.peak <= flow.limit


def test_workers_prepare_pages_ahead_of_free_slots_and_no_further(tmp_path, write_config, fake_openai):
    """With every request slot busy, `prefetch.depth` more photos are decoded, prepared and encoded,
    ready for the next free slot; the rest of the queue stays untouched on disk."""
    folder = tmp_path / "in"
    folder.mkdir()
    release, server = held_replies(fake_openai)
    rt, queue = runtime(write_config, fake_openai, folder)
    for i in range(30):
        path = folder / f"p{i:02d}.jpg"
        buf = io.BytesIO()
        inked((640, 480), (255, 255 - i, 250)).save(buf, "JPEG")
        path.write_bytes(buf.getvalue())
        queue.enqueue(path, sha256_file(path), file_sig(path))
    flow = rt.pipeline.flow
    depth = prefetch.depth(SLOTS)
    assert rt.n == SLOTS + depth
    with workers(rt, queue, release):
        wait_for(
            lambda: server["now"] == SLOTS and flow.encoded.now == SLOTS + depth, 60, what="every slot busy and the prefetch full"
        )
        assert flow.decoded.now == 0
        assert len(fake_openai.requests) == SLOTS
        assert queue.counts()["running"] == SLOTS + depth and queue.counts()["pending"] == 30 - SLOTS - depth
        release.set()
        wait_for(lambda: queue.counts()["done"] == 30, 120, what="every photo done")
    assert server["peak"] == SLOTS
    assert flow.decoded.peak <= prefetch.preparers()
    assert 1 <= flow.kept.peak <= prefetch.KEEP_PAGES and flow.kept.now == 0  # photos: decoded once, for the check too
    assert flow.encoded.peak <= SLOTS + depth


def test_the_same_bytes_taken_by_two_workers_at_once_are_sent_once(tmp_path, write_config, fake_openai):
    """With more workers than slots, two copies of one photo are claimed together; the second waits
    for the first's text and reuses it instead of asking the server again."""
    folder = tmp_path / "in"
    folder.mkdir()
    release, server = held_replies(fake_openai)
    rt, queue = runtime(write_config, fake_openai, folder)
    buf = io.BytesIO()
    inked((640, 480)).save(buf, "JPEG")
    for name in ("a.jpg", "a-copy.jpg"):
        (folder / name).write_bytes(buf.getvalue())
        queue.enqueue(folder / name, sha256_file(folder / name), file_sig(folder / name))
    with workers(rt, queue, release):
        wait_for(lambda: queue.counts()["running"] == 2 and server["now"] == 1, 60, what="both claimed, one asked")
        release.set()
        wait_for(lambda: queue.counts()["done"] == 2, 60, what="both done")
    assert len(fake_openai.requests) == 1
    assert (folder / "a.md").read_text().split("---")[-1] == (folder / "a-copy.md").read_text().split("---")[-1]


def test_the_camera_rolls_check_and_the_page_share_one_decode(tmp_path, write_config, fake_openai, monkeypatch):
    """A camera photo that carries no thumbnail is decoded once: the check looks at a reduced copy and the page
    is prepared from the same pixels. A photo the check skips lets its pixels go, and when KEEP_PAGES pages
    wait for the check's answer already, the next file decodes a preview of its own and its page later."""
    folder = tmp_path / "in"
    folder.mkdir()
    decodes = counted_decodes(monkeypatch, folder)
    note, scene = folder / "IMG_0001.jpg", folder / "IMG_0002.jpg"
    inked((1600, 1200)).save(note, quality=90)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).resize((1600, 1200), Image.NEAREST).save(scene)
    fake_openai.classify = lambda rec: kind_reply("photo" if np.asarray(rec.image)[0:8, 0:8].mean() < 250 else "note")
    fake_openai.default = lambda rec: {"content": "Buy milk and eggs"}
    rt, _ = runtime(write_config, fake_openai, folder)
    flow = rt.pipeline.flow

    assert rt.pipeline.transcribe(note).result["pages"] == ["Buy milk and eggs"]
    assert decodes == [("IMG_0001.jpg", 1288)]  # once, at the page's size: no preview decode of its own
    assert flow.kept.peak == 1 and flow.kept.now == 0

    with pytest.raises(NotADocument) as skipped:
        rt.pipeline.transcribe(scene)
    assert skipped.value.kind == "photo"  # the model's answer, not the local look
    assert decodes[1:] == [("IMG_0002.jpg", 1288)] and flow.kept.now == 0  # skipped: its pixels are let go

    taken = [flow.keeping.acquire(blocking=False) for _ in range(prefetch.KEEP_PAGES)]
    assert all(taken)  # every page kept so far was given back; now the room is full
    del decodes[:]
    try:
        rt.pipeline.transcribe(note, override={"fresh": True})
    finally:
        for _ in taken:
            flow.keeping.release()
    assert decodes == [("IMG_0001.jpg", gate.LOOK_SIDE), ("IMG_0001.jpg", 1288)]  # a preview, then the page


def test_a_page_larger_than_a_vlms_is_never_kept_for_the_check(tmp_path, write_config, fake_openai, monkeypatch):
    """Tesseract's pages are 2400 px (13 MB of pixels): the check decodes its own preview rather than keep one."""
    folder = tmp_path / "in"
    folder.mkdir()
    decodes = counted_decodes(monkeypatch, folder)
    note = folder / "IMG_0001.jpg"
    inked((1600, 1200)).save(note, quality=90)
    rt, _ = runtime(write_config, fake_openai, folder, engine="tesseract", documents_only=True)
    with pytest.raises(NotADocument):
        rt.pipeline.transcribe(note)  # Tesseract finds no words in one stroke of ink
    assert decodes == [("IMG_0001.jpg", gate.LOOK_SIDE), ("IMG_0001.jpg", 2400)] and rt.pipeline.flow.kept.peak == 0


def test_a_page_kept_for_the_check_is_let_go_when_the_checks_request_fails(tmp_path, write_config, fake_openai, monkeypatch):
    """The server answers the check with 503 (a model loading): the file waits for the server, and the page kept
    for the check is given back. More failures than there is room to keep pages: a page not given back would
    leave the next photos no room, and they would decode a preview of their own again."""
    folder = tmp_path / "in"
    folder.mkdir()
    decodes = counted_decodes(monkeypatch, folder)
    note = folder / "IMG_0001.jpg"
    inked((1600, 1200)).save(note, quality=90)
    fake_openai.classify = {"status": 503, "error": "model is loading"}
    rt, _ = runtime(write_config, fake_openai, folder)
    flow = rt.pipeline.flow
    for _ in range(prefetch.KEEP_PAGES + 1):
        with pytest.raises(EngineUnavailable):
            rt.pipeline.transcribe(note)
    assert flow.kept.now == 0 and flow.kept.peak == 1
    assert decodes == [("IMG_0001.jpg", 1288)] * (prefetch.KEEP_PAGES + 1)  # kept every time: the room never ran out
    assert not fake_openai.requests  # no page was sent while the check could not be asked
