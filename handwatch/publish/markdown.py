"""The Markdown handwatch writes, its one owner: render a Document as front matter and body, and read and change
the front matter of what it wrote, line by line, leaving every other byte alone — pure."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from handwatch import __version__
from handwatch.config import yamlfile
from handwatch.transcribe import doubt


@dataclass(frozen=True)
class Document:
    source: Path
    source_sha256: str
    pages: list[str]
    profile: str
    languages: tuple[str, ...]
    engine: str
    model: str
    transcribed: datetime
    second_model: str | None = None  # the model of the second opinion, when one read any page again
    needs_review: bool = False
    review_reasons: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)  # profile-specific front matter (title, tags, detected languages)
    appendix: str = ""  # text after the pages, e.g. a translation section
    confidence: float | None = None  # None: the engine gave no word confidences (and the fields are left out)
    uncertain_words: int | None = None
    marks: tuple = ()  # per page, the (start, end) spans of uncertain words to highlight; () marks nothing
    other_readings: tuple = ()  # {page, word, other}: each word the two readings read differently, in order
    endpoint: str | None = None  # provenance: the endpoint's name (never its key)
    fingerprint: str | None = None  # provenance: prompt + preprocessing + rule, short
    kind: str | None = None  # what the model said the page is (note, recipe, letter …), when it was asked


# Strings a YAML 1.2 reader (Obsidian's, Dataview's) would take for a number, though PyYAML's 1.1 rules
# leave them bare: "0e12345", a hex fingerprint, is the number 0 there.
YAML12_NUMBER = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|0x[0-9a-fA-F]+|0o[0-7]+")


class _Quoted(str):
    """A string that must be quoted for YAML 1.2 readers, wherever it sits in a list or mapping."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Quoted, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", str(v), style="'"))


def _quoted(value):
    if isinstance(value, str):
        return _Quoted(value) if YAML12_NUMBER.fullmatch(value) else value
    if isinstance(value, list | tuple):
        return [_quoted(v) for v in value]
    if isinstance(value, dict):
        return {k: _quoted(v) for k, v in value.items()}
    return value


def _scalar(value) -> str:
    """One YAML value in flow style on one line, quoted only when YAML needs it (a word like `1e5` in a list too)."""
    if isinstance(value, str) and YAML12_NUMBER.fullmatch(value):
        return "'" + value + "'"
    text = yaml.dump(_quoted(value), Dumper=_Dumper, default_flow_style=True, allow_unicode=True, width=1 << 20, sort_keys=False)
    text = text.strip()
    return text[: -len("...")].strip() if text.endswith("...") else text


def one_line(text: str) -> str:
    """Text shown on one line where a line break would mean something (an sd_notify message, a notification):
    every control or line-breaking character as an escape (`\\n`, `\\x1b`, `\\u2028`), the bytes of a name
    that were not UTF-8 (surrogate escapes) as `\\xe9`; accents, CJK and emoji stay as they are."""
    out = []
    for ch in text:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:  # os.fsdecode's stand-in for an undecodable byte
            out.append(f"\\x{o - 0xDC00:02x}")
        elif ch == "\n":
            out.append("\\n")
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)


