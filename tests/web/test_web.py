"""The review page over real HTTP (uvicorn on 127.0.0.1): the list, a file's page, saving, accepting, retrying,
search, metrics and health, on state made by the real worker and pipeline against the fake OpenAI server."""

from __future__ import annotations

import io
import json
import re

import pytest
import yaml
from PIL import Image

from handwatch.publish import markdown
from handwatch.service.worker import Worker, build
from handwatch.store.jobs import this_owner
from handwatch.store.state import Ledger, StateDB
from tests.support.fakeopenai import FakeOpenAI
from tests.support.webworld import form_of, make_world, serve


@pytest.fixture
def world(tmp_path, fake_openai):
    w = serve(make_world(tmp_path, fake_openai))
    yield w
    w.stop()


def test_the_list_shows_what_needs_a_person_newest_first_with_reasons(world):
    with world.client() as c:
        r = c.get("/")
    assert r.status_code == 200
    rows = re.findall(r'<tr class="item (\w+)">.*?<a href="(/file/\d+)">([^<]+)</a>.*?class="reasons">(.*?)</td>', r.text, re.S)
    assert [(k, name) for k, _, name, _ in rows] == [
        ("waiting", "later.jpg"),
        ("failed", "broken.jpg"),
        ("review", "kitchen/apple-cake.jpg"),
    ]
    reasons = {name: re.sub(r"<.*?>", "", why) for _, _, name, why in rows}
    assert "HTTP 503 unavailable (model is loading)" in reasons["later.jpg"]
    assert "corrupt or truncated JPEG" in reasons["broken.jpg"]
    assert "truncated: the reply hit max_tokens" in reasons["kitchen/apple-cake.jpg"]
    assert "note.png" not in r.text and "letter.pdf" not in r.text  # fine transcriptions need nobody


def test_the_list_filters_by_folder_and_kind(tmp_path, fake_openai):
    other = tmp_path / "other"
    other.mkdir()
    w = serve(make_world(tmp_path, fake_openai, extra={"folders": [{"path": str(tmp_path / "inbox")}, {"path": str(other)}]}))
    try:
        with w.client() as c:
            assert "apple-cake.jpg" in c.get("/", params={"folder": "0"}).text
            assert 'id="empty"' in c.get("/", params={"folder": "1"}).text
            failed = c.get("/", params={"show": "failed"}).text
            assert "broken.jpg" in failed and "apple-cake.jpg" not in failed and "later.jpg" not in failed
            assert "broken.jpg" in c.get("/", params={"folder": "../../etc"}).text  # not a folder index: no filter
    finally:
        w.stop()


def test_a_flagged_file_shows_its_original_and_marks_the_doubtful_words(world):
    jid = world.job_id("recipe")
    with world.client() as c:
        r = c.get(f"/file/{jid}")
        assert r.status_code == 200
        assert re.findall(r'<mark class="doubt"[^>]*>([^<]+)</mark>', r.text) == ["cardamon", "suger"]
        assert "==cardamon==" in form_of(r.text, "edit")["body"]  # the editor keeps the marks, a person removes them
        assert r.text.count('class="page"') == 1
        img = c.get(f"/file/{jid}/page/1.jpg")
        assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(img.content)).size == (1800, 900)
        thumb = Image.open(io.BytesIO(c.get(f"/file/{jid}/page/1.jpg", params={"size": "thumb"}).content))
        assert max(thumb.size) == 320
        letter = world.job_id("letter")
        page = c.get(f"/file/{letter}").text
        assert page.count('class="page"') == 2  # a PDF is shown page by page, rendered for the browser
        assert Image.open(io.BytesIO(c.get(f"/file/{letter}/page/2.jpg").content)).format == "JPEG"
        assert c.get(f"/file/{letter}/page/3.jpg").status_code == 404
        broken = c.get(f"/file/{world.job_id('broken')}").text
        assert "cannot show the original: corrupt or truncated JPEG" in broken and 'id="edit"' not in broken


