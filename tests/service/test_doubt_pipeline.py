"""Doubt from engine to Markdown: front matter, ==marks==, blank pages, ink, scripts, provenance — real files, SQLite, HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from PIL import Image, ImageDraw

from bench import gen
from handwatch.config import loader
from handwatch.errors import NotADocument
from handwatch.service.pipeline import Pipeline
from handwatch.store.state import StateDB
from tests.support.fakeopenai import kind_reply, tokens
from tests.support.pages import draw_page


def meta_and_body(md: Path) -> tuple[dict, str]:
    _, head, body = md.read_text(encoding="utf-8").split("---\n", 2)
    return yaml.safe_load(head), body.lstrip("\n")


@pytest.fixture
def make(tmp_path, fake_openai, write_config):
    """A pipeline over a watched folder `inbox`, with the fake server as its endpoint."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()

    def build(endpoint: dict | None = None, **rule) -> Pipeline:
        cfg = loader.load(
            write_config(
                {
                    "endpoints": [{"url": fake_openai.url, "max_concurrency": 1, **(endpoint or {})}],
                    "folders": [{"path": str(inbox), **rule}],
                }
            )
        )
        return Pipeline(cfg, StateDB(cfg.state_dir))

    build.inbox = inbox
    return build


def note(inbox: Path, name: str = "note.png", lines=("Buy flour and sugar",)) -> Path:
    path = inbox / name
    draw_page(list(lines)).save(path)
    return path


def test_uncertain_words_are_marked_counted_and_flagged(make, fake_openai):
    text = "Buy flour and sugar"
    fake_openai.reply({"content": text, "logprobs": tokens(text, {"flour": 0.2, "sugar": 0.4})})
    out = make().process(note(make.inbox)).output
    meta, body = meta_and_body(out)
    assert body == "Buy ==flour== and ==sugar==\n"
    assert meta["uncertain_words"] == 2 and meta["confidence"] == round((0.999 * 0.999 + 0.2 + 0.999 + 0.4) / 4, 2)
    assert meta["needs_review"] is True
    assert meta["review_reasons"] == ["confidence 0.65 is under 0.9", "2 uncertain words"]
    keys = list(meta)
    at = keys.index("review_reasons")
    assert keys[at + 1 : at + 3] == ["confidence", "uncertain_words"]


def test_a_rule_turns_marking_off_and_thresholds_change_the_verdict(make, fake_openai):
    text = "Buy flour and sugar"
    fake_openai.reply({"content": text, "logprobs": tokens(text, {"flour": 0.5})})
    pipeline = make(mark_uncertain=False, uncertain_below=0.4, review_below=0.5, review_uncertain_words=3)
    meta, body = meta_and_body(pipeline.process(note(make.inbox)).output)
    assert body == "Buy flour and sugar\n" and meta["uncertain_words"] == 0 and meta["needs_review"] is False


def test_without_logprobs_there_are_no_confidence_fields(make, fake_openai):
    fake_openai.logprobs_mode = "ignore"
    fake_openai.reply({"content": "Buy flour", "logprobs": tokens("Buy flour")})
    meta, body = meta_and_body(make().process(note(make.inbox)).output)
    assert "confidence" not in meta and "uncertain_words" not in meta and body == "Buy flour\n"


def test_a_blank_photo_gets_no_markdown_and_is_never_transcribed(make, fake_openai):
    """Issue #22: a blank page no longer gets an empty Markdown. In a camera folder the local look skips it without
    a request; where the check is off the model is asked only whether it is blank, and agreeing, skips it too."""
    blank = make.inbox / "blank.jpg"
    gen.phone_photo(lines=[], size=(2016, 1512)).save(blank, quality=85)
    with pytest.raises(NotADocument, match=r"not a document \(blank: nothing on it\)"):
        make().process(blank)
    assert not fake_openai.requests and not fake_openai.classifications
    fake_openai.classify = kind_reply("blank")
    with pytest.raises(NotADocument, match=r"^not a document \(blank\)$"):
        make(documents_only=False).process(blank)
    assert not fake_openai.requests and len(fake_openai.classifications) == 1
    assert not blank.with_suffix(".md").exists()


