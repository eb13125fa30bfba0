"""Prompts per profile, and cleaning and judging what a model sends back."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

LANGUAGE_NAMES = {
    "en": "English",
    "de": "German",
    "fr": "French",
    "es": "Spanish",
    "it": "Italian",
    "nl": "Dutch",
    "pt": "Portuguese",
    "pl": "Polish",
    "cs": "Czech",
    "sv": "Swedish",
    "da": "Danish",
    "no": "Norwegian",
    "nb": "Norwegian",
    "fi": "Finnish",
    "el": "Greek",
    "ru": "Russian",
    "uk": "Ukrainian",
    "tr": "Turkish",
    "hu": "Hungarian",
    "ro": "Romanian",
    "ja": "Japanese",
    "zh": "Chinese",
    "ko": "Korean",
    "ar": "Arabic",
    "he": "Hebrew",
    "hi": "Hindi",
    "vi": "Vietnamese",
}

NOTES_PROMPT = """Transcribe the handwriting in this image exactly, as Markdown.
- Write every word as written, in the original language{langs}. Do not translate, summarise, correct spelling or add anything.
- Keep the structure: headings, bullet and numbered lists, checkboxes as "- [ ]" or "- [x]", tables as Markdown tables, and line breaks.
- Leave out crossed-out words, or mark them as ~~word~~.
- Write a word you cannot read as [illegible].
- Output only the transcription: no introduction, no explanation, no code fences."""

RECIPE_PROMPT = """This image is a handwritten recipe. Transcribe it as Markdown, exactly as written{langs}:
a "# " title line, a "## Ingredients" list with quantities and units as written, a "## Steps" numbered list, and "## Notes" for anything else.
Do not translate, convert units or add anything that is not written. Write a word you cannot read as [illegible].
Output only the recipe: no introduction, no explanation, no code fences."""

MULTILINGUAL_PROMPT = """Transcribe the handwriting in this image exactly, as Markdown.
The text may be in {langs_plain} or mix several languages. Keep every word in the language it is written in; do not translate.
Preserve all diacritics, special letters and scripts exactly (for example ä ö ü ß é è ç ñ ø å).
Keep headings, lists and line breaks. Write a word you cannot read as [illegible].
Output only the transcription: no introduction, no explanation, no code fences.
After the transcription, add one last line of the form "Languages: xx, yy" with the ISO 639-1 codes of the languages the text is written in."""

RECIPE_JSON_PROMPT = """This image is a handwritten recipe. Transcribe it exactly as written{langs} into the JSON structure requested:
title, servings, times (prep, cook, total), ingredients (each with quantity, unit, item and an optional note, all as written),
steps in order, and any other notes. Do not translate, convert units or invent anything that is not written; use null for what is missing.
Write a word you cannot read as [illegible]."""

STRICT_SUFFIX = "\nIMPORTANT: reply with the written text itself, word for word. Do not describe the image."


def language_names(codes) -> str:
    return ", ".join(LANGUAGE_NAMES.get(c.split("-")[0], c) for c in codes)


def prompt_for(profile: str, languages, extra: str | None = None, structured: bool = False) -> str:
    names = language_names(languages)
    hint = f" (expected: {names})" if names else ""
    if profile == "recipe" and structured:
        text = RECIPE_JSON_PROMPT.format(langs=hint)
    elif profile == "recipe":
        text = RECIPE_PROMPT.format(langs=hint)
    elif profile == "multilingual":
        text = MULTILINGUAL_PROMPT.format(langs_plain=names or "any language")
    else:
        text = NOTES_PROMPT.format(langs=hint)
    if extra:
        text += "\n\nAdditional instructions from the user:\n" + extra.strip()
    return text


# --- cleaning ---------------------------------------------------------------------------------

THINK_TAG = re.compile(r"<(/?)think>", re.I)
FENCE = re.compile(r"^\s*```(?:markdown|md|text)?[ \t]*\n(.*?)\n?```\s*$", re.S | re.I)
PREAMBLE = re.compile(
    r"^\s*(?:sure[,!.]?\s*|certainly[,!.]?\s*|okay[,!.]?\s*)?"
    r"(?:here(?:'s| is| are)\s+(?:the\s+|a\s+|your\s+)?(?:full\s+|exact\s+|complete\s+)?"
    r"(?:transcription|transcribed text|text|markdown|recipe|content)[^\n:]*:|"
    r"(?:the\s+)?transcription(?:\s+of\s+the\s+\w+)?\s*:)[ \t]*\n+",
    re.I,
)


def without_thinking(text: str) -> str:
    """The text with every <think>…</think> block removed; after a last </think> whose opening tag the template
    ate, only what follows; before an unclosed <think>, only what precedes. In one pass over the text (a
    regular expression's lazy match would scan to the end once per unclosed tag: quadratic in a hostile reply)."""
    out: list[str] = []
    pos, inside = 0, False
    for m in THINK_TAG.finditer(text):  # literal tags, found in one pass, at their positions in the text itself
        closing = m.group(1) == "/"
        if not inside and not closing:  # thinking begins: keep what came before it
            out.append(text[pos : m.start()])
            inside = True
        elif inside and closing:  # the block ends (a <think> inside it changes nothing, as with a lazy match)
            inside, pos = False, m.end()
        elif closing:  # a closing tag with no opening (the template ate it): all before it was thinking
            out, pos = [], m.end()
    if not inside:  # never closed: nothing after it is transcription
        out.append(text[pos:])
    return "".join(out)


def clean(text: str | None) -> str:
    """Strip what models add around a transcription: thinking, a Markdown fence, a chatty preamble."""
    if not text:
        return ""
    text = without_thinking(text)
    text = text.strip()
    text = PREAMBLE.sub("", text, count=1).strip()
    m = FENCE.match(text)
    if m:
        text = m.group(1).strip()
    return text


# --- judging ----------------------------------------------------------------------------------

NARRATION = re.compile(
    r"^\s*(?:the (?:image|photo|picture|page) (?:shows|contains|depicts|features)|"
    r"i can see|this (?:is|appears to be) (?:a |an )?(?:photo|image|picture|handwritten)|"
    r"in (?:this|the) image)",
    re.I,
)
REFUSAL = re.compile(
    r"^\s*(?:i'?m sorry|i am sorry|sorry,|i cannot|i can't|i can not|i'm unable|i am unable|unfortunately,? i)",
    re.I,
)


def repetition(text: str, min_repeats: int = 8) -> str | None:
    """A description of a repetition loop, or None: the same line, or the same short run of words, many times."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if lines:
        line, n = Counter(lines).most_common(1)[0]
        if n >= min_repeats and n * 2 > len(lines) and len(line) > 1:
            return f"line repeated {n} times"
    words = text.split()
    for size in (1, 2, 3, 4, 5, 6, 8):
        if len(words) < size * min_repeats:
            break
        tail = words[-size * min_repeats :]
        unit = tail[:size]
        if all(tail[i] == unit[i % size] for i in range(len(tail))):
            return f"{size}-word run repeated at least {min_repeats} times"
    return None


def cut_loop(text: str, keep: int = 2) -> str:
    """Keep the first `keep` occurrences of a looping line or word run and drop the rest."""
    lines = text.splitlines()
    counts: Counter = Counter()
    out = []
    for ln in lines:
        key = ln.strip()
        if key:
            counts[key] += 1
            if counts[key] > keep and counts[key] >= 3:
                continue
        out.append(ln)
    text = "\n".join(out)
    words = text.split(" ")
    for size in (1, 2, 3, 4, 5, 6, 8):
        kept: list[str] = []  # built in one pass: cutting by slicing the list again per cut was quadratic
        i = 0
        while i < len(words):
            unit = words[i : i + size]
            j = i + size
            while len(unit) == size and words[j : j + size] == unit:
                j += size
            if (j - i) // size > keep + 1:
                kept += words[i : i + size * keep]
                i = j
            else:
                kept.append(words[i])
                i += 1
        words = kept
    return " ".join(words).strip()


# Review reasons whose detail quotes the model's reply (its first line, or what in its JSON did not validate):
# a notification without the transcription (`include_text: false`) gives only their name.
QUOTING = ("narration", "refusal", "recipe JSON did not validate")


@dataclass(frozen=True)
class Verdict:
    ok: bool
    problem: str | None = None  # narration | refusal | empty | truncated | loop
    detail: str = ""


def judge(text: str, finish_reason: str | None) -> Verdict:
    if finish_reason == "length":
        return Verdict(False, "truncated", "the reply hit max_tokens")
    if not text.strip():
        return Verdict(False, "empty", "the reply was empty")
    loop = repetition(text)
    if loop:
        return Verdict(False, "loop", loop)
    if REFUSAL.match(text):
        return Verdict(False, "refusal", text.splitlines()[0][:80])
    if NARRATION.match(text):
        return Verdict(False, "narration", text.splitlines()[0][:80])
    return Verdict(True)


# --- recipes as structured output ---------------------------------------------------------------

_OPT_STR = {"type": ["string", "null"]}
RECIPE_SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "servings": _OPT_STR,
        "times": {
            "type": "object",
            "properties": {"prep": _OPT_STR, "cook": _OPT_STR, "total": _OPT_STR},
            "required": ["prep", "cook", "total"],
            "additionalProperties": False,
        },
        "ingredients": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"quantity": _OPT_STR, "unit": _OPT_STR, "item": {"type": "string"}, "note": _OPT_STR},
                "required": ["quantity", "unit", "item", "note"],
                "additionalProperties": False,
            },
        },
        "steps": {"type": "array", "items": {"type": "string"}},
        "notes": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["title", "servings", "times", "ingredients", "steps", "notes"],
    "additionalProperties": False,
}
RECIPE_FORMAT = {"type": "json_schema", "json_schema": {"name": "recipe", "schema": RECIPE_SCHEMA, "strict": True}}


def _text(v):
    return None if v is None else str(v).strip() or None


class Ingredient(BaseModel):
    model_config = ConfigDict(extra="ignore")
    quantity: str | None = None
    unit: str | None = None
    item: str = Field(min_length=1)
    note: str | None = None

    _coerce = field_validator("quantity", "unit", "note", mode="before")(lambda cls, v: _text(v))


class Times(BaseModel):
    model_config = ConfigDict(extra="ignore")
    prep: str | None = None
    cook: str | None = None
    total: str | None = None

    _coerce = field_validator("prep", "cook", "total", mode="before")(lambda cls, v: _text(v))


class Recipe(BaseModel):
    """What a model's recipe JSON must amount to; lenient on types (numbers for quantities), strict on substance."""

    model_config = ConfigDict(extra="ignore")
    title: str = Field(min_length=1)
    servings: str | None = None
    times: Times = Times()
    ingredients: list[Ingredient] = Field(min_length=1)
    steps: list[str] = Field(min_length=1)
    notes: list[str] = []

    _servings = field_validator("servings", mode="before")(lambda cls, v: _text(v))

    @field_validator("notes", mode="before")
    @classmethod
    def _notes(cls, v):
        if v is None:
            return []
        return [v] if isinstance(v, str) else v

    @field_validator("times", mode="before")
    @classmethod
    def _times(cls, v):
        return v or {}


def parse_recipe(reply: str) -> tuple[Recipe | None, str | None]:
    """(recipe, None), or (None, why it is not one)."""
    text = clean(reply)
    start, end = text.find("{"), text.rfind("}")
    if start < 0:
        return None, "no JSON object in the reply"
    try:
        data = json.loads(text[start : end + 1] if end > start else text[start:])  # unclosed: cut off
    except json.JSONDecodeError as e:
        return None, f"invalid JSON ({e.msg} at character {e.pos})"
    try:
        return Recipe.model_validate(data), None
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(top)"
        return None, f"JSON does not fit the recipe schema ({where}: {first['msg']})"


def render_recipe(r: Recipe) -> str:
    lines = [f"# {r.title.strip()}", ""]
    facts = []
    if r.servings:
        facts.append(f"Serves {r.servings}")
    for label, value in (("Prep", r.times.prep), ("Cook", r.times.cook), ("Total", r.times.total)):
        if value:
            facts.append(f"{label} {value}")
    if facts:
        lines += [" · ".join(facts), ""]
    lines += ["## Ingredients", ""]
    for ing in r.ingredients:
        amount = " ".join(x for x in (ing.quantity, ing.unit) if x)
        entry = f"{amount} {ing.item}".strip()
        lines.append(f"- {entry}" + (f" ({ing.note})" if ing.note else ""))
    lines += ["", "## Steps", ""]
    lines += [f"{i}. {step.strip()}" for i, step in enumerate(r.steps, 1)]
    if r.notes:
        lines += ["", "## Notes", ""] + [note.strip() for note in r.notes]
    return "\n".join(lines)


def markdown_title(text: str) -> str | None:
    r"""The first level-one heading's text. Line by line, trimmed in Python: a pattern with `\s*#*\s*` around a
    lazy group tries every split of a run of spaces (cubic in a hostile reply)."""
    for line in text.splitlines():
        if line.startswith("#") and line[1:2] in (" ", "\t"):
            title = line[1:].strip().rstrip("#").strip()
            if title:
                return title
    return None


# --- languages ---------------------------------------------------------------------------------

LANG_TRAILER = re.compile(
    r"^[ \t]*(?:\*\*)?languages?(?:\*\*)?\s*:\s*(?:\*\*)?\s*([A-Za-z]{2,3}(?:\s*[,/;]\s*[A-Za-z]{2,3})*)\s*\.?\s*$", re.I
)


def split_languages(text: str) -> tuple[str, list[str]]:
    """The transcription without its "Languages: de, fr" trailer, and the codes it named."""
    body = text.rstrip()
    start = body.rfind("\n") + 1  # only the last line can be the trailer: matched there, not searched for
    m = LANG_TRAILER.match(body[start:][:300])
    if not m:
        return text, []
    codes = [c.lower() for c in re.split(r"\s*[,/;]\s*", m.group(1)) if c]
    return body[:start].rstrip(), list(dict.fromkeys(codes))
