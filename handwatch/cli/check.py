"""`handwatch check`: everything a first run needs, each with a verdict — folders, Tesseract's language
data, every endpoint (reachable, models, a picture read back, the image budget against its context).

Findings come one at a time, so a slow endpoint does not hold back what is already known; nothing
stops at the first problem, and the exit code is the worst found."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

from handwatch.config.rules import RuleBook
from handwatch.config.schema import Config, Folder, Rule
from handwatch.errors import EX_CONFIG, EX_OK, EX_UNAVAILABLE, ConfigError, EngineUnavailable, HandwatchError

OK, NOTE, WARN, ERROR = "ok", "note", "warn", "error"
FOLDER_EXAMPLE = "folders:\n    - path: ~/Sync/Camera"
SERVER_HINT = (
    "is the server running and listening there? (LM Studio: `lms server start`, port 1234; vLLM 8000; "
    "Ollama 11434; llama.cpp 8080)"
)


@dataclass(frozen=True)
class Finding:
    level: str  # ok | note | warn | error
    subject: str  # what was checked: "folder /srv/Camera", "tesseract", "endpoint http://…"
    text: str
    code: int = EX_OK  # the exit code an error stands for


def exit_code(findings: list[Finding]) -> int:
    return max((f.code for f in findings if f.level == ERROR), default=EX_OK)


def run(cfg: Config) -> Iterator[Finding]:
    rules = yield from _folders(cfg)
    yield from _tesseract(cfg, rules)
    yield from _endpoints(cfg, rules)


# --- folders ------------------------------------------------------------------------------------


def _folders(cfg: Config):
    """Each folder's state and effective rule; returns [(folder, rule)] (the defaults when there is none)."""
    yield from _state_dir(cfg)
    if not cfg.folders:
        yield Finding(
            ERROR,
            "folders",
            "none configured: handwatch has nothing to watch (`once FILE` still works). "
            f"Add one to {cfg.source}:\n  {FOLDER_EXAMPLE}",
            EX_CONFIG,
        )
        return [(None, cfg.base_rule())]
    book = RuleBook(cfg)
    out: list[tuple[Folder | None, Rule]] = []
    for f in cfg.folders:
        rule = cfg.folder_rule(f)
        try:
            rule = book.resolve(f.path / "x.jpg").rule  # a .handwatch.yaml at the top counts
        except ConfigError as e:
            yield Finding(ERROR, f"folder {f.path}", "; ".join(e.lines()), EX_CONFIG)
        out.append((f, rule))
        yield _folder(f, rule)
    return out


def _folder(f: Folder, rule: Rule) -> Finding:
    from handwatch.intake.watch import NETWORK_FS, mount_type, wants_polling

    subject = f"folder {f.path}"
    desc = describe(rule)
    try:
        st = os.stat(f.path)
    except FileNotFoundError:
        return Finding(
            WARN,
            subject,
            f"does not exist yet: handwatch waits for it and watches it once it appears (create it, or mount the share); {desc}",
        )
    except OSError as e:
        return Finding(ERROR, subject, f"cannot be looked at ({e.strerror}); {desc}", EX_CONFIG)
    if not os.path.isdir(f.path):
        return Finding(ERROR, subject, f"is not a folder (mode {oct(st.st_mode)}): point path: at a folder", EX_CONFIG)
    if not os.access(f.path, os.R_OK | os.X_OK):
        return Finding(
            ERROR,
            subject,
            f"this user (uid {os.getuid()}) cannot read it: handwatch runs as the user "
            "that runs this check, so give it read access",
            EX_CONFIG,
        )
    if not os.access(f.path, os.W_OK):
        return Finding(
            ERROR,
            subject,
            f"this user (uid {os.getuid()}) cannot write here, and the Markdown is "
            "written beside the originals: give it write access",
            EX_CONFIG,
        )
    fstype = mount_type(f.path) or "filesystem unknown"
    if wants_polling(f.path, rule.poll):
        why = "poll: true" if rule.poll is True else "a network filesystem: inotify sees only this machine's changes"
        mode = f"polled every {max(1.0, min(5.0, rule.settle_s)):g} s ({why})"
    else:
        mode = "watched with inotify" + (
            " (poll: false on a network filesystem: changes made elsewhere are missed until the rescan)"
            if fstype in NETWORK_FS
            else ""
        )
    return Finding(OK, subject, f"{fstype}, {mode}; {desc}")


