"""How each server says "this request does not fit", and what numbers it gives.

Error bodies differ per server ({"error": {"message"}}, older vLLM's flat {"object": "error"}, LM Studio's
{"error": "<string>"}, Ollama's llama-server JSON nested as a string) and so do the words; both are read
here, from the reply itself. The message shapes are copied from each server's source (cited beside each
pattern); tests/support/dialects.py replays the same bodies."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from handwatch.transcribe.dialect import tokens_or_none


def error_message(text: str, fallback: str = "") -> tuple[str, str]:
    """(message, type) from an error body as any of the servers sends it: {"error": {"message", "type"}}
    (OpenAI, llama.cpp, vLLM), {"object": "error", "message"} (older vLLM), {"error": "<string>"} (LM
    Studio), or Ollama's {"error": {"message": "<llama-server's whole error JSON, as a string>"}}."""
    kind = ""
    body: object = None
    text = text[:65536]  # an error message, not a document
    try:
        body = json.loads(text) if text else None
    except (ValueError, RecursionError):  # not JSON, or JSON nested past what Python parses
        return (text or fallback), kind
    for _ in range(3):  # an error inside an error inside an error, at most
        inner = body.get("error", body) if isinstance(body, dict) else body
        if isinstance(inner, dict):
            kind = str(inner.get("type") or kind)
            message = inner.get("message")
            if not isinstance(message, str):
                return (json.dumps(inner) if inner else fallback), kind
        elif isinstance(inner, str):
            message = inner
        else:
            return fallback, kind
        stripped = message.strip()
        if stripped.startswith("{"):
            try:
                body = json.loads(stripped)
                continue
            except (ValueError, RecursionError):
                pass
        return message, kind
    return fallback, kind


@dataclass(frozen=True)
class Overflow:
    """A request the context cannot hold: the prompt itself ("prompt": send the image smaller) or the
    reply budget on top of it ("budget": ask for fewer tokens)."""

    part: str
    context: int | None = None  # the server's context, when the message says it
    prompt: int | None = None  # the request's prompt tokens, when the message says it


# Each server's words for "this does not fit", with the numbers it gives (named in order of the groups).
_N = r"([\d,]+)"
OVERFLOWS: tuple[tuple[str, re.Pattern, tuple[str, ...]], ...] = (
    # llama.cpp, tools/server/server-context.cpp (HTTP 400, type exceed_context_size_error):
    # "request (%d tokens) exceeds the available context size (%d tokens), try increasing it"
    ("prompt", re.compile(rf"request \({_N} tokens\) exceeds the available context size \({_N} tokens\)"), ("prompt", "context")),
    # ... and where the slot cannot split the input: "input (%d tokens) is larger than the max context size (%d tokens)"
    ("prompt", re.compile(rf"input \({_N} tokens\) is larger than the max context size \({_N} tokens\)"), ("prompt", "context")),
    # vLLM, vllm/v1/engine/input_processor.py: "The decoder prompt (length %d) is longer than the maximum model
    # length of %d." and, at exactly the limit, "... (length %d) plus the number of requested output tokens
    # (at least 1) is longer than the maximum model length of %d."
    (
        "prompt",
        re.compile(
            rf"prompt \(length {_N}\) (?:plus the number of requested output tokens \(at least 1\) )?is longer than the maximum model length of {_N}"
        ),
        ("prompt", "context"),
    ),
    # vLLM, vllm/renderers/params.py: "You passed %d input tokens and requested %d output tokens. However, the
    # model's context length is only %d tokens, resulting in a maximum input length of %d tokens."
    (
        "either",
        re.compile(
            rf"You passed {_N} input tokens and requested {_N} output tokens\. However, the model's context length is only {_N} tokens",
            re.I,
        ),
        ("prompt", "", "context"),
    ),
    # vLLM, vllm/renderers/params.py: "max_tokens=%d cannot be greater than max_model_len=%d." (one release
    # printed it as "max_tokens=20000cannot be greater than max_model_len=max_total_tokens=8192.")
    (
        "budget",
        re.compile(rf"max_tokens={_N}\s*cannot be greater than max_model_len=(?:max_total_tokens=)?{_N}", re.I),
        ("", "context"),
    ),
    # vLLM before the renderer (vllm/entrypoints/openai/serving_engine.py), and OpenAI: "This model's maximum
    # context length is %d tokens. However, you requested %d tokens (%d in the messages, %d in the completion)."
    (
        "either",
        re.compile(rf"maximum context length is {_N} tokens\. However, you requested {_N} tokens \({_N} in the messages", re.I),
        ("context", "", "prompt"),
    ),
    (
        "prompt",
        re.compile(rf"maximum context length is {_N} tokens\. However, you requested {_N} tokens in the messages", re.I),
        ("context", "prompt"),
    ),
    # LM Studio, {"error": "<string>"} (lmstudio-bug-tracker #546, #237): "Trying to keep the first %d tokens
    # when context the overflows. However, the model is loaded with context length of only %d tokens, ..."
    (
        "prompt",
        re.compile(rf"keep the first {_N} tokens when context the overflows.*?context length of only {_N}", re.I | re.S),
        ("prompt", "context"),
    ),
    # LM Studio, newer (quoted in Gitlawb/openclaude#353): "The number of tokens to keep from the initial prompt
    # is greater than the context length (n_keep: %d>= n_ctx: %d)."
    (
        "prompt",
        re.compile(
            rf"tokens to keep from the initial prompt is greater than the context length(?: \(n_keep: {_N}\s*>= n_ctx: {_N})?",
            re.I,
        ),
        ("prompt", "context"),
    ),
    # Ollama: llm/llama_server.go (0.33, context shift off) "the prompt is longer than the context length currently
    # available to the model"; runner/ollamarunner/runner.go (to 0.32, truncate off) "the input length exceeds the
    # context length".
    ("prompt", re.compile(r"prompt is longer than the context length|input length exceeds the context length", re.I), ()),
    # llama.cpp before it counted: "the request exceeds the available context size, try increasing it"; OpenAI's own
    # code; generic words of other servers.
    (
        "prompt",
        re.compile(
            r"exceeds the available context size|context_length_exceeded|exceeds the context|exceed_context_size|context (?:window|size) (?:is )?exceeded|too many tokens",
            re.I,
        ),
        (),
    ),
    ("prompt", re.compile(r"maximum context length|context length", re.I), ()),
)


def overflow(message: str, kind: str = "") -> Overflow | None:
    """The overflow an error message describes, or None when it is about something else."""
    if kind == "exceed_context_size_error" and "exceed" not in message:  # llama.cpp's type says it, whatever the words
        message = f"{message} exceeds the context"
    for part, pattern, names in OVERFLOWS:
        m = pattern.search(message)
        if not m:
            continue
        got = {name: int(g.replace(",", "")[:10]) for name, g in zip(names, m.groups(), strict=False) if name and g}
        ctx, prompt = tokens_or_none(got.get("context")), got.get("prompt")
        if part == "either":
            part = "budget" if ctx and prompt is not None and prompt < ctx else "prompt"
        return Overflow(part, ctx, prompt)
    return None
