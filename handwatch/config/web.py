"""The `web:` and `notify:` configuration keys (the review page and notifications), validated like the rest."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from handwatch.config.base import Frozen

PASSWORD_HASH_RE = re.compile(r"^scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$")
DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h)?\s*$")


def split_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` or `[IPv6]:PORT` into (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"must be HOST:PORT, like 127.0.0.1:8765 (got {value!r})")
    if not 0 < int(port) < 65536:
        raise ValueError(f"port {port} is not between 1 and 65535")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Web(Frozen):
    """The review page. Without a password it may listen on loopback only."""

    password_hash: str | None = Field(
        default=None,
        description="A password hash from `handwatch web --hash-password` (scrypt), asked with HTTP Basic authentication; "
        "this or `password_env` is needed to listen on any address that is not loopback.",
    )
    password_env: str | None = Field(
        default=None, description="The environment variable holding the password itself, in place of `password_hash`."
    )
    public_url: str | None = Field(
        default=None,
        description="How people reach the page, like `http://nas.lan:8765`: the links in notifications, and a Host name "
        "the page answers to.",
    )
    # After the password keys: its check sees them.
    listen: str = Field(
        default="127.0.0.1:8765",
        description="`HOST:PORT` (`[IPv6]:PORT`) to serve the page on: loopback only unless a password is set.",
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str, info: ValidationInfo):
        host, _ = split_listen(v)
        if not is_loopback(host) and not (info.data.get("password_hash") or info.data.get("password_env")):
            raise ValueError(
                f"{host} is not a loopback address, and anyone on the network could read and change your "
                "transcriptions: set password_hash (from handwatch web --hash-password) or password_env"
            )
        return v

    @field_validator("password_hash")
    @classmethod
    def _hash(cls, v):
        if v is not None and not PASSWORD_HASH_RE.match(v):
            raise ValueError("not a password hash from `handwatch web --hash-password` (scrypt$N$r$p$salt$hash)")
        return v

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, v):
        if v is not None:
            parts = urlsplit(v)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"not an http(s) URL: {v!r}")
            v = v.rstrip("/")
        return v

    def address(self) -> tuple[str, int]:
        return split_listen(self.listen)

    def base_url(self) -> str:
        if self.public_url:
            return self.public_url
        host, port = self.address()
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


NOTIFY_EVENTS = ("needs_review", "failed", "endpoint_down")


class Notify(Frozen):
    """Push notifications through apprise: batched, at most one message per `every`."""

    urls: Annotated[list[str], Field(min_length=1)] = Field(
        description="Apprise notification URLs, like `ntfys://ntfy.sh/my-handwatch-topic`: ntfy, Gotify, Matrix, e-mail, "
        "Telegram, a JSON webhook … (see apprise's list of services)."
    )
    on: list[Literal["needs_review", "failed", "endpoint_down"]] = Field(
        default=["needs_review", "failed", "endpoint_down"],
        description="The events worth a message: a file that needs review, a file that failed, an endpoint that is down.",
    )
    every: float = Field(
        default=600.0,
        description="At most one message per this long, later events summarised in it: seconds, or a duration like `10m` "
        "or `1h`.",
    )
    include_text: bool = Field(
        default=False,
        description="`true` adds the first 200 characters of a flagged transcription to the message, which otherwise "
        "never contains it.",
    )

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, data):
        # YAML 1.1 (PyYAML) reads the bare key `on` as the boolean true.
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data

    @field_validator("urls")
    @classmethod
    def _urls(cls, v):
        import apprise  # only a config with `notify:` pays for importing it

        bad = [f"[{i}] {u.split(':', 1)[0]}://…" for i, u in enumerate(v) if apprise.Apprise.instantiate(u) is None]
        if bad:
            raise ValueError(f"not a notification URL apprise knows: {', '.join(bad)} (see apprise's list of services)")
        return v

    @field_validator("every", mode="before")
    @classmethod
    def _every(cls, v):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            seconds = float(v)
        else:
            m = DURATION_RE.match(str(v))
            if not m:
                raise ValueError(f"not a duration: {v!r} (seconds, or like 10m, 1h)")
            seconds = float(m.group(1)) * {None: 1, "s": 1, "m": 60, "min": 60, "h": 3600}[m.group(2)]
        if seconds < 0:
            raise ValueError("must not be negative")
        return seconds
