"""Read and change the front matter of Markdown handwatch wrote, line by line, leaving every other byte alone — pure."""

from __future__ import annotations

import re
from typing import Any

import yaml

from handwatch.publish.output import _scalar

FENCE = "---\n"
DOUBT = re.compile(r"==(?=\S)(.+?)(?<=\S)==")  # `==word==`: a word the engine was unsure of (issue #14's marking)


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
        data = yaml.safe_load(block[len(FENCE) : -len(FENCE)])
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def body(text: str) -> str:
    """The transcription without front matter and without the blank line `render` puts after it."""
    _, rest = split(text)
    return rest[1:] if rest.startswith("\n") else rest


def with_body(text: str, new_body: str) -> str:
    """The same front matter over a new body, as `output.render` lays it out. A browser's textarea sends CRLF."""
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
