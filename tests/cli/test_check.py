"""`handwatch check`: every folder, Tesseract's data where used, every endpoint (models, a picture read back,
the image budget against the context the server says it has); it checks everything and exits with the worst."""

import os
import socket
from pathlib import Path

import pytest
import yaml

from handwatch.cli import check
from handwatch.config import loader
from handwatch.config.preprocess import Preprocess
from handwatch.transcribe import budget
from tests.support.fakeopenai import FakeOpenAI, reads_digits
from tests.support.paths import REPO


def dead_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    s.close()
    return url


def findings(cfg_path: Path) -> list[check.Finding]:
    return list(check.run(loader.load(cfg_path)))


def lines(found, level=None) -> list[str]:
    return [f"{f.subject}: {f.text}" for f in found if level is None or f.level == level]


def test_the_shipped_example_config_passes_once_its_folders_and_server_exist(tmp_path, run_cli):
    """It used to fail with 78: Tesseract language data was checked for every folder, VLM ones included
    (`fra` for Letters), after printing "config ok"; and no endpoint was probed."""
    home, root = tmp_path / "home", tmp_path / "srv"
    data = yaml.safe_load((REPO / "config" / "handwatch.yaml").read_text())
    for f in data["folders"]:  # the example names /srv/sync/...: the same tree, under tmp_path
        assert f["path"].startswith("/srv/"), f["path"]
        f["path"] = str(root / f["path"].removeprefix("/srv/"))
        Path(f["path"]).mkdir(parents=True)
    server = FakeOpenAI(models=("qwen2.5-vl-7b-instruct",)).start()
    try:
        server.default = reads_digits
        server.max_model_len = 16384
        data["endpoints"][0]["url"] = server.url
        data["state_dir"] = str(tmp_path / "state")
        cfg = tmp_path / "config.yaml"
        cfg.write_text(yaml.safe_dump(data, sort_keys=False))
        res = run_cli("check", "-c", cfg, env={"HOME": str(home)})
    finally:
        server.stop()
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "fra" not in out  # only the Printed folder uses Tesseract, in English
    assert "ok    tesseract: tesseract-" in out and f"language data eng (for {root}/sync/Scans/Printed)" in out
    for f in data["folders"]:
        assert f"ok    folder {f['path']}: " in out
    assert "rule: engine vlm, profile multilingual, languages [fr, de, en], translate_to en" in out
    assert (
        f"ok    endpoint {server.url}: reachable; vLLM (detected from /v1/models names max_model_len); models listed: qwen2.5-vl-7b-instruct"
        in out
    )
    assert f"ok    endpoint {server.url}: model qwen2.5-vl-7b-instruct: listed" in out
    assert f"ok    endpoint {server.url}: reads images (drew " in out
    assert "image budget: a page costs up to 1,600 image tokens (Qwen2.5-VL)" in out
    assert "the server's context is 16,384 (vLLM's max_model_len): fits" in out
    assert out.rstrip().splitlines()[-1] == "check: config ok, everything answers"


def test_check_goes_on_after_an_error_and_exits_with_the_worst_code(tmp_path, inbox, write_config, run_cli):
    cfg = write_config(
        {
            "endpoints": [{"url": dead_url(), "model": "m"}],
            "folders": [{"path": str(inbox), "engine": "tesseract", "languages": ["tlh"]}, {"path": str(tmp_path / "later")}],
        }
    )
    res = run_cli("check", "-c", cfg)
    assert res.returncode == 78, res.stdout  # the configuration (78) is worse than the endpoint (69)
    out = res.stdout
    assert "config ok" not in out
    assert "ERROR tesseract: languages: no Tesseract data for tlh (apt-get install tesseract-ocr-tlh)" in out
    assert f"WARN  folder {tmp_path / 'later'}: does not exist yet" in out
    assert "ERROR endpoint http://127.0.0.1:" in out and "unreachable: cannot connect" in out
    assert "is the server running and listening there?" in out
    assert out.rstrip().splitlines()[-1] == "check: 2 error(s), 1 warning(s): fix the errors above (exit 78)"


