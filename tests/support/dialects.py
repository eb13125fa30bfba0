"""The scripted server's dialects: what LM Studio, Ollama, vLLM and llama.cpp's server really send, replayed.

`FakeOpenAI.dialect = Speaker("vllm", context=4096)` makes the fake count a request's tokens the way a
server does (an image costs one token per 28-pixel cell, as Qwen2.5-VL's encoder), refuse or cut what does
not fit the context with that server's own status and body, list its models and answer its native APIs in
its own shapes, and think (or not) the way it lets a client ask. The scripted item (`FakeOpenAI.reply`)
still says what the model would write; the speaker decides what of it arrives.

Every body is copied from the server's source or, for LM Studio (closed source), from its bug tracker;
the citation is beside each."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

NOT_LOADED = "No models loaded. Please load a model in the developer page or use the `lms load` command."
CHARS_PER_TOKEN = 4  # what the fake's model writes per token


def prompt_tokens(image_size: tuple[int, int] | None, prompt: str) -> int:
    """What the server counts for a request: 28-px cells of the image, the text, and the chat template."""
    image = math.ceil(image_size[0] / 28) * math.ceil(image_size[1] / 28) if image_size else 0
    return image + math.ceil(len(prompt) / 3.2) + 24


def image_tokens(image_size: tuple[int, int] | None) -> int:
    return math.ceil(image_size[0] / 28) * math.ceil(image_size[1] / 28) if image_size else 0


@dataclass
class Speaker:
    """One server's manner. `name`: llamacpp | vllm | vllm-0.10 | ollama | ollama-0.32 | lmstudio."""

    name: str
    context: int = 8192  # tokens one request may hold (llama.cpp: per slot)
    thinks: bool = False  # the model is a thinking model (its template opens <think> unless told not to)
    thinking_tokens: int = 6000  # how long it thinks, when it does
    reasoning_parser: bool = True  # the server separates thinking into its own field (vLLM --reasoning-parser, ...)
    vision: bool = True
    loaded: list[str] | None = None  # LM Studio: the models loaded (None: all that are listed); [] none
    jit: bool = True  # LM Studio: /v1/models lists every downloaded model, loaded or not
    version: str = ""  # Ollama's /api/version
    asked: list[dict] = field(default_factory=list)  # every chat request's parameters, as received

    @property
    def base(self) -> str:
        return self.name.split("-")[0]

    # --- /v1/models ----------------------------------------------------------------------------------

    def models(self, names: list[str]) -> dict:
        if self.base == "vllm":
            # vllm/entrypoints/openai/engine/protocol.py, ModelCard: owned_by "vllm", root, max_model_len.
            data = [
                {
                    "id": m,
                    "object": "model",
                    "created": 1,
                    "owned_by": "vllm",
                    "root": m,
                    "parent": None,
                    "max_model_len": self.context,
                    "permission": [],
                }
                for m in names
            ]
        elif self.base == "llamacpp":
            # tools/server/server-context.cpp, get_res_models: owned_by "llamacpp", meta with the slot's n_ctx.
            data = [
                {
                    "id": m,
                    "aliases": [m],
                    "tags": [],
                    "object": "model",
                    "created": 1,
                    "owned_by": "llamacpp",
                    "meta": {"n_ctx": self.context, "n_ctx_train": 131072},
                }
                for m in names
            ]
        elif self.base == "ollama":
            # openai/openai.go, ToListCompletion: owned_by is the name's namespace, "library" for plain names.
            data = [{"id": m, "object": "model", "created": 1, "owned_by": "library"} for m in names]
        else:
            # LM Studio (docs: headless.md; user captures): owned_by "organization_owner"; with JIT loading on,
            # every downloaded model, otherwise only the loaded ones.
            shown = names if self.jit else [m for m in names if m in self._loaded(names)]
            data = [{"id": m, "object": "model", "owned_by": "organization_owner"} for m in shown]
        return {"object": "list", "data": data}

    def _loaded(self, names: list[str]) -> list[str]:
        return list(names) if self.loaded is None else self.loaded

    # --- native APIs ------------------------------------------------------------------------------------

    def native(self, method: str, path: str, body, names: list[str]) -> dict | None:
        if self.base == "ollama":
            if (method, path) == ("GET", "/api/version"):
                return {"version": self.version or ("0.32.4" if self.name == "ollama-0.32" else "0.33.0")}
            if (method, path) == ("GET", "/api/ps"):
                # api/types.go, ProcessModelResponse: the loaded models with their context_length.
                loaded = [m for m in names if m in (self.loaded or [])]
                return {"models": [{"name": m, "model": m, "size": 1, "context_length": self.context} for m in loaded]}
            if (method, path) == ("POST", "/api/show"):
                caps = ["completion", "vision"] if self.vision else ["completion"]
                return {
                    "parameters": 'stop "<|im_end|>"',
                    "model_info": {},
                    "capabilities": caps + (["thinking"] if self.thinks else []),
                }
        if self.base == "lmstudio" and (method, path) == ("GET", "/api/v1/models"):
            # lmstudio-ai/docs 1_developer/2_rest/list.md: models[].key, capabilities.vision, loaded_instances.
            loaded = self._loaded(names)
            return {
                "models": [
                    {
                        "type": "llm",
                        "key": m,
                        "capabilities": {
                            "vision": self.vision,
                            "trained_for_tool_use": False,
                            **({"reasoning": {"allowed_options": ["off", "on"], "default": "on"}} if self.thinks else {}),
                        },
                        "loaded_instances": [{"id": m, "config": {"context_length": self.context}}] if m in loaded else [],
                        "max_context_length": 131072,
                    }
                    for m in names
                ]
            }
        if self.base == "llamacpp" and (method, path) == ("GET", "/props"):
            # tools/server/server-context.cpp, get_res_props: n_ctx per slot, modalities.
            return {
                "default_generation_settings": {"params": {}, "n_ctx": self.context},
                "total_slots": 1,
                "modalities": {"vision": self.vision, "audio": False},
                "chat_template": "{{- '<think>\\n' if enable_thinking }}" if self.thinks else "",
            }
        return None

    # --- chat completions -----------------------------------------------------------------------------

    def thinking_on(self, body: dict) -> bool:
        if not self.thinks:
            return False
        if self.base in ("vllm", "llamacpp"):
            # vLLM and llama.cpp pass chat_template_kwargs to the template (server-common.cpp,
            # oaicompat_chat_params_parse; vLLM's docs: "pass enable_thinking=False in chat_template_kwargs").
            return (body.get("chat_template_kwargs") or {}).get("enable_thinking") is not False
        if self.base == "ollama":
            # openai/openai.go, thinkFromReasoningEffort: "none" is think false; chat_template_kwargs is no field of
            # ChatCompletionRequest, so Go's decoder drops it.
            return body.get("reasoning_effort") != "none" and (body.get("reasoning") or {}).get("effort") != "none"
        return True  # LM Studio: enable_thinking is not honoured (lmstudio-bug-tracker #632, #1573, #1559)

    def chat(self, rec, body: dict, item: dict, names: list[str]) -> tuple[int, dict]:
        """(status, JSON body) for one chat request whose scripted reply is `item`."""
        self.asked.append({k: v for k, v in body.items() if k != "messages"})
        model = body.get("model", "")
        if self.base == "lmstudio" and model not in self._loaded(names) and not self.jit:
            return 404, {"error": NOT_LOADED}  # lmstudio-ai/lms#107: "(404): No models loaded. ..."
        if self.base == "ollama" and self.loaded is not None and model not in self.loaded:
            self.loaded.append(model)  # Ollama loads a model on its first request
        prompt = prompt_tokens(rec.image_size, rec.prompt)
        budget = int(body.get("max_tokens") or body.get("max_completion_tokens") or 1 << 30)
        refused = self._refuse(prompt, budget)
        if refused is not None:
            return refused
        content = str(item.get("content", ""))
        dropped = False
        if self.name == "ollama-0.32" and prompt > self.context:
            # runner/llamarunner/runner.go (to 0.32): "truncating input prompt" keeps numKeep tokens and the end,
            # so the image is cut away; the model answers without it, and finish_reason stays "stop".
            dropped, prompt = True, self.context - 8
        room = budget if self.base == "vllm" else min(budget, max(0, self.context - prompt - 1))
        if self.name == "ollama-0.32":
            room = budget  # the context shifts while generating (ShiftCacheSlot): never cut, never said
        message: dict = {"role": "assistant", "content": ""}
        thought = ""
        if self.thinking_on(body):
            thinking = ("Okay, let me look at the image. The user wants a transcription of the handwriting. " * 200)[
                : self.thinking_tokens * CHARS_PER_TOKEN
            ]
            spent = min(room, math.ceil(len(thinking) / CHARS_PER_TOKEN))
            thought = thinking[: spent * CHARS_PER_TOKEN]
            room -= spent
            if room > 0 and not self.reasoning_parser:
                content = "</think>\n\n" + content  # the template opened <think>; the model closes it
        completion = math.ceil(len(content) / CHARS_PER_TOKEN)
        finish = item.get("finish_reason", "stop")
        if completion > room:
            content, completion, finish = content[: room * CHARS_PER_TOKEN], room, "length"
        if thought and self.reasoning_parser:
            # vLLM: "reasoning" (formerly reasoning_content); llama.cpp and LM Studio: reasoning_content; Ollama: reasoning.
            key = "reasoning" if self.base in ("vllm", "ollama") else "reasoning_content"
            message[key] = thought
        elif thought:
            content = (thought if self.base != "lmstudio" else "<think>" + thought) + content
        message["content"] = content
        used = math.ceil(len(thought) / CHARS_PER_TOKEN) + completion
        if dropped:
            used += self.context // 2  # shifted: more tokens than the context holds went through it
        reply = {
            "id": "chatcmpl-dialect",
            "object": "chat.completion",
            "created": 1,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": used, "total_tokens": prompt + used},
        }
        rec.dropped_image = dropped
        return 200, reply

    def _refuse(self, prompt: int, budget: int) -> tuple[int, dict] | None:
        ctx = self.context
        if self.base == "llamacpp" and prompt >= ctx:
            return 400, llamacpp_overflow(prompt, ctx)
        if self.name == "ollama" and prompt >= ctx:
            # llm/llama_server.go (0.33): llama-server's status, and its whole body as error.message
            # (statusErrorMessage), wrapped by middleware/openai.go writeError in openai.NewError.
            inner = json.dumps(llamacpp_overflow(prompt, ctx), separators=(",", ":"))
            return 400, {"error": {"message": inner, "type": "invalid_request_error", "param": None, "code": None}}
        if self.base == "lmstudio" and prompt >= ctx:
            # lmstudio-bug-tracker #546/#237; the body as client fixtures record it.
            return 400, {
                "error": f"Trying to keep the first {prompt} tokens when context the overflows. However, the model is loaded "
                f"with context length of only {ctx} tokens, which is not enough. Try to load the model with a larger "
                "context length, or provide a shorter input"
            }
        if self.name == "vllm-0.10":
            if prompt + budget > ctx:
                # vllm/entrypoints/openai/serving_engine.py (7ded96b3), the flat ErrorResponse of that time.
                message = (
                    f"This model's maximum context length is {ctx} tokens. However, you requested {budget + prompt} tokens "
                    f"({prompt} in the messages, {budget} in the completion). Please reduce the length of the messages or completion."
                )
                return 400, {"object": "error", "message": message, "type": "BadRequestError", "param": None, "code": 400}
            return None
        if self.base == "vllm":
            if prompt > ctx:
                # vllm/v1/engine/input_processor.py, _validate_model_input (param null).
                message = (
                    f"The decoder prompt (length {prompt}) is longer than the maximum model length of {ctx}. Make sure that "
                    "`max_model_len` is no smaller than the number of text tokens plus multimodal tokens. For image inputs, the "
                    "number of image tokens depends on the number of images, and possibly their aspect ratios as well."
                )
                return 400, vllm_error(message, None)
            if budget > ctx:
                # vllm/renderers/params.py (the fixed wording a later upstream test asserts).
                return 400, vllm_error(
                    f"max_tokens={budget} cannot be greater than max_model_len={ctx}. Please request fewer output tokens.",
                    "max_tokens",
                )
            if prompt > ctx - budget:
                # vllm/renderers/params.py: max_input_tokens = max_total_tokens - max_output_tokens.
                return 400, vllm_error(
                    f"You passed {prompt} input tokens and requested {budget} output tokens. However, the model's context "
                    f"length is only {ctx} tokens, resulting in a maximum input length of {ctx - budget} tokens. Please reduce "
                    "the length of the input prompt.",
                    "input_tokens",
                )
        return None


def llamacpp_overflow(prompt: int, ctx: int) -> dict:
    """tools/server/server-context.cpp (send_error) through server-common.cpp's format_error_response and
    server-task.cpp's server_task_result_error::to_json: HTTP 400."""
    return {
        "error": {
            "code": 400,
            "message": f"request ({prompt} tokens) exceeds the available context size ({ctx} tokens), try increasing it",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": prompt,
            "n_ctx": ctx,
        }
    }


def vllm_error(message: str, param: str | None) -> dict:
    """vllm/entrypoints/utils.py create_error_response: ErrorResponse(error=ErrorInfo(...)), HTTP 400."""
    return {"error": {"message": message, "type": "BadRequestError", "param": param, "code": 400}}