def printable_name(name: str) -> str:
    """File names need not be UTF-8; the Markdown must be. Undecodable bytes show as U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def front_matter(doc: Document) -> str:
    stamp = doc.transcribed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    fields: list[tuple[str, str]] = [
        ("source", _scalar(printable_name(doc.source.name))),
        ("source_sha256", doc.source_sha256),
        ("pages", str(len(doc.pages))),
        ("profile", doc.profile),
        ("languages", _scalar(list(doc.languages))),
        ("engine", doc.engine),
        ("model", _scalar(doc.model)),
        *((("second_model", _scalar(doc.second_model)),) if doc.second_model else ()),
        ("transcribed", stamp),
        ("handwatch", __version__),
        *((("kind", _scalar(doc.kind)),) if doc.kind else ()),
        ("needs_review", "true" if doc.needs_review else "false"),
        ("review_reasons", _scalar(list(doc.review_reasons))),
    ]
    if doc.confidence is not None:
        fields += [("confidence", _scalar(doc.confidence)), ("uncertain_words", str(doc.uncertain_words or 0))]
    if doc.other_readings:
        fields.append(("other_readings", _scalar([dict(x) for x in doc.other_readings])))
    fields += [(k, _scalar(v)) for k, v in (("endpoint", doc.endpoint), ("fingerprint", doc.fingerprint)) if v]
    fields += [(k, _scalar(v)) for k, v in doc.extra.items()]
    return "---\n" + "".join(f"{k}: {v}\n" for k, v in fields) + "---\n"


def render(doc: Document) -> str:
    pages = [doubt.mark(text, doc.marks[i]) if i < len(doc.marks) else text for i, text in enumerate(doc.pages)]
    if len(pages) == 1:
        body = pages[0].strip() + "\n"
    else:
        body = "\n".join(f"<!-- page {i} -->\n\n{text.strip()}\n" for i, text in enumerate(pages, 1))
    if doc.appendix.strip():
        body += "\n" + doc.appendix.strip() + "\n"
    return front_matter(doc) + "\n" + body


FENCE = "---\n"
# `==word==`: a word the engine was unsure of (issue #14's marking). Linear: the inside may hold a lone `=` but
# never `==`, so a line of unclosed marks (`==w0 ==w1 …`, which a model can write) is scanned once, not once per mark.
DOUBT = re.compile(r"==(?=\S)((?:[^=\n]|=(?!=))+?)(?<=\S)==")


def split(text: str) -> tuple[str, str]:
    """(front matter block with both fences, body). No front matter: ("", text)."""
    if not text.startswith(FENCE):
        return "", text
    end = text.find("\n" + FENCE, len(FENCE) - 1)
    if end < 0:
        return "", text
    cut = end + 1 + len(FENCE)
    return text[:cut], text[cut:]


def fields(text: str) -> dict[str, Any]:
    """The front matter as a mapping; {} when there is none or it is not valid YAML (a person's edit may break it)."""
    block, _ = split(text)
    if not block:
        return {}
    try:
        data = yamlfile.load_untrusted(block[len(FENCE) : -len(FENCE)])
    except Exception:  # invalid YAML, an alias bomb, nesting past the bound, a 5,000-digit integer: no fields
        return {}
    return data if isinstance(data, dict) else {}


def body(text: str) -> str:
    """The transcription without front matter and without the blank line `render` puts after it."""
    _, rest = split(text)
    return rest[1:] if rest.startswith("\n") else rest


def with_body(text: str, new_body: str) -> str:
    """The same front matter over a new body, as `render` above lays it out. A browser's textarea sends CRLF."""
    block, _ = split(text)
    clean = new_body.replace("\r\n", "\n").replace("\r", "\n").strip("\n")
    return (block + "\n" if block else "") + clean + "\n"


def with_fields(text: str, updates: dict[str, Any]) -> str:
    """Set keys in the front matter: a key's line is replaced where it stands, a new key goes last.
    Lines of other keys are kept byte for byte, so a person's own additions survive."""
    block, rest = split(text)
    lines = block[len(FENCE) : -len(FENCE)].splitlines(keepends=True) if block else []
    todo = dict(updates)
    out: list[str] = []
    skipping = False
    for line in lines:
        key = line.split(":", 1)[0] if re.match(r"^[A-Za-z_][\w-]*:", line) else None
        if key is not None:
            skipping = key in todo
            if skipping:
                out.append(f"{key}: {_scalar(todo.pop(key))}\n")
                continue
        elif skipping and line[:1] in (" ", "\t", "-"):
            continue  # a block-style value of a key being replaced
        else:
            skipping = False
        out.append(line)
    out += [f"{k}: {_scalar(v)}\n" for k, v in todo.items()]
    if not block:
        rest = "\n" + rest
    return FENCE + "".join(out) + FENCE + rest


def doubt_spans(text: str) -> list[tuple[str, bool]]:
    """The text cut into (piece, doubtful) pieces; the `==` marks themselves are dropped."""
    out: list[tuple[str, bool]] = []
    pos = 0
    for m in DOUBT.finditer(text):
        if m.start() > pos:
            out.append((text[pos : m.start()], False))
        out.append((m.group(1), True))
        pos = m.end()
    if pos < len(text):
        out.append((text[pos:], False))
    return out


LOOK_AHEAD = 16  # other readings skipped over looking for a word's (a person removed marks); a bound, so a planted file is linear


def doubt_pieces(text: str, others: Any) -> list[tuple[str, bool, str | None]]:
    """`doubt_spans` with each doubtful word's other reading: front matter's `other_readings` entries are taken in
    order, each by the next doubtful word that is its `word` (a person's edits may have removed some). The front
    matter is the file's, so anything in it that is not a list of {word, other} strings is ignored."""
    queue = [
        (x["word"], x["other"])
        for x in (others if isinstance(others, list) else [])
        if isinstance(x, dict) and isinstance(x.get("word"), str) and isinstance(x.get("other"), str)
    ]
    out: list[tuple[str, bool, str | None]] = []
    k = 0
    for piece, doubtful in doubt_spans(text):
        other = None
        if doubtful:
            at = next((j for j in range(k, min(k + LOOK_AHEAD, len(queue))) if queue[j][0] == piece), None)
            if at is not None:
                other, k = queue[at][1], at + 1
        out.append((piece, doubtful, other))
    return out
