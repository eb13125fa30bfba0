"""The review page's safety: path traversal, paths outside the watched folders, a foreign Origin, a missing or wrong
CSRF token, the Host check, the password, strict headers, and refusing to listen off loopback without a password."""

from __future__ import annotations

import base64
import os

import httpx
import pytest
import yaml

from handwatch.store.state import StateDB
from handwatch.web.security import CSP, hash_password, verify_password
from tests.support.webworld import form_of, make_world, serve


@pytest.fixture
def world(tmp_path, fake_openai):
    w = serve(make_world(tmp_path, fake_openai))
    (tmp_path / "secret.txt").write_text("TOP SECRET\n")
    yield w
    w.stop()


def raw_get(base: str, target: str, host: str | None = None) -> httpx.Response:
    """Send the request target exactly as written: clients normalise `..` away, an attacker does not."""
    url = httpx.URL(base)
    with httpx.Client(timeout=30) as c:
        req = c.build_request("GET", base, headers={"host": host} if host else None)
        req.url = url.copy_with(raw_path=target.encode())
        return c.send(req)


TRAVERSALS = [
    "/file/../../secret.txt",
    "/file/1/../../../secret.txt",
    "/static/../../../secret.txt",
    "/static/..%2f..%2f..%2fsecret.txt",
    "/static/%2e%2e/%2e%2e/%2e%2e/secret.txt",
    "/file/1/page/..%2f..%2fsecret.txt",
    "/file/1/page/1.jpg/../../../../secret.txt",
    "/doc/..%2f..%2fstate%2fstate.sqlite3",
    "/static/../../config.yaml",
    "/file/%2e%2e%2fsecret.txt",
]


def test_path_traversal_serves_nothing(world):
    for target in TRAVERSALS:
        r = raw_get(world.base, target)
        assert r.status_code in (400, 404), target
        assert b"TOP SECRET" not in r.content and b"SQLite" not in r.content and b"state_dir" not in r.content


def test_only_originals_and_markdown_inside_watched_folders_are_served(world, tmp_path):
    """A job row can name any path (an old database, a folder removed from the config, a symlink swapped in
    later): the page resolves it and serves it only when it really lies inside a watched folder."""
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(world.files["recipe"].read_bytes())
    link = world.inbox / "sneaky.jpg"
    os.symlink(outside, link)
    db = StateDB(world.cfg.state_dir).connect()
    ids = []
    for path, out in ((outside, tmp_path / "secret.txt"), (link, tmp_path / "secret.txt")):
        cur = db.execute(
            "INSERT INTO jobs(path, sha256, size, mtime_ns, state, output, created, updated) "
            "VALUES(?, 'x', 1, 1, 'done', ?, 0, 0)",
            (str(path).encode(), str(out).encode()),
        )
        ids.append(cur.lastrowid)
    db.execute(
        "INSERT INTO docs(output, source, needs_review, body, updated) VALUES(?, ?, 1, 'TOP SECRET', 0)",
        (str(tmp_path / "secret.txt").encode(), str(outside).encode()),
    )
    with world.client() as c:
        for jid in ids:
            page = c.get(f"/file/{jid}")  # neither its original nor its Markdown really lies in a watched folder
            assert page.status_code == 404 and "TOP SECRET" not in page.text and "outside" not in page.text
            assert c.get(f"/file/{jid}/page/1.jpg").status_code == 404
        assert c.get("/file/999999").status_code == 404 and c.get("/doc/999999").status_code == 404


def test_a_folder_dropped_from_the_config_is_neither_searched_nor_listed(tmp_path, fake_openai):
    """Its transcriptions stay in the state database (the folder may come back), but the page shows nothing of
    Markdown outside the watched folders: no matching line, no title, no row in the review list."""
    w = make_world(tmp_path, fake_openai)
    other = tmp_path / "other"
    other.mkdir()
    data = yaml.safe_load(w.cfg_path.read_text())
    data["folders"] = [{"path": str(other)}]
    w.cfg_path.write_text(yaml.safe_dump(data))
    serve(w)
    try:
        with w.client() as c:
            for q in ("grandma", "apple cake", "Dear Anna"):
                assert "0 results" in c.get("/search", params={"q": q}).text, q
            listing = c.get("/").text
            assert 'id="empty"' in listing and "apple-cake" not in listing and "broken.jpg" not in listing
    finally:
        w.stop()


