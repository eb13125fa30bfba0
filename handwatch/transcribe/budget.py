"""The image budget: what one page costs in tokens with a model family, and the context the server gives it.

A context too small for the image is the failure users meet most and see least: vLLM, llama.cpp, LM Studio
and current Ollama refuse the request, but Ollama before 0.33 cut the prompt and shifted the context, so the
model answered without the picture. `check` compares the two, and the engine fits every request's
`max_tokens` to what the context leaves (`transcribe.client`). The costs are worst cases for a page
handwatch sends (its size limits are in `preprocess`); the context comes from whatever each server says
about itself (`transcribe.dialect`)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from handwatch.config.preprocess import Preprocess
from handwatch.prepare.pixels import PATCH
from handwatch.transcribe.dialect import Context

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


def page_tokens(family: Family, width: int, height: int) -> int:
    """What one page of this size costs: its grid of cells, or the family's fixed figure."""
    if family.fixed is not None:
        return family.fixed
    cell = family.px or 28
    return math.ceil(width / cell) * math.ceil(height / cell)


def prompt_tokens(prompt: str) -> int:
    return TEMPLATE_TOKENS + math.ceil(len(prompt) / CHARS_PER_TOKEN)


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
