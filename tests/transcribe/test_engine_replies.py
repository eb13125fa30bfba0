"""Real-looking bad replies over HTTP, each in sequence with a good one; recipes, languages, translation, endpoints."""

from __future__ import annotations

import json
import threading

import pytest
import yaml
from PIL import Image

from handwatch.config.endpoint import Endpoint
from handwatch.config.schema import Rule
from handwatch.transcribe.profiles import STRICT_SUFFIX
from handwatch.transcribe.vlm import VLMEngine
from tests.support.fakeopenai import FakeOpenAI, free_port, wait_for
from tests.support.pages import draw_page
from tests.support.paths import DATA

REPLIES = DATA / "replies"
GOOD = "# Shopping\n- flour\n- sugar"
PAGE = Image.new("RGB", (800, 600), "white")


def reply(name: str) -> str:
    return (REPLIES / name).read_text(encoding="utf-8")


@pytest.fixture
def engine(fake_openai):
    return VLMEngine([Endpoint(url=fake_openai.url, model="m", max_tokens=1000)])


@pytest.mark.parametrize("bad", ["narration.txt", "refusal.txt", "unclosed_think.txt", "loop_lines.txt"])
def test_bad_reply_then_good_one_gives_the_good_text(engine, fake_openai, bad):
    fake_openai.reply(reply(bad), GOOD)
    page = engine.transcribe_page(PAGE, Rule())
    assert page.text == GOOD and page.review_reasons == []
    assert len(fake_openai.requests) == 2


def test_narration_retries_with_a_stricter_instruction(engine, fake_openai):
    fake_openai.reply(reply("narration.txt"), GOOD)
    engine.transcribe_page(PAGE, Rule())
    assert STRICT_SUFFIX.strip() not in fake_openai.requests[0].prompt
    assert STRICT_SUFFIX.strip() in fake_openai.requests[1].prompt


def test_loop_retries_warmer(engine, fake_openai):
    fake_openai.reply(reply("loop_words.txt"), GOOD)
    engine.transcribe_page(PAGE, Rule())
    assert [r.params["temperature"] for r in fake_openai.requests] == [0, 0.2]


def test_cut_off_reply_retries_with_more_tokens_then_keeps_it_marked(engine, fake_openai):
    fake_openai.reply({"content": "Dear Anna, thank", "finish_reason": "length"}, GOOD)
    assert engine.transcribe_page(PAGE, Rule()).text == GOOD
    assert [r.params["max_tokens"] for r in fake_openai.requests] == [1000, 2000]
    fake_openai.reply(*[{"content": "Dear Anna, thank you", "finish_reason": "length"}] * 2)
    page = engine.transcribe_page(PAGE, Rule())
    assert page.text == "Dear Anna, thank you"
    assert page.review_reasons == ["truncated: the reply hit max_tokens"]


def test_refusal_is_retried_once_then_flagged_without_becoming_the_text(engine, fake_openai):
    fake_openai.reply(reply("refusal.txt"), reply("refusal.txt"), GOOD)
    page = engine.transcribe_page(PAGE, Rule())
    assert len(fake_openai.requests) == 2
    assert page.text.startswith("[no transcription") and "sorry" not in page.text.lower()
    assert len(page.review_reasons) == 1 and page.review_reasons[0].startswith("refusal:")


def test_persistent_loop_is_cut_and_flagged(engine, fake_openai):
    fake_openai.default = reply("loop_lines.txt")
    page = engine.transcribe_page(PAGE, Rule())
    assert len(fake_openai.requests) == 4
    assert page.text.count("1 cup sugar") <= 2
    assert "loop: repetition cut" in page.review_reasons


def test_empty_replies_never_make_an_empty_page(engine, fake_openai):
    fake_openai.default = ""
    page = engine.transcribe_page(PAGE, Rule())
    assert page.text.startswith("[no transcription") and page.review_reasons == ["empty: the reply was empty"]


def test_reasoning_fields_are_ignored(engine, fake_openai):
    fake_openai.reply({"content": GOOD, "reasoning_content": "Let me think: the note says flour."})
    assert engine.transcribe_page(PAGE, Rule()).text == GOOD


def test_context_length_error_retries_once_with_a_smaller_image(engine, fake_openai):
    fake_openai.reply(
        {"status": 400, "error": "This model's maximum context length is 8192 tokens. However, you requested 9731 tokens"}, GOOD
    )
    page = engine.transcribe_page(Image.new("RGB", (1288, 966), "white"), Rule())
    assert page.text == GOOD
    sizes = [r.image_size for r in fake_openai.requests]
    assert sizes[0] == (1288, 966) and max(sizes[1]) < 1288 * 0.7


RECIPE_JSON = {
    "title": "Pancakes",
    "servings": "4",
    "times": {"prep": "10 min", "cook": None, "total": None},
    "ingredients": [{"quantity": "250", "unit": "g", "item": "flour", "note": None}],
    "steps": ["Whisk everything.", "Fry."],
    "notes": [],
}


def test_recipe_goes_through_json_schema(engine, fake_openai):
    fake_openai.reply(json.dumps(RECIPE_JSON))
    page = engine.transcribe_page(PAGE, Rule(profile="recipe"))
    fmt = fake_openai.requests[0].params["response_format"]
    assert fmt["type"] == "json_schema" and "ingredients" in fmt["json_schema"]["schema"]["properties"]
    assert page.text.startswith("# Pancakes\n") and "- 250 g flour" in page.text and "2. Fry." in page.text
    assert page.extra == {"title": "Pancakes", "tags": ["recipe"]} and page.review_reasons == []