def test_an_id_beyond_what_sqlite_holds_is_not_found_not_a_crash(world):
    with world.client() as c:
        form = form_of(c.get(f"/file/{world.job_id('recipe')}").text, "edit")
        for huge in (str(1 << 63), "9" * 5000):  # 5,000 digits: more than Python's int() takes from a string
            for path in (f"/file/{huge}", f"/doc/{huge}", f"/file/{huge}/page/1.jpg", f"/doc/{huge}/page/1.jpg"):
                assert c.get(path).status_code == 404, path
            for path in (f"/file/{huge}/save", f"/doc/{huge}/save", f"/file/{huge}/retry"):
                assert c.post(path, data={**form, "action": "accept"}).status_code == 404, path
        assert c.get(f"/file/{(1 << 63) - 1}").status_code == 404


def test_a_post_from_another_origin_is_refused(world):
    jid = world.job_id("recipe")
    md = world.files["recipe"].with_suffix(".md")
    before = md.read_bytes()
    with world.client() as c:
        form = form_of(c.get(f"/file/{jid}").text, "edit")
        for origin in ("http://evil.example", "null", "http://127.0.0.1:1"):
            r = c.post(f"/file/{jid}/save", data={**form, "body": "pwned", "action": "save"}, headers={"origin": origin})
            assert r.status_code == 403, origin
        r = c.post(
            f"/file/{jid}/save", data={**form, "body": "pwned", "action": "save"}, headers={"referer": "http://evil.example/page"}
        )
        assert r.status_code == 403
        r = c.post(
            f"/file/{jid}/retry", data=form_of(c.get(f"/file/{jid}").text, "retry"), headers={"origin": "http://evil.example"}
        )
        assert r.status_code == 403
    assert md.read_bytes() == before
    # the same POST from the page's own origin goes through
    with world.client() as c:
        r = c.post(f"/file/{jid}/save", data={**form, "body": "fixed", "action": "save"}, headers={"origin": world.base})
        assert r.status_code == 303
    assert md.read_text().endswith("\nfixed\n")


def test_a_post_without_the_csrf_token_is_refused(world):
    jid = world.job_id("recipe")
    md = world.files["recipe"].with_suffix(".md")
    before = md.read_bytes()
    with world.client() as c:
        form = form_of(c.get(f"/file/{jid}").text, "edit")
        del form["csrf"]
        for extra in ({}, {"csrf": ""}, {"csrf": "guessed-token"}):
            r = c.post(
                f"/file/{jid}/save", data={**form, **extra, "body": "pwned", "action": "accept"}, headers={"origin": world.base}
            )
            assert r.status_code == 403 and "security token" in r.text
        r = c.post(f"/file/{jid}/retry", data={"profile": "recipe"})
        assert r.status_code == 403
    assert md.read_bytes() == before
    assert StateDB(world.cfg.state_dir).connect().execute("SELECT override FROM jobs WHERE id=?", (jid,)).fetchone()[0] is None


def test_another_host_name_is_refused_without_a_password(world):
    """DNS rebinding: evil.example resolving to 127.0.0.1 would make the page same-origin with the attacker's."""
    r = raw_get(world.base, "/", host="evil.example")
    assert r.status_code == 421 and "apple-cake" not in r.text
    assert raw_get(world.base, "/", host=f"localhost:{httpx.URL(world.base).port}").status_code == 200


