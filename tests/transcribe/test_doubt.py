"""The pure doubt core: token log-probabilities to word probabilities, Tesseract's words, marking, ink, scripts."""

from __future__ import annotations

import math

import pytest
from PIL import Image, ImageDraw

from bench import gen
from handwatch.config.preprocess import Preprocess
from handwatch.prepare import preprocess
from handwatch.transcribe import doubt, script
from handwatch.transcribe.doubt import Thresholds, Token, Word
from tests.support.pages import draw_page, font


def toks(*pairs) -> list[Token]:
    return [Token(t, math.log(p)) for t, p in pairs]


def prob_of(text: str, words: list[Word]) -> dict[str, float]:
    return {text[w.start : w.end]: round(w.p, 4) for w in words}


def test_a_word_is_the_product_of_every_token_that_spells_part_of_it():
    content = "Buy flour, then sugar."
    tokens = toks(("Buy", 0.9), (" fl", 0.5), ("our", 0.8), (",", 1.0), (" then", 1.0), (" sug", 0.7), ("ar.", 0.5))
    p = prob_of(content, doubt.token_words(content, tokens))
    assert p == {"Buy": 0.9, "flour": 0.4, "then": 1.0, "sugar": 0.35}  # "ar." is shared with the full stop


def test_a_character_split_between_byte_tokens_belongs_to_both():
    content = "Äpfel"
    a_umlaut = "Ä".encode()
    tokens = [
        Token("\\xc3", math.log(0.5), a_umlaut[:1]),
        Token("\\x84", math.log(0.9), a_umlaut[1:]),
        Token("pfel", math.log(0.8)),
    ]
    assert prob_of(content, doubt.token_words(content, tokens)) == {"Äpfel": round(0.5 * 0.9 * 0.8, 4)}


def test_tokens_that_do_not_spell_the_content_exactly_still_give_the_words_they_match():
    content = "Buy flour"  # the server stripped a leading space and newline its tokens still have
    tokens = toks(("\n", 1.0), (" Buy", 0.9), (" flour", 0.3))
    assert prob_of(content, doubt.token_words(content, tokens)) == {"Buy": 0.9, "flour": 0.3}


def test_impossible_tokens_do_not_break_the_arithmetic():
    content = "a b"
    words = doubt.token_words(content, [Token("a", float("-inf")), Token(" b", float("nan"))])
    assert [w.p for w in words] == [math.exp(doubt.MIN_LOGPROB)] * 2


def test_transfer_follows_cleaning_and_rendering():
    raw = "Here is the transcription:\n```markdown\n# Shopping\n- flour\n```"
    words = [Word(s, e, 0.5 if raw[s:e] == "flour" else 0.99) for s, e in doubt.spans(raw)]
    clean = "# Shopping\n- flour"
    moved = doubt.transfer(words, raw, clean)
    assert prob_of(clean, moved) == {"Shopping": 0.99, "flour": 0.5}
    rendered = "# Pancakes\n\n## Ingredients\n\n- 250 g flour"  # a recipe rendered from JSON
    json_reply = '{"title": "Pancakes", "ingredients": [{"quantity": "250", "unit": "g", "item": "flour"}]}'
    jw = [Word(s, e, 0.3 if json_reply[s:e] == "flour" else 0.95) for s, e in doubt.spans(json_reply)]
    p = prob_of(rendered, doubt.transfer(jw, json_reply, rendered))
    assert p["flour"] == 0.3 and p["Pancakes"] == 0.95 and "Ingredients" not in p  # handwatch's heading: no probability


def test_thinking_that_quotes_the_text_does_not_lend_it_its_doubt():
    raw = "<think>It might say Buy flour, or Buy floor.</think>\n```markdown\nBuy flour\n```"
    words = [Word(s, e, 0.2 if s < raw.index("</think>") else 0.9) for s, e in doubt.spans(raw)]
    assert prob_of("Buy flour", doubt.transfer(words, raw, "Buy flour")) == {"Buy": 0.9, "flour": 0.9}


