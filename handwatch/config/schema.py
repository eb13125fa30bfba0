"""The configuration's shape: frozen pydantic models for the config file, its rule keys and endpoints; each field's
description is the configuration reference's text."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from handwatch.config.web import Notify, Web

SEARCH_PATHS = ("~/.config/handwatch/config.yaml", "/etc/handwatch/config.yaml")
RULE_FILE = ".handwatch.yaml"
LANG_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")
OUTPUT_FIELDS = {"stem", "ext", "name"}


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def expand_path(value: str | os.PathLike, base: Path | None = None) -> Path:
    """`~` and `$VARS` expand; a relative path is taken from the config file's folder."""
    p = Path(os.path.expandvars(os.path.expanduser(os.fspath(value))))
    if not p.is_absolute() and base is not None:
        p = base / p
    return Path(os.path.normpath(p))


class Preprocess(_Frozen):
    """Image clean-up options (rule key `preprocess`); each maps to one pure function in preprocess.py."""

    # None: the engine's own default (vlm: 1288 px and 1,254,400 pixels, i.e. at most 1600
    # Qwen2.5-VL vision tokens; tesseract: 2400 px and no area cap, as it reads better with more pixels).
    max_side: Annotated[int, Field(ge=64, le=10000)] | None = None
    max_pixels: Annotated[int, Field(ge=4096)] | None = None
    grayscale: bool = False
    contrast: bool | Literal["auto"] = "auto"
    sharpen: bool = False
    deskew: bool = True
    crop: bool | Literal["perspective"] = False
    jpeg_quality: Annotated[int, Field(ge=30, le=100)] = 90
    max_input_megapixels: Annotated[float, Field(gt=0, le=2000)] = 100.0


class PreprocessOverride(_Frozen):
    """The same keys as `Preprocess`, each optional, so rule files can change one and inherit the rest."""

    max_side: Annotated[int, Field(ge=64, le=10000)] | None = None
    max_pixels: Annotated[int, Field(ge=4096)] | None = None
    grayscale: bool | None = None
    contrast: bool | Literal["auto"] | None = None
    sharpen: bool | None = None
    deskew: bool | None = None
    crop: bool | Literal["perspective"] | None = None
    jpeg_quality: Annotated[int, Field(ge=30, le=100)] | None = None
    max_input_megapixels: Annotated[float, Field(gt=0, le=2000)] | None = None


class MoveAfter(_Frozen):
    """`after: {move: DIR}`: DIR is a plain sub-folder of the folder whose rule names it (the watched
    folder for `defaults` and folder entries, the rule file's own folder for a `.handwatch.yaml`).
    Never absolute, never `..`, and never expanded: a rule file must not reach outside its tree."""

    move: str

    @field_validator("move")
    @classmethod
    def _plain_subfolder(cls, v: str):
        parts = v.split("/")
        if not v or v.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"move: {v!r} must be a sub-folder name like 'done' or 'done/2026' (relative, no '..')")
        if "$" in v or v.startswith("~"):
            raise ValueError(f"move: {v!r}: variables and ~ are not expanded here; name a sub-folder like 'done'")
        return v


class RuleOverride(_Frozen):
    """Rule keys as written in `defaults`, a folder entry or a `.handwatch.yaml`: any may be left out."""

    profile: Literal["notes", "recipe", "multilingual"] | None = None
    languages: Annotated[list[str], Field(min_length=1)] | None = None
    translate_to: str | None = None
    prompt: str | None = None
    engine: Literal["vlm", "tesseract"] | None = None
    settle_s: Annotated[float, Field(ge=0, le=3600)] | None = None
    output: str | None = None
    recursive: bool | None = None
    poll: bool | Literal["auto"] | None = None
    include: list[str] | None = None
    exclude: list[str] | None = None
    preprocess: PreprocessOverride | None = None
    after: Literal["keep"] | MoveAfter | None = None
    max_pages: Annotated[int, Field(ge=1, le=10000)] | None = None
    mark_uncertain: bool | None = None
    uncertain_below: Annotated[float, Field(ge=0, le=1)] | None = None
    review_below: Annotated[float, Field(ge=0, le=1)] | None = None
    review_uncertain_words: Annotated[int, Field(ge=1, le=100000)] | None = None

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
            raise ValueError(f"unknown placeholder(s) {sorted(unknown)}; use {{stem}}, {{ext}}, {{name}}")
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