def test_an_empty_config_is_an_error_with_the_fix(tmp_path, write_config, run_cli):
    cfg = write_config({})
    res = run_cli("check", "-c", cfg)
    assert res.returncode == 78
    assert "ERROR folders: none configured: handwatch has nothing to watch" in res.stdout
    assert "- path: ~/Sync/Camera" in res.stdout and "config ok" not in res.stdout
    res = run_cli("run", "-c", cfg)
    assert res.returncode == 78
    assert f"config error: {cfg}: folders: none configured, so handwatch has nothing to watch" in res.stderr


def test_folder_problems_are_errors_and_the_watch_mode_is_named(tmp_path, inbox, write_config):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    (inbox / ".handwatch.yaml").write_text("profile: recipe\n")
    cfg = write_config(
        {
            "defaults": {"engine": "tesseract"},
            "folders": [{"path": str(inbox)}, {"path": str(a_file)}, {"path": str(locked), "poll": True}],
        }
    )
    found = {f.subject: f for f in findings(cfg) if f.subject.startswith("folder")}
    ok = found[f"folder {inbox}"]
    assert ok.level == "ok" and "watched with inotify" in ok.text and "profile recipe" in ok.text  # the rule file counts
    assert found[f"folder {a_file}"].level == "error" and "is not a folder" in found[f"folder {a_file}"].text
    if os.getuid() != 0:  # root may write anywhere
        assert found[f"folder {locked}"].level == "error" and "cannot write here" in found[f"folder {locked}"].text
    else:
        assert "polled every 3 s (poll: true)" in found[f"folder {locked}"].text


def test_a_model_that_does_not_see_images_and_a_model_not_listed(tmp_path, inbox, fake_openai, write_config, run_cli):
    fake_openai.default = "I am a text-only model and cannot see images."
    cfg = write_config({"endpoints": [{"url": fake_openai.url, "model": "qwen2.5-vl-7b"}], "folders": [{"path": str(inbox)}]})
    res = run_cli("check", "-c", cfg)
    assert res.returncode == 69
    assert (
        f"WARN  endpoint {fake_openai.url}: model qwen2.5-vl-7b is not among the models the server lists; "
        "requests name it and may be refused (set model: to one of fake-vl-7b)"
    ) in res.stdout
    assert "answers but does not read images" in res.stdout and "is qwen2.5-vl-7b a vision model?" in res.stdout


@pytest.mark.parametrize(
    "context, level, says",
    [
        (16384, "ok", "the server's context is 16,384 (vLLM's max_model_len): fits"),
        (4096, "warn", "replies longer than 2,306 tokens are cut off (raise the context to 5,886 or lower max_tokens)"),
        (1024, "error", "the image alone does not fit, so pages are refused or cut (raise the context to at least 5,886"),
    ],
)
def test_the_image_budget_against_vllms_max_model_len(inbox, fake_openai, write_config, context, level, says):
    fake_openai.models = ["Qwen/Qwen2.5-VL-7B-Instruct"]
    fake_openai.max_model_len = context
    fake_openai.default = reads_digits
    cfg = write_config({"endpoints": [{"url": fake_openai.url}], "folders": [{"path": str(inbox)}]})
    (b,) = [f for f in findings(cfg) if "image budget" in f.text]
    assert b.level == level and says in b.text
    assert "1,600 image tokens (Qwen2.5-VL) + ~190 prompt + 4,096 reply (max_tokens) = 5,886" in b.text
    assert (b.code == 69) == (level == "error")


def test_ollama_context_from_the_loaded_model_or_its_num_ctx(inbox, fake_openai, write_config):
    fake_openai.models = ["qwen2.5vl:7b"]
    fake_openai.default = reads_digits
    cfg = write_config({"endpoints": [{"url": fake_openai.url}], "folders": [{"path": str(inbox)}]})
    fake_openai.native[("GET", "/api/version")] = {"version": "0.33.0"}  # every Ollama answers it (server/routes.go)
    fake_openai.native[("POST", "/api/show")] = {
        "parameters": "num_ctx                        1024",
        "model_info": {"qwen25vl.context_length": 128000},
        "capabilities": ["completion", "vision"],
    }
    (b,) = [f for f in findings(cfg) if "image budget" in f.text]
    assert b.level == "error" and "the server's context is 1,024 (Ollama: num_ctx in the model's parameters)" in b.text
    assert ("POST", "/api/show", {"model": "qwen2.5vl:7b"}) in fake_openai.native_requests
    fake_openai.native[("GET", "/api/ps")] = {
        "models": [{"name": "qwen2.5vl:7b", "model": "qwen2.5vl:7b", "context_length": 32768}]
    }
    (b,) = [f for f in findings(cfg) if "image budget" in f.text]
    assert b.level == "ok" and "32,768 (Ollama: the loaded model's context_length): fits" in b.text
    del fake_openai.native[("GET", "/api/ps")]
    fake_openai.native[("POST", "/api/show")] = {"parameters": 'stop "<|im_end|>"', "model_info": {}}
    (b,) = [f for f in findings(cfg) if "image budget" in f.text]
    assert b.level == "warn" and "context unknown: Ollama sets it when it loads the model" in b.text
    assert "4096 by default on GPUs under 24 GiB" in b.text and "give it at least 5,886" in b.text


