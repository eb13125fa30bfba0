"""The four servers' real manners (tests/support/dialects.py replays them), one test per way handwatch met
them wrongly before it knew them (issue #23's table): overflow in every server's words, budgets past the
context, quiet truncation, thinking that never stops, LM Studio's string errors and JIT listings.

These run with the newest `openai` and, through `make test`, with the oldest the package allows."""

from __future__ import annotations

import pytest
from PIL import Image

from handwatch.config.endpoint import Endpoint
from handwatch.config.schema import Rule
from handwatch.errors import ConfigError, EngineUnavailable
from handwatch.transcribe.http import ContextTooLong
from handwatch.transcribe.vlm import EndpointClient, VLMEngine
from tests.support.dialects import CHARS_PER_TOKEN, Speaker, prompt_tokens

GOOD = "# Shopping\n- flour\n- sugar"
BIG = Image.new("RGB", (1600, 1200), "white")  # 2,494 image tokens in 28-px cells
SMALL = Image.new("RGB", (800, 600), "white")  # 638


def engine_for(fake, speaker: Speaker, model: str = "qwen2.5-vl-7b", **ep) -> VLMEngine:
    fake.models = [model]
    fake.dialect = speaker
    return VLMEngine([Endpoint(url=fake.url, model=model, **ep)])


def fitted(fake, speaker: Speaker) -> bool:
    """Every request that reached the model fitted the server's context, prompt and budget together."""
    return all(prompt_tokens(r.image_size, r.prompt) + r.params["max_tokens"] <= speaker.context for r in fake.requests)


# --- context overflow, in each server's words ----------------------------------------------------------


@pytest.mark.parametrize(
    "speaker",
    [
        Speaker("llamacpp", context=2048),  # HTTP 400, type exceed_context_size_error
        Speaker("vllm", context=2048),  # "The decoder prompt (length N) is longer than the maximum model length of M"
        Speaker("ollama", context=2048, loaded=[]),  # 0.33: llama-server's error JSON as a string in error.message
        Speaker("lmstudio", context=2048),  # {"error": "Trying to keep the first N tokens when context the overflows..."}
    ],
    ids=lambda s: s.name,
)
def test_an_image_over_the_context_is_sent_smaller_whatever_the_server_says(fake_openai, speaker):
    engine = engine_for(fake_openai, speaker)
    fake_openai.reply(GOOD, GOOD)
    page = engine.transcribe_page(BIG, Rule())
    assert page.text == GOOD
    assert any("sent smaller" in r for r in page.review_reasons), page.review_reasons
    sizes = [r.image_size for r in fake_openai.requests]
    assert sizes[0] == (1600, 1200) and max(sizes[-1]) < 1600


@pytest.mark.parametrize(
    "name, how", [("llamacpp", "-c"), ("vllm", "--max-model-len"), ("ollama", "OLLAMA_CONTEXT_LENGTH"), ("lmstudio", "lms load")]
)
def test_a_page_that_never_fits_fails_naming_the_context_and_the_remedy(fake_openai, name, how):
    speaker = Speaker(name, context=300, loaded=[] if name == "ollama" else None)
    engine = engine_for(fake_openai, speaker)
    with pytest.raises(ContextTooLong) as err:
        engine.transcribe_page(BIG, Rule())
    text = str(err.value)
    assert "300 tokens" in text and how in text and "max_pixels" in text, text


# --- budgets: every request fits, and a cut-off reply is kept --------------------------------------------


def test_vllm_max_tokens_above_max_model_len_is_fitted_not_refused(fake_openai):
    # Before: HTTP 400 "max_tokens=8192 cannot be greater than max_model_len=4096", read as a failed page.
    speaker = Speaker("vllm", context=4096)
    engine = engine_for(fake_openai, speaker, max_tokens=8192)
    fake_openai.reply(GOOD)
    page = engine.transcribe_page(SMALL, Rule())
    assert page.text == GOOD and page.review_reasons == []
    assert len(fake_openai.requests) == 1 and fitted(fake_openai, speaker)


@pytest.mark.parametrize("name", ["vllm", "vllm-0.10"])
def test_vllm_refusing_a_budget_is_asked_again_with_what_its_message_says_fits(fake_openai, name):
    # Gemma is costed at a fixed 256 image tokens; this server counts the 28-px cells (638): the first budget is
    # too generous, and vLLM says so ("... maximum input length of N tokens", or 0.10's "(P in the messages, ...)").
    speaker = Speaker(name, context=4096)
    engine = engine_for(fake_openai, speaker, model="gemma-3-12b-it", max_tokens=4096)
    fake_openai.reply(GOOD, GOOD)
    page = engine.transcribe_page(SMALL, Rule())
    assert page.text == GOOD and not any("sent smaller" in r for r in page.review_reasons)
    assert [r.image_size for r in fake_openai.requests] == [(800, 600), (800, 600)]  # the same image, a smaller budget
    last = fake_openai.requests[-1]
    assert prompt_tokens(last.image_size, last.prompt) + last.params["max_tokens"] == speaker.context - 1


