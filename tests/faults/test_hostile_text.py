"""What a model's reply (a note can carry a prompt injection) or a Markdown rewritten by another device may
hold, and what it must never do: freeze the daemon, crash a command, exhaust memory, stop search, or leak
text and secrets in a notification (issue #24, items 1, 2, 4 and 6)."""

from __future__ import annotations

import json
import os
import threading

import pytest
import yaml

from handwatch.config import loader, yamlfile
from handwatch.config.endpoint import Endpoint
from handwatch.config.schema import Rule
from handwatch.publish import markdown
from handwatch.publish.index import SearchIndex
from handwatch.service.notify import Notifier
from handwatch.store.state import StateDB
from handwatch.transcribe import profiles
from handwatch.transcribe.vlm import VLMEngine
from tests.support.pages import draw_page
from tests.support.receiver import Receiver
from tests.support.webworld import make_world

DEADLINE_S = 30.0  # a linear pass over these inputs takes milliseconds; the quadratic ones took minutes to hours


def finishes(fn, *args):
    """Run fn(*args) and return its result, failing if it has not finished by the deadline (a hang, not a speed)."""
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn(*args)), daemon=True)
    t.start()
    t.join(DEADLINE_S)
    assert not t.is_alive(), f"{fn.__name__} did not finish within {DEADLINE_S:g} s"
    return out[0]


# --- 1. one reply freezes everything ------------------------------------------------------------------------


def test_a_line_of_unclosed_doubt_marks_is_read_in_one_pass():
    line = " ".join(f"==w{i}" for i in range(30_000))  # 200 kB: quadratic took minutes
    spans = finishes(markdown.doubt_spans, line + " ==sure== end")
    assert spans[-2:] == [("sure", True), (" end", False)]
    assert "".join(p for p, _ in spans).startswith("==w0 ==w1")  # the unclosed marks stay as written


def test_doubt_marks_still_mean_what_they_meant():
    assert markdown.doubt_spans("a ==b c== d ==e=f== g ==h") == [
        ("a ", False),
        ("b c", True),
        (" d ", False),
        ("e=f", True),
        (" g ==h", False),
    ]


def test_thinking_tags_without_end_are_removed_in_one_pass():
    reply = "</think>" + "<think>x " * 40_000
    assert finishes(profiles.clean, reply) == ""
    assert profiles.clean("A <think>x</think> B </think> C") == "C"
    assert profiles.clean("<think>a<think>b</think>c") == "c"
    assert profiles.clean("note <think> never closed") == "note"


def test_a_reply_past_any_real_page_is_cut_and_flagged(fake_openai):
    engine = VLMEngine([Endpoint(url=fake_openai.url, model="m")])
    fake_openai.reply("Dear Anna, " + " ".join(f"rose{i}" for i in range(40_000)))  # 328,000 characters, no loop
    page = engine.transcribe_page(draw_page(["Dear Anna"]), Rule())
    assert len(page.text) <= 200_000 and page.text.startswith("Dear Anna")
    assert any("longer than 200,000 characters" in r for r in page.review_reasons)


# --- 6. a lone surrogate ---------------------------------------------------------------------------------------


def test_a_lone_surrogate_in_a_reply_is_written_as_a_replacement_character(tmp_path, fake_openai, write_config, run_cli):
    fake_openai.reply({"content": "milk \ud800 and honey"})  # json.dumps sends it as "\ud800", as a server may
    cfg = write_config({"endpoints": [{"url": fake_openai.url, "model": "m"}]})
    photo = tmp_path / "note.png"
    draw_page(["milk and honey"]).save(photo)
    res = run_cli("once", "-c", cfg, photo)
    assert res.returncode == 0, res.stderr
    assert "milk \ufffd and honey" in photo.with_suffix(".md").read_text(encoding="utf-8")
    assert "Traceback" not in res.stderr


# --- 4. a Markdown rewritten by another device ----------------------------------------------------------------

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)


def test_an_alias_bomb_in_front_matter_has_no_fields():
    assert finishes(markdown.fields, "---\n" + BOMB + "---\nbody\n") == {}
    with pytest.raises(yamlfile.RefusedYaml, match="aliases are expanded"):
        yamlfile.load_untrusted(BOMB)


def test_deep_nesting_in_front_matter_has_no_fields():
    deep = "k: " + "[" * 5000 + "]" * 5000 + "\n"
    assert markdown.fields("---\n" + deep + "---\nbody\n") == {}
    with pytest.raises(yamlfile.RefusedYaml, match="nested"):
        yamlfile.load_untrusted("k: " + "[" * 200 + "]" * 200)


def test_ordinary_front_matter_and_rule_files_still_load(tmp_path):
    text = "source: a.jpg\nneeds_review: true\nreview_reasons: [x, y]\nbase: &b {k: 1}\nother: *b\n"
    assert markdown.fields("---\n" + text + "---\nbody\n")["other"] == {"k": 1}
    rules = tmp_path / ".handwatch.yaml"
    rules.write_text("profile: recipe\nlanguages: [de, en]\n")
    assert yamlfile.read_yaml(rules, untrusted=True) == {"profile": "recipe", "languages": ["de", "en"]}


