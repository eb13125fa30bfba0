"""The configuration's shape: frozen pydantic models for the config file, its rule keys and endpoints; each field's
description is the configuration reference's text."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator, model_validator

from handwatch.config.base import Frozen
from handwatch.config.endpoint import Endpoint
from handwatch.config.preprocess import Preprocess, PreprocessOverride, doc_of
from handwatch.config.web import Notify, Web

SEARCH_PATHS = ("~/.config/handwatch/config.yaml", "/etc/handwatch/config.yaml")
RULE_FILE = ".handwatch.yaml"
LANG_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")
OUTPUT_FIELDS = {"stem", "ext", "name", "kind"}


def expand_path(value: str | os.PathLike, base: Path | None = None) -> Path:
    """`~` and `$VARS` expand; a relative path is taken from the config file's folder."""
    p = Path(os.path.expandvars(os.path.expanduser(os.fspath(value))))
    if not p.is_absolute() and base is not None:
        p = base / p
    return Path(os.path.normpath(p))


class MoveAfter(Frozen):
    """`after: {move: DIR}`: DIR is a plain sub-folder of the folder whose rule names it (the watched
    folder for `defaults` and folder entries, the rule file's own folder for a `.handwatch.yaml`).
    Never absolute, never `..`, and never expanded: a rule file must not reach outside its tree."""

    move: str = Field(
        description="The sub-folder the original is moved into once its Markdown is written (created when missing)."
    )

    @field_validator("move")
    @classmethod
    def _plain_subfolder(cls, v: str):
        parts = v.split("/")
        if not v or v.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"move: {v!r} must be a sub-folder name like 'done' or 'done/2026' (relative, no '..')")
        if "$" in v or v.startswith("~"):
            raise ValueError(f"move: {v!r}: variables and ~ are not expanded here; name a sub-folder like 'done'")
        return v


class SecondOpinion(Frozen):
    """`second_opinion:`: which endpoint reads a page again, and when."""

    endpoint: Annotated[str, Field(min_length=1, max_length=100)] = Field(
        description="The `name` of the endpoint that reads the page a second time (not one that serves the first reading)."
    )
    when: Literal["needs_review", "always"] = Field(
        default="needs_review",
        description="`needs_review`: only pages the first reading leaves in doubt; `always`: every page that has text.",
    )


def _names(v):
    """`endpoint: big` or `endpoint: [big, small]`: the names in order of preference, each once."""
    if v is None or isinstance(v, str):
        return v if v is None else (v,)
    if isinstance(v, list | tuple) and len(v) > 100:
        raise ValueError(f"{len(v)} names: a folder names at most 100 endpoints")
    return tuple(dict.fromkeys(v)) if isinstance(v, list | tuple) and all(isinstance(x, str) for x in v) else v


