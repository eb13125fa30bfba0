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
    from handwatch.transcribe.vlm import EndpointClient, image_messages

    subject = f"endpoint {ep.url}"
    client = EndpointClient(ep)
    try:
        listing = client.listing()
    except HandwatchError as e:
        hint = f"; {SERVER_HINT}" if "cannot connect" in str(e) else ""
        yield Finding(ERROR, subject, f"unreachable: {_plain(e, ep.url)}{hint}", EX_UNAVAILABLE)
        return
    names = [str(m.get("id")) for m in listing]
    yield Finding(OK, subject, f"reachable; models listed: {', '.join(names) or '(none)'}")
    try:
        model = client.model()
    except ConfigError as e:
        yield Finding(ERROR, subject, "; ".join(e.problems), EX_CONFIG)
        return
    except HandwatchError as e:
        yield Finding(ERROR, subject, f"{_plain(e, ep.url)}: load a vision model on the server", EX_UNAVAILABLE)
        return
    if ep.model and ep.model not in names:
        yield Finding(
            WARN,
            subject,
            f"model {ep.model} is not among the models the server lists; requests name it "
            f"and may be refused (set model: to one of {', '.join(names) or 'the loaded models'})",
        )
    elif not ep.model:
        yield Finding(OK, subject, f"model {model}: the only one the server lists (model: is not set)")
    else:
        yield Finding(OK, subject, f"model {model}: listed")
    context = budget.server_context(ep.url, model, listing, _fetcher(ep))
    yield _readback(client, model, context, subject, preprocess, profiles, image_messages)
    pages = [preprocess.for_engine(r.preprocess, "vlm") for r in vlm]
    prompts = [p for r in vlm for p in provenance.prompts(r, cfg)]
    b = budget.budget(model, pages, prompts, ep.max_tokens)
    level, text = budget.verdict(b, context)
    yield Finding(level, subject, f"image budget: {text}", EX_UNAVAILABLE if level == ERROR else EX_OK)


def _readback(client, model, context, subject, preprocess, profiles, image_messages) -> Finding:
    digits = "".join(random.choice("23456789") for _ in range(4))
    jpeg = preprocess.encode_jpeg(preprocess.probe_image(digits))
    prompt = "What number is written in this image? Answer with the digits only."
    try:
        reply = client.chat(image_messages(prompt, jpeg), 64, 0.0)
    except HandwatchError as e:
        return Finding(ERROR, subject, f"a test picture failed: {_plain(e, client.url)}", EX_UNAVAILABLE)
    seen = "".join(ch for ch in profiles.clean(reply.content) if ch.isdigit())
    if digits in seen:
        return Finding(OK, subject, f"reads images (drew {digits}, {model} read {seen})")
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


def _fetcher(ep):
    """GET/POST a native API next to the endpoint, with the same key; anything but JSON raises."""
    import httpx

    headers = {"Authorization": f"Bearer {ep.api_key()}"}

    def fetch(method: str, url: str, body: dict | None):
        with httpx.Client(timeout=min(ep.timeout_s, 10.0), headers=headers, follow_redirects=False) as http:
            r = http.request(method, url, json=body)
        r.raise_for_status()
        return r.json()

    return fetch
