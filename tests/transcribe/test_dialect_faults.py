"""What a broken or hostile server may send about itself, and the guesses that must never cost a person's
text: each found by attacking the dialect code (issue #23's review) and failing before its fix."""

from __future__ import annotations

import threading

import pytest
from PIL import Image

from handwatch.config.endpoint import Endpoint
from handwatch.config.schema import Rule
from handwatch.errors import EngineUnavailable
from handwatch.transcribe import dialect, overflow
from handwatch.transcribe.client import EndpointClient
from handwatch.transcribe.http import ContextTooLong
from handwatch.transcribe.vlm import VLMEngine
from tests.support.dialects import Speaker

SMALL = Image.new("RGB", (800, 600), "white")
BIG = Image.new("RGB", (1600, 1200), "white")


def test_a_note_that_opens_like_reasoning_and_is_cut_off_is_kept(fake_openai):
    # Thinking was turned off and the server honours that: a note beginning "Okay, let me tell you about
    # the photo" that hits max_tokens is a cut-off note, not thinking. Before, it was written empty.
    note = "Okay, let me tell you about the photo we took at the lake. The water was cold and the kids"
    engine = VLMEngine([Endpoint(url=fake_openai.url, model="m", max_tokens=1000)])
    fake_openai.reply({"content": note, "finish_reason": "length"}, {"content": note, "finish_reason": "length"})
    page = engine.transcribe_page(SMALL, Rule())
    assert page.text == note
    assert any(r.startswith("truncated") for r in page.review_reasons)


def test_a_real_reading_stands_when_a_later_attempt_is_only_thinking(fake_openai):
    engine = VLMEngine([Endpoint(url=fake_openai.url, model="m", max_tokens=1000)])
    fake_openai.reply({"content": "Dear Anna, the roses", "finish_reason": "length"}, {"content": "<think>The user wants"})
    page = engine.transcribe_page(SMALL, Rule())
    assert page.text == "Dear Anna, the roses" and "The user" not in page.text


def test_deeply_nested_error_json_is_a_message_not_a_traceback(fake_openai):
    body = '{"error":' * 50_000 + '"x"' + "}" * 50_000
    assert overflow.error_message(body, "fallback")[0].startswith('{"error"')
    fake_openai.reply({"raw": body, "status": 400, "content_type": "application/json"})
    with pytest.raises(Exception) as err:
        EndpointClient(Endpoint(url=fake_openai.url, model="m")).chat([{"role": "user", "content": "x"}], 10, 0.0)
    assert "HTTP 400" in str(err.value) and not isinstance(err.value, RecursionError)


@pytest.mark.parametrize("value", [True, -1, 0, 12, 10**30, "8192", 8192.0])
def test_a_context_no_real_server_has_is_not_believed(value):
    assert dialect.tokens_or_none(value) is None


def test_native_answers_of_the_wrong_shape_are_not_this_server(fake_openai):
    fake_openai.native[("GET", "/api/v1/models")] = {"models": [{"key": "m", "loaded_instances": 5}]}
    fake_openai.native[("GET", "/props")] = {"default_generation_settings": {"n_ctx": True}}
    client = EndpointClient(Endpoint(url=fake_openai.url, model="m"))
    server = client.server()
    assert server.dialect.title == "llama.cpp" and server.how == "/props"
    assert client.read_context("m", force=True).tokens is None  # n_ctx true is no context


def test_ollama_parameters_are_read_within_a_bound():
    fetched = {
        ("GET", "/api/ps"): {"models": []},
        ("POST", "/api/show"): {"parameters": "\n" * 20_000 + "num_ctx 8192", "model_info": {}},
    }
    server = dialect.Server(dialect.DIALECTS["ollama"], "configured")
    ctx = dialect.context(server, "http://h/v1", "m", [], lambda m, u, b: fetched[(m, u.removeprefix("http://h"))])
    assert ctx.tokens is None  # a num_ctx after 16 kB of blank lines is not searched for
    fetched[("POST", "/api/show")] = {"parameters": 'stop "x"\nnum_ctx                        8192\n', "model_info": {}}
    assert (
        dialect.context(server, "http://h/v1", "m", [], lambda m, u, b: fetched[(m, u.removeprefix("http://h"))]).tokens == 8192
    )