def test_only_the_inked_pages_of_a_scan_are_sent(make, fake_openai):
    tiff = make.inbox / "scan.tiff"
    pages = [draw_page(["Page one"]), Image.new("RGB", (1800, 900), "white"), draw_page(["Page three"])]
    pages[0].save(tiff, save_all=True, append_images=pages[1:])
    fake_openai.reply("Page one", "Page three")
    fake_openai.classify = kind_reply("blank")  # the model agrees page 2 is blank: the ink measure alone never drops it
    meta, body = meta_and_body(make().process(tiff).output)
    assert len(fake_openai.requests) == 2 and len(fake_openai.classifications) == 1
    assert body == "<!-- page 1 -->\n\nPage one\n\n<!-- page 2 -->\n\n\n\n<!-- page 3 -->\n\nPage three\n"
    assert meta["review_reasons"] == ["page 2: blank page"] and meta["model"] == "fake-vl-7b"


def test_text_from_a_nearly_blank_page_needs_review(make, fake_openai):
    speck = make.inbox / "speck.png"
    im = Image.new("RGB", (1800, 900), "white")
    ImageDraw.Draw(im).ellipse((900, 450, 907, 457), fill="black")
    im.save(speck)
    fake_openai.reply("Dear diary, today I went to the market and bought apples.")
    meta, _ = meta_and_body(make().process(speck).output)
    assert len(fake_openai.requests) == 1 and meta["needs_review"] is True
    assert meta["review_reasons"][0].startswith("text on a nearly blank page: 45 letters")


def test_a_full_page_read_as_a_few_words_is_suspiciously_short(make, fake_openai):
    full = make.inbox / "full.png"
    gen.page(gen.NOTE * 3, size=(2400, 3200), font_size=72).save(full)
    fake_openai.reply("Call grandma")
    meta, _ = meta_and_body(make().process(full).output)
    assert meta["review_reasons"][0].startswith("suspiciously short: 2 words from a page with")


def test_wrong_script_and_a_contradicting_language_trailer(make, fake_openai):
    fake_openai.reply("Купить муку и сахар")
    meta, _ = meta_and_body(make(languages=["de", "en"]).process(note(make.inbox)).output)
    assert meta["review_reasons"] == ["script: 100% of the letters are Cyrillic, which languages [de, en] are not written in"]
    fake_openai.reply("Liebe Anna, danke!\nLanguages: de, it")
    meta, _ = meta_and_body(make(profile="multilingual", languages=["de", "en"]).process(note(make.inbox, "b.png")).output)
    assert meta["detected_languages"] == ["de", "it"]
    assert meta["review_reasons"] == ["language: the model says the text is in it, not in [de, en]"]


def test_provenance_names_the_endpoint_not_its_key_and_fingerprints_the_rule(make, fake_openai, monkeypatch):
    monkeypatch.setenv("SECRET_KEY_VAR", "sk-very-secret")
    meta, _ = meta_and_body(make({"api_key_env": "SECRET_KEY_VAR"}).process(note(make.inbox)).output)
    assert meta["endpoint"] == f"127.0.0.1:{fake_openai.server.server_port}" and "sk-very-secret" not in str(meta)
    named, _ = meta_and_body(make({"name": "gpubox"}).process(note(make.inbox, "n2.png", ["Call grandma"])).output)
    assert named["endpoint"] == "gpubox" and named["fingerprint"] == meta["fingerprint"] and len(meta["fingerprint"]) == 12
    pipeline = make(prompt="Dates are day/month/year.")
    other, _ = meta_and_body(pipeline.process(note(make.inbox, "n3.png", ["Fix the gate"])).output)
    assert other["fingerprint"] != meta["fingerprint"]


def test_tesseract_misreads_are_flagged_and_marked(tmp_path, write_config, run_cli):
    """#13's demo: Tesseract read the DKG handwriting demo as "BOY FLOOR AND SUGAR" and said needs_review: false."""
    inbox = tmp_path / "inbox"
    gen.demo(inbox)
    cfg = write_config({"defaults": {"engine": "tesseract"}, "folders": [{"path": str(inbox)}]})
    res = run_cli("once", "-c", cfg, inbox / "todo.jpg")
    assert res.returncode == 0, res.stderr
    meta, body = meta_and_body(inbox / "todo.md")
    assert meta["needs_review"] is True and 0 < meta["confidence"] < 1 and meta["uncertain_words"] >= 2
    assert any("uncertain words" in r for r in meta["review_reasons"])
    assert body.count("==") == 2 * body.count("==") // 2 and "==" in body
    words = [w.strip("=") for w in body.split()]
    assert body.replace("==", "").split() == words  # marking never changes a word