class RuleOverride(Frozen):
    """Rule keys as written in `defaults`, a folder entry or a `.handwatch.yaml`: any may be left out."""

    profile: Literal["notes", "recipe", "multilingual", "auto"] | None = Field(
        default=None,
        description="What kind of document lives here, which decides the prompt: `notes` (a verbatim transcription), `recipe` "
        "(title, ingredients, steps; JSON where the endpoint can), `multilingual` (each word kept in its language) or `auto` "
        "(chosen from each page's kind: a recipe → `recipe`, a letter in a language other than the first of `languages` → "
        "`multilingual`, anything else → `notes`).",
    )
    documents_only: bool | Literal["auto"] | None = Field(
        default=None,
        description="Skip what is not a document (a holiday photo, a blank frame): no Markdown, a reason in `status`. `auto` "
        "is on for camera photos (JPEG, HEIC, WebP) and off for scans and PDFs.",
    )
    languages: Annotated[list[str], Field(min_length=1)] | None = Field(
        default=None, description="ISO 639 codes like `[de, en]`: a hint for the model, and the languages Tesseract reads."
    )
    translate_to: str | None = Field(
        default=None,
        description="An ISO 639 code: adds a `## Translation (CODE)` section, made by a second, text-only request. Needs "
        "engine `vlm`.",
    )
    prompt: str | None = Field(
        default=None, description="Extra instructions appended to the profile's prompt, like `Dates are day/month/year.`"
    )
    engine: Literal["vlm", "tesseract"] | None = Field(
        default=None,
        description="Who reads the page: `vlm`, a vision-language model at the endpoints, or `tesseract`, on the CPU with no "
        "GPU needed (good for print, poor for handwriting).",
    )
    settle_s: Annotated[float, Field(ge=0, le=3600)] | None = Field(
        default=None, description="Seconds a file must stay quiet, its size, mtime, inode and ctime unchanged, before it is read."
    )
    output: str | None = Field(
        default=None,
        description="The Markdown's path beside the original, ending in `.md`, with the placeholders `{stem}`, `{ext}`, "
        "`{name}` (the original's name) and `{kind}` (the page's kind, `unknown` when it was not classified); it must "
        "contain `{stem}` or `{name}` and stay inside the watched folder.",
    )
    recursive: bool | None = Field(default=None, description="Watch the folder's sub-folders too.")
    poll: bool | Literal["auto"] | None = Field(
        default=None,
        description="`true` polls the folder, `false` uses inotify, `auto` polls on network filesystems (NFS, SMB, sshfs "
        "…), where inotify sees only local changes.",
    )
    include: list[str] | None = Field(
        default=None,
        description='Glob patterns, like `["*.jpg", "*.heic"]`: when given, only files whose name or path in the '
        "watched folder matches one are read.",
    )
    exclude: list[str] | None = Field(
        default=None, description="Globs on the file's name or its path in the watched folder: matching files are never read."
    )
    preprocess: PreprocessOverride | None = Field(
        default=None,
        description="How the image is cleaned up before it is read, as a mapping of the `preprocess` keys; merged key by "
        "key, so a rule file can change one and keep the rest.",
    )
    after: Literal["keep"] | MoveAfter | None = Field(
        default=None,
        description="What happens to the original once its Markdown is written: `keep` leaves it, `{move: DIR}` moves it "
        "into the sub-folder DIR (relative to the watched folder, or to a rule file's own folder; never outside).",
    )
    max_pages: Annotated[int, Field(ge=1, le=10000)] | None = Field(
        default=None, description="A PDF or multi-page TIFF with more pages fails with a clear reason, not tying up the GPU."
    )
    endpoint: Annotated[tuple[Annotated[str, Field(min_length=1, max_length=100)], ...], Field(min_length=1)] | None = Field(
        default=None,
        description="Which endpoints serve this folder: a `name`, or a list of names in order of preference (the first "
        "with a free slot takes the page; a busy or down one passes it to the next). Left out: every endpoint serves, "
        "except one named by `second_opinion`.",
    )
    second_opinion: SecondOpinion | Literal[False] | None = Field(
        default=None,
        description="An endpoint's `name` (or a mapping `{endpoint: NAME, when: always}`, see below): a page the first reading "
        "leaves in doubt is read again there, the readings are compared word by word, the surer word is written, and the "
        "words they dispute are marked. The first reading is written at once; the second refines it later, never over a person's edit. "
        "`false` turns it off below a folder that has it.",
    )
    mark_uncertain: bool | None = Field(
        default=None, description="Mark uncertain words as `==word==` in the Markdown (the front matter counts them either way)."
    )
    uncertain_below: Annotated[float, Field(ge=0, le=1)] | None = Field(
        default=None,
        description="A word whose probability of being right is under this is uncertain: marked and counted. Unset: 0.6 "
        "for `vlm`, 0.8 for `tesseract`.",
    )
    review_below: Annotated[float, Field(ge=0, le=1)] | None = Field(
        default=None, description="A page whose confidence (mean word probability) is under this needs review. Unset: 0.9."
    )
    review_uncertain_words: Annotated[int, Field(ge=1, le=100000)] | None = Field(
        default=None, description="A page with this many uncertain words (`[illegible]` counts) or more needs review. Unset: 1."
    )

    @field_validator("endpoint", mode="before")
    @classmethod
    def _endpoint(cls, v):
        return _names(v)

    @field_validator("second_opinion", mode="before")
    @classmethod
    def _second(cls, v):
        if v is True:
            raise ValueError("name the endpoint that reads the second time, like `second_opinion: big`")
        return {"endpoint": v} if isinstance(v, str) else v

    @field_validator("languages")
    @classmethod
    def _langs(cls, v):
        if v is None:
            return v
        bad = [x for x in v if not isinstance(x, str) or not LANG_RE.match(x)]
        if bad:
            raise ValueError(f"not ISO 639 language codes: {bad} (use codes like en, de, fr)")
        return v

    @field_validator("translate_to")
    @classmethod
    def _translate(cls, v):
        if v is not None and not LANG_RE.match(v):
            raise ValueError(f"not an ISO 639 language code: {v!r}")
        return v

    @field_validator("output")
    @classmethod
    def _output(cls, v):
        if v is None:
            return v
        fields = set(re.findall(r"{([^{}]*)}", v))
        unknown = fields - OUTPUT_FIELDS
        if unknown:
            raise ValueError(f"unknown placeholder(s) {sorted(unknown)}; use {{stem}}, {{ext}}, {{name}}, {{kind}}")
        if "stem" not in fields and "name" not in fields:
            raise ValueError("must contain {stem} or {name}, or every file would write the same Markdown")
        if not v.endswith(".md") or v.startswith("/") or ".." in Path(v).parts:
            raise ValueError("must be a relative path ending in .md, inside the watched folder")
        return v


