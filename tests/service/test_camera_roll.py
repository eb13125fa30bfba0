"""The camera roll (issue #22): a folder of photos and pages gives Markdown for exactly the pages. Real files in
tmp_path, the real SQLite job store, `scan` in-process (the same pipeline and workers as the daemon) and the
scripted server answering each classification request by a rule the test sets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from handwatch.cli.scan import scan
from handwatch.config import loader
from handwatch.errors import NotADocument
from handwatch.service.pipeline import Pipeline
from handwatch.store.jobs import JobQueue
from handwatch.store.state import StateDB
from tests.support.daemon import body, front
from tests.support.fakeopenai import FakeOpenAI, Recorded, kind_reply
from tests.support.pages import draw_page


def a_photo(path: Path, seed: int = 0) -> Path:
    """Something a camera roll holds that is not a document: a busy, colourful scene (the server's rule, not
    the pixels, says what it is; the pixels only have to be more than nothing for the local look)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 110, (12, 16, 3), dtype=np.uint8)  # a dusk scene: its corner is dark, a page's light
    Image.fromarray(small).resize((1600, 1200), Image.NEAREST).save(path, quality=90)  # edges: not an empty frame
    return path


def a_page(path: Path, text: str = "Buy eggs and flour", **save) -> Path:
    draw_page([text], size=(1600, 1200)).save(path, **save)
    return path


def by_name(kinds: dict[str, str]):
    """A classification rule: the kind for each original, told apart by the colour of the thumbnail's corner
    (each test file is painted so); default `note`."""

    def rule(rec: Recorded) -> str:
        assert rec.image is not None and max(rec.image.size) <= 512  # a thumbnail, never the page
        for corner, kind in kinds.items():
            if _corner(rec.image) == corner:
                return kind_reply(kind)
        return kind_reply("note")

    return rule


def _corner(image: Image.Image) -> str:
    r, g, b = np.asarray(image.convert("RGB"))[2:8, 2:8].reshape(-1, 3).mean(axis=0)
    return "dark" if max(r, g, b) < 128 else "light"


