"""The image budget: what one page costs in tokens with a model family, and the context the server gives it.

A context too small for the image is the failure users meet most and see least: vLLM refuses the
request, but Ollama and LM Studio cut the prompt and the model answers about half a picture. `check`
compares the two. The costs are worst cases for a page handwatch sends (its size limits are in
`preprocess`); the context comes from whatever each server says about itself."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from handwatch.config.preprocess import Preprocess
from handwatch.prepare.pixels import PATCH

TEMPLATE_TOKENS = 40  # chat template, role markers and the image's start/end tokens, roughly
CHARS_PER_TOKEN = 3.5  # English prompt text; other languages cost a little more


@dataclass(frozen=True)
class Family:
    name: str
    pattern: str  # matched against the model name, lower case
    # Tokens for a page of w x h pixels: a grid of `px`-pixel cells, or a fixed number.
    px: int | None = None
    fixed: int | None = None


# The image encoders handwatch's prompts are written for (docs/profiles.md), and a few more.
FAMILIES = (
    Family("Qwen3-VL", r"qwen-?3[-_.]?(vl|omni)", px=32),
    Family("Qwen2.5-VL", r"qwen-?2(\.5)?[-_.]?vl|qwen25vl|qwen2vl", px=28),
    Family("Gemma 3", r"gemma-?[34]", fixed=256),
    Family("MiniCPM-V", r"minicpm", fixed=640),  # up to 9 slices and an overview, 64 tokens each
    Family("InternVL", r"internvl", fixed=13 * 256),  # up to 12 tiles and a thumbnail, 256 each
    Family("LLaVA", r"llava", fixed=5 * 576),  # LLaVA-NeXT: up to 4 tiles and an overview
)
FALLBACK = FAMILIES[1]  # an unknown family is costed like Qwen2.5-VL, the most common choice


def family_of(model: str) -> Family | None:
    low = model.lower()
    return next((f for f in FAMILIES if re.search(f.pattern, low)), None)


def image_tokens(family: Family, opts: Preprocess) -> int:
    """The most one page can cost: `opts` as `preprocess.for_engine` fills it in for the vlm engine."""
    if family.fixed is not None:
        return family.fixed
    cell = family.px or 28
    side = opts.max_side or 1288
    cells_side = math.ceil(side / cell)
    worst = cells_side * cells_side  # a square page is the largest a long-side limit allows
    if opts.max_pixels:
        # fit_size keeps round(w/28) * round(h/28) within max_pixels / 28² exactly; another grid
        # may round up a row and a column more.
        cells = opts.max_pixels / (cell * cell)
        worst = min(worst, int(cells) if cell == PATCH else math.ceil(cells) + 2 * cells_side)
    return worst


def prompt_tokens(prompt: str) -> int:
    return TEMPLATE_TOKENS + math.ceil(len(prompt) / CHARS_PER_TOKEN)


@dataclass(frozen=True)
class Context:
    tokens: int | None  # what one request may hold; None: the server does not say
    source: str  # where the figure comes from, in words
    vision: bool | None = None  # the server's own word on whether the model takes images
    server: str = ""  # vLLM, Ollama, LM Studio, llama.cpp, or "" when unknown


def root_of(url: str) -> str:
    """The server's root: native APIs live beside the OpenAI-compatible /v1."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


Fetch = Callable[[str, str, dict | None], object]  # (method, url, json body) -> parsed JSON, or raise


def server_context(url: str, model: str, listing: list[dict], fetch: Fetch) -> Context:
    """The context one request gets, from whichever server answers: vLLM says it in /v1/models;
    Ollama, LM Studio and llama.cpp in their native APIs. A server that answers none of them
    leaves it unknown. `fetch` raises on anything but a JSON answer."""
    entry = next((m for m in listing if m.get("id") == model), None)
    if entry is not None and isinstance(entry.get("max_model_len"), int):
        return Context(entry["max_model_len"], "vLLM's max_model_len", server="vLLM")
    root = root_of(url)
    for probe in (_ollama, _lmstudio, _llamacpp):
        try:
            found = probe(root, model, fetch)
        except Exception:  # not this kind of server (404, HTML, another JSON): try the next
            continue
        if found is not None:
            return found
    return Context(None, "the server does not say")


