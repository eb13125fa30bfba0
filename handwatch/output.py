"""Render Markdown with front matter; write it atomically and never over a file a person wrote or edited."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

from handwatch import __version__, doubt
from handwatch.errors import OutputConflict
from handwatch.state import Ledger

TMP_SUFFIX = ".handwatch-tmp"


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
    needs_review: bool = False
    review_reasons: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)  # profile-specific front matter (title, tags, detected languages)
    appendix: str = ""  # text after the pages, e.g. a translation section
    confidence: float | None = None  # None: the engine gave no word confidences (and the fields are left out)
    uncertain_words: int | None = None
    marks: tuple = ()  # per page, the (start, end) spans of uncertain words to highlight; () marks nothing
    endpoint: str | None = None  # provenance: the endpoint's name (never its key)
    fingerprint: str | None = None  # provenance: prompt + preprocessing + rule, short


# Strings a YAML 1.2 reader (Obsidian's, Dataview's) would take for a number, though PyYAML's 1.1 rules
# leave them bare: "0e12345", a hex fingerprint, is the number 0 there.
YAML12_NUMBER = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|0x[0-9a-fA-F]+|0o[0-7]+")


def _scalar(value) -> str:
    """One YAML value in flow style on one line, quoted only when YAML needs it."""
    if isinstance(value, str) and YAML12_NUMBER.fullmatch(value):
        return "'" + value + "'"
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=1 << 20, sort_keys=False)
    text = text.strip()
    return text[: -len("...")].strip() if text.endswith("...") else text


def printable_name(name: str) -> str:
    """File names need not be UTF-8; the Markdown must be. Undecodable bytes show as U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def front_matter(doc: Document) -> str:
    stamp = doc.transcribed.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    fields: list[tuple[str, str]] = [
        ("source", _scalar(printable_name(doc.source.name))),
        ("source_sha256", doc.source_sha256),
        ("pages", str(len(doc.pages))),
        ("profile", doc.profile),
        ("languages", _scalar(list(doc.languages))),
        ("engine", doc.engine),
        ("model", _scalar(doc.model)),
        ("transcribed", stamp),
        ("handwatch", __version__),
        ("needs_review", "true" if doc.needs_review else "false"),
        ("review_reasons", _scalar(list(doc.review_reasons))),
    ]
    if doc.confidence is not None:
        fields += [("confidence", _scalar(doc.confidence)), ("uncertain_words", str(doc.uncertain_words or 0))]
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


def candidate_names(source: Path, template: str) -> tuple[Path, Path]:
    """The configured name and its clash alternative (`{stem}.{ext}.md`), both beside the original."""
    stem, ext = source.stem, source.suffix.lstrip(".")
    primary = source.parent / template.format(stem=stem, ext=ext, name=source.name)
    alt_name = primary.name[: -len(".md")] + (f".{ext}" if ext else "") + ".md"
    return primary, primary.with_name(alt_name)


def choose_target(source: Path, template: str, ledger: Ledger) -> Path:
    """Keep the name this original already has; else the configured name unless another original's
    transcription holds it, in which case the second original gets `{stem}.{ext}.md`."""
    previous = ledger.for_source(source)
    primary, alternative = candidate_names(source, template)
    if previous is not None and previous.path in (primary, alternative):
        return previous.path
    held = ledger.get(primary)
    if held is not None and held.source != source:
        return alternative
    return primary


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write(target: Path, text: str, ledger: Ledger, source: Path, source_sha: str) -> Path:
    """Atomic and edit-safe: temp file in the same folder, fsync, then rename. The intended hash is
    recorded before the rename, so a crash in between never turns our own file into a 'conflict'."""
    data = text.encode("utf-8")
    new_sha = sha256_bytes(data)
    existing = None
    try:
        existing = sha256_file(target)
    except FileNotFoundError:
        pass
    if existing is not None:
        rec = ledger.get(target)
        if rec is None:
            raise OutputConflict(f"{target.name} exists and was not written by handwatch; left untouched")
        if not rec.owns(existing):
            raise OutputConflict(f"{target.name} was edited since handwatch wrote it; left untouched")
        if existing == new_sha:
            ledger.intend(target, new_sha, source, source_sha)
            ledger.commit(target, new_sha)
            return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        ledger.intend(target, new_sha, source, source_sha)
        if existing is None:
            try:
                os.link(tmp, target)  # fails if a person created the file meanwhile: never clobber it
            except FileExistsError:
                raise OutputConflict(f"{target.name} appeared while transcribing; left untouched") from None
            except OSError:  # no hard links here (FAT/exFAT, some SMB and FUSE mounts): check, then rename
                if os.path.lexists(target):
                    raise OutputConflict(f"{target.name} appeared while transcribing; left untouched") from None
                os.replace(tmp, target)
            else:
                os.unlink(tmp)
        else:
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
    ledger.commit(target, new_sha)
    return target


def is_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(TMP_SUFFIX)


def remove_stale_temps(root: Path) -> int:
    """Temporary outputs left by a killed process; their real targets were never replaced."""
    n = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if is_temp(name):
                try:
                    os.unlink(os.path.join(dirpath, name))
                    n += 1
                except OSError:
                    pass
    return n
