"""Which writing systems a text uses, and whether the rule's languages are written in them — pure."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence

LATIN = frozenset({"LATIN"})
SCRIPTS = {
    "ru": {"CYRILLIC"},
    "uk": {"CYRILLIC"},
    "bg": {"CYRILLIC"},
    "be": {"CYRILLIC"},
    "mk": {"CYRILLIC"},
    "sr": {"CYRILLIC", "LATIN"},
    "kk": {"CYRILLIC"},
    "mn": {"CYRILLIC"},
    "el": {"GREEK"},
    "ar": {"ARABIC"},
    "fa": {"ARABIC"},
    "ur": {"ARABIC"},
    "he": {"HEBREW"},
    "yi": {"HEBREW"},
    "zh": {"CJK"},
    "ja": {"CJK", "HIRAGANA", "KATAKANA"},
    "ko": {"HANGUL", "CJK"},
    "hi": {"DEVANAGARI"},
    "mr": {"DEVANAGARI"},
    "ne": {"DEVANAGARI"},
    "bn": {"BENGALI"},
    "th": {"THAI"},
    "ka": {"GEORGIAN"},
    "hy": {"ARMENIAN"},
    "ta": {"TAMIL"},
    "te": {"TELUGU"},
    "gu": {"GUJARATI"},
    "pa": {"GURMUKHI"},
    "km": {"KHMER"},
    "lo": {"LAO"},
    "my": {"MYANMAR"},
    "si": {"SINHALA"},
    "am": {"ETHIOPIC"},
}
LATIN_LANGS = set(
    "en de fr es it nl pt pl cs sk sl hr bs sv da no nb nn fi et lv lt hu ro tr ca gl eu is ga cy mt sq af sw "
    "id ms vi tl eo la lb fo br oc rm az uz".split()
)
FOREIGN_SHARE = 0.2  # more than this share of a page's letters in a script its languages do not use
FOREIGN_MIN = 5  # …and at least this many of them
THREE_LETTER = {
    "eng": "en",
    "deu": "de",
    "ger": "de",
    "fra": "fr",
    "fre": "fr",
    "spa": "es",
    "ita": "it",
    "nld": "nl",
    "dut": "nl",
    "por": "pt",
    "pol": "pl",
    "rus": "ru",
    "ukr": "uk",
    "ell": "el",
    "gre": "el",
    "ces": "cs",
    "cze": "cs",
    "swe": "sv",
    "dan": "da",
    "nor": "no",
    "fin": "fi",
    "tur": "tr",
    "hun": "hu",
    "ron": "ro",
    "rum": "ro",
    "jpn": "ja",
    "zho": "zh",
    "chi": "zh",
    "kor": "ko",
    "ara": "ar",
    "heb": "he",
    "hin": "hi",
}


def base_language(code: str) -> str:
    base = code.split("-")[0].split("_")[0].lower()
    return THREE_LETTER.get(base, base)


def script_of(ch: str) -> str | None:
    """The Unicode script a letter belongs to, from its name (LATIN SMALL LETTER A → LATIN)."""
    try:
        name = unicodedata.name(ch)
    except ValueError:
        return None
    first = name.split()[0]
    return "CJK" if first == "CJK" else first


def expected_scripts(languages: Iterable[str]) -> set[str] | None:
    """The scripts a rule's languages are written in; None when a language is one this table does not know."""
    out: set[str] = set()
    for code in languages:
        base = base_language(code)
        if base in LATIN_LANGS:
            out |= LATIN
        elif base in SCRIPTS:
            out |= SCRIPTS[base]
        else:
            return None
    return out


def script_reasons(text: str, languages: Sequence[str]) -> list[str]:
    expected = expected_scripts(languages)
    if expected is None:
        return []
    counts: dict[str, int] = {}
    total = 0
    for ch in text:
        if ch.isalpha():
            script = script_of(ch)
            if script is None:
                continue
            total += 1
            if script not in expected:
                counts[script] = counts.get(script, 0) + 1
    foreign = sum(counts.values())
    if foreign >= FOREIGN_MIN and foreign > FOREIGN_SHARE * total:
        main = max(counts, key=counts.get)  # type: ignore[arg-type]
        return [
            f"script: {foreign * 100 // total}% of the letters are {main.title()}, which languages "
            f"[{', '.join(languages)}] are not written in"
        ]
    return []


def language_reasons(detected: Sequence[str] | None, languages: Sequence[str]) -> list[str]:
    """The model's own "Languages:" trailer naming a language the rule does not list."""
    if not detected:
        return []
    allowed = {base_language(c) for c in languages}
    other = [c for c in detected if base_language(c) not in allowed]
    if other:
        return [f"language: the model says the text is in {', '.join(other)}, not in [{', '.join(languages)}]"]
    return []