def test_correct_a_word_save_then_accept(world):
    jid = world.job_id("recipe")
    md = world.files["recipe"].with_suffix(".md")
    with world.client() as c:
        page = c.get(f"/file/{jid}").text
        form = form_of(page, "edit")
        form["body"] = form["body"].replace("==cardamon==", "cardamom").replace("\n", "\r\n")  # as a browser sends it
        r = c.post(f"/file/{jid}/save", data={**form, "action": "save"})
        assert r.status_code == 303 and r.headers["location"] == f"/file/{jid}?m=saved"
        text = md.read_text()
        assert "2 pods of cardamom, crushed" in text and "\r" not in text
        assert markdown.fields(text)["needs_review"] is True  # saving alone does not accept
        assert Ledger(StateDB(world.cfg.state_dir)).get(md).edited is not None
        # search sees the correction at once
        assert "apple-cake" in c.get("/search", params={"q": "the recipe with cardamom"}).text
        page = c.get(r.headers["location"]).text
        assert "Saved." in page and "handwatch will not overwrite it" in page
        r = c.post(f"/file/{jid}/save", data={**form_of(page, "edit"), "action": "accept"})
        assert r.status_code == 303 and r.headers["location"] == "/?m=accepted"
        fields = markdown.fields(md.read_text())
        assert fields["needs_review"] is False and re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", fields["reviewed"])
        assert fields["review_reasons"] == ["truncated: the reply hit max_tokens"]  # the history stays
        listing = c.get("/").text
        assert "apple-cake" not in listing and "broken.jpg" in listing


def test_previous_next_and_accept_walk_the_list_in_its_order(world, fake_openai):
    from handwatch.safefs import file_sig, sha256_file
    from tests.support.pages import draw_page
    from tests.support.webworld import FLAGGED

    newest = world.inbox / "pancakes.jpg"
    draw_page(["Pancakes"]).save(newest, quality=90)
    db, queue, pipeline, candidates, _ = build(world.cfg)
    fake_openai.reply({"content": FLAGGED, "finish_reason": "length"}, {"content": FLAGGED, "finish_reason": "length"})
    queue.enqueue(newest, sha256_file(newest), file_sig(newest))
    assert Worker(queue, pipeline, candidates).handle(queue.claim(this_owner(), 600)) == "done"
    world.files["pancakes"] = newest
    order = [f"/file/{world.job_id(n)}" for n in ("pancakes", "later", "broken", "recipe")]
    with world.client() as c:
        listed = re.findall(r'<tr class="item \w+">.*?<a href="(/file/\d+)">', c.get("/").text, re.S)
        assert listed == order
        for i, url in enumerate(order):
            page = c.get(url).text
            assert f'<span class="pos">{i + 1} of 4</span>' in page
            prev = re.search(r'<a id="prev" rel="prev" href="([^"]+)"', page)
            nxt = re.search(r'<a id="next" rel="next" href="([^"]+)"', page)
            assert (prev.group(1) if prev else None) == (order[i - 1] if i else None)
            assert (nxt.group(1) if nxt else None) == (order[i + 1] if i + 1 < len(order) else None)
        r = c.post(f"{order[0]}/save", data={**form_of(c.get(order[0]).text, "edit"), "action": "accept"})
        assert r.status_code == 303 and r.headers["location"] == f"{order[1]}?m=accepted"  # on to the next file


def test_a_stale_page_cannot_overwrite_a_newer_text(world):
    jid = world.job_id("recipe")
    md = world.files["recipe"].with_suffix(".md")
    with world.client() as c:
        form = form_of(c.get(f"/file/{jid}").text, "edit")
        md.write_text(md.read_text().replace("apples", "pears"))  # someone else edits meanwhile
        before = md.read_text()
        r = c.post(f"/file/{jid}/save", data={**form, "body": "mine", "action": "save"})
        assert r.status_code == 409 and "changed since you opened it" in r.text
        assert md.read_text() == before


