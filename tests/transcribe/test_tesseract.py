"""The CPU engine end to end: a line drawn in a handwriting-like font comes back as words."""

import re

import pytest
import yaml

from tests.support.pages import draw_page


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def test_tesseract_once_reads_handwriting_font(tmp_path, write_config, run_cli):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    img = inbox / "note.png"
    draw_page(["Buy flour and sugar", "Call grandma on Sunday"], font_name="humor").save(img)
    cfg = write_config({"defaults": {"engine": "tesseract"}, "folders": [{"path": str(inbox)}]})
    res = run_cli("once", "-c", cfg, img)
    assert res.returncode == 0, res.stderr
    text = (inbox / "note.md").read_text()
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["engine"] == "tesseract" and meta["model"].startswith("tesseract-")
    assert {"buy", "flour", "sugar", "call", "grandma", "sunday"} <= words(text)


def test_language_codes_map_to_tesseract_names():
    from handwatch.transcribe.tesseract import tess_langs

    assert tess_langs(["de", "en"]) == "deu+eng"
    assert tess_langs(["fr", "fr"]) == "fra"


def test_missing_language_data_is_a_config_error():
    from PIL import Image

    from handwatch.config.schema import Rule
    from handwatch.errors import ConfigError
    from handwatch.transcribe.tesseract import TesseractEngine

    with pytest.raises(ConfigError, match="tesseract-ocr-"):
        TesseractEngine().transcribe_page(Image.new("RGB", (64, 64), "white"), Rule(languages=("qaa",)))
