"""The review page in a real browser: Debian's chromium, headless, driven by Playwright (which cannot download a
browser here, so it is pointed at the system one). Open the list, open a flagged file with the keyboard, step to the
previous file and back, correct a word, save, accept; then check the Markdown on disk, the ledger and the list.

Screenshots go to a temporary folder; `HANDWATCH_SCREENSHOTS=docs` writes the docs' into docs/images/ instead."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from handwatch.publish import markdown
from handwatch.store.state import Ledger, StateDB
from tests.support.paths import REPO
from tests.support.webworld import make_world, serve

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser_page(tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} missing: install Debian's chromium package (make setup does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=ARGS, viewport={"width": 1360, "height": 860}
        )
        try:
            yield ctx.new_page()
        finally:
            ctx.close()


def shots_dir(tmp_path: Path) -> Path:
    wanted = os.environ.get("HANDWATCH_SCREENSHOTS")
    d = (REPO / wanted / "images") if wanted else tmp_path / "shots"
    d.mkdir(parents=True, exist_ok=True)
    return d


def test_review_a_flagged_file_in_a_real_browser(tmp_path, fake_openai, browser_page):
    world = serve(make_world(tmp_path, fake_openai))
    page = browser_page
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)  # a CSP violation shows here
    shots = shots_dir(tmp_path)
    md = world.files["recipe"].with_suffix(".md")
    try:
        page.goto(world.base + "/")
        rows = page.locator("#items tr.item")
        assert rows.count() == 3
        assert rows.nth(0).get_attribute("class") == "item waiting current"  # the keyboard cursor starts on the first row
        page.screenshot(path=str(shots / "review-list.png"), full_page=True)

        page.keyboard.press("j")
        page.keyboard.press("j")
        assert "current" in rows.nth(2).get_attribute("class")
        page.keyboard.press("Enter")
        page.wait_for_url(f"**/file/{world.job_id('recipe')}")
        # previous and next in the list's order, with the keyboard
        assert page.locator(".pos").inner_text() == "3 of 3"
        page.keyboard.press("k")
        page.wait_for_url(f"**/file/{world.job_id('broken')}")
        assert page.locator(".pos").inner_text() == "2 of 3"
        page.keyboard.press("j")
        page.wait_for_url(f"**/file/{world.job_id('recipe')}")
        assert page.locator("mark.doubt").all_inner_texts() == ["cardamon", "suger"]
        img = page.locator(".page img")
        page.wait_for_function("() => document.querySelector('.page img').naturalWidth > 0")
        assert img.evaluate("i => i.naturalWidth") == 1800
        page.screenshot(path=str(shots / "review-file.png"))
        img.click()
        assert "zoomed" in page.locator(".page").get_attribute("class")
        img.click()

        # correct a word, save with the keyboard
        body = page.locator("#body")
        body.fill(body.input_value().replace("==cardamon==", "cardamom"))
        body.press("Control+s")
        page.wait_for_url("**?m=saved")
        assert page.locator("#message").inner_text().startswith("Saved.")
        assert page.locator("mark.doubt").all_inner_texts() == ["suger"]
        text = md.read_text()
        assert "- 2 pods of cardamom, crushed" in text and markdown.fields(text)["needs_review"] is True

        # accept with the keyboard: back to the list, where it is gone
        page.locator("h1").click()  # focus out of the editor, as a person clicking elsewhere
        page.keyboard.press("a")
        page.wait_for_url("**/?m=accepted")
        names = page.locator("#items tr.item td:nth-child(2)").all_inner_texts()
        assert names == ["later.jpg", "broken.jpg"]

        fields = markdown.fields(md.read_text())
        assert fields["needs_review"] is False and fields["reviewed"]
        assert "cardamom" in md.read_text() and "==suger==" in md.read_text()
        db = StateDB(world.cfg.state_dir)
        assert Ledger(db).get(md).edited is not None
        assert db.connect().execute("SELECT needs_review FROM docs WHERE output = ?", (str(md).encode(),)).fetchone()[0] == 0

        # search finds the corrected word, with a thumbnail the browser can show
        page.fill("#q", "the recipe with cardamom")
        page.keyboard.press("Enter")
        page.wait_for_url("**/search?q=*")
        assert page.locator(".result .line mark").all_inner_texts() == ["cardamom"]
        page.wait_for_function("() => document.querySelector('.result img').naturalWidth > 0")
        page.screenshot(path=str(shots / "search.png"))
        assert errors == []
    finally:
        world.stop()
    for name in ("review-list.png", "review-file.png", "search.png"):
        assert (shots / name).stat().st_size > 10_000
    if not os.environ.get("HANDWATCH_SCREENSHOTS"):
        shutil.rmtree(shots)
