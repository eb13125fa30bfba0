"""What each model server really says and wants, beyond the OpenAI API they all claim to speak.

LM Studio, Ollama, vLLM and llama.cpp's server differ where it matters to a page: how thinking is turned
off, where the context size is read, how a request that does not fit is refused (or, worse, quietly cut),
and what `max_tokens` they accept. One `Dialect` per server holds that knowledge; `detect` finds the
server behind an endpoint once (from `/v1/models`' shape and the native APIs), or takes the endpoint's
`dialect:`. A server none of them matches is spoken to as plain OpenAI, as before.

How each server words a request that does not fit is in `transcribe.overflow`. The shapes read here are
copied from each server's source (cited beside each); tests/support/dialects.py replays the same bodies."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

NAMES = ("auto", "lmstudio", "ollama", "vllm", "llamacpp", "openai")
ENABLE_THINKING_OFF = {"chat_template_kwargs": {"enable_thinking": False}}


@dataclass(frozen=True)
class Dialect:
    name: str  # as in the endpoint's `dialect:`
    title: str  # as people call the server
    thinking_off: dict | None  # request fields that turn thinking off; None: this server's API cannot
    more_context: str  # how to give the model a larger context, in the server's own terms


DIALECTS = {
    d.name: d
    for d in (
        # vLLM passes chat_template_kwargs to the template (vllm/entrypoints/openai/protocol.py). It refuses a
        # max_tokens the context cannot hold (vllm/renderers/params.py); the others stop at the context, with
        # finish_reason "length": every server is sent a budget that fits (transcribe.client.fit).
        Dialect("vllm", "vLLM", ENABLE_THINKING_OFF, "start vLLM with a larger --max-model-len"),
        # llama-server reads chat_template_kwargs (tools/server/server-common.cpp, oaicompat_chat_params_parse);
        # generation simply stops at the slot's context (finish_reason "length").
        Dialect(
            "llamacpp",
            "llama.cpp",
            ENABLE_THINKING_OFF,
            "start llama-server with a larger -c (each of its -np slots gets -c divided by -np)",
        ),
        # Ollama ignores chat_template_kwargs; its OpenAI layer maps reasoning_effort "none" to think: false
        # (openai/openai.go, FromChatRequest).
        Dialect(
            "ollama",
            "Ollama",
            {"reasoning_effort": "none"},
            "raise Ollama's context (OLLAMA_CONTEXT_LENGTH=N for the server, or PARAMETER num_ctx N in a Modelfile)",
        ),
        # LM Studio has no request field for thinking: enable_thinking is not an API parameter there.
        Dialect("lmstudio", "LM Studio", None, "load the model with a larger context (lms load MODEL --context-length N)"),
        Dialect("openai", "an OpenAI-compatible server", ENABLE_THINKING_OFF, "give the model a larger context"),
    )
}
GENERIC = DIALECTS["openai"]


@dataclass(frozen=True)
class Context:
    tokens: int | None  # what one request may hold; None: the server does not say
    source: str  # where the figure comes from, in words
    vision: bool | None = None  # the server's own word on whether the model takes images
    server: str = ""  # vLLM, Ollama, LM Studio, llama.cpp, or "" when unknown


LEAST_CONTEXT, MOST_CONTEXT = 256, 100_000_000  # what a real server can have; anything else is not believed


def tokens_or_none(value: object) -> int | None:
    """A context size a server said, if it is one: an int (not a bool) within what real servers have."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if LEAST_CONTEXT <= value <= MOST_CONTEXT else None


@dataclass(frozen=True)
class Listed:
    """A model a server offers, with what its native API says about it (LM Studio: loaded or not)."""

    key: str
    vision: bool | None = None
    loaded: bool | None = None
    context: int | None = None
    reasons: bool | None = None  # a thinking model (LM Studio 0.4: capabilities.reasoning)


@dataclass(frozen=True)
class Server:
    dialect: Dialect
    how: str  # "configured", or what gave the server away
    version: tuple[int, ...] = ()  # Ollama's /api/version
    catalog: tuple[Listed, ...] = field(default=())  # LM Studio's own list of its models

    @property
    def shifts_context(self) -> bool:
        """Ollama before 0.33 cut an over-long prompt and shifted the context while generating, silently."""
        return self.dialect.name == "ollama" and (0, 0, 0) < self.version < (0, 33)


Fetch = Callable[[str, str, dict | None], object]  # (method, url, json body) -> parsed JSON, or raise


def fields(body: dict, prefix: str = "") -> str:
    """Request fields as people write them: `chat_template_kwargs.enable_thinking: false`."""
    out = []
    for k, v in body.items():
        out.append(fields(v, f"{prefix}{k}.") if isinstance(v, dict) else f"{prefix}{k}: {json.dumps(v)}")
    return ", ".join(out)


