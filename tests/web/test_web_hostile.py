"""The review page against what an intruder or another device can do (issue #24, items 3, 4, 5, 7 and 8):
health that tells strangers nothing, password guessing, odd parameters, a folder dropped from the config, and
a huge file in a Markdown's place."""

from __future__ import annotations

import pytest
import structlog
import yaml

from tests.support.webworld import make_world, serve


def test_unauthenticated_health_says_only_ok_and_what_failed(tmp_path, fake_openai, monkeypatch):
    monkeypatch.setenv("HW_TEST_PW", "correct horse")
    w = make_world(tmp_path, fake_openai, web={"password_env": "HW_TEST_PW"})
    data = yaml.safe_load(w.cfg_path.read_text())
    data["endpoints"][0]["url"] = data["endpoints"][0]["url"].replace("http://", "http://apiuser:S3cretTok@")
    w.cfg_path.write_text(yaml.safe_dump(data))
    w = serve(w)
    try:
        with w.client() as c:
            r = c.get("/healthz")
            assert r.status_code == 503 and r.json() == {"ok": False, "failed": ["daemon"]}
            assert "S3cretTok" not in r.text and str(w.cfg.state_dir) not in r.text
            full = c.get("/healthz", auth=("me", "correct horse")).json()
            assert full["ok"] is False and full["checks"]["daemon"].startswith("no daemon is running")
            metrics = c.get("/metrics", auth=("me", "correct horse")).text
            assert "handwatch_endpoint_up" in metrics and "S3cretTok" not in metrics
    finally:
        w.stop()


@pytest.fixture
def guarded(tmp_path, fake_openai, monkeypatch):
    """The review page served with a password (correct horse)."""
    monkeypatch.setenv("HW_TEST_PW", "correct horse")
    w = serve(make_world(tmp_path, fake_openai, web={"password_env": "HW_TEST_PW"}))
    yield w
    w.stop()


def test_password_guessing_is_slowed_per_client_and_logged(guarded):
    with structlog.testing.capture_logs() as logs, guarded.client() as c:
        codes = [c.get("/", auth=("me", f"guess{i}")).status_code for i in range(6)]
        assert codes[:4] == [401, 401, 401, 401]  # a few typos are free, then each failure makes it wait
        assert codes[4:] == [429, 429]
        r = c.get("/", auth=("me", "correct horse"))
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1  # not even checked while it waits
        assert c.get("/healthz").status_code == 503  # health stays open to monitors
    failed = [e for e in logs if e["event"] == "auth.failed"]
    assert len(failed) == 4 and failed[-1]["failures"] == 4 and failed[-1]["client"] == "127.0.0.1"


def test_the_throttle_doubles_its_wait_and_forgets_on_success():
    from handwatch.web.security import Throttle

    now = [0.0]
    t = Throttle(lambda: now[0])
    waits = []
    for _ in range(Throttle.FREE + 4):
        t.failed("a")
        waits.append(t.wait("a"))
    assert waits == [0, 0, 0, 1, 2, 4, 8] and t.wait("b") == 0
    now[0] += 8
    assert t.wait("a") == 0
    t.succeeded("a")
    t.failed("a")
    assert t.wait("a") == 0


def test_parameters_are_parsed_strictly_never_a_500(tmp_path, fake_openai):
    w = serve(make_world(tmp_path, fake_openai))
    try:
        with w.client() as c:
            job = w.job_id("recipe")
            for path in ("/?folder=²", "/search?q=apple&folder=²", f"/file/{job}?folder=²", "/?folder=-1", "/?kind=%00"):
                assert c.get(path).status_code == 200, path
    finally:
        w.stop()


def test_a_folder_dropped_from_the_config_is_not_shown_or_acted_on(tmp_path, fake_openai):
    w = make_world(tmp_path, fake_openai)
    other = tmp_path / "elsewhere"
    other.mkdir()
    data = yaml.safe_load(w.cfg_path.read_text())
    data["folders"] = [{"path": str(other)}]  # the inbox is no longer watched
    w.cfg_path.write_text(yaml.safe_dump(data))
    w = serve(w)
    try:
        with w.client() as c:
            job = w.job_id("recipe")
            page = c.get(f"/file/{job}")
            assert page.status_code == 404 and "apple-cake" not in page.text and str(w.inbox) not in page.text
            (doc,) = w.server.db.connect().execute("SELECT id FROM docs WHERE needs_review = 1").fetchall()
            assert c.get(f"/doc/{doc['id']}").status_code == 404
            assert c.post(f"/file/{job}/retry", data={"csrf": "x"}).status_code in (403, 404)
    finally:
        w.stop()


def test_a_huge_file_in_a_markdowns_place_is_shown_in_part_and_not_edited(tmp_path, fake_openai):
    w = serve(make_world(tmp_path, fake_openai))
    md = w.files["recipe"].with_suffix(".md")
    with open(md, "r+b") as f:  # 200 MB, sparse: the review page must not read it whole
        f.truncate(200 << 20)
    try:
        with w.client() as c:
            r = c.get(f"/file/{w.job_id('recipe')}")
            assert r.status_code == 200 and len(r.content) < 4 << 20
            assert "209,715,200 bytes: only its beginning is shown" in r.text and 'id="edit"' not in r.text
            assert "Apple cake" in r.text and "cardamon" in r.text  # its beginning: the transcription as it was
    finally:
        w.stop()


def test_guesses_sent_at_once_cannot_outrun_the_wait_nor_stall_the_owner(guarded):
    import concurrent.futures

    import httpx

    with guarded.client() as c:
        assert c.get("/", auth=("me", "correct horse")).status_code == 200  # the owner, known from now on

    def guess(i):
        return httpx.get(guarded.base + "/", auth=("me", f"guess{i}"), timeout=60).status_code

    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        guesses = [pool.submit(guess, i) for i in range(30)]
        with guarded.client() as c:  # meanwhile, from the same address: a known password is neither queued nor throttled
            assert c.get("/", auth=("me", "correct horse")).status_code == 200
        codes = [g.result() for g in guesses]
    # 3 free tries and 1 s, 2 s, 4 s … after: however slowly the 30 arrive (within a minute), at most 10 are checked
    assert codes.count(401) <= 10 and codes.count(401) + codes.count(429) == 30, codes


def test_an_ipv6_client_is_its_slash_64():
    from handwatch.web.security import client_key

    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7" and client_key("192.0.2.7") == "192.0.2.7"
