"""An endpoint's shape, and the check that its address is on this machine's own network (`allow_remote`)."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Callable
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from handwatch.config.base import Frozen


class Endpoint(Frozen):
    """One OpenAI-compatible server (an entry of `endpoints`): LM Studio, vLLM, Ollama or llama.cpp's server."""

    url: str = Field(
        description="The server's base URL, ending in `/v1`: LM Studio `http://127.0.0.1:1234/v1`, vLLM `http://HOST:8000/v1`, "
        "Ollama `http://HOST:11434/v1`, llama.cpp `http://HOST:8080/v1`."
    )
    model: str | None = Field(
        default=None, description="The server's name for the model to ask; may be left out when the server serves exactly one."
    )
    api_key_env: str | None = Field(
        default=None, description="The environment variable holding the API key; local servers accept any, so it is optional."
    )
    max_concurrency: Annotated[int, Field(ge=1, le=256)] = Field(
        default=4, description="Requests in flight here at once; each request goes to the endpoint with the most free capacity."
    )
    timeout_s: Annotated[float, Field(gt=0, le=86400)] = Field(
        default=300.0, description="Seconds one request may take from start to reply, however slowly the server sends it."
    )
    allow_remote: bool = Field(
        default=False,
        description="`true` allows a host that is not loopback, private or link-local: images are private, so sending them "
        "elsewhere must be deliberate.",
    )
    max_tokens: Annotated[int, Field(ge=16, le=262144)] = Field(
        default=4096,
        description="Reply budget per page, in tokens; a reply cut off is retried once with twice the budget. Never more "
        "than the server's context leaves after the image and the prompt.",
    )
    thinking: bool = Field(
        default=False,
        description="`false` asks the server to skip thinking, in its own way (vLLM and llama.cpp `enable_thinking: "
        "false`, Ollama `reasoning_effort: none`; LM Studio has no way); `true` lets the model think first.",
    )
    structured_output: bool = Field(
        default=True,
        description="Ask for the `recipe` profile's JSON through `response_format` (falling back to Markdown); `false` "
        "skips the attempt on a server that cannot do it.",
    )
    confidence: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Token log-probabilities for word confidences: `auto` asks, and stops asking a server that rejects or "
        "ignores them; `on` insists (a rejection is a configuration error); `off` never asks.",
    )
    dialect: Literal["auto", "lmstudio", "ollama", "vllm", "llamacpp", "openai"] = Field(
        default="auto",
        description="Which server this is, for what the OpenAI API leaves to each (turning thinking off, where the "
        "context size is read, how errors look): `auto` detects it from the server's own APIs; `openai` is plain "
        "OpenAI-compatible.",
    )
    name: Annotated[str, Field(min_length=1, max_length=100)] | None = Field(
        default=None, description="What front matter's `endpoint:` calls this endpoint. Left out: its `host:port`."
    )

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
