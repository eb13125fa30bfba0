"""A hostile folder, all at once, while good photos keep arriving: every bad thing gets its own reason (or
is left alone when it is not a file handwatch may read), and nothing holds up anything else."""

from __future__ import annotations

import os
import threading
import unicodedata
from pathlib import Path

from tests.faults import hostile
from tests.faults.harness import World
from tests.support.daemon import id_png, ident_of, text_for, text_of
from tests.support.fakeopenai import FakeOpenAI, wait_for

FLOW = 20  # good photos written one after another while the hostile files land


def _flow(w: World, stop: threading.Event) -> None:
    for i in range(FLOW):
        if stop.wait(0.1):
            return
        w.photo(f"flow-{i:02}.png", i)


def _hostile(w: World, outside: Path) -> tuple[Path, list]:
    """Everything at once; returns the unreadable photo and the sockets to keep open."""
    d = w.inbox
    (d / "zero.jpg").write_bytes(b"")
    w.expect_failed(d / "zero.jpg", "empty file (0 bytes)")
    w.expect_failed(hostile.truncated_jpeg(d / "truncated.jpg"), "corrupt or truncated JPEG")
    (d / "random.jpg").write_bytes(os.urandom(3000))
    w.expect_failed(d / "random.jpg", "not a JPEG file")
    w.expect_failed(hostile.pixel_bomb(d / "bomb.png"), "20000x10000 = 200 megapixels, over the 100 MP limit")
    w.expect_failed(hostile.encrypted_pdf(d / "encrypted.pdf"), "encrypted PDF")
    (d / "pages2000.pdf").write_bytes(hostile.pdf(2000))
    w.expect_failed(d / "pages2000.pdf", "PDF has 2000 pages, over the max_pages limit of 50")
    # Huge pages are rendered straight to the target size: a Markdown each (the strip's is a blank page).
    (d / "hugepage.pdf").write_bytes(hostile.pdf(1, (200000, 200000)))
    w.expect_good(d / "hugepage.pdf")
    (d / "strip.pdf").write_bytes(hostile.pdf(1, (1e7, 10)))
    w.expect_good(d / "strip.pdf")
    w.expect_failed(hostile.tiff_pages(d / "pages300.tif", 300), "300 pages, over the max_pages limit of 50")
    w.expect_failed(hostile.heic_without_image(d / "noimage.heic"), "corrupt or truncated HEIF")
    (d / "folder.jpg").mkdir()  # a folder: walked, never read as a file
    w.expect_failed(hostile.fifo(d / "fifo.jpg"), "not a regular file (a FIFO)")
    sockets = [hostile.unix_socket(d / "socket.jpg")]
    w.expect_failed(d / "socket.jpg", "not a regular file (a socket)")
    (d / "rules-fifo").mkdir()
    hostile.fifo(d / "rules-fifo" / ".handwatch.yaml")
    w.expect_failed(id_png(d / "rules-fifo" / "under.png", 30), "not a regular file (a FIFO)")
    (d / "rules-deep").mkdir()
    (d / "rules-deep" / ".handwatch.yaml").write_text("[" * 5000)
    w.expect_failed(id_png(d / "rules-deep" / "under.png", 31), "invalid YAML")
    (d / "link.png").symlink_to(id_png(outside / "secret.png", 300))
    locked = id_png(d / "locked.png", 40)
    os.chmod(locked, 0)
    w.original(locked)
    w.photo("new\nline.png", 41)
    w.photo(os.fsdecode(b"caf\xe9 men\xfc.png"), 42)  # Latin-1 bytes: not UTF-8
    w.photo(unicodedata.normalize("NFC", "café.png"), 43)
    w.photo(unicodedata.normalize("NFD", "café.png"), 44)
    return locked, sockets


def test_a_hostile_folder_all_at_once_while_good_photos_keep_flowing(tmp_path, fault):
    fault.case = (
        "hostile folder: zero bytes, truncated JPEG, random bytes, 200-MP PNG, encrypted PDF, 2,000-page "
        "PDF, huge PDF pages, 300-page TIFF, HEIC without image, folder/FIFO/socket named .jpg, FIFO and "
        "5,000-deep rule files, link outside, unreadable file, newline, non-UTF-8, NFC+NFD names"
    )
    server = FakeOpenAI().start()
    server.default = text_for
    w = World(tmp_path / "w", server.url, no_dac=True, rescan_s=5)  # rescans: the unreadable file is shown once
    sockets: list = []
    try:
        w.start()
        stop = threading.Event()
        flow = threading.Thread(target=_flow, args=(w, stop))
        flow.start()
        try:
            locked, sockets = _hostile(w, tmp_path)
        finally:
            flow.join()

        def waiting_for_permission() -> list[dict]:
            st = w.status()
            mine = [x for x in st["waiting"] if x["path"] == str(locked)]
            done = st["counts"]["done"] >= len(w.good) and st["counts"]["failed"] >= len(w.bad)
            return mine if done and mine else []

        shown = wait_for(waiting_for_permission, 120, interval=0.3, what="everything but the unreadable file")
        assert len(shown) == 1 and "waiting for permission to read" in shown[0]["reason"], shown
        rescans = len(w.events("rescan.done"))
        wait_for(lambda: len(w.events("rescan.done")) >= rescans + 2, 30, interval=0.3, what="two more rescans")
        parked = [e for e in w.events("file.parked") if e["path"] == str(locked)]
        assert len(parked) == 1 and len(waiting_for_permission()) == 1, parked  # said once, not at every rescan
        os.chmod(locked, 0o644)  # made readable: picked up without a rescan
        w.expect_good(locked, text_of(40))
        w.check()
        assert all(ident_of(r.image) != 300 for r in server.requests if r.image), "the link's target was read"
        fault.note(
            f"{len(w.good)} Markdown, {len(w.bad)} failed each with its own reason; the unreadable file "
            "shown once (across rescans) as waiting for permission, done once readable"
        )
        assert w.stop() == 0  # and a restart is not held up by the FIFOs at the catch-up scan
        w.start()
        w.check()
        fault.note("SIGTERM stops it; a restart's catch-up scan passes the FIFOs")
    finally:
        for s in sockets:
            s.close()
        w.close()
        server.stop()
