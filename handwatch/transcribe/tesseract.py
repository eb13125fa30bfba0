"""The CPU engine: Tesseract through pytesseract, for machines without a GPU server and for printed scans."""

from __future__ import annotations

import threading

from PIL import Image

from handwatch.config.schema import Rule
from handwatch.errors import ConfigError, EngineUnavailable
from handwatch.transcribe import doubt
from handwatch.transcribe.engine import EncodedPage, PageText

# ISO 639-1 → Tesseract's traineddata names (ISO 639-2/T, with a few of Tesseract's own).
TESS_LANG = {
    "en": "eng",
    "de": "deu",
    "fr": "fra",
    "es": "spa",
    "it": "ita",
    "nl": "nld",
    "pt": "por",
    "pl": "pol",
    "cs": "ces",
    "sv": "swe",
    "da": "dan",
    "no": "nor",
    "nb": "nor",
    "fi": "fin",
    "el": "ell",
    "ru": "rus",
    "uk": "ukr",
    "tr": "tur",
    "hu": "hun",
    "ro": "ron",
    "ja": "jpn",
    "zh": "chi_sim",
    "ko": "kor",
    "ar": "ara",
    "he": "heb",
    "hi": "hin",
    "vi": "vie",
    "ca": "cat",
    "hr": "hrv",
    "sk": "slk",
    "sl": "slv",
}


def tess_langs(codes) -> str:
    out = []
    for code in codes:
        base = code.split("-")[0]
        out.append(TESS_LANG.get(base, base if len(base) == 3 else base))
    return "+".join(dict.fromkeys(out))


def installed_languages() -> set[str] | None:
    """The traineddata Tesseract has, or None when Tesseract is not installed."""
    import pytesseract

    try:
        return set(pytesseract.get_languages(config=""))
    except (pytesseract.TesseractNotFoundError, OSError):
        return None


class TesseractEngine:
    name = "tesseract"

    def __init__(self) -> None:
        self._installed: set[str] | None = None
        self._lock = threading.Lock()

    def _check(self, langs: str) -> None:
        with self._lock:
            if self._installed is None:
                self._installed = installed_languages()
                if self._installed is None:
                    raise EngineUnavailable("tesseract is not installed (apt-get install tesseract-ocr)")
        missing = [x for x in langs.split("+") if x not in self._installed]
        if missing:
            pkgs = " ".join(f"tesseract-ocr-{m.replace('_', '-')}" for m in missing)
            raise ConfigError("tesseract", [f"languages: no Tesseract data for {', '.join(missing)} (apt-get install {pkgs})"])

    def version(self) -> str:
        import pytesseract

        try:
            return f"tesseract-{pytesseract.get_tesseract_version()}"
        except (pytesseract.TesseractNotFoundError, OSError):
            raise EngineUnavailable("tesseract is not installed (apt-get install tesseract-ocr)") from None

    def transcribe_page(self, image: Image.Image | EncodedPage, rule: Rule) -> PageText:
        import pytesseract

        if isinstance(image, EncodedPage):  # the pipeline hands Tesseract pixels; an encoded page is decoded
            image = image.image()

        langs = tess_langs(rule.languages)
        self._check(langs)
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")  # prepare's RGBX: pytesseract hands Tesseract a PNG
        # image_to_data is the same recognition as image_to_string, with a confidence for each word.
        data = pytesseract.image_to_data(image, lang=langs, config="--psm 3", output_type=pytesseract.Output.DICT)
        text, words = doubt.tesseract_page(data)
        version = self.version()
        if not text:
            return PageText("[no text recognised]", version, ["empty: Tesseract found no text"], words=[], asked_model=version)
        return PageText(text, version, [], words=words, asked_model=version)

    def translate(self, text: str, target: str) -> str:
        raise ConfigError("tesseract", [f"translate_to: {target}: translation needs engine: vlm"])