class RuleFileOverride(RuleOverride):
    """What a `.handwatch.yaml` may say: the rule keys except those that decide how a folder is watched,
    which only the config file can set (one observer serves a whole watched folder)."""

    @field_validator("recursive", "poll")
    @classmethod
    def _not_here(cls, v):
        raise ValueError(
            "can only be set in the config file (defaults or a folder entry): it decides how the whole watched folder is observed"
        )


class Rule(Frozen):
    """The effective rule for one file: every key resolved (built-ins ◀ defaults ◀ folder ◀ rule files)."""

    profile: Literal["notes", "recipe", "multilingual", "auto"] = Field(
        default="notes", description=doc_of(RuleOverride, "profile")
    )
    documents_only: bool | Literal["auto"] = Field(default="auto", description=doc_of(RuleOverride, "documents_only"))
    languages: tuple[str, ...] = Field(default=("en",), description=doc_of(RuleOverride, "languages"))
    translate_to: str | None = Field(default=None, description=doc_of(RuleOverride, "translate_to"))
    prompt: str | None = Field(default=None, description=doc_of(RuleOverride, "prompt"))
    engine: Literal["vlm", "tesseract"] = Field(default="vlm", description=doc_of(RuleOverride, "engine"))
    settle_s: float = Field(default=3.0, description=doc_of(RuleOverride, "settle_s"))
    output: str = Field(default="{stem}.md", description=doc_of(RuleOverride, "output"))
    recursive: bool = Field(default=True, description=doc_of(RuleOverride, "recursive"))
    poll: bool | Literal["auto"] = Field(default="auto", description=doc_of(RuleOverride, "poll"))
    include: tuple[str, ...] = Field(default=(), description=doc_of(RuleOverride, "include"))
    exclude: tuple[str, ...] = Field(default=(), description=doc_of(RuleOverride, "exclude"))
    preprocess: Preprocess = Field(default=Preprocess(), description=doc_of(RuleOverride, "preprocess"))
    after: Literal["keep"] | MoveAfter = Field(default="keep", description=doc_of(RuleOverride, "after"))
    max_pages: int = Field(default=50, description=doc_of(RuleOverride, "max_pages"))
    endpoint: tuple[str, ...] = Field(default=(), description=doc_of(RuleOverride, "endpoint"))
    second_opinion: SecondOpinion | None = Field(default=None, description=doc_of(RuleOverride, "second_opinion"))
    # Doubt (transcribe/doubt.py): None is the engine's own default, chosen with bench/doubt.py.
    mark_uncertain: bool = Field(default=True, description=doc_of(RuleOverride, "mark_uncertain"))
    uncertain_below: float | None = Field(default=None, description=doc_of(RuleOverride, "uncertain_below"))
    review_below: float | None = Field(default=None, description=doc_of(RuleOverride, "review_below"))
    review_uncertain_words: int | None = Field(default=None, description=doc_of(RuleOverride, "review_uncertain_words"))

    def merged(self, override: RuleOverride) -> Rule:
        data = self.model_dump()
        rule_keys = set(RuleOverride.model_fields)
        for key, value in override.model_dump(exclude_none=True, include=rule_keys).items():
            if key == "preprocess":
                value = {**data["preprocess"], **value}  # exclude_none already dropped unset keys
            elif key == "second_opinion" and value is False:
                value = None
            data[key] = value
        return Rule.model_validate(data)

    def fingerprint(self) -> str:
        """What changes the transcription itself: the same bytes under the same fingerprint are reused."""
        keys = ("profile", "languages", "translate_to", "prompt", "engine", "preprocess", "max_pages")
        return repr(self.model_dump(include=set(keys)))