def test_every_response_carries_a_strict_content_security_policy(world):
    with world.client() as c:
        for path in ("/", f"/file/{world.job_id('recipe')}", "/search?q=x", "/static/app.js", "/nope", "/healthz"):
            r = c.get(path)
            assert r.headers["content-security-policy"] == CSP, path
            assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
    assert "unsafe-inline" not in CSP and "default-src 'none'" in CSP and "script-src 'self'" in CSP
    with world.client() as c:
        page = c.get("/").text
    assert "<script>" not in page and " style=" not in page and " onclick=" not in page  # nothing inline to allow


def test_a_password_guards_everything_but_healthz(tmp_path, fake_openai, monkeypatch):
    monkeypatch.setenv("HW_TEST_PW", "correct horse")
    w = serve(make_world(tmp_path, fake_openai, web={"password_env": "HW_TEST_PW"}))
    try:
        with w.client() as c:
            r = c.get("/")
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
            assert c.get("/metrics").status_code == 401
            assert c.get("/healthz").status_code == 503  # open: a monitor needs no password, and it says little
            assert c.get("/", auth=("x", "wrong")).status_code == 401
            assert c.get("/", auth=("anyone", "correct horse")).status_code == 200
            assert c.get("/", headers={"authorization": "Basic " + base64.b64encode(b"\xff\xfe").decode()}).status_code == 401
    finally:
        w.stop()


def test_password_hashes():
    stored = hash_password("correct horse", salt=b"0123456789abcdef")
    assert stored.startswith("scrypt$32768$8$1$") and verify_password("correct horse", stored)
    assert not verify_password("correct hors", stored) and not verify_password("x", "garbage")


def test_a_hashed_password_in_the_config(tmp_path, fake_openai):
    w = serve(make_world(tmp_path, fake_openai, web={"password_hash": hash_password("s3cret-pass")}))
    try:
        with w.client() as c:
            assert c.get("/", auth=("u", "s3cret-pass")).status_code == 200
            assert c.get("/", auth=("u", "s3cret-pas")).status_code == 401
    finally:
        w.stop()


def test_listening_off_loopback_without_a_password_is_refused_at_start(tmp_path, write_config, run_cli):
    cfg = write_config({"endpoints": [{"url": "http://127.0.0.1:9/v1"}], "web": {"listen": "0.0.0.0:8765"}})
    for cmd in (["web"], ["run"]):
        res = run_cli("-c", cfg, *cmd, timeout=60)
        assert res.returncode == 78, res.stderr
        assert "web.listen: 0.0.0.0 is not a loopback address" in res.stderr and "password_hash" in res.stderr
    ok = write_config({"endpoints": [{"url": "http://127.0.0.1:9/v1"}]}, name="ok.yaml")
    res = run_cli("-c", ok, "web", "--listen", "[::]:8765", timeout=60)
    assert res.returncode == 78 and "--listen: listen: :: is not a loopback address" in res.stderr


def test_a_password_variable_that_is_not_set_stops_the_page_and_the_daemon(tmp_path, write_config, run_cli):
    cfg = write_config(
        {
            "endpoints": [{"url": "http://127.0.0.1:9/v1"}],
            "folders": [{"path": str(tmp_path / "inbox")}],
            "web": {"listen": "0.0.0.0:8765", "password_env": "HW_UNSET_PASSWORD"},
        }
    )
    for cmd in (["web"], ["run"]):
        res = run_cli("-c", cfg, *cmd, timeout=60)
        assert res.returncode == 78, res.stderr
        assert "web.password_env: the environment variable HW_UNSET_PASSWORD is not set" in res.stderr


def test_hash_password_command(run_cli, tmp_path):
    import subprocess
    import sys

    from tests.support.paths import cli_env

    res = subprocess.run(
        [sys.executable, "-m", "handwatch", "web", "--hash-password"],
        input="long enough pw\n",
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    stored = res.stdout.strip()
    assert verify_password("long enough pw", stored)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"web": {"listen": "0.0.0.0:1", "password_hash": stored}}))
    from handwatch.config import loader

    assert loader.load(cfg).web.password_hash == stored  # what it prints is what the config accepts