def test_retry_with_another_profile_goes_through_the_queue_and_the_pipeline_honours_it(world, fake_openai):
    jid = world.job_id("note")
    with world.client() as c:
        form = form_of(c.get(f"/file/{jid}").text, "retry")
        assert c.post(f"/file/{jid}/retry", data={**form, "profile": "nonsense"}).status_code == 400
        r = c.post(f"/file/{jid}/retry", data={**form, "profile": "recipe"})
        assert r.status_code == 303
    db, queue, pipeline, candidates, _ = build(world.cfg)
    assert queue.state_of(world.files["note"])["state"] == "pending"
    job = queue.claim(this_owner(), 600)
    assert job.id == jid and job.override == {"fresh": True, "profile": "recipe"}
    before = len(fake_openai.requests)
    fake_openai.reply(
        json.dumps(
            {
                "title": "Grandma",
                "servings": None,
                "times": {"prep": None, "cook": None, "total": None},
                "ingredients": [{"quantity": "1", "unit": None, "item": "phone", "note": None}],
                "steps": ["Call grandma on Sunday"],
                "notes": [],
            }
        )
    )
    assert Worker(queue, pipeline, candidates).handle(job) == "done"
    sent = fake_openai.requests[before]
    assert sent.params.get("response_format", {}).get("type") == "json_schema"  # the recipe profile's request
    fields = markdown.fields(world.files["note"].with_suffix(".md").read_text())
    assert fields["profile"] == "recipe" and fields["title"] == "Grandma"


def test_retry_on_another_endpoint_asks_that_endpoint_even_for_the_same_bytes(tmp_path, fake_openai):
    second = FakeOpenAI().start()
    try:
        w = make_world(tmp_path, fake_openai)
        data = yaml.safe_load(w.cfg_path.read_text())
        data["endpoints"].append({"url": second.url, "timeout_s": 30})
        w.cfg_path.write_text(yaml.safe_dump(data))
        serve(w)
        jid = w.job_id("note")
        with w.client() as c:
            page = c.get(f"/file/{jid}").text
            assert second.url in page
            assert c.post(f"/file/{jid}/retry", data={**form_of(page, "retry"), "endpoint": second.url}).status_code == 303
        w.stop()
        db, queue, pipeline, candidates, _ = build(w.cfg)
        second.reply("Call grandma on Saturday")
        job = queue.claim(this_owner(), 600)
        assert job.id == jid and Worker(queue, pipeline, candidates).handle(job) == "done"
        assert len(second.requests) == 1
        assert "Saturday" in w.files["note"].with_suffix(".md").read_text()
    finally:
        second.stop()


def test_search_shows_the_matching_line_and_a_thumbnail(world):
    with world.client() as c:
        r = c.get("/search", params={"q": "grandma"})
        assert r.status_code == 200
        m = re.search(r'<a class="thumb" href="(/file/\d+)"><img src="([^"]+)"', r.text)
        assert m and m.group(1) == f"/file/{world.job_id('note')}"
        assert '<div class="line">Call <mark>grandma</mark> on Sunday</div>' in r.text
        thumb = c.get(m.group(2))
        assert thumb.status_code == 200 and max(Image.open(io.BytesIO(thumb.content)).size) == 320
        assert "0 results" in c.get("/search", params={"q": 'NEAR("x" OR'}).text


def test_metrics_in_prometheus_format(world):
    with world.client() as c:
        r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=")
    m = dict(re.findall(r"^(handwatch_\S+) (\S+)$", r.text, re.M))
    url = world.cfg.endpoints[0].url
    assert m['handwatch_files{state="done"}'] == "3.0" and m['handwatch_files{state="failed"}'] == "1.0"
    assert m['handwatch_files{state="pending"}'] == "1.0" and m["handwatch_needs_review"] == "1.0"
    assert m[f'handwatch_endpoint_up{{endpoint="{url}"}}'] == "0.0"
    assert float(m[f'handwatch_requests_total{{endpoint="{url}",outcome="ok"}}']) >= 5
    assert float(m[f'handwatch_requests_total{{endpoint="{url}",outcome="unavailable"}}']) >= 1
    assert float(m[f'handwatch_pages_total{{endpoint="{url}"}}']) >= 4
    assert float(m[f'handwatch_request_seconds_count{{endpoint="{url}"}}']) >= 6
    assert float(m[f'handwatch_request_tokens_sum{{endpoint="{url}",kind="completion"}}']) >= 50
    assert m["handwatch_healthy"] == "0.0"