def test_a_cut_off_reply_is_kept_when_the_context_leaves_no_more_room(fake_openai):
    # Before: the budget doubled past max_model_len, vLLM refused ("maximum input length of 0 tokens"), the
    # refusal was read as "image too large", the image shrunk and refused again: the page failed and the first
    # 4,096 tokens of text were thrown away.
    speaker = Speaker("vllm", context=8192)
    engine = engine_for(fake_openai, speaker, max_tokens=4096)
    long_letter = "Dear Anna, " + "the garden is full of roses this year and " * 1200
    fake_openai.reply(long_letter, long_letter, long_letter)
    page = engine.transcribe_page(SMALL, Rule())
    assert fitted(fake_openai, speaker)
    budgets = [r.params["max_tokens"] for r in fake_openai.requests]
    assert budgets[0] == 4096 and 4096 < budgets[1] < 8192 and len(budgets) == 2
    assert page.text.startswith("Dear Anna, the garden") and len(page.text) >= (budgets[1] - 8) * CHARS_PER_TOKEN
    assert any(r.startswith("truncated: the reply hit max_tokens") for r in page.review_reasons)


def test_a_larger_budget_refused_keeps_the_cut_off_reply_not_a_smaller_image(fake_openai):
    # Any server whose context is not known ahead: the doubled budget is refused in generic words. Before, the
    # refusal was read as "image too large": the page went out smaller and the first reply was thrown away.
    engine = VLMEngine([Endpoint(url=fake_openai.url, model="m", max_tokens=1000)])
    fake_openai.reply(
        {"content": "Dear Anna, the garden is full of roses", "finish_reason": "length"},
        {"status": 400, "error": "context_length_exceeded"},
        "A different page entirely",
    )
    page = engine.transcribe_page(SMALL, Rule())
    assert page.text == "Dear Anna, the garden is full of roses"
    assert [r.image_size for r in fake_openai.requests] == [(800, 600), (800, 600)]
    assert any(r.startswith("truncated: the reply hit max_tokens") for r in page.review_reasons)


def test_the_budget_is_never_more_than_the_context_leaves_on_any_server(fake_openai):
    speaker = Speaker("llamacpp", context=3000)
    engine = engine_for(fake_openai, speaker, max_tokens=4096)
    fake_openai.reply(GOOD)
    assert engine.transcribe_page(SMALL, Rule()).text == GOOD
    assert fitted(fake_openai, speaker)


# --- silent truncation ---------------------------------------------------------------------------------


def test_ollama_before_0_33_dropping_the_image_quietly_is_flagged(fake_openai):
    # Ollama <= 0.32 cut the prompt to num_ctx (the image went), shifted the context while generating, and
    # answered with finish_reason "stop": the model's invention was written with needs_review false.
    speaker = Speaker("ollama-0.32", context=2048, loaded=[])
    engine = engine_for(fake_openai, speaker, model="qwen2.5vl:7b")
    fake_openai.reply("Invented: a poem about the sea")
    page = engine.transcribe_page(BIG, Rule())
    assert fake_openai.requests[0].dropped_image
    assert any(r.startswith("context: the server's context was full") for r in page.review_reasons), page.review_reasons


def test_a_prompt_counted_smaller_than_its_image_is_flagged(fake_openai):
    # Any server: the usage says fewer prompt tokens than the image alone costs.
    fake_openai.models = ["qwen2.5-vl-7b"]
    engine = VLMEngine([Endpoint(url=fake_openai.url, model="qwen2.5-vl-7b")])
    fake_openai.reply(GOOD)  # the plain fake counts 10 prompt tokens for any request
    page = engine.transcribe_page(BIG, Rule())
    assert any(r.startswith("context: the server's context was full") and "10 prompt tokens" in r for r in page.review_reasons), (
        page.review_reasons
    )


# --- thinking ------------------------------------------------------------------------------------------


def test_ollama_is_asked_not_to_think_its_own_way(fake_openai):
    # Ollama ignores chat_template_kwargs; only reasoning_effort "none" turns thinking off (openai/openai.go).
    speaker = Speaker("ollama", thinks=True, loaded=[])
    engine = engine_for(fake_openai, speaker, model="qwen3-vl:8b")
    fake_openai.reply(GOOD)
    page = engine.transcribe_page(SMALL, Rule())
    assert page.text == GOOD and page.review_reasons == []
    assert speaker.asked[0].get("reasoning_effort") == "none" and "chat_template_kwargs" not in speaker.asked[0]


