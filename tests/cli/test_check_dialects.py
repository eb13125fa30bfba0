"""`handwatch check` and `handwatch once` against each server's real manner (tests/support/dialects.py): the
server named, thinking, a read-back that only thought, no model loaded, JIT listings, budgets that cannot fit."""

from __future__ import annotations

from pathlib import Path

import pytest

from handwatch.cli import check
from handwatch.config import loader
from tests.support.dialects import Speaker
from tests.support.fakeopenai import reads_digits
from tests.support.pages import draw_page


def findings(cfg_path: Path) -> list[check.Finding]:
    return list(check.run(loader.load(cfg_path)))


def endpoint_lines(found, level=None) -> list[str]:
    return [f"{f.level} {f.text}" for f in found if f.subject.startswith("endpoint") and (level is None or f.level == level)]


@pytest.fixture
def setup(inbox, fake_openai, write_config):
    def make(speaker: Speaker | None, models=("qwen2.5-vl-7b",), **ep):
        fake_openai.models = list(models)
        fake_openai.dialect = speaker
        fake_openai.default = reads_digits
        return write_config({"endpoints": [{"url": fake_openai.url, **ep}], "folders": [{"path": str(inbox)}]})

    return make


@pytest.mark.parametrize(
    "speaker, says",
    [
        (Speaker("vllm", context=32768), "vLLM (detected from /v1/models names max_model_len)"),
        (Speaker("llamacpp", context=32768), "llama.cpp (detected from /v1/models is owned by llamacpp)"),
        (Speaker("ollama", context=32768, loaded=["qwen2.5-vl-7b"]), "Ollama (detected from /api/version)"),
        (Speaker("lmstudio", context=32768), "LM Studio (detected from LM Studio's REST API)"),
    ],
    ids=lambda v: getattr(v, "name", ""),
)
def test_check_names_the_server_and_reads_images_with_thinking_off_its_way(setup, speaker, says):
    speaker.thinks = speaker.name != "lmstudio"  # a thinking model where it can be turned off
    found = findings(setup(speaker, model="qwen2.5-vl-7b"))
    text = "\n".join(endpoint_lines(found))
    assert says in text, text
    assert check.exit_code(found) == 0, text
    assert "ok reads images" in text
    if speaker.name == "ollama":
        assert 'thinking: turned off in each request (reasoning_effort: "none")' in text
        assert speaker.asked[-1]["reasoning_effort"] == "none"
    if speaker.name == "lmstudio":
        assert "note thinking: LM Studio has no request field that turns it off" in text
        assert "LM Studio lists it as a vision model" in text  # capabilities.vision in /api/v1/models


def test_a_read_back_that_only_thought_says_so(setup):
    # LM Studio cannot be asked not to think: the 64-token read-back is all thinking.
    speaker = Speaker("lmstudio", context=32768, thinks=True, reasoning_parser=True)
    found = findings(setup(speaker, model="qwen2.5-vl-7b"))
    (err,) = [f for f in found if f.level == "error"]
    assert "spent the whole read-back budget thinking" in err.text and "load a model without thinking" in err.text


def test_no_model_loaded_says_which_lms_load_command(setup):
    speaker = Speaker("lmstudio", loaded=[], jit=False)
    found = findings(setup(speaker))
    (err,) = [f for f in found if f.level == "error"]
    assert "lms load qwen2.5-vl-7b" in err.text and "does the URL end" not in err.text, err.text
    assert check.exit_code(found) == 69


def test_a_jit_listing_names_the_vision_models_to_choose_from(setup):
    speaker = Speaker("lmstudio", loaded=[])
    found = findings(setup(speaker, models=("qwen2.5-vl-7b", "gemma-3-12b")))
    (err,) = [f for f in found if f.level == "error"]
    assert "set model: to one of its vision models: qwen2.5-vl-7b, gemma-3-12b" in err.text
    speaker.loaded = ["gemma-3-12b"]
    text = "\n".join(endpoint_lines(findings(setup(speaker, models=("qwen2.5-vl-7b", "gemma-3-12b")))))
    assert "model gemma-3-12b: chosen from what the server lists" in text


def test_an_image_budget_that_cannot_fit_is_an_error_with_the_servers_remedy(setup):
    found = findings(setup(Speaker("vllm", context=1024), model="qwen2.5-vl-7b"))
    (b,) = [f for f in found if "image budget" in f.text]
    assert b.level == "error" and "--max-model-len" in b.text


def test_ollama_before_0_33_is_warned_about(setup):
    found = findings(setup(Speaker("ollama-0.32", context=32768, loaded=["qwen2.5-vl-7b"]), model="qwen2.5-vl-7b"))
    assert any(
        "Ollama 0.32.4 cuts a prompt longer than its context without saying so" in t for t in endpoint_lines(found, "warn")
    )


def test_once_against_llama_cpp_with_a_small_context_writes_the_page(tmp_path, fake_openai, write_config, run_cli):
    # Before: llama.cpp's exceed_context_size_error was not recognised, and the page failed.
    fake_openai.models = ["qwen2.5-vl-7b"]
    fake_openai.dialect = Speaker("llamacpp", context=1500)
    fake_openai.default = "Buy flour and eggs"
    cfg = write_config({"endpoints": [{"url": fake_openai.url}]})
    photo = tmp_path / "note.png"
    draw_page(["Buy flour and eggs"], size=(1700, 1300)).save(photo)
    res = run_cli("once", "-c", cfg, photo)
    assert res.returncode == 0, res.stdout + res.stderr
    md = photo.with_suffix(".md").read_text()
    assert "Buy flour and eggs" in md and "context; sent smaller" in md and "needs_review: true" in md
    assert [max(r.image_size) for r in fake_openai.requests][-1] < max(fake_openai.requests[0].image_size)