class Folder(RuleOverride):
    """An entry of `folders`: the folder to watch and the rule keys that differ there from `defaults`."""

    path: Path = Field(
        description="The folder to watch. `~` and `$VARIABLES` expand; a relative path is taken from the config file's "
        "folder. handwatch never creates it: a missing one is waited for."
    )


class Config(Frozen):
    state_dir: Path = Field(
        default=Path("~/.local/state/handwatch"),
        description="Where the SQLite state database lives (job queue, what was written, endpoint health). Left out: "
        "`$STATE_DIRECTORY` under systemd, else `~/.local/state/handwatch`.",
    )
    endpoints: list[Endpoint] = Field(
        default=[], description="The OpenAI-compatible servers that read pages; needed when a folder uses engine `vlm`."
    )
    defaults: RuleOverride = Field(default=RuleOverride(), description="Rule keys every folder inherits.")
    folders: list[Folder] = Field(
        default=[], description="The folders to watch: each a `path`, plus any rule keys that override `defaults` there."
    )
    rescan_s: Annotated[float, Field(ge=5)] = Field(
        default=600.0,
        description="Seconds between walks of every watched folder, a safety net for filesystem events that were lost; a "
        "walk only hashes files it has not seen.",
    )
    stop_grace_s: Annotated[float, Field(ge=0, le=3600)] = Field(
        default=30.0,
        description="Seconds a stopping daemon lets requests in flight finish; later replies publish nothing. Keep "
        "systemd's `TimeoutStopSec` above this.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="How much is logged; `--log-level` on the command line wins."
    )
    web: Web | None = Field(
        default=None, description="The review page, served by `handwatch run` when this key is present; left out, no page."
    )
    notify: Notify | None = Field(default=None, description="Push notifications through apprise; left out, none are sent.")
    source: str = Field(
        default="<defaults>",
        exclude=True,
        description="Not a key to write: the file this configuration was read from, set by the loader for messages.",
    )

    @model_validator(mode="after")
    def _needs_endpoint(self):
        base = self.defaults.engine or "vlm"
        users = [i for i, f in enumerate(self.folders) if (f.engine or base) == "vlm"]
        if users and not self.endpoints:
            which = f"folders[{users[0]}]" + (f" and {len(users) - 1} more" if len(users) > 1 else "")
            how = " (the default)" if self.folders[users[0]].engine is None and self.defaults.engine is None else ""
            raise ValueError(
                f"endpoints: none configured, but {which} uses engine: vlm{how}. Add an endpoint "
                "(endpoints: [{url: http://127.0.0.1:1234/v1}] for LM Studio; vLLM :8000/v1, Ollama :11434/v1, "
                "llama.cpp :8080/v1), or set engine: tesseract to read on the CPU"
            )
        return self

    def base_rule(self) -> Rule:
        return Rule().merged(self.defaults)

    def folder_rule(self, folder: Folder) -> Rule:
        return self.base_rule().merged(folder)

    def secrets(self) -> list[str]:
        """What must never be logged or printed: API keys, passwords in endpoint URLs, the web password."""
        found = [ep.api_key() for ep in self.endpoints if ep.api_key_env]
        found += [urlsplit(ep.url).password or "" for ep in self.endpoints]
        if self.web is not None and self.web.password_env:
            found.append(os.environ.get(self.web.password_env, ""))
        return [s for s in found if s and s != "not-needed"]


# Where a key of each kind belongs, for an unknown key written in the wrong place.
KEY_HOMES: dict[str, type[BaseModel]] = {
    "`defaults:` or a folder entry": RuleOverride,
    "an entry of `endpoints:`": Endpoint,
    "`preprocess:`": PreprocessOverride,
    "`web:`": Web,
    "`notify:`": Notify,
}