def _ollama(root: str, model: str, fetch: Fetch) -> Context | None:
    def same(name: str) -> bool:
        return name == model or name.removesuffix(":latest") == model.removesuffix(":latest")

    try:
        running = fetch("GET", f"{root}/api/ps", None)
    except Exception:  # older Ollama, or none: /api/show decides
        running = None
    for m in (running or {}).get("models", []) if isinstance(running, dict) else []:
        if same(str(m.get("model") or m.get("name") or "")) and int(m.get("context_length") or 0) > 0:
            return Context(int(m["context_length"]), "Ollama: the loaded model's context_length", server="Ollama")
    shown = fetch("POST", f"{root}/api/show", {"model": model})
    if not isinstance(shown, dict) or "model_info" not in shown and "parameters" not in shown:
        return None
    caps = shown.get("capabilities")
    vision = ("vision" in caps) if isinstance(caps, list) else None
    m = re.search(r"(?m)^\s*num_ctx\s+(\d+)", str(shown.get("parameters") or ""))
    if m:
        return Context(int(m.group(1)), "Ollama: num_ctx in the model's parameters", vision, "Ollama")
    return Context(
        None,
        "Ollama sets it when it loads the model (num_ctx, OLLAMA_CONTEXT_LENGTH; 4096 by default on GPUs under 24 GiB)",
        vision,
        "Ollama",
    )


def _lmstudio(root: str, model: str, fetch: Fetch) -> Context | None:
    listed = fetch("GET", f"{root}/api/v1/models", None)
    models = listed.get("models") if isinstance(listed, dict) else None
    if not isinstance(models, list):
        return None
    entry = next((m for m in models if isinstance(m, dict) and model in (m.get("key"), m.get("id"))), None)
    if entry is None:
        return Context(None, "LM Studio does not list this model", server="LM Studio")
    caps = entry.get("capabilities")
    vision = caps.get("vision") if isinstance(caps, dict) and isinstance(caps.get("vision"), bool) else None
    for inst in entry.get("loaded_instances") or []:
        n = (inst.get("config") or {}).get("context_length") if isinstance(inst, dict) else None
        if isinstance(n, int) and n > 0:
            return Context(n, "LM Studio: the loaded model's context_length", vision, "LM Studio")
    return Context(None, "LM Studio sets it when it loads the model (lms load MODEL --context-length N)", vision, "LM Studio")


def _llamacpp(root: str, model: str, fetch: Fetch) -> Context | None:
    props = fetch("GET", f"{root}/props", None)
    settings = props.get("default_generation_settings") if isinstance(props, dict) else None
    if not isinstance(settings, dict) or not isinstance(settings.get("n_ctx"), int):
        return None
    modalities = props.get("modalities") if isinstance(props, dict) else None
    vision = modalities.get("vision") if isinstance(modalities, dict) else None
    return Context(settings["n_ctx"], "llama.cpp: n_ctx per slot (-c divided by -np)", vision, "llama.cpp")


@dataclass(frozen=True)
class Budget:
    image: int
    prompt: int
    reply: int
    family: Family
    known_family: bool

    @property
    def request(self) -> int:
        return self.image + self.prompt

    @property
    def total(self) -> int:
        return self.request + self.reply


def budget(model: str, pages: list[Preprocess], prompts: list[str], max_tokens: int) -> Budget:
    family = family_of(model)
    fam = family or FALLBACK
    image = max((image_tokens(fam, p) for p in pages), default=image_tokens(fam, Preprocess()))
    prompt = max((prompt_tokens(p) for p in prompts), default=TEMPLATE_TOKENS)
    return Budget(image, prompt, max_tokens, fam, family is not None)


def verdict(b: Budget, ctx: Context) -> tuple[str, str]:
    """("ok" | "warn" | "error" | "note", the sentence) for this budget against this context."""
    fam = b.family.name if b.known_family else f"family unknown, costed as {b.family.name}"
    cost = (
        f"a page costs up to {b.image:,} image tokens ({fam}) + ~{b.prompt:,} prompt + {b.reply:,} reply "
        f"(max_tokens) = {b.total:,}"
    )
    if ctx.tokens is None:
        level = "warn" if ctx.server == "Ollama" and b.total > 4096 else "note"
        return level, f"{cost}; context unknown: {ctx.source}; give it at least {b.total:,}"
    where = f"the server's context is {ctx.tokens:,} ({ctx.source})"
    if b.request > ctx.tokens:
        return "error", (
            f"{cost}, but {where}: the image alone does not fit, so pages are refused or cut "
            f"(raise the context to at least {b.total:,}, or lower preprocess.max_pixels)"
        )
    if b.total > ctx.tokens:
        return "warn", (
            f"{cost}, but {where}: replies longer than {ctx.tokens - b.request:,} tokens are cut off "
            f"(raise the context to {b.total:,} or lower max_tokens)"
        )
    return "ok", f"{cost}; {where}: fits"
