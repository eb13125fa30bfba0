"""`handwatch redo`: what changed since, done again through the queue, never over a person's edit — the real CLI."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml

from handwatch.cli.redo import Models, plan
from handwatch.config import endpoint, loader, schema
from handwatch.publish import provenance
from handwatch.store.state import StateDB
from tests.support.fakeopenai import tokens
from tests.support.pages import draw_page


def meta(md: Path) -> dict:
    return yaml.safe_load(md.read_text(encoding="utf-8").split("---\n")[1])


@pytest.fixture
def setup(tmp_path, fake_openai, write_config, run_cli):
    """Two watched folders with two notes each, all transcribed once; `cfg(...)` rewrites the config."""
    folders = {name: tmp_path / name for name in ("notes", "letters")}
    for i, folder in enumerate(folders.values()):
        folder.mkdir()
        for j in range(2):
            draw_page([f"Note {i}{j} buy flour"]).save(folder / f"n{j}.png")

    def cfg(model="model-a", **rule):
        return write_config(
            {
                "endpoints": [{"url": fake_openai.url, "model": model, "max_concurrency": 2}],
                "defaults": {"settle_s": 0, **rule},
                "folders": [{"path": str(f)} for f in folders.values()],
            }
        )

    first = cfg()
    res = run_cli("scan", "-c", first)
    assert res.returncode == 0, res.stderr
    assert len(fake_openai.requests) == 4
    fake_openai.requests.clear()
    return folders, cfg


def test_nothing_changed_nothing_to_redo(setup, run_cli, fake_openai):
    _, cfg = setup
    res = run_cli("redo", "--dry-run", "-c", cfg())
    assert res.returncode == 0 and res.stdout.strip() == "0 to redo, 0 conflict(s), 0 skipped"
    res = run_cli("redo", "-c", cfg())
    assert res.returncode == 0 and "redo: 0 transcribed again" in res.stderr and not fake_openai.requests


def test_dry_run_lists_what_and_why_and_changes_nothing(setup, run_cli, fake_openai):
    folders, cfg = setup
    before = {p: p.read_bytes() for f in folders.values() for p in f.glob("*.md")}
    res = run_cli("redo", "--dry-run", "-c", cfg(model="model-b", prompt="Dates are day/month/year."))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[-1] == "4 to redo, 0 conflict(s), 0 skipped"
    assert f"would redo {folders['notes'] / 'n0.png'}: prompt changed; model model-a → model-b" in lines
    assert not fake_openai.requests and before == {p: p.read_bytes() for p in before}


def test_redo_transcribes_again_with_progress_and_new_provenance(setup, run_cli, fake_openai):
    folders, cfg = setup
    fake_openai.default = "new reading"
    res = run_cli("redo", "-c", cfg(model="model-b"))
    assert res.returncode == 0, res.stderr
    assert len(fake_openai.requests) == 4 and {r.model for r in fake_openai.requests} == {"model-b"}
    progress = [line for line in res.stderr.splitlines() if line.startswith("[")]
    assert len(progress) == 4 and progress[-1].startswith("[4/4] redone ") and "model model-a → model-b" in progress[0]
    assert "redo: 4 transcribed again, 0 failed, 0 waiting, 0 conflict(s), 0 skipped" in res.stderr
    md = folders["notes"] / "n0.md"
    assert meta(md)["model"] == "model-b" and md.read_text().rstrip().endswith("new reading")
    assert run_cli("redo", "--dry-run", "-c", cfg(model="model-b")).stdout.startswith("0 to redo")


def test_an_edited_markdown_is_a_conflict_and_left_alone(setup, run_cli, fake_openai):
    folders, cfg = setup
    edited = folders["notes"] / "n1.md"
    edited.write_text(edited.read_text() + "\nMy correction.\n")
    res = run_cli("redo", "-c", cfg(prompt="Dates are day/month/year."))
    assert res.returncode == 1
    assert f"conflict {folders['notes'] / 'n1.png'}: n1.md was edited since handwatch wrote it; left untouched" in res.stdout
    assert len(fake_openai.requests) == 3 and edited.read_text().endswith("My correction.\n")


def test_folder_and_needs_review_narrow_it(setup, run_cli, fake_openai):
    folders, cfg = setup
    changed = cfg(prompt="Dates are day/month/year.")
    res = run_cli("redo", "--dry-run", "--folder", folders["letters"], "-c", changed)
    assert res.stdout.splitlines()[-1] == "2 to redo, 0 conflict(s), 0 skipped"
    assert all(str(folders["letters"]) in line for line in res.stdout.splitlines()[:-1])
    res = run_cli("redo", "--dry-run", "--needs-review", "-c", changed)
    assert res.stdout.splitlines()[-1] == "0 to redo, 0 conflict(s), 0 skipped"  # nothing needs review yet
    res = run_cli("redo", "--dry-run", "--folder", "/nowhere/else", "-c", changed)
    assert res.returncode == 2 and "not a watched folder" in res.stderr


def test_needs_review_picks_the_doubtful_ones(tmp_path, fake_openai, write_config, run_cli):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    draw_page(["Buy flour"]).save(inbox / "sure.png")
    draw_page(["Call grandma"]).save(inbox / "unsure.png")
    fake_openai.reply("fine text", {"content": "words", "logprobs": tokens("words", {"words": 0.1})})
    cfg = write_config(
        {
            "endpoints": [{"url": fake_openai.url, "model": "m", "max_concurrency": 1}],
            "defaults": {"settle_s": 0},
            "folders": [{"path": str(inbox)}],
        }
    )
    for name in ("sure.png", "unsure.png"):
        assert run_cli("once", "-c", cfg, inbox / name).returncode == 0
    assert meta(inbox / "unsure.md")["needs_review"] is True and meta(inbox / "sure.md")["needs_review"] is False
    changed = write_config(
        {
            "endpoints": [{"url": fake_openai.url, "model": "bigger", "max_concurrency": 1}],
            "defaults": {"settle_s": 0},
            "folders": [{"path": str(inbox)}],
        }
    )
    res = run_cli("redo", "--dry-run", "--needs-review", "-c", changed)
    assert res.stdout.splitlines() == [
        f"would redo {inbox / 'unsure.png'}: model m → bigger",
        "1 to redo, 0 conflict(s), 0 skipped",
    ]


def test_threshold_change_renders_again_without_asking_the_model(setup, run_cli, fake_openai):
    folders, cfg = setup
    res = run_cli("redo", "--dry-run", "-c", cfg(review_uncertain_words=5))
    assert f"would redo {folders['notes'] / 'n0.png'}: review thresholds changed" in res.stdout
    res = run_cli("redo", "-c", cfg(review_uncertain_words=5))
    assert res.returncode == 0 and "4 transcribed again" in res.stderr
    assert not fake_openai.requests  # the stored reading was rendered again under the new thresholds


def test_a_deleted_original_is_reported_once(setup, run_cli):
    folders, cfg = setup
    (folders["notes"] / "n0.png").unlink()
    gone = f"skipped {folders['notes'] / 'n0.png'}: the original is gone"
    assert gone in run_cli("redo", "--dry-run", "-c", cfg()).stdout
    assert gone in run_cli("redo", "--dry-run", "-c", cfg()).stdout  # a dry run changes nothing
    assert gone in run_cli("redo", "-c", cfg()).stdout
    assert gone not in run_cli("redo", "--dry-run", "-c", cfg()).stdout


def test_a_deleted_original_is_skipped_and_an_unreachable_server_leaves_models_unjudged(setup, tmp_path, fake_openai):
    folders, cfg = setup
    (folders["notes"] / "n0.png").unlink()
    c = loader.load(cfg())
    c = c.model_copy(update={"endpoints": [c.endpoints[0].model_copy(update={"model": None})]})

    def unreachable(ep):
        from handwatch.errors import EngineUnavailable

        raise EngineUnavailable(f"{ep.url}: cannot connect")

    p = plan(c, StateDB(c.state_dir), models=Models(c, list_vlm=unreachable))
    assert [(i.source.name, i.action, i.why) for i in p.items] == [("n0.png", "skip", "the original is gone")]
    assert any("model changes not checked" in n for n in p.notes)


def test_transcriptions_from_before_provenance_are_counted_not_guessed(setup, run_cli):
    folders, cfg = setup
    c = loader.load(cfg())
    sqlite3.connect(c.state_dir / "state.sqlite3").execute("DELETE FROM provenance").connection.commit()
    res = run_cli("redo", "--dry-run", "-c", cfg(prompt="changed"))
    assert res.stdout.splitlines()[-1] == "0 to redo, 0 conflict(s), 0 skipped"
    assert "4 transcription(s) were written before handwatch recorded what made them" in res.stderr


def test_fingerprint_parts_name_what_changed():
    rule = schema.Rule()
    cfg = schema.Config(endpoints=[endpoint.Endpoint(url="http://127.0.0.1:1/v1")])
    base = provenance.parts(rule, cfg)
    for change, said in [
        ({"profile": "recipe"}, ["prompt changed", "rule changed"]),
        ({"preprocess": {**rule.preprocess.model_dump(), "grayscale": True}}, ["preprocessing changed"]),
        ({"uncertain_below": 0.3}, ["review thresholds changed"]),
        ({"settle_s": 30}, []),
    ]:
        other = schema.Rule.model_validate({**rule.model_dump(), **change})
        assert provenance.changes(base, provenance.parts(other, cfg)) == said


def test_a_folder_routed_to_another_endpoint_is_redone_with_its_model(setup, run_cli, fake_openai, write_config):
    """With `endpoint:` a folder is read by the model of the endpoints it names, not by any configured one: a
    transcription by the model it no longer uses is done again (issue #26)."""
    folders, _ = setup
    routed = write_config(
        {
            "endpoints": [
                {"url": fake_openai.url, "model": "model-a", "name": "small"},
                {"url": fake_openai.url, "model": "model-b", "name": "big"},
            ],
            "defaults": {"settle_s": 0},
            "folders": [{"path": str(folders["notes"])}, {"path": str(folders["letters"]), "endpoint": "big"}],
        }
    )
    lines = run_cli("redo", "--dry-run", "-c", routed).stdout.splitlines()
    assert lines[-1] == "2 to redo, 0 conflict(s), 0 skipped"
    assert f"would redo {folders['letters'] / 'n0.png'}: model model-a → model-b" in lines