def root_of(url: str) -> str:
    """The server's root: native APIs live beside the OpenAI-compatible /v1."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _try(fetch: Fetch, method: str, url: str, body: dict | None = None) -> object:
    try:
        return fetch(method, url, body)
    except Exception:  # not this kind of server (404, HTML, another JSON, no answer)
        return None


def detect(url: str, listing: list[dict], fetch: Fetch, configured: str = "auto") -> Server:
    """The server behind `url`: the configured dialect, else what its listing and native APIs give away.
    A native answer that cannot be read is "not this server", never an error."""
    root = root_of(url)
    if configured not in ("auto", ""):
        dialect = DIALECTS[configured]
        version = _ollama_version(root, fetch) if configured == "ollama" else ()
        catalog = lmstudio_catalog(root, fetch) if configured == "lmstudio" else ()
        return Server(dialect, "configured", version or (), catalog or ())
    owners = {str(m.get("owned_by") or "") for m in listing}
    # vLLM adds max_model_len to each /v1/models entry and owns them as "vllm" (vllm/entrypoints/openai/serving_models.py).
    if any("max_model_len" in m for m in listing) or "vllm" in owners:
        return Server(DIALECTS["vllm"], "/v1/models names max_model_len")
    # llama-server owns its models as "llamacpp" (tools/server/server-context.cpp, the /v1/models handler).
    if "llamacpp" in owners:
        return Server(DIALECTS["llamacpp"], "/v1/models is owned by llamacpp")
    version = _ollama_version(root, fetch)
    if version is not None:
        return Server(DIALECTS["ollama"], "/api/version", version)
    catalog = lmstudio_catalog(root, fetch)
    if catalog is not None:
        return Server(DIALECTS["lmstudio"], "LM Studio's REST API", catalog=catalog)
    if isinstance(_props(root, fetch), dict):
        return Server(DIALECTS["llamacpp"], "/props")
    return Server(GENERIC, "no native API answered")


def _guarded(parse):
    """A native API's reader: whatever a server sends that it cannot read means "not this server"."""

    def read(*args):
        try:
            return parse(*args)
        except Exception:
            return None

    return read


@_guarded
def _ollama_version(root: str, fetch: Fetch) -> tuple[int, ...] | None:
    got = _try(fetch, "GET", f"{root}/api/version")
    text = got.get("version") if isinstance(got, dict) else None
    if not isinstance(text, str):
        return None
    m = re.match(r"v?(\d{1,6})\.(\d{1,6})(?:\.(\d{1,6}))?", text[:100])
    return tuple(int(p) for p in m.groups() if p is not None) if m else ()


@_guarded
def lmstudio_catalog(root: str, fetch: Fetch) -> tuple[Listed, ...] | None:
    """LM Studio's REST API: /api/v1/models (0.4: `models`, with capabilities and loaded instances), or
    /api/v0/models (`data`, with type "vlm" and state "loaded")."""
    got = _try(fetch, "GET", f"{root}/api/v1/models")
    models = got.get("models") if isinstance(got, dict) else None
    if isinstance(models, list):
        out = []
        for m in models:
            if not isinstance(m, dict) or not m.get("key"):
                continue
            caps = m.get("capabilities")
            vision = caps.get("vision") if isinstance(caps, dict) and isinstance(caps.get("vision"), bool) else None
            instances = [i for i in m.get("loaded_instances") or [] if isinstance(i, dict)]
            ctx = next(
                (n for i in instances if isinstance(n := (i.get("config") or {}).get("context_length"), int) and n > 0),
                None,
            )
            out.append(Listed(str(m["key"]), vision, bool(instances), ctx))
        return tuple(out)
    got = _try(fetch, "GET", f"{root}/api/v0/models")
    data = got.get("data") if isinstance(got, dict) else None
    if not isinstance(data, list) or not all(isinstance(m, dict) and "state" in m for m in data):
        return None
    out = []
    for m in data:
        if m.get("type") == "embeddings":
            continue
        loaded = m.get("state") == "loaded"
        out.append(Listed(str(m.get("id")), m.get("type") == "vlm", loaded, tokens_or_none(m.get("loaded_context_length"))))
    return tuple(out)


@_guarded
def _props(root: str, fetch: Fetch) -> dict | None:
    props = _try(fetch, "GET", f"{root}/props")
    settings = props.get("default_generation_settings") if isinstance(props, dict) else None
    if not isinstance(settings, dict) or "n_ctx" not in settings:
        return None
    return props  # type: ignore[return-value]


# --- the context one request gets ------------------------------------------------------------------


def context(server: Server, url: str, model: str, listing: list[dict], fetch: Fetch) -> Context:
    """Read where this server says it: vLLM in /v1/models, the others in their native APIs. A figure no
    real server could have (0, negative, a bool, 10**30) is not believed."""
    try:
        return _context(server, url, model, listing, fetch)
    except Exception:  # an answer of the wrong shape: the context stays unknown
        return Context(None, f"{server.dialect.title} answered in a shape handwatch does not know")