def test_recipe_falls_back_when_the_server_rejects_structured_output(engine, fake_openai):
    fake_openai.reply(
        {"status": 400, "error": "response_format json_schema is not supported"}, "# Waffles\n## Ingredients\n- eggs"
    )
    page = engine.transcribe_page(PAGE, Rule(profile="recipe"))
    assert "response_format" not in fake_openai.requests[1].params
    assert "## Ingredients" in fake_openai.requests[1].prompt
    assert page.text.startswith("# Waffles") and page.extra == {"title": "Waffles", "tags": ["recipe"]}
    assert page.review_reasons[0].startswith("structured output rejected by the server")


def test_recipe_falls_back_when_the_json_does_not_validate(engine, fake_openai):
    fake_openai.reply('{"title": "Waffles"}', "# Waffles\n## Ingredients\n- eggs")
    page = engine.transcribe_page(PAGE, Rule(profile="recipe"))
    assert page.review_reasons[0].startswith("recipe JSON did not validate")


def test_recipe_skips_json_on_endpoints_without_structured_output(fake_openai):
    engine = VLMEngine([Endpoint(url=fake_openai.url, model="m", structured_output=False)])
    fake_openai.reply("# Waffles\n## Ingredients\n- eggs")
    page = engine.transcribe_page(PAGE, Rule(profile="recipe"))
    assert len(fake_openai.requests) == 1 and "response_format" not in fake_openai.requests[0].params
    assert page.review_reasons == []


def test_multilingual_translation_and_front_matter_end_to_end(tmp_path, fake_openai, write_config, run_cli):
    inbox = tmp_path / "letters"
    inbox.mkdir()
    draw_page(["Liebe Anna,", "merci"], size=(600, 400), font_size=40).save(inbox / "brief.jpg")
    fake_openai.reply(reply("multilingual_trailer.txt"), "Dear Anna,\nthank you for the recipe. Greetings from Cologne!")
    cfg = write_config(
        {
            "endpoints": [{"url": fake_openai.url}],
            "folders": [{"path": str(inbox), "profile": "multilingual", "languages": ["de", "fr"], "translate_to": "en"}],
        }
    )
    res = run_cli("once", "-c", cfg, inbox / "brief.jpg")
    assert res.returncode == 0, res.stderr
    text = (inbox / "brief.md").read_text(encoding="utf-8")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["detected_languages"] == ["de", "fr"] and meta["languages"] == ["de", "fr"]
    body = text.split("---\n", 2)[2]
    assert "Grüße aus Köln!" in body and "Languages:" not in body
    assert body.rstrip().endswith("## Translation (en)\n\nDear Anna,\nthank you for the recipe. Greetings from Cologne!")
    translate = fake_openai.requests[1]
    assert translate.image_size is None and "English" in translate.prompt and "Grüße aus Köln" in translate.prompt


def test_recipe_front_matter_end_to_end(tmp_path, fake_openai, write_config, run_cli):
    draw_page(["Pancakes"], size=(600, 400), font_size=40).save(tmp_path / "kuchen.jpg")
    fake_openai.reply(json.dumps(RECIPE_JSON))
    cfg = write_config({"endpoints": [{"url": fake_openai.url}], "defaults": {"profile": "recipe"}})
    assert run_cli("once", "-c", cfg, tmp_path / "kuchen.jpg").returncode == 0
    meta = yaml.safe_load((tmp_path / "kuchen.md").read_text().split("---\n")[1])
    assert meta["title"] == "Pancakes" and meta["tags"] == ["recipe"] and meta["profile"] == "recipe"


def test_two_endpoints_one_down_sends_everything_to_the_other(fake_openai):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    engine = VLMEngine([Endpoint(url=dead, model="m"), Endpoint(url=fake_openai.url, model="m")])
    for _ in range(3):
        assert engine.transcribe_page(PAGE, Rule()).text == "default transcription"
    assert len(fake_openai.requests) == 3
    down = engine.clients[0]
    assert down.failures == 1 and down.down_until > engine.clock()  # tried once, then skipped


def test_two_endpoints_share_the_load():
    a, b = FakeOpenAI().start(), FakeOpenAI().start()
    try:
        release = threading.Event()
        for s in (a, b):
            s.default = {"hold": release, "content": GOOD}
        engine = VLMEngine([Endpoint(url=a.url, model="m", max_concurrency=2), Endpoint(url=b.url, model="m", max_concurrency=2)])
        threads = [threading.Thread(target=engine.transcribe_page, args=(PAGE, Rule())) for _ in range(4)]
        for t in threads:
            t.start()
        wait_for(lambda: a.in_flight + b.in_flight == 4, 20, what="four requests in flight")
        assert (a.in_flight, b.in_flight) == (2, 2)  # fewest in flight relative to max_concurrency
        release.set()
        for t in threads:
            t.join()
    finally:
        a.stop()
        b.stop()


def test_model_not_loaded_pauses_that_endpoint_and_the_other_answers():
    a, b = FakeOpenAI().start(), FakeOpenAI().start()
    try:
        a.default = {
            "status": 400,
            "error": "No models loaded. Please load a model in the developer page or use the `lms load` command.",
        }
        engine = VLMEngine([Endpoint(url=a.url, model="m"), Endpoint(url=b.url, model="m")])
        assert engine.transcribe_page(PAGE, Rule()).text == "default transcription"
        assert engine.transcribe_page(PAGE, Rule()).text == "default transcription"
        assert len(a.requests) == 1 and len(b.requests) == 2  # paused after the first refusal
        assert "model not loaded" in engine.clients[0].down_reason
    finally:
        a.stop()
        b.stop()