def test_lm_studio_and_llama_cpp_say_their_context_too(inbox, fake_openai, write_config):
    fake_openai.models = ["gemma-3-12b-it"]
    fake_openai.default = reads_digits
    cfg = write_config({"endpoints": [{"url": fake_openai.url, "max_tokens": 2048}], "folders": [{"path": str(inbox)}]})
    fake_openai.native[("GET", "/api/v1/models")] = {
        "models": [
            {
                "type": "llm",
                "key": "gemma-3-12b-it",
                "max_context_length": 131072,
                "loaded_instances": [{"id": "gemma-3-12b-it", "config": {"context_length": 4096}}],
            }
        ]
    }
    (b,) = [f for f in findings(cfg) if "image budget" in f.text]
    assert b.level == "ok" and "256 image tokens (Gemma 3)" in b.text
    assert "4,096 (LM Studio: the loaded model's context_length)" in b.text
    del fake_openai.native[("GET", "/api/v1/models")]
    fake_openai.native[("GET", "/props")] = {
        "default_generation_settings": {"n_ctx": 2048},
        "total_slots": 4,
        "modalities": {"vision": False},
    }
    fake_openai.default = "I cannot see any image."
    found = findings(cfg)
    (b,) = [f for f in found if "image budget" in f.text]
    assert b.level == "warn" and "2,048 (llama.cpp: n_ctx per slot (-c divided by -np))" in b.text
    (r,) = [f for f in found if "does not read images" in f.text]
    assert "start llama-server with --mmproj" in r.text


def test_several_models_and_no_model_set_is_a_config_error(inbox, fake_openai, write_config):
    fake_openai.models = ["a-vl", "b-vl"]
    cfg = write_config({"endpoints": [{"url": fake_openai.url}], "folders": [{"path": str(inbox)}]})
    found = findings(cfg)
    (e,) = [f for f in found if f.level == "error"]
    assert "several models (a-vl, b-vl); set model: to one of them" in e.text and check.exit_code(found) == 78


def test_page_costs_by_model_family():
    vlm = Preprocess(max_side=1288, max_pixels=1_254_400)
    assert budget.image_tokens(budget.family_of("qwen2.5-vl-7b-instruct"), vlm) == 1600
    assert budget.family_of("Qwen/Qwen2.5-VL-7B-Instruct").name == "Qwen2.5-VL"
    assert budget.family_of("qwen2.5vl:7b").name == "Qwen2.5-VL"
    assert budget.family_of("Qwen/Qwen3-VL-8B-Instruct").name == "Qwen3-VL"
    assert budget.image_tokens(budget.family_of("qwen3-vl-8b"), vlm) <= 1_254_400 // (32 * 32) + 2 * 41
    assert budget.image_tokens(budget.family_of("gemma3:12b"), vlm) == 256
    assert budget.family_of("mistral-7b") is None
    # Only a long-side limit: the worst page is a square.
    assert budget.image_tokens(budget.family_of("qwen2-vl"), Preprocess(max_side=560)) == 20 * 20


def test_an_endpoint_no_folder_uses_is_only_a_warning(inbox, write_config):
    cfg = write_config(
        {"endpoints": [{"url": dead_url(), "model": "m"}], "defaults": {"engine": "tesseract"}, "folders": [{"path": str(inbox)}]}
    )
    found = findings(cfg)
    assert check.exit_code(found) == 0
    (w,) = [f for f in found if f.subject.startswith("endpoint ")]
    assert w.level == "warn" and "unreachable" in w.text
    assert any(f.level == "note" and "no folder uses engine: vlm" in f.text for f in found)