def _context(server: Server, url: str, model: str, listing: list[dict], fetch: Fetch) -> Context:
    root = root_of(url)
    name = server.dialect.name
    if name in ("vllm", "openai"):
        entry = next((m for m in listing if m.get("id") == model), None)
        n = tokens_or_none(entry.get("max_model_len")) if entry is not None else None
        if n is not None:
            return Context(n, "vLLM's max_model_len", server="vLLM")
        if name == "vllm":
            return Context(None, "vLLM does not list this model", server="vLLM")
    if name == "ollama":
        return _ollama_context(root, model, fetch)
    if name == "lmstudio":
        return _lmstudio_context(server, root, model, fetch)
    if name == "llamacpp":
        return _llamacpp_context(root, fetch)
    return Context(None, "the server does not say")


def _ollama_context(root: str, model: str, fetch: Fetch) -> Context:
    def same(name: str) -> bool:
        return name == model or name.removesuffix(":latest") == model.removesuffix(":latest")

    running = _try(fetch, "GET", f"{root}/api/ps")
    for m in (running or {}).get("models", []) if isinstance(running, dict) else []:
        if (
            isinstance(m, dict)
            and same(str(m.get("model") or m.get("name") or ""))
            and (n := tokens_or_none(m.get("context_length")))
        ):
            return Context(n, "Ollama: the loaded model's context_length", server="Ollama")
    shown = _try(fetch, "POST", f"{root}/api/show", {"model": model})
    if not isinstance(shown, dict) or "model_info" not in shown and "parameters" not in shown:
        return Context(None, "Ollama does not show this model", server="Ollama")
    caps = shown.get("capabilities")
    vision = ("vision" in caps) if isinstance(caps, list) else None
    # [ \t], not \s: a run of blank lines must not make the search quadratic; and only the first 16 kB.
    m = re.search(r"(?m)^[ \t]*num_ctx[ \t]+(\d{1,9})[ \t]*$", str(shown.get("parameters") or "")[:16384])
    if m and (n := tokens_or_none(int(m.group(1)))):
        return Context(n, "Ollama: num_ctx in the model's parameters", vision, "Ollama")
    return Context(
        None,
        "Ollama sets it when it loads the model (num_ctx, OLLAMA_CONTEXT_LENGTH; 4096 by default on GPUs under 24 GiB)",
        vision,
        "Ollama",
    )


def _lmstudio_context(server: Server, root: str, model: str, fetch: Fetch) -> Context:
    catalog = lmstudio_catalog(root, fetch)
    if catalog is None:
        catalog = server.catalog
    entry = next((m for m in catalog if m.key == model), None)
    if entry is None:
        return Context(None, "LM Studio does not list this model", server="LM Studio")
    if entry.context:
        return Context(entry.context, "LM Studio: the loaded model's context_length", entry.vision, "LM Studio")
    return Context(
        None, "LM Studio sets it when it loads the model (lms load MODEL --context-length N)", entry.vision, "LM Studio"
    )


def _llamacpp_context(root: str, fetch: Fetch) -> Context:
    props = _props(root, fetch)
    if props is None:
        return Context(None, "llama.cpp's /props did not answer", server="llama.cpp")
    modalities = props.get("modalities")
    vision = modalities.get("vision") if isinstance(modalities, dict) else None
    n_ctx = tokens_or_none(props["default_generation_settings"]["n_ctx"])
    if n_ctx is None:
        return Context(
            None, "llama.cpp's /props names no usable n_ctx", vision if isinstance(vision, bool) else None, "llama.cpp"
        )
    return Context(
        n_ctx, "llama.cpp: n_ctx per slot (-c divided by -np)", vision if isinstance(vision, bool) else None, "llama.cpp"
    )


# --- thinking ----------------------------------------------------------------------------------------

# How a reasoning model's thinking starts when it arrives as bare text (a chat template that opens <think>
# itself, served without a reasoning parser): it talks about the task, not from the page.
THINKING_OPENER = re.compile(
    r"^\s*(?:<think>\s*)?(?:okay|ok|alright|all right|got it|hmm+|so|well|first|let me|let's|let us|i need to|i'll|"
    r"i will|i should|we need to|the user)\b",
    re.I,
)
THINKING_TOPIC = re.compile(
    r"\b(?:the user|the image|this image|the picture|the photo|the page|transcrib\w*|handwrit\w*|the text in)\b", re.I
)


def only_thinking(raw: str, finish_reason: str | None, reasoning: str = "", opened: bool = False) -> bool:
    """Is this reply the model's thinking and nothing else? Certain: an unclosed <think>, a closing
    </think> with nothing after it, or thinking in the reasoning field and no content. Bare reasoning
    about the task ("Okay, the user wants...") cut off at max_tokens counts only where thinking was
    `opened` (left on, or a server that cannot turn it off serving a thinking model): a note may begin
    "Okay, let me tell you about the photo", and its text is never thrown away on a guess."""
    text = raw or ""
    low = text.lower()
    if "<think>" in low and "</think>" not in low and not text.split("<think>", 1)[0].strip():
        return True
    if "</think>" in low and not re.split(r"</think>", text, flags=re.I)[-1].strip():
        return True
    if not text.strip():
        return bool(reasoning.strip())
    if not opened or finish_reason != "length" or "</think>" in low:
        return False
    head = text[:600]
    return bool(THINKING_OPENER.match(head) and THINKING_TOPIC.search(head))
