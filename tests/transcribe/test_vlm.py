"""The VLM engine against a real HTTP server speaking the OpenAI API."""

import pytest
from PIL import Image

from handwatch.config.endpoint import Endpoint
from handwatch.config.schema import Rule
from handwatch.errors import ConfigError, EngineUnavailable
from handwatch.transcribe.vlm import EndpointClient, VLMEngine
from tests.support.pages import draw_page


def test_model_is_detected_when_the_server_lists_exactly_one(fake_openai):
    engine = VLMEngine([Endpoint(url=fake_openai.url)])
    fake_openai.reply("Buy flour")
    page = engine.transcribe_page(draw_page(["Buy flour"]), Rule())
    assert page.text == "Buy flour" and page.model == "fake-vl-7b"
    assert fake_openai.requests[0].model == "fake-vl-7b"


def test_several_models_without_model_set_is_a_clear_error(fake_openai):
    fake_openai.models = ["qwen2.5-vl-7b", "gemma-3-12b"]
    with pytest.raises(ConfigError) as err:
        EndpointClient(Endpoint(url=fake_openai.url)).model()
    assert "qwen2.5-vl-7b, gemma-3-12b" in str(err.value) and "model:" in str(err.value)


def test_request_carries_a_jpeg_data_url_prompt_and_parameters(fake_openai):
    engine = VLMEngine([Endpoint(url=fake_openai.url, model="m", max_tokens=1234)])
    fake_openai.reply("text")
    engine.transcribe_page(Image.new("RGB", (1000, 700), "white"), Rule(languages=("de", "en")))
    req = fake_openai.requests[0]
    assert req.image_format == "data:image/jpeg;base64" and req.image.format == "JPEG"
    assert req.image_size == (1000, 700)
    assert req.params["temperature"] == 0 and req.params["max_tokens"] == 1234
    assert req.params["chat_template_kwargs"] == {"enable_thinking": False}
    assert "German, English" in req.prompt and "Transcribe" in req.prompt


def test_connection_refused_is_endpoint_unavailable_naming_the_url():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    url = f"http://127.0.0.1:{port}/v1"
    engine = VLMEngine([Endpoint(url=url, model="m")])
    with pytest.raises(EngineUnavailable) as err:
        engine.transcribe_page(Image.new("RGB", (64, 64), "white"), Rule())
    assert url in str(err.value)


def test_model_not_loaded_is_unavailable_not_a_file_failure(fake_openai):
    engine = VLMEngine([Endpoint(url=fake_openai.url, model="m")])
    fake_openai.reply({"status": 400, "error": "No models loaded. Please load a model in the developer page."})
    with pytest.raises(EngineUnavailable, match="not loaded"):
        engine.transcribe_page(Image.new("RGB", (64, 64), "white"), Rule())