def test_parse_logprobs_reads_both_shapes_and_none_means_ignored():
    openai_shape = {"content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105]}]}
    assert doubt.parse_logprobs(openai_shape) == [Token("Hi", -0.1, b"Hi")]
    legacy = {"tokens": ["Hi", "!"], "token_logprobs": [-0.1, -0.2]}
    assert [t.text for t in doubt.parse_logprobs(legacy)] == ["Hi", "!"]
    assert doubt.parse_logprobs(None) is None and doubt.parse_logprobs({"content": None}) is None


def test_tesseract_data_becomes_lines_paragraphs_and_word_confidences():
    data = {
        "text": ["", "Buy", "flour,", "", "Call", "", "Sunday"],
        "conf": [-1, "96.5", 40, -1, 90, -1, 20],
        "page_num": [1] * 7,
        "block_num": [1, 1, 1, 1, 1, 2, 2],
        "par_num": [1, 1, 1, 1, 1, 1, 1],
        "line_num": [1, 1, 1, 2, 2, 1, 1],
    }
    text, words = doubt.tesseract_page(data)
    assert text == "Buy flour,\nCall\n\nSunday"
    assert prob_of(text, words) == {"Buy": 0.965, "flour": 0.4, "Call": 0.9, "Sunday": 0.2}


def test_marking_highlights_words_and_changes_nothing_else():
    text = "# Saturday\n- [x] call ~~grandma~~\n- return [illegible] books, 7:45"
    words = doubt.spans(text)
    assert [text[a:b] for a, b in words] == ["Saturday", "x", "call", "grandma", "return", "books", "7:45"]
    marked = doubt.mark(text, [words[0], words[3], words[6]])
    assert marked == "# ==Saturday==\n- [x] call ~~==grandma==~~\n- return [illegible] books, ==7:45=="
    assert marked.replace("==", "") == text


def test_marks_never_break_a_numbered_list_or_a_task_box():
    """`==1==. Buy` is no list item and `- [==x==]` no task in Obsidian: the prompt asks for both, and a
    model unsure whether a box is ticked is exactly when the `x` is uncertain. Counted, but not wrapped."""
    text = "1. Buy flour\n2) Call mum\n- [x] done it\n> 3. [X] quoted\n1.5 kg sugar\n10 eggs"
    words = doubt.spans(text)
    at = {text[a:b]: (a, b) for a, b in words}
    marked = doubt.mark(text, words)
    assert marked == (
        "1. ==Buy== ==flour==\n2) ==Call== ==mum==\n- [x] ==done== ==it==\n> 3. [X] ==quoted==\n==1.5== ==kg== ==sugar==\n"
        "==10== ==eggs=="
    )
    assert marked.replace("==", "") == text
    pages = [text]
    a = doubt.assess(pages, [[Word(*at["x"], 0.1), Word(*at["Buy"], 0.1)]], Thresholds(0.5, 0.0, 1))
    assert a.uncertain_words == 2  # the doubt about the tick still counts


def test_assess_counts_uncertain_words_and_illegible_markers_per_page():
    pages = ["Buy flour and sugar", "Call [illegible] on [illegible]"]
    words = [[Word(0, 3, 0.99), Word(4, 9, 0.2), Word(10, 13, 0.99), Word(14, 19, 0.4)], [Word(0, 4, 0.95), Word(17, 19, 0.99)]]
    a = doubt.assess(pages, words, Thresholds(word=0.5, page=0.8, words=2))
    assert a.uncertain_words == 4 and a.marks == [[(4, 9), (14, 19)], []]
    assert a.confidence == round((0.99 + 0.2 + 0.99 + 0.4 + 0.95 + 0.99) / 6, 2)
    assert a.reasons == [
        "page 1: confidence 0.64 is under 0.8",
        "page 1: 2 uncertain words (review from 2)",
        "page 2: 2 uncertain words (review from 2)",
    ]
    calm = doubt.assess(pages[:1], words[:1], Thresholds(word=0.1, page=0.5, words=3))
    assert calm.reasons == [] and calm.uncertain_words == 0
    strict = doubt.assess(pages[:1], words[:1], Thresholds(word=0.3, page=0.5, words=1))
    assert strict.reasons == ["1 uncertain word"]  # from one word on, the count itself is the reason


def test_without_confidences_there_is_no_confidence_but_illegible_still_counts():
    a = doubt.assess(["a [illegible] b [illegible]"], [None], Thresholds(0.5, 0.8, 2))
    assert a.confidence is None and a.uncertain_words is None
    assert a.reasons == ["2 uncertain words (review from 2)"]


def test_engine_defaults_and_rule_overrides():
    assert doubt.thresholds("tesseract") == doubt.DEFAULTS["tesseract"]
    assert doubt.thresholds("vlm", word=0.3).word == 0.3 and doubt.thresholds("vlm", word=0.3).page == doubt.DEFAULTS["vlm"].page


PREP = {e: preprocess.for_engine(Preprocess(), e) for e in ("vlm", "tesseract")}


@pytest.mark.parametrize("engine", ["vlm", "tesseract"])
def test_blank_pages_are_blank_whatever_the_camera_did(engine):
    blank_paper = gen.page([], size=(2400, 1800))
    for im, photo in [
        (blank_paper, False),
        (gen.phone_photo(lines=[]), True),
        (gen.noise(blank_paper, 14), True),
        (gen.shadow(blank_paper), False),
    ]:
        assert doubt.measure_ink(preprocess.prepare(im, PREP[engine], photo)).blank


@pytest.mark.parametrize("engine", ["vlm", "tesseract"])
def test_a_little_ink_is_not_blank(engine):
    one_digit = gen.page(["7"], size=(2400, 1800), font="humor", font_size=28)  # measured: ~25 px of ink
    ink = doubt.measure_ink(preprocess.prepare(one_digit, PREP[engine], False))
    assert not ink.blank and ink.marks == 1
    board = Image.new("RGB", (2400, 1800), (40, 50, 45))  # chalk on a board: lighter than the "paper"
    ImageDraw.Draw(board).text((200, 200), "Math test Friday", fill=(230, 230, 230), font=font("humor", 96))
    assert not doubt.measure_ink(preprocess.prepare(board, PREP[engine], True)).blank


def test_ink_reasons_catch_invented_text_and_missing_text():
    note = preprocess.prepare(draw_page(["Buy flour and sugar", "Call grandma on Sunday"]), PREP["vlm"], False)
    ink = doubt.measure_ink(note)
    assert doubt.ink_reasons(ink, "Buy flour and sugar\nCall grandma on Sunday") == []
    speck = Image.new("RGB", (1800, 900), "white")
    ImageDraw.Draw(speck).ellipse((900, 450, 906, 456), fill="black")
    invented = "Dear diary, today I went to the market and bought apples."
    reasons = doubt.ink_reasons(doubt.measure_ink(speck), invented)
    assert len(reasons) == 1 and reasons[0].startswith("text on a nearly blank page: 45 letters from ink for about 0")
    full = preprocess.prepare(gen.page(gen.NOTE * 3, size=(2400, 3200), font_size=72), PREP["vlm"], False)
    full_ink = doubt.measure_ink(full)
    assert full_ink.marks >= doubt.FULL_MARKS
    short = doubt.ink_reasons(full_ink, "Call grandma")
    assert len(short) == 1 and short[0].startswith("suspiciously short: 2 words from a page with")
    assert doubt.ink_reasons(full_ink, "[no transcription: the model's replies were not usable (refusal)]") == []


def test_dot_grid_paper_holds_no_letters():
    im = gen.page([], size=(2400, 1800))
    d = ImageDraw.Draw(im)
    for x in range(40, 2400, 60):
        for y in range(40, 1800, 60):
            d.ellipse((x - 3, y - 3, x + 3, y + 3), fill=(150, 150, 150))
    ink = doubt.measure_ink(preprocess.prepare(im, PREP["vlm"], False))
    assert not ink.blank and ink.marks == 0
    assert doubt.ink_reasons(ink, "Shopping list: milk, eggs, bread")[0].startswith("text on a nearly blank page")


def test_script_that_the_languages_do_not_use_needs_review():
    (reason,) = script.script_reasons("Купить муку и сахар", ["de", "en"])
    assert reason == "script: 100% of the letters are Cyrillic, which languages [de, en] are not written in"
    assert script.script_reasons("Grüße aus Köln, ça va? Æblegrød", ["de", "en"]) == []
    assert script.script_reasons("Купить муку и сахар", ["ru"]) == []
    assert script.script_reasons("Bake at 180 °C, π ≈ 3.14, 5 µg", ["en"]) == []  # a stray letter is not a script
    assert script.script_reasons("Купить муку", ["xx"]) == []  # a language this table does not know: no judgement


def test_the_models_own_language_trailer_contradicting_the_rule():
    assert script.language_reasons(["de", "fr"], ["de", "fr"]) == []
    assert script.language_reasons(["deu", "en-GB"], ["de", "en"]) == []
    assert script.language_reasons(["ru"], ["de", "en"]) == ["language: the model says the text is in ru, not in [de, en]"]
    assert script.language_reasons([], ["de"]) == []