def test_healthz_says_whether_files_can_move(tmp_path, fake_openai):
    w = make_world(tmp_path, fake_openai)
    age = {"s": 0.2}
    serve(w, beat=lambda: age["s"])
    try:
        with w.client() as c:
            r = c.get("/healthz")
            assert r.status_code == 503 and "every endpoint is down" in r.json()["checks"]["endpoints"]
            StateDB(w.cfg.state_dir).connect().execute("UPDATE endpoints SET up = 1")
            r = c.get("/healthz")
            assert r.status_code == 200 and r.json() == {
                "ok": True,
                "checks": {"database": "ok", "daemon": "ok", "endpoints": "ok"},
            }
            age["s"] = 600
            assert c.get("/healthz").json()["checks"]["daemon"] == "main loop stalled for 600 s"
            age["s"] = None
            assert c.get("/healthz").status_code == 503
    finally:
        w.stop()


def test_healthz_without_a_daemon_is_503(world):
    import fcntl
    import os

    with world.client() as c:
        r = c.get("/healthz")
        assert r.status_code == 503 and r.json()["checks"]["daemon"].startswith("no daemon is running")
        # a daemon holds its lock on the state directory (as Daemon._lock does): `handwatch web` sees it run
        StateDB(world.cfg.state_dir).connect().execute("UPDATE endpoints SET up = 1")
        fd = os.open(world.cfg.state_dir / "daemon.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            r = c.get("/healthz")
            assert r.status_code == 200 and r.json()["checks"]["daemon"] == "ok"
        finally:
            os.close(fd)
        assert c.get("/healthz").status_code == 503  # and sees it gone


def test_reindex_rebuilds_the_search_index_from_the_markdown(tmp_path, fake_openai, run_cli):
    w = make_world(tmp_path, fake_openai)
    from handwatch.publish.index import SearchIndex

    db = StateDB(w.cfg.state_dir)
    db.connect().execute("DELETE FROM docs")
    assert SearchIndex(db).search("grandma") == []
    res = run_cli("-c", w.cfg_path, "reindex")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "search index: 3 file(s) indexed, 0 removed"
    assert [h.output.name for h in SearchIndex(db).search("grandma")] == ["note.md"]


def test_reindex_neither_hangs_on_nor_follows_what_was_put_in_place_of_a_markdown_file(tmp_path, fake_openai, run_cli):
    """The watched folders are untrusted: a FIFO where note.md was must not block `reindex` (nor the page's
    refresher, which runs the same code), and a link in place of letter.md is not read through."""
    import os

    from handwatch.publish.index import SearchIndex

    w = make_world(tmp_path, fake_openai)
    note, letter = w.files["note"].with_suffix(".md"), w.files["letter"].with_suffix(".md")
    os.unlink(note)
    os.mkfifo(note)
    (w.inbox / "kitchen" / "private.txt").write_text("grandma's bank PIN is 1234\n")  # inside, but not Markdown
    os.unlink(letter)
    os.symlink(w.inbox / "kitchen" / "private.txt", letter)
    res = run_cli("-c", w.cfg_path, "reindex", timeout=60)
    assert res.returncode == 0, res.stderr
    assert SearchIndex(StateDB(w.cfg.state_dir)).search("PIN") == []


def test_handwatch_web_serves_the_page_without_the_daemon(tmp_path, fake_openai):
    import signal
    import subprocess
    import sys

    import httpx

    from tests.support.fakeopenai import free_port, wait_for
    from tests.support.paths import cli_env

    w = make_world(tmp_path, fake_openai)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "handwatch", "-c", str(w.cfg_path), "web", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
    )

    def page():
        try:
            return httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        except httpx.TransportError:
            assert proc.poll() is None, proc.stderr.read().decode()
            return None

    try:
        r = wait_for(page, 30, what="the page")
        assert r.status_code == 200 and "apple-cake.jpg" in r.text
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


def test_a_heic_original_is_shown_to_the_browser_as_jpeg(world):
    import pillow_heif

    from handwatch.safefs import file_sig, sha256_file
    from handwatch.store.jobs import JobQueue

    pillow_heif.register_heif_opener()
    heic = world.inbox / "phone.heic"
    Image.new("RGB", (640, 480), (200, 180, 160)).save(heic, format="HEIF")
    JobQueue(StateDB(world.cfg.state_dir)).record(heic, sha256_file(heic), file_sig(heic), "failed", reason="test")
    world.files["heic"] = heic
    with world.client() as c:
        r = c.get(f"/file/{world.job_id('heic')}/page/1.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    im = Image.open(io.BytesIO(r.content))
    assert im.format == "JPEG" and im.size == (640, 480)