def test_one_mangled_markdown_never_keeps_the_others_from_search(tmp_path, fake_openai):
    w = make_world(tmp_path, fake_openai)
    cfg = loader.load(w.cfg_path)
    db = StateDB(cfg.state_dir)
    index = SearchIndex(db)
    note_md = w.files["note"].with_suffix(".md")
    letter_md = w.files["letter"].with_suffix(".md")
    note_md.write_text("---\nk: " + "[" * 5000 + "]" * 5000 + "\n---\nCall grandma\n")
    letter_md.write_text("---\n" + BOMB + "---\nDear Anna, the roses\n")
    recipe_md = w.files["recipe"].with_suffix(".md")
    recipe_md.write_text(recipe_md.read_text().replace("Bake at", "Bake the quince at"))
    finishes(index.rebuild)
    assert [h.output for h in index.search("quince")] == [recipe_md]
    assert [h.output for h in index.search("roses")] == [letter_md]
    assert [h.output for h in index.search("grandma")] == [note_md]


# --- 2. notifications with include_text: false ------------------------------------------------------------------


def test_a_notification_without_text_carries_no_model_words_no_password_and_no_forged_line(tmp_path, fake_openai):
    receiver = Receiver()
    try:
        w = make_world(
            tmp_path,
            fake_openai,
            extra={"notify": {"urls": [receiver.url], "every": "10m"}},
        )
        data = yaml.safe_load(w.cfg_path.read_text())
        data["endpoints"][0]["url"] = data["endpoints"][0]["url"].replace("http://", "http://apiuser:S3cretTok@")
        w.cfg_path.write_text(yaml.safe_dump(data))
        cfg = loader.load(w.cfg_path)
        db = StateDB(cfg.state_dir)
        con = db.connect()
        row = con.execute("SELECT id, output FROM docs WHERE needs_review = 1").fetchone()
        con.execute(
            "UPDATE docs SET reasons = ? WHERE id = ?",
            (
                json.dumps(["narration: The image shows a note: my bank PIN is 4711", "truncated: the reply hit max_tokens"]),
                row["id"],
            ),
        )
        evil = os.fsencode(str(w.inbox / "x.jpg\n- fake.jpg: all clear"))
        con.execute("UPDATE jobs SET path = ? WHERE state = 'failed'", (evil,))
        con.execute("UPDATE endpoints SET url = ?, reason = ?", (cfg.endpoints[0].url, f"{cfg.endpoints[0].url}: cannot connect"))
        assert Notifier(cfg, db, clock=lambda: 0.0).tick()
        msg = receiver.messages[-1]["message"]
        assert "4711" not in msg and "The image shows" not in msg and "- apple-cake.jpg: narration; truncated: the reply" in msg
        assert "S3cretTok" not in msg
        assert "\n- fake.jpg: all clear" not in msg and "x.jpg\\n- fake.jpg: all clear" in msg
    finally:
        receiver.stop()


# --- found by attacking the first fixes --------------------------------------------------------------------------


def test_every_reading_of_a_reply_is_linear_on_hostile_input():
    from handwatch.transcribe import doubt

    assert finishes(profiles.markdown_title, "# a" + " " * 200_000 + "b") == "a" + " " * 200_000 + "b"
    assert finishes(profiles.split_languages, "x" + " " * 200_000 + "x")[1] == []
    assert profiles.split_languages("Hello\n\nLanguages: de, fr")[1] == ["de", "fr"]
    assert finishes(doubt.spans, "[illegible] a " * 30_000)[:1] == [(12, 13)]
    assert len(finishes(profiles.cut_loop, "a a a a b " * 20_000)) < 200_000
    words = " ".join(f"w{i % 97}x{i % 89}" for i in range(30_000))  # no loop, and no piece of the other
    shuffled = " ".join(reversed(words.split()))
    tokens = [doubt.Token(" " + w, -0.1, None) for w in words.split()]
    assert finishes(doubt.token_words, shuffled, tokens) is not None
    assert finishes(doubt.transfer, [doubt.Word(0, 2, 0.5)], words, "<h1>" + shuffled) is not None


def test_thinking_is_cut_where_the_tags_are_whatever_the_letters_before_them():
    assert profiles.clean("İ" * 20 + "Real text<think>secret reasoning</think> more") == "İ" * 20 + "Real text more"


def test_a_lone_surrogate_in_a_token_is_no_crash():
    from handwatch.transcribe import doubt

    words = doubt.token_words(
        "milk \ufffd honey",
        [doubt.Token("milk", -0.1, None), doubt.Token(" \ud800", -0.1, None), doubt.Token(" honey", -0.1, None)],
    )
    assert [round(w.p, 2) for w in words] == [0.9, 0.9]


def test_aliases_of_long_strings_are_counted_by_their_characters():
    text = 'a: &a "' + "x" * 40_000 + '"\nb: [' + ", ".join(["*a"] * 10_000) + "]\n"
    with pytest.raises(yamlfile.RefusedYaml, match="characters once its aliases are expanded"):
        yamlfile.load_untrusted(text)
    assert markdown.fields("---\n" + text + "---\nbody\n") == {}


def test_a_multi_page_reason_quoting_the_model_is_named_only():
    from handwatch.service.notify import Event, _unquoted, compose

    assert _unquoted("page 2: narration: The image shows PIN 2468") == "page 2: narration"
    assert _unquoted("page 2: truncated: the reply hit max_tokens") == "page 2: truncated: the reply hit max_tokens"
    body = compose([Event("failed", "k", "a.jpg", "x\n- fake.jpg: all clear")], None)[1]
    assert "\n- fake.jpg" not in body and "x\\n- fake.jpg: all clear" in body