@pytest.mark.parametrize(
    "version, shifts", [("0.32.1", True), ("v0.32.1", True), ("0.0.0", False), ("0.33.0", False), ("9" * 5000, False)]
)
def test_ollama_versions_as_servers_print_them(fake_openai, version, shifts):
    fake_openai.native[("GET", "/api/version")] = {"version": version}
    assert EndpointClient(Endpoint(url=fake_openai.url, model="m")).server().shifts_context is shifts


def test_an_error_message_does_not_override_the_context_the_server_reports(fake_openai):
    fake_openai.max_model_len = 32768  # vLLM's /v1/models
    client = EndpointClient(Endpoint(url=fake_openai.url, model="fake-vl-7b"))
    fake_openai.reply({"status": 400, "error": "request (5000 tokens) exceeds the available context size (300 tokens)"})
    with pytest.raises(ContextTooLong):
        client.chat([{"role": "user", "content": "x"}], 100, 0.0)
    assert client.context.tokens == 32768


def test_a_refusal_without_numbers_still_names_the_context_the_server_reports(fake_openai):
    # Ollama 0.33 with context shift off: "the prompt is longer than the context length currently available".
    fake_openai.models = ["qwen2.5vl:7b"]
    fake_openai.native[("GET", "/api/version")] = {"version": "0.33.0"}
    loaded = {"models": [{"model": "qwen2.5vl:7b", "context_length": 2048}]}
    fake_openai.native[("GET", "/api/ps")] = lambda _: loaded if fake_openai.requests else {"models": []}  # loads on use
    refusal = {
        "status": 400,
        "error": "the prompt is longer than the context length currently available to the model; shorten the prompt, "
        "adjust the context length in settings, or use a model with a longer context length",
    }
    fake_openai.reply(refusal, refusal)
    with pytest.raises(ContextTooLong) as err:
        VLMEngine([Endpoint(url=fake_openai.url, model="qwen2.5vl:7b")]).transcribe_page(BIG, Rule())
    assert "2,048 tokens" in str(err.value) and "OLLAMA_CONTEXT_LENGTH" in str(err.value)


def test_a_fixed_cost_family_is_not_flagged_for_a_cheaper_image(fake_openai):
    # LLaVA 1.5 costs 576 tokens an image, LLaVA-NeXT up to 2,880: a prompt of 756 is no dropped image.
    fake_openai.models = ["llava-llama3:8b"]
    fake_openai.dialect = Speaker("ollama", context=8192, loaded=["llava-llama3:8b"])
    fake_openai.reply("Buy flour")
    page = VLMEngine([Endpoint(url=fake_openai.url, model="llava-llama3:8b")]).transcribe_page(SMALL, Rule())
    assert page.review_reasons == []


def test_lm_studio_switching_models_is_followed(fake_openai):
    fake_openai.models = ["qwen2.5-vl-7b", "gemma-3-12b", "llama-3-8b"]
    fake_openai.dialect = Speaker("lmstudio", context=16384, loaded=["qwen2.5-vl-7b"])
    now = [0.0]
    engine = VLMEngine([Endpoint(url=fake_openai.url)], clock=lambda: now[0])
    fake_openai.reply("# A")
    assert engine.transcribe_page(SMALL, Rule()).model == "qwen2.5-vl-7b"
    fake_openai.models = ["gemma-3-12b", "llama-3-8b"]  # qwen deleted, gemma loaded in its place
    fake_openai.dialect.loaded = ["gemma-3-12b"]
    fake_openai.strict_models = True
    with pytest.raises(EngineUnavailable):
        engine.transcribe_page(SMALL, Rule())  # the old name is refused once: the endpoint rests a while
    now[0] += 3600
    fake_openai.reply("# B")
    assert engine.transcribe_page(SMALL, Rule()).model == "gemma-3-12b"


def test_one_detection_answers_every_thread(fake_openai):
    fake_openai.native[("GET", "/api/version")] = {"version": "0.33.0"}
    client = EndpointClient(Endpoint(url=fake_openai.url, model="m"))
    threads = [threading.Thread(target=client.server) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for m, p, _ in fake_openai.native_requests if p == "/api/version") == 1


def test_too_many_tokens_per_minute_is_busy_not_an_overflow(fake_openai):
    fake_openai.reply({"status": 429, "error": "Rate limit: too many tokens per minute", "headers": {"Retry-After": "1"}})
    with pytest.raises(EngineUnavailable) as err:
        EndpointClient(Endpoint(url=fake_openai.url, model="m")).chat([{"role": "user", "content": "x"}], 10, 0.0)
    assert "busy" in str(err.value)