@pytest.fixture
def world(tmp_path, fake_openai):
    inbox = tmp_path / "Camera"
    inbox.mkdir()

    def configure(**rule) -> Path:
        cfg = {
            "state_dir": str(tmp_path / "state"),
            "endpoints": [{"url": fake_openai.url, "model": "fake-vl-7b"}],
            "folders": [{"path": str(inbox), "settle_s": 0, **rule}],
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    return inbox, configure


def run_scan(cfg_path: Path):
    return scan(loader.load(cfg_path))


def queue_of(cfg_path: Path) -> JobQueue:
    return JobQueue(StateDB(loader.load(cfg_path).state_dir))


def test_a_camera_folder_gets_markdown_for_exactly_the_pages(world, fake_openai):
    inbox, configure = world
    cfg = configure()
    a_photo(inbox / "IMG_0001.jpg")  # dark corner: the rule says photo
    a_page(inbox / "IMG_0002.jpg")
    a_page(inbox / "IMG_0003.webp", "Call Anna at five")
    fake_openai.classify = lambda rec: kind_reply("photo" if _corner(rec.image) == "dark" else "note")
    summary = run_scan(cfg)
    assert sorted(p.name for p in inbox.glob("*.md")) == ["IMG_0002.md", "IMG_0003.md"]
    assert [p.name for paths in summary.skipped.values() for p in paths] == ["IMG_0001.jpg"]
    assert len(fake_openai.classifications) == 3  # one small request each
    assert len(fake_openai.requests) == 2  # and only the pages were transcribed
    assert front(inbox / "IMG_0002.md")["kind"] == "note"
    state = queue_of(cfg).state_of(inbox / "IMG_0001.jpg")
    assert state["state"] == "skipped" and state["kind"] == "photo" and state["reason"] == "not a document (photo)"
    assert queue_of(cfg).counts()["failed"] == 0


def test_a_rescan_does_not_ask_again_and_a_changed_file_is_looked_at_again(world, fake_openai):
    inbox, configure = world
    cfg = configure()
    photo = a_photo(inbox / "IMG_0001.jpg")
    fake_openai.classify = kind_reply("photo")
    run_scan(cfg)
    again = run_scan(cfg)
    assert len(fake_openai.classifications) == 1
    assert [p for paths in again.skipped.values() for p in paths] == [photo]  # reported, not asked
    a_page(photo, quality=90)  # the person replaced it with a page
    fake_openai.classify = kind_reply("list")
    run_scan(cfg)
    assert len(fake_openai.classifications) == 2
    assert front(photo.with_suffix(".md"))["kind"] == "list"


def test_anyway_transcribes_a_skipped_file_and_the_choice_sticks(world, fake_openai, run_cli):
    inbox, configure = world
    cfg = configure()
    photo = a_photo(inbox / "IMG_0001.jpg")
    fake_openai.classify = kind_reply("photo")
    run_scan(cfg)
    assert not photo.with_suffix(".md").exists()
    res = run_cli("retry", "-c", cfg, "--anyway", photo)
    assert res.returncode == 0 and "1 file(s) back in the queue" in res.stdout, res.stderr
    run_scan(cfg)
    assert body(photo.with_suffix(".md")) == "default transcription"
    asked = len(fake_openai.classifications)
    a_photo(photo, seed=5)  # changed: still the person's choice for this file
    run_scan(cfg)
    assert len(fake_openai.classifications) == asked
    assert queue_of(cfg).state_of(photo)["state"] == "done"


def test_a_server_without_structured_output_still_classifies(world, fake_openai):
    inbox, configure = world
    cfg = configure()
    fake_openai.response_format_mode = "reject"  # as an older llama.cpp answers a json_schema
    fake_openai.classify = "photo"  # a plain word, as a model answers without a schema
    config = loader.load(cfg)
    pipeline = Pipeline(config, StateDB(config.state_dir))  # one daemon's engine, files one after another
    for i in (1, 2):
        with pytest.raises(NotADocument, match=r"not a document \(photo\)"):
            pipeline.process(a_photo(inbox / f"IMG_000{i}.jpg", seed=i))
    asked = fake_openai.classifications
    # refused once, then asked plainly — for this file and every later one
    assert [bool(r.params.get("response_format")) for r in asked] == [True, False, False]


def test_an_endpoint_that_does_no_structured_output_is_asked_plainly(tmp_path, world, fake_openai):
    inbox, configure = world
    cfg_path = configure()
    data = yaml.safe_load(cfg_path.read_text())
    data["endpoints"][0]["structured_output"] = False
    cfg_path.write_text(yaml.safe_dump(data))
    fake_openai.classify = "```json\n" + kind_reply("photo") + "\n```"
    a_photo(inbox / "IMG_0001.jpg")
    run_scan(cfg_path)
    assert [r.params.get("response_format") for r in fake_openai.classifications] == [None]
    assert queue_of(cfg_path).state_of(inbox / "IMG_0001.jpg")["state"] == "skipped"


@pytest.mark.parametrize(
    "answer",
    [
        "I am not sure what this is.",  # unreadable
        '{"kind": "selfie"}',  # not one of the kinds
        {"status": 500, "error": "model crashed"},  # the request fails for this file (the probe answers)
        {"status": 400, "error": "image too large"},
    ],
)
def test_an_unreadable_or_failed_classification_transcribes_the_file(world, fake_openai, answer):
    inbox, configure = world
    cfg = configure()
    fake_openai.classify = lambda rec: answer
    page = a_page(inbox / "IMG_0002.jpg")
    run_scan(cfg)
    md = page.with_suffix(".md")
    assert md.exists() and body(md) == "default transcription"
    assert "kind" not in front(md)  # nothing was learnt about it


def test_an_endpoint_down_during_classification_makes_the_file_wait(world, tmp_path):
    inbox, configure = world
    down = FakeOpenAI().start()
    url = down.url
    down.stop()
    cfg_path = configure()
    data = yaml.safe_load(cfg_path.read_text())
    data["endpoints"] = [{"url": url, "model": "m"}]
    cfg_path.write_text(yaml.safe_dump(data))
    a_photo(inbox / "IMG_0001.jpg")
    summary = run_scan(cfg_path)
    state = queue_of(cfg_path).state_of(inbox / "IMG_0001.jpg")
    assert state["state"] == "pending" and "waiting for endpoint" in state["reason"]
    assert summary.unavailable and not summary.failed and not summary.skipped


def test_a_scanner_folder_is_never_gated(world, fake_openai):
    """`auto` is off for scans: a PNG or PDF from a scanner is transcribed without a question."""
    inbox, configure = world
    cfg = configure()
    fake_openai.classify = kind_reply("photo")
    a_page(inbox / "scan-1.png")
    a_page(inbox / "scan-2.pdf", "Dear Anna", resolution=150)
    run_scan(cfg)
    assert not fake_openai.classifications
    assert sorted(p.name for p in inbox.glob("*.md")) == ["scan-1.md", "scan-2.md"]


def test_documents_only_false_transcribes_every_photo_and_true_checks_scans_too(world, fake_openai):
    inbox, configure = world
    fake_openai.classify = kind_reply("photo")
    a_photo(inbox / "IMG_0001.jpg")
    run_scan(configure(documents_only=False))
    assert (inbox / "IMG_0001.md").exists()  # the only question asked, if any, was whether the page is blank
    asked = len(fake_openai.classifications)
    a_page(inbox / "scan-1.png")
    run_scan(configure(documents_only=True))
    assert not (inbox / "scan-1.md").exists() and len(fake_openai.classifications) == asked + 1


def test_an_image_with_nothing_on_it_is_skipped_without_a_request(world, fake_openai):
    inbox, configure = world
    cfg = configure()
    Image.new("RGB", (1600, 1200), (236, 232, 224)).save(inbox / "IMG_0001.jpg", quality=90)
    run_scan(cfg)
    assert not fake_openai.classifications and not fake_openai.requests
    state = queue_of(cfg).state_of(inbox / "IMG_0001.jpg")
    assert state["state"] == "skipped" and state["reason"] == "not a document (blank: nothing on it)"


def test_a_file_whose_every_page_is_blank_is_skipped_in_any_folder_when_the_model_agrees(world, fake_openai):
    inbox, configure = world
    cfg = configure()  # a scanner's PNG: the check is off, but a blank scan needs no Markdown either
    Image.new("RGB", (1700, 2200), "white").save(inbox / "back-side.png")
    fake_openai.classify = kind_reply("blank")
    run_scan(cfg)
    assert len(fake_openai.classifications) == 1 and not fake_openai.requests
    state = queue_of(cfg).state_of(inbox / "back-side.png")
    assert state["state"] == "skipped" and state["kind"] == "blank"


def test_a_page_the_ink_measure_calls_blank_is_transcribed_when_the_model_sees_writing(world, fake_openai):
    """The ink measure alone never drops a page: a faint page it calls blank is read once the model says so."""
    inbox, configure = world
    cfg = configure()
    Image.new("RGB", (1700, 2200), "white").save(inbox / "faint.png")  # the measure sees nothing here
    fake_openai.classify = kind_reply("note")
    run_scan(cfg)
    assert body(inbox / "faint.md") == "default transcription"


def test_profile_auto_and_kind_in_the_output_name(world, fake_openai):
    inbox, configure = world
    cfg = configure(profile="auto", output="{kind}/{stem}.md", languages=["de", "en"])
    a_page(inbox / "card.png")
    a_photo(inbox / "letter.jpg", seed=1)
    fake_openai.classify = lambda rec: kind_reply("letter", "fr") if _corner(rec.image) == "dark" else kind_reply("recipe", "de")
    fake_openai.reply("# Apfelkuchen\n\n- 3 Äpfel")  # the recipe's JSON attempt is refused below
    fake_openai.response_format_mode = "honour"
    run_scan(cfg)
    recipe, letter = inbox / "recipe" / "card.md", inbox / "letter" / "letter.md"
    assert recipe.exists() and letter.exists(), sorted(map(str, inbox.rglob("*.md")))
    assert front(recipe)["kind"] == "recipe" and front(recipe)["profile"] == "recipe"
    assert front(letter)["kind"] == "letter" and front(letter)["profile"] == "multilingual"
    prompts = [r.prompt for r in fake_openai.requests]
    assert any("recipe" in p.lower() for p in prompts)


def test_a_photo_renamed_to_pdf_fails_with_one_line_and_asks_nothing(world, fake_openai):
    inbox, configure = world
    cfg = configure()
    jpeg = a_photo(inbox / "holiday.jpg")
    jpeg.rename(inbox / "holiday.pdf")  # JPEG bytes under a PDF name
    summary = run_scan(cfg)
    assert [(p.name, why) for p, why in summary.failed] == [
        ("holiday.pdf", "content is JPEG but the name says .pdf; rename it to match")
    ]
    assert not fake_openai.classifications


def test_status_json_counts_and_lists_skipped_files(world, fake_openai, run_cli):
    inbox, configure = world
    cfg = configure()
    fake_openai.classify = kind_reply("photo")
    for i in range(3):
        a_photo(inbox / f"IMG_000{i}.jpg", seed=i)
    run_scan(cfg)
    res = run_cli("status", "-c", cfg, "--json")
    data = json.loads(res.stdout)
    assert data["counts"]["skipped"] == 3 and data["counts"]["failed"] == 0
    assert data["folders"][0]["counts"]["skipped"] == 3
    assert {s["kind"] for s in data["skipped"]} == {"photo"} and len(data["skipped"]) == 3
    text = run_cli("status", "-c", cfg).stdout
    assert "skipped 3" in text and "not a document (photo)" in text


# --- real photos, the real daemon ---------------------------------------------------------------------------------


def test_the_daemon_on_a_real_camera_roll_writes_markdown_for_the_documents_only(tmp_path, fake_openai, write_config):
    """Real phone and camera photos (tests/data/photos): the daemon transcribes the four documents, skips the four
    photos, shows them in `status --json` and the review page's Skipped view, and a rescan asks nothing again."""
    import shutil

    import httpx

    from tests.support.daemon import DaemonProc, status
    from tests.support.fakeopenai import free_port, wait_for
    from tests.support.photos import by_picture, labelled

    inbox = tmp_path / "Camera"
    inbox.mkdir()
    files = labelled()
    fake_openai.classify = by_picture(files)
    port = free_port()
    cfg = write_config(
        {
            "endpoints": [{"url": fake_openai.url, "model": "fake-vl-7b"}],
            "defaults": {"settle_s": 0.2},
            "rescan_s": 5,
            "folders": [{"path": str(inbox)}],
            "web": {"listen": f"127.0.0.1:{port}"},
        }
    )
    d = DaemonProc(cfg, tmp_path / "daemon.log")
    try:
        for src in files:
            shutil.copyfile(src, inbox / src.name)
        wait_for(lambda: sum(status(cfg)["counts"][k] for k in ("done", "skipped", "failed")) == len(files), 60, what="all")
        documents = sorted(p.stem for p, label in files.items() if label == "document")
        assert sorted(p.stem for p in inbox.glob("*.md")) == documents
        data = status(cfg)
        assert data["counts"]["skipped"] == 4 and data["counts"]["failed"] == 0
        assert {Path(s["path"]).name for s in data["skipped"]} == {p.name for p, lb in files.items() if lb == "photo"}
        assert {s["reason"] for s in data["skipped"]} == {"not a document (photo)"}
        page = wait_for(lambda: _get(httpx, f"http://127.0.0.1:{port}/skipped"), 30, what="the review page")
        assert all(p.name in page.text for p, lb in files.items() if lb == "photo")
        asked = len(fake_openai.classifications)
        rescans = len(d.events("rescan.done"))
        wait_for(lambda: len(d.events("rescan.done")) > rescans, 30, what="a rescan")
        assert len(fake_openai.classifications) == asked  # a rescan does not ask again
    finally:
        assert d.stop() == 0, d.log()


def _get(httpx, url: str):
    try:
        r = httpx.get(url, timeout=5)
    except httpx.TransportError:
        return None
    return r if r.status_code == 200 else None


# --- once, and redo of what an earlier version wrote ----------------------------------------------------------------


def test_once_says_skipped_and_exits_0_and_anyway_transcribes_and_sticks(world, fake_openai, run_cli):
    inbox, configure = world
    cfg = configure()
    photo = a_photo(inbox / "IMG_0001.jpg")
    fake_openai.classify = kind_reply("photo")
    res = run_cli("once", "-c", cfg, photo)
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"skipped {photo}: not a document (photo)\n"
    assert not photo.with_suffix(".md").exists()
    assert queue_of(cfg).state_of(photo)["state"] == "skipped"
    res = run_cli("once", "-c", cfg, "--anyway", photo)
    assert res.returncode == 0 and res.stdout.strip() == str(photo.with_suffix(".md")), res.stderr
    asked = len(fake_openai.classifications)
    a_photo(photo, seed=9)  # the file changes; the person's choice holds for it
    res = run_cli("once", "-c", cfg, photo)
    assert res.returncode == 0 and res.stdout.strip() == str(photo.with_suffix(".md")), res.stderr
    assert len(fake_openai.classifications) == asked


def test_redo_takes_back_the_unedited_markdown_an_earlier_version_wrote_for_photos(world, fake_openai, run_cli):
    """Before the check, every holiday photo got an empty Markdown. With the check on, `redo --dry-run` lists them,
    `redo` looks at each again, removes the Markdown of the photos nobody edited and never touches an edited one;
    a document keeps its text (no new transcription is asked for)."""
    inbox, configure = world
    old = configure(documents_only=False)  # what an earlier handwatch did: no check
    photos = [a_photo(inbox / f"IMG_000{i}.jpg", seed=i) for i in range(2)]
    page = a_page(inbox / "IMG_0009.jpg")
    run_scan(old)
    assert all(p.with_suffix(".md").exists() for p in [*photos, page])
    edited = photos[1].with_suffix(".md")
    edited.write_text(edited.read_text() + "\nGreat holiday, Lisbon 2024\n")
    cfg = configure()  # documents_only: auto, the default
    fake_openai.classify = lambda rec: kind_reply("photo" if _corner(rec.image) == "dark" else "note")
    transcriptions, asked = len(fake_openai.requests), len(fake_openai.classifications)
    dry = run_cli("redo", "-c", cfg, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would check {photos[0]}" in dry.stdout and f"would check {page}" in dry.stdout
    assert f"conflict {photos[1]}" in dry.stdout  # edited: never touched
    assert photos[0].with_suffix(".md").exists() and len(fake_openai.classifications) == asked  # a dry run asks nothing
    res = run_cli("redo", "-c", cfg)
    assert f"removed {photos[0].with_suffix('.md')}: its original is not a document (photo)" in res.stdout, res.stderr
    assert not photos[0].with_suffix(".md").exists()
    assert "Lisbon 2024" in edited.read_text()
    assert front(page.with_suffix(".md"))["kind"] == "note"
    assert len(fake_openai.requests) == transcriptions  # the document's text was kept, not asked for again
    assert run_cli("redo", "-c", cfg, "--dry-run").stdout.count("would check") == 0  # checked now: nothing left


def test_redo_takes_back_the_markdown_of_a_file_that_changed_into_a_photo(world, fake_openai, run_cli):
    """A page was transcribed; the phone then synced a photo under the same name. The new content is skipped and
    its old Markdown, no longer the transcription of anything there, is taken back by `redo` (listed first)."""
    inbox, configure = world
    cfg = configure()
    page = a_page(inbox / "IMG_0001.jpg", quality=90)
    run_scan(cfg)
    md = page.with_suffix(".md")
    assert md.exists()
    a_photo(page)
    fake_openai.classify = kind_reply("photo")
    run_scan(cfg)
    assert queue_of(cfg).state_of(page)["state"] == "skipped" and md.exists()
    dry = run_cli("redo", "-c", cfg, "--dry-run")
    assert f"would remove {md}: its original is not a document (photo)" in dry.stdout, dry.stdout + dry.stderr
    asked = len(fake_openai.classifications)
    res = run_cli("redo", "-c", cfg)
    assert res.returncode == 0 and not md.exists(), res.stdout + res.stderr
    assert len(fake_openai.classifications) == asked  # nothing asked again: it was judged already


def test_a_booklet_is_never_judged_by_its_first_page(world, fake_openai):
    """Regression (review of #22): under documents_only: true a 3-page PDF and TIFF with a blank first page (a
    scanner's cover sheet) were skipped whole by the local look. Only the blank page is left out now."""
    inbox, configure = world
    cfg = configure(documents_only=True)
    blank = Image.new("RGB", (1240, 1754), "white")
    pages = [draw_page([f"Page {n} of the booklet"], size=(1240, 1754)) for n in (2, 3)]
    blank.save(inbox / "booklet.pdf", save_all=True, append_images=pages, resolution=150)
    blank.copy().save(
        inbox / "booklet.tif", save_all=True, append_images=[p.copy() for p in pages]
    )  # fresh: PDF saving left state
    fake_openai.classify = lambda rec: kind_reply("blank" if np.asarray(rec.image).min() > 200 else "note")
    summary = run_scan(cfg)
    assert not summary.skipped and not summary.failed
    written = sorted(inbox.glob("*.md"))
    assert len(written) == 2  # booklet.md, and booklet.pdf.md or booklet.tif.md for whichever finished second
    for md in written:
        text = md.read_text()
        assert "<!-- page 1 -->" in text and text.count("default transcription") == 2
    assert len(fake_openai.requests) == 4  # pages 2 and 3 of each


def test_a_thumbnail_the_file_carries_never_skips_it_without_a_question(world, fake_openai):
    """Regression (review of #22): a page of writing whose EXIF thumbnail is a blank white 320x240 (forged, or left
    by an editor) was skipped as blank by the local look, no model asked. Only a decode of the picture itself may
    say "nothing on it"; a thumbnail goes to the model, which has the last word."""
    import io

    from tests.faults.hostile import jpeg_with_exif_thumbnail

    inbox, configure = world
    cfg = configure()
    page, white = io.BytesIO(), io.BytesIO()
    draw_page(["Call the plumber Tuesday 8am"], size=(1600, 1200)).save(page, "JPEG", quality=90)
    Image.new("RGB", (320, 240), (250, 250, 250)).save(white, "JPEG", quality=60)
    photo = jpeg_with_exif_thumbnail(inbox / "IMG_0003.jpg", page.getvalue(), white.getvalue())
    run_scan(cfg)
    assert len(fake_openai.classifications) == 1
    assert body(photo.with_suffix(".md")) == "default transcription"


def test_a_file_judged_another_kind_moves_to_its_new_name_and_leaves_no_stale_markdown(world, fake_openai):
    """Regression (review of #22): with `{kind}` in the name, an answer that could not be read put the Markdown in
    unknown/; judged a letter after it changed, it was written to letter/ and the stale unknown/ copy stayed."""
    inbox, configure = world
    cfg = configure(output="{kind}/{stem}.md")
    page = a_page(inbox / "IMG_0001.jpg", quality=90)
    fake_openai.classify = "I cannot tell."
    run_scan(cfg)
    assert (inbox / "unknown" / "IMG_0001.md").exists()
    a_page(page, "Dear Anna, thank you", quality=90)
    fake_openai.classify = kind_reply("letter")
    run_scan(cfg)
    assert sorted(p.relative_to(inbox).as_posix() for p in inbox.rglob("*.md")) == ["letter/IMG_0001.md"]


def test_redo_leaves_a_file_the_person_had_transcribed_anyway_alone(world, fake_openai, run_cli):
    """Regression (review of #22): a photo transcribed `--anyway` was listed by every `redo` as never checked,
    and its Markdown written again each time."""
    inbox, configure = world
    cfg = configure()
    photo = a_photo(inbox / "IMG_0001.jpg")
    fake_openai.classify = kind_reply("photo")
    assert run_cli("once", "-c", cfg, "--anyway", photo).returncode == 0
    dry = run_cli("redo", "-c", cfg, "--dry-run")
    assert "IMG_0001" not in dry.stdout and "0 to redo" in dry.stdout, dry.stdout


def test_redo_transcribes_what_was_skipped_once_the_check_is_off(world, fake_openai, run_cli):
    inbox, configure = world
    configure()
    photo = a_photo(inbox / "IMG_0001.jpg")
    fake_openai.classify = kind_reply("photo")
    run_scan(configure())
    cfg = configure(documents_only=False)  # the person turned the check off for this folder
    dry = run_cli("redo", "-c", cfg, "--dry-run")
    assert f"would redo {photo}: skipped as not a document, and documents_only is off here now" in dry.stdout, dry.stdout
    res = run_cli("redo", "-c", cfg)
    assert res.returncode == 0, res.stderr
    assert photo.with_suffix(".md").exists() and queue_of(cfg).state_of(photo)["state"] == "done"


def test_the_question_is_small_a_thumbnail_a_few_tokens_and_thinking_off(world, fake_openai):
    """Even where the endpoint lets the model think for transcriptions (`thinking: true`): a reply of a few tokens
    has no room for it."""
    inbox, configure = world
    cfg_path = configure()
    data = yaml.safe_load(cfg_path.read_text())
    data["endpoints"][0]["thinking"] = True
    cfg_path.write_text(yaml.safe_dump(data))
    a_page(inbox / "IMG_0002.jpg", quality=90)
    run_scan(cfg_path)
    (asked,) = fake_openai.classifications
    assert asked.params["chat_template_kwargs"] == {"enable_thinking": False}
    assert asked.params["max_tokens"] <= 48 and max(asked.image_size) <= 512
    assert asked.params["response_format"]["json_schema"]["schema"]["properties"]["kind"]["enum"] == [
        "note",
        "recipe",
        "letter",
        "list",
        "form",
        "printed",
        "drawing",
        "photo",
        "blank",
    ]
    (page,) = fake_openai.requests
    assert "chat_template_kwargs" not in page.params  # the transcription itself may think, as configured


def test_with_tesseract_its_own_reading_decides(world, fake_openai):
    """No model to ask: a real photo in which Tesseract finds no words is skipped; a printed page is transcribed."""
    import shutil

    from bench import gen
    from tests.support.photos import PHOTOS

    inbox, configure = world
    cfg = configure(engine="tesseract")
    photo = inbox / "pug.heic"
    shutil.copyfile(PHOTOS / "photo-pug-indoors-iphone13pro.heic", photo)
    gen.page(["Shopping list", "Flour and sugar", "Eggs and butter"], size=(1600, 1200), font="print", font_size=64).save(
        inbox / "list.jpg", quality=92
    )
    run_scan(cfg)
    assert not fake_openai.classifications and not fake_openai.requests
    state = queue_of(cfg).state_of(photo)
    assert state["state"] == "skipped" and state["reason"] == "not a document (photo: Tesseract found no words on it)"
    assert "Flour" in body(inbox / "list.md")