def test_bare_thinking_is_never_the_transcription_and_is_asked_again_without_it(fake_openai):
    # A thinking template served without a reasoning parser: the reply is bare chain of thought, cut at max_tokens.
    speaker = Speaker("llamacpp", thinks=True, reasoning_parser=False, context=32768)
    engine = engine_for(fake_openai, speaker, thinking=True, max_tokens=1000)
    fake_openai.reply(GOOD, GOOD)
    page = engine.transcribe_page(SMALL, Rule())
    assert page.text == GOOD
    assert speaker.asked[0].get("chat_template_kwargs") is None
    assert speaker.asked[-1]["chat_template_kwargs"] == {"enable_thinking": False}
    assert "user wants" not in page.text


def test_thinking_lm_studio_cannot_turn_off_leaves_an_empty_page_to_review(fake_openai):
    speaker = Speaker("lmstudio", thinks=True, reasoning_parser=False, context=32768)
    engine = engine_for(fake_openai, speaker, max_tokens=1000)
    fake_openai.reply(GOOD)
    page = engine.transcribe_page(SMALL, Rule())
    assert page.text == "" and page.words is None
    assert any(r.startswith("thinking:") for r in page.review_reasons)
    assert len(fake_openai.requests) == 1  # nothing to turn off: asking again would think again
    assert "chat_template_kwargs" not in speaker.asked[0]


# --- LM Studio ------------------------------------------------------------------------------------------


def test_lm_studio_string_errors_are_read_with_any_openai_client(fake_openai):
    # openai 1.x-3.x keep only a dict's error.message: LM Studio's {"error": "<string>"} became "Error code: 400".
    fake_openai.models = ["qwen2.5-vl-7b"]
    fake_openai.dialect = Speaker("lmstudio", context=1000)
    client = EndpointClient(Endpoint(url=fake_openai.url, model="qwen2.5-vl-7b"))
    from handwatch.prepare.preprocess import encode_jpeg
    from handwatch.transcribe.client import image_messages

    with pytest.raises(ContextTooLong) as err:
        client.chat(image_messages("x", encode_jpeg(BIG)), 100, 0.0)
    assert "Trying to keep the first" in str(err.value) and err.value.overflow.context == 1000


def test_lm_studio_without_a_loaded_model_says_so(fake_openai):
    fake_openai.models = ["qwen2.5-vl-7b"]
    fake_openai.dialect = Speaker("lmstudio", loaded=[], jit=False)
    engine = VLMEngine([Endpoint(url=fake_openai.url, model="qwen2.5-vl-7b")])
    with pytest.raises(EngineUnavailable) as err:
        engine.transcribe_page(SMALL, Rule())
    assert "No models loaded" in str(err.value) and "does the URL end in /v1" not in str(err.value)


def test_lm_studio_jit_listing_every_model_chooses_the_loaded_or_the_only_vision_model(fake_openai):
    fake_openai.models = ["qwen2.5-vl-7b", "llama-3.1-8b", "gemma-3-12b"]
    fake_openai.dialect = Speaker("lmstudio", loaded=["gemma-3-12b"])
    assert EndpointClient(Endpoint(url=fake_openai.url)).model() == "gemma-3-12b"
    fake_openai.dialect = Speaker("lmstudio", loaded=[], vision=True)
    with pytest.raises(ConfigError) as err:
        EndpointClient(Endpoint(url=fake_openai.url)).model()
    assert "vision models: qwen2.5-vl-7b, llama-3.1-8b, gemma-3-12b" in str(err.value)


# --- detection -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, title",
    [
        ("llamacpp", "llama.cpp"),
        ("vllm", "vLLM"),
        ("ollama", "Ollama"),
        ("lmstudio", "LM Studio"),
        (None, "an OpenAI-compatible server"),
    ],
)
def test_each_server_is_recognised_by_what_it_says_about_itself(fake_openai, name, title):
    fake_openai.dialect = Speaker(name) if name else None
    server = EndpointClient(Endpoint(url=fake_openai.url)).server()
    assert server.dialect.title == title


def test_a_configured_dialect_is_taken_as_said(fake_openai):
    server = EndpointClient(Endpoint(url=fake_openai.url, dialect="ollama")).server()
    assert server.dialect.name == "ollama" and server.how == "configured"


@pytest.mark.parametrize(
    "body, message",
    [
        ('{"error":"No models loaded."}', "No models loaded."),
        ('{"object":"error","message":"too long","type":"BadRequestError","code":400}', "too long"),
        (
            '{"error":{"message":"{\\"error\\":{\\"code\\":400,\\"message\\":\\"deep\\"}}","type":"invalid_request_error"}}',
            "deep",
        ),
        ("plain words", "plain words"),
        ('{"error": 5}', "fallback"),
    ],
)
def test_error_messages_in_every_envelope(body, message):
    from handwatch.transcribe import overflow

    assert overflow.error_message(body, "fallback")[0] == message
