"""Word confidences from the engines: log-probabilities over real HTTP (asked, ignored, rejected), and Tesseract's own."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from handwatch.config.endpoint import Endpoint
from handwatch.config.schema import Rule
from handwatch.errors import ConfigError
from handwatch.transcribe.tesseract import TesseractEngine
from handwatch.transcribe.vlm import VLMEngine
from tests.support.fakeopenai import tokens
from tests.support.pages import draw_page

PAGE = Image.new("RGB", (800, 600), "white")


def probs(page) -> dict[str, float]:
    return {page.text[w.start : w.end]: round(w.p, 2) for w in page.words}


def engine(url: str, **ep) -> VLMEngine:
    return VLMEngine([Endpoint(url=url, model="m", **ep)])


def test_logprobs_are_asked_for_and_become_word_probabilities(fake_openai):
    text = "# Shopping\n- flour\n- sugar"
    fake_openai.reply({"content": text, "logprobs": tokens(text, {"flour": 0.3})})
    page = engine(fake_openai.url).transcribe_page(PAGE, Rule())
    params = fake_openai.requests[0].params
    assert params["logprobs"] is True and params["top_logprobs"] == 1
    assert probs(page) == {"Shopping": 1.0, "flour": 0.3, "sugar": 1.0}
    assert page.endpoint == f"127.0.0.1:{fake_openai.server.server_port}" and page.asked_model == "m"


def test_probabilities_follow_the_text_through_cleaning(fake_openai):
    raw = "Here is the transcription:\n```markdown\nBuy flour\n```"
    fake_openai.reply({"content": raw, "logprobs": tokens(raw, {"flour": 0.25})})
    page = engine(fake_openai.url).transcribe_page(PAGE, Rule())
    assert page.text == "Buy flour" and probs(page) == {"Buy": 1.0, "flour": 0.25}


def test_auto_stops_asking_a_server_that_ignores_it(fake_openai):
    fake_openai.logprobs_mode = "ignore"
    e = engine(fake_openai.url)
    fake_openai.reply({"content": "Buy flour", "logprobs": tokens("Buy flour")}, "Buy sugar")
    first = e.transcribe_page(PAGE, Rule())
    second = e.transcribe_page(PAGE, Rule())
    assert first.words is None and second.text == "Buy sugar"
    assert "logprobs" in fake_openai.requests[0].params and "logprobs" not in fake_openai.requests[1].params


def test_auto_retries_without_and_remembers_a_server_that_rejects_it(fake_openai):
    fake_openai.logprobs_mode = "reject"
    e = engine(fake_openai.url)
    fake_openai.reply("Buy flour", "Buy sugar")
    assert e.transcribe_page(PAGE, Rule()).text == "Buy flour"
    assert e.transcribe_page(PAGE, Rule()).text == "Buy sugar"
    asked = ["logprobs" in r.params for r in fake_openai.requests]
    assert asked == [True, False, False]  # rejected once, resent without, never asked again
    assert e.clients[0].down_reason is None  # a rejected option is not an endpoint failure


def test_on_insists_and_a_rejection_is_a_configuration_error(fake_openai):
    fake_openai.logprobs_mode = "reject"
    with pytest.raises(ConfigError, match="confidence: on, but the server rejects log-probabilities"):
        engine(fake_openai.url, confidence="on").transcribe_page(PAGE, Rule())


def test_on_keeps_asking_a_server_that_ignores_it(fake_openai):
    fake_openai.logprobs_mode = "ignore"
    e = engine(fake_openai.url, confidence="on")
    e.transcribe_page(PAGE, Rule())
    e.transcribe_page(PAGE, Rule())
    assert all("logprobs" in r.params for r in fake_openai.requests)


def test_off_never_asks(fake_openai):
    e = engine(fake_openai.url, confidence="off")
    fake_openai.reply({"content": "Buy flour", "logprobs": tokens("Buy flour")})
    assert e.transcribe_page(PAGE, Rule()).words is None
    assert "logprobs" not in fake_openai.requests[0].params and "top_logprobs" not in fake_openai.requests[0].params


def test_translation_requests_do_not_ask(fake_openai):
    e = engine(fake_openai.url)
    e.translate("Liebe Anna", "en")
    assert "logprobs" not in fake_openai.requests[0].params


def test_recipe_json_probabilities_land_on_the_rendered_recipe(fake_openai):
    recipe = {
        "title": "Pancakes",
        "servings": None,
        "times": {"prep": None, "cook": None, "total": None},
        "ingredients": [{"quantity": "250", "unit": "g", "item": "flour", "note": None}],
        "steps": ["Whisk everything."],
        "notes": [],
    }
    content = json.dumps(recipe)
    fake_openai.reply({"content": content, "logprobs": tokens(content, {"flour": 0.2, "Whisk": 0.4})})
    page = engine(fake_openai.url).transcribe_page(PAGE, Rule(profile="recipe"))
    p = probs(page)
    assert p["flour"] == 0.2 and p["Whisk"] == 0.4 and p["Pancakes"] == 1.0
    assert "Ingredients" not in p and "Steps" not in p  # handwatch's headings are not the model's reading


def test_language_trailer_is_cut_from_the_words_too(fake_openai):
    raw = "Liebe Anna, merci!\nLanguages: de, fr"
    fake_openai.reply({"content": raw, "logprobs": tokens(raw, {"merci": 0.5})})
    page = engine(fake_openai.url).transcribe_page(PAGE, Rule(profile="multilingual", languages=("de", "fr")))
    assert page.text == "Liebe Anna, merci!" and probs(page) == {"Liebe": 1.0, "Anna": 1.0, "merci": 0.5}


def test_a_placeholder_never_carries_confidence(fake_openai):
    fake_openai.default = {"content": "I'm sorry, I can't help with that.", "logprobs": tokens("I'm sorry")}
    page = engine(fake_openai.url).transcribe_page(PAGE, Rule())
    assert page.text.startswith("[no transcription") and page.words is None


def test_tesseract_gives_its_own_word_confidences():
    page = TesseractEngine().transcribe_page(draw_page(["Buy flour and sugar"], font_name="humor"), Rule())
    assert page.words and all(0.0 <= w.p <= 1.0 for w in page.words)
    assert [page.text[w.start : w.end].lower() for w in page.words] == page.text.lower().split()
    assert page.asked_model == page.model and page.model.startswith("tesseract-")