DOCUMENTS_ONLY = {"auto": "for camera photos", True: "for every file", False: "off"}


def describe(rule: Rule) -> str:
    parts = [f"engine {rule.engine}", f"profile {rule.profile}", f"languages [{', '.join(rule.languages)}]"]
    if rule.translate_to:
        parts.append(f"translate_to {rule.translate_to}")
    parts.append(f"documents only {DOCUMENTS_ONLY[rule.documents_only]}")
    parts += [f"settle_s {rule.settle_s:g}", f"output {rule.output}"]
    if not rule.recursive:
        parts.append("not recursive")
    if rule.include or rule.exclude:
        parts.append(f"include {list(rule.include)} exclude {list(rule.exclude)}")
    if rule.after != "keep":
        parts.append(f"after: move to {rule.after.move}")
    return "rule: " + ", ".join(parts)


def _state_dir(cfg: Config) -> Iterator[Finding]:
    d = cfg.state_dir
    probe = d
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        what = "cannot be written" if probe == d else f"cannot be created ({probe} is not writable)"
        yield Finding(ERROR, "state_dir", f"{d} {what} by this user (uid {os.getuid()}): choose another state_dir", EX_CONFIG)


# --- tesseract -------------------------------------------------------------------------------------


def _tesseract(cfg: Config, rules: list[tuple[Folder | None, Rule]]) -> Iterator[Finding]:
    from handwatch.transcribe.tesseract import TesseractEngine, tess_langs

    users: dict[str, list[str]] = {}
    for f, rule in rules:
        if rule.engine == "tesseract":
            users.setdefault(tess_langs(rule.languages), []).append(str(f.path) if f else "the defaults")
    if not users:
        return
    engine = TesseractEngine()
    try:
        version = engine.version()
    except EngineUnavailable as e:
        yield Finding(ERROR, "tesseract", str(e), EX_UNAVAILABLE)
        return
    for langs, where in sorted(users.items()):
        try:
            engine._check(langs)
        except ConfigError as e:
            yield Finding(ERROR, "tesseract", f"{'; '.join(e.problems)} — needed by {', '.join(where)}", EX_CONFIG)
        else:
            yield Finding(OK, "tesseract", f"{version}, language data {langs} (for {', '.join(where)})")


# --- endpoints -------------------------------------------------------------------------------------


def _endpoints(cfg: Config, rules: list[tuple[Folder | None, Rule]]) -> Iterator[Finding]:
    vlm = [rule for _, rule in rules if rule.engine == "vlm"]
    if not cfg.endpoints:
        return
    if not vlm:
        yield Finding(NOTE, "endpoints", "no folder uses engine: vlm; probing them anyway (problems are only warnings)")
    for ep in cfg.endpoints:
        for f in _endpoint(cfg, ep, vlm):
            yield f if vlm or f.level != ERROR else Finding(WARN, f.subject, f.text)


def _endpoint(cfg: Config, ep, vlm: list[Rule]) -> Iterator[Finding]:
    from handwatch.prepare import preprocess
    from handwatch.publish import provenance
    from handwatch.transcribe import budget, profiles
    from handwatch.transcribe.client import EndpointClient, image_messages

    subject = f"endpoint {ep.url}"
    client = EndpointClient(ep)
    try:
        listing = client.listing()
    except HandwatchError as e:
        hint = f"; {SERVER_HINT}" if "cannot connect" in str(e) else ""
        yield Finding(ERROR, subject, f"unreachable: {_plain(e, ep.url)}{hint}", EX_UNAVAILABLE)
        return
    names = [str(m.get("id")) for m in listing]
    server = client.server(listing)
    how = "as configured" if server.how == "configured" else f"detected from {server.how}"
    yield Finding(OK, subject, f"reachable; {server.dialect.title} ({how}); models listed: {', '.join(names) or '(none)'}")
    try:
        model = client.model()
    except ConfigError as e:
        yield Finding(ERROR, subject, "; ".join(e.problems), EX_CONFIG)
        return
    except HandwatchError as e:
        yield Finding(ERROR, subject, f"{_plain(e, ep.url)}: {_load_hint(server)}", EX_UNAVAILABLE)
        return
    if ep.model and ep.model not in names:
        yield Finding(
            WARN,
            subject,
            f"model {ep.model} is not among the models the server lists; requests name it "
            f"and may be refused (set model: to one of {', '.join(names) or 'the loaded models'})",
        )
    elif not ep.model:
        yield Finding(OK, subject, f"model {model}: chosen from what the server lists (model: is not set)")
    else:
        yield Finding(OK, subject, f"model {model}: listed")
    context = client.read_context(model, listing, force=True)
    yield _thinking(server, ep)
    yield _readback(client, model, context, server, subject, preprocess, profiles, image_messages)
    if context.tokens is None and client.context.tokens is not None:
        context = client.context  # Ollama and LM Studio say it once the read-back has loaded the model
    pages = [preprocess.for_engine(r.preprocess, "vlm") for r in vlm]
    prompts = [p for r in vlm for p in provenance.prompts(r, cfg)]
    b = budget.budget(model, pages, prompts, ep.max_tokens)
    level, text = budget.verdict(b, context)
    if level == ERROR:
        text += f"; {server.dialect.more_context}"
    yield Finding(level, subject, f"image budget: {text}", EX_UNAVAILABLE if level == ERROR else EX_OK)
    if server.shifts_context:
        version = ".".join(map(str, server.version))
        yield Finding(
            WARN,
            subject,
            f"Ollama {version} cuts a prompt longer than its context without saying so (0.33 refuses it): "
            "pages whose tokens exceed the context are flagged for review; update Ollama",
        )


