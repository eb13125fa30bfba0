"""The skipped view and the kind filter, over real HTTP on state made by the real job store: a skipped photo listed
with its reason and a small thumbnail, "Transcribe anyway" through the queue (and refused without the CSRF token or
from another origin), untrusted names escaped, thumbnails served only for skipped originals inside the folders,
and `?kind=` picking transcriptions by their front matter's `kind:`."""

from __future__ import annotations

import io
import os
import re

import numpy as np
import pytest
from PIL import Image

from handwatch.publish import markdown
from handwatch.publish.index import SearchIndex
from handwatch.safefs import file_sig, sha256_file
from handwatch.store.jobs import JobQueue
from handwatch.store.state import StateDB
from handwatch.web.store import DOC_KINDS
from tests.support.webworld import form_of, make_world, serve


@pytest.fixture
def world(tmp_path, fake_openai):
    w = serve(make_world(tmp_path, fake_openai))
    yield w
    w.stop()


def photo(path, size=(1600, 1200)):
    """A camera-roll picture: noise and colour, nothing written on it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=85)
    return path


def skip(world, path, kind="photo", reason="not a document (photo)") -> int:
    """Through the real queue, as the pipeline records a file judged not a document."""
    queue = JobQueue(StateDB(world.cfg.state_dir))
    queue.enqueue(path, sha256_file(path), file_sig(path))
    job = queue.claim("test:1", 600)  # the new job is due first: the only other pending one waits for the endpoint
    assert job is not None and job.path == path
    assert queue.skip(job, kind, reason)
    world.files[path.stem] = path
    return job.id


def test_the_skipped_view_lists_a_skipped_photo_with_its_reason_and_a_small_thumbnail(world):
    holiday = photo(world.inbox / "camera" / "holiday.jpg")
    jid = skip(world, holiday)
    blank = skip(world, photo(world.inbox / "blank.png", (300, 200)), "blank", "not a document (blank)")
    with world.client() as c:
        assert '<a href="/skipped" id="nav-skipped"' in c.get("/").text
        r = c.get("/skipped")
        assert r.status_code == 200
        rows = re.findall(
            r'<tr class="item skip">.*?<a href="/file/(\d+)">([^<]+)</a>.*?class="reasons">([^<]*)</td>', r.text, re.S
        )
        assert rows == [
            (str(blank), "blank.png", "not a document (blank)"),
            (str(jid), "camera/holiday.jpg", "not a document (photo)"),
        ]
        assert f'<img src="/skipped/{jid}/thumb.jpg"' in r.text and f'id="anyway-{jid}"' in r.text
        assert "note.png" not in r.text and "broken.jpg" not in r.text  # transcribed and failed files are not skipped
        thumb = c.get(f"/skipped/{jid}/thumb.jpg")
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        assert thumb.headers["cache-control"] == "private, max-age=600" and thumb.headers["x-content-type-options"] == "nosniff"
        im = Image.open(io.BytesIO(thumb.content))
        assert im.format == "JPEG" and im.size == (256, 192)
        assert Image.open(io.BytesIO(c.get(f"/skipped/{blank}/thumb.jpg").content)).size == (256, 171)
        # its page says why, and offers the same button
        page = c.get(f"/file/{jid}").text
        assert "not a document (photo)" in page and 'id="anyway"' in page
        assert 'id="anyway"' not in c.get(f"/file/{world.job_id('note')}").text


def test_thumbnails_only_for_skipped_originals_inside_the_watched_folders(world, tmp_path):
    jid = skip(world, photo(world.inbox / "holiday.jpg"))
    with world.client() as c:
        for job in ("note", "recipe", "broken", "later"):  # done, flagged, failed, waiting: not skipped
            assert c.get(f"/skipped/{world.job_id(job)}/thumb.jpg").status_code == 404, job
        for bad in ("999999", str(1 << 63), "9" * 5000):
            assert c.get(f"/skipped/{bad}/thumb.jpg").status_code == 404, bad[:20]
        assert c.get(f"/skipped/{jid}/thumb.jpg").status_code == 200
        # what the folder's owner may put in its place: a link out, a FIFO (which would block a reader), garbage
        secret = photo(tmp_path / "private.jpg")
        path = world.files["holiday"]
        os.unlink(path)
        os.symlink(secret, path)
        assert c.get(f"/skipped/{jid}/thumb.jpg").status_code == 404
        os.unlink(path)
        os.mkfifo(path)
        assert c.get(f"/skipped/{jid}/thumb.jpg").status_code == 404
        os.unlink(path)
        path.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)
        r = c.get(f"/skipped/{jid}/thumb.jpg")
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/plain")
        assert c.get("/skipped").status_code == 200  # the page itself never decodes anything


def test_transcribe_anyway_puts_the_file_back_with_anyway_set(world):
    holiday = photo(world.inbox / "holiday.jpg")
    jid = skip(world, holiday)
    queue = JobQueue(StateDB(world.cfg.state_dir))
    with world.client() as c:
        form = form_of(c.get("/skipped").text, f"anyway-{jid}")
        assert set(form) == {"csrf"}
        for data in ({}, {"csrf": ""}, {"csrf": "guessed-token"}):
            r = c.post(f"/skipped/{jid}/anyway", data=data, headers={"origin": world.base})
            assert r.status_code == 403 and "security token" in r.text
        for headers in ({"origin": "http://evil.example"}, {"origin": "null"}, {"referer": "http://evil.example/x"}):
            assert c.post(f"/skipped/{jid}/anyway", data=form, headers=headers).status_code == 403
        assert queue.state_of(holiday)["state"] == "skipped" and queue.state_of(holiday)["anyway"] is False
        assert c.post(f"/skipped/{world.job_id('note')}/anyway", data=form).status_code == 303  # not skipped: nothing done
        assert queue.state_of(world.files["note"])["state"] == "done" and queue.state_of(world.files["note"])["anyway"] is False
        assert c.post("/skipped/999999/anyway", data=form).status_code == 404

        r = c.post(f"/skipped/{jid}/anyway", data=form, headers={"origin": world.base})
        assert r.status_code == 303 and r.headers["location"] == "/skipped?m=anyway"
        state = queue.state_of(holiday)
        assert state["state"] == "pending" and state["anyway"] is True
        page = c.get(r.headers["location"]).text
        assert "whatever the document check says" in page and "holiday.jpg" not in page and 'id="empty"' in page
        again = c.post(f"/skipped/{jid}/anyway", data=form)
        assert again.headers["location"] == "/skipped?m=gone" and "not skipped any more" in c.get("/skipped?m=gone").text


def test_transcribe_anyway_from_the_files_own_page(world):
    holiday = photo(world.inbox / "holiday.jpg")
    jid = skip(world, holiday)
    with world.client() as c:
        form = form_of(c.get(f"/file/{jid}").text, "anyway")
        assert form["back"] == "file"
        r = c.post(f"/skipped/{jid}/anyway", data=form)
        assert r.status_code == 303 and r.headers["location"] == f"/file/{jid}?m=queued"
    assert JobQueue(StateDB(world.cfg.state_dir)).state_of(holiday)["anyway"] is True


def test_names_and_reasons_are_escaped_on_the_skipped_page(world):
    # a folder and a file whose names together read as a script element
    evil = photo(world.inbox / "<script>alert(1)<" / 'script>"x.jpg')
    jid = skip(world, evil, reason="not a document (<img src=x onerror=alert(2)>)")
    with world.client() as c:
        r = c.get("/skipped")
        assert r.status_code == 200
        assert "<script>alert(1)" not in r.text and "<img src=x" not in r.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;&#34;x.jpg" in r.text
        assert "not a document (&lt;img src=x onerror=alert(2)&gt;)" in r.text
        assert c.get(f"/skipped/{jid}/thumb.jpg").headers["content-type"] == "image/jpeg"
        page = c.get(f"/file/{jid}").text
        assert "<script>alert(1)" not in page and "<img src=x" not in page


def test_the_page_kinds_are_the_document_checks_kinds():
    from handwatch.transcribe import gate
    from handwatch.web.app import list_args

    assert DOC_KINDS == gate.KINDS
    assert [k for k in gate.KINDS if list_args({"kind": k}) == {"kind": k}] == list(gate.KINDS)
    assert list_args({"kind": "selfie"}) == {} and list_args({"kind": "unknown"}) == {}


def flag(world, name: str, kind: str | None) -> None:
    """Give a transcription a kind (and a review flag) in its front matter, and index it, as handwatch would."""
    md = world.files[name].with_suffix(".md")
    updates: dict = {"needs_review": True}
    if kind is not None:
        updates["kind"] = kind
    text = markdown.with_fields(md.read_text(), updates)
    md.write_text(text)
    SearchIndex(StateDB(world.cfg.state_dir)).update(md, text, world.files[name])


def test_the_list_filters_by_the_kind_in_the_front_matter(tmp_path, fake_openai):
    w = make_world(tmp_path, fake_openai)
    flag(w, "recipe", "recipe")
    flag(w, "note", "note")
    flag(w, "letter", "<b>novel</b>")  # a person may write anything there: not a kind, not shown
    serve(w)

    def rows(html):
        return re.findall(
            r'<tr class="item \w+">.*?<a href="(/file/\d+)[^"]*">([^<]+)</a>( <span class="kind">\w+</span>)?', html, re.S
        )

    try:
        with w.client() as c:
            everything = c.get("/").text
            assert [(n, k) for _, n, k in rows(everything)] == [
                ("later.jpg", ""),
                ("broken.jpg", ""),
                ("letter.pdf", ""),
                ("note.png", ' <span class="kind">note</span>'),
                ("kitchen/apple-cake.jpg", ' <span class="kind">recipe</span>'),
            ]
            kinds = re.search(r'<select name="kind" id="kind">(.*?)</select>', everything, re.S).group(1)
            assert re.findall(r'<option value="(\w*)"', kinds) == ["", "note", "recipe"]
            assert "<b>novel</b>" not in everything and "novel" not in kinds

            recipes = c.get("/", params={"kind": "recipe"}).text
            assert [(u, n) for u, n, _ in rows(recipes)] == [(f"/file/{w.job_id('recipe')}", "kitchen/apple-cake.jpg")]
            assert f'href="/file/{w.job_id("recipe")}?kind=recipe"' in recipes  # the file page keeps to the kind
            assert '<option value="recipe" selected>' in recipes
            assert [n for _, n, _ in rows(c.get("/", params={"kind": "note", "folder": "0"}).text)] == ["note.png"]
            assert 'id="empty"' in c.get("/", params={"kind": "letter"}).text  # a kind, but none of that kind
            for ignored in ("bogus", "<script>", "Recipe", ""):
                assert len(rows(c.get("/", params={"kind": ignored}).text)) == 5, ignored
            assert c.get("/", params={"folder": "²"}).status_code == 200  # a digit to isdigit(), not to int()

            # previous and next walk the filtered list, and accept goes on within it
            page = c.get(f"/file/{w.job_id('recipe')}", params={"kind": "recipe"}).text
            assert '<span class="pos">1 of 1</span>' in page and '<dd id="kind">recipe</dd>' in page
            r = c.post(f"/file/{w.job_id('recipe')}/save?kind=recipe", data={**form_of(page, "edit"), "action": "accept"})
            assert r.status_code == 303 and r.headers["location"] == "/?m=accepted&kind=recipe"
    finally:
        w.stop()