class Rule(_Frozen):
    """The effective rule for one file: every key resolved (built-ins ◀ defaults ◀ folder ◀ rule files)."""

    profile: Literal["notes", "recipe", "multilingual"] = "notes"
    languages: tuple[str, ...] = ("en",)
    translate_to: str | None = None
    prompt: str | None = None
    engine: Literal["vlm", "tesseract"] = "vlm"
    settle_s: float = 3.0
    output: str = "{stem}.md"
    recursive: bool = True
    poll: bool | Literal["auto"] = "auto"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    preprocess: Preprocess = Preprocess()
    after: Literal["keep"] | MoveAfter = "keep"
    max_pages: int = 50
    # Doubt (doubt.py): None is the engine's own default, chosen with bench/doubt.py.
    mark_uncertain: bool = True  # wrap words under uncertain_below in ==…== in the Markdown
    uncertain_below: float | None = None  # a word less likely right than this is uncertain
    review_below: float | None = None  # a page whose confidence is under this needs review
    review_uncertain_words: int | None = None  # a page with this many uncertain words needs review

    def merged(self, override: RuleOverride) -> Rule:
        data = self.model_dump()
        rule_keys = set(RuleOverride.model_fields)
        for key, value in override.model_dump(exclude_none=True, include=rule_keys).items():
            if key == "preprocess":
                value = {**data["preprocess"], **value}  # exclude_none already dropped unset keys
            data[key] = value
        return Rule.model_validate(data)

    def fingerprint(self) -> str:
        """What changes the transcription itself: the same bytes under the same fingerprint are reused."""
        keys = ("profile", "languages", "translate_to", "prompt", "engine", "preprocess", "max_pages")
        return repr(self.model_dump(include=set(keys)))


class Endpoint(_Frozen):
    url: str
    model: str | None = None
    api_key_env: str | None = None
    max_concurrency: Annotated[int, Field(ge=1, le=256)] = 4
    timeout_s: Annotated[float, Field(gt=0, le=86400)] = 300.0
    allow_remote: bool = False
    max_tokens: Annotated[int, Field(ge=16, le=262144)] = 4096
    thinking: bool = False
    structured_output: bool = True
    # Ask for token log-probabilities (word confidences): auto asks, and stops asking a server that
    # rejects or ignores it; on insists (a rejection is a configuration error); off never asks.
    confidence: Literal["auto", "on", "off"] = "auto"
    name: Annotated[str, Field(min_length=1, max_length=100)] | None = None  # for front matter; default host:port

    @field_validator("url")
    @classmethod
    def _url(cls, v: str):
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {v!r}")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _locality(self):
        if not self.allow_remote:
            host = urlsplit(self.url).hostname or ""
            why = remote_reason(host)
            if why:
                raise ValueError(f"{host} {why}; images are private, so set allow_remote: true to send them there deliberately")
        return self

    def label(self) -> str:
        """How front matter names this endpoint: its `name`, else host:port (never the key, never userinfo)."""
        if self.name:
            return self.name
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        return f"{host}:{parts.port}" if parts.port else host

    def api_key(self) -> str:
        # Local servers accept any key; the openai client insists on one being set.
        if self.api_key_env:
            return os.environ.get(self.api_key_env, "") or "not-needed"
        return "not-needed"


LOCAL_SUFFIXES = (".local", ".lan", ".home.arpa", ".internal", ".localdomain", ".localhost")


# Local by definition: this host, loopback, the private ranges, link-local, IPv6 unique-local. Not
# `ip.is_private`: Python 3.11 counts all of 2001::/23 (Teredo tunnels, AMT and ORCHIDv2 anycast, reachable
# across the internet) and the documentation ranges as private.
LOCAL_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/32",
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "::/128",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    )
)


def _ip_is_local(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return any(ip in net for net in LOCAL_NETWORKS)


def _ip_of(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(text.split("%")[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:  # ::ffff:8.8.8.8 is 8.8.8.8
        return ip.ipv4_mapped
    return ip


def remote_reason(host: str, resolve: Callable[[str], list[str]] | None = None) -> str | None:
    """None when the host is loopback, private or link-local; otherwise why it is refused.

    Every host that is not a literal address is resolved and every address checked: the C resolver
    reads `2130706433`, `0x7f.1` and `8.8.2056` as IPv4 addresses, so a public address can hide in a
    name that looks bare. Only a name that resolves to nothing and looks like a home-network name (no
    dots, or a .local/.lan/… suffix) is taken on trust: it cannot reach the internet as it stands."""
    host = host.strip("[]").lower()
    try:
        return None if _ip_is_local(_ip_of(host)) else "is not a loopback, private or link-local address"
    except ValueError:
        pass
    if host == "localhost" or host.endswith(".localhost"):
        return None
    try:
        addresses = (resolve or _resolve)(host)
    except OSError:
        addresses = []
    if addresses:
        if all(_ip_is_local(_ip_of(a)) for a in addresses):
            return None
        return "resolves to an address that is not loopback, private or link-local"
    if ("." not in host or host.endswith(LOCAL_SUFFIXES)) and HOSTNAME_RE.match(host):
        return None
    return "cannot be resolved to check that it is local"


HOSTNAME_RE = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]{0,62})(\.[a-z0-9]([a-z0-9-]{0,62}))*$")


def _resolve(host: str) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, None)]


class Folder(RuleOverride):
    path: Path


class Config(_Frozen):
    state_dir: Path = Path("~/.local/state/handwatch")
    endpoints: list[Endpoint] = []
    defaults: RuleOverride = RuleOverride()
    folders: list[Folder] = []
    rescan_s: Annotated[float, Field(ge=5)] = 600.0
    stop_grace_s: Annotated[float, Field(ge=0, le=3600)] = 30.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    web: Web | None = None
    notify: Notify | None = None
    source: str = Field(default="<defaults>", exclude=True)

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
