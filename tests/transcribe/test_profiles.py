"""Cleaning and judging real-looking model replies (kept under tests/data/replies/), and the recipe schema."""

import pytest

from handwatch.transcribe import profiles
from tests.support.paths import DATA

REPLIES = DATA / "replies"
SHOPPING = "# Shopping\n- flour\n- sugar"


def reply(name: str) -> str:
    return (REPLIES / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["qwen3_think.txt", "gemma_preamble_fence.txt", "lone_close_think.txt"])
def test_cleaning_recovers_the_transcription(name):
    assert profiles.clean(reply(name)) == SHOPPING


def test_unclosed_thinking_leaves_nothing_and_is_judged_empty():
    text = profiles.clean(reply("unclosed_think.txt"))
    assert text == "" and profiles.judge(text, "stop").problem == "empty"


def test_preamble_and_language_trailer():
    text, langs = profiles.split_languages(profiles.clean(reply("multilingual_trailer.txt")))
    assert text == "Liebe Anna,\nmerci pour la recette. Grüße aus Köln!"
    assert langs == ["de", "fr"]


def test_clean_keeps_a_transcription_that_merely_mentions_words():
    text = "Here is the plan for Sunday:\n- bake bread"
    assert profiles.clean(text) == text  # "Here is" without "transcription"/"text" is content, not preamble


@pytest.mark.parametrize(
    "name, problem",
    [
        ("narration.txt", "narration"),
        ("refusal.txt", "refusal"),
        ("loop_lines.txt", "loop"),
        ("loop_words.txt", "loop"),
    ],
)
def test_bad_replies_are_recognised(name, problem):
    assert profiles.judge(profiles.clean(reply(name)), "stop").problem == problem


def test_length_cut_is_truncated_and_good_text_passes():
    assert profiles.judge("half a sent", "length").problem == "truncated"
    assert profiles.judge(SHOPPING, "stop").ok


def test_a_list_with_repeated_short_items_is_not_a_loop():
    text = "- salt\n- pepper\n- salt\n- oil\n- salt\n- sugar\n- salt"
    assert profiles.repetition(text) is None


@pytest.mark.parametrize("name", ["loop_lines.txt", "loop_words.txt"])
def test_cut_loop_keeps_the_start_and_drops_the_repetition(name):
    text = profiles.cut_loop(profiles.clean(reply(name)))
    assert profiles.repetition(text) is None and len(text) < 120
    assert text.startswith(("# Shopping", "Dear Anna"))


def test_prompts_per_profile():
    assert "checkboxes" in profiles.prompt_for("notes", ["en"])
    assert "## Ingredients" in profiles.prompt_for("recipe", ["de"]) and "German" in profiles.prompt_for("recipe", ["de"])
    multi = profiles.prompt_for("multilingual", ["fr", "de"])
    assert "French, German" in multi and "diacritics" in multi and "Languages:" in multi
    assert profiles.prompt_for("notes", ["en"], "Dates are d/m/y.").endswith("Dates are d/m/y.")


def test_recipe_json_validates_and_renders():
    recipe, why = profiles.parse_recipe(
        '{"title": "Apfelkuchen", "servings": 8, "times": {"prep": "20 min", "cook": "45 min", "total": null},'
        ' "ingredients": [{"quantity": 500, "unit": "g", "item": "Äpfel", "note": null},'
        ' {"quantity": "3", "unit": null, "item": "Eier", "note": "Größe M"}],'
        ' "steps": ["Äpfel schälen.", "Backen."], "notes": ["Von Oma"]}'
    )
    assert why is None
    md = profiles.render_recipe(recipe)
    assert md.splitlines()[0] == "# Apfelkuchen"
    assert "Serves 8 · Prep 20 min · Cook 45 min" in md
    assert "## Ingredients\n\n- 500 g Äpfel\n- 3 Eier (Größe M)\n\n## Steps\n\n1. Äpfel schälen.\n2. Backen." in md
    assert md.endswith("## Notes\n\nVon Oma")


@pytest.mark.parametrize(
    "text, why",
    [
        ("no json here", "no JSON object"),
        ('{"title": "x", "ingredients": [', "invalid JSON"),
        ('{"title": "x", "ingredients": [], "steps": ["a"]}', "ingredients"),
    ],
)
def test_recipe_json_that_does_not_validate_says_why(text, why):
    recipe, reason = profiles.parse_recipe(text)
    assert recipe is None and why in reason


def test_markdown_title():
    assert profiles.markdown_title("intro\n# Pancakes\n## Ingredients") == "Pancakes"
