"""The document check's pure parts: reading a kind out of what a model says, choosing a profile from it, when the
check is on, and the local look that may skip only an image with nothing on it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageDraw, ImageFilter

from handwatch.transcribe import gate
from tests.support.pages import draw_page


@pytest.mark.parametrize(
    ("reply", "kind", "language"),
    [
        ('{"kind": "recipe", "language": "de"}', "recipe", "de"),  # structured output: the object alone
        ('```json\n{"kind": "photo", "language": ""}\n```', "photo", ""),  # a fenced object (Gemma, Qwen without schema)
        ('Sure! {"kind":"Letter","language":"FR"} is my answer.', "letter", "fr"),  # prose around it, any case
        ('{"kind": "note", "language": "english"}', "note", ""),  # not a code: the kind stands, the language does not
        ("blank", "blank", ""),  # a bare word
        ("Photo.", "photo", ""),
        ("`note`", "note", ""),
    ],
)
def test_a_kind_is_read_from_what_servers_send(reply, kind, language):
    k = gate.parse(reply)
    assert (k.kind, k.language) == (kind, language)


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "I cannot tell.",
        "This is a photo of a handwritten note.",  # prose is never read for a kind: the file is transcribed
        "A photo of handwritten notes.",  # regression (review of #22): read as `photo`, it skipped a page
        "This is not a photo.",
        "The page is not blank; it has handwriting.",
        "It is a photo.",
        '{"kind": "selfie"}',  # not one of the kinds
        '{"kind": 3}',
        "<think>",
    ],
)
def test_an_answer_that_cannot_be_read_has_no_kind_and_says_why(reply):
    k = gate.parse(reply)
    assert k.kind is None
    assert k.why
    assert not k.skips  # when in doubt, transcribe


@given(st.text(max_size=3000))
def test_parsing_any_reply_never_raises_and_only_yields_known_kinds(text):
    k = gate.parse(text)
    assert k.kind is None or k.kind in gate.KINDS
    assert len(k.why) < 200


def test_parsing_a_huge_hostile_reply_looks_at_a_bounded_prefix():
    reply = "{" * 200_000 + '{"kind": "photo"}'  # the kind lies past the cap
    assert gate.parse(reply).kind is None


@pytest.mark.parametrize(
    ("kind", "language", "languages", "profile"),
    [
        ("recipe", "en", ("en",), "recipe"),
        ("letter", "fr", ("de", "en"), "multilingual"),
        ("letter", "de", ("de", "en"), "notes"),
        ("letter", "", ("de",), "notes"),
        ("note", "fr", ("en",), "notes"),
        (None, "", ("en",), "notes"),
        ("letter", "pt", ("pt-BR",), "notes"),
    ],
)
def test_profile_auto_follows_the_kind(kind, language, languages, profile):
    assert gate.profile_for(kind, language, languages) == profile


def test_auto_checks_camera_photos_only():
    assert gate.applies("auto", photo=True)
    assert not gate.applies("auto", photo=False)
    assert gate.applies(True, photo=False)
    assert not gate.applies(False, photo=True)


def test_the_kind_is_wanted_for_profile_auto_or_a_kind_in_the_output_name():
    assert gate.wants_kind("auto", "{stem}.md")
    assert gate.wants_kind("notes", "{kind}/{stem}.md")
    assert not gate.wants_kind("notes", "{stem}.md")


def _photo_of_paper(tone: int = 235, shade: bool = True, noise: float = 2.0, seed: int = 0) -> np.ndarray:
    """A sheet photographed under a lamp: a smooth falloff of light and sensor noise, nothing on it."""
    rng = np.random.default_rng(seed)
    h, w = 1200, 1600
    y, x = np.mgrid[0:h, 0:w]
    light = 1.0 - (0.35 * ((x - w * 0.3) ** 2 + (y - h * 0.4) ** 2) / (w * w)) if shade else np.ones((h, w))
    grey = np.clip(tone * light + rng.normal(0, noise, (h, w)), 0, 255)
    return np.dstack([grey, grey * 0.97, grey * 0.92]).astype(np.uint8)  # a warm cast


def test_the_local_look_calls_a_blank_sheet_empty():
    assert gate.empty(_photo_of_paper())
    assert gate.empty(_photo_of_paper(tone=90, shade=False, noise=4))  # a dark, noisy frame (a covered lens)


def test_the_local_look_never_calls_a_small_note_in_a_large_frame_empty():
    """One faint pencil word, small in a 12 MP-like frame: the look must leave it to the model."""
    arr = _photo_of_paper()
    im = Image.fromarray(arr)
    d = ImageDraw.Draw(im)
    from tests.support.pages import font

    d.text((700, 560), "milk", font=font("humor", 44), fill=(150, 150, 150))
    assert not gate.empty(np.asarray(im))


def test_the_local_look_never_calls_a_page_of_writing_or_a_photo_empty():
    page = np.asarray(draw_page(["Buy eggs and flour", "Call Anna at 5"]))
    assert not gate.empty(page)
    rng = np.random.default_rng(3)
    scene = np.asarray(Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).filter(ImageFilter.GaussianBlur(2)))
    assert not gate.empty(scene)