def _load_hint(server) -> str:
    """What to do about "no model loaded", in the server's own terms."""
    if server.dialect.name == "lmstudio":
        vision = [m.key for m in server.catalog if m.vision]
        which = f"lms load {vision[0]}" if len(vision) == 1 else "lms load MODEL"
        choose = f" (its vision models: {', '.join(vision)})" if len(vision) > 1 else ""
        return f"load a vision model in LM Studio (`{which}`){choose}"
    if server.dialect.name == "ollama":
        return "pull a vision model (`ollama pull qwen2.5vl:7b`) and set model: to it"
    return "load a vision model on the server"


def _thinking(server, ep) -> Finding:
    from handwatch.transcribe import dialect

    subject = f"endpoint {ep.url}"
    if ep.thinking:
        return Finding(OK, subject, "thinking: on (thinking: true): max_tokens must cover the thinking and the transcription")
    if server.dialect.thinking_off is None:
        return Finding(
            NOTE,
            subject,
            f"thinking: {server.dialect.title} has no request field that turns it off; with a thinking model, "
            "max_tokens must cover its thinking as well as the transcription (or load a model without thinking)",
        )
    how = dialect.fields(server.dialect.thinking_off)
    return Finding(OK, subject, f"thinking: turned off in each request ({how})")


def _readback(client, model, context, server, subject, preprocess, profiles, image_messages) -> Finding:
    digits = "".join(random.choice("23456789") for _ in range(4))
    jpeg = preprocess.encode_jpeg(preprocess.probe_image(digits))
    prompt = "What number is written in this image? Answer with the digits only."
    try:
        reply = client.chat(image_messages(prompt, jpeg), 64, 0.0)
    except HandwatchError as e:
        return Finding(ERROR, subject, f"a test picture failed: {_plain(e, client.url)}", EX_UNAVAILABLE)
    seen = "".join(ch for ch in profiles.clean(reply.content) if ch.isdigit())
    if digits in seen:
        said = f"; {context.server} lists it as a vision model" if context.vision else ""
        return Finding(OK, subject, f"reads images (drew {digits}, {model} read {seen}{said})")
    if (reply.reasoning or "<think>" in reply.content) and not profiles.clean(reply.content).strip():
        return Finding(
            ERROR,
            subject,
            f"{model} spent the whole read-back budget thinking (drew {digits}, no answer): "
            + (
                "set thinking: false"
                if server.dialect.thinking_off is not None
                else f"{server.dialect.title} cannot turn thinking off per request: load a model without thinking"
            ),
            EX_UNAVAILABLE,
        )
    hint = f"is {model} a vision model?"
    if context.vision is False:
        hint = {"llama.cpp": "llama.cpp says this model takes no images: start llama-server with --mmproj"}.get(
            context.server, f"{context.server} says {model} takes no images: load a vision model"
        )
    return Finding(
        ERROR,
        subject,
        f"answers but does not read images (drew {digits}, {model} said {reply.content[:60]!r}); {hint}",
        EX_UNAVAILABLE,
    )


def _plain(e: Exception, url: str) -> str:
    """The error without the URL the line already names."""
    return str(e).removeprefix(f"{url}: ")
